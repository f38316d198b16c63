//! The `Issuer` engine over the in-memory store, wrapped in a decorator that counts store calls:
//! refusals (not_open, closed, sold_out once known) never reach the claim path; the campaign is
//! re-read at most once per TTL while scheduled and never once frozen; public views read the
//! issued count at most once per TTL; unknown ids are remembered, in bounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use firstcome_core::testkit::{ManualClock, MemoryStore, campaign_at, now, user};
use firstcome_core::{
    CacheConfig, Campaign, CampaignChanges, CampaignId, CampaignStore, ClaimOutcome, ClaimStore, Coupon, CouponCode,
    EndOutcome, Issuer, IssuerError, StoreClaim, StoreError, UserId,
};
use time::{Duration, OffsetDateTime};

#[derive(Default)]
struct Calls {
    claim: AtomicUsize,
    campaign: AtomicUsize,
    issued: AtomicUsize,
    /// Milliseconds each campaign read takes, so readers overlap.
    campaign_ms: std::sync::atomic::AtomicU64,
}

struct Counting {
    inner: MemoryStore,
    calls: Calls,
}

#[async_trait]
impl ClaimStore for Counting {
    async fn claim_with_ticket(
        &self,
        c: &CampaignId,
        u: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        at: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.calls.claim.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_with_ticket(c, u, code, ticket, at).await
    }
    async fn coupon_of(&self, c: &CampaignId, u: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.inner.coupon_of(c, u).await
    }
    async fn issued(&self, c: &CampaignId) -> Result<u64, StoreError> {
        self.calls.issued.fetch_add(1, Ordering::SeqCst);
        self.inner.issued(c).await
    }
    async fn coupons(&self, c: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        self.inner.coupons(c, after, limit).await
    }
}

#[async_trait]
impl CampaignStore for Counting {
    async fn insert_campaign(&self, c: &Campaign) -> Result<(), StoreError> {
        self.inner.insert_campaign(c).await
    }
    async fn update_campaign(&self, c: &Campaign, v: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        self.inner.update_campaign(c, v, now).await
    }
    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        self.inner.end_campaign(id, now).await
    }
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        self.calls.campaign.fetch_add(1, Ordering::SeqCst);
        let ms = self.calls.campaign_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(StdDuration::from_millis(ms)).await;
        }
        self.inner.campaign(id).await
    }
    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        self.inner.campaigns(after, limit).await
    }
}

fn issuer(config: CacheConfig) -> (Issuer, Arc<Counting>) {
    let (issuer, store, _) = issuer_on_a_clock(config);
    (issuer, store)
}

/// An engine whose cache ages are measured on a clock the test moves: TTLs without sleeping.
fn issuer_on_a_clock(config: CacheConfig) -> (Issuer, Arc<Counting>, Arc<ManualClock>) {
    let store = Arc::new(Counting { inner: MemoryStore::new(), calls: Calls::default() });
    let ledger = Arc::new(MemoryStore::new());
    let clock = ManualClock::new();
    (Issuer::new(store.clone(), store.clone(), ledger, config).with_clock(clock.clone()), store, clock)
}

fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

#[tokio::test]
async fn refusals_never_reach_the_claim_path() {
    let (issuer, store) = issuer(CacheConfig::default());
    let t0 = now();
    let mut c = campaign_at("fast", 2, t0 + Duration::hours(1));
    c.closes_at = Some(t0 + Duration::hours(2));
    let c = issuer.create(c, t0).await.unwrap();
    let claims = || count(&store.calls.claim);

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
}

