//! The `refex-bench` binary, which `refex bench` runs: the same command line as `refex`
//! (`refex [--config FILE] bench [--store URL] [--json FILE] [--quick]`), so that the
//! benchmark, with its SQL and its load generator, stays outside the gateway binary.

use anyhow::Context as _;
use clap::Parser as _;

use refex::cli::{Cli, Command};
use refex::config::{self, Overrides};

/// The gateway's allocator (`src/main.rs`): the in-process pipeline the bench times, and
/// the limit it is compared with, are then what the gateway's threads pay.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Bench(args) = cli.command else {
        anyhow::bail!("refex-bench runs `bench` only (as `refex bench` does)");
    };
    let explicit = cli.config != std::path::Path::new("refex.toml");
    let settings = config::load_settings(&cli.config, explicit, &Overrides::default())?;
    // Progress goes to the log (stderr); the table to stdout.
    refex::telemetry::init_logging(&settings.log);
    if args
        .store
        .as_deref()
        .is_some_and(|s| !s.starts_with("postgres"))
    {
        anyhow::bail!("--store takes a postgres:// URL (SQLite is always measured)");
    }
    let options = refex_bench::Options {
        settings,
        postgres: args.store,
        budget: if args.quick {
            refex_bench::Budget::quick()
        } else {
            refex_bench::Budget::full()
        },
    };
    let report = refex_bench::run(options).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}
