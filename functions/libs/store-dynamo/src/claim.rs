//! The claim path (pick a shard, allocate from it, record the allocation: `allocation`), and the
//! reads of claims (a user's coupon, the winners list, the issued count). Why the claim is
//! shaped this way, with the figures: docs/aws.md, "The opening second on DynamoDB".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use firstcome_core::{CampaignId, ClaimStore, Coupon, CouponCode, Status, StoreClaim, StoreError, UserId};
use rand::Rng;
use time::OffsetDateTime;

use crate::allocation::Recorded;
use crate::error::{Attempt, DynamoError};
use crate::items::{self, Item, Shard, n, s};
use crate::{DynamoStore, MAX_ATTEMPTS};

/// Largest campaign whose winners are kept in memory after sell-out (~150 bytes each).
const MAX_SNAPSHOT: u64 = 200_000;
const BACKOFF_BASE: Duration = Duration::from_millis(8);
const BACKOFF_CAP: Duration = Duration::from_millis(250);
/// How long an empty campaign with an allocation in flight is re-read before it is answered
/// sold out: a record or a give-back takes a few round trips; longer means a stranded one.
const SETTLE_FOR: Duration = Duration::from_secs(1);

/// `firstcome_dynamo_claim_attempts_total{outcome}`: every allocation sent, by what came of it.
/// All but `allocated` are billed writes that issued nothing.
pub const CLAIM_ATTEMPTS: &str = "firstcome_dynamo_claim_attempts_total";

fn attempted(outcome: &'static str) {
    metrics::counter!(CLAIM_ATTEMPTS, "outcome" => outcome).increment(1);
}

