//! The gateway's own settings: `refex.toml`, overridden by `REFEX_*` environment variables,
//! overridden by command-line flags. Relative paths resolve against the directory that holds
//! `refex.toml` (the working directory when there is none).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The settings as written; see `refex.toml` for every key with its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `development` runs on the generated development PKI and keys and only warns about
    /// unsafe files; `production` (the default when the key is absent) refuses to start
    /// without a server certificate, every key, and a CRL for every issuing CA.
    #[serde(default)]
    pub mode: Mode,
    /// This gateway's id: the `aud` of referrals and the `iss` of deliveries.
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    /// The mutual-TLS API listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The plain-HTTP admin listener (health, readiness, metrics, public JWKS).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Where the embedded store and other state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite under `data_dir`.
    #[serde(default)]
    pub store_url: Option<String>,
    /// Directory of `partners/<id>.toml` files.
    #[serde(default = "default_partners_dir")]
    pub partners_dir: PathBuf,
    /// The information sharing agreements file.
    #[serde(default = "default_agreements")]
    pub agreements: PathBuf,
    /// Directory holding `types/`, `views/` and `examples/`.
    #[serde(default = "default_schemas_dir")]
    pub schemas_dir: PathBuf,
    /// How many gateway replicas share the store; per-partner rate quotas are divided by it.
    /// Unset (the default): counted, each replica announcing itself in the store on every
    /// housekeeping pass, so the number is never typed twice.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Request and connection limits.
    #[serde(default)]
    pub limits: Limits,
    /// How the store commits.
    #[serde(default)]
    pub store: StoreSettings,
    /// How long records are kept, and how often housekeeping runs.
    #[serde(default)]
    pub retention: Retention,
    /// Safeguarding review of held disclosures.
    #[serde(default)]
    pub review: ReviewSettings,
    /// Aggregate reports for commissioners.
    #[serde(default)]
    pub reports: ReportSettings,
    /// Certificates and trust.
    #[serde(default)]
    pub tls: TlsSettings,
    /// The gateway's JOSE keys.
    #[serde(default)]
    pub keys: KeySettings,
    /// Notifications to designated safeguarding leads (e-mail, webhooks).
    #[serde(default)]
    pub notify: NotifySettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
}

/// Which rules the configuration is held to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Generated development PKI and keys when none are configured (never for real
    /// referrals); unsafe files and missing CRLs are warned about.
    Development,
    /// Every certificate, key and CRL configured, key files private; nothing is generated.
    #[default]
    Production,
}

/// Request and connection limits. Each default says why that number.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body (contract default 1 MiB): a referral with attachments
    /// summarised is tens of KB; anything near a megabyte is a mistake or an attack.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Allowed clock skew for a referral's `iat` (contract default ±5 min).
    #[serde(default = "default_iat_skew", with = "humantime_serde")]
    pub iat_skew: Duration,
    /// A TLS handshake that has not finished by then is dropped, so slow clients cannot hold
    /// handshake slots.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time allowed to send a request's headers (slowloris guard).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest time a request may take; above the inbox long-poll ceiling of 60 s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open API connections, in every state: past this a new socket is closed at once. 4096
    /// idle mutual-TLS connections cost about 130 MiB (33 KiB each, measured by `refex
    /// bench`), far below the file-descriptor limit the gateway raises at start.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS handshakes in flight at once (from the first byte to the end of the handshake). A
    /// stalled one costs a socket and a few KiB, and the CPU of real ones is bounded by the
    /// cores whatever this says; 1024 lets 32 networks each at `max_handshakes_per_network`
    /// in before anyone is refused. When it is full the oldest handshake (past a second) is
    /// cut off for the newcomer.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Handshakes in flight from one network (an IPv4 /24 or IPv6 /64): one host, or a few
    /// neighbouring ones, cannot take the handshake slots partners need. A partner's system
    /// opens a handful at once. (When every slot is taken, the oldest stalled handshake is
    /// cut off to make room.)
    #[serde(default = "default_max_handshakes_per_network")]
    pub max_handshakes_per_network: usize,
    /// Open connections from one network (an IPv4 /24 or IPv6 /64): a partner's systems
    /// behind one address open tens; 512 leaves room for several partners behind one NAT
    /// while eight networks are needed to fill `max_connections`.
    #[serde(default = "default_max_connections_per_network")]
    pub max_connections_per_network: usize,
    /// Open connections one certificate may hold (checked once its handshake is done): a
    /// case system keeps a small pool; 64 is several times that, and no one certificate, a
    /// person's least of all, can hold the slots everyone else needs.
    #[serde(default = "default_max_connections_per_certificate")]
    pub max_connections_per_certificate: usize,
    /// A socket that sends no byte (no TLS ClientHello) by then is closed: a real client
    /// sends its ClientHello as soon as TCP connects.
    #[serde(default = "default_first_byte_timeout", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            iat_skew: default_iat_skew(),
            handshake_timeout: default_handshake_timeout(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            max_handshakes: default_max_handshakes(),
            max_handshakes_per_network: default_max_handshakes_per_network(),
            max_connections_per_network: default_max_connections_per_network(),
            max_connections_per_certificate: default_max_connections_per_certificate(),
            first_byte_timeout: default_first_byte_timeout(),
        }
    }
}

