//! The local service in-process on a real port: demo campaign, admin token file, ledger drain,
//! graceful shutdown that flushes, and a restart that finds everything again.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use firstcome_local::Config;
use firstcome_tests::TestApp;
use firstcome_wire::{CampaignStatus, ClaimOutcome, CouponTerms, CreateCampaign, ErrorCode};
use time::{Duration, OffsetDateTime};

fn config(dir: &Path, demo: bool) -> Config {
    Config { demo, dev_tokens: true, ledger_rate: NonZeroU32::new(2000).unwrap(), ..Config::new(dir) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_service_issues_drains_ledger_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(config(dir.path(), true)).await;

    let admin_path = dir.path().join("admin-token");
    assert_eq!(std::fs::metadata(&admin_path).unwrap().permissions().mode() & 0o777, 0o600);

    // The demo campaign: 100 coupons, opening about 30 s from now.
    let (s, list) = app.admin_list().await;
    assert_eq!(s, 200);
    let demo = list.unwrap().campaigns.remove(0).campaign;
    assert!(demo.id.starts_with("demo-"));
    assert_eq!((demo.total, demo.status), (100, CampaignStatus::Scheduled));
    let until = demo.opens_at - OffsetDateTime::now_utc();
    assert!(until > Duration::seconds(20) && until <= Duration::seconds(30), "{until}");

    // A campaign open now, raced by 80 users for 50 coupons.
    let now = CreateCampaign {
        id: "now".into(),
        title: "Now".into(),
        total: 50,
        opens_at: OffsetDateTime::now_utc() - Duration::seconds(1),
        closes_at: None,
        coupon: CouponTerms { discount: 1000, currency: "USD".into(), valid_days: 1 },
        pow_bits: 0,
    };
    assert_eq!(app.create_campaign(&now).await.0, 201);
    let app = std::sync::Arc::new(app);
    let claims = (0..80).map(|u| {
        let app = app.clone();
        tokio::spawn(async move { app.claim("now", &format!("u{u}")).await })
    });
    let mut codes = HashSet::new();
    for c in claims {
        if let (201, Ok(answer)) = c.await.unwrap() {
            assert_eq!(answer.outcome, ClaimOutcome::Issued);
            codes.insert(answer.coupon.code);
        }
    }
    assert_eq!(codes.len(), 50);
    assert_eq!(app.wait_for_ledger("now", 50).await.issued, 50);

    // A dev token from the running server works for claims and is a plain user.
    let body = serde_json::json!({"user_id": "late"});
    let (_, t) = app.client.post(&format!("{}/api/dev/token", app.url), None, Some(&body)).await.unwrap();
    let (s, refused) = app.claim_as("now", t["token"].as_str().unwrap()).await;
    assert_eq!((s, refused.unwrap_err().error), (409, ErrorCode::SoldOut));

    let Ok(app) = std::sync::Arc::try_unwrap(app) else { panic!("every claim task has finished") };
    app.stop().await;

    // Restart on the same data dir (the lock was released): same secret, same coupons.
    let app = TestApp::spawn(config(dir.path(), false)).await;
    match app.my_claim("now", "u0").await {
        (200, Ok(coupon)) => assert!(codes.contains(&coupon.code)),
        (status, _) => assert_eq!(status, 404),
    }
    assert_eq!(app.admin_list().await.1.unwrap().campaigns.len(), 2, "no new demo without --demo");
    app.stop().await;
    // --demo again while the first demo has not opened: reused, not piled up.
    let app = TestApp::spawn(config(dir.path(), true)).await;
    assert_eq!(app.admin_list().await.1.unwrap().campaigns.len(), 2, "the waiting demo is reused");
    let v = app.wait_for_ledger("now", 50).await;
    assert_eq!((v.issued, v.campaign.remaining), (50, 0));
    app.stop().await;
}
