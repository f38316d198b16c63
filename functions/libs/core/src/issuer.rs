//! The claim engine. It owns invariant 4 (fast fail from memory) and the campaign cache, and
//! delegates the atomic decision (stock, dedup, durability, outbox) to a [`ClaimStore`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::lock::Mutex;
use time::OffsetDateTime;

use crate::ports::{CampaignStore, ClaimStore, LedgerStore, StoreClaim, StoreError};
use crate::{
    Campaign, CampaignChanges, CampaignId, Coupon, CouponCode, Status, UserId, ValidationError, truncate_to_millis,
};

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
    #[error("the campaign has opened and can no longer be edited")]
    AlreadyOpen,
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A campaign as the public sees it at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignView {
    pub campaign: Campaign,
    pub issued: u64,
    pub remaining: u64,
    pub status: Status,
}

struct Cached {
    campaign: Campaign,
    /// Set once the store has answered `SoldOut`; from then on losers are answered without a
    /// store write (invariant 4). Never cleared: stock only goes down.
    sold_out: AtomicBool,
}

/// The claim engine: campaign metadata cached in memory, decisions delegated to the store.
pub struct Issuer {
    cache: RwLock<HashMap<CampaignId, Arc<Cached>>>,
    /// Serialises admin writes so two edits cannot both start from the same cached version.
    admin: Mutex<()>,
    campaigns: Arc<dyn CampaignStore>,
    claims: Arc<dyn ClaimStore>,
    ledger: Arc<dyn LedgerStore>,
}

impl Issuer {
    /// Builds the engine and warms the campaign cache from the store.
    pub async fn load(
        campaigns: Arc<dyn CampaignStore>,
        claims: Arc<dyn ClaimStore>,
        ledger: Arc<dyn LedgerStore>,
    ) -> Result<Self, StoreError> {
        let cache = campaigns
            .campaigns()
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(Cached { campaign: c, sold_out: AtomicBool::new(false) })))
            .collect();
        Ok(Self { cache: RwLock::new(cache), admin: Mutex::new(()), campaigns, claims, ledger })
    }

    fn cached(&self, id: &CampaignId) -> Option<Arc<Cached>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn put(&self, campaign: Campaign) {
        let entry = Arc::new(Cached { campaign, sold_out: AtomicBool::new(false) });
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(entry.campaign.id.clone(), entry);
    }

    /// One claim by `user`. `issued` only comes back once the coupon is durable; every other
    /// outcome that can be told from memory is told without a store write.
    pub async fn claim(
        &self,
        id: &CampaignId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<ClaimOutcome, IssuerError> {
        let entry = self.cached(id).ok_or(IssuerError::NotFound)?;
        match entry.campaign.window_at(now) {
            Status::Scheduled => return Ok(ClaimOutcome::NotOpen),
            // A winner retrying after close or sell-out still gets their coupon back (invariant 2).
            Status::Closed => return self.existing_or(&entry, user, ClaimOutcome::Closed).await,
            _ if entry.sold_out.load(Ordering::Relaxed) => {
                return self.existing_or(&entry, user, ClaimOutcome::SoldOut).await;
            }
            _ => {}
        }
        let decided = self.claims.claim(&entry.campaign, user, CouponCode::generate(), truncate_to_millis(now)).await?;
        Ok(match decided {
            StoreClaim::Issued(c) => ClaimOutcome::Issued(c),
            StoreClaim::Existing(c) => ClaimOutcome::AlreadyIssued(c),
            StoreClaim::SoldOut => {
                entry.sold_out.store(true, Ordering::Relaxed);
                ClaimOutcome::SoldOut
            }
        })
    }

    async fn existing_or(
        &self,
        entry: &Cached,
        user: &UserId,
        otherwise: ClaimOutcome,
    ) -> Result<ClaimOutcome, IssuerError> {
        Ok(match self.claims.coupon_of(&entry.campaign.id, user).await? {
            Some(c) => ClaimOutcome::AlreadyIssued(c),
            None => otherwise,
        })
    }

    pub async fn coupon_of(&self, id: &CampaignId, user: &UserId) -> Result<Option<Coupon>, IssuerError> {
        let entry = self.cached(id).ok_or(IssuerError::NotFound)?;
        Ok(self.claims.coupon_of(&entry.campaign.id, user).await?)
    }

    pub async fn view(&self, id: &CampaignId, now: OffsetDateTime) -> Result<CampaignView, IssuerError> {
        let entry = self.cached(id).ok_or(IssuerError::NotFound)?;
        self.view_of(entry.campaign.clone(), now).await
    }

    async fn view_of(&self, campaign: Campaign, now: OffsetDateTime) -> Result<CampaignView, IssuerError> {
        let issued = self.claims.issued(&campaign.id).await?;
        Ok(CampaignView {
            remaining: u64::from(campaign.total).saturating_sub(issued),
            status: campaign.status_at(now, issued),
            issued,
            campaign,
        })
    }

    /// All campaigns (newest opening first) with how many issuance records reached the ledger.
    pub async fn list(&self, now: OffsetDateTime) -> Result<Vec<(CampaignView, u64)>, IssuerError> {
        let mut campaigns: Vec<Campaign> =
            self.cache.read().unwrap_or_else(|p| p.into_inner()).values().map(|e| e.campaign.clone()).collect();
        campaigns.sort_by(|a, b| b.opens_at.cmp(&a.opens_at).then_with(|| a.id.cmp(&b.id)));
        let mut out = Vec::with_capacity(campaigns.len());
        for c in campaigns {
            out.push(self.admin_view(c, now).await?);
        }
        Ok(out)
    }

    pub async fn admin_get(&self, id: &CampaignId, now: OffsetDateTime) -> Result<(CampaignView, u64), IssuerError> {
        let entry = self.cached(id).ok_or(IssuerError::NotFound)?;
        self.admin_view(entry.campaign.clone(), now).await
    }

    async fn admin_view(&self, campaign: Campaign, now: OffsetDateTime) -> Result<(CampaignView, u64), IssuerError> {
        let written = self.ledger.ledger_written(&campaign.id).await?;
        Ok((self.view_of(campaign, now).await?, written))
    }

    pub async fn create(&self, campaign: Campaign) -> Result<Campaign, IssuerError> {
        let _guard = self.admin.lock().await;
        match self.campaigns.insert_campaign(&campaign).await {
            Err(StoreError::Conflict) => return Err(IssuerError::Conflict),
            other => other?,
        }
        self.put(campaign.clone());
        Ok(campaign)
    }

    /// Edits a campaign that has not opened yet. Once open, its terms are what people raced
    /// for, so they are frozen.
    pub async fn update(
        &self,
        id: &CampaignId,
        changes: CampaignChanges,
        now: OffsetDateTime,
    ) -> Result<Campaign, IssuerError> {
        let _guard = self.admin.lock().await;
        let entry = self.cached(id).ok_or(IssuerError::NotFound)?;
        if entry.campaign.window_at(now) != Status::Scheduled {
            return Err(IssuerError::AlreadyOpen);
        }
        let next = changes.apply(&entry.campaign)?;
        self.campaigns.update_campaign(&next).await?;
        self.put(next.clone());
        Ok(next)
    }
}
