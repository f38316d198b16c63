//! Metric names and what they mean, defined once for every recorder (Prometheus locally, CloudWatch
//! EMF on Lambda) and every reader (the live view, `firstcome-rehearse --scrape-metrics`, the
//! dashboard in template.yaml).
//!
//! Recording goes through the `metrics` facade: with no recorder installed (unit tests, tools)
//! every call is a no-op, so the engine never depends on how its figures leave the process.

/// Claim answers by `outcome` (the wire's code: `issued`, `already_issued`, `sold_out`,
/// `rate_limited`, `overloaded`...), counted at the HTTP boundary so every answer is counted once.
pub const CLAIMS: &str = "firstcome_claims_total";
/// Claim latency as the router saw it, seconds, every outcome.
pub const CLAIM_SECONDS: &str = "firstcome_claim_duration_seconds";
/// Requests being answered right now.
pub const IN_FLIGHT: &str = "firstcome_http_requests_in_flight";
/// Requests refused to protect the service, by `reason` (`rate_limited`, `overloaded`, `connections`).
pub const SHED: &str = "firstcome_shed_total";
/// Store calls by `op`, seconds (the guard's view, timeouts included).
pub const STORE_SECONDS: &str = "firstcome_store_call_duration_seconds";
/// Store calls that failed, by `op` and `kind` (`timeout`, `unavailable`, `overloaded`, `unknown`, `breaker_open`).
pub const STORE_ERRORS: &str = "firstcome_store_errors_total";
/// The store's circuit breaker: 0 closed, 1 half-open, 2 open.
pub const BREAKER: &str = "firstcome_breaker_state";
/// Coupons left per `campaign`, as this instance last learnt it.
pub const REMAINING: &str = "firstcome_campaign_remaining";
/// Ledger writes by `result` (`written`, `duplicate`).
pub const LEDGER_WRITES: &str = "firstcome_ledger_writes_total";
/// Ledger messages that failed and will be redelivered.
pub const LEDGER_FAILURES: &str = "firstcome_ledger_failures_total";
/// Age of the oldest issuance not yet in the ledger, seconds (0 when drained): the outbox's lag
/// locally; on AWS the queue's `ApproximateAgeOfOldestMessage` is the same figure.
pub const LEDGER_LAG: &str = "firstcome_ledger_lag_seconds";
/// Issuance records the reconciler sent again, by `result` (`sent`, `failed`).
pub const RECONCILED: &str = "firstcome_reconciler_records_total";
/// Age of the oldest claim the ledger has not acknowledged, seconds (0 when none), as the
/// reconciler found it: past the parking age it is no longer re-sent by itself, and alarmed.
pub const OLDEST_UNLEDGERED: &str = "firstcome_oldest_unledgered_seconds";

/// Claim latency buckets (seconds): fine where the targets are (10 ms p99 at the spike, 50 ms
/// under stress), coarse past the timeouts.
pub const CLAIM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Registers every metric's unit and help text with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CLAIMS, Unit::Count, "claim answers by outcome");
    describe_histogram!(CLAIM_SECONDS, Unit::Seconds, "claim latency at the router, every outcome");
    describe_gauge!(IN_FLIGHT, Unit::Count, "requests being answered");
    describe_counter!(SHED, Unit::Count, "requests refused to protect the service, by reason");
    describe_histogram!(STORE_SECONDS, Unit::Seconds, "store call latency by operation");
    describe_counter!(STORE_ERRORS, Unit::Count, "failed store calls by operation and kind");
    describe_gauge!(BREAKER, Unit::Count, "store circuit breaker: 0 closed, 1 half-open, 2 open");
    describe_gauge!(REMAINING, Unit::Count, "coupons left per campaign");
    describe_counter!(LEDGER_WRITES, Unit::Count, "ledger writes by result");
    describe_counter!(LEDGER_FAILURES, Unit::Count, "ledger messages that failed (redelivered)");
    describe_gauge!(LEDGER_LAG, Unit::Seconds, "age of the oldest issuance not yet in the ledger");
    describe_counter!(RECONCILED, Unit::Count, "records the reconciler re-sent, by result");
    describe_gauge!(OLDEST_UNLEDGERED, Unit::Seconds, "age of the oldest claim not yet in the ledger");
}

/// Counts a ledger write's result.
pub fn ledger_write<E>(write: &Result<crate::LedgerWrite, E>) {
    match write {
        Ok(crate::LedgerWrite::Inserted) => metrics::counter!(LEDGER_WRITES, "result" => "written").increment(1),
        Ok(crate::LedgerWrite::Duplicate) => metrics::counter!(LEDGER_WRITES, "result" => "duplicate").increment(1),
        Err(_) => metrics::counter!(LEDGER_FAILURES).increment(1),
    }
}

/// The `q` quantile (0..1) of the observations between two readings of one histogram's
/// cumulative buckets (`(le, count)`, ascending), interpolated linearly within the bucket it
/// falls in, as Prometheus' `histogram_quantile` does. None when nothing was observed.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|&(le, n)| (le, n - before.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, m)| *m))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = if n > lower.1 { (rank - lower.1) / (n - lower.1) } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, n);
    }
    Some(lower.0)
}

/// The `q` quantile of observations counted per bucket (`counts[i]` below `bounds[i]`, one more
/// count past the last bound), interpolated within its bucket. None when nothing was counted.
pub fn quantile_of_counts(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let mut cumulative = Vec::with_capacity(counts.len());
    let mut sum = 0.0;
    for (i, n) in counts.iter().enumerate() {
        sum += *n as f64;
        cumulative.push((bounds.get(i).copied().unwrap_or(f64::INFINITY), sum));
    }
    let zero: Vec<(f64, f64)> = cumulative.iter().map(|(le, _)| (*le, 0.0)).collect();
    quantile_between(&zero, &cumulative, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let before = [(0.001, 0.0), (0.01, 0.0), (f64::INFINITY, 0.0)];
        let after = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile_between(&before, &after, 0.5), Some(0.001));
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.009 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        assert_eq!(quantile_between(&after, &after, 0.99), None, "nothing new");
        assert_eq!(quantile_of_counts(&[0.001, 0.01], &[50, 50, 0], 0.5), Some(0.001));
        assert_eq!(quantile_of_counts(&[0.001, 0.01], &[0, 0, 0], 0.5), None);
    }
}
