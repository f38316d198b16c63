//! A real headless Chromium, driven by `/usr/bin/chromedriver` over WebDriver (fantoccini).
//! Each `Browser` has its own driver process (in its own process group, killed on drop, so no
//! Chromium outlives a test) and a fresh profile directory. `cargo xtask test` installs both and
//! builds the page into `target/page` first.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Where `cargo xtask site` puts the built page.
pub fn site_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/page");
    if !dir.join("index.html").is_file() {
        // One line, not a panic per test: the page is built by `cargo xtask site` (and `test`).
        // Straight to stderr: the test harness captures `eprintln!`, and exiting would lose it.
        let _ = writeln!(
            std::io::stderr(),
            "{} has no index.html: build the page with `cargo xtask site`, or run `cargo xtask test`",
            dir.display()
        );
        std::process::exit(1);
    }
    dir
}

/// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    name: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile; `name` labels screenshots.
    pub async fn start(name: &str) -> Self {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: dropping the browser kills the driver and every Chromium it spawned.
            .process_group(0)
            .spawn()
            .expect("starting /usr/bin/chromedriver (cargo xtask test installs it)");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--window-size=420,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = Capabilities::new();
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
        caps.insert("goog:chromeOptions".into(), json!({ "args": args, "binary": binary }));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util_connector();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not start: {e}"),
            }
        };
        Self { client, driver, _profile: profile, name: name.to_owned() }
    }

    /// Runs `script` in every new document before the page's own scripts (e.g. a skewed clock).
    pub async fn before_every_page(&self, script: &str) {
        let cmd = Cdp(json!({ "cmd": "Page.addScriptToEvaluateOnNewDocument", "params": { "source": script } }));
        self.client.issue_cmd(cmd).await.expect("CDP command");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    fn by_testid(id: &str) -> String {
        format!("[data-testid=\"{id}\"]")
    }

    /// Waits (up to 15 s) for the element and returns its text.
    pub async fn text(&self, testid: &str) -> String {
        let css = Self::by_testid(testid);
        match self.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&css)).await {
            Ok(el) => el.text().await.unwrap(),
            Err(e) => {
                // What the customer would have seen instead: the failure's whole story.
                let page = self.client.execute("return document.body.innerText;", vec![]).await;
                self.screenshot(&format!("no-{testid}")).await;
                panic!("{testid} never appeared ({e}); the page says {page:?}")
            }
        }
    }

    /// Waits (up to `secs`) until the element's text satisfies `ok`; returns that text.
    pub async fn wait_text(&self, testid: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(&Self::by_testid(testid))).await
                && let Ok(t) = el.text().await
            {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.screenshot("timeout").await;
        panic!("{testid} never satisfied the condition; last text {last:?}");
    }

    pub async fn is_enabled(&self, testid: &str) -> bool {
        let css = Self::by_testid(testid);
        match self.client.find(Locator::Css(&css)).await {
            Ok(el) => el.is_enabled().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    pub async fn click(&self, testid: &str) {
        let css = Self::by_testid(testid);
        let el = self.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&css)).await.unwrap();
        el.click().await.unwrap_or_else(|e| panic!("clicking {testid}: {e}"));
    }

    /// Types into the element once it can take input: an editor the page has just mounted may
    /// be in the DOM a moment before it is interactable (seen on a slow machine).
    pub async fn type_into(&self, testid: &str, text: &str) {
        let css = Self::by_testid(testid);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let el = self.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&css)).await.unwrap();
            match el.clear().await {
                Ok(()) => {
                    el.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {testid}: {e}"));
                    return;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{testid} never took input: {e}"),
            }
        }
    }

    /// Sets an input's value as the user would (an `input` event), e.g. a `datetime-local`.
    pub async fn set_value(&self, testid: &str, value: &str) {
        let script = "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
                      el.dispatchEvent(new Event('input', { bubbles: true }));";
        self.client.execute(script, vec![json!(Self::by_testid(testid)), json!(value)]).await.unwrap();
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Saves a screenshot under `target/screenshots/<browser>-<state>.png` for humans.
    pub async fn screenshot(&self, state: &str) {
        if let Ok(png) = self.client.screenshot().await {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{}-{state}.png", self.name)), png);
        }
    }
}

fn hyper_util_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    hyper_util::client::legacy::connect::HttpConnector::new()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own group: signal the whole group (driver and every Chromium).
        let pgid = self.driver.id() as i32;
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.driver.wait();
    }
}
