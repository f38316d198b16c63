//! `firstcome-rehearse`: the opening-second rehearsal. Fires a scenario (spike, ramp, stress,
//! soak) at a campaign over keep-alive connections, optionally measures the same server's
//! ceiling on a trivial handler in the same run, then proves the issuance invariants.

pub mod attack;
pub mod check;
mod client;
pub mod event;
pub mod load;
pub mod net;
pub mod report;
pub mod tickets;

pub use client::{Client, ClientError};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use firstcome_wire::{self as wire, CouponTerms, CreateCampaign};
use hyper::Method;
use hyper::header::HeaderValue;
use rand::seq::SliceRandom;
use time::OffsetDateTime;
use tokio::time::Instant;

use load::{Pace, Plan, Req, RunResult, Schedule};
use net::Target;
use report::{Latency, Phases, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every user fires at T0 = the campaign's opens_at (closed loop, or open loop with --rate).
    Spike,
    /// Open-loop rate growing x1.25 per second from --rate until a step breaks --p99-bound-ms or
    /// 1% errors (or --duration ends); reports the knee.
    Ramp,
    /// Open loop at --rate (default: 3x the measured ceiling) for --duration.
    Stress,
    /// Open loop at --rate for --duration, watching server RSS and p99 drift.
    Soak,
    /// Open loop: 3 s at --calm-rate, --duration s at --rate, 4 s at --calm-rate; reports the
    /// p99 of each phase (`phases`): normal, the burst, and 2-4 s after it.
    Overload,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "firstcome-rehearse", about = "Rehearse the opening second and prove the issuance invariants")]
pub struct Options {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value = "spike")]
    pub scenario: Scenario,
    /// Distinct users.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Clicks per user; a user's clicks go out back to back, so duplicates race each other.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Keep-alive connections (closed loop: also the concurrency).
    #[arg(long, default_value_t = 64, value_parser = positive_usize)]
    pub connections: usize,
    /// Open loop: requests per second (ramp: the starting rate).
    #[arg(long, value_parser = positive_f64)]
    pub rate: Option<f64>,
    /// Open loop at this multiple of the /healthz ceiling measured before the scenario (with
    /// --ceiling), instead of --rate.
    #[arg(long, value_parser = positive_f64, requires = "ceiling", conflicts_with = "rate")]
    pub rate_of_ceiling: Option<f64>,
    /// After the scenario, GET /healthz open loop at the scenario's rate for as long: the
    /// cheapest answer's latency at the same offered load, reported beside the claims'.
    #[arg(long)]
    pub healthz_open: bool,
    /// Overload: the rate before and after the burst.
    #[arg(long, default_value_t = 500.0, value_parser = positive_f64)]
    pub calm_rate: f64,
    /// Seconds the scenario may run (spike: an upper bound; soak default 600, others 10; ramp 20).
    #[arg(long, value_parser = positive_f64)]
    pub duration: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG chart here (default: next to --json, .svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also load GET /healthz of the same server before and after, and report the ratio.
    #[arg(long)]
    pub ceiling: bool,
    /// Requests per ceiling measurement (default: the spike's request count, else 200,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ceiling_requests: Option<u64>,
    /// An existing campaign to fire at.
    #[arg(long, conflicts_with = "stock")]
    pub campaign: Option<String>,
    /// Create a fresh campaign with this stock, opening --lead seconds ahead.
    #[arg(long, requires = "admin_token_file")]
    pub stock: Option<u64>,
    /// Admin token (creates the campaign; lets the ledger be checked).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Sign user tokens with this HS256 secret (local mode: <data-dir>/jwt-secret).
    #[arg(long, conflicts_with = "tokens_file")]
    pub jwt_secret_file: Option<PathBuf>,
    /// For a deployed API: one "user_id token" pair per line.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Server process to watch for RSS (default: found from the listening port on this machine).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds between creating the campaign and its opening.
    #[arg(long, default_value_t = 2.0, value_parser = non_negative_f64)]
    pub lead: f64,
    /// Ramp: a step whose p99 exceeds this (ms) is past the knee.
    #[arg(long, default_value_t = 10.0, value_parser = positive_f64)]
    pub p99_bound_ms: f64,
    /// Hard bound on requests sent by the scenario.
    #[arg(long, default_value_t = 20_000_000)]
    pub max_requests: u64,
    /// Seconds to wait for the ledger to catch up before calling it a violation.
    #[arg(long, default_value_t = 120.0, value_parser = non_negative_f64)]
    pub drain_timeout: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Allow a non-loopback target (a deployed API). Off by default.
    #[arg(long)]
    pub allow_remote: bool,
    /// For https: also trust the certificates in this PEM file (a private CA, a self-signed stage).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Hold this many idle connections open while the scenario runs (reopened when closed).
    #[arg(long, default_value_t = 0)]
    pub hold_idle: usize,
    /// Hold this many connections sending a request head one byte a second while it runs.
    #[arg(long, default_value_t = 0)]
    pub hold_slow: usize,
    /// Solve the campaign's claim tickets: after T0, read the revealed nonce and solve every
    /// user's ticket on this machine's cores (as each user's device would), then fire.
    #[arg(long)]
    pub pow: bool,
    /// Read the server's own claim counts (`GET /metrics`, with the admin token) before and after
    /// the scenario and print them beside this tool's; any difference is a violation.
    #[arg(long, requires = "admin_token_file")]
    pub scrape_metrics: bool,
    /// With --stock: the new campaign's ticket difficulty in bits (0-24). Implies --pow.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=24), requires = "stock")]
    pub pow_bits: Option<u8>,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    #[error("--url {0} is not http(s)://host[:port][/stage-path]")]
    BadUrl(String),
    #[error("--ca-cert {path}: {why}")]
    CaCert { path: PathBuf, why: String },
    #[error("--url {0} is not on loopback; pass --allow-remote to target a deployed API")]
    NotLoopback(String),
    #[error("reading {path}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Usage(&'static str),
    #[error("the API call {what} failed")]
    Api { what: &'static str, source: ClientError },
    #[error("the API refused {what}: {status} {body}")]
    Refused { what: &'static str, status: u16, body: String },
    #[error("the tokens file has {have} users, --users asks for {want}")]
    TooFewTokens { have: usize, want: u32 },
}

pub(crate) fn read(path: &PathBuf) -> Result<String, RehearseError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| RehearseError::File { path: path.clone(), source })
}

