//! The command line: `refex serve`, `refex dev-pki`, `refex purge` and `refex audit` (more
//! commands join as their features land). Flags fall back to `REFEX_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// refex: the multi-agency referral exchange gateway.
#[derive(Debug, Parser)]
#[command(name = "refex", version, about)]
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
}

/// `refex report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    pub from: String,
    /// Last day, YYYY-MM-DD (inclusive).
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
