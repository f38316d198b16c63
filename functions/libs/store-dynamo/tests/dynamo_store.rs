//! DynamoStore against every contract suite that applies (campaigns, claims, ledger, and the
//! unledgered index as its outbox), on the AWS-compatible endpoint `cargo xtask test` starts.
//! Every test gets its own tables, created from template.yaml's own definitions.

use firstcome_store_dynamo::testkit::fresh;

firstcome_core::campaign_store_contract!(fresh(4));
firstcome_core::claim_store_contract!(fresh(4));
firstcome_core::ledger_store_contract!(fresh(4));
firstcome_core::outbox_contract!(fresh(1));
