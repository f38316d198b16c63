//! The local stand-in for SQS + the consumer Lambda: drains the outbox into the ledger at a
//! bounded rate, through the same per-message `consume_issuance` the Lambda calls.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use firstcome_core::{LedgerStore, Outbox, consume_issuance};
use governor::{Quota, RateLimiter};
use tokio::sync::watch;

/// How many outbox records are fetched (and applied concurrently, so they share group commits) per round.
const BATCH: usize = 256;
/// Longest the worker defers a chunk to a rush of claims, so the ledger still advances under sustained load.
const MAX_YIELD: Duration = Duration::from_secs(1);
const YIELD_STEP: Duration = Duration::from_millis(20);

/// Runs until `stop` turns true. A record is acknowledged only after its ledger write is
/// durable; a crash in between redelivers it and the idempotent append writes nothing new.
/// While `claims_busy()` says claims are committing, the worker applies at most one chunk per
/// second (it yields the single writer and the CPU to the rush) and catches up at full rate after.
pub async fn run(
    outbox: Arc<dyn Outbox>,
    ledger: Arc<dyn LedgerStore>,
    per_second: NonZeroU32,
    claims_busy: impl Fn() -> bool,
    mut stop: watch::Receiver<bool>,
) {
    let limiter = RateLimiter::direct(Quota::per_second(per_second));
    // About 50 ms of allowance per chunk (at least one record, never more than a fetch).
    let chunk_size = ((per_second.get() / 20) as usize).clamp(1, BATCH);
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
        // The outbox is oldest first: its head's age is how far the ledger is behind.
        let lag = batch.first().map_or(0.0, |r| (time::OffsetDateTime::now_utc() - r.issued_at).as_seconds_f64());
        metrics::gauge!(firstcome_core::telemetry::LEDGER_LAG).set(lag.max(0.0));
        if batch.is_empty() {
            if !pause(&mut stop, idle).await {
                break;
            }
            continue;
        }
        let mut failed = None;
        for chunk in batch.chunks(chunk_size) {
            // Take the whole chunk's allowance at once and apply it concurrently: the chunk's
            // appends then share one group commit (and its acks another), instead of a trickle
            // of single-record commits that would break up the claims' batches.
            let yielding_since = tokio::time::Instant::now();
            while claims_busy() && yielding_since.elapsed() < MAX_YIELD {
                tokio::time::sleep(YIELD_STEP).await;
            }
            let n = NonZeroU32::new(chunk.len() as u32).expect("chunks are non-empty");
            if limiter.until_n_ready(n).await.is_err() {
                unreachable!("chunk_size never exceeds the burst");
            }
            let bodies: Vec<String> = chunk.iter().map(|r| r.to_json()).collect();
            let applied = futures::future::join_all(bodies.iter().map(|b| consume_issuance(ledger.as_ref(), b))).await;
            let written = chunk.iter().zip(&applied).filter(|(_, a)| a.is_ok()).map(|(r, _)| r);
            let acked = futures::future::join_all(written.map(|r| outbox.acknowledge(r))).await;
            failed =
                applied.into_iter().find_map(Result::err).or(acked.into_iter().find_map(|r| r.err().map(Into::into)));
            if failed.is_some() {
                break;
            }
        }
        if let Some(e) = failed {
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
