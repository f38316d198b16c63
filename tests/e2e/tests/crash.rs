//! Crash safety, black-box: `firstcome-local` as a child process, claims in flight, `kill -9`,
//! restart. Every `issued` answer received before the kill must still be there with the same
//! code, the stock is never exceeded, nobody holds two coupons, and the ledger catches up. Every
//! protection is at its default (the store guard, connection limits, the per-user limit) and the
//! campaign asks for claim tickets, so the claims go through all of it. (The per-client limit
//! exempts loopback in local mode.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firstcome_tests::{Client, LocalProcess, local_binary};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

const STOCK: u64 = 400;
const USERS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flight_loses_no_issued_coupon() {
    let binary = local_binary();
    let dir = tempfile::tempdir().unwrap();
    let mut server = LocalProcess::start(&binary, dir.path(), &["--ledger-rate", "20000"]);
    let client = Client::new();
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let tokens: Arc<Vec<String>> =
        Arc::new((0..USERS).map(|u| firstcome_tests::user_token(dir.path(), &format!("u{u}"))).collect());
    let opens_at = (time::OffsetDateTime::now_utc() - time::Duration::seconds(1)).format(&Rfc3339).unwrap();
    let body = json!({"id": "crash", "title": "Crash", "total": STOCK, "opens_at": opens_at, "pow_bits": 6,
                      "coupon": {"discount": 1000, "currency": "KRW", "valid_days": 1}});
    assert_eq!(
        client.post(&format!("{}/api/admin/campaigns", server.url), Some(&admin), Some(&body)).await.unwrap().0,
        201
    );
    // Every user's ticket, solved from the revealed nonce (it survives the restart: it is stored).
    let (_, view) = client.get(&format!("{}/api/campaigns/crash", server.url), None).await.unwrap();
    let nonce = firstcome_core::ticket::Nonce::from_hex(view["ticket"]["nonce"].as_str().unwrap()).unwrap();
    let tickets: Arc<Vec<u64>> = Arc::new(
        (0..USERS)
            .map(|u| {
                let p = firstcome_core::ticket::Puzzle::new(6, "crash", &format!("u{u}"), &nonce);
                p.search(0, u64::MAX).unwrap()
            })
            .collect(),
    );

    // 32 tasks claim for distinct users until the connection dies under them.
    let answered: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let issued_seen = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let claim_url = format!("{}/api/campaigns/crash/claims", server.url);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (client, tokens, tickets, answered, issued_seen, dead, url) = (
            client.clone(),
            tokens.clone(),
            tickets.clone(),
            answered.clone(),
            issued_seen.clone(),
            dead.clone(),
            claim_url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for u in (t..USERS).step_by(32) {
                if dead.load(Ordering::Relaxed) {
                    return;
                }
                match client.claim_with_ticket(&url, &tokens[u], tickets[u]).await {
                    Ok((201, v)) => {
                        answered.lock().unwrap().insert(u, v["coupon"]["code"].as_str().unwrap().to_owned());
                        issued_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((409, _)) => {}
                    Ok((s, v)) => panic!("unexpected {s}: {v}"),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill while claims are still streaming in (well before the stock is gone).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while issued_seen.load(Ordering::SeqCst) < 150 {
        assert!(tokio::time::Instant::now() < deadline, "claims did not get going");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill_9();
    dead.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let before_kill = answered.lock().unwrap().clone();
    assert!(before_kill.len() >= 150 && (before_kill.len() as u64) < STOCK, "killed mid-flight: {}", before_kill.len());

    let mut server = LocalProcess::start(&binary, dir.path(), &["--ledger-rate", "20000"]);
    let url = server.url.clone();
    for (u, code) in &before_kill {
        let (s, me) = client.get(&format!("{url}/api/campaigns/crash/claims/me"), Some(&tokens[*u])).await.unwrap();
        assert_eq!(
            (s, me["code"].as_str()),
            (200, Some(code.as_str())),
            "user {u} lost the coupon answered before the kill"
        );
    }
    let (_, v) = client.get(&format!("{url}/api/admin/campaigns/crash"), Some(&admin)).await.unwrap();
    let issued_after_restart = v["issued"].as_u64().unwrap();
    assert!(issued_after_restart >= before_kill.len() as u64 && issued_after_restart <= STOCK);
    eprintln!("answered issued before kill: {}, durable after restart: {issued_after_restart}", before_kill.len());

    // Everyone clicks again until the stock is gone: exactly STOCK winners, seq 1..=STOCK, distinct codes.
    let mut winners: HashMap<usize, (u64, String)> = HashMap::new();
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|&u| {
            let (client, token, url) = (client.clone(), tokens[u].clone(), format!("{url}/api/campaigns/crash/claims"));
            let ticket = tickets[u];
            async move { (u, client.claim_with_ticket(&url, &token, ticket).await.unwrap()) }
        });
        for (u, (s, v)) in futures::future::join_all(calls).await {
            match s {
                200 | 201 => {
                    let c = &v["coupon"];
                    winners.insert(u, (c["seq"].as_u64().unwrap(), c["code"].as_str().unwrap().to_owned()));
                }
                409 => assert_eq!(v["error"], "sold_out"),
                other => panic!("unexpected {other}: {v}"),
            }
        }
    }
    assert_eq!(winners.len() as u64, STOCK);
    let mut seqs: Vec<u64> = winners.values().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=STOCK).collect::<Vec<_>>());
    assert_eq!(winners.values().map(|(_, c)| c).collect::<HashSet<_>>().len() as u64, STOCK);
    for (u, code) in &before_kill {
        assert_eq!(&winners[u].1, code, "a repeat after restart must return the pre-crash code");
    }

    // The ledger converges to the claims: every issued coupon exactly once.
    let mut written = 0;
    for _ in 0..300 {
        let (_, v) = client.get(&format!("{url}/api/admin/campaigns/crash"), Some(&admin)).await.unwrap();
        written = v["ledger_written"].as_u64().unwrap();
        if written == STOCK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written, STOCK);
    assert!(server.terminate(), "graceful shutdown exits 0");
}
