//! Allocations: a claim takes a seq from a shard with one conditional, read-free `UpdateItem`
//! (no transaction touches a shard item during an opening, so hundreds of containers writing
//! one never conflict: DynamoDB serialises single-item writes), then records it with the claim
//! item and the allocation's marker in one transaction on items nobody else writes. An
//! allocation that is not recorded (a repeat click, a claimant that died or gave up) is given
//! back: its marker is written void, then the shard takes its seq back. Recorded and given back
//! exclude each other through that one marker item, so nothing is issued twice, and recovery
//! (`recover_allocations`, from the reconciler) gives back what a dead claimant left, so
//! nothing leaks. Why this shape, with the figures: docs/aws.md, "The opening second on
//! DynamoDB".

use std::collections::HashMap;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem,
};
use firstcome_core::{CampaignId, Coupon, StoreError};
use sha2::{Digest, Sha256};

use crate::claim::backoff;
use crate::error::{Attempt, DynamoError, classify};
use crate::items::{self, Shard, n, s};
use crate::{DynamoStore, MAX_ATTEMPTS};

/// What came of recording an allocation.
pub(crate) enum Recorded {
    /// The claim item and the marker are written.
    Issued,
    /// The user already holds a coupon (this claim item's image); the allocation is given back.
    Held(Coupon),
    /// Recovery gave this allocation back before it was recorded (the claim took that long).
    Voided,
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Shards looked at.
    pub shards: u64,
    /// Allocations found neither recorded nor given back, and given back now.
    pub given_back: u64,
}

