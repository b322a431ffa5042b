//! Connection-level measurements: full and resumed mutual-TLS handshakes per second, and the
//! gateway's resident memory per idle mTLS connection.
//!
//! Each handshake is followed by one small HTTP/1.1 request (`GET /v1/whoami`, which maps
//! the certificate to its principal) so that the server has verified the client certificate
//! before the connection counts; in TLS 1.3 the client finishes its side before that.
//!
//! Out of scope: submissions (`driver`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::BenchError;
use super::gateway::GatewayProcess;

/// How long the gateway is given to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// Handshakes per second, and how many of them resumed a session.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HandshakeRate {
    /// Connections completed (handshake + one request).
    pub completed: u64,
    /// Connections that failed.
    pub errors: u64,
    /// Completed per second.
    pub per_second: f64,
    /// Share of completed handshakes that resumed a session (0 for full handshakes).
    pub resumed_share: f64,
}

/// Resident memory per idle connection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleMemory {
    /// Idle connections held open.
    pub connections: usize,
    /// The gateway's RSS before, in bytes.
    pub rss_before: u64,
    /// The gateway's RSS with every connection open, in bytes.
    pub rss_after: u64,
    /// `(after - before) / connections`, in bytes.
    pub bytes_per_connection: f64,
}

fn connector(tls: &rustls::ClientConfig, resume: bool) -> TlsConnector {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    TlsConnector::from(Arc::new(tls))
}

/// One connection: TCP connect, handshake, one request whose answer headers are read. The
/// connection stays open (keep-alive) for the caller.
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<(TlsStream<TcpStream>, bool), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut read = 0;
    // Read until the end of the headers and a body that fits this small answer.
    loop {
        let n = tls
            .read(&mut buf[read..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        read += n;
        let text = String::from_utf8_lossy(&buf[..read]);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if read >= end + 4 + length {
                if !text.starts_with("HTTP/1.1 200") {
                    return Err(format!(
                        "answer {}",
                        text.lines().next().unwrap_or_default()
                    ));
                }
                return Ok((tls, resumed));
            }
        }
        if read == buf.len() {
            return Err("answer too long".into());
        }
    }
}

/// Handshakes (each with one request, then closed) from `concurrency` tasks until `max`
/// completed or `limit` passed. With `resume`, the client keeps rustls's session cache, so
/// after the first handshake the rest resume.
pub async fn handshakes(
    addr: SocketAddr,
    tls: &rustls::ClientConfig,
    resume: bool,
    concurrency: usize,
    max: u64,
    limit: Duration,
) -> HandshakeRate {
    let connector = connector(tls, resume);
    if resume {
        // Prime the session cache.
        let _ = connect(&connector, addr).await;
    }
    let completed = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connector, completed, resumed, errors) = (
            connector.clone(),
            completed.clone(),
            resumed.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline && completed.load(Ordering::Relaxed) < max {
                match connect(&connector, addr).await {
                    Ok((mut stream, was_resumed)) => {
                        let _ = stream.shutdown().await;
                        completed.fetch_add(1, Ordering::Relaxed);
                        if was_resumed {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let completed = completed.load(Ordering::Relaxed);
    HandshakeRate {
        completed,
        errors: errors.load(Ordering::Relaxed),
        per_second: completed as f64 / seconds.max(1e-9),
        resumed_share: resumed.load(Ordering::Relaxed) as f64 / completed.max(1) as f64,
    }
}

/// Opens `n` mutual-TLS connections that each made one request and then sit idle, and reads
/// the gateway's RSS before and after.
pub async fn idle_memory(
    gateway: &GatewayProcess,
    tls: &rustls::ClientConfig,
    n: usize,
) -> Result<IdleMemory, BenchError> {
    let connector = connector(tls, true);
    tokio::time::sleep(SETTLE).await;
    let rss_before = gateway.rss_bytes()?;
    let addr = gateway.api;
    let mut held = Vec::with_capacity(n);
    // A few at a time, as partner systems would arrive, not one burst.
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut tasks = Vec::new();
        for _ in chunk {
            let connector = connector.clone();
            tasks.push(tokio::spawn(async move { connect(&connector, addr).await }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok((stream, _))) => held.push(stream),
                Ok(Err(e)) => return Err(BenchError::Measure(format!("idle connection: {e}"))),
                Err(e) => return Err(BenchError::Measure(format!("idle connection: {e}"))),
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after = gateway.rss_bytes()?;
    let connections = held.len();
    drop(held);
    Ok(IdleMemory {
        connections,
        rss_before,
        rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) as f64
            / connections.max(1) as f64,
    })
}

/// A bare rustls server beside the gateway, for comparison: the gateway's own TLS
/// configuration (certificate, client-certificate verifier, CRLs, versions) and nothing
/// else, answering each request on a connection with a fixed `200`. It runs on its own
/// runtime with one worker per core, as the gateway does, and stops when dropped.
pub struct BareRustls {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareRustls {
    /// Starts it on a free loopback port.
    pub fn start(tls: Arc<rustls::ServerConfig>, cores: usize) -> Result<Self, BenchError> {
        let fail = |e: std::io::Error| BenchError::Setup(format!("bare rustls server: {e}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.max(1))
            .enable_all()
            .build()
            .map_err(fail)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            // Out of descriptors, say: wait rather than spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _ = tcp.set_nodelay(true);
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                answer_each_request(tls).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for BareRustls {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads requests (headers only; the handshake measurement sends no bodies) and answers each
/// with the same small `200` until the client closes.
async fn answer_each_request(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let mut buf = vec![0u8; 4096];
    let mut read = 0;
    loop {
        let Ok(n) = tls.read(&mut buf[read..]).await else {
            return;
        };
        if n == 0 {
            return;
        }
        read += n;
        if let Some(end) = buf[..read].windows(4).position(|w| w == b"\r\n\r\n") {
            if tls.write_all(ANSWER).await.is_err() {
                return;
            }
            buf.copy_within(end + 4..read, 0);
            read -= end + 4;
        } else if read == buf.len() {
            return;
        }
    }
}
