//! The command line: `refex serve`, `refex dev-pki`, `refex purge` and `refex audit` (more
//! commands join as their features land). Flags fall back to `REFEX_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The release and the store schema it migrates to (the highest migration's number), as
/// `refex --version` prints them: an operator sees which schema a binary expects before a
/// rolling update.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (store schema 16)");

/// The store schema version in [`VERSION`] (`tests/it/store_migration.rs` checks it is the
/// highest migration of both backends).
pub const STORE_SCHEMA: u32 = 16;

/// refex: the multi-agency referral exchange gateway.
#[derive(Debug, Parser)]
#[command(name = "refex", version = VERSION, about)]
pub struct Cli {
    /// The gateway configuration file.
    #[arg(
        long,
        global = true,
        default_value = "refex.toml",
        env = "REFEX_CONFIG_FILE"
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Write a development-only PKI for the gateway and every partner in `partners/`.
    DevPki(DevPkiArgs),
    /// Run one housekeeping pass now: expire unacknowledged deliveries past their
    /// recipient's retention, purge records past the retention period.
    Purge(PurgeArgs),
    /// Export or verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Which of a partner's disclosures (sent or received) concerned a person.
    SubjectAccess(SubjectAccessArgs),
    /// An anonymised aggregate report (small numbers suppressed), with an optional chart.
    Report(ReportArgs),
    /// As a partner: sign, encrypt and submit a referral.
    Send(Box<SendArgs>),
    /// As a partner: a referral's per-recipient status.
    Status(PartnerIdArgs),
    /// As a partner: withdraw a referral's unacknowledged deliveries.
    Withdraw(PartnerIdArgs),
    /// As a partner: fetch, decrypt, verify and durably write deliveries, then acknowledge them.
    Inbox(InboxArgs),
    /// The gateway's own keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The partnership's certificate authority (offline): create it, issue client
    /// certificates from CSRs, revoke, publish the CRL.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Measure this gateway on this machine: a throwaway PKI and store, a real gateway
    /// process, pre-built referrals; prints a table and checks the performance targets.
    Bench(BenchArgs),
}

/// `refex keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new encryption and signing key; the old ones stay listed and usable for the
    /// grace period. Reload running gateways afterwards (SIGHUP or POST /admin/reload).
    Rotate(RotateArgs),
    /// Write production keys (gateway JOSE keys, storage key, subject-access key) into a
    /// directory, each 0600; never overwrites. Prints the `[keys]` settings and what to back up.
    Init(KeysInitArgs),
    /// Generate a hosted partner's keys (the partner file says `hosted = true` and names
    /// `hosted_keys` and `jwks`): the private keys sealed under the storage key, the public
    /// halves as its JWKS. Never overwrites. Reload running gateways afterwards.
    Hosted(HostedKeysArgs),
}

/// `refex keys init`.
#[derive(Debug, clap::Args)]
pub struct KeysInitArgs {
    /// The directory to write into (created 0700 if missing).
    #[arg(long)]
    pub dir: PathBuf,
}

/// `refex ca`: the partnership's certificate authority, run offline by the lead agency.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA (key 0600, certificate) in a new directory.
    Init {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, e.g. "Nottinghamshire Safeguarding Partnership CA".
        #[arg(long)]
        name: String,
        /// Validity in years.
        #[arg(long, default_value_t = 10)]
        years: u64,
    },
    /// Make a private key and a certificate signing request (the requester runs this; the key
    /// never leaves them).
    Request {
        /// Where to write the private key (0600; never overwritten).
        #[arg(long)]
        key_out: PathBuf,
        /// Where to write the CSR.
        #[arg(long)]
        csr_out: PathBuf,
        /// A name for the request (the CA sets the certificate's subject itself).
        #[arg(long, default_value = "refex client")]
        name: String,
    },
    /// Issue a client certificate from a CSR, for a partner's system or person; prints the
    /// fingerprint line for the partner file.
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The CSR (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The partner's id.
        #[arg(long)]
        partner: String,
        /// For the partner's system with this id.
        #[arg(long, conflicts_with_all = ["person", "server"], required_unless_present_any = ["person", "server"])]
        system: Option<String>,
        /// For the partner's person with this id.
        #[arg(long, conflicts_with = "server")]
        person: Option<String>,
        /// A gateway server certificate for these DNS names or IP addresses (repeat the
        /// flag); `--partner` names the operating organisation.
        #[arg(long)]
        server: Vec<String>,
        /// Validity in days (renew before it ends: a new certificate overlaps the old).
        #[arg(long, default_value_t = 397)]
        days: u64,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a certificate this CA issued (then publish the CRL).
    Revoke {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate's serial (hex, as `issued.jsonl` and the issue command print it).
        #[arg(long)]
        serial: String,
        /// Why.
        #[arg(long, value_enum, default_value = "key-compromise")]
        reason: crate::ca::Reason,
        /// The certificate was issued by this CA before refex kept its records (an existing
        /// CA adopted as `ca.pem` and `ca.key`): revoke a serial `issued.jsonl` does not list.
        #[arg(long)]
        issued_elsewhere: bool,
    },
    /// Write the CRL (every revocation so far) with its nextUpdate; publish it to every gateway
    /// before the previous one's nextUpdate (`refex_crl_seconds_to_next_update` warns).
    Crl {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write it (PEM).
        #[arg(long)]
        out: PathBuf,
        /// How long until it must be replaced (a day to a year); publish a new one weekly, so a
        /// missed week is warned about (`tls.crl_warn_before`, 7 days) with a week to spare.
        #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
    },
}

