//! `firstcome-emulate`: API Gateway and the SQS trigger, stood in for on one machine, in front of
//! the real function binaries under `cargo lambda watch`. Routes and which of them the JWT
//! authorizer guards come from template.yaml (`emulator.py routes`); the authorizer checks the
//! emulated Cognito user pool's RS256 tokens against its JWKS, as configured in the template; each
//! request becomes the API Gateway v2 event the function would get on AWS. This machine's HS256 dev
//! tokens pass too (`POST /api/dev/token`, `<data dir>/admin-token`), as in local mode, so the
//! load tool works here unchanged. It also serves the
//! page and its `/config.json` (what CloudFront and the deploy step do). `cargo xtask emulate`
//! starts it; nothing here decides anything the functions do.

mod authorizer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use firstcome_api::Auth;
use firstcome_wire::site::{IdentityConfig, SiteConfig};
use firstcome_wire::{DevTokenRequest, DevTokenResponse};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};

/// API Gateway's own payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Where the stand-in API Gateway listens (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// `cargo lambda watch`'s address (its Lambda Invoke API).
    #[arg(long)]
    lambda: String,
    /// The HTTP API's routes, from `emulator.py routes template.yaml`.
    #[arg(long)]
    routes: PathBuf,
    /// Where the dev-token secret and the admin token are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// The JWT authorizer's issuer (template: the user pool's URL).
    #[arg(long)]
    jwt_issuer: String,
    /// The JWT authorizer's audiences, comma-separated (template: the app client).
    #[arg(long, value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// Where the user pool's signing keys are published.
    #[arg(long)]
    jwks_url: String,
    /// The user-pool API the page signs in with (`/config.json`).
    #[arg(long)]
    cognito_endpoint: String,
    /// The app client the page signs in as (`/config.json`).
    #[arg(long)]
    cognito_client_id: String,
    /// The ledger queue the SQS trigger's stand-in polls into the `ledger` function.
    #[arg(long)]
    ledger_queue_url: String,
    #[arg(long)]
    ledger_queue_arn: String,
    /// Serve the built page at every other path (what CloudFront does on AWS).
    #[arg(long)]
    site_dir: Option<PathBuf>,
    /// What CloudFront adds to every API request (`x-firstcome-origin`): this URL plays the
    /// distribution and the API at once, so it adds it as the distribution would.
    #[arg(long, env = "FIRSTCOME_ORIGIN_SECRET")]
    origin_secret: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Route {
    method: String,
    path: String,
    function: String,
    authorized: bool,
}

impl Route {
    /// The path parameters if `path` matches (`{name}` is one segment, `{name+}` the rest).
    fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.method != "ANY" && self.method != method {
            return None;
        }
        let mut params = Vec::new();
        let mut have = path.trim_start_matches('/').split('/');
        let want: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        for (i, w) in want.iter().enumerate() {
            if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix("+}")) {
                let rest: Vec<&str> = have.by_ref().collect();
                if rest.is_empty() || rest.iter().any(|s| s.is_empty()) || i + 1 != want.len() {
                    return None;
                }
                params.push((name.to_owned(), rest.join("/")));
                return Some(params);
            }
            let segment = have.next().filter(|s| !s.is_empty())?;
            match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) => params.push((name.to_owned(), segment.to_owned())),
                None if *w == segment => {}
                None => return None,
            }
        }
        have.next().is_none().then_some(params)
    }
}

struct Gateway {
    routes: Vec<Route>,
    authorizer: authorizer::JwtAuthorizer,
    /// Signs dev tokens; the same key the authorizer verifies them with.
    dev: Arc<Auth>,
    lambda: String,
    client: Client<HttpConnector, Full<Bytes>>,
    requests: AtomicU64,
    origin_secret: String,
}

impl Gateway {
    /// The Lambda Invoke API of `cargo lambda watch`: the function's JSON answer.
    async fn invoke(&self, function: &str, event: &Value) -> anyhow::Result<Value> {
        let req = hyper::Request::post(format!("{}/2015-03-31/functions/{function}/invocations", self.lambda))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(event)?)))?;
        let res = self.client.request(req).await.with_context(|| format!("invoking {function}"))?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status.is_success(), "{function} failed ({status}): {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body)
            .with_context(|| format!("{function} answered: {}", String::from_utf8_lossy(&body)))
    }
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    // What API Gateway itself answers (its shape, not the API's error body).
    (status, Json(json!({ "message": message }))).into_response()
}

