//! The ledger table, and the claims' sparse `unledgered` index as the outbox the ledger function
//! acknowledges and the reconciler lists (per shard, by `issued_at`, with a cursor).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::Select;
use firstcome_core::{Campaign, CampaignId, IssuanceRecord, LedgerStore, LedgerWrite, Outbox, StoreError};
use time::OffsetDateTime;

use crate::DynamoStore;
use crate::error::DynamoError;
use crate::items::{self, n, s};

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
