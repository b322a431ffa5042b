//! What a running gateway shares between connections: the current configuration snapshot
//! (swapped whole on reload), the per-partner rate limiters built from it, the store, the
//! clock and the id source.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::api::limits::RateLimits;
use crate::clock::Clock;
use crate::config::{Config, Loaded, Transport};
use crate::ids::IdSource;
use crate::store::Store;

/// One configuration with everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// Its TLS, revocations and CRLs (the listener's alone).
    pub transport: Transport,
    /// Rate limiters for its partners, each quota divided among the replicas (rebuilt when
    /// the number of live replicas changes).
    pub limits: ArcSwap<RateLimits>,
    /// The gateway's public JWKS, rendered once.
    pub jwks: serde_json::Value,
    /// The OpenAPI description, rendered once per configuration (not per request).
    pub openapi: Arc<String>,
}

impl Snapshot {
    /// Derives limiters (for `replicas` replicas, unless the configuration fixes their
    /// number) and the public JWKS from a configuration.
    pub fn new(loaded: Loaded, replicas: u32) -> Self {
        let Loaded { config, transport } = loaded;
        let limits = ArcSwap::from_pointee(RateLimits::new(&config, replicas));
        let jwks = config.gateway_keys.public_jwks();
        let openapi = Arc::new(crate::api::openapi::render(&config));
        Self {
            config,
            transport,
            limits,
            jwks,
            openapi,
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
    /// Bumped after every commit that puts a delivery in an inbox; long-polls wait on it.
    inbox_signal: watch::Sender<u64>,
    /// One thread per core for submissions' CPU work (first come, first served), below the
    /// priority of the threads that finish work already begun.
    pub cpu: crate::cpu::CpuPool,
    /// Bumped whenever a new configuration is put in force.
    config_signal: watch::Sender<u64>,
    /// Open while the store is unreachable: requests are refused at once.
    pub breaker: Arc<crate::breaker::Breaker>,
    /// Audit events the store could not take, kept until it can.
    pub spool: Arc<crate::spool::Spool>,
    /// Notices to leads (started by `serve`).
    pub notifier: crate::notify::Notifier,
    /// This process's id among the replicas sharing the store.
    pub replica: crate::ids::ReplicaId,
    /// Whether this process serves partners (and so counts as a replica).
    pub serving: std::sync::atomic::AtomicBool,
    /// How many replicas share the store, as last counted (1 until counted).
    replicas: std::sync::atomic::AtomicU32,
}

impl Runtime {
    /// A runtime serving `config` from `store`.
    pub fn new(
        loaded: Loaded,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Self {
        let spool = Arc::new(crate::spool::Spool::new(&loaded.config.settings.data_dir));
        Self {
            breaker: Arc::default(),
            notifier: crate::notify::Notifier::default(),
            spool,
            snapshot: ArcSwap::from_pointee(Snapshot::new(loaded, 1)),
            replica: crate::ids::ReplicaId::fresh(),
            serving: std::sync::atomic::AtomicBool::new(false),
            replicas: std::sync::atomic::AtomicU32::new(1),
            store,
            clock,
            ids,
            inbox_signal: watch::channel(0).0,
            config_signal: watch::channel(0).0,
            cpu: crate::cpu::CpuPool::per_core(),
        }
    }

    /// The store was found unreachable: the breaker opens (requests refused at once) until a
    /// probe finds it back, and then the spool is replayed into the audit log.
    pub fn store_unreachable(&self) {
        let (store, spool) = (self.store.clone(), self.spool.clone());
        self.breaker.trip(self.store.clone(), move || async move {
            replay(&spool, store.as_ref()).await;
        });
    }

    /// Replays the spool into the audit log (at start, and whenever the store comes back).
    pub async fn replay_spool(&self) {
        replay(&self.spool, self.store.as_ref()).await;
    }

    /// Wakes long-polling inbox readers after deliveries were committed to inboxes.
    pub fn inbox_changed(&self) {
        self.inbox_signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`Runtime::inbox_changed`].
    pub fn watch_inboxes(&self) -> watch::Receiver<u64> {
        self.inbox_signal.subscribe()
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a new, already validated configuration in force and tells whoever watches.
    pub fn replace(&self, loaded: Loaded) {
        let replicas = self.replicas.load(std::sync::atomic::Ordering::Relaxed);
        self.snapshot
            .store(Arc::new(Snapshot::new(loaded, replicas)));
        self.config_signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The number of live replicas was counted: each partner's quota is divided among them
    /// from now on (limiters rebuilt only when the number changed).
    pub fn replicas_counted(&self, live: u32) {
        let live = live.max(1);
        let before = self
            .replicas
            .swap(live, std::sync::atomic::Ordering::Relaxed);
        if before != live {
            let snapshot = self.snapshot();
            snapshot
                .limits
                .store(Arc::new(RateLimits::new(&snapshot.config, live)));
            tracing::info!(
                replicas = live,
                "rate quotas now divided among the live replicas"
            );
        }
    }

    /// A receiver that sees every later [`Runtime::replace`].
    pub fn watch_config(&self) -> watch::Receiver<u64> {
        self.config_signal.subscribe()
    }
}

/// Replays `spool` into `store`, logging the outcome. A store just back may still hand out
/// a connection that died with it: a few tries, then housekeeping tries again each pass.
async fn replay(spool: &crate::spool::Spool, store: &dyn Store) {
    for attempt in 1..=REPLAY_TRIES {
        match spool.replay(store).await {
            Ok(0) => return,
            Ok(n) => {
                tracing::warn!(
                    events = n,
                    "appended audit events spooled while the store was unreachable"
                );
                return;
            }
            Err(e) if attempt == REPLAY_TRIES => {
                tracing::error!(error = %e, "could not replay the audit spool; it is kept and tried again at the next housekeeping pass");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Tries of one replay of the spool.
const REPLAY_TRIES: u32 = 3;
