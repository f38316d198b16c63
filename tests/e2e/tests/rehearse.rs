//! The rehearsal tool tested both ways: its invariant checker must catch a deliberately broken
//! server (a store that double-issues), and a small spike against the real `firstcome-local`
//! binary must come back with 0 violations; over HTTPS too, as against a deployed stage.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use clap::Parser;
use firstcome_api::{AppState, Auth};
use firstcome_core::{CacheConfig, CampaignId, ClaimStore, Coupon, CouponCode, Issuer, StoreClaim, StoreError, UserId};
use firstcome_rehearse::{Options, rehearse};
use firstcome_store_sqlite::SqliteStore;
use firstcome_tests::{LocalProcess, local_binary, rehearse_binary};

const SECRET: &str = "rehearsal-test-secret-0123456789abcdef";

/// Broken on purpose: a user's repeat click gets a brand-new code instead of their coupon.
struct DoubleIssuing {
    inner: SqliteStore,
    doubled: AtomicUsize,
}

#[async_trait]
impl ClaimStore for DoubleIssuing {
    async fn claim_with_ticket(
        &self,
        c: &CampaignId,
        u: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        at: time::OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        match self.inner.claim_with_ticket(c, u, code, ticket, at).await? {
            StoreClaim::Existing(mut coupon) => {
                self.doubled.fetch_add(1, Ordering::Relaxed);
                coupon.code = CouponCode::generate();
                Ok(StoreClaim::Issued(coupon))
            }
            other => Ok(other),
        }
    }
    async fn coupon_of(&self, c: &CampaignId, u: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.inner.coupon_of(c, u).await
    }
    async fn issued(&self, c: &CampaignId) -> Result<u64, StoreError> {
        self.inner.issued(c).await
    }
    async fn coupons(&self, c: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        self.inner.coupons(c, after, limit).await
    }
}

fn write_secrets(dir: &Path, auth: &Auth) {
    std::fs::write(dir.join("jwt-secret"), SECRET).unwrap();
    let admin = auth.sign("ops", Some("admin"), time::Duration::hours(1)).unwrap();
    std::fs::write(dir.join("admin-token"), admin).unwrap();
}

