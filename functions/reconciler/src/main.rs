//! The `reconciler` Lambda (every minute): re-sends issuance records still unacknowledged after
//! the grace period, so a coupon whose send failed still reaches the ledger.

#[tokio::main]
async fn main() -> Result<(), firstcome_aws::lambda::Error> {
    firstcome_aws::lambda::serve_reconciler().await
}
