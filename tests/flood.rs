//! Connections are governed before TLS: a flood of sockets that never send a ClientHello,
//! against a gateway process started with a soft open-file limit of 1024 (a default service's),
//! neither takes the gateway down nor keeps partners out. The gateway raises its open-file
//! limit at start, admits sockets under its caps (open connections, handshakes in flight,
//! handshakes per address), closes a silent socket after `limits.first_byte_timeout`, and
//! logs refusals at a bounded rate while counting every one.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpSocket;

/// Silent sockets in the flood, from this many loopback addresses.
const FLOOD: usize = 3000;
const ADDRESSES: usize = 3;

fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(common::repo().join("partners"), dir.path().join("partners"))
        .unwrap();
    std::os::unix::fs::symlink(common::repo().join("schemas"), dir.path().join("schemas")).unwrap();
    common::process::write_toml(dir.path(), "");
    dir
}

async fn silent_socket(from: IpAddr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// Keeps about `FLOOD` silent sockets open from `ADDRESSES` loopback addresses, opening a
/// new one for each the gateway closes, until `stop`.
async fn flood(api: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let mut ring: VecDeque<tokio::net::TcpStream> = VecDeque::with_capacity(FLOOD);
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let from: IpAddr = format!("127.0.0.{}", 2 + i % ADDRESSES).parse().unwrap();
        i += 1;
        if let Some(s) = silent_socket(from, api).await {
            opened.fetch_add(1, Ordering::SeqCst);
            ring.push_back(s);
            if ring.len() > FLOOD {
                ring.pop_front();
            }
        }
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_sockets_does_not_keep_partners_out() {
    let dir = checkout();
    let served = common::process::serve_with_open_files(dir.path(), "sqlite://data/refex.db", 1024);
    let api: SocketAddr = format!("127.0.0.1:{}", served.api).parse().unwrap();
    let (stop, opened) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flooding = tokio::spawn(flood(api, stop.clone(), opened.clone()));
    while opened.load(Ordering::SeqCst) < FLOOD {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // While the flood goes on, partners are served, each request on a new connection (a
    // full handshake), within a bound far above a handshake's time.
    let mut served_ok = 0;
    for _ in 0..20 {
        let res = served
            .system("imara")
            .get(served.url("/v1/inbox"))
            .timeout(Duration::from_secs(8))
            .send()
            .await
            .expect("a partner is served during the flood");
        assert_eq!(res.status(), 200);
        served_ok += 1;
    }
    stop.store(true, Ordering::SeqCst);
    flooding.await.unwrap();

    // The caps refused the flood (counted), and the silent sockets it let in were closed.
    let metrics = reqwest::get(served.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let refused = total("refex_connections_refused_total");
    let silent = total("refex_tls_handshake_failures_total{reason=\"no-client-hello\"}");
    assert!(refused > 0.0, "{metrics}");
    eprintln!(
        "flood: {} silent sockets opened from {ADDRESSES} addresses ({FLOOD} kept open), \
         {refused} refused at a cap, {silent} closed for sending no ClientHello, \
         {served_ok}/20 partner requests served",
        opened.load(Ordering::SeqCst)
    );
    served.stop();
}
