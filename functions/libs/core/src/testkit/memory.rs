//! `MemoryStore`: every port in memory, behind one mutex. The reference adapter: it states the
//! contract in the fewest lines, runs the engine's tests without any database, and is what
//! the API tests use. Not durable, so never a product store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::ports::{CampaignStore, ClaimStore, EndOutcome, LedgerStore, LedgerWrite, Outbox, StoreClaim, StoreError};
use crate::{Campaign, CampaignId, Coupon, CouponCode, IssuanceRecord, Status, UserId};

struct Stored {
    campaign: Campaign,
    winners: HashMap<UserId, Coupon>,
}

#[derive(Default)]
struct State {
    campaigns: BTreeMap<CampaignId, Stored>,
    /// Undelivered records by order of issue.
    outbox: BTreeMap<u64, IssuanceRecord>,
    next_outbox: u64,
    ledger: HashMap<CouponCode, IssuanceRecord>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CampaignStore for MemoryStore {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.campaigns.contains_key(&campaign.id) {
            return Err(StoreError::Conflict);
        }
        st.campaigns.insert(campaign.id.clone(), Stored { campaign: campaign.clone(), winners: HashMap::new() });
        Ok(())
    }

    async fn update_campaign(&self, next: &Campaign, expected: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        let mut st = self.lock();
        let stored = st.campaigns.get_mut(&next.id).ok_or(StoreError::NotFound)?;
        if stored.campaign.version != expected {
            return Err(StoreError::VersionMismatch { current: stored.campaign.version });
        }
        if stored.campaign.window_at(now) != Status::Scheduled || !stored.winners.is_empty() {
            return Err(StoreError::Frozen);
        }
        stored.campaign = next.clone();
        Ok(())
    }

    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        let mut st = self.lock();
        let stored = st.campaigns.get_mut(id).ok_or(StoreError::NotFound)?;
        let outcome = stored.campaign.end_at(now);
        if let EndOutcome::Ended(c) = &outcome {
            stored.campaign = c.clone();
        }
        Ok(outcome)
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        Ok(self.lock().campaigns.get(id).map(|s| s.campaign.clone()))
    }

    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        let st = self.lock();
        let range = match after {
            Some(a) => st.campaigns.range::<CampaignId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => st.campaigns.range::<CampaignId, _>(..),
        };
        Ok(range.take(limit).map(|(_, s)| s.campaign.clone()).collect())
    }
}

#[async_trait]
impl ClaimStore for MemoryStore {
    async fn claim_with_ticket(
        &self,
        id: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        let mut st = self.lock();
        let State { campaigns, outbox, next_outbox, .. } = &mut *st;
        let stored = campaigns.get_mut(id).ok_or(StoreError::NotFound)?;
        if let Some(c) = stored.winners.get(user) {
            return Ok(StoreClaim::Existing(c.clone()));
        }
        match stored.campaign.window_at(now) {
            Status::Scheduled => return Ok(StoreClaim::NotOpen),
            Status::Closed => return Ok(StoreClaim::Closed),
            _ => {}
        }
        let issued = stored.winners.len() as u32;
        if issued >= stored.campaign.total {
            return Ok(StoreClaim::SoldOut);
        }
        if let Err(e) = stored.campaign.check_ticket(user, ticket) {
            return Ok(StoreClaim::Ticket(e));
        }
        let coupon = stored.campaign.coupon_for(user.clone(), code, issued + 1, now);
        stored.winners.insert(user.clone(), coupon.clone());
        outbox.insert(*next_outbox, IssuanceRecord::new(&stored.campaign, &coupon));
        *next_outbox += 1;
        Ok(StoreClaim::Issued(coupon))
    }

    async fn coupon_of(&self, id: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        Ok(self.lock().campaigns.get(id).and_then(|s| s.winners.get(user).cloned()))
    }

    async fn issued(&self, id: &CampaignId) -> Result<u64, StoreError> {
        Ok(self.lock().campaigns.get(id).map_or(0, |s| s.winners.len() as u64))
    }

    async fn coupons(&self, id: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let st = self.lock();
        let Some(stored) = st.campaigns.get(id) else { return Ok(Vec::new()) };
        let mut out: Vec<Coupon> = stored.winners.values().filter(|c| c.seq > after).cloned().collect();
        out.sort_unstable_by_key(|c| c.seq);
        out.truncate(limit);
        Ok(out)
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        let mut st = self.lock();
        if st.ledger.contains_key(&record.code) {
            return Ok(LedgerWrite::Duplicate);
        }
        st.ledger.insert(record.code, record.clone());
        Ok(LedgerWrite::Inserted)
    }

    async fn ledger_written(&self, id: &CampaignId) -> Result<u64, StoreError> {
        Ok(self.lock().ledger.values().filter(|r| &r.campaign_id == id).count() as u64)
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn pending(&self, limit: usize) -> Result<Vec<IssuanceRecord>, StoreError> {
        Ok(self.lock().outbox.values().take(limit).cloned().collect())
    }

    async fn acknowledge(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        self.lock().outbox.retain(|_, r| r.code != record.code);
        Ok(())
    }
}
