//! firstcome's wire types, defined once: every request and response body of the HTTP API, the
//! error body with its closed set of codes, and the claim outcome and campaign status enums.
//!
//! The router serialises these, the load tool and the event page deserialise them. Only serde and
//! time here (utoipa behind the `openapi` feature), so a WASM page can depend on it.

pub mod datetime;
pub mod site;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

/// Campaign ids: the path segment and the `id` field.
pub const CAMPAIGN_ID_PATTERN: &str = "^[a-z0-9-]{1,64}$";
/// User ids (a token's `sub`): visible ASCII.
pub const USER_ID_PATTERN: &str = "^[!-~]{1,128}$";
/// Largest stock a campaign may have.
pub const MAX_TOTAL: u64 = 10_000_000;
/// Largest request body the server reads.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Most campaigns on one page of the admin list.
pub const MAX_PAGE: usize = 200;

/// Every error code the API answers with. The HTTP status of each is fixed (see `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a field, the path or the body is invalid; the message names it.
    InvalidRequest,
    /// 401: no token, or a token that does not verify.
    Unauthorized,
    /// 403: the token is valid but may not do this.
    Forbidden,
    /// 404: no such campaign, coupon or route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: a campaign with this id already exists.
    Conflict,
    /// 409: the campaign has opened or issued coupons; its terms are frozen.
    AlreadyOpen,
    /// 409: the campaign changed since the version in `If-Match` (another edit won the race).
    VersionConflict,
    /// 428: an edit must say which version it is based on (`If-Match`).
    PreconditionRequired,
    /// 409: every coupon has been issued.
    SoldOut,
    /// 409: the campaign has not opened yet.
    NotOpen,
    /// 409: the campaign has closed.
    Closed,
    /// 413: the body is larger than the server reads.
    TooLarge,
    /// 503: the store cannot answer right now; retry after `Retry-After`.
    Unavailable,
    /// 503: more requests at once than this instance admits (or connections than it holds);
    /// shed at once rather than queued. Retry after `Retry-After`.
    Overloaded,
    /// 429: this user or client sent more requests than its rate allows; retry after `Retry-After`.
    RateLimited,
    /// 408: the request (its body) did not arrive in time.
    Timeout,
    /// 400: the campaign needs a claim ticket (see `Campaign::ticket`) and none was sent.
    TicketRequired,
    /// 403: the ticket sent does not solve the campaign's puzzle for this user.
    TicketInvalid,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::AlreadyOpen,
        Self::VersionConflict,
        Self::PreconditionRequired,
        Self::SoldOut,
        Self::NotOpen,
        Self::Closed,
        Self::TooLarge,
        Self::Unavailable,
        Self::Overloaded,
        Self::RateLimited,
        Self::Timeout,
        Self::TicketRequired,
        Self::TicketInvalid,
    ];

    /// The HTTP status this code is always answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::TicketRequired => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::TicketInvalid => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict
            | Self::AlreadyOpen
            | Self::VersionConflict
            | Self::SoldOut
            | Self::NotOpen
            | Self::Closed => 409,
            Self::TooLarge => 413,
            Self::PreconditionRequired => 428,
            Self::Timeout => 408,
            Self::RateLimited => 429,
            Self::Unavailable | Self::Overloaded => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::AlreadyOpen => "already_open",
            Self::VersionConflict => "version_conflict",
            Self::PreconditionRequired => "precondition_required",
            Self::SoldOut => "sold_out",
            Self::NotOpen => "not_open",
            Self::Closed => "closed",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::TicketRequired => "ticket_required",
            Self::TicketInvalid => "ticket_invalid",
        }
    }
}

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// Human-readable explanation, naming the offending field where there is one.
    pub message: String,
    /// On `invalid_request`: the offending field's path (`total`, `coupon.currency`, `opens_at`),
    /// so a form can show the message beside it. Absent when no single field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Where a campaign stands when the answer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Scheduled,
    Open,
    SoldOut,
    Closed,
}

/// What a successful claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClaimOutcome {
    /// A new coupon, durable before this answer (201).
    Issued,
    /// The user already held this coupon; the very same one again (200).
    AlreadyIssued,
}

impl ClaimOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::AlreadyIssued => "already_issued",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CouponTerms {
    /// Discount in the currency's minor unit (cents, won).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000_000u64))]
    pub discount: u64,
    /// ISO 4217 alphabetic code, e.g. KRW.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: String,
    /// Days a coupon stays redeemable after it is issued.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3650))]
    pub valid_days: u32,
}

