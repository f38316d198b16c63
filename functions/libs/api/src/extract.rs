//! Request extractors that answer bad input with `ApiError` (400/413 naming the field) instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use firstcome_core::CampaignId;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body. Unknown fields, wrong types and bad dates come back as 400 with the field path.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadBody(axum::Error::new(e))
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&body);
        let value = serde_path_to_error::deserialize(&mut de)?;
        // Trailing garbage after the object is an error too, reported at the root.
        de.end().map_err(ApiError::TrailingJson)?;
        Ok(Self(value))
    }
}

/// The `{id}` path segment, validated as a campaign slug.
pub struct CampaignPath(pub CampaignId);

impl<S: Send + Sync> FromRequestParts<S> for CampaignPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|_| {
                ApiError::Invalid(firstcome_core::ValidationError::new("id", "is not a valid path segment"))
            })?;
        Ok(Self(CampaignId::parse(&id)?))
    }
}

/// `If-Match` on an edit: `"<version>"` (the ETag of the campaign), or `*` for whatever is stored.
/// Required, so an edit based on a stale read can never silently overwrite a newer one.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts.headers.get(axum::http::header::IF_MATCH).ok_or(ApiError::PreconditionRequired)?;
        let bad = || ApiError::Invalid(firstcome_core::ValidationError::new("If-Match", "must be \"<version>\" or *"));
        let text = value.to_str().map_err(|_| bad())?.trim();
        if text == "*" {
            return Ok(Self(None));
        }
        let version = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).ok_or_else(bad)?;
        version.parse().map(|v| Self(Some(v))).map_err(|_| bad())
    }
}

/// The claim ticket from the `Firstcome-Ticket` header: a decimal counter, or none. Whether the
/// campaign needs one, and whether it is right, is the engine's call.
pub struct Ticket(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for Ticket {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(firstcome_core::ticket::HEADER) else { return Ok(Self(None)) };
        let bad = || {
            ApiError::Invalid(firstcome_core::ValidationError::new(
                "Firstcome-Ticket",
                "must be the puzzle's answer as a decimal number",
            ))
        };
        let text = value.to_str().map_err(|_| bad())?.trim();
        // u64::parse takes a leading '+'; a ticket is digits and nothing else.
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse().map(|n| Self(Some(n))).map_err(|_| bad())
    }
}

/// The campaign's version as an entity tag.
pub fn etag(version: u64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("\"{version}\"")).expect("digits in quotes are a valid header")
}

/// `?after=ID&limit=N` on the admin list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Start after this campaign id (the previous page's `next`).
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub after: Option<String>,
    /// Campaigns per page, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// `?after=SEQ&limit=N` on the winners list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CouponPageQuery {
    /// Start after this seq (the previous page's `next`); 0 or absent for the first page.
    #[param(minimum = 0)]
    pub after: Option<u32>,
    /// Coupons per page, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A query string, answered with a 400 that names the parameter when it does not parse.
pub struct Page<Q>(pub Q);

impl<S: Send + Sync, Q: DeserializeOwned> FromRequestParts<S> for Page<Q> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(q) = axum::extract::Query::<Q>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Invalid(firstcome_core::ValidationError::new("query", e.body_text())))?;
        Ok(Self(q))
    }
}

/// The `{id}` path parameter as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct IdParam {
    /// Campaign id (slug).
    #[param(pattern = "^[a-z0-9-]{1,64}$", min_length = 1, max_length = 64)]
    id: String,
}

/// The peer's address where the server knows it (`into_make_service_with_connect_info`); `None`
/// behind Lambda or in-process tests, which the routes that care treat as "not loopback".
pub struct Peer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let info = axum::extract::ConnectInfo::<std::net::SocketAddr>::from_request_parts(parts, state).await;
        Ok(Self(info.ok().map(|c| c.0)))
    }
}
