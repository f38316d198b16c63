//! The server's clock as seen from a device whose own clock may be minutes off: every answer
//! carries `server_time`; the offset is estimated NTP-style from the request's round trip, and
//! the sample with the smallest round trip of the recent few wins (its midpoint is the tightest).

/// How many recent samples are kept.
const KEEP: usize = 8;

/// Offset estimates from recent round trips.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClockSync {
    /// (offset ms, round trip ms), newest last.
    samples: Vec<(f64, f64)>,
}

impl ClockSync {
    /// One answer: sent and received on the device clock (ms), `server_ms` from its `server_time`.
    /// The server stamped its time somewhere within the round trip; the midpoint is the best guess.
    pub fn add(&mut self, sent_ms: f64, received_ms: f64, server_ms: f64) {
        if !(sent_ms.is_finite() && received_ms.is_finite() && server_ms.is_finite()) || received_ms < sent_ms {
            return;
        }
        let rtt = received_ms - sent_ms;
        let offset = server_ms - (sent_ms + rtt / 2.0);
        self.samples.push((offset, rtt));
        if self.samples.len() > KEEP {
            self.samples.remove(0);
        }
    }

    /// Server time minus device time, in ms (0 before any sample).
    pub fn offset_ms(&self) -> f64 {
        self.samples.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map_or(0.0, |s| s.0)
    }

    /// The server's clock now, given the device's; `None` until an answer has been timed, so a
    /// device clock that is minutes off is never taken for the server's (not even for one tick).
    pub fn server_now(&self, device_ms: f64) -> Option<f64> {
        (!self.samples.is_empty()).then(|| device_ms + self.offset_ms())
    }
}

/// Whether an answer came from a cache (a CDN's `Age`, CloudFront's `X-Cache: Hit ...`): its
/// `server_time` is as old as the copy, so it must never teach the clock (an edge hit has the
/// smallest round trip of all and would win, making the page start late).
pub fn from_a_cache(age: Option<&str>, x_cache: Option<&str>) -> bool {
    age.is_some_and(|a| a.trim().parse::<u64>().map_or(true, |secs| secs > 0))
        // "Hit", and "RefreshHit" (revalidated: the body is still the old copy).
        || x_cache.is_some_and(|x| x.to_ascii_lowercase().contains("hit"))
}

/// `HH:MM:SS` until the target (rounded up, so it reads 00:00:00 only at T0), or days first.
pub fn countdown(ms_left: f64) -> String {
    let secs = (ms_left.max(0.0) / 1000.0).ceil() as u64;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 { format!("{d}d {h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_answers_are_told_apart() {
        assert!(!from_a_cache(None, None), "from the origin");
        assert!(!from_a_cache(Some("0"), Some("Miss from cloudfront")));
        assert!(from_a_cache(Some("1"), None));
        assert!(from_a_cache(Some("junk"), None), "an Age we cannot read is not trusted");
        assert!(from_a_cache(None, Some("Hit from cloudfront")));
        assert!(from_a_cache(Some("0"), Some("RefreshHit from cloudfront")), "revalidated, still the old body");
    }

    #[test]
    fn a_device_ten_minutes_fast_still_gets_server_time() {
        let mut c = ClockSync::default();
        let skew = 600_000.0;
        // Server at 1,000,000; the device reads 10 min ahead; 40 ms round trip, stamped mid-way.
        c.add(1_000_000.0 + skew - 20.0, 1_000_000.0 + skew + 20.0, 1_000_000.0);
        assert!((c.offset_ms() + skew).abs() < 1e-9);
        assert!((c.server_now(2_000_000.0 + skew).unwrap() - 2_000_000.0).abs() < 1e-9);
    }

    #[test]
    fn no_server_time_before_the_first_timed_answer() {
        let mut c = ClockSync::default();
        assert_eq!(c.server_now(5_000.0), None, "the device's clock is not the server's");
        c.add(1_000.0, 1_000.0, f64::NAN);
        assert_eq!(c.server_now(5_000.0), None, "a garbage answer is no sample");
        c.add(1_000.0, 1_010.0, 900.0);
        assert_eq!(c.server_now(5_000.0), Some(4_895.0));
    }

    #[test]
    fn the_tightest_round_trip_wins_and_garbage_is_ignored() {
        let mut c = ClockSync::default();
        c.add(0.0, 400.0, 1000.0); // slow: offset 800, rtt 400
        c.add(1000.0, 1010.0, 1500.0); // fast: offset 495
        c.add(2000.0, 1990.0, 0.0); // received before sent: ignored
        c.add(f64::NAN, 1.0, 1.0);
        assert_eq!(c.offset_ms(), 495.0);
        for i in 0..KEEP {
            c.add(10_000.0 + i as f64, 10_100.0 + i as f64, 10_000.0);
        }
        assert!(c.offset_ms() < 0.0, "old samples age out: {}", c.offset_ms());
    }

    #[test]
    fn countdowns_round_up_and_show_days() {
        assert_eq!(countdown(0.0), "00:00:00");
        assert_eq!(countdown(-5.0), "00:00:00");
        assert_eq!(countdown(1.0), "00:00:01");
        assert_eq!(countdown(61_000.0), "00:01:01");
        assert_eq!(countdown(3_600_000.0 * 26.0), "1d 02:00:00");
    }
}