/// User ids and their bearer headers for `n` users: signed locally, or read from a tokens file.
fn user_auth(o: &Options) -> Result<(Vec<String>, Vec<HeaderValue>), RehearseError> {
    let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).expect("JWTs are header-safe");
    if let Some(path) = &o.tokens_file {
        let text = read(path)?;
        let pairs: Vec<(String, HeaderValue)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), bearer(f.next()?)))
            })
            .take(o.users as usize)
            .collect();
        if pairs.len() < o.users as usize {
            return Err(RehearseError::TooFewTokens { have: pairs.len(), want: o.users });
        }
        return Ok(pairs.into_iter().unzip());
    }
    let secret =
        read(o.jwt_secret_file.as_ref().ok_or(RehearseError::Usage("give --jwt-secret-file or --tokens-file"))?)?;
    // Unique per run, so rehearsals against one campaign never collide with earlier users.
    let tag = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let n = o.users as usize;
    let ids: Vec<String> = (0..n).map(|i| format!("r{tag}-{i}")).collect();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let mut out = vec![HeaderValue::from_static(""); n];
    std::thread::scope(|s| {
        for (slot, users) in out.chunks_mut(chunk).zip(ids.chunks(chunk)) {
            let secret = secret.as_bytes();
            s.spawn(move || {
                for (h, user) in slot.iter_mut().zip(users) {
                    *h = bearer(&firstcome_api::sign_hs256(secret, user, None, time::Duration::hours(6)));
                }
            });
        }
    });
    Ok((ids, out))
}

struct Campaign {
    id: String,
    total: u64,
    /// When it opens, on this machine's monotonic clock.
    opens: Instant,
}

async fn campaign(o: &Options, client: &Client, base: &str, admin: Option<&str>) -> Result<Campaign, RehearseError> {
    let id = match (&o.campaign, o.stock) {
        (Some(id), _) => id.clone(),
        (None, Some(stock)) => {
            let id = format!("rehearse-{}", OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000);
            let body = serde_json::to_value(CreateCampaign {
                id: id.clone(),
                title: format!("Rehearsal {:?}", o.scenario),
                total: stock,
                opens_at: OffsetDateTime::now_utc() + time::Duration::seconds_f64(o.lead),
                closes_at: None,
                coupon: CouponTerms { discount: 1000, currency: "KRW".into(), valid_days: 7 },
                pow_bits: o.pow_bits.map_or(0, u64::from),
            })
            .expect("plain data serialises");
            let url = format!("{base}/api/admin/campaigns");
            match client.post(&url, admin, Some(&body)).await {
                Ok((201, _)) => id,
                Ok((status, body)) => {
                    return Err(RehearseError::Refused {
                        what: "creating the campaign",
                        status,
                        body: body.to_string(),
                    });
                }
                Err(source) => return Err(RehearseError::Api { what: "creating the campaign", source }),
            }
        }
        (None, None) => return Err(RehearseError::Usage("give --campaign ID, or --stock S with --admin-token-file F")),
    };
    let url = format!("{base}/api/campaigns/{id}");
    let v: wire::Campaign = match client.get(&url, None).await {
        Ok((200, v)) => serde_json::from_value(v.clone()).map_err(|_| RehearseError::Refused {
            what: "reading the campaign",
            status: 200,
            body: v.to_string(),
        })?,
        Ok((status, body)) => {
            return Err(RehearseError::Refused { what: "reading the campaign", status, body: body.to_string() });
        }
        Err(source) => return Err(RehearseError::Api { what: "reading the campaign", source }),
    };
    // Count down on the server's clock, not this machine's.
    let until = Duration::try_from(v.opens_at - v.server_time).unwrap_or_default();
    Ok(Campaign { id, total: u64::from(v.total), opens: Instant::now() + until })
}

