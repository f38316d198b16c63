//! What a rehearsal prints and records: the summary table, the JSON report and an SVG chart of
//! throughput and p99 per 100 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::BUCKET;

/// This tool's outcomes (`"409 sold_out"`) by the server's outcome label (`sold_out`); answers
/// that never came (`timeout`, connection errors) have no server-side count and are left out.
pub fn by_code(outcomes: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, n) in outcomes {
        if let Some((status, code)) = k.split_once(' ')
            && status.parse::<u16>().is_ok()
        {
            *out.entry(code.to_owned()).or_default() += n;
        }
    }
    out
}

/// Where the server's count of claims by outcome differs from this tool's, one line each.
pub fn disagreements(mine: &BTreeMap<String, u64>, server: &BTreeMap<String, u64>) -> Vec<String> {
    let mine = by_code(mine);
    let codes: std::collections::BTreeSet<&String> = server.keys().chain(mine.keys()).collect();
    codes
        .into_iter()
        .filter_map(|code| {
            let (s, m) = (server.get(code).copied().unwrap_or(0), mine.get(code).copied().unwrap_or(0));
            (s != m).then(|| format!("the server counted {s} {code} claims, this tool {m}"))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), p999: ms(0.999), max: h.max() as f64 / 1000.0 }
    }
}

/// The JSON report (`--json FILE`); field names are part of the tool's interface.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub latency_ms: Latency,
    pub outcomes: BTreeMap<String, u64>,
    /// p50/p99/max (ms) per outcome.
    pub outcome_latency_ms: BTreeMap<String, Latency>,
    pub violations: Vec<String>,
    pub ceiling_rps: Option<f64>,
    pub ratio_to_ceiling: Option<f64>,
    pub server_rss_mb: Option<f64>,
    // Beyond the required fields: what the run was and what it found.
    pub campaign: String,
    pub stock: u64,
    pub users: u64,
    pub repeat: u32,
    pub connections: usize,
    pub issued: u64,
    pub issued_per_s: f64,
    pub ceiling_before_rps: Option<f64>,
    pub ceiling_after_rps: Option<f64>,
    pub knee_rps: Option<f64>,
    pub server_rss_start_mb: Option<f64>,
    /// RSS 10% into the run, where steady-state growth is measured from.
    pub server_rss_steady_mb: Option<f64>,
    /// RSS growth from 10% into the run to its end.
    pub rss_growth_pct: Option<f64>,
    pub p99_first_ms: Option<f64>,
    pub p99_last_ms: Option<f64>,
    pub p99_drift: Option<f64>,
    pub ledger_written: Option<u64>,
    pub ledger_drain_s: Option<f64>,
    /// With --pow: what solving the claim tickets cost on this machine.
    pub tickets: Option<TicketCost>,
    /// With --scrape-metrics: the server's own count of the claims it answered during the
    /// scenario, by outcome (`firstcome_claims_total`).
    pub server_outcomes: Option<BTreeMap<String, u64>>,
    /// With --hold-idle / --hold-slow: the connection attack run beside the scenario.
    pub held_connections: Option<Held>,
    /// Open loop: the rate offered (overload: the burst's).
    pub offered_rps: Option<f64>,
    /// Cores this tool kept busy while firing (its CPU seconds over the run's wall time): near 1
    /// when pinned to one core means the tool, not the server, set the pace.
    pub tool_cpu_cores: Option<f64>,
    /// How late this tool's runtime ran a timer due every 10 ms while firing: a tail here is
    /// this tool's own backlog (answers it had not read yet), inside every latency figure.
    pub tool_lateness_ms: Latency,
    /// The machine's CPU time the hypervisor took while firing (both cores, from /proc/stat).
    pub steal: Option<Steal>,
    /// Open loop: how late requests left this tool for want of a free connection (its timer's
    /// 1 ms granularity included). A tail here is the tool's own queue inside the latency.
    pub send_lag_ms: Option<Latency>,
    /// What the plan would send (open loop: its schedule within --duration), beside `requests`.
    pub planned_requests: u64,
    /// `--healthz-open`: GET /healthz at the same offered rate, right after the scenario.
    pub healthz_open_ms: Option<Latency>,
    /// Overload: the p99 of each phase.
    pub phases: Option<Phases>,
    /// 429 and 503 answers that carried no `Retry-After`.
    pub missing_retry_after: u64,
}

