//! The store contract suite: one set of behavioural tests that every store adapter must pass.
//! Adapters run it with [`store_contract_tests!`](crate::store_contract_tests).

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;

use crate::ports::{CampaignStore, ClaimStore, LedgerStore, LedgerWrite, Outbox, StoreClaim, StoreError};
use crate::{
    Campaign, CampaignId, CouponCode, CouponTemplate, IssuanceRecord, NewCampaign, UserId, truncate_to_millis,
};

/// Everything a full store offers; the contract is stated against this bundle.
pub trait FullStore: CampaignStore + ClaimStore + LedgerStore + Outbox {}
impl<T: CampaignStore + ClaimStore + LedgerStore + Outbox> FullStore for T {}

/// A campaign that opened a minute ago with `total` coupons.
pub fn open_campaign(id: &str, total: u64) -> Campaign {
    NewCampaign {
        id: id.into(),
        title: format!("Campaign {id}"),
        total,
        opens_at: OffsetDateTime::now_utc() - time::Duration::minutes(1),
        closes_at: None,
        coupon: CouponTemplate { discount: 3000, currency: "KRW".into(), valid_days: 7 },
    }
    .validate()
    .expect("valid test campaign")
}

pub fn user(n: usize) -> UserId {
    UserId::parse(&format!("user-{n}")).expect("valid user id")
}

fn now() -> OffsetDateTime {
    truncate_to_millis(OffsetDateTime::now_utc())
}

pub async fn campaigns_insert_update_list<S: FullStore>(s: &S) {
    let mut c = open_campaign("contract-campaigns", 10);
    s.insert_campaign(&c).await.unwrap();
    assert!(matches!(s.insert_campaign(&c).await, Err(StoreError::Conflict)));
    c.title = "Renamed".into();
    s.update_campaign(&c).await.unwrap();
    assert_eq!(s.campaigns().await.unwrap(), vec![c.clone()]);
    let ghost = open_campaign("contract-ghost", 1);
    assert!(matches!(s.update_campaign(&ghost).await, Err(StoreError::NotFound)));
}