/// Resident set size of a process, from /proc.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat: the load tool's own
/// share of its core is how a run tells "the server is slow" from "this tool cannot send faster".
fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux on every architecture this runs on.
    Some(ticks / 100.0)
}

/// The machine's CPU time so far, from /proc/stat's `cpu` line: (stolen by the hypervisor, all),
/// in ticks. On a shared VM the host takes whole slices of a core now and then, and a latency
/// tail may be that rather than this server: each run says how much was taken.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    Some((*f.get(7)?, f.iter().take(8).sum()))
}

/// Steal over consecutive samples of `cpu_ticks`: over the whole run and in its worst second.
fn steal_of(samples: &[(u64, u64)]) -> Option<report::Steal> {
    let pct = |a: &(u64, u64), b: &(u64, u64)| {
        let all = b.1.saturating_sub(a.1);
        (all > 0).then(|| b.0.saturating_sub(a.0) as f64 / all as f64 * 100.0)
    };
    let run_pct = pct(samples.first()?, samples.last()?)?;
    let worst_second_pct = samples.windows(2).filter_map(|w| pct(&w[0], &w[1])).fold(0.0, f64::max);
    Some(report::Steal { run_pct, worst_second_pct })
}

/// What the once-a-second sampler saw while the scenario ran.
#[derive(Default)]
struct Samples {
    rss_mb: Vec<f64>,
    cpu: Vec<(u64, u64)>,
}

impl Samples {
    fn take(&mut self, server_pid: Option<u32>) {
        if let Some(mb) = server_pid.and_then(rss_mb) {
            self.rss_mb.push(mb);
        }
        if let Some(t) = cpu_ticks() {
            self.cpu.push(t);
        }
    }
}

/// The pid listening on `port` on this machine, via /proc/net/tcp{,6} and /proc/*/fd.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).ok()?.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inodes.push(format!("socket:[{}]", f.get(9)?));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

fn progress(o: &Options, label: &str, total: u64, done: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let bar = if o.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}")
            .expect("valid template"),
    );
    bar.set_message(label.to_owned());
    tokio::spawn(async move {
        loop {
            let d = done.load(Ordering::Relaxed);
            bar.set_position(d.min(total));
            if d >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
    })
}

/// GET /healthz over the scenario's connections, paced by `pace`: the cheapest answer this
/// server gives, as a ceiling (closed loop) or as a latency at a given load (open loop).
async fn healthz(o: &Options, target: &Target, label: &str, requests: u64, secs: f64, pace: Pace) -> RunResult {
    let path = target.path("/healthz");
    let plan = Plan {
        target: target.clone(),
        connections: o.connections,
        max_requests: requests,
        max_duration: Duration::from_secs_f64(secs),
        pace,
        request: Box::new(move |_| Req {
            method: Method::GET,
            path: path.clone(),
            auth: None,
            ticket: None,
            user: None,
        }),
        guard: None,
    };
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(o, label, requests, done.clone());
    let r = load::run(plan, Instant::now() + Duration::from_millis(50), done.clone()).await;
    done.store(u64::MAX, Ordering::Relaxed);
    let _ = bar.await;
    r
}

/// Closed-loop GET /healthz with the scenario's connections: what this server can do at all.
async fn ceiling(o: &Options, target: &Target, requests: u64) -> f64 {
    let r = healthz(o, target, "ceiling", requests, 60.0, Pace::Closed).await;
    r.requests as f64 / r.elapsed.as_secs_f64()
}

/// Open-loop GET /healthz at `rate` for `secs`: the cheapest answer's latency at that load.
async fn healthz_open(o: &Options, target: &Target, rate: f64, secs: f64) -> hdrhistogram::Histogram<u64> {
    let pace = Pace::Open(Schedule::constant(rate));
    healthz(o, target, "healthz open loop", (rate * secs) as u64, secs, pace).await.latency
}

/// How late each tick of a `tick`-periodic timer first due at `due` ran, when the runtime got to
/// it at `now`: every tick that fell due meanwhile counts, each with its own lateness, so one
/// stall of 500 ms is fifty late ticks (10-500 ms), not one. Counted once, a stall was one
/// sample in thousands: at 41,011/s with 4,096 connections this tool stalled 13 times for
/// 100-700 ms in 27 s while its lateness p99 read 6.7 ms, and the overload run's p99 was the
/// stalls'.
fn lateness_of_ticks(due: Instant, tick: Duration, now: Instant) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(due), move |d| Some(*d + tick))
        .take_while(move |d| *d <= now)
        .map(move |d| now.saturating_duration_since(d).as_micros().max(1) as u64)
}

/// Overload: seconds at --calm-rate before the burst (the first is warm-up) and after it (the
/// first two are the recovery allowed).
const CALM_BEFORE_S: usize = 3;
const CALM_AFTER_S: usize = 4;

