//! The `claim` Lambda: the hot path (claim a coupon, read my coupon) behind API Gateway.
//! Same router and engine as every other deployment; API Gateway routes only the claim paths here.

#[tokio::main]
async fn main() -> Result<(), firstcome_aws::lambda::Error> {
    firstcome_aws::lambda::serve_api().await
}
