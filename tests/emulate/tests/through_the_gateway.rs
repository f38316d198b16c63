//! Claims through the emulated API Gateway URL, as a customer's browser would send them: the
//! functions run as separate processes under `cargo lambda watch` on DynamoDB and SQS (moto).
//! `cargo xtask test` starts that stack and passes its URL; this binary only talks to it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use serde_json::{Value, json};

struct Stack {
    url: String,
    admin: String,
    secret: Vec<u8>,
    http: firstcome_rehearse::Client,
}

fn stack() -> Stack {
    let url = std::env::var("FIRSTCOME_EMULATE_URL").expect("FIRSTCOME_EMULATE_URL: run through `cargo xtask test`");
    let data = std::path::PathBuf::from(std::env::var("FIRSTCOME_EMULATE_DATA").expect("FIRSTCOME_EMULATE_DATA"));
    Stack {
        url,
        admin: std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned(),
        secret: std::fs::read_to_string(data.join("jwt-secret")).unwrap().trim().as_bytes().to_vec(),
        http: firstcome_rehearse::Client::new(),
    }
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

    fn user_token(&self, user: &str) -> String {
        firstcome_api::sign_hs256(&self.secret, user, None, time::Duration::hours(1))
    }

    async fn create(&self, id: &str, total: u32) {
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
        let body = json!({ "id": id, "title": "Through the gateway", "total": total, "opens_at": now,
                           "coupon": { "discount": 3000, "currency": "KRW", "valid_days": 7 } });
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
    let s = stack();
    let id = format!("gateway-{}", std::process::id());
    s.create(&id, 50).await;

    // 200 users; the first 100 click twice at once: 300 claims, 24 in flight at a time.
    let tokens: Vec<String> = (0..200).map(|u| s.user_token(&format!("user-{u}"))).collect();
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

    // No stock leaked: the campaign's shards (at least 4 at the template's peak) are all empty.
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
    assert!(remaining.len() >= 4, "{} shards", remaining.len());
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
    let s = stack();
    let (status, body) = s.send("POST", &format!("{}/api/campaigns/x/claims", s.url), None, None).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Unauthorized")));
    let (status, _) =
        s.send("POST", &format!("{}/api/campaigns/x/claims", s.url), Some("forged.token.here"), None).await;
    assert_eq!(status, 401);
    let (status, body) = s.send("GET", &format!("{}/api/campaigns/none-such", s.url), None, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "the function's own JSON error");
    let (status, _) = s.send("GET", &format!("{}/healthz", s.url), None, None).await;
    assert_eq!(status, 200);
    let (status, token) =
        s.send("POST", &format!("{}/api/dev/token", s.url), None, Some(json!({"user_id": "dev-1"}))).await;
    assert_eq!(status, 200);
    let (status, body) = s.claim("none-such", token["token"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
