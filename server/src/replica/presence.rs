//! Replica presence and policy agreement.
//!
//! Every `ANNOUNCE` each replica writes its row (name, process, policy
//! digest; seen on the database's clock) and reads everyone's. A replica is
//! live while its row is younger than `LIVE`. A replica whose policy digest
//! is not shared by more than half of the live replicas ([`agrees`]) vouches
//! for nobody: `/readyz`, the feed and PollHosts answer 503 and agent
//! streams are refused, so agents move to the replicas that agree. A policy
//! rolled out one replica at a time (three or more) therefore never empties
//! the pool, and a half-rolled-out policy is visible, not silent.

use super::Shared;
use crate::store::ReplicaRow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often a replica announces itself.
pub const ANNOUNCE: Duration = Duration::from_secs(2);

/// How long a replica that stopped announcing still counts as live.
pub const LIVE: Duration = Duration::from_secs(6);

/// The replicas as one presence round saw them.
#[derive(Debug, Clone, Default)]
pub struct ReplicaView {
    /// Live replicas (this one included), by name.
    pub live: Vec<ReplicaRow>,
    /// The name of the maintenance lease's holder, if it is live.
    pub lease_holder: Option<String>,
    /// Whether this replica's policy is the majority's.
    pub agrees: bool,
}

/// Whether `mine` is the digest of more than half of `live` (which holds
/// this replica's own digest too).
pub fn agrees(mine: &str, live: &[&str]) -> bool {
    let same = live.iter().filter(|d| **d == mine).count();
    same * 2 > live.len()
}

/// Announces this replica and follows the others until `stop`; a clean
/// stop removes its row.
pub async fn announce(state: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ANNOUNCE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = round(&state).await {
            warn!(error = %format!("{e:#}"), "cannot announce this replica or read the others");
        }
    }
    if let Err(e) = state.store.withdraw(&state.replica.instance).await {
        warn!(error = %format!("{e:#}"), "cannot remove this replica's presence");
    }
}

/// One round: write our row, read all, decide agreement.
pub async fn round(state: &Shared) -> anyhow::Result<()> {
    let r = &state.replica;
    let digest = state.policy_digest();
    state
        .store
        .announce(&r.name, &r.instance, &digest, r.started_ms)
        .await?;
    let rows = state.store.replicas().await?;
    let live_ms = i64::try_from(LIVE.as_millis()).unwrap_or(i64::MAX);
    let mut live: Vec<ReplicaRow> = rows
        .into_iter()
        .filter(|row| row.age_ms < live_ms || row.instance == r.instance)
        .collect();
    live.sort_by(|a, b| a.name.cmp(&b.name));
    let digests: Vec<&str> = live.iter().map(|row| row.policy_digest.as_str()).collect();
    let agrees_now = agrees(&digest, &digests);
    if agrees_now != r.policy_agrees() {
        if agrees_now {
            warn!(digest = %digest, "this replica's policy is the majority's again: vouching again");
        } else {
            let others: Vec<String> = live
                .iter()
                .filter(|row| row.instance != r.instance)
                .map(|row| format!("{}={:.12}", row.name, row.policy_digest))
                .collect();
            warn!(digest = %digest, others = ?others, "this replica's policy digest is not the one most live replicas enforce: vouching for nobody and refusing agents until it is");
        }
    }
    r.set_agreement(agrees_now);
    let holder = state
        .store
        .lease_holder(super::MAINTENANCE_LEASE)
        .await?
        .filter(|(_, left)| *left > 0)
        .and_then(|(instance, _)| live.iter().find(|row| row.instance == instance))
        .map(|row| row.name.clone());
    r.set_view(ReplicaView {
        live,
        lease_holder: holder,
        agrees: agrees_now,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strict_majority_decides() {
        assert!(agrees("a", &["a"]), "alone");
        assert!(agrees("a", &["a", "a", "b"]));
        assert!(!agrees("b", &["a", "a", "b"]), "the odd one out");
        assert!(!agrees("a", &["a", "b"]), "a tie: both refuse");
        assert!(!agrees("b", &["a", "b"]));
        assert!(!agrees("a", &["a", "b", "c"]));
    }
}
