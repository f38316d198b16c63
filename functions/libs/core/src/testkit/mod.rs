//! Contract suites, one per port, that every store adapter runs on itself (a store runs the
//! suites of the ports it implements: DynamoDB + SQS has no polling outbox), the in-memory
//! reference store, and an engine test of two `Issuer`s over one store.
//!
//! Each suite is a macro that generates one `#[tokio::test]` per contract item from an
//! expression giving a future of `(guard, store)`; the guard (a temp dir, a table) lives as long
//! as the test. Concurrency items spawn real tasks on a multi-threaded runtime.

mod memory;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use time::{Duration, OffsetDateTime};

pub use memory::MemoryStore;

/// A clock that moves only when told: an engine's cache ages are tested without sleeping
/// (`Issuer::with_clock`).
pub struct ManualClock {
    start: std::time::Instant,
    offset: Mutex<std::time::Duration>,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { start: std::time::Instant::now(), offset: Mutex::new(std::time::Duration::ZERO) })
    }

    pub fn advance(&self, by: std::time::Duration) {
        *self.offset.lock().expect("not poisoned") += by;
    }
}

impl crate::Clock for ManualClock {
    fn now(&self) -> std::time::Instant {
        self.start + *self.offset.lock().expect("not poisoned")
    }
}

use crate::ports::{CampaignStore, ClaimStore, EndOutcome, LedgerStore, LedgerWrite, Outbox, StoreClaim, StoreError};
use crate::{
    CacheConfig, Campaign, CampaignChanges, CampaignId, ClaimOutcome, CouponCode, CouponTemplate, IssuanceRecord,
    Issuer, IssuerError, NewCampaign, UserId, truncate_to_millis,
};

/// Runs a future as its own task on the test's runtime (supplied by the macros, so the core
/// itself needs no runtime).
pub type Spawn = fn(BoxFuture<'static, ()>) -> BoxFuture<'static, ()>;

pub fn now() -> OffsetDateTime {
    truncate_to_millis(OffsetDateTime::now_utc())
}

/// A campaign with `total` coupons opening at `opens_at` (validated against that instant).
pub fn campaign_at(id: &str, total: u64, opens_at: OffsetDateTime) -> Campaign {
    NewCampaign {
        id: id.into(),
        title: format!("Campaign {id}"),
        total,
        opens_at,
        closes_at: None,
        coupon: CouponTemplate { discount: 3000, currency: "KRW".into(), valid_days: 7 },
        pow_bits: 0,
    }
    .validate(opens_at)
    .expect("valid test campaign")
}

/// A campaign that opened a second ago with `total` coupons.
pub fn open_campaign(id: &str, total: u64) -> Campaign {
    campaign_at(id, total, now() - Duration::seconds(1))
}

pub fn user(n: usize) -> UserId {
    UserId::parse(&format!("user-{n}")).expect("valid user id")
}

fn id(s: &str) -> CampaignId {
    CampaignId::parse(s).expect("valid id")
}

async fn issue<S: ClaimStore + ?Sized>(s: &S, c: &CampaignId, u: usize, at: OffsetDateTime) -> StoreClaim {
    s.claim(c, &user(u), CouponCode::generate(), at).await.expect("store answers")
}

// ---------------------------------------------------------------- CampaignStore

pub async fn campaigns_insert_read_and_page<S: CampaignStore>(s: Arc<S>, _: Spawn) {
    let c = open_campaign("contract-b", 10);
    s.insert_campaign(&c).await.unwrap();
    assert!(matches!(s.insert_campaign(&c).await, Err(StoreError::Conflict)));
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(s.campaign(&id("contract-none")).await.unwrap(), None);
    for name in ["contract-c", "contract-a", "contract-d"] {
        s.insert_campaign(&open_campaign(name, 1)).await.unwrap();
    }
    let ids = |v: Vec<Campaign>| v.into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(s.campaigns(None, 2).await.unwrap()), ["contract-a", "contract-b"]);
    assert_eq!(ids(s.campaigns(Some(&id("contract-b")), 2).await.unwrap()), ["contract-c", "contract-d"]);
    assert_eq!(ids(s.campaigns(Some(&id("contract-d")), 2).await.unwrap()), Vec::<String>::new());
}

