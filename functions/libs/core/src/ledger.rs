//! The issuance ledger record and the per-message consumer that applies it idempotently.
//! The local outbox worker and the SQS consumer Lambda both call [`consume_issuance`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ports::{IssuanceQueue, LedgerStore, LedgerWrite, Outbox, StoreError};
use crate::{Campaign, CampaignId, Coupon, CouponCode, UserId};

/// One line of the issuance ledger: the coupon and what it is worth. Idempotency key: `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceRecord {
    pub code: CouponCode,
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    pub seq: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub discount: u64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl IssuanceRecord {
    pub fn new(campaign: &Campaign, coupon: &Coupon) -> Self {
        Self {
            code: coupon.code,
            campaign_id: coupon.campaign_id.clone(),
            user_id: coupon.user_id.clone(),
            seq: coupon.seq,
            issued_at: coupon.issued_at,
            discount: campaign.coupon.discount,
            currency: campaign.coupon.currency.clone(),
            expires_at: coupon.expires_at,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The message is not an issuance record; retrying cannot help.
    #[error("malformed issuance record")]
    Malformed(#[source] serde_json::Error),
    #[error("ledger write failed")]
    Store(#[from] StoreError),
}

/// Applies one queue message to the ledger, then acknowledges it in the store's outbox (only once
/// the ledger write is durable, so a crash in between redelivers and writes nothing new).
pub async fn deliver_issuance(
    ledger: &dyn LedgerStore,
    outbox: &dyn Outbox,
    body: &str,
) -> Result<LedgerWrite, LedgerError> {
    let record = serde_json::from_str::<IssuanceRecord>(body).map_err(LedgerError::Malformed);
    let write = match record {
        Ok(record) => match ledger.append(&record).await {
            Ok(write) => outbox.acknowledge(&record).await.map(|()| write).map_err(LedgerError::from),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    crate::telemetry::ledger_write(&write);
    write
}

/// Sends again every record still unacknowledged that was issued before `issued_before` (a
/// grace period for the normal send and delivery to finish), at most `limit`. Returns how many
/// were sent. Duplicates are harmless: the ledger is idempotent by coupon code.
pub async fn reconcile(
    outbox: &dyn Outbox,
    queue: &dyn IssuanceQueue,
    issued_before: OffsetDateTime,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut sent = 0;
    for record in outbox.pending(limit).await? {
        if record.issued_at < issued_before {
            queue.send(&record).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Applies one queue message to the ledger. Safe to call any number of times for the same
/// message: the ledger is keyed by coupon code, so redelivery after a crash writes nothing new.
pub async fn consume_issuance(ledger: &dyn LedgerStore, body: &str) -> Result<LedgerWrite, LedgerError> {
    let write = match serde_json::from_str::<IssuanceRecord>(body) {
        Ok(record) => ledger.append(&record).await.map_err(LedgerError::from),
        Err(e) => Err(LedgerError::Malformed(e)),
    };
    crate::telemetry::ledger_write(&write);
    write
}
