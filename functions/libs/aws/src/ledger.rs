//! The ledger consumer: the core's per-message `deliver_issuance` under a batch wrapper that
//! reports exactly the failed messages (`batchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use firstcome_core::{LedgerStore, Outbox, deliver_issuance};

/// Applies each message of a batch to the ledger. A message that fails (malformed, or the
/// ledger or outbox unavailable) is reported by id so SQS redelivers only it; after the queue's
/// `maxReceiveCount` it lands in the dead-letter queue. The others are done and get deleted.
pub async fn ledger_batch(ledger: &dyn LedgerStore, outbox: &dyn Outbox, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let result = match message.body.as_deref() {
            Some(body) => deliver_issuance(ledger, outbox, body).await.map_err(|e| e.to_string()),
            None => Err("message has no body".to_owned()),
        };
        if let Err(reason) = result {
            tracing::warn!(message_id = %id, error = %reason, "ledger message failed; SQS will redeliver it");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}