pub async fn campaign_updates_are_conditional<S: CampaignStore>(s: Arc<S>, _: Spawn) {
    let t = now();
    let c = campaign_at("contract-edit", 10, t + Duration::hours(1));
    s.insert_campaign(&c).await.unwrap();
    let v2 = CampaignChanges { title: Some("Two".into()), ..Default::default() }.apply(&c, t).unwrap();
    s.update_campaign(&v2, 1, t).await.unwrap();
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(v2.clone()));
    // An edit based on version 1 lost the race to v2.
    let stale = CampaignChanges { total: Some(3), ..Default::default() }.apply(&c, t).unwrap();
    assert!(matches!(s.update_campaign(&stale, 1, t).await, Err(StoreError::VersionMismatch { current: 2 })));
    // Once the stored campaign has opened, its terms are frozen whatever the version.
    let v3 = CampaignChanges { total: Some(3), ..Default::default() }.apply(&v2, t).unwrap();
    assert!(matches!(s.update_campaign(&v3, 2, c.opens_at).await, Err(StoreError::Frozen)));
    let ghost = open_campaign("contract-ghost", 1);
    assert!(matches!(s.update_campaign(&ghost, 1, t).await, Err(StoreError::NotFound)));
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(v2));
}

// ---------------------------------------------------------------- ClaimStore

pub async fn claims_issue_then_sell_out<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let c = open_campaign("contract-claims", 3);
    s.insert_campaign(&c).await.unwrap();
    let mut coupons = Vec::new();
    for i in 0..3 {
        let code = CouponCode::generate();
        let at = now();
        match s.claim(&c.id, &user(i), code, at).await.unwrap() {
            StoreClaim::Issued(coupon) => {
                assert_eq!(coupon, c.coupon_for(user(i), code, coupon.seq, at));
                coupons.push(coupon);
            }
            other => panic!("expected issued, got {other:?}"),
        }
    }
    // Which seq a claim gets is the store's (a sharded store hands them out per shard); once
    // sold out they are exactly 1..=total.
    let mut seqs: Vec<u32> = coupons.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(issue(&*s, &c.id, 99, now()).await, StoreClaim::SoldOut);
    // A repeat returns the very same coupon, before and after sell-out, and ignores the new code.
    assert_eq!(issue(&*s, &c.id, 1, now()).await, StoreClaim::Existing(coupons[1].clone()));
    assert_eq!(s.coupon_of(&c.id, &user(2)).await.unwrap(), Some(coupons[2].clone()));
    assert_eq!(s.coupon_of(&c.id, &user(99)).await.unwrap(), None);
    assert_eq!(s.issued(&c.id).await.unwrap(), 3);
    assert!(matches!(
        s.claim(&id("contract-unknown"), &user(1), CouponCode::generate(), now()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.issued(&id("contract-unknown")).await.unwrap(), 0);
}

/// The store decides on its own copy: its window (at the given time) and its stock, whatever
/// an engine may have cached.
pub async fn claims_obey_the_stored_window_and_stock<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let t = now();
    let mut c = campaign_at("contract-window", 5, t + Duration::hours(1));
    c.closes_at = Some(c.opens_at + Duration::hours(3));
    s.insert_campaign(&c).await.unwrap();
    assert_eq!(issue(&*s, &c.id, 1, t).await, StoreClaim::NotOpen);
    // Stock cut to 2 and opening moved an hour later, before anyone could claim.
    let edited =
        CampaignChanges { total: Some(2), opens_at: Some(c.opens_at + Duration::hours(1)), ..Default::default() };
    let next = edited.apply(&c, t).unwrap();
    s.update_campaign(&next, c.version, t).await.unwrap();
    // An engine still holding the old copy thinks it opened: the store says not yet.
    assert_eq!(issue(&*s, &c.id, 1, c.opens_at + Duration::seconds(1)).await, StoreClaim::NotOpen);
    let open = next.opens_at + Duration::seconds(1);
    assert!(matches!(issue(&*s, &c.id, 1, open).await, StoreClaim::Issued(_)));
    assert!(matches!(issue(&*s, &c.id, 2, open).await, StoreClaim::Issued(_)));
    assert_eq!(issue(&*s, &c.id, 3, open).await, StoreClaim::SoldOut, "the stored total, not the old 5");
    let closed = next.closes_at.unwrap();
    assert_eq!(issue(&*s, &c.id, 4, closed).await, StoreClaim::Closed);
    assert!(matches!(issue(&*s, &c.id, 1, closed).await, StoreClaim::Existing(_)), "winners keep their coupon");
    assert_eq!(s.issued(&c.id).await.unwrap(), 2);
}

