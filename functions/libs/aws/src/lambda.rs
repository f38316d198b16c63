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
    let queue = Arc::new(SqsIssuanceQueue::new(sqs.clone(), &config.ledger_queue_url));
    let store =
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables.clone(), config.shards).with_queue(queue);
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

/// The shared router behind API Gateway (the `claim` and `campaign` functions).
pub async fn serve_api() -> Result<(), Error> {
    init_logs();
    let metrics = init_metrics()?;
    let config = Config::from_env()?;
    let (store, _) = store(&config).await;
    let guarded = Arc::new(Guarded::new(store, GuardConfig::lambda()));
    let issuer = Arc::new(Issuer::new(guarded.clone(), guarded.clone(), guarded, CacheConfig::default()));
    let app = firstcome_api::router(AppState {
        issuer,
        auth: Arc::new(Auth::gateway()),
        dev_tokens: false,
        limits: Default::default(),
        origins: config.origins.clone().into(),
        metrics: None,
    });
    metrics_cloudwatch_embedded::lambda::service::run_http(
        metrics,
        service_fn(move |mut req: lambda_http::Request| {
            let app = app.clone();
            async move {
                if let Some(id) = identity(req.request_context_ref()) {
                    req.extensions_mut().insert(id);
                }
                // API Gateway's request id: the one in its access log and in our log lines.
                if let Some(id) = request_id(req.request_context_ref()) {
                    req.extensions_mut().insert(firstcome_api::RequestId::Gateway(id.into()));
                }
                // The per-client limit keys on the viewer's address: CloudFront's header when the
                // request came through the distribution (API Gateway then sees an edge address),
                // else the address API Gateway saw.
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

/// The scheduled reconciler: re-sends what is still unacknowledged after the grace period.
pub async fn serve_reconciler() -> Result<(), Error> {
    init_logs();
    let metrics = init_metrics()?;
    let config = Config::from_env()?;
    let (store, sqs) = store(&config).await;
    let queue = Arc::new(SqsIssuanceQueue::new(sqs, &config.ledger_queue_url));
    metrics_cloudwatch_embedded::lambda::service::run(
        metrics,
        lambda_runtime::service_fn(move |_: LambdaEvent<serde_json::Value>| {
            let (store, queue, grace) = (store.clone(), queue.clone(), config.reconcile_grace);
            async move {
                let before = time::OffsetDateTime::now_utc() - grace;
                let sent = firstcome_core::reconcile(&*store, &*queue, before, 1000).await?;
                if sent > 0 {
                    tracing::warn!(sent, "re-sent issuance records the ledger had not acknowledged");
                }
                Ok::<_, Error>(serde_json::json!({ "sent": sent }))
            }
        }),
    )
    .await
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

    #[test]
    fn cloudfront_viewer_addresses_parse_for_both_families() {
        assert_eq!(viewer_ip("203.0.113.9:51234"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(viewer_ip("2001:db8::1:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(viewer_ip("not an address"), None);
        assert_eq!(viewer_ip("203.0.113.9"), None, "no port: not CloudFront's format");
    }
}
