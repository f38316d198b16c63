//! What one instance remembers of each campaign, how long it trusts it, and the public views
//! served from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use time::OffsetDateTime;

use super::{CampaignView, Issuer, IssuerError, LISTING_PAGE, view_of};
use crate::{Campaign, CampaignId, Status};

pub(super) struct Entry {
    pub(super) campaign: Campaign,
    pub(super) fetched: Instant,
    /// Read from the store at or after `opens_at`: the store refuses edits from then on, so
    /// this copy is final.
    pub(super) frozen: bool,
    /// When the store last answered `SoldOut` (or this instance last asked again); until
    /// `sold_out_ttl` after it, losers are answered without a store write (invariant 4). Per
    /// instance: each pays one store attempt after sell-out, and one per `sold_out_ttl` after.
    pub(super) sold_out: Mutex<Option<Instant>>,
    /// Whoever sees the entry stale first re-reads it; the others keep serving the old copy.
    pub(super) refreshing: AtomicBool,
    /// Held by the one reader that re-reads a copy which was read while scheduled once its
    /// `opens_at` has come: the others wait for that read instead of using the copy as open.
    pub(super) opening: futures::lock::Mutex<()>,
    /// The public view's issued count and when it was read.
    pub(super) issued: Mutex<Option<(u64, Instant)>>,
    pub(super) issued_refreshing: AtomicBool,
    /// `firstcome_campaign_remaining{campaign}`: what this instance last learnt of the stock.
    pub(super) remaining: metrics::Gauge,
}

impl Entry {
    pub(super) fn new(campaign: Campaign, now: OffsetDateTime, fetched: Instant) -> Self {
        Self {
            frozen: now >= campaign.opens_at,
            fetched,
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
    pub(super) fn answers_sold_out(&self, ttl: Duration, now: Instant) -> bool {
        let mut at = self.sold_out.lock();
        match *at {
            Some(t) if now.saturating_duration_since(t) < ttl => true,
            Some(_) => {
                *at = Some(now);
                false
            }
            None => false,
        }
    }

    pub(super) fn saw_sold_out(&self, now: Instant) {
        *self.sold_out.lock() = Some(now);
    }

    /// A claim's answer tells us at least `seq` coupons exist: keeps this instance's view
    /// current during the rush without a read.
    pub(super) fn saw_issued(&self, seq: u32, now: Instant) {
        let mut issued = self.issued.lock();
        let n = match &mut *issued {
            Some((n, _)) => {
                *n = (*n).max(u64::from(seq));
                *n
            }
            None => {
                *issued = Some((u64::from(seq), now));
                u64::from(seq)
            }
        };
        self.saw_remaining(n);
    }

    pub(super) fn saw_remaining(&self, issued: u64) {
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

impl Issuer {
    fn cached(&self, id: &CampaignId) -> Option<Arc<Entry>> {
        self.cache.read().get(id).cloned()
    }

    pub(super) fn put(&self, campaign: Campaign, now: OffsetDateTime) -> Arc<Entry> {
        let entry = Entry::new(campaign, now, self.clock.now());
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
    pub(super) fn forget(&self, id: &CampaignId) {
        self.cache.write().remove(id);
    }

    pub(super) fn known_unknown(&self, id: &CampaignId) -> bool {
        let unknown = self.unknown.lock();
        unknown.get(id).is_some_and(|at| self.age(*at) < self.config.unknown_ttl)
    }

    pub(super) fn remember_unknown(&self, id: &CampaignId) {
        self.forget(id);
        let mut unknown = self.unknown.lock();
        if unknown.len() >= self.config.unknown_capacity {
            let (ttl, now) = (self.config.unknown_ttl, self.clock.now());
            unknown.retain(|_, at| now.saturating_duration_since(*at) < ttl);
            if unknown.len() >= self.config.unknown_capacity {
                // Still full of live entries: a flood of distinct ids. Start over rather than grow.
                unknown.clear();
            }
        }
        unknown.insert(id.clone(), self.clock.now());
    }

    /// The campaign as this instance may use it for refusals: cached, or read through.
    ///
    /// A copy read while the campaign was scheduled is never used as open: marketing may have
    /// moved the opening (or changed the ticket) elsewhere since, and a copy that answered "open"
    /// from the old `opens_at` would reveal the nonce and take claims early. Once `now` reaches
    /// its `opens_at`, one reader re-reads it and the others wait for that read (one store read
    /// per instance at the opening). A copy read from `opens_at` on is final: the store refuses
    /// edits from then on.
    pub(super) async fn entry(&self, id: &CampaignId, now: OffsetDateTime) -> Result<Arc<Entry>, IssuerError> {
        let stale = match self.cached(id) {
            Some(e) if !e.frozen && now >= e.campaign.opens_at => return self.reread_at_opening(id, e, now).await,
            Some(e)
                if self.age(e.fetched) < if e.frozen { self.config.opened_ttl } else { self.config.scheduled_ttl } =>
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

    pub(super) async fn read_through(&self, id: &CampaignId, now: OffsetDateTime) -> Result<Arc<Entry>, IssuerError> {
        match self.campaigns.campaign(id).await? {
            Some(c) => Ok(self.put(c, now)),
            None => {
                self.remember_unknown(id);
                Err(IssuerError::NotFound)
            }
        }
    }

    pub(super) async fn reread_at_opening(
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

    /// The public view, served from memory: the campaign as cached and an issued count at most
    /// `issued_ttl` old (exact once sold out, 0 while scheduled). Pollers never reach the store
    /// more than once per `issued_ttl` per instance.
    pub async fn view(&self, id: &CampaignId, now: OffsetDateTime) -> Result<CampaignView, IssuerError> {
        let entry = self.entry(id, now).await?;
        let c = &entry.campaign;
        let sold_out = *entry.sold_out.lock();
        let issued = if sold_out.is_some_and(|t| self.age(t) < self.config.sold_out_ttl) {
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
            && self.age(at) < self.config.issued_ttl
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
        *issued = Some((n, self.clock.now()));
        entry.saw_remaining(n);
        Ok(n)
    }

    /// The public list: campaigns open or upcoming at `now` (open first, then by opening time),
    /// at most `limit`. Served from a snapshot at most `scheduled_ttl` old, so a page polling
    /// it costs the store one listing per TTL per instance, not one per visitor.
    pub async fn listing(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<CampaignView>, IssuerError> {
        let ids = {
            let snapshot = self.listing.lock();
            match &*snapshot {
                Some((at, ids)) if self.age(*at) < self.config.scheduled_ttl => Some(ids.clone()),
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
                *self.listing.lock() = Some((self.clock.now(), ids.clone()));
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
}