/// The claim ticket a campaign asks for: a counter whose hash over (campaign, user, nonce) starts
/// with `bits` zero bits (see the `firstcome-ticket` crate), sent as the `Firstcome-Ticket` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketTerms {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 24))]
    pub bits: u8,
    /// 32 hex digits; absent until the campaign opens (server time), so no ticket can be made
    /// before T0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub nonce: Option<String>,
}

/// A campaign as the public (the event page) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Campaign {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9-]{1,64}$"))]
    pub id: String,
    pub title: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub total: u32,
    /// Coupons left. On the public view this may lag the store by up to about a second.
    pub remaining: u64,
    pub status: CampaignStatus,
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opens_at: OffsetDateTime,
    #[serde(default, with = "datetime::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub closes_at: Option<OffsetDateTime>,
    /// The server's clock when it answered, so a page can count down to `opens_at` without
    /// trusting the device's clock.
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub server_time: OffsetDateTime,
    pub coupon: CouponTerms,
    /// Present when a claim needs a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketTerms>,
}

/// A campaign as marketing sees it: the public view (with an exact `remaining`), its version
/// for conditional edits, and issuance progress. On the wire it is one flat object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminCampaign {
    #[serde(flatten)]
    pub campaign: Campaign,
    /// Bumped by every edit; send it back as `If-Match: "<version>"` to edit (also the `ETag`).
    pub version: u64,
    pub issued: u64,
    /// Issuance records that have reached the ledger; equals `issued` once the queue drains.
    pub ledger_written: u64,
}

/// Read through a flat twin rather than `#[serde(flatten)]`: flatten's buffering deserializer
/// costs the marketing page's WASM ~18 KB, and the flat object is the same either way.
impl<'de> Deserialize<'de> for AdminCampaign {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            id: String,
            title: String,
            total: u32,
            remaining: u64,
            status: CampaignStatus,
            #[serde(with = "datetime")]
            opens_at: OffsetDateTime,
            #[serde(default, with = "datetime::option")]
            closes_at: Option<OffsetDateTime>,
            #[serde(with = "datetime")]
            server_time: OffsetDateTime,
            coupon: CouponTerms,
            #[serde(default)]
            ticket: Option<TicketTerms>,
            version: u64,
            issued: u64,
            ledger_written: u64,
        }
        let f = Flat::deserialize(d)?;
        Ok(AdminCampaign {
            campaign: Campaign {
                id: f.id,
                title: f.title,
                total: f.total,
                remaining: f.remaining,
                status: f.status,
                opens_at: f.opens_at,
                closes_at: f.closes_at,
                server_time: f.server_time,
                coupon: f.coupon,
                ticket: f.ticket,
            },
            version: f.version,
            issued: f.issued,
            ledger_written: f.ledger_written,
        })
    }
}

/// The public list: campaigns open now (first) and upcoming (by opening time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignList {
    pub campaigns: Vec<Campaign>,
    /// The server's clock when it answered.
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub server_time: OffsetDateTime,
}

/// One page of a campaign's winners, by seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CouponPage {
    pub coupons: Vec<Coupon>,
    /// Pass as `?after=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u32>,
    /// How many coupons the campaign had issued when this page was read (the store's exact
    /// count). The list is read from an index that may lag the issues by a moment on DynamoDB: a
    /// list that ends with fewer coupons than this is not complete yet; read it again.
    #[serde(default)]
    pub issued: u64,
}

/// Most coupons on one page of the winners list.
pub const MAX_COUPON_PAGE: usize = 1000;
/// Most campaigns in the public list.
pub const MAX_LISTED: usize = 100;

/// One page of the admin list, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminCampaignPage {
    pub campaigns: Vec<AdminCampaign>,
    /// Pass as `?after=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Coupon {
    /// Grouped Crockford base32, e.g. 7KQ3-M9XZ-0C4T-HV2R.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$"))]
    pub code: String,
    /// Unique within 1..=total; once the campaign sells out, the winners hold exactly 1..=total.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub seq: u32,
    pub campaign_id: String,
    pub user_id: String,
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub issued_at: OffsetDateTime,
    /// When the coupon stops being redeemable: `issued_at` + the campaign's `valid_days`.
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    pub outcome: ClaimOutcome,
    pub coupon: Coupon,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9-]{1,64}$"))]
    pub id: String,
    /// 1 to 200 characters, no control characters (trimmed).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub title: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub total: u64,
    /// At most a minute in the past (opening "now" is allowed).
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opens_at: OffsetDateTime,
    /// After `opens_at`; absent: open until sold out.
    #[serde(default, with = "datetime::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub closes_at: Option<OffsetDateTime>,
    pub coupon: CouponTerms,
    /// Claim ticket difficulty in bits (0 to 24); absent or 0: claims need no ticket.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 24))]
    pub pow_bits: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Fields to change before the campaign opens; absent fields stay, `closes_at: null` removes the
