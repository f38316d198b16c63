//! When to try again after a 429, a 503 or a network error: never before the server's
//! `Retry-After`, and spread out (exponential, jittered) so a page full of phones does not come
//! back in lockstep and knock the service over again.

/// Longest wait between tries, whatever the attempt.
pub const MAX_BACKOFF_MS: f64 = 8_000.0;

/// Milliseconds to wait before try `attempt + 1` (attempt counts from 0). `jitter` is a uniform
/// random number in [0, 1).
pub fn backoff_ms(attempt: u32, retry_after_s: Option<f64>, jitter: f64) -> f64 {
    let floor = retry_after_s.filter(|s| s.is_finite() && *s >= 0.0).map_or(0.0, |s| (s * 1000.0).min(60_000.0));
    let spread = (250.0 * 2f64.powi(attempt.min(10) as i32)).min(MAX_BACKOFF_MS);
    floor + spread * jitter.clamp(0.0, 1.0)
}

/// `Retry-After` as seconds: the delta-seconds form, digits only (RFC 9110 10.2.3; the server
/// sends nothing else, and an HTTP date is not worth parsing here). Parsed as an integer, not a
/// float: a float parser brings its 10 KB table of powers of five into the page.
pub fn parse_retry_after(value: &str) -> Option<f64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>().ok().map(f64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_before_retry_after_and_bounded() {
        for attempt in 0..20 {
            for j in [0.0, 0.5, 0.999] {
                let w = backoff_ms(attempt, Some(1.0), j);
                assert!((1000.0..=1000.0 + MAX_BACKOFF_MS).contains(&w), "{attempt} {j} {w}");
            }
        }
        assert_eq!(backoff_ms(0, None, 0.0), 0.0);
        assert_eq!(backoff_ms(2, None, 0.5), 500.0);
        assert_eq!(backoff_ms(3, Some(f64::NAN), 1.0), 2000.0);
        assert_eq!(backoff_ms(0, Some(1e9), 0.0), 60_000.0, "an absurd Retry-After is capped");
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(2.0));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None, "delta-seconds are whole");
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("+3"), None);
        assert_eq!(parse_retry_after("9999999999"), None, "absurdly long");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
