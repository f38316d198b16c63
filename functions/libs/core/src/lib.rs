//! firstcome's domain core: campaigns, coupons, the claim engine (`Issuer`) and the store ports it needs.
//!
//! Nothing here knows about AWS, HTTP or tokio: the engine is driven by whoever owns a runtime,
//! and every store is reached through the narrow traits in [`ports`].

pub mod campaign;
pub mod coupon;
pub mod issuer;
pub mod ledger;
pub mod ports;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use campaign::{
    Campaign, CampaignChanges, CampaignId, CouponTemplate, NewCampaign, Status, TicketError, window_status,
};
pub use coupon::{Coupon, CouponCode, UserId};
pub use firstcome_ticket as ticket;
pub use issuer::{CacheConfig, CampaignView, ClaimOutcome, Clock, Issuer, IssuerError, SystemClock};
pub use ledger::{
    IssuanceRecord, LedgerError, ReconcileSettings, Reconciled, consume_issuance, deliver_issuance, reconcile,
};
pub use ports::{
    CampaignStore, ClaimStore, EndOutcome, IssuanceQueue, LedgerStore, LedgerWrite, Outbox, StoreClaim, StoreError,
    Unledgered,
};

/// A field-level validation failure: which input field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Timestamps are kept at millisecond precision everywhere so that what a store writes and
/// reads back is bit-for-bit the value that was answered to the user.
pub fn truncate_to_millis(t: time::OffsetDateTime) -> time::OffsetDateTime {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("in range: derived from a valid timestamp")
}
