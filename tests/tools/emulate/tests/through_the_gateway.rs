//! Claims through the emulated API Gateway URL, as a customer's browser would send them: the
//! functions run as separate processes under `cargo lambda watch` on DynamoDB and SQS (moto).
//! `cargo xtask test` starts that stack and passes its URL; this binary only talks to it. Every
//! token is a real one from the emulated Cognito user pool, got the way the page gets it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use firstcome_tests::browser::Browser;
use firstcome_wire::site::{IdentityConfig, SiteConfig, cognito};
use futures::StreamExt;
use serde_json::{Value, json};

/// One test at a time: the endpoint is single-threaded and a browser wants the cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Stack {
    url: String,
    /// Marketing's account (`<data dir>/admin-credentials`) and its ID token.
    admin_email: String,
    admin_password: String,
    admin: String,
    endpoint: String,
    client_id: String,
    http: firstcome_rehearse::Client,
}

/// The stack, with marketing signed in through the user pool the page's `/config.json` names.
async fn stack() -> Stack {
    let url = std::env::var("FIRSTCOME_EMULATE_URL").expect("FIRSTCOME_EMULATE_URL: run through `cargo xtask test`");
    let data = std::path::PathBuf::from(std::env::var("FIRSTCOME_EMULATE_DATA").expect("FIRSTCOME_EMULATE_DATA"));
    let http = firstcome_rehearse::Client::new();
    let (status, config) = http.get(&format!("{url}/config.json"), None).await.unwrap();
    assert_eq!(status, 200, "{config}");
    let SiteConfig { identity: IdentityConfig::Cognito { endpoint, client_id } } =
        serde_json::from_value(config.clone()).unwrap()
    else {
        panic!("the emulated stack's page should sign in with Cognito: {config}");
    };
    let credentials = std::fs::read_to_string(data.join("admin-credentials")).unwrap();
    let (email, password) = credentials.trim().split_once('\n').unwrap();
    let mut s = Stack {
        url,
        admin_email: email.to_owned(),
        admin_password: password.to_owned(),
        admin: String::new(),
        endpoint,
        client_id,
        http,
    };
    s.admin = s.sign_in(&s.admin_email, &s.admin_password).await;
    s
}

