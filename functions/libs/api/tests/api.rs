//! The router in-process over the in-memory reference store (the API knows no store crate):
//! status codes, error bodies, auth, bad input, conditional edits, cache headers, the OpenAPI
//! document against what the routes really answer, and claims under real concurrency.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use firstcome_api::{AppState, Auth, LimitConfig, router, sign_hs256};
use firstcome_core::testkit::MemoryStore;
use firstcome_core::{
    Campaign, CampaignId, CampaignStore, ClaimStore, Coupon, CouponCode, EndOutcome, IssuanceRecord, Issuer,
    LedgerStore, LedgerWrite, StoreClaim, StoreError, UserId,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower::ServiceExt;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

struct App {
    router: Router,
}

/// How a test app hands out tokens: the local server's dev tokens (the usual case), none at all,
/// or served by a deployment whose secret only verifies (it cannot sign one).
#[derive(Clone, Copy)]
enum DevTokens {
    Served,
    Off,
    CannotSign,
}

fn app_from(peer: &str, tokens: DevTokens) -> App {
    app_over(Arc::new(MemoryStore::new()), peer, tokens, LimitConfig::OFF)
}

fn app_limited(peer: &str, limits: LimitConfig) -> App {
    app_over(Arc::new(MemoryStore::new()), peer, DevTokens::Served, limits)
}

fn app_over<S: CampaignStore + ClaimStore + LedgerStore + 'static>(
    store: Arc<S>,
    peer: &str,
    tokens: DevTokens,
    limits: LimitConfig,
) -> App {
    let auth = match tokens {
        DevTokens::CannotSign => Auth::hs256_verifying(SECRET),
        DevTokens::Served | DevTokens::Off => Auth::hs256_signing(SECRET),
    };
    let state = AppState::new(Issuer::with_store(store), auth)
        .with_dev_tokens(!matches!(tokens, DevTokens::Off))
        .with_limits(limits)
        .with_origins(firstcome_api::parse_origins("https://shop.example").unwrap());
    App { router: router(state).layer(MockConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap())) }
}

async fn app() -> App {
    app_from("127.0.0.1:40000", DevTokens::Served)
}

fn admin() -> String {
    sign_hs256(SECRET, "ops", Some("admin"), time::Duration::hours(1))
}

fn user_token(id: &str) -> String {
    sign_hs256(SECRET, id, None, time::Duration::hours(1))
}

fn at(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset).format(&Rfc3339).unwrap()
}

fn campaign_body(id: &str, total: u64, opens_in: time::Duration) -> Value {
    json!({
        "id": id, "title": "Opening day", "total": total, "opens_at": at(opens_in),
        "coupon": {"discount": 5000, "currency": "KRW", "valid_days": 30}
    })
}

impl App {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let (s, _, v) = self.send(method, path, token, &[], body).await;
        (s, v)
    }

    /// The whole answer: status, headers and JSON body, with extra request headers.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = headers.get("content-type").is_some_and(|t| t.to_str().unwrap().starts_with("application/json"));
        let value = if bytes.is_empty() {
            Value::Null
        } else if json || !status.is_success() {
            serde_json::from_slice(&bytes).expect("every JSON or error answer is JSON")
        } else {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        };
        (status, headers, value)
    }

    /// A PATCH with `If-Match: "<version>"`.
    async fn patch(&self, id: &str, version: u64, body: &Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .send(
                "PATCH",
                &format!("/api/admin/campaigns/{id}"),
                Some(&admin()),
                &[("if-match", &format!("\"{version}\""))],
                Some(serde_json::to_vec(body).unwrap()),
            )
            .await;
        (s, v)
    }

    async fn json(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.call(method, path, token, Some(serde_json::to_vec(body).unwrap())).await
    }

    async fn create(&self, id: &str, total: u64, opens_in: time::Duration) {
        let (s, b) =
            self.json("POST", "/api/admin/campaigns", Some(&admin()), &campaign_body(id, total, opens_in)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    async fn claim(&self, id: &str, user: &str) -> (StatusCode, Value) {
        self.call("POST", &format!("/api/campaigns/{id}/claims"), Some(&user_token(user)), None).await
    }
}

fn assert_error(got: (StatusCode, Value), status: StatusCode, code: &str) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
    got.1["message"].as_str().expect("message is a string").to_owned()
}

