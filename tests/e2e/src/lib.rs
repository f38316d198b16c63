//! Helpers for the black-box tests: `TestApp`, the local service in-process on a free port with
//! typed calls (`app`); a `firstcome-local` child process that can be started, killed with
//! SIGKILL and restarted; and a real headless Chromium driven over WebDriver (`browser`). The
//! HTTP client is the load tool's (`firstcome_rehearse::Client`).

pub mod app;
pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use app::{Answer, TestApp, user_token};
pub use firstcome_rehearse::Client;

/// Builds `firstcome-local` with the profile this test binary was built with (so the child is
/// never a stale build) and returns its path.
pub fn local_binary() -> PathBuf {
    workspace_binary("firstcome-local")
}

/// Builds `firstcome-rehearse`, the load tool, the same way.
pub fn rehearse_binary() -> PathBuf {
    workspace_binary("firstcome-rehearse")
}

fn workspace_binary(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps layout").to_owned();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `--workspace --bins`, not `-p package`: a one-package build resolves features differently
    // and recompiles every dependency into a second copy (CI's disk ran out); this is the same
    // build xtask and `cargo lambda watch` make.
    cargo.args(["build", "--quiet", "--workspace", "--bins"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("running cargo build");
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// `firstcome-rehearse` options against a local server whose data dir is `data_dir` (its JWT
/// secret and admin token): quiet, the campaign opening half a second after it is created, then
/// `extra`.
pub fn rehearse_options(url: &str, data_dir: &Path, extra: &[&str]) -> firstcome_rehearse::Options {
    use clap::Parser;
    let (jwt, admin) = (data_dir.join("jwt-secret"), data_dir.join("admin-token"));
    let mut args = vec![
        "firstcome-rehearse",
        "--url",
        url,
        "--jwt-secret-file",
        jwt.to_str().expect("a UTF-8 path"),
        "--admin-token-file",
        admin.to_str().expect("a UTF-8 path"),
        "--quiet",
        "--lead",
        "0.5",
    ];
    args.extend_from_slice(extra);
    firstcome_rehearse::Options::parse_from(args)
}

/// A `firstcome-local` child process on a free loopback port.
pub struct LocalProcess {
    child: Child,
    pub url: String,
}

impl LocalProcess {
    /// Starts the server on `data_dir` and waits until it prints its URL.
    pub fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(binary, data_dir, extra, "warn", Stdio::inherit())
    }

    /// Like `start`, logging JSON lines at info (what an operator runs with) into `log`.
    pub fn start_logging(binary: &Path, data_dir: &Path, extra: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("creating the log file");
        let mut args = extra.to_vec();
        args.push("--log-json");
        Self::spawn(binary, data_dir, &args, "info", Stdio::from(file))
    }

    fn spawn(binary: &Path, data_dir: &Path, extra: &[&str], rust_log: &str, stderr: Stdio) -> Self {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning firstcome-local");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("firstcome-local listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).expect("firstcome-local printed its URL");
        Self { child, url }
    }

    /// SIGKILL: no graceful shutdown, no flush. Whatever was durable must survive this.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        self.child.wait().expect("reaped").success()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