impl DynamoStore {
    /// One allocation from shard `k` at terms `version` and time `now_ms`: the shard's image
    /// after it (its `taken` is this allocation's number), or why not (a failed condition
    /// carries the shard's current image: empty, another version, outside the window).
    pub(crate) async fn allocate(&self, id: &CampaignId, k: u32, version: u64, now_ms: i64) -> Result<Shard, Attempt> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.stock)
            .key("shard", s(items::shard_key(id, k)))
            .update_expression("SET #left = #left - :one, #taken = #taken + :one")
            .condition_expression(
                "#left > :zero AND #v = :v AND #opens <= :now AND (attribute_not_exists(#closes) OR #closes > :now)",
            )
            .expression_attribute_names("#left", "remaining")
            .expression_attribute_names("#taken", "taken")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#opens", "opens_at")
            .expression_attribute_names("#closes", "closes_at")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            // Not idempotent: an SDK retry after an answer lost in transit would allocate a
            // second time and leave the first to recovery, silently. The claim's own loop
            // retries throttling, and counts a lost answer (`Attempt::Unknown`).
            .customize()
            .config_override(aws_sdk_dynamodb::config::Builder::default().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match result {
            Ok(out) => {
                let image = out.attributes().ok_or_else(|| {
                    Attempt::Failed(DynamoError::Corrupt("allocation answered without the shard's image".into()))
                })?;
                Shard::from_item(image).map_err(Attempt::Failed)
            }
            Err(e) => Err(classify(&e, "UpdateItem allocate")),
        }
    }

    /// Writes the claim item and the marker of allocation `a` of shard `k`, both only if absent; retries with the
    /// same request token (DynamoDB answers a retry of the same request with the first one's
    /// result), so a lost answer is never taken for a failure. `maybe_applied` is set once an
    /// answer was lost.
    pub(crate) async fn record(
        &self,
        k: u32,
        a: u32,
        coupon: &Coupon,
        deadline: tokio::time::Instant,
        maybe_applied: &mut bool,
    ) -> Result<Recorded, StoreError> {
        let id = &coupon.campaign_id;
        let shard = items::shard_key(id, k);
        let put = |item, key: &str| {
            Put::builder()
                .table_name(&self.tables.claims)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#u)")
                .expression_attribute_names("#u", key)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .map(|p| TransactWriteItem::builder().put(p).build())
                .map_err(DynamoError::from)
        };
        let claim = put(items::claim_item(coupon, &shard), "user")?;
        let marker = put(items::marker_item(id, k, a, items::MARKER_ISSUED), "user")?;
        let token = request_token(coupon, &shard, a);
        let mut busy = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .transact_items(claim.clone())
                .transact_items(marker.clone())
                .client_request_token(&token)
                .send()
                .await;
            let failure = match result.map_err(|e| classify(&e, "TransactWriteItems record")) {
                Ok(_) => return Ok(Recorded::Issued),
                Err(Attempt::Cancelled { first_failed: true, first, .. }) => {
                    let held = match first {
                        Some(item) => items::coupon_from(&item)?,
                        None => self.claim_item(id, &coupon.user_id).await?.ok_or_else(|| {
                            DynamoError::Corrupt(format!("claim of {} refused but not found", coupon.user_id))
                        })?,
                    };
                    self.give_back(id, k, a, coupon.seq).await?;
                    return Ok(Recorded::Held(held));
                }
                Err(Attempt::Cancelled { .. }) => {
                    // Only a void marker means recovery gave this allocation back (and the
                    // shard has its seq again). Anything else is not a reason to move on: an
                    // allocation dropped here would be a coupon nobody can have.
                    match self.marker_state(id, k, a).await?.as_deref() {
                        Some(items::MARKER_VOID) => return Ok(Recorded::Voided),
                        Some(_) => {
                            return Err(DynamoError::Corrupt(format!(
                                "shard {shard}: allocation {a} recorded by another claim"
                            ))
                            .into());
                        }
                        // Cancelled, yet neither item is there: retried like a throttle.
                        None => DynamoError::Sdk {
                            op: "TransactWriteItems record",
                            message: format!("{shard} allocation {a}: cancelled, and its marker is absent"),
                            code: None,
                        },
                    }
                }
                Err(Attempt::Failed(e)) => return Err(e.into()),
                Err(Attempt::Unknown(e)) => {
                    *maybe_applied = true;
                    tracing::warn!(error = %e, campaign = %id, "record outcome unknown; retrying the same request");
                    e
                }
                Err(Attempt::Busy(e) | Attempt::Conflict(e)) => e,
            };
            busy += 1;
            // Past this, the allocation stays unrecorded: recovery gives it back within two
            // reconciler runs (or finds it recorded, if the last answer was lost but applied).
            if busy >= MAX_ATTEMPTS || tokio::time::Instant::now() >= deadline {
                tracing::warn!(error = %failure, campaign = %id, "allocation left unrecorded; recovery gives it back");
                return Err(DynamoError::Contended { attempts: busy, waited_ms: 0 }.into());
            }
            backoff(busy).await;
        }
    }

    /// Gives allocation `a` (seq `seq`) of shard `k` back, unless it was recorded: its marker
    /// written void (only if absent: a recorded marker stays), then the shard's return (only
    /// once per allocation). Both steps are idempotent, so a give-back cut short is finished by
    /// the next one. Whether this call gave it back (`false`: it had been recorded).
    pub(crate) async fn give_back(&self, id: &CampaignId, k: u32, a: u32, seq: u32) -> Result<bool, DynamoError> {
        let mut attempt = 0;
        let void = loop {
            let result = self
                .client
                .put_item()
                .table_name(&self.tables.claims)
                .set_item(Some(items::marker_item(id, k, a, items::MARKER_VOID)))
                .condition_expression("attribute_not_exists(#u)")
                .expression_attribute_names("#u", "user")
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result.map_err(|e| classify(&e, "PutItem void marker")) {
                Ok(_) => break true,
                Err(Attempt::Cancelled { first: Some(marker), .. }) => {
                    break items::get_s(&marker, "state")? == items::MARKER_VOID;
                }
                Err(Attempt::Cancelled { .. }) => {
                    break self.marker_state(id, k, a).await?.as_deref() == Some(items::MARKER_VOID);
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Busy(e) | Attempt::Conflict(e) | Attempt::Unknown(e)) => retry(&mut attempt, e).await?,
            }
        };
        if !void {
            return Ok(false);
        }
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .update_item()
                .table_name(&self.tables.stock)
                .key("shard", s(items::shard_key(id, k)))
                .update_expression("SET #left = #left + :one, #ret = list_append(#ret, :seq) ADD #void :a")
                .condition_expression("attribute_not_exists(#void) OR NOT contains(#void, :an)")
                .expression_attribute_names("#left", "remaining")
                .expression_attribute_names("#ret", "returned")
                .expression_attribute_names("#void", "voided")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":seq", AttributeValue::L(vec![n(seq)]))
                .expression_attribute_values(":a", AttributeValue::Ns(vec![a.to_string()]))
                .expression_attribute_values(":an", n(a))
                .send()
                .await;
            match result.map_err(|e| classify(&e, "UpdateItem give back")) {
                Ok(_) => {
                    tracing::info!(campaign = %id, shard = k, allocation = a, seq, "allocation given back");
                    return Ok(true);
                }
                // Given back already (a give-back cut short and finished since).
                Err(Attempt::Cancelled { .. }) => return Ok(true),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Busy(e) | Attempt::Conflict(e) | Attempt::Unknown(e)) => retry(&mut attempt, e).await?,
            }
        }
    }

    async fn marker_state(&self, id: &CampaignId, k: u32, a: u32) -> Result<Option<String>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.claims)
            .key("campaign", s(id.as_str()))
            .key("user", s(items::marker_key(k, a)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DynamoError::sdk("GetItem marker", &e))?;
        out.item().map(|m| items::get_s(m, "state").map(str::to_owned)).transpose()
    }

    /// Gives back every allocation that is old enough and neither recorded nor given back, on
    /// every shard of every campaign. "Old enough": at or under the `mark` the previous pass
    /// left, so a live claim has had a whole reconciler interval to record it (and if it still
    /// records it later, its transaction finds the void marker and fails: recorded and given
    /// back never both happen). The reconciler calls this once per run.
    pub async fn recover_allocations(&self) -> Result<Recovery, StoreError> {
        let mut done = Recovery::default();
        let mut after = None;
        loop {
            let page = self.campaign_page(after.as_ref()).await?;
            let Some(last) = page.last() else { return Ok(done) };
            after = Some(last.0.id.clone());
            for (campaign, count) in &page {
                for k in 0..*count {
                    done.shards += 1;
                    done.given_back += self.recover_shard(&campaign.id, k).await?;
                }
            }
        }
    }

    async fn recover_shard(&self, id: &CampaignId, k: u32) -> Result<u64, StoreError> {
        let Some(shard) = self.read_shard(&items::shard_key(id, k)).await? else { return Ok(0) };
        let mut given_back = 0;
        if shard.mark > shard.checked {
            let markers = self.markers(id, k, shard.checked + 1, shard.mark).await?;
            for a in shard.checked + 1..=shard.mark {
                let settled = match markers.get(&a).map(String::as_str) {
                    Some(items::MARKER_ISSUED) => true,
                    Some(_) => shard.voided.contains(&a),
                    None => false,
                };
                if !settled {
                    let seq = shard.seq_of(a).ok_or_else(|| {
                        DynamoError::Corrupt(format!("shard {}: allocation {a} has no seq", shard.key))
                    })?;
                    given_back += u64::from(self.give_back(id, k, a, seq).await?);
                }
            }
        }
        if shard.taken > shard.mark || shard.mark > shard.checked {
            let result = self
                .client
                .update_item()
                .table_name(&self.tables.stock)
                .key("shard", s(&shard.key))
                .update_expression("SET #checked = :mark, #mark = :taken")
                .condition_expression("#checked = :checked AND #mark = :mark")
                .expression_attribute_names("#checked", "checked")
                .expression_attribute_names("#mark", "mark")
                .expression_attribute_values(":checked", n(shard.checked))
                .expression_attribute_values(":mark", n(shard.mark))
                .expression_attribute_values(":taken", n(shard.taken))
                .send()
                .await;
            match result.map_err(|e| classify(&e, "UpdateItem recovery mark")) {
                // Another pass moved it on (or an edit rewrote the shard): its own pass decides.
                Ok(_) | Err(Attempt::Cancelled { .. }) => {}
                Err(Attempt::Failed(e) | Attempt::Busy(e) | Attempt::Conflict(e) | Attempt::Unknown(e)) => {
                    return Err(e.into());
                }
            }
        }
        Ok(given_back)
    }

    /// A strongly consistent query of campaign `id`'s claim items (`#c = :c`, sort key `#u`):
    /// the markers live there, under their prefix.
    fn marker_query(&self, id: &CampaignId) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.claims)
            .expression_attribute_names("#c", "campaign")
            .expression_attribute_names("#u", "user")
            .expression_attribute_values(":c", s(id.as_str()))
            .consistent_read(true)
    }

    /// Whether some allocation of these shards is neither recorded nor given back yet: every
    /// allocation ends with one marker (issued, or void and then returned to the shard, which
    /// notes it in `voided`), so a shard with fewer markers than allocations, or more void
    /// markers than returns, has one in flight (a record, or a repeat click giving its seq
    /// back) or stranded (until recovery).
    pub(crate) async fn unsettled(&self, id: &CampaignId, shards: &[Shard]) -> Result<bool, DynamoError> {
        for (k, shard) in (0u32..).zip(shards) {
            if shard.taken == 0 {
                continue;
            }
            let mut pages = self
                .marker_query(id)
                .key_condition_expression("#c = :c AND begins_with(#u, :p)")
                .expression_attribute_values(":p", s(items::marker_prefix(k)))
                .filter_expression("#st = :void")
                .expression_attribute_names("#st", "state")
                .expression_attribute_values(":void", s(items::MARKER_VOID))
                .select(Select::Count)
                .into_paginator()
                .send();
            // Scanned: every marker; counted (the filter): the void ones.
            let (mut markers, mut void) = (0u64, 0u64);
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| DynamoError::sdk("Query marker count", &e))?;
                markers += page.scanned_count() as u64;
                void += page.count() as u64;
            }
            if markers < u64::from(shard.taken) || void > shard.voided.len() as u64 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The markers of allocations `from..=to` of shard `k`: allocation number -> state.
    async fn markers(&self, id: &CampaignId, k: u32, from: u32, to: u32) -> Result<HashMap<u32, String>, DynamoError> {
        let mut pages = self
            .marker_query(id)
            .key_condition_expression("#c = :c AND #u BETWEEN :from AND :to")
            .expression_attribute_values(":from", s(items::marker_key(k, from)))
            .expression_attribute_values(":to", s(items::marker_key(k, to)))
            .into_paginator()
            .send();
        let mut out = HashMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| DynamoError::sdk("Query markers", &e))?;
            for item in page.items() {
                let a = items::marker_allocation(items::get_s(item, "user")?, k)
                    .ok_or_else(|| DynamoError::Corrupt(format!("marker key {:?}", item.get("user"))))?;
                out.insert(a, items::get_s(item, "state")?.to_owned());
            }
        }
        Ok(out)
    }
}

