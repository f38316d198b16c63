//! `firstcome-latency`: a proxy in front of DynamoDB Local that holds each request for a round
//! trip drawn from a per-operation distribution (`--profile`, see `firstcome_sim::latency`),
//! so that claims from several containers race as they would against DynamoDB, and counts what
//! passes (`GET /stats`: requests per operation, the claims' allocations and record transactions
//! by outcome, the allocations given back, the write units DynamoDB bills for them). `cargo xtask emulate --latency aws` starts it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clap::Parser;
use firstcome_sim::latency::Profile;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// DynamoDB Local's URL.
    #[arg(long)]
    upstream: String,
    /// `aws`, `none`, or `OP=MEDIAN:P99,...,*=MEDIAN:P99` (ms).
    #[arg(long, default_value = "aws")]
    profile: String,
}

#[derive(Default)]
struct Stats {
    requests: BTreeMap<String, u64>,
    /// TransactWriteItems by outcome: committed, or the cancellation reasons' codes joined.
    transactions: BTreeMap<String, u64>,
    /// A claim's allocations (`UpdateItem` taking one from a shard) by outcome: allocated, or
    /// the error's type (a failed condition: the shard was empty or outside its window).
    allocations: BTreeMap<String, u64>,
    /// Allocations given back to a shard (`UpdateItem` appending to its `returned` list).
    given_back: u64,
    /// What DynamoDB bills, by its published rule for items under 1 KB: 2 WCU per item of a
    /// transactional write, committed or cancelled; 1 per single-item write.
    write_units: u64,
}

struct Proxy {
    profile: Profile,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    stats: Mutex<Stats>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = Profile::parse(&args.profile).map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
    let proxy = Arc::new(Proxy {
        profile,
        upstream: args.upstream.trim_end_matches('/').to_owned(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        stats: Mutex::default(),
    });
    let app = axum::Router::new().route("/stats", axum::routing::get(stats)).fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind(args.listen).await.context("binding --listen")?;
    println!("firstcome-latency listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await.context("serving")
}

async fn stats(State(proxy): State<Arc<Proxy>>) -> axum::Json<Value> {
    let s = proxy.stats.lock().unwrap_or_else(|p| p.into_inner());
    axum::Json(json!({
        "requests": s.requests,
        "transactions": s.transactions,
        "allocations": s.allocations,
        "given_back": s.given_back,
        "write_units": s.write_units,
    }))
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    match relay(&proxy, req).await {
        Ok(res) => res,
        Err(e) => (StatusCode::BAD_GATEWAY, format!("firstcome-latency: {e:#}")).into_response(),
    }
}

async fn relay(proxy: &Proxy, req: Request) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.context("reading the request")?.to_bytes();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("unknown")
        .to_owned();
    let half = proxy.profile.round_trip(&op).sample(&mut rand::rng()) / 2;
    tokio::time::sleep(half).await;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", proxy.upstream).parse::<Uri>().context("upstream URL")?);
    for (name, value) in &parts.headers {
        upstream = upstream.header(name, value);
    }
    let res = proxy.client.request(upstream.body(Full::new(body.clone()))?).await.context("DynamoDB Local")?;
    let (res_parts, res_body) = res.into_parts();
    let res_body = res_body.collect().await.context("reading the answer")?.to_bytes();
    count(proxy, &op, &body, res_parts.status, &res_body);
    tokio::time::sleep(half).await;
    Ok(Response::from_parts(res_parts, Body::from(res_body)))
}

fn count(proxy: &Proxy, op: &str, request: &[u8], status: StatusCode, answer: &[u8]) {
    let mut s = proxy.stats.lock().unwrap_or_else(|p| p.into_inner());
    *s.requests.entry(op.to_owned()).or_default() += 1;
    match op {
        "TransactWriteItems" => {
            let items = serde_json::from_slice::<Value>(request)
                .ok()
                .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
                .unwrap_or(0) as u64;
            let outcome = if status.is_success() {
                "committed".to_owned()
            } else {
                let v: Value = serde_json::from_slice(answer).unwrap_or_default();
                match v["CancellationReasons"].as_array() {
                    Some(reasons) => {
                        reasons.iter().map(|r| r["Code"].as_str().unwrap_or("?")).collect::<Vec<_>>().join("+")
                    }
                    None => error_type(answer),
                }
            };
            *s.transactions.entry(outcome).or_default() += 1;
            s.write_units += 2 * items;
        }
        "UpdateItem" => {
            s.write_units += 1;
            let v: Value = serde_json::from_slice(request).unwrap_or_default();
            let expression = v["UpdateExpression"].as_str().unwrap_or_default();
            if expression.contains("#left - :one") {
                let outcome = if status.is_success() { "allocated".to_owned() } else { error_type(answer) };
                *s.allocations.entry(outcome).or_default() += 1;
            } else if expression.contains("list_append") && status.is_success() {
                s.given_back += 1;
            }
        }
        "PutItem" | "DeleteItem" => s.write_units += 1,
        _ => {}
    }
}

/// The short type of a DynamoDB error answer (`ConditionalCheckFailedException`).
fn error_type(answer: &[u8]) -> String {
    let v: Value = serde_json::from_slice(answer).unwrap_or_default();
    v["__type"].as_str().and_then(|t| t.rsplit('#').next()).unwrap_or("error").to_owned()
}
