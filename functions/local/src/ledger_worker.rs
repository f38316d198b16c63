//! The local stand-in for SQS + the consumer Lambda: drains the outbox into the ledger at a
//! bounded rate, through the same per-message `consume_issuance` the Lambda calls.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use firstcome_core::{LedgerStore, Outbox, consume_issuance};
use futures::StreamExt;
use governor::{Quota, RateLimiter};
use tokio::sync::watch;

/// How many outbox records are fetched (and applied concurrently, so they share group commits) per round.
const BATCH: usize = 256;

/// Runs until `stop` turns true. A record is acknowledged only after its ledger write is
/// durable; a crash in between redelivers it and the idempotent append writes nothing new.
pub async fn run(
    outbox: Arc<dyn Outbox>,
    ledger: Arc<dyn LedgerStore>,
    per_second: NonZeroU32,
    mut stop: watch::Receiver<bool>,
) {
    let limiter = RateLimiter::direct(Quota::per_second(per_second));
    let idle = Duration::from_millis(50);
    while !*stop.borrow() {
        let batch = match outbox.pending(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "outbox read failed; retrying");
                if !pause(&mut stop, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            if !pause(&mut stop, idle).await {
                break;
            }
            continue;
        }
        let results: Vec<_> = futures::stream::iter(batch)
            .map(|record| {
                let (limiter, outbox, ledger) = (&limiter, &outbox, &ledger);
                async move {
                    limiter.until_ready().await;
                    consume_issuance(ledger.as_ref(), &record.to_json()).await?;
                    outbox.acknowledge(record.code).await?;
                    Ok::<_, firstcome_core::LedgerError>(())
                }
            })
            .buffer_unordered(BATCH)
            .collect()
            .await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            tracing::warn!(error = %e, "ledger write failed; records stay in the outbox");
            if !pause(&mut stop, Duration::from_secs(1)).await {
                break;
            }
        }
    }
}

/// Waits `d` or until told to stop; false once the worker should stop (also if the stop sender is gone).
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    match tokio::time::timeout(d, stop.changed()).await {
        Ok(Err(_)) => false,
        _ => !*stop.borrow(),
    }
}
