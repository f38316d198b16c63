//! What operators see, from the real `firstcome-local` binary: `/metrics` counts a scripted set of
//! claims exactly (every outcome, the latency histogram, remaining stock, the ledger), admin only;
//! `firstcome-rehearse --scrape-metrics` agrees with the server one for one; the live view has
//! the seconds the claims happened in; and the JSON log of the whole run carries request ids and
//! never a token, the signing secret or a whole coupon code.

use std::collections::BTreeMap;
use std::time::Duration;

use firstcome_rehearse::rehearse;
use firstcome_tests::{Client, LocalProcess, local_binary, rehearse_options};
use prometheus_parse::Sample;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use firstcome_tests::user_token as token;

async fn metrics(client: &Client, url: &str, admin: &str) -> Vec<Sample> {
    let (status, text) = client.get_text(&format!("{url}/metrics"), Some(admin)).await.unwrap();
    assert_eq!(status, 200, "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text").samples
}

/// A counter's or gauge's value (histograms and summaries have none).
fn number(s: &Sample) -> Option<f64> {
    match s.value {
        prometheus_parse::Value::Counter(n)
        | prometheus_parse::Value::Gauge(n)
        | prometheus_parse::Value::Untyped(n) => Some(n),
        _ => None,
    }
}

fn claims(samples: &[Sample]) -> BTreeMap<String, u64> {
    samples
        .iter()
        .filter(|s| s.metric == "firstcome_claims_total")
        .filter_map(|s| Some((s.labels.get("outcome")?.to_owned(), number(s)?)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(outcome, n)| (outcome, n as u64))
        .collect()
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).and_then(number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_claim_the_tool_agrees_the_live_view_shows_them_and_logs_keep_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = LocalProcess::start_logging(&local_binary(), dir.path(), &[], &log);
    let (url, client) = (server.url.clone(), Client::new());
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim().to_owned();
    let user = token(dir.path(), "user-1");

    // Admin only.
    let (status, _) = client.get_text(&format!("{url}/metrics"), None).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = client.get_text(&format!("{url}/metrics"), Some(&user)).await.unwrap();
    assert_eq!(status, 403);
    let (status, _) = client.get(&format!("{url}/api/admin/live"), Some(&user)).await.unwrap();
    assert_eq!(status, 403);

    // The script: 3 coupons; 5 users; a repeat; a claim before opening, one with no token, one
    // for no such campaign.
    let opens = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    for (id, opens_at) in [("metrics", opens), ("later", opens + time::Duration::hours(1))] {
        let body = json!({"id": id, "title": "Metrics", "total": 3, "opens_at": opens_at.format(&Rfc3339).unwrap(),
            "coupon": {"discount": 1000, "currency": "KRW", "valid_days": 7}});
        let (status, v) = client.post(&format!("{url}/api/admin/campaigns"), Some(&admin), Some(&body)).await.unwrap();
        assert_eq!(status, 201, "{v}");
    }
    let claim = |campaign: &str, token: Option<String>| {
        let (client, url) = (client.clone(), url.clone());
        let path = format!("{url}/api/campaigns/{campaign}/claims");
        async move { client.post(&path, token.as_deref(), None).await.unwrap() }
    };
    assert_eq!(claim("later", Some(user.clone())).await.0, 409);
    assert_eq!(claim("metrics", None).await.0, 401);
    assert_eq!(claim("nowhere", Some(user.clone())).await.0, 404);
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(1200)).await;
    let mut codes = Vec::new();
    for u in ["user-1", "user-2", "user-3", "user-4", "user-5", "user-1"] {
        let (status, v) = claim("metrics", Some(token(dir.path(), u))).await;
        if let Some(code) = v["coupon"]["code"].as_str() {
            codes.push(code.to_owned());
        }
        assert!(matches!(status, 200 | 201 | 409), "{status} {v}");
    }
    assert_eq!(codes.len(), 4, "3 issued and 1 repeat");

    let m = metrics(&client, &url, &admin).await;
    let expected: BTreeMap<String, u64> =
        [("issued", 3), ("already_issued", 1), ("sold_out", 2), ("not_open", 1), ("unauthorized", 1), ("not_found", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
    assert_eq!(claims(&m), expected);
    assert_eq!(value(&m, "firstcome_claim_duration_seconds_count", None), Some(9.0), "one latency per claim");
    assert_eq!(value(&m, "firstcome_campaign_remaining", Some(("campaign", "metrics"))), Some(0.0));
    assert_eq!(value(&m, "firstcome_breaker_state", None), Some(0.0));
    // Three issues and the sell-out went to the store; after it, losers and the repeat did not.
    assert_eq!(value(&m, "firstcome_store_call_duration_seconds_count", Some(("op", "claim"))), Some(4.0));
    // The ledger drains the three in-process; its writes are counted and its lag goes to 0.
    let mut drained = false;
    for _ in 0..100 {
        let m = metrics(&client, &url, &admin).await;
        if value(&m, "firstcome_ledger_writes_total", Some(("result", "written"))) == Some(3.0)
            && value(&m, "firstcome_ledger_lag_seconds", None) == Some(0.0)
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "ledger writes counted and lag back to 0");

    // The live view: the seconds the claims were answered in add up to the same counts.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, live) = client.get(&format!("{url}/api/admin/live"), Some(&admin)).await.unwrap();
    assert_eq!(status, 200, "{live}");
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for second in live["seconds"].as_array().unwrap() {
        for (k, n) in second["claims"].as_object().unwrap() {
            *seen.entry(k.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(seen, expected, "{live}");
    assert_eq!(live["remaining"]["metrics"], json!(0));
    assert!(live["seconds"].as_array().unwrap().iter().any(|s| s["p99_ms"].as_f64().is_some_and(|p| p > 0.0)));

    // A rehearsal that reads /metrics before and after agrees with the server exactly.
    let o = rehearse_options(
        &url,
        dir.path(),
        &[
            "--scenario",
            "spike",
            "--users",
            "300",
            "--repeat",
            "2",
            "--stock",
            "100",
            "--connections",
            "16",
            "--scrape-metrics",
        ],
    );
    let report = rehearse(o).await.unwrap();
    eprintln!("{}", report.table());
    assert_eq!(report.violations, Vec::<String>::new());
    let counted = report.server_outcomes.clone().unwrap();
    assert_eq!(counted, firstcome_rehearse::report::by_code(&report.outcomes));
    assert_eq!(counted.get("issued"), Some(&100));

    // The log: JSON lines, request ids on the claims' lines, and no secret anywhere in it.
    assert!(server.terminate(), "graceful exit");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let issued_lines: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "issued").collect();
    assert_eq!(issued_lines.len(), 103, "one line per coupon");
    let mut ids = std::collections::HashSet::new();
    for l in &issued_lines {
        let id = l["fields"]["request_id"].as_str().unwrap_or_default();
        assert!(!id.is_empty() && ids.insert(id.to_owned()), "a request id of its own: {l}");
    }
    let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    let mut secrets = vec![admin.clone(), user.clone(), secret.trim().to_owned()];
    secrets.extend(codes);
    for u in ["user-2", "user-3", "user-4", "user-5"] {
        secrets.push(token(dir.path(), u));
    }
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "the log holds a secret ({}...)", &s[..8]);
        // A token's signature alone is as good as the token for nobody, but its payload is not
        // secret; the signature must not appear either.
        if let Some(sig) = s.rsplit('.').next().filter(|p| p.len() > 20 && s.contains('.')) {
            assert!(!text.contains(sig), "the log holds a token's signature");
        }
    }
}

/// The post-event report of a rehearsed opening, from the real binary's own data: every coupon
/// issued and counted per second, a sell-out time, the outcome mix equal to what the load tool
/// was answered, percentiles, the ledger's drain, and the page and chart written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_event_report_tells_the_opening_from_the_servers_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalProcess::start(&local_binary(), dir.path(), &[]);
    let admin_file = dir.path().join("admin-token");
    let o = rehearse_options(
        &server.url,
        dir.path(),
        &["--scenario", "spike", "--users", "400", "--repeat", "2", "--stock", "150", "--connections", "16"],
    );
    let rehearsal = rehearse(o).await.unwrap();
    assert_eq!(rehearsal.violations, Vec::<String>::new());
    // The live view samples once a second: let it take the last second in.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let out = dir.path().join("reports");
    let opts = firstcome_rehearse::event::ReportOptions {
        campaign: rehearsal.campaign.clone(),
        url: server.url.clone(),
        admin_token_file: admin_file.clone(),
        out: out.clone(),
    };
    let (report, page) = firstcome_rehearse::event::write_report(&opts).await.unwrap();
    eprintln!("{}", report.text());
    assert_eq!((report.issued, report.total, report.ledger_written), (150, 150, 150));
    assert_eq!(report.issued_per_s.iter().sum::<u64>(), 150, "every coupon in a second");
    let sold_out = report.sold_out_after_s.expect("sold out");
    assert!((0.0..rehearsal.duration_s + 2.0).contains(&sold_out), "{sold_out}");
    assert_eq!(report.outcomes, firstcome_rehearse::report::by_code(&rehearsal.outcomes), "{:?}", report.notes);
    let (p50, p99) = (report.p50_ms.unwrap(), report.p99_ms.unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{p50} {p99}");
    assert!(report.ledger_drained_after_s.is_some(), "{:?}", report.notes);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("sold out") && html.contains(&report.campaign));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{}.json", report.campaign))).unwrap()).unwrap();
    assert_eq!(json["issued"], 150);
}
