//! `ApiError`: every failure the HTTP boundary can answer, mapped to status + `{"error","message"}`
//! here and only here. Codes and their statuses come from the wire crate's `ErrorCode`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firstcome_core::{IssuerError, StoreError, TicketError, ValidationError};
use firstcome_wire::{ErrorBody, ErrorCode};

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
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("a campaign with this id already exists")]
    Conflict,
    #[error("the campaign has opened or issued coupons; its terms can no longer change")]
    AlreadyOpen,
    #[error("the campaign is at version {current}; re-read it and send If-Match: \"{current}\"")]
    VersionConflict { current: u64 },
    #[error("an edit needs If-Match: \"<version>\" (the campaign's ETag), or If-Match: * to edit whatever is stored")]
    PreconditionRequired,
    #[error("all coupons have been issued")]
    SoldOut,
    #[error("the campaign has not opened yet")]
    NotOpen,
    #[error("the campaign has closed")]
    Closed,
    #[error("request body is too large")]
    TooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the store is unavailable; retry shortly")]
    Unavailable(#[source] StoreError),
    #[error("too many requests at once; retry shortly")]
    Overloaded,
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the request did not arrive in time")]
    Timeout,
    #[error(
        "the winners list is still catching up ({listed} of {issued} coupons listed so far); try again in a few seconds"
    )]
    IncompleteWinners { listed: u64, issued: u64 },
    #[error(transparent)]
    Ticket(TicketError),
}

impl ApiError {
    pub fn unauthorized(reason: &'static str) -> Self {
        Self::Unauthorized { reason, source: None }
    }

    /// The field to blame, for `ErrorBody::field`.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Invalid(v) => Some(v.field.to_owned()),
            Self::BadJson(e) => Some(e.path().to_string()).filter(|p| p != "." && !p.is_empty()),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::BadJson(_) | Self::TrailingJson(_) | Self::BadBody(_) => ErrorCode::InvalidRequest,
            Self::Unauthorized { .. } => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict => ErrorCode::Conflict,
            Self::AlreadyOpen => ErrorCode::AlreadyOpen,
            Self::VersionConflict { .. } => ErrorCode::VersionConflict,
            Self::PreconditionRequired => ErrorCode::PreconditionRequired,
            Self::SoldOut => ErrorCode::SoldOut,
            Self::NotOpen => ErrorCode::NotOpen,
            Self::Closed => ErrorCode::Closed,
            Self::TooLarge => ErrorCode::TooLarge,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Unavailable(_) | Self::IncompleteWinners { .. } => ErrorCode::Unavailable,
            Self::Overloaded => ErrorCode::Overloaded,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Timeout => ErrorCode::Timeout,
            Self::Ticket(TicketError::Required) => ErrorCode::TicketRequired,
            Self::Ticket(TicketError::Invalid) => ErrorCode::TicketInvalid,
        }
    }
}

impl From<IssuerError> for ApiError {
    fn from(e: IssuerError) -> Self {
        match e {
            IssuerError::NotFound => Self::NotFound("no such campaign".into()),
            IssuerError::Conflict => Self::Conflict,
            IssuerError::AlreadyOpen => Self::AlreadyOpen,
            IssuerError::VersionConflict { current } => Self::VersionConflict { current },
            IssuerError::NotOpenYet => Self::NotOpen,
            IssuerError::AlreadyClosed => Self::Closed,
            IssuerError::Invalid(v) => Self::Invalid(v),
            IssuerError::Ticket(t) => Self::Ticket(t),
            IssuerError::Store(StoreError::Overloaded | StoreError::Contended(_)) => Self::Overloaded,
            IssuerError::Store(s) => Self::Unavailable(s),
        }
    }
}

/// A failure's whole error chain, for the one log line the metrics layer writes with the
/// request's id (the client's body only has the summary).
#[derive(Debug, Clone)]
pub struct Failure(pub String);

/// The bodies of the refusals whose message never changes and which are answered most (every
/// loser of a sold-out campaign, every shed), rendered once by the same serialiser as the rest:
/// each answer is then a static slice instead of a message formatted and serialised per request.
fn fixed_body(e: &ApiError) -> Option<&'static [u8]> {
    use std::sync::LazyLock;
    fn render(e: ApiError) -> &'static [u8] {
        let body = ErrorBody { error: e.code(), message: e.to_string(), field: None };
        serde_json::to_vec(&body).expect("an error body serialises").leak()
    }
    static SOLD_OUT: LazyLock<&[u8]> = LazyLock::new(|| render(ApiError::SoldOut));
    static NOT_OPEN: LazyLock<&[u8]> = LazyLock::new(|| render(ApiError::NotOpen));
    static CLOSED: LazyLock<&[u8]> = LazyLock::new(|| render(ApiError::Closed));
    static OVERLOADED: LazyLock<&[u8]> = LazyLock::new(|| render(ApiError::Overloaded));
    Some(match e {
        ApiError::SoldOut => *SOLD_OUT,
        ApiError::NotOpen => *NOT_OPEN,
        ApiError::Closed => *CLOSED,
        ApiError::Overloaded => *OVERLOADED,
        _ => return None,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = StatusCode::from_u16(code.status()).expect("error codes carry valid statuses");
        // Shedding is the plan working, not a failure worth a log line per request.
        let failure = (status.is_server_error() && !matches!(self, Self::Overloaded)).then(|| {
            // Keep the whole chain in the log; the client only gets the summary.
            let mut chain = self.to_string();
            let mut src = std::error::Error::source(&self);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            Failure(chain)
        });
        let mut res = match fixed_body(&self) {
            Some(body) => {
                let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
                (status, json, axum::body::Body::from(body)).into_response()
            }
            None => (status, axum::Json(ErrorBody { error: code, message: self.to_string(), field: self.field() }))
                .into_response(),
        };
        // For the metrics layer: which refusal this was, without reading the body back, and the
        // failure to log there, beside the request's id.
        res.extensions_mut().insert(code);
        if let Some(f) = failure {
            res.extensions_mut().insert(f);
        }
        match self {
            Self::RateLimited { retry_after } => {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pre-rendered bodies say exactly what the general path would.
    #[test]
    fn fixed_bodies_are_the_error_bodies_the_general_path_writes() {
        for e in [ApiError::SoldOut, ApiError::NotOpen, ApiError::Closed, ApiError::Overloaded] {
            let fixed: ErrorBody = serde_json::from_slice(fixed_body(&e).unwrap()).unwrap();
            assert_eq!((fixed.error, fixed.message.as_str(), fixed.field), (e.code(), e.to_string().as_str(), None));
        }
        assert!(fixed_body(&ApiError::RateLimited { retry_after: 3 }).is_none(), "its message carries a number");
    }
}