/// "End now": only an open campaign ends; claims after it are closed, winners keep their coupon,
/// and the stored stock and coupons are untouched.
pub async fn ending_closes_an_open_campaign_and_nothing_else<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let t = now();
    let c = campaign_at("contract-end", 5, t + Duration::seconds(10));
    s.insert_campaign(&c).await.unwrap();
    assert_eq!(s.end_campaign(&c.id, t).await.unwrap(), EndOutcome::NotOpen, "scheduled: reschedule instead");
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(c.clone()), "a refused end writes nothing");
    let open = c.opens_at + Duration::seconds(1);
    assert!(matches!(issue(&*s, &c.id, 1, open).await, StoreClaim::Issued(_)));
    let at = truncate_to_millis(open + Duration::seconds(1));
    let ended = match s.end_campaign(&c.id, at).await.unwrap() {
        EndOutcome::Ended(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!((ended.closes_at, ended.version, ended.total), (Some(at), c.version + 1, 5));
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(ended.clone()));
    assert_eq!(issue(&*s, &c.id, 2, at).await, StoreClaim::Closed, "no claim is decided after the end");
    assert!(matches!(issue(&*s, &c.id, 1, at).await, StoreClaim::Existing(_)), "the winner keeps their coupon");
    assert_eq!(s.issued(&c.id).await.unwrap(), 1);
    assert_eq!(
        s.end_campaign(&c.id, at + Duration::seconds(1)).await.unwrap(),
        EndOutcome::AlreadyClosed(ended),
        "ending twice changes nothing"
    );
    assert!(matches!(
        s.end_campaign(&CampaignId::parse("contract-end-none").unwrap(), at).await,
        Err(StoreError::NotFound)
    ));
}

/// The winners list: every durable coupon exactly once, by seq, in pages.
pub async fn coupons_are_listed_by_seq_in_pages<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let c = open_campaign("contract-list", 7);
    s.insert_campaign(&c).await.unwrap();
    let at = now();
    let mut issued = Vec::new();
    for u in 0..9 {
        if let StoreClaim::Issued(coupon) = issue(&*s, &c.id, u, at).await {
            issued.push(coupon);
        }
    }
    assert_eq!(issued.len(), 7);
    let first = s.coupons(&c.id, 0, 3).await.unwrap();
    assert_eq!(first.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let rest = s.coupons(&c.id, 3, 100).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    let mut all: Vec<_> = first.into_iter().chain(rest).collect();
    all.sort_by_key(|c| c.seq);
    issued.sort_by_key(|c| c.seq);
    assert_eq!(all, issued, "the list holds the coupons the claims answered, codes included");
    assert!(s.coupons(&c.id, 7, 10).await.unwrap().is_empty());
    assert!(s.coupons(&CampaignId::parse("contract-list-none").unwrap(), 0, 10).await.unwrap().is_empty());
}

/// The attack from the issue: an edit whose "now" was taken before coupons were issued must
/// not land once they are.
pub async fn no_edit_lands_after_an_issue<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let t = now();
    let c = campaign_at("contract-late-edit", 5, t + Duration::seconds(30));
    s.insert_campaign(&c).await.unwrap();
    assert!(matches!(issue(&*s, &c.id, 1, c.opens_at).await, StoreClaim::Issued(_)));
    let stale_now = c.opens_at - Duration::milliseconds(5);
    let later = CampaignChanges { total: Some(1), opens_at: Some(t + Duration::hours(1)), ..Default::default() };
    let next = later.apply(&c, stale_now).unwrap();
    assert!(matches!(s.update_campaign(&next, c.version, stale_now).await, Err(StoreError::Frozen)));
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(c));
}

pub async fn campaigns_have_separate_stock_and_winners<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let a = open_campaign("contract-a", 1);
    let b = open_campaign("contract-b", 2);
    s.insert_campaign(&a).await.unwrap();
    s.insert_campaign(&b).await.unwrap();
    assert!(matches!(issue(&*s, &a.id, 1, now()).await, StoreClaim::Issued(_)));
    // The same user may win once per campaign.
    match issue(&*s, &b.id, 1, now()).await {
        StoreClaim::Issued(c) => assert!((1..=2).contains(&c.seq), "seq {} outside b's 1..=2", c.seq),
        other => panic!("expected issued, got {other:?}"),
    }
    assert_eq!(issue(&*s, &a.id, 2, now()).await, StoreClaim::SoldOut);
    assert!(matches!(issue(&*s, &b.id, 2, now()).await, StoreClaim::Issued(_)));
    assert_eq!((s.issued(&a.id).await.unwrap(), s.issued(&b.id).await.unwrap()), (1, 2));
}

