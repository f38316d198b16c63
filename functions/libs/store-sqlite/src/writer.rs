//! The single writer thread: drains every queued command into one transaction and one fsync
//! (group commit), then answers each command. Durability costs one fsync per batch, not per claim.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use firstcome_core::{Coupon, IssuanceRecord, LedgerWrite, StoreError};
use rusqlite::{Connection, params};
use tokio::sync::{oneshot, watch};

use crate::{Durability, SqliteError};

/// Upper bound on one transaction, so a huge backlog still commits (and answers) in slices.
const MAX_BATCH: usize = 8192;
/// A commit that starts within this of the previous one's end is part of a rush.
const RUSH_WINDOW: Duration = Duration::from_millis(2);
/// In a rush, a batch smaller than this waits (in `LINGER_STEP`s, at most `LINGER_MAX`) for more.
const LINGER_TARGET: usize = 64;
const LINGER_STEP: Duration = Duration::from_micros(100);
const LINGER_MAX: Duration = Duration::from_millis(1);

pub(crate) struct ClaimRow {
    pub coupon: Coupon,
    pub durable: Arc<watch::Sender<Durability>>,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

pub(crate) enum Cmd {
    Claim(ClaimRow),
    InsertCampaign {
        id: String,
        body: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    UpdateCampaign {
        id: String,
        body: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Append {
        record: IssuanceRecord,
        reply: oneshot::Sender<Result<LedgerWrite, StoreError>>,
    },
    Acknowledge {
        campaign_id: String,
        seq: u32,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Everything queued before this is committed when it is answered; then the thread exits.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// The answer a command gets once its batch has committed.
enum Done {
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Ledger(oneshot::Sender<Result<LedgerWrite, StoreError>>, LedgerWrite),
}

pub(crate) fn run(
    mut conn: Connection,
    rx: Receiver<Cmd>,
    poisoned: Arc<std::sync::atomic::AtomicBool>,
    claims_committed: impl Fn(),
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    loop {
        let Ok(first) = rx.recv() else { return };
        batch.push(first);
        let mut closing = drain(&rx, &mut batch);
        // In a rush (the last commit just ended) a small batch lingers while more arrive: each
        // commit costs ~200 µs of CPU whatever its size, and that CPU is taken from the HTTP side
        // on a busy core. Claims stop arriving when every client waits on this very commit, so
        // the linger ends as soon as a pause brings nothing new; an isolated claim never waits.
        let rush = last_commit.is_some_and(|t| t.elapsed() < RUSH_WINDOW);
        if rush && closing.is_none() {
            let started = Instant::now();
            while batch.len() < LINGER_TARGET && started.elapsed() < LINGER_MAX {
                std::thread::sleep(LINGER_STEP);
                let before = batch.len();
                closing = drain(&rx, &mut batch);
                if batch.len() == before || closing.is_some() {
                    break;
                }
            }
        }
        if let Some(pos) = batch.iter().position(|c| matches!(c, Cmd::Close { .. })) {
            // A close that arrived first in its batch.
            if let Cmd::Close { reply } = batch.remove(pos) {
                closing = Some(reply);
            }
        }
        let (size, started) = (batch.len(), std::time::Instant::now());
        if commit_batch(&mut conn, &mut batch, &poisoned) {
            claims_committed();
        }
        last_commit = Some(Instant::now());
        tracing::debug!(size, micros = started.elapsed().as_micros() as u64, "group commit");
        if let Some(reply) = closing {
            let _ = reply.send(());
            return;
        }
    }
}

/// Moves every queued command into `batch` (up to `MAX_BATCH`); returns a `Close` if one came.
fn drain(rx: &Receiver<Cmd>, batch: &mut Vec<Cmd>) -> Option<oneshot::Sender<()>> {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Cmd::Close { reply }) => return Some(reply),
            Ok(cmd) => batch.push(cmd),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
        }
    }
    None
}

/// Commits one batch and answers it; true if it committed claims.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Cmd>, poisoned: &std::sync::atomic::AtomicBool) -> bool {
    if batch.is_empty() {
        return false;
    }
    let has_claims = batch.iter().any(|c| matches!(c, Cmd::Claim(_)));
    // Claims and edits were applied in memory before their commit (under the campaign lock).
    let promised_in_memory = batch.iter().any(|c| matches!(c, Cmd::Claim(_) | Cmd::UpdateCampaign { .. }));
    let mut claims: Vec<ClaimRow> = Vec::new();
    let mut done = Vec::new();
    let mut queue = batch.drain(..);
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for cmd in queue.by_ref() {
            match cmd {
                Cmd::Claim(row) => {
                    // Kept before executing so that a failing insert still gets its answer.
                    claims.push(row);
                    let r = &claims.last().expect("just pushed").coupon;
                    tx.prepare_cached(
                        "INSERT INTO coupons (campaign_id, seq, user_id, code, issued_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        r.campaign_id.as_str(),
                        r.seq,
                        r.user_id.as_str(),
                        r.code.to_string(),
                        millis(r.issued_at)
                    ])?;
                    // Same transaction as the coupon: the ledger record cannot be lost (invariant 5).
                    tx.prepare_cached("INSERT INTO outbox (campaign_id, seq) VALUES (?1, ?2)")?
                        .execute(params![r.campaign_id.as_str(), r.seq])?;
                }
                Cmd::InsertCampaign { id, body, reply } => {
                    let n = tx
                        .prepare_cached("INSERT INTO campaigns (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")?
                        .execute(params![id, body])?;
                    done.push(Done::Unit(reply, if n == 1 { Ok(()) } else { Err(StoreError::Conflict) }));
                }
                Cmd::UpdateCampaign { id, body, reply } => {
                    let n = tx
                        .prepare_cached("UPDATE campaigns SET body = ?2 WHERE id = ?1")?
                        .execute(params![id, body])?;
                    done.push(Done::Unit(reply, if n == 1 { Ok(()) } else { Err(StoreError::NotFound) }));
                }
                Cmd::Append { record: r, reply } => {
                    let n = tx
                        .prepare_cached(
                            "INSERT INTO ledger (code, campaign_id, user_id, seq, issued_at, discount, currency, expires_at, recorded_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (code) DO NOTHING",
                        )?
                        .execute(params![
                            r.code.to_string(),
                            r.campaign_id.as_str(),
                            r.user_id.as_str(),
                            r.seq,
                            millis(r.issued_at),
                            r.discount as i64,
                            r.currency,
                            millis(r.expires_at),
                            millis(time::OffsetDateTime::now_utc()),
                        ])?;
                    done.push(Done::Ledger(reply, if n == 1 { LedgerWrite::Inserted } else { LedgerWrite::Duplicate }));
                }
                Cmd::Acknowledge { campaign_id, seq, reply } => {
                    tx.prepare_cached("DELETE FROM outbox WHERE campaign_id = ?1 AND seq = ?2")?
                        .execute(params![campaign_id, seq])?;
                    done.push(Done::Unit(reply, Ok(())));
                }
                Cmd::Close { .. } => unreachable!("close is taken out of the batch before commit"),
            }
        }
        // synchronous=FULL in WAL mode: this commit returns after the WAL is fsync'd.
        tx.commit()
    })();

    let committed_claims = result.is_ok() && has_claims;
    match result {
        Ok(()) => {
            for row in claims {
                let seq = row.coupon.seq;
                row.durable.send_if_modified(|d| {
                    let moved = seq > d.upto;
                    d.upto = d.upto.max(seq);
                    moved
                });
                let _ = row.reply.send(Ok(()));
            }
            for d in done {
                match d {
                    Done::Unit(reply, r) => {
                        let _ = reply.send(r);
                    }
                    Done::Ledger(reply, w) => {
                        let _ = reply.send(Ok(w));
                    }
                }
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            tracing::error!(error = %e, "sqlite commit failed");
            // The claims (or edits) of this batch were already applied in memory and are not on
            // disk, so memory and disk disagree: refuse all further claims until a restart
            // rebuilds state from disk. Nothing was answered `issued`, so nothing is lost.
            if promised_in_memory {
                poisoned.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let fail = || StoreError::unavailable(SqliteError::Commit(e.clone()));
            for row in claims {
                fail_cmd(Cmd::Claim(row), &fail);
            }
            for d in done {
                match d {
                    Done::Unit(reply, _) => {
                        let _ = reply.send(Err(fail()));
                    }
                    Done::Ledger(reply, _) => {
                        let _ = reply.send(Err(fail()));
                    }
                }
            }
            // Commands after the failing one were never executed; fail them rather than drop their answers.
            for cmd in queue {
                fail_cmd(cmd, &fail);
            }
        }
    }
    committed_claims
}

fn fail_cmd(cmd: Cmd, fail: &dyn Fn() -> StoreError) {
    match cmd {
        Cmd::Claim(row) => {
            row.durable.send_modify(|d| d.failed = true);
            let _ = row.reply.send(Err(fail()));
        }
        Cmd::InsertCampaign { reply, .. } | Cmd::UpdateCampaign { reply, .. } | Cmd::Acknowledge { reply, .. } => {
            let _ = reply.send(Err(fail()));
        }
        Cmd::Append { reply, .. } => {
            let _ = reply.send(Err(fail()));
        }
        Cmd::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

fn millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
