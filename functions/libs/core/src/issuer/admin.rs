//! Marketing's reads and edits: exact figures from the store, decisions by the store.

use time::OffsetDateTime;

use super::{CampaignView, Issuer, IssuerError, view_of};
use crate::ports::{EndOutcome, StoreError};
use crate::{Campaign, CampaignChanges, CampaignId, Coupon, Status, truncate_to_millis};

impl Issuer {
    /// One campaign as marketing sees it: read from the store (exact, not cached), with how many
    /// issuance records reached the ledger.
    pub async fn admin_get(&self, id: &CampaignId, now: OffsetDateTime) -> Result<(CampaignView, u64), IssuerError> {
        let campaign = self.campaigns.campaign(id).await?.ok_or(IssuerError::NotFound)?;
        self.admin_view(campaign, now).await
    }

    /// A page of campaigns (by id, after `after`) as marketing sees them.
    pub async fn admin_page(
        &self,
        after: Option<&CampaignId>,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<(CampaignView, u64)>, IssuerError> {
        let mut out = Vec::new();
        for c in self.campaigns.campaigns(after, limit).await? {
            out.push(self.admin_view(c, now).await?);
        }
        Ok(out)
    }

    async fn admin_view(&self, campaign: Campaign, now: OffsetDateTime) -> Result<(CampaignView, u64), IssuerError> {
        let issued = self.claims.issued(&campaign.id).await?;
        let written = self.ledger.ledger_written(&campaign.id).await?;
        Ok((view_of(campaign, issued, now), written))
    }

    /// Ends an open campaign now (marketing's "end now"): the store decides, under the claims'
    /// lock, so no claim is issued after the answer.
    pub async fn end(&self, id: &CampaignId, now: OffsetDateTime) -> Result<Campaign, IssuerError> {
        match self.campaigns.end_campaign(id, truncate_to_millis(now)).await {
            Ok(EndOutcome::Ended(c)) => {
                self.put(c.clone(), now);
                Ok(c)
            }
            Ok(EndOutcome::NotOpen) => Err(IssuerError::NotOpenYet),
            Ok(EndOutcome::AlreadyClosed(_)) => Err(IssuerError::AlreadyClosed),
            Err(StoreError::NotFound) => Err(IssuerError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// How many coupons the campaign has issued (the store's count, exact), for checking that a
    /// winners list read from an index that may lag is complete.
    pub async fn issued(&self, id: &CampaignId) -> Result<u64, IssuerError> {
        self.campaigns.campaign(id).await?.ok_or(IssuerError::NotFound)?;
        Ok(self.claims.issued(id).await?)
    }

    /// A page of a campaign's winners (by seq, after `after`), for fulfilment.
    pub async fn coupons(&self, id: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, IssuerError> {
        self.campaigns.campaign(id).await?.ok_or(IssuerError::NotFound)?;
        Ok(self.claims.coupons(id, after, limit).await?)
    }

    pub async fn create(&self, campaign: Campaign, now: OffsetDateTime) -> Result<Campaign, IssuerError> {
        match self.campaigns.insert_campaign(&campaign).await {
            Err(StoreError::Conflict) => return Err(IssuerError::Conflict),
            other => other?,
        }
        self.put(campaign.clone(), now);
        Ok(campaign)
    }

    /// Edits a campaign that has not opened and has issued nothing, if it is still at
    /// `expected_version` (`None`: whatever version is stored now). The store decides, so two
    /// instances editing at once cannot both win, and no edit lands after a coupon was issued.
    pub async fn update(
        &self,
        id: &CampaignId,
        changes: CampaignChanges,
        expected_version: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<Campaign, IssuerError> {
        let current = self.campaigns.campaign(id).await?.ok_or(IssuerError::NotFound)?;
        // The store re-checks both conditions under its lock; these are not redundant. `next` is
        // built from `current`, so the store must be asked for `current.version`: passing the
        // caller's version instead would let an edit built on v1 land on a v2 made meanwhile.
        // And a frozen campaign answers `already_open` before any complaint about the edit itself.
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(IssuerError::VersionConflict { current: current.version });
        }
        if current.window_at(now) != Status::Scheduled {
            return Err(IssuerError::AlreadyOpen);
        }
        let next = changes.apply(&current, now)?;
        match self.campaigns.update_campaign(&next, current.version, now).await {
            Ok(()) => {}
            Err(StoreError::VersionMismatch { current }) => return Err(IssuerError::VersionConflict { current }),
            Err(StoreError::Frozen) => return Err(IssuerError::AlreadyOpen),
            Err(StoreError::NotFound) => return Err(IssuerError::NotFound),
            Err(e) => return Err(e.into()),
        }
        self.put(next.clone(), now);
        Ok(next)
    }
}