/// The load tool against `url`, waiting up to 3 s for the ledger.
fn options(url: &str, dir: &Path, extra: &[&str]) -> Options {
    let mut args = vec!["--drain-timeout", "3"];
    args.extend_from_slice(extra);
    firstcome_tests::rehearse_options(url, dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_server_that_double_issues() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let broken = Arc::new(DoubleIssuing { inner: store.clone(), doubled: AtomicUsize::new(0) });
    let store = Arc::new(store);
    let issuer = Issuer::new(store.clone(), broken.clone(), store, CacheConfig::default());
    let auth = Arc::new(Auth::hs256_signing(SECRET.as_bytes()));
    write_secrets(dir.path(), &auth);
    let app = firstcome_api::router(AppState::new(issuer, auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let report = rehearse(options(
        &url,
        dir.path(),
        &["--stock", "50", "--users", "200", "--repeat", "2", "--connections", "16"],
    ))
    .await
    .unwrap();
    assert!(broken.doubled.load(Ordering::Relaxed) > 0, "the broken store was exercised");
    assert!(report.violations.iter().any(|v| v.contains("got two codes")), "{:#?}", report.violations);
    assert!(report.violations.iter().any(|v| v.contains("claims/me")), "{:#?}", report.violations);
    assert!(report.violations.iter().any(|v| v.contains("`issued` answers")), "{:#?}", report.violations);
}

/// `axum::serve` over TLS: each accepted TCP connection is handshaken before the router sees it.
/// Handshakes that fail (a client refusing our certificate) are dropped, as a real edge would.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The real router on SQLite behind TLS with a fresh self-signed certificate for 127.0.0.1;
/// returns the https URL, the certificate's PEM and the ledger worker's stop switch (dropping it
/// stops the worker).
async fn serve_tls(dir: &Path) -> (String, String, tokio::sync::watch::Sender<bool>) {
    let store = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
    // The ledger worker too: the rehearsal checks that every issued coupon reached the ledger.
    let (stop_worker, stop) = tokio::sync::watch::channel(false);
    let rate = std::num::NonZeroU32::new(5000).unwrap();
    tokio::spawn(firstcome_local::ledger_worker::run(store.clone(), store.clone(), rate, || false, stop));
    let issuer = Issuer::with_store(store);
    let auth = Arc::new(Auth::hs256_signing(SECRET.as_bytes()));
    write_secrets(dir, &auth);
    let app = firstcome_api::router(AppState::new(issuer, auth));

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, cert.cert.pem(), stop_worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_over_https_trusting_the_stage_certificate_has_no_violations() {
    let dir = tempfile::tempdir().unwrap();
    let (url, pem, _worker) = serve_tls(dir.path()).await;
    let ca = dir.path().join("stage-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let args = ["--stock", "40", "--users", "300", "--repeat", "2", "--connections", "8", "--ceiling"];

    // Not trusted: the certificate is nobody's, so the tool refuses to talk (no silent insecure mode).
    let refused = rehearse(options(&url, dir.path(), &args)).await.expect_err("an untrusted certificate is refused");
    assert!(refused.to_string().contains("creating the campaign"), "{refused}");

    let mut trusted = options(&url, dir.path(), &args);
    trusted.ca_cert = Some(ca);
    let report = rehearse(trusted).await.unwrap();
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!((report.requests, report.issued), (600, 40));
    assert_eq!(report.outcomes.get("201 issued"), Some(&40));
    assert_eq!(report.outcomes.get("conn_error"), None, "every load connection completed its handshake");
    assert!(report.ceiling_rps.is_some_and(|c| c > 0.0), "the ceiling is measured over TLS too");
}

#[test]
fn a_small_spike_against_firstcome_local_has_no_violations() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalProcess::start(&local_binary(), dir.path(), &[]);
    let json = dir.path().join("reports/spike.json");
    let out = Command::new(rehearse_binary())
        .args(["--url", &server.url, "--scenario", "spike", "--users", "2500", "--repeat", "2", "--stock", "100"])
        .args(["--connections", "32", "--lead", "1", "--quiet", "--ceiling"])
        .arg("--admin-token-file")
        .arg(dir.path().join("admin-token"))
        .arg("--jwt-secret-file")
        .arg(dir.path().join("jwt-secret"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["violations"], serde_json::json!([]));
    assert_eq!(report["requests"], 5000);
    assert_eq!(report["issued"], 100);
    assert_eq!(report["outcomes"]["201 issued"], 100);
    assert_eq!(report["ledger_written"], 100);
    assert!(report["ratio_to_ceiling"].as_f64().unwrap() > 0.0);
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_ms"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(json.with_extension("svg").exists(), "the chart is written next to the report, directories created");
    assert!(table.contains("0 violations"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_reports_its_knee_and_stops_climbing_once_a_step_breaks_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalProcess::start(&local_binary(), dir.path(), &[]);
    let ramp = |bound_ms: f64| {
        let args = ["--scenario", "ramp", "--stock", "100", "--users", "5000", "--rate", "500", "--duration", "3"];
        Options { p99_bound_ms: bound_ms, ..options(&server.url, dir.path(), &args) }
    };
    // A generous bound: every step of 500, 625, 781 req/s holds, so the knee is the last one.
    let easy = rehearse(ramp(1000.0)).await.unwrap();
    assert_eq!(easy.violations, Vec::<String>::new());
    assert_eq!(easy.knee_rps, Some(781.25));
    assert!(easy.requests > 1800, "{}", easy.requests);
    // An impossible bound (1 µs): the first step breaks it and the ramp stops climbing.
    let hard = rehearse(ramp(0.001)).await.unwrap();
    assert_eq!(hard.knee_rps, Some(0.0));
    assert!(hard.requests < 700, "stopped after the first step, sent {}", hard.requests);
    assert_eq!(hard.violations, Vec::<String>::new(), "stopping early still leaves a consistent campaign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_with_tickets_solves_them_after_t0_and_every_claim_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalProcess::start(&local_binary(), dir.path(), &[]);
    let args = ["--stock", "40", "--users", "300", "--repeat", "2", "--connections", "16", "--pow-bits", "10"];
    let report = rehearse(options(&server.url, dir.path(), &args)).await.unwrap();
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(report.issued, 40);
    let tickets = report.tickets.as_ref().expect("the report shows what the tickets cost");
    assert_eq!(tickets.bits, 10);
    assert!(tickets.per_ticket_ms.max > 0.0 && tickets.all_users_s > 0.0, "{tickets:?}");
    // Every answer is a decision on the claim itself: none was refused for its ticket.
    let refused: u64 = report.outcomes.iter().filter(|(k, _)| k.contains("ticket")).map(|(_, v)| v).sum();
    assert_eq!(refused, 0, "{:?}", report.outcomes);
    assert!(report.table().contains("tickets       10 bits"), "{}", report.table());
}

#[test]
fn nonsense_options_are_refused_with_a_message_not_a_panic() {
    for bad in [
        ["--users", "0"],
        ["--repeat", "0"],
        ["--connections", "0"],
        ["--rate", "0"],
        ["--rate", "-5"],
        ["--duration", "nan"],
        ["--p99-bound-ms", "-1"],
        ["--drain-timeout", "-1"],
        ["--lead", "inf"],
        ["--pow-bits", "25"],
    ] {
        let arg = format!("{}={}", bad[0], bad[1]);
        let err = Options::try_parse_from(["firstcome-rehearse", arg.as_str()])
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(err.to_string().contains(bad[0]), "{bad:?}: {err}");
    }
}