impl Phases {
    /// The p99 of each phase of an overload run, by intended send time (100 ms buckets), and of
    /// the shed answers (429, 503) over the whole run.
    fn of(r: &RunResult, burst_s: usize) -> Self {
        let per_s = (Duration::from_secs(1).as_nanos() / load::BUCKET.as_nanos()) as usize;
        let p99 = |from_s: usize, to_s: usize| {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("valid bounds");
            for b in r.buckets.iter().take(to_s * per_s).skip(from_s * per_s) {
                h.add(b).expect("same bounds");
            }
            (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
        };
        let burst_end = CALM_BEFORE_S + burst_s;
        let mut shed = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).expect("valid bounds");
        for (k, h) in &r.by_outcome {
            if k.starts_with("429 ") || k.starts_with("503 ") {
                shed.add(h).expect("same bounds");
            }
        }
        Self {
            normal_p99_ms: p99(1, CALM_BEFORE_S),
            burst_p99_ms: p99(CALM_BEFORE_S, burst_end),
            recovered_p99_ms: p99(burst_end + 2, burst_end + CALM_AFTER_S),
            shed: shed.len(),
            shed_p99_ms: (!shed.is_empty()).then(|| shed.value_at_quantile(0.99) as f64 / 1000.0),
        }
    }
}

/// Runs one rehearsal end to end and returns its report (violations included; the caller decides the exit code).
pub async fn rehearse(o: Options) -> Result<Report, RehearseError> {
    let setup = prepare(&o).await?;
    let (plan, planned) = plan(&o, &setup).await?;
    let monitors = Monitors::start(&o, &setup);
    let fired = fire(&o, &setup, plan, planned, monitors).await?;
    let (violations, facts) = check_invariants(&o, &setup, &fired).await;
    let report = report_of(&o, &setup, &fired, violations, facts);
    write_reports(&o, &report, &fired.result)?;
    Ok(report)
}

/// What every stage needs: where the server is, who the users are, the campaign.
struct Setup {
    target: Target,
    base: String,
    client: Client,
    admin: Option<String>,
    user_ids: Vec<String>,
    auth: Arc<Vec<HeaderValue>>,
    campaign: Campaign,
    server_pid: Option<u32>,
    users: u64,
    repeat: u64,
}

/// Stage 1: the target, the users' tokens and the campaign (created if asked).
async fn prepare(o: &Options) -> Result<Setup, RehearseError> {
    let tls = net::client_config(o.ca_cert.as_deref())?;
    let target = Target::parse(&o.url, o.allow_remote, &tls)?;
    let (addr, base) = (target.addr, target.base.clone());
    let client = Client::with_tls(&tls);
    let admin = o.admin_token_file.as_ref().map(read).transpose()?;
    let (user_ids, auth) = user_auth(o)?;
    let campaign = campaign(o, &client, &base, admin.as_deref()).await?;
    let server_pid =
        o.server_pid.or_else(|| if addr.ip().is_loopback() { pid_listening_on(addr.port()) } else { None });
    Ok(Setup {
        target,
        base,
        client,
        admin,
        user_ids,
        auth: Arc::new(auth),
        campaign,
        server_pid,
        users: u64::from(o.users),
        repeat: u64::from(o.repeat.max(1)),
    })
}

/// How the scenario was planned: its bounds and the figures measured to plan it.
struct Planned {
    max_requests: u64,
    max_duration: f64,
    run_for: f64,
    ceiling_requests: u64,
    ceiling_before: Option<f64>,
    schedule: Option<Schedule>,
    offered_rps: Option<f64>,
    solved: Option<tickets::Solved>,
}

