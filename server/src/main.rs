//! `trustpool-server`: see `trustpool-server --help`.

use clap::Parser;
use trustpool_server::config::{ServerArgs, ServerConfig};

fn main() -> std::process::ExitCode {
    trustpool_daemon::init_logging();
    let args = ServerArgs::parse();
    let outcome = ServerConfig::resolve(args).and_then(|cfg| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(trustpool_server::server::run(
            cfg,
            trustpool_daemon::shutdown_signal(),
            trustpool_server::sd_notify::ready,
        ))
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trustpool-server: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
