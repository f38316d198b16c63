//! `DynamoStore`: the store ports on DynamoDB, for the Lambdas. Stock is split over shard items so
//! the opening second spreads over partitions; a claim is one transaction that decrements one
//! shard and writes the user's claim item, both conditional, so it can never over-issue,
//! double-issue or leak stock. Table layout and the reasoning: ARCHITECTURE.md, "DynamoDB tables".

mod items;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    CancellationReason, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem, Update,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use firstcome_core::{
    Campaign, CampaignId, CampaignStore, ClaimStore, Coupon, CouponCode, EndOutcome, IssuanceRecord, LedgerStore,
    LedgerWrite, Outbox, Status, StoreClaim, StoreError, UserId,
};
use parking_lot::Mutex;
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::items::{Item, Shard, n, s};

// Every attribute in an expression goes through a `#name` placeholder: DynamoDB reserves several
// hundred words (SIZE, USER, ...), and a new reserved word must not break a deployed store.

/// DynamoDB allows 100 items per transaction; an edit writes the campaign and every shard.
pub const MAX_SHARDS: u32 = 99;
/// Attempts per claim or edit across shard races, transaction conflicts and throttling.
const MAX_ATTEMPTS: u32 = 12;
/// Default for `with_claim_deadline`.
const CLAIM_DEADLINE: Duration = Duration::from_secs(3);
const BACKOFF_BASE: Duration = Duration::from_millis(8);
const BACKOFF_CAP: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    #[error("dynamodb {op}: {message}")]
    Sdk { op: &'static str, message: String, code: Option<String> },
    #[error("damaged item: {0}")]
    Corrupt(String),
    #[error("still contended after {MAX_ATTEMPTS} attempts")]
    Contended,
    #[error("request could not be built: {0}")]
    Build(#[from] aws_sdk_dynamodb::error::BuildError),
}

impl DynamoError {
    fn sdk<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        op: &'static str,
        e: &SdkError<E, R>,
    ) -> Self {
        Self::Sdk { op, message: DisplayErrorContext(e).to_string(), code: e.code().map(str::to_owned) }
    }
}

impl From<DynamoError> for StoreError {
    fn from(e: DynamoError) -> Self {
        StoreError::unavailable(e)
    }
}

/// The four tables (their physical names, from the stack's outputs).
#[derive(Debug, Clone)]
pub struct Tables {
    pub campaigns: String,
    pub stock: String,
    pub claims: String,
    pub ledger: String,
}

/// How many shards a new campaign's stock is split into.
#[derive(Debug, Clone, Copy)]
pub enum Shards {
    /// Enough for this many claims per second at the opening (see `cargo xtask capacity`).
    ForPeak { claims_per_s: u32 },
    /// Exactly this many (1..=99).
    Fixed(u32),
}

impl Shards {
    /// One item takes 1,000 WCU/s and a transactional write costs 2 WCU; plan each shard at half
    /// its limit (headroom for bursts and conflicts): 250 claims/s per shard. Never more shards
    /// than coupons, never more than a transaction can hold.
    pub fn for_total(self, total: u32) -> u32 {
        let wanted = match self {
            Shards::ForPeak { claims_per_s } => claims_per_s.div_ceil(250),
            Shards::Fixed(k) => k,
        };
        wanted.clamp(1, MAX_SHARDS).min(total.max(1))
    }
}

pub struct DynamoStore {
    client: Client,
    tables: Tables,
    shards: Shards,
    /// Shard count per campaign: fixed at creation, so cached for good.
    layout: Mutex<HashMap<CampaignId, u32>>,
    /// The campaign's terms by version, to build coupons (the claim's condition pins the version).
    terms: Mutex<HashMap<CampaignId, Campaign>>,
    /// Shards this instance saw empty: a hint to pick others (confirmed by a read before sold out).
    empty: Mutex<HashSet<String>>,
    claim_deadline: Duration,
    /// Campaigns a consistent read showed sold out: their winners can no longer change.
    sold_out: Mutex<HashSet<CampaignId>>,
    /// The complete, final winners of sold-out campaigns (user id -> coupon): after sell-out
    /// every loser's click is answered from here, without touching DynamoDB.
    winners: Mutex<HashMap<CampaignId, Arc<HashMap<String, Coupon>>>>,
    /// When a winners snapshot was last found incomplete (the index lagging), to retry sparingly.
    snapshot_tried: Mutex<HashMap<CampaignId, std::time::Instant>>,
    snapshot_loading: tokio::sync::Mutex<()>,
}