/// Stage 2: the ceiling before (when asked), the pace, the tickets (solved at T0), the requests.
async fn plan(o: &Options, s: &Setup) -> Result<(Plan, Planned), RehearseError> {
    let (users, repeat) = (s.users, s.repeat);
    let max_duration = o.duration.unwrap_or(match o.scenario {
        Scenario::Spike => 120.0,
        Scenario::Ramp => 20.0,
        Scenario::Stress | Scenario::Overload => 10.0,
        Scenario::Soak => 600.0,
    });
    let ceiling_requests = o.ceiling_requests.unwrap_or(match o.scenario {
        Scenario::Spike => (users * repeat).min(o.max_requests),
        _ => 200_000,
    });
    // Before the plan: stress defaults to a multiple of this ceiling.
    let ceiling_before = if o.ceiling { Some(ceiling(o, &s.target, ceiling_requests).await) } else { None };
    let rate = o.rate.or(o.rate_of_ceiling.zip(ceiling_before).map(|(k, c)| k * c));

    let (pace, max_requests) = match o.scenario {
        Scenario::Spike => (rate.map_or(Pace::Closed, |r| Pace::Open(Schedule::constant(r))), users * repeat),
        Scenario::Ramp => {
            let mut rates = vec![o.rate.unwrap_or(2000.0)];
            while (rates.len() as f64) < max_duration {
                rates.push(rates.last().expect("non-empty") * 1.25);
            }
            let total: f64 = rates.iter().sum();
            (Pace::Open(Schedule::steps(&rates, Duration::from_secs(1))), total as u64)
        }
        Scenario::Overload => {
            let Some(burst) = rate else {
                return Err(RehearseError::Usage("overload needs --rate or --rate-of-ceiling"));
            };
            let mut rates = vec![o.calm_rate; CALM_BEFORE_S];
            rates.extend(std::iter::repeat_n(burst, max_duration.ceil() as usize));
            rates.extend(std::iter::repeat_n(o.calm_rate, CALM_AFTER_S));
            let total: f64 = rates.iter().sum();
            (Pace::Open(Schedule::steps(&rates, Duration::from_secs(1))), total as u64)
        }
        Scenario::Stress | Scenario::Soak => {
            let rate = match (rate, o.scenario, ceiling_before) {
                (Some(r), _, _) => r,
                (None, Scenario::Stress, Some(c)) => 3.0 * c,
                (None, Scenario::Stress, None) => return Err(RehearseError::Usage("stress needs --rate or --ceiling")),
                (None, _, _) => 20_000.0,
            };
            (Pace::Open(Schedule::constant(rate)), (rate * max_duration) as u64)
        }
    };
    let max_requests = max_requests.min(o.max_requests);

    // Tickets can only be solved once the nonce is out, at T0: every user solves theirs then,
    // in parallel on their own devices; here, on this machine's cores, and the load starts after.
    let c = &s.campaign;
    let solved = if o.pow || o.pow_bits.is_some_and(|b| b > 0) {
        tokio::time::sleep_until(c.opens).await;
        let view = format!("{}/api/campaigns/{}", s.base, c.id);
        let (bits, nonce) = tickets::revealed(&s.client, &view, Duration::from_secs(10)).await?;
        let (id, users) = (c.id.clone(), s.user_ids.clone());
        let solved = tokio::task::spawn_blocking(move || tickets::solve_all(&id, &users, bits, nonce))
            .await
            .expect("the solver does not panic");
        Some(solved)
    } else {
        None
    };
    let ticket_headers = Arc::new(solved.as_ref().map(|s| s.headers.clone()));

    let schedule = match &pace {
        Pace::Open(s) => Some(s.clone()),
        Pace::Closed => None,
    };

    // A random user order; each user's clicks back to back (duplicate bursts).
    let mut order: Vec<u32> = (0..o.users).collect();
    order.shuffle(&mut rand::rng());
    let order = Arc::new(order);
    let claim_path = s.target.path(&format!("/api/campaigns/{}/claims", c.id));
    let request = {
        let (auth, order, tickets) = (s.auth.clone(), order.clone(), ticket_headers.clone());
        move |i: u64| {
            let user = order[((i / repeat) % users) as usize];
            Req {
                method: Method::POST,
                path: claim_path.clone(),
                auth: Some(auth[user as usize].clone()),
                ticket: tickets.as_ref().as_ref().map(|t| t[user as usize].clone()),
                user: Some(user),
            }
        }
    };
    let guard = match (&schedule, o.scenario) {
        (Some(s), Scenario::Ramp) => {
            Some(load::StepGuard::new(s.rates().len(), Duration::from_secs_f64(o.p99_bound_ms / 1000.0)))
        }
        _ => None,
    };
    let offered_rps = match (&schedule, o.scenario) {
        (Some(s), Scenario::Overload) => s.rates().iter().copied().reduce(f64::max),
        (Some(s), _) => s.rates().first().copied(),
        (None, _) => None,
    };
    let run_for = match o.scenario {
        Scenario::Overload => max_duration.ceil() + (CALM_BEFORE_S + CALM_AFTER_S) as f64,
        _ => max_duration,
    };
    let plan = Plan {
        target: s.target.clone(),
        connections: o.connections,
        max_requests,
        max_duration: Duration::from_secs_f64(run_for),
        pace,
        request: Box::new(request),
        guard,
    };
    Ok((
        plan,
        Planned {
            max_requests,
            max_duration,
            run_for,
            ceiling_requests,
            ceiling_before,
            schedule,
            offered_rps,
            solved,
        },
    ))
}

/// Stage 3: what watches the run besides the load itself.
struct Monitors {
    /// Once a second: the server's RSS (when its pid is known) and the machine's CPU ticks, for
    /// the time the hypervisor stole.
    samples: Arc<std::sync::Mutex<Samples>>,
    sampler: tokio::task::JoinHandle<()>,
    /// How late this tool's own runtime runs a timer due every 10 ms: with every connection
    /// busy, answers wait for this tool to read them too, and that wait is in its figures.
    lateness: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    lateness_ticker: tokio::task::JoinHandle<()>,
    /// The connection attack, started now so it has taken hold by the time the scenario starts.
    opened: Arc<attack::Opened>,
    squatters: Option<tokio::task::JoinHandle<()>>,
}

