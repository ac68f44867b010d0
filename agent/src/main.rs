//! `trustpool-agent`: see `trustpool-agent --help`.
//!
//! Exit codes: 0 success (with `--once`: trusted; with `check`: no required
//! check fails), 1 not trusted / a required check fails, 2 error.

use clap::Parser;
use std::process::ExitCode;
use trustpool_agent::config::{AgentCli, AgentConfig, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUSTPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
