//! `SqsEventSource` (feature `testkit`): Lambda's SQS trigger where no Lambda service runs (the
//! emulated stack, tests). The functions never need it, so it is not in what they ship.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_smithy_types::error::display::DisplayErrorContext;

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("sqs {op}: {message}")]
pub struct PollError {
    op: &'static str,
    message: String,
}

/// Does for a handler what Lambda's SQS event source mapping does: receive a batch, hand it over
/// as an `SqsEvent`, delete what succeeded, and make the reported failures visible again after
/// `retry_after` (their receive count grows, so the queue's redrive policy applies as on AWS).
pub struct SqsEventSource {
    client: Client,
    url: String,
    arn: String,
    pub batch_size: i32,
    pub retry_after: Duration,
}

impl SqsEventSource {
    pub fn new(client: Client, url: impl Into<String>, arn: impl Into<String>) -> Self {
        Self { client, url: url.into(), arn: arn.into(), batch_size: 10, retry_after: Duration::ZERO }
    }

    /// Receives up to one batch (waiting at most `wait` for it) and runs `handler` on it.
    pub async fn poll_once<F, Fut>(&self, wait: Duration, handler: F) -> Result<Polled, PollError>
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: Future<Output = SqsBatchResponse>,
    {
        let err = |op, e: &dyn std::error::Error| PollError { op, message: DisplayErrorContext(e).to_string() };
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(self.batch_size)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| err("ReceiveMessage", &e))?;
        let messages = received.messages();
        if messages.is_empty() {
            return Ok(Polled::default());
        }
        let mut event = SqsEvent::default();
        for m in messages {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id().map(str::to_owned);
            message.receipt_handle = m.receipt_handle().map(str::to_owned);
            message.body = m.body().map(str::to_owned);
            message.md5_of_body = m.md5_of_body().map(str::to_owned);
            message.event_source = Some("aws:sqs".into());
            message.event_source_arn = Some(self.arn.clone());
            message.aws_region = Some("us-east-1".into());
            if let Some(attrs) = m.attributes() {
                message.attributes = attrs.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect();
            }
            event.records.push(message);
        }
        let response = handler(event).await;
        let failed: std::collections::HashSet<&str> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        let mut deletes = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else { continue };
            if failed.contains(id) {
                self.client
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(handle)
                    .visibility_timeout(self.retry_after.as_secs() as i32)
                    .send()
                    .await
                    .map_err(|e| err("ChangeMessageVisibility", &e))?;
            } else {
                deletes.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| err("DeleteMessageBatch", &e))?,
                );
            }
        }
        if !deletes.is_empty() {
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|e| err("DeleteMessageBatch", &e))?;
            if let Some(f) = out.failed().first() {
                return Err(PollError { op: "DeleteMessageBatch", message: format!("{f:?}") });
            }
        }
        Ok(Polled { received: messages.len(), failed: failed.len() })
    }
}
