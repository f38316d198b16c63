//! The claim ticket: a proof of work bound to one campaign, one user and the campaign's secret
//! nonce, which the server reveals only from `opens_at` on. Nothing of a ticket can be computed
//! before T0, and checking one costs the server a single SHA-256.
//!
//! A ticket is a counter `n` such that
//! `SHA-256("firstcome-ticket-v1" 0 campaign 0 user 0 nonce n_le)` starts with at least `bits`
//! zero bits. Campaign ids (`[a-z0-9-]`) and user ids (visible ASCII) never contain a zero byte,
//! so the fields cannot be shifted into one another. Finding one takes 2^bits hashes on average.
//!
//! This crate depends on `sha2` only: the engine verifies with it, the page (WASM) and the load
//! tool solve with it, so all three hash exactly the same bytes.

use sha2::{Digest, Sha256};

/// The hardest ticket a campaign may ask for: 2^24 hashes is seconds natively and far too long
/// in a browser; anything near it is a typo, not a policy.
pub const MAX_BITS: u8 = 24;

/// The header a claim carries its ticket in: the counter, in decimal.
pub const HEADER: &str = "firstcome-ticket";

const DOMAIN: &[u8] = b"firstcome-ticket-v1";

/// A campaign's secret: 16 random bytes, hex on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 32 lower-case hex digits; anything else is `None`.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// Hashes tickets for one (campaign, user, nonce): the common prefix is hashed once, so each
/// attempt costs one clone and one finalisation.
#[derive(Clone)]
pub struct Puzzle {
    prefix: Sha256,
    bits: u8,
}

impl Puzzle {
    pub fn new(bits: u8, campaign: &str, user: &str, nonce: &Nonce) -> Self {
        let mut prefix = Sha256::new();
        for part in [DOMAIN, campaign.as_bytes(), user.as_bytes()] {
            prefix.update(part);
            prefix.update([0]);
        }
        prefix.update(nonce.0);
        Self { prefix, bits: bits.min(MAX_BITS) }
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Leading zero bits of counter `n`'s hash.
    pub fn zeros(&self, n: u64) -> u32 {
        let digest = self.prefix.clone().chain_update(n.to_le_bytes()).finalize();
        let mut zeros = 0;
        for b in digest {
            zeros += b.leading_zeros();
            if b != 0 {
                break;
            }
        }
        zeros
    }

    /// Whether `n` is a valid ticket: one hash.
    pub fn verify(&self, n: u64) -> bool {
        self.bits == 0 || self.zeros(n) >= u32::from(self.bits)
    }

    /// Tries counters `from..from + count`; the first valid one, if any. Callers slice the work
    /// this way to report progress or yield to a UI between slices.
    pub fn search(&self, from: u64, count: u64) -> Option<u64> {
        (from..from.saturating_add(count)).find(|&n| self.verify(n))
    }

    /// Hashes needed on average: 2^bits.
    pub fn expected_tries(&self) -> f64 {
        2f64.powi(i32::from(self.bits))
    }
}

/// The difficulty whose expected cost is closest to `target_ms` for a solver that hashes
/// `hashes_per_ms` (measured on the device that will solve): what the marketing page proposes.
pub fn bits_for(hashes_per_ms: f64, target_ms: f64) -> u8 {
    let tries = hashes_per_ms * target_ms;
    if !tries.is_finite() || tries < 2.0 {
        return 1;
    }
    (tries.log2().round() as i64).clamp(1, i64::from(MAX_BITS)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: Nonce = Nonce([7; 16]);

    #[test]
    fn a_solved_ticket_verifies_only_for_its_campaign_user_and_nonce() {
        let p = Puzzle::new(10, "spring", "alice", &NONCE);
        let n = p.search(0, 1 << 20).expect("10 bits are found well within 2^20 tries");
        assert!(p.verify(n));
        assert!(p.zeros(n) >= 10);
        // The same counter for anything else is a fresh 2^-10 lottery: check it is not
        // accepted for the three that differ (each fails with probability 1 - 2^-10; the
        // inputs are fixed, so this is deterministic).
        let others = [
            Puzzle::new(10, "spring", "bob", &NONCE),
            Puzzle::new(10, "summer", "alice", &NONCE),
            Puzzle::new(10, "spring", "alice", &Nonce([8; 16])),
        ];
        for o in others {
            assert!(!o.verify(n));
        }
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        // "ab" + "c" and "a" + "bc" must hash differently.
        let a = Puzzle::new(0, "ab", "c", &NONCE);
        let b = Puzzle::new(0, "a", "bc", &NONCE);
        assert_ne!(
            a.prefix.clone().chain_update(1u64.to_le_bytes()).finalize(),
            b.prefix.clone().chain_update(1u64.to_le_bytes()).finalize()
        );
    }

    #[test]
    fn zero_bits_accepts_anything_and_bits_are_capped() {
        assert!(Puzzle::new(0, "c", "u", &NONCE).verify(12345));
        assert_eq!(Puzzle::new(200, "c", "u", &NONCE).bits(), MAX_BITS);
    }

    #[test]
    fn most_counters_fail_at_sixteen_bits() {
        let p = Puzzle::new(16, "c", "u", &NONCE);
        let passed = (0..2000).filter(|&n| p.verify(n)).count();
        assert!(passed <= 2, "{passed} of 2000 passed 16 bits");
    }

    #[test]
    fn nonce_hex_round_trips_and_rejects_junk() {
        let n = Nonce([0xab; 16]);
        assert_eq!(Nonce::from_hex(&n.to_hex()), Some(n));
        for bad in ["", "ab", &"g".repeat(32), &"A".repeat(32), &"a".repeat(33)] {
            assert_eq!(Nonce::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn proposed_bits_follow_the_measured_rate() {
        // 1,000 hashes per ms, 100 ms: 100,000 tries, about 2^16.6.
        assert_eq!(bits_for(1000.0, 100.0), 17);
        assert_eq!(bits_for(0.0, 100.0), 1);
        assert_eq!(bits_for(f64::INFINITY, 100.0), 1);
        assert_eq!(bits_for(1e12, 1e6), MAX_BITS);
    }
}
