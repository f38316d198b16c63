//! Campaigns: validated identifiers, the coupon template, creation/edit inputs and the derived status.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use firstcome_ticket::{Nonce, Puzzle};

use crate::{Coupon, CouponCode, UserId, ValidationError, truncate_to_millis};

/// Upper bound on a campaign's stock; keeps per-campaign state (winners map, seq) in u32 range
/// and memory bounded.
pub const MAX_TOTAL: u64 = 10_000_000;

/// How far in the past `opens_at` may be when a campaign is created or rescheduled: opening
/// "now" must work despite clock skew and typing time, a date long gone is a mistake.
pub const OPENS_AT_GRACE: time::Duration = time::Duration::minutes(1);

/// 9999-12-31T23:59:59Z: timestamps beyond it (or before 1970) are refused, not panicked on.
const MAX_UNIX: i64 = 253_402_300_799;

/// A campaign slug: `[a-z0-9-]{1,64}`. Used in URLs and as a store key, so it is validated once here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CampaignId(String);

impl CampaignId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok =
            (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new("id", "must be 1 to 64 characters of a-z, 0-9 and '-'"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CampaignId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CampaignId> for String {
    fn from(id: CampaignId) -> Self {
        id.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every coupon of a campaign is worth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponTemplate {
    /// Discount amount in the currency's minor unit (e.g. cents, or won).
    pub discount: u64,
    /// ISO 4217 alphabetic code, e.g. `KRW`.
    pub currency: String,
    /// How many days a coupon stays redeemable after it is issued.
    pub valid_days: u32,
}

impl CouponTemplate {
    fn validate(self) -> Result<Self, ValidationError> {
        if self.discount == 0 || self.discount > 1_000_000_000_000 {
            return Err(ValidationError::new("coupon.discount", "must be between 1 and 1000000000000"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ValidationError::new("coupon.currency", "must be a three-letter upper-case ISO 4217 code"));
        }
        if !(1..=3650).contains(&self.valid_days) {
            return Err(ValidationError::new("coupon.valid_days", "must be between 1 and 3650"));
        }
        Ok(self)
    }
}

/// A validated campaign. Construct with [`NewCampaign::validate`] or [`CampaignChanges::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub title: String,
    pub total: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub opens_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closes_at: Option<OffsetDateTime>,
    pub coupon: CouponTemplate,
    /// Starts at 1, bumped by every edit; an edit applies only to the version it was based on.
    #[serde(default = "first_version")]
    pub version: u64,
    /// Difficulty of the claim ticket (see `firstcome_ticket`): 0 = no ticket needed.
    #[serde(default)]
    pub pow_bits: u8,
    /// The ticket's secret, revealed to the public only from `opens_at` on. Stored with the
    /// campaign so every instance verifies against the same one.
    #[serde(default, with = "nonce_hex")]
    pub nonce: Nonce,
}

/// Why a claim's ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error(
        "this campaign needs a ticket: solve the puzzle from the campaign's nonce and send it in the Firstcome-Ticket header"
    )]
    Required,
    #[error("the ticket does not solve this campaign's puzzle for this user")]
    Invalid,
}

mod nonce_hex {
    use firstcome_ticket::Nonce;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(n: &Nonce, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Nonce, D::Error> {
        let s = String::deserialize(d)?;
        Nonce::from_hex(&s).ok_or_else(|| D::Error::custom("nonce must be 32 lower-case hex digits"))
    }
}

fn fresh_nonce() -> Nonce {
    Nonce(rand::random())
}

fn first_version() -> u64 {
    1
}

/// Where `now` falls in a claim window, ignoring stock: scheduled before `opens_at`, closed from
/// `closes_at` on. The one rule for the engine and every store, whatever unit a store keeps
/// instants in (DynamoDB's shard items hold milliseconds).
pub fn window_status<T: PartialOrd>(opens_at: T, closes_at: Option<T>, now: T) -> Status {
    if now < opens_at {
        Status::Scheduled
    } else if closes_at.is_some_and(|c| now >= c) {
        Status::Closed
    } else {
        Status::Open
    }
}

/// Where a campaign stands at an instant. Derived, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Open,
    SoldOut,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Open => "open",
            Status::SoldOut => "sold_out",
            Status::Closed => "closed",
        }
    }
}