/// CPU time stolen by the hypervisor, as a share of all the machine's CPU time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Steal {
    pub run_pct: f64,
    pub worst_second_pct: f64,
}

/// An overload run's phases, each p99 from the intended send time.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// Calm, before the burst (its first second, the warm-up, left out).
    pub normal_p99_ms: Option<f64>,
    pub burst_p99_ms: Option<f64>,
    /// Calm again, from 2 s after the burst to the end.
    pub recovered_p99_ms: Option<f64>,
    /// Answers shed (429, 503) over the run, and their p99: shed at once, or after a wait?
    pub shed: u64,
    pub shed_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub idle: usize,
    pub slow: usize,
    /// Connections opened in all (the server closing them makes these grow past the counts held).
    pub idle_opened: u64,
    pub slow_opened: u64,
    /// The longest any of them stayed open (closed by the server, or still open at the end).
    pub longest_open_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketCost {
    pub bits: u8,
    /// One ticket on one thread.
    pub per_ticket_ms: Latency,
    pub mean_ms: f64,
    /// Every user's ticket, on `threads` threads.
    pub all_users_s: f64,
    pub threads: usize,
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(
            t,
            "scenario      {} on campaign {} (stock {}, {} users x{}, {} connections)",
            self.scenario, self.campaign, self.stock, self.users, self.repeat, self.connections
        );
        let _ = writeln!(t, "requests      {} in {:.2} s = {:.0} req/s", self.requests, self.duration_s, self.rps);
        if let (Some(r), Some(cores)) = (self.offered_rps, self.tool_cpu_cores) {
            let _ = writeln!(
                t,
                "offered       {r:.0} req/s planned, {} of {} sent; this tool used {cores:.2} cores",
                self.requests, self.planned_requests
            );
        }
        let g = &self.tool_lateness_ms;
        let _ = writeln!(
            t,
            "tool late ms  p50 {:.3}  p99 {:.3}  max {:.3} (this tool's runtime, a 10 ms timer)",
            g.p50, g.p99, g.max
        );
        if let Some(s) = self.steal {
            let _ = writeln!(
                t,
                "steal         {:.1} % of the machine's CPU taken by the hypervisor while firing (worst second {:.1} %)",
                s.run_pct, s.worst_second_pct
            );
        }
        let _ = writeln!(
            t,
            "latency ms    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(g) = &self.send_lag_ms {
            let _ = writeln!(
                t,
                "sent late ms  p50 {:.3}  p99 {:.3}  max {:.3} after the intended time (no connection free)",
                g.p50, g.p99, g.max
            );
        }
        if let Some(k) = &self.tickets {
            let _ = writeln!(
                t,
                "tickets       {} bits: per ticket mean {:.2}  p50 {:.2}  p99 {:.2}  max {:.2} ms; all {} users in {:.2} s on {} threads",
                k.bits,
                k.mean_ms,
                k.per_ticket_ms.p50,
                k.per_ticket_ms.p99,
                k.per_ticket_ms.max,
                self.users,
                k.all_users_s,
                k.threads
            );
        }
        if let Some(h) = &self.held_connections {
            let _ = writeln!(
                t,
                "held          {} idle and {} slow-header connections throughout ({} and {} opened: the server closed the rest; longest open {:.1} s)",
                h.idle,
                h.slow,
                h.idle_opened,
                h.slow_opened,
                h.longest_open_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(t, "issued        {} ({:.0}/s)", self.issued, self.issued_per_s);
        for (k, v) in &self.outcomes {
            match self.outcome_latency_ms.get(k) {
                Some(l) => {
                    let _ = writeln!(t, "  {k:<24} {v:>9}   p50 {:.3}  p99 {:.3}  max {:.3} ms", l.p50, l.p99, l.max);
                }
                None => {
                    let _ = writeln!(t, "  {k:<24} {v:>9}");
                }
            }
        }
        if let Some(server) = &self.server_outcomes {
            let mine = by_code(&self.outcomes);
            let _ = writeln!(t, "server saw    (its /metrics, claims by outcome; this tool's count beside it)");
            let codes: std::collections::BTreeSet<&String> = server.keys().chain(mine.keys()).collect();
            for code in codes {
                let (s, m) = (server.get(code).copied().unwrap_or(0), mine.get(code).copied().unwrap_or(0));
                let _ = writeln!(t, "  {code:<24} {s:>9}   here {m:>9}{}", if s == m { "" } else { "   DIFFERENT" });
            }
        }
        if let (Some(c), Some(r)) = (self.ceiling_rps, self.ratio_to_ceiling) {
            let _ = writeln!(
                t,
                "ceiling       {c:.0} req/s on /healthz (before {:.0}, after {:.0}); ratio {r:.3}",
                self.ceiling_before_rps.unwrap_or(0.0),
                self.ceiling_after_rps.unwrap_or(0.0)
            );
        }
        if let (Some(r), Some(h)) = (self.offered_rps, &self.healthz_open_ms) {
            let _ = writeln!(
                t,
                "healthz open  at {r:.0} req/s: p50 {:.3}  p99 {:.3} ms (claims p99 {:.3}: x{:.2})",
                h.p50,
                h.p99,
                self.latency_ms.p99,
                self.latency_ms.p99 / h.p99
            );
        }
        if let Some(p) = &self.phases {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            let _ = writeln!(
                t,
                "phases        p99 ms: normal {}  burst at {:.0}/s {}  2 s after {}; shed {} (p99 {} ms), without Retry-After {}",
                ms(p.normal_p99_ms),
                self.offered_rps.unwrap_or(0.0),
                ms(p.burst_p99_ms),
                ms(p.recovered_p99_ms),
                p.shed,
                ms(p.shed_p99_ms),
                self.missing_retry_after
            );
        }
        if let Some(k) = self.knee_rps {
            let _ = writeln!(t, "knee          {k:.0} req/s (last rate step within the bounds)");
        }
        if let Some(rss) = self.server_rss_mb {
            let _ = write!(t, "server RSS    {rss:.1} MB");
            if let (Some(s), Some(w), Some(g)) =
                (self.server_rss_start_mb, self.server_rss_steady_mb, self.rss_growth_pct)
            {
                let _ = write!(t, " (start {s:.1} MB, at 10% {w:.1} MB, growth since {g:+.1}%)");
            }
            let _ = writeln!(t);
        }
        if let (Some(a), Some(b), Some(d)) = (self.p99_first_ms, self.p99_last_ms, self.p99_drift) {
            let _ = writeln!(t, "p99 drift     first {a:.3} ms, last {b:.3} ms: x{d:.2}");
        }
        if let Some(w) = self.ledger_written {
            let _ = writeln!(
                t,
                "ledger        {w} written{}",
                self.ledger_drain_s.map(|s| format!(" (drained {s:.1} s after the run)")).unwrap_or_default()
            );
        }
        if self.violations.is_empty() {
            let _ = writeln!(t, "invariants    all hold (0 violations)");
        } else {
            let _ = writeln!(t, "VIOLATIONS    {}", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(t, "  - {v}");
            }
        }
        t
    }
}

/// An SVG line chart: requests/s (by intended send time) and p99 per 100 ms bucket.
pub fn svg(title: &str, buckets: &[Histogram<u64>]) -> String {
    let (w, h, pad) = (960.0, 360.0, 50.0);
    let per_s = 1.0 / BUCKET.as_secs_f64();
    let rps: Vec<f64> = buckets.iter().map(|b| b.len() as f64 * per_s).collect();
    let p99: Vec<f64> =
        buckets.iter().map(|b| if b.is_empty() { 0.0 } else { b.value_at_quantile(0.99) as f64 / 1000.0 }).collect();
    let max_rps = rps.iter().cloned().fold(1.0, f64::max);
    let max_p99 = p99.iter().cloned().fold(1.0, f64::max);
    let n = buckets.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let line = |vals: &[f64], max: f64| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), h - pad - (h - 2.0 * pad) * v / max))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let secs = buckets.len() as f64 * BUCKET.as_secs_f64();
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{title}</text>
<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="#888"/>
<line x1="{x1}" y1="{pad}" x2="{x1}" y2="{y0}" stroke="#888"/>
<text x="{pad}" y="{ylab}" fill="#1f77b4">req/s (max {max_rps:.0})</text>
<text x="{x1}" y="{ylab}" fill="#d62728" text-anchor="end">p99 ms (max {max_p99:.2})</text>
<text x="{x1}" y="{xlab}" text-anchor="end">{secs:.1} s, 100 ms buckets</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{rps_pts}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{p99_pts}"/>
</svg>
"##,
        y0 = h - pad,
        x1 = w - pad,
        ylab = pad - 8.0,
        xlab = h - pad + 20.0,
        rps_pts = line(&rps, max_rps),
        p99_pts = line(&p99, max_p99),
    );
    s
}
