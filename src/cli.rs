//! The command line: `refex serve`, `refex dev-pki` and `refex purge` (more commands join as
//! their features land). Flags fall back to `REFEX_*` environment variables.

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
