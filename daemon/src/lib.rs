//! What the trustpool programs (agent, server and the operator's CLI) share
//! at the process level, so none carries its own copy:
//!
//! - [`config`]: the TOML configuration file (file:line errors, flag over file);
//! - [`sd_notify`]: readiness for systemd `Type=notify` units;
//! - [`policy_dir`]: reading and checking the policy directory;
//! - [`secrets`]: reading private keys only from files their owner alone can read;
//! - [`init_logging`]: `tracing` to stderr, filtered by `TRUSTPOOL_LOG`;
//! - [`shutdown_signal`]: SIGTERM (systemd's stop) or SIGINT.

pub mod config;
pub mod failover;
pub mod policy_dir;
pub mod sd_notify;
pub mod secrets;

/// Completes on SIGTERM (what `systemctl stop` sends) or SIGINT (Ctrl-C).
/// If SIGTERM cannot be listened for, only SIGINT ends it.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

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
