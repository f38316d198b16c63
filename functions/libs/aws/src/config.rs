//! Typed configuration, read once at start from the environment. A missing or bad variable stops
//! the function at start with its name, instead of failing requests later.

use std::time::Duration;

use firstcome_store_dynamo::{Shards, Tables};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tables: Tables,
    /// Where new coupons' issuance records go (the ledger queue).
    pub ledger_queue_url: String,
    pub shards: Shards,
    /// How long a record may stay unacknowledged before the reconciler sends it again.
    pub reconcile_grace: Duration,
    /// Unacknowledged records older than this are parked: no longer re-sent by themselves
    /// (they were re-sent every minute since the grace period), alarmed on instead.
    pub reconcile_park_after: Duration,
    /// `FIRSTCOME_ALLOWED_ORIGINS`: origins whose pages may call the API from a browser (CORS).
    pub origins: Vec<firstcome_api::HeaderValue>,
    /// `FIRSTCOME_ORIGIN_SECRET`: what CloudFront adds to every API request (`x-firstcome-origin`);
    /// the API functions refuse to start without one and answer 403 to a request without it.
    pub origin_secret: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required =
            |name: &'static str| get(name).filter(|v| !v.trim().is_empty()).ok_or(ConfigError::Missing(name));
        let number =
            |name: &'static str, default: u32, range: std::ops::RangeInclusive<u32>| -> Result<u32, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v.trim().parse::<u32>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                        ConfigError::Invalid { name, reason: format!("{v:?} is not a whole number in {range:?}") }
                    }),
                }
            };
        let shards = match get("FIRSTCOME_SHARDS") {
            Some(_) => Shards::Fixed(number("FIRSTCOME_SHARDS", 1, 1..=firstcome_store_dynamo::MAX_SHARDS)?),
            None => Shards::ForPeak { claims_per_s: number("FIRSTCOME_PEAK_CLAIMS_PER_S", 1000, 1..=10_000_000)? },
        };
        Ok(Self {
            tables: Tables {
                campaigns: required("FIRSTCOME_CAMPAIGNS_TABLE")?,
                stock: required("FIRSTCOME_STOCK_TABLE")?,
                claims: required("FIRSTCOME_CLAIMS_TABLE")?,
                ledger: required("FIRSTCOME_LEDGER_TABLE")?,
            },
            ledger_queue_url: required("FIRSTCOME_LEDGER_QUEUE_URL")?,
            shards,
            reconcile_grace: Duration::from_secs(u64::from(number("FIRSTCOME_RECONCILE_GRACE_S", 60, 1..=86_400)?)),
            reconcile_park_after: Duration::from_secs(u64::from(number(
                "FIRSTCOME_RECONCILE_PARK_AFTER_S",
                900,
                60..=7 * 86_400,
            )?)),
            origins: firstcome_api::parse_origins(&get("FIRSTCOME_ALLOWED_ORIGINS").unwrap_or_default())
                .map_err(|reason| ConfigError::Invalid { name: "FIRSTCOME_ALLOWED_ORIGINS", reason })?,
            origin_secret: match get("FIRSTCOME_ORIGIN_SECRET").filter(|v| !v.is_empty()) {
                None => None,
                Some(v) if v.len() >= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                    Some(v)
                }
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        name: "FIRSTCOME_ORIGIN_SECRET",
                        reason: "must be 32 or more characters of A-Z, a-z, 0-9, '-' and '_'".into(),
                    });
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("FIRSTCOME_CAMPAIGNS_TABLE", "c"),
        ("FIRSTCOME_STOCK_TABLE", "s"),
        ("FIRSTCOME_CLAIMS_TABLE", "cl"),
        ("FIRSTCOME_LEDGER_TABLE", "l"),
        ("FIRSTCOME_LEDGER_QUEUE_URL", "http://q"),
    ];

    #[test]
    fn a_complete_environment_gives_defaults_for_the_rest() {
        let c = Config::from_lookup(env(FULL)).unwrap();
        assert_eq!(c.tables.stock, "s");
        assert!(matches!(c.shards, Shards::ForPeak { claims_per_s: 1000 }));
        assert_eq!(c.reconcile_grace, Duration::from_secs(60));
        assert_eq!(c.reconcile_park_after, Duration::from_secs(900));
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        let without: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != "FIRSTCOME_CLAIMS_TABLE").collect();
        assert_eq!(Config::from_lookup(env(&without)).unwrap_err(), ConfigError::Missing("FIRSTCOME_CLAIMS_TABLE"));
        let blank: Vec<_> =
            FULL.iter().map(|&(k, v)| if k == "FIRSTCOME_STOCK_TABLE" { (k, " ") } else { (k, v) }).collect();
        assert_eq!(Config::from_lookup(env(&blank)).unwrap_err(), ConfigError::Missing("FIRSTCOME_STOCK_TABLE"));
        for (name, bad) in
            [("FIRSTCOME_SHARDS", "0"), ("FIRSTCOME_SHARDS", "100"), ("FIRSTCOME_PEAK_CLAIMS_PER_S", "lots")]
        {
            let mut vars = FULL.to_vec();
            vars.push((name, bad));
            let err = Config::from_lookup(env(&vars)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: n, .. } if n == name), "{name}={bad}: {err}");
        }
        let mut short = FULL.to_vec();
        short.push(("FIRSTCOME_ORIGIN_SECRET", "guessable"));
        assert!(matches!(
            Config::from_lookup(env(&short)).unwrap_err(),
            ConfigError::Invalid { name: "FIRSTCOME_ORIGIN_SECRET", .. }
        ));
        let mut fixed = FULL.to_vec();
        fixed.push(("FIRSTCOME_SHARDS", "8"));
        assert!(matches!(Config::from_lookup(env(&fixed)).unwrap().shards, Shards::Fixed(8)));
    }
}
