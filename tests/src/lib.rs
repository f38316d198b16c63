//! Helpers for black-box tests and load tools: a keep-alive HTTP/1.1 JSON client and a
//! `firstcome-local` child process that can be started, killed with SIGKILL and restarted.

pub mod rehearse;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad request")]
    Build(#[from] hyper::http::Error),
    #[error("request failed")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the response body failed")]
    Body(#[from] hyper::Error),
    #[error("response is not JSON")]
    Json(#[from] serde_json::Error),
}

/// A pooled keep-alive HTTP/1.1 client speaking JSON.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self { inner: HyperClient::builder(TokioExecutor::new()).build(connector) }
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let res = self.inner.request(req.body(Full::new(payload))?).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, value))
    }

    pub async fn get(&self, url: &str, token: Option<&str>) -> Result<(u16, Value), ClientError> {
        self.call(Method::GET, url, token, None).await
    }

    pub async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        self.call(Method::POST, url, token, body).await
    }
}

/// Builds `firstcome-local` with the profile this test binary was built with (so the child is
/// never a stale build) and returns its path.
pub fn local_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps layout").to_owned();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "--quiet", "-p", "firstcome-local", "--bin", "firstcome-local"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("running cargo build for firstcome-local");
    assert!(status.success(), "building firstcome-local failed");
    profile_dir.join("firstcome-local")
}

/// A `firstcome-local` child process on a free loopback port.
pub struct LocalProcess {
    child: Child,
    pub url: String,
}

impl LocalProcess {
    /// Starts the server on `data_dir` and waits until it prints its URL.
    pub fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