async fn handle(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes()) else {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let Some((route, params)) = gw.routes.iter().find_map(|r| r.matches(method, path).map(|p| (r, p))) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    // The JWT authorizer: a valid token or 401 before the function is ever invoked.
    let claims = if route.authorized {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match token.and_then(|t| gw.authorizer.authorize(t.trim())) {
            Some(claims) => Some(Value::Object(claims)),
            None => return gateway_error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        }
    } else {
        None
    };
    let mut headers = serde_json::Map::new();
    // The distribution's origin header, whatever the client sent in its name.
    headers.insert(firstcome_aws::lambda::ORIGIN_HEADER.to_owned(), Value::String(gw.origin_secret.clone()));
    for (name, value) in &parts.headers {
        if name.as_str() == firstcome_aws::lambda::ORIGIN_HEADER {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => *joined = format!("{joined},{value}"),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let n = gw.requests.fetch_add(1, Ordering::Relaxed);
    let now = time::OffsetDateTime::now_utc();
    let (text, base64) = match std::str::from_utf8(&body) {
        Ok(t) => (t.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&body), true),
    };
    let query = parts.uri.query().unwrap_or("");
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{} {}", route.method, route.path),
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "emulated",
            "domainName": parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
            "domainPrefix": "emulated",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("emulated-{n}"),
            "routeKey": format!("{} {}", route.method, route.path),
            "stage": "$default",
            "time": now.to_string(),
            "timeEpoch": now.unix_timestamp() * 1000 + i64::from(now.millisecond()),
        },
        "isBase64Encoded": base64,
    });
    if !text.is_empty() {
        event["body"] = Value::String(text);
    }
    if !params.is_empty() {
        event["pathParameters"] = params.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    }
    if !query.is_empty() {
        event["queryStringParameters"] = url_pairs(query);
    }
    if let Some(claims) = claims {
        event["requestContext"]["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
    }
    match gw.invoke(&route.function, &event).await {
        Ok(answer) => {
            to_response(&answer).unwrap_or_else(|| gateway_error(StatusCode::BAD_GATEWAY, "Internal Server Error"))
        }
        Err(e) => {
            tracing::error!(error = %e, function = %route.function, "function failed");
            gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

fn url_pairs(query: &str) -> Value {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An API Gateway v2 function answer as the HTTP response the client sees.
fn to_response(answer: &Value) -> Option<Response> {
    let status = StatusCode::from_u16(answer["statusCode"].as_u64()? as u16).ok()?;
    let body = answer["body"].as_str().unwrap_or("");
    let body = if answer["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(body).ok()?
    } else {
        body.as_bytes().to_vec()
    };
    let mut headers = HeaderMap::new();
    for (k, v) in answer["headers"].as_object().into_iter().flatten() {
        headers.insert(HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()?).ok()?);
    }
    for (k, values) in answer["multiValueHeaders"].as_object().into_iter().flatten() {
        for v in values.as_array().into_iter().flatten() {
            headers.append(HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()?).ok()?);
        }
    }
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Some(res)
}

/// `POST /api/dev/token` (loopback only), as local mode has it: a user token for load tools.
async fn dev_token(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if !peer.ip().is_loopback() {
        return gateway_error(StatusCode::FORBIDDEN, "dev tokens are only handed out to this machine");
    }
    let Ok(DevTokenRequest { user_id }) = serde_json::from_slice(&body) else {
        return gateway_error(StatusCode::BAD_REQUEST, "expected {\"user_id\": \"...\"}");
    };
    let user = match firstcome_core::UserId::parse(&user_id) {
        Ok(user) => user,
        Err(e) => return gateway_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match gw.dev.sign(user.as_str(), None, time::Duration::days(1)) {
        Some(token) => Json(DevTokenResponse { token }).into_response(),
        None => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "the gateway cannot sign tokens"),
    }
}

/// How long the trigger pauses after finding the queue empty.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// The SQS trigger's stand-in: polls the ledger queue into the `ledger` function until stopped.
/// Short polls, never long ones: moto waits out a long poll inside its one request thread, so
/// every other caller of the emulator (claims included) would stall for the whole wait whenever
/// the queue is idle. The pause between empty polls happens here instead.
async fn trigger(gw: Arc<Gateway>, source: firstcome_aws::SqsEventSource) {
    loop {
        let polled = source
            .poll_once(Duration::ZERO, |event: SqsEvent| {
                let gw = gw.clone();
                async move {
                    match gw.invoke("ledger", &serde_json::to_value(&event).unwrap_or_default()).await {
                        Ok(answer) => serde_json::from_value::<SqsBatchResponse>(answer).unwrap_or_default(),
                        Err(e) => {
                            // The function failed as a whole: every message of the batch is retried.
                            tracing::error!(error = %e, "ledger function failed");
                            let mut all = SqsBatchResponse::default();
                            for m in &event.records {
                                let mut f = aws_lambda_events::event::sqs::BatchItemFailure::default();
                                f.item_identifier = m.message_id.clone().unwrap_or_default();
                                all.batch_item_failures.push(f);
                            }
                            all
                        }
                    }
                }
            })
            .await;
        match polled {
            Ok(p) if p.received > 0 => {}
            Ok(_) => tokio::time::sleep(IDLE_POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, "polling the ledger queue failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let routes: Vec<Route> = serde_json::from_str(&std::fs::read_to_string(&args.routes).context("reading routes")?)?;
    anyhow::ensure!(!routes.is_empty(), "{}: no routes", args.routes.display());
    std::fs::create_dir_all(&args.data_dir)?;
    let secret_path = args.data_dir.join("jwt-secret");
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_owned(),
        _ => {
            let s: String =
                rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric).take(48).map(char::from).collect();
            std::fs::write(&secret_path, &s)?;
            s
        }
    };
    let dev = Arc::new(Auth::hs256_signing(secret.as_bytes()));
    let admin_token = dev.sign("emulate-admin", Some(firstcome_api::auth::ADMIN_ROLE), time::Duration::days(30));
    std::fs::write(args.data_dir.join("admin-token"), admin_token.context("signing the admin token")?)?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let jwks = fetch_json(&client, &args.jwks_url).await.context("fetching the user pool's JWKS")?;
    let authorizer =
        authorizer::JwtAuthorizer::new(&jwks, &args.jwt_issuer, &args.jwt_audience)?.with_dev_tokens(dev.clone());
    let config = SiteConfig {
        identity: IdentityConfig::Cognito {
            endpoint: args.cognito_endpoint.clone(),
            client_id: args.cognito_client_id,
        },
    };

    let gw = Arc::new(Gateway {
        routes,
        authorizer,
        dev,
        lambda: args.lambda.trim_end_matches('/').to_owned(),
        client,
        requests: AtomicU64::new(0),
        origin_secret: args.origin_secret.clone(),
    });
    let sqs = aws_sdk_sqs_client().await;
    let source = firstcome_aws::SqsEventSource::new(sqs, &args.ledger_queue_url, &args.ledger_queue_arn);
    tokio::spawn(trigger(gw.clone(), source));

    let mut app = axum::Router::new()
        // Written into the bucket by the deploy workflow on AWS; never cached there either.
        .route("/api/dev/token", axum::routing::post(dev_token))
        .route(
            "/config.json",
            axum::routing::get(move || async move { ([(header::CACHE_CONTROL, "no-cache")], Json(config)) }),
        )
        .route("/api", axum::routing::any(handle))
        .route("/api/{*rest}", axum::routing::any(handle))
        .route("/healthz", axum::routing::any(handle));
    app = match &args.site_dir {
        Some(dir) => app.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(dir.join("index.html"))),
        ),
        None => app.fallback(handle),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("firstcome-emulate listening on http://{}", listener.local_addr()?);
    println!("admin token: {}", args.data_dir.join("admin-token").display());
    axum::serve(listener, app.with_state(gw).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn fetch_json(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> anyhow::Result<Value> {
    let res = client.get(url.parse()?).await?;
    anyhow::ensure!(res.status().is_success(), "{url}: {}", res.status());
    Ok(serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?)
}

async fn aws_sdk_sqs_client() -> firstcome_aws::SqsClient {
    firstcome_aws::SqsClient::new(&firstcome_aws::sdk_config().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Route {
        Route { method: method.into(), path: path.into(), function: "f".into(), authorized: false }
    }

    #[test]
    fn routes_match_like_api_gateway() {
        let claim = route("POST", "/api/campaigns/{id}/claims");
        assert_eq!(claim.matches("POST", "/api/campaigns/spring/claims"), Some(vec![("id".into(), "spring".into())]));
        assert_eq!(claim.matches("GET", "/api/campaigns/spring/claims"), None);
        assert_eq!(claim.matches("POST", "/api/campaigns//claims"), None);
        assert_eq!(claim.matches("POST", "/api/campaigns/spring/claims/me"), None);
        let admin = route("ANY", "/api/admin/{proxy+}");
        assert_eq!(
            admin.matches("PATCH", "/api/admin/campaigns/a"),
            Some(vec![("proxy".into(), "campaigns/a".into())])
        );
        assert_eq!(admin.matches("GET", "/api/admin"), None);
        assert_eq!(route("GET", "/healthz").matches("GET", "/healthz"), Some(vec![]));
    }

    #[test]
    fn function_answers_become_responses() {
        let res = to_response(&json!({
            "statusCode": 409, "headers": { "content-type": "application/json" },
            "multiValueHeaders": { "x-a": ["1", "2"] }, "body": "{}", "isBase64Encoded": false
        }))
        .unwrap();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(res.headers().get_all("x-a").iter().count(), 2);
        assert!(to_response(&json!({ "body": "no status" })).is_none());
    }
}
