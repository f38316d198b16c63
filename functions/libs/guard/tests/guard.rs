//! The guard is transparent when the store is healthy (the contract suites pass through it) and
//! when it is not: stalls end in time, a write's unknown outcome is read back, the breaker opens
//! and closes by itself, admission sheds instead of queueing, and no coupon is lost or doubled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstcome_core::testkit::{MemoryStore, open_campaign, user};
use firstcome_core::{CampaignStore, ClaimOutcome, ClaimStore, CouponCode, Issuer, IssuerError, StoreError};
use firstcome_guard::faulty::{Fault, FaultSwitch, Faulty};
use firstcome_guard::{BreakerConfig, BreakerState, GuardConfig, Guarded};

async fn fresh() -> ((), Guarded<MemoryStore>) {
    ((), Guarded::new(MemoryStore::new(), GuardConfig::local()))
}

firstcome_core::campaign_store_contract!(fresh());
firstcome_core::claim_store_contract!(fresh());
firstcome_core::ledger_store_contract!(fresh());

fn config(timeout_ms: u64) -> GuardConfig {
    GuardConfig {
        max_in_flight: 64,
        max_queued: 64,
        queue_wait: Duration::from_millis(50),
        call_timeout: Duration::from_millis(timeout_ms),
        read_timeout: Duration::from_millis(timeout_ms),
        breaker: BreakerConfig {
            window: 20,
            min_calls: 20,
            failure_rate: 0.5,
            open_for: Duration::from_millis(300),
            probes: 5,
        },
    }
}

type Store = Guarded<Faulty<Arc<MemoryStore>>>;

fn guarded(cfg: GuardConfig) -> (Arc<Store>, FaultSwitch, Arc<MemoryStore>) {
    let memory = Arc::new(MemoryStore::new());
    let (faulty, switch) = Faulty::new(memory.clone());
    (Arc::new(Guarded::new(faulty, cfg)), switch, memory)
}

#[tokio::test]
async fn a_stalled_store_answers_within_the_timeout_reads_unavailable_writes_unknown() {
    let (store, switch, _) = guarded(config(100));
    let c = open_campaign("stall", 10);
    store.insert_campaign(&c).await.unwrap();
    switch.set(Fault::Stall(Duration::from_secs(5)));

    let started = Instant::now();
    let read = store.campaign(&c.id).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let write = store.claim(&c.id, &user(1), CouponCode::generate(), firstcome_core::testkit::now()).await;
    assert!(matches!(write, Err(StoreError::Unknown(_))), "a timed-out write may have happened: {write:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "two calls took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_claim_whose_answer_is_lost_is_read_back_as_issued_never_doubled() {
    let (store, switch, memory) = guarded(config(100));
    let issuer = Issuer::with_store(store.clone());
    let c = open_campaign("lost-answer", 5);
    store.insert_campaign(&c).await.unwrap();
    let now = firstcome_core::testkit::now();
    switch.set(Fault::SlowClaimAnswers(Duration::from_millis(400)));

    let first = issuer.claim(&c.id, &user(1), now).await.unwrap();
    let ClaimOutcome::Issued(coupon) = first else { panic!("the store applied it: {first:?}") };
    switch.set(Fault::None);
    let again = issuer.claim(&c.id, &user(1), now).await.unwrap();
    assert_eq!(again, ClaimOutcome::AlreadyIssued(coupon.clone()), "the retry gets the same coupon");
    assert_eq!(memory.issued(&c.id).await.unwrap(), 1);
}

#[tokio::test]
async fn contention_is_overload_and_never_opens_the_breaker() {
    let (store, switch, _) = guarded(config(100));
    let c = open_campaign("contended", 10);
    store.insert_campaign(&c).await.unwrap();
    switch.set(Fault::Contended);
    for u in 0..40 {
        let r = store.claim(&c.id, &user(u), CouponCode::generate(), firstcome_core::testkit::now()).await;
        assert!(matches!(r, Err(StoreError::Contended(_))), "{r:?}");
    }
    assert_eq!(store.breaker_state(), BreakerState::Closed, "stock remains: shed claims, never all of them");
    switch.set(Fault::None);
    assert!(store.claim(&c.id, &user(99), CouponCode::generate(), firstcome_core::testkit::now()).await.is_ok());
}

#[tokio::test]
async fn the_breaker_opens_on_failures_answers_at_once_and_closes_by_itself() {
    let (store, switch, _) = guarded(config(100));
    let c = open_campaign("breaker", 10);
    store.insert_campaign(&c).await.unwrap();
    switch.set(Fault::Fail);
    for _ in 0..20 {
        assert!(store.campaign(&c.id).await.is_err());
    }
    assert_eq!(store.breaker_state(), BreakerState::Open);

    // Healed, but the breaker does not know yet: it answers at once without the store.
    switch.set(Fault::Stall(Duration::from_secs(5)));
    let started = Instant::now();
    let refused = store.campaign(&c.id).await;
    assert!(started.elapsed() < Duration::from_millis(50), "open means at once: {:?}", started.elapsed());
    let Err(StoreError::Unavailable(why)) = refused else { panic!("{refused:?}") };
    assert!(why.to_string().contains("breaker"), "{why}");

    switch.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        store.campaign(&c.id).await.expect("half-open probes reach the healed store");
    }
    assert_eq!(store.breaker_state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_sheds_beyond_the_queue_instead_of_waiting() {
    let cfg = GuardConfig { max_in_flight: 2, max_queued: 2, ..config(2_000) };
    let (store, switch, _) = guarded(cfg);
    let c = open_campaign("admission", 10);
    store.insert_campaign(&c).await.unwrap();
    switch.set(Fault::Stall(Duration::from_millis(500)));

    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (store, id) = (store.clone(), c.id.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                (store.campaign(&id).await, started.elapsed())
            })
        })
        .collect();
    let mut shed_fast = 0;
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            (Err(StoreError::Overloaded), took) => {
                assert!(took < Duration::from_millis(300), "shed after {took:?}");
                shed_fast += 1;
            }
            (Ok(Some(_)), _) => served += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((served, shed_fast), (2, 8), "two in flight; the queued two wait 50 ms, then go too");
}

