//! `cargo xtask capacity`: what an event needs on AWS — stock shards, DynamoDB capacity, Lambda
//! concurrency, the API Gateway quota, the ledger's drain time, and the cost of one event —
//! from the stock, the peak claim rate and the crowd, with every assumption printed beside it.
//! The shard count and the opening's figures (sell-out time, 503s, throttling, attempts per
//! coupon, claim latency) come from the discrete-event simulation of the claim race
//! (`firstcome_sim`); the rest is arithmetic, unit-tested against hand-computed cases.

use firstcome_sim::{Outcome, Profile, Scenario, simulate};

/// DynamoDB allows 100 items per transaction; an edit writes the campaign and every shard.
const MAX_SHARDS: u64 = 99;

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
    /// Claim function duration on Lambda (arm64), ms: token check, one transaction, answer.
    pub claim_ms: f64,
    /// Claim function memory, MB.
    pub claim_memory_mb: f64,
    /// Claim containers at the opening (`None`: Little's law on the peak and `claim_ms`).
    pub containers: Option<u32>,
    /// Share of a claim transaction's round trip its items are held (conflicts; simulated).
    pub hold_fraction: f64,
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
            claim_ms: 30.0,
            ondemand_initial_wru_per_s: 4000.0,
            claim_memory_mb: 256.0,
            containers: None,
            hold_fraction: 0.25,
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
    /// The opening, simulated with `shards` shards and this many containers.
    pub containers: u32,
    pub simulated: Outcome,
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

/// The opening as simulated: the event's claims arriving at the peak rate (for 2 s, or three
/// times as long as the stock takes to be asked for), on this many shards and containers, at
/// DynamoDB's round trips (the `aws` profile).
pub fn scenario(e: &Event, a: &Assumptions, shards: u64, containers: u32) -> Scenario {
    Scenario {
        path: firstcome_sim::Path::Allocate,
        stock: e.stock.min(u64::from(u32::MAX)) as u32,
        users: e.users,
        attempts_per_s: e.peak_claims_per_s,
        window_s: (3.0 * e.stock as f64 / e.peak_claims_per_s).clamp(2.0, 60.0),
        containers,
        shards: shards as u32,
        profile: Profile::parse("aws").expect("the aws profile parses"),
        conflicts: true,
        hold_fraction: a.hold_fraction,
        item_wcu_per_s: a.item_wcu_per_s,
        burst_s: 0.1,
        overhead_ms: 3.0,
        deadline_ms: 3000.0,
        queue: false,
        seed: 1,
    }
}

/// `CLAIMS_PER_SHARD_S` as `DynamoStore` has it (read from its source: xtask does not build the
/// AWS SDK).
pub fn store_claims_per_shard(root: &std::path::Path) -> anyhow::Result<u32> {
    let path = root.join("functions/libs/store-dynamo/src/lib.rs");
    let text = std::fs::read_to_string(&path)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("pub const CLAIMS_PER_SHARD_S: u32 = "))
        .ok_or_else(|| anyhow::anyhow!("{} has no CLAIMS_PER_SHARD_S", path.display()))?;
    Ok(line.trim_end_matches(';').trim().parse()?)
}

/// Whether a simulated opening meets the targets: sold out within a second, or within 1.5
/// times what the peak rate takes to ask for the stock when that is longer (when there are more
/// users than coupons); no 503 while stock remained; no throttled shard item; on average at
/// most 2 billed claim attempts per coupon; the claim's p99 at the store at most 100 ms.
pub fn meets_targets(e: &Event, o: &Outcome) -> bool {
    let sells_out = e.users > e.stock;
    let within = (1.5 * e.stock as f64 / e.peak_claims_per_s).max(1.0);
    o.unavailable == 0
        && o.throttled == 0
        && o.attempts_per_issued() <= 2.0
        && o.claim_p99_ms <= 100.0
        && (!sells_out || o.sold_out_s.is_some_and(|t| t <= within))
}

