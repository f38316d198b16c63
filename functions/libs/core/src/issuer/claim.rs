//! The claim path: refusals from the cache, everything else decided by the store.

use time::OffsetDateTime;

use super::{ClaimOutcome, Issuer, IssuerError};
use crate::ports::{StoreClaim, StoreError};
use crate::{CampaignId, Coupon, CouponCode, Status, UserId, truncate_to_millis};

impl Issuer {
    /// One claim by `user` without a ticket: for campaigns that need none.
    pub async fn claim(
        &self,
        id: &CampaignId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<ClaimOutcome, IssuerError> {
        self.claim_with_ticket(id, user, None, now).await
    }

    /// One claim by `user`. `issued` only comes back once the coupon is durable; every refusal
    /// that can be told from memory is told without a store write. The ticket is checked (one
    /// hash) only once the claim would reach the store: a refusal told from memory needs none,
    /// and a winner asking again after sell-out or close still gets their coupon back.
    pub async fn claim_with_ticket(
        &self,
        id: &CampaignId,
        user: &UserId,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<ClaimOutcome, IssuerError> {
        let entry = self.entry(id, now).await?;
        match entry.campaign.window_at(now) {
            Status::Scheduled => return Ok(ClaimOutcome::NotOpen),
            // A winner retrying after close or sell-out still gets their coupon back (invariant 2).
            Status::Closed => return self.existing_or(id, user, ClaimOutcome::Closed).await,
            _ if entry.answers_sold_out(self.config.sold_out_ttl, self.clock.now()) => {
                return self.existing_or(id, user, ClaimOutcome::SoldOut).await;
            }
            _ => {}
        }
        // A cheap filter against this instance's copy (final once opened), so a flood of bad
        // tickets never reaches the store; the store checks again against its own terms.
        entry.campaign.check_ticket(user, ticket)?;
        let code = CouponCode::generate();
        let decided = match self.claims.claim_with_ticket(id, user, code, ticket, truncate_to_millis(now)).await {
            Err(StoreError::NotFound) => {
                self.remember_unknown(id);
                return Err(IssuerError::NotFound);
            }
            // The claim may have landed (a timeout after the write): the user's claim says. A
            // coupon with this attempt's code is this attempt's issue; another code, an earlier
            // one's. Nothing found: not (yet) applied, and a retry cannot issue a second coupon.
            Err(StoreError::Unknown(e)) => match self.claims.coupon_of(id, user).await? {
                Some(c) if c.code == code => StoreClaim::Issued(c),
                Some(c) => StoreClaim::Existing(c),
                None => return Err(IssuerError::Store(StoreError::Unknown(e))),
            },
            other => other?,
        };
        Ok(match decided {
            StoreClaim::Issued(c) => {
                entry.saw_issued(c.seq, self.clock.now());
                ClaimOutcome::Issued(c)
            }
            StoreClaim::Existing(c) => ClaimOutcome::AlreadyIssued(c),
            StoreClaim::SoldOut => {
                entry.saw_sold_out(self.clock.now());
                entry.remaining.set(0.0);
                ClaimOutcome::SoldOut
            }
            // Our copy said open; the store's did not (edited elsewhere, or clocks apart). The
            // store is right: re-read on the next request.
            StoreClaim::NotOpen => {
                self.forget(id);
                ClaimOutcome::NotOpen
            }
            StoreClaim::Closed => {
                self.forget(id);
                ClaimOutcome::Closed
            }
            // The stored terms ask for another ticket than our copy did: our copy is behind.
            StoreClaim::Ticket(e) => {
                self.forget(id);
                return Err(IssuerError::Ticket(e));
            }
        })
    }

    async fn existing_or(
        &self,
        id: &CampaignId,
        user: &UserId,
        otherwise: ClaimOutcome,
    ) -> Result<ClaimOutcome, IssuerError> {
        Ok(match self.claims.coupon_of(id, user).await? {
            Some(c) => ClaimOutcome::AlreadyIssued(c),
            None => otherwise,
        })
    }

    pub async fn coupon_of(
        &self,
        id: &CampaignId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<Option<Coupon>, IssuerError> {
        self.entry(id, now).await?;
        Ok(self.claims.coupon_of(id, user).await?)
    }
}
