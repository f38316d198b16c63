//! Overload and connection attacks against the real `firstcome-local` binary, every protection
//! at its default: open-loop claims at three times the measured ceiling, claims past what the
//! store commits (more connections than it admits), and thousands of idle
//! and slow-header connections held while customers claim. The speed figures these print are
//! recorded in release builds by `cargo xtask bench` (docs/benchmarks.md: `overload` and `held`);
//! here the assertions are on what every answer is and on the invariants.

use firstcome_rehearse::rehearse;
use firstcome_tests::{LocalProcess, local_binary, rehearse_options};

/// One load at a time: on two cores each test's figures would be the other's noise.
static ONE_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The only answers an overloaded server may give a claim.
const ALLOWED: [&str; 6] =
    ["201 issued", "200 already_issued", "409 sold_out", "429 rate_limited", "503 overloaded", "503 unavailable"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_claims_at_three_times_the_ceiling_get_only_decisions_and_sheds() {
    let report = load_on_a_fresh_server(&[
        "--scenario",
        "stress",
        "--ceiling",
        "--ceiling-requests",
        "30000",
        "--duration",
        "20",
        "--users",
        "100000",
        "--stock",
        "1000",
        "--connections",
        "256",
    ])
    .await;
    assert_only_decisions(&report);
    assert_eq!(report.issued, 1000, "the stock, exactly");
    assert!(report.requests > 20_000, "the load ran: {}", report.requests);
}

/// Past what the durable path commits, on a campaign with stock left: more connections than the
/// server admits at once, so the excess reaches it (with fewer, it would queue in the load tool).
/// Every answer is a decision or a shed with `Retry-After`, and every coupon answered is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_past_what_the_store_commits_are_decided_or_shed_with_retry_after() {
    let report = load_on_a_fresh_server(&[
        "--scenario",
        "overload",
        "--calm-rate",
        "200",
        "--rate",
        "4000",
        "--duration",
        "5",
        "--users",
        "100000",
        "--stock",
        "100000",
        "--connections",
        "2048",
    ])
    .await;
    assert_only_decisions(&report);
    assert_eq!(report.missing_retry_after, 0, "every 429 and 503 says when to come back");
    let phases = report.phases.as_ref().expect("an overload run reports its phases");
    assert!(phases.normal_p99_ms.is_some() && phases.burst_p99_ms.is_some() && phases.recovered_p99_ms.is_some());
    assert!(report.requests > 10_000, "the load ran: {}", report.requests);
}

/// One load at a time, on a server of its own: the load tool with `args`, its report printed.
async fn load_on_a_fresh_server(args: &[&str]) -> firstcome_rehearse::report::Report {
    let _one = ONE_LOAD.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = LocalProcess::start(&local_binary(), dir.path(), &[]);
    let report = rehearse(options(&server.url, dir.path(), args)).await.unwrap();
    eprintln!("{}", report.table());
    report
}

/// No invariant broken, and every answer one an overloaded server may give.
fn assert_only_decisions(report: &firstcome_rehearse::report::Report) {
    assert_eq!(report.violations, Vec::<String>::new());
    for (outcome, n) in &report.outcomes {
        assert!(ALLOWED.contains(&outcome.as_str()), "{n} answers were {outcome:?}: {:?}", report.outcomes);
    }
}

/// The load tool against `url`, waiting up to 30 s for the ledger.
fn options(url: &str, dir: &std::path::Path, extra: &[&str]) -> firstcome_rehearse::Options {
    let mut args = vec!["--drain-timeout", "30"];
    args.extend_from_slice(extra);
    rehearse_options(url, dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_served_while_two_thousand_idle_and_two_hundred_slow_connections_are_held() {
    // 30 s of customers at 150 claims/s, each a new user, while the connections are squatted.
    let args = [
        "--scenario",
        "soak",
        "--rate",
        "150",
        "--duration",
        "30",
        "--users",
        "100000",
        "--stock",
        "100000",
        "--connections",
        "8",
        "--hold-idle",
        "2000",
        "--hold-slow",
        "200",
    ];
    let report = load_on_a_fresh_server(&args).await;
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(report.outcomes.keys().collect::<Vec<_>>(), ["201 issued"], "every customer got a coupon");
    assert!(report.requests >= 4000, "{}", report.requests);
    let held = report.held_connections.as_ref().unwrap();
    // The header deadline (10 s, counted from accept) closed the squatters and they came back,
    // and no connection outlived it by more than a slow client takes to notice (a trickling one
    // writes once a second) plus a busy debug server's timer lag. Judged by how long each stayed
    // open, not by how often they reopened, which also counts how fast the machine let them in
    // (CI saw 3,589 idle opens in one run and 4,336 in another while the server's accept queue,
    // then 1,024 deep, overflowed; `serve::LISTEN_BACKLOG`).
    assert!(held.idle_opened > 2000 && held.slow_opened > 200, "{held:?}");
    assert!(held.longest_open_ms <= 15_000, "a squatter outlived the 10 s header deadline: {held:?}");
}
