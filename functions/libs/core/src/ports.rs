//! Store ports: the narrow traits the engine and the ledger consumer need. Adapters are named
//! by technology (`SqliteStore`, later `DynamoClaimStore`) and pass `testkit`'s contract suites,
//! one suite per port, so a store without a polling outbox (DynamoDB + SQS) runs the ones that apply.
//!
//! Many engines (one per Lambda container) share one store, so every decision that must hold
//! across them is the store's: stock, window and one-coupon-per-user for claims; version, window
//! and "nothing issued yet" for edits. Callers pass ids and the time, never their copy of a campaign.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Campaign, CampaignId, Coupon, CouponCode, IssuanceRecord, TicketError, UserId};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key already exists (creating a campaign whose id is taken).
    #[error("already exists")]
    Conflict,
    /// The campaign does not exist.
    #[error("not found")]
    NotFound,
    /// An edit was based on a version that is no longer the stored one.
    #[error("the campaign is at version {current}")]
    VersionMismatch { current: u64 },
    /// An edit reached a campaign that has opened or issued a coupon: its terms are frozen.
    #[error("the campaign has opened or issued coupons")]
    Frozen,
    /// The store cannot answer right now; the caller may retry later.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// A write whose outcome is unknown (it timed out after it may have been applied): only a
    /// read can tell. Never to be reported as "not done" without that read.
    #[error("outcome unknown")]
    Unknown(#[source] BoxError),
    /// Not attempted: more calls in flight than this instance admits. Shed, not queued.
    #[error("too many calls in flight")]
    Overloaded,
    /// The store answered, but the items were too contended to finish in time (races lost to
    /// other writers, throttling): overload, retried by the client later, not a failing store.
    #[error("the store's items are contended")]
    Contended(#[source] BoxError),
}

impl StoreError {
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }

    /// Whether this says the store is failing (what a circuit breaker counts), as opposed to
    /// an answer about the data (not found, conflict...) or a call that was never made.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Unknown(_))
    }
}

#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Durably stores a new campaign; `Conflict` if the id is taken.
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;
    /// Durably replaces the campaign with `next` (whose `version` is `expected_version + 1`) only
    /// if the stored version is `expected_version` (`VersionMismatch`), the stored campaign is
    /// still scheduled at `now` and has issued nothing (`Frozen`). Decided under the same lock or
    /// condition as claims, so no edit can land after a coupon was issued on the old terms.
    async fn update_campaign(
        &self,
        next: &Campaign,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Ends an open campaign at `now`: under the claims' lock or condition, if the stored
    /// campaign has opened and is not yet closed, its `closes_at` becomes `now` and its version
    /// goes up by one; stock and coupons are untouched. Every claim decided after this is `Closed`.
    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError>;
    /// One campaign as stored, if it exists.
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError>;
    /// Up to `limit` campaigns ordered by id, starting after `after`.
    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError>;
}

/// What the store decided for an "end now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Ended: the campaign as now stored.
    Ended(Campaign),
    /// It has not opened yet (edit or reschedule it instead); nothing was written.
    NotOpen,
    /// It was already closed (or ended); nothing was written.
    AlreadyClosed(Campaign),
}

/// What the store decided for one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreClaim {
    /// A new coupon, durable together with its ledger record (or whatever the store uses to
    /// guarantee the record reaches the ledger). `seq` is unique within 1..=total.
    Issued(Coupon),
    /// The user already holds this coupon (possibly issued by a claim still being made durable:
    /// the store only answers once it is durable).
    Existing(Coupon),
    /// The stored stock is gone; nothing was written.
    SoldOut,
    /// `now` is before the stored `opens_at`; nothing was written.
    NotOpen,
    /// `now` is at or after the stored `closes_at`; nothing was written.
    Closed,
    /// The claim would have been issued, but its ticket does not meet the *stored* terms
    /// (`pow_bits`, `nonce`): an engine's copy may be a version behind. Nothing was written.
    Ticket(TicketError),
}

