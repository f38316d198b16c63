//! What the emulator never does: transaction conflicts, throttling, and answers lost after the
//! write applied. A small proxy between the SDK and the endpoint injects them into
//! `TransactWriteItems` calls on command, and the claims must still come out exact. The proxy
//! also counts requests, to show which answers touch DynamoDB at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use firstcome_core::testkit::{campaign_at, now, open_campaign, user};
use firstcome_core::{
    CacheConfig, CampaignChanges, CampaignStore, ClaimOutcome, ClaimStore, CouponCode, EndOutcome, Issuer, StoreClaim,
    StoreError,
};
use firstcome_store_dynamo::DynamoStore;
use firstcome_store_dynamo::testkit::{fresh_tables, sdk_config, store};
use time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The calls a fault can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A claim's allocation from a shard (`UpdateItem ... remaining - 1`).
    Allocate,
    /// A claim's record: the claim item and the allocation's marker (`TransactWriteItems`).
    Record,
    /// Any `GetItem`.
    Read,
    /// A seq's return to its shard (`UpdateItem ... list_append`), after its void marker.
    GiveBack,
}

impl Call {
    /// Whether `request` is this call; a script waits for the next such call.
    fn is(self, request: &str) -> bool {
        match self {
            Call::Allocate => request.contains("DynamoDB_20120810.UpdateItem") && request.contains("#left - :one"),
            Call::Record => request.contains("DynamoDB_20120810.TransactWriteItems"),
            Call::Read => request.contains("DynamoDB_20120810.GetItem"),
            Call::GiveBack => request.contains("DynamoDB_20120810.UpdateItem") && request.contains("list_append"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refused as if a transaction held the item (`TransactionConflict`).
    Conflict,
    /// The same, answered only after this many milliseconds: the caller retries late.
    SlowConflict(u64),
    /// `ThrottlingException`.
    Throttle,
    /// Forwarded and applied, then the connection is dropped before the answer.
    LoseAnswer,
    /// Forwarded and applied, then answered `500 InternalServerError`.
    ApplyThen500,
    /// Not forwarded; answered `500 InternalServerError`.
    Fail500,
    /// Not forwarded; the connection is dropped (a claimant that died before it was sent).
    Drop,
    /// Forwarded after this many milliseconds.
    Slow(u64),
}

/// Faults to apply, in order, each to the next call it is aimed at; everything else passes.
type Script = Arc<Mutex<VecDeque<(Call, Fault)>>>;

/// Reads one HTTP/1.1 request (head and Content-Length body); `None` at end of stream.
async fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

fn canned(kind: &str, extra: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"injected"{extra}}}"#);
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: injected\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn server_error() -> Vec<u8> {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#;
    format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: injected\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The request with `Connection: close` added after its request line.
fn close_after(request: &[u8]) -> Vec<u8> {
    let line = request.windows(2).position(|w| w == b"\r\n").map_or(request.len(), |i| i + 2);
    [&request[..line], b"Connection: close\r\n", &request[line..]].concat()
}

async fn proxy(upstream: String, script: Script, requests: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let (upstream, script, requests) = (upstream.clone(), script.clone(), requests.clone());
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut client).await {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let fault = {
                        let mut script = script.lock().unwrap();
                        let next = script.front().copied().filter(|(call, _)| call.is(&text));
                        next.map(|(_, f)| {
                            script.pop_front();
                            f
                        })
                    };
                    // A transaction is cancelled with per-item reasons; a single-item write that
                    // meets a transaction holding its item is refused outright.
                    let conflict = || {
                        if Call::Record.is(&text) {
                            let reasons = r#","CancellationReasons":[{"Code":"TransactionConflict","Message":"injected"},{"Code":"None"}]"#;
                            canned("TransactionCanceledException", reasons)
                        } else {
                            canned("TransactionConflictException", "")
                        }
                    };
                    match fault {
                        Some(Fault::Conflict) => {
                            let _ = client.write_all(&conflict()).await;
                            continue;
                        }
                        Some(Fault::SlowConflict(ms)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            let _ = client.write_all(&conflict()).await;
                            continue;
                        }
                        Some(Fault::Drop) => return,
                        Some(Fault::Throttle) => {
                            let _ = client.write_all(&canned("ThrottlingException", "")).await;
                            continue;
                        }
                        Some(Fault::Fail500) => {
                            let _ = client.write_all(&server_error()).await;
                            continue;
                        }
                        Some(Fault::Slow(ms)) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                        _ => {}
                    }
                    // One upstream connection per request, asked to close after its answer, so
                    // the answer is everything read until then.
                    let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
                    if up.write_all(&close_after(&request)).await.is_err() {
                        return;
                    }
                    let mut response = Vec::new();
                    if up.read_to_end(&mut response).await.is_err() {
                        return;
                    }
                    if fault == Some(Fault::LoseAnswer) {
                        return; // applied upstream; the client never hears of it
                    }
                    if fault == Some(Fault::ApplyThen500) {
                        let _ = client.write_all(&server_error()).await;
                        return; // applied upstream; the client hears "internal error"
                    }
                    if client.write_all(&response).await.is_err() {
                        return;
                    }
                    return; // upstream closed: so does this connection
                }
            });
        }
    });
    url
}

