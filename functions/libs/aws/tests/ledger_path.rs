//! The ledger's way from a durable claim to the ledger table, on the emulated endpoint: real
//! DynamoDB tables (from template.yaml), real SQS queues with a redrive policy, the consumer's
//! batch handler driven the way Lambda's SQS trigger drives it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::QueueAttributeName;
use firstcome_aws::{SqsEventSource, SqsIssuanceQueue, ledger_batch};
use firstcome_core::testkit::{now, open_campaign, user};
use firstcome_core::{
    CampaignStore, ClaimStore, CouponCode, IssuanceRecord, LedgerStore, Outbox, StoreClaim, reconcile,
};
use firstcome_store_dynamo::DynamoStore;
use firstcome_store_dynamo::testkit::{fresh_tables, sdk_config, store};

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
    let sent = (*s).clone_with_queue(Arc::new(SqsIssuanceQueue::new(sqs.clone(), &q.url)));
    assert!(matches!(sent.claim(&c.id, &user(1), CouponCode::generate(), now()).await.unwrap(), StoreClaim::Issued(_)));
    assert_eq!(drain(&sqs, &q, &s, 5).await, 1);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 1);
    assert!(s.pending(10).await.unwrap().is_empty(), "acknowledged once in the ledger");

    // A send that fails for real (the queue URL names no queue) and a function that died
    // between the write and the send: both coupons are durable and issued, the queue is empty.
    let broken = (*s).clone_with_queue(Arc::new(SqsIssuanceQueue::new(sqs.clone(), format!("{}-gone", q.url))));
    let lost_send = broken.claim(&c.id, &user(2), CouponCode::generate(), now()).await.unwrap();
    let died = s.claim(&c.id, &user(3), CouponCode::generate(), now()).await.unwrap();
    let (StoreClaim::Issued(a), StoreClaim::Issued(b)) = (lost_send, died) else { panic!("both must be issued") };
    assert_eq!(drain(&sqs, &q, &s, 5).await, 0);
    let pending: Vec<_> = s.pending(10).await.unwrap().into_iter().map(|r| r.code).collect();
    assert_eq!(pending, [a.code, b.code]);

    // Within the grace period the reconciler leaves them to the normal path; after it, it sends.
    let queue = SqsIssuanceQueue::new(sqs.clone(), &q.url);
    assert_eq!(reconcile(&*s, &queue, a.issued_at - time::Duration::seconds(60), 100).await.unwrap(), 0);
    assert_eq!(reconcile(&*s, &queue, now() + time::Duration::seconds(1), 100).await.unwrap(), 2);
    assert_eq!(drain(&sqs, &q, &s, 5).await, 2);
    assert_eq!(s.ledger_written(&c.id).await.unwrap(), 3);
    assert!(s.pending(10).await.unwrap().is_empty());
    // Nothing left to reconcile; a second run sends nothing.
    assert_eq!(reconcile(&*s, &queue, now() + time::Duration::seconds(1), 100).await.unwrap(), 0);
}