#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Atomically, against the *stored* campaign: the user's existing coupon; else `NotOpen` /
    /// `Closed` by the stored window at `now`; else `SoldOut` once stored stock is gone; else
    /// `Ticket` if `ticket` does not solve the stored campaign's puzzle (when it asks for one);
    /// else a new coupon made from `code`, issued at `now`. `NotFound` for an unknown campaign.
    /// Returns only once the outcome is durable. A store that takes time to decide (retries)
    /// checks the window at the time of each attempt (`now` plus the time spent), never at
    /// `now` alone: a claim still retrying after an "end now" must find it closed.
    async fn claim_with_ticket(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError>;
    /// A claim without a ticket (for campaigns that need none).
    async fn claim(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.claim_with_ticket(campaign, user, code, None, now).await
    }
    /// The user's coupon for this campaign, if any (a read; never writes).
    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError>;
    /// How many coupons the campaign has issued (0 for an unknown campaign).
    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError>;
    /// Up to `limit` durable coupons of the campaign with `seq > after`, by `seq` (the winners
    /// list, paged). Empty for an unknown campaign.
    async fn coupons(&self, campaign: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError>;
}

/// Whether a ledger append wrote a new row or found the record already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerWrite {
    Inserted,
    Duplicate,
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Idempotent by coupon code: a second append of the same record is `Duplicate`, not a second row.
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError>;
    async fn ledger_written(&self, campaign: &CampaignId) -> Result<u64, StoreError>;
}

/// Issuance records written in the same transaction as their claims, waiting to reach the ledger.
/// Only stores that are polled for their records have one (SQLite); DynamoDB hands them to SQS.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` undelivered records, oldest first.
    async fn pending(&self, limit: usize) -> Result<Vec<IssuanceRecord>, StoreError>;
    /// Marks a record delivered; acknowledging twice is harmless.
    async fn acknowledge(&self, record: &IssuanceRecord) -> Result<(), StoreError>;
}

/// Where issuance records go once their claim is durable, on the way to the ledger (SQS on AWS).
/// A send may fail or never happen (the function dies first): the store's `Outbox` still holds
/// the record, and `reconcile` sends it again, so sending is an optimisation, not the guarantee.
#[async_trait]
pub trait IssuanceQueue: Send + Sync {
    async fn send(&self, record: &IssuanceRecord) -> Result<(), StoreError>;
    /// Sends several records, one result per record in order: a failed record never stops the
    /// others. A queue that can batch (SQS: 10 per request) overrides this.
    async fn send_batch(&self, records: &[IssuanceRecord]) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.send(r).await);
        }
        out
    }
}

/// Where the reconciler finds the records the ledger has not acknowledged (a store whose outbox
/// is not polled: DynamoDB's sparse `unledgered` index), a bounded page at a time.
#[async_trait]
pub trait Unledgered: Send + Sync {
    /// Up to `limit` unacknowledged records issued in `[from, before)` (from the beginning when
    /// `from` is `None`), continuing after `cursor` (an opaque string this store returned); and
    /// the cursor to continue from, `None` once everything was listed.
    async fn unledgered(
        &self,
        from: Option<OffsetDateTime>,
        before: OffsetDateTime,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<IssuanceRecord>, Option<String>), StoreError>;
    /// When the oldest unacknowledged record was issued; `None` when the ledger has everything.
    async fn oldest_unledgered(&self) -> Result<Option<OffsetDateTime>, StoreError>;
}

// A shared adapter is still the adapter: `Arc<S>` passes through, so decorators (the guard,
// fault injection) can wrap a store that other parts of the process also hold.
#[async_trait]
impl<S: CampaignStore + ?Sized> CampaignStore for std::sync::Arc<S> {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        (**self).insert_campaign(campaign).await
    }
    async fn update_campaign(&self, next: &Campaign, expected: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        (**self).update_campaign(next, expected, now).await
    }
    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        (**self).end_campaign(id, now).await
    }
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        (**self).campaign(id).await
    }
    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        (**self).campaigns(after, limit).await
    }
}

#[async_trait]
impl<S: ClaimStore + ?Sized> ClaimStore for std::sync::Arc<S> {
    async fn claim_with_ticket(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        (**self).claim_with_ticket(campaign, user, code, ticket, now).await
    }
    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        (**self).coupon_of(campaign, user).await
    }
    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        (**self).issued(campaign).await
    }
    async fn coupons(&self, campaign: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        (**self).coupons(campaign, after, limit).await
    }
}

#[async_trait]
impl<S: LedgerStore + ?Sized> LedgerStore for std::sync::Arc<S> {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        (**self).append(record).await
    }
    async fn ledger_written(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        (**self).ledger_written(campaign).await
    }
}
