//! A connection attack run beside a scenario (`--hold-idle N`, `--hold-slow N`): N connections
//! held open and silent, and N sending a request head one byte a second, each reopened as soon
//! as the server closes it (as its header deadline does), for as long as the scenario runs. The
//! scenario's latencies then say what customers get while the server is being squatted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How many connections each kind opened (more than asked for means the server closed some).
#[derive(Debug, Default)]
pub struct Opened {
    pub idle: AtomicU64,
    pub slow: AtomicU64,
}

/// Runs until dropped (abort the task to stop it: the JoinSet takes every connection with it).
pub async fn hold(addr: SocketAddr, idle: usize, slow: usize, opened: Arc<Opened>) {
    let mut set = JoinSet::new();
    for _ in 0..idle {
        let opened = opened.clone();
        set.spawn(async move {
            loop {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.idle.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 256];
                // Silent until the server closes it.
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        });
    }
    for _ in 0..slow {
        let opened = opened.clone();
        set.spawn(async move {
            let head =
                b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            loop {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.slow.fetch_add(1, Ordering::Relaxed);
                for b in head {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}
