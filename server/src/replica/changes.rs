//! The change follower: re-reads the hosts other replicas changed.
//!
//! Every `POLL` the follower asks for the places (`seq`) of the changes
//! after the last settled one, fetches the rows it has not seen, skips its
//! own, and re-reads each changed host whole from the store
//! ([`crate::store::Store::stored_hosts`]) into the registry
//! ([`crate::fleet::registry::Registry::apply_stored`]). Re-reading the
//! host, not replaying the change, makes the order of changes irrelevant:
//! what is applied is what is committed now.
//!
//! Places are handed out when a transaction inserts its row, not when it
//! commits, so a change can become visible after a later one, and a
//! transaction that rolls back (or a Galera node's auto-increment offset)
//! leaves a place that never fills. [`Cursor`] therefore keeps reading from
//! the first missing place until it fills or `GAP_WAIT` has passed; no
//! transaction of the store stays open that long.

use super::Shared;
use crate::clock::{mono_ms, now_ms};
use crate::fleet::registry::StoredHostState;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the follower reads the change table.
pub const POLL: Duration = Duration::from_millis(200);

/// How long a missing place is waited for before it counts as never filled.
pub const GAP_WAIT: Duration = Duration::from_secs(5);

/// Most places read per poll.
const PAGE: i64 = 5000;

/// Which changes were seen, as places in the change table. Pure: the
/// follower feeds it what the table said and when.
#[derive(Debug)]
pub struct Cursor {
    /// Every place up to here is seen or given up.
    settled: i64,
    /// Places seen above `settled`.
    seen: BTreeSet<i64>,
    /// Since when the place after `settled` has been missing while later
    /// ones were there.
    gap_since: Option<Instant>,
}

impl Cursor {
    /// A cursor that has seen everything up to `settled`.
    pub fn new(settled: i64) -> Cursor {
        Cursor {
            settled,
            seen: BTreeSet::new(),
            gap_since: None,
        }
    }

    /// The place to read after.
    pub fn after(&self) -> i64 {
        self.settled
    }

    /// The places of `listed` (read after [`Cursor::after`]) not seen before.
    pub fn unseen(&self, listed: &[i64]) -> Vec<i64> {
        listed
            .iter()
            .copied()
            .filter(|s| *s > self.settled && !self.seen.contains(s))
            .collect()
    }

    /// Records that `places` were read, and settles what can be settled at `now`.
    pub fn saw(&mut self, places: &[i64], now: Instant) {
        self.seen
            .extend(places.iter().copied().filter(|s| *s > self.settled));
        loop {
            if self.seen.remove(&(self.settled + 1)) {
                self.settled += 1;
                self.gap_since = None;
                continue;
            }
            let Some(&first) = self.seen.first() else {
                self.gap_since = None;
                break;
            };
            match self.gap_since {
                None => {
                    self.gap_since = Some(now);
                    break;
                }
                Some(since) if now.duration_since(since) >= GAP_WAIT => {
                    // Never filled: settle up to the next seen place.
                    self.settled = first - 1;
                    self.gap_since = None;
                }
                Some(_) => break,
            }
        }
    }
}

/// Follows the change table from `after` until `stop`.
pub async fn follow(state: Arc<Shared>, after: i64, mut stop: watch::Receiver<bool>) {
    let mut cursor = Cursor::new(after);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        match poll(&state, &mut cursor).await {
            Ok(applied) => {
                if failing {
                    info!("the change table can be read again");
                    failing = false;
                }
                if applied > 0 {
                    debug!(hosts = applied, "hosts changed by other replicas re-read");
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %format!("{e:#}"), "cannot follow the other replicas' changes; retrying");
                    failing = true;
                }
            }
        }
    }
}