impl DynamoStore {
    pub(crate) async fn read_shard(&self, key: &str) -> Result<Option<Shard>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.stock)
            .key("shard", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DynamoError::sdk("GetItem shard", &e))?;
        out.item().map(Shard::from_item).transpose()
    }

    /// Every shard of a campaign, consistently read, in seq order.
    pub(crate) async fn read_shards(&self, id: &CampaignId, count: u32) -> Result<Vec<Shard>, DynamoError> {
        let mut keys: Vec<Item> =
            (0..count).map(|k| HashMap::from([("shard".to_owned(), s(items::shard_key(id, k)))])).collect();
        let mut found = Vec::with_capacity(count as usize);
        for attempt in 0..MAX_ATTEMPTS {
            if keys.is_empty() {
                break;
            }
            if attempt > 0 {
                backoff(attempt).await;
            }
            let request = KeysAndAttributes::builder().set_keys(Some(std::mem::take(&mut keys))).consistent_read(true);
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.tables.stock, request.build()?)
                .send()
                .await
                .map_err(|e| DynamoError::sdk("BatchGetItem shards", &e))?;
            for item in out.responses().and_then(|r| r.get(&self.tables.stock)).into_iter().flatten() {
                found.push(Shard::from_item(item)?);
            }
            // Keys DynamoDB did not get to (throttling, size) are asked again.
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.tables.stock)) {
                keys = left.keys().to_vec();
            }
        }
        if !keys.is_empty() {
            return Err(DynamoError::Contended { attempts: MAX_ATTEMPTS, waited_ms: 0 });
        }
        found.sort_by_key(|s| s.start);
        Ok(found)
    }

    /// Up to `limit` coupons with `seq > after` from these shards (in seq order, as
    /// `read_shards` gives them): shards own consecutive seq ranges, so reading them in order
    /// lists by seq.
    async fn list_coupons(&self, shards: &[Shard], after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let mut out = Vec::new();
        for shard in shards {
            if out.len() >= limit {
                break;
            }
            if shard.size == 0 || shard.start + shard.size - 1 <= after {
                continue;
            }
            let mut pages = self
                .client
                .query()
                .table_name(&self.tables.claims)
                .index_name("by_seq")
                .key_condition_expression("#s = :s AND #seq > :a")
                .expression_attribute_names("#s", "shard")
                .expression_attribute_names("#seq", "seq")
                .expression_attribute_values(":s", s(&shard.key))
                .expression_attribute_values(":a", n(after))
                .limit((limit - out.len()).clamp(1, 1000) as i32)
                .into_paginator()
                .send();
            while out.len() < limit
                && let Some(page) = pages.next().await
            {
                let page = page.map_err(|e| DynamoError::sdk("Query coupons", &e))?;
                for item in page.items() {
                    out.push(items::coupon_from(item)?);
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The final winners of a sold-out campaign, loaded once per container: every shard read
    /// empty (consistently), and the `by_seq` index listing exactly as many coupons as were
    /// issued (a lagging index means not yet: per-request reads until it has caught up).
    async fn final_winners(&self, id: &CampaignId) -> Result<Option<Arc<HashMap<String, Coupon>>>, StoreError> {
        if let Some(w) = self.cache.winners(id) {
            return Ok(Some(w));
        }
        if !self.cache.is_sold_out(id) || self.cache.recently_tried_snapshot(id) {
            return Ok(None);
        }
        let _one_loader = self.snapshot_loading.lock().await;
        if let Some(w) = self.cache.winners(id) {
            return Ok(Some(w));
        }
        if !self.cache.try_snapshot(id) {
            return Ok(None);
        }
        let Some(count) = self.shard_count(id).await? else { return Ok(None) };
        let shards = self.read_shards(id, count).await?;
        let issued: u64 = shards.iter().map(|s| u64::from(s.allocated())).sum();
        if shards.iter().any(|s| s.remaining > 0) || issued > MAX_SNAPSHOT {
            return Ok(None);
        }
        let coupons = self.list_coupons(&shards, 0, issued as usize + 1).await?;
        if coupons.len() as u64 != issued {
            return Ok(None);
        }
        let winners: Arc<HashMap<String, Coupon>> =
            Arc::new(coupons.into_iter().map(|c| (c.user_id.as_str().to_owned(), c)).collect());
        self.cache.keep_winners(id, winners.clone());
        Ok(Some(winners))
    }

    /// The answer for a claim outside the stored window, if it is. Nobody can hold a coupon of a
    /// campaign that has not opened (edits need zero issued); a winner keeps theirs after close.
    async fn outside_window(
        &self,
        window: Status,
        id: &CampaignId,
        user: &UserId,
    ) -> Result<Option<StoreClaim>, StoreError> {
        Ok(match window {
            Status::Scheduled => Some(StoreClaim::NotOpen),
            Status::Closed => Some(self.existing_or(id, user, StoreClaim::Closed).await?),
            _ => None,
        })
    }

    /// The user's claim item as found after an attempt: with this claim's code it was our own
    /// attempt (its answer lost, then retried or read back), so it is a new issue; otherwise the
    /// user already held a coupon.
    fn held(held: Coupon, code: CouponCode) -> StoreClaim {
        if held.code == code { StoreClaim::Issued(held) } else { StoreClaim::Existing(held) }
    }

    async fn existing_or(
        &self,
        id: &CampaignId,
        user: &UserId,
        otherwise: StoreClaim,
    ) -> Result<StoreClaim, StoreError> {
        Ok(match self.coupon_of(id, user).await? {
            Some(c) => StoreClaim::Existing(c),
            None => otherwise,
        })
    }

    /// The claim's attempts: allocate from a shard, then record. Each allocation takes the time
    /// anew (`now` plus the time spent), so one made after an "end now" answered is checked
    /// against the new `closes_at`; `maybe_applied` is set once a record's answer was lost.
    async fn claim_attempts(
        &self,
        id: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
        maybe_applied: &mut bool,
    ) -> Result<StoreClaim, StoreError> {
        let Some(count) = self.shard_count(id).await? else { return Err(StoreError::NotFound) };
        let started = tokio::time::Instant::now();
        let deadline = started + self.claim_deadline;
        // Throttling and lost answers use up attempts. An empty shard does not: the next pick
        // knows it, and a read of all shards follows.
        let mut busy = 0;
        let mut sent = 0;
        let mut settling = Settling::default();
        loop {
            if busy >= MAX_ATTEMPTS || tokio::time::Instant::now() >= deadline {
                let waited_ms = started.elapsed().as_millis() as u64;
                return Err(DynamoError::Contended { attempts: sent, waited_ms }.into());
            }
            let at = firstcome_core::truncate_to_millis(now + started.elapsed());
            let now_ms = items::millis(at);
            let Some(k) = self.cache.pick(id, count) else {
                // Every shard looked empty here: one consistent read of all of them decides.
                if let Some(answer) = self.all_shards(id, user, count, now_ms, &mut settling).await? {
                    return Ok(answer);
                }
                continue;
            };
            // The newest terms this container knows: the allocation's condition checks their
            // version on the shard, so it is the store's terms that decide, never an older copy.
            let campaign = match self.cache.newest_terms(id) {
                Some(c) => c,
                None => self.read_campaign(id).await?.ok_or(StoreError::NotFound)?.0,
            };
            if let Err(e) = campaign.check_ticket(user, ticket) {
                return Ok(match self.coupon_of(id, user).await? {
                    Some(held) => Self::held(held, code),
                    None => StoreClaim::Ticket(e),
                });
            }
            sent += 1;
            match self.allocate(id, k, campaign.version, now_ms).await {
                Ok(shard) => {
                    attempted("allocated");
                    self.cache.saw_shard(&shard);
                    let a = shard.taken;
                    let seq = shard.seq_of(a).ok_or_else(|| {
                        DynamoError::Corrupt(format!("shard {}: allocation {a} has no seq", shard.key))
                    })?;
                    // Issued at the claim's own time (the contract's `now`); the window was checked at `at`.
                    let coupon = campaign.coupon_for(user.clone(), code, seq, now);
                    match self.record(k, a, &coupon, deadline, maybe_applied).await? {
                        Recorded::Issued => return Ok(StoreClaim::Issued(coupon)),
                        Recorded::Held(held) => return Ok(Self::held(held, code)),
                        Recorded::Voided => continue,
                    }
                }
                Err(Attempt::Cancelled { first, .. }) => {
                    // Refused; the shard's image, when it came, says why: the window, other
                    // terms, or empty. Without one, empty is the only thing to check.
                    if let Some(image) = first {
                        let current = Shard::from_item(&image)?;
                        self.cache.saw_shard(&current);
                        if let Some(refused) = self.outside_window(current.window(now_ms), id, user).await? {
                            return Ok(refused);
                        }
                        if current.version != campaign.version {
                            attempted("stale_terms");
                            self.read_campaign(id).await?;
                            continue;
                        }
                    }
                    attempted("empty");
                    if let Some(answer) = self.all_shards(id, user, count, now_ms, &mut settling).await? {
                        return Ok(answer);
                    }
                }
                Err(Attempt::Busy(e) | Attempt::Conflict(e)) => {
                    attempted("busy");
                    tracing::debug!(error = %e, campaign = %id, "allocation throttled; backing off");
                    busy += 1;
                    backoff(busy).await
                }
                Err(Attempt::Unknown(e)) => {
                    attempted("unknown");
                    // If it applied, nobody records it: recovery gives it back. Another
                    // allocation is safe, since only a recorded one is a coupon.
                    tracing::warn!(error = %e, campaign = %id, "allocation outcome unknown; allocating anew");
                    busy += 1;
                    backoff(busy).await;
                }
                Err(Attempt::Failed(e)) => {
                    attempted("failed");
                    return Err(e.into());
                }
            }
        }
    }
}

impl DynamoStore {
    /// One consistent read of every shard: the answer when none has stock (sold out, or
    /// outside the window); otherwise every shard's state is noted for the next picks.
    async fn all_shards(
        &self,
        id: &CampaignId,
        user: &UserId,
        count: u32,
        now_ms: i64,
        settling: &mut Settling,
    ) -> Result<Option<StoreClaim>, StoreError> {
        let shards = self.read_shards(id, count).await?;
        let Some(first) = shards.first() else { return Err(StoreError::NotFound) };
        if let Some(refused) = self.outside_window(first.window(now_ms), id, user).await? {
            return Ok(Some(refused));
        }
        if shards.iter().all(|s| s.remaining == 0) {
            // Empty while an allocation is in flight is not sold out yet: a repeat click gives
            // its seq back a moment later, and the last coupon must not be left unissued while
            // customers are told there is none. A stranded allocation (a claimant that died)
            // is waited for only briefly: recovery gives it back, and the sold-out answer is
            // kept only `sold_out_ttl`.
            let since = *settling.since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < SETTLE_FOR && self.unsettled(id, &shards).await? {
                settling.waits += 1;
                backoff(settling.waits).await;
                return Ok(None);
            }
            self.cache.mark_sold_out(id);
            return Ok(Some(self.existing_or(id, user, StoreClaim::SoldOut).await?));
        }
        self.cache.not_all_empty(id);
        for shard in &shards {
            self.cache.saw_shard(shard);
        }
        Ok(None)
    }
}

#[async_trait]
impl ClaimStore for DynamoStore {
    async fn claim_with_ticket(
        &self,
        id: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        let mut maybe_applied = false;
        match self.claim_attempts(id, user, code, ticket, now, &mut maybe_applied).await {
            // Once an attempt may have applied, no later failure may say "not done": only a
            // read of the claim item can tell, and the engine makes it (`StoreError::Unknown`).
            Err(StoreError::Unavailable(e) | StoreError::Contended(e)) if maybe_applied => Err(StoreError::Unknown(e)),
            other => other,
        }
    }

    async fn coupon_of(&self, id: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        if let Some(winners) = self.final_winners(id).await? {
            return Ok(winners.get(user.as_str()).cloned());
        }
        Ok(self.claim_item(id, user).await?)
    }

    async fn issued(&self, id: &CampaignId) -> Result<u64, StoreError> {
        let Some(count) = self.shard_count(id).await? else { return Ok(0) };
        let shards = self.read_shards(id, count).await?;
        Ok(shards.iter().map(|s| u64::from(s.allocated())).sum())
    }

    async fn coupons(&self, id: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let Some(count) = self.shard_count(id).await? else { return Ok(Vec::new()) };
        let shards = self.read_shards(id, count).await?;
        self.list_coupons(&shards, after, limit).await
    }
}

impl DynamoStore {
    /// The user's claim item, read consistently.
    pub(crate) async fn claim_item(&self, id: &CampaignId, user: &UserId) -> Result<Option<Coupon>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.claims)
            .key("campaign", s(id.as_str()))
            .key("user", s(user.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DynamoError::sdk("GetItem claim", &e))?;
        out.item().map(items::coupon_from).transpose()
    }
}

/// A claim's wait for allocations in flight on an empty campaign: since when, how many re-reads.
#[derive(Default)]
struct Settling {
    since: Option<tokio::time::Instant>,
    waits: u32,
}

/// Full jitter: a random wait up to an exponentially growing, capped bound.
pub(crate) async fn backoff(attempt: u32) {
    let bound = BACKOFF_BASE.saturating_mul(1 << attempt.min(8)).min(BACKOFF_CAP);
    let wait = rand::rng().random_range(Duration::ZERO..=bound);
    tokio::time::sleep(wait).await;
}
