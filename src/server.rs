//! The listeners: the mutual-TLS API listener with its own accept loop (each handshake in
//! its own task under a timeout, so one slow client cannot stall the others), and the plain
//! admin listener. Both stop accepting on shutdown and let in-flight requests finish.

mod activity;
pub mod admission;
pub mod certificates;
mod idle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api;
use crate::api::principal::PeerCertificate;
use crate::runtime::Runtime;
use crate::{telemetry, tls};

/// How long in-flight requests may run after shutdown begins (above the 60 s long-poll
/// ceiling would keep a stuck client's connection forever; 30 s is what orchestrators give).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Bound listeners, ready to serve.
pub struct Server {
    api: TcpListener,
    admin: TcpListener,
    runtime: Arc<Runtime>,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port).
    pub async fn bind(
        runtime: Arc<Runtime>,
        api_addr: SocketAddr,
        admin_addr: SocketAddr,
    ) -> Result<Self, ServerError> {
        let api = TcpListener::bind(api_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: api_addr,
                source,
            })?;
        let admin = TcpListener::bind(admin_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: admin_addr,
                source,
            })?;
        Ok(Self {
            api,
            admin,
            runtime,
        })
    }

    /// The API listener's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests for at most
    /// [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let admin = tokio::spawn(serve_admin(
            self.admin,
            self.runtime.clone(),
            shutdown.clone(),
        ));
        serve_api(self.api, self.runtime, shutdown).await;
        let _ = admin.await;
    }
}

/// Resolves once shutdown has been requested (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Resolves once a configuration put in force after the connection began revokes its
/// certificate; never otherwise.
async fn revoked_later(rt: Arc<Runtime>, cert: Option<tls::CertId>) {
    let Some(cert) = cert else {
        return std::future::pending().await;
    };
    let mut changes = rt.watch_config();
    while changes.changed().await.is_ok() {
        if rt.snapshot().transport.revoked.contains(&cert) {
            return;
        }
    }
    std::future::pending().await
}

/// Open connections the admin listener serves at once: probes, a Prometheus scraper and an
/// operator need a handful; anything more on this port is not them.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The plain-HTTP admin listener, with the API's header, idle and request time limits and a
/// small connection cap (a partial header held open is closed after `header_timeout`).
async fn serve_admin(listener: TcpListener, rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let router = api::admin::router(rt.clone());
    let graceful = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "admin").increment(1);
            continue;
        };
        let limits = rt.snapshot().config.settings.limits.clone();
        let router = router
            .clone()
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                http::StatusCode::SERVICE_UNAVAILABLE,
                limits.request_timeout,
            ));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = idle::IdleTimeout::new(tcp, limits.idle_timeout);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

/// Waits for a new socket's first byte (the TLS ClientHello) for at most `limit`; `false` if
/// none came (a silent socket, or one closed at once).
async fn first_byte(tcp: &tokio::net::TcpStream, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, tcp.peek(&mut one)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Counts a failed handshake and logs it, at a bounded rate.
fn handshake_failed(peer: SocketAddr, reason: &'static str) {
    metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "reason" => reason).increment(1);
    if telemetry::connection_log_allowed() {
        tracing::info!(%peer, reason, "TLS handshake failed (further lines this second suppressed; see refex_tls_handshake_failures_total)");
    }
}

async fn serve_api(listener: TcpListener, rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let router = api::router(rt.clone());
    let graceful = GracefulShutdown::new();
    let admission = Arc::new(admission::Admission::default());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let snapshot = rt.snapshot();
        let limits = snapshot.config.settings.limits.clone();
        // Admitted before any byte is read, or closed at once.
        let (open, handshaking) = match admission.admit(peer.ip(), &limits) {
            Ok(slots) => slots,
            Err(refused) => {
                metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => refused.as_str())
                    .increment(1);
                if telemetry::connection_log_allowed() {
                    tracing::warn!(%peer, cap = refused.as_str(), "connection refused at a cap (further lines this second suppressed; see refex_connections_refused_total)");
                }
                drop(tcp);
                continue;
            }
        };
        metrics::gauge!(telemetry::CONNECTIONS_OPEN).set(admission.open() as f64);
        let acceptor = TlsAcceptor::from(snapshot.transport.tls.shared());
        drop(snapshot);
        let router = router.clone();
        let watcher = graceful.watcher();
        let rt = rt.clone();
        let admission = admission.clone();
        tokio::spawn(async move {
            serve_connection(
                Admitted {
                    tcp,
                    peer,
                    limits,
                    acceptor,
                    handshaking,
                    admission: admission.clone(),
                },
                router,
                watcher,
                rt,
            )
            .await;
            drop(open);
            metrics::gauge!(telemetry::CONNECTIONS_OPEN).set(admission.open() as f64);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace ran out; closing remaining connections"),
    }
}

