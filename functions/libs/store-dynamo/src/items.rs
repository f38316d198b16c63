//! Item shapes of the four tables and their conversions; the only place attribute names are spelled.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use firstcome_core::{Campaign, CampaignId, Coupon, CouponCode, IssuanceRecord, Status, UserId};
use time::OffsetDateTime;

use crate::DynamoError;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The constant partition of the sparse `by_id` index that lists campaigns in id order.
pub(crate) const LISTED: &str = "campaign";

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64, what: &str) -> Result<OffsetDateTime, DynamoError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| DynamoError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn get_s<'a>(item: &'a Item, key: &str) -> Result<&'a str, DynamoError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(DynamoError::Corrupt(format!("attribute {key} missing or not a string"))),
    }
}

pub(crate) fn get_n<T: FromStr>(item: &Item, key: &str) -> Result<T, DynamoError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| DynamoError::Corrupt(format!("attribute {key} = {v} is out of range")))
        }
        _ => Err(DynamoError::Corrupt(format!("attribute {key} missing or not a number"))),
    }
}

/// Stock shard key: the campaign id (a slug, never containing '#') and the shard number.
pub(crate) fn shard_key(id: &CampaignId, k: u32) -> String {
    format!("{id}#{k:03}")
}

// ---------------------------------------------------------------- campaigns

/// The whole campaign as JSON (the core's own serde form), plus the few attributes conditions
/// and the index need.
pub(crate) fn campaign_item(c: &Campaign, shards: u32) -> Result<Item, DynamoError> {
    let body = serde_json::to_string(c).map_err(|e| DynamoError::Corrupt(format!("campaign body: {e}")))?;
    Ok(HashMap::from([
        ("id".into(), s(c.id.as_str())),
        ("listed".into(), s(LISTED)),
        ("body".into(), s(body)),
        ("version".into(), n(c.version)),
        ("shards".into(), n(shards)),
    ]))
}

pub(crate) fn campaign_from(item: &Item) -> Result<(Campaign, u32), DynamoError> {
    let c: Campaign =
        serde_json::from_str(get_s(item, "body")?).map_err(|e| DynamoError::Corrupt(format!("campaign body: {e}")))?;
    if get_n::<u64>(item, "version")? != c.version || get_s(item, "id")? != c.id.as_str() {
        return Err(DynamoError::Corrupt(format!("campaign {}: attributes disagree with the body", c.id)));
    }
    let shards = get_n(item, "shards")?;
    if !(1..=crate::MAX_SHARDS).contains(&shards) {
        return Err(DynamoError::Corrupt(format!("campaign {}: {shards} shards", c.id)));
    }
    Ok((c, shards))
}

// ---------------------------------------------------------------- stock shards

/// One shard: it owns seq `start..start + size` and hands them out by allocation number, one
/// conditional `UpdateItem` each (`taken` counts allocations: allocation `a <= size` is seq
/// `start + a - 1`, allocation `size + i` is `returned[i - 1]`, a seq given back). `remaining`
/// is what can still be allocated: `size + returned.len() - taken`. An allocation becomes a
/// coupon when its marker and the claim item are written; `voided` lists the allocations given
/// back (their marker void), `checked` is the allocation up to which every one is known to be
/// recorded or given back, and `mark` the `taken` the last recovery pass saw (what it may
/// check on the next one). It carries the campaign's window and version so that an
/// allocation checks them on the item it writes anyway (a condition on the campaign item would
/// make that one item every claim's hot spot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    pub key: String,
    pub start: u32,
    pub size: u32,
    pub remaining: u32,
    pub taken: u32,
    pub returned: Vec<u32>,
    pub voided: Vec<u32>,
    pub checked: u32,
    pub mark: u32,
    pub version: u64,
    pub opens_at: i64,
    pub closes_at: Option<i64>,
}

impl Shard {
    /// Splits `c.total` over `shards` contiguous ranges, the first ones one larger when it does
    /// not divide evenly (some are empty when total < shards).
    pub fn layout(c: &Campaign, shards: u32) -> Vec<Shard> {
        let (base, extra) = (c.total / shards, c.total % shards);
        let mut start = 1;
        (0..shards)
            .map(|k| {
                let size = base + u32::from(k < extra);
                let shard = Shard {
                    key: shard_key(&c.id, k),
                    start,
                    size,
                    remaining: size,
                    taken: 0,
                    returned: Vec::new(),
                    voided: Vec::new(),
                    checked: 0,
                    mark: 0,
                    version: c.version,
                    opens_at: millis(c.opens_at),
                    closes_at: c.closes_at.map(millis),
                };
                start += size;
                shard
            })
            .collect()
    }

    /// The seq allocation `a` (1..=taken) stands for.
    pub fn seq_of(&self, a: u32) -> Option<u32> {
        match a {
            0 => None,
            a if a <= self.size => Some(self.start + a - 1),
            a => self.returned.get((a - self.size - 1) as usize).copied(),
        }
    }

