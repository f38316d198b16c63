//! The ledger's way from a durable claim to the ledger table, on the emulated endpoint: real
//! DynamoDB tables (from template.yaml), real SQS queues with a redrive policy, the consumer's
//! batch handler driven the way Lambda's SQS trigger drives it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use firstcome_aws::{SendsIssued, SqsEventSource, SqsIssuanceQueue, ledger_batch};
use firstcome_core::testkit::{now, open_campaign, user};
use firstcome_core::{
    CampaignStore, ClaimStore, CouponCode, IssuanceQueue, IssuanceRecord, LedgerStore, Outbox, ReconcileSettings,
    StoreClaim, StoreError, reconcile,
};
use firstcome_store_dynamo::DynamoStore;
use firstcome_store_dynamo::testkit::{client, fresh_tables, sdk_config, store};

struct Queue {
    url: String,
    arn: String,
}

async fn queue(sqs: &aws_sdk_sqs::Client, dead_letter: Option<(&Queue, u32)>) -> Queue {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("q{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut req = sqs.create_queue().queue_name(&name);
    if let Some((dlq, max)) = dead_letter {
        let policy = serde_json::json!({ "deadLetterTargetArn": dlq.arn, "maxReceiveCount": max.to_string() });
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let url = req.send().await.unwrap().queue_url().unwrap().to_owned();
    let attrs =
        sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    let arn = attrs.attributes().unwrap()[&QueueAttributeName::QueueArn].clone();
    Queue { url, arn }
}

async fn setup(shards: u32) -> (Arc<DynamoStore>, aws_sdk_sqs::Client) {
    let config = sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let tables = fresh_tables(&dynamo).await;
    (Arc::new(store(dynamo, tables, shards)), aws_sdk_sqs::Client::new(&config))
}

fn message(id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body.into());
    m
}

/// Drains `q` through the ledger handler the way the SQS trigger would, bounded in polls.
async fn drain(sqs: &aws_sdk_sqs::Client, q: &Queue, s: &Arc<DynamoStore>, polls: usize) -> usize {
    let source = SqsEventSource::new(sqs.clone(), &q.url, &q.arn);
    let mut received = 0;
    for _ in 0..polls {
        let polled = source.poll_once(Duration::ZERO, |event| ledger_batch(&**s, &**s, event)).await.unwrap();
        if polled.received == 0 {
            break;
        }
        received += polled.received;
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_exactly_its_bad_message_and_a_duplicate_writes_once() {
    let (s, _) = setup(1).await;
    let c = open_campaign("batch", 5);
    let record = |n: usize| IssuanceRecord::new(&c, &c.coupon_for(user(n), CouponCode::generate(), n as u32, now()));
    let (a, b) = (record(1), record(2));
    let mut event = SqsEvent::default();
    event.records =
        vec![message("m1", &a.to_json()), message("m2", "{\"not\":\"a record\"}"), message("m3", &b.to_json())];
    let response = ledger_batch(&*s, &*s, event).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m2"]);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 2);
    // The same record delivered again (SQS is at-least-once): accepted, written once.
    let mut again = SqsEvent::default();
    again.records = vec![message("m4", &a.to_json())];
    assert!(ledger_batch(&*s, &*s, again).await.batch_item_failures.is_empty());
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dead_letter_queue() {
    let (s, sqs) = setup(1).await;
    let dlq = queue(&sqs, None).await;
    let q = queue(&sqs, Some((&dlq, 2))).await;
    let c = open_campaign("poison", 5);
    let good = IssuanceRecord::new(&c, &c.coupon_for(user(1), CouponCode::generate(), 1, now()));
    for body in ["this is not json", &good.to_json()] {
        sqs.send_message().queue_url(&q.url).message_body(body).send().await.unwrap();
    }
    // Received twice and failed twice (maxReceiveCount 2), then redriven: never lost, never blocking.
    drain(&sqs, &q, &s, 10).await;
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 1);
    let dead = sqs.receive_message().queue_url(&dlq.url).max_number_of_messages(10).send().await.unwrap();
    let bodies: Vec<&str> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["this is not json"]);
    let left = sqs.receive_message().queue_url(&q.url).send().await.unwrap();
    assert!(left.messages().is_empty(), "nothing is left behind in the main queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_whose_send_failed_or_never_happened_still_reaches_the_ledger() {
    let (s, sqs) = setup(2).await;
    let q = queue(&sqs, None).await;
    let c = open_campaign("reconcile", 10);
    s.insert_campaign(&c).await.unwrap();

    // The normal way: sent right after the claim is durable, acknowledged after the ledger write.
    let sent = SendsIssued::new(s.clone(), s.clone(), Arc::new(SqsIssuanceQueue::new(sqs.clone(), &q.url)));
    assert!(matches!(sent.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap(), StoreClaim::Issued(_)));
    assert_eq!(drain(&sqs, &q, &s, 5).await, 1);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 1);
    assert!(s.pending(10).await.unwrap().is_empty(), "acknowledged once in the ledger");

    // A send that fails for real (the queue URL names no queue) and a function that died
    // between the write and the send: both coupons are durable and issued, the queue is empty.
    let gone = Arc::new(SqsIssuanceQueue::new(sqs.clone(), format!("{}-gone", q.url)));
    let broken = SendsIssued::new(s.clone(), s.clone(), gone);
    let lost_send = broken.claim(&c.id, &user(2), CouponCode::generate(), now()).await.unwrap();
    let died = s.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap();
    let (StoreClaim::Issued(a), StoreClaim::Issued(b)) = (lost_send, died) else { panic!("both must be issued") };
    assert_eq!(drain(&sqs, &q, &s, 5).await, 0);
    let pending: Vec<_> = s.pending(10).await.unwrap().into_iter().map(|r| r.code).collect();
    assert_eq!(pending, [a.code, b.code]);

    // Within the grace period the reconciler leaves them to the normal path; after it, it sends.
    let queue = SqsIssuanceQueue::new(sqs.clone(), &q.url);
    let settings = ReconcileSettings::default();
    let run = |at: time::OffsetDateTime| {
        let (s, queue) = (s.clone(), &queue);
        async move { reconcile(&*s, queue, at, None, &settings).await.unwrap() }
    };
    assert_eq!(run(a.issued_at).await.sent, 0);
    let later = now() + settings.grace + time::Duration::seconds(1);
    let first = run(later).await;
    assert_eq!((first.sent, first.failed, first.cursor), (2, 0, None));
    assert_eq!(first.oldest, Some(a.issued_at));
    assert_eq!(drain(&sqs, &q, &s, 5).await, 2);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 3);
    assert!(s.pending(10).await.unwrap().is_empty());
    // Nothing left to reconcile; a second run sends nothing.
    let again = run(later).await;
    assert_eq!((again.sent, again.oldest), (0, None));
}

/// A queue that records what reached it and fails the sends of the records it is told to.
struct Flaky<'a> {
    inner: Option<&'a SqsIssuanceQueue>,
    fail: HashSet<CouponCode>,
    got: Mutex<Vec<CouponCode>>,
    calls: AtomicU32,
}

