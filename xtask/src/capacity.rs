//! `cargo xtask capacity`: what an event needs on AWS — stock shards, DynamoDB capacity, Lambda
//! concurrency, the API Gateway quota, the ledger's drain time, and the cost of one event —
//! from the stock, the peak claim rate and the crowd, with every assumption printed beside it.
//! Pure arithmetic (`plan`), unit-tested against hand-computed cases.

/// What marketing knows about an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub stock: u64,
    pub peak_claims_per_s: f64,
    pub users: u64,
}

/// What we assume about the platform (defaults: AWS us-east-1 list prices, November 2026).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assumptions {
    /// Clicks per user (a crowd presses more than once).
    pub clicks_per_user: f64,
    /// Writes per second one DynamoDB item sustains (1 KB items: 1,000 WCU/s per partition key).
    pub item_wcu_per_s: f64,
    /// WCU a transactional write of a ≤1 KB item costs (cancelled ones too).
    pub transact_wcu: f64,
    /// Share of an item's write limit a shard is planned to use (headroom for bursts and conflicts).
    pub shard_utilisation: f64,
    /// Claim function duration on Lambda (arm64), ms: token check, one transaction, answer.
    pub claim_ms: f64,
    /// Claim function memory, MB.
    pub claim_memory_mb: f64,
    /// Write request units/s a new on-demand table serves before it has seen a higher peak.
    pub ondemand_initial_wru_per_s: f64,
    /// Lambda concurrency the account has (default quota).
    pub account_concurrency: f64,
    /// API Gateway account quota: steady requests/s and burst.
    pub api_rps: f64,
    pub api_burst: f64,
    /// Ledger consumer: `MaximumConcurrency` of the SQS event source, batch size, ms per record.
    pub ledger_concurrency: f64,
    pub ledger_batch: f64,
    pub ledger_ms_per_record: f64,
    /// Seconds a visitor keeps the event page open (polling the view once a second via the CDN).
    pub watch_s: f64,
    /// Bytes a visitor downloads for the page.
    pub page_bytes: f64,
    // Prices, USD.
    pub usd_per_million_wru: f64,
    pub usd_per_million_rru: f64,
    pub usd_per_million_lambda_requests: f64,
    pub usd_per_gb_s_arm: f64,
    pub usd_per_million_http_api: f64,
    pub usd_per_million_sqs: f64,
    pub usd_per_10k_cloudfront_https: f64,
    pub usd_per_gb_cloudfront: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Self {
            clicks_per_user: 2.0,
            item_wcu_per_s: 1000.0,
            transact_wcu: 2.0,
            shard_utilisation: 0.5,
            claim_ms: 30.0,
            ondemand_initial_wru_per_s: 4000.0,
            claim_memory_mb: 256.0,
            account_concurrency: 1000.0,
            api_rps: 10_000.0,
            api_burst: 5_000.0,
            ledger_concurrency: 2.0,
            ledger_batch: 10.0,
            ledger_ms_per_record: 10.0,
            watch_s: 60.0,
            page_bytes: 160_000.0,
            usd_per_million_wru: 1.25,
            usd_per_million_rru: 0.25,
            usd_per_million_lambda_requests: 0.20,
            usd_per_gb_s_arm: 0.000_013_333_4,
            usd_per_million_http_api: 1.00,
            usd_per_million_sqs: 0.40,
            usd_per_10k_cloudfront_https: 0.01,
            usd_per_gb_cloudfront: 0.085,
        }
    }
}

