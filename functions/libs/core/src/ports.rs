//! Store ports: the narrow traits the engine and the ledger consumer need. Adapters are named
//! by technology (`SqliteStore`, later `DynamoClaimStore`) and must all pass `testkit`'s contract suite.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Campaign, CampaignId, Coupon, CouponCode, IssuanceRecord, UserId};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key already exists (creating a campaign whose id is taken).
    #[error("already exists")]
    Conflict,
    /// The key does not exist (updating a campaign that was never created).
    #[error("not found")]
    NotFound,
    /// The store cannot answer right now; the caller may retry later.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
}

impl StoreError {
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
}

#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Durably stores a new campaign; `Conflict` if the id is taken.
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;
    /// Durably replaces a campaign; `NotFound` if it does not exist.
    async fn update_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;
    async fn campaigns(&self) -> Result<Vec<Campaign>, StoreError>;
}

/// What the store decided for one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreClaim {
    /// A new coupon, with `seq` = previous issued + 1, durable together with its outbox record.
    Issued(Coupon),
    /// The user already holds this coupon (possibly issued by a claim still being made durable:
    /// the store only answers once it is durable).
    Existing(Coupon),
    /// `campaign.total` coupons are out; nothing was written.
    SoldOut,
}

#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Atomically: the user's existing coupon, or a new one made from `code` and `issued_at`
    /// while stock remains, or `SoldOut`. Returns only once the outcome is durable.
    async fn claim(
        &self,
        campaign: &Campaign,
        user: &UserId,
        code: CouponCode,
        issued_at: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError>;
    /// The user's coupon for this campaign, if any (a read; never writes).
    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError>;
    /// How many coupons the campaign has issued.
    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError>;
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
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` undelivered records, oldest first.
    async fn pending(&self, limit: usize) -> Result<Vec<IssuanceRecord>, StoreError>;
    /// Marks a record delivered; acknowledging twice is harmless.
    async fn acknowledge(&self, record: &IssuanceRecord) -> Result<(), StoreError>;
}
