//! firstcome's HTTP API: one `router(state)` that the Lambdas, the local server and in-process tests all serve.

pub mod auth;
mod convert;
pub mod error;
pub mod extract;
pub mod limits;
mod routes;
pub mod telemetry;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
pub use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use firstcome_core::Issuer;
use tower::ServiceExt;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Auth, GatewayIdentity, sign_hs256};
pub use error::ApiError;
/// The metric names, for readers of `/metrics` (the load tool).
pub use firstcome_core::telemetry as metric_names;
/// Largest request body accepted; campaign JSON is a few hundred bytes.
pub use firstcome_wire::BODY_LIMIT;
pub use limits::{ClientIp, LimitConfig, Limits, Rate};
pub use telemetry::{Exposition, RequestId};

#[derive(Clone)]
pub struct AppState {
    pub issuer: Arc<Issuer>,
    pub auth: Arc<Auth>,
    /// Serve `POST /api/dev/token` (local mode with `--dev-tokens`; loopback peers only).
    pub dev_tokens: bool,
    /// Per-user and per-client rate limits.
    pub limits: Arc<Limits>,
    /// Origins (`https://host[:port]`) whose pages may call the API from a browser; empty means
    /// same-origin only (the page and the API share CloudFront, or the local server).
    pub origins: Arc<[HeaderValue]>,
    /// Prometheus text at `/metrics` and the live view (local mode); none on Lambda, whose
    /// metrics leave as CloudWatch EMF lines.
    /// A process-wide singleton, by reference: the state is cloned per request.
    pub metrics: Option<&'static Exposition>,
}

impl AppState {
    /// The router's state with the defaults a deployment starts from: no dev tokens, the default
    /// limits, same-origin only, no local metrics. The `with_*` methods change one each.
    pub fn new(issuer: impl Into<Arc<Issuer>>, auth: impl Into<Arc<Auth>>) -> Self {
        Self {
            issuer: issuer.into(),
            auth: auth.into(),
            dev_tokens: false,
            limits: Arc::new(Limits::default()),
            origins: Arc::new([]),
            metrics: None,
        }
    }

    /// Serve `POST /api/dev/token` to loopback peers (local mode's `--dev-tokens`).
    pub fn with_dev_tokens(mut self, serve: bool) -> Self {
        self.dev_tokens = serve;
        self
    }

    pub fn with_limits(mut self, config: LimitConfig) -> Self {
        self.limits = Arc::new(Limits::new(config));
        self
    }

    /// Origins whose pages may call the API from a browser (CORS).
    pub fn with_origins(mut self, origins: impl Into<Arc<[HeaderValue]>>) -> Self {
        self.origins = origins.into();
        self
    }

    /// `/metrics` and the live view from this process's recorder (local mode).
    pub fn with_metrics(mut self, metrics: &'static Exposition) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// The state the routes share: one `Arc`, so the clone axum makes per request (and per
/// extractor) is one count, not one per field.
pub(crate) type Shared = Arc<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(title = "firstcome", description = "First-come-first-served coupon issuance."),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Routes and their OpenAPI description, built together so no route goes undocumented.
/// The dev token route exists only when this deployment can sign tokens (local mode).
fn documented(state: &AppState) -> OpenApiRouter<Shared> {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::public_campaigns))
        .routes(routes!(routes::get_campaign))
        .routes(routes!(routes::claim))
        .routes(routes!(routes::my_claim))
        .routes(routes!(routes::list_campaigns, routes::create_campaign))
        .routes(routes!(routes::admin_campaign, routes::patch_campaign))
        .routes(routes!(routes::end_campaign))
        .routes(routes!(routes::coupons))
        .routes(routes!(routes::coupons_csv))
        .routes(routes!(routes::live))
        .routes(routes!(routes::metrics));
    if state.dev_tokens && state.auth.can_sign() { router.routes(routes!(routes::dev_token)) } else { router }
}

/// The OpenAPI document for this deployment's routes.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    documented(state).into_openapi()
}

pub fn router(state: AppState) -> Router {
    router_with_site(state, None)
}

