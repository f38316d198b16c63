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

/// Longest a new coupon's send may hold its claim's answer (SQS answers in ~10 ms; what does not
/// make it in time is the reconciler's, a minute later).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// A claim store (the guarded DynamoStore) whose new coupons' issuance records are sent to the
/// queue once the claim has answered `issued`: outside the store's guard, with its own short
/// timeout, so an SQS brownout neither holds claims until the guard times them out nor counts
/// against the store's breaker. A send that fails or runs out is logged; the claim item stays in
/// the `unledgered` index, and the reconciler sends it.
pub struct SendsIssued<S> {
    inner: S,
    store: std::sync::Arc<firstcome_store_dynamo::DynamoStore>,
    queue: std::sync::Arc<dyn IssuanceQueue>,
}

impl<S> SendsIssued<S> {
    /// `inner` decides the claims; `store` (the DynamoStore under it) knows each coupon's terms.
    pub fn new(
        inner: S,
        store: std::sync::Arc<firstcome_store_dynamo::DynamoStore>,
        queue: std::sync::Arc<dyn IssuanceQueue>,
    ) -> Self {
        Self { inner, store, queue }
    }

    async fn send(&self, coupon: &firstcome_core::Coupon) {
        let Some(record) = self.store.issuance_record(coupon) else { return };
        match tokio::time::timeout(SEND_TIMEOUT, self.queue.send(&record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, campaign = %coupon.campaign_id, seq = coupon.seq, "issuance record not sent; the reconciler will");
            }
            Err(_) => {
                tracing::warn!(campaign = %coupon.campaign_id, seq = coupon.seq, after = ?SEND_TIMEOUT, "issuance record send timed out; the reconciler will send it");
            }
        }
    }
}

#[async_trait]
impl<S: firstcome_core::ClaimStore> firstcome_core::ClaimStore for SendsIssued<S> {
    async fn claim_with_ticket(
        &self,
        campaign: &firstcome_core::CampaignId,
        user: &firstcome_core::UserId,
        code: firstcome_core::CouponCode,
        ticket: Option<u64>,
        now: time::OffsetDateTime,
    ) -> Result<firstcome_core::StoreClaim, StoreError> {
        let decided = self.inner.claim_with_ticket(campaign, user, code, ticket, now).await;
        if let Ok(firstcome_core::StoreClaim::Issued(coupon)) = &decided {
            self.send(coupon).await;
        }
        decided
    }
    async fn coupon_of(
        &self,
        campaign: &firstcome_core::CampaignId,
        user: &firstcome_core::UserId,
    ) -> Result<Option<firstcome_core::Coupon>, StoreError> {
        self.inner.coupon_of(campaign, user).await
    }
    async fn issued(&self, campaign: &firstcome_core::CampaignId) -> Result<u64, StoreError> {
        self.inner.issued(campaign).await
    }
    async fn coupons(
        &self,
        campaign: &firstcome_core::CampaignId,
        after: u32,
        limit: usize,
    ) -> Result<Vec<firstcome_core::Coupon>, StoreError> {
        self.inner.coupons(campaign, after, limit).await
    }
}
