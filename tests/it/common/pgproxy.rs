//! A TCP proxy in front of PostgreSQL that can lose the answer to a `COMMIT`: armed, it
//! forwards the next `COMMIT` of a transaction that wrote a replay marker (a referral's
//! acceptance; housekeeping's transactions pass untouched) to the server (which commits),
//! stops relaying the server's answer, and cuts the connection. The client is left with a transaction whose outcome it
//! cannot know — what a database crash or a network fault during `COMMIT` does.
//!
//! It can also play a database that went down ([`PgProxy::set_down`]): every relayed
//! connection is cut and new ones are closed at once, until it is brought back; it counts
//! the connections attempted through it ([`PgProxy::attempts`]).
//!
//! It reads the PostgreSQL frontend protocol just enough: untyped start-up messages
//! (`SSLRequest`, `StartupMessage`), then typed messages (`type`, `length`); a `COMMIT` is a
//! simple `Query` (`'Q'`) message, as sqlx sends it. Connect with `sslmode=disable`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy.
pub struct PgProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    kill: tokio::sync::watch::Sender<u64>,
}

impl PgProxy {
    /// Listens on a free port and relays to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (kill, _) = tokio::sync::watch::channel(0u64);
        let (a, c, up) = (armed.clone(), cuts.clone(), upstream.to_owned());
        let (d, n, k) = (down.clone(), attempts.clone(), kill.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&up).await else {
                    continue;
                };
                let mut killed = k.subscribe();
                let relaying = relay(client, server, a.clone(), c.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = relaying => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            armed,
            cuts,
            down,
            attempts,
            kill,
        }
    }

    /// Down: every relayed connection is cut at once and new ones are closed on arrival.
    /// Up again: connections are relayed as before.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.kill.send_modify(|g| *g += 1);
        }
    }

    /// Connections attempted through the proxy so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The next `COMMIT` through the proxy reaches the server; its answer never returns.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many connections were cut after a `COMMIT`.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// `url` (a `postgres://…@127.0.0.1:5432/…` URL) through this proxy, without TLS.
    pub fn url(&self, url: &str) -> String {
        let through = url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        let sep = if through.contains('?') { '&' } else { '?' };
        format!("{through}{sep}sslmode=disable")
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_back = cut.clone();
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut_back.load(Ordering::SeqCst) {
                return; // the answer is lost
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut started = false;
    let mut accepting = false;
    loop {
        // One message: untyped during start-up, typed afterwards.
        let mut head = vec![0u8; if started { 5 } else { 4 }];
        if client_read.read_exact(&mut head).await.is_err() {
            break;
        }
        let len_at = usize::from(started);
        let len = u32::from_be_bytes(head[len_at..len_at + 4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if client_read.read_exact(&mut body).await.is_err() {
            break;
        }
        let commit = started && head[0] == b'Q' && body.windows(6).any(|w| w == b"COMMIT");
        if started && body.windows(26).any(|w| w == b"INSERT INTO replay_markers") {
            accepting = true;
        }
        if !started {
            // SSLRequest and GSSENCRequest are 8 bytes; anything else is the start-up.
            let code = body
                .get(..4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
            started = !(len == 8 && matches!(code, Some(80_877_103 | 80_877_104)));
        }
        if commit && !accepting {
            // Not an acceptance: pass it on.
        } else if commit && armed.swap(false, Ordering::SeqCst) {
            cuts.fetch_add(1, Ordering::SeqCst);
            cut.store(true, Ordering::SeqCst);
            let _ = server_write.write_all(&head).await;
            let _ = server_write.write_all(&body).await;
            // The server commits and answers; the answer is dropped and the client's side
            // closed (by the relay back, on the answer), then the server's.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            back.abort();
            return;
        }
        if commit {
            accepting = false;
        }
        if server_write.write_all(&head).await.is_err()
            || server_write.write_all(&body).await.is_err()
        {
            break;
        }
    }
    back.abort();
}