#[tokio::test]
async fn health_answers() {
    let app = app().await;
    assert_eq!(app.call("GET", "/healthz", None, None).await, (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn claim_flow_issues_dedups_and_sells_out() {
    let app = app().await;
    app.create("flow", 2, time::Duration::seconds(-5)).await;

    let (s, first) = app.claim("flow", "alice").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["outcome"], "issued");
    assert_eq!(first["coupon"]["seq"], 1);
    assert_eq!(first["coupon"]["user_id"], "alice");
    assert_eq!(first["coupon"]["campaign_id"], "flow");
    let code = first["coupon"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 19);
    let parse = |v: &Value| OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(
        parse(&first["coupon"]["expires_at"]) - parse(&first["coupon"]["issued_at"]),
        time::Duration::days(30),
        "a coupon answers when it expires"
    );

    let (s, again) = app.claim("flow", "alice").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["outcome"], "already_issued");
    assert_eq!(again["coupon"], first["coupon"], "a retry gets the very same coupon");

    assert_eq!(app.claim("flow", "bob").await.1["coupon"]["seq"], 2);
    assert_error(app.claim("flow", "carol").await, StatusCode::CONFLICT, "sold_out");
    // After sell-out a winner's retry still answers with their coupon.
    assert_eq!(app.claim("flow", "alice").await.1["coupon"]["code"], code.as_str());

    let me = app.call("GET", "/api/campaigns/flow/claims/me", Some(&user_token("alice")), None).await;
    assert_eq!(me, (StatusCode::OK, first["coupon"].clone()));
    assert_error(
        app.call("GET", "/api/campaigns/flow/claims/me", Some(&user_token("carol")), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let (s, view) = app.call("GET", "/api/campaigns/flow", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (view["total"].clone(), view["remaining"].clone(), view["status"].clone()),
        (json!(2), json!(0), json!("sold_out"))
    );
    assert_eq!(view["coupon"], json!({"discount": 5000, "currency": "KRW", "valid_days": 30}));
    assert!(view["server_time"].is_string() && view["opens_at"].is_string() && view["closes_at"].is_null());

    let (s, admin_view) = app.call("GET", "/api/admin/campaigns/flow", Some(&admin()), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((admin_view["issued"].clone(), admin_view["remaining"].clone()), (json!(2), json!(0)));
    assert_eq!(admin_view["ledger_written"], 0, "no ledger worker runs in this test");
    let (_, list) = app.call("GET", "/api/admin/campaigns", Some(&admin()), None).await;
    assert_eq!(list["campaigns"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn not_open_then_rescheduled_then_frozen() {
    let app = app().await;
    app.create("later", 5, time::Duration::hours(1)).await;
    let (_, headers, view) = app.send("GET", "/api/admin/campaigns/later", Some(&admin()), &[], None).await;
    assert_eq!((view["version"].clone(), headers["etag"].to_str().unwrap()), (json!(1), "\"1\""));
    assert_eq!(view["status"], "scheduled");
    assert_error(app.claim("later", "alice").await, StatusCode::CONFLICT, "not_open");

    let patch = json!({"opens_at": at(time::Duration::seconds(-1)), "total": 3, "title": "Now"});
    let (s, changed) = app.patch("later", 1, &patch).await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["total"].clone(), changed["title"].clone(), changed["status"].clone(), changed["version"].clone()),
        (json!(3), json!("Now"), json!("open"), json!(2))
    );
    assert_eq!(app.claim("later", "alice").await.0, StatusCode::CREATED);

    let msg = assert_error(app.patch("later", 2, &json!({"total": 10})).await, StatusCode::CONFLICT, "already_open");
    assert!(msg.contains("opened"));
    assert_error(app.patch("nope", 1, &json!({"total": 10})).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn edits_are_conditional_on_the_version() {
    let app = app().await;
    app.create("race", 5, time::Duration::hours(1)).await;
    let path = "/api/admin/campaigns/race";
    let body = || Some(serde_json::to_vec(&json!({"total": 7})).unwrap());
    // Without If-Match an edit could silently overwrite one it never saw: refused.
    let (s, _, v) = app.send("PATCH", path, Some(&admin()), &[], body()).await;
    assert_error((s, v), StatusCode::PRECONDITION_REQUIRED, "precondition_required");
    for bad in ["7", "\"x\"", "W/\"1\""] {
        let (s, _, v) = app.send("PATCH", path, Some(&admin()), &[("if-match", bad)], body()).await;
        assert_error((s, v), StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Two marketers edit version 1; the second loses with a clear code, nothing is overwritten.
    let (s, first) = app.patch("race", 1, &json!({"title": "First"})).await;
    assert_eq!((s, first["version"].clone()), (StatusCode::OK, json!(2)));
    let m =
        assert_error(app.patch("race", 1, &json!({"title": "Second"})).await, StatusCode::CONFLICT, "version_conflict");
    assert!(m.contains("version 2"), "{m}");
    let (_, v) = app.call("GET", path, Some(&admin()), None).await;
    assert_eq!(v["title"], "First");
    // `*` edits whatever is stored.
    let (s, headers, v) = app.send("PATCH", path, Some(&admin()), &[("if-match", "*")], body()).await;
    assert_eq!((s, v["total"].clone(), headers["etag"].to_str().unwrap()), (StatusCode::OK, json!(7), "\"3\""));
}

#[tokio::test]
async fn closing_time_can_be_set_and_removed_before_open_and_closes_claims() {
    let app = app().await;
    app.create("short", 5, time::Duration::hours(1)).await;
    let set = json!({"closes_at": at(time::Duration::hours(2))});
    let (_, v) = app.patch("short", 1, &set).await;
    assert!(v["closes_at"].is_string(), "{v}");
    let (_, v) = app.patch("short", 2, &json!({"closes_at": null})).await;
    assert!(v["closes_at"].is_null(), "{v}");

    let mut body = campaign_body("ended", 5, time::Duration::seconds(-30));
    body["closes_at"] = json!(at(time::Duration::seconds(-10)));
    assert_eq!(app.json("POST", "/api/admin/campaigns", Some(&admin()), &body).await.0, StatusCode::CREATED);
    assert_error(app.claim("ended", "alice").await, StatusCode::CONFLICT, "closed");
    assert_eq!(app.call("GET", "/api/campaigns/ended", None, None).await.1["status"], "closed");
}

#[tokio::test]
async fn odd_dates_are_400_not_a_panic() {
    let app = app().await;
    let cases = [
        ("opens_at", json!("9999-12-31T23:59:59-01:00")),
        ("opens_at", json!("0000-01-01T00:00:00+01:00")),
        ("opens_at", json!(at(time::Duration::hours(-1)))),
        ("closes_at", json!("9999-12-31T23:59:59-01:00")),
    ];
    for (field, value) in cases {
        let mut body = campaign_body("odd", 5, time::Duration::hours(1));
        body[field] = value.clone();
        let m = assert_error(
            app.json("POST", "/api/admin/campaigns", Some(&admin()), &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        assert!(m.contains(field), "{value}: {m}");
    }
    // Opening "now" (a few seconds ago) is fine.
    app.create("odd", 5, time::Duration::seconds(-5)).await;
}

#[tokio::test]
async fn auth_failures_are_401_and_403() {
    let app = app().await;
    app.create("auth", 5, time::Duration::seconds(-5)).await;
    let path = "/api/campaigns/auth/claims";
    let m = assert_error(app.call("POST", path, None, None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("Bearer"), "{m}");
    assert_error(app.call("POST", path, Some("not-a-jwt"), None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let forged = sign_hs256(b"some-other-secret-some-other-secret", "mallory", None, time::Duration::hours(1));
    let m = assert_error(app.call("POST", path, Some(&forged), None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("signature"), "{m}");
    let expired = sign_hs256(SECRET, "late", None, time::Duration::hours(-1));
    let m = assert_error(app.call("POST", path, Some(&expired), None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("expired"), "{m}");
    let bad_sub = sign_hs256(SECRET, "has space", None, time::Duration::hours(1));
    assert_error(app.call("POST", path, Some(&bad_sub), None).await, StatusCode::UNAUTHORIZED, "unauthorized");

    let user = user_token("alice");
    for (m, p) in [("GET", "/api/admin/campaigns"), ("GET", "/api/admin/campaigns/auth")] {
        assert_error(app.call(m, p, Some(&user), None).await, StatusCode::FORBIDDEN, "forbidden");
        assert_error(app.call(m, p, None, None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let body = campaign_body("sneaky", 5, time::Duration::hours(1));
    assert_error(
        app.json("POST", "/api/admin/campaigns", Some(&user), &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Admins are not claimants: an admin token would use up stock meant for customers.
    let m = assert_error(app.call("POST", path, Some(&admin()), None).await, StatusCode::FORBIDDEN, "forbidden");
    assert!(m.contains("admin"), "{m}");
    let me = "/api/campaigns/auth/claims/me";
    assert_error(app.call("GET", me, Some(&admin()), None).await, StatusCode::FORBIDDEN, "forbidden");
    let (_, v) = app.call("GET", "/api/admin/campaigns/auth", Some(&admin()), None).await;
    assert_eq!(v["issued"], 0);
}

#[tokio::test]
async fn public_views_may_be_cached_briefly_and_everything_else_never() {
    let app = app().await;
    app.create("cache", 5, time::Duration::seconds(-10)).await;
    let cache_control = |h: &HeaderMap| h["cache-control"].to_str().unwrap().to_owned();
    let (s, h, _) = app.send("GET", "/api/campaigns/cache", None, &[], None).await;
    assert_eq!((s, cache_control(&h)), (StatusCode::OK, "public, max-age=1".into()));
    // Around the opening no copy may be kept: one made before T0 would say "scheduled" after it,
    // and its old server_time would make the page's clock late.
    app.create("cache-soon", 5, time::Duration::minutes(10)).await;
    app.create("cache-just-opened", 5, time::Duration::seconds(-2)).await;
    for id in ["cache-soon", "cache-just-opened"] {
        let (s, h, _) = app.send("GET", &format!("/api/campaigns/{id}"), None, &[], None).await;
        assert_eq!((s, cache_control(&h)), (StatusCode::OK, "no-store".into()), "{id}");
    }
    let (_, h, _) = app.send("GET", "/api/campaigns", None, &[], None).await;
    assert_eq!(cache_control(&h), "no-store", "the list holds a campaign that opened 2 s ago");
    let alice = user_token("alice");
    for (m, p, t) in [
        ("POST", "/api/campaigns/cache/claims", Some(alice.as_str())),
        ("GET", "/api/campaigns/cache/claims/me", Some(alice.as_str())),
        ("GET", "/api/admin/campaigns/cache", Some(&admin())),
        ("GET", "/api/campaigns/missing", None),
    ] {
        let (_, h, _) = app.send(m, p, t, &[], None).await;
        assert_eq!(cache_control(&h), "no-store", "{m} {p}");
    }
}

#[tokio::test]
async fn the_public_list_shows_open_and_upcoming_campaigns_and_may_be_cached() {
    let app = app().await;
    app.create("later", 5, time::Duration::hours(2)).await;
    app.create("now", 5, time::Duration::seconds(-5)).await;
    app.create("soon", 1, time::Duration::minutes(10)).await;
    app.create("gone", 1, time::Duration::seconds(-5)).await;
    assert_eq!(app.claim("gone", "alice").await.0, StatusCode::CREATED);
    assert_error(app.claim("gone", "bob").await, StatusCode::CONFLICT, "sold_out");
    let (s, h, v) = app.send("GET", "/api/campaigns", None, &[], None).await;
    assert_eq!((s, h["cache-control"].to_str().unwrap()), (StatusCode::OK, "public, max-age=1"));
    let list: firstcome_wire::CampaignList = serde_json::from_value(v).unwrap();
    let ids: Vec<&str> = list.campaigns.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["now", "soon", "later"], "open first, then by opening; sold out is not listed");
    assert_eq!(list.campaigns[1].status, firstcome_wire::CampaignStatus::Scheduled);
}

#[tokio::test]
async fn marketing_ends_a_running_campaign_now_and_winners_keep_their_coupons() {
    let app = app().await;
    app.create("run", 5, time::Duration::seconds(-5)).await;
    app.create("sched", 5, time::Duration::hours(1)).await;
    let (s, won) = app.claim("run", "alice").await;
    assert_eq!(s, StatusCode::CREATED);
    let end = |id: &str| format!("/api/admin/campaigns/{id}/end");
    assert_error(
        app.call("POST", &end("run"), Some(&user_token("bob")), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (s, h, v) = app.send("POST", &end("run"), Some(&admin()), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["status"].as_str(), v["version"].as_u64(), v["total"].as_u64()), (Some("closed"), Some(2), Some(5)));
    assert_eq!(h["etag"], "\"2\"");
    assert!(v["closes_at"].is_string());
    assert_error(app.claim("run", "bob").await, StatusCode::CONFLICT, "closed");
    let (s, again) = app.claim("run", "alice").await;
    assert_eq!((s, &again["coupon"]["code"]), (StatusCode::OK, &won["coupon"]["code"]));
    assert_error(app.call("POST", &end("run"), Some(&admin()), None).await, StatusCode::CONFLICT, "closed");
    assert_error(app.call("POST", &end("sched"), Some(&admin()), None).await, StatusCode::CONFLICT, "not_open");
    assert_error(app.call("POST", &end("nope"), Some(&admin()), None).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_winners_list_comes_in_pages_and_as_a_spreadsheet_safe_csv() {
    let app = app().await;
    app.create("win", 5, time::Duration::seconds(-5)).await;
    let users = ["alice", "=HYPERLINK(\"http://x\",\"y\")", "bob,jr", "-2+3", "carol"];
    let mut codes = HashMap::new();
    for u in users {
        let (s, v) = app.claim("win", u).await;
        assert_eq!(s, StatusCode::CREATED, "{u}: {v}");
        codes.insert(v["coupon"]["seq"].as_u64().unwrap(), (u, v["coupon"]["code"].as_str().unwrap().to_owned()));
    }
    let page = |q: &str| format!("/api/admin/campaigns/win/coupons{q}");
    let (s, first) = app.call("GET", &page("?limit=2"), Some(&admin()), None).await;
    assert_eq!(s, StatusCode::OK);
    let first: firstcome_wire::CouponPage = serde_json::from_value(first).unwrap();
    assert_eq!((first.coupons.len(), first.next), (2, Some(2)));
    let (_, rest) = app.call("GET", &page("?after=2&limit=10"), Some(&admin()), None).await;
    let rest: firstcome_wire::CouponPage = serde_json::from_value(rest).unwrap();
    assert_eq!(rest.next, None);
    let all: Vec<_> = first.coupons.iter().chain(&rest.coupons).collect();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for c in &all {
        assert_eq!((c.user_id.as_str(), &c.code), (codes[&u64::from(c.seq)].0, &codes[&u64::from(c.seq)].1));
    }
    assert_error(
        app.call("GET", &page("?limit=0"), Some(&admin()), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        app.call("GET", &page("?after=-1"), Some(&admin()), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        app.call("GET", &page(""), Some(&user_token("alice")), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let (s, h, csv) = app.send("GET", "/api/admin/campaigns/win/coupons.csv", Some(&admin()), &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert_eq!(h["content-disposition"], "attachment; filename=\"win-winners.csv\"");
    let csv = csv.as_str().unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "seq,user_id,code,issued_at,expires_at");
    assert_eq!(lines.len(), 6);
    let row = |seq: u64| lines.iter().find(|l| l.starts_with(&format!("{seq},"))).unwrap().to_string();
    let seq_of = |u: &str| *codes.iter().find(|(_, (v, _))| *v == u).unwrap().0;
    assert!(row(seq_of("alice")).starts_with(&format!("{},alice,{},", seq_of("alice"), codes[&seq_of("alice")].1)));
    // Formulas are defused with a leading quote, then RFC 4180-quoted where needed.
    assert!(
        row(seq_of(users[1])).contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","),
        "{}",
        row(seq_of(users[1]))
    );
    assert!(row(seq_of("bob,jr")).contains(",\"bob,jr\","));
    assert!(row(seq_of("-2+3")).contains(",'-2+3,"));
}

#[tokio::test]
async fn the_admin_list_comes_in_pages() {
    let app = app().await;
    for i in 0..5 {
        app.create(&format!("page-{i}"), 1, time::Duration::hours(1)).await;
    }
    let mut seen = Vec::new();
    let mut url = "/api/admin/campaigns?limit=2".to_owned();
    loop {
        let (s, page) = app.call("GET", &url, Some(&admin()), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let ids: Vec<String> =
            page["campaigns"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().into()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next"].as_str() {
            Some(next) => url = format!("/api/admin/campaigns?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>());
    for bad in ["limit=0", "limit=201", "limit=x", "after=UPPER", "surprise=1"] {
        assert_error(
            app.call("GET", &format!("/api/admin/campaigns?{bad}"), Some(&admin()), None).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    let app = app().await;
    let admin = admin();
    let post = |body: Value| {
        let app = &app;
        let admin = admin.clone();
        async move { app.json("POST", "/api/admin/campaigns", Some(&admin), &body).await }
    };
    let base = campaign_body("good-id", 10, time::Duration::hours(1));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|b| b["surprise"] = json!(1)), "surprise"),
        (with(&|b| b["id"] = json!("Bad Slug")), "id"),
        (with(&|b| b["total"] = json!("many")), "total"),
        (with(&|b| b["total"] = json!(-1)), "total"),
        (with(&|b| b["total"] = json!(0)), "total"),
        (with(&|b| b["opens_at"] = json!("tomorrow")), "opens_at"),
        (with(&|b| b["closes_at"] = json!("2020-13-01T00:00:00Z")), "closes_at"),
        (with(&|b| b["closes_at"] = json!(at(time::Duration::minutes(30)))), "closes_at"),
        (with(&|b| b["coupon"]["currency"] = json!("won")), "coupon.currency"),
        (with(&|b| b["coupon"]["extra"] = json!(true)), "extra"),
        (with(&|b| b.as_object_mut().unwrap().remove("title").map(|_| ()).unwrap()), "title"),
    ];
    for (body, field) in cases {
        let answer = post(body.clone()).await;
        let blamed = answer.1["field"].clone();
        let msg = assert_error(answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(msg.contains(field), "message {msg:?} should name {field:?} for {body}");
        // A form shows the message beside the field the answer blames.
        if !["surprise", "extra", "title"].contains(&field) {
            assert_eq!(blamed, json!(field), "{body}");
        }
    }
    let raw = |bytes: &[u8]| app.call("POST", "/api/admin/campaigns", Some(&admin), Some(bytes.to_vec()));
    assert_error(raw(b"{not json").await, StatusCode::BAD_REQUEST, "invalid_request");
    assert_error(raw(b"").await, StatusCode::BAD_REQUEST, "invalid_request");
    assert_error(raw(br#"{"id":"x"} {}"#).await, StatusCode::BAD_REQUEST, "invalid_request");
    let huge = format!(r#"{{"id":"big","title":"{}"}}"#, "x".repeat(firstcome_api::BODY_LIMIT + 1));
    assert_error(raw(huge.as_bytes()).await, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Nothing above created anything.
    assert_eq!(app.call("GET", "/api/admin/campaigns", Some(&admin), None).await.1["campaigns"], json!([]));

    app.create("taken", 1, time::Duration::hours(1)).await;
    assert_error(post(campaign_body("taken", 1, time::Duration::hours(1))).await, StatusCode::CONFLICT, "conflict");
    let msg =
        assert_error(app.patch("taken", 1, &json!({"total": "x"})).await, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(msg.contains("total"), "{msg}");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let app = app().await;
    let m = assert_error(
        app.call("GET", "/api/campaigns/UPPER", None, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert!(m.contains("id"), "{m}");
    assert_error(app.call("GET", "/api/campaigns/missing", None, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(app.claim("missing", "alice").await, StatusCode::NOT_FOUND, "not_found");
    assert_error(app.call("GET", "/nowhere", None, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        app.call("DELETE", "/api/campaigns/x", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn dev_tokens_sign_users_in_but_never_admins() {
    let app = app().await;
    app.create("dev", 5, time::Duration::seconds(-5)).await;
    let (s, body) = app.json("POST", "/api/dev/token", None, &json!({"user_id": "dora"})).await;
    assert_eq!(s, StatusCode::OK);
    let token = body["token"].as_str().unwrap();
    let (s, claimed) = app.call("POST", "/api/campaigns/dev/claims", Some(token), None).await;
    assert_eq!((s, claimed["coupon"]["user_id"].clone()), (StatusCode::CREATED, json!("dora")));
    assert_error(app.call("GET", "/api/admin/campaigns", Some(token), None).await, StatusCode::FORBIDDEN, "forbidden");
    let m = assert_error(
        app.json("POST", "/api/dev/token", None, &json!({"user_id": "x", "role": "admin"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert!(m.contains("role"), "{m}");
    assert_error(
        app.json("POST", "/api/dev/token", None, &json!({"user_id": ""})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // Only to this machine: anyone who can reach the port must not become any user.
    let remote = app_from("192.0.2.7:40000", DevTokens::Served);
    assert_error(
        remote.json("POST", "/api/dev/token", None, &json!({"user_id": "x"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Off unless asked for (--dev-tokens), and a deployment that cannot sign (Lambda) has no such route.
    for off in [app_from("127.0.0.1:1", DevTokens::Off), app_from("127.0.0.1:1", DevTokens::CannotSign)] {
        assert_error(
            off.json("POST", "/api/dev/token", None, &json!({"user_id": "x"})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_that_answer() {
    let app = app().await;
    let (s, doc) = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in
            item.as_object().unwrap().keys().filter(|k| ["get", "post", "patch", "put", "delete"].contains(&k.as_str()))
        {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let expected = [
        "GET /api/admin/campaigns",
        "GET /api/admin/campaigns/{id}",
        "GET /api/admin/campaigns/{id}/coupons",
        "GET /api/admin/campaigns/{id}/coupons.csv",
        "GET /api/admin/live",
        "GET /api/campaigns",
        "GET /api/campaigns/{id}",
        "GET /api/campaigns/{id}/claims/me",
        "GET /healthz",
        "GET /metrics",
        "PATCH /api/admin/campaigns/{id}",
        "POST /api/admin/campaigns",
        "POST /api/admin/campaigns/{id}/end",
        "POST /api/campaigns/{id}/claims",
        "POST /api/dev/token",
    ];
    assert_eq!(documented, expected);
    // Every documented operation is routed: it answers with something other than the router's
    // "no route" 404 or 405.
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let (s, body) = app.call(method, &path.replace("{id}", "probe"), None, Some(b"{}".to_vec())).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{op}");
        assert!(!body["message"].as_str().unwrap_or("").starts_with("no route"), "{op} is documented but not routed");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// 64 concurrent tasks, 5,000 users each clicking twice, 1,000 coupons.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_issue_exactly_the_stock() {
    const USERS: usize = 5_000;
    const STOCK: u64 = 1_000;
    const TASKS: usize = 64;
    let app = Arc::new(app().await);
    app.create("rush", STOCK, time::Duration::seconds(-5)).await;
    let tokens: Arc<Vec<String>> = Arc::new((0..USERS).map(|u| user_token(&format!("u{u}"))).collect());

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (app, tokens) = (app.clone(), tokens.clone());
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // Each user clicks twice, the second click from another task, so repeats race.
            for i in (t..USERS * 2).step_by(TASKS) {
                let u = if i < USERS { i } else { (i - USERS + USERS / 2) % USERS };
                let (s, body) = app.call("POST", "/api/campaigns/rush/claims", Some(&tokens[u]), None).await;
                seen.push((u, s, body));
            }
            seen
        }));
    }
    let mut code_of: HashMap<usize, String> = HashMap::new();
    let mut seqs = Vec::new();
    let (mut issued, mut repeats, mut sold_out) = (0, 0, 0);
    for h in handles {
        for (u, s, body) in h.await.unwrap() {
            match s {
                StatusCode::CREATED => {
                    issued += 1;
                    seqs.push(body["coupon"]["seq"].as_u64().unwrap());
                    let code = body["coupon"]["code"].as_str().unwrap().to_owned();
                    assert_eq!(code_of.entry(u).or_insert(code.clone()), &code, "user {u} got two codes");
                }
                StatusCode::OK => {
                    repeats += 1;
                    let code = body["coupon"]["code"].as_str().unwrap().to_owned();
                    assert_eq!(
                        code_of.entry(u).or_insert(code.clone()),
                        &code,
                        "a repeat for {u} returned another code"
                    );
                }
                StatusCode::CONFLICT => {
                    assert_eq!(body["error"], "sold_out");
                    sold_out += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    assert_eq!(issued, STOCK as usize);
    assert_eq!(issued + repeats + sold_out, USERS * 2);
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=STOCK).collect::<Vec<_>>(), "seq 1..=stock without gaps");
    assert_eq!(code_of.values().collect::<HashSet<_>>().len(), STOCK as usize, "codes are distinct");
    for (u, code) in &code_of {
        let (s, me) = app.call("GET", "/api/campaigns/rush/claims/me", Some(&tokens[*u]), None).await;
        assert_eq!((s, me["code"].as_str().unwrap()), (StatusCode::OK, code.as_str()));
    }
    let (_, v) = app.call("GET", "/api/admin/campaigns/rush", Some(&admin()), None).await;
    assert_eq!((v["issued"].clone(), v["remaining"].clone()), (json!(STOCK), json!(0)));
}

/// Every operation lists the statuses it can answer, with the constraints the server enforces in
/// its schemas; then every operation is probed with hostile variants (no token, a forged one, the
/// wrong role, bad ids, broken and oversized bodies, odd If-Match) and each answer's status must be
/// one the document lists for that operation, with an error body of a documented code.
#[tokio::test]
async fn openapi_lists_every_status_each_route_answers() {
    let app = app().await;
    app.create("probe", 1, time::Duration::hours(1)).await;
    let (_, doc) = app.call("GET", "/api/openapi.json", None, None).await;

    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["CreateCampaign"]["properties"]["id"]["pattern"], firstcome_wire::CAMPAIGN_ID_PATTERN);
    assert_eq!(schemas["CreateCampaign"]["properties"]["total"]["maximum"], json!(firstcome_wire::MAX_TOTAL));
    assert_eq!(schemas["CouponTerms"]["properties"]["currency"]["pattern"], "^[A-Z]{3}$");
    let codes: Vec<&str> =
        schemas["ErrorCode"]["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for code in firstcome_wire::ErrorCode::ALL {
        assert!(codes.contains(&code.as_str()), "{} is not in the documented enum", code.as_str());
    }

    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                continue;
            }
            let method = method.to_uppercase();
            let documented: HashSet<u16> =
                op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
            let name = format!("{method} {path}");
            let has = |s: u16| documented.contains(&s);
            if path.contains("{id}") {
                assert!(has(400) && has(404), "{name} has a path id: 400 and 404");
                let id = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "id").unwrap();
                assert_eq!(id["schema"]["pattern"], firstcome_wire::CAMPAIGN_ID_PATTERN, "{name}");
            }
            if op.get("security").is_some() {
                assert!(has(401) && has(403), "{name} is authenticated: 401 and 403");
            }
            if op.get("requestBody").is_some() {
                assert!(has(400) && has(413), "{name} reads a body: 400 and 413");
            }
            // The live view reads this process's metrics, never the store.
            if path.starts_with("/api/") && !path.starts_with("/api/dev/") && path != "/api/admin/live" {
                assert!(has(503), "{name} reaches the store: 503");
            }

            for id in ["probe", "missing", "UPPER", &"a".repeat(65), "%20"] {
                let url = path.replace("{id}", id);
                for token in [None, Some("garbage".to_owned()), Some(user_token("prober")), Some(admin())] {
                    for body in [None, Some(b"{}".to_vec()), Some(b"{bad".to_vec()), Some(vec![b' '; BODY + 1])] {
                        for if_match in [None, Some("\"1\""), Some("*"), Some("bad")] {
                            let headers: Vec<(&str, &str)> = if_match.map(|m| ("if-match", m)).into_iter().collect();
                            let (s, _, v) = app.send(&method, &url, token.as_deref(), &headers, body.clone()).await;
                            probed += 1;
                            assert!(
                                has(s.as_u16()),
                                "{name} answered {s} (undocumented) for id={id} token={} body={:?}: {v}",
                                token.is_some(),
                                body.as_ref().map(|b| b.len())
                            );
                            if !s.is_success() {
                                let e: firstcome_wire::ErrorBody = serde_json::from_value(v.clone())
                                    .unwrap_or_else(|err| panic!("{name} {s}: not an ErrorBody ({err}): {v}"));
                                assert_eq!(e.error.status(), s.as_u16(), "{name}: {v}");
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(probed > 1000, "{probed}");
}

const BODY: usize = firstcome_api::BODY_LIMIT;

/// Behind API Gateway the token was verified upstream: identity is the `GatewayIdentity` the
/// Lambda glue inserts, and a bearer token alone (never verified here) counts for nothing.
#[tokio::test]
async fn behind_the_gateway_identity_comes_from_the_authorizer_only() {
    use firstcome_api::GatewayIdentity;
    let store = Arc::new(MemoryStore::new());
    let issuer = Arc::new(Issuer::with_store(store));
    let app = router(AppState::new(issuer, Auth::gateway()).with_dev_tokens(true).with_limits(LimitConfig::OFF));
    let send = |method: &str, path: &str, id: Option<GatewayIdentity>, body: Option<Value>| {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if id.is_none() {
            // A perfectly signed local token: must not be honoured where the gateway decides.
            req = req.header("authorization", format!("Bearer {}", admin()));
        }
        let mut req = req.body(Body::from(body.map(|b| b.to_string()).unwrap_or_default())).unwrap();
        if let Some(id) = id {
            req.extensions_mut().insert(id);
        }
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let marketing = || Some(GatewayIdentity { sub: "m-1".into(), admin: true });
    let customer = || Some(GatewayIdentity { sub: "c-1".into(), admin: false });
    let body = campaign_body("gateway", 5, time::Duration::seconds(-1));
    let (status, err) = send("POST", "/api/admin/campaigns", None, Some(body.clone())).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (status, _) = send("POST", "/api/admin/campaigns", customer(), Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a customer is not marketing");
    let (status, _) = send("POST", "/api/admin/campaigns", marketing(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, claim) = send("POST", "/api/campaigns/gateway/claims", customer(), None).await;
    assert_eq!((status, claim["outcome"].as_str()), (StatusCode::CREATED, Some("issued")));
    let (status, _) = send("POST", "/api/campaigns/gateway/claims", marketing(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins are not claimants");
    // Nothing signs tokens here, so the dev token route does not exist even when asked for.
    let (status, _) = send("POST", "/api/dev/token", None, Some(json!({"user_id": "x"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_user_over_their_rate_gets_429_with_retry_after_and_others_do_not() {
    let limits = LimitConfig { per_user: firstcome_api::Rate::new(1, 3), ..LimitConfig::OFF };
    let app = app_limited("127.0.0.1:40000", limits);
    app.create("limited", 100, time::Duration::seconds(-1)).await;
    let (me, other) = (user_token("eager"), user_token("calm"));
    for _ in 0..3 {
        let (status, body) = app.call("POST", "/api/campaigns/limited/claims", Some(&me), None).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "{status} {body}");
    }
    let (status, headers, body) = app.send("POST", "/api/campaigns/limited/claims", Some(&me), &[], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let (status, _) = app.call("POST", "/api/campaigns/limited/claims", Some(&other), None).await;
    assert_eq!(status, StatusCode::CREATED, "another user is not limited by the first");
}

#[tokio::test]
async fn claims_over_the_in_flight_limit_are_shed_at_the_door_with_retry_after() {
    // No claim may be in flight: each is shed before its token is read; nothing else is limited.
    let limits = LimitConfig { max_claims_in_flight: Some(0), ..LimitConfig::OFF };
    let app = app_limited("127.0.0.1:40000", limits);
    app.create("door", 10, time::Duration::seconds(-1)).await;
    let (status, headers, body) =
        app.send("POST", "/api/campaigns/door/claims", Some(&user_token("ann")), &[], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")), "{body}");
    assert_eq!(headers["retry-after"], "1");
    let (status, _, body) = app.send("POST", "/api/campaigns/door/claims", Some("not-a-token"), &[], None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "shed before the token is read: {body}");
    assert_eq!(app.call("GET", "/api/campaigns/door", None, None).await.0, StatusCode::OK);
    assert_eq!(app.call("GET", "/healthz", None, None).await.0, StatusCode::OK);
    let view = app.call("GET", "/api/admin/campaigns/door", Some(&admin()), None).await;
    assert_eq!(view.1["issued"], 0, "{}", view.1);
}

#[tokio::test]
async fn a_client_address_over_its_rate_gets_429_and_loopback_is_exempt_unless_asked() {
    let limits = LimitConfig { per_client: firstcome_api::Rate::new(1, 3), ..LimitConfig::OFF };
    let remote = app_limited("203.0.113.7:5000", limits);
    for _ in 0..3 {
        assert_eq!(remote.call("GET", "/healthz", None, None).await.0, StatusCode::OK);
    }
    let (status, headers, body) = remote.send("GET", "/api/campaigns", None, &[], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
    assert!(headers.contains_key("retry-after"));

    let local = app_limited("127.0.0.1:5000", limits);
    for _ in 0..10 {
        assert_eq!(local.call("GET", "/healthz", None, None).await.0, StatusCode::OK, "loopback is exempt");
    }
    let counted = app_limited("127.0.0.1:5000", LimitConfig { limit_loopback: true, ..limits });
    let statuses: Vec<StatusCode> =
        futures::future::join_all((0..5).map(|_| counted.call("GET", "/healthz", None, None)))
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 2, "{statuses:?}");
}

#[tokio::test]
async fn the_address_api_gateway_saw_is_the_one_limited() {
    let limits = LimitConfig { per_client: firstcome_api::Rate::new(1, 1), ..LimitConfig::OFF };
    // The connection is API Gateway's (loopback here); the client is who it says.
    let app = app_limited("127.0.0.1:5000", limits);
    let send = |ip: &'static str| {
        let router = app.router.clone();
        async move {
            let mut req = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
            req.extensions_mut().insert(firstcome_api::ClientIp(ip.parse().unwrap()));
            router.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(send("198.51.100.1").await, StatusCode::OK);
    assert_eq!(send("198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(send("198.51.100.2").await, StatusCode::OK);
}

#[tokio::test]
async fn preflights_are_answered_and_only_listed_origins_are_allowed() {
    let app = app().await; // allows https://shop.example
    let preflight = |origin: &'static str| {
        let router = app.router.clone();
        async move {
            let req = Request::builder()
                .method("OPTIONS")
                .uri("/api/campaigns/launch/claims")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization,firstcome-ticket")
                .body(Body::empty())
                .unwrap();
            router.oneshot(req).await.unwrap()
        }
    };
    let ok = preflight("https://shop.example").await;
    assert_eq!(ok.status(), StatusCode::OK, "a preflight is answered, not 405");
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("firstcome-ticket"), "{allowed}");

    let stranger = preflight("https://evil.example").await;
    assert!(!stranger.headers().contains_key("access-control-allow-origin"), "another origin is not allowed");

    app.create("cors", 5, time::Duration::seconds(-1)).await;
    let (status, headers, _) = app
        .send("POST", "/api/campaigns/cors/claims", Some(&user_token("u")), &[("origin", "https://shop.example")], None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert!(headers["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase().contains("retry-after"));
}

#[test]
fn origin_lists_are_parsed_strictly() {
    let ok = firstcome_api::parse_origins(" https://a.example, http://127.0.0.1:8080 ,").unwrap();
    assert_eq!(ok, ["https://a.example", "http://127.0.0.1:8080"]);
    assert!(firstcome_api::parse_origins("").unwrap().is_empty());
    for bad in ["*", "https://a.example/path", "https://a.example/", "ftp://a.example", "a.example", "https://"] {
        assert!(firstcome_api::parse_origins(bad).is_err(), "{bad} accepted");
    }
}

/// Solves `user`'s ticket from the campaign's public view.
fn solve(view: &Value, campaign: &str, user: &str) -> u64 {
    let bits = view["ticket"]["bits"].as_u64().unwrap() as u8;
    let nonce = firstcome_core::ticket::Nonce::from_hex(view["ticket"]["nonce"].as_str().unwrap()).unwrap();
    firstcome_core::ticket::Puzzle::new(bits, campaign, user, &nonce).search(0, u64::MAX).unwrap()
}

#[tokio::test]
async fn a_ticketed_campaign_hides_its_nonce_until_opening_and_claims_need_a_ticket() {
    let app = app().await;
    let mut body = campaign_body("later", 5, time::Duration::hours(1));
    body["pow_bits"] = json!(8);
    assert_eq!(app.json("POST", "/api/admin/campaigns", Some(&admin()), &body).await.0, StatusCode::CREATED);
    let (_, view) = app.call("GET", "/api/campaigns/later", None, None).await;
    assert_eq!(view["ticket"], json!({"bits": 8}), "before opens_at the nonce is not out: {view}");
    let (_, admin_view) = app.call("GET", "/api/admin/campaigns/later", Some(&admin()), None).await;
    assert_eq!(admin_view["ticket"], json!({"bits": 8}), "nor to marketing");
    let (_, list) = app.call("GET", "/api/campaigns", None, None).await;
    assert_eq!(list["campaigns"][0]["ticket"], json!({"bits": 8}), "nor in the list");

    let mut body = campaign_body("now", 2, time::Duration::seconds(-1));
    body["pow_bits"] = json!(8);
    assert_eq!(app.json("POST", "/api/admin/campaigns", Some(&admin()), &body).await.0, StatusCode::CREATED);
    let (_, view) = app.call("GET", "/api/campaigns/now", None, None).await;
    assert_eq!(view["ticket"]["nonce"].as_str().map(str::len), Some(32), "{view}");

    let claim = |user: &'static str, ticket: Option<String>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = match &ticket {
                Some(t) => vec![("firstcome-ticket", t.as_str())],
                None => vec![],
            };
            let (s, _, v) =
                app.send("POST", "/api/campaigns/now/claims", Some(&user_token(user)), &headers, None).await;
            (s, v)
        }
    };
    let msg = assert_error(claim("alice", None).await, StatusCode::BAD_REQUEST, "ticket_required");
    assert!(msg.contains("Firstcome-Ticket"), "{msg}");
    for junk in ["abc", "-1", "+5", "1.0", "99999999999999999999999", ""] {
        let got = claim("alice", Some(junk.into())).await;
        assert_eq!(got.1["field"], "Firstcome-Ticket", "{junk:?}");
        assert_error(got, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Bob's ticket is not Alice's: it is bound to the user.
    let bobs = solve(&view, "now", "bob");
    let nonce = firstcome_core::ticket::Nonce::from_hex(view["ticket"]["nonce"].as_str().unwrap()).unwrap();
    let puzzle = firstcome_core::ticket::Puzzle::new(8, "now", "alice", &nonce);
    if !puzzle.verify(bobs) {
        assert_error(claim("alice", Some(bobs.to_string())).await, StatusCode::FORBIDDEN, "ticket_invalid");
    }
    let wrong = (0..).find(|&n| !puzzle.verify(n)).unwrap();
    assert_error(claim("alice", Some(wrong.to_string())).await, StatusCode::FORBIDDEN, "ticket_invalid");
    assert_eq!(app.call("GET", "/api/campaigns/now", None, None).await.1["remaining"], 2, "refusals issued nothing");

    let alices = solve(&view, "now", "alice").to_string();
    let (s, won) = claim("alice", Some(alices.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{won}");
    assert_eq!(claim("alice", Some(alices)).await.0, StatusCode::OK, "the same ticket again: the same coupon");
    assert_eq!(claim("bob", Some(bobs.to_string())).await.0, StatusCode::CREATED);
    // The first loser pays a ticket to learn it is sold out; once this instance knows, later
    // ones are told from memory, ticket or not.
    let carols = solve(&view, "now", "carol").to_string();
    assert_error(claim("carol", Some(carols)).await, StatusCode::CONFLICT, "sold_out");
    assert_error(claim("dave", None).await, StatusCode::CONFLICT, "sold_out");
}

#[tokio::test]
async fn ticket_difficulty_is_validated_and_editable_before_opening() {
    let app = app().await;
    let mut body = campaign_body("hard", 5, time::Duration::hours(1));
    body["pow_bits"] = json!(25);
    let got = app.json("POST", "/api/admin/campaigns", Some(&admin()), &body).await;
    assert_eq!(got.1["field"], "pow_bits");
    assert_error(got, StatusCode::BAD_REQUEST, "invalid_request");
    app.create("hard", 5, time::Duration::hours(1)).await;
    let (_, view) = app.call("GET", "/api/campaigns/hard", None, None).await;
    assert!(view.get("ticket").is_none(), "no ticket unless asked for: {view}");
    let (s, edited) = app.patch("hard", 1, &json!({"pow_bits": 12})).await;
    assert_eq!(s, StatusCode::OK, "{edited}");
    assert_eq!(edited["ticket"], json!({"bits": 12}));
}

/// The reference store with a winners list that lags its issues, as DynamoDB's `by_seq` index
/// may for a moment: while `lagging`, the newest coupon is missing from `coupons`.
struct LaggingWinners {
    inner: MemoryStore,
    lagging: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl CampaignStore for LaggingWinners {
    async fn insert_campaign(&self, c: &Campaign) -> Result<(), StoreError> {
        self.inner.insert_campaign(c).await
    }
    async fn update_campaign(&self, next: &Campaign, v: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        self.inner.update_campaign(next, v, now).await
    }
    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        self.inner.end_campaign(id, now).await
    }
    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        self.inner.campaign(id).await
    }
    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        self.inner.campaigns(after, limit).await
    }
}

#[async_trait::async_trait]
impl ClaimStore for LaggingWinners {
    async fn claim_with_ticket(
        &self,
        id: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.inner.claim_with_ticket(id, user, code, ticket, now).await
    }
    async fn coupon_of(&self, id: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.inner.coupon_of(id, user).await
    }
    async fn issued(&self, id: &CampaignId) -> Result<u64, StoreError> {
        self.inner.issued(id).await
    }
    async fn coupons(&self, id: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let mut page = self.inner.coupons(id, after, limit).await?;
        let newest = self.inner.issued(id).await? as u32;
        if self.lagging.load(std::sync::atomic::Ordering::SeqCst) {
            page.retain(|c| c.seq != newest);
        }
        Ok(page)
    }
}

#[async_trait::async_trait]
impl LedgerStore for LaggingWinners {
    async fn append(&self, r: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        self.inner.append(r).await
    }
    async fn ledger_written(&self, id: &CampaignId) -> Result<u64, StoreError> {
        self.inner.ledger_written(id).await
    }
}

#[tokio::test]
async fn a_winners_list_shorter_than_the_issued_count_says_so() {
    let store = Arc::new(LaggingWinners { inner: MemoryStore::new(), lagging: true.into() });
    let app = app_over(store.clone(), "127.0.0.1:40000", DevTokens::Served, LimitConfig::OFF);
    app.create("lag", 5, time::Duration::seconds(-5)).await;
    for u in ["alice", "bob", "carol"] {
        assert_eq!(app.claim("lag", u).await.0, StatusCode::CREATED);
    }
    // The index has not caught up with the third coupon: the CSV is refused, not sent short.
    let (s, h, v) = app.send("GET", "/api/admin/campaigns/lag/coupons.csv", Some(&admin()), &[], None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    assert_eq!(v["error"], "unavailable");
    assert!(v["message"].as_str().unwrap().contains("2 of 3"), "{v}");
    // The paged list carries the exact count to compare with.
    let (s, page) = app.call("GET", "/api/admin/campaigns/lag/coupons", Some(&admin()), None).await;
    assert_eq!(s, StatusCode::OK);
    let page: firstcome_wire::CouponPage = serde_json::from_value(page).unwrap();
    assert_eq!((page.coupons.len(), page.next, page.issued), (2, None, 3));
    // Caught up: the whole list.
    store.lagging.store(false, std::sync::atomic::Ordering::SeqCst);
    let (s, _, csv) = app.send("GET", "/api/admin/campaigns/lag/coupons.csv", Some(&admin()), &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(csv.as_str().unwrap().lines().count(), 4, "a header and three winners");
}
