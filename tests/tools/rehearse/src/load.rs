//! The load engine: keep-alive HTTP/1.1 connections (hyper), closed loop (each connection sends
//! its next request when the last answered) or open loop (request i has an intended send time;
//! latency counts from that time, so a slow server cannot hide queueing: no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use firstcome_wire::{ClaimResponse, ErrorBody};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net::Target;

/// Width of one chart bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// A request not answered within this is recorded as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long before `start` the connections are opened. Servers close a keep-alive connection
/// that stays idle (the local one after 10 s): connections opened at once with a campaign that
/// opens 15 s later were all closed before T0 and all reconnected in its first 100 ms, so the
/// opening measured 256 handshakes, not claims. A visitor's page keeps its connection warm by
/// polling; this is the same.
const CONNECT_AHEAD: Duration = Duration::from_secs(2);

/// One request to send: built per index by the plan.
pub struct Req {
    pub method: Method,
    pub path: Arc<str>,
    pub auth: Option<HeaderValue>,
    /// The claim ticket (`Firstcome-Ticket`), when the campaign asks for one.
    pub ticket: Option<HeaderValue>,
    /// Claims are parsed and kept for the invariant checks; other answers only counted.
    pub user: Option<u32>,
}

/// When requests go out.
#[derive(Debug, Clone)]
pub enum Pace {
    /// Each connection sends as soon as its previous answer arrived.
    Closed,
    /// Request i is due at `schedule.time_of(i)` after the start.
    Open(Schedule),
}

/// Piecewise-constant send rate: segment k starts at `at` with request `from` and runs at `rate`/s.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<(u64, Duration, f64)>,
}

impl Schedule {
    pub fn constant(rate: f64) -> Self {
        Self { segments: vec![(0, Duration::ZERO, rate)] }
    }

    /// Rates in consecutive steps of `step` length each.
    pub fn steps(rates: &[f64], step: Duration) -> Self {
        let mut segments = Vec::new();
        let (mut from, mut at) = (0u64, Duration::ZERO);
        for &r in rates {
            segments.push((from, at, r));
            from += (r * step.as_secs_f64()).round() as u64;
            at += step;
        }
        Self { segments }
    }

    pub fn time_of(&self, i: u64) -> Duration {
        let (from, at, rate) =
            *self.segments.iter().rev().find(|(from, _, _)| *from <= i).expect("segment 0 starts at 0");
        at + Duration::from_secs_f64((i - from) as f64 / rate)
    }

    /// Which step (segment) request i belongs to.
    pub fn step_of(&self, i: u64) -> usize {
        self.segments.iter().rposition(|(from, _, _)| *from <= i).unwrap_or(0)
    }

    pub fn rates(&self) -> Vec<f64> {
        self.segments.iter().map(|s| s.2).collect()
    }
}

/// Ends an open-loop ramp early: once a finished step had more than 1% of its answers slower
/// than `bound` or failed, there is no point climbing further.
pub struct StepGuard {
    bound_micros: u64,
    answered: Vec<AtomicU64>,
    bad: Vec<AtomicU64>,
    tripped: std::sync::atomic::AtomicBool,
}

