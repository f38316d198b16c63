//! Test tables on Amazon's DynamoDB Local (feature `testkit`): `cargo xtask test` exports
//! `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local; the SDK's service-specific endpoint, so SQS and
//! Cognito stay on the emulator at `AWS_ENDPOINT_URL`) and `FIRSTCOME_TABLE_SPECS` (the tables
//! of template.yaml as CreateTable inputs), so every test makes its own tables with exactly the
//! template's keys and indexes.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{DynamoStore, Shards, Tables};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use serde_json::Value;

/// `var`, which `cargo xtask test` sets once the emulated endpoints run. Without it this test
/// binary stops at once with one line saying so (exit code 1): these suites cannot run without
/// the emulator, and a test must never pass without having run.
pub fn emulator_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) => v,
        Err(_) => {
            // Straight to stderr: the test harness captures `eprintln!`, and exiting would lose it.
            let _ = writeln!(
                std::io::stderr(),
                "{var} is not set: these tests need the emulated AWS endpoints that `cargo xtask test` starts"
            );
            std::process::exit(1);
        }
    }
}

/// The SDK configuration for the emulated endpoints; refuses to run against anything else.
pub async fn sdk_config() -> aws_config::SdkConfig {
    for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"] {
        emulator_env(var);
    }
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// A client for DynamoDB Local: AWS's own engine, serving requests at once.
pub async fn client() -> Client {
    Client::new(&sdk_config().await)
}

/// DynamoDB Local's address (what `client()` talks to), for tests that put a proxy in front.
pub fn endpoint() -> String {
    emulator_env("AWS_ENDPOINT_URL_DYNAMODB")
}

fn specs() -> Value {
    let path = emulator_env("FIRSTCOME_TABLE_SPECS");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("table specs readable")).expect("table specs are JSON")
}

fn keys(v: &Value) -> Vec<KeySchemaElement> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap())
                .key_type(KeyType::from(k["KeyType"].as_str().unwrap()))
                .build()
                .unwrap()
        })
        .collect()
}

/// Creates the template's table `logical` as `name`.
pub async fn create_table(client: &Client, logical: &str, name: &str) {
    let specs = specs();
    let spec = &specs[logical];
    assert!(spec.is_object(), "template.yaml has no table {logical}");
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(spec["BillingMode"].as_str().unwrap()))
        .set_key_schema(Some(keys(&spec["KeySchema"])));
    for a in spec["AttributeDefinitions"].as_array().unwrap() {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().unwrap())
                .attribute_type(ScalarAttributeType::from(a["AttributeType"].as_str().unwrap()))
                .build()
                .unwrap(),
        );
    }
    for g in spec["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g["IndexName"].as_str().unwrap())
                .set_key_schema(Some(keys(&g["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(g["Projection"]["ProjectionType"].as_str().unwrap()))
                        .build(),
                )
                .build()
                .unwrap(),
        );
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)));
}

/// Fresh, uniquely named tables for one test, and a store on them.
pub async fn fresh_tables(client: &Client) -> Tables {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!("t{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let tables = Tables {
        campaigns: format!("{prefix}-campaigns"),
        stock: format!("{prefix}-stock"),
        claims: format!("{prefix}-claims"),
        ledger: format!("{prefix}-ledger"),
    };
    for (logical, name) in [
        ("CampaignsTable", &tables.campaigns),
        ("StockTable", &tables.stock),
        ("ClaimsTable", &tables.claims),
        ("LedgerTable", &tables.ledger),
    ] {
        create_table(client, logical, name).await;
    }
    tables
}

/// A store on fresh tables with `shards` stock shards per campaign.
pub async fn fresh(shards: u32) -> ((), DynamoStore) {
    let client = client().await;
    let tables = fresh_tables(&client).await;
    ((), store(client, tables, shards))
}

/// A store for tests: two cores run hundreds of concurrent claims, the engine and the test
/// itself, so a claim may wait far longer than on DynamoDB.
pub fn store(client: Client, tables: Tables, shards: u32) -> DynamoStore {
    DynamoStore::new(client, tables, Shards::Fixed(shards)).with_claim_deadline(std::time::Duration::from_secs(120))
}

impl DynamoStore {
    /// Issues `count` coupons of an inserted, open campaign straight into the tables (25 claim
    /// items or markers per `BatchWriteItem`, each shard's `remaining` and `taken` set to
    /// match), issued at `issued_at`
    /// plus a millisecond per seq: a large, unledgered backlog in seconds.
    pub async fn issue_directly(
        &self,
        campaign: &firstcome_core::Campaign,
        count: u32,
        issued_at: time::OffsetDateTime,
    ) -> Vec<firstcome_core::Coupon> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let shards = self.shard_count(&campaign.id).await.unwrap().expect("campaign inserted");
        let layout = crate::items::Shard::layout(campaign, shards);
        let mut coupons = Vec::new();
        let mut items = Vec::new();
        for (k, shard) in (0u32..).zip(&layout) {
            let take = shard.size.min(count.saturating_sub(coupons.len() as u32));
            for seq in shard.start..shard.start + take {
                let user = firstcome_core::UserId::parse(&format!("seeded-{seq}")).unwrap();
                let at = issued_at + time::Duration::milliseconds(i64::from(seq));
                let coupon = campaign.coupon_for(user, firstcome_core::CouponCode::generate(), seq, at);
                items.push(crate::items::claim_item(&coupon, &shard.key));
                let a = seq - shard.start + 1;
                items.push(crate::items::marker_item(&campaign.id, k, a, crate::items::MARKER_ISSUED));
                coupons.push(coupon);
            }
            self.client
                .update_item()
                .table_name(&self.tables.stock)
                .key("shard", crate::items::s(&shard.key))
                .update_expression("SET #left = :left, #taken = :taken")
                .expression_attribute_names("#left", "remaining")
                .expression_attribute_names("#taken", "taken")
                .expression_attribute_values(":left", crate::items::n(shard.size - take))
                .expression_attribute_values(":taken", crate::items::n(take))
                .send()
                .await
                .unwrap();
        }
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item.clone())).build().unwrap())
                        .build()
                })
                .collect();
            while !requests.is_empty() {
                let out =
                    self.client.batch_write_item().request_items(&self.tables.claims, requests).send().await.unwrap();
                requests =
                    out.unprocessed_items().and_then(|u| u.get(&self.tables.claims)).cloned().unwrap_or_default();
            }
        }
        coupons
    }
}
