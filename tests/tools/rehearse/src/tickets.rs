//! Claim tickets for a rehearsal: after T0, read the campaign's revealed nonce and solve every
//! user's ticket natively, in parallel, the way each user's own device would at the opening.
//! The solve times are reported beside the load, so a rehearsal shows both what the server
//! does with valid tickets and what a ticket costs a client.

use std::time::{Duration, Instant};

use firstcome_ticket::{Nonce, Puzzle};
use firstcome_wire as wire;
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

use crate::{Client, RehearseError};

/// Every user's ticket header, and what solving them cost.
pub struct Solved {
    pub bits: u8,
    pub headers: Vec<HeaderValue>,
    /// Per ticket, microseconds on one thread.
    pub per_ticket: Histogram<u64>,
    pub wall: Duration,
    pub threads: usize,
}

/// The campaign's ticket terms once the nonce is out: polls the public view (which reveals it
/// from `opens_at` on, server time) for up to `wait`.
pub async fn revealed(client: &Client, url: &str, wait: Duration) -> Result<(u8, Nonce), RehearseError> {
    let deadline = Instant::now() + wait;
    loop {
        let answer =
            client.get(url, None).await.map_err(|source| RehearseError::Api { what: "reading the nonce", source })?;
        let terms = match answer {
            (200, v) => serde_json::from_value::<wire::Campaign>(v).ok().and_then(|c| c.ticket),
            (status, body) => {
                return Err(RehearseError::Refused { what: "reading the nonce", status, body: body.to_string() });
            }
        };
        match terms {
            None => return Err(RehearseError::Usage("--pow: the campaign needs no ticket")),
            Some(wire::TicketTerms { bits, nonce: Some(hex) }) => {
                let nonce =
                    Nonce::from_hex(&hex).ok_or(RehearseError::Usage("--pow: the campaign's nonce is not hex"))?;
                return Ok((bits, nonce));
            }
            // Not revealed yet (our clock ahead of the server's, or a cached view): ask again.
            Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(_) => return Err(RehearseError::Usage("--pow: the nonce was not revealed in time")),
        }
    }
}

/// Solves one ticket per user on every core.
pub fn solve_all(campaign: &str, users: &[String], bits: u8, nonce: Nonce) -> Solved {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = users.len().div_ceil(threads).max(1);
    let started = Instant::now();
    let mut headers = vec![HeaderValue::from_static(""); users.len()];
    let mut per_ticket = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    std::thread::scope(|s| {
        let handles: Vec<_> = headers
            .chunks_mut(chunk)
            .zip(users.chunks(chunk))
            .map(|(out, ids)| {
                s.spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
                    for (slot, user) in out.iter_mut().zip(ids) {
                        let t = Instant::now();
                        let puzzle = Puzzle::new(bits, campaign, user, &nonce);
                        let n = puzzle.search(0, u64::MAX).expect("some counter below 2^64 solves it");
                        h.saturating_record(t.elapsed().as_micros() as u64);
                        *slot = HeaderValue::from(n);
                    }
                    h
                })
            })
            .collect();
        for handle in handles {
            per_ticket.add(handle.join().expect("a solver thread panicked")).expect("same bounds");
        }
    });
    Solved { bits, headers, per_ticket, wall: started.elapsed(), threads }
}
