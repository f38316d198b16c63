//! `DynamoStore`: the store ports on DynamoDB, for the Lambdas. Stock is split over shard items so
//! the opening second spreads over partitions; a claim allocates a seq from one shard with a
//! conditional single-item write and records it with the user's claim item and the
//! allocation's marker in one transaction, so it can never over-issue or double-issue, and an
//! allocation never recorded is given back, so nothing leaks. Table layout and the reasoning:
//! docs/aws.md, "DynamoDB tables" and "The opening second on DynamoDB".
//!
//! Modules by concern: `campaigns` (create, edit, end, list), `allocation` (allocate, record,
//! give back, recovery), `claim` (the claim's steps and the reads of claims), `ledger` (the
//! ledger table and the unledgered outbox), `cache` (what a container remembers between
//! requests), `error` (what DynamoDB's answers mean), `items` (the item shapes, the only place
//! attribute names are spelled).

mod allocation;
mod cache;
mod campaigns;
mod claim;
mod error;
mod items;
mod ledger;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use firstcome_core::{Coupon, IssuanceRecord};

pub use allocation::Recovery;
pub use claim::CLAIM_ATTEMPTS;
pub use error::DynamoError;

// Every attribute in an expression goes through a `#name` placeholder: DynamoDB reserves several
// hundred words (SIZE, USER, ...), and a new reserved word must not break a deployed store.

/// DynamoDB allows 100 items per transaction; an edit writes the campaign and every shard.
pub const MAX_SHARDS: u32 = 99;
/// Attempts per claim or edit across transaction conflicts, throttling and lost answers.
const MAX_ATTEMPTS: u32 = 12;
/// Default for `with_claim_deadline`.
const CLAIM_DEADLINE: Duration = Duration::from_secs(3);

/// Claims per second at the opening planned per shard item: each is one allocation (1 WCU), and
/// an item takes 1,000 WCU/s, so half of that leaves room for two shards sharing a partition's
/// burst. Allocations never conflict, so the item's throughput, not contention, is what limits
/// a shard; the reference event (10,000 claims/s from 200 containers on 1,000 coupons) needs
/// fewer shards than this gives in the simulation (`cargo xtask capacity`; its test fails if
/// this figure would give fewer than the simulation needs). See docs/aws.md, "The opening
/// second on DynamoDB".
pub const CLAIMS_PER_SHARD_S: u32 = 500;

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
    /// `CLAIMS_PER_SHARD_S` per shard; never more shards than coupons, never more than a
    /// transaction can hold.
    pub fn for_total(self, total: u32) -> u32 {
        let wanted = match self {
            Shards::ForPeak { claims_per_s } => claims_per_s.div_ceil(CLAIMS_PER_SHARD_S),
            Shards::Fixed(k) => k,
        };
        wanted.clamp(1, MAX_SHARDS).min(total.max(1))
    }
}

pub struct DynamoStore {
    client: Client,
    tables: Tables,
    shards: Shards,
    claim_deadline: Duration,
    cache: cache::Cache,
    snapshot_loading: tokio::sync::Mutex<()>,
}

impl DynamoStore {
    pub fn new(client: Client, tables: Tables, shards: Shards) -> Self {
        Self {
            client,
            tables,
            shards,
            claim_deadline: CLAIM_DEADLINE,
            cache: cache::Cache::default(),
            snapshot_loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The issuance record of a coupon this store issued, from the campaign terms it issued it
    /// on (kept since that claim: coupon terms never change once a campaign opens); `None` when
    /// this instance does not hold them (the reconciler then sends it, from the stored terms).
    pub fn issuance_record(&self, coupon: &Coupon) -> Option<IssuanceRecord> {
        self.cache.newest_terms(&coupon.campaign_id).map(|campaign| IssuanceRecord::new(&campaign, coupon))
    }

    /// How long one claim may keep losing shard races before it answers "busy" (default 3 s,
    /// far beyond DynamoDB's latencies; an emulator that serves one request at a time needs more).
    pub fn with_claim_deadline(mut self, deadline: Duration) -> Self {
        self.claim_deadline = deadline;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_follow_the_peak_and_the_limits() {
        let peak = |c| Shards::ForPeak { claims_per_s: c };
        assert_eq!(peak(1).for_total(1000), 1);
        assert_eq!(peak(CLAIMS_PER_SHARD_S).for_total(1000), 1);
        assert_eq!(peak(CLAIMS_PER_SHARD_S + 1).for_total(1000), 2);
        assert_eq!(peak(CLAIMS_PER_SHARD_S * 20).for_total(1000), 20);
        assert_eq!(peak(10_000).for_total(3), 3, "never more shards than coupons");
        assert_eq!(peak(1_000_000).for_total(1_000_000), MAX_SHARDS, "one transaction must hold them all");
        assert_eq!(Shards::Fixed(0).for_total(10), 1);
        assert_eq!(Shards::Fixed(4).for_total(10), 4);
    }
}
