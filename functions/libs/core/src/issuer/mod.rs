//! The claim engine: answers refusals (`not_open`, `closed`, `sold_out`) from a read-through
//! campaign cache and hands every decision that must hold across instances (stock, window,
//! dedup, durability, edits) to the stores. A stale copy can refuse wrongly for at most a TTL but
//! can never issue wrongly. The cache's rules, and why: docs/engine.md.
//!
//! `cache` holds what an instance remembers and the public views served from it, `claim` the
//! claim path, `admin` marketing's reads and edits (which go to the store).

mod admin;
mod cache;
mod claim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use crate::ports::{CampaignStore, ClaimStore, LedgerStore, StoreError};
use crate::{Campaign, CampaignId, Coupon, Status, TicketError, ValidationError};
use cache::Entry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Issued(Coupon),
    AlreadyIssued(Coupon),
    SoldOut,
    NotOpen,
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("campaign not found")]
    NotFound,
    #[error("a campaign with this id already exists")]
    Conflict,
    #[error("the campaign has opened or issued coupons; its terms can no longer change")]
    AlreadyOpen,
    #[error("the campaign is at version {current}; re-read it and apply the edit to that version")]
    VersionConflict { current: u64 },
    #[error("the campaign has not opened yet; reschedule or edit it instead of ending it")]
    NotOpenYet,
    #[error("the campaign is already closed")]
    AlreadyClosed,
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A campaign as seen at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignView {
    pub campaign: Campaign,
    pub issued: u64,
    pub remaining: u64,
    pub status: Status,
}

/// How long the engine trusts what it has read.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// A scheduled campaign is re-read after this (edits elsewhere reach this instance within
    /// it); so is the public list of campaigns.
    pub scheduled_ttl: Duration,
    /// An opened campaign is re-read after this (an early end elsewhere reaches this instance
    /// within it; until then the store answers `closed` for it anyway).
    pub opened_ttl: Duration,
    /// The public view's issued count is re-read after this.
    pub issued_ttl: Duration,
    /// An id the store did not know is answered `not_found` from memory for this long.
    pub unknown_ttl: Duration,
    /// At most this many unknown ids are remembered.
    pub unknown_capacity: usize,
    /// After the store said "sold out", losers are answered from memory for this long; then one
    /// claim asks the store again (the others still answered from memory), so a coupon a store
    /// took back after the sell-out (DynamoDB gives back allocations nobody recorded) goes to
    /// the next customer instead of staying unissued.
    pub sold_out_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            scheduled_ttl: Duration::from_secs(1),
            opened_ttl: Duration::from_secs(1),
            issued_ttl: Duration::from_secs(1),
            unknown_ttl: Duration::from_secs(1),
            unknown_capacity: 10_000,
            sold_out_ttl: Duration::from_secs(10),
        }
    }
}

/// The claim engine: campaign metadata cached in memory, decisions delegated to the store.
pub struct Issuer {
    config: CacheConfig,
    /// What the cache's ages are measured with.
    clock: Arc<dyn Clock>,
    cache: RwLock<HashMap<CampaignId, Arc<Entry>>>,
    unknown: Mutex<HashMap<CampaignId, Instant>>,
    campaigns: Arc<dyn CampaignStore>,
    claims: Arc<dyn ClaimStore>,
    ledger: Arc<dyn LedgerStore>,
    /// Ids of the campaigns not closed at the last listing, and when it was taken.
    listing: Mutex<Option<(Instant, Vec<CampaignId>)>>,
}

/// The monotonic clock the cache measures its ages with (the domain's time, `now`, is passed to
/// every call instead). Injected so that tests move it rather than sleep.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Campaigns read per store call while building the public list.
const LISTING_PAGE: usize = 200;

impl Issuer {
    /// The engine over one store that serves every port (as every adapter does), with the
    /// default cache. Nothing is read up front: campaigns are read on first use.
    pub fn with_store<S: CampaignStore + ClaimStore + LedgerStore + 'static>(store: Arc<S>) -> Self {
        Self::new(store.clone(), store.clone(), store, CacheConfig::default())
    }

    /// The same engine with another cache configuration (tests shorten its TTLs).
    pub fn with_cache(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// The same engine measuring its cache's ages with `clock` (tests: `testkit::ManualClock`).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the engine over separate ports (a test that puts one of them behind a fault, or the
    /// Lambdas, whose new coupons also go to SQS). Nothing is read up front.
    pub fn new(
        campaigns: Arc<dyn CampaignStore>,
        claims: Arc<dyn ClaimStore>,
        ledger: Arc<dyn LedgerStore>,
        config: CacheConfig,
    ) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
            cache: RwLock::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            campaigns,
            claims,
            ledger,
            listing: Mutex::new(None),
        }
    }

    /// How long ago `then` was, on the cache's clock.
    fn age(&self, then: Instant) -> Duration {
        self.clock.now().saturating_duration_since(then)
    }
}

fn view_of(campaign: Campaign, issued: u64, now: OffsetDateTime) -> CampaignView {
    CampaignView {
        remaining: u64::from(campaign.total).saturating_sub(issued),
        status: campaign.status_at(now, issued),
        issued,
        campaign,
    }
}
