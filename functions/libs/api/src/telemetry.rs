//! The router's metrics: one tower layer counts every claim answer by outcome (the wire's code),
//! its latency, requests in flight and sheds; `Exposition` serves them as Prometheus text
//! (`GET /metrics`) and keeps the live view's per-second series. The live view reads the few
//! figures it shows from the recorder itself (`LiveRecorder` keeps a copy of them as they are
//! recorded), not by rendering the Prometheus text and parsing it back.
//!
//! Counting at the outermost layer means a claim refused by the per-client limit, the request
//! timeout or an extractor is counted exactly like one the engine answered, so the server's
//! counts can be compared with a client's one for one (`firstcome-rehearse --scrape-metrics`).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use firstcome_core::telemetry::{self as names, CLAIM_BUCKETS, quantile_of_counts};
use firstcome_wire::{ErrorCode, LiveSecond, LiveView};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;

/// Handles registered once: the claim path records without a registry lookup per request.
struct Handles {
    issued: Counter,
    already_issued: Counter,
    errors: Vec<(ErrorCode, Counter)>,
    other: Counter,
    latency: Histogram,
    in_flight: Gauge,
    shed_rate_limited: Counter,
    shed_overloaded: Counter,
}

static HANDLES: LazyLock<Handles> = LazyLock::new(|| {
    let claims = |outcome: &'static str| metrics::counter!(names::CLAIMS, "outcome" => outcome);
    Handles {
        issued: claims("issued"),
        already_issued: claims("already_issued"),
        errors: ErrorCode::ALL.iter().map(|c| (*c, claims(c.as_str()))).collect(),
        other: claims("other"),
        latency: metrics::histogram!(names::CLAIM_SECONDS),
        in_flight: metrics::gauge!(names::IN_FLIGHT),
        shed_rate_limited: metrics::counter!(names::SHED, "reason" => "rate_limited"),
        shed_overloaded: metrics::counter!(names::SHED, "reason" => "overloaded"),
    }
});

/// Whether a request is a claim: `POST /api/campaigns/{id}/claims`.
pub(crate) fn is_claim(method: &Method, path: &str) -> bool {
    method == Method::POST && path.starts_with("/api/campaigns/") && path.ends_with("/claims")
}

fn record(res: &Response, claim: Option<Instant>) {
    let h = &*HANDLES;
    let code = res.extensions().get::<ErrorCode>().copied();
    match (res.status(), code) {
        (StatusCode::TOO_MANY_REQUESTS, _) => h.shed_rate_limited.increment(1),
        (_, Some(ErrorCode::Overloaded)) => h.shed_overloaded.increment(1),
        _ => {}
    }
    let Some(started) = claim else { return };
    h.latency.record(started.elapsed().as_secs_f64());
    match (res.status(), code) {
        (StatusCode::CREATED, None) => h.issued.increment(1),
        (StatusCode::OK, None) => h.already_issued.increment(1),
        (_, Some(code)) => match h.errors.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => counter.increment(1),
            None => h.other.increment(1),
        },
        _ => h.other.increment(1),
    }
}

/// The response header that carries the request's id, so a customer's report can be matched
/// with the server's log lines.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request's id, in the log lines written about it: API Gateway's request id on Lambda, else
/// this process's own (a random prefix per process and a counter: unique, and no allocation
/// until it is written out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    Gateway(Arc<str>),
    Local(u64),
}

static PREFIX: LazyLock<u32> = LazyLock::new(rand::random);

impl RequestId {
    fn generate() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self::Local(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// As a header value (formatted on the stack; one copy into the header).
    fn header(&self) -> Option<axum::http::HeaderValue> {
        match self {
            Self::Gateway(id) => axum::http::HeaderValue::from_str(id).ok(),
            Self::Local(_) => {
                use std::io::Write;
                let mut buf = [0u8; 32];
                let mut w = &mut buf[..];
                write!(w, "{self}").ok()?;
                let len = 32 - w.len();
                axum::http::HeaderValue::from_bytes(&buf[..len]).ok()
            }
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gateway(id) => f.write_str(id),
            Self::Local(n) => write!(f, "{:08x}-{n}", *PREFIX),
        }
    }
}

/// The layer; outermost, so every answer passes through it, so every answer passes through it.
#[derive(Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
}

/// Decrements the in-flight gauge however the request ends (answered or dropped mid-way).
struct InFlight;

impl InFlight {
    fn new() -> Self {
        HANDLES.in_flight.increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        HANDLES.in_flight.decrement(1.0);
    }
}

impl<S> tower::Service<axum::extract::Request> for Observe<S>
where
    S: tower::Service<axum::extract::Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        let claim = is_claim(req.method(), req.uri().path()).then(Instant::now);
        // API Gateway's id on Lambda (put there by the entry point); one of ours otherwise.
        let id = match req.extensions().get::<RequestId>() {
            Some(id) => id.clone(),
            None => {
                let id = RequestId::generate();
                req.extensions_mut().insert(id.clone());
                id
            }
        };
        ObserveFuture { inner: self.inner.call(req), claim, id: Some(id), _in_flight: InFlight::new() }
    }
}