/// How the store commits acceptances (group commit).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Under load, how long the committer waits for more acceptances to share a transaction
    /// (and its fsync) with the first; a lone referral never waits. Capped at 20 ms.
    #[serde(default = "default_group_commit_window", with = "humantime_serde")]
    pub group_commit_window: Duration,
    /// Most acceptances in one transaction; 1 turns group commit off. Capped at 1024.
    #[serde(default = "default_group_commit_max")]
    pub group_commit_max: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            group_commit_window: default_group_commit_window(),
            group_commit_max: default_group_commit_max(),
        }
    }
}

impl StoreSettings {
    /// The store's group-commit options.
    pub fn group_commit(&self) -> crate::store::group_commit::Options {
        crate::store::group_commit::Options {
            window: self.group_commit_window,
            max_batch: self.group_commit_max,
        }
        .clamped()
    }
}

/// Retention of records, and the housekeeping that enforces it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Referral and disclosure records are kept this long after their last activity
    /// (domain.md: 7 years), then purged.
    #[serde(default = "default_records", with = "humantime_serde")]
    pub records: Duration,
    /// How often the housekeeping pass (expiry, purge) runs.
    #[serde(default = "default_housekeeping", with = "humantime_serde")]
    pub housekeeping_interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            records: default_records(),
            housekeeping_interval: default_housekeeping(),
        }
    }
}

/// Notifications to leads: that something waits, never what (no personal data), with the
/// console's address.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The SMTP relay: `smtps://host:465`, `smtp://host:587?tls=required` (STARTTLS), with
    /// `user:password@` if it needs them. Production refuses a relay without TLS. Unset: no
    /// e-mail is sent.
    #[serde(default)]
    pub smtp_url: Option<String>,
    /// The sender address of the e-mails.
    #[serde(default = "default_notify_from")]
    pub from: String,
    /// The console's address as leads reach it (the link in every notice).
    #[serde(default = "default_console_url")]
    pub console_url: String,
    /// The hour (UTC, 0-23) after which each day's digest of what waits is sent.
    #[serde(default = "default_digest_hour")]
    pub digest_hour: u8,
    /// Extra CA certificates (PEM) to trust for the relay and webhooks, beside the system's
    /// (a partnership's own CA, an internal relay's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: default_notify_from(),
            console_url: default_console_url(),
            digest_hour: default_digest_hour(),
            ca_file: None,
        }
    }
}

fn default_notify_from() -> String {
    "refex@localhost".into()
}

fn default_console_url() -> String {
    "https://localhost:8443/console/".into()
}