impl Stack {
    /// The status and JSON answer (every answer of the gateway and the functions is JSON).
    async fn send(&self, method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        self.http
            .call(method.clone(), url, token, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// The ID token, as the page gets it (`USER_PASSWORD_AUTH` on the app client).
    async fn sign_in(&self, email: &str, password: &str) -> String {
        let answer: cognito::InitiateAuthResponse = self
            .http
            .cognito(&self.endpoint, "InitiateAuth", &cognito::InitiateAuth::password(&self.client_id, email, password))
            .await
            .unwrap_or_else(|e| panic!("signing in {email}: {e}"));
        answer.authentication_result.expect("no challenge for a confirmed user").id_token
    }

    /// A new customer: sign-up, the emailed code (moto accepts any), sign-in.
    async fn customer(&self, email: &str) -> String {
        let password = "Customer-pass-1";
        let _: cognito::SignUpResponse = self
            .http
            .cognito(&self.endpoint, "SignUp", &cognito::SignUp::email(&self.client_id, email, password))
            .await
            .unwrap_or_else(|e| panic!("signing up {email}: {e}"));
        let confirm = cognito::ConfirmSignUp {
            client_id: self.client_id.clone(),
            username: email.into(),
            confirmation_code: "123456".into(),
        };
        let _: Value = self.http.cognito(&self.endpoint, "ConfirmSignUp", &confirm).await.unwrap();
        self.sign_in(email, password).await
    }

    async fn create(&self, id: &str, total: u32) {
        self.create_opening(id, total, time::Duration::ZERO, 0).await;
    }

    /// A campaign opening `opens_in` from now, asking for a claim ticket of `pow_bits` (0: none).
    async fn create_opening(&self, id: &str, total: u32, opens_in: time::Duration, pow_bits: u8) {
        let opens = time::OffsetDateTime::now_utc() + opens_in;
        let opens = opens.format(&time::format_description::well_known::Rfc3339).unwrap();
        let body = json!({ "id": id, "title": "Through the gateway", "total": total, "opens_at": opens,
                           "coupon": { "discount": 3000, "currency": "KRW", "valid_days": 7 },
                           "pow_bits": pow_bits });
        let (status, answer) =
            self.send("POST", &format!("{}/api/admin/campaigns", self.url), Some(&self.admin), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }

    async fn claim(&self, id: &str, token: &str) -> (u16, Value) {
        self.send("POST", &format!("{}/api/campaigns/{id}/claims", self.url), Some(token), None).await
    }
}

async fn dynamo() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&firstcome_aws::sdk_config().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_claims_from_two_hundred_users_issue_exactly_the_stock() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack().await;
    let id = format!("gateway-{}", std::process::id());
    s.create(&id, 50).await;

    // 200 customers of the user pool; the first 100 click twice at once: 300 claims, 24 in
    // flight at a time.
    let tokens: Vec<String> = futures::stream::iter(0..200)
        .map(|u| {
            let (s, id) = (&s, &id);
            async move { s.customer(&format!("user-{u}@{id}.test")).await }
        })
        .buffered(8)
        .collect()
        .await;
    let clicks: Vec<usize> = (0..200).chain(0..100).collect();
    let answers: Vec<(usize, u16, Value)> = futures::stream::iter(clicks)
        .map(|u| {
            let (s, id, token) = (&s, &id, &tokens[u]);
            async move {
                let (status, body) = s.claim(id, token).await;
                (u, status, body)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;

    let mut codes: HashMap<usize, String> = HashMap::new();
    let mut seqs = Vec::new();
    let (mut issued, mut repeats, mut sold_out) = (0, 0, 0);
    for (u, status, body) in &answers {
        match status {
            201 | 200 => {
                let code = body["coupon"]["code"].as_str().unwrap().to_owned();
                let held = codes.entry(*u).or_insert_with(|| code.clone());
                assert_eq!(*held, code, "user {u} got two different coupons");
                if *status == 201 {
                    issued += 1;
                    seqs.push(body["coupon"]["seq"].as_u64().unwrap());
                } else {
                    repeats += 1;
                }
            }
            409 => {
                assert_eq!(body["error"], "sold_out", "user {u}: {body}");
                sold_out += 1;
            }
            other => panic!("user {u}: unexpected {other} {body}"),
        }
    }
    assert_eq!(issued, 50, "exactly the stock ({repeats} repeats, {sold_out} sold out)");
    assert_eq!(codes.len(), 50, "one coupon per winner");
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "sold out: seq is exactly 1..=50");

    // A retried claim (same user, same token) answers the same coupon and issues nothing.
    for (u, code) in codes.iter().take(5) {
        let (status, body) = s.claim(&id, &tokens[*u]).await;
        assert_eq!((status, body["coupon"]["code"].as_str()), (200, Some(code.as_str())));
    }

    // No stock leaked: the campaign's shards (2 at the template's peak of 1,000 claims/s, 500 per
    // shard) are all empty.
    let table = std::env::var("FIRSTCOME_STOCK_TABLE").unwrap();
    let shards = dynamo()
        .await
        .scan()
        .table_name(&table)
        .filter_expression("begins_with(#s, :p)")
        .expression_attribute_names("#s", "shard")
        .expression_attribute_values(":p", AttributeValue::S(format!("{id}#")))
        .send()
        .await
        .unwrap();
    let remaining: Vec<u64> = shards.items().iter().map(|i| i["remaining"].as_n().unwrap().parse().unwrap()).collect();
    assert!(remaining.len() >= 2, "{} shards", remaining.len());
    assert_eq!(remaining.iter().sum::<u64>(), 0);

    // Every issuance reaches the ledger through SQS and the consumer, once.
    let started = Instant::now();
    let written = loop {
        let (status, view) = s.send("GET", &format!("{}/api/admin/campaigns/{id}", s.url), Some(&s.admin), None).await;
        assert_eq!(status, 200, "{view}");
        let written = view["ledger_written"].as_u64().unwrap();
        if written >= 50 || started.elapsed() > Duration::from_secs(90) {
            break written;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(written, 50);
    let winners: HashSet<&String> = codes.values().collect();
    assert_eq!(winners.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_guards_routes_like_the_jwt_authorizer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack().await;
    let claim = format!("{}/api/campaigns/none-such/claims", s.url);
    let (status, body) = s.send("POST", &claim, None, None).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Unauthorized")));
    let (status, _) = s.send("POST", &claim, Some("forged.token.here"), None).await;
    assert_eq!(status, 401);

    // A real token passes; the function answers for itself (no such campaign).
    let token = s.customer(&format!("guard-{}@firstcome.test", std::process::id())).await;
    let (status, body) = s.send("POST", &claim, Some(&token), None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");

    // What an attacker makes of a real token: a changed payload, no signature, HS256 keyed with
    // the pool's public key. None of them reaches a function.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("someone-else");
    claims["cognito:groups"] = json!(["admin"]);
    let forged_payload = b64.encode(claims.to_string());
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let unsigned = format!("{}.{forged_payload}.", b64.encode(json!({ "alg": "none", "kid": kid }).to_string()));
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let jwks: Value = get_json(&s, &std::env::var("EMULATED_JWKS_URL").unwrap()).await;
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header { kid: Some(kid.into()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256) },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    for (what, forged) in [("tampered", &tampered), ("alg none", &unsigned), ("HS256 with the public key", &confused)] {
        let (status, body) = s.send("GET", &format!("{}/api/admin/campaigns", s.url), Some(forged), None).await;
        assert_eq!(status, 401, "{what}: {body}");
    }

    // A customer's genuine token on a marketing route: the function's own 403.
    let (status, body) = s.send("GET", &format!("{}/api/admin/campaigns", s.url), Some(&token), None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = s.send("GET", &format!("{}/api/admin/campaigns", s.url), Some(&s.admin), None).await;
    assert_eq!(status, 200);

    let (status, body) = s.send("GET", &format!("{}/api/campaigns/none-such", s.url), None, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "the function's own JSON error");
    let (status, _) = s.send("GET", &format!("{}/healthz", s.url), None, None).await;
    assert_eq!(status, 200);
    // This machine's dev tokens pass too (the load tool's users), and only the gateway's own.
    let (status, dev) =
        s.send("POST", &format!("{}/api/dev/token", s.url), None, Some(json!({"user_id": "dev-1"}))).await;
    assert_eq!(status, 200, "{dev}");
    let (status, body) = s.send("POST", &claim, Some(dev["token"].as_str().unwrap()), None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let stranger = firstcome_api::sign_hs256(
        b"not-the-gateway-secret-not-the-gateway-secret",
        "dev-1",
        None,
        time::Duration::hours(1),
    );
    let (status, _) = s.send("POST", &claim, Some(&stranger), None).await;
    assert_eq!(status, 401, "an HS256 token signed with another secret");
}

async fn get_json(s: &Stack, url: &str) -> Value {
    let (status, body) = s.http.get(url, None).await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// The deployed page's path, in a real browser: `/config.json` names the user pool, a customer
/// signs up on the event page (a weak password is refused with the pool's message), confirms the
/// emailed code, waits for T0 and claims with the pool's ID token; marketing signs in on `/admin`
/// with the admin group's account and sees the issuance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_signs_up_on_the_page_and_claims_at_t0() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack().await;
    let id = format!("page-{}", std::process::id());
    // Time for Chromium, the WASM and four user-pool calls on a busy two-core machine.
    let opens_in = Duration::from_secs(40);
    let opens = Instant::now() + opens_in;
    // With a claim ticket: the page solves it for the pool's `sub` (what the API knows the user
    // by), so a wrong binding would be refused 403 here.
    s.create_opening(&id, 3, time::Duration::try_from(opens_in).unwrap(), 12).await;

    let b = Browser::start("aws-shape").await;
    b.goto(&format!("{}/e/{id}", s.url)).await;
    let email = format!("page-{}@firstcome.test", std::process::id());
    b.type_into("sign-in-email", &email).await;
    b.type_into("sign-in-password", "short").await;
    b.click("sign-up").await;
    let refused = b.wait_text("sign-in-error", 15, |t| !t.is_empty()).await;
    assert!(refused.contains("password"), "the pool's own reason: {refused}");
    b.type_into("sign-in-password", "Customer-pass-1").await;
    b.click("sign-up").await;
    b.type_into("confirm-code", "123456").await;
    b.screenshot("confirm-code").await;
    b.click("confirm").await;

    // Signed in with an RS256 ID token from the pool, kept for this tab only.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stored = loop {
        let v = b.eval("return sessionStorage.getItem('firstcome.user');").await;
        if let Some(v) = v.as_str() {
            break v.to_owned();
        }
        assert!(Instant::now() < deadline, "never signed in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut lines = stored.lines();
    assert_eq!(lines.next(), Some(email.as_str()));
    let first_token = lines.next().unwrap().to_owned();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(first_token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(lines.next().is_some_and(|r| !r.is_empty()), "a refresh token is kept for renewal");

    // As if the customer had signed in 59 minutes before T0: the one-hour ID token is about to
    // expire, so the page renews it with the refresh token before it claims.
    b.before_every_page("(() => { const real = Date.now.bind(Date); Date.now = () => real() + 3540000; })();").await;
    b.goto(&format!("{}/e/{id}", s.url)).await;

    if opens.saturating_duration_since(Instant::now()) > Duration::from_secs(2) {
        assert!(!b.is_enabled("claim").await, "locked before T0");
    }
    let deadline = opens + Duration::from_secs(15);
    while !b.is_enabled("claim").await {
        assert!(Instant::now() < deadline, "the button never unlocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without a ticket the gateway's claim function refuses (the nonce is out now; no coupon).
    let script = s.customer(&format!("script@{id}.test")).await;
    let (status, refused) = s.claim(&id, &script).await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("ticket_required")), "{refused}");
    b.click("claim").await;
    let code = b.text("coupon-code").await;
    b.screenshot("won").await;
    let stored = b.eval("return sessionStorage.getItem('firstcome.user');").await;
    let token = stored.as_str().unwrap().lines().nth(1).unwrap().to_owned();
    assert_ne!(token, first_token, "the ID token was renewed before the claim");
    let (status, mine) = s.send("GET", &format!("{}/api/campaigns/{id}/claims/me", s.url), Some(&token), None).await;
    assert_eq!((status, mine["code"].as_str()), (200, Some(code.as_str())), "{mine}");

    // Marketing: the admin group's account on /admin, where the issuance shows.
    b.goto(&format!("{}/admin", s.url)).await;
    b.type_into("admin-email", &s.admin_email).await;
    b.type_into("admin-password", &s.admin_password).await;
    b.click("admin-sign-in").await;
    // The figure sits in a wide table's off-screen column (WebDriver's text is the visible text).
    let script = format!("return document.querySelector('[data-testid=\"issued-{id}\"]')?.textContent ?? null;");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = b.eval(&script).await;
        if shown == json!("1") {
            break;
        }
        if Instant::now() > deadline {
            let page = b.eval("return document.body.innerText;").await;
            panic!("the marketing page never showed the issuance: {shown}; the page says {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.screenshot("admin").await;
}

/// The functions behind the distribution answer only what came through it: an event straight to a
/// function (the execute-api endpoint on AWS), even one claiming a viewer address, gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_around_the_distribution_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lambda = std::env::var("FIRSTCOME_EMULATE_LAMBDA_URL").expect("FIRSTCOME_EMULATE_LAMBDA_URL");
    let secret = std::env::var("FIRSTCOME_ORIGIN_SECRET").expect("the stack's FIRSTCOME_ORIGIN_SECRET");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../infra/events/campaign-list.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    let http = invoke_campaign(&lambda);
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("x-firstcome-origin");
    headers.insert("cloudfront-viewer-address".into(), json!("198.51.100.1:443"));
    let answer = http(event.clone()).await;
    assert_eq!(answer["statusCode"], 403, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    event["headers"]["x-firstcome-origin"] = json!("not-the-secret-but-long-enough-to-look-right");
    assert_eq!(http(event.clone()).await["statusCode"], 403);
    // What the distribution sends (the stack's secret) is answered.
    event["headers"]["x-firstcome-origin"] = json!(secret);
    let answer = http(event).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
}

/// POSTs an event to `cargo lambda watch`'s Invoke API for the `campaign` function.
fn invoke_campaign(lambda: &str) -> impl Fn(Value) -> futures::future::BoxFuture<'static, Value> {
    let url = format!("{lambda}/2015-03-31/functions/campaign/invocations");
    move |event: Value| {
        let url = url.clone();
        Box::pin(async move {
            let client = firstcome_rehearse::Client::new();
            let (status, answer) = client.post(&url, None, Some(&event)).await.unwrap();
            assert_eq!(status, 200, "the invoke itself: {answer}");
            answer
        })
    }
}

/// "End now" while claims race on several containers (three processes per function): no claim
/// sent after the end's answer is issued, and what was issued is exactly what was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_campaign_while_claims_race_issues_nothing_sent_after_the_answer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack().await;
    let id = format!("end-race-{}", std::process::id());
    s.create(&id, 5_000).await;
    let users = 400;
    let tokens: Vec<String> = futures::stream::iter(0..users)
        .map(|u| {
            let s = &s;
            async move {
                let body = json!({ "user_id": format!("racer-{u}") });
                let (status, t) = s.send("POST", &format!("{}/api/dev/token", s.url), None, Some(body)).await;
                assert_eq!(status, 200, "{t}");
                t["token"].as_str().unwrap().to_owned()
            }
        })
        .buffered(16)
        .collect()
        .await;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let next = std::sync::atomic::AtomicUsize::new(0);
    // 12 clients claim for new users back to back until told to stop (bounded by the users).
    let claimer = || async {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let u = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if u >= users {
                break;
            }
            let sent = Instant::now();
            let (status, body) = s.claim(&id, &tokens[u]).await;
            seen.push((sent, status, body));
        }
        seen
    };
    let ender = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, ended) =
            s.send("POST", &format!("{}/api/admin/campaigns/{id}/end", s.url), Some(&s.admin), None).await;
        let answered = Instant::now();
        assert_eq!(status, 200, "{ended}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        answered
    };
    let (answered, claims) = futures::join!(ender, futures::future::join_all((0..12).map(|_| claimer())));
    let claims: Vec<_> = claims.into_iter().flatten().collect();
    let (mut before, mut after) = (0, 0);
    for (sent, status, body) in &claims {
        if *sent > answered {
            assert_eq!((*status, body["error"].as_str()), (409, Some("closed")), "a claim sent after the end: {body}");
            after += 1;
        } else if *status == 201 {
            before += 1;
        }
    }
    assert!(before > 0 && after > 0, "the race happened: {before} issued before the end, {after} refused after it");
    let (_, view) = s.send("GET", &format!("{}/api/admin/campaigns/{id}", s.url), Some(&s.admin), None).await;
    let answered_issued = claims.iter().filter(|(_, status, _)| *status == 201).count() as u64;
    assert_eq!(view["issued"].as_u64(), Some(answered_issued), "every coupon the store holds was answered issued");
}
