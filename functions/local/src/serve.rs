//! The local server's connections: a cap with a clear refusal beyond it, a deadline for request
//! headers that also closes idle keep-alive connections, and a bounded graceful shutdown.
//!
//! `axum::serve` closes nothing by itself: silent sockets stay open forever, so a few hundred of
//! them exhaust the descriptors and the next customer's connect times out, and one client that
//! trickles header bytes holds graceful shutdown open for as long as it trickles. On Lambda, API
//! Gateway owns the connections; this is the local server's share of the same protection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use firstcome_wire::{ErrorBody, ErrorCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Connection limits of the local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections served at once; beyond it a connection gets a 503 and is closed.
    pub max_connections: usize,
    /// Time a client has to send a request's whole header, counted from the moment the
    /// connection is idle (accepted, or its last response sent): a silent socket, an idle
    /// keep-alive connection and a header trickled byte by byte are all closed after it.
    pub header_read: Duration,
    /// How long shutdown waits for in-flight requests before it closes their connections.
    pub shutdown_deadline: Duration,
}

/// Headers one request may carry (hyper's default, which keeps them on the stack).
pub const MAX_HEADERS: usize = 100;
/// Bytes of a request's head, start line included.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Descriptors kept free of connections: the store's files, the log, the refusals themselves.
const RESERVED_FDS: u64 = 64;
/// Refusals written at once; past that a connection over the cap is closed without a word.
const MAX_REFUSING: usize = 64;
/// A refused client that does not read its 503 within this is cut off.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

impl ConnLimits {
    /// `max_connections` lowered to what this process's descriptor limit leaves room for, so
    /// `accept` never fails for want of a descriptor (a refusal needs one too).
    pub fn within_fd_limit(mut self) -> Self {
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            let room = soft.saturating_sub(RESERVED_FDS + MAX_REFUSING as u64).max(1);
            self.max_connections = self.max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        self
    }
}

/// Connections the kernel completes and queues before `accept` takes them (capped by
/// `net.core.somaxconn`, 4096 on these machines). Tokio's `bind` asks for 1024; at the opening
/// second a few thousand clients connect at once, and past a full queue Linux drops the
/// handshake's last ACK: the client believes it is connected (a silent one forever, since the
/// server never learns of it) and a client that sends waits for SYN-ACK retries, 1 s and more.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (what `TcpListener::bind` does, deeper queue).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's bind does on Unix: a restarted server rebinds at once despite TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to `limits.shutdown_deadline` and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true)
        // A request's head: at most 32 KiB (a JWT is about 1 KiB) and hyper's 100 headers (kept
        // at its default: any other count moves the header array to the heap on every request);
        // beyond either, hyper answers 431 and closes.
        .max_header_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections as they end, so the set stays the size of what is open.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors despite the cap (another process's share), or a
                    // connection reset before it was accepted: wait a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                conns.spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        }));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_deadline) => {
            tracing::warn!(open = conns.len(), "shutdown deadline passed; closing the connections still open");
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Over the cap: a short 503 in the API's error shape, then close.
async fn refuse(mut stream: TcpStream) {
    metrics::counter!(firstcome_core::telemetry::SHED, "reason" => "connections").increment(1);
    let body = ErrorBody {
        error: ErrorCode::Overloaded,
        message: "this server holds as many connections as it can; retry shortly".into(),
        field: None,
    };
    let body = serde_json::to_string(&body).expect("an error body serialises");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The opening second's connects all complete while the server is busy: 2,000 clients
    /// connecting to a listener that accepts none of them yet each finish the handshake at once
    /// (tokio's default queue of 1,024 would leave the rest waiting for SYN retries, 1 s each).
    #[tokio::test]
    async fn two_thousand_connects_queue_while_the_server_is_not_accepting() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects: JoinSet<_> = (0..2000).map(|_| TcpStream::connect(addr)).collect();
        let clients = tokio::time::timeout(Duration::from_millis(900), connects.join_all()).await;
        let clients = clients.expect("every connect completed before the first SYN retry");
        assert!(clients.iter().all(Result::is_ok));
        // And every one of them is there to accept, none dropped.
        let mut accepted = Vec::new();
        while accepted.len() < clients.len() {
            let next = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            accepted.push(next.expect("a queued connection to accept").unwrap());
        }
    }
}