/// `refex keys hosted`.
#[derive(Debug, clap::Args)]
pub struct HostedKeysArgs {
    /// The partner's id (its file stem in the partners directory).
    #[arg(long)]
    pub partner: String,
}

/// `refex keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// How long the replaced keys stay listed and usable (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Where the embedded store lives (for the audit event).
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// `refex bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Also run the submission phases on this PostgreSQL server (a fresh schema is created
    /// and dropped), e.g. `postgres://postgres@127.0.0.1:5432/test`.
    #[arg(long = "store")]
    pub store: Option<String>,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Every phase, tiny (a smoke run: numbers are not meaningful).
    #[arg(long)]
    pub quick: bool,
}

/// Who the partner tools act as, and where the gateway is.
#[derive(Debug, clap::Args)]
pub struct PartnerArgs {
    /// The partner to act as (its files are taken from --pki unless given one by one).
    #[arg(long = "as")]
    pub partner: String,
    /// The gateway's API address.
    #[arg(long, default_value = "https://localhost:8443", env = "REFEX_GATEWAY")]
    pub gateway: String,
    /// A dev PKI directory laid out as `refex dev-pki` writes it.
    #[arg(long, default_value = "certs/dev")]
    pub pki: PathBuf,
    /// Client certificate (PEM), instead of the dev PKI's.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM), instead of the dev PKI's.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The partner's private JWK set, instead of the dev PKI's.
    #[arg(long)]
    pub jwks_private: Option<PathBuf>,
    /// The CA of the gateway's certificate, instead of the dev PKI's.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// `refex send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Identity and gateway.
    #[command(flatten)]
    pub who: PartnerArgs,
    /// A complete referral object (type, to, sender_ref, lawful_basis, consent,
    /// subject_informed, payload), instead of the flags below.
    #[arg(long, conflicts_with_all = ["referral_type", "file"])]
    pub referral: Option<PathBuf>,
    /// The referral type.
    #[arg(long = "type")]
    pub referral_type: Option<String>,
    /// A recipient (repeat for several; omit to let routing choose).
    #[arg(long)]
    pub to: Vec<String>,
    /// The payload (JSON), validated against the type's schema by the gateway.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Your own reference.
    #[arg(long, default_value = "refex-send")]
    pub sender_ref: String,
    /// UK GDPR Article 6 basis.
    #[arg(long, default_value = "public-task")]
    pub article6: String,
    /// Article 9 condition.
    #[arg(long, default_value = "substantial-public-interest")]
    pub article9: String,
    /// DPA 2018 Schedule 1 condition (`none` where the Article 9 condition needs none, as
    /// explicit consent does).
    #[arg(long, default_value = "para-18-safeguarding-children")]
    pub schedule1: String,
    /// UK GDPR Article 10 basis, for referral types that carry criminal offence data when the
    /// Schedule 1 condition does not already cover it (e.g. `para-29-consent`).
    #[arg(long)]
    pub article10: Option<String>,
    /// Consent status: given, refused, not-sought, withdrawn.
    #[arg(long, default_value = "given")]
    pub consent: String,
    /// The override relied on when consent is not given.
    #[arg(long = "override")]
    pub override_: Option<String>,
    /// Why the override applies.
    #[arg(long)]
    pub justification: Option<String>,
    /// Whether the person was told: yes, no, not-yet.
    #[arg(long, default_value = "yes")]
    pub informed: String,
    /// Why not, when not told.
    #[arg(long)]
    pub informed_reason: Option<String>,
    /// The gateway id (the claims' audience).
    #[arg(long, default_value = "refex")]
    pub aud: String,
    /// Print the gateway's JSON answer (or its problem document) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `refex status` / `refex withdraw`.
#[derive(Debug, clap::Args)]
pub struct PartnerIdArgs {
    /// Identity and gateway.
    #[command(flatten)]
    pub who: PartnerArgs,
    /// The referral id.
    pub id: String,
    /// Print the gateway's JSON answer (or its problem document) instead of words.
    #[arg(long)]
    pub json: bool,
}

/// `refex inbox`.
#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Identity and gateway.
    #[command(flatten)]
    pub who: PartnerArgs,
    /// Where to write each delivery (`<id>.json`).
    #[arg(long, default_value = "inbox")]
    pub out: PathBuf,
    /// Keep long-polling for new deliveries instead of stopping when the inbox is empty.
    #[arg(long)]
    pub follow: bool,
    /// One JSON line per delivery instead of a summary for people (and a refusal's problem
    /// document as the gateway sent it).
    #[arg(long)]
    pub json: bool,
    /// Also write `<id>.html` beside each delivery: a readable, printable document with the
    /// schemas' labels, saying what the organisation's agreement never shares with it.
    #[arg(long)]
    pub html: bool,
    /// The schemas directory (labels for `--html`).
    #[arg(long, default_value = "schemas")]
    pub schemas: PathBuf,
    /// The organisation's kind (its view of each referral type, for `--html`); read from
    /// `partners/<as>.toml` when not given.
    #[arg(long)]
    pub kind: Option<crate::identity::PartnerKind>,
}

