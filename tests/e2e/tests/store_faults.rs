//! The store misbehaves under the real router, on the real embedded store, over real HTTP:
//! a stall answers 503 within the guard's timeout, failures open the breaker (503 at once),
//! and after the store heals the breaker closes by itself and the stock is issued exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstcome_api::{AppState, Auth};
use firstcome_core::Issuer;
use firstcome_guard::faulty::{Fault, FaultSwitch, Faulty};
use firstcome_guard::{BreakerConfig, BreakerState, GuardConfig, Guarded};
use firstcome_local::serve::ConnLimits;
use firstcome_store_sqlite::SqliteStore;
use firstcome_tests::Client;
use serde_json::{Value, json};

type Store = Guarded<Faulty<Arc<SqliteStore>>>;

struct Service {
    url: String,
    store: Arc<Store>,
    switch: FaultSwitch,
    auth: Arc<Auth>,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let (faulty, switch) = Faulty::new(sqlite);
    let config = GuardConfig {
        call_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(200),
        breaker: BreakerConfig {
            window: 20,
            min_calls: 20,
            failure_rate: 0.5,
            open_for: Duration::from_millis(500),
            probes: 5,
        },
        ..GuardConfig::local()
    };
    let store = Arc::new(Guarded::new(faulty, config));
    let issuer = Arc::new(Issuer::with_store(store.clone()));
    let auth = Arc::new(Auth::hs256_signing(b"faults-test-secret-faults-test-secret-0123"));
    let admin = auth.sign("admin", Some(firstcome_api::auth::ADMIN_ROLE), time::Duration::hours(1)).unwrap();
    let app = firstcome_api::router(AppState::new(issuer, auth.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(firstcome_local::serve::serve(listener, app, ConnLimits::default(), std::future::pending()));
    Service { url, store, switch, auth, admin, _dir: dir }
}

impl Service {
    fn token(&self, user: usize) -> String {
        self.auth.sign(&format!("user-{user}"), None, time::Duration::hours(1)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_then_failing_store_answers_503_in_time_and_recovers_with_exact_stock() {
    let s = service().await;
    let client = Client::new();
    let opens = (time::OffsetDateTime::now_utc() - time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({"id": "faulty", "title": "Faulty", "total": 20, "opens_at": opens,
                      "coupon": {"discount": 1000, "currency": "KRW", "valid_days": 1}});
    let (status, answer) =
        client.post(&format!("{}/api/admin/campaigns", s.url), Some(&s.admin), Some(&body)).await.unwrap();
    assert_eq!(status, 201, "{answer}");
    let claim_url = format!("{}/api/campaigns/faulty/claims", s.url);
    let mut told: HashMap<usize, String> = HashMap::new();
    let mut note = |u: usize, status: u16, body: &Value| {
        if status == 200 || status == 201 {
            let code = body["coupon"]["code"].as_str().unwrap().to_owned();
            assert_eq!(told.entry(u).or_insert_with(|| code.clone()), &code, "user {u} got two coupons");
        }
    };

    // Stalled: every claim answers 503 `unavailable` well within a second, none hangs.
    s.switch.set(Fault::Stall(Duration::from_secs(30)));
    for u in 0..5 {
        let started = Instant::now();
        let (status, body) = client.post(&claim_url, Some(&s.token(u)), None).await.unwrap();
        assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
        assert!(started.elapsed() < Duration::from_secs(1), "a stalled claim took {:?}", started.elapsed());
    }

    // Failing: the breaker opens, and then the store is not even asked.
    s.switch.set(Fault::Fail);
    for u in 0..40 {
        let (status, body) = client.post(&claim_url, Some(&s.token(u)), None).await.unwrap();
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(s.store.breaker_state(), BreakerState::Open);

    // Healed: after the open interval the probes pass and the breaker closes; 30 users then
    // race the 20 coupons and exactly 20 are issued, one per winner.
    s.switch.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.store.breaker_state() != BreakerState::Closed {
        assert!(Instant::now() < deadline, "the breaker never closed");
        let (status, body) =
            client.get(&format!("{}/api/admin/campaigns/faulty", s.url), Some(&s.admin)).await.unwrap();
        assert!(status == 200 || status == 503, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = futures::future::join_all((0..30).map(|u| {
        let (client, url, token) = (&client, &claim_url, s.token(u));
        async move { (u, client.post(url, Some(&token), None).await.unwrap()) }
    }))
    .await;
    let mut issued = 0;
    for (u, (status, body)) in &answers {
        match status {
            201 => issued += 1,
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            200 => {}
            _ => panic!("user {u}: {status} {body}"),
        }
        note(*u, *status, body);
    }
    let (_, view) = client.get(&format!("{}/api/admin/campaigns/faulty", s.url), Some(&s.admin)).await.unwrap();
    assert_eq!(view["issued"], json!(20), "{view}");
    assert_eq!(issued, 20);
    assert_eq!(told.len(), 20);
}