impl Campaign {
    /// Status ignoring stock: whether claims are accepted by the clock alone.
    pub fn window_at(&self, now: OffsetDateTime) -> Status {
        window_status(self.opens_at, self.closes_at, now)
    }

    /// "End now" as every store decides it, under the same lock or condition as claims: an open
    /// campaign closes at `now` (a new version); a scheduled one is refused (reschedule it
    /// instead); a closed one stays as it is.
    pub fn end_at(&self, now: OffsetDateTime) -> crate::ports::EndOutcome {
        use crate::ports::EndOutcome;
        match self.window_at(now) {
            Status::Scheduled => EndOutcome::NotOpen,
            Status::Closed => EndOutcome::AlreadyClosed(self.clone()),
            _ => EndOutcome::Ended(Campaign { closes_at: Some(now), version: self.version + 1, ..self.clone() }),
        }
    }

    /// The coupon this campaign issues to `user` as number `seq`; it expires `valid_days` after issue.
    pub fn coupon_for(&self, user: UserId, code: CouponCode, seq: u32, issued_at: OffsetDateTime) -> Coupon {
        Coupon {
            code,
            seq,
            campaign_id: self.id.clone(),
            user_id: user,
            issued_at,
            expires_at: issued_at + time::Duration::days(i64::from(self.coupon.valid_days)),
        }
    }

    /// The ticket's nonce as the public may see it at `now`: never before `opens_at`, so no
    /// ticket can be prepared ahead of T0. `None` too when no ticket is needed.
    pub fn revealed_nonce(&self, now: OffsetDateTime) -> Option<Nonce> {
        (self.pow_bits > 0 && now >= self.opens_at).then_some(self.nonce)
    }

    /// Checks `user`'s ticket with one hash; any ticket passes when the campaign needs none.
    pub fn check_ticket(&self, user: &UserId, ticket: Option<u64>) -> Result<(), TicketError> {
        if self.pow_bits == 0 {
            return Ok(());
        }
        let n = ticket.ok_or(TicketError::Required)?;
        if Puzzle::new(self.pow_bits, self.id.as_str(), user.as_str(), &self.nonce).verify(n) {
            Ok(())
        } else {
            Err(TicketError::Invalid)
        }
    }

    pub fn status_at(&self, now: OffsetDateTime, issued: u64) -> Status {
        match self.window_at(now) {
            Status::Open if issued >= u64::from(self.total) => Status::SoldOut,
            s => s,
        }
    }
}

/// Input for creating a campaign, as the admin sent it; [`NewCampaign::validate`] checks every field.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub id: String,
    pub title: String,
    pub total: u64,
    pub opens_at: OffsetDateTime,
    pub closes_at: Option<OffsetDateTime>,
    pub coupon: CouponTemplate,
    /// Claim ticket difficulty, 0..=`firstcome_ticket::MAX_BITS`; 0 = none.
    pub pow_bits: u64,
}

impl NewCampaign {
    /// Checks every field; `opens_at` may be at most [`OPENS_AT_GRACE`] before `now`.
    pub fn validate(self, now: OffsetDateTime) -> Result<Campaign, ValidationError> {
        let campaign = Campaign {
            id: CampaignId::parse(&self.id)?,
            title: validate_title(self.title)?,
            total: validate_total(self.total)?,
            opens_at: validate_opens_at(self.opens_at, now)?,
            closes_at: self.closes_at.map(|t| instant("closes_at", t)).transpose()?,
            coupon: self.coupon.validate()?,
            version: first_version(),
            pow_bits: validate_pow_bits(self.pow_bits)?,
            nonce: fresh_nonce(),
        };
        validate_window(&campaign)?;
        Ok(campaign)
    }
}