    /// Coupons allocated and not given back: issued, or about to be (a record in flight, or an
    /// allocation whose claimant died, until recovery gives it back).
    pub fn allocated(&self) -> u32 {
        self.size - self.remaining
    }

    pub fn item(&self) -> Item {
        let mut item = HashMap::from([
            ("shard".into(), s(&self.key)),
            ("start".into(), n(self.start)),
            ("size".into(), n(self.size)),
            ("remaining".into(), n(self.remaining)),
            ("taken".into(), n(self.taken)),
            ("returned".into(), AttributeValue::L(self.returned.iter().map(n).collect())),
            ("checked".into(), n(self.checked)),
            ("mark".into(), n(self.mark)),
            ("version".into(), n(self.version)),
            ("opens_at".into(), n(self.opens_at)),
        ]);
        // DynamoDB has no empty sets: no attribute is the empty set.
        if !self.voided.is_empty() {
            item.insert("voided".into(), AttributeValue::Ns(self.voided.iter().map(u32::to_string).collect()));
        }
        if let Some(c) = self.closes_at {
            item.insert("closes_at".into(), n(c));
        }
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, DynamoError> {
        let corrupt = |what: &str| DynamoError::Corrupt(format!("shard {:?}: {what}", item.get("shard")));
        let numbers = |v: &AttributeValue| -> Result<u32, DynamoError> {
            match v {
                AttributeValue::N(x) => x.parse().map_err(|_| corrupt("returned")),
                _ => Err(corrupt("returned")),
            }
        };
        let returned = match item.get("returned") {
            Some(AttributeValue::L(list)) => list.iter().map(numbers).collect::<Result<_, _>>()?,
            _ => return Err(corrupt("returned missing or not a list")),
        };
        let voided = match item.get("voided") {
            None => Vec::new(),
            Some(AttributeValue::Ns(set)) => {
                set.iter().map(|x| x.parse().map_err(|_| corrupt("voided"))).collect::<Result<_, _>>()?
            }
            Some(_) => return Err(corrupt("voided not a number set")),
        };
        let shard = Shard {
            key: get_s(item, "shard")?.to_owned(),
            start: get_n(item, "start")?,
            size: get_n(item, "size")?,
            remaining: get_n(item, "remaining")?,
            taken: get_n(item, "taken")?,
            returned,
            voided,
            checked: get_n(item, "checked")?,
            mark: get_n(item, "mark")?,
            version: get_n(item, "version")?,
            opens_at: get_n(item, "opens_at")?,
            closes_at: if item.contains_key("closes_at") { Some(get_n(item, "closes_at")?) } else { None },
        };
        let free = u64::from(shard.size) + shard.returned.len() as u64;
        if shard.start == 0
            || u64::from(shard.taken) > free
            || u64::from(shard.remaining) != free - u64::from(shard.taken)
            || shard.checked > shard.mark
            || shard.mark > shard.taken
        {
            return Err(DynamoError::Corrupt(format!("shard {}: {shard:?}", shard.key)));
        }
        Ok(shard)
    }

    /// The campaign's window at `now` (milliseconds), as the core defines it.
    pub fn window(&self, now: i64) -> Status {
        firstcome_core::window_status(self.opens_at, self.closes_at, now)
    }
}

// ---------------------------------------------------------------- allocation markers

/// The marker of allocation `a` of shard `k`, in the claims table beside the claim items (a
/// user id is visible ASCII, so this key can never be one): written with the claim item in one
/// transaction (`issued`), or void when the allocation is given back. Its existence is what
/// makes "recorded" and "given back" exclusive.
pub(crate) fn marker_key(k: u32, a: u32) -> String {
    format!("{}{a:010}", marker_prefix(k))
}

pub(crate) fn marker_prefix(k: u32) -> String {
    format!("\u{a7}alloc#{k:03}#")
}

pub(crate) const MARKER_ISSUED: &str = "issued";
pub(crate) const MARKER_VOID: &str = "void";

pub(crate) fn marker_item(id: &CampaignId, k: u32, a: u32, state: &str) -> Item {
    HashMap::from([
        ("campaign".into(), s(id.as_str())),
        ("user".into(), s(marker_key(k, a))),
        ("state".into(), s(state)),
    ])
}

/// The allocation number of a marker key of shard `k`.
pub(crate) fn marker_allocation(key: &str, k: u32) -> Option<u32> {
    key.strip_prefix(&marker_prefix(k))?.parse().ok()
}

// ---------------------------------------------------------------- claims

/// A claim item: the coupon, the shard it came from (the `by_seq` index key) and, until the
/// ledger acknowledges its record, `unledgered` (the sparse index the reconciler reads).
pub(crate) fn claim_item(coupon: &Coupon, shard: &str) -> Item {
    HashMap::from([
        ("campaign".into(), s(coupon.campaign_id.as_str())),
        ("user".into(), s(coupon.user_id.as_str())),
        ("shard".into(), s(shard)),
        ("seq".into(), n(coupon.seq)),
        ("code".into(), s(coupon.code.to_string())),
        ("issued_at".into(), n(millis(coupon.issued_at))),
        ("expires_at".into(), n(millis(coupon.expires_at))),
        ("unledgered".into(), s(shard)),
    ])
}

pub(crate) fn coupon_from(item: &Item) -> Result<Coupon, DynamoError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| DynamoError::Corrupt(format!("claim {what}: {e}"));
    Ok(Coupon {
        code: CouponCode::parse(get_s(item, "code")?).map_err(|e| corrupt("code", &e.message))?,
        seq: get_n(item, "seq")?,
        campaign_id: CampaignId::parse(get_s(item, "campaign")?).map_err(|e| corrupt("campaign", &e.message))?,
        user_id: UserId::parse(get_s(item, "user")?).map_err(|e| corrupt("user", &e.message))?,
        issued_at: from_millis(get_n(item, "issued_at")?, "issued_at")?,
        expires_at: from_millis(get_n(item, "expires_at")?, "expires_at")?,
    })
}