/// 400 claims from 200 users (each clicking twice) on 50 coupons, as concurrent tasks: never more
/// than the stock, one coupon per user, repeats see the same code, seq unique within 1..=total
/// and, once sold out, exactly 1..=total.
pub async fn concurrent_claims_never_oversell<S: CampaignStore + ClaimStore + 'static>(s: Arc<S>, spawn: Spawn) {
    let c = open_campaign("contract-concurrent", 50);
    s.insert_campaign(&c).await.unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..400).map(|i| {
        let (s, results, id) = (s.clone(), results.clone(), c.id.clone());
        spawn(Box::pin(async move {
            let r = issue(&*s, &id, i % 200, now()).await;
            results.lock().unwrap().push((i % 200, r));
        }))
    });
    futures::future::join_all(tasks).await;
    let mut by_user: HashMap<usize, CouponCode> = HashMap::new();
    let mut seqs = Vec::new();
    for (u, r) in results.lock().unwrap().drain(..) {
        match r {
            StoreClaim::Issued(coupon) => {
                assert!(by_user.insert(u, coupon.code).is_none_or(|prev| prev == coupon.code), "user {u} won twice");
                seqs.push(coupon.seq);
            }
            StoreClaim::Existing(coupon) => assert_eq!(*by_user.entry(u).or_insert(coupon.code), coupon.code),
            StoreClaim::SoldOut => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "sold out: seq is exactly 1..=total");
    assert_eq!(by_user.values().collect::<HashSet<_>>().len(), 50);
    assert_eq!(s.issued(&c.id).await.unwrap(), 50);
}

