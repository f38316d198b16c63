//! `Faulty<S>`: a real store that stalls or fails on command, for fault tests (the store's own
//! behaviour is untouched: a "slow answer" is applied first and answered late, like a network
//! that loses time after the write).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use firstcome_core::{
    Campaign, CampaignId, CampaignStore, ClaimStore, Coupon, CouponCode, EndOutcome, IssuanceRecord, LedgerStore,
    LedgerWrite, StoreClaim, StoreError, UserId,
};
use parking_lot::Mutex;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every call waits this long before reaching the store.
    Stall(Duration),
    /// Every call reaches the store, then its answer waits this long.
    SlowAnswer(Duration),
    /// Claims reach the store, then their answers wait this long; every other call is normal
    /// (so the claim's outcome can be read back while its answer is lost).
    SlowClaimAnswers(Duration),
    /// Every call fails at once without reaching the store.
    Fail,
    /// Every call is answered "contended" (lost races, throttling) without reaching the store.
    Contended,
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
pub struct Injected;

/// The switch a test holds.
#[derive(Clone, Default)]
pub struct FaultSwitch(Arc<Mutex<Option<Fault>>>);

impl FaultSwitch {
    pub fn set(&self, fault: Fault) {
        *self.0.lock() = Some(fault);
    }

    fn get(&self) -> Fault {
        self.0.lock().unwrap_or(Fault::None)
    }
}

pub struct Faulty<S> {
    inner: S,
    switch: FaultSwitch,
}

impl<S> Faulty<S> {
    pub fn new(inner: S) -> (Self, FaultSwitch) {
        let switch = FaultSwitch::default();
        (Self { inner, switch: switch.clone() }, switch)
    }

    /// `work` under the switch's fault; `claim` says whether it is a claim (the only call a
    /// `SlowClaimAnswers` fault slows).
    async fn around<T>(&self, claim: bool, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match self.switch.get() {
            Fault::None => work.await,
            Fault::SlowClaimAnswers(_) if !claim => work.await,
            Fault::Fail => Err(StoreError::unavailable(Injected)),
            Fault::Contended => Err(StoreError::Contended(Injected.into())),
            Fault::Stall(d) => {
                tokio::time::sleep(d).await;
                work.await
            }
            Fault::SlowAnswer(d) | Fault::SlowClaimAnswers(d) => {
                let answer = work.await;
                tokio::time::sleep(d).await;
                answer
            }
        }
    }
}

#[async_trait]
impl<S: CampaignStore> CampaignStore for Faulty<S> {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        self.around(false, self.inner.insert_campaign(campaign)).await
    }
    async fn update_campaign(&self, next: &Campaign, expected: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        self.around(false, self.inner.update_campaign(next, expected, now)).await
    }
    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        self.around(false, self.inner.end_campaign(id, now)).await
    }
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        self.around(false, self.inner.campaign(id)).await
    }
    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        self.around(false, self.inner.campaigns(after, limit)).await
    }
}

#[async_trait]
impl<S: ClaimStore> ClaimStore for Faulty<S> {
    async fn claim_with_ticket(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.around(true, self.inner.claim_with_ticket(campaign, user, code, ticket, now)).await
    }
    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.around(false, self.inner.coupon_of(campaign, user)).await
    }
    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        self.around(false, self.inner.issued(campaign)).await
    }
    async fn coupons(&self, campaign: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        self.around(false, self.inner.coupons(campaign, after, limit)).await
    }
}

#[async_trait]
impl<S: LedgerStore> LedgerStore for Faulty<S> {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        self.around(false, self.inner.append(record)).await
    }
    async fn ledger_written(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        self.around(false, self.inner.ledger_written(campaign)).await
    }
}