pin_project_lite::pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        claim: Option<Instant>,
        id: Option<RequestId>,
        _in_flight: InFlight,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = std::task::ready!(this.inner.poll(cx));
        if let Ok(res) = &mut out {
            record(res, *this.claim);
            if let Some(id) = this.id.take() {
                if let Some(crate::error::Failure(chain)) = res.extensions().get() {
                    tracing::error!(request_id = %id, status = res.status().as_u16(), error = %chain, "request failed");
                }
                if let Some(v) = id.header() {
                    res.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
            }
        }
        Poll::Ready(out)
    }
}

/// How long the live view looks back.
pub const LIVE_SECONDS: usize = 300;

/// This process's metrics as Prometheus text and the live view's series. One per process: the
/// `metrics` recorder is global.
#[derive(Clone)]
pub struct Exposition {
    prometheus: PrometheusHandle,
    figures: Arc<LiveFigures>,
    live: Arc<Mutex<Live>>,
}

#[derive(Default)]
struct Live {
    seconds: VecDeque<LiveSecond>,
    /// The last reading: the gauges the view shows, and the counters and latency buckets the next
    /// second's differences are taken from.
    last: Option<Reading>,
}

/// The figures the live view shows, read at one instant.
#[derive(Default)]
struct Reading {
    claims: BTreeMap<String, u64>,
    /// Claims answered per latency bucket (`CLAIM_BUCKETS`, then one past the last), cumulative
    /// since the start.
    buckets: Vec<u64>,
    remaining: BTreeMap<String, u64>,
    ledger_lag: f64,
    breaker: f64,
    in_flight: f64,
}

/// A gauge's value: an `f64` in an `AtomicU64` (as `metrics` stores one).
fn gauge_value(g: &AtomicU64) -> f64 {
    f64::from_bits(g.load(Ordering::Relaxed))
}

/// The live view's copy of what it shows, written as the metrics are recorded.
#[derive(Default)]
struct LiveFigures {
    claims: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    buckets: LatencyBuckets,
    remaining: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    ledger_lag: Arc<AtomicU64>,
    breaker: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
}

impl LiveFigures {
    fn read(&self) -> Reading {
        let load = |m: &Mutex<BTreeMap<String, Arc<AtomicU64>>>| {
            m.lock().iter().map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed))).collect::<BTreeMap<_, _>>()
        };
        Reading {
            claims: load(&self.claims),
            buckets: self.buckets.0.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
            remaining: self.remaining.lock().iter().map(|(k, v)| (k.clone(), gauge_value(v).max(0.0) as u64)).collect(),
            ledger_lag: gauge_value(&self.ledger_lag),
            breaker: gauge_value(&self.breaker),
            in_flight: gauge_value(&self.in_flight),
        }
    }
}

/// Claim latencies counted per `CLAIM_BUCKETS` bucket (a value goes in the first bucket whose
/// bound it does not exceed, as Prometheus' `le` does), with one more past the last bound.
struct LatencyBuckets(Arc<[AtomicU64]>);

impl Default for LatencyBuckets {
    fn default() -> Self {
        Self((0..=CLAIM_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect())
    }
}

impl HistogramFn for LatencyBuckets {
    fn record(&self, value: f64) {
        let i = CLAIM_BUCKETS.partition_point(|le| *le < value);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle that records into the Prometheus recorder's and into the live view's copy.
struct Both<A, B>(A, B);

impl<B: CounterFn> CounterFn for Both<Counter, B> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl<B: GaugeFn> GaugeFn for Both<Gauge, B> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }
    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl<B: HistogramFn> HistogramFn for Both<Histogram, B> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

/// The process's recorder: Prometheus', with the live view's figures copied as they are
/// recorded. Handles are registered once (the claim path keeps its own), so the copy costs one
/// more atomic add per recorded value, nothing per request besides.
struct LiveRecorder {
    prometheus: PrometheusRecorder,
    figures: Arc<LiveFigures>,
}

fn label<'k>(key: &'k Key, name: &str) -> Option<&'k str> {
    key.labels().find(|l| l.key() == name).map(|l| l.value())
}

fn slot(map: &Mutex<BTreeMap<String, Arc<AtomicU64>>>, name: &str) -> Arc<AtomicU64> {
    map.lock().entry(name.to_owned()).or_default().clone()
}

