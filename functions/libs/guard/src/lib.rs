//! `Guarded<S>`: any store adapter behind admission, a timeout per call and a circuit breaker,
//! so a slow or failing store costs its callers milliseconds, not their connections.
//!
//! The failure it guards against: a store's connection pool fills, every call waits 30 s, and
//! the service goes down with it. Here a call that cannot start at once waits briefly in a short
//! queue or is shed (`Overloaded`); a call that starts gets `call_timeout`; and when half of the
//! last 100 calls failed, the breaker answers `Unavailable` at once for 5 s, then lets 10 probes
//! through and closes again if they succeed (resilience4j's usual count-based settings).

mod breaker;
#[cfg(feature = "testkit")]
pub mod faulty;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use firstcome_core::{
    Campaign, CampaignId, CampaignStore, ClaimStore, Coupon, CouponCode, EndOutcome, IssuanceRecord, LedgerStore,
    LedgerWrite, StoreClaim, StoreError, UserId,
};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, SemaphorePermit};

pub use breaker::{Breaker, BreakerConfig, BreakerState};

/// How much of the store one instance may use at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Store calls in flight at once.
    pub max_in_flight: usize,
    /// Calls that may wait for a slot; one more is shed at once.
    pub max_queued: usize,
    /// Longest wait for a slot before the call is shed.
    pub queue_wait: Duration,
    /// Longest a started write may take. A write that runs out has an unknown outcome.
    pub call_timeout: Duration,
    /// Longest a started read may take. Shorter than a write's: a claim makes up to two reads
    /// around its write (the campaign, then the claim item when the write's outcome is unknown),
    /// and the three together must fit in the request's own deadline.
    pub read_timeout: Duration,
    pub breaker: BreakerConfig,
}

impl GuardConfig {
    /// The local server: the embedded store commits in about a millisecond, so a second is
    /// already a stall.
    pub fn local() -> Self {
        Self {
            max_in_flight: 2048,
            max_queued: 2048,
            queue_wait: Duration::from_millis(100),
            call_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
        }
    }

    /// A Lambda container (one request at a time, so admission rarely matters): DynamoDB's claim
    /// keeps retrying contended shards for up to 3 s by itself, so a write gets a little more;
    /// a consistent read takes milliseconds, so 1.5 s is already a brownout. A claim's worst
    /// case (read, write, read back) is `claim_budget`, which must leave the request deadline
    /// and the function's timeout a margin.
    pub fn lambda() -> Self {
        Self { call_timeout: Duration::from_secs(4), read_timeout: Duration::from_millis(1500), ..Self::local() }
    }

    /// The longest one claim can spend in store calls: the campaign read, the claim, and the
    /// read of the claim item after an unknown outcome.
    pub fn claim_budget(&self) -> Duration {
        self.read_timeout * 2 + self.call_timeout
    }
}

/// Why the guard answered instead of the store.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("the store's circuit breaker is open (too many recent failures)")]
    Open,
    #[error("store call {op} took longer than {after:?}")]
    TimedOut { op: &'static str, after: Duration },
}

/// Whether a timed-out call may have changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Read,
    Write,
}

/// A store behind admission, timeouts and a breaker. Implements the same ports as what it wraps.
pub struct Guarded<S> {
    inner: S,
    config: GuardConfig,
    slots: Semaphore,
    waiting: AtomicUsize,
    breaker: Breaker,
    op_seconds: Vec<metrics::Histogram>,
}

/// Every store operation the guard times; a name not listed is timed as `other`.
const OPS: [&str; 12] = [
    "insert_campaign",
    "update_campaign",
    "end_campaign",
    "campaign",
    "campaigns",
    "claim",
    "coupon_of",
    "issued",
    "coupons",
    "append",
    "ledger_written",
    "other",
];