/// What the monitors saw, once stopped.
struct Monitored {
    rss: Vec<f64>,
    steal: Option<report::Steal>,
    tool_lateness_ms: Latency,
    longest_held_ms: u64,
    opened: Arc<attack::Opened>,
}

impl Monitors {
    fn start(o: &Options, s: &Setup) -> Self {
        let samples = Arc::new(std::sync::Mutex::new(Samples::default()));
        let sampler = {
            let (samples, server_pid) = (samples.clone(), s.server_pid);
            tokio::spawn(async move {
                loop {
                    samples.lock().expect("sample lock").take(server_pid);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let lateness = Arc::new(std::sync::Mutex::new(load::coarse()));
        let lateness_ticker = {
            let h = lateness.clone();
            tokio::spawn(async move {
                let tick = Duration::from_millis(10);
                let mut due = Instant::now() + tick;
                loop {
                    tokio::time::sleep_until(due).await;
                    let now = Instant::now();
                    let mut h = h.lock().expect("lateness lock");
                    for late in lateness_of_ticks(due, tick, now) {
                        h.saturating_record(late);
                    }
                    drop(h);
                    due = now + tick;
                }
            })
        };
        let opened = Arc::new(attack::Opened::new(o.hold_idle + o.hold_slow));
        let squatters = (o.hold_idle + o.hold_slow > 0)
            .then(|| tokio::spawn(attack::hold(s.target.addr, o.hold_idle, o.hold_slow, opened.clone())));
        Self { samples, sampler, lateness, lateness_ticker, opened, squatters }
    }

    async fn stop(self) -> Monitored {
        self.sampler.abort();
        self.lateness_ticker.abort();
        let tool_lateness_ms = Latency::of(&self.lateness.lock().expect("lateness lock"));
        let (rss, steal) = {
            let mut s = self.samples.lock().expect("sample lock");
            s.take(None);
            (std::mem::take(&mut s.rss_mb), steal_of(&s.cpu))
        };
        // Read when the squatters stop: a connection still open then is aged to this moment.
        let longest_held_ms = self.opened.longest_open_ms();
        if let Some(s) = self.squatters {
            s.abort();
            let _ = s.await;
        }
        Monitored { rss, steal, tool_lateness_ms, longest_held_ms, opened: self.opened }
    }
}

/// What the run measured.
struct Fired {
    planned: Planned,
    result: RunResult,
    tool_cpu_cores: Option<f64>,
    server_rss_mb: Option<f64>,
    monitored: Monitored,
    server_outcomes: Option<BTreeMap<String, u64>>,
    healthz_open: Option<hdrhistogram::Histogram<u64>>,
    phases: Option<Phases>,
    ceiling_after: Option<f64>,
}

/// Stage 4: the scenario itself, then what is measured right after it (the server's own counts,
/// `/healthz` at the same load, the ceiling after).
async fn fire(
    o: &Options,
    s: &Setup,
    plan: Plan,
    planned: Planned,
    monitors: Monitors,
) -> Result<Fired, RehearseError> {
    let scraped_before = match (o.scrape_metrics, s.admin.as_deref()) {
        (true, Some(token)) => Some(scrape(&s.client, &s.base, token).await?),
        _ => None,
    };
    let lead = Duration::from_millis(if monitors.squatters.is_some() { 2000 } else { 100 });
    let start = s.campaign.opens.max(Instant::now() + lead);
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(o, &format!("{:?}", o.scenario).to_lowercase(), planned.max_requests, done.clone());
    let cpu_before = own_cpu_secs();
    let result = load::run(plan, start, done.clone()).await;
    // Over the run from the moment it was due to start (the wait before T0 is idle).
    let fired_for = start.elapsed().as_secs_f64();
    let tool_cpu_cores = match (cpu_before, own_cpu_secs()) {
        (Some(a), Some(b)) if fired_for > 0.0 => Some((b - a) / fired_for),
        _ => None,
    };
    done.store(u64::MAX, Ordering::Relaxed);
    let _ = bar.await;
    let server_rss_mb = s.server_pid.and_then(rss_mb);
    let monitored = monitors.stop().await;

    let server_outcomes = match (scraped_before, s.admin.as_deref()) {
        (Some(before), Some(token)) => {
            let after = scrape(&s.client, &s.base, token).await?;
            Some(
                after
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0)))
                    .filter(|(_, v)| *v > 0)
                    .collect(),
            )
        }
        _ => None,
    };

    // The cheapest answer at the same offered load (overload: the burst's, for the burst's
    // length), on the same connections, right after.
    let healthz_open = match (o.healthz_open, planned.offered_rps) {
        (true, Some(r)) => {
            let secs = if o.scenario == Scenario::Overload { planned.max_duration.ceil() } else { planned.run_for };
            Some(healthz_open(o, &s.target, r, secs).await)
        }
        _ => None,
    };
    let phases = (o.scenario == Scenario::Overload).then(|| Phases::of(&result, planned.max_duration.ceil() as usize));
    let ceiling_after = if o.ceiling { Some(ceiling(o, &s.target, planned.ceiling_requests).await) } else { None };
    Ok(Fired {
        planned,
        result,
        tool_cpu_cores,
        server_rss_mb,
        monitored,
        server_outcomes,
        healthz_open,
        phases,
        ceiling_after,
    })
}

/// Stage 5: the issuance invariants, checked against the server and the answers seen.
async fn check_invariants(o: &Options, s: &Setup, f: &Fired) -> (Vec<String>, check::Facts) {
    let users_clicked = match o.scenario {
        // Shed users (429, 503) were told to come back and did not: the stock owed is what the
        // users answered with a coupon hold, each of which must be stored.
        Scenario::Overload => {
            f.result.claims.iter().map(|c| c.user).collect::<std::collections::HashSet<_>>().len() as u64
        }
        _ => users_that_clicked(&f.result, s.users, s.repeat),
    };
    let (mut violations, facts) = check::check(check::CheckInput {
        client: &s.client,
        base: &s.base,
        campaign: &s.campaign.id,
        total: s.campaign.total,
        claims: &f.result.claims,
        users_answered: users_clicked,
        auth: &s.auth,
        admin_token: s.admin.as_deref(),
        drain_timeout: Duration::from_secs_f64(o.drain_timeout),
    })
    .await;
    if let Some(server) = &f.server_outcomes {
        violations.extend(report::disagreements(&f.result.outcomes, server));
    }
    (violations, facts)
}

/// Stage 6: the report.
fn report_of(o: &Options, s: &Setup, f: &Fired, violations: Vec<String>, facts: check::Facts) -> Report {
    let (result, planned, monitored) = (&f.result, &f.planned, &f.monitored);
    let ceiling_rps = match (planned.ceiling_before, f.ceiling_after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        _ => None,
    };
    let secs = result.elapsed.as_secs_f64().max(1e-9);
    let rps = result.requests as f64 / secs;
    let (p99_first, p99_last) = drift(result);
    let rss = &monitored.rss;
    Report {
        scenario: format!("{:?}", o.scenario).to_lowercase(),
        requests: result.requests,
        duration_s: secs,
        rps,
        latency_ms: Latency::of(&result.latency),
        outcomes: result.outcomes.clone(),
        outcome_latency_ms: result.by_outcome.iter().map(|(k, h)| (k.clone(), Latency::of(h))).collect(),
        violations,
        ceiling_rps,
        ratio_to_ceiling: ceiling_rps.map(|c| rps / c),
        server_rss_mb: f.server_rss_mb,
        campaign: s.campaign.id.clone(),
        stock: s.campaign.total,
        users: s.users,
        repeat: s.repeat as u32,
        connections: o.connections,
        issued: facts.issued,
        issued_per_s: facts.issued_answers as f64 / secs,
        ceiling_before_rps: planned.ceiling_before,
        ceiling_after_rps: f.ceiling_after,
        knee_rps: planned
            .schedule
            .as_ref()
            .filter(|_| o.scenario == Scenario::Ramp)
            .map(|sch| knee(result, sch, o.p99_bound_ms)),
        server_rss_start_mb: rss.first().copied(),
        // Growth over the steady state: from 10% into the run (buffers, pools and the winners
        // map have warmed up by then) to the end.
        rss_growth_pct: match (rss.get(rss.len() / 10), rss.last()) {
            (Some(a), Some(b)) if rss.len() > 1 => Some((b - a) / a * 100.0),
            _ => None,
        },
        server_rss_steady_mb: rss.get(rss.len() / 10).copied(),
        p99_first_ms: p99_first,
        p99_last_ms: p99_last,
        p99_drift: p99_first.zip(p99_last).map(|(a, b)| b / a),
        ledger_written: facts.ledger_written,
        ledger_drain_s: facts.ledger_drain_s,
        server_outcomes: f.server_outcomes.clone(),
        offered_rps: planned.offered_rps,
        tool_cpu_cores: f.tool_cpu_cores,
        tool_lateness_ms: monitored.tool_lateness_ms.clone(),
        steal: monitored.steal,
        send_lag_ms: result.send_lag.as_ref().map(Latency::of),
        planned_requests: planned.max_requests,
        healthz_open_ms: f.healthz_open.as_ref().map(Latency::of),
        phases: f.phases.clone(),
        missing_retry_after: result.missing_retry_after,
        held_connections: (o.hold_idle + o.hold_slow > 0).then(|| report::Held {
            idle: o.hold_idle,
            slow: o.hold_slow,
            idle_opened: monitored.opened.idle.load(Ordering::Relaxed),
            slow_opened: monitored.opened.slow.load(Ordering::Relaxed),
            longest_open_ms: monitored.longest_held_ms,
        }),
        tickets: planned.solved.as_ref().map(|t| report::TicketCost {
            bits: t.bits,
            per_ticket_ms: Latency::of(&t.per_ticket),
            mean_ms: t.per_ticket.mean() / 1000.0,
            all_users_s: t.wall.as_secs_f64(),
            threads: t.threads,
        }),
    }
}

/// Stage 7: the JSON report and the per-100 ms chart, where asked.
fn write_reports(o: &Options, report: &Report, result: &RunResult) -> Result<(), RehearseError> {
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(report).expect("report serialises");
        write_creating_dirs(path, text.as_bytes())?;
    }
    let svg_path = o.svg.clone().or_else(|| o.json.as_ref().map(|p| p.with_extension("svg")));
    if let Some(path) = svg_path {
        let title = format!(
            "{} — {} req, {:.0} req/s, p99 {:.2} ms",
            report.scenario, report.requests, report.rps, report.latency_ms.p99
        );
        write_creating_dirs(&path, report::svg(&title, &result.buckets).as_bytes())?;
    }
    Ok(())
}