/// The plan for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Stock shard items per campaign.
    pub shards: u64,
    /// Claims that reach DynamoDB (every click until sell-out).
    pub store_claims: f64,
    /// Seconds from opening to sold out at the peak rate.
    pub sell_out_s: f64,
    /// Peak write units per second: the shard and the claim item of each transactional claim.
    pub peak_wcu_per_s: f64,
    /// Peak WCU per shard item, against the item limit.
    pub wcu_per_shard: f64,
    /// Write request units for the whole event (claims + ledger).
    pub total_wru: f64,
    /// Lambda concurrency the claim function needs at the peak (Little's law).
    pub claim_concurrency: f64,
    /// Peak claims beyond the API Gateway quota (answered 429; the page retries).
    pub api_excess_rps: f64,
    /// Seconds for the ledger to take every issuance record.
    pub ledger_drain_s: f64,
    pub cost: Cost,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub dynamodb: f64,
    pub lambda: f64,
    pub api_gateway: f64,
    pub sqs: f64,
    pub cloudfront: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb + self.lambda + self.api_gateway + self.sqs + self.cloudfront
    }
}

/// Stock shards: enough that each stays under `shard_utilisation` of an item's write limit at
/// the peak (every claim until sell-out is one transactional write on one shard), never more
/// shards than coupons (each shard owns at least one).
pub fn shards(e: &Event, a: &Assumptions) -> u64 {
    let per_shard = a.item_wcu_per_s * a.shard_utilisation / a.transact_wcu;
    let wanted = (e.peak_claims_per_s / per_shard).ceil().max(1.0) as u64;
    wanted.min(e.stock.max(1))
}

pub fn plan(e: &Event, a: &Assumptions) -> Plan {
    let shards = shards(e, a);
    let clicks = e.users as f64 * a.clicks_per_user;
    // Until sell-out every click reaches the store: the winners' clicks, plus the losers' that
    // arrive before the last coupon goes. At the peak rate, that is min(all clicks, the clicks of
    // the first `stock` users), plus one attempt per warm container after sell-out.
    let claim_concurrency = e.peak_claims_per_s * a.claim_ms / 1000.0;
    let store_claims = clicks.min(e.stock as f64 * a.clicks_per_user) + claim_concurrency.ceil();
    let sell_out_s = if e.stock as f64 <= clicks / a.clicks_per_user {
        e.stock as f64 * a.clicks_per_user / e.peak_claims_per_s
    } else {
        f64::INFINITY
    };
    // A claim transaction writes the shard and the claim item, 2 WCU each.
    let peak_wcu_per_s = e.peak_claims_per_s * 2.0 * a.transact_wcu;
    let wcu_per_shard = e.peak_claims_per_s * a.transact_wcu / shards as f64;
    let issued = (e.stock as f64).min(e.users as f64);
    // Ledger: one standard write per record.
    let total_wru = store_claims * 2.0 * a.transact_wcu + issued;
    let api_excess_rps = (e.peak_claims_per_s - a.api_rps).max(0.0);
    let ledger_rate = a.ledger_concurrency * a.ledger_batch / (a.ledger_batch * a.ledger_ms_per_record / 1000.0);
    let ledger_drain_s = issued / ledger_rate;

    let gb_s = clicks * a.claim_ms / 1000.0 * a.claim_memory_mb / 1024.0;
    let ledger_invocations = (issued / a.ledger_batch).ceil();
    let ledger_gb_s = issued * a.ledger_ms_per_record / 1000.0 * 128.0 / 1024.0;
    let polls = e.users as f64 * a.watch_s;
    let cost = Cost {
        // Campaign re-reads (1/s per warm container) are a rounding error next to the writes.
        dynamodb: total_wru / 1e6 * a.usd_per_million_wru + store_claims / 1e6 * a.usd_per_million_rru,
        lambda: (clicks + ledger_invocations) / 1e6 * a.usd_per_million_lambda_requests
            + (gb_s + ledger_gb_s) * a.usd_per_gb_s_arm,
        api_gateway: clicks / 1e6 * a.usd_per_million_http_api,
        // A send per record, then one receive and one delete call per batch.
        sqs: (issued + 2.0 * ledger_invocations) / 1e6 * a.usd_per_million_sqs,
        cloudfront: (polls + clicks + 5.0 * e.users as f64) / 10_000.0 * a.usd_per_10k_cloudfront_https
            + e.users as f64 * a.page_bytes / 1e9 * a.usd_per_gb_cloudfront,
    };

    let mut warnings = Vec::new();
    if claim_concurrency > a.account_concurrency {
        warnings.push(format!(
            "the claim function needs {claim_concurrency:.0} concurrent executions, over the account's {:.0}: ask for a quota raise",
            a.account_concurrency
        ));
    }
    if e.peak_claims_per_s > a.api_rps + a.api_burst {
        warnings.push(format!(
            "{:.0} claims/s exceeds API Gateway's {:.0}/s (+{:.0} burst): the excess is answered 429 and retried by the page; ask for a quota raise",
            e.peak_claims_per_s, a.api_rps, a.api_burst
        ));
    }
    if peak_wcu_per_s > a.ondemand_initial_wru_per_s {
        warnings.push(format!(
            "the peak needs {peak_wcu_per_s:.0} WCU/s, over the {:.0} a new on-demand table starts with: pre-warm the claims table (warm throughput) before the event",
            a.ondemand_initial_wru_per_s
        ));
    }
    if shards == e.stock
        && (e.peak_claims_per_s / shards as f64) * a.transact_wcu > a.item_wcu_per_s * a.shard_utilisation
    {
        warnings
            .push("fewer coupons than the shards the peak needs: each shard holds one coupon and will be hot".into());
    }
    Plan {
        shards,
        store_claims,
        sell_out_s,
        peak_wcu_per_s,
        wcu_per_shard,
        total_wru,
        claim_concurrency,
        api_excess_rps,
        ledger_drain_s,
        cost,
        warnings,
    }
}