// ---------------------------------------------------------------- ledger

pub(crate) fn ledger_item(r: &IssuanceRecord, recorded_at: OffsetDateTime) -> Item {
    HashMap::from([
        ("code".into(), s(r.code.to_string())),
        ("campaign".into(), s(r.campaign_id.as_str())),
        ("user".into(), s(r.user_id.as_str())),
        ("seq".into(), n(r.seq)),
        ("issued_at".into(), n(millis(r.issued_at))),
        ("discount".into(), n(r.discount)),
        ("currency".into(), s(&r.currency)),
        ("expires_at".into(), n(millis(r.expires_at))),
        ("recorded_at".into(), n(millis(recorded_at))),
    ])
}

#[cfg(test)]
mod tests {
    use firstcome_core::testkit::{open_campaign, user};

    use super::*;

    #[test]
    fn shards_cover_one_to_total_exactly_once() {
        for (total, shards) in [(1, 1), (3, 4), (10, 4), (1000, 7), (7, 7)] {
            let c = open_campaign("layout", total);
            let layout = Shard::layout(&c, shards);
            assert_eq!(layout.len(), shards as usize);
            let seqs: Vec<u32> = layout.iter().flat_map(|s| s.start..s.start + s.size).collect();
            assert_eq!(seqs, (1..=total as u32).collect::<Vec<_>>(), "total {total} over {shards}");
            assert!(layout.windows(2).all(|w| w[0].size >= w[1].size && w[0].size - w[1].size <= 1));
        }
    }

    #[test]
    fn items_round_trip() {
        let c = open_campaign("round-trip", 5);
        let (back, shards) = campaign_from(&campaign_item(&c, 3).unwrap()).unwrap();
        assert_eq!((back, shards), (c.clone(), 3));
        let shard = Shard { remaining: 1, taken: 1, ..Shard::layout(&c, 2).remove(1) };
        assert_eq!(Shard::from_item(&shard.item()).unwrap(), shard);
        assert_eq!((shard.seq_of(1), shard.seq_of(2), shard.seq_of(3)), (Some(4), Some(5), None));
        let given_back =
            Shard { remaining: 0, taken: 3, returned: vec![4], voided: vec![1], checked: 1, mark: 3, ..shard.clone() };
        assert_eq!(Shard::from_item(&given_back.item()).unwrap(), given_back);
        assert_eq!(given_back.seq_of(3), Some(4), "the third allocation is the seq the first gave back");
        assert_eq!(marker_allocation(&marker_key(7, 12), 7), Some(12));
        assert_eq!(marker_allocation(&marker_key(7, 12), 8), None);
        assert!(UserId::parse(&marker_key(0, 1)).is_err(), "a marker key is never a user id");
        let coupon = c.coupon_for(user(1), CouponCode::generate(), 4, firstcome_core::testkit::now());
        assert_eq!(coupon_from(&claim_item(&coupon, &shard.key)).unwrap(), coupon);
    }

    #[test]
    fn damaged_items_are_refused() {
        let c = open_campaign("damaged", 5);
        let mut item = campaign_item(&c, 2).unwrap();
        item.insert("version".into(), n(9));
        assert!(matches!(campaign_from(&item), Err(DynamoError::Corrupt(_))));
        let mut shard = Shard::layout(&c, 1).remove(0).item();
        shard.insert("remaining".into(), n(6));
        assert!(matches!(Shard::from_item(&shard), Err(DynamoError::Corrupt(_))));
        shard.insert("remaining".into(), n(4));
        assert!(matches!(Shard::from_item(&shard), Err(DynamoError::Corrupt(_))), "remaining must match taken");
        shard.insert("remaining".into(), s("x"));
        assert!(matches!(Shard::from_item(&shard), Err(DynamoError::Corrupt(_))));
    }
}
