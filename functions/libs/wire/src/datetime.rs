//! RFC 3339 timestamps on the wire, refused (not panicked on) outside 1970..=9999 UTC.
//!
//! `time` parses `9999-12-31T23:59:59-01:00` happily, but that instant is in year 10000 UTC and
//! converting it panics further in; range-checking the Unix time here needs no conversion at all.

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// 9999-12-31T23:59:59Z.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// Parses an RFC 3339 timestamp and checks its instant is within 1970-01-01 ..= 9999-12-31 UTC.
pub fn parse(s: &str) -> Result<OffsetDateTime, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 timestamp ({e})"))?;
    if (0..=MAX_UNIX).contains(&t.unix_timestamp()) {
        Ok(t)
    } else {
        Err("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z".into())
    }
}

/// Formats as RFC 3339 (what the JSON carries), e.g. for CSV cells.
pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::serialize(t, s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let s = std::borrow::Cow::<str>::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

pub mod option {
    use super::*;

    /// Formats as RFC 3339 (what the JSON carries), e.g. for CSV cells.
    pub fn format(t: OffsetDateTime) -> String {
        t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
    }

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<std::borrow::Cow<str>>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_range_instants_are_refused_not_panicked_on() {
        for bad in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"] {
            assert!(super::parse(bad).unwrap_err().contains("between"), "{bad}");
        }
        assert!(super::parse("tomorrow").unwrap_err().contains("RFC 3339"));
        assert!(super::parse("9999-12-31T23:59:59Z").is_ok());
        assert!(super::parse("2026-12-01T10:00:00+09:00").is_ok());
    }
}
