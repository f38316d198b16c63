//! The claim path: one transaction that decrements one shard and writes the user's claim item,
//! both conditional, so it can never over-issue, double-issue or leak stock; and the reads of
//! claims (a user's coupon, the winners list, the issued count). Why the claim is shaped this
//! way, with the figures: ARCHITECTURE.md, "The opening second on DynamoDB".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use firstcome_core::{CampaignId, ClaimStore, Coupon, CouponCode, Status, StoreClaim, StoreError, UserId};
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{Attempt, DynamoError, classify};
use crate::items::{self, Item, Shard, n, s};
use crate::{DynamoStore, MAX_ATTEMPTS};

/// Largest campaign whose winners are kept in memory after sell-out (~150 bytes each).
const MAX_SNAPSHOT: u64 = 200_000;
const BACKOFF_BASE: Duration = Duration::from_millis(8);
const BACKOFF_CAP: Duration = Duration::from_millis(250);

/// `firstcome_dynamo_claim_attempts_total{outcome}`: every claim transaction sent, by what came
/// of it. `lost_race` and `busy` are billed writes that issued nothing.
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
        let issued: u64 = shards.iter().map(|s| u64::from(s.size - s.remaining)).sum();
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

    /// One claim attempt on one shard as last seen: decrement it and write the claim item, or
    /// neither. Both conditions return the item's current image when they fail, so a lost race
    /// or a repeat click is answered without another read.
    async fn transact_claim(&self, shard: &Shard, coupon: &Coupon, now: i64) -> Result<(), Attempt> {
        let decrement = Update::builder()
            .table_name(&self.tables.stock)
            .key("shard", s(&shard.key))
            .update_expression("SET #left = :next")
            .condition_expression(
                "#left = :seen AND #v = :v AND #opens <= :now AND (attribute_not_exists(#closes) OR #closes > :now)",
            )
            .expression_attribute_names("#left", "remaining")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#opens", "opens_at")
            .expression_attribute_names("#closes", "closes_at")
            .expression_attribute_values(":next", n(shard.remaining - 1))
            .expression_attribute_values(":seen", n(shard.remaining))
            .expression_attribute_values(":v", n(shard.version))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Attempt::Failed(e.into()))?;
        let claim = Put::builder()
            .table_name(&self.tables.claims)
            .set_item(Some(items::claim_item(coupon, &shard.key)))
            .condition_expression("attribute_not_exists(#u)")
            .expression_attribute_names("#u", "user")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Attempt::Failed(e.into()))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(decrement).build())
            .transact_items(TransactWriteItem::builder().put(claim).build())
            // DynamoDB answers a retry of this very attempt (same shard state, same code) with
            // the first one's result for 10 minutes; the conditions make it safe beyond that.
            .client_request_token(request_token(coupon, shard))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e, "TransactWriteItems claim")),
        }
    }

    /// The claim's attempts. Each one takes the time anew (`now` plus the time spent), so an
    /// attempt made after an "end now" answered is checked against the new `closes_at`, and
    /// sets `maybe_applied` once an attempt's outcome is unknown.
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
        // Throttling, conflicts and lost answers use up attempts. A lost shard race does not: it
        // means another claim was issued, so those retries are bounded by the stock itself (and
        // by the deadline, for an answer in time).
        let mut busy = 0;
        let mut sent = 0;
        loop {
            if busy >= MAX_ATTEMPTS || tokio::time::Instant::now() >= deadline {
                let waited_ms = started.elapsed().as_millis() as u64;
                return Err(DynamoError::Contended { attempts: sent, waited_ms }.into());
            }
            let at = firstcome_core::truncate_to_millis(now + started.elapsed());
            let now_ms = items::millis(at);
            let Some((key, in_flight)) = self.cache.take(id, count).await else {
                // Every shard looked empty here: one consistent read of all of them decides.
                if let Some(answer) = self.all_shards(id, user, count, now_ms).await? {
                    return Ok(answer);
                }
                continue;
            };
            // The shard as this container last saw it saves a read; the transaction's condition
            // checks it. Only a fresh read may refuse (not open, closed) or call a shard empty.
            let shard = match self.cache.seen(&key) {
                Some(seen) if seen.remaining > 0 && seen.window(now_ms) == Status::Open => seen,
                _ => {
                    let Some(read) = self.read_shard(&key).await? else { return Err(StoreError::NotFound) };
                    self.cache.saw_shard(&read);
                    if let Some(refused) = self.outside_window(read.window(now_ms), id, user).await? {
                        return Ok(refused);
                    }
                    if read.remaining == 0 {
                        // Empty: where is stock left, if anywhere? One read of every shard says.
                        drop(in_flight);
                        if let Some(answer) = self.all_shards(id, user, count, now_ms).await? {
                            return Ok(answer);
                        }
                        continue;
                    }
                    read
                }
            };
            let Some(campaign) = self.terms(id, shard.version).await? else {
                self.cache.forget_shard(&key);
                continue;
            };
            // The ticket is checked against the terms of the version this attempt's condition
            // pins, so it is the store's terms that decide, never an engine's older copy.
            if let Err(e) = campaign.check_ticket(user, ticket) {
                return Ok(match self.coupon_of(id, user).await? {
                    Some(held) => Self::held(held, code),
                    None => StoreClaim::Ticket(e),
                });
            }
            // Issued at the claim's own time (the contract's `now`); the window was checked at `at`.
            let coupon = campaign.coupon_for(user.clone(), code, shard.next_seq(), now);
            let round_trip = tokio::time::Instant::now();
            sent += 1;
            match self.transact_claim(&shard, &coupon, now_ms).await {
                Ok(()) => {
                    attempted("issued");
                    self.cache.saw_shard(&Shard { remaining: shard.remaining - 1, ..shard });
                    return Ok(StoreClaim::Issued(coupon));
                }
                Err(Attempt::Cancelled { second: Some(item), .. }) => {
                    attempted("held");
                    return Ok(Self::held(items::coupon_from(&item)?, code));
                }
                Err(Attempt::Cancelled { first: Some(image), .. }) => {
                    attempted("lost_race");
                    // The shard moved on (another claim, an edit, an end); its image says how.
                    let current = Shard::from_item(&image)?;
                    self.cache.saw_shard(&current);
                    if current.version != shard.version || current.window(now_ms) != Status::Open {
                        self.cache.forget_shard(&key);
                    } else if current.remaining > 0 {
                        drop(in_flight);
                        self.spread(id, count, &key, round_trip.elapsed()).await;
                    } else {
                        drop(in_flight);
                        if let Some(answer) = self.all_shards(id, user, count, now_ms).await? {
                            return Ok(answer);
                        }
                    }
                }
                Err(Attempt::Conflict(e)) => {
                    attempted("conflict");
                    tracing::debug!(error = %e, campaign = %id, "claim conflicted with another transaction");
                    self.cache.forget_shard(&key);
                    drop(in_flight);
                    busy += 1;
                    self.spread(id, count, &key, round_trip.elapsed()).await;
                }
                Err(Attempt::Cancelled { .. }) => {
                    attempted("lost_race");
                    self.cache.forget_shard(&key);
                }
                Err(Attempt::Busy(e)) => {
                    attempted("busy");
                    tracing::debug!(error = %e, campaign = %id, "claim throttled; backing off");
                    self.cache.forget_shard(&key);
                    drop(in_flight);
                    busy += 1;
                    backoff(busy).await
                }
                Err(Attempt::Unknown(e)) => {
                    attempted("unknown");
                    *maybe_applied = true;
                    self.cache.forget_shard(&key);
                    // Never guessed: the claim item says whether it applied.
                    tracing::warn!(error = %e, campaign = %id, "claim outcome unknown; reading the claim item");
                    if let Some(held) = self.coupon_of(id, user).await? {
                        return Ok(Self::held(held, code));
                    }
                    // Not applied (yet): the next attempt uses the same code, so if this one
                    // lands late the next one finds it and answers it as ours.
                    drop(in_flight);
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
    ) -> Result<Option<StoreClaim>, StoreError> {
        let shards = self.read_shards(id, count).await?;
        let Some(first) = shards.first() else { return Err(StoreError::NotFound) };
        if let Some(refused) = self.outside_window(first.window(now_ms), id, user).await? {
            return Ok(Some(refused));
        }
        if shards.iter().all(|s| s.remaining == 0) {
            self.cache.mark_sold_out(id);
            return Ok(Some(self.existing_or(id, user, StoreClaim::SoldOut).await?));
        }
        self.cache.not_all_empty(id);
        for shard in &shards {
            self.cache.saw_shard(shard);
        }
        Ok(None)
    }

    /// After a race lost to another writer on `key`: claim from another shard next, so writers
    /// that collided spread out; with no other shard left, wait up to a round trip so the two
    /// stop colliding in lockstep.
    async fn spread(&self, id: &CampaignId, count: u32, key: &str, round_trip: Duration) {
        self.cache.move_away(id, count);
        if self.cache.next_pick(id, count).as_deref() == Some(key) {
            pause(round_trip).await;
        }
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
        Ok(out.item().map(items::coupon_from).transpose()?)
    }

    async fn issued(&self, id: &CampaignId) -> Result<u64, StoreError> {
        let Some(count) = self.shard_count(id).await? else { return Ok(0) };
        let shards = self.read_shards(id, count).await?;
        Ok(shards.iter().map(|s| u64::from(s.size - s.remaining)).sum())
    }

    async fn coupons(&self, id: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let Some(count) = self.shard_count(id).await? else { return Ok(Vec::new()) };
        let shards = self.read_shards(id, count).await?;
        self.list_coupons(&shards, after, limit).await
    }
}

/// Derived from campaign, user and the exact attempt (shard, its state, the code), at most 36
/// characters as DynamoDB requires: the same attempt retried is recognised; a new attempt (other
/// shard, other state) is a new request, never an `IdempotentParameterMismatch`.
fn request_token(coupon: &Coupon, shard: &Shard) -> String {
    let mut h = Sha256::new();
    for part in [coupon.campaign_id.as_str(), coupon.user_id.as_str(), &shard.key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(shard.remaining.to_be_bytes());
    h.update(shard.version.to_be_bytes());
    h.update(coupon.code.as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Full jitter: a random wait up to an exponentially growing, capped bound.
pub(crate) async fn backoff(attempt: u32) {
    let bound = BACKOFF_BASE.saturating_mul(1 << attempt.min(8)).min(BACKOFF_CAP);
    let wait = rand::rng().random_range(Duration::ZERO..=bound);
    tokio::time::sleep(wait).await;
}

/// A random wait of up to `round_trip`, after a lost race on a shard there is no other to move to.
async fn pause(round_trip: Duration) {
    let wait = rand::rng().random_range(Duration::ZERO..=round_trip.min(BACKOFF_CAP));
    tokio::time::sleep(wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_tokens_name_one_attempt() {
        let c = firstcome_core::testkit::open_campaign("tokens", 10);
        let coupon =
            c.coupon_for(firstcome_core::testkit::user(1), CouponCode::generate(), 1, firstcome_core::testkit::now());
        let shard = Shard::layout(&c, 2).remove(0);
        let token = request_token(&coupon, &shard);
        assert_eq!(token.len(), 32);
        assert_eq!(token, request_token(&coupon, &shard.clone()));
        assert_ne!(token, request_token(&coupon, &Shard { remaining: 4, ..shard.clone() }));
        let other = Coupon { code: CouponCode::generate(), ..coupon };
        assert_ne!(token, request_token(&other, &shard));
    }
}
