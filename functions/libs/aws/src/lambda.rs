//! The Lambda entry points the thin binaries call: typed config read once (a missing variable
//! stops the function at start, naming it), clients built once per container, then the runtime.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use firstcome_api::{AppState, Auth, ClientIp, GatewayIdentity};
use firstcome_core::{CacheConfig, Issuer};
use firstcome_guard::{GuardConfig, Guarded};
use firstcome_store_dynamo::DynamoStore;
use lambda_http::request::RequestContext;
use lambda_http::{RequestExt, service_fn};
use lambda_runtime::LambdaEvent;
use tower::ServiceExt;

use crate::{Config, SqsIssuanceQueue, ledger_batch, sdk_config};

pub use lambda_runtime::Error;

/// JSON lines to stdout (CloudWatch), level from `RUST_LOG` (default info).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().json().with_env_filter(filter).with_ansi(false).with_current_span(false).init();
}

async fn store(config: &Config) -> (Arc<DynamoStore>, aws_sdk_sqs::Client) {
    let sdk = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables.clone(), config.shards);
    (Arc::new(store), sqs)
}

/// The CloudWatch namespace of every metric the functions record.
pub const NAMESPACE: &str = "Firstcome";

/// Installs the EMF recorder: whatever the router, engine, guard and ledger record leaves as one
/// JSON line per label set on stdout at the end of each invocation, which CloudWatch turns into
/// metrics (no API call on the hot path). Dimensions: the function's name plus each metric's
/// labels. Must run before anything registers a metric.
pub fn init_metrics() -> Result<&'static metrics_cloudwatch_embedded::Collector, Error> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "firstcome".into());
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("function", function)
        .init()
        .map_err(|e| format!("installing the EMF metrics recorder: {e}"))?;
    firstcome_core::telemetry::describe();
    Ok(collector)
}

/// The router's own deadline for a request on Lambda: under the function's `Timeout` (10 s in
/// template.yaml) with a margin, so a slow claim is answered 408 `timeout` by the router (which
/// the page answers by checking the user's coupon) rather than 500 by API Gateway after the
/// function was killed; and above the guard's `claim_budget` so that the store calls of a claim
/// run to their own end first.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// The rate limits and deadline of the API functions.
pub fn limits() -> firstcome_api::LimitConfig {
    firstcome_api::LimitConfig { request_timeout: REQUEST_TIMEOUT, ..Default::default() }
}

/// The header CloudFront adds to every request it sends to the API (template.yaml, the
/// distribution's `api` origin), with the stack's `OriginSecret`.
pub const ORIGIN_HEADER: &str = "x-firstcome-origin";

