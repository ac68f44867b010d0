//! `trustpool-server`: see `trustpool-server --help` and
//! `trustpool-server backup --help`.

use clap::Parser;
use trustpool_server::config::{BackupArgs, ServerArgs, ServerConfig};

/// mimalloc rather than glibc's malloc: at fleet scale the server makes
/// millions of small, short-lived allocations on two runtime threads, where
/// glibc spent a sixth of the server's CPU (consolidation, unlinking free
/// chunks) and held fragmented memory (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    trustpool_daemon::init_logging();
    let outcome = if std::env::args_os().nth(1).is_some_and(|a| a == "backup") {
        backup(BackupArgs::parse_from(std::env::args_os().skip(1)))
    } else {
        let args = ServerArgs::parse();
        ServerConfig::resolve(args).and_then(|cfg| {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(trustpool_server::server::run(
                cfg,
                trustpool_daemon::shutdown_signal(),
                trustpool_server::sd_notify::ready,
            ))
        })
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trustpool-server: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let id = runtime.block_on(trustpool_server::store::backup_file(&args.db, &args.to))?;
    println!(
        "backed up {} (store {id}) into {}",
        args.db.display(),
        args.to.display()
    );
    Ok(())
}
