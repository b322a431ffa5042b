//! The `refex` binary: parses the command line and hands it to its command (`commands`).
//! `anyhow` lives here and in `commands`, the binary's edge, and nowhere in the library.

mod commands;

use anyhow::Context as _;
use clap::Parser as _;

use refex::cli::{AuditCommand, Cli, Command, KeysCommand};

/// mimalloc rather than glibc malloc: submissions allocate on many threads (reactor, blocking
/// pool, store workers), where glibc's arenas contend (see docs/PERFORMANCE.md).
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
            // The chain of causes, not a backtrace: operators read this.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = commands::Ctx {
        config: &cli.config,
        explicit: cli.config != std::path::Path::new("refex.toml"),
    };
    match cli.command {
        Command::Serve(args) => commands::serve(&ctx, args).await,
        Command::Purge(args) => commands::purge(&ctx, args).await,
        Command::Audit(AuditCommand::Export(args)) => commands::audit_export(&ctx, args).await,
        Command::Audit(AuditCommand::Verify(args)) => commands::audit_verify(args).await,
        Command::SubjectAccess(args) => commands::subject_access(&ctx, args).await,
        Command::Report(args) => commands::report(&ctx, args).await,
        Command::Keys(KeysCommand::Rotate(args)) => commands::keys_rotate(&ctx, args).await,
        Command::Keys(KeysCommand::Init(args)) => commands::keys_init(args),
        Command::Ca(cmd) => commands::ca(cmd),
        Command::Keys(KeysCommand::Hosted(args)) => commands::keys_hosted(&ctx, args),
        Command::Bench(args) => commands::bench(&ctx, args).await,
        Command::Send(args) => commands::send(args).await,
        Command::Status(args) => commands::status(args).await,
        Command::Withdraw(args) => commands::withdraw(args).await,
        Command::Inbox(args) => commands::inbox(args).await,
        Command::DevPki(args) => commands::dev_pki(&ctx, args),
    }
}
