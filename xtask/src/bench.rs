//! `cargo xtask bench`: runs the speed targets of the opening-second rehearsal and records them.
//! Server and tool are pinned to different cores (taskset), every target is run several times
//! on a fresh data dir, and the median run is what docs/benchmarks.md reports against the target.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

struct Target {
    name: &'static str,
    goal: &'static str,
    args: Vec<String>,
    /// Which figure the median is taken over, and the target's own check on the median run
    /// (0 violations is required of every target on top of it).
    key: fn(&Value) -> f64,
    pass: fn(&Value) -> bool,
    /// Arguments worked out when the target runs (overload: its rate, from the bulk run and
    /// probe runs), given the root and a way to run one rehearsal with extra arguments.
    extra: fn(&Path, Probe<'_>) -> anyhow::Result<Vec<String>>,
}

/// Runs one rehearsal of the target with these extra arguments and returns its report.
type Probe<'a> = &'a dyn Fn(&[String]) -> anyhow::Result<Value>;

fn no_extra(_: &Path, _: Probe<'_>) -> anyhow::Result<Vec<String>> {
    Ok(Vec::new())
}

/// The answers a claim may get under load, every protection on.
const ALLOWED: [&str; 6] =
    ["201 issued", "200 already_issued", "409 sold_out", "429 rate_limited", "503 overloaded", "503 unavailable"];

fn only_allowed(v: &Value) -> bool {
    v["outcomes"].as_object().is_some_and(|o| o.keys().all(|k| ALLOWED.contains(&k.as_str())))
}

/// Overload's burst: from 1.25 x the issued/s of the bulk run recorded in docs/bench/bulk.json
/// (run just before when both are run together), adjusted by probe runs, at most OVERLOAD_PROBES:
/// lowered x0.75 while this tool cannot send what it is asked on time (it sent under 95 % of its
/// plan with its core saturated, or its own runtime ran over 25 ms late at any moment of the
/// probe: the p99 "from the intended send time" would then be this tool's own backlog, not the
/// server's answer), raised x1.5 while the durable path absorbs it (nothing shed). What was done
/// is said in the section (`OVERLOAD_NOTE`).
fn overload_rate(root: &Path, probe: Probe<'_>) -> anyhow::Result<Vec<String>> {
    let bulk = root.join("docs/bench/bulk.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&bulk)
            .with_context(|| format!("reading {}: run --only bulk first", bulk.display()))?,
    )?;
    let issued_per_s = f(&v, &["issued_per_s"]);
    if !issued_per_s.is_finite() || issued_per_s <= 0.0 {
        bail!("{} has no issued_per_s", bulk.display());
    }
    let asked = OVERLOAD_X_BULK * issued_per_s;
    let mut rate = asked;
    let mut note = String::new();
    let mut lowered = false;
    for _ in 0..OVERLOAD_PROBES {
        let args = vec!["--rate".to_owned(), format!("{rate:.0}")];
        let r = probe(&args)?;
        let (sent, planned) = (f(&r, &["requests"]), f(&r, &["planned_requests"]));
        let cores = f(&r, &["tool_cpu_cores"]);
        let late = f(&r, &["tool_lateness_ms", "p99"]);
        let worst = f(&r, &["tool_lateness_ms", "max"]);
        // A probe must keep time throughout with margin (never half of TOOL_LATE_MS late), not
        // only at p99: near the tool's limit its lateness swings from run to run (a probe at
        // 37,321/s ran p99 22 ms, max 92 ms late, and the three runs after it p99 169-315 ms; one
        // at 38,309/s max 48 ms, and the runs after it p99 182-383 ms), so a rate accepted on less
        // leaves the runs that follow to the tool's stalls.
        let kept_time = tool_on_time(&r) && worst <= TOOL_LATE_MS / 2.0;
        if (!sent_its_plan(&r) && cores >= 0.9) || !kept_time {
            note = format!(
                "{OVERLOAD_X_BULK} x bulk's issued/s is {asked:.0}/s, more than the load tool sends on time from its core with 4,096 connections (at {rate:.0}/s it sent {sent:.0} of {planned:.0} planned, using {cores:.2} cores, its own runtime p99 {late:.0} ms late, at worst {worst:.0} ms): the burst was lowered to {:.0}/s. ",
                rate * 0.75
            );
            eprintln!(
                "bench> overload at {rate:.0}/s: the load tool tops out ({sent:.0} of {planned:.0} sent, {cores:.2} cores, p99 {late:.0} ms late, at worst {worst:.0} ms); lowering x0.75"
            );
            rate *= 0.75;
            lowered = true;
            continue;
        }
        if f(&r, &["phases", "shed"]) > 0.0 || lowered {
            eprintln!("bench> overload at {rate:.0}/s: the durable path sheds, or the tool's limit is this rate");
            let _ = OVERLOAD_NOTE.set(note);
            return Ok(args);
        }
        eprintln!("bench> overload at {rate:.0}/s: absorbed, nothing shed; raising x1.5");
        note = format!("At {rate:.0}/s the durable path absorbed the burst (nothing shed): raised x1.5. ");
        rate *= 1.5;
    }
    let _ = OVERLOAD_NOTE.set(note);
    Ok(vec!["--rate".to_owned(), format!("{rate:.0}")])
}

/// What `overload_rate` did to the burst's rate, for the section.
static OVERLOAD_NOTE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const OVERLOAD_X_BULK: f64 = 1.25;
const OVERLOAD_PROBES: usize = 4;

/// Whether the load tool's own runtime kept time while firing (a 10 ms timer at most
/// `TOOL_LATE_MS` late at p99): a tool that falls behind reading answers puts its own backlog
/// into every latency figure (at 51,079/s here it was p99 171-217 ms late while the server
/// answered 97 % of claims within 100 ms of reading them).
fn tool_on_time(v: &Value) -> bool {
    f(v, &["tool_lateness_ms", "p99"]) <= TOOL_LATE_MS
}

/// A third of the overload target's 150 ms.
const TOOL_LATE_MS: f64 = 50.0;

/// Whether the load tool sent at least 95 % of what its plan asked for.
fn sent_its_plan(v: &Value) -> bool {
    f(v, &["requests"]) >= 0.95 * f(v, &["planned_requests"])
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

fn targets(soak_secs: u64) -> Vec<Target> {
    let s = |a: &str| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    vec![
        Target {
            name: "spike",
            goal: "200,000 claims (100,000 users x2) on 1,000 coupons, 256 connections: rps >= 0.85 x ceiling, p99 <= 10 ms, exactly 1,000 issued, 0 violations",
            args: s("--scenario spike --users 100000 --repeat 2 --stock 1000 --connections 256 --ceiling"),
            key: |v| f(v, &["ratio_to_ceiling"]),
            pass: |v| {
                f(v, &["ratio_to_ceiling"]) >= 0.85
                    && f(v, &["latency_ms", "p99"]) <= 10.0
                    && f(v, &["issued"]) == 1000.0
            },
            extra: no_extra,
        },
        Target {
            name: "spike-open",
            goal: "open-loop claims at 0.5 x the measured ceiling for 10 s from T0 (600,000 users, 1,000 coupons, 256 connections): claims p99 <= 1.5 x the p99 of GET /healthz at the same offered rate in the same run, exactly 1,000 issued, 0 violations",
            args: s(
                "--scenario spike --users 600000 --repeat 1 --stock 1000 --connections 256 --ceiling --ceiling-requests 200000 --rate-of-ceiling 0.5 --duration 10 --lead 15 --healthz-open",
            ),
            key: |v| f(v, &["latency_ms", "p99"]) / f(v, &["healthz_open_ms", "p99"]),
            pass: |v| f(v, &["judged"]) <= 1.5 && f(v, &["issued"]) == 1000.0,
            extra: no_extra,
        },
        Target {
            name: "held",
            goal: "customers claim at 150/s for 30 s (each a new user; 100,000 coupons) while 2,000 idle and 200 slow-header connections are held (reopened as the server closes them): claims p99 <= 10 ms, all issued, 0 violations",
            args: s(
                "--scenario soak --rate 150 --duration 30 --users 100000 --stock 100000 --connections 8 --hold-idle 2000 --hold-slow 200",
            ),
            key: |v| f(v, &["latency_ms", "p99"]),
            pass: |v| f(v, &["latency_ms", "p99"]) <= 10.0 && f(v, &["issued"]) == f(v, &["requests"]),
            extra: no_extra,
        },
        Target {
            name: "bulk",
            goal: "100,000 coupons, 100,000 users: issued/s >= 0.5 x ceiling, p99 <= 25 ms, every issued fsync'd, 0 violations",
            args: s("--scenario spike --users 100000 --repeat 1 --stock 100000 --connections 256 --ceiling"),
            key: |v| f(v, &["issued_per_s"]) / f(v, &["ceiling_rps"]),
            pass: |v| f(v, &["judged"]) >= 0.5 && f(v, &["latency_ms", "p99"]) <= 25.0 && f(v, &["issued"]) == 100000.0,
            extra: no_extra,
        },
        Target {
            name: "overload",
            goal: "the durable path driven past what it commits: open loop on a campaign with stock left (1,000,000 users and coupons, 4,096 connections), 3 s at 500/s, 20 s at 1.25 x the bulk run's issued/s (lowered to what the load tool can send on time, and said so below), 4 s at 500/s: the tool sends >= 95 % of its plan with its own runtime at most 50 ms late (p99), every answer 201/200/409/429/503, each 429/503 with Retry-After, p99 <= 150 ms from the intended send time (admission's 100 ms queue bound plus margin), shed answers' p99 <= 150 ms (shed at once, not queued), from 2 s after the burst p99 <= 1.5 x the calm p99 before it, 0 violations",
            // More connections than the server admits at once (512 claims at its front door):
            // with fewer, the excess would queue in this tool instead of reaching the server.
            args: s(
                "--scenario overload --duration 20 --calm-rate 500 --users 1000000 --stock 1000000 --connections 4096",
            ),
            key: |v| f(v, &["latency_ms", "p99"]),
            pass: |v| {
                let shed_ok = f(v, &["phases", "shed"]) == 0.0 || f(v, &["phases", "shed_p99_ms"]) <= 150.0;
                // A run this tool could not send is no measure of the server (see overload_rate).
                only_allowed(v)
                    && sent_its_plan(v)
                    && tool_on_time(v)
                    && f(v, &["missing_retry_after"]) == 0.0
                    && f(v, &["latency_ms", "p99"]) <= 150.0
                    && shed_ok
                    && f(v, &["phases", "recovered_p99_ms"]) <= 1.5 * f(v, &["phases", "normal_p99_ms"])
            },
            extra: overload_rate,
        },
        Target {
            name: "memory",
            goal: "1,000,000 distinct users hit one campaign: server RSS <= 64 MB afterwards, 0 violations",
            args: s("--scenario spike --users 1000000 --repeat 1 --stock 1000 --connections 256"),
            key: |v| f(v, &["server_rss_mb"]),
            pass: |v| f(v, &["server_rss_mb"]) <= 64.0,
            extra: no_extra,
        },
        Target {
            name: "soak",
            goal: "20,000 req/s for the soak length: RSS growth <= 10% (steady state), p99 <= 5 ms (from the intended send time), p99 drift <= 2x, 0 violations",
            args: {
                let mut a = s("--scenario soak --rate 20000 --users 100000 --stock 1000 --connections 64");
                a.extend(["--duration".into(), soak_secs.to_string()]);
                a
            },
            key: |v| f(v, &["p99_drift"]),
            pass: |v| {
                f(v, &["rss_growth_pct"]) <= 10.0 && f(v, &["latency_ms", "p99"]) <= 5.0 && f(v, &["p99_drift"]) <= 2.0
            },
            extra: no_extra,
        },
    ]
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(root: &Path, data: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(root.join("target/release/firstcome-local"))
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting firstcome-local")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let url = loop {
            let line = lines.next().context("firstcome-local exited before printing its URL")??;
            if let Some(u) = line.strip_prefix("firstcome-local listening on ") {
                break u.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

pub fn run(root: &Path, only: &[String], runs: usize, soak_secs: u64) -> anyhow::Result<()> {
    crate::run(crate::cargo().args(["build", "--release", "-p", "firstcome-local", "-p", "firstcome-rehearse"]))?;
    let out_dir = root.join("target/bench");
    let docs = root.join("docs");
    std::fs::create_dir_all(docs.join("bench"))?;
    // Sections of targets not run this time are kept as recorded, so `--only spike` updates one section.
    let previous = std::fs::read_to_string(docs.join("benchmarks.md")).unwrap_or_default();
    let mut md = String::from(BENCH_HEADER);
    let mut all_pass = true;
    for mut t in targets(soak_secs) {
        if !(only.is_empty() || only.iter().any(|o| o == t.name)) {
            md.push_str(&recorded_section(&previous, t.name));
            continue;
        }
        let once = |args: &[String], label: &str| -> anyhow::Result<(Value, PathBuf)> {
            let data = out_dir.join(format!("{}-{label}", t.name));
            let _ = std::fs::remove_dir_all(&data);
            let server = Server::start(root, &data)?;
            let json = out_dir.join(format!("{}-{label}.json", t.name));
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "1"]).arg(root.join("target/release/firstcome-rehearse"));
            cmd.args(["--url", &server.url, "--quiet", "--server-pid", &server.child.id().to_string()]);
            cmd.arg("--admin-token-file").arg(data.join("admin-token"));
            cmd.arg("--jwt-secret-file").arg(data.join("jwt-secret"));
            cmd.arg("--json").arg(&json).args(&t.args).args(args);
            eprintln!("bench> {} run {label}", t.name);
            let status = cmd.status().context("running firstcome-rehearse")?;
            drop(server);
            let report: Value = serde_json::from_str(
                &std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?,
            )?;
            if !status.success() {
                eprintln!("bench> {} run {label}: the rehearsal reported violations", t.name);
            }
            Ok((report, json))
        };
        let extra = (t.extra)(root, &|args| once(args, "probe").map(|(v, _)| v))?;
        let mut results: Vec<(Value, PathBuf)> = Vec::new();
        for i in 1..=runs {
            let (mut v, json) = once(&extra, &format!("{i}"))?;
            with_judged(&t, &mut v);
            results.push((v, json));
        }
        t.args.extend(extra);
        results.sort_by(|a, b| (t.key)(&a.0).total_cmp(&(t.key)(&b.0)));
        let (median, median_json) = &results[results.len() / 2];
        // Each figure is judged by its own median across the runs (the run that is the median
        // by one figure may be the best run by another), and no run may have a violation.
        let medians = per_figure_median(&results.iter().map(|(v, _)| v).collect::<Vec<_>>());
        let pass = (t.pass)(&medians) && results.iter().all(|(v, _)| v["violations"] == serde_json::json!([]));
        all_pass &= pass;
        for ext in ["json", "svg"] {
            let from = median_json.with_extension(ext);
            if from.exists() {
                std::fs::copy(&from, docs.join("bench").join(format!("{}.{ext}", t.name)))?;
            }
        }
        let _ = writeln!(
            md,
            "## {} — {}\n\nRecorded {} on {}.\n",
            t.name,
            if pass { "PASS" } else { "MISSED" },
            now_utc(),
            machine_line()
        );
        write_section(&mut md, &t, &results, median);
        let _ = writeln!(
            md,
            "Judged on the median of each figure (a ratio: of the runs' own ratios): ratio {:.3}, p99 {:.2} ms, issued/s {:.0}, RSS {:.1} MB.\n",
            f(&medians, &["ratio_to_ceiling"]),
            f(&medians, &["latency_ms", "p99"]),
            f(&medians, &["issued_per_s"]),
            f(&medians, &["server_rss_mb"]),
        );
        if medians["healthz_open_ms"].is_object() {
            let _ = writeln!(
                md,
                "Open loop at {:.0} req/s: claims p99 {:.2} ms, GET /healthz p99 {:.2} ms at the same rate; the median of the runs' own ratios: x{:.2}.\n",
                f(&medians, &["offered_rps"]),
                f(&medians, &["latency_ms", "p99"]),
                f(&medians, &["healthz_open_ms", "p99"]),
                f(&medians, &["judged"]),
            );
        }
        // What else is inside the open loop's latency: this tool's own waits.
        for (key, what) in [
            (
                "send_lag_ms",
                "Sent late (the tool had no free connection at a request's intended time; counted in the latency)",
            ),
            (
                "tool_lateness_ms",
                "The load tool's own runtime ran a 10 ms timer late (answers waited that long for the tool to read them, inside the latency figures)",
            ),
        ] {
            if medians[key].is_object() {
                let q = |k: &str| f(&medians, &[key, k]);
                let _ =
                    writeln!(md, "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.\n", q("p50"), q("p99"), q("max"));
            }
        }
        if medians["phases"].is_object() {
            let p = |k: &str| f(&medians, &["phases", k]);
            let _ = writeln!(
                md,
                "{}Burst at {:.0} req/s (issued {:.0}/s over the run; the tool sent {:.0} of {:.0} planned, using {:.2} cores): p99 normal {:.2} ms, burst {:.2} ms, from 2 s after {:.2} ms; \
                 shed {:.0} (p99 {:.2} ms): {}; answers without Retry-After {:.0}.\n",
                OVERLOAD_NOTE.get().map_or("", String::as_str),
                f(&medians, &["offered_rps"]),
                f(&medians, &["issued_per_s"]),
                f(&medians, &["requests"]),
                f(&medians, &["planned_requests"]),
                f(&medians, &["tool_cpu_cores"]),
                p("normal_p99_ms"),
                p("burst_p99_ms"),
                p("recovered_p99_ms"),
                p("shed"),
                p("shed_p99_ms"),
                if p("shed") > 0.0 { "the durable path shed" } else { "the durable path absorbed the burst" },
                f(&medians, &["missing_retry_after"]),
            );
        }
    }
    // `race` is written by `bench::race`, which these targets do not run: kept as recorded.
    md.push_str(&recorded_section(&previous, "race"));
    md.push_str(&recorded_section(&previous, "cold-start"));
    std::fs::write(docs.join("benchmarks.md"), md)?;
    eprintln!("bench> wrote docs/benchmarks.md");
    if !all_pass {
        bail!("a target was missed; see docs/benchmarks.md");
    }
    Ok(())
}

/// Adds the figure the target is about to one run's report, as `judged`: a ratio is taken within
/// one run (claims and ceiling of the same server, minutes apart at most), and the median of the
/// runs' own ratios is judged, never the ratio of two medians from different runs (bulk at 22:13
/// on 2026-12-04: runs 0.450, 0.496, 0.505; median issued/s over median ceiling 0.504).
fn with_judged(t: &Target, v: &mut Value) {
    v["judged"] = serde_json::json!((t.key)(v));
}

/// The runs' reports with every number replaced by that number's median across the runs.
fn per_figure_median(runs: &[&Value]) -> Value {
    match runs.first() {
        Some(Value::Object(first)) => Value::Object(
            first
                .keys()
                .map(|k| (k.clone(), per_figure_median(&runs.iter().map(|r| &r[k.as_str()]).collect::<Vec<_>>())))
                .collect(),
        ),
        Some(Value::Number(_)) => {
            let mut xs: Vec<f64> = runs.iter().filter_map(|v| v.as_f64()).collect();
            xs.sort_by(f64::total_cmp);
            match xs.get(xs.len() / 2) {
                Some(m) => serde_json::json!(m),
                None => Value::Null,
            }
        }
        Some(other) => (*other).clone(),
        None => Value::Null,
    }
}

/// The `## name` section of a previously written benchmarks.md, up to the next section.
fn recorded_section(previous: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in previous.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            inside = heading.split_whitespace().next() == Some(name);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn write_section(md: &mut String, t: &Target, results: &[(Value, PathBuf)], median: &Value) {
    let _ = writeln!(md, "Target: {}.\n", t.goal);
    let _ = writeln!(
        md,
        "Command (per run, fresh data dir): `taskset -c 0 firstcome-local --data-dir D` and\n`taskset -c 1 firstcome-rehearse --url URL --admin-token-file D/admin-token --jwt-secret-file D/jwt-secret --server-pid PID {}`\n",
        t.args.join(" ")
    );
    let _ = writeln!(
        md,
        "| run | requests | req/s | ceiling req/s | ratio | issued | issued/s | p50 ms | p99 ms | p99.9 ms | max ms | RSS MB | RSS growth | p99 drift | steal % (worst s) | violations |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, (v, _)) in results.iter().enumerate() {
        let mark = if std::ptr::eq(v, median) { " (median)" } else { "" };
        let opt = |x: f64, d: usize| if x.is_nan() { "–".to_owned() } else { format!("{x:.d$}") };
        let _ = writeln!(
            md,
            "| {}{mark} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} |",
            i + 1,
            opt(f(v, &["requests"]), 0),
            opt(f(v, &["rps"]), 0),
            opt(f(v, &["ceiling_rps"]), 0),
            opt(f(v, &["ratio_to_ceiling"]), 3),
            opt(f(v, &["issued"]), 0),
            opt(f(v, &["issued_per_s"]), 0),
            opt(f(v, &["latency_ms", "p50"]), 2),
            opt(f(v, &["latency_ms", "p99"]), 2),
            opt(f(v, &["latency_ms", "p999"]), 2),
            opt(f(v, &["latency_ms", "max"]), 2),
            opt(f(v, &["server_rss_mb"]), 1),
            opt(f(v, &["rss_growth_pct"]), 1) + if f(v, &["rss_growth_pct"]).is_nan() { "" } else { "%" },
            opt(f(v, &["p99_drift"]), 2),
            opt(f(v, &["steal", "run_pct"]), 1),
            opt(f(v, &["steal", "worst_second_pct"]), 1),
            v["violations"].as_array().map_or(0, Vec::len),
        );
    }
    if let Some(outcomes) = median["outcomes"].as_object() {
        let list: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            md,
            "\nMedian run outcomes: {}. Report: [bench/{n}.json](bench/{n}.json), chart: [bench/{n}.svg](bench/{n}.svg).\n",
            list.join(", "),
            n = t.name
        );
    }
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), loopback, release build, server on core 0, tool on core 1")
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

const BENCH_HEADER: &str = "# Benchmarks: the opening-second rehearsal\n\n\
Produced by `cargo xtask bench` (`--only NAME` rewrites just that target's section). Each target runs several times on a\n\
fresh data dir; the median run (by the figure the target is about) is the one judged. These machines\n\
are noisy (the same configuration swings ±40% between runs), so throughput is judged as a ratio to\n\
the same server's ceiling (`GET /healthz`, same connections, measured before and after the scenario)\n\
within one run. Latency in closed-loop runs is per request; in open-loop runs it counts from the\n\
intended send time (no coordinated omission). Rows are sorted by the judged figure, not by run order;\n\
RSS growth is from 10% into a run to its end, which only means something for the soak. Steal is the share of\n\
the machine's CPU time the hypervisor took while the tool fired (/proc/stat), over the run and in its worst second:\n\
on these shared VMs it comes in bursts, and a latency tail during one is the host's, not the server's.\n\n";

/// `race`: the opening on the emulated AWS shape — `containers` claim processes under `cargo
/// lambda watch`, DynamoDB Local behind the latency layer (`aws` round trips) — rehearsed with
/// 20,000 users on 1,000 coupons; then the same opening in the simulation, so the two can be
/// compared. Prints both and writes them to `docs/bench/race.json` (which `cargo xtask capacity`
/// prints as the simulation's check) and docs/benchmarks.md.
pub fn race(root: &Path, containers: u32) -> anyhow::Result<Value> {
    crate::run(crate::cargo().args(["build", "--release", "-p", "firstcome-rehearse"]))?;
    crate::aws::tools()?;
    crate::build_workspace_bins()?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::create_dir_all(root.join("target/aws"))?;
    let emulator = crate::aws::Emulator::start_with(root, Some("aws"))?;
    // The stack's campaigns get the template's default peak: its shards as the store plans them.
    let per_shard = crate::capacity::store_claims_per_shard(root)?;
    let name = format!("race{}", std::process::id());
    let stack = crate::aws::Stack::start(root, &emulator, &name, "127.0.0.1:0", None, containers)?;
    let json = out_dir.join("race-emulated.json");
    let mut cmd = Command::new(root.join("target/release/firstcome-rehearse"));
    cmd.args(["--url", &stack.url, "--quiet", "--scenario", "spike", "--users", "20000", "--stock", "1000"]);
    cmd.args(["--connections", "64", "--lead", "5", "--duration", "120"]);
    cmd.arg("--admin-token-file").arg(stack.data_dir.join("admin-token"));
    cmd.arg("--jwt-secret-file").arg(stack.data_dir.join("jwt-secret"));
    cmd.arg("--json").arg(&json);
    eprintln!("bench> race: 20,000 users on 1,000 coupons through {containers} claim containers");
    let status = cmd.status().context("running firstcome-rehearse")?;
    let emulated: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let stats = emulator.latency_stats()?.unwrap_or_default();
    // The sell-out time from the coupons themselves (the post-event report: opens_at to the last
    // issued_at), not from the run's length: the run goes on answering losers after it.
    let campaign = emulated["campaign"].as_str().context("the rehearsal names its campaign")?.to_owned();
    let reports = out_dir.join("race-report");
    crate::run(
        Command::new(root.join("target/release/firstcome-report"))
            .args(["--url", &stack.url, "--campaign", &campaign])
            .arg("--admin-token-file")
            .arg(stack.data_dir.join("admin-token"))
            .arg("--out")
            .arg(&reports),
    )?;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(reports.join(format!("{campaign}.json")))?)?;
    let peak: u32 = stack
        .env
        .iter()
        .find(|(k, _)| k == "FIRSTCOME_PEAK_CLAIMS_PER_S")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1000);
    let shards = peak.div_ceil(per_shard).clamp(1, 99);
    drop(stack);
    let (tx, allocations) = (&stats["transactions"], &stats["allocations"]);
    let sum = |v: &Value| -> u64 { v.as_object().map_or(0, |o| o.values().filter_map(Value::as_u64).sum()) };
    // A record cancelled on its first item (the claim item) is a repeat click's.
    let repeats: u64 = tx.as_object().map_or(0, |o| {
        o.iter().filter(|(k, _)| k.starts_with("ConditionalCheckFailed+")).filter_map(|(_, v)| v.as_u64()).sum()
    });
    let given_back = stats["given_back"].as_u64().unwrap_or(0);
    let issued = f(&emulated, &["issued"]);
    let rps = f(&emulated, &["rps"]);
    let sold_out_s = f(&report, &["sold_out_after_s"]);
    // The simulation of the same opening: the tool's rate as arrivals, the emulator's queueing
    // (`cargo lambda watch` holds requests for a busy process), DynamoDB Local's serialised
    // transactions (no conflicts), and the gateway's own cost per request measured as a cached
    // loser's answer.
    let overhead = f(&emulated, &["outcome_latency_ms", "409 sold_out", "p50"]);
    let scenario = firstcome_sim::Scenario {
        stock: 1000,
        users: 20_000,
        attempts_per_s: rps,
        window_s: f(&emulated, &["requests"]) / rps,
        containers,
        shards,
        conflicts: false,
        overhead_ms: if overhead.is_finite() { overhead } else { 3.0 },
        queue: true,
        ..firstcome_sim::Scenario::reference(shards)
    };
    let sim = firstcome_sim::simulate(&scenario);
    let mut result = serde_json::json!({
        "containers": containers,
        "shards": shards,
        "emulated": {
            "rehearsal_passed": status.success(),
            "violations": emulated["violations"],
            "requests": emulated["requests"], "rps": rps, "issued": issued,
            "sold_out_s": sold_out_s,
            "duration_s": emulated["duration_s"],
            "outcomes": emulated["outcomes"],
            "claim_latency_ms": emulated["latency_ms"],
            "allocations": allocations, "records": tx, "given_back": given_back,
            "write_units": stats["write_units"],
            "attempts_per_issued": sum(allocations).saturating_sub(repeats) as f64 / issued.max(1.0),
            "writes_per_issued": (sum(allocations) + sum(tx) + 2 * given_back) as f64 / issued.max(1.0),
            "wcu_per_issued": stats["write_units"].as_f64().unwrap_or(0.0) / issued.max(1.0),
            "dynamodb_requests": stats["requests"],
        },
        "simulated": {
            "sold_out_s": sim.sold_out_s, "issued": sim.issued, "attempts_per_issued": sim.attempts_per_issued(),
            "writes_per_issued": sim.writes_per_issued(), "wcu_per_issued": sim.wcu_per_issued(),
            "given_back": sim.returned, "claim_p50_ms": sim.claim_p50_ms, "claim_p99_ms": sim.claim_p99_ms,
            "request_p99_ms": sim.request_p99_ms, "unavailable": sim.unavailable, "overhead_ms": scenario.overhead_ms,
        },
    });
    result["measured_at"] =
        Value::String(format!("{}, {}", now_utc(), machine_line().split(", loopback").next().unwrap_or_default()));
    std::fs::create_dir_all(root.join("docs/bench"))?;
    std::fs::write(root.join("docs/bench/race.json"), serde_json::to_string_pretty(&result)?)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    let docs = root.join("docs/benchmarks.md");
    let previous = std::fs::read_to_string(&docs).unwrap_or_default();
    let old = recorded_section(&previous, "race");
    let section = race_section(&result);
    let md = if old.is_empty() { format!("{previous}\n{section}") } else { previous.replace(&old, &section) };
    std::fs::write(docs, md)?;
    Ok(result)
}

/// `cold-start` targets: the claim function's package as deployed (zip, arm64) and its init.
const COLD_START_ZIP_MB: f64 = 8.0;
const COLD_START_INIT_MS: f64 = 20.0;

/// `cold-start`: the claim function's package as deployed (`cargo lambda build --release --arm64
/// --output-format zip`: its size is what Lambda downloads and unpacks on every cold start) and
/// its init — exec to its first poll of the Lambda Runtime API, against a stand-in Runtime API on
/// loopback — of the same build for this machine (an arm64 binary does not run here), median of
/// `runs`. Writes docs/benchmarks.md's `cold-start` section.
pub fn cold_start(root: &Path, runs: usize) -> anyhow::Result<Value> {
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
    if !String::from_utf8_lossy(&targets.stdout).lines().any(|t| t.trim() == "aarch64-unknown-linux-gnu") {
        crate::run(Command::new("rustup").args(["target", "add", "aarch64-unknown-linux-gnu"]))?;
    }
    crate::run(
        crate::cargo()
            .args(["lambda", "build", "--release", "--arm64", "--locked", "-p", "firstcome-fn-claim"])
            .args(["--output-format", "zip"]),
    )?;
    let zip = root.join("target/lambda/claim/bootstrap.zip");
    let zip_mb = std::fs::metadata(&zip).with_context(|| format!("{}", zip.display()))?.len() as f64 / 1e6;
    crate::run(crate::cargo().args(["build", "--release", "--locked", "-p", "firstcome-fn-claim"]))?;
    let binary = root.join("target/release/claim");
    let binary_mb = std::fs::metadata(&binary)?.len() as f64 / 1e6;
    let mut inits = Vec::new();
    for _ in 0..runs.max(1) {
        inits.push(init_ms(&binary)?);
    }
    inits.sort_by(f64::total_cmp);
    let median = inits[inits.len() / 2];
    let result = serde_json::json!({
        "zip_mb": zip_mb, "binary_mb": binary_mb, "init_ms": inits, "init_median_ms": median,
        "pass": zip_mb <= COLD_START_ZIP_MB && median <= COLD_START_INIT_MS,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    let docs = root.join("docs/benchmarks.md");
    let previous = std::fs::read_to_string(&docs).unwrap_or_default();
    let old = recorded_section(&previous, "cold-start");
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let section = format!(
        "## cold-start — {}\n\nThe claim function as deployed (`cargo xtask bench --only cold-start`), measured {} on {}.\n\n\
         | figure | target | measured |\n|---|---|---|\n\
         | package, zip, arm64 (`cargo lambda build --release --arm64 --output-format zip`) | ≤ {COLD_START_ZIP_MB} MB | {zip_mb:.2} MB ({}) |\n\
         | init, exec to its first poll of a stand-in Runtime API on loopback, x86_64 build of the same profile ({binary_mb:.1} MB), median of {} | ≤ {COLD_START_INIT_MS} ms | {median:.1} ms ({}; runs: {}) |\n\n\
         Anchors (published lambda-perf figures on Lambda arm64, not measured here): 13.3 ms for a Rust hello world, 18.5–18.9 ms with axum + lambda_http. The init here excludes what Lambda adds (download, unpack, sandbox).\n\n",
        pass(result["pass"].as_bool().unwrap_or(false)),
        now_utc(),
        machine_line().split(", loopback").next().unwrap_or_default(),
        pass(zip_mb <= COLD_START_ZIP_MB),
        inits.len(),
        pass(median <= COLD_START_INIT_MS),
        inits.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(", "),
    );
    let md = if old.is_empty() { format!("{previous}\n{section}") } else { previous.replace(&old, &section) };
    std::fs::write(docs, md)?;
    Ok(result)
}

/// One init of `binary` as a Lambda function: the time from exec to its first
/// `GET /2018-06-01/runtime/invocation/next` on a stand-in Runtime API.
fn init_ms(binary: &Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let api = listener.local_addr()?.to_string();
    let secret = "cold-start-origin-secret-0123456789abcdef";
    let started = std::time::Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "claim"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/claim"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "cold-start"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "cold-start"),
            ("AWS_SECRET_ACCESS_KEY", "cold-start"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("FIRSTCOME_CAMPAIGNS_TABLE", "campaigns"),
            ("FIRSTCOME_STOCK_TABLE", "stock"),
            ("FIRSTCOME_CLAIMS_TABLE", "claims"),
            ("FIRSTCOME_LEDGER_TABLE", "ledger"),
            ("FIRSTCOME_LEDGER_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/000000000000/ledger"),
            ("FIRSTCOME_ORIGIN_SECRET", secret),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    listener.set_nonblocking(true)?;
    let deadline = started + std::time::Duration::from_secs(10);
    let elapsed = loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n") && conn.read(&mut byte)? == 1 {
                    head.push(byte[0]);
                }
                let at = started.elapsed();
                let line = String::from_utf8_lossy(&head).into_owned();
                if !line.starts_with("GET /2018-06-01/runtime/invocation/next") {
                    let _ = child.kill();
                    bail!("the function's first call to the Runtime API was {line:?}");
                }
                break at;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    bail!("the function exited ({status}) before polling the Runtime API: {err}");
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("the function did not poll the Runtime API within 10 s");
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// docs/benchmarks.md's `race` section from `race`'s result.
fn race_section(r: &Value) -> String {
    let (e, s) = (&r["emulated"], &r["simulated"]);
    let mut out = String::new();
    let _ = writeln!(out, "## race — RECORDED\n");
    let cpu = machine_line();
    let cpu = cpu.split(", loopback").next().unwrap_or_default();
    let _ = writeln!(
        out,
        "The opening on the emulated AWS shape (`cargo xtask bench --only race`): {} claim containers, {} shards, DynamoDB Local behind the latency layer (`aws`), 20,000 users on 1,000 coupons, 64 connections; beside it the simulation of the same opening (docs/dynamodb.md). Measured {} on {cpu}; the whole stack shares those cores.\n",
        r["containers"],
        r["shards"],
        now_utc()
    );
    let _ = writeln!(out, "| figure | emulated | simulated |\n|---|---|---|");
    let _ = writeln!(out, "| issued | {} | {} |", f(e, &["issued"]), s["issued"]);
    let _ = writeln!(out, "| sold out after (s) | {:.1} | {:.1} |", f(e, &["sold_out_s"]), f(s, &["sold_out_s"]));
    let _ = writeln!(
        out,
        "| billed claim attempts (allocations) per coupon | {:.2} | {:.2} |",
        f(e, &["attempts_per_issued"]),
        f(s, &["attempts_per_issued"])
    );
    let _ = writeln!(
        out,
        "| write requests per coupon (allocations, records, give-backs) | {:.2} | {:.2} |",
        f(e, &["writes_per_issued"]),
        f(s, &["writes_per_issued"])
    );
    let _ = writeln!(
        out,
        "| WCU per coupon (emulated: every write, the ledger's and its acknowledgements included; simulated: the claim path) | {:.1} | {:.1} |",
        f(e, &["wcu_per_issued"]),
        f(s, &["wcu_per_issued"])
    );
    let _ = writeln!(out, "| allocations by outcome | {} | — |", e["allocations"]);
    let _ = writeln!(out, "| records by outcome | {} | — |", e["records"]);
    let _ = writeln!(out, "| allocations given back | {} | {} |", e["given_back"], s["given_back"]);
    let _ = writeln!(out, "| answers | {} | — |", e["outcomes"]);
    let _ = writeln!(
        out,
        "| latency p50 / p99 (ms) | {:.0} / {:.0} (every answer, through the gateway) | {:.0} / {:.0} (claims at the store) |",
        f(e, &["claim_latency_ms", "p50"]),
        f(e, &["claim_latency_ms", "p99"]),
        f(s, &["claim_p50_ms"]),
        f(s, &["claim_p99_ms"])
    );
    let _ = writeln!(out, "| invariants | {} violations | — |\n", e["violations"].as_array().map_or(0, Vec::len));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn what_is_deployed_carries_no_debug_info_and_no_symbols() {
        // `sam build` and the deploy workflow build with `--release`: that profile is the package.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let release: Vec<&str> = manifest
            .split("\n[")
            .find(|s| s.starts_with("profile.release]"))
            .expect("a release profile")
            .lines()
            .map(str::trim)
            .collect();
        for setting in ["debug = false", "strip = true", "lto = true", "codegen-units = 1"] {
            assert!(release.contains(&setting), "[profile.release] lacks {setting}: {release:?}");
        }
    }

    #[test]
    fn each_figure_is_judged_by_its_own_median() {
        let runs = [
            json!({"ratio_to_ceiling": 0.82, "latency_ms": {"p99": 9.9}, "violations": []}),
            json!({"ratio_to_ceiling": 0.67, "latency_ms": {"p99": 12.3}, "violations": []}),
            json!({"ratio_to_ceiling": 0.83, "latency_ms": {"p99": 10.7}, "violations": []}),
        ];
        let m = per_figure_median(&runs.iter().collect::<Vec<_>>());
        assert_eq!(f(&m, &["ratio_to_ceiling"]), 0.82);
        assert_eq!(f(&m, &["latency_ms", "p99"]), 10.7, "not the p99 of the run with the median ratio");
    }

    #[test]
    fn a_ratio_is_judged_within_each_run_not_across_medians() {
        let target = |name| targets(60).into_iter().find(|t| t.name == name).expect("a target");
        let judged = |t: &Target, runs: &[Value]| {
            let runs: Vec<Value> = runs
                .iter()
                .map(|v| {
                    let mut v = v.clone();
                    with_judged(t, &mut v);
                    v
                })
                .collect();
            (t.pass)(&per_figure_median(&runs.iter().collect::<Vec<_>>()))
        };
        // bulk as recorded at 22:13 on 2026-12-04: ratios 0.450, 0.496, 0.505; the median of
        // issued/s over the median of the ceilings is 0.504, which is no run's ratio.
        let bulk = |issued: f64, ceiling: f64| json!({"issued_per_s": issued, "ceiling_rps": ceiling, "issued": 100000.0, "latency_ms": {"p99": 9.8}});
        let runs = [bulk(39011.0, 86626.0), bulk(43745.0, 88160.0), bulk(43664.0, 86421.0)];
        assert!(!judged(&target("bulk"), &runs), "median ratio 0.496 < 0.5");
        let runs = [bulk(39011.0, 86626.0), bulk(44200.0, 88160.0), bulk(43664.0, 86421.0)];
        assert!(judged(&target("bulk"), &runs), "median ratio 0.501");
        let open = |p99: f64, healthz: f64| json!({"latency_ms": {"p99": p99}, "healthz_open_ms": {"p99": healthz}, "issued": 1000.0});
        // Ratios 1.6, 1.6, 1.0; medians 4.0 / 3.0 = 1.33 would pass.
        let runs = [open(4.0, 2.5), open(4.8, 3.0), open(3.5, 3.5)];
        assert!(!judged(&target("spike-open"), &runs));
        let runs = [open(4.0, 2.5), open(4.2, 3.0), open(3.5, 3.5)];
        assert!(judged(&target("spike-open"), &runs), "ratios 1.6, 1.4, 1.0");
    }
}
