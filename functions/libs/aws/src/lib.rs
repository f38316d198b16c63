//! What the Lambdas share: typed configuration read once from the environment, clients, the SQS
//! issuance queue, the ledger's batch handler, and `SqsEventSource`, which stands in for Lambda's
//! SQS trigger wherever there is no Lambda service (emulation, tests).

mod config;
pub mod lambda;
mod ledger;
mod queue;

pub use aws_sdk_sqs::Client as SqsClient;
pub use config::{Config, ConfigError};
pub use ledger::{SqsEventSource, ledger_batch};
pub use queue::{SEND_TIMEOUT, SendsIssued, SqsIssuanceQueue};

/// The AWS SDK's shared configuration (region, credentials, `AWS_ENDPOINT_URL`) from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
