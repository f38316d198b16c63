//! Per-user and per-client rate limits (governor's GCRA, keyed): a user clicking faster than a
//! person can, or one address sending more than a crowd behind one NAT would, gets 429
//! `rate_limited` with `Retry-After` before anything else is done for it.
//!
//! Keys are forgotten once their allowance is full again, so a million distinct users cost
//! memory only while they are active: the map is swept (`retain_recent`) whenever it has grown
//! past `SWEEP_AT` and the last sweep is a second old.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;

use crate::ApiError;

/// The client's address as the edge saw it, put on the request by whoever accepted it (the
/// Lambda adapter from API Gateway's `sourceIp`); the local server's `ConnectInfo` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Option<Self> {
        match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
            (Some(per_second), Some(burst)) => Some(Self { per_second, burst }),
            _ => None,
        }
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// The limits of one deployment; `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Claims (and "my coupon" checks) per user: 5 a second by default, a person's fastest clicking.
    pub per_user: Option<Rate>,
    /// Requests per client address, on every API route.
    pub per_client: Option<Rate>,
    /// Whether loopback clients count (off for local mode, where the load tool and the tests
    /// share 127.0.0.1; on AWS every client has its own address).
    pub limit_loopback: bool,
    /// Longest a request may take, its body's arrival included: a client that sends half a body
    /// and stops gets 408 `timeout` instead of holding a task (the store calls have their own,
    /// shorter, timeout).
    pub request_timeout: Duration,
    /// Claims being answered at once; one more is answered 503 `overloaded` at the front door,
    /// before its token is read. Shedding later (at the store's admission) costs the whole
    /// request path first, so on a saturated core the shed answers themselves queued for over a
    /// second (bench `overload`).
    pub max_claims_in_flight: Option<usize>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            per_user: Rate::new(5, 10),
            per_client: Rate::new(100, 200),
            limit_loopback: false,
            request_timeout: REQUEST_TIMEOUT,
            max_claims_in_flight: Some(MAX_CLAIMS_IN_FLIGHT),
        }
    }
}

/// Twice the connections the spike and bulk targets keep busy (256), so they never meet it.
/// Measured with the overload bench (4,096 connections offering 17,234 claims/s, AMD EPYC): with
/// the shed at the store's admission only, p99 1.37-1.74 s and the shed answers' p99 1.06-1.38 s;
/// with 1,024 here p99 216-234 ms (shed 202-206); with 512, 168-181 ms (shed 139-199).
const MAX_CLAIMS_IN_FLIGHT: usize = 512;

impl LimitConfig {
    /// No rate limits (the request timeout stays).
    pub const OFF: Self = Self {
        per_user: None,
        per_client: None,
        limit_loopback: false,
        request_timeout: REQUEST_TIMEOUT,
        max_claims_in_flight: None,
    };
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys beyond this make the next check (at most once a second) sweep out the idle ones.
const SWEEP_AT: usize = 10_000;

struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    swept: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Self {
        Self { limiter: DefaultKeyedRateLimiter::keyed(rate.quota()), swept: Mutex::new(Instant::now()) }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        self.sweep();
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited { retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
        })
    }

    fn sweep(&self) {
        if self.limiter.len() < SWEEP_AT {
            return;
        }
        let Some(mut swept) = self.swept.try_lock() else { return };
        if swept.elapsed() < Duration::from_secs(1) {
            return;
        }
        *swept = Instant::now();
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitConfig::default())
    }
}

/// The limiters of one router instance.
pub struct Limits {
    config: LimitConfig,
    /// Keyed by a hash of the user id, not the id: a check then copies no string (the id was
    /// copied into a `String` key per claim). The hasher is seeded per process, so no one can
    /// choose two ids that share a key, and two real users sharing one of 2^64 keys is not a case.
    users: Option<Keyed<u64>>,
    user_keys: std::hash::RandomState,
    clients: Option<Keyed<IpAddr>>,
    claims_in_flight: Arc<AtomicUsize>,
}

impl Limits {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config,
            users: config.per_user.map(Keyed::new),
            user_keys: std::hash::RandomState::new(),
            clients: config.per_client.map(Keyed::new),
            claims_in_flight: Arc::default(),
        }
    }

    /// A slot for one claim, held until its answer is ready, or `Overloaded` when all are taken.
    fn claim_slot(&self) -> Result<Option<ClaimSlot>, ApiError> {
        let Some(max) = self.config.max_claims_in_flight else { return Ok(None) };
        if self.claims_in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.claims_in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Overloaded);
        }
        Ok(Some(ClaimSlot(self.claims_in_flight.clone())))
    }

    pub fn check_user(&self, user: &str) -> Result<(), ApiError> {
        match &self.users {
            Some(k) => k.check(&std::hash::BuildHasher::hash_one(&self.user_keys, user)),
            None => Ok(()),
        }
    }

    pub fn check_client(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.clients, ip) {
            (Some(k), Some(ip)) if self.config.limit_loopback || !ip.is_loopback() => k.check(&ip),
            _ => Ok(()),
        }
    }

    pub fn config(&self) -> LimitConfig {
        self.config
    }

    /// Keys held now (users, clients): what the memory figure is measured against.
    pub fn keys(&self) -> (usize, usize) {
        (self.users.as_ref().map_or(0, |k| k.limiter.len()), self.clients.as_ref().map_or(0, |k| k.limiter.len()))
    }
}