#[tokio::test]
async fn after_sell_out_one_claim_per_ttl_asks_the_store_again() {
    let ttl = std::time::Duration::from_millis(200);
    let (issuer, store, clock) = issuer_on_a_clock(CacheConfig { sold_out_ttl: ttl, ..CacheConfig::default() });
    let t0 = now();
    let c = issuer.create(campaign_at("sold-ttl", 1, t0 - Duration::minutes(1)), t0).await.unwrap();
    let claims = || count(&store.calls.claim);
    assert!(matches!(issuer.claim(&c.id, &user(1), t0).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(issuer.claim(&c.id, &user(2), t0).await.unwrap(), ClaimOutcome::SoldOut);
    for u in 3..100 {
        assert_eq!(issuer.claim(&c.id, &user(u), t0).await.unwrap(), ClaimOutcome::SoldOut);
    }
    assert_eq!(claims(), 2, "within the ttl, losers are answered from memory");
    assert_eq!(issuer.view(&c.id, t0).await.unwrap().issued, 1);
    clock.advance(ttl);
    // A coupon a store took back after sell-out would be found now: one claim looks again.
    for u in 100..200 {
        assert_eq!(issuer.claim(&c.id, &user(u), t0).await.unwrap(), ClaimOutcome::SoldOut);
    }
    assert_eq!(claims(), 3, "one store attempt per ttl, the others from memory meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_opening_one_claim_rereads_the_campaign_and_the_rest_wait_for_it_even_if_it_is_abandoned() {
    let (issuer, store) = issuer(CacheConfig::default());
    let issuer = Arc::new(issuer);
    let t0 = now();
    let c = campaign_at("opening", 5, t0 + Duration::hours(1));
    store.inner.insert_campaign(&c).await.unwrap();
    let reads = || count(&store.calls.campaign);
    assert_eq!(issuer.claim(&c.id, &user(0), t0).await.unwrap(), ClaimOutcome::NotOpen);
    assert_eq!(reads(), 1, "cached while scheduled");

    store.calls.campaign_ms.store(100, Ordering::SeqCst);
    let open = c.opens_at + Duration::seconds(1);
    // The first reader gives up mid-read (its client went away): the others must not hang on it.
    let abandoned = tokio::time::timeout(StdDuration::from_millis(20), issuer.claim(&c.id, &user(1), open)).await;
    assert!(abandoned.is_err(), "still reading when dropped");
    let claims: Vec<_> = (2..102)
        .map(|u| {
            let (issuer, id) = (issuer.clone(), c.id.clone());
            tokio::spawn(async move { issuer.claim(&id, &user(u), open).await })
        })
        .collect();
    let mut issued = 0;
    for h in claims {
        match tokio::time::timeout(StdDuration::from_secs(5), h).await.expect("no claim hangs").unwrap().unwrap() {
            ClaimOutcome::Issued(_) => issued += 1,
            ClaimOutcome::SoldOut => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(issued, 5);
    assert_eq!(reads(), 3, "the abandoned read, then one read for the 100 claims that came at the opening");
}

#[tokio::test]
async fn a_scheduled_campaign_is_reread_per_ttl_and_an_open_one_only_per_opened_ttl() {
    let ttl = StdDuration::from_millis(40);
    let config = CacheConfig { scheduled_ttl: ttl, opened_ttl: StdDuration::from_secs(60), ..Default::default() };
    let (issuer, store, clock) = issuer_on_a_clock(config);
    let t0 = now();
    let c = campaign_at("ttl", 5, t0 + Duration::hours(1));
    store.inner.insert_campaign(&c).await.unwrap();
    let reads = || count(&store.calls.campaign);

    for u in 0..50 {
        assert_eq!(issuer.claim(&c.id, &user(u), t0).await.unwrap(), ClaimOutcome::NotOpen);
    }
    assert_eq!(reads(), 1, "read through once, then cached");
    clock.advance(ttl);
    issuer.view(&c.id, t0).await.unwrap();
    issuer.view(&c.id, t0).await.unwrap();
    assert_eq!(reads(), 2, "a scheduled campaign is re-read once its TTL is up");

    // Read at or after opening: only an early end can change it, so it is re-read rarely.
    let open = c.opens_at + Duration::seconds(1);
    clock.advance(ttl);
    assert!(matches!(issuer.claim(&c.id, &user(1), open).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(reads(), 3);
    clock.advance(ttl);
    for u in 2..20 {
        issuer.claim(&c.id, &user(u), open).await.unwrap();
        issuer.view(&c.id, open).await.unwrap();
    }
    assert_eq!(reads(), 3, "an opened campaign is not re-read within opened_ttl");
}

#[tokio::test]
async fn an_early_end_reaches_every_instance_and_sold_out_survives_the_reread() {
    let ttl = StdDuration::from_millis(40);
    let config = CacheConfig { opened_ttl: ttl, ..Default::default() };
    let store = Arc::new(Counting { inner: MemoryStore::new(), calls: Calls::default() });
    let ledger = Arc::new(MemoryStore::new());
    let clock = ManualClock::new();
    let a = Issuer::new(store.clone(), store.clone(), ledger.clone(), config.clone()).with_clock(clock.clone());
    let b = Issuer::new(store.clone(), store.clone(), ledger, config).with_clock(clock.clone());
    let t0 = now();
    let c = campaign_at("end-early", 1, t0 - Duration::seconds(1));
    store.inner.insert_campaign(&c).await.unwrap();
    assert!(matches!(b.claim(&c.id, &user(1), t0).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(b.claim(&c.id, &user(2), t0).await.unwrap(), ClaimOutcome::SoldOut);
    let claims = || count(&store.calls.claim);
    assert_eq!(claims(), 2);

    // Re-read after opened_ttl with nothing changed: B still answers losers from memory.
    clock.advance(ttl);
    assert_eq!(b.claim(&c.id, &user(3), t0).await.unwrap(), ClaimOutcome::SoldOut);
    assert_eq!(claims(), 2, "the sold-out flag survives the re-read");

    let ended = a.end(&c.id, t0 + Duration::seconds(1)).await.unwrap();
    assert_eq!(ended.version, c.version + 1);
    let after = t0 + Duration::seconds(2);
    assert_eq!(a.view(&c.id, after).await.unwrap().status, firstcome_core::Status::Closed);
    // B learns of the end within opened_ttl, without a restart.
    clock.advance(ttl);
    assert_eq!(b.view(&c.id, after).await.unwrap().status, firstcome_core::Status::Closed);
    assert!(matches!(b.claim(&c.id, &user(1), after).await.unwrap(), ClaimOutcome::AlreadyIssued(_)));
    assert!(matches!(a.end(&c.id, after).await, Err(IssuerError::AlreadyClosed)));
    assert_eq!(store.inner.end_campaign(&c.id, after).await.unwrap(), EndOutcome::AlreadyClosed(ended));

    let later = campaign_at("end-not-open", 1, t0 + Duration::hours(1));
    store.inner.insert_campaign(&later).await.unwrap();
    assert!(matches!(a.end(&later.id, t0).await, Err(IssuerError::NotOpenYet)));
}

#[tokio::test]
async fn the_public_listing_shows_open_then_upcoming_and_is_a_snapshot() {
    let (issuer, store) = issuer(CacheConfig { scheduled_ttl: StdDuration::from_secs(60), ..Default::default() });
    let t0 = now();
    let mut closed = campaign_at("l-closed", 5, t0 - Duration::hours(2));
    closed.closes_at = Some(t0 - Duration::hours(1));
    let sold = campaign_at("l-sold", 1, t0 - Duration::minutes(1));
    let open = campaign_at("l-open", 5, t0 - Duration::minutes(5));
    let soon = campaign_at("l-soon", 5, t0 + Duration::minutes(5));
    let later = campaign_at("a-later", 5, t0 + Duration::hours(5));
    for c in [&closed, &sold, &open, &soon, &later] {
        store.inner.insert_campaign(c).await.unwrap();
    }
    assert!(matches!(issuer.claim(&sold.id, &user(1), t0).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(issuer.claim(&sold.id, &user(2), t0).await.unwrap(), ClaimOutcome::SoldOut);
    let ids =
        |v: Vec<firstcome_core::CampaignView>| v.into_iter().map(|v| v.campaign.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(issuer.listing(t0, 10).await.unwrap()), ["l-open", "l-soon", "a-later"]);
    assert_eq!(ids(issuer.listing(t0, 2).await.unwrap()), ["l-open", "l-soon"]);
    // Created elsewhere: this instance lists it once its snapshot is renewed, not before.
    store.inner.insert_campaign(&campaign_at("l-new", 5, t0 + Duration::minutes(1))).await.unwrap();
    assert_eq!(issuer.listing(t0, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn public_views_read_the_issued_count_at_most_once_per_ttl() {
    let ttl = StdDuration::from_millis(40);
    let (issuer, store, clock) = issuer_on_a_clock(CacheConfig { issued_ttl: ttl, ..Default::default() });
    let t0 = now();
    let c = issuer.create(campaign_at("poll", 3, t0 + Duration::hours(1)), t0).await.unwrap();
    let reads = || count(&store.calls.issued);
    for _ in 0..100 {
        assert_eq!(issuer.view(&c.id, t0).await.unwrap().remaining, 3);
    }
    assert_eq!(reads(), 0, "nothing can be issued before opening");
    let open = c.opens_at;
    for _ in 0..100 {
        issuer.view(&c.id, open).await.unwrap();
    }
    assert_eq!(reads(), 1, "100 polls, one read");
    // Another instance issues one; this one sees it once the TTL is up.
    store.inner.claim(&c.id, &user(9), CouponCode::generate(), open).await.unwrap();
    clock.advance(ttl);
    assert_eq!(issuer.view(&c.id, open).await.unwrap().remaining, 2);
    assert_eq!(reads(), 2);
    // Its own claims keep its view current without a read.
    issuer.claim(&c.id, &user(1), open).await.unwrap();
    assert_eq!(issuer.view(&c.id, open).await.unwrap().remaining, 1);
    assert_eq!(reads(), 2);
}

#[tokio::test]
async fn unknown_ids_are_remembered_in_bounded_memory() {
    let config = CacheConfig { unknown_capacity: 2, unknown_ttl: StdDuration::from_secs(60), ..Default::default() };
    let (issuer, store) = issuer(config);
    let t = now();
    let reads = || count(&store.calls.campaign);
    let bogus = |s: &str| CampaignId::parse(s).unwrap();
    for _ in 0..1000 {
        assert!(matches!(issuer.claim(&bogus("nope"), &user(1), t).await, Err(IssuerError::NotFound)));
    }
    assert_eq!(reads(), 1, "a flood of one bogus id costs one read");
    issuer.view(&bogus("nope-2"), t).await.unwrap_err();
    assert_eq!(reads(), 2);
    // A third id finds the memory full of live entries: it starts over instead of growing.
    issuer.view(&bogus("nope-3"), t).await.unwrap_err();
    issuer.view(&bogus("nope"), t).await.unwrap_err();
    assert_eq!(reads(), 4, "the memory was bounded: the first id had to be read again");
    // Creating an id that was unknown makes it known at once.
    issuer.create(campaign_at("nope-3", 1, t), t).await.unwrap();
    assert_eq!(issuer.view(&bogus("nope-3"), t).await.unwrap().campaign.total, 1);
}

#[tokio::test]
async fn edits_need_the_current_version_and_a_campaign_that_has_not_opened() {
    let (issuer, _) = issuer(CacheConfig::default());
    let t0 = now();
    let c = issuer.create(campaign_at("edit", 5, t0 + Duration::hours(1)), t0).await.unwrap();
    assert!(matches!(issuer.create(c.clone(), t0).await, Err(IssuerError::Conflict)));
    let seven = || CampaignChanges { total: Some(7), ..Default::default() };
    let changed = issuer.update(&c.id, seven(), Some(1), t0).await.unwrap();
    assert_eq!((changed.total, changed.version), (7, 2));
    assert_eq!(issuer.view(&c.id, t0).await.unwrap().remaining, 7, "this instance serves its edit at once");
    assert!(matches!(
        issuer.update(&c.id, seven(), Some(1), t0).await,
        Err(IssuerError::VersionConflict { current: 2 })
    ));
    assert_eq!(issuer.update(&c.id, seven(), None, t0).await.unwrap().version, 3, "None: whatever is stored");
    let after_open = t0 + Duration::hours(2);
    assert!(matches!(issuer.update(&c.id, seven(), Some(3), after_open).await, Err(IssuerError::AlreadyOpen)));
    let bad = CampaignChanges { total: Some(0), ..Default::default() };
    assert!(matches!(issuer.update(&c.id, bad, Some(3), t0).await, Err(IssuerError::Invalid(e)) if e.field == "total"));
    let ghost = CampaignId::parse("ghost").unwrap();
    assert!(matches!(issuer.update(&ghost, seven(), None, t0).await, Err(IssuerError::NotFound)));
}