/// Largest campaign whose winners are kept in memory after sell-out (~150 bytes each).
const MAX_SNAPSHOT: u64 = 200_000;

impl DynamoStore {
    pub fn new(client: Client, tables: Tables, shards: Shards) -> Self {
        Self {
            client,
            tables,
            shards,
            layout: Mutex::default(),
            terms: Mutex::default(),
            empty: Mutex::default(),
            claim_deadline: CLAIM_DEADLINE,
            sold_out: Mutex::default(),
            winners: Mutex::default(),
            snapshot_tried: Mutex::default(),
            snapshot_loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The final winners of a sold-out campaign, loaded once per container: every shard read
    /// empty (consistently), and the `by_seq` index listing exactly as many coupons as were
    /// issued (a lagging index means not yet: per-request reads until it has caught up).
    async fn final_winners(&self, id: &CampaignId) -> Result<Option<Arc<HashMap<String, Coupon>>>, StoreError> {
        if let Some(w) = self.winners.lock().get(id) {
            return Ok(Some(w.clone()));
        }
        if !self.sold_out.lock().contains(id)
            || self.snapshot_tried.lock().get(id).is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(None);
        }
        let _one_loader = self.snapshot_loading.lock().await;
        if let Some(w) = self.winners.lock().get(id) {
            return Ok(Some(w.clone()));
        }
        self.snapshot_tried.lock().insert(id.clone(), std::time::Instant::now());
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
        self.winners.lock().insert(id.clone(), winners.clone());
        Ok(Some(winners))
    }

    /// The issuance record of a coupon this store issued, from the campaign terms it issued it
    /// on (kept since that claim: coupon terms never change once a campaign opens); `None` when
    /// this instance does not hold them (the reconciler then sends it, from the stored terms).
    pub fn issuance_record(&self, coupon: &Coupon) -> Option<IssuanceRecord> {
        self.terms.lock().get(&coupon.campaign_id).map(|campaign| IssuanceRecord::new(campaign, coupon))
    }

    /// How long one claim may keep losing shard races before it answers "busy" (default 3 s,
    /// far beyond DynamoDB's latencies; an emulator that serves one request at a time needs more).
    pub fn with_claim_deadline(mut self, deadline: Duration) -> Self {
        self.claim_deadline = deadline;
        self
    }

    async fn read_campaign(&self, id: &CampaignId) -> Result<Option<(Campaign, u32)>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.campaigns)
            .key("id", s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DynamoError::sdk("GetItem campaign", &e))?;
        let Some(item) = out.item() else { return Ok(None) };
        let (c, shards) = items::campaign_from(item)?;
        self.layout.lock().insert(c.id.clone(), shards);
        let mut terms = self.terms.lock();
        if terms.get(&c.id).is_none_or(|t| t.version < c.version) {
            terms.insert(c.id.clone(), c.clone());
        }
        Ok(Some((c, shards)))
    }

    /// The campaign's shard count, or `None` if it does not exist.
    async fn shard_count(&self, id: &CampaignId) -> Result<Option<u32>, DynamoError> {
        if let Some(k) = self.layout.lock().get(id) {
            return Ok(Some(*k));
        }
        Ok(self.read_campaign(id).await?.map(|(_, k)| k))
    }

    /// The campaign at exactly `version` (a claim's transaction is conditioned on it).
    async fn terms(&self, id: &CampaignId, version: u64) -> Result<Option<Campaign>, DynamoError> {
        if let Some(c) = self.terms.lock().get(id).filter(|c| c.version == version) {
            return Ok(Some(c.clone()));
        }
        Ok(self.read_campaign(id).await?.map(|(c, _)| c).filter(|c| c.version == version))
    }

    async fn read_shard(&self, key: &str) -> Result<Option<Shard>, DynamoError> {
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
    async fn read_shards(&self, id: &CampaignId, count: u32) -> Result<Vec<Shard>, DynamoError> {
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
            return Err(DynamoError::Contended);
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
    fn held(&self, held: Coupon, code: CouponCode) -> StoreClaim {
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

    /// One claim attempt on one shard: decrement it and write the claim item, or neither.
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
            .build()
            .map_err(|e| Attempt::Failed(e.into()))?;
        let claim = Put::builder()
            .table_name(&self.tables.claims)
            .set_item(Some(items::claim_item(coupon, &shard.key)))
            .condition_expression("attribute_not_exists(#u)")
            .expression_attribute_names("#u", "user")
            // A repeat click loses here and gets the existing coupon back in the same round trip.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Attempt::Failed(e.into()))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(decrement).build())
            .transact_items(TransactWriteItem::builder().put(claim).build())
            // Real DynamoDB answers a retry of this very attempt (same shard state, same code)
            // with the first one's result for 10 minutes; the conditions make it safe beyond that.
            .client_request_token(request_token(coupon, shard))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e, "TransactWriteItems claim")),
        }
    }
}