/// The refusals made before routing, as a plain tower layer (no per-request boxing or clone of
/// the stack below, which `axum::middleware::from_fn` costs and which showed on the /healthz
/// ceiling): a body announced (`Content-Length`) past what the server reads gets 413 at once (the
/// body limit alone trips only once that much has arrived, so a client announcing a gigabyte and
/// sending nothing would hold the request until the request timeout); a client address over its
/// rate gets 429.
#[derive(Clone)]
pub struct FrontDoorLayer(pub std::sync::Arc<Limits>);

impl<S> tower::Layer<S> for FrontDoorLayer {
    type Service = FrontDoor<S>;
    fn layer(&self, inner: S) -> FrontDoor<S> {
        FrontDoor { inner, limits: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct FrontDoor<S> {
    inner: S,
    limits: std::sync::Arc<Limits>,
}

impl<S> tower::Service<axum::extract::Request> for FrontDoor<S>
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response>,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = futures::future::Either<std::future::Ready<Result<Self::Response, S::Error>>, Slotted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
        use axum::response::IntoResponse;
        let refuse = |e: ApiError| futures::future::Either::Left(std::future::ready(Ok(e.into_response())));
        let announced =
            req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > firstcome_wire::BODY_LIMIT as u64) {
            return refuse(ApiError::TooLarge);
        }
        if self.limits.clients.is_some() {
            let x = req.extensions();
            // The address API Gateway saw on Lambda; else the connection's peer (tests may
            // stand in for it with axum's MockConnectInfo).
            let ip = x.get::<ClientIp>().map(|c| c.0).or_else(|| {
                x.get::<ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip())
                    .or_else(|| x.get::<MockConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()))
            });
            if let Err(e) = self.limits.check_client(ip) {
                return refuse(e);
            }
        }
        let slot = if crate::telemetry::is_claim(req.method(), req.uri().path()) {
            match self.limits.claim_slot() {
                Ok(slot) => slot,
                Err(e) => return refuse(e),
            }
        } else {
            None
        };
        futures::future::Either::Right(Slotted { inner: self.inner.call(req), _slot: slot })
    }
}

/// One claim being answered; gives its slot back when dropped (answered, or the client gone).
struct ClaimSlot(Arc<AtomicUsize>);

impl Drop for ClaimSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A request's future with the claim slot it holds, if any.
    pub struct Slotted<F> {
        #[pin]
        inner: F,
        _slot: Option<ClaimSlot>,
    }
}

impl<F: std::future::Future> std::future::Future for Slotted<F> {
    type Output = F::Output;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_over_the_in_flight_limit_are_refused_until_a_slot_comes_back() {
        let limits = Limits::new(LimitConfig { max_claims_in_flight: Some(2), ..LimitConfig::OFF });
        let (a, b) = (limits.claim_slot().unwrap(), limits.claim_slot().unwrap());
        assert!(matches!(limits.claim_slot(), Err(ApiError::Overloaded)), "a third is shed");
        assert!(matches!(limits.claim_slot(), Err(ApiError::Overloaded)), "a refusal holds no slot");
        drop(a);
        let c = limits.claim_slot().unwrap();
        assert!(matches!(limits.claim_slot(), Err(ApiError::Overloaded)));
        drop((b, c));
        assert_eq!(limits.claims_in_flight.load(Ordering::Acquire), 0);
        // Off: no slot is taken at all.
        assert!(Limits::new(LimitConfig::OFF).claim_slot().unwrap().is_none());
    }

    #[test]
    fn idle_keys_are_swept_so_memory_follows_the_active_users_only() {
        // A full allowance again after 1 ms: every key is idle by the time of the sweep.
        let limits = Limits::new(LimitConfig { per_user: Rate::new(1000, 1), ..LimitConfig::OFF });
        for u in 0..(SWEEP_AT + 5_000) {
            limits.check_user(&format!("user-{u}")).unwrap();
        }
        assert_eq!(limits.keys().0, SWEEP_AT + 5_000);
        std::thread::sleep(Duration::from_millis(1_100));
        limits.check_user("one-more").unwrap();
        assert!(limits.keys().0 < 10, "{} keys kept", limits.keys().0);
    }
}
