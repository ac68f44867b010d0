//! What the trustpool daemons (agent and server) share at the process
//! level, so neither carries its own copy:
//!
//! - [`config`]: the TOML configuration file (file:line errors, flag over file);
//! - [`sd_notify`]: readiness for systemd `Type=notify` units;
//! - [`secrets`]: reading private keys only from files their owner alone can read;
//! - [`init_logging`]: `tracing` to stderr, filtered by `TRUSTPOOL_LOG`.

pub mod config;
pub mod sd_notify;
pub mod secrets;

/// Sends `tracing` output to stderr (ANSI colours only on a terminal),
/// filtered by `TRUSTPOOL_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUSTPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