/// An edit to a campaign that has not opened yet. `None` leaves a field as it is;
/// `closes_at: Some(None)` removes the closing time.
#[derive(Debug, Clone, Default)]
pub struct CampaignChanges {
    pub title: Option<String>,
    pub total: Option<u64>,
    pub opens_at: Option<OffsetDateTime>,
    pub closes_at: Option<Option<OffsetDateTime>>,
    pub coupon: Option<CouponTemplate>,
    pub pow_bits: Option<u64>,
}

impl CampaignChanges {
    /// The edited campaign, one version on from `current`. A new `opens_at` may be at most
    /// [`OPENS_AT_GRACE`] before `now`.
    pub fn apply(self, current: &Campaign, now: OffsetDateTime) -> Result<Campaign, ValidationError> {
        let mut next = current.clone();
        next.version = current.version + 1;
        if let Some(title) = self.title {
            next.title = validate_title(title)?;
        }
        if let Some(total) = self.total {
            next.total = validate_total(total)?;
        }
        if let Some(opens_at) = self.opens_at {
            next.opens_at = validate_opens_at(opens_at, now)?;
        }
        if let Some(closes_at) = self.closes_at {
            next.closes_at = closes_at.map(|t| instant("closes_at", t)).transpose()?;
        }
        if let Some(coupon) = self.coupon {
            next.coupon = coupon.validate()?;
        }
        if let Some(bits) = self.pow_bits {
            next.pow_bits = validate_pow_bits(bits)?;
        }
        // Every edit draws a fresh nonce. Other instances may keep serving their copy of the old
        // version for a TTL, and would reveal its nonce from the old `opens_at`: a nonce that
        // outlives its version would let a bot read it at the old opening and prepare tickets
        // for the new one. A fresh one makes every copy of an old version's nonce worthless.
        next.nonce = fresh_nonce();
        validate_window(&next)?;
        Ok(next)
    }
}

fn validate_title(title: String) -> Result<String, ValidationError> {
    let title = title.trim().to_owned();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ValidationError::new("title", "must be 1 to 200 characters"));
    }
    if title.chars().any(char::is_control) {
        return Err(ValidationError::new("title", "must not contain control characters"));
    }
    Ok(title)
}

fn validate_total(total: u64) -> Result<u32, ValidationError> {
    if (1..=MAX_TOTAL).contains(&total) {
        Ok(total as u32)
    } else {
        Err(ValidationError::new("total", format!("must be between 1 and {MAX_TOTAL}")))
    }
}

fn validate_pow_bits(bits: u64) -> Result<u8, ValidationError> {
    match u8::try_from(bits) {
        Ok(b) if b <= firstcome_ticket::MAX_BITS => Ok(b),
        _ => Err(ValidationError::new("pow_bits", format!("must be between 0 and {}", firstcome_ticket::MAX_BITS))),
    }
}

/// A timestamp within 1970..=9999 UTC, kept at millisecond precision.
fn instant(field: &'static str, t: OffsetDateTime) -> Result<OffsetDateTime, ValidationError> {
    if (0..=MAX_UNIX).contains(&t.unix_timestamp()) {
        Ok(truncate_to_millis(t))
    } else {
        Err(ValidationError::new(field, "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"))
    }
}

fn validate_opens_at(t: OffsetDateTime, now: OffsetDateTime) -> Result<OffsetDateTime, ValidationError> {
    let t = instant("opens_at", t)?;
    if t < now - OPENS_AT_GRACE {
        return Err(ValidationError::new("opens_at", "must not be more than a minute in the past"));
    }
    Ok(t)
}