impl<S> Guarded<S> {
    pub fn new(inner: S, config: GuardConfig) -> Self {
        Self {
            inner,
            slots: Semaphore::new(config.max_in_flight),
            waiting: AtomicUsize::new(0),
            breaker: Breaker::new(config.breaker),
            op_seconds: OPS
                .iter()
                .map(|op| metrics::histogram!(firstcome_core::telemetry::STORE_SECONDS, "op" => *op))
                .collect(),
            config,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The latency histogram of `op`, registered once (every loser's "do I hold a coupon?" is a
    /// guarded call: a registry lookup each would be a cost per request).
    fn seconds(&self, op: &'static str) -> &metrics::Histogram {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
        &self.op_seconds[i]
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// A slot at once, or after a short wait in a bounded queue, or `Overloaded`.
    async fn admit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        if let Ok(slot) = self.slots.try_acquire() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Overloaded);
        }
        let slot = tokio::time::timeout(self.config.queue_wait, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(StoreError::Overloaded),
        }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        effect: Effect,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        use firstcome_core::telemetry::STORE_ERRORS;
        let failed = |kind: &'static str| metrics::counter!(STORE_ERRORS, "op" => op, "kind" => kind).increment(1);
        // An open breaker answers before anything queues.
        let Some(ticket) = self.breaker.admit() else {
            failed("breaker_open");
            return Err(StoreError::unavailable(GuardError::Open));
        };
        let _slot = self.admit().await.inspect_err(|_| failed("overloaded"))?;
        let after = match effect {
            Effect::Read => self.config.read_timeout,
            Effect::Write => self.config.call_timeout,
        };
        // One clock read for both the deadline and the latency (`timeout` would read it again).
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout_at(started + after, work).await;
        self.seconds(op).record(started.elapsed().as_secs_f64());
        match result {
            Ok(result) => {
                let failure = result.as_ref().err().filter(|e| e.is_failure());
                if let Some(e) = failure {
                    failed(if matches!(e, StoreError::Unknown(_)) { "unknown" } else { "unavailable" });
                }
                ticket.record(failure.is_some());
                result
            }
            Err(_) => {
                failed("timeout");
                ticket.record(true);
                let e = GuardError::TimedOut { op, after };
                tracing::warn!(error = %e, "store call timed out");
                Err(match effect {
                    Effect::Read => StoreError::unavailable(e),
                    Effect::Write => StoreError::Unknown(e.into()),
                })
            }
        }
    }
}

#[async_trait]
impl<S: CampaignStore> CampaignStore for Guarded<S> {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        self.call("insert_campaign", Effect::Write, self.inner.insert_campaign(campaign)).await
    }

    async fn update_campaign(
        &self,
        next: &Campaign,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.call("update_campaign", Effect::Write, self.inner.update_campaign(next, expected_version, now)).await
    }

    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        self.call("end_campaign", Effect::Write, self.inner.end_campaign(id, now)).await
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        self.call("campaign", Effect::Read, self.inner.campaign(id)).await
    }

    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        self.call("campaigns", Effect::Read, self.inner.campaigns(after, limit)).await
    }
}

#[async_trait]
impl<S: ClaimStore> ClaimStore for Guarded<S> {
    async fn claim_with_ticket(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.call("claim", Effect::Write, self.inner.claim_with_ticket(campaign, user, code, ticket, now)).await
    }

    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.call("coupon_of", Effect::Read, self.inner.coupon_of(campaign, user)).await
    }

    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        self.call("issued", Effect::Read, self.inner.issued(campaign)).await
    }

    async fn coupons(&self, campaign: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        self.call("coupons", Effect::Read, self.inner.coupons(campaign, after, limit)).await
    }
}

#[async_trait]
impl<S: LedgerStore> LedgerStore for Guarded<S> {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        self.call("append", Effect::Write, self.inner.append(record)).await
    }

    async fn ledger_written(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        self.call("ledger_written", Effect::Read, self.inner.ledger_written(campaign)).await
    }
}