/// The printed report: figures, then the assumptions they rest on.
pub fn report(e: &Event, a: &Assumptions) -> String {
    let p = plan(e, a);
    let mut out = format!(
        "event: {} coupons, peak {:.0} claims/s, {} users x {} clicks\n\n\
         stock shards           {} (each at most {:.0} WCU/s of {:.0}: {:.0} planned at the peak)\n\
         sold out after         {}\n\
         claims reaching DynamoDB {:.0} (every click until sell-out, + one per warm container after)\n\
         peak writes            {:.0} WCU/s (shard + claim item, {} WCU each, transactional)\n\
         write units, event     {:.0} WRU (claims + {} ledger records)\n\
         claim concurrency      {:.0} Lambda executions at the peak (account quota {:.0})\n\
         API Gateway            {}\n\
         ledger drain           {:.1} s ({} consumers x batch {} at {} ms/record)\n\n\
         cost of the event (USD): DynamoDB {:.4}, Lambda {:.4}, API Gateway {:.4}, SQS {:.4}, CloudFront {:.4}; total {:.4}\n",
        e.stock,
        e.peak_claims_per_s,
        e.users,
        a.clicks_per_user,
        p.shards,
        a.item_wcu_per_s * a.shard_utilisation,
        a.item_wcu_per_s,
        p.wcu_per_shard,
        if p.sell_out_s.is_finite() {
            format!("{:.2} s at the peak rate", p.sell_out_s)
        } else {
            "never (fewer users than coupons)".into()
        },
        p.store_claims,
        p.peak_wcu_per_s,
        a.transact_wcu,
        p.total_wru,
        e.stock.min(e.users),
        p.claim_concurrency,
        a.account_concurrency,
        if p.api_excess_rps > 0.0 {
            format!("{:.0} claims/s over the {:.0}/s quota", p.api_excess_rps, a.api_rps)
        } else {
            format!("within the {:.0}/s quota (+{:.0} burst)", a.api_rps, a.api_burst)
        },
        p.ledger_drain_s,
        a.ledger_concurrency,
        a.ledger_batch,
        a.ledger_ms_per_record,
        p.cost.dynamodb,
        p.cost.lambda,
        p.cost.api_gateway,
        p.cost.sqs,
        p.cost.cloudfront,
        p.cost.total(),
    );
    for w in &p.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    out.push_str(&format!("\nassumptions: {a:#?}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn the_issue_example_by_hand() {
        // 1,000 coupons, 10,000 claims/s, 100,000 users clicking twice.
        let e = Event { stock: 1000, peak_claims_per_s: 10_000.0, users: 100_000 };
        let a = Assumptions::default();
        let p = plan(&e, &a);
        // A shard takes 1000 WCU/s x 0.5 / 2 WCU = 250 claims/s: 10,000 / 250 = 40 shards.
        assert_eq!(p.shards, 40);
        assert!(close(p.wcu_per_shard, 500.0));
        // Sold out after the first 1,000 users' 2,000 clicks: 0.2 s.
        assert!(close(p.sell_out_s, 0.2));
        // Concurrency: 10,000/s x 30 ms = 300; the store sees 2,000 clicks + 300 containers.
        assert!(close(p.claim_concurrency, 300.0));
        assert!(close(p.store_claims, 2300.0));
        assert!(close(p.peak_wcu_per_s, 40_000.0));
        // 2,300 transactions x 2 items x 2 WCU + 1,000 ledger writes.
        assert!(close(p.total_wru, 10_200.0));
        // Ledger: 2 consumers x 10 records per 100 ms = 200 records/s: 5 s.
        assert!(close(p.ledger_drain_s, 5.0));
        assert_eq!(p.api_excess_rps, 0.0);
        // API Gateway: 200,000 clicks at $1/M = $0.20.
        assert!(close(p.cost.api_gateway, 0.2));
        // DynamoDB: 10,200 WRU at $1.25/M + 2,300 RRU at $0.25/M.
        assert!(close(p.cost.dynamodb, 10_200.0 * 1.25e-6 + 2_300.0 * 0.25e-6));
        // SQS: 1,000 sends + 100 batches x (receive + delete).
        assert!(close(p.cost.sqs, 1_200.0 * 0.4e-6));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("pre-warm"), "40,000 WCU/s is over a new table's 4,000");
        let calm = plan(&Event { stock: 1000, peak_claims_per_s: 500.0, users: 5_000 }, &a);
        assert!(calm.warnings.is_empty(), "{:?}", calm.warnings);
    }

    #[test]
    fn small_events_use_one_shard_and_never_more_shards_than_coupons() {
        let a = Assumptions::default();
        assert_eq!(shards(&Event { stock: 100, peak_claims_per_s: 50.0, users: 500 }, &a), 1);
        assert_eq!(shards(&Event { stock: 100, peak_claims_per_s: 250.0, users: 500 }, &a), 1);
        assert_eq!(shards(&Event { stock: 100, peak_claims_per_s: 251.0, users: 500 }, &a), 2);
        let tiny = Event { stock: 3, peak_claims_per_s: 20_000.0, users: 50_000 };
        assert_eq!(shards(&tiny, &a), 3);
        let p = plan(&tiny, &a);
        assert!(p.warnings.iter().any(|w| w.contains("hot")), "{:?}", p.warnings);
        assert!(p.warnings.iter().any(|w| w.contains("API Gateway")), "{:?}", p.warnings);
    }

    #[test]
    fn more_coupons_than_users_never_sells_out_and_beyond_quota_warns() {
        let a = Assumptions::default();
        let e = Event { stock: 10_000, peak_claims_per_s: 40_000.0, users: 2_000 };
        let p = plan(&e, &a);
        assert!(p.sell_out_s.is_infinite());
        // Every click reaches the store: 4,000 + 1,200 containers.
        assert!(close(p.store_claims, 5_200.0));
        assert!(close(p.claim_concurrency, 1_200.0));
        assert!(close(p.api_excess_rps, 30_000.0));
        assert!(p.warnings.iter().any(|w| w.contains("quota raise") && w.contains("concurrent")));
        assert!(report(&e, &a).contains("never (fewer users than coupons)"));
    }
}
