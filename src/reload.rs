//! Reloading the configuration without a restart (`SIGHUP`, `POST /admin/reload`): the
//! partners, agreements, schemas, keys, certificates and CRLs are read again with the
//! settings the gateway started with. A configuration with any problem is refused whole, its
//! problems logged, and the one in force keeps serving. New connections handshake with the
//! new TLS configuration (so a newly revoked certificate is refused), and every request maps
//! its principal through the configuration in force when it arrives.
//!
//! Out of scope: `refex.toml` itself (listener addresses, the store) needs a restart.

use std::sync::Arc;

use crate::audit::event::{ActorRef, AuditEvent, AuditRecord, ConfigLoaded};
use crate::config::{Config, ConfigError};
use crate::runtime::Runtime;

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration has problems; the old one is still in force.
    #[error(transparent)]
    Refused(#[from] ConfigError),
    /// Loading could not run at all (the loader task failed).
    #[error("reload failed: {0}")]
    Failed(String),
}

/// What a successful reload put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Partners configured.
    pub partners: usize,
    /// Agreements configured.
    pub agreements: usize,
}

/// Loads the configuration again and, if it is valid whole, puts it in force and records a
/// `config-loaded` audit event; otherwise logs every problem and changes nothing.
pub async fn reload(rt: &Arc<Runtime>, by: &str) -> Result<Reloaded, ReloadError> {
    let settings = rt.snapshot().config.settings.clone();
    let now = rt.clock.now();
    // Reading files and compiling schemas is blocking work.
    let loaded = tokio::task::spawn_blocking(move || Config::load_at(settings, now))
        .await
        .map_err(|e| ReloadError::Failed(e.to_string()))?;
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            for problem in &e.problems {
                tracing::error!(problem = %problem, "configuration reload refused; the previous configuration stays in force");
            }
            return Err(e.into());
        }
    };
    let stale =
        crate::trust::older_than_in_force(&loaded.transport.crls, &rt.snapshot().transport.crls);
    if !stale.is_empty() {
        for problem in &stale {
            tracing::error!(problem = %problem, "configuration reload refused; the previous configuration stays in force");
        }
        return Err(ConfigError { problems: stale }.into());
    }
    crate::app::log_warnings(&loaded.config);
    let reloaded = Reloaded {
        partners: loaded.config.policy.partners.len(),
        agreements: loaded.config.policy.agreements.len(),
    };
    rt.replace(loaded);
    let event = AuditRecord::new(
        rt.clock.unix_time(),
        ActorRef::operator(by).ok(),
        AuditEvent::ConfigLoaded(ConfigLoaded {
            partners: reloaded.partners as u64,
            agreements: reloaded.agreements as u64,
        }),
    );
    if let Err(e) = rt.store.record_event(&event).await {
        tracing::error!(error = %e, "could not record the configuration reload");
    }
    tracing::info!(
        partners = reloaded.partners,
        agreements = reloaded.agreements,
        by,
        "configuration reloaded"
    );
    Ok(reloaded)
}
