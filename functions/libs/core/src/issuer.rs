//! The claim engine: answers refusals (`not_open`, `closed`, `sold_out`) from a read-through
//! campaign cache and hands every decision that must hold across instances (stock, window,
//! dedup, durability, edits) to the stores. A stale copy can refuse wrongly for at most a TTL but
//! can never issue wrongly. The cache's rules, and why: docs/engine.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use time::OffsetDateTime;

use crate::ports::{CampaignStore, ClaimStore, EndOutcome, LedgerStore, StoreClaim, StoreError};
use crate::{
    Campaign, CampaignChanges, CampaignId, Coupon, CouponCode, Status, TicketError, UserId, ValidationError,
    truncate_to_millis,
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

struct Entry {
    campaign: Campaign,
    fetched: Instant,
    /// Read from the store at or after `opens_at`: the store refuses edits from then on, so
    /// this copy is final.
    frozen: bool,
    /// When the store last answered `SoldOut` (or this instance last asked again); until
    /// `sold_out_ttl` after it, losers are answered without a store write (invariant 4). Per
    /// instance: each pays one store attempt after sell-out, and one per `sold_out_ttl` after.
    sold_out: Mutex<Option<Instant>>,
    /// Whoever sees the entry stale first re-reads it; the others keep serving the old copy.
    refreshing: AtomicBool,
    /// Held by the one reader that re-reads a copy which was read while scheduled once its
    /// `opens_at` has come: the others wait for that read instead of using the copy as open.
    opening: futures::lock::Mutex<()>,
    /// The public view's issued count and when it was read.
    issued: Mutex<Option<(u64, Instant)>>,
    issued_refreshing: AtomicBool,
    /// `firstcome_campaign_remaining{campaign}`: what this instance last learnt of the stock.
    remaining: metrics::Gauge,
}

impl Entry {
    fn new(campaign: Campaign, now: OffsetDateTime) -> Self {
        Self {
            frozen: now >= campaign.opens_at,
            fetched: Instant::now(),
            sold_out: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            opening: futures::lock::Mutex::new(()),
            issued: Mutex::new(None),
            issued_refreshing: AtomicBool::new(false),
            remaining: metrics::gauge!(crate::telemetry::REMAINING, "campaign" => campaign.id.as_str().to_owned()),
            campaign,
        }
    }

    /// Whether to answer "sold out" from memory: yes within `ttl` of the store saying so; once
    /// that is past, this caller asks the store again (and restarts the wait, so the others go
    /// on answering from memory meanwhile).
    fn answers_sold_out(&self, ttl: Duration) -> bool {
        let mut at = self.sold_out.lock();
        match *at {
            Some(t) if t.elapsed() < ttl => true,
            Some(_) => {
                *at = Some(Instant::now());
                false
            }
            None => false,
        }
    }

    fn saw_sold_out(&self) {
        *self.sold_out.lock() = Some(Instant::now());
    }

    /// A claim's answer tells us at least `seq` coupons exist: keeps this instance's view
    /// current during the rush without a read.
    fn saw_issued(&self, seq: u32) {
        let mut issued = self.issued.lock();
        let n = match &mut *issued {
            Some((n, _)) => {
                *n = (*n).max(u64::from(seq));
                *n
            }
            None => {
                *issued = Some((u64::from(seq), Instant::now()));
                u64::from(seq)
            }
        };
        self.saw_remaining(n);
    }

    fn saw_remaining(&self, issued: u64) {
        self.remaining.set(u64::from(self.campaign.total).saturating_sub(issued) as f64);
    }
}

/// Clears a "refreshing" flag when the refresh ends, however it ends.
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn try_refresh(flag: &AtomicBool) -> Option<Refreshing<'_>> {
    flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| Refreshing(flag))
}

