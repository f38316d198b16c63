//! A connection attack run beside a scenario (`--hold-idle N`, `--hold-slow N`): N connections
//! held open and silent, and N sending a request head one byte a second, each reopened as soon
//! as the server closes it (as its header deadline does), for as long as the scenario runs. The
//! scenario's latencies then say what customers get while the server is being squatted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How many connections each kind opened (more than asked for means the server closed some),
/// and how long each stayed open: the measure of a header deadline that does not depend on how
/// quickly a slow machine lets the squatters in (a connect that waits seconds for a full accept
/// queue opens fewer times in a run, but once open it is still closed on time).
#[derive(Debug)]
pub struct Opened {
    pub idle: AtomicU64,
    pub slow: AtomicU64,
    epoch: Instant,
    /// Per squatter: when its current connection opened, in ms after `epoch` plus one (0: none).
    open_since: Vec<AtomicU64>,
    /// The longest any connection stayed open before the server closed it, in ms.
    longest_closed_ms: AtomicU64,
}

impl Opened {
    pub fn new(squatters: usize) -> Self {
        Self {
            idle: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            epoch: Instant::now(),
            open_since: (0..squatters).map(|_| AtomicU64::new(0)).collect(),
            longest_closed_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn opened(&self, slot: usize) {
        self.open_since[slot].store(self.now_ms() + 1, Ordering::Relaxed);
    }

    fn closed(&self, slot: usize) {
        let since = self.open_since[slot].swap(0, Ordering::Relaxed);
        if since > 0 {
            self.longest_closed_ms.fetch_max(self.now_ms() + 1 - since, Ordering::Relaxed);
        }
    }

    /// The longest any squatter's connection has been open so far: closed ones by how long they
    /// lasted, open ones by their age now.
    pub fn longest_open_ms(&self) -> u64 {
        let now = self.now_ms() + 1;
        let open = self.open_since.iter().map(|s| s.load(Ordering::Relaxed)).filter(|&s| s > 0).map(|s| now - s);
        open.fold(self.longest_closed_ms.load(Ordering::Relaxed), u64::max)
    }
}

/// Runs until dropped (abort the task to stop it: the JoinSet takes every connection with it).
pub async fn hold(addr: SocketAddr, idle: usize, slow: usize, opened: Arc<Opened>) {
    let mut set = JoinSet::new();
    for slot in 0..idle {
        let opened = opened.clone();
        set.spawn(async move {
            loop {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.idle.fetch_add(1, Ordering::Relaxed);
                opened.opened(slot);
                let mut buf = [0u8; 256];
                // Silent until the server closes it.
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                opened.closed(slot);
            }
        });
    }
    for slot in idle..idle + slow {
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
                opened.opened(slot);
                for b in head {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                opened.closed(slot);
            }
        });
    }
    while set.join_next().await.is_some() {}
}
