//! `trustpool-agent`: see `trustpool-agent --help`.
//!
//! Exit codes: 0 success (with `--once`: trusted; with `check`: no required
//! check fails), 1 not trusted / a required check fails, 2 error, 3 the
//! running agent had no working TPM for `--tpm-lost-exit-after`.

use clap::Parser;
use std::process::ExitCode;
use trustpool_agent::config::{AgentCli, AgentConfig, Command};

fn main() -> ExitCode {
    trustpool_daemon::init_logging();
    let cli = AgentCli::parse();
    let outcome = match cli.command {
        Some(Command::Check(args)) => trustpool_agent::report::check_command(&args),
        None => AgentConfig::resolve(cli.run).and_then(|cfg| {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(trustpool_agent::run(cfg))
        }),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("trustpool-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
