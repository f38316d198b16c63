//! Fuzzing the router (proptest, a few thousand cases per run of the test command): any method,
//! a path built from the API's own segments and hostile ones, any mix of tokens (valid, expired,
//! forged, `alg: none`, an admin's, garbage), ticket and `If-Match` headers, and bodies from random
//! bytes to deeply nested JSON. Whatever arrives, the answer is never a 5xx and never a panic,
//! and every refusal is the API's JSON error whose code carries the status answered.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use firstcome_api::{AppState, Auth, LimitConfig, router, sign_hs256};
use firstcome_core::Issuer;
use firstcome_core::testkit::MemoryStore;
use firstcome_wire::ErrorBody;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret";

/// The router over a store holding an open campaign, a scheduled one and an open one that
/// needs a ticket, so that fuzzed claims and edits reach the engine.
async fn app() -> Router {
    let store = Arc::new(MemoryStore::new());
    let issuer = Issuer::with_store(store);
    let now = time::OffsetDateTime::now_utc();
    for (id, opens_in, pow_bits) in [("open", -1, 0), ("later", 3600, 0), ("ticketed", -1, 4)] {
        let c = firstcome_core::NewCampaign {
            id: id.into(),
            title: id.into(),
            total: 50,
            opens_at: now + time::Duration::seconds(opens_in),
            closes_at: None,
            coupon: firstcome_core::CouponTemplate { discount: 1, currency: "KRW".into(), valid_days: 1 },
            pow_bits,
        }
        .validate(now)
        .unwrap();
        issuer.create(c, now).await.unwrap();
    }
    let state = AppState::new(issuer, Auth::hs256_signing(SECRET))
        .with_dev_tokens(true)
        .with_limits(LimitConfig::OFF)
        .with_origins(firstcome_api::parse_origins("https://shop.example").unwrap());
    router(state).layer(MockConnectInfo("127.0.0.1:40000".parse::<std::net::SocketAddr>().unwrap()))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Every kind of credential an attacker might send.
fn tokens() -> Vec<Option<String>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let user = sign_hs256(SECRET, "fuzzer", None, time::Duration::hours(1));
    let admin = sign_hs256(SECRET, "ops", Some("admin"), time::Duration::hours(1));
    let expired = sign_hs256(SECRET, "fuzzer", None, time::Duration::hours(-2));
    let forged = sign_hs256(b"another-secret-another-secret-xx", "ops", Some("admin"), time::Duration::hours(1));
    let payload = b64(json!({"sub": "ops", "role": "admin", "iat": now, "exp": now + 3600}).to_string().as_bytes());
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let parts: Vec<&str> = admin.split('.').collect();
    let swapped = format!("{}.{payload}.{}", parts[0], parts[2]);
    [
        None,
        Some(format!("Bearer {user}")),
        Some(format!("Bearer {admin}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {none}")),
        Some(format!("Bearer {swapped}")),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Basic b3BzOm9wcw==".into()),
        Some(format!("bearer {user}")),
        Some("Bearer a.b.c".into()),
        Some(format!("Bearer {}", "x".repeat(9000))),
    ]
    .into()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "api", "campaigns", "admin", "claims", "me", "coupons", "coupons.csv", "end", "dev", "token",
            "openapi.json", "healthz", "fuzz", "open",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "..", "%2e%2e", "%2F", "%00", "UPPER", "%C3%A9", "", ".", "a;b", "%25", "*", "~", "-", "%20",
            "?after=x&limit=-1", "?limit=99999999999999999999", "?after=%00", "#frag",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z0-9-]{60,80}",
        1 => "[!-~]{0,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let route = prop::sample::select(vec![
        "/api/admin/campaigns",
        "/api/admin/campaigns/{id}",
        "/api/admin/campaigns/{id}/coupons",
        "/api/admin/campaigns/{id}/coupons.csv",
        "/api/admin/campaigns/{id}/end",
        "/api/campaigns",
        "/api/campaigns/{id}",
        "/api/campaigns/{id}/claims",
        "/api/campaigns/{id}/claims/me",
        "/api/dev/token",
        "/healthz",
    ]);
    let id = prop_oneof![3 => prop::sample::select(vec!["open", "later", "ticketed", "none"]).prop_map(str::to_owned), 2 => segment()];
    let query = prop_oneof![
        3 => Just(String::new()),
        1 => prop::sample::select(vec!["?after=open", "?limit=0", "?limit=5", "?after=-1", "?limit=abc", "?x=1", "?after=%ff"])
            .prop_map(str::to_owned),
    ];
    prop_oneof![
        4 => (route, id, query).prop_map(|(r, id, q)| format!("{}{q}", r.replace("{id}", &id))),
        1 => prop::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/"))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[ -~]{0,20}".prop_map(Value::String),
        prop::sample::select(vec!["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-02-30T10:00:00Z", "KRW"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "id",
                        "title",
                        "total",
                        "opens_at",
                        "closes_at",
                        "coupon",
                        "discount",
                        "currency",
                        "valid_days",
                        "pow_bits",
                        "user_id",
                        "extra",
                    ]),
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let campaign = json!({
        "id": "fuzz", "title": "Fuzz", "total": 3, "opens_at": "2030-01-01T00:00:00Z",
        "coupon": {"discount": 1, "currency": "KRW", "valid_days": 1}
    });
    prop_oneof![
        2 => Just(None),
        2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Some),
        3 => json_value().prop_map(|v| Some(v.to_string().into_bytes())),
        // A valid campaign with one field replaced by anything.
        3 => (prop::sample::select(vec!["id", "title", "total", "opens_at", "closes_at", "coupon", "pow_bits", "x"]), json_value())
            .prop_map(move |(k, v)| { let mut c = campaign.clone(); c[k] = v; Some(c.to_string().into_bytes()) }),
        // Nesting far past serde_json's recursion limit, and bodies past the size limit.
        1 => (1usize..20_000).prop_map(|d| Some(format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes())),
        1 => (16_000usize..40_000).prop_map(|n| Some(format!("{{\"title\":\"{}\"}}", "x".repeat(n)).into_bytes())),
    ]
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[0-9]{1,25}".prop_map(Some),
        "[ -~]{0,30}".prop_map(Some),
        Just(Some("\"1\"".to_owned())),
        Just(Some("*".to_owned())),
    ]
}

