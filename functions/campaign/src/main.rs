//! The `campaign` Lambda: campaign views and the marketing (admin) routes behind API Gateway.
//! Same router and engine as every other deployment; API Gateway routes only those paths here.

#[tokio::main]
async fn main() -> Result<(), firstcome_aws::lambda::Error> {
    firstcome_aws::lambda::serve_api().await
}
