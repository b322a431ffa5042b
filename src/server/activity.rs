//! Request activity on one connection, so a connection that carries no requests is closed:
//! the byte-level idle timer is kept alive by any traffic, and an HTTP/2 client's own PINGs
//! (or any frames that are not requests) would hold a connection slot forever. Only requests
//! count here: none in flight and none ended for the idle time, and the connection goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The requests of one connection.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// One request in flight; its end counts as activity.
#[derive(Debug)]
pub struct Request(Arc<Activity>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    /// A connection whose handshake just finished (that counts as activity).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    fn since_last(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }

    /// A request begins; it is in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Request {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Request(self.clone())
    }

    /// Resolves once no request has been in flight, begun or ended for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let quiet = self.since_last();
            if self.in_flight.load(Ordering::SeqCst) == 0 && quiet >= limit {
                return;
            }
            let wait = limit.saturating_sub(quiet).max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_requests_keep_a_connection() {
        let a = Activity::new();
        let limit = Duration::from_secs(120);
        // A long request (a long-poll) keeps it, however long it runs.
        let request = a.begin();
        let idle = tokio::time::timeout(Duration::from_secs(300), a.idle(limit)).await;
        assert!(idle.is_err(), "closed with a request in flight");
        drop(request);
        // Then the idle time from the request's end.
        let started = Instant::now();
        a.idle(limit).await;
        assert!(started.elapsed() >= limit);
    }
}