impl Recorder for LiveRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let counter = self.prometheus.register_counter(key, metadata);
        match (key.name(), label(key, "outcome")) {
            (names::CLAIMS, Some(outcome)) => {
                Counter::from_arc(Arc::new(Both(counter, slot(&self.figures.claims, outcome))))
            }
            _ => counter,
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let gauge = self.prometheus.register_gauge(key, metadata);
        let copy = match key.name() {
            names::REMAINING => label(key, "campaign").map(|c| slot(&self.figures.remaining, c)),
            names::LEDGER_LAG => Some(self.figures.ledger_lag.clone()),
            names::BREAKER => Some(self.figures.breaker.clone()),
            names::IN_FLIGHT => Some(self.figures.in_flight.clone()),
            _ => None,
        };
        match copy {
            Some(copy) => Gauge::from_arc(Arc::new(Both(gauge, copy))),
            None => gauge,
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let histogram = self.prometheus.register_histogram(key, metadata);
        if key.name() == names::CLAIM_SECONDS && key.labels().next().is_none() {
            let copy = LatencyBuckets(self.figures.buckets.0.clone());
            return Histogram::from_arc(Arc::new(Both(histogram, copy)));
        }
        histogram
    }
}

static EXPOSITION: OnceLock<Result<Exposition, String>> = OnceLock::new();

impl Exposition {
    /// Installs the Prometheus recorder (once per process) and starts the live view's sampler.
    /// Later calls share the first's.
    pub fn install() -> Result<&'static Self, String> {
        EXPOSITION
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), CLAIM_BUCKETS)
                    .map_err(|e| e.to_string())?
                    .build_recorder();
                let prometheus = recorder.handle();
                let figures = Arc::new(LiveFigures::default());
                metrics::set_global_recorder(LiveRecorder { prometheus: recorder, figures: figures.clone() })
                    .map_err(|e| e.to_string())?;
                names::describe();
                let me = Exposition { prometheus, figures, live: Default::default() };
                let sampler = me.clone();
                // A thread of its own, not a task: the recorder outlives whichever runtime
                // installed it (tests start many), and a sample is a few microseconds of work.
                std::thread::Builder::new()
                    .name("live-metrics".into())
                    .spawn(move || {
                        loop {
                            sampler.sample(time::OffsetDateTime::now_utc());
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    })
                    .map_err(|e| e.to_string())?;
                Ok(me)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.prometheus.render()
    }

    /// One second of the live view: the difference since the last reading.
    fn sample(&self, at: time::OffsetDateTime) {
        // The Prometheus recorder's own upkeep (its histograms' buffers), due whether or not
        // anyone scrapes `/metrics`.
        self.prometheus.run_upkeep();
        let now = self.figures.read();
        let mut live = self.live.lock();
        if let Some(last) = &live.last {
            let claims = now
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(last.claims.get(k).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect();
            let mut latency_counts: Vec<u64> =
                now.buckets.iter().zip(&last.buckets).map(|(n, before)| n.saturating_sub(*before)).collect();
            let p99_ms = quantile_of_counts(CLAIM_BUCKETS, &latency_counts, 0.99).map(|s| s * 1000.0);
            if latency_counts.iter().all(|n| *n == 0) {
                latency_counts.clear();
            }
            live.seconds.push_back(LiveSecond {
                at,
                claims,
                p99_ms,
                latency_counts,
                ledger_lag_seconds: now.ledger_lag,
            });
            while live.seconds.len() > LIVE_SECONDS {
                live.seconds.pop_front();
            }
        }
        live.last = Some(now);
    }

    /// The live view as the marketing page reads it.
    pub fn live(&self, server_time: time::OffsetDateTime) -> LiveView {
        let live = self.live.lock();
        let nothing_yet = Reading::default();
        let now = live.last.as_ref().unwrap_or(&nothing_yet);
        LiveView {
            server_time,
            seconds: live.seconds.iter().cloned().collect(),
            remaining: now.remaining.clone(),
            ledger_lag_seconds: now.ledger_lag,
            breaker: match now.breaker as u8 {
                0 => "closed",
                1 => "half_open",
                _ => "open",
            }
            .into(),
            in_flight: now.in_flight.max(0.0) as u64,
            latency_bounds_s: CLAIM_BUCKETS.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_goes_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let b = LatencyBuckets::default();
        for v in [0.0, CLAIM_BUCKETS[0], CLAIM_BUCKETS[0] * 1.01, CLAIM_BUCKETS[CLAIM_BUCKETS.len() - 1] * 2.0] {
            b.record(v);
        }
        let counts: Vec<u64> = b.0.iter().map(|n| n.load(Ordering::Relaxed)).collect();
        assert_eq!(counts.len(), CLAIM_BUCKETS.len() + 1);
        assert_eq!((counts[0], counts[1], counts[CLAIM_BUCKETS.len()]), (2, 1, 1), "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), 4);
    }

    #[test]
    fn only_posts_to_a_campaigns_claims_are_claims() {
        assert!(is_claim(&Method::POST, "/api/campaigns/spring/claims"));
        assert!(!is_claim(&Method::GET, "/api/campaigns/spring/claims/me"));
        assert!(!is_claim(&Method::POST, "/api/campaigns/spring/claims/me"));
        assert!(!is_claim(&Method::POST, "/api/admin/campaigns"));
    }
}
