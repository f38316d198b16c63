//! `SqsIssuanceQueue`: the issuance records' way to the ledger consumer.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_types::error::display::DisplayErrorContext;
use firstcome_core::{IssuanceQueue, IssuanceRecord, StoreError};

#[derive(Debug, thiserror::Error)]
#[error("sqs SendMessage: {0}")]
pub struct SendError(String);

/// SQS takes at most this many messages per `SendMessageBatch`.
const BATCH: usize = 10;

pub struct SqsIssuanceQueue {
    client: Client,
    url: String,
}

impl SqsIssuanceQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

#[async_trait]
impl IssuanceQueue for SqsIssuanceQueue {
    async fn send(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(record.to_json())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::unavailable(SendError(DisplayErrorContext(&e).to_string())))
    }

    /// `SendMessageBatch`, ten at a time; a failed request fails its ten, a failed entry itself.
    async fn send_batch(&self, records: &[IssuanceRecord]) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(BATCH) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(r.to_json()).build()
                })
                .collect();
            let sent = match entries {
                Ok(entries) => self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| DisplayErrorContext(&e).to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(answer) => {
                    let failed: std::collections::HashMap<&str, String> = answer
                        .failed()
                        .iter()
                        .map(|f| (f.id(), format!("{}: {}", f.code(), f.message().unwrap_or(""))))
                        .collect();
                    for i in 0..chunk.len() {
                        out.push(match failed.get(i.to_string().as_str()) {
                            Some(why) => Err(StoreError::unavailable(SendError(why.clone()))),
                            None => Ok(()),
                        });
                    }
                }
                Err(why) => out.extend(chunk.iter().map(|_| Err(StoreError::unavailable(SendError(why.clone()))))),
            }
        }
        out
    }
}
