//! The local service in-process on a real port: demo campaign, admin token file, ledger drain,
//! graceful shutdown that flushes, and a restart that finds everything again.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use firstcome_local::Config;
use firstcome_tests::Client;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

fn config(dir: &Path, demo: bool) -> Config {
    Config {
        data_dir: dir.to_owned(),
        jwt_secret: None,
        demo,
        dev_tokens: true,
        ledger_rate: NonZeroU32::new(2000).unwrap(),
        conns: Default::default(),
        guard: firstcome_guard::GuardConfig::local(),
        limits: Default::default(),
        origins: Vec::new(),
        site_dir: None,
    }
}

/// Starts the service on port 0; returns its base URL, a shutdown trigger and the serving task.
async fn serve(
    cfg: Config,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let local = firstcome_local::start(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(firstcome_local::run(listener, local, async move {
        let _ = rx.await;
    }));
    (url, tx, task)
}

fn user_token(dir: &Path, user: &str) -> String {
    let secret = std::fs::read_to_string(dir.join("jwt-secret")).unwrap();
    firstcome_api::sign_hs256(secret.trim().as_bytes(), user, None, time::Duration::hours(1))
}

async fn wait_for_ledger(client: &Client, url: &str, admin: &str, id: &str, expected: u64) -> Value {
    for _ in 0..200 {
        let (_, v) = client.get(&format!("{url}/api/admin/campaigns/{id}"), Some(admin)).await.unwrap();
        if v["ledger_written"] == json!(expected) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ledger did not reach {expected} for {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_service_issues_drains_ledger_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let (url, stop, task) = serve(config(dir.path(), true)).await;

    let admin_path = dir.path().join("admin-token");
    assert_eq!(std::fs::metadata(&admin_path).unwrap().permissions().mode() & 0o777, 0o600);
    let admin = std::fs::read_to_string(&admin_path).unwrap();

    // The demo campaign: 100 coupons, opening about 30 s from now.
    let (s, list) = client.get(&format!("{url}/api/admin/campaigns"), Some(&admin)).await.unwrap();
    assert_eq!(s, 200);
    let demo = &list["campaigns"][0];
    assert!(demo["id"].as_str().unwrap().starts_with("demo-"));
    assert_eq!((demo["total"].clone(), demo["status"].clone()), (json!(100), json!("scheduled")));
    let opens = time::OffsetDateTime::parse(demo["opens_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let until = opens - time::OffsetDateTime::now_utc();
    assert!(until > time::Duration::seconds(20) && until <= time::Duration::seconds(30), "{until}");

    // A campaign open now, raced by 80 users for 50 coupons.
    let opens_at = (time::OffsetDateTime::now_utc() - time::Duration::seconds(1)).format(&Rfc3339).unwrap();
    let body = json!({"id": "now", "title": "Now", "total": 50, "opens_at": opens_at,
                      "coupon": {"discount": 1000, "currency": "USD", "valid_days": 1}});
    assert_eq!(client.post(&format!("{url}/api/admin/campaigns"), Some(&admin), Some(&body)).await.unwrap().0, 201);
    let claims = (0..80).map(|u| {
        let (client, url, token) = (client.clone(), url.clone(), user_token(dir.path(), &format!("u{u}")));
        tokio::spawn(async move {
            let (s, v) = client.post(&format!("{url}/api/campaigns/now/claims"), Some(&token), None).await.unwrap();
            (s, v["coupon"]["code"].as_str().map(str::to_owned))
        })
    });
    let mut codes = HashSet::new();
    for c in claims {
        if let (201, Some(code)) = c.await.unwrap() {
            codes.insert(code);
        }
    }
    assert_eq!(codes.len(), 50);
    let v = wait_for_ledger(&client, &url, &admin, "now", 50).await;
    assert_eq!(v["issued"], 50);

    // A dev token from the running server works for claims and is a plain user.
    let (_, t) = client.post(&format!("{url}/api/dev/token"), None, Some(&json!({"user_id": "late"}))).await.unwrap();
    let late = t["token"].as_str().unwrap();
    let (s, v) = client.post(&format!("{url}/api/campaigns/now/claims"), Some(late), None).await.unwrap();
    assert_eq!((s, v["error"].clone()), (409, json!("sold_out")));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Restart on the same data dir (the lock was released): same secret, same coupons.
    let (url, stop, task) = serve(config(dir.path(), false)).await;
    let token = user_token(dir.path(), "u0");
    let (s, me) = client.get(&format!("{url}/api/campaigns/now/claims/me"), Some(&token)).await.unwrap();
    if s == 200 {
        assert!(codes.contains(me["code"].as_str().unwrap()));
    } else {
        assert_eq!(s, 404);
    }
    let (_, list) = client.get(&format!("{url}/api/admin/campaigns"), Some(&admin)).await.unwrap();
    assert_eq!(list["campaigns"].as_array().unwrap().len(), 2, "no new demo without --demo");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // --demo again while the first demo has not opened: reused, not piled up.
    let (url, stop, task) = serve(config(dir.path(), true)).await;
    let (_, list) = client.get(&format!("{url}/api/admin/campaigns"), Some(&admin)).await.unwrap();
    assert_eq!(list["campaigns"].as_array().unwrap().len(), 2, "the waiting demo is reused");
    let v = wait_for_ledger(&client, &url, &admin, "now", 50).await;
    assert_eq!((v["issued"].clone(), v["remaining"].clone()), (json!(50), json!(0)));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