/// Bounded retries of an idempotent step.
async fn retry(attempt: &mut u32, e: DynamoError) -> Result<(), DynamoError> {
    *attempt += 1;
    if *attempt >= MAX_ATTEMPTS {
        return Err(e);
    }
    backoff(*attempt).await;
    Ok(())
}

/// Derived from campaign, user, the allocation and the code, at most 36 characters as DynamoDB
/// requires: the same record retried is recognised as the same request.
fn request_token(coupon: &Coupon, shard: &str, a: u32) -> String {
    let mut h = Sha256::new();
    for part in [coupon.campaign_id.as_str(), coupon.user_id.as_str(), shard] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(a.to_be_bytes());
    h.update(coupon.code.as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use firstcome_core::CouponCode;

    use super::*;

    #[test]
    fn request_tokens_name_one_record() {
        let c = firstcome_core::testkit::open_campaign("tokens", 10);
        let coupon =
            c.coupon_for(firstcome_core::testkit::user(1), CouponCode::generate(), 1, firstcome_core::testkit::now());
        let token = request_token(&coupon, "tokens#000", 1);
        assert_eq!(token.len(), 32);
        assert_eq!(token, request_token(&coupon, "tokens#000", 1));
        assert_ne!(token, request_token(&coupon, "tokens#000", 2));
        assert_ne!(token, request_token(&coupon, "tokens#001", 1));
        let other = Coupon { code: CouponCode::generate(), ..coupon };
        assert_ne!(token, request_token(&other, "tokens#000", 1));
    }
}
