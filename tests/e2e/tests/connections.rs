//! The local server's connections, attacked the way they were found wanting: silent sockets,
//! idle keep-alive connections and header tricklers are closed after the header deadline; past
//! the connection cap a client gets a 503 in the API's shape; a trickler cannot hold shutdown.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use firstcome_local::Config;
use firstcome_local::serve::ConnLimits;
use firstcome_tests::TestApp;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(dir: &Path, conns: ConnLimits) -> Config {
    config_with(dir, conns, firstcome_api::LimitConfig::default())
}

fn config_with(dir: &Path, conns: ConnLimits, limits: firstcome_api::LimitConfig) -> Config {
    Config { dev_tokens: true, ledger_rate: NonZeroU32::new(1000).unwrap(), conns, limits, ..Config::new(dir) }
}

async fn serve(dir: &Path, conns: ConnLimits) -> TestApp {
    TestApp::spawn(config(dir, conns)).await
}

/// Reads until the peer closes (Ok(bytes)) or `within` passes (Err).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, &'static str> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err("still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a new connection and returns everything answered until the server closes.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(5)).await.unwrap()).into_owned()
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    exchange(addr, b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_trickling_connections_are_closed_after_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits { header_read: Duration::from_secs(1), ..ConnLimits::default() };
    let server = serve(dir.path(), limits).await;

    // Connected, never a byte.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // One request answered, then nothing more on the kept-alive connection.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "the idle one was served first");
    // A header that never ends: a byte every 100 ms, for longer than the deadline.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ").await.unwrap();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            if trickle.write_all(b"a").await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });

    // Each is closed by the server (generous bounds: the deadline is 1 s).
    assert!(read_to_close(&mut silent, Duration::from_secs(4)).await.is_ok(), "a silent socket stays open");
    assert!(read_to_close(&mut idle, Duration::from_secs(4)).await.is_ok(), "an idle keep-alive stays open");
    let cut = trickler.await.unwrap();
    assert!(cut.is_some(), "a header trickled byte by byte kept its connection for 6 s");

    // Meanwhile and afterwards, a normal request is served.
    assert!(healthz(server.addr).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_client_gets_a_503_and_service_resumes_when_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits { max_connections: 20, header_read: Duration::from_secs(30), ..ConnLimits::default() };
    let server = serve(dir.path(), limits).await;

    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The accept loop takes them in order; give it a moment to hold all twenty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = healthz(server.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");
    let body: Value = serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = healthz(server.addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_cannot_hold_shutdown_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnLimits {
        header_read: Duration::from_secs(60),
        shutdown_deadline: Duration::from_secs(1),
        ..ConnLimits::default()
    };
    let server = serve(dir.path(), limits).await;
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(b"POST /api/dev/token HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..100 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = Instant::now();
    assert!(server.stop_within(Duration::from_secs(8)).await, "shutdown still waiting on a trickler after 8 s");
    assert!(asked.elapsed() >= Duration::from_millis(900), "in-flight work got its grace period");
    trickler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_431_and_a_half_sent_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let limits = firstcome_api::LimitConfig {
        request_timeout: Duration::from_millis(500),
        ..firstcome_api::LimitConfig::default()
    };
    let server = TestApp::spawn(config_with(dir.path(), ConnLimits::default(), limits)).await;
    let mut many = b"GET /healthz HTTP/1.1\r\nhost: t\r\n".to_vec();
    for i in 0..=firstcome_local::serve::MAX_HEADERS {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(exchange(server.addr, &many).await.starts_with("HTTP/1.1 431"), "101 headers");

    let mut large = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: ".to_vec();
    large.extend(std::iter::repeat_n(b'a', 40 * 1024));
    large.extend_from_slice(b"\r\n\r\n");
    let refused = exchange(server.addr, &large).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "a 40 KiB header: {}", &refused[..refused.len().min(80)]);

    // Half a body, then silence: 408 in the API's error shape, at the request timeout.
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /api/dev/token HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"user_id\"")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("an answer in time").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "timeout");
    assert!(started.elapsed() >= Duration::from_millis(450), "not before the timeout: {:?}", started.elapsed());

    // And a normal request still works.
    assert!(healthz(server.addr).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}