async fn faulty_store(script: Script) -> DynamoStore {
    counted_store(script, Arc::default()).await
}

async fn counted_store(script: Script, requests: Arc<AtomicUsize>) -> DynamoStore {
    stores(script, requests).await.0
}

/// A store behind the proxy and another container's store on the same tables, straight to the
/// endpoint.
async fn stores(script: Script, requests: Arc<AtomicUsize>) -> (DynamoStore, DynamoStore) {
    let endpoint = firstcome_store_dynamo::testkit::endpoint();
    let upstream = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let config = sdk_config().await;
    let direct = aws_sdk_dynamodb::Client::new(&config);
    let tables = fresh_tables(&direct).await;
    let url = proxy(upstream, script, requests).await;
    let faulty = aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(url).build();
    (store(aws_sdk_dynamodb::Client::from_conf(faulty), tables.clone(), 2), store(direct, tables, 2))
}

fn issuer(s: DynamoStore) -> Issuer {
    let s = Arc::new(s);
    Issuer::with_store(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_still_retrying_after_an_end_is_answered_closed() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-end", 5);
    s.insert_campaign(&c).await.unwrap();
    // The claim's first allocation is refused as a conflict, late: it retries after the end.
    script.lock().unwrap().push_back((Call::Allocate, Fault::SlowConflict(800)));
    let (id, started) = (c.id.clone(), now());
    let claim = tokio::spawn(async move { s.claim(&id, &user(1), CouponCode::generate(), started).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ended = other.end_campaign(&c.id, now()).await.unwrap();
    assert!(matches!(ended, EndOutcome::Ended(_)), "{ended:?}");
    // Everything this claim decides now is decided after "end now" answered.
    assert_eq!(claim.await.unwrap().unwrap(), StoreClaim::Closed);
    assert_eq!(other.issued(&c.id).await.unwrap(), 0, "nothing issued after the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_decided_after_the_opening_is_refused() {
    let script: Script = Arc::default();
    let s = faulty_store(script.clone()).await;
    let t = now();
    let c = campaign_at("faults-edit-late", 5, t + Duration::milliseconds(300));
    s.insert_campaign(&c).await.unwrap();
    // The edit is asked "before" the opening; its read of the campaign comes back after it.
    script.lock().unwrap().push_back((Call::Read, Fault::Slow(700)));
    let later = CampaignChanges { total: Some(1), opens_at: Some(t + Duration::hours(1)), ..Default::default() };
    let next = later.apply(&c, t).unwrap();
    let edit = s.update_campaign(&next, c.version, t).await;
    assert!(matches!(edit, Err(StoreError::Frozen)), "{edit:?}");
    assert_eq!(s.campaign(&c.id).await.unwrap(), Some(c), "the terms at the opening stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_applies_and_then_answers_500_is_issued() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-500", 5);
    s.insert_campaign(&c).await.unwrap();
    // The record lands and answers 500, and so does every retry the SDK makes of it; the
    // store's own retry of the same request then gets the first one's answer.
    let faults = [Fault::ApplyThen500, Fault::Fail500, Fault::Fail500, Fault::Fail500];
    script.lock().unwrap().extend(faults.map(|f| (Call::Record, f)));
    let engine = issuer(s);
    let outcome = engine.claim(&c.id, &user(1), now()).await;
    script.lock().unwrap().clear();
    let Ok(ClaimOutcome::Issued(coupon)) = outcome else { panic!("a coupon exists: {outcome:?}") };
    assert_eq!(other.coupon_of(&c.id, &user(1)).await.unwrap(), Some(coupon.clone()));
    assert_eq!(other.issued(&c.id).await.unwrap(), 1);
    // The next click gets the same coupon.
    assert_eq!(engine.claim(&c.id, &user(1), now()).await.unwrap(), ClaimOutcome::AlreadyIssued(coupon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_write_may_have_applied_every_later_failure_is_unknown() {
    let script: Script = Arc::default();
    // A claim's deadline as on DynamoDB: the SDK's own retries of 500s back off for seconds.
    let s = faulty_store(script.clone()).await.with_claim_deadline(std::time::Duration::from_secs(2));
    let c = open_campaign("faults-unknown", 5);
    s.insert_campaign(&c).await.unwrap();
    // The record lands and its answer is lost; every retry of it meets a 500 until the claim
    // gives up.
    let faults: Vec<_> =
        std::iter::once(Fault::LoseAnswer).chain([Fault::Fail500; 60]).map(|f| (Call::Record, f)).collect();
    script.lock().unwrap().extend(faults.clone());
    let code = CouponCode::generate();
    let first = s.claim(&c.id, &user(1), code, now()).await;
    script.lock().unwrap().clear();
    assert!(
        matches!(first, Err(StoreError::Unknown(_))),
        "never 'not done' after a write that may have applied: {first:?}"
    );
    // The engine's read-back then finds it.
    assert_eq!(s.coupon_of(&c.id, &user(1)).await.unwrap().map(|c| c.code), Some(code));
    // Through the engine the same faults end in the coupon, not a failure.
    script.lock().unwrap().extend(faults);
    let outcome = issuer(s).claim(&c.id, &user(2), now()).await;
    script.lock().unwrap().clear();
    assert!(matches!(outcome, Ok(ClaimOutcome::Issued(_))), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_throttling_are_retried_and_nothing_is_issued_twice() {
    let script: Script = Arc::default();
    let s = faulty_store(script.clone()).await;
    let c = open_campaign("faults-retry", 3);
    s.insert_campaign(&c).await.unwrap();
    let mut codes = Vec::new();
    for u in 0..4 {
        // Every claim meets a conflict and a throttle on its allocation (and the SDK's own
        // retries), and a conflict on its record, before it lands.
        let faults =
            [(Call::Allocate, Fault::Conflict), (Call::Allocate, Fault::Throttle), (Call::Record, Fault::Conflict)];
        script.lock().unwrap().extend(faults);
        match s.claim(&c.id, &user(u), CouponCode::generate(), now()).await.unwrap() {
            StoreClaim::Issued(coupon) => codes.push(coupon.code),
            StoreClaim::SoldOut => assert_eq!(u, 3, "only the fourth claim finds the stock gone"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(codes.len(), 3);
    assert_eq!(s.issued(&c.id).await.unwrap(), 3);
    let listed: Vec<_> = s.coupons(&c.id, 0, 10).await.unwrap().into_iter().map(|c| c.code).collect();
    assert_eq!(listed.len(), 3, "one claim item per issue, none lost or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_the_record_is_resolved_by_asking_again() {
    let script: Script = Arc::default();
    let s = faulty_store(script.clone()).await;
    let c = open_campaign("faults-lost", 5);
    s.insert_campaign(&c).await.unwrap();
    script.lock().unwrap().push_back((Call::Record, Fault::LoseAnswer));
    let code = CouponCode::generate();
    let first = s.claim(&c.id, &user(1), code, now()).await.unwrap();
    let StoreClaim::Issued(coupon) = first else { panic!("the applied write is this claim's issue: {first:?}") };
    assert_eq!(coupon.code, code, "the coupon the lost record made, not a second one");
    assert_eq!(s.issued(&c.id).await.unwrap(), 1, "stock taken once");
    // The user's retry (a new request, new code) finds the same coupon.
    assert_eq!(s.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap(), StoreClaim::Existing(coupon));
    assert_eq!(s.issued(&c.id).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sell_out_losers_are_answered_without_touching_dynamodb() {
    let requests = Arc::new(AtomicUsize::new(0));
    let s = counted_store(Arc::default(), requests.clone()).await;
    let c = open_campaign("faults-sold-out", 3);
    s.insert_campaign(&c).await.unwrap();
    let mut winners = Vec::new();
    for u in 0..3 {
        let StoreClaim::Issued(coupon) = s.claim(&c.id, &user(u), CouponCode::generate(), now()).await.unwrap() else {
            panic!("stock left")
        };
        winners.push(coupon);
    }
    // The claim that finds every shard empty loads the final winners once.
    assert_eq!(s.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    let before = requests.load(Ordering::SeqCst);
    for u in 3..53 {
        assert_eq!(s.coupon_of(&c.id, &user(u)).await.unwrap(), None);
    }
    for (u, coupon) in winners.iter().enumerate() {
        assert_eq!(
            s.coupon_of(&c.id, &user(u)).await.unwrap().as_ref(),
            Some(coupon),
            "a winner still gets their coupon"
        );
    }
    assert_eq!(requests.load(Ordering::SeqCst), before, "no DynamoDB request for any of them");
}

/// Every coupon of the campaign, with the seqs 1..=total each held once and the claim items
/// agreeing with the shards.
async fn assert_exact(s: &DynamoStore, c: &firstcome_core::Campaign) {
    let coupons = s.coupons(&c.id, 0, 1000).await.unwrap();
    let mut seqs: Vec<u32> = coupons.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=c.total).collect::<Vec<_>>(), "each seq held once: {coupons:?}");
    let users: std::collections::HashSet<_> = coupons.iter().map(|c| c.user_id.clone()).collect();
    assert_eq!(users.len(), coupons.len(), "one coupon per user");
    assert_eq!(s.issued(&c.id).await.unwrap(), u64::from(c.total));
}

/// Claims users `from..` until the store answers sold out; the coupons issued.
async fn sell_out(s: &DynamoStore, c: &firstcome_core::Campaign, from: usize) -> usize {
    let mut issued = 0;
    for u in from..from + 100 {
        match s.claim(&c.id, &user(u), CouponCode::generate(), now()).await.unwrap() {
            StoreClaim::Issued(_) => issued += 1,
            StoreClaim::SoldOut => return issued,
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("never sold out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_whose_answer_is_lost_is_given_back_by_recovery() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-alloc-lost", 4);
    s.insert_campaign(&c).await.unwrap();
    // The allocation applies but its answer is lost: the claim cannot know its number, so it
    // allocates anew; the first allocation is nobody's.
    script.lock().unwrap().push_back((Call::Allocate, Fault::LoseAnswer));
    let first = s.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap();
    assert!(matches!(first, StoreClaim::Issued(_)), "{first:?}");
    assert_eq!(other.issued(&c.id).await.unwrap(), 2, "two allocations, one of them lost");
    // The first pass marks what it saw; the next gives back what is still unrecorded.
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 0, "nothing is old enough yet");
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 1);
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 0, "given back once");
    assert_eq!(other.issued(&c.id).await.unwrap(), 1);
    // The seq it held is issued again: the whole stock, each seq once.
    assert_eq!(sell_out(&other, &c, 2).await, 3);
    assert_exact(&other, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimant_that_dies_between_allocation_and_record_leaks_nothing() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let s = s.with_claim_deadline(std::time::Duration::from_secs(2));
    let c = open_campaign("faults-died", 3);
    s.insert_campaign(&c).await.unwrap();
    // The claim allocates; then no record it sends ever arrives, until it gives up.
    script.lock().unwrap().extend([Fault::Drop; 200].map(|f| (Call::Record, f)));
    let died = s.claim(&c.id, &user(1), CouponCode::generate(), now()).await;
    script.lock().unwrap().clear();
    assert!(matches!(died, Err(StoreError::Unknown(_))), "a record that may have been sent is unknown: {died:?}");
    assert_eq!(other.coupon_of(&c.id, &user(1)).await.unwrap(), None);
    other.recover_allocations().await.unwrap();
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 1);
    assert_eq!(sell_out(&other, &c, 1).await, 3, "the whole stock, the dead claim's seq included");
    assert_exact(&other, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_arrives_after_recovery_gave_its_allocation_back_never_lands() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-late-record", 2);
    s.insert_campaign(&c).await.unwrap();
    // The claim's record is held back for 1.5 s, while recovery runs twice: it finds the
    // allocation unrecorded and gives it back. The record then finds the void marker.
    script.lock().unwrap().push_back((Call::Record, Fault::Slow(1500)));
    let (id, started) = (c.id.clone(), now());
    let claim = tokio::spawn(async move { s.claim(&id, &user(1), CouponCode::generate(), started).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    other.recover_allocations().await.unwrap();
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 1);
    // Meanwhile another user takes the seq it gave back.
    assert!(matches!(
        other.claim(&c.id, &user(2), CouponCode::generate(), now()).await.unwrap(),
        StoreClaim::Issued(_)
    ));
    // The late claim allocates anew and is issued the other seq: never the same one twice.
    let late = claim.await.unwrap().unwrap();
    assert!(matches!(late, StoreClaim::Issued(_)), "{late:?}");
    assert_eq!(other.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    assert_exact(&other, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_click_on_another_container_gives_its_allocation_back_at_once() {
    let (s, other) = stores(Arc::default(), Arc::default()).await;
    let c = open_campaign("faults-repeat", 2);
    s.insert_campaign(&c).await.unwrap();
    let StoreClaim::Issued(coupon) = s.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap() else {
        panic!("stock left")
    };
    // The other container knows nothing of it: it allocates, its record finds the claim item.
    assert_eq!(
        other.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap(),
        StoreClaim::Existing(coupon)
    );
    assert_eq!(other.issued(&c.id).await.unwrap(), 1, "the repeat's allocation is back already");
    assert_eq!(sell_out(&other, &c, 2).await, 1);
    assert_exact(&other, &c).await;
}

/// The last seq, taken for a moment by a winner's repeat click on another container: a customer
/// who finds every shard empty meanwhile is not told "sold out" while that seq is on its way
/// back; they wait for it and get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_who_finds_the_stock_empty_while_a_repeat_gives_it_back_gets_it() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-settling", 2);
    s.insert_campaign(&c).await.unwrap();
    assert!(matches!(
        other.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap(),
        StoreClaim::Issued(_)
    ));
    // The repeat allocates the last seq, finds the claim item, writes its void marker; the
    // seq's return to the shard is held back 500 ms.
    script.lock().unwrap().push_back((Call::GiveBack, Fault::Slow(500)));
    let id = c.id.clone();
    let repeat = tokio::spawn(async move { s.claim(&id, &user(1), CouponCode::generate(), now()).await });
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(other.issued(&c.id).await.unwrap(), 2, "the repeat holds the last seq now");
    let second = other.claim(&c.id, &user(2), CouponCode::generate(), now()).await.unwrap();
    assert!(matches!(second, StoreClaim::Issued(_)), "{second:?}");
    assert!(matches!(repeat.await.unwrap().unwrap(), StoreClaim::Existing(_)));
    assert_eq!(other.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap(), StoreClaim::SoldOut);
    assert_exact(&other, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_given_back_after_sell_out_goes_to_the_next_customer() {
    let script: Script = Arc::default();
    let (s, other) = stores(script.clone(), Arc::default()).await;
    let c = open_campaign("faults-after-sell-out", 2);
    s.insert_campaign(&c).await.unwrap();
    let ttl = std::time::Duration::from_millis(300);
    let s = Arc::new(s);
    let clock = firstcome_core::testkit::ManualClock::new();
    let engine = Issuer::with_store(s)
        .with_cache(CacheConfig { sold_out_ttl: ttl, ..CacheConfig::default() })
        .with_clock(clock.clone());
    // The first claim's first allocation is lost: the stock looks gone after one coupon.
    script.lock().unwrap().push_back((Call::Allocate, Fault::LoseAnswer));
    assert!(matches!(engine.claim(&c.id, &user(1), now()).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(engine.claim(&c.id, &user(2), now()).await.unwrap(), ClaimOutcome::SoldOut);
    // Recovery gives the lost allocation back; within the ttl the engine still says sold out.
    other.recover_allocations().await.unwrap();
    assert_eq!(other.recover_allocations().await.unwrap().given_back, 1);
    assert_eq!(engine.claim(&c.id, &user(3), now()).await.unwrap(), ClaimOutcome::SoldOut);
    // Past it, the next customer gets the coupon that came back, and then it is sold out.
    clock.advance(ttl);
    assert!(matches!(engine.claim(&c.id, &user(4), now()).await.unwrap(), ClaimOutcome::Issued(_)));
    assert_eq!(engine.claim(&c.id, &user(5), now()).await.unwrap(), ClaimOutcome::SoldOut);
    assert_exact(&other, &c).await;
}
