//! `firstcome-local`: read config, start the local service, print how to use it, serve until Ctrl-C/SIGTERM.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

// Every request allocates a little (headers, JSON, token claims); glibc malloc showed up as ~6% of
// a spike's CPU, mimalloc's thread-local free lists make that cheaper and less jittery.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The whole coupon service on this machine, on an embedded durable store.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where the database, the JWT secret and the admin token live.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Make sure a demo campaign is coming up (100 coupons, opening 30 s after start); one that
    /// has not opened yet is reused.
    #[arg(long)]
    demo: bool,
    /// Serve POST /api/dev/token to this machine (loopback): anyone here may sign in as any user.
    #[arg(long)]
    dev_tokens: bool,
    /// Ledger records written per second by the outbox worker.
    #[arg(long, default_value = "5000")]
    ledger_rate: NonZeroU32,
    /// HS256 secret for tokens (at least 32 bytes); generated into <data-dir>/jwt-secret if unset.
    #[arg(long, env = "FIRSTCOME_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Serve the built page from this directory at / (`cargo xtask run` passes target/page).
    #[arg(long)]
    site_dir: Option<PathBuf>,
    /// Connections held open at once (lowered to fit the descriptor limit); beyond it a new
    /// connection gets a 503 and is closed.
    #[arg(long, default_value = "10000")]
    max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from when its connection is
    /// idle: silent, idle keep-alive and trickling connections are closed after it.
    #[arg(long, default_value = "10")]
    header_timeout_secs: u64,
    /// Seconds shutdown waits for in-flight requests before closing their connections.
    #[arg(long, default_value = "10")]
    shutdown_deadline_secs: u64,
    /// Origins whose pages may call the API from a browser (CORS), comma-separated
    /// (`https://shop.example`); the page served here is same-origin and needs none.
    #[arg(long, value_parser = parse_origins, default_value = "")]
    allow_origin: Origins,
    /// Behind a reverse proxy on this host (the shipped systemd unit binds 127.0.0.1 for one):
    /// take each client's address from the last `X-Forwarded-For` entry the proxy appends, for
    /// the per-client limit. Without it every client behind a proxy is the proxy's loopback.
    /// Refuses `--dev-tokens` (everyone would be "this machine").
    #[arg(long)]
    trust_proxy: bool,
}

/// Flags that must not go together: dev sign-in trusts loopback peers, so it is refused unless
/// the server listens on loopback only and no proxy makes remote clients look local.
fn check_args(args: &Args) -> Result<(), String> {
    if args.dev_tokens && !args.addr.ip().is_loopback() {
        return Err(format!(
            "--dev-tokens lets anyone who reaches it sign in as anyone: listen on a loopback address, not {}",
            args.addr
        ));
    }
    if args.dev_tokens && args.trust_proxy {
        return Err("--dev-tokens cannot be used with --trust-proxy: behind a proxy every client is loopback".into());
    }
    Ok(())
}

/// One `--allow-origin` value: a comma-separated list (a bare `Vec` would make clap expect one
/// origin per value).
#[derive(Debug, Clone)]
struct Origins(Vec<axum::http::HeaderValue>);

fn parse_origins(list: &str) -> Result<Origins, String> {
    firstcome_api::parse_origins(list).map(Origins)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check_args(&args).map_err(anyhow::Error::msg)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Lines go to stderr from a writer thread: an `issued` line per coupon written inline cost the
    // rush a write(2) each. Not lossy: when its buffer is full, logging waits rather than drops.
    // The guard flushes what is buffered when main returns.
    let (writer, _flush_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    // Colours only for a person at a terminal, never into a redirected log file.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        logs.json().init()
    } else {
        logs.init()
    }

    let config = firstcome_local::Config {
        jwt_secret: args.jwt_secret,
        demo: args.demo,
        dev_tokens: args.dev_tokens,
        ledger_rate: args.ledger_rate,
        site_dir: args.site_dir,
        conns: firstcome_local::serve::ConnLimits {
            max_connections: args.max_connections.max(1),
            header_read: Duration::from_secs(args.header_timeout_secs.max(1)),
            shutdown_deadline: Duration::from_secs(args.shutdown_deadline_secs),
        },
        origins: args.allow_origin.0,
        ..firstcome_local::Config::new(args.data_dir)
    };
    let local = firstcome_local::start(config).await.context("starting firstcome-local")?;
    let listener = firstcome_local::serve::bind(args.addr).with_context(|| format!("binding {}", args.addr))?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("firstcome-local listening on {url}");
    println!("admin token: {}", local.admin_token_path.display());
    if let Some(id) = &local.demo {
        match &local.config.site_dir {
            Some(_) => println!("demo campaign: {url}/e/{id} (100 coupons; marketing page: {url}/admin)"),
            None => println!("demo campaign: {url}/api/campaigns/{id} (100 coupons)"),
        }
    }
    if let (Some(id), true) = (&local.demo, local.config.dev_tokens) {
        println!(
            "try: TOKEN=$(curl -s -X POST {url}/api/dev/token -d '{{\"user_id\":\"me\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/') && \
             curl -s -X POST -H \"Authorization: Bearer $TOKEN\" {url}/api/campaigns/{id}/claims"
        );
    } else {
        println!(
            "try: curl -s -H \"Authorization: Bearer $(cat {})\" {url}/api/admin/campaigns",
            local.admin_token_path.display()
        );
    }
    let app = firstcome_local::app(&local);
    let app = if args.trust_proxy { firstcome_local::trusting_forwarded_for(app) } else { app };
    firstcome_local::run_app(listener, local, app, firstcome_local::shutdown_signal()).await.context("serving")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn the_command_line_parses_with_defaults_and_with_every_protection_flag() {
        let defaults = Args::try_parse_from(["firstcome-local"]).unwrap();
        assert!(defaults.allow_origin.0.is_empty());
        let args = Args::try_parse_from([
            "firstcome-local",
            "--allow-origin",
            "https://shop.example,http://127.0.0.1:3000",
            "--max-connections",
            "100",
            "--header-timeout-secs",
            "3",
            "--shutdown-deadline-secs",
            "2",
        ])
        .unwrap();
        assert_eq!(args.allow_origin.0.len(), 2);
        assert_eq!((args.max_connections, args.header_timeout_secs, args.shutdown_deadline_secs), (100, 3, 2));
        assert!(Args::try_parse_from(["firstcome-local", "--allow-origin", "*"]).is_err(), "a wildcard is refused");
    }

    #[test]
    fn dev_tokens_only_on_loopback_and_never_behind_a_trusted_proxy() {
        let check = |argv: &[&str]| super::check_args(&Args::try_parse_from(argv).unwrap());
        assert!(check(&["firstcome-local", "--dev-tokens"]).is_ok());
        assert!(check(&["firstcome-local", "--dev-tokens", "--addr", "[::1]:8080"]).is_ok());
        assert!(check(&["firstcome-local", "--trust-proxy"]).is_ok());
        assert!(check(&["firstcome-local", "--addr", "0.0.0.0:8080"]).is_ok());
        let remote = check(&["firstcome-local", "--dev-tokens", "--addr", "0.0.0.0:8080"]).unwrap_err();
        assert!(remote.contains("loopback"), "{remote}");
        let proxied = check(&["firstcome-local", "--dev-tokens", "--trust-proxy"]).unwrap_err();
        assert!(proxied.contains("--trust-proxy"), "{proxied}");
    }
}