/// The server's claim counts by outcome (`firstcome_claims_total`), read from `/metrics`.
async fn scrape(client: &Client, base: &str, admin: &str) -> Result<BTreeMap<String, u64>, RehearseError> {
    let url = format!("{base}/metrics");
    let (status, text) = client
        .get_text(&url, Some(admin))
        .await
        .map_err(|source| RehearseError::Api { what: "GET /metrics", source })?;
    if status != 200 {
        return Err(RehearseError::Refused { what: "GET /metrics", status, body: text.chars().take(300).collect() });
    }
    let scraped = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| RehearseError::Refused { what: "reading GET /metrics", status, body: e.to_string() })?;
    Ok(scraped
        .samples
        .into_iter()
        .filter(|s| s.metric == firstcome_api::metric_names::CLAIMS)
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n) => {
                Some((s.labels.get("outcome")?.to_owned(), n as u64))
            }
            _ => None,
        })
        .collect())
}

pub(crate) fn write_creating_dirs(path: &std::path::Path, contents: &[u8]) -> Result<(), RehearseError> {
    let fail = |source| RehearseError::File { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, contents).map_err(fail)
}

/// Distinct users who clicked. Request indices are handed out in order and request i is a
/// click of user (i / repeat) % users, so the requests sent cover ceil(sent / repeat) users.
fn users_that_clicked(r: &RunResult, users: u64, repeat: u64) -> u64 {
    r.requests.div_ceil(repeat).min(users)
}