/// Whether a request came through the distribution: it carries the origin secret. Compared in
/// constant time (a timing oracle would let the secret be guessed a byte at a time).
pub fn through_the_distribution(headers: &lambda_http::http::HeaderMap, secret: &str) -> bool {
    let Some(given) = headers.get(ORIGIN_HEADER).map(|v| v.as_bytes()) else { return false };
    given.len() == secret.len() && given.iter().zip(secret.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The answer to a request that went around the distribution (straight to execute-api).
fn around_the_distribution() -> axum::response::Response {
    use axum::response::IntoResponse;
    firstcome_api::ApiError::Forbidden("use the site's address: the API answers only requests that came through it")
        .into_response()
}

/// The shared router behind API Gateway (the `claim` and `campaign` functions).
pub async fn serve_api() -> Result<(), Error> {
    init_logs();
    let metrics = init_metrics()?;
    let config = Config::from_env()?;
    let origin_secret: Arc<str> =
        config.origin_secret.clone().ok_or(crate::ConfigError::Missing("FIRSTCOME_ORIGIN_SECRET"))?.into();
    let (store, sqs) = store(&config).await;
    let queue = Arc::new(SqsIssuanceQueue::new(sqs, &config.ledger_queue_url));
    let guarded = Arc::new(Guarded::new(store.clone(), GuardConfig::lambda()));
    // New coupons go to the ledger queue outside the guard, with their own timeout.
    let claims = Arc::new(crate::SendsIssued::new(guarded.clone(), store, queue));
    let issuer = Arc::new(Issuer::new(guarded.clone(), claims, guarded, CacheConfig::default()));
    let app = firstcome_api::router(
        AppState::new(issuer, Auth::gateway()).with_limits(limits()).with_origins(config.origins.clone()),
    );
    metrics_cloudwatch_embedded::lambda::service::run_http(
        metrics,
        service_fn(move |mut req: lambda_http::Request| {
            let (app, origin_secret) = (app.clone(), origin_secret.clone());
            async move {
                if !through_the_distribution(req.headers(), &origin_secret) {
                    return Ok(around_the_distribution());
                }
                if let Some(id) = identity(req.request_context_ref()) {
                    req.extensions_mut().insert(id);
                }
                // API Gateway's request id: the one in its access log and in our log lines.
                if let Some(id) = request_id(req.request_context_ref()) {
                    req.extensions_mut().insert(firstcome_api::RequestId::Gateway(id.into()));
                }
                // The per-client limit keys on the viewer's address: CloudFront's header, trusted
                // because the request proved (above) that it came through the distribution (API
                // Gateway then sees an edge address); else the address API Gateway saw.
                let viewer = req.headers().get("cloudfront-viewer-address").and_then(|v| viewer_ip(v.to_str().ok()?));
                if let Some(ip) = viewer.or_else(|| source_ip(req.request_context_ref())) {
                    req.extensions_mut().insert(ClientIp(ip));
                }
                let Ok(res) = app.oneshot(req).await;
                Ok::<_, Error>(res)
            }
        }),
    )
    .await
}

/// API Gateway's id for this request.
fn request_id(context: Option<&RequestContext>) -> Option<String> {
    match context? {
        RequestContext::ApiGatewayV2(ctx) => ctx.request_id.clone().filter(|id| !id.is_empty()),
        _ => None,
    }
}

/// The identity API Gateway's JWT authorizer verified, if the route has one.
fn identity(context: Option<&RequestContext>) -> Option<GatewayIdentity> {
    match context? {
        RequestContext::ApiGatewayV2(ctx) => identity_from_claims(&ctx.authorizer.as_ref()?.jwt.as_ref()?.claims),
        _ => None,
    }
}

/// `CloudFront-Viewer-Address`: `ip:port`, IPv6 unbracketed (`2001:db8::1:443`).
pub fn viewer_ip(header: &str) -> Option<std::net::IpAddr> {
    header.rsplit_once(':')?.0.parse().ok()
}

/// The caller's address as API Gateway saw it.
fn source_ip(context: Option<&RequestContext>) -> Option<std::net::IpAddr> {
    match context? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

/// `sub` is the user; Cognito's `cognito:groups` arrives flattened to a string like `[admin other]`.
pub fn identity_from_claims(claims: &HashMap<String, String>) -> Option<GatewayIdentity> {
    let sub = claims.get("sub").filter(|s| !s.is_empty())?.clone();
    let admin = claims.get("cognito:groups").is_some_and(|groups| {
        groups.trim_matches(|c| c == '[' || c == ']').split([' ', ',']).any(|g| g.trim_matches('"') == "admin")
    });
    Some(GatewayIdentity { sub, admin })
}

/// The SQS consumer (`ledger` function): one batch at a time, failures reported per message.
pub async fn serve_ledger() -> Result<(), Error> {
    init_logs();
    let metrics = init_metrics()?;
    let config = Config::from_env()?;
    let (store, _) = store(&config).await;
    metrics_cloudwatch_embedded::lambda::service::run(
        metrics,
        lambda_runtime::service_fn(move |event: LambdaEvent<SqsEvent>| {
            let store = store.clone();
            async move { Ok::<SqsBatchResponse, Error>(ledger_batch(&*store, &*store, event.payload).await) }
        }),
    )
    .await
}

/// The scheduled reconciler: gives back allocations no claim recorded (their claimant died or
/// gave up; `DynamoStore::recover_allocations`), then re-sends what is still unacknowledged
/// after the grace period and before the parking age, a bounded run at a time, continuing where
/// the last run in this container stopped. `{"include_parked": true}` as the event re-sends parked records too (an
/// operator's replay once the cause is fixed).
pub async fn serve_reconciler() -> Result<(), Error> {
    init_logs();
    let metrics = init_metrics()?;
    let config = Config::from_env()?;
    let (store, sqs) = store(&config).await;
    let queue = Arc::new(SqsIssuanceQueue::new(sqs, &config.ledger_queue_url));
    // One run at a time (ReservedConcurrentExecutions: 1); where it stopped, for the next.
    let cursor: Arc<tokio::sync::Mutex<Option<String>>> = Arc::default();
    metrics_cloudwatch_embedded::lambda::service::run(
        metrics,
        lambda_runtime::service_fn(move |event: LambdaEvent<serde_json::Value>| {
            let (store, queue, cursor) = (store.clone(), queue.clone(), cursor.clone());
            let settings = firstcome_core::ReconcileSettings {
                grace: time::Duration::try_from(config.reconcile_grace).unwrap_or(time::Duration::MINUTE),
                park_after: time::Duration::try_from(config.reconcile_park_after).unwrap_or(time::Duration::HOUR),
                include_parked: event.payload["include_parked"].as_bool().unwrap_or(false),
                ..Default::default()
            };
            async move {
                let mut cursor = cursor.lock().await;
                let recovered = recover_once(&store).await?;
                let run = reconcile_once(&*store, &*queue, cursor.take(), &settings).await?;
                *cursor = run.cursor.clone();
                let mut report = run_report(&run, &settings);
                report["allocations_given_back"] = recovered.given_back.into();
                Ok::<_, Error>(report)
            }
        }),
    )
    .await
}

/// One recovery pass over every campaign's shards, what it gave back logged (each is a claimant
/// that died or gave up between allocation and record: worth knowing about).
pub async fn recover_once(store: &DynamoStore) -> Result<firstcome_store_dynamo::Recovery, firstcome_core::StoreError> {
    let recovered = store.recover_allocations().await?;
    if recovered.given_back > 0 {
        tracing::warn!(
            given_back = recovered.given_back,
            shards = recovered.shards,
            "gave back allocations no claim recorded"
        );
    }
    Ok(recovered)
}

/// One reconciler run, its failures logged.
pub async fn reconcile_once(
    store: &dyn firstcome_core::Unledgered,
    queue: &dyn firstcome_core::IssuanceQueue,
    cursor: Option<String>,
    settings: &firstcome_core::ReconcileSettings,
) -> Result<firstcome_core::Reconciled, firstcome_core::StoreError> {
    let now = time::OffsetDateTime::now_utc();
    let run = firstcome_core::reconcile(store, queue, now, cursor, settings).await?;
    if run.sent > 0 {
        tracing::warn!(sent = run.sent, "re-sent issuance records the ledger had not acknowledged");
    }
    if run.failed > 0 {
        tracing::error!(failed = run.failed, errors = ?run.errors, "re-sending issuance records failed");
    }
    if let Some(oldest) = run.oldest.filter(|t| *t < now - settings.park_after) {
        tracing::error!(oldest = %oldest, "claims unacknowledged past the parking age: no longer re-sent by themselves; replay with {{\"include_parked\": true}} once the cause is fixed");
    }
    Ok(run)
}

fn run_report(run: &firstcome_core::Reconciled, settings: &firstcome_core::ReconcileSettings) -> serde_json::Value {
    let oldest = run.oldest.map(|t| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    serde_json::json!({
        "sent": run.sent,
        "failed": run.failed,
        "complete": run.cursor.is_none(),
        "oldest_unledgered": oldest,
        "include_parked": settings.include_parked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cognito_claims_become_an_identity() {
        let claims = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            identity_from_claims(&claims(&[("sub", "u-1"), ("cognito:groups", "[admin marketing]")])),
            Some(GatewayIdentity { sub: "u-1".into(), admin: true })
        );
        assert_eq!(
            identity_from_claims(&claims(&[("sub", "u-2"), ("cognito:groups", "[administrators]")])),
            Some(GatewayIdentity { sub: "u-2".into(), admin: false }),
            "only the exact group"
        );
        assert_eq!(identity_from_claims(&claims(&[("sub", "u-3")])).map(|i| i.admin), Some(false));
        assert_eq!(identity_from_claims(&claims(&[("cognito:groups", "[admin]")])), None, "no subject, no identity");
    }

    /// The function's `Timeout` as template.yaml's `Globals.Function` sets it.
    fn function_timeout() -> std::time::Duration {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../template.yaml")).unwrap();
        let globals = &template[template.find("\nGlobals:").expect("template has Globals")..];
        let function = &globals[globals.find("\n  Function:").expect("Globals has Function")..];
        let secs = function
            .lines()
            .find_map(|l| l.strip_prefix("    Timeout:"))
            .expect("Globals.Function has a Timeout")
            .trim()
            .parse()
            .unwrap();
        std::time::Duration::from_secs(secs)
    }

    #[test]
    fn a_claim_fits_inside_the_request_deadline_and_the_function_timeout() {
        let budget = GuardConfig::lambda().claim_budget();
        let margin = std::time::Duration::from_secs(1);
        assert!(budget + margin <= REQUEST_TIMEOUT, "store calls {budget:?} vs the router's {REQUEST_TIMEOUT:?}");
        assert!(
            REQUEST_TIMEOUT + margin <= function_timeout(),
            "the router must answer before the function is killed (API Gateway would answer 500)"
        );
        assert_eq!(limits().request_timeout, REQUEST_TIMEOUT);
    }

    #[test]
    fn only_requests_carrying_the_origin_secret_came_through_the_distribution() {
        let secret = "0123456789abcdef0123456789abcdef";
        let with = |v: Option<&str>| {
            let mut h = lambda_http::http::HeaderMap::new();
            if let Some(v) = v {
                h.insert(ORIGIN_HEADER, v.parse().unwrap());
            }
            through_the_distribution(&h, secret)
        };
        assert!(with(Some(secret)));
        assert!(!with(None), "straight to execute-api");
        assert!(!with(Some("0123456789abcdef0123456789abcdeF")));
        assert!(!with(Some("0123456789abcdef")), "a prefix");
        assert!(!with(Some(&format!("{secret}0"))));
        let refused = around_the_distribution();
        assert_eq!(refused.status(), 403);
    }

    #[test]
    fn cloudfront_viewer_addresses_parse_for_both_families() {
        assert_eq!(viewer_ip("203.0.113.9:51234"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(viewer_ip("2001:db8::1:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(viewer_ip("not an address"), None);
        assert_eq!(viewer_ip("203.0.113.9"), None, "no port: not CloudFront's format");
    }
}