/// Claims at the opening instant race an edit (taken "just before" opening) that cuts the stock to
/// 1 and moves the opening an hour later: either the edit wins and nothing is issued, or it is
/// refused and the old terms hold. Never both.
pub async fn an_edit_racing_the_opening_never_splits_the_terms<S: CampaignStore + ClaimStore + 'static>(
    s: Arc<S>,
    spawn: Spawn,
) {
    for round in 0..5 {
        let t = now();
        let c = campaign_at(&format!("contract-race-{round}"), 20, t + Duration::seconds(10));
        s.insert_campaign(&c).await.unwrap();
        let issued_answers = Arc::new(Mutex::new(0u64));
        let mut tasks: Vec<_> = (0..40)
            .map(|u| {
                let (s, id, n, at) = (s.clone(), c.id.clone(), issued_answers.clone(), c.opens_at);
                spawn(Box::pin(async move {
                    if let StoreClaim::Issued(_) = issue(&*s, &id, u, at).await {
                        *n.lock().unwrap() += 1;
                    }
                }))
            })
            .collect();
        let edit = Arc::new(Mutex::new(None));
        let (s2, c2, e2) = (s.clone(), c.clone(), edit.clone());
        tasks.insert(
            round * 7,
            spawn(Box::pin(async move {
                let before = c2.opens_at - Duration::milliseconds(1);
                let changes =
                    CampaignChanges { total: Some(1), opens_at: Some(t + Duration::hours(1)), ..Default::default() };
                let next = changes.apply(&c2, before).unwrap();
                *e2.lock().unwrap() = Some(s2.update_campaign(&next, c2.version, before).await);
            })),
        );
        futures::future::join_all(tasks).await;
        let issued = s.issued(&c.id).await.unwrap();
        let stored = s.campaign(&c.id).await.unwrap().unwrap();
        assert_eq!(issued, *issued_answers.lock().unwrap());
        match edit.lock().unwrap().take().unwrap() {
            Ok(()) => assert_eq!((issued, stored.total), (0, 1), "the edit won: nothing issued on the old terms"),
            Err(StoreError::Frozen) => {
                assert_eq!((issued, stored.total), (20, 20), "the edit lost: the old terms hold");
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

// ---------------------------------------------------------------- LedgerStore

pub async fn ledger_append_is_idempotent<S: LedgerStore>(s: Arc<S>, _: Spawn) {
    let c = open_campaign("contract-ledger", 5);
    let record = |n: usize| IssuanceRecord::new(&c, &c.coupon_for(user(n), CouponCode::generate(), n as u32, now()));
    let (first, second) = (record(1), record(2));
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 0);
    assert_eq!(s.append(&first).await.unwrap(), LedgerWrite::Inserted);
    assert_eq!(s.append(&first).await.unwrap(), LedgerWrite::Duplicate);
    assert_eq!(crate::consume_issuance(&*s, &first.to_json()).await.unwrap(), LedgerWrite::Duplicate);
    assert_eq!(crate::consume_issuance(&*s, &second.to_json()).await.unwrap(), LedgerWrite::Inserted);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 2);
    assert_eq!(s.ledger_written(&id("contract-other")).await.unwrap(), 0);
    assert!(matches!(crate::consume_issuance(&*s, "{\"code\":1}").await, Err(crate::LedgerError::Malformed(_))));
}

// ---------------------------------------------------------------- Outbox

pub async fn every_issue_leaves_one_outbox_record<S: CampaignStore + ClaimStore + Outbox>(s: Arc<S>, _: Spawn) {
    let c = open_campaign("contract-outbox", 5);
    s.insert_campaign(&c).await.unwrap();
    let mut issued = Vec::new();
    for i in 0..5 {
        if let StoreClaim::Issued(coupon) = issue(&*s, &c.id, i, now()).await {
            issued.push(coupon);
        }
        // Repeats and sold-out answers must not add records.
        issue(&*s, &c.id, i, now()).await;
    }
    issue(&*s, &c.id, 77, now()).await;
    let pending = s.pending(100).await.unwrap();
    let expected: Vec<IssuanceRecord> = issued.iter().map(|coupon| IssuanceRecord::new(&c, coupon)).collect();
    assert_eq!(pending, expected, "one record per issued coupon, oldest first");
    assert_eq!(s.pending(2).await.unwrap(), expected[..2].to_vec());
    s.acknowledge(&expected[0]).await.unwrap();
    s.acknowledge(&expected[0]).await.unwrap();
    assert_eq!(s.pending(100).await.unwrap(), expected[1..].to_vec());
}

// ---------------------------------------------------------------- Issuer over a shared store

/// Two engines (two Lambda containers) over one store: what one creates the other finds; what
/// one edits the other never contradicts by issuing early or beyond the stored stock.
pub async fn two_issuers_share_one_store<S: CampaignStore + ClaimStore + LedgerStore + 'static>(s: Arc<S>, _: Spawn) {
    let ttl = std::time::Duration::from_millis(50);
    let config = CacheConfig { scheduled_ttl: ttl, ..Default::default() };
    let clock = ManualClock::new();
    let make = || Issuer::with_store(s.clone()).with_cache(config.clone()).with_clock(clock.clone());
    let (a, b) = (make(), make());
    let t = now();
    let t0 = t + Duration::minutes(10);

    // Created on A, found on B (read-through: no 404 on an instance already warm).
    let c = a.create(campaign_at("two-issuers", 10, t0), t).await.unwrap();
    assert_eq!(b.claim(&c.id, &user(1), t).await.unwrap(), ClaimOutcome::NotOpen);
    assert_eq!(b.view(&c.id, t).await.unwrap().campaign.total, 10);

    // Edited on A: stock 10 -> 2, opening an hour later. B still holds the old copy.
    let changes = CampaignChanges { total: Some(2), opens_at: Some(t0 + Duration::hours(1)), ..Default::default() };
    let next = a.update(&c.id, changes, Some(c.version), t).await.unwrap();
    assert_eq!(next.version, 2);
    // At the old T0, B's copy says open; the store refuses: never early.
    assert_eq!(b.claim(&c.id, &user(1), t0 + Duration::seconds(1)).await.unwrap(), ClaimOutcome::NotOpen);
    // At the new T0, B issues exactly the stored stock, not its old 10.
    let open = next.opens_at + Duration::seconds(1);
    let mut issued = 0;
    for u in 0..6 {
        match b.claim(&c.id, &user(u), open).await.unwrap() {
            ClaimOutcome::Issued(_) => issued += 1,
            ClaimOutcome::SoldOut => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(issued, 2);
    // A learns of the sell-out from the store (one attempt), then answers from memory.
    assert_eq!(a.claim(&c.id, &user(7), open).await.unwrap(), ClaimOutcome::SoldOut);
    assert_eq!(a.view(&c.id, open).await.unwrap().remaining, 0);
    assert!(matches!(a.claim(&c.id, &user(0), open).await.unwrap(), ClaimOutcome::AlreadyIssued(_)));
    // Edits are refused once open, on either instance, and a stale version loses.
    let late = CampaignChanges { total: Some(9), ..Default::default() };
    assert!(matches!(b.update(&c.id, late, Some(2), open).await, Err(IssuerError::AlreadyOpen)));

    // A scheduled campaign edited on B reaches A within the TTL, by itself.
    let d = b.create(campaign_at("two-issuers-d", 5, t0), t).await.unwrap();
    assert_eq!(a.view(&d.id, t).await.unwrap().campaign.title, d.title);
    let retitle = CampaignChanges { title: Some("Renamed".into()), ..Default::default() };
    b.update(&d.id, retitle.clone(), Some(1), t).await.unwrap();
    assert!(matches!(a.update(&d.id, retitle, Some(1), t).await, Err(IssuerError::VersionConflict { current: 2 })));
    clock.advance(ttl);
    assert_eq!(a.view(&d.id, t).await.unwrap().campaign.title, "Renamed");

    let ghost = id("two-issuers-ghost");
    assert!(matches!(a.claim(&ghost, &user(1), open).await, Err(IssuerError::NotFound)));
    assert!(matches!(b.view(&ghost, open).await, Err(IssuerError::NotFound)));
}

fn solve(c: &Campaign, u: usize) -> u64 {
    firstcome_ticket::Puzzle::new(c.pow_bits, c.id.as_str(), user(u).as_str(), &c.nonce)
        .search(0, u64::MAX)
        .expect("a ticket exists")
}

/// The store checks a claim's ticket against its own terms: an engine whose copy asked for no
/// ticket (or another nonce) cannot get a claim past it.
pub async fn claims_are_checked_against_the_stored_ticket<S: CampaignStore + ClaimStore>(s: Arc<S>, _: Spawn) {
    let t = now();
    let c = campaign_at("contract-ticket", 3, t + Duration::hours(1));
    s.insert_campaign(&c).await.unwrap();
    // Marketing asks for a ticket after the engines read the campaign without one.
    let ticketed = CampaignChanges { pow_bits: Some(6), ..Default::default() }.apply(&c, t).unwrap();
    s.update_campaign(&ticketed, c.version, t).await.unwrap();
    let stored = s.campaign(&c.id).await.unwrap().unwrap();
    assert_eq!(stored.pow_bits, 6);
    let at = c.opens_at;
    let claim = |u: usize, ticket: Option<u64>| {
        let s = s.clone();
        let id = c.id.clone();
        async move { s.claim_with_ticket(&id, &user(u), CouponCode::generate(), ticket, at).await.unwrap() }
    };
    assert_eq!(claim(1, None).await, StoreClaim::Ticket(crate::TicketError::Required));
    // A ticket for the version the engine knew (another nonce) is not one for the stored terms
    // (one that happens to solve both, 1 in 64, is skipped).
    let old = firstcome_ticket::Puzzle::new(6, c.id.as_str(), user(1).as_str(), &c.nonce);
    let new = firstcome_ticket::Puzzle::new(6, c.id.as_str(), user(1).as_str(), &stored.nonce);
    let mut from = 0;
    let stale = loop {
        let t = old.search(from, u64::MAX).expect("a ticket exists");
        if !new.verify(t) {
            break t;
        }
        from = t + 1;
    };
    assert_eq!(claim(1, Some(stale)).await, StoreClaim::Ticket(crate::TicketError::Invalid));
    let StoreClaim::Issued(coupon) = claim(1, Some(solve(&stored, 1))).await else { panic!("a good ticket issues") };
    assert_eq!(s.issued(&c.id).await.unwrap(), 1, "refusals took no stock");
    // A winner asking again gets the coupon back, ticket or not.
    assert_eq!(claim(1, None).await, StoreClaim::Existing(coupon));
}

/// Two engines, one store, at the opening instant, against an engine's stale copy: a copy read
/// while scheduled never answers "open" (nor reveals the nonce) without being re-read, and a copy
/// whose ticket terms are behind the store's cannot get a claim past it.
pub async fn a_stale_copy_never_opens_early_or_skips_the_ticket<
    S: CampaignStore + ClaimStore + LedgerStore + 'static,
>(
    s: Arc<S>,
    _: Spawn,
) {
    let make = || Issuer::with_store(s.clone());
    let (a, b) = (make(), make());
    let t0 = now() + Duration::minutes(10);
    let ms = Duration::milliseconds;

    // A reads a ticketed campaign before T0; B reschedules it an hour later. (The instants are
    // seconds apart: a store checks an edit at its own time of deciding, which a slow emulated
    // endpoint takes a while to reach.)
    let mut ticketed = campaign_at("stale-copy-nonce", 10, t0);
    ticketed.pow_bits = 8;
    let c = b.create(ticketed, t0 - Duration::minutes(1)).await.unwrap();
    assert_eq!(a.view(&c.id, t0 - ms(5000)).await.unwrap().status, crate::Status::Scheduled);
    let later = CampaignChanges { opens_at: Some(t0 + Duration::hours(1)), ..Default::default() };
    let moved = b.update(&c.id, later, Some(c.version), t0 - ms(4000)).await.unwrap();
    assert_ne!(moved.nonce, c.nonce, "a new version, a new nonce");
    // At T0 + 0.1 s (well within A's TTL) A must not serve its copy as open.
    let view = a.view(&c.id, t0 + ms(100)).await.unwrap();
    assert_eq!(view.status, crate::Status::Scheduled, "a copy read while scheduled is re-read at its opening");
    assert_eq!(view.campaign.revealed_nonce(t0 + ms(100)), None, "no nonce before the stored opens_at");
    assert_eq!(a.claim(&c.id, &user(1), t0 + ms(100)).await.unwrap(), ClaimOutcome::NotOpen);

    // A's clock runs ahead of B's: it reads a ticketless campaign "after" T0 and keeps it as
    // final, while B adds a ticket "before" T0. The store's terms decide the claim.
    let d = b.create(campaign_at("stale-copy-ticket", 10, t0), t0 - Duration::minutes(1)).await.unwrap();
    assert_eq!(a.view(&d.id, t0 + ms(10)).await.unwrap().status, crate::Status::Open);
    let ticket = CampaignChanges { pow_bits: Some(8), ..Default::default() };
    b.update(&d.id, ticket, Some(d.version), t0 - ms(4000)).await.unwrap();
    let refused = a.claim(&d.id, &user(1), t0 + ms(20)).await;
    assert!(
        matches!(refused, Err(IssuerError::Ticket(crate::TicketError::Required))),
        "no claim without the stored ticket: {refused:?}"
    );
    assert_eq!(s.issued(&d.id).await.unwrap(), 0);
}

/// A `Spawn` on the current tokio runtime; used by the suite macros.
#[macro_export]
#[doc(hidden)]
macro_rules! __tokio_spawn {
    () => {
        |f| Box::pin(async move { ::tokio::spawn(f).await.expect("contract task panicked") })
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __contract_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = ($make).await;
                $crate::testkit::$name(::std::sync::Arc::new(store), $crate::__tokio_spawn!()).await;
            }
        )*
    };
}

/// The `CampaignStore` contract.
#[macro_export]
macro_rules! campaign_store_contract {
    ($make:expr) => {
        $crate::__contract_tests!($make; campaigns_insert_read_and_page, campaign_updates_are_conditional);
    };
}

/// The `ClaimStore` contract (with the `CampaignStore` it decides against).
#[macro_export]
macro_rules! claim_store_contract {
    ($make:expr) => {
        $crate::__contract_tests!($make;
            claims_issue_then_sell_out,
            claims_obey_the_stored_window_and_stock,
            no_edit_lands_after_an_issue,
            ending_closes_an_open_campaign_and_nothing_else,
            coupons_are_listed_by_seq_in_pages,
            campaigns_have_separate_stock_and_winners,
            concurrent_claims_never_oversell,
            an_edit_racing_the_opening_never_splits_the_terms,
            claims_are_checked_against_the_stored_ticket,
            two_issuers_share_one_store,
            a_stale_copy_never_opens_early_or_skips_the_ticket,
        );
    };
}

/// The `LedgerStore` contract.
#[macro_export]
macro_rules! ledger_store_contract {
    ($make:expr) => {
        $crate::__contract_tests!($make; ledger_append_is_idempotent);
    };
}

/// The `Outbox` contract (for stores that are polled for their issuance records).
#[macro_export]
macro_rules! outbox_contract {
    ($make:expr) => {
        $crate::__contract_tests!($make; every_issue_leaves_one_outbox_record);
    };
}
