//! `trustpool-server`: see `trustpool-server --help`,
//! `trustpool-server backup --help` and `trustpool-server migrate --help`.

use clap::Parser;
use trustpool_server::config::{BackupArgs, MigrateArgs, ServerArgs, ServerConfig};

/// mimalloc rather than glibc's malloc: at fleet scale the server makes
/// millions of small, short-lived allocations on two runtime threads, where
/// glibc spent a sixth of the server's CPU (consolidation, unlinking free
/// chunks) and held fragmented memory (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    trustpool_daemon::init_logging();
    let command = std::env::args_os().nth(1);
    let outcome = if command.as_ref().is_some_and(|a| a == "backup") {
        backup(BackupArgs::parse_from(std::env::args_os().skip(1)))
    } else if command.as_ref().is_some_and(|a| a == "migrate") {
        migrate(MigrateArgs::parse_from(std::env::args_os().skip(1)))
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

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    use trustpool_server::store::Store;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let from = Store::connect_existing(&args.from).await?;
        let to = Store::connect(&args.to, false).await?;
        let copied = from.copy_into(&to).await?;
        for (table, rows) in &copied {
            println!("{table}: {rows} rows");
        }
        println!(
            "copied store {} from {} into {}",
            from.store_id(),
            args.from,
            args.to
        );
        from.close().await;
        to.close().await;
        anyhow::Ok(())
    })
}
