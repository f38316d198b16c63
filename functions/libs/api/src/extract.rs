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