/// `refex report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// First month, YYYY-MM (or its first day, YYYY-MM-01).
    #[arg(long)]
    pub from: String,
    /// Last month, YYYY-MM (or its last day), and a month that has ended.
    #[arg(long)]
    pub to: String,
    /// Dimensions, comma-separated, the last across: month, type, sender_kind, recipient_kind,
    /// consent, review.
    #[arg(long, default_value = "month,type")]
    pub by: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Also write an SVG chart of monthly referrals by type to this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Where the embedded store lives.
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// `refex report` output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// An aligned table for people.
    Table,
    /// JSON.
    Json,
    /// CSV (one line per cell).
    Csv,
}

/// `refex subject-access`.
#[derive(Debug, clap::Args)]
pub struct SubjectAccessArgs {
    /// The partner whose disclosures to search.
    #[arg(long)]
    pub partner: String,
    /// The person's NHS number.
    #[arg(long)]
    pub nhs_number: Option<String>,
    /// Given name (with --family and --dob).
    #[arg(long)]
    pub given: Option<String>,
    /// Family name.
    #[arg(long)]
    pub family: Option<String>,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long)]
    pub dob: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,
    /// Where the embedded store lives.
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// Machine-readable output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// JSON.
    Json,
    /// CSV, one row per delivery.
    Csv,
}

/// `refex audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the log (events, leaf hashes, every signed checkpoint) as JSON lines.
    Export(AuditExportArgs),
    /// Check an exported log offline; exits non-zero naming the first fault.
    Verify(AuditVerifyArgs),
}

/// `refex audit export`.
#[derive(Debug, clap::Args)]
pub struct AuditExportArgs {
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Where the embedded store lives.
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// `refex audit verify`.
#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    /// The exported log.
    #[arg(long)]
    pub log: PathBuf,
    /// The gateway's public JWKS: a file, or an `http(s)://` URL.
    #[arg(long)]
    pub jwks: String,
    /// A checkpoint (compact JWS) obtained independently; the log must extend it.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

/// `refex purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// Where the embedded store lives.
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// `refex serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The mutual-TLS API listener.
    #[arg(long, env = "REFEX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The plain-HTTP admin listener (health, readiness, metrics).
    #[arg(long, env = "REFEX_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the embedded store lives.
    #[arg(long, env = "REFEX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "REFEX_STORE_URL")]
    pub store_url: Option<String>,
}

/// `refex dev-pki`.
#[derive(Debug, clap::Args)]
pub struct DevPkiArgs {
    /// Where to write it.
    #[arg(long, default_value = "certs/dev")]
    pub out: PathBuf,
    /// Replace an existing dev PKI.
    #[arg(long)]
    pub force: bool,
}
