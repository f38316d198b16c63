//! `ApiError`: every failure the HTTP boundary can answer, mapped to status + `{"error","message"}` here and only here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firstcome_core::{IssuerError, StoreError, ValidationError};
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: invalid_request, unauthorized, forbidden, not_found, sold_out,
    /// not_open, closed, conflict, already_open, too_large, method_not_allowed, unavailable.
    pub error: &'static str,
    /// Human-readable explanation, naming the offending field where there is one.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    BadJson(#[from] serde_path_to_error::Error<serde_json::Error>),
    #[error("request body must hold exactly one JSON value")]
    TrailingJson(#[source] serde_json::Error),
    #[error("request body could not be read")]
    BadBody(#[source] axum::Error),
    #[error("{reason}")]
    Unauthorized {
        reason: &'static str,
        #[source]
        source: Option<jsonwebtoken::errors::Error>,
    },
    #[error("this needs an admin token")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    #[error("request body is too large")]
    TooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the store is unavailable; retry shortly")]
    Unavailable(#[source] StoreError),
}

impl ApiError {
    pub fn unauthorized(reason: &'static str) -> Self {
        Self::Unauthorized { reason, source: None }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(_) | Self::BadJson(_) | Self::TrailingJson(_) | Self::BadBody(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl From<IssuerError> for ApiError {
    fn from(e: IssuerError) -> Self {
        match e {
            IssuerError::NotFound => Self::NotFound("no such campaign".into()),
            IssuerError::Conflict => {
                Self::Conflict { code: "conflict", message: "a campaign with this id already exists" }
            }
            IssuerError::AlreadyOpen => Self::Conflict {
                code: "already_open",
                message: "the campaign has opened; its terms can no longer change",
            },
            IssuerError::Invalid(v) => Self::Invalid(v),
            IssuerError::Store(s) => Self::Unavailable(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        if status.is_server_error() {
            // Keep the whole chain in the log; the client only gets the summary.
            let mut chain = String::new();
            let mut src = std::error::Error::source(&self);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            tracing::error!(error = %self, chain = %chain, "request failed");
        }
        let mut res = (status, axum::Json(ErrorBody { error, message: self.to_string() })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
