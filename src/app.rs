//! Starting a gateway: dev PKI on first start, configuration, store, listeners; and stopping
//! it. `refex serve` and the integration tests both start the gateway through [`start`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::settings::Settings;
use crate::config::{Config, ConfigError};
use crate::ids::Uuid7Ids;
use crate::runtime::Runtime;
use crate::server::{Server, ServerError};
use crate::store::StoreError;
use crate::{devpki, store, tls};

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The development PKI could not be generated.
    #[error("dev PKI: {0}")]
    DevPki(#[from] devpki::DevPkiError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener could not be bound.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A running gateway.
pub struct Running {
    /// The API listener's address.
    pub api_addr: std::net::SocketAddr,
    /// The admin listener's address.
    pub admin_addr: std::net::SocketAddr,
    /// The shared state (tests read the store and swap configurations through it).
    pub runtime: Arc<Runtime>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        Self::leave(&self.runtime).await;
    }

    /// Leaves the replicas' count and closes the store.
    async fn leave(runtime: &Runtime) {
        if let Err(e) = runtime.store.forget_replica(&runtime.replica).await {
            tracing::warn!(error = %e, "could not leave the replicas' count; it lapses by itself");
        }
        runtime.store.close().await;
    }

    /// A sender that starts shutdown when `true` is sent (for signal handlers).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Logs the line operators (and `refex bench`, and the process tests) wait for. `serve`
    /// calls it once every signal handler is installed.
    pub fn announce_ready(&self) {
        tracing::info!(api = %self.api_addr, admin = %self.admin_addr, store = ?self.runtime.store.backend(), "refex ready to accept connections");
    }

    /// Waits until the server has stopped by itself or through [`Running::stopper`].
    pub async fn wait(self) {
        let _ = self.task.await;
        Self::leave(&self.runtime).await;
    }
}

/// Generates the dev PKI if the settings run on it (development mode, no server certificate)
/// and it is not there yet. Says loudly that it is for development only. Only `serve` calls
/// it: offline commands use [`require_dev_pki`] and never generate a key.
pub fn ensure_dev_pki(settings: &Settings, clock: &dyn Clock) -> Result<(), devpki::DevPkiError> {
    let pki = settings.pki();
    if !pki.dev {
        return Ok(());
    }
    if devpki::exists(&pki.dev_dir) {
        tracing::warn!(dir = %pki.dev_dir.display(), "running on the DEVELOPMENT PKI: never use it for real referrals");
        // A dev PKI from before the storage key existed: add one rather than refuse to start.
        if devpki::ensure_storage_key(&pki.dev_dir)? {
            tracing::warn!(dir = %pki.dev_dir.display(), "added a DEVELOPMENT-ONLY storage key to the dev PKI");
        }
        return Ok(());
    }
    let summary = devpki::generate(
        &pki.dev_dir,
        &settings.partners_dir,
        &settings.agreements,
        false,
        clock.now(),
    )?;
    tracing::warn!(
        dir = %summary.dir.display(),
        partners = summary.partners.len(),
        people = summary.people,
        "no PKI configured: generated a DEVELOPMENT-ONLY PKI; never use it for real referrals"
    );
    Ok(())
}

/// For offline commands: the dev PKI must already exist when the settings run on it. A
/// report or a subject-access search run before the gateway ever started must not mint the
/// keys its answer would then be sealed or looked up under.
pub fn require_dev_pki(settings: &Settings) -> Result<(), devpki::DevPkiError> {
    let pki = settings.pki();
    if pki.dev && !devpki::exists(&pki.dev_dir) {
        return Err(devpki::DevPkiError::Missing(pki.dev_dir));
    }
    Ok(())
}

/// Logs what the configuration allows but warns about (development mode).
pub fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(mode = ?config.settings.mode, "{warning}");
    }
}

/// Raises the soft limit on open files to the hard limit (a no-op when they are equal, as
/// the systemd unit's `LimitNOFILE` makes them), so the connection caps, not the process's
/// file descriptors, are what bound a flood of sockets.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Starts a gateway on the given settings.
pub async fn start(settings: Settings, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    tls::install_default_provider();
    // Install the metrics recorder before anything records.
    crate::telemetry::metrics();
    ensure_dev_pki(&settings, clock.as_ref())?;
    raise_open_file_limit();
    let loaded = Config::load_at(settings, clock.now())?;
    log_warnings(&loaded.config);
    let settings = &loaded.config.settings;
    let store = store::open_with(&settings.store_url(), settings.store.group_commit()).await?;
    let (listen, admin_listen) = (settings.listen, settings.admin_listen);
    let runtime = Arc::new(Runtime::new(loaded, store, clock, Arc::new(Uuid7Ids)));
    runtime
        .notifier
        .start(&runtime.snapshot().config.settings.notify);
    // A serving gateway counts among the replicas (offline commands never do).
    runtime
        .serving
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Refusals spooled while the store was unreachable, before a restart.
    runtime.replay_spool().await;
    // Other replicas' commits wake this process's long-polls too.
    let weak = Arc::downgrade(&runtime);
    runtime.store.watch_inbox_changes(Arc::new(move || {
        if let Some(rt) = weak.upgrade() {
            rt.inbox_changed();
        }
    }));
    let server = Server::bind(runtime.clone(), listen, admin_listen).await?;
    let (api_addr, admin_addr) = (server.api_addr(), server.admin_addr());
    let (stop, stopped) = watch::channel(false);
    let interval = runtime
        .snapshot()
        .config
        .settings
        .retention
        .housekeeping_interval;
    tokio::spawn(crate::housekeeping::run_every(
        runtime.clone(),
        interval,
        stopped.clone(),
    ));
    let task = tokio::spawn(server.run(stopped));
    Ok(Running {
        api_addr,
        admin_addr,
        runtime,
        stop,
        task,
    })
}

/// Loads the configuration and opens the store for an operator command that runs without
/// the listeners (`purge`, `report`, `subject-access`).
pub async fn open_offline(
    settings: Settings,
    clock: &dyn Clock,
) -> Result<(Config, Arc<dyn crate::store::Store>), StartError> {
    let (loaded, store) = open_loaded(settings, clock).await?;
    Ok((loaded.config, store))
}

/// [`open_offline`] with the whole loaded configuration (a runtime needs its transport).
async fn open_loaded(
    settings: Settings,
    clock: &dyn Clock,
) -> Result<(crate::config::Loaded, Arc<dyn crate::store::Store>), StartError> {
    tls::install_default_provider();
    require_dev_pki(&settings)?;
    let loaded = Config::load_at(settings, clock.now())?;
    let settings = &loaded.config.settings;
    let store = store::open_with(&settings.store_url(), settings.store.group_commit()).await?;
    Ok((loaded, store))
}

/// Runs one housekeeping pass against the configured store (`refex purge`).
pub async fn housekeep_once(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<crate::housekeeping::Report, StartError> {
    let (loaded, store) = open_loaded(settings, clock.as_ref()).await?;
    let runtime = Runtime::new(loaded, store, clock, Arc::new(Uuid7Ids));
    let report = crate::housekeeping::run_once(&runtime).await?;
    runtime.store.close().await;
    Ok(report)
}