/// 200 users race 50 coupons through a store that fails, stalls and loses answers by turns.
/// Whatever each user was told, the store ends with exactly what was promised: no issued answer
/// without its coupon, never two coupons for one user, and after the faults all 50 issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_a_rush_never_lose_or_double_a_coupon() {
    let (store, switch, memory) = guarded(config(50));
    let issuer = Arc::new(Issuer::with_store(store.clone()));
    let c = open_campaign("rush", 50);
    store.insert_campaign(&c).await.unwrap();

    let mut chaos = Some({
        let switch = switch.clone();
        tokio::spawn(async move {
            let faults = [
                Fault::SlowClaimAnswers(Duration::from_millis(80)),
                Fault::None,
                Fault::Fail,
                Fault::Stall(Duration::from_millis(80)),
                Fault::None,
            ];
            for f in faults.iter().cycle().take(40) {
                switch.set(*f);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            switch.set(Fault::None);
        })
    });
    let mut told: HashMap<usize, String> = HashMap::new();
    let mut errors = 0;
    for round in 0..3 {
        let first = round == 0;
        let tasks: Vec<_> = (0..200)
            .map(|u| {
                let (issuer, id) = (issuer.clone(), c.id.clone());
                // The first round spreads its clicks over the faults' 600 ms.
                let at = if first { Duration::from_millis(3 * u as u64) } else { Duration::ZERO };
                tokio::spawn(async move {
                    tokio::time::sleep(at).await;
                    (u, issuer.claim(&id, &user(u), firstcome_core::testkit::now()).await)
                })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                (u, Ok(ClaimOutcome::Issued(cp) | ClaimOutcome::AlreadyIssued(cp))) => {
                    let code = cp.code.to_string();
                    let held = told.entry(u).or_insert_with(|| code.clone());
                    assert_eq!(*held, code, "user {u} was told two different coupons");
                }
                (_, Ok(ClaimOutcome::SoldOut)) => {}
                (_, Err(IssuerError::Store(_))) => errors += 1,
                (u, other) => panic!("user {u}: {other:?}"),
            }
        }
        if let Some(chaos) = chaos.take() {
            chaos.await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    // Every user told "yours" holds exactly that coupon in the store, and the stock is all out.
    let mut stored = HashSet::new();
    for (u, code) in &told {
        let held = memory.coupon_of(&c.id, &user(*u)).await.unwrap().expect("an issued answer has its coupon");
        assert_eq!(held.code.to_string(), *code);
        stored.insert(held.seq);
    }
    assert!(errors > 0, "the faults were never met");
    assert_eq!(memory.issued(&c.id).await.unwrap(), 50, "({errors} answers were errors)");
    assert_eq!(told.len(), 50, "after the faults, every coupon reached a user who was told");
    assert_eq!(stored.len(), 50);
}
