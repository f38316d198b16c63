//! SqliteStore against every contract suite, plus what only a durable, embedded store must show:
//! state rebuilt after reopening, seq gap-free at every instant, one process per data dir, private
//! files, and damaged databases refused loudly.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use firstcome_core::testkit::{campaign_at, now, open_campaign, user};
use firstcome_core::{CampaignStore, ClaimOutcome, ClaimStore, CouponCode, Issuer, LedgerStore, Outbox, StoreClaim};
use firstcome_store_sqlite::{SqliteError, SqliteStore};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).unwrap();
    (dir, store)
}

firstcome_core::campaign_store_contract!(fresh());
firstcome_core::claim_store_contract!(fresh());
firstcome_core::ledger_store_contract!(fresh());
firstcome_core::outbox_contract!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_rebuilds_campaigns_stock_winners_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let c = open_campaign("reopen", 3);
    let (first, second) = {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.insert_campaign(&c).await.unwrap();
        let a = s.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap();
        let b = s.claim(&c.id, &user(2), CouponCode::generate(), now()).await.unwrap();
        s.close().await;
        (a, b)
    };
    let (StoreClaim::Issued(first), StoreClaim::Issued(second)) = (first, second) else {
        panic!("expected two issues")
    };
    let s = Arc::new(SqliteStore::open(dir.path()).unwrap());
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(s.issued(&c.id).await.unwrap(), 2);
    // A fresh engine on the reopened store serves what is on disk.
    let issuer = Issuer::with_store(s.clone());
    assert_eq!(issuer.claim(&c.id, &user(1), now()).await.unwrap(), ClaimOutcome::AlreadyIssued(first.clone()));
    match s.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap() {
        StoreClaim::Issued(third) => assert_eq!(third.seq, 3, "seq continues without a gap"),
        other => panic!("expected issued, got {other:?}"),
    }
    assert_eq!(issuer.claim(&c.id, &user(4), now()).await.unwrap(), ClaimOutcome::SoldOut);
    let pending: Vec<_> = s.pending(10).await.unwrap().into_iter().map(|r| r.code).collect();
    assert_eq!(&pending[..2], &[first.code, second.code]);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 0);
}

/// SQLite-only: not just once sold out, but at every instant the issued coupons are exactly
/// 1..=issued (seq is taken under the campaign lock and committed in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_gap_free_at_every_instant() {
    let (_dir, s) = fresh().await;
    let s = Arc::new(s);
    let c = open_campaign("gap-free", 10_000);
    s.insert_campaign(&c).await.unwrap();
    for round in 0..5 {
        let tasks: Vec<_> = (0..200)
            .map(|u| {
                let (s, id) = (s.clone(), c.id.clone());
                tokio::spawn(async move { s.claim(&id, &user(round * 1000 + u), CouponCode::generate(), now()).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            if let StoreClaim::Issued(coupon) = t.await.unwrap().unwrap() {
                seqs.push(coupon.seq);
            }
        }
        seqs.sort_unstable();
        let issued = s.issued(&c.id).await.unwrap() as u32;
        assert_eq!(seqs, ((round as u32 * 200 + 1)..=issued).collect::<Vec<_>>(), "round {round}");
    }
}

#[tokio::test]
async fn a_data_dir_has_one_owner_and_its_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = SqliteStore::open(&data).unwrap();
    assert!(matches!(SqliteStore::open(&data), Err(SqliteError::Locked(_))));
    first.insert_campaign(&open_campaign("private", 1)).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn close_releases_the_data_dir_even_while_a_clone_is_still_alive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = SqliteStore::open(&data).unwrap();
    first.insert_campaign(&open_campaign("kept", 3)).await.unwrap();
    let lingering = first.clone();
    first.close().await;
    // A restart while an old clone lingers (a connection task not yet dropped) gets the dir,
    // and sees what was committed before the close.
    let second = SqliteStore::open(&data).unwrap();
    assert_eq!(second.campaign(&firstcome_core::CampaignId::parse("kept").unwrap()).await.unwrap().unwrap().total, 3);
    drop(lingering);
    assert!(matches!(SqliteStore::open(&data), Err(SqliteError::Locked(_))), "the new owner holds it");
}

#[tokio::test]
async fn after_close_claims_fail_instead_of_pretending() {
    let (_dir, s) = fresh().await;
    let c = open_campaign("closed-store", 3);
    s.insert_campaign(&c).await.unwrap();
    s.close().await;
    assert!(s.claim(&c.id, &user(1), CouponCode::generate(), now()).await.is_err());
}

/// The database itself carries no unique index on user or code (see the schema); the checks are
/// redone from disk at every start, and the schema is only ever created on a brand-new data dir,
/// so a damaged file is refused rather than served (or silently started afresh).
#[tokio::test]
async fn opening_refuses_a_database_that_breaks_the_invariants() {
    type Damage<'a> = (&'a str, &'a dyn Fn(&std::path::Path));
    let damages: [Damage; 7] = [
        ("a user holding two coupons", &|db| sql(db, "UPDATE coupons SET user_id = 'user-1' WHERE seq = 2")),
        ("a code issued twice", &|db| {
            sql(db, "UPDATE coupons SET code = (SELECT code FROM coupons WHERE seq = 1) WHERE seq = 2")
        }),
        ("a gap in seq", &|db| sql(db, "DELETE FROM coupons WHERE seq = 1")),
        ("a newer schema", &|db| sql(db, "PRAGMA user_version = 99")),
        ("a dropped coupons table", &|db| sql(db, "DROP TABLE coupons")),
        ("total below issued", &|db| {
            sql(db, "UPDATE campaigns SET body = json_set(body, '$.total', 1)");
        }),
        ("a 0-byte database file", &|db| {
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            std::fs::write(db, b"").unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            let c = campaign_at("damaged", 5, now());
            s.insert_campaign(&c).await.unwrap();
            for u in 1..=2 {
                s.claim(&c.id, &user(u), CouponCode::generate(), now()).await.unwrap();
            }
            s.close().await;
        }
        damage(&dir.path().join("firstcome.sqlite3"));
        match SqliteStore::open(dir.path()) {
            Err(SqliteError::Corrupt(msg)) => eprintln!("{what}: refused ({msg})"),
            Err(e) => panic!("{what}: refused for the wrong reason: {e}"),
            Ok(_) => panic!("{what} was not detected"),
        }
    }
}

fn sql(db: &std::path::Path, statement: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(statement).unwrap();
}