impl StepGuard {
    pub fn new(steps: usize, bound: Duration) -> Self {
        Self {
            bound_micros: bound.as_micros() as u64,
            answered: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            bad: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            tripped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn record(&self, step: usize, micros: u64, failed: bool) {
        if let (Some(a), Some(b)) = (self.answered.get(step), self.bad.get(step)) {
            a.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(u64::from(failed || micros > self.bound_micros), Ordering::Relaxed);
        }
    }

    /// Whether to stop before sending a request of `step`: the step before it broke the bound.
    fn stop_before(&self, step: usize) -> bool {
        if self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        let Some(prev) = step.checked_sub(1) else { return false };
        let answered = self.answered[prev].load(Ordering::Relaxed);
        let broke = answered > 0 && self.bad[prev].load(Ordering::Relaxed) * 100 > answered;
        if broke {
            self.tripped.store(true, Ordering::Relaxed);
        }
        broke
    }
}

pub struct Plan {
    pub target: Target,
    pub connections: usize,
    /// Hard bound on requests sent.
    pub max_requests: u64,
    /// Hard bound on run time from the start.
    pub max_duration: Duration,
    pub pace: Pace,
    pub request: Box<dyn Fn(u64) -> Req + Send + Sync>,
    /// Open-loop ramps: stop climbing once a step breaks the bound.
    pub guard: Option<StepGuard>,
}

/// A claim answer worth checking: who got which coupon.
#[derive(Debug, Clone)]
pub struct ClaimSeen {
    pub user: u32,
    pub status: u16,
    pub code: String,
    pub seq: u32,
}

/// Everything one run observed.
pub struct RunResult {
    pub latency: Histogram<u64>,
    pub outcomes: BTreeMap<String, u64>,
    /// Latency per outcome (status + code), to see which answers make the tail.
    pub by_outcome: BTreeMap<String, Histogram<u64>>,
    pub claims: Vec<ClaimSeen>,
    /// Per 100 ms bucket (by intended send time): latency histogram of its requests.
    pub buckets: Vec<Histogram<u64>>,
    pub requests: u64,
    pub elapsed: Duration,
    /// Per open-loop step: latency histogram and error count (for `ramp`).
    pub steps: Vec<(Histogram<u64>, u64)>,
    /// 429 and 503 answers without a `Retry-After`: a shed client told nothing of when to return.
    pub missing_retry_after: u64,
    /// Open loop: how late each request left this tool, because no connection was free at its
    /// intended time (every one waiting on an answer). Its tail is this tool's own queue: the
    /// latency figures count it (no coordinated omission), but it is not the server's doing
    /// beyond the answers that held the connections.
    pub send_lag: Option<Histogram<u64>>,
}

struct Local {
    latency: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    by_outcome: BTreeMap<String, Histogram<u64>>,
    claims: Vec<ClaimSeen>,
    /// Answers not yet added to the shared per-bucket and per-step histograms.
    pending: Vec<Sample>,
    missing_retry_after: u64,
    send_lag: Histogram<u64>,
}

/// One answer, for the histograms kept per time bucket and per open-loop step. These are shared
/// by all connections and filled in batches: one histogram per connection per step (as before)
/// was ~27 KB of fresh, zeroed memory per connection at every step boundary, 110 MB at once with
/// 4,096 connections, and the page faults stalled this tool's one core for 100-700 ms each
/// second of an overload run (at 41,011/s: 13 stalls over 100 ms in 27 s, while its lateness
/// p99 read 6.7 ms, as a stall is one late tick).
struct Sample {
    bucket: usize,
    step: Option<usize>,
    micros: u64,
    failed: bool,
}

/// The histograms all connections add to.
#[derive(Default)]
struct Shared {
    buckets: Vec<Histogram<u64>>,
    steps: Vec<(Histogram<u64>, u64)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub(crate) fn coarse() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds")
}

/// Runs the plan starting at `start` (connections are opened [`CONNECT_AHEAD`] before it, so a
/// spike measures requests, not handshakes). `done` counts answered requests for a progress bar.
pub async fn run(plan: Plan, start: Instant, done: Arc<AtomicU64>) -> RunResult {
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let (plan, next, done, shared) = (plan.clone(), next.clone(), done.clone(), shared.clone());
        tasks.push(tokio::spawn(async move { connection(plan, start, next, done, shared).await }));
    }
    let mut out = RunResult {
        latency: histogram(),
        outcomes: BTreeMap::new(),
        by_outcome: BTreeMap::new(),
        claims: Vec::new(),
        buckets: Vec::new(),
        requests: 0,
        elapsed: Duration::ZERO,
        steps: Vec::new(),
        missing_retry_after: 0,
        send_lag: matches!(plan.pace, Pace::Open(_)).then(coarse),
    };
    for t in tasks {
        let local = t.await.expect("connection task");
        out.latency.add(&local.latency).expect("same bounds");
        for (k, v) in local.outcomes {
            *out.outcomes.entry(k).or_default() += v;
        }
        for (k, h) in local.by_outcome {
            out.by_outcome.entry(k).or_insert_with(coarse).add(&h).expect("same bounds");
        }
        out.claims.extend(local.claims);
        out.missing_retry_after += local.missing_retry_after;
        if let Some(lag) = out.send_lag.as_mut() {
            lag.add(&local.send_lag).expect("same bounds");
        }
    }
    out.elapsed = start.elapsed();
    out.requests = out.outcomes.values().sum();
    let shared = std::mem::take(&mut *shared.lock().expect("shared histograms lock"));
    out.buckets = shared.buckets;
    out.steps = shared.steps;
    out
}

/// One keep-alive connection (TLS when the target is https); `None` counts as a connection error.
async fn connect(plan: &Plan) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(plan.target.addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    match &plan.target.tls {
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(conn);
            Some(sender)
        }
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), stream).await.ok()?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.ok()?;
            tokio::spawn(conn);
            Some(sender)
        }
    }
}