fn validate_window(c: &Campaign) -> Result<(), ValidationError> {
    match c.closes_at {
        Some(closes_at) if closes_at <= c.opens_at => Err(ValidationError::new("closes_at", "must be after opens_at")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-30 10:00 UTC);

    fn new_campaign() -> NewCampaign {
        NewCampaign {
            id: "spring-sale-1".into(),
            title: "  Spring sale  ".into(),
            total: 1000,
            opens_at: datetime!(2026-12-01 10:00:00.123456 UTC),
            closes_at: Some(datetime!(2026-12-01 11:00 UTC)),
            coupon: CouponTemplate { discount: 5000, currency: "KRW".into(), valid_days: 30 },
            pow_bits: 0,
        }
    }

    #[test]
    fn slugs_are_validated() {
        assert!(CampaignId::parse("a").is_ok());
        assert!(CampaignId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "A", "a_b", "a b", "é", &"a".repeat(65)] {
            assert_eq!(CampaignId::parse(bad).unwrap_err().field, "id", "{bad:?}");
        }
    }

    #[test]
    fn valid_campaign_is_normalised() {
        let c = new_campaign().validate(NOW).unwrap();
        assert_eq!(c.title, "Spring sale");
        assert_eq!(c.opens_at, datetime!(2026-12-01 10:00:00.123 UTC), "truncated to ms");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Case = (fn(&mut NewCampaign), &'static str);
        let cases: Vec<Case> = vec![
            (|n| n.total = 0, "total"),
            (|n| n.total = MAX_TOTAL + 1, "total"),
            (|n| n.title = "   ".into(), "title"),
            (|n| n.title = "x".repeat(201), "title"),
            (|n| n.coupon.currency = "krw".into(), "coupon.currency"),
            (|n| n.coupon.discount = 0, "coupon.discount"),
            (|n| n.coupon.valid_days = 0, "coupon.valid_days"),
            (|n| n.closes_at = Some(n.opens_at), "closes_at"),
            (|n| n.id = "Bad".into(), "id"),
            (|n| n.pow_bits = 25, "pow_bits"),
            (|n| n.pow_bits = 256, "pow_bits"),
            (|n| n.opens_at = NOW - time::Duration::seconds(61), "opens_at"),
            (|n| n.opens_at = datetime!(9999-12-31 23:59:59 -1), "opens_at"),
            (|n| n.closes_at = Some(datetime!(0000-01-01 0:00 +1)), "closes_at"),
        ];
        for (mutate, field) in cases {
            let mut n = new_campaign();
            mutate(&mut n);
            assert_eq!(n.validate(NOW).unwrap_err().field, field);
        }
    }

    #[test]
    fn status_is_derived_from_clock_and_stock() {
        let c = new_campaign().validate(NOW).unwrap();
        assert_eq!(c.status_at(datetime!(2026-12-01 09:59:59 UTC), 0), Status::Scheduled);
        assert_eq!(c.status_at(datetime!(2026-12-01 10:00:00.123 UTC), 0), Status::Open);
        assert_eq!(c.status_at(datetime!(2026-12-01 10:30 UTC), 999), Status::Open);
        assert_eq!(c.status_at(datetime!(2026-12-01 10:30 UTC), 1000), Status::SoldOut);
        assert_eq!(c.status_at(datetime!(2026-12-01 11:00 UTC), 10), Status::Closed);
    }

    #[test]
    fn changes_apply_and_revalidate() {
        let c = new_campaign().validate(NOW).unwrap();
        let changed =
            CampaignChanges { total: Some(5), closes_at: Some(None), ..Default::default() }.apply(&c, NOW).unwrap();
        assert_eq!((changed.total, changed.closes_at, changed.version), (5, None, 2));
        let bad =
            CampaignChanges { opens_at: Some(datetime!(2026-12-02 0:00 UTC)), ..Default::default() }.apply(&c, NOW);
        assert_eq!(bad.unwrap_err().field, "closes_at");
        let past = CampaignChanges { opens_at: Some(NOW - time::Duration::hours(1)), ..Default::default() };
        assert_eq!(past.apply(&c, NOW).unwrap_err().field, "opens_at");
        let now_is_fine = CampaignChanges { opens_at: Some(NOW - time::Duration::seconds(5)), ..Default::default() };
        assert!(now_is_fine.apply(&c, NOW).is_ok());
    }

    #[test]
    fn campaign_round_trips_through_json_and_old_bodies_are_version_1() {
        let c = new_campaign().validate(NOW).unwrap();
        let back: Campaign = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let mut old = serde_json::to_value(&c).unwrap();
        old.as_object_mut().unwrap().remove("version");
        assert_eq!(serde_json::from_value::<Campaign>(old).unwrap().version, 1);
    }

    #[test]
    fn the_nonce_is_secret_until_opening_and_a_ticket_is_checked_per_user() {
        let mut n = new_campaign();
        n.pow_bits = 8;
        let c = n.validate(NOW).unwrap();
        assert!(!c.nonce.is_zero());
        assert_eq!(c.revealed_nonce(c.opens_at - time::Duration::milliseconds(1)), None);
        assert_eq!(c.revealed_nonce(c.opens_at), Some(c.nonce));
        let alice = UserId::parse("alice").unwrap();
        let puzzle = Puzzle::new(8, c.id.as_str(), "alice", &c.nonce);
        let ticket = puzzle.search(0, 1 << 20).unwrap();
        assert_eq!(c.check_ticket(&alice, Some(ticket)), Ok(()));
        assert_eq!(c.check_ticket(&alice, None), Err(TicketError::Required));
        let bad = (0..).find(|&t| !puzzle.verify(t)).unwrap();
        assert_eq!(c.check_ticket(&alice, Some(bad)), Err(TicketError::Invalid));
        // Without pow_bits, nothing is needed and nothing is revealed.
        let free = new_campaign().validate(NOW).unwrap();
        assert_eq!(free.check_ticket(&alice, None), Ok(()));
        assert_eq!(free.revealed_nonce(free.opens_at), None);
    }

    #[test]
    fn every_edit_draws_a_fresh_nonce() {
        let mut n = new_campaign();
        n.pow_bits = 8;
        let c = n.validate(NOW).unwrap();
        let later = CampaignChanges {
            opens_at: Some(c.opens_at + time::Duration::hours(1)),
            closes_at: Some(None),
            ..Default::default()
        };
        let moved = later.apply(&c, NOW).unwrap();
        assert_ne!(
            moved.nonce, c.nonce,
            "a reschedule must not keep the nonce a stale copy reveals at the old opening"
        );
        let retitled =
            CampaignChanges { title: Some("Other".into()), ..Default::default() }.apply(&moved, NOW).unwrap();
        assert_ne!(retitled.nonce, moved.nonce);
        assert!(!retitled.nonce.is_zero());
    }

    #[test]
    fn campaigns_stored_before_tickets_read_as_ticketless_and_get_a_nonce_when_edited() {
        let c = new_campaign().validate(NOW).unwrap();
        let mut old = serde_json::to_value(&c).unwrap();
        old.as_object_mut().unwrap().remove("pow_bits");
        old.as_object_mut().unwrap().remove("nonce");
        let old: Campaign = serde_json::from_value(old).unwrap();
        assert_eq!((old.pow_bits, old.nonce.is_zero()), (0, true));
        let edited = CampaignChanges { pow_bits: Some(12), ..Default::default() }.apply(&old, NOW).unwrap();
        assert_eq!(edited.pow_bits, 12);
        assert!(!edited.nonce.is_zero());
        let mut damaged = serde_json::to_value(&c).unwrap();
        damaged["nonce"] = "xyz".into();
        assert!(serde_json::from_value::<Campaign>(damaged).is_err());
    }

    #[test]
    fn coupons_expire_valid_days_after_issue() {
        let c = new_campaign().validate(NOW).unwrap();
        let coupon = c.coupon_for(UserId::parse("u").unwrap(), CouponCode::generate(), 1, NOW);
        assert_eq!(coupon.expires_at, NOW + time::Duration::days(30));
    }
}
