//! The `refex` binary: parses the command line and hands it to its command (`cli_commands`).
//! `anyhow` lives here and in `cli_commands`, the binary's edge, and nowhere in the library.

mod cli_commands;

use anyhow::Context as _;
use clap::Parser as _;

use refex::cli::{AuditCommand, Cli, Command, KeysCommand};

/// mimalloc rather than glibc malloc: submissions allocate on many threads (reactor, CPU
/// threads, store workers), where glibc's arenas contend (see docs/PERFORMANCE.md).
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
    let ctx = cli_commands::Ctx {
        config: &cli.config,
        explicit: cli.config != std::path::Path::new("refex.toml"),
    };
    match cli.command {
        Command::Serve(args) => cli_commands::serve(&ctx, args).await,
        Command::Purge(args) => cli_commands::purge(&ctx, args).await,
        Command::Audit(AuditCommand::Export(args)) => cli_commands::audit_export(&ctx, args).await,
        Command::Audit(AuditCommand::Verify(args)) => cli_commands::audit_verify(args).await,
        Command::SubjectAccess(args) => cli_commands::subject_access(&ctx, args).await,
        Command::Report(args) => cli_commands::report(&ctx, args).await,
        Command::Keys(KeysCommand::Rotate(args)) => cli_commands::keys_rotate(&ctx, args).await,
        Command::Keys(KeysCommand::Init(args)) => cli_commands::keys_init(args),
        Command::Ca(cmd) => cli_commands::ca(cmd),
        Command::Keys(KeysCommand::Hosted(args)) => cli_commands::keys_hosted(&ctx, args),
        Command::Bench(_) => cli_commands::bench(),
        Command::Send(args) => cli_commands::send(args).await,
        Command::Status(args) => cli_commands::status(args).await,
        Command::Withdraw(args) => cli_commands::withdraw(args).await,
        Command::Inbox(args) => cli_commands::inbox(args).await,
        Command::DevPki(args) => cli_commands::dev_pki(&ctx, args),
    }
}
