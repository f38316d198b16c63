//! DynamoDB's round trips, as the latency layer and the simulation draw them: per operation a
//! log-normal distribution (a median and a p99). A read's snapshot and a write's commit happen
//! at the server, so half a round trip passes before the request reaches it and half after:
//! two containers racing for one shard item overlap as they would on AWS.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

/// One operation's round trip: log-normal with this median and 99th percentile (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTrip {
    pub median_ms: f64,
    pub p99_ms: f64,
}

impl RoundTrip {
    /// z of the 99th percentile of the standard normal distribution.
    const Z99: f64 = 2.326_347_874;

    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let sigma = (self.p99_ms / self.median_ms).ln() / Self::Z99;
        // Box-Muller: one standard normal from two uniforms.
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64(self.median_ms * (sigma * z).exp() / 1000.0)
    }
}

/// The round trips by DynamoDB operation (`X-Amz-Target`'s last part); `default` for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub ops: BTreeMap<String, RoundTrip>,
    pub default: RoundTrip,
}

impl Profile {
    /// `aws`: in-region round trips from a Lambda function to DynamoDB, as docs/dynamodb.md gives
    /// them with their sources; `none`: no added latency; or a list like
    /// `GetItem=4:12,TransactWriteItems=14:40,*=5:15` (median:p99 in ms, `*` the default).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "aws" => return Self::parse(AWS),
            "none" => return Self::parse("*=0.001:0.001"),
            _ => {}
        }
        let mut ops = BTreeMap::new();
        let mut default = None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, dist) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected OP=MEDIAN:P99"))?;
            let (m, q) = dist.split_once(':').ok_or_else(|| format!("{part:?}: expected MEDIAN:P99"))?;
            let num = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("{part:?}: {v:?} is not a number"));
            let rt = RoundTrip { median_ms: num(m)?, p99_ms: num(q)? };
            if !(rt.median_ms > 0.0 && rt.p99_ms >= rt.median_ms && rt.p99_ms < 60_000.0) {
                return Err(format!("{part:?}: need 0 < median <= p99 < 60000"));
            }
            if op == "*" {
                default = Some(rt);
            } else {
                ops.insert(op.to_owned(), rt);
            }
        }
        Ok(Self { ops, default: default.ok_or("a profile needs a default (*=MEDIAN:P99)")? })
    }

    pub fn round_trip(&self, op: &str) -> RoundTrip {
        self.ops.get(op).copied().unwrap_or(self.default)
    }
}

/// The `aws` profile (see `Profile::parse`).
pub const AWS: &str =
    "GetItem=4:12,BatchGetItem=5:15,Query=6:20,PutItem=6:18,UpdateItem=6:18,TransactWriteItems=14:40,*=6:20";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_bad_ones_are_refused() {
        let p = Profile::parse("aws").unwrap();
        assert_eq!(p.round_trip("TransactWriteItems"), RoundTrip { median_ms: 14.0, p99_ms: 40.0 });
        assert_eq!(p.round_trip("DescribeTable"), RoundTrip { median_ms: 6.0, p99_ms: 20.0 });
        for bad in ["", "GetItem=4:12", "*=4", "*=x:1", "*=10:5", "*=0:1"] {
            assert!(Profile::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn samples_follow_the_median_and_the_tail() {
        let rt = RoundTrip { median_ms: 14.0, p99_ms: 40.0 };
        let mut rng = rand::rng();
        let mut ms: Vec<f64> = (0..20_000).map(|_| rt.sample(&mut rng).as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let (p50, p99) = (ms[10_000], ms[19_800]);
        assert!((13.0..15.0).contains(&p50), "median {p50}");
        assert!((35.0..46.0).contains(&p99), "p99 {p99}");
    }
}