/// Stock shards: the fewest (up to 99, never more than coupons) with which the simulated
/// opening meets the targets and no shard is asked for more allocations per second at the peak
/// than an item's WCU/s (a short sale can ride an item's burst, but how deep that burst is
/// DynamoDB does not publish); 99 (or the stock) when none does. Found by doubling, then
/// halving the last step: near the targets' edges a simulated opening is noisy (one more shard
/// can sell out a few ms later), so the search starts where small events end.
pub fn shards(e: &Event, a: &Assumptions, containers: u32) -> u64 {
    let most = MAX_SHARDS.min(e.stock.max(1));
    let sustained = ((e.peak_claims_per_s / a.item_wcu_per_s).ceil() as u64).clamp(1, most);
    let meets = |k: u64| meets_targets(e, &simulate(&scenario(e, a, k, containers)));
    let (mut lo, mut hi) = (sustained - 1, sustained);
    while hi < most && !meets(hi) {
        lo = hi;
        hi = (hi * 2).min(most);
    }
    // `lo` misses (or is 0), `hi` meets (or is the most there may be).
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if meets(mid) { hi = mid } else { lo = mid }
    }
    hi
}

pub fn plan(e: &Event, a: &Assumptions) -> Plan {
    let claim_concurrency = e.peak_claims_per_s * a.claim_ms / 1000.0;
    let containers = a.containers.unwrap_or(claim_concurrency.ceil().clamp(1.0, 100_000.0) as u32);
    let shards = shards(e, a, containers);
    let simulated = simulate(&scenario(e, a, shards, containers));
    let clicks = e.users as f64 * a.clicks_per_user;
    // Until sell-out every click reaches the store: the winners' clicks, plus the losers' that
    // arrive before the last coupon goes. At the peak rate, that is min(all clicks, the clicks of
    // the first `stock` users), plus one attempt per warm container after sell-out.
    let store_claims = clicks.min(e.stock as f64 * a.clicks_per_user) + claim_concurrency.ceil();
    let sell_out_s = if e.stock as f64 <= clicks / a.clicks_per_user {
        e.stock as f64 * a.clicks_per_user / e.peak_claims_per_s
    } else {
        f64::INFINITY
    };
    // A claim allocates from a shard (one single-item write, 1 WCU) and records the allocation
    // (the claim item and its marker in a transaction, 2 WCU each); a repeat click's record is
    // cancelled (billed alike) and its allocation given back (the void marker and the shard's
    // return, 1 WCU each).
    let peak_wcu_per_s = e.peak_claims_per_s * (1.0 + 2.0 * a.transact_wcu);
    let wcu_per_shard = e.peak_claims_per_s / shards as f64;
    let issued = (e.stock as f64).min(e.users as f64);
    let repeats = (store_claims - issued).max(0.0);
    // Ledger: one standard write per record.
    let total_wru = store_claims * (1.0 + 2.0 * a.transact_wcu) + repeats * 2.0 + issued;
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
    if !meets_targets(e, &simulated) {
        warnings.push(format!(
            "even {shards} shards miss the opening's targets in the simulation (sold out within 1 s, no 503 while stock remains, no throttling, at most 2 claim attempts per coupon, claim p99 at most 100 ms): see `simulated` below"
        ));
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
        containers,
        simulated,
        warnings,
    }
}