async fn connection(
    plan: Arc<Plan>,
    start: Instant,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    shared: Arc<Mutex<Shared>>,
) -> Local {
    let mut local = Local {
        latency: histogram(),
        outcomes: BTreeMap::new(),
        by_outcome: BTreeMap::new(),
        claims: Vec::new(),
        pending: Vec::with_capacity(1024),
        missing_retry_after: 0,
        send_lag: coarse(),
    };
    if let Some(ahead) = start.checked_sub(CONNECT_AHEAD) {
        tokio::time::sleep_until(ahead).await;
    }
    let mut sender = connect(&plan).await;
    // Fault the histograms' pages in now: they come zeroed and untouched from the allocator,
    // and with thousands of connections their first touches (~140 KB each) would otherwise
    // fall inside the run, as page faults on this tool's one core.
    local.latency.clear();
    local.send_lag.clear();
    tokio::time::sleep_until(start).await;
    let end = start + plan.max_duration;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.max_requests {
            break;
        }
        let (intended, step) = match &plan.pace {
            Pace::Closed => (Instant::now(), None),
            Pace::Open(s) => {
                let t = start + s.time_of(i);
                if t >= end || plan.guard.as_ref().is_some_and(|g| g.stop_before(s.step_of(i))) {
                    break;
                }
                tokio::time::sleep_until(t).await;
                local.send_lag.saturating_record(t.elapsed().as_micros().clamp(1, 60_000_000) as u64);
                (t, Some(s.step_of(i)))
            }
        };
        if Instant::now() >= end {
            break;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(&plan).await;
        }
        let req = (plan.request)(i);
        let outcome = match sender.as_mut() {
            None => Err("conn_error"),
            Some(s) => match tokio::time::timeout(REQUEST_TIMEOUT, send(s, &plan.target.host, &req)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(())) => {
                    sender = None;
                    Err("conn_error")
                }
                Err(_) => {
                    sender = None;
                    Err("timeout")
                }
            },
        };
        let micros = intended.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        let failed = match outcome {
            Ok((status, body, retry_after)) => {
                local.missing_retry_after += u64::from(matches!(status, 429 | 503) && !retry_after);
                local.latency.saturating_record(micros);
                record_answer(&mut local, &req, status, &body, micros);
                status >= 500
            }
            Err(kind) => {
                *local.outcomes.entry(kind.to_owned()).or_default() += 1;
                true
            }
        };
        if let (Some(step), Some(g)) = (step, &plan.guard) {
            g.record(step, micros, failed);
        }
        let bucket = ((intended - start).as_nanos() / BUCKET.as_nanos()) as usize;
        local.pending.push(Sample { bucket, step, micros, failed });
        if local.pending.len() == local.pending.capacity() {
            flush(&mut local.pending, &shared);
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    flush(&mut local.pending, &shared);
    local
}

