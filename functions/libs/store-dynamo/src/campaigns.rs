//! Campaigns on DynamoDB: the campaign item (terms as JSON, version, shard count) and its shard
//! items, created, edited and ended in one transaction each, so a claim's conditions on a
//! shard always see the terms it was written for.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use firstcome_core::{Campaign, CampaignId, CampaignStore, EndOutcome, Status, StoreError};
use time::OffsetDateTime;

use crate::claim::backoff;
use crate::error::{Attempt, DynamoError, classify};
use crate::items::{self, Item, Shard, n, s};
use crate::{DynamoStore, MAX_ATTEMPTS};

impl DynamoStore {
    pub(crate) async fn read_campaign(&self, id: &CampaignId) -> Result<Option<(Campaign, u32)>, DynamoError> {
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
        self.cache.saw_campaign(&c, shards);
        Ok(Some((c, shards)))
    }

    /// The campaign's shard count, or `None` if it does not exist.
    pub(crate) async fn shard_count(&self, id: &CampaignId) -> Result<Option<u32>, DynamoError> {
        if let Some(k) = self.cache.shard_count(id) {
            return Ok(Some(k));
        }
        Ok(self.read_campaign(id).await?.map(|(_, k)| k))
    }

    /// The admin list's query: campaigns in id order after `after`, `limit` per page.
    pub(crate) fn campaigns_query(
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
    pub(crate) async fn campaign_page(&self, after: Option<&CampaignId>) -> Result<Vec<(Campaign, u32)>, StoreError> {
        let page =
            self.campaigns_query(after, 100).send().await.map_err(|e| DynamoError::sdk("Query campaigns", &e))?;
        Ok(page.items().iter().map(items::campaign_from).collect::<Result<_, _>>()?)
    }
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
                    self.cache.wrote_campaign(campaign, Some(count));
                    return Ok(());
                }
                Err(Attempt::Cancelled { first_failed: true, .. }) => return Err(StoreError::Conflict),
                Err(Attempt::Busy(_) | Attempt::Conflict(_)) => continue,
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
        Err(DynamoError::Contended { attempts: MAX_ATTEMPTS, waited_ms: 0 }.into())
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
            // Every shard is rewritten for the new terms, on condition that it allocated nothing
            // (not even a seq later given back) and, in the transaction itself, has not opened (a read alone would let an edit
            // read just before the opening commit after it): the same items the claims
            // allocate from, so an edit and a claim can never both land.
            for shard in Shard::layout(next, count) {
                let put = Put::builder()
                    .table_name(&self.tables.stock)
                    .set_item(Some(shard.item()))
                    .condition_expression("#taken = :zero AND #v = :v AND #opens > :now")
                    .expression_attribute_names("#taken", "taken")
                    .expression_attribute_values(":zero", n(0))
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
                    self.cache.wrote_campaign(next, None);
                    return Ok(());
                }
                Err(Attempt::Busy(_) | Attempt::Conflict(_)) => continue,
                Err(Attempt::Cancelled { first_failed: true, .. }) => continue, // the version moved: re-read says how
                Err(Attempt::Cancelled { .. }) => return Err(StoreError::Frozen), // a shard has issued
                Err(Attempt::Unknown(e)) => match self.read_campaign(&next.id).await? {
                    Some((c, _)) if &c == next => return Ok(()),
                    _ => return Err(e.into()),
                },
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
        Err(DynamoError::Contended { attempts: MAX_ATTEMPTS, waited_ms: started.elapsed().as_millis() as u64 }.into())
    }

    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        let started = tokio::time::Instant::now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            // The first attempt ends at the time asked; a retry at its own time, so a claim
            // still retrying after the answer finds the campaign closed. (Adding the first
            // attempt's sub-millisecond head start moved `closes_at` a millisecond past the time
            // asked whenever this task was preempted before it: the contract test caught it.)
            let now = firstcome_core::truncate_to_millis(if attempt == 0 { now } else { now + started.elapsed() });
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
                    self.cache.wrote_campaign(ended, None);
                    return Ok(outcome);
                }
                Err(Attempt::Cancelled { .. } | Attempt::Busy(_) | Attempt::Conflict(_)) => continue,
                Err(Attempt::Unknown(e)) => match self.read_campaign(id).await? {
                    Some((c, _)) if &c == ended => return Ok(outcome),
                    _ => return Err(e.into()),
                },
                Err(Attempt::Failed(e)) => return Err(e.into()),
            }
        }
        Err(DynamoError::Contended { attempts: MAX_ATTEMPTS, waited_ms: started.elapsed().as_millis() as u64 }.into())
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
