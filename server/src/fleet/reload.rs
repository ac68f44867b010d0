//! Policy reload: on SIGHUP and whenever a file of the policy directory
//! changes. A candidate that does not parse or validate is refused and the
//! previous policy stays in force (never "no policy", never "allow all").
//! After a reload every host's latest verified facts are re-evaluated at
//! once, so a stricter policy removes hosts immediately, and connected agents
//! are challenged so their next report is judged under the new policy.
//! A candidate with no pool is refused, and so is a file change that would
//! remove a pool with members (see [`guard_removals`]).

use crate::clock::{mono_ms, now_ms};
use crate::fleet::history::trust_events;
use crate::state::AppState;
use crate::store::{HistoryEvent, StoredVerdict};
use crate::verify::facts::evaluate_all;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};
use trustpool_daemon::policy_dir::load_policy_dir;
use trustpool_evidence::reason::Reason;

/// How often the policy directory is checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The operator asked (SIGHUP, `systemctl reload`).
    Explicit,
    /// The directory watch saw a file change (maybe a half-done rsync or checkout).
    Watch,
}

/// Refuses a candidate that would empty the fleet by accident: a policy with
/// no pool is never put in force, and a file change seen by the directory
/// watch may not remove a pool that has members (an operator removes one
/// with an explicit reload). Pure.
pub fn guard_removals(
    current: &[(String, usize)],
    candidate: &[String],
    trigger: Trigger,
) -> Result<(), String> {
    if candidate.is_empty() {
        return Err(
            "the candidate policy defines no pool: an empty policy directory is never put in force (a policy directory being rewritten?)".into(),
        );
    }
    if trigger == Trigger::Watch {
        let removed: Vec<String> = current
            .iter()
            .filter(|(pool, members)| *members > 0 && !candidate.contains(pool))
            .map(|(pool, members)| format!("{pool} ({members} trusted hosts)"))
            .collect();
        if !removed.is_empty() {
            return Err(format!(
                "the candidate policy removes pools that have members: {}; to remove them, reload explicitly (SIGHUP, systemctl reload trustpool-server)",
                removed.join(", ")
            ));
        }
    }
    Ok(())
}

/// Reloads the policy directory; `actor` is recorded in the history.
pub async fn reload(state: &AppState, actor: &str, trigger: Trigger) -> anyhow::Result<bool> {
    let Some(dir) = state.policy_dir.get() else {
        anyhow::bail!("no policy directory configured");
    };
    let current = state.policy();
    let membership: Vec<(String, usize)> = state
        .registry
        .pool_names()
        .into_iter()
        .map(|p| {
            let n = state
                .registry
                .pool(&p, mono_ms())
                .map(|s| s.members.len())
                .unwrap_or(0);
            (p, n)
        })
        .collect();
    let candidate = load_policy_dir(dir).and_then(|c| {
        let names: Vec<String> = c.pools.keys().cloned().collect();
        guard_removals(&membership, &names, trigger).map_err(|e| anyhow::anyhow!(e))?;
        Ok(c)
    });
    let candidate = match candidate {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{e:#}");
            warn!(error = %message, "policy reload refused: the previous policy stays in force");
            state.policy_refused(message.clone());
            state.metrics.policy_reload(false);
            state
                .record(HistoryEvent {
                    at_ms: now_ms(),
                    hostname: String::new(),
                    pool: String::new(),
                    event: "policy_rejected".into(),
                    trusted: false,
                    policy_digest: current.digest_hex(),
                    reasons: vec![Reason::new("policy.invalid", message)],
                    actor: actor.into(),
                })
                .await;
            return Err(e);
        }
    };
    if candidate.digest == current.digest {
        return Ok(false);
    }
    let digest = candidate.digest_hex();
    let pools: Vec<String> = candidate.pools.keys().cloned().collect();
    info!(digest = %digest, previous = %current.digest_hex(), pools = ?pools, %actor, "policy reloaded");
    state.set_policy(candidate);
    state.metrics.policy_reload(true);
    let now = now_ms();
    let mut changes = Vec::new();
    // Pools that disappeared lose their members with the pool itself.
    state.registry.set_pools(&pools, mono_ms());
    state
        .record(HistoryEvent {
            at_ms: now,
            hostname: String::new(),
            pool: String::new(),
            event: "policy_reload".into(),
            trusted: true,
            policy_digest: digest.clone(),
            reasons: vec![],
            actor: actor.into(),
        })
        .await;
    changes.extend(reevaluate(state).await);
    for e in trust_events(&changes, actor, now) {
        state.record(e).await;
    }
    Ok(true)
}

