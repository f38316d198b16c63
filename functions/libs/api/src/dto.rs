//! The wire shapes of the API (requests and responses), documented for OpenAPI. Domain types convert into these.

use firstcome_core::{CampaignView, Coupon, CouponTemplate};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponTerms {
    /// Discount in the currency's minor unit.
    pub discount: u64,
    /// ISO 4217 code, e.g. KRW.
    pub currency: String,
    /// Days a coupon stays redeemable after issuance.
    pub valid_days: u32,
}

impl From<CouponTerms> for CouponTemplate {
    fn from(t: CouponTerms) -> Self {
        Self { discount: t.discount, currency: t.currency, valid_days: t.valid_days }
    }
}

impl From<&CouponTemplate> for CouponTerms {
    fn from(t: &CouponTemplate) -> Self {
        Self { discount: t.discount, currency: t.currency.clone(), valid_days: t.valid_days }
    }
}

/// Everything the event page needs in one call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignDto {
    pub id: String,
    pub title: String,
    pub total: u32,
    pub remaining: u64,
    /// scheduled | open | sold_out | closed
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub opens_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closes_at: Option<OffsetDateTime>,
    /// The server's clock when it answered, so a page can count down without trusting the device clock.
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    pub coupon: CouponTerms,
}

impl CampaignDto {
    pub fn new(v: &CampaignView, now: OffsetDateTime) -> Self {
        let c = &v.campaign;
        Self {
            id: c.id.to_string(),
            title: c.title.clone(),
            total: c.total,
            remaining: v.remaining,
            status: v.status.as_str().to_owned(),
            opens_at: c.opens_at,
            closes_at: c.closes_at,
            server_time: now,
            coupon: (&c.coupon).into(),
        }
    }
}

/// A campaign as the admin sees it: the public view plus issuance progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminCampaignDto {
    #[serde(flatten)]
    pub campaign: CampaignDto,
    pub issued: u64,
    /// Issuance records that have reached the ledger; equals `issued` once the outbox drains.
    pub ledger_written: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminCampaignList {
    pub campaigns: Vec<AdminCampaignDto>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CouponDto {
    /// Grouped Crockford base32, e.g. 7KQ3-M9XZ-0C4T-HV2R.
    pub code: String,
    /// Order of issuance, 1..=total.
    pub seq: u32,
    pub campaign_id: String,
    pub user_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

impl From<Coupon> for CouponDto {
    fn from(c: Coupon) -> Self {
        Self {
            code: c.code.to_string(),
            seq: c.seq,
            campaign_id: c.campaign_id.into(),
            user_id: c.user_id.into(),
            issued_at: c.issued_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// issued (201) | already_issued (200)
    pub outcome: String,
    pub coupon: CouponDto,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    /// Slug: [a-z0-9-]{1,64}
    pub id: String,
    pub title: String,
    /// Stock, 1..=10000000.
    pub total: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub opens_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closes_at: Option<OffsetDateTime>,
    pub coupon: CouponTerms,
}

/// Fields to change before the campaign opens; absent fields stay. `closes_at: null` removes the close.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCampaign {
    pub title: Option<String>,
    pub total: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub opens_at: Option<OffsetDateTime>,
    #[serde(default, deserialize_with = "present_nullable_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closes_at: Option<Option<OffsetDateTime>>,
    pub coupon: Option<CouponTerms>,
}

/// Absent → `None` (by `default`), `null` → `Some(None)`, a date → `Some(Some(date))`.
fn present_nullable_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    pub user_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevTokenResponse {
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}
