//! Failing fast while the store is unreachable. Once a request meets an unreachable store
//! the breaker opens: every request that needs the store is answered `503` with
//! `Retry-After` at once (rather than held for the connection pool's time-out, 5 s, while
//! the database is down), and `/readyz` says not ready without waiting. One prober pings the
//! store every [`PROBE_EVERY`] (each ping bounded by [`PROBE_TIMEOUT`]) and closes the
//! breaker when it answers; then what was spooled while it was down is appended to the audit
//! log (see [`crate::spool`]).
//!
//! A contended store (a deadlock, a busy writer) or a full one does not open it: those are
//! answers from a store that is up.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::Store;

/// How often the prober asks an unreachable store whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The longest one probe waits for the store.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the store is believed reachable.
#[derive(Debug, Default)]
pub struct Breaker {
    opened: Mutex<Option<Instant>>,
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether requests needing the store are refused at once.
    pub fn is_open(&self) -> bool {
        self.state().is_some()
    }

    /// How long it has been open, if it is.
    pub fn open_for(&self) -> Option<Duration> {
        self.state().map(|since| since.elapsed())
    }

    /// Opens the breaker; `true` if it was closed (the caller starts the prober).
    fn open(&self) -> bool {
        let mut state = self.state();
        if state.is_some() {
            return false;
        }
        *state = Some(Instant::now());
        true
    }

    fn close(&self) {
        *self.state() = None;
    }

    /// The store was found unreachable: opens the breaker and, if it was closed, starts the
    /// prober, which closes it once `store` answers and then runs `recovered`.
    pub fn trip<F, Fut>(self: &Arc<Self>, store: Arc<dyn Store>, recovered: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if !self.open() {
            return;
        }
        metrics::gauge!(crate::telemetry::STORE_BREAKER_OPEN).set(1.0);
        tracing::error!(
            "the store is unreachable: answering 503 at once until it is back; probing every {} ms",
            PROBE_EVERY.as_millis()
        );
        let breaker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
            let down = breaker.open_for().unwrap_or_default();
            breaker.close();
            metrics::gauge!(crate::telemetry::STORE_BREAKER_OPEN).set(0.0);
            tracing::warn!(
                down_ms = down.as_millis() as u64,
                "the store answers again: serving"
            );
            recovered().await;
        });
    }
}
