//! The claim ticket in the browser: solved at T0 in short slices (about 12 ms each) with a
//! yield to the event loop between them, so the page keeps painting its progress and the
//! button stays responsive while a few hundred thousand hashes run. A Web Worker would need a
//! second WASM entry point and glue for one ~100 ms job; slicing keeps one bundle.

use firstcome_ticket::{Nonce, Puzzle};

use crate::api::sleep;

/// Wall time one slice aims for: under a frame at 60 Hz, with room for the render.
const SLICE_MS: f64 = 12.0;

/// Chance the ticket would have been found by now, in percent (never 100 before it is): the
/// search has no fixed length, so this is the honest progress figure.
pub fn percent(tries: u64, expected: f64) -> u32 {
    let p = 1.0 - (-(tries as f64) / expected.max(1.0)).exp();
    ((p * 100.0) as u32).min(99)
}

/// Finds `user`'s ticket, calling `progress` with a percentage after each slice.
pub async fn solve(bits: u8, campaign: &str, user: &str, nonce: &Nonce, progress: impl Fn(u32)) -> u64 {
    let puzzle = Puzzle::new(bits, campaign, user, nonce);
    let (mut next, mut slice) = (0u64, 1024u64);
    loop {
        let started = js_sys::Date::now();
        if let Some(n) = puzzle.search(next, slice) {
            return n;
        }
        next += slice;
        // Size the next slice from this one's speed (Date has 1 ms resolution; a 0 ms slice doubles).
        let spent = js_sys::Date::now() - started;
        slice = if spent < 1.0 { slice * 2 } else { ((slice as f64) * SLICE_MS / spent).clamp(256.0, 1e7) as u64 };
        progress(percent(next, puzzle.expected_tries()));
        sleep(0.0).await;
    }
}

/// Hashes per millisecond on this device, measured for about `ms` milliseconds: what the
/// marketing page proposes a difficulty from.
pub fn hashes_per_ms(ms: f64) -> f64 {
    let puzzle = Puzzle::new(firstcome_ticket::MAX_BITS, "calibration", "calibration", &Nonce([1; 16]));
    let started = js_sys::Date::now();
    let (mut done, mut batch) = (0u64, 1024u64);
    loop {
        // A 24-bit search almost never succeeds in a batch; either way the hashes were done.
        let _ = puzzle.search(done, batch);
        done += batch;
        let spent = js_sys::Date::now() - started;
        if spent >= ms {
            return done as f64 / spent;
        }
        batch = batch.saturating_mul(2).min(1 << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_rises_towards_but_never_reaches_100_before_the_ticket_is_found() {
        assert_eq!(percent(0, 1024.0), 0);
        assert_eq!(percent(1024, 1024.0), 63);
        assert_eq!(percent(100_000, 1024.0), 99);
        assert!(percent(512, 1024.0) < percent(1024, 1024.0));
    }
}
