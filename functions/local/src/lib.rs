//! Local mode: the same router and engine as the Lambdas, on the embedded `SqliteStore`, with
//! the ledger worker in-process. `start` builds it from config; `run` serves it until shutdown.

pub mod ledger_worker;
pub mod serve;

use std::io::Write;
use std::num::NonZeroU32;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firstcome_api::{AppState, Auth, Exposition, LimitConfig};
use firstcome_core::{CampaignId, CampaignStore, CouponTemplate, Issuer, NewCampaign, Status, StoreError};
use firstcome_guard::{GuardConfig, Guarded};
use firstcome_store_sqlite::{SqliteError, SqliteStore};
use firstcome_wire::site::{IdentityConfig, SiteConfig};
use firstcome_wire::{ErrorBody, ErrorCode};
use rand::RngCore;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Typed configuration, read once by `main`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `FIRSTCOME_JWT_SECRET`; when absent, a secret is generated into `<data-dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Make sure a demo campaign is coming up: reuse one that has not opened yet, else create
    /// one (100 coupons, opening 30 s after start).
    pub demo: bool,
    /// Serve `POST /api/dev/token` to loopback peers: anyone on this machine may become any user.
    pub dev_tokens: bool,
    /// Ledger writes per second drained from the outbox.
    pub ledger_rate: NonZeroU32,
    /// The built page (`cargo xtask site` → `target/page`), served at `/`; API only when absent.
    pub site_dir: Option<PathBuf>,
    /// Connection cap, header deadline (which also closes idle connections), shutdown deadline.
    pub conns: serve::ConnLimits,
    /// Admission, timeout and breaker in front of the store.
    pub guard: GuardConfig,
    /// Per-user and per-client rate limits.
    pub limits: LimitConfig,
    /// Origins whose pages may call the API from a browser (CORS); empty = same-origin only.
    pub origins: Vec<axum::http::HeaderValue>,
}

impl Config {
    /// The local server's defaults for a data dir: what `firstcome-local --data-dir DIR` runs
    /// with (no demo, no dev tokens, 5,000 ledger writes a second, API only, every protection at
    /// its default). Change fields with struct update syntax: `Config { demo: true, ..Config::new(dir) }`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            jwt_secret: None,
            demo: false,
            dev_tokens: false,
            ledger_rate: NonZeroU32::new(5000).expect("non-zero"),
            site_dir: None,
            conns: serve::ConnLimits::default(),
            guard: GuardConfig::local(),
            limits: LimitConfig::default(),
            origins: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not open the store")]
    Store(#[from] SqliteError),
    #[error("could not load state from the store")]
    Load(#[source] StoreError),
    #[error("could not create the demo campaign")]
    Demo(#[source] firstcome_core::IssuerError),
    #[error("{path}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("FIRSTCOME_JWT_SECRET (or <data-dir>/jwt-secret) must be at least 32 bytes")]
    WeakSecret,
    #[error("--site-dir {0} has no index.html (build the page with `cargo xtask site`)")]
    NoSite(PathBuf),
    #[error("could not install the metrics recorder: {0}")]
    Metrics(String),
}

/// A started local service, not yet serving.
pub struct Local {
    pub state: AppState,
    pub store: SqliteStore,
    pub config: Config,
    pub admin_token_path: PathBuf,
    pub demo: Option<CampaignId>,
}

pub async fn start(config: Config) -> Result<Local, LocalError> {
    if let Some(dir) = &config.site_dir
        && !dir.join("index.html").is_file()
    {
        return Err(LocalError::NoSite(dir.clone()));
    }
    let store = SqliteStore::open(&config.data_dir)?;
    let secret = match &config.jwt_secret {
        Some(s) => s.clone().into_bytes(),
        None => load_or_create_secret(&config.data_dir.join("jwt-secret"))?,
    };
    if secret.len() < 32 {
        return Err(LocalError::WeakSecret);
    }
    let auth = Arc::new(Auth::hs256_signing(&secret));
    // Before anything registers a metric (the breaker's gauge, the engine's), or it would
    // register with the no-op recorder and never be seen.
    let metrics = Exposition::install().map_err(LocalError::Metrics)?;
    let guarded = Arc::new(Guarded::new(store.clone(), config.guard));
    let issuer = Arc::new(Issuer::with_store(guarded));

    let admin_token_path = config.data_dir.join("admin-token");
    let admin = auth
        .sign("local-admin", Some(firstcome_api::auth::ADMIN_ROLE), time::Duration::days(30))
        .expect("local mode signs");
    write_private(&admin_token_path, admin.as_bytes())?;

    let demo = if config.demo { Some(demo_campaign(&store, &issuer).await?) } else { None };
    let state = AppState::new(issuer, auth)
        .with_dev_tokens(config.dev_tokens)
        .with_limits(config.limits)
        .with_origins(config.origins.clone())
        .with_metrics(metrics);
    Ok(Local { state, store, config, admin_token_path, demo })
}

/// A demo campaign that has not opened yet: the one already waiting, if a previous start made
/// it, else a new one. Restarting does not pile up demos.
async fn demo_campaign(store: &SqliteStore, issuer: &Issuer) -> Result<CampaignId, LocalError> {
    let now = OffsetDateTime::now_utc();
    let mut after = None;
    loop {
        let page = store.campaigns(after.as_ref(), 200).await.map_err(LocalError::Load)?;
        if let Some(c) =
            page.iter().find(|c| c.id.as_str().starts_with("demo-") && c.window_at(now) == Status::Scheduled)
        {
            return Ok(c.id.clone());
        }
        match page.last() {
            Some(last) if page.len() == 200 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let stamp = now
        .format(time::macros::format_description!("[year][month][day]-[hour][minute][second]"))
        .expect("fixed format");
    let campaign = NewCampaign {
        id: format!("demo-{stamp}"),
        title: "Opening-day coupon: 5,000 KRW off, first 100 people".into(),
        total: 100,
        opens_at: now + time::Duration::seconds(30),
        closes_at: None,
        coupon: CouponTemplate { discount: 5000, currency: "KRW".into(), valid_days: 30 },
        pow_bits: 0,
    }
    .validate(now)
    .expect("the demo campaign is valid");
    Ok(issuer.create(campaign, now).await.map_err(LocalError::Demo)?.id)
}

fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, LocalError> {
    let file_err = |source| LocalError::File { path: path.to_owned(), source };
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, hex.as_bytes())?;
            Ok(hex.into_bytes())
        }
        Err(e) => Err(file_err(e)),
    }
}

/// Writes a secret file readable only by its owner (0600), replacing any previous one.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), LocalError> {
    let file_err = |source| LocalError::File { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(file_err)?;
    f.write_all(contents).and_then(|_| f.sync_all()).map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)
}

/// The whole HTTP surface of local mode: the API, and the page when `--site-dir` is given.
pub fn app(local: &Local) -> axum::Router {
    let dev_tokens = local.config.dev_tokens;
    firstcome_api::router_with_site(local.state.clone(), local.config.site_dir.as_deref().map(|d| site(d, dev_tokens)))
}

/// The client's address as a reverse proxy on this host reports it: the last `X-Forwarded-For`
/// entry (the one the proxy itself appended; earlier entries are whatever the client claimed).
pub fn forwarded_client(headers: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next()?.trim().parse().ok()
}

/// `app` behind a trusted reverse proxy (`--trust-proxy`): the per-client limit keys on the
/// forwarded address, and only on a request whose peer is loopback (the proxy on this host).
pub fn trusting_forwarded_for(app: axum::Router) -> axum::Router {
    app.layer(axum::middleware::from_fn(|mut req: axum::extract::Request, next: axum::middleware::Next| async move {
        let from_proxy = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|c| c.0.ip().is_loopback());
        if from_proxy && let Some(ip) = forwarded_client(req.headers()) {
            req.extensions_mut().insert(firstcome_api::ClientIp(ip));
        }
        next.run(req).await
    }))
}

/// Serves `local` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests (and so in-flight claims) finish, stops the ledger worker and flushes the store.
pub async fn run(
    listener: TcpListener,
    local: Local,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(&local);
    run_app(listener, local, app, shutdown).await
}

/// `run` with a given router (tests wrap `app` in fault injection).
pub async fn run_app(
    listener: TcpListener,
    local: Local,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let store = Arc::new(local.store.clone());
    let busy = {
        let store = store.clone();
        move || store.claims_busy(std::time::Duration::from_millis(100))
    };
    let worker =
        tokio::spawn(ledger_worker::run(store.clone(), store.clone(), local.config.ledger_rate, busy, stop_rx));
    let served = serve::serve(listener, app, local.config.conns.within_fd_limit(), shutdown).await;
    tracing::info!("no longer accepting; finishing the ledger worker and flushing the store");
    let _ = stop_tx.send(true);
    let _ = worker.await;
    local.store.close().await;
    tracing::info!("store flushed; bye");
    served
}

/// The page's static files: `/assets/*` are content-hashed, so cacheable for a year and
/// immutable; every other path is the app's `index.html` (its client-side routes), revalidated
/// on every load so a deploy is picked up at once. Brotli or gzip twins are served to clients
/// that accept them. `/config.json` tells the page how to sign in: dev tokens when they are on,
/// else a 404 (never the app's HTML, which the page could not read).
pub fn site(dir: &Path, dev_tokens: bool) -> axum::Router {
    use axum::http::{HeaderValue, Response, header::CACHE_CONTROL};
    use tower_http::services::{ServeDir, ServeFile};
    use tower_http::set_header::SetResponseHeaderLayer;

    fn on_success<B>(value: &'static str) -> impl Fn(&Response<B>) -> Option<HeaderValue> + Clone {
        // Never let a CDN keep an error (a missing asset) for a year.
        move |res: &Response<B>| res.status().is_success().then(|| HeaderValue::from_static(value))
    }
    let assets = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(CACHE_CONTROL, on_success("public, max-age=31536000, immutable")))
        .service(ServeDir::new(dir.join("assets")).precompressed_br().precompressed_gzip());
    let index = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(CACHE_CONTROL, on_success("no-cache")))
        .service(ServeFile::new(dir.join("index.html")).precompressed_br().precompressed_gzip());
    let config = move || async move {
        use axum::response::IntoResponse;
        let headers = [(CACHE_CONTROL, "no-cache")];
        if dev_tokens {
            (headers, axum::Json(SiteConfig { identity: IdentityConfig::DevTokens })).into_response()
        } else {
            let body = ErrorBody {
                error: ErrorCode::NotFound,
                message: "this server has no sign-in for the page (start it with --dev-tokens)".into(),
                field: None,
            };
            (axum::http::StatusCode::NOT_FOUND, headers, axum::Json(body)).into_response()
        }
    };
    axum::Router::new()
        .route("/config.json", axum::routing::get(config))
        .nest_service("/assets", assets)
        .fallback_service(index)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_client_is_the_entry_the_proxy_appended() {
        let headers = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            h
        };
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(forwarded_client(&headers(&["203.0.113.9"])), ip("203.0.113.9"));
        assert_eq!(
            forwarded_client(&headers(&["6.6.6.6, 203.0.113.9"])),
            ip("203.0.113.9"),
            "the client's own claim is not it"
        );
        assert_eq!(forwarded_client(&headers(&["6.6.6.6", "2001:db8::1"])), ip("2001:db8::1"));
        assert_eq!(forwarded_client(&headers(&["not an address"])), None);
        assert_eq!(forwarded_client(&headers(&[])), None);
    }
}