/// closing time. Needs `If-Match: "<version>"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchCampaign {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub total: Option<u64>,
    #[serde(default, with = "datetime::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub opens_at: Option<OffsetDateTime>,
    #[serde(
        default,
        deserialize_with = "present_nullable",
        serialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub closes_at: Option<Option<OffsetDateTime>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponTerms>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 24))]
    pub pow_bits: Option<u64>,
}

/// Absent → `None` (by `default`), `null` → `Some(None)`, a date → `Some(Some(date))`.
fn present_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    datetime::option::deserialize(d).map(Some)
}

fn nullable<S: serde::Serializer>(v: &Option<Option<OffsetDateTime>>, s: S) -> Result<S::Ok, S::Error> {
    datetime::option::serialize(&v.flatten(), s)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[!-~]{1,128}$"))]
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevTokenResponse {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

/// The marketing page's live view of the opening second (`GET /api/admin/live`): the last
/// minutes of the server's own metrics, one entry per second, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveView {
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub server_time: OffsetDateTime,
    pub seconds: Vec<LiveSecond>,
    /// Coupons left per campaign id, as this server last learnt it.
    pub remaining: std::collections::BTreeMap<String, u64>,
    /// Age of the oldest issuance not yet in the ledger, seconds (0 when drained).
    pub ledger_lag_seconds: f64,
    /// The store's circuit breaker: `closed`, `half_open` or `open`.
    pub breaker: String,
    /// Requests being answered right now.
    pub in_flight: u64,
    /// Upper bounds (seconds) of the claim latency buckets each second's `latency_counts` uses;
    /// one more count follows them, for claims slower than the last bound.
    pub latency_bounds_s: Vec<f64>,
}

/// One second of claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveSecond {
    /// The end of the second.
    #[serde(with = "datetime")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// Claim answers in this second by outcome (`issued`, `sold_out`, `rate_limited`...).
    pub claims: std::collections::BTreeMap<String, u64>,
    /// 99th percentile claim latency in this second, milliseconds (interpolated within the
    /// histogram's bucket); none when no claim was answered.
    pub p99_ms: Option<f64>,
    /// Claims answered in this second per latency bucket (`LiveView::latency_bounds_s`), so a
    /// reader can take percentiles over any span of seconds; empty when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_counts: Vec<u64>,
    /// The ledger's lag at the end of this second, seconds.
    #[serde(default)]
    pub ledger_lag_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_campaign_is_one_flat_object_both_ways() {
        let t = time::macros::datetime!(2026-11-23 10:00 UTC);
        for closes_at in [None, Some(t + time::Duration::hours(1))] {
            let a = AdminCampaign {
                campaign: Campaign {
                    id: "spring".into(),
                    title: "Spring".into(),
                    total: 10,
                    remaining: 4,
                    status: CampaignStatus::Open,
                    opens_at: t,
                    closes_at,
                    server_time: t,
                    coupon: CouponTerms { discount: 5000, currency: "KRW".into(), valid_days: 30 },
                    ticket: Some(TicketTerms { bits: 12, nonce: None }),
                },
                version: 3,
                issued: 6,
                ledger_written: 5,
            };
            let json = serde_json::to_value(&a).unwrap();
            assert_eq!(json["id"], "spring", "flat: {json}");
            assert_eq!(json["issued"], 6);
            assert_eq!(serde_json::from_value::<AdminCampaign>(json).unwrap(), a);
        }
    }

    #[test]
    fn error_codes_round_trip_and_have_one_status() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!((400..600).contains(&code.status()));
        }
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let absent: PatchCampaign = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.closes_at, None);
        let null: PatchCampaign = serde_json::from_str(r#"{"closes_at":null}"#).unwrap();
        assert_eq!(null.closes_at, Some(None));
        assert_eq!(serde_json::to_string(&null).unwrap(), r#"{"closes_at":null}"#);
        assert_eq!(serde_json::to_string(&absent).unwrap(), "{}");
    }
}
