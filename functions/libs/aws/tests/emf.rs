//! The Lambdas' metrics as CloudWatch will read them: the shared router answers claims behind the
//! gateway's identity with the EMF recorder the functions install, and every line it flushes is
//! checked against the Embedded Metric Format specification, with the claim counts exact.
//! (One test in this binary: the recorder is process-global.)

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use firstcome_api::{AppState, Auth, GatewayIdentity, LimitConfig, router};
use firstcome_core::testkit::MemoryStore;
use firstcome_core::{CouponTemplate, Issuer, NewCampaign};
use firstcome_guard::{GuardConfig, Guarded};
use serde_json::Value;
use tower::ServiceExt;

/// CloudWatch's units (the specification's closed list).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line against the EMF specification; returns its metric values by (name, dimensions).
fn valid_emf(line: &str) -> Vec<(String, BTreeMap<String, String>, Vec<f64>)> {
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let root = doc.as_object().expect("an object");
    let aws = root["_aws"].as_object().expect("_aws");
    assert!(aws["Timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "Timestamp in ms: {line}");
    let mut out = Vec::new();
    for directive in aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics") {
        let ns = directive["Namespace"].as_str().expect("Namespace");
        assert!(!ns.is_empty() && ns.len() <= 1024 && !ns.contains(':'), "namespace {ns:?}");
        let sets = directive["Dimensions"].as_array().expect("Dimensions");
        let mut dims = BTreeMap::new();
        for set in sets {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30, "at most 30 dimensions");
            for key in set {
                let key = key.as_str().expect("dimension keys are strings");
                let value = root.get(key).and_then(Value::as_str);
                assert!(value.is_some_and(|v| !v.is_empty()), "dimension {key} is a non-empty root string: {line}");
                dims.insert(key.to_owned(), value.unwrap().to_owned());
            }
        }
        let metrics = directive["Metrics"].as_array().expect("Metrics");
        assert!(!metrics.is_empty() && metrics.len() <= 100, "1..=100 metrics");
        for m in metrics {
            let name = m["Name"].as_str().expect("Name");
            if let Some(unit) = m.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap_or("?")), "unit {unit} of {name}");
            }
            let values = match root.get(name).unwrap_or_else(|| panic!("{name} has no value: {line}")) {
                Value::Number(n) => vec![n.as_f64().unwrap()],
                Value::Array(a) => a.iter().map(|v| v.as_f64().expect("numbers")).collect(),
                other => panic!("{name} = {other}"),
            };
            assert!(!values.is_empty() && values.len() <= 100, "{name}: 1..=100 values");
            out.push((name.to_owned(), dims.clone(), values));
        }
    }
    out
}

#[tokio::test]
async fn the_functions_metrics_are_valid_emf_and_count_every_claim() {
    let collector = firstcome_aws::lambda::init_metrics().unwrap();
    // As on Lambda: the guard around the store, the router trusting the gateway's identity.
    let store = Arc::new(Guarded::new(MemoryStore::new(), GuardConfig::lambda()));
    let issuer = Arc::new(Issuer::with_store(store));
    let now = time::OffsetDateTime::now_utc();
    let campaign = NewCampaign {
        id: "emf".into(),
        title: "EMF".into(),
        total: 2,
        opens_at: now + time::Duration::milliseconds(50),
        closes_at: None,
        coupon: CouponTemplate { discount: 1000, currency: "KRW".into(), valid_days: 7 },
        pow_bits: 0,
    }
    .validate(now)
    .unwrap();
    issuer.create(campaign, now).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let app = router(AppState::new(issuer, Auth::gateway()).with_limits(LimitConfig::OFF));
    let mut lines = Vec::new();
    // Each claim is one invocation: flushed after it, as the functions' MetricsLayer does.
    for user in ["a", "b", "a", "c", "d"] {
        let mut req = Request::post("/api/campaigns/emf/claims").body(Body::empty()).unwrap();
        req.extensions_mut().insert(GatewayIdentity { sub: user.into(), admin: false });
        let res = app.clone().oneshot(req).await.unwrap();
        assert!(res.headers().contains_key("x-request-id"));
        let mut out = Vec::new();
        collector.flush(&mut out).unwrap();
        lines.extend(String::from_utf8(out).unwrap().lines().map(str::to_owned));
    }
    let mut claims: BTreeMap<String, f64> = BTreeMap::new();
    let mut latencies = 0;
    for line in &lines {
        for (name, dims, values) in valid_emf(line) {
            assert_eq!(dims.get("function").map(String::as_str), Some("firstcome"), "{line}");
            match name.as_str() {
                "firstcome_claims_total" => {
                    *claims.entry(dims["outcome"].clone()).or_default() += values.iter().sum::<f64>()
                }
                "firstcome_claim_duration_seconds" => {
                    latencies += values.len();
                    assert!(values.iter().all(|v| (0.0..5.0).contains(v)), "{values:?}");
                }
                _ => {}
            }
        }
    }
    let expected: BTreeMap<String, f64> =
        [("issued", 2.0), ("already_issued", 1.0), ("sold_out", 2.0)].map(|(k, v)| (k.to_owned(), v)).into();
    assert_eq!(claims, expected, "from {} EMF lines", lines.len());
    assert_eq!(latencies, 5, "one latency per claim");
    assert!(lines.iter().any(|l| l.contains("firstcome_store_call_duration_seconds")), "store calls measured");
    assert!(lines.iter().any(|l| l.contains("firstcome_campaign_remaining")), "remaining stock");
}