fn flush(samples: &mut Vec<Sample>, shared: &Mutex<Shared>) {
    let mut shared = shared.lock().expect("shared histograms lock");
    for s in samples.drain(..) {
        if shared.buckets.len() <= s.bucket {
            shared.buckets.resize_with(s.bucket + 1, coarse);
        }
        shared.buckets[s.bucket].saturating_record(s.micros);
        if let Some(step) = s.step {
            if shared.steps.len() <= step {
                shared.steps.resize_with(step + 1, || (coarse(), 0));
            }
            shared.steps[step].0.saturating_record(s.micros);
            shared.steps[step].1 += u64::from(s.failed);
        }
    }
}

/// Status, body, and whether the answer carried a `Retry-After`.
async fn send(sender: &mut SendRequest<Empty<Bytes>>, host: &HeaderValue, req: &Req) -> Result<(u16, Bytes, bool), ()> {
    sender.ready().await.map_err(|_| ())?;
    let mut r = Request::builder().method(req.method.clone()).uri(&*req.path).header(HOST, host.clone());
    if let Some(a) = &req.auth {
        r = r.header(AUTHORIZATION, a.clone());
    }
    if let Some(t) = &req.ticket {
        r = r.header(firstcome_ticket::HEADER, t.clone());
    }
    let res = sender.send_request(r.body(Empty::new()).map_err(|_| ())?).await.map_err(|_| ())?;
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key(hyper::header::RETRY_AFTER);
    let body = res.into_body().collect().await.map_err(|_| ())?.to_bytes();
    Ok((status, body, retry_after))
}

fn record_answer(local: &mut Local, req: &Req, status: u16, body: &[u8], micros: u64) {
    let Some(user) = req.user else {
        *local.outcomes.entry(status.to_string()).or_default() += 1;
        return;
    };
    // The API's own wire types: an answer that does not parse as one is a finding in itself.
    let word = if matches!(status, 200 | 201) {
        serde_json::from_slice::<ClaimResponse>(body).ok().map(|r| {
            local.claims.push(ClaimSeen { user, status, code: r.coupon.code, seq: r.coupon.seq });
            r.outcome.as_str()
        })
    } else {
        serde_json::from_slice::<ErrorBody>(body).ok().map(|e| e.error.as_str())
    };
    let key = format!("{status} {}", word.unwrap_or("unparsable"));
    local.by_outcome.entry(key.clone()).or_insert_with(coarse).saturating_record(micros);
    *local.outcomes.entry(key).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that closes idle connections would close ones opened long before T0, and the
    /// opening would then measure handshakes: the connections are opened `CONNECT_AHEAD` before
    /// the start, not when the run is set up.
    #[tokio::test]
    async fn connections_open_shortly_before_the_start_not_at_setup() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                seen.lock().unwrap().push(Instant::now());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let target =
            crate::net::Target::parse(&format!("http://{addr}"), false, &crate::net::client_config(None).unwrap())
                .unwrap();
        let plan = Plan {
            target,
            connections: 3,
            max_requests: 6,
            max_duration: Duration::from_secs(5),
            pace: Pace::Closed,
            request: Box::new(|_| Req {
                method: Method::GET,
                path: "/healthz".into(),
                auth: None,
                ticket: None,
                user: None,
            }),
            guard: None,
        };
        let set_up = Instant::now();
        let start = set_up + CONNECT_AHEAD + Duration::from_secs(1);
        let r = run(plan, start, Arc::new(AtomicU64::new(0))).await;
        assert_eq!(r.outcomes.get("200"), Some(&6), "{:?}", r.outcomes);
        let accepted = accepted.lock().unwrap().clone();
        assert_eq!(accepted.len(), 3, "one connection each, kept alive");
        for at in accepted {
            // Opened within CONNECT_AHEAD of the start (not a second earlier, at setup), and before it.
            assert!(at >= start - CONNECT_AHEAD, "opened {:?} after setup", at - set_up);
            assert!(at < start, "opened {:?} after the start", at - start);
        }
    }
}
