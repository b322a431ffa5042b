//! The `refex` binary: parses the command line and runs the command. `anyhow` lives here
//! and nowhere else.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;

use refex::cli::{Cli, Command};
use refex::clock::{Clock as _, SystemClock};
use refex::config::{self, Overrides};

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
            // The chain of causes, not a backtrace: operators read this.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let explicit = cli.config != std::path::Path::new("refex.toml");
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen.map(|a| a.to_string()),
                admin_listen: args.admin_listen.map(|a| a.to_string()),
                data_dir: args.data_dir,
                store_url: args.store_url,
            };
            let settings = config::load_settings(&cli.config, explicit, &overrides)?;
            refex::telemetry::init_logging(&settings.log);
            let running = refex::app::start(settings, Arc::new(SystemClock)).await?;
            let stop = running.stopper();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!(
                    "shutdown requested: no new connections; finishing in-flight requests"
                );
                let _ = stop.send(true);
            });
            running.wait().await;
            tracing::info!("refex stopped");
            Ok(())
        }
        Command::Purge(args) => {
            let overrides = Overrides {
                data_dir: args.data_dir,
                store_url: args.store_url,
                ..Overrides::default()
            };
            let settings = config::load_settings(&cli.config, explicit, &overrides)?;
            refex::telemetry::init_logging(&settings.log);
            let report = refex::app::housekeep_once(settings, Arc::new(SystemClock)).await?;
            println!(
                "expired {} deliveries, purged {} referral records, dropped {} replay markers",
                report.expired, report.purged, report.markers
            );
            Ok(())
        }
        Command::DevPki(args) => {
            let settings = config::load_settings(&cli.config, explicit, &Overrides::default())?;
            let summary = refex::devpki::generate(
                &args.out,
                &settings.partners_dir,
                &settings.agreements,
                args.force,
                SystemClock.now(),
            )?;
            eprintln!(
                "Wrote a {} PKI to {}: gateway, {} partners, {} people.\n\
                 Never use it for real referrals.",
                refex::devpki::DEV_ONLY,
                summary.dir.display(),
                summary.partners.len(),
                summary.people
            );
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