/// One fuzzed request.
#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    path: String,
    token: Option<String>,
    ticket: Option<String>,
    if_match: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        // The methods the routes take, mostly; the valid tokens often enough to reach the engine.
        prop::sample::select(vec![
            "GET", "GET", "GET", "POST", "POST", "POST", "PATCH", "PATCH", "PUT", "DELETE", "OPTIONS", "HEAD", "TRACE",
        ]),
        path(),
        prop_oneof![2 => prop::sample::select(tokens()), 1 => prop::sample::select(tokens()[1..3].to_vec())],
        header_value(),
        header_value(),
        prop::sample::select(vec![
            None,
            Some("application/json"),
            Some("text/plain"),
            Some("application/json; charset=utf-16"),
        ]),
        body(),
    )
        .prop_map(|(method, path, token, ticket, if_match, content_type, body)| Case {
            method,
            path,
            token,
            ticket,
            if_match,
            content_type,
            body,
        })
}

#[test]
fn no_request_gets_a_5xx_or_a_non_json_refusal() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = rt.block_on(app());
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let config = ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&case(), |c| {
        let Ok(uri) = c.path.parse::<axum::http::Uri>() else { return Ok(()) };
        let mut req = Request::builder().method(c.method).uri(uri);
        let headers = [
            ("authorization", c.token.clone()),
            ("firstcome-ticket", c.ticket.clone()),
            ("if-match", c.if_match.clone()),
            ("content-type", c.content_type.map(str::to_owned)),
        ];
        for (name, value) in headers {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let Ok(req) = req.body(c.body.clone().map_or_else(Body::empty, Body::from)) else { return Ok(()) };
        let (status, bytes) = rt.block_on(async {
            let res = app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            (status, res.into_body().collect().await.unwrap().to_bytes())
        });
        *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
        let (method, path) = (c.method, &c.path);
        prop_assert!(!status.is_server_error(), "{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
        if status.is_client_error() && method != "HEAD" {
            let err: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!(
                    "{method} {path}: {status} is not an error body ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                ))
            })?;
            prop_assert_eq!(err.error.status(), status.as_u16(), "{} {}", method, path);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("fuzz: statuses answered: {seen:?}");
    // The cases reached past the front door: every kind of answer turned up.
    for status in [200, 400, 401, 403, 404, 405, 413] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    assert!(seen.keys().any(|s| [201, 409, 428].contains(s)), "no write got as far as the engine: {seen:?}");
}