impl DynamoStore {
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
        // Only throttling, conflicts and lost answers use up attempts. Losing a shard race is
        // not a failure: it means another claim was issued, so those retries are bounded by the
        // stock itself (and by the deadline, for an answer in time).
        let mut attempt = 0;
        loop {
            if attempt >= MAX_ATTEMPTS || tokio::time::Instant::now() >= deadline {
                return Err(DynamoError::Contended.into());
            }
            let at = firstcome_core::truncate_to_millis(now + started.elapsed());
            let now_ms = items::millis(at);
            let candidates: Vec<String> = {
                let empty = self.empty.lock();
                (0..count).map(|k| items::shard_key(id, k)).filter(|k| !empty.contains(k)).collect()
            };
            if candidates.is_empty() {
                // Every shard looked empty here: confirm with one consistent read of all of them.
                let shards = self.read_shards(id, count).await?;
                let Some(first) = shards.first() else { return Err(StoreError::NotFound) };
                if let Some(refused) = self.outside_window(first.window(now_ms), id, user).await? {
                    return Ok(refused);
                }
                if shards.iter().all(|s| s.remaining == 0) {
                    self.sold_out.lock().insert(id.clone());
                    return self.existing_or(id, user, StoreClaim::SoldOut).await;
                }
                self.empty.lock().retain(|k| !k.starts_with(&format!("{id}#")));
                continue;
            }
            let key = &candidates[rand::rng().random_range(0..candidates.len())];
            let Some(shard) = self.read_shard(key).await? else { return Err(StoreError::NotFound) };
            if let Some(refused) = self.outside_window(shard.window(now_ms), id, user).await? {
                return Ok(refused);
            }
            if shard.remaining == 0 {
                self.empty.lock().insert(shard.key.clone());
                continue;
            }
            let Some(campaign) = self.terms(id, shard.version).await? else { continue };
            // The ticket is checked against the terms of the version this attempt's condition
            // pins, so it is the store's terms that decide, never an engine's older copy.
            if let Err(e) = campaign.check_ticket(user, ticket) {
                return Ok(match self.coupon_of(id, user).await? {
                    Some(held) => self.held(held, code),
                    None => StoreClaim::Ticket(e),
                });
            }
            // Issued at the claim's own time (the contract's `now`); the window was checked at `at`.
            let coupon = campaign.coupon_for(user.clone(), code, shard.next_seq(), now);
            match self.transact_claim(&shard, &coupon, now_ms).await {
                Ok(()) => return Ok(StoreClaim::Issued(coupon)),
                Err(Attempt::Cancelled { claim: Some(item), .. }) => {
                    return Ok(self.held(items::coupon_from(&item)?, code));
                }
                Err(Attempt::Cancelled { conflict: true, .. }) => {
                    attempt += 1;
                    backoff(attempt).await
                }
                Err(Attempt::Busy(e)) => {
                    tracing::debug!(error = %e, campaign = %id, "claim throttled or conflicting; backing off");
                    attempt += 1;
                    backoff(attempt).await
                }
                // The shard moved on (another claim, an edit, an end): read it again.
                Err(Attempt::Cancelled { .. }) => {}
                Err(Attempt::Unknown(e)) => {
                    *maybe_applied = true;
                    // Never guessed: the claim item says whether it applied.
                    tracing::warn!(error = %e, campaign = %id, "claim outcome unknown; reading the claim item");
                    if let Some(held) = self.coupon_of(id, user).await? {
                        return Ok(self.held(held, code));
                    }
                    // Not applied (yet): the next attempt uses the same code, so if this one
                    // lands late the next one finds it and answers it as ours.
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
    }
}

/// What a failed claim transaction means for the next step.
enum Attempt {
    /// Cancelled by conditions: the shard's, the claim item's (with its current image), or both.
    Cancelled {
        shard_moved: bool,
        claim: Option<Item>,
        conflict: bool,
    },
    /// Throttled or conflicting with another transaction: retry after a backoff.
    Busy(DynamoError),
    /// Sent, but the answer was lost (timeout, connection reset): it may or may not have applied.
    Unknown(DynamoError),
    Failed(DynamoError),
}

fn classify<E>(e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>, op: &'static str) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + 'static + AsCancellation,
{
    match e {
        SdkError::ServiceError(service) => {
            if let Some(reasons) = service.err().cancellation_reasons() {
                let code = |r: &CancellationReason| r.code().unwrap_or("None").to_owned();
                let shard_moved = reasons.first().is_some_and(|r| code(r) == "ConditionalCheckFailed");
                let claim =
                    reasons.get(1).filter(|r| code(r) == "ConditionalCheckFailed").and_then(|r| r.item().cloned());
                let conflict =
                    reasons.iter().any(|r| matches!(code(r).as_str(), "TransactionConflict" | "ThrottlingError"));
                return Attempt::Cancelled { shard_moved, claim, conflict };
            }
            // A 5xx (InternalServerError, ServiceUnavailable), even after the SDK's own retries,
            // says nothing of whether the write applied: DynamoDB may have committed it.
            if service.raw().status().is_server_error() {
                return Attempt::Unknown(DynamoError::sdk(op, e));
            }
            match e.code() {
                Some(
                    "TransactionConflictException"
                    | "TransactionInProgressException"
                    | "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded",
                ) => Attempt::Busy(DynamoError::sdk(op, e)),
                _ => Attempt::Failed(DynamoError::sdk(op, e)),
            }
        }
        // The request may have reached DynamoDB: only a read can tell.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Attempt::Unknown(DynamoError::sdk(op, e))
        }
        _ => Attempt::Failed(DynamoError::sdk(op, e)),
    }
}

/// Access to a transaction's cancellation reasons, whatever the operation's error type.
trait AsCancellation {
    fn cancellation_reasons(&self) -> Option<&[CancellationReason]>;
}

impl AsCancellation for aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError {
    fn cancellation_reasons(&self) -> Option<&[CancellationReason]> {
        match self {
            Self::TransactionCanceledException(c) => Some(c.cancellation_reasons()),
            _ => None,
        }
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
async fn backoff(attempt: u32) {
    let bound = BACKOFF_BASE.saturating_mul(1 << attempt.min(8)).min(BACKOFF_CAP);
    let wait = rand::rng().random_range(Duration::ZERO..=bound);
    tokio::time::sleep(wait).await;
}

#[async_trait]
impl CampaignStore for DynamoStore {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        let count = self.shards.for_total(campaign.total);
        let put = |table: &str, item: Item, key: &str| {
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", key)
                .build()
                .map(|p| TransactWriteItem::builder().put(p).build())
        };
        let mut writes =
            vec![put(&self.tables.campaigns, items::campaign_item(campaign, count)?, "id").map_err(DynamoError::from)?];
        for shard in Shard::layout(campaign, count) {
            writes.push(put(&self.tables.stock, shard.item(), "shard").map_err(DynamoError::from)?);
        }
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let result = self.client.transact_write_items().set_transact_items(Some(writes.clone())).send().await;
            match result.map_err(|e| classify(&e, "TransactWriteItems create")) {
                Ok(_) => {
                    self.layout.lock().insert(campaign.id.clone(), count);
                    self.terms.lock().insert(campaign.id.clone(), campaign.clone());
                    return Ok(());
                }
                Err(Attempt::Cancelled { shard_moved: true, .. }) => return Err(StoreError::Conflict),
                Err(Attempt::Cancelled { conflict: true, .. } | Attempt::Busy(_)) => continue,
                // The create may have applied: what is stored now decides.
                Err(Attempt::Unknown(e)) => {
                    return match self.read_campaign(&campaign.id).await? {
                        Some((c, _)) if &c == campaign => Ok(()),
                        Some(_) => Err(StoreError::Conflict),
                        None => Err(e.into()),
                    };
                }
                Err(Attempt::Cancelled { .. }) => {
                    return Err(
                        DynamoError::Corrupt(format!("stock of new campaign {} already exists", campaign.id)).into()
                    );
                }
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
        Err(DynamoError::Contended.into())
    }

    async fn update_campaign(&self, next: &Campaign, expected: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (stored, count) = self.read_campaign(&next.id).await?.ok_or(StoreError::NotFound)?;
            // The time now that the read is in: an edit that retries, or whose read is slow,
            // past the opening must find it open.
            let at = now + started.elapsed();
            if stored.version != expected {
                return Err(StoreError::VersionMismatch { current: stored.version });
            }
            if stored.window_at(at) != Status::Scheduled {
                return Err(StoreError::Frozen);
            }
            let mut writes = vec![version_swap(&self.tables.campaigns, next, count, expected)?];
            // Every shard is rewritten for the new terms, on condition that it issued nothing
            // and, in the transaction itself, has not opened (a read alone would let an edit
            // read just before the opening commit after it): the same items the claims
            // decrement, so an edit and a claim can never both land.
            for shard in Shard::layout(next, count) {
                let put = Put::builder()
                    .table_name(&self.tables.stock)
                    .set_item(Some(shard.item()))
                    .condition_expression("#left = #size AND #v = :v AND #opens > :now")
                    .expression_attribute_names("#left", "remaining")
                    .expression_attribute_names("#size", "size")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_names("#opens", "opens_at")
                    .expression_attribute_values(":v", n(expected))
                    .expression_attribute_values(":now", n(items::millis(at)))
                    .build()
                    .map_err(DynamoError::from)?;
                writes.push(TransactWriteItem::builder().put(put).build());
            }
            let result = self.client.transact_write_items().set_transact_items(Some(writes)).send().await;
            match result.map_err(|e| classify(&e, "TransactWriteItems edit")) {
                Ok(_) => {
                    self.terms.lock().insert(next.id.clone(), next.clone());
                    self.empty.lock().retain(|k| !k.starts_with(&format!("{}#", next.id)));
                    return Ok(());
                }
                Err(Attempt::Cancelled { conflict: true, .. } | Attempt::Busy(_)) => continue,
                Err(Attempt::Cancelled { shard_moved: true, .. }) => continue, // the version moved: re-read says how
                Err(Attempt::Cancelled { .. }) => return Err(StoreError::Frozen), // a shard has issued
                Err(Attempt::Unknown(e)) => match self.read_campaign(&next.id).await? {
                    Some((c, _)) if &c == next => return Ok(()),
                    _ => return Err(e.into()),
                },
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
        Err(DynamoError::Contended.into())
    }

    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        let started = tokio::time::Instant::now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let now = firstcome_core::truncate_to_millis(now + started.elapsed());
            let (stored, count) = self.read_campaign(id).await?.ok_or(StoreError::NotFound)?;
            let outcome = stored.end_at(now);
            let EndOutcome::Ended(ended) = &outcome else { return Ok(outcome) };
            let closes = n(items::millis(now));
            let mut writes = vec![version_swap(&self.tables.campaigns, ended, count, stored.version)?];
            for k in 0..count {
                let update = Update::builder()
                    .table_name(&self.tables.stock)
                    .key("shard", s(items::shard_key(id, k)))
                    .update_expression("SET #closes = :closes, #v = :next")
                    .condition_expression("#v = :v")
                    .expression_attribute_names("#closes", "closes_at")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_values(":closes", closes.clone())
                    .expression_attribute_values(":next", n(ended.version))
                    .expression_attribute_values(":v", n(stored.version))
                    .build()
                    .map_err(DynamoError::from)?;
                writes.push(TransactWriteItem::builder().update(update).build());
            }
            let result = self.client.transact_write_items().set_transact_items(Some(writes)).send().await;
            match result.map_err(|e| classify(&e, "TransactWriteItems end")) {
                Ok(_) => {
                    self.terms.lock().insert(id.clone(), ended.clone());
                    return Ok(outcome);
                }
                Err(Attempt::Cancelled { .. } | Attempt::Busy(_)) => continue,
                Err(Attempt::Unknown(e)) => match self.read_campaign(id).await? {
                    Some((c, _)) if &c == ended => return Ok(outcome),
                    _ => return Err(e.into()),
                },
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
        Err(DynamoError::Contended.into())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        Ok(self.read_campaign(id).await?.map(|(c, _)| c))
    }

    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        let q = self.campaigns_query(after, limit.clamp(1, 1000) as i32);
        let mut out = Vec::new();
        let mut pages = q.into_paginator().send();
        while out.len() < limit
            && let Some(page) = pages.next().await
        {
            let page = page.map_err(|e| DynamoError::sdk("Query campaigns", &e))?;
            for item in page.items() {
                out.push(items::campaign_from(item)?.0);
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Replaces the campaign item if its version is still `expected`.
fn version_swap(table: &str, next: &Campaign, shards: u32, expected: u64) -> Result<TransactWriteItem, DynamoError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(items::campaign_item(next, shards)?))
        .condition_expression("#v = :v")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":v", n(expected))
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
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
            Err(StoreError::Unavailable(e)) if maybe_applied => Err(StoreError::Unknown(e)),
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

#[async_trait]
impl LedgerStore for DynamoStore {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.ledger)
            .set_item(Some(items::ledger_item(record, OffsetDateTime::now_utc())))
            .condition_expression("attribute_not_exists(#code)")
            .expression_attribute_names("#code", "code")
            .send()
            .await;
        match result {
            Ok(_) => Ok(LedgerWrite::Inserted),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(LedgerWrite::Duplicate),
            Err(e) => Err(DynamoError::sdk("PutItem ledger", &e).into()),
        }
    }

    async fn ledger_written(&self, id: &CampaignId) -> Result<u64, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.tables.ledger)
            .index_name("by_campaign")
            .key_condition_expression("#c = :c")
            .expression_attribute_names("#c", "campaign")
            .expression_attribute_values(":c", s(id.as_str()))
            .select(Select::Count)
            .into_paginator()
            .send();
        let mut total = 0u64;
        while let Some(page) = pages.next().await {
            total += page.map_err(|e| DynamoError::sdk("Query ledger count", &e))?.count() as u64;
        }
        Ok(total)
    }
}

/// Where a listing of the `unledgered` index stopped: a campaign, one of its shards and, within
/// that shard, the last item listed (the index's key: issued_at, then the claim's user).
#[derive(Debug, Clone, PartialEq)]
struct UnledgeredCursor {
    campaign: CampaignId,
    shard: u32,
    after: Option<(i64, String)>,
}

impl UnledgeredCursor {
    fn encode(&self) -> String {
        let after = self.after.as_ref().map(|(at, user)| serde_json::json!([at, user]));
        serde_json::json!({ "campaign": self.campaign.as_str(), "shard": self.shard, "after": after }).to_string()
    }

    fn decode(text: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::unavailable(DynamoError::Corrupt(format!("not a reconciler cursor: {text:?}")));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let campaign = v["campaign"].as_str().and_then(|c| CampaignId::parse(c).ok()).ok_or_else(bad)?;
        let shard = v["shard"].as_u64().and_then(|k| u32::try_from(k).ok()).ok_or_else(bad)?;
        let after = match &v["after"] {
            serde_json::Value::Null => None,
            a => Some((a[0].as_i64().ok_or_else(bad)?, a[1].as_str().ok_or_else(bad)?.to_owned())),
        };
        Ok(Self { campaign, shard, after })
    }
}

/// The claims the ledger has not acknowledged yet, from the sparse `unledgered` index (keyed by
/// shard, sorted by `issued_at`): one query per shard with the time range in the key condition,
/// a limit, and a cursor, so a run costs what it lists, however large the index grows.
#[async_trait]
impl firstcome_core::Unledgered for DynamoStore {
    async fn unledgered(
        &self,
        from: Option<OffsetDateTime>,
        before: OffsetDateTime,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<IssuanceRecord>, Option<String>), StoreError> {
        let range = (from.map_or(0, items::millis), items::millis(before) - 1);
        let mut out = Vec::new();
        let mut at = cursor.map(UnledgeredCursor::decode).transpose()?;
        // Campaigns in id order, from the cursor's (re-read: it carries the shard count).
        let mut listed_after = at.as_ref().map(|c| c.campaign.clone());
        let mut queue: std::collections::VecDeque<(Campaign, u32)> = Default::default();
        if let Some(c) = &at
            && let Some(found) = self.read_campaign(&c.campaign).await?
        {
            queue.push_back(found);
        }
        loop {
            if queue.is_empty() {
                let page = self.campaign_page(listed_after.as_ref()).await?;
                let Some(last) = page.last() else { return Ok((out, None)) };
                listed_after = Some(last.0.id.clone());
                queue.extend(page);
            }
            let (campaign, shards) = queue.pop_front().expect("refilled above");
            let resume = at.take().filter(|c| c.campaign == campaign.id);
            for k in resume.as_ref().map_or(0, |c| c.shard)..shards {
                let after = resume.as_ref().filter(|c| c.shard == k).and_then(|c| c.after.clone());
                let (records, last) = self.unledgered_shard(&campaign, k, range, after, limit - out.len()).await?;
                out.extend(records);
                if out.len() >= limit {
                    let next = match last {
                        Some(after) => UnledgeredCursor { campaign: campaign.id.clone(), shard: k, after: Some(after) },
                        None => UnledgeredCursor { campaign: campaign.id.clone(), shard: k + 1, after: None },
                    };
                    return Ok((out, Some(next.encode())));
                }
            }
        }
    }

    async fn oldest_unledgered(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut oldest: Option<OffsetDateTime> = None;
        let mut after = None;
        loop {
            let page = self.campaign_page(after.as_ref()).await?;
            let Some(last) = page.last() else { return Ok(oldest) };
            after = Some(last.0.id.clone());
            for (campaign, shards) in &page {
                for k in 0..*shards {
                    let (first, _) = self.unledgered_shard(campaign, k, (0, i64::MAX), None, 1).await?;
                    if let Some(r) = first.first() {
                        oldest = Some(oldest.map_or(r.issued_at, |o| o.min(r.issued_at)));
                    }
                }
            }
        }
    }
}

impl DynamoStore {
    /// The admin list's query: campaigns in id order after `after`, `limit` per page.
    fn campaigns_query(
        &self,
        after: Option<&CampaignId>,
        limit: i32,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let q = self
            .client
            .query()
            .table_name(&self.tables.campaigns)
            .index_name("by_id")
            .expression_attribute_names("#l", "listed")
            .expression_attribute_values(":l", s(items::LISTED))
            .limit(limit);
        match after {
            Some(a) => q
                .key_condition_expression("#l = :l AND #id > :a")
                .expression_attribute_names("#id", "id")
                .expression_attribute_values(":a", s(a.as_str())),
            None => q.key_condition_expression("#l = :l"),
        }
    }

    /// Campaigns (with their shard counts) in id order after `after`, a page at a time.
    async fn campaign_page(&self, after: Option<&CampaignId>) -> Result<Vec<(Campaign, u32)>, StoreError> {
        let page =
            self.campaigns_query(after, 100).send().await.map_err(|e| DynamoError::sdk("Query campaigns", &e))?;
        Ok(page.items().iter().map(items::campaign_from).collect::<Result<_, _>>()?)
    }

    /// Up to `limit` unacknowledged claims of one shard issued within `range` (ms, inclusive),
    /// after `after`, oldest first; with the key of the last one listed when the limit cut the
    /// listing short (so there may be more).
    async fn unledgered_shard(
        &self,
        campaign: &Campaign,
        k: u32,
        range: (i64, i64),
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<(Vec<IssuanceRecord>, Option<(i64, String)>), StoreError> {
        let key = items::shard_key(&campaign.id, k);
        let mut out = Vec::new();
        // The index's key of the last item read (or DynamoDB's own LastEvaluatedKey).
        let mut start = after.map(|(at, user)| {
            HashMap::from([
                ("unledgered".to_owned(), s(&key)),
                ("issued_at".to_owned(), n(at)),
                ("campaign".to_owned(), s(campaign.id.as_str())),
                ("user".to_owned(), s(user)),
            ])
        });
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.tables.claims)
                .index_name("unledgered")
                .key_condition_expression("#u = :u AND #at BETWEEN :from AND :to")
                .expression_attribute_names("#u", "unledgered")
                .expression_attribute_names("#at", "issued_at")
                .expression_attribute_values(":u", s(&key))
                .expression_attribute_values(":from", n(range.0))
                .expression_attribute_values(":to", n(range.1))
                .set_exclusive_start_key(start.clone())
                .limit((limit - out.len()).clamp(1, 1000) as i32)
                .send()
                .await
                .map_err(|e| DynamoError::sdk("Query unledgered", &e))?;
            for item in page.items() {
                // Terms are frozen once a campaign opens, and a coupon exists only after it opened.
                out.push(IssuanceRecord::new(campaign, &items::coupon_from(item)?));
            }
            match page.last_evaluated_key() {
                Some(last) if Some(last) != start.as_ref() => start = Some(last.clone()),
                // No further page (or a page that would not move on: never ask it twice).
                _ => return Ok((out, None)),
            }
        }
        let resume = match &start {
            Some(last) => Some((items::get_n(last, "issued_at")?, items::get_s(last, "user")?.to_owned())),
            None => None,
        };
        Ok((out, resume))
    }
}

/// The `Outbox` port for the ledger function's acknowledgements; `pending` lists through the
/// same per-shard queries (oldest first within a shard), for inspection and tests.
#[async_trait]
impl Outbox for DynamoStore {
    async fn pending(&self, limit: usize) -> Result<Vec<IssuanceRecord>, StoreError> {
        let far = OffsetDateTime::now_utc() + time::Duration::days(365 * 100);
        let (mut records, _) = firstcome_core::Unledgered::unledgered(self, None, far, None, limit).await?;
        records.sort_by(|a, b| (a.issued_at, &a.campaign_id, a.seq).cmp(&(b.issued_at, &b.campaign_id, b.seq)));
        Ok(records)
    }

