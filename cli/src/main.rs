//! `trustpool`: the operator command line of a trustpool server. See
//! `trustpool --help` and docs/operating.md.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use trustpool_cli::{args::Cli, commands, one_line, Exit};

fn main() -> ExitCode {
    // Usage errors exit 2 (clap), --help and --version 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trustpool: error: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Error.code());
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = stdout.write_all(outcome.stdout.as_bytes());
            let _ = stdout.flush();
            ExitCode::from(outcome.code.code())
        }
        Err(e) => {
            eprintln!("trustpool: error: {}", one_line(&e.message));
            ExitCode::from(e.code.code())
        }
    }
}