/// The claim engine: campaign metadata cached in memory, decisions delegated to the store.
pub struct Issuer {
    config: CacheConfig,
    cache: RwLock<HashMap<CampaignId, Arc<Entry>>>,
    unknown: Mutex<HashMap<CampaignId, Instant>>,
    campaigns: Arc<dyn CampaignStore>,
    claims: Arc<dyn ClaimStore>,
    ledger: Arc<dyn LedgerStore>,
    /// Ids of the campaigns not closed at the last listing, and when it was taken.
    listing: Mutex<Option<(Instant, Vec<CampaignId>)>>,
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
            cache: RwLock::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            campaigns,
            claims,
            ledger,
            listing: Mutex::new(None),
        }
    }

    fn cached(&self, id: &CampaignId) -> Option<Arc<Entry>> {
        self.cache.read().get(id).cloned()
    }

    fn put(&self, campaign: Campaign, now: OffsetDateTime) -> Arc<Entry> {
        let entry = Entry::new(campaign, now);
        // Re-read an opened campaign: its stock cannot have changed, so what this instance
        // learnt about it (sold out, issued so far) still holds.
        if let Some(old) = self.cached(&entry.campaign.id)
            && old.frozen
            && old.campaign.total == entry.campaign.total
        {
            *entry.sold_out.lock() = *old.sold_out.lock();
            *entry.issued.lock() = *old.issued.lock();
        }
        let entry = Arc::new(entry);
        self.cache.write().insert(entry.campaign.id.clone(), entry.clone());
        self.unknown.lock().remove(&entry.campaign.id);
        entry
    }

    /// Drops what this instance believed about `id`, after the store contradicted it.
    fn forget(&self, id: &CampaignId) {
        self.cache.write().remove(id);
    }

    fn known_unknown(&self, id: &CampaignId) -> bool {
        let unknown = self.unknown.lock();
        unknown.get(id).is_some_and(|at| at.elapsed() < self.config.unknown_ttl)
    }

    fn remember_unknown(&self, id: &CampaignId) {
        self.forget(id);
        let mut unknown = self.unknown.lock();
        if unknown.len() >= self.config.unknown_capacity {
            let ttl = self.config.unknown_ttl;
            unknown.retain(|_, at| at.elapsed() < ttl);
            if unknown.len() >= self.config.unknown_capacity {
                // Still full of live entries: a flood of distinct ids. Start over rather than grow.
                unknown.clear();
            }
        }
        unknown.insert(id.clone(), Instant::now());
    }

    /// The campaign as this instance may use it for refusals: cached, or read through.
    ///
    /// A copy read while the campaign was scheduled is never used as open: marketing may have
    /// moved the opening (or changed the ticket) elsewhere since, and a copy that answered "open"
    /// from the old `opens_at` would reveal the nonce and take claims early. Once `now` reaches
    /// its `opens_at`, one reader re-reads it and the others wait for that read (one store read
    /// per instance at the opening). A copy read from `opens_at` on is final: the store refuses
    /// edits from then on.
    async fn entry(&self, id: &CampaignId, now: OffsetDateTime) -> Result<Arc<Entry>, IssuerError> {
        let stale = match self.cached(id) {
            Some(e) if !e.frozen && now >= e.campaign.opens_at => return self.reread_at_opening(id, e, now).await,
            Some(e)
                if e.fetched.elapsed() < if e.frozen { self.config.opened_ttl } else { self.config.scheduled_ttl } =>
            {
                return Ok(e);
            }
            Some(e) => Some(e),
            None if self.known_unknown(id) => return Err(IssuerError::NotFound),
            None => None,
        };
        // One reader per instance refreshes a stale entry; the rest keep using the old copy.
        let _guard = match &stale {
            Some(e) => match try_refresh(&e.refreshing) {
                Some(g) => Some(g),
                None => return Ok(e.clone()),
            },
            None => None,
        };
        self.read_through(id, now).await
    }

    async fn read_through(&self, id: &CampaignId, now: OffsetDateTime) -> Result<Arc<Entry>, IssuerError> {
        match self.campaigns.campaign(id).await? {
            Some(c) => Ok(self.put(c, now)),
            None => {
                self.remember_unknown(id);
                Err(IssuerError::NotFound)
            }
        }
    }

    async fn reread_at_opening(
        &self,
        id: &CampaignId,
        copy: Arc<Entry>,
        now: OffsetDateTime,
    ) -> Result<Arc<Entry>, IssuerError> {
        let _one_reader = copy.opening.lock().await;
        // Whoever held the lock before us may have re-read it already.
        if let Some(newer) = self.cached(id)
            && !Arc::ptr_eq(&newer, &copy)
            && (newer.frozen || now < newer.campaign.opens_at)
        {
            return Ok(newer);
        }
        self.read_through(id, now).await
    }

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
            _ if entry.answers_sold_out(self.config.sold_out_ttl) => {
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
                entry.saw_issued(c.seq);
                ClaimOutcome::Issued(c)
            }
            StoreClaim::Existing(c) => ClaimOutcome::AlreadyIssued(c),
            StoreClaim::SoldOut => {
                entry.saw_sold_out();
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

    /// The public view, served from memory: the campaign as cached and an issued count at most
    /// `issued_ttl` old (exact once sold out, 0 while scheduled). Pollers never reach the store
    /// more than once per `issued_ttl` per instance.
    pub async fn view(&self, id: &CampaignId, now: OffsetDateTime) -> Result<CampaignView, IssuerError> {
        let entry = self.entry(id, now).await?;
        let c = &entry.campaign;
        let sold_out = *entry.sold_out.lock();
        let issued = if sold_out.is_some_and(|t| t.elapsed() < self.config.sold_out_ttl) {
            u64::from(c.total)
        } else if c.window_at(now) == Status::Scheduled {
            0
        } else {
            self.cached_issued(&entry).await?
        };
        Ok(view_of(c.clone(), issued, now))
    }

    async fn cached_issued(&self, entry: &Entry) -> Result<u64, IssuerError> {
        let last = *entry.issued.lock();
        if let Some((n, at)) = last
            && at.elapsed() < self.config.issued_ttl
        {
            return Ok(n);
        }
        let _guard = match (try_refresh(&entry.issued_refreshing), last) {
            (Some(g), _) => Some(g),
            (None, Some((n, _))) => return Ok(n),
            // Nothing to serve yet and someone else is reading: read too.
            (None, None) => None,
        };
        let n = self.claims.issued(&entry.campaign.id).await?;
        let mut issued = entry.issued.lock();
        // A claim answer may have told us of more in the meantime; counts only grow.
        let n = issued.map_or(n, |(m, _)| n.max(m));
        *issued = Some((n, Instant::now()));
        entry.saw_remaining(n);
        Ok(n)
    }

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

    /// The public list: campaigns open or upcoming at `now` (open first, then by opening time),
    /// at most `limit`. Served from a snapshot at most `scheduled_ttl` old, so a page polling
    /// it costs the store one listing per TTL per instance, not one per visitor.
    pub async fn listing(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<CampaignView>, IssuerError> {
        let ids = {
            let snapshot = self.listing.lock();
            match &*snapshot {
                Some((at, ids)) if at.elapsed() < self.config.scheduled_ttl => Some(ids.clone()),
                _ => None,
            }
        };
        let ids = match ids {
            Some(ids) => ids,
            None => {
                let mut ids = Vec::new();
                let mut after: Option<CampaignId> = None;
                loop {
                    let page = self.campaigns.campaigns(after.as_ref(), LISTING_PAGE).await?;
                    let full = page.len() == LISTING_PAGE;
                    after = page.last().map(|c| c.id.clone());
                    ids.extend(page.into_iter().filter(|c| c.window_at(now) != Status::Closed).map(|c| c.id));
                    if !full {
                        break;
                    }
                }
                *self.listing.lock() = Some((Instant::now(), ids.clone()));
                ids
            }
        };
        let mut views = Vec::new();
        for id in &ids {
            match self.view(id, now).await {
                Ok(v) if matches!(v.status, Status::Scheduled | Status::Open) => views.push(v),
                Ok(_) | Err(IssuerError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        views.sort_by_key(|v| (v.status != Status::Open, v.campaign.opens_at, v.campaign.id.clone()));
        views.truncate(limit);
        Ok(views)
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

fn view_of(campaign: Campaign, issued: u64, now: OffsetDateTime) -> CampaignView {
    CampaignView {
        remaining: u64::from(campaign.total).saturating_sub(issued),
        status: campaign.status_at(now, issued),
        issued,
        campaign,
    }
}