fn default_digest_hour() -> u8 {
    7
}

/// Safeguarding review of held disclosures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// A hold undecided this long is escalated (flagged, counted, audited; never released).
    #[serde(default = "default_escalate_after", with = "humantime_serde")]
    pub escalate_after: Duration,
    /// A hold undecided this long is closed without release (`expired-undecided`): the sender
    /// sees it, it is audited, and the full claims held under the storage key are deleted
    /// rather than kept for years. Default 30 days: far past any escalation, short enough
    /// that an undecided disclosure does not linger.
    #[serde(default = "default_close_undecided_after", with = "humantime_serde")]
    pub close_undecided_after: Duration,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            escalate_after: default_escalate_after(),
            close_undecided_after: default_close_undecided_after(),
        }
    }
}

/// Aggregate reports.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// Cells under this count are suppressed (domain.md: 5).
    #[serde(default = "default_threshold")]
    pub threshold: u64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            threshold: default_threshold(),
        }
    }
}

/// Certificates and trust. In development mode, leave `server_cert` unset to run on the
/// development PKI under `dev_pki_dir` (generated on first start).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The gateway's certificate chain (PEM). Setting it switches off the dev PKI.
    #[serde(default)]
    pub server_cert: Option<PathBuf>,
    /// The gateway's private key (PEM, PKCS#8).
    #[serde(default)]
    pub server_key: Option<PathBuf>,
    /// The partner trust bundle (PEM); default `certs/ca.pem`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM), one per issuing CA.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// How long before a CRL's `nextUpdate` the gateway warns (log, metric, `/readyz`): past
    /// it every certificate of that CA is refused. Default 7 days: a CA publishing weekly
    /// CRLs is then always warned about its next one, so a stalled publication is noticed
    /// with days to spare.
    #[serde(default = "default_crl_warn_before", with = "humantime_serde")]
    pub crl_warn_before: Duration,
    /// How long before the gateway's server certificate, a client CA's certificate or a
    /// partner's client certificate expires the gateway warns (log, `/readyz` for the
    /// gateway's own; the expiry metrics always). Default 30 days: time to issue, install and
    /// reload a renewal.
    #[serde(default = "default_certificate_warn_before", with = "humantime_serde")]
    pub certificate_warn_before: Duration,
    /// Where the development PKI lives; default `certs/dev`.
    #[serde(default)]
    pub dev_pki_dir: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            server_cert: None,
            server_key: None,
            client_ca: None,
            crls: Vec::new(),
            crl_warn_before: default_crl_warn_before(),
            certificate_warn_before: default_certificate_warn_before(),
            dev_pki_dir: None,
        }
    }
}

