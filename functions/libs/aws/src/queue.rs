//! `SqsIssuanceQueue`: the issuance records' way to the ledger consumer.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use firstcome_core::{IssuanceQueue, IssuanceRecord, StoreError};

#[derive(Debug, thiserror::Error)]
#[error("sqs SendMessage: {0}")]
pub struct SendError(String);

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
}