/// One poll: returns the hosts re-read.
async fn poll(state: &Shared, cursor: &mut Cursor) -> anyhow::Result<usize> {
    let listed = state.store.change_seqs_after(cursor.after(), PAGE).await?;
    let places: Vec<i64> = listed.iter().map(|(seq, _)| *seq).collect();
    let unseen = cursor.unseen(&places);
    if unseen.is_empty() {
        cursor.saw(&[], Instant::now());
        return Ok(0);
    }
    // This replica's own changes are in its registry already.
    let me = state.store.replica();
    let (mut read, mut theirs) = (Vec::new(), Vec::new());
    for (seq, writer) in listed.iter().filter(|(seq, _)| unseen.contains(seq)) {
        if writer == me {
            read.push(*seq);
        } else {
            theirs.push(*seq);
        }
    }
    let changes = state.store.changes_at(&theirs).await?;
    let mut hosts = BTreeSet::new();
    for c in &changes {
        state.registry.observe(c.stamp);
        hosts.extend(c.hosts.iter().cloned());
    }
    let hosts: Vec<String> = hosts.into_iter().collect();
    if !hosts.is_empty() {
        apply(state, &hosts).await?;
    }
    // Only what was read is seen: a place listed but gone since (pruned)
    // is read again or given up.
    read.extend(changes.iter().map(|c| c.seq));
    cursor.saw(&read, Instant::now());
    state.replica.count_applied(hosts.len());
    Ok(hosts.len())
}

/// Re-reads `hosts` from the store into the registry.
async fn apply(state: &Shared, hosts: &[String]) -> anyhow::Result<()> {
    let stored = state.store.stored_hosts(hosts).await?;
    let (now, wall) = (mono_ms(), now_ms());
    for h in stored {
        let facts = match h
            .facts
            .as_ref()
            .map(crate::verify::facts::Facts::from_stored)
        {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                warn!(host = %h.hostname, error = %e, "stored evidence facts do not parse; ignored");
                None
            }
            None => None,
        };
        let changes = state.registry.apply_stored(
            StoredHostState {
                hostname: h.hostname,
                enrolment: h.enrolment,
                pending: h.pending,
                revocation: h.revocation,
                clock: h.clock,
                facts,
                verdicts: h.verdicts,
            },
            now,
            wall,
        );
        for c in changes.iter().filter(|c| c.flip) {
            debug!(host = %c.hostname, pool = %c.pool, trusted = c.trusted, "membership changed by another replica");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_in_order_settle_at_once() {
        let t = Instant::now();
        let mut c = Cursor::new(10);
        assert_eq!(c.unseen(&[11, 12, 13]), vec![11, 12, 13]);
        c.saw(&[11, 12, 13], t);
        assert_eq!(c.after(), 13);
        assert!(c.unseen(&[13]).is_empty());
    }

    #[test]
    fn a_missing_place_is_read_again_until_it_fills() {
        let t = Instant::now();
        let mut c = Cursor::new(0);
        c.saw(&[1, 3], t);
        assert_eq!(c.after(), 1, "2 is missing: read from after 1 again");
        assert_eq!(c.unseen(&[3]), Vec::<i64>::new(), "3 is not applied twice");
        // The transaction holding 2 commits.
        assert_eq!(c.unseen(&[2, 3]), vec![2]);
        c.saw(&[2], t + Duration::from_millis(300));
        assert_eq!(c.after(), 3);
    }

    #[test]
    fn a_place_that_never_fills_is_given_up_after_the_wait() {
        let t = Instant::now();
        let mut c = Cursor::new(0);
        c.saw(&[2, 3], t);
        assert_eq!(c.after(), 0);
        c.saw(&[], t + GAP_WAIT / 2);
        assert_eq!(c.after(), 0, "still waiting");
        c.saw(&[], t + GAP_WAIT);
        assert_eq!(c.after(), 3, "1 given up, 2 and 3 were seen");
        // Galera-like steps of 3: every gap is given up, nothing is lost.
        c.saw(&[6, 9], t + GAP_WAIT);
        c.saw(&[], t + GAP_WAIT * 2);
        assert_eq!(c.after(), 6);
        c.saw(&[], t + GAP_WAIT * 3);
        assert_eq!(c.after(), 9);
    }
}
