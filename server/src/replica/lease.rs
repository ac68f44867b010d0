//! The maintenance lease: one replica at a time runs the Placement sync and
//! records verdict expiries in the history.
//!
//! The holder renews its lease every third of the period; the expiry is
//! set and compared on the database's clock, so the replicas' clocks do not
//! matter. A holder that cannot renew (the database is unreachable) stops
//! acting as holder when its own period, counted from its last successful
//! renewal's start, runs out: by then another replica may take the lease.
//! A clean stop gives the lease up at once, and so does a replica whose
//! policy is not the majority's (it vouches for nobody, Placement included).

use super::Shared;
use super::MAINTENANCE_LEASE;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long the changes table keeps a change (every replica follows
/// within a poll; a replica that was away longer restarts from the store).
const KEEP_CHANGES: Duration = Duration::from_secs(600);

/// How often the holder prunes the change table.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Tries once to take or renew the maintenance lease; returns whether it is held.
pub async fn try_take(state: &Shared) -> bool {
    let r = &state.replica;
    take(&state.store, &r.name, &r.instance, r.lease_period).await
}

/// Takes or renews the maintenance lease for `instance` of replica `name`.
/// A lease held by an earlier process of the same replica (killed, or
/// stopped before it could give the lease up) is taken over at once:
/// replica names are unique, so that process is gone.
pub async fn take(store: &Store, name: &str, instance: &str, period: Duration) -> bool {
    let period = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    if let Ok(Some((holder, _))) = store.lease_holder(MAINTENANCE_LEASE).await {
        if holder != instance && holder.starts_with(&format!("{name}/")) {
            info!(replica = %name, earlier = %holder, "taking over the maintenance lease of this replica's earlier process");
            let _ = store.release_lease(MAINTENANCE_LEASE, &holder).await;
        }
    }
    match store.take_lease(MAINTENANCE_LEASE, instance, period).await {
        Ok(held) => held,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot take or renew the maintenance lease");
            false
        }
    }
}

/// Holds the lease while it can, until `stop`; gives it up on a clean stop.
pub async fn hold(state: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let r = &state.replica;
    let renew = r.lease_period / 3;
    let mut valid_until: Option<Instant> = None;
    let mut last_prune = Instant::now();
    loop {
        let started = Instant::now();
        // A replica that vouches for nobody does not publish to Placement either.
        let agrees = r.policy_agrees();
        let held = agrees && try_take(&state).await;
        if held {
            valid_until = Some(started + r.lease_period);
        } else if !agrees && valid_until.take().is_some() {
            if let Err(e) = state
                .store
                .release_lease(MAINTENANCE_LEASE, &r.instance)
                .await
            {
                warn!(error = %format!("{e:#}"), "cannot give the maintenance lease up");
            }
        }
        let holding = valid_until.is_some_and(|t| Instant::now() < t);
        if holding != r.holds_lease() {
            if holding {
                info!(replica = %r.name, "this replica holds the maintenance lease: Placement sync and expiry history");
            } else {
                warn!(replica = %r.name, "this replica no longer holds the maintenance lease");
            }
        }
        r.set_lease_held(holding);
        if !holding {
            valid_until = None;
        }
        if holding && last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let before = crate::clock::now_ms()
                - i64::try_from(KEEP_CHANGES.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = state.store.prune_changes(before).await {
                warn!(error = %format!("{e:#}"), "cannot prune the change table");
            }
        }
        // Wake at the renewal, or when the lease runs out unrenewed.
        let wake = match valid_until {
            Some(t) => (started + renew).min(t),
            None => started + renew,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(50))) => {}
            _ = stop.changed() => break,
        }
    }
    if r.holds_lease() {
        r.set_lease_held(false);
        if let Err(e) = state
            .store
            .release_lease(MAINTENANCE_LEASE, &r.instance)
            .await
        {
            warn!(error = %format!("{e:#}"), "cannot give the maintenance lease up");
        }
    }
}