/// Applies the policy in force to every host's latest facts that are still
/// within their validity. Only sound evidence leaves facts behind (unsound
/// evidence withdraws them), so a host whose newest evidence was unsound is
/// never re-admitted here; re-evaluated verdicts keep the expiry of the
/// evidence they come from.
pub async fn reevaluate(state: &AppState) -> Vec<crate::fleet::registry::TrustChange> {
    let policy = state.policy();
    let digest = policy.digest_hex();
    let mut changes = Vec::new();
    for (host, facts) in state.registry.live_facts(mono_ms()) {
        let verdicts: Vec<StoredVerdict> = evaluate_all(&facts, &policy)
            .into_iter()
            .map(|(pool, reasons)| StoredVerdict {
                hostname: host.clone(),
                pool,
                trusted: reasons.is_empty(),
                attested_at_ms: facts.attested_at_ms,
                valid_until_ms: facts.valid_until_ms,
                reasons,
                policy_digest: digest.clone(),
            })
            .collect();
        let mut verdicts = verdicts;
        if let Err(e) = state.store.put_verdicts(&verdicts).await {
            warn!(host = %host, error = %format!("{e:#}"), "could not store re-evaluated verdicts; keeping the host out");
            for v in &mut verdicts {
                v.trusted = false;
                v.reasons.push(Reason::new(
                    "server.store_unavailable",
                    "the re-evaluated verdict could not be stored durably",
                ));
            }
        }
        changes.extend(state.registry.record_reevaluated(verdicts, mono_ms()));
    }
    changes
}

/// Fingerprint of the directory's policy files: names, sizes, mtimes.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    out.sort();
    out
}

/// Reloads on SIGHUP and on changes of the policy directory until `stop`.
pub fn spawn_watchers(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let Some(dir) = state.policy_dir.get().cloned() else {
            return;
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; the policy directory is still watched");
                None
            }
        };
        let mut seen = fingerprint(&dir);
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                    info!("SIGHUP: reloading the policy");
                    seen = fingerprint(&dir);
                    let _ = reload(&state, "SIGHUP", Trigger::Explicit).await;
                }
                _ = tick.tick() => {
                    let now = fingerprint(&dir);
                    if now != seen {
                        seen = now;
                        let _ = reload(&state, "policy directory watch", Trigger::Watch).await;
                    }
                }
                _ = stop.changed() => break,
            }
        }
    });
}

/// Re-reads the CRL files on SIGHUP (beside the policy reload) until `stop`;
/// a set of CRLs that does not load leaves the previous one in force.
pub fn spawn_crl_reload(
    pki: Arc<crate::tls::pki::Pki>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP: the CRLs are not reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the CRLs");
                    let _ = pki.reload_crls();
                }
                _ = stop.changed() => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_an_empty_or_depopulating_candidate_is_refused() {
        let current = vec![("default".to_string(), 12), ("gpu".to_string(), 0)];
        for trigger in [Trigger::Watch, Trigger::Explicit] {
            let e = guard_removals(&current, &[], trigger).expect_err("empty");
            assert!(e.contains("defines no pool"), "{e}");
        }
        let e = guard_removals(&current, &["gpu".into()], Trigger::Watch).expect_err("removal");
        assert!(e.contains("default (12 trusted hosts)"), "{e}");
        // An explicit reload may remove a populated pool; anyone may remove an empty one.
        assert!(guard_removals(&current, &["gpu".into()], Trigger::Explicit).is_ok());
        assert!(guard_removals(&current, &["default".into()], Trigger::Watch).is_ok());
    }
}
