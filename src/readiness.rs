//! Whether this replica should receive traffic, and what an operator should act on before it
//! stops: one assessment for `/readyz` and for every housekeeping pass, so `refex_ready` is
//! current even where nothing probes `/readyz` (a systemd install), and the warnings a probe
//! shows are the ones the log repeats.
//!
//! Not ready: the store does not answer (within [`STORE_DEADLINE`]) or a CRL is past its
//! `nextUpdate` (every certificate of its CA would be refused). Warnings, still ready: a CRL
//! falling due, the gateway's server certificate or a client CA's certificate expiring within
//! `tls.certificate_warn_before`, audit events waiting in the local spool.

use std::time::{Duration, SystemTime};

use crate::runtime::Runtime;
use crate::{telemetry, trust};

/// The longest an assessment waits for the store: a probe gets an answer, not a hang.
pub const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// What an assessment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Why the replica is not ready (empty: ready).
    pub reasons: Vec<String>,
    /// What needs attention soon; the replica stays ready.
    pub warnings: Vec<String>,
}

impl Assessment {
    /// Ready to serve.
    pub fn ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Assesses this replica and sets `refex_ready` (1 ready, 0 not).
pub async fn assess(rt: &Runtime) -> Assessment {
    let snapshot = rt.snapshot();
    let tls = &snapshot.config.settings.tls;
    let now = rt.clock.now();
    let mut found = Assessment::default();
    for (health, line) in trust::observe(&snapshot.transport.crls, now, tls.crl_warn_before) {
        match health {
            trust::CrlHealth::Overdue => found.reasons.push(line),
            _ => found.warnings.push(line),
        }
    }
    found.warnings.extend(certificate_warnings(
        &snapshot.transport,
        tls.certificate_warn_before,
        now,
    ));
    let pinged = match rt.breaker.open_for() {
        // Known unreachable: say so at once; the breaker's prober is asking already.
        Some(down) => {
            found.reasons.push(format!(
                "the store has been unreachable for {} s; probing",
                down.as_secs()
            ));
            None
        }
        None => Some(tokio::time::timeout(STORE_DEADLINE, rt.store.ping()).await),
    };
    match pinged {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(crate::store::StoreError::Stopped(_)))) => {
            found.reasons.push(
                "the store's write-ahead log could not be synced, so it accepts no writes: fix \
                 the disk and restart the gateway (docs/OPERATIONS.md, Incidents)"
                    .into(),
            );
        }
        Some(Ok(Err(e))) if matches!(e, crate::store::StoreError::Unavailable(_)) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            rt.store_unreachable();
            found.reasons.push("the store does not answer".into());
        }
        Some(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness check: store not ready");
            found.reasons.push("the store is not ready".into());
        }
        Some(Err(_)) => found.reasons.push(format!(
            "the store did not answer within {} s",
            STORE_DEADLINE.as_secs()
        )),
    }
    let spooled = rt.spool.len();
    if spooled > 0 {
        found.warnings.push(format!(
            "{spooled} audit events wait in the local spool for the store"
        ));
    }
    metrics::gauge!(telemetry::READY).set(if found.ready() { 1.0 } else { 0.0 });
    found
}

/// The gateway's server certificate and its client CAs' certificates in force that expire
/// within `warn_before` (or have expired), in words. Reads no file: the expiries were read
/// when the configuration was loaded (a probe never waits on a disk).
pub fn certificate_warnings(
    transport: &crate::config::Transport,
    warn_before: Duration,
    now: SystemTime,
) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(at) = transport.server_expiry {
        if let Some(left) = expiring(at, now, warn_before) {
            lines.push(format!(
                "the gateway's server certificate {left}: every partner connection fails when \
                 it does; renew it (refex ca issue --server) and reload"
            ));
        }
    }
    for (ca, at) in &transport.ca_expiries {
        let at = *at;
        if let Some(left) = expiring(at, now, warn_before) {
            lines.push(format!(
                "client CA {ca:?} {left}: every certificate it issued stops working with it"
            ));
        }
    }
    lines
}

/// "expires in N days" when `at` (Unix seconds) is within `warn_before` of `now`, "expired"
/// when past; `None` when further off.
pub fn expiring(at: i64, now: SystemTime, warn_before: Duration) -> Option<String> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = at - now;
    if left <= 0 {
        Some("has expired".into())
    } else if left <= warn_before.as_secs() as i64 {
        let days = left / 86_400;
        Some(match days {
            0 => "expires within a day".into(),
            1 => "expires in 1 day".into(),
            n => format!("expires in {n} days"),
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_said_in_days_within_the_window_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(expiring(1_000_000 + 8 * 86_400, now, week), None);
        assert_eq!(
            expiring(1_000_000 + 3 * 86_400 + 5, now, week).as_deref(),
            Some("expires in 3 days")
        );
        assert_eq!(
            expiring(1_000_000 + 60, now, week).as_deref(),
            Some("expires within a day")
        );
        assert_eq!(expiring(999_999, now, week).as_deref(), Some("has expired"));
    }
}
