//! Coupons and the identities they are bound to: unguessable codes, user ids, the issued coupon.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{CampaignId, ValidationError};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// An 80-bit coupon code from a CSPRNG, shown as Crockford base32 in four groups of four
/// (`7KQ3-M9XZ-0C4T-HV2R`): no I/L/O/U to misread, and 2^80 possibilities so codes cannot be guessed.
/// Kept as raw bytes so per-winner memory stays small.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CouponCode([u8; 10]);

impl CouponCode {
    /// Draws a fresh code. `rand::rng()` is a ChaCha-based CSPRNG reseeded from the OS.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 10];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 10]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }

    /// Parses the display form. Case-insensitive, hyphens optional, and Crockford's
    /// look-alikes (I/L → 1, O → 0) accepted, so a code read aloud or retyped still matches.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let err = || ValidationError::new("code", "must be 16 Crockford base32 characters");
        let mut acc: u128 = 0;
        let mut n = 0;
        for c in s.bytes().filter(|&c| c != b'-') {
            let v = match c.to_ascii_uppercase() {
                b'O' => 0,
                b'I' | b'L' => 1,
                u => CROCKFORD.iter().position(|&a| a == u).ok_or_else(err)? as u128,
            };
            acc = (acc << 5) | v;
            n += 1;
            if n > 16 {
                return Err(err());
            }
        }
        if n != 16 {
            return Err(err());
        }
        let bytes = acc.to_be_bytes();
        Ok(Self(bytes[6..].try_into().expect("16 - 6 = 10 bytes")))
    }
}

impl CouponCode {
    /// The code as a log line may show it: the first group only (20 bits, not enough to redeem
    /// or guess the rest), so a leaked log never hands out a coupon.
    pub fn redacted(&self) -> String {
        let full = self.to_string();
        format!("{}-****-****-****", &full[..4])
    }
}

impl fmt::Display for CouponCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wide = [0u8; 16];
        wide[6..].copy_from_slice(&self.0);
        let v = u128::from_be_bytes(wide);
        let mut out = [0u8; 19];
        let mut o = 0;
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                out[o] = b'-';
                o += 1;
            }
            out[o] = CROCKFORD[((v >> (75 - 5 * i)) & 31) as usize];
            o += 1;
        }
        f.write_str(std::str::from_utf8(&out).expect("alphabet is ASCII"))
    }
}

impl fmt::Debug for CouponCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CouponCode({self})")
    }
}

impl Serialize for CouponCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CouponCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The user a coupon is bound to: the `sub` of a verified token. Visible ASCII, 1..=128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new("user_id", "must be 1 to 128 visible ASCII characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An issued coupon, made by [`Campaign::coupon_for`](crate::Campaign::coupon_for). `seq` is
/// unique within 1..=total in every store; once a campaign sells out its winners hold exactly
/// 1..=total (SqliteStore also never leaves a gap at any instant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: CouponCode,
    pub seq: u32,
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn display_is_grouped_crockford_and_parses_back() {
        for _ in 0..1000 {
            let code = CouponCode::generate();
            let shown = code.to_string();
            assert_eq!(shown.len(), 19);
            assert_eq!(shown.matches('-').count(), 3);
            assert!(shown.bytes().all(|b| b == b'-' || CROCKFORD.contains(&b)));
            assert_eq!(CouponCode::parse(&shown).unwrap(), code);
            assert_eq!(CouponCode::parse(&shown.to_lowercase().replace('-', "")).unwrap(), code);
        }
    }

    #[test]
    fn known_values_encode_exactly() {
        assert_eq!(CouponCode::from_bytes([0; 10]).to_string(), "0000-0000-0000-0000");
        assert_eq!(CouponCode::from_bytes([0xff; 10]).to_string(), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        assert_eq!(
            CouponCode::parse("oooo-iiii-llll-0000").unwrap(),
            CouponCode::parse("0000-1111-1111-0000").unwrap()
        );
    }

    #[test]
    fn bad_codes_are_rejected() {
        for bad in ["", "ZZZZ", "ZZZZ-ZZZZ-ZZZZ-ZZZZ-Z", "UUUU-ZZZZ-ZZZZ-ZZZZ", "ZZZZ ZZZZ ZZZZ ZZZZ"] {
            assert!(CouponCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn codes_do_not_repeat() {
        let codes: HashSet<_> = (0..100_000).map(|_| CouponCode::generate()).collect();
        assert_eq!(codes.len(), 100_000);
    }

    #[test]
    fn user_ids_are_validated() {
        assert!(UserId::parse("auth0|abc-123@x.y").is_ok());
        for bad in ["", "a b", "tab\t", &"u".repeat(129), "é"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
