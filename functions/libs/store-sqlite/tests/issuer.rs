//! The `Issuer` engine over a real SqliteStore, wrapped in a decorator that counts store calls,
//! to show invariant 4: not_open, closed and (once known) sold_out never reach the store's
//! write path, and campaign metadata is read from the store once, at load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use firstcome_core::testkit::user;
use firstcome_core::{
    Campaign, CampaignChanges, CampaignId, CampaignStore, ClaimOutcome, ClaimStore, Coupon, CouponCode, CouponTemplate,
    Issuer, IssuerError, NewCampaign, StoreClaim, StoreError, UserId,
};
use firstcome_store_sqlite::SqliteStore;
use time::{Duration, OffsetDateTime};

#[derive(Default)]
struct Calls {
    claim: AtomicUsize,
    campaigns: AtomicUsize,
}

struct Counting {
    inner: SqliteStore,
    calls: Arc<Calls>,
}

#[async_trait]
impl ClaimStore for Counting {
    async fn claim(
        &self,
        c: &Campaign,
        u: &UserId,
        code: CouponCode,
        at: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.calls.claim.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(c, u, code, at).await
    }
    async fn coupon_of(&self, c: &CampaignId, u: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.inner.coupon_of(c, u).await
    }
    async fn issued(&self, c: &CampaignId) -> Result<u64, StoreError> {
        self.inner.issued(c).await
    }
}

#[async_trait]
impl CampaignStore for Counting {
    async fn insert_campaign(&self, c: &Campaign) -> Result<(), StoreError> {
        self.inner.insert_campaign(c).await
    }
    async fn update_campaign(&self, c: &Campaign) -> Result<(), StoreError> {
        self.inner.update_campaign(c).await
    }
    async fn campaigns(&self) -> Result<Vec<Campaign>, StoreError> {
        self.calls.campaigns.fetch_add(1, Ordering::SeqCst);
        self.inner.campaigns().await
    }
}

async fn issuer() -> (tempfile::TempDir, Issuer, Arc<Calls>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let calls = Arc::new(Calls::default());
    let counting = Arc::new(Counting { inner: store.clone(), calls: calls.clone() });
    let issuer = Issuer::load(counting.clone(), counting, Arc::new(store)).await.unwrap();
    (dir, issuer, calls)
}

fn campaign(id: &str, total: u64, opens_at: OffsetDateTime, closes_at: Option<OffsetDateTime>) -> Campaign {
    NewCampaign {
        id: id.into(),
        title: id.into(),
        total,
        opens_at,
        closes_at,
        coupon: CouponTemplate { discount: 1, currency: "EUR".into(), valid_days: 1 },
    }
    .validate()
    .unwrap()
}

#[tokio::test]
async fn fast_fail_outcomes_never_reach_the_claim_path() {
    let (_dir, issuer, calls) = issuer().await;
    let t0 = OffsetDateTime::now_utc();
    let c = issuer.create(campaign("fast", 2, t0 + Duration::hours(1), Some(t0 + Duration::hours(2)))).await.unwrap();
    let claims = || calls.claim.load(Ordering::SeqCst);

    for u in 0..100 {
        assert_eq!(issuer.claim(&c.id, &user(u), t0).await.unwrap(), ClaimOutcome::NotOpen);
    }
    assert_eq!(claims(), 0, "not_open is answered from memory");

    let open = t0 + Duration::minutes(61);
    assert!(matches!(issuer.claim(&c.id, &user(1), open).await.unwrap(), ClaimOutcome::Issued(_)));
    assert!(matches!(issuer.claim(&c.id, &user(2), open).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(issuer.claim(&c.id, &user(3), open).await.unwrap(), ClaimOutcome::SoldOut);
    assert_eq!(claims(), 3, "the store is asked until it first says sold out");
    for u in 4..1000 {
        assert_eq!(issuer.claim(&c.id, &user(u), open).await.unwrap(), ClaimOutcome::SoldOut);
    }
    assert!(matches!(issuer.claim(&c.id, &user(1), open).await.unwrap(), ClaimOutcome::AlreadyIssued(_)));
    assert_eq!(claims(), 3, "after sell-out, losers and winners are answered without a store write");

    let closed = t0 + Duration::hours(3);
    assert_eq!(issuer.claim(&c.id, &user(500), closed).await.unwrap(), ClaimOutcome::Closed);
    assert!(matches!(issuer.claim(&c.id, &user(2), closed).await.unwrap(), ClaimOutcome::AlreadyIssued(_)));
    assert_eq!(claims(), 3);
    assert_eq!(calls.campaigns.load(Ordering::SeqCst), 1, "campaign metadata was read once, at load");
}

#[tokio::test]
async fn edits_only_before_opening_and_unknown_campaigns_are_not_found() {
    let (_dir, issuer, _) = issuer().await;
    let t0 = OffsetDateTime::now_utc();
    let c = issuer.create(campaign("edit", 5, t0 + Duration::hours(1), None)).await.unwrap();
    assert!(matches!(issuer.create(c.clone()).await, Err(IssuerError::Conflict)));
    let changed = issuer.update(&c.id, CampaignChanges { total: Some(7), ..Default::default() }, t0).await.unwrap();
    assert_eq!(changed.total, 7);
    assert_eq!(issuer.view(&c.id, t0).await.unwrap().remaining, 7, "the cache serves the edit at once");
    let after_open = t0 + Duration::hours(2);
    let refused = issuer.update(&c.id, CampaignChanges { total: Some(9), ..Default::default() }, after_open).await;
    assert!(matches!(refused, Err(IssuerError::AlreadyOpen)));
    let bad = issuer.update(&c.id, CampaignChanges { total: Some(0), ..Default::default() }, t0).await;
    assert!(matches!(bad, Err(IssuerError::Invalid(e)) if e.field == "total"));
    let ghost = CampaignId::parse("ghost").unwrap();
    assert!(matches!(issuer.claim(&ghost, &user(1), t0).await, Err(IssuerError::NotFound)));
    assert!(matches!(issuer.view(&ghost, t0).await, Err(IssuerError::NotFound)));
}

#[tokio::test]
async fn a_reloaded_issuer_serves_campaigns_and_coupons_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = OffsetDateTime::now_utc();
    let won = {
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let issuer = Issuer::load(store.clone(), store.clone(), store.clone()).await.unwrap();
        let c = issuer.create(campaign("again", 1, t0 - Duration::minutes(1), None)).await.unwrap();
        let ClaimOutcome::Issued(won) = issuer.claim(&c.id, &user(1), t0).await.unwrap() else { panic!("issued") };
        store.close().await;
        won
    };
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let issuer = Issuer::load(store.clone(), store.clone(), store).await.unwrap();
    let id = CampaignId::parse("again").unwrap();
    assert_eq!(issuer.claim(&id, &user(1), t0).await.unwrap(), ClaimOutcome::AlreadyIssued(won));
    assert_eq!(issuer.claim(&id, &user(2), t0).await.unwrap(), ClaimOutcome::SoldOut);
}