pub async fn claims_issue_in_order_then_sell_out<S: FullStore>(s: &S) {
    let c = open_campaign("contract-claims", 3);
    s.insert_campaign(&c).await.unwrap();
    let mut codes = Vec::new();
    for (i, seq) in (1..=3).enumerate() {
        let code = CouponCode::generate();
        match s.claim(&c, &user(i), code, now()).await.unwrap() {
            StoreClaim::Issued(coupon) => {
                assert_eq!(
                    (coupon.seq, coupon.code, &coupon.user_id, &coupon.campaign_id),
                    (seq, code, &user(i), &c.id)
                );
                codes.push(coupon);
            }
            other => panic!("expected issued, got {other:?}"),
        }
    }
    assert_eq!(s.claim(&c, &user(99), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    // A repeat returns the very same coupon, before and after sell-out, and ignores the new code.
    assert_eq!(
        s.claim(&c, &user(1), CouponCode::generate(), now()).await.unwrap(),
        StoreClaim::Existing(codes[1].clone())
    );
    assert_eq!(s.coupon_of(&c.id, &user(2)).await.unwrap(), Some(codes[2].clone()));
    assert_eq!(s.coupon_of(&c.id, &user(99)).await.unwrap(), None);
    assert_eq!(s.issued(&c.id).await.unwrap(), 3);
}

pub async fn campaigns_have_separate_stock_and_winners<S: FullStore>(s: &S) {
    let a = open_campaign("contract-a", 1);
    let b = open_campaign("contract-b", 2);
    s.insert_campaign(&a).await.unwrap();
    s.insert_campaign(&b).await.unwrap();
    assert!(matches!(s.claim(&a, &user(1), CouponCode::generate(), now()).await.unwrap(), StoreClaim::Issued(_)));
    // The same user may win once per campaign.
    match s.claim(&b, &user(1), CouponCode::generate(), now()).await.unwrap() {
        StoreClaim::Issued(c) => assert_eq!(c.seq, 1),
        other => panic!("expected issued, got {other:?}"),
    }
    assert_eq!(s.claim(&a, &user(2), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    assert!(matches!(s.claim(&b, &user(2), CouponCode::generate(), now()).await.unwrap(), StoreClaim::Issued(_)));
    assert_eq!((s.issued(&a.id).await.unwrap(), s.issued(&b.id).await.unwrap()), (1, 2));
    let unknown = CampaignId::parse("contract-none").unwrap();
    assert_eq!(s.issued(&unknown).await.unwrap(), 0);
}

pub async fn every_issue_leaves_one_outbox_record<S: FullStore>(s: &S) {
    let c = open_campaign("contract-outbox", 5);
    s.insert_campaign(&c).await.unwrap();
    let mut issued = Vec::new();
    for i in 0..5 {
        if let StoreClaim::Issued(coupon) = s.claim(&c, &user(i), CouponCode::generate(), now()).await.unwrap() {
            issued.push(coupon);
        }
        // Repeats and sold-out answers must not add records.
        s.claim(&c, &user(i), CouponCode::generate(), now()).await.unwrap();
    }
    s.claim(&c, &user(77), CouponCode::generate(), now()).await.unwrap();
    let pending = s.pending(100).await.unwrap();
    let expected: Vec<IssuanceRecord> = issued.iter().map(|coupon| IssuanceRecord::new(&c, coupon)).collect();
    assert_eq!(pending, expected, "one record per issued coupon, oldest first");
    assert_eq!(s.pending(2).await.unwrap(), expected[..2].to_vec());
    s.acknowledge(&expected[0]).await.unwrap();
    s.acknowledge(&expected[0]).await.unwrap();
    assert_eq!(s.pending(100).await.unwrap(), expected[1..].to_vec());
}

pub async fn ledger_append_is_idempotent<S: FullStore>(s: &S) {
    let c = open_campaign("contract-ledger", 5);
    s.insert_campaign(&c).await.unwrap();
    let StoreClaim::Issued(coupon) = s.claim(&c, &user(1), CouponCode::generate(), now()).await.unwrap() else {
        panic!("expected issued")
    };
    let record = IssuanceRecord::new(&c, &coupon);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 0);
    assert_eq!(s.append(&record).await.unwrap(), LedgerWrite::Inserted);
    assert_eq!(s.append(&record).await.unwrap(), LedgerWrite::Duplicate);
    assert_eq!(crate::consume_issuance(s, &record.to_json()).await.unwrap(), LedgerWrite::Duplicate);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 1);
    assert!(matches!(crate::consume_issuance(s, "{\"code\":1}").await, Err(crate::LedgerError::Malformed(_))));
}

/// Many claims in flight at once (users clicking twice): never more than `total`, one per
/// user, `seq` without gaps, repeats see the same code.
pub async fn concurrent_claims_never_oversell<S: FullStore>(s: &S) {
    let c = open_campaign("contract-concurrent", 50);
    s.insert_campaign(&c).await.unwrap();
    let claims = (0..400).map(|i| {
        let c = &c;
        async move { (i % 200, s.claim(c, &user(i % 200), CouponCode::generate(), now()).await.unwrap()) }
    });
    let results = futures::future::join_all(claims).await;
    let mut by_user: HashMap<usize, CouponCode> = HashMap::new();
    let mut seqs = Vec::new();
    for (u, r) in results {
        match r {
            StoreClaim::Issued(coupon) => {
                assert!(by_user.insert(u, coupon.code).is_none_or(|prev| prev == coupon.code), "user {u} won twice");
                seqs.push(coupon.seq);
            }
            StoreClaim::Existing(coupon) => {
                assert_eq!(*by_user.entry(u).or_insert(coupon.code), coupon.code);
            }
            StoreClaim::SoldOut => {}
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(by_user.values().collect::<HashSet<_>>().len(), 50);
    assert_eq!(s.issued(&c.id).await.unwrap(), 50);
}

/// Generates one `#[tokio::test]` per contract test. `$make` is an expression giving a future
/// of `(guard, store)`; the guard (e.g. a temp dir) lives as long as the test.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            campaigns_insert_update_list,
            claims_issue_in_order_then_sell_out,
            campaigns_have_separate_stock_and_winners,
            every_issue_leaves_one_outbox_record,
            ledger_append_is_idempotent,
            concurrent_claims_never_oversell,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = ($make).await;
                $crate::testkit::$name(&store).await;
            }
        )*
    };
}