/// The gateway's JOSE keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The gateway's private JWK set (`enc` and `sig` keys); default in dev:
    /// `<dev_pki_dir>/gateway/jwks.private.json`.
    #[serde(default)]
    pub gateway_jwks: Option<PathBuf>,
    /// The key that encrypts held referrals at rest (32 random bytes, base64, in a file);
    /// default in dev: `<dev_pki_dir>/gateway/storage.key`.
    #[serde(default)]
    pub storage_key: Option<PathBuf>,
    /// The HMAC secret for subject-access look-ups (32 random bytes, base64, in a file);
    /// default in dev: `<dev_pki_dir>/gateway/subject.key`.
    #[serde(default)]
    pub subject_key: Option<PathBuf>,
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (default: one JSON object a line) or `text`.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `refex=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            filter: default_log_filter(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// Where the PKI material comes from, with every path resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    /// `true` when running on the generated development PKI.
    pub dev: bool,
    /// The development PKI directory (used by `dev-pki` and first start).
    pub dev_dir: PathBuf,
    /// Server certificate chain.
    pub server_cert: PathBuf,
    /// Server private key.
    pub server_key: PathBuf,
    /// Partner trust bundle.
    pub client_ca: PathBuf,
    /// CRLs.
    pub crls: Vec<PathBuf>,
    /// The gateway's private JWK set.
    pub gateway_jwks: PathBuf,
    /// The storage key for held referrals.
    pub storage_key: PathBuf,
    /// The subject-access HMAC secret.
    pub subject_key: PathBuf,
}

impl Settings {
    /// Rewrites every relative path against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.partners_dir);
        fix(&mut self.agreements);
        fix(&mut self.schemas_dir);
        for p in [
            &mut self.tls.server_cert,
            &mut self.tls.server_key,
            &mut self.tls.client_ca,
            &mut self.tls.dev_pki_dir,
            &mut self.keys.gateway_jwks,
            &mut self.keys.storage_key,
            &mut self.keys.subject_key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        self.tls.crls.iter_mut().for_each(fix);
        if self.tls.dev_pki_dir.is_none() {
            self.tls.dev_pki_dir = Some(base.join("certs/dev"));
        }
        if self.tls.client_ca.is_none()
            && (self.tls.server_cert.is_some() || self.mode == Mode::Production)
        {
            self.tls.client_ca = Some(base.join("certs/ca.pem"));
        }
    }

    /// The PKI in force: configured files, or (development mode only) the development PKI
    /// when no server certificate is configured. Missing pieces are reported by `config`
    /// validation.
    pub fn pki(&self) -> PkiPaths {
        let dev_dir = self
            .tls
            .dev_pki_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("certs/dev"));
        match &self.tls.server_cert {
            None if self.mode == Mode::Development => PkiPaths {
                dev: true,
                server_cert: dev_dir.join("gateway/tls.pem"),
                server_key: dev_dir.join("gateway/tls.key"),
                client_ca: dev_dir.join("ca.pem"),
                crls: vec![dev_dir.join("crl.pem")],
                gateway_jwks: dev_dir.join("gateway/jwks.private.json"),
                storage_key: dev_dir.join("gateway/storage.key"),
                subject_key: dev_dir.join("gateway/subject.key"),
                dev_dir,
            },
            cert => PkiPaths {
                dev: false,
                server_cert: cert.clone().unwrap_or_default(),
                server_key: self.tls.server_key.clone().unwrap_or_default(),
                client_ca: self
                    .tls
                    .client_ca
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("certs/ca.pem")),
                crls: self.tls.crls.clone(),
                gateway_jwks: self.keys.gateway_jwks.clone().unwrap_or_default(),
                storage_key: self.keys.storage_key.clone().unwrap_or_default(),
                subject_key: self.keys.subject_key.clone().unwrap_or_default(),
                dev_dir,
            },
        }
    }

    /// The store URL in force: the configured one, or SQLite under the data directory.
    pub fn store_url(&self) -> String {
        self.store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("refex.db").display()))
    }
}

fn default_gateway_id() -> String {
    "refex".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_partners_dir() -> PathBuf {
    PathBuf::from("partners")
}
fn default_agreements() -> PathBuf {
    PathBuf::from("partners/agreements.toml")
}
fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_iat_skew() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_handshakes() -> usize {
    1024
}
fn default_max_handshakes_per_network() -> usize {
    32
}
fn default_max_connections_per_network() -> usize {
    512
}
fn default_max_connections_per_certificate() -> usize {
    64
}
fn default_first_byte_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_crl_warn_before() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_certificate_warn_before() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_close_undecided_after() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_group_commit_window() -> Duration {
    crate::store::group_commit::Options::default().window
}
fn default_group_commit_max() -> usize {
    crate::store::group_commit::Options::default().max_batch
}
fn default_records() -> Duration {
    Duration::from_secs(7 * 365 * 24 * 3600 + 2 * 24 * 3600)
}
fn default_housekeeping() -> Duration {
    Duration::from_secs(60)
}
fn default_escalate_after() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_threshold() -> u64 {
    5
}
fn default_log_format() -> LogFormat {
    LogFormat::Json
}
fn default_log_filter() -> String {
    "info".into()
}
