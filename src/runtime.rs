//! What a running gateway shares between connections: the current configuration snapshot
//! (swapped whole on reload), the per-partner rate limiters built from it, the store, the
//! clock and the id source.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::limits::RateLimits;
use crate::clock::Clock;
use crate::config::Config;
use crate::ids::IdSource;
use crate::store::Store;

/// One configuration with everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// Rate limiters for its partners.
    pub limits: RateLimits,
    /// The gateway's public JWKS, rendered once.
    pub jwks: serde_json::Value,
}

impl Snapshot {
    /// Derives limiters and the public JWKS from a configuration.
    pub fn new(config: Config) -> Self {
        let limits = RateLimits::new(&config);
        let jwks = config.gateway_keys.public_jwks();
        Self {
            config,
            limits,
            jwks,
        }
    }
}

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where referral and delivery ids come from.
    pub ids: Arc<dyn IdSource>,
}

impl Runtime {
    /// A runtime serving `config` from `store`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config)),
            store,
            clock,
            ids,
        }
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a new, already validated configuration in force.
    pub fn replace(&self, config: Config) {
        self.snapshot.store(Arc::new(Snapshot::new(config)));
    }
}
