//! What DynamoDB's answers mean for the next step: the adapter's error, and the classification
//! of a failed write into a lost race, contention, an unknown outcome or a failure.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::CancellationReason;
use aws_smithy_types::error::display::DisplayErrorContext;
use firstcome_core::StoreError;

use crate::items::Item;

#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    #[error("dynamodb {op}: {message}")]
    Sdk { op: &'static str, message: String, code: Option<String> },
    #[error("damaged item: {0}")]
    Corrupt(String),
    #[error("still contended after {attempts} attempts or {waited_ms} ms")]
    Contended { attempts: u32, waited_ms: u64 },
    #[error("request could not be built: {0}")]
    Build(#[from] aws_sdk_dynamodb::error::BuildError),
}

/// Error codes that say "this item or table is taking more than it may right now": the
/// request was refused, not failed, and a later one will pass.
const THROTTLED: [&str; 5] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
];

impl DynamoError {
    pub(crate) fn sdk<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        op: &'static str,
        e: &SdkError<E, R>,
    ) -> Self {
        Self::Sdk { op, message: DisplayErrorContext(e).to_string(), code: e.code().map(str::to_owned) }
    }

    /// Throttling and conflicts: overload, which a circuit breaker must not count as the store
    /// failing (it would shed customers while stock remains).
    fn is_contention(&self) -> bool {
        match self {
            Self::Contended { .. } => true,
            Self::Sdk { code: Some(code), .. } => THROTTLED.contains(&code.as_str()),
            _ => false,
        }
    }
}

impl From<DynamoError> for StoreError {
    fn from(e: DynamoError) -> Self {
        if e.is_contention() { StoreError::Contended(e.into()) } else { StoreError::unavailable(e) }
    }
}

/// What a failed write transaction means for the next step.
pub(crate) enum Attempt {
    /// Cancelled by conditions: the first item's (with its current image when the request asked
    /// for it), another item's, or both.
    Cancelled { first: Option<Item>, first_failed: bool },
    /// Another transaction held an item (`TransactionConflict`): nothing applied; another shard,
    /// or the same one a moment later, will do.
    Conflict(DynamoError),
    /// Throttled (an item's or the table's throughput): nothing applied; retry after a backoff.
    Busy(DynamoError),
    /// Sent, but the answer was lost (timeout, connection reset, 5xx): it may or may not have
    /// applied.
    Unknown(DynamoError),
    /// Refused for good (a validation error, a damaged request): retrying cannot help.
    Failed(DynamoError),
}

pub(crate) fn classify<E>(e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>, op: &'static str) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + 'static + AsCancellation,
{
    match e {
        SdkError::ServiceError(service) => {
            // A single-item write whose condition failed (with the item's image when asked).
            if let Some(image) = service.err().condition_failed() {
                return Attempt::Cancelled { first: image.cloned(), first_failed: true };
            }
            if let Some(reasons) = service.err().cancellation_reasons() {
                let code = |r: &CancellationReason| r.code().unwrap_or("None").to_owned();
                let codes: Vec<String> = reasons.iter().map(code).collect();
                // Per-item codes (DynamoDB's documented set): a conflict or throttling on any
                // item cancels the whole transaction without evaluating the others; a
                // validation error is a request that can never pass.
                if codes.iter().any(|c| c == "ValidationError") {
                    return Attempt::Failed(DynamoError::sdk(op, e));
                }
                if codes.iter().any(|c| matches!(c.as_str(), "ThrottlingError" | "ProvisionedThroughputExceeded")) {
                    return Attempt::Busy(DynamoError::sdk(op, e));
                }
                if codes.iter().any(|c| c == "TransactionConflict") {
                    return Attempt::Conflict(DynamoError::sdk(op, e));
                }
                let failed = |k: usize| codes.get(k).is_some_and(|c| c == "ConditionalCheckFailed");
                let image = |k: usize| reasons.get(k).filter(|_| failed(k)).and_then(|r| r.item().cloned());
                return Attempt::Cancelled { first: image(0), first_failed: failed(0) };
            }
            // A 5xx (InternalServerError, ServiceUnavailable), even after the SDK's own retries,
            // says nothing of whether the write applied: DynamoDB may have committed it.
            if service.raw().status().is_server_error() {
                return Attempt::Unknown(DynamoError::sdk(op, e));
            }
            match e.code() {
                Some("TransactionConflictException" | "TransactionInProgressException") => {
                    Attempt::Conflict(DynamoError::sdk(op, e))
                }
                Some(code) if THROTTLED.contains(&code) => Attempt::Busy(DynamoError::sdk(op, e)),
                _ => Attempt::Failed(DynamoError::sdk(op, e)),
            }
        }
        // The request may have reached DynamoDB: only a read can tell.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Attempt::Unknown(DynamoError::sdk(op, e))
        }
        _ => Attempt::Failed(DynamoError::sdk(op, e)),
    }
}

/// Access to why a conditional write was refused, whatever the operation's error type: a
/// transaction's cancellation reasons, or a single-item write's failed condition (`Some`, with
/// the item's image if the request asked for it).
pub(crate) trait AsCancellation {
    fn cancellation_reasons(&self) -> Option<&[CancellationReason]> {
        None
    }
    fn condition_failed(&self) -> Option<Option<&Item>> {
        None
    }
}

impl AsCancellation for aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError {
    fn cancellation_reasons(&self) -> Option<&[CancellationReason]> {
        match self {
            Self::TransactionCanceledException(c) => Some(c.cancellation_reasons()),
            _ => None,
        }
    }
}

impl AsCancellation for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn condition_failed(&self) -> Option<Option<&Item>> {
        match self {
            Self::ConditionalCheckFailedException(c) => Some(c.item()),
            _ => None,
        }
    }
}

impl AsCancellation for aws_sdk_dynamodb::operation::put_item::PutItemError {
    fn condition_failed(&self) -> Option<Option<&Item>> {
        match self {
            Self::ConditionalCheckFailedException(c) => Some(c.item()),
            _ => None,
        }
    }
}