/// The API plus, for every path outside `/api/` and `/healthz` that no route takes, `site` (the
/// page's static files, in local mode). Unknown API paths still answer JSON, never a page.
pub fn router_with_site(state: AppState, site: Option<Router>) -> Router {
    let (router, api) = documented(&state).split_for_parts();
    let api = Arc::new(api);
    let limits = state.limits.clone();
    let cors = cors(&state.origins);
    let routes = router
        .route("/api/openapi.json", axum::routing::get(move || async move { axum::Json(api.as_ref().clone()) }))
        .fallback(move |req: axum::extract::Request| async move {
            let path = req.uri().path();
            let is_api = path == "/api" || path.starts_with("/api/") || path == "/healthz" || path == "/metrics";
            match site {
                Some(site) if !is_api => match site.oneshot(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                },
                _ => ApiError::NotFound(format!("no route for {} {path}", req.method())).into_response(),
            }
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(Arc::new(state));
    // The layers wrap the routes once, outside them, not each route (`Router::layer`): axum
    // clones a matched route's service per request, and with the layers inside it that was a
    // boxed clone per layer plus the CORS lists (perf, spike: `clone_box` 4.5 %, `Vec::clone`
    // and `CorsLayer::clone` 1.4 %, `bytes` shared clone/drop 1.9 %).
    let stack = tower::ServiceBuilder::new()
        .layer(telemetry::ObserveLayer)
        .map_response(IntoResponse::into_response)
        // 5xx are logged by `ObserveLayer` when they are failures (with their error chain); a
        // shed (503 `overloaded`) is counted, not logged: in a flood of them a line each would
        // be a write per shed on the core that is already saturated.
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
        .layer(cors)
        .layer(limits::FrontDoorLayer(limits.clone()))
        // Everything but the public campaign view (which sets its own) is per user or per
        // moment: never stored by a CDN or browser.
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::error_handling::HandleErrorLayer::new(|_: tower::BoxError| async { ApiError::Timeout }))
        .layer(tower::timeout::TimeoutLayer::new(limits.config().request_timeout))
        .service(routes);
    Router::new().fallback_service(stack)
}

/// Every request's span carries its id, at debug: an info span per claim costs the spike
/// throughput (the subscriber formats each span's fields; docs/observability.md has the figure),
/// so the lines that matter name the id themselves (`issued`, and every 5xx, logged by the
/// metrics layer).
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    // Field values are only evaluated when the span is enabled.
    tracing::debug_span!(
        "request",
        request_id = %req.extensions().get::<RequestId>().map_or_else(String::new, ToString::to_string),
        method = %req.method(),
        path = %req.uri().path()
    )
}

/// CORS: preflights answered, and only the listed origins allowed (tower-http answers a preflight
/// from any other origin without `Access-Control-Allow-Origin`, so the browser refuses it).
fn cors(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    tower_http::cors::CorsLayer::new()
        // A predicate over a shared list rather than `AllowOrigin::list`, whose `Vec` the layer's
        // per-request clone would copy.
        .allow_origin(tower_http::cors::AllowOrigin::predicate({
            let origins: Arc<[HeaderValue]> = origins.into();
            move |origin: &HeaderValue, _: &axum::http::request::Parts| origins.contains(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::PATCH])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::HeaderName::from_static(firstcome_core::ticket::HEADER),
        ])
        .expose_headers([header::ETAG, header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// Parses an origin allowlist (`https://a.example,https://b.example`): each must be a scheme and
/// host with an optional port, nothing more, so a typo cannot silently allow nothing or everything.
pub fn parse_origins(list: &str) -> Result<Vec<HeaderValue>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let uri: axum::http::Uri = o.parse().map_err(|_| format!("{o:?} is not an origin"))?;
            let plain = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some()
                && uri.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
                && !o.ends_with('/');
            if !plain || o == "*" {
                return Err(format!("{o:?} is not an origin like https://shop.example or http://127.0.0.1:8080"));
            }
            HeaderValue::from_str(o).map_err(|_| format!("{o:?} is not a header value"))
        })
        .collect()
}