    async fn acknowledge(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.claims)
            .key("campaign", s(record.campaign_id.as_str()))
            .key("user", s(record.user_id.as_str()))
            .update_expression("REMOVE #pending")
            .condition_expression("#code = :code")
            .expression_attribute_names("#pending", "unledgered")
            .expression_attribute_names("#code", "code")
            .expression_attribute_values(":code", s(record.code.to_string()))
            .send()
            .await;
        match result {
            // Not this user's coupon (or no claim at all): nothing of ours to acknowledge.
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(DynamoError::sdk("UpdateItem acknowledge", &e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_follow_the_peak_and_the_limits() {
        let peak = |c| Shards::ForPeak { claims_per_s: c };
        assert_eq!(peak(100).for_total(1000), 1);
        assert_eq!(peak(250).for_total(1000), 1);
        assert_eq!(peak(251).for_total(1000), 2);
        assert_eq!(peak(10_000).for_total(1000), 40);
        assert_eq!(peak(10_000).for_total(3), 3, "never more shards than coupons");
        assert_eq!(peak(1_000_000).for_total(1_000_000), MAX_SHARDS, "one transaction must hold them all");
        assert_eq!(Shards::Fixed(0).for_total(10), 1);
        assert_eq!(Shards::Fixed(4).for_total(10), 4);
    }

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
