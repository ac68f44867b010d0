//! trustpool agent library: TPM access, hardening reports and the
//! attestation client. The binary `trustpool-agent` is a thin wrapper.
//!
//! - [`tpm`]: the TPM through tss-esapi, on a dedicated thread;
//! - [`report`]: hardening checks bound into each quote, and `check`;
//! - [`eventlog`]: the measured-boot event logs sent with each quote;
//! - [`client`]: the gRPC stream, enrolment, quotes;
//! - `trustpool_daemon::failover`: which server of the list next, back-off and jitter;
//! - [`watch`]: change-driven re-attestation between rounds;
//! - [`config`]: command line and configuration file;
//! - [`secrets`], [`sd_notify`]: private-key file modes, systemd readiness.

pub mod client;
pub mod config;
pub mod eventlog;
pub mod report;
pub mod tpm;
pub mod watch;

use crate::client::render_verdict;
use crate::config::AgentConfig;
use crate::eventlog::EventLogReader;
use crate::report::Reporter;
use crate::tpm::{AkAlg, EkAlg, Tpm, TpmWorker};
use anyhow::Context;

/// Exit code of a running agent that gave up on its TPM after
/// `--tpm-lost-exit-after` (its service manager restarts it).
pub const EXIT_TPM_LOST: u8 = 3;

/// How long an agent that gives up on its TPM waits for the TPM thread to
/// close the context before it exits anyway (the thread may be stuck in a
/// TPM command that does not return).
const TPM_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the agent; returns the process exit code.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<u8> {
    // A key that others may read stops start-up at once, before the TPM.
    secrets::read_private_key(&cfg.key, "client key")?;
    std::fs::create_dir_all(&cfg.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            cfg.state_dir.display()
        )
    })?;
    let tcti = cfg.tcti.clone();
    let state_dir = cfg.state_dir.clone();
    let tpm = tokio::task::spawn_blocking(move || {
        Tpm::open(&tcti, &state_dir, EkAlg::Rsa2048, AkAlg::RsaSsa2048)
    })
    .await
    .context("TPM thread failed")?
    .with_context(|| format!("cannot open the TPM at {}", cfg.tcti))?;
    let tpm = TpmWorker::spawn(tpm);
    sd_notify::ready();
    let reporter = Reporter::new(&cfg.root, &cfg.role)?;
    let event_logs = EventLogReader::from_config(&cfg);
    if !cfg.once {
        tokio::select! {
            outcome = client::run_forever(&cfg, &tpm, &reporter, &event_logs) => outcome?,
            () = trustpool_daemon::shutdown_signal() => {
                tracing::info!("stopping: the TPM operation in flight finishes and flushes first");
            }
            lost = tpm.unusable_for(cfg.tpm_lost_exit_after) => {
                tracing::error!(
                    tcti = %cfg.tcti,
                    unusable_for_ms = u64::try_from(lost.lasted.as_millis()).unwrap_or(u64::MAX),
                    last_error = %lost.reason,
                    exit_code = EXIT_TPM_LOST,
                    "no working TPM for longer than --tpm-lost-exit-after ({}): exiting so that \
                     the service manager restarts the agent",
                    trustpool_evidence::duration::format_duration(cfg.tpm_lost_exit_after),
                );
                if tokio::time::timeout(TPM_STOP_GRACE, tpm.stop()).await.is_err() {
                    tracing::warn!("the TPM thread did not stop; exiting without closing the TPM context");
                }
                return Ok(EXIT_TPM_LOST);
            }
        }
        // The session (and its stream) is dropped by now; without a resource
        // manager (swtpm, /dev/tpm0) nothing else would flush what it loaded.
        tpm.stop().await;
        tracing::info!("trustpool-agent stopped");
        return Ok(0);
    }
    let v = client::once(&cfg, &tpm, &reporter, &event_logs).await?;
    print!("{}", render_verdict(&cfg.hostname, &v));
    let trusted = match &cfg.pool {
        Some(pool) => v.pools.iter().any(|p| &p.pool == pool && p.trusted),
        None => v.pools.iter().any(|p| p.trusted),
    };
    Ok(if trusted { 0 } else { 1 })
}

pub use trustpool_daemon::{sd_notify, secrets};
