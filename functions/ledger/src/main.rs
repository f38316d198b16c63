//! The `ledger` Lambda: SQS batches of issuance records into the ledger table, reporting
//! exactly the failed messages (`batchItemFailures`).

#[tokio::main]
async fn main() -> Result<(), firstcome_aws::lambda::Error> {
    firstcome_aws::lambda::serve_ledger().await
}
