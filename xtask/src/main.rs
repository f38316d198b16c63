//! `cargo xtask`: the project's entry points. Each task first installs what it needs (skipping
//! what is already there), so the README's two commands work on a fresh machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

mod aws;
mod bench;
mod boundaries;
mod capacity;
mod site;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "firstcome project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs (idempotent).
    Setup,
    /// Build the page (WASM) into target/page.
    Site,
    /// What an event needs on AWS (shards, capacity, concurrency, quotas, drain time, cost).
    Capacity {
        #[arg(long)]
        stock: u64,
        #[arg(long)]
        peak_claims_per_s: f64,
        #[arg(long)]
        users: u64,
        /// Clicks per user.
        #[arg(long, default_value_t = 2.0)]
        clicks: f64,
        /// Claim containers at the opening (default: Little's law on the peak).
        #[arg(long)]
        containers: Option<u32>,
        /// Every figure as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The main job: the local server (release build, the first build takes a few minutes) with
    /// a demo campaign coming up and dev sign-in for this machine. ARGS are added to
    /// `--demo --dev-tokens`.
    Run {
        /// Extra arguments for firstcome-local, e.g. `-- --addr 127.0.0.1:9000`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Every test: formatting, clippy (warnings are errors), the architecture boundaries, then the
    /// whole workspace's tests.
    Test {
        /// The quick loop: formatting, clippy on the host, the boundaries, unit tests, the store
        /// contracts on the memory and SQLite stores and the API tests. No page build, no
        /// emulator, no browser, no binaries started.
        #[arg(long)]
        quick: bool,
    },
    /// Run firstcome-rehearse (release build) with these arguments, e.g. `-- --scenario spike ...`.
    Rehearse {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The post-event report of one campaign from the running local server: sell-out time,
    /// claims per second, outcome mix, p50/p99, ledger drain time; printed and written to
    /// target/reports/<ID>.html (.svg, .json). ARGS: `--url`, `--admin-token-file`, `--out`.
    Report {
        #[arg(long)]
        campaign: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The AWS shape on this machine: the emulated endpoint (moto), tables and queues from
    /// template.yaml, the functions under `cargo lambda watch`, and a local API Gateway + SQS
    /// trigger in front. Prints one base URL (the page, the API) and marketing's sign-in; Ctrl-C stops it.
    Emulate {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// DynamoDB's round trips: `aws` (published in-region figures, docs/dynamodb.md),
        /// `none`, or `OP=MEDIAN:P99,...,*=MEDIAN:P99` in ms.
        #[arg(long, default_value = "aws")]
        latency: String,
        /// Processes per function under `cargo lambda watch`: Lambda containers, each with its
        /// own memory, serving one request at a time.
        #[arg(long, default_value_t = 3)]
        containers: u32,
    },
    /// The speed targets: server and tool pinned to different cores, each target run --runs
    /// times, figures and medians written to docs/benchmarks.md.
    Bench {
        /// Which targets (spike, spike-open, held, bulk, overload, memory, soak; race: the opening on the emulated
        /// AWS shape against its simulation, and cold-start: the claim function's package and
        /// init, run only when named); default all but those two.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Soak length in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    match Cli::parse().task {
        Task::Setup => {
            setup()?;
            site::tools(&root, true)
        }
        Task::Capacity { stock, peak_claims_per_s, users, clicks, containers, json } => {
            if stock == 0
                || users == 0
                || !(peak_claims_per_s.is_finite() && peak_claims_per_s > 0.0)
                || !(clicks.is_finite() && clicks >= 1.0)
            {
                bail!(
                    "--stock and --users must be positive, --peak-claims-per-s a positive number, --clicks at least 1"
                );
            }
            if containers == Some(0) {
                bail!("--containers must be positive");
            }
            let a = capacity::Assumptions { clicks_per_user: clicks, containers, ..Default::default() };
            let e = capacity::Event { stock, peak_claims_per_s, users };
            let check = capacity::emulator_check(&root);
            if json {
                let mut v = capacity::json(&e, &a);
                v["emulator_check"] = check.clone().unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", capacity::report(&e, &a));
                print!("{}", capacity::emulator_check_text(check.as_ref()));
            }
            Ok(())
        }
        Task::Site => {
            site::tools(&root, false)?;
            site::build(&root).map(|_| ())
        }
        Task::Run { args } => {
            setup()?;
            site::tools(&root, false)?;
            let site = site::build(&root)?;
            let mut cmd = cargo();
            cmd.args(["run", "--release", "-p", "firstcome-local", "--", "--demo", "--dev-tokens", "--site-dir"])
                .arg(site)
                .args(args);
            run(&mut cmd)
        }
        Task::Test { quick: true } => test_quick(),
        Task::Test { quick: false } => {
            setup()?;
            site::tools(&root, true)?;
            site::build(&root)?;
            host_checks()?;
            // The page's components only exist for wasm32; lint them where they compile.
            run(cargo()
                .args(["clippy", "-p", "firstcome-frontend", "--target", "wasm32-unknown-unknown", "--locked"])
                .args(["--", "-D", "warnings"]))?;
            aws::tools()?;
            aws::lint(&root)?;
            let specs = aws::table_specs(&root)?;
            let emulator = aws::Emulator::start(&root)?;
            let mut env = aws::sdk_env(&emulator);
            env.push(("FIRSTCOME_TABLE_SPECS", specs.display().to_string()));
            test_everything(&root, &env, &emulator)
        }
        Task::Emulate { listen, latency, containers } => {
            setup()?;
            aws::tools()?;
            site::tools(&root, false)?;
            let site = site::build(&root)?;
            std::fs::create_dir_all(root.join("target/aws"))?;
            build_workspace_bins()?;
            let emulator = aws::Emulator::start_with(&root, (latency != "none").then_some(latency.as_str()))?;
            let name = format!("emulate{}", std::process::id());
            let stack = aws::Stack::start(&root, &emulator, &name, &listen, Some(&site), containers)?;
            println!("firstcome (AWS shape, emulated) on {}", stack.url);
            println!("  the page: {0}/   marketing: {0}/admin   API: {0}/api/...", stack.url);
            println!(
                "  sign-in: the emulated Cognito user pool; customers sign up on the page, marketing signs in as {} (password in {})",
                aws::ADMIN_EMAIL,
                stack.data_dir.join("admin-credentials").display()
            );
            println!(
                "  for scripts and firstcome-rehearse, as in local mode: admin token {}, jwt secret {}, POST {}/api/dev/token",
                stack.data_dir.join("admin-token").display(),
                stack.data_dir.join("jwt-secret").display(),
                stack.url
            );
            println!("  Ctrl-C stops everything");
            stack.wait()
        }
        Task::Rehearse { args } => run(cargo()
            .args(["run", "--release", "-p", "firstcome-rehearse", "--bin", "firstcome-rehearse", "--"])
            .args(args)),
        Task::Report { campaign, args } => run(cargo()
            .args(["run", "--release", "-p", "firstcome-rehearse", "--bin", "firstcome-report", "--", "--campaign"])
            .arg(campaign)
            .args(args)),
        Task::Bench { only, runs, soak_secs } if only.iter().any(|o| o == "race" || o == "cold-start") => {
            if only.iter().any(|o| o == "race") {
                bench::race(&root, 8)?;
            }
            if only.iter().any(|o| o == "cold-start") {
                bench::cold_start(&root, 10)?;
            }
            let rest: Vec<String> = only.into_iter().filter(|o| o != "race" && o != "cold-start").collect();
            if !rest.is_empty() {
                bench::run(&root, &rest, runs, soak_secs)?;
            }
            Ok(())
        }
        Task::Bench { only, runs, soak_secs } => bench::run(&root, &only, runs, soak_secs),
    }
}

/// Everything beyond a Rust toolchain that the tasks need. Each step checks before installing.
fn setup() -> anyhow::Result<()> {
    for (probe, component) in [("rustfmt", "rustfmt"), ("cargo-clippy", "clippy")] {
        if !Command::new(probe).arg("--version").output().is_ok_and(|o| o.status.success()) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// Runs a `cargo test` and adds up its "test result" lines (printing everything as it comes).
fn cargo_test(cmd: &mut Command, totals: &mut (u64, u64)) -> anyhow::Result<()> {
    cmd.stdout(Stdio::piped());
    eprintln!("xtask> {cmd:?}");
    let mut child = cmd.spawn().context("starting cargo test")?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
            };
            totals.0 += count("passed").unwrap_or(0);
            totals.1 += count("failed").unwrap_or(0);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() || totals.1 > 0 {
        println!("{} passed, {} failed", totals.0, totals.1);
        bail!("tests failed ({status})");
    }
    Ok(())
}

/// The quick loop (`cargo xtask test --quick`). Its cargo commands select the whole workspace, as
/// the full run's do, so the two share their build artifacts.
fn test_quick() -> anyhow::Result<()> {
    host_checks()?;
    let mut totals = (0, 0);
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked", "--lib", "--bins"]);
    for suite in QUICK_SUITES {
        cmd.args(["--test", suite]);
    }
    cargo_test(&mut cmd, &mut totals)?;
    summary(totals, " (quick: the full run is `cargo xtask test`)")
}

/// What both test runs check before any test: formatting, clippy on the host (warnings are
/// errors) and the architecture boundaries.
fn host_checks() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    boundaries::check(&std::fs::read_to_string("ARCHITECTURE.md").context("reading ARCHITECTURE.md")?)
}

/// The run's last line, the totals; a run in which no test ran fails.
fn summary(totals: (u64, u64), note: &str) -> anyhow::Result<()> {
    println!("{} passed, {} failed{note}", totals.0, totals.1);
    if totals.0 == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The integration suites the quick loop runs: the engine and the contracts on `MemoryStore`, the
/// SQLite store, the guard, and the router (its API tests and the fuzzer).
const QUICK_SUITES: &[&str] = &["issuer", "memory_store", "sqlite_store", "guard", "api", "fuzz"];

/// Every test target of the workspace (no doc-tests: there are none worth running), then the
/// shipped events through `cargo lambda invoke` and the claims through the emulated API Gateway,
/// ending with one plain total line, so the last line of the run says how many tests ran.
fn test_everything(root: &Path, env: &[(&str, String)], emulator: &aws::Emulator) -> anyhow::Result<()> {
    let mut totals = (0, 0);
    // Every cargo command here selects the whole workspace: a subset (`-p`, `--exclude`) resolves
    // features differently and rebuilds every dependency again. The gateway test is `test =
    // false` (kept out of --all-targets) and runs below, by name, once the stack is up.
    cargo_test(
        cargo().args(["test", "--workspace", "--all-targets", "--locked"]).envs(env.iter().map(|(k, v)| (k, v))),
        &mut totals,
    )?;
    aws::invoke_shipped_events(root, emulator)?;
    let site = root.join(site::PAGE_DIR);
    let name = format!("gateway{}", std::process::id());
    let stack = aws::Stack::start(root, emulator, &name, "127.0.0.1:0", Some(&site), 3)?;
    let gateway = cargo_test(
        cargo()
            .args(["test", "--workspace", "--locked", "--test", "through_the_gateway"])
            .envs(aws::sdk_env(emulator))
            .envs(stack.env.iter().map(|(k, v)| (k, v)))
            .env("FIRSTCOME_EMULATE_URL", &stack.url)
            .env("FIRSTCOME_EMULATE_LAMBDA_URL", &stack.lambda_url)
            .env("FIRSTCOME_EMULATE_DATA", &stack.data_dir),
        &mut totals,
    );
    if gateway.is_err() {
        // CI keeps only this output: the functions' own account of what went wrong.
        aws::print_function_problems(root);
    }
    gateway?;
    summary(totals, "")
}

/// Every binary of the workspace, with the feature set `cargo lambda watch` and the e2e tests'
/// builds use (`--workspace`, no dev-dependencies), so they all share one set of artifacts.
pub(crate) fn build_workspace_bins() -> anyhow::Result<()> {
    run(cargo().args(["build", "--locked", "--workspace", "--bins"]))
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = shown(cmd);
    eprintln!("xtask> {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// A command as echoed to the log: environment values named like secrets are masked (the
/// emulated pool's marketing password travels as `EMULATED_USER_PASSWORD`).
fn shown(cmd: &Command) -> String {
    let mut out = String::new();
    for (k, v) in cmd.get_envs() {
        let k = k.to_string_lossy();
        let secret = ["PASSWORD", "SECRET", "TOKEN"].iter().any(|s| k.contains(s));
        match v {
            Some(_) if secret => out.push_str(&format!("{k}=*** ")),
            Some(v) => out.push_str(&format!("{k}={:?} ", v.to_string_lossy())),
            None => {}
        }
    }
    out.push_str(&format!("{:?}", cmd.get_program()));
    for a in cmd.get_args() {
        out.push_str(&format!(" {a:?}"));
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_commands_mask_secret_values() {
        let mut cmd = Command::new("python3");
        cmd.arg("emulator.py")
            .env("EMULATED_USER_PASSWORD", "Fc-hunter2-Aa9")
            .env("AWS_SECRET_ACCESS_KEY", "s3cr3t")
            .env("AWS_REGION", "us-east-1");
        let shown = shown(&cmd);
        assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("EMULATED_USER_PASSWORD=***"), "{shown}");
        assert!(
            shown.contains("AWS_REGION=\"us-east-1\"") && shown.ends_with("\"python3\" \"emulator.py\""),
            "{shown}"
        );
    }
}