impl<'a> Flaky<'a> {
    fn new(inner: Option<&'a SqsIssuanceQueue>, fail: HashSet<CouponCode>) -> Self {
        Self { inner, fail, got: Mutex::default(), calls: AtomicU32::new(0) }
    }
}

#[async_trait::async_trait]
impl IssuanceQueue for Flaky<'_> {
    async fn send(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        self.send_batch(std::slice::from_ref(record)).await.remove(0)
    }
    async fn send_batch(&self, records: &[IssuanceRecord]) -> Vec<Result<(), StoreError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ok: Vec<IssuanceRecord> = records.iter().filter(|r| !self.fail.contains(&r.code)).cloned().collect();
        let mut sent = match self.inner {
            Some(q) => q.send_batch(&ok).await,
            None => ok.iter().map(|_| Ok(())).collect(),
        }
        .into_iter();
        let mut out = Vec::new();
        for r in records {
            if self.fail.contains(&r.code) {
                out.push(Err(StoreError::unavailable(std::io::Error::other("injected send failure"))));
            } else {
                let result = sent.next().expect("one result per record");
                if result.is_ok() {
                    self.got.lock().unwrap().push(r.code);
                }
                out.push(result);
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_unledgered_claims_are_re_sent_in_batches_past_a_failing_send() {
    // The claims on DynamoDB Local: the emulator's indexes crawl at this size. The queue records
    // what reached it: the emulator's SQS slows down as a queue fills (5,000 messages took it
    // over three minutes); `SendMessageBatch` itself is tested against it below.
    let dynamo = client().await;
    let tables = fresh_tables(&dynamo).await;
    let s = Arc::new(store(dynamo, tables, 4));
    let c = open_campaign("reconcile-5000", 5_000);
    s.insert_campaign(&c).await.unwrap();
    let issued_at = now() - time::Duration::minutes(10);
    let coupons = s.issue_directly(&c, 5_000, issued_at).await;
    assert_eq!(s.issued(&c.id).await.unwrap(), 5_000);
    let all: HashSet<CouponCode> = coupons.iter().map(|c| c.code).collect();

    // Ten sends in the middle of the run fail; the run goes on past them.
    let failing: HashSet<CouponCode> = coupons[2_500..2_510].iter().map(|c| c.code).collect();
    let flaky = Flaky::new(None, failing.clone());
    let settings = ReconcileSettings {
        park_after: time::Duration::hours(1),
        page: 500,
        max_records: 10_000,
        ..Default::default()
    };
    let run = reconcile(&*s, &flaky, now(), None, &settings).await.unwrap();
    assert_eq!((run.sent, run.failed, run.cursor.as_deref()), (4_990, 10, None));
    assert_eq!(run.errors.len(), 10, "the failures are named for the log");
    assert_eq!(run.oldest, Some(coupons.iter().map(|c| c.issued_at).min().unwrap()));
    assert_eq!(flaky.calls.load(Ordering::Relaxed), 10, "a page (500) at a time, not one record at a time");
    let got = flaky.got.lock().unwrap().clone();
    assert_eq!(got.len(), 4_990, "each once");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), all.difference(&failing).copied().collect::<HashSet<_>>());

    // A bounded run stops at its limit and says where to go on; going on lists the rest, each once.
    let bounded = ReconcileSettings { max_records: 3_000, ..settings };
    let recording = Flaky::new(None, HashSet::new());
    let first = reconcile(&*s, &recording, now(), None, &bounded).await.unwrap();
    assert_eq!(first.sent, 3_000);
    let rest = reconcile(&*s, &recording, now(), first.cursor.clone(), &bounded).await.unwrap();
    assert_eq!((rest.sent, rest.cursor), (2_000, None));
    let got = recording.got.lock().unwrap().clone();
    assert_eq!((got.len(), got.iter().collect::<HashSet<_>>().len()), (5_000, 5_000));

    // Past the parking age nothing is re-sent by itself, but the age still says so (it alarms);
    // an operator's replay sends them.
    let parking = ReconcileSettings { park_after: time::Duration::minutes(5), ..settings };
    let parked = reconcile(&*s, &Flaky::new(None, HashSet::new()), now(), None, &parking).await.unwrap();
    assert_eq!((parked.sent, parked.oldest), (0, run.oldest));
    let replay = ReconcileSettings { include_parked: true, max_records: 20, ..parking };
    assert_eq!(reconcile(&*s, &Flaky::new(None, HashSet::new()), now(), None, &replay).await.unwrap().sent, 20);
    // A damaged cursor is refused, not taken for the start.
    assert!(reconcile(&*s, &recording, now(), Some("{not a cursor".into()), &bounded).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_to_sqs_ten_per_request_with_a_result_each() {
    let (s, sqs) = setup(1).await;
    let q = queue(&sqs, None).await;
    let c = open_campaign("send-batch", 25);
    s.insert_campaign(&c).await.unwrap();
    let records: Vec<IssuanceRecord> =
        s.issue_directly(&c, 25, now()).await.iter().map(|coupon| IssuanceRecord::new(&c, coupon)).collect();
    let sent = SqsIssuanceQueue::new(sqs.clone(), &q.url).send_batch(&records).await;
    assert_eq!(sent.len(), 25);
    assert!(sent.iter().all(Result::is_ok));
    let mut received = HashSet::new();
    for _ in 0..10 {
        let out = sqs.receive_message().queue_url(&q.url).max_number_of_messages(10).send().await.unwrap();
        for m in out.messages() {
            received.insert(serde_json::from_str::<IssuanceRecord>(m.body().unwrap()).unwrap().code);
            sqs.delete_message().queue_url(&q.url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    assert_eq!(received, records.iter().map(|r| r.code).collect::<HashSet<_>>(), "each exactly once");
    // A queue that is gone fails every record, and says so per record.
    let gone = SqsIssuanceQueue::new(sqs.clone(), format!("{}-gone", q.url)).send_batch(&records).await;
    assert_eq!(gone.iter().filter(|r| r.is_err()).count(), 25);
}

/// An SQS that never answers.
struct Hanging;

#[async_trait::async_trait]
impl IssuanceQueue for Hanging {
    async fn send(&self, _: &IssuanceRecord) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_brownout_neither_holds_claims_nor_trips_the_breaker() {
    let (s, _) = setup(2).await;
    let guarded = Arc::new(firstcome_guard::Guarded::new(s.clone(), firstcome_guard::GuardConfig::lambda()));
    // As the claim function wires it: the send outside the guard.
    let claims = SendsIssued::new(guarded.clone(), s.clone(), Arc::new(Hanging));
    let c = open_campaign("sqs-down", 5);
    s.insert_campaign(&c).await.unwrap();
    for u in 0..3 {
        let started = std::time::Instant::now();
        let claim = claims.claim(&c.id, &user(u), CouponCode::generate(), now()).await;
        assert!(matches!(claim, Ok(StoreClaim::Issued(_))), "issued: {claim:?}");
        // Held by the send's own timeout, not the guard's (4 s), whatever the emulator's pace.
        assert!(started.elapsed() < firstcome_guard::GuardConfig::lambda().call_timeout, "{:?}", started.elapsed());
    }
    assert_eq!(guarded.breaker_state(), firstcome_guard::BreakerState::Closed);
    // The records wait in the unledgered index for the reconciler.
    assert_eq!(s.pending(10).await.unwrap().len(), 3);
}