/// The printed report: figures, then the assumptions they rest on.
pub fn report(e: &Event, a: &Assumptions) -> String {
    let p = plan(e, a);
    let mut out = format!(
        "event: {} coupons, peak {:.0} claims/s, {} users x {} clicks\n\n\
         stock shards           {} (the fewest with which the simulated opening meets its targets and no shard is asked for more than an item's WCU/s; {:.0} allocations/s each at the peak, of {:.0})\n\
         sold out after         {}\n\
         claims reaching DynamoDB {:.0} (every click until sell-out, + one per warm container after)\n\
         peak writes            {:.0} WCU/s (an allocation, 1 WCU, + a record: claim item and marker, {} WCU each)\n\
         write units, event     {:.0} WRU (allocations, records, repeat clicks' give-backs + {} ledger records)\n\
         claim concurrency      {:.0} Lambda executions at the peak (account quota {:.0})\n\
         API Gateway            {}\n\
         ledger drain           {:.1} s ({} consumers x batch {} at {} ms/record)\n\n\
         cost of the event (USD): DynamoDB {:.4}, Lambda {:.4}, API Gateway {:.4}, SQS {:.4}, CloudFront {:.4}; total {:.4}\n",
        e.stock,
        e.peak_claims_per_s,
        e.users,
        a.clicks_per_user,
        p.shards,
        p.wcu_per_shard,
        a.item_wcu_per_s,
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
    let o = &p.simulated;
    out.push_str(&format!(
        "\nthe opening, simulated ({} shards, {} containers, DynamoDB round trips `aws`, claims at the peak rate):\n\
         sold out after         {} (target: within {:.1} s)\n\
         503 while stock left   {}\n\
         throttled shard writes {}\n\
         claim attempts         {:.2} billed allocations per coupon (repeat clicks excluded); {:.2} write requests and {:.1} WCU per coupon; {} allocations found their shard empty, {} given back (repeat clicks)\n\
         claim at the store     p50 {:.1} ms, p99 {:.1} ms\n\
         Lambda throttled       {} requests (all containers busy), {} of them while stock remained\n",
        p.shards,
        p.containers,
        o.sold_out_s.map_or("not within the simulated window".into(), |t| format!("{t:.3} s")),
        (1.5 * e.stock as f64 / e.peak_claims_per_s).max(1.0),
        o.unavailable,
        o.throttled,
        o.attempts_per_issued(),
        o.writes_per_issued(),
        o.wcu_per_issued(),
        o.found_empty,
        o.returned,
        o.claim_p50_ms,
        o.claim_p99_ms,
        o.lambda_throttled,
        o.lambda_throttled_in_stock,
    ));
    for w in &p.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    out.push_str("\nassumptions:\n");
    for (name, value) in assumptions(a) {
        out.push_str(&format!("  {name:<58} {value}\n"));
    }
    out
}

/// The simulation's check against the emulated stack, as `cargo xtask bench --only race` last
/// recorded it (docs/bench/race.json): the same opening run on both, side by side.
pub fn emulator_check(root: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(root.join("docs/bench/race.json")).ok()?;
    let r: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (e, s) = (&r["emulated"], &r["simulated"]);
    let pair = |k: &str| serde_json::json!({ "emulated": e[k], "simulated": s[k] });
    Some(serde_json::json!({
        "measured_at": r["measured_at"],
        "containers": r["containers"],
        "shards": r["shards"],
        "issued": pair("issued"),
        "attempts_per_issued": pair("attempts_per_issued"),
        "writes_per_issued": pair("writes_per_issued"),
        "sold_out_s": pair("sold_out_s"),
        "violations": e["violations"].as_array().map_or(0, Vec::len),
    }))
}

pub fn emulator_check_text(check: Option<&serde_json::Value>) -> String {
    let Some(c) = check else {
        return "
check against the emulator: none recorded (run `cargo xtask bench --only race`)
"
        .into();
    };
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    format!(
        "\ncheck against the emulator (`cargo xtask bench --only race`, {}; {} containers, {} shards; docs/dynamodb.md):\n\
         claim attempts per coupon {} emulated, {} simulated\n\
         write requests per coupon {} emulated, {} simulated\n\
         sold out after            {} s emulated, {} s simulated (not reproduced: the emulator on two cores is slower than the model; the tolerance is for the race figures)\n\
         invariants                {} violations\n",
        c["measured_at"].as_str().unwrap_or("?"),
        c["containers"],
        c["shards"],
        num(&c["attempts_per_issued"], "emulated"),
        num(&c["attempts_per_issued"], "simulated"),
        num(&c["writes_per_issued"], "emulated"),
        num(&c["writes_per_issued"], "simulated"),
        num(&c["sold_out_s"], "emulated"),
        num(&c["sold_out_s"], "simulated"),
        c["violations"],
    )
}

/// The assumptions as (what, value) rows, for the report and the JSON.
pub fn assumptions(a: &Assumptions) -> Vec<(&'static str, String)> {
    vec![
        ("clicks per user", format!("{}", a.clicks_per_user)),
        ("WCU/s one item sustains", format!("{}", a.item_wcu_per_s)),
        ("WCU per transactional write of a <=1 KB item", format!("{}", a.transact_wcu)),
        ("claim function duration, ms", format!("{}", a.claim_ms)),
        ("claim function memory, MB", format!("{}", a.claim_memory_mb)),
        (
            "claim containers at the opening",
            a.containers.map_or("Little's law: peak x claim duration".into(), |c| c.to_string()),
        ),
        ("share of a transaction's round trip its items are held (conflicts)", format!("{}", a.hold_fraction)),
        ("DynamoDB round trips (median:p99 ms)", firstcome_sim::latency::AWS.to_owned()),
        ("WRU/s a new on-demand table starts with", format!("{}", a.ondemand_initial_wru_per_s)),
        ("Lambda account concurrency", format!("{}", a.account_concurrency)),
        ("API Gateway requests/s (+ burst)", format!("{} (+{})", a.api_rps, a.api_burst)),
        (
            "ledger: consumers x batch, ms per record",
            format!("{} x {}, {}", a.ledger_concurrency, a.ledger_batch, a.ledger_ms_per_record),
        ),
        ("seconds a visitor watches the page; page bytes", format!("{}; {}", a.watch_s, a.page_bytes)),
        ("USD per million WRU / RRU", format!("{} / {}", a.usd_per_million_wru, a.usd_per_million_rru)),
        (
            "USD per million Lambda requests; per GB-s (arm64)",
            format!("{}; {}", a.usd_per_million_lambda_requests, a.usd_per_gb_s_arm),
        ),
        (
            "USD per million HTTP API / SQS requests",
            format!("{} / {}", a.usd_per_million_http_api, a.usd_per_million_sqs),
        ),
        (
            "USD per 10k CloudFront HTTPS requests; per GB",
            format!("{}; {}", a.usd_per_10k_cloudfront_https, a.usd_per_gb_cloudfront),
        ),
    ]
}

/// Every figure of the report as one JSON object.
pub fn json(e: &Event, a: &Assumptions) -> serde_json::Value {
    let p = plan(e, a);
    let o = &p.simulated;
    serde_json::json!({
        "event": { "stock": e.stock, "peak_claims_per_s": e.peak_claims_per_s, "users": e.users },
        "shards": p.shards,
        "store_claims": p.store_claims,
        "sell_out_s_at_peak_rate": p.sell_out_s.is_finite().then_some(p.sell_out_s),
        "peak_wcu_per_s": p.peak_wcu_per_s,
        "wcu_per_shard": p.wcu_per_shard,
        "total_wru": p.total_wru,
        "claim_concurrency": p.claim_concurrency,
        "api_excess_rps": p.api_excess_rps,
        "ledger_drain_s": p.ledger_drain_s,
        "cost_usd": {
            "dynamodb": p.cost.dynamodb, "lambda": p.cost.lambda, "api_gateway": p.cost.api_gateway,
            "sqs": p.cost.sqs, "cloudfront": p.cost.cloudfront, "total": p.cost.total(),
        },
        "simulated": {
            "shards": p.shards,
            "containers": p.containers,
            "sold_out_s": o.sold_out_s,
            "unavailable": o.unavailable,
            "throttled": o.throttled,
            "attempts_per_issued": o.attempts_per_issued(),
            "writes_per_issued": o.writes_per_issued(),
            "wcu_per_issued": o.wcu_per_issued(),
            "claim_p50_ms": o.claim_p50_ms,
            "claim_p99_ms": o.claim_p99_ms,
            "issued": o.issued,
            "requests": o.requests,
            "found_empty": o.found_empty,
            "returned": o.returned,
            "stranded": o.stranded,
            "lambda_throttled": o.lambda_throttled,
            "lambda_throttled_in_stock": o.lambda_throttled_in_stock,
            "meets_targets": meets_targets(e, o),
        },
        "warnings": p.warnings,
        "assumptions": assumptions(a).into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v))).collect::<serde_json::Map<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn the_stores_shard_rule_gives_what_the_simulation_needs_at_the_reference_event() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let per_shard = store_claims_per_shard(root).unwrap();
        let e = Event { stock: 1000, peak_claims_per_s: 10_000.0, users: 100_000 };
        let a = Assumptions { containers: Some(200), ..Default::default() };
        let needed = shards(&e, &a, 200);
        let rule = 10_000u64.div_ceil(u64::from(per_shard)).min(MAX_SHARDS);
        assert!(rule >= needed, "the store plans {rule} shards for 10,000 claims/s; the simulation needs {needed}");
        let o = simulate(&scenario(&e, &a, rule, 200));
        assert!(meets_targets(&e, &o), "{o:?}");
        assert_eq!(o.issued, 1000);
    }

    #[test]
    fn the_emulator_check_is_the_recorded_race() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let check = emulator_check(root).expect("docs/bench/race.json is recorded");
        for k in ["attempts_per_issued", "writes_per_issued", "sold_out_s"] {
            assert!(check[k]["emulated"].is_number() && check[k]["simulated"].is_number(), "{k}: {check}");
        }
        let text = emulator_check_text(Some(&check));
        assert!(text.contains("claim attempts per coupon") && text.contains("violations"), "{text}");
        assert!(emulator_check_text(None).contains("none recorded"));
        assert!(emulator_check(&root.join("no-such-dir")).is_none());
    }

    #[test]
    fn the_json_has_every_simulated_figure() {
        let e = Event { stock: 100, peak_claims_per_s: 500.0, users: 2_000 };
        let v = json(&e, &Assumptions::default());
        for k in ["sold_out_s", "unavailable", "throttled", "attempts_per_issued", "claim_p99_ms"] {
            assert!(!v["simulated"][k].is_null(), "simulated.{k} missing: {v}");
        }
        assert_eq!(v["simulated"]["issued"], 100);
        assert!(v["assumptions"]["clicks per user"].is_string());
    }

    #[test]
    fn the_issue_example_by_hand() {
        // 1,000 coupons, 10,000 claims/s, 100,000 users clicking twice.
        let e = Event { stock: 1000, peak_claims_per_s: 10_000.0, users: 100_000 };
        let a = Assumptions::default();
        let p = plan(&e, &a);
        // The shards come from the simulation (tested above); the WCU per shard follows from them.
        assert!(close(p.wcu_per_shard, 10_000.0 / p.shards as f64));
        // Sold out after the first 1,000 users' 2,000 clicks: 0.2 s.
        assert!(close(p.sell_out_s, 0.2));
        // Concurrency: 10,000/s x 30 ms = 300; the store sees 2,000 clicks + 300 containers.
        assert!(close(p.claim_concurrency, 300.0));
        assert!(close(p.store_claims, 2300.0));
        assert!(close(p.peak_wcu_per_s, 50_000.0));
        // 2,300 allocations (1 WCU) and records (2 items x 2 WCU), 1,300 repeat clicks' give-backs
        // (2 x 1 WCU), 1,000 ledger writes.
        assert!(close(p.total_wru, 2_300.0 * 5.0 + 1_300.0 * 2.0 + 1_000.0));
        // Ledger: 2 consumers x 10 records per 100 ms = 200 records/s: 5 s.
        assert!(close(p.ledger_drain_s, 5.0));
        assert_eq!(p.api_excess_rps, 0.0);
        // API Gateway: 200,000 clicks at $1/M = $0.20.
        assert!(close(p.cost.api_gateway, 0.2));
        // DynamoDB: 15,100 WRU at $1.25/M + 2,300 RRU at $0.25/M.
        assert!(close(p.cost.dynamodb, 15_100.0 * 1.25e-6 + 2_300.0 * 0.25e-6));
        // SQS: 1,000 sends + 100 batches x (receive + delete).
        assert!(close(p.cost.sqs, 1_200.0 * 0.4e-6));
        assert!(p.warnings.iter().any(|w| w.contains("pre-warm")), "50,000 WCU/s is over a new table's 4,000");
        let calm = plan(&Event { stock: 1000, peak_claims_per_s: 500.0, users: 5_000 }, &a);
        assert!(calm.warnings.is_empty(), "{:?}", calm.warnings);
    }

    #[test]
    fn small_events_use_few_shards_and_never_more_shards_than_coupons() {
        let a = Assumptions::default();
        let calm = Event { stock: 100, peak_claims_per_s: 50.0, users: 500 };
        assert!(shards(&calm, &a, 2) <= 2, "two containers at 50 claims/s need at most two shards");
        // A second of 2,000 allocations/s: more than one item's 1,000 WCU/s.
        let busier = shards(&Event { stock: 2_000, peak_claims_per_s: 2_000.0, users: 10_000 }, &a, 60);
        assert!(busier > 1, "2,000 allocations/s are more than one item's 1,000 WCU/s");
        let tiny = Event { stock: 3, peak_claims_per_s: 20_000.0, users: 50_000 };
        assert!(shards(&tiny, &a, 600) <= 3);
        let p = plan(&tiny, &a);
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
