//! SqliteStore against the shared store contract, plus what only a durable store must show:
//! state rebuilt after reopening, and one process per data dir.

use firstcome_core::testkit::{open_campaign, user};
use firstcome_core::{CampaignStore, ClaimStore, CouponCode, LedgerStore, Outbox, StoreClaim};
use firstcome_store_sqlite::{SqliteError, SqliteStore};
use time::OffsetDateTime;

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

firstcome_core::store_contract_tests!(fresh());

fn now() -> OffsetDateTime {
    firstcome_core::truncate_to_millis(OffsetDateTime::now_utc())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_rebuilds_stock_winners_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let c = open_campaign("reopen", 3);
    let (first, second) = {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.insert_campaign(&c).await.unwrap();
        let a = s.claim(&c, &user(1), CouponCode::generate(), now()).await.unwrap();
        let b = s.claim(&c, &user(2), CouponCode::generate(), now()).await.unwrap();
        s.close().await;
        (a, b)
    };
    let (StoreClaim::Issued(first), StoreClaim::Issued(second)) = (first, second) else {
        panic!("expected two issues")
    };
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.campaigns().await.unwrap(), vec![c.clone()]);
    assert_eq!(s.issued(&c.id).await.unwrap(), 2);
    assert_eq!(
        s.claim(&c, &user(1), CouponCode::generate(), now()).await.unwrap(),
        StoreClaim::Existing(first.clone())
    );
    match s.claim(&c, &user(3), CouponCode::generate(), now()).await.unwrap() {
        StoreClaim::Issued(third) => assert_eq!(third.seq, 3, "seq continues without a gap"),
        other => panic!("expected issued, got {other:?}"),
    }
    assert_eq!(s.claim(&c, &user(4), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    let pending: Vec<_> = s.pending(10).await.unwrap().into_iter().map(|r| r.code).collect();
    assert_eq!(&pending[..2], &[first.code, second.code]);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 0);
}

#[tokio::test]
async fn a_data_dir_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SqliteStore::open(dir.path()).unwrap();
    assert!(matches!(SqliteStore::open(dir.path()), Err(SqliteError::Locked(_))));
}

#[tokio::test]
async fn after_close_claims_fail_instead_of_pretending() {
    let (_dir, s) = fresh().await;
    let c = open_campaign("closed-store", 3);
    s.insert_campaign(&c).await.unwrap();
    s.close().await;
    assert!(s.claim(&c, &user(1), CouponCode::generate(), now()).await.is_err());
}

/// The database itself carries no unique index on user or code (see the schema); the check is
/// redone from disk at every start, so a damaged file is refused rather than served.
#[tokio::test]
async fn opening_refuses_a_database_that_breaks_the_invariants() {
    let damages = [
        ("a user holding two coupons", "UPDATE coupons SET user_id = 'user-1' WHERE seq = 2"),
        ("a code issued twice", "UPDATE coupons SET code = (SELECT code FROM coupons WHERE seq = 1) WHERE seq = 2"),
        ("a gap in seq", "DELETE FROM coupons WHERE seq = 1"),
        ("a newer schema", "PRAGMA user_version = 99"),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            let c = open_campaign("damaged", 5);
            s.insert_campaign(&c).await.unwrap();
            for u in 1..=2 {
                s.claim(&c, &user(u), CouponCode::generate(), now()).await.unwrap();
            }
            s.close().await;
        }
        let conn = rusqlite::Connection::open(dir.path().join("firstcome.sqlite3")).unwrap();
        conn.execute_batch(damage).unwrap();
        drop(conn);
        assert!(matches!(SqliteStore::open(dir.path()), Err(SqliteError::Corrupt(_))), "{what} was not detected");
    }
}
