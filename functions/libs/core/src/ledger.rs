//! The issuance ledger record and the per-message consumer that applies it idempotently.
//! The local outbox worker and the SQS consumer Lambda both call [`consume_issuance`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ports::{IssuanceQueue, LedgerStore, LedgerWrite, Outbox, StoreError, Unledgered};
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

/// How the reconciler works through what the ledger has not acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileSettings {
    /// Left to the normal path for this long after issue (the send and the delivery).
    pub grace: time::Duration,
    /// Re-sent by itself only until this age: a record the ledger still has not acknowledged
    /// by then (a poison message in the dead-letter queue, a ledger that keeps refusing it) was
    /// re-sent about `(park_after - grace) / period` times already; it is *parked*: left in the
    /// index, counted in the oldest-unledgered age (which alarms), and re-sent only when an
    /// operator asks (`include_parked`).
    pub park_after: time::Duration,
    /// Also re-send parked records (an operator's replay after fixing the cause).
    pub include_parked: bool,
    /// Records per store page (and so per batch of sends).
    pub page: usize,
    /// At most this many records per run; the run returns where to continue.
    pub max_records: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            grace: time::Duration::seconds(60),
            park_after: time::Duration::minutes(15),
            include_parked: false,
            page: 500,
            max_records: 5_000,
        }
    }
}

/// What one reconciler run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub sent: usize,
    /// Sends that failed (left in the index: the next run tries again).
    pub failed: usize,
    /// Where the next run continues (`None`: this run reached the end).
    pub cursor: Option<String>,
    /// When the oldest unacknowledged claim was issued, parked ones included.
    pub oldest: Option<OffsetDateTime>,
    /// The first few failed sends, for the log.
    pub errors: Vec<String>,
}

/// Sends again the records still unacknowledged that were issued between `park_after` and
/// `grace` before `now`, a page at a time from `cursor`, at most `max_records`. A failed send is
/// counted and the run goes on. Duplicates are harmless: the ledger is idempotent by coupon code.
/// Records the age of the oldest unacknowledged claim.
pub async fn reconcile(
    store: &dyn Unledgered,
    queue: &dyn IssuanceQueue,
    now: OffsetDateTime,
    cursor: Option<String>,
    settings: &ReconcileSettings,
) -> Result<Reconciled, StoreError> {
    let from = (!settings.include_parked).then(|| now - settings.park_after);
    let before = now - settings.grace;
    let mut done = Reconciled { cursor, ..Default::default() };
    loop {
        let want = settings.page.min(settings.max_records - (done.sent + done.failed)).max(1);
        let (records, next) = store.unledgered(from, before, done.cursor.as_deref(), want).await?;
        let results = if records.is_empty() { Vec::new() } else { queue.send_batch(&records).await };
        for (record, result) in records.iter().zip(results) {
            match result {
                Ok(()) => done.sent += 1,
                Err(e) => {
                    done.failed += 1;
                    if done.errors.len() < MAX_REPORTED_ERRORS {
                        done.errors.push(format!("{} #{} ({}): {e}", record.campaign_id, record.seq, record.code));
                    }
                }
            }
        }
        done.cursor = next;
        if done.cursor.is_none() || done.sent + done.failed >= settings.max_records {
            break;
        }
    }
    metrics::counter!(crate::telemetry::RECONCILED, "result" => "sent").increment(done.sent as u64);
    metrics::counter!(crate::telemetry::RECONCILED, "result" => "failed").increment(done.failed as u64);
    done.oldest = store.oldest_unledgered().await?;
    let age = done.oldest.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
    metrics::gauge!(crate::telemetry::OLDEST_UNLEDGERED).set(age);
    Ok(done)
}

/// Failed sends named in a run's report (the caller logs them; the count has them all).
const MAX_REPORTED_ERRORS: usize = 10;

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