/// p99 of the first and last tenth of the run (by 100 ms buckets), for drift.
fn drift(r: &RunResult) -> (Option<f64>, Option<f64>) {
    let n = r.buckets.len();
    if n < 20 {
        return (None, None);
    }
    let tenth = n / 10;
    let merged = |bs: &[hdrhistogram::Histogram<u64>]| {
        let mut h = bs[0].clone();
        for b in &bs[1..] {
            h.add(b).expect("same bounds");
        }
        h.value_at_quantile(0.99) as f64 / 1000.0
    };
    (Some(merged(&r.buckets[..tenth])), Some(merged(&r.buckets[n - tenth..])))
}

/// The highest ramp step whose p99 stayed within the bound and whose errors stayed under 1%.
fn knee(r: &RunResult, s: &Schedule, p99_bound_ms: f64) -> f64 {
    let rates = s.rates();
    let mut knee = 0.0;
    for (i, (h, errors)) in r.steps.iter().enumerate() {
        let ok = !h.is_empty()
            && h.value_at_quantile(0.99) as f64 / 1000.0 <= p99_bound_ms
            && (*errors as f64) < 0.01 * h.len() as f64;
        if !ok {
            break;
        }
        knee = rates.get(i).copied().unwrap_or(knee);
    }
    knee
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_of_the_runtime_counts_every_tick_it_swallowed() {
        let due = Instant::now();
        let tick = Duration::from_millis(10);
        let on_time: Vec<u64> = lateness_of_ticks(due, tick, due + Duration::from_micros(300)).collect();
        assert_eq!(on_time, [300]);
        let stalled: Vec<u64> = lateness_of_ticks(due, tick, due + Duration::from_millis(500)).collect();
        assert_eq!(stalled.len(), 51, "due at 0, 10, ..., 500 ms");
        assert_eq!((stalled[0], stalled[50]), (500_000, 1), "the first 500 ms late, the last just due");
        assert_eq!(lateness_of_ticks(due, tick, due - Duration::from_micros(1)).count(), 0, "woken early: none due");
    }

    #[test]
    fn steal_is_the_hypervisors_share_of_the_machine_over_the_run_and_its_worst_second() {
        // (steal, all) ticks: a quiet second, then one with 30 of 100 ticks taken.
        let samples = [(5, 1_000), (5, 1_100), (35, 1_200)];
        let s = steal_of(&samples).unwrap();
        assert!((s.run_pct - 15.0).abs() < 1e-9, "{}", s.run_pct);
        assert!((s.worst_second_pct - 30.0).abs() < 1e-9, "{}", s.worst_second_pct);
        assert!(steal_of(&samples[..1]).is_none(), "one sample spans no time");
        assert!(cpu_ticks().is_some_and(|(steal, all)| steal <= all && all > 0), "this machine's /proc/stat");
    }
}
