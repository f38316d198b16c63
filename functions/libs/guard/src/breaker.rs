//! A count-based circuit breaker: the failure rate over the last `window` calls opens it; open,
//! it refuses for `open_for`; then `probes` calls go through (half-open) and decide whether it
//! closes or opens again. Calls that are cancelled before they finish are not counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Recent calls the failure rate is computed over (closed state).
    pub window: usize,
    /// Calls needed in the window before it may open (so three early failures do not).
    pub min_calls: usize,
    /// Failure rate (0..=1) at or above which it opens.
    pub failure_rate: f64,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Calls let through while half-open; their failure rate decides.
    pub probes: usize,
}

impl Default for BreakerConfig {
    /// Window 100, 50 %, 5 s open, 10 half-open calls: resilience4j's usual count-based settings.
    fn default() -> Self {
        Self { window: 100, min_calls: 100, failure_rate: 0.5, open_for: Duration::from_secs(5), probes: 10 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: usize, done: usize, failed: usize },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Outcomes in the closed state, newest last (`true` = failed).
    recent: VecDeque<bool>,
    failures: usize,
    /// Bumped on every transition, so a call admitted in one state is not counted in another.
    epoch: u64,
}

pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// `firstcome_breaker_state`, set on every transition (an alarm fires on 2).
    gauge: metrics::Gauge,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("config", &self.config).field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// Permission for one call; record its outcome (dropping it unrecorded counts nothing).
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    epoch: u64,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        let window = config.window.max(1);
        Self {
            config: BreakerConfig {
                window,
                min_calls: config.min_calls.clamp(1, window),
                probes: config.probes.max(1),
                ..config
            },
            inner: Mutex::new(Inner {
                state: State::Closed,
                recent: VecDeque::with_capacity(window),
                failures: 0,
                epoch: 0,
            }),
            gauge: {
                let g = metrics::gauge!(firstcome_core::telemetry::BREAKER);
                g.set(0.0);
                g
            },
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.inner.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A ticket for one call, or `None` while open (or while the half-open probes are all out).
    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut inner = self.inner.lock();
        // The clock is read only while open: closed, this runs on every store call.
        if let State::Open { until } = inner.state {
            if Instant::now() < until {
                return None;
            }
            inner.state = State::HalfOpen { admitted: 0, done: 0, failed: 0 };
            inner.epoch += 1;
            self.gauge.set(1.0);
            tracing::info!("store breaker half-open: probing");
        }
        let epoch = inner.epoch;
        let probes = self.config.probes;
        match &mut inner.state {
            State::Closed => Some(Ticket { breaker: self, epoch, probe: false, recorded: false }),
            State::HalfOpen { admitted, .. } if *admitted < probes => {
                *admitted += 1;
                Some(Ticket { breaker: self, epoch, probe: true, recorded: false })
            }
            _ => None,
        }
    }

    fn open(&self, inner: &mut Inner, why: &str) {
        inner.state = State::Open { until: Instant::now() + self.config.open_for };
        inner.recent.clear();
        inner.failures = 0;
        inner.epoch += 1;
        self.gauge.set(2.0);
        tracing::warn!(open_for = ?self.config.open_for, "store breaker open: {why}");
    }

    fn finish(&self, epoch: u64, probe: bool, failed: Option<bool>) {
        let mut inner = self.inner.lock();
        if inner.epoch != epoch {
            // Admitted before the last transition: its outcome belongs to a state that is gone.
            return;
        }
        let c = self.config;
        if probe {
            let State::HalfOpen { admitted, done, failed: failures } = &mut inner.state else { return };
            let Some(failed) = failed else {
                // Cancelled: give the probe back.
                *admitted -= 1;
                return;
            };
            *done += 1;
            *failures += usize::from(failed);
            if *done < c.probes {
                return;
            }
            let rate = *failures as f64 / *done as f64;
            if rate >= c.failure_rate {
                self.open(&mut inner, "the probes failed too");
            } else {
                inner.state = State::Closed;
                inner.epoch += 1;
                self.gauge.set(0.0);
                tracing::info!("store breaker closed: the probes succeeded");
            }
            return;
        }
        let Some(failed) = failed else { return };
        inner.recent.push_back(failed);
        inner.failures += usize::from(failed);
        if inner.recent.len() > c.window {
            let old = inner.recent.pop_front().unwrap_or(false);
            inner.failures -= usize::from(old);
        }
        let n = inner.recent.len();
        if n >= c.min_calls && inner.failures as f64 / n as f64 >= c.failure_rate {
            self.open(&mut inner, "too many of the recent calls failed");
        }
    }
}

impl Ticket<'_> {
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        self.breaker.finish(self.epoch, self.probe, Some(failed));
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.finish(self.epoch, self.probe, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Breaker {
        Breaker::new(BreakerConfig {
            window: 10,
            min_calls: 10,
            failure_rate: 0.5,
            open_for: Duration::from_millis(50),
            probes: 3,
        })
    }

    #[test]
    fn opens_at_the_failure_rate_over_the_window_and_not_before_min_calls() {
        let b = small();
        for _ in 0..4 {
            b.admit().unwrap().record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed, "four calls are too few to judge");
        for _ in 0..5 {
            b.admit().unwrap().record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "4 of 9");
        b.admit().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Open, "5 of 10 failed");
        assert!(b.admit().is_none(), "open: refused at once");
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let b = small();
        for _ in 0..4 {
            b.admit().unwrap().record(true);
        }
        for _ in 0..100 {
            b.admit().unwrap().record(false);
        }
        for _ in 0..4 {
            b.admit().unwrap().record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed, "4 of the last 10");
    }

    #[test]
    fn half_open_probes_close_it_on_success_and_reopen_it_on_failure() {
        let b = small();
        for _ in 0..10 {
            b.admit().unwrap().record(true);
        }
        assert!(b.admit().is_none());
        std::thread::sleep(Duration::from_millis(60));
        let probes: Vec<_> = (0..3).map(|_| b.admit().unwrap()).collect();
        assert!(b.admit().is_none(), "only three probes at a time");
        for p in probes {
            p.record(true);
        }
        assert_eq!(b.state(), BreakerState::Open, "failed probes reopen it");

        std::thread::sleep(Duration::from_millis(60));
        let cancelled = b.admit().unwrap();
        drop(cancelled);
        for _ in 0..3 {
            b.admit().expect("a cancelled probe is given back").record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().unwrap().record(true);
        assert_eq!(b.state(), BreakerState::Closed, "closed again with a fresh window");
    }

    #[test]
    fn outcomes_of_calls_admitted_before_a_transition_are_not_counted_after_it() {
        let b = small();
        let stale = b.admit().unwrap();
        for _ in 0..10 {
            b.admit().unwrap().record(true);
        }
        std::thread::sleep(Duration::from_millis(60));
        let probes: Vec<_> = (0..3).map(|_| b.admit().unwrap()).collect();
        stale.record(true);
        for p in probes {
            p.record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