/// A socket admitted at accept, with what its connection needs.
struct Admitted {
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: crate::config::settings::Limits,
    acceptor: TlsAcceptor,
    handshaking: admission::HandshakeSlot,
    admission: Arc<admission::Admission>,
}

/// One admitted connection: its first byte within the limit, its TLS handshake (the slot is
/// given back when it ends, or taken away if it stalls while others wait), its certificate
/// under its cap of open connections, then HTTP until it closes, carries no request for the
/// idle time, or is revoked.
async fn serve_connection(
    admitted: Admitted,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    rt: Arc<Runtime>,
) {
    let Admitted {
        tcp,
        peer,
        limits,
        acceptor,
        mut handshaking,
        admission,
    } = admitted;
    let _ = tcp.set_nodelay(true);
    // Silent or stalled, a socket gives its slot up when cut off for a newer one.
    tokio::select! {
        spoke = first_byte(&tcp, limits.first_byte_timeout) => if !spoke {
            handshake_failed(peer, "no-client-hello");
            return;
        },
        () = handshaking.cut() => return handshake_failed(peer, "cut-off-for-a-newer-socket"),
    }
    let stream = idle::IdleTimeout::new(tcp, limits.idle_timeout);
    let tls = tokio::select! {
        done = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)) => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return handshake_failed(peer, tls::handshake_failure_reason(&e)),
            Err(_) => return handshake_failed(peer, "timeout"),
        },
        () = handshaking.cut() => return handshake_failed(peer, "cut-off-for-a-newer-socket"),
    };
    drop(handshaking);
    metrics::counter!(telemetry::TLS_HANDSHAKES).increment(1);
    let Some(fingerprint) = tls::peer_fingerprint(tls.get_ref().1) else {
        // Unreachable with client authentication required; refuse rather than serve.
        return;
    };
    let snapshot = rt.snapshot();
    let cap = match snapshot.config.principal(&fingerprint) {
        Some(principal) => {
            note_certificate_expiry(
                principal,
                tls.get_ref().1,
                rt.clock.now(),
                snapshot.config.settings.tls.certificate_warn_before,
            );
            limits.max_connections_per_certificate
        }
        None => admission::UNMAPPED_CONNECTIONS,
    };
    let _certificate = match admission.admit_certificate(fingerprint, cap) {
        Ok(slot) => slot,
        Err(refused) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => refused.as_str())
                .increment(1);
            if telemetry::connection_log_allowed() {
                tracing::warn!(%peer, cap, "connection closed: its certificate holds its cap of open connections (further lines this second suppressed)");
            }
            return;
        }
    };
    let cert_id = tls::peer_cert_id(tls.get_ref().1);
    let activity = activity::Activity::new();
    let requests = activity.clone();
    let service = router
        .map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerCertificate(fingerprint));
                req
            },
        )
        .map_future(move |response| {
            let request = requests.begin();
            async move {
                let answered = response.await;
                drop(request);
                answered
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(api::limits::PARSER_HEADER_BYTES)
        .max_headers(api::limits::PARSER_MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(api::limits::PARSER_HEADER_BYTES as u32);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
    // A reload whose CRL revokes this connection's certificate ends the connection
    // (the next handshake with it fails anyway).
    let revoked = revoked_later(rt.clone(), cert_id);
    tokio::select! {
        ended = watcher.watch(conn.into_owned()) => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = revoked => {
            tracing::info!(%peer, "certificate revoked by a reload: connection closed");
        }
        () = activity.idle(limits.idle_timeout) => {
            tracing::debug!(%peer, "no request for the idle time: connection closed");
        }
    }
}
/// Notes when a registered certificate expires (`certificates`: the holder's gauge), and
/// logs a warning the first time this replica sees one expiring within `warn_before`.
fn note_certificate_expiry(
    principal: &crate::identity::Principal,
    conn: &rustls::ServerConnection,
    now: std::time::SystemTime,
    warn_before: std::time::Duration,
) {
    let Some(at) = tls::peer_expiry(conn) else {
        return;
    };
    if certificates::note(principal, at) {
        if let Some(left) = crate::readiness::expiring(at, now, warn_before) {
            tracing::warn!(
                partner = %principal.partner,
                holder = %certificates::holder(principal),
                "a client certificate {left}: issue its renewal (refex ca issue), add the new \
                 fingerprint beside the old one and reload"
            );
        }
    }
}
