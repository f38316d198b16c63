//! What the Lambdas share: typed configuration read once from the environment, clients, the SQS
//! issuance queue and the ledger's batch handler. The `testkit` feature adds `SqsEventSource`,
//! which stands in for Lambda's SQS trigger wherever there is no Lambda service (emulation, tests).

mod config;
pub mod lambda;
mod ledger;
mod queue;
#[cfg(feature = "testkit")]
mod testkit;

pub use aws_sdk_sqs::Client as SqsClient;
pub use config::{Config, ConfigError};
pub use ledger::ledger_batch;
pub use queue::{SEND_TIMEOUT, SendsIssued, SqsIssuanceQueue};
#[cfg(feature = "testkit")]
pub use testkit::{PollError, Polled, SqsEventSource};

/// The AWS SDK's shared configuration (region, credentials, `AWS_ENDPOINT_URL`) from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
