//! What one container remembers between requests: facts that never change once learned (shard
//! counts, terms by version, final winners) and hints that an allocation's condition checks
//! anyway (the shard this container allocates from, shards seen empty). A hint may be stale; it
//! may only save a round trip, never decide an answer on its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstcome_core::{Campaign, CampaignId, Coupon};
use parking_lot::Mutex;
use rand::seq::IndexedRandom;

use crate::items::{Shard, shard_key};

/// How often an incomplete winners snapshot (the index lagging) is tried again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Cache {
    /// Shard count per campaign: fixed at creation, so cached for good.
    layout: Mutex<HashMap<CampaignId, u32>>,
    /// The campaign's newest terms seen (a claim's condition pins the version it used).
    terms: Mutex<HashMap<CampaignId, Campaign>>,
    /// The shard this container allocates from, per campaign: containers spread over the
    /// shards at random and stay until it is empty.
    home: Mutex<HashMap<CampaignId, u32>>,
    /// Shards seen empty: never picked again (confirmed by a read of all before sold out).
    empty: Mutex<HashSet<String>>,
    /// Campaigns a consistent read showed sold out: their winners can no longer change.
    sold_out: Mutex<HashSet<CampaignId>>,
    /// The complete, final winners of sold-out campaigns (user id -> coupon).
    winners: Mutex<HashMap<CampaignId, Arc<HashMap<String, Coupon>>>>,
    /// When a winners snapshot was last found incomplete (the index lagging), to retry sparingly.
    snapshot_tried: Mutex<HashMap<CampaignId, Instant>>,
}

impl Cache {
    pub fn shard_count(&self, id: &CampaignId) -> Option<u32> {
        self.layout.lock().get(id).copied()
    }

    /// A campaign as read from the table, with its shard count.
    pub fn saw_campaign(&self, c: &Campaign, shards: u32) {
        self.layout.lock().insert(c.id.clone(), shards);
        let mut terms = self.terms.lock();
        if terms.get(&c.id).is_none_or(|t| t.version < c.version) {
            terms.insert(c.id.clone(), c.clone());
        }
    }

    /// A campaign this container wrote: its terms are the newest, whatever was seen before.
    pub fn wrote_campaign(&self, c: &Campaign, shards: Option<u32>) {
        if let Some(k) = shards {
            self.layout.lock().insert(c.id.clone(), k);
        }
        self.terms.lock().insert(c.id.clone(), c.clone());
        let prefix = format!("{}#", c.id);
        self.empty.lock().retain(|k| !k.starts_with(&prefix));
    }

    pub fn newest_terms(&self, id: &CampaignId) -> Option<Campaign> {
        self.terms.lock().get(id).cloned()
    }

    /// A shard as read or as an allocation left it: empty or not.
    pub fn saw_shard(&self, shard: &Shard) {
        if shard.remaining == 0 {
            self.empty.lock().insert(shard.key.clone());
        } else {
            self.empty.lock().remove(&shard.key);
        }
    }

    /// Shards of campaign `id` not known empty, but `except`.
    fn open_shards(&self, id: &CampaignId, count: u32, except: Option<u32>) -> Vec<u32> {
        let empty = self.empty.lock();
        (0..count).filter(|k| Some(*k) != except && !empty.contains(&shard_key(id, *k))).collect()
    }

    /// This container's home shard while it is not known empty, else a random one not known
    /// empty (which becomes home); `None` when all look empty.
    pub fn pick(&self, id: &CampaignId, count: u32) -> Option<u32> {
        let home = self.home.lock().get(id).copied();
        if let Some(k) = home
            && !self.empty.lock().contains(&shard_key(id, k))
        {
            return Some(k);
        }
        let k = *self.open_shards(id, count, None).choose(&mut rand::rng())?;
        self.home.lock().insert(id.clone(), k);
        Some(k)
    }

    /// All shards looked empty but a read of them all found stock: forget the hints.
    pub fn not_all_empty(&self, id: &CampaignId) {
        let prefix = format!("{id}#");
        self.empty.lock().retain(|k| !k.starts_with(&prefix));
    }

    pub fn mark_sold_out(&self, id: &CampaignId) {
        self.sold_out.lock().insert(id.clone());
    }

    pub fn is_sold_out(&self, id: &CampaignId) -> bool {
        self.sold_out.lock().contains(id)
    }

    pub fn winners(&self, id: &CampaignId) -> Option<Arc<HashMap<String, Coupon>>> {
        self.winners.lock().get(id).cloned()
    }

    pub fn keep_winners(&self, id: &CampaignId, winners: Arc<HashMap<String, Coupon>>) {
        self.winners.lock().insert(id.clone(), winners);
    }

    /// Whether a winners snapshot was tried within the last second for this campaign.
    pub fn recently_tried_snapshot(&self, id: &CampaignId) -> bool {
        self.snapshot_tried.lock().get(id).is_some_and(|t| t.elapsed() < SNAPSHOT_RETRY)
    }

    /// Whether a winners snapshot may be tried now (not within the last second); marks the try.
    pub fn try_snapshot(&self, id: &CampaignId) -> bool {
        if self.recently_tried_snapshot(id) {
            return false;
        }
        self.snapshot_tried.lock().insert(id.clone(), Instant::now());
        true
    }
}
