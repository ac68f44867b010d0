//! The append-only history, written in batches off the attestation path.
//!
//! Sessions push events into a channel; one task commits them in batches
//! (at most [`BATCH`] events or every [`FLUSH_EVERY`]), so thousands of
//! reports per second cost one SQLite transaction per batch. A crash loses at
//! most the batch being collected. Enrolments, approvals and revocations are
//! not written here: the store commits them with their event in the same
//! transaction.
//!
//! While the database refuses writes, events stay queued in memory and are
//! retried every [`RETRY_EVERY`] (up to [`BACKLOG_LIMIT`]); at shutdown the
//! writer keeps retrying for [`SHUTDOWN_RETRY`]. Whatever is dropped after
//! all is logged at error level, each event and the counts by kind, and
//! counted in `trustpool_history_lost_total`.

use crate::store::{HistoryEvent, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Largest batch committed at once.
pub const BATCH: usize = 1000;
/// Longest time an event waits before it is committed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Events kept in memory while the database refuses them; beyond, the
/// oldest are dropped with an error in the log.
const BACKLOG_LIMIT: usize = 100_000;
/// Time between two attempts while the database refuses a batch.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a stopping server keeps retrying unstored history.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(4);
/// Lost events logged one by one (beyond, only the counts).
const LOG_LOST_EVENTS: usize = 1000;

/// Sends events to the writer task.
#[derive(Clone, Debug)]
pub struct History {
    tx: mpsc::Sender<HistoryEvent>,
    lost: Arc<AtomicU64>,
}

impl History {
    /// Starts the writer task on `store`. Dropping every `History` clone
    /// flushes what is queued and ends the task.
    pub fn start(store: Store) -> (History, JoinHandle<()>) {
        Self::start_with(store, SHUTDOWN_RETRY)
    }

    /// [`History::start`] with another shutdown retry period.
    pub fn start_with(store: Store, shutdown_retry: Duration) -> (History, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16_384);
        let lost = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_batches(store, rx, lost.clone(), shutdown_retry));
        (History { tx, lost }, task)
    }

    /// Events dropped because they could not be stored.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Queues an event (waits only if the queue is full).
    pub async fn record(&self, event: HistoryEvent) {
        if self.tx.send(event).await.is_err() {
            warn!("history writer stopped: an event was not recorded");
        }
    }
}

async fn write_batches(
    store: Store,
    mut rx: mpsc::Receiver<HistoryEvent>,
    lost: Arc<AtomicU64>,
    shutdown_retry: Duration,
) {
    let mut backlog: Vec<HistoryEvent> = Vec::new();
    let mut open = true;
    let mut failing = false;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    while open || !backlog.is_empty() {
        if backlog.is_empty() {
            match rx.recv().await {
                Some(e) => backlog.push(e),
                None => break,
            }
        }
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        while open && backlog.len() < BATCH {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => backlog.push(e),
                    None => open = false,
                },
                _ = &mut deadline => break,
            }
        }
        let take = backlog.len().min(BATCH);
        match store.append_history(&backlog[..take]).await {
            Ok(()) => {
                backlog.drain(..take);
                if failing {
                    failing = false;
                    info!(queued = backlog.len(), "history stored again");
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %format!("{e:#}"), queued = backlog.len(), "history batch not stored; kept in memory and retried");
                }
                failing = true;
                if backlog.len() > BACKLOG_LIMIT {
                    let dropped = backlog.len() - BACKLOG_LIMIT;
                    let gone: Vec<HistoryEvent> = backlog.drain(..dropped).collect();
                    report_lost(&gone, &lost, "history backlog full: oldest events dropped");
                }
                if !open {
                    let at = *give_up_at
                        .get_or_insert_with(|| tokio::time::Instant::now() + shutdown_retry);
                    if tokio::time::Instant::now() >= at {
                        report_lost(&backlog, &lost, "shutting down with unstored history");
                        return;
                    }
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// Counts events by kind.
fn counts_by_kind(events: &[HistoryEvent]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.event.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Logs dropped events (each, up to [`LOG_LOST_EVENTS`], then their counts
/// by kind) so that an operator can still answer from the log what the
/// history table misses.
fn report_lost(events: &[HistoryEvent], lost: &AtomicU64, what: &str) {
    if events.is_empty() {
        return;
    }
    lost.fetch_add(events.len() as u64, Ordering::Relaxed);
    for e in events.iter().take(LOG_LOST_EVENTS) {
        let reasons: Vec<&str> = e.reasons.iter().map(|r| r.code.as_str()).collect();
        error!(at_ms = e.at_ms, host = %e.hostname, pool = %e.pool, event = %e.event, trusted = e.trusted, policy_digest = %e.policy_digest, reasons = ?reasons, actor = %e.actor, "history event lost");
    }
    error!(lost = events.len(), by_kind = ?counts_by_kind(events), "{what}");
}

/// History event kind: a host joined or left a pool.
pub const TRUST_CHANGE: &str = "verdict";
/// History event kind: a verdict that says something new (its reasons or
/// policy digest) without changing membership.
pub const STORY_CHANGE: &str = "reasons";

/// History events for membership changes ([`TRUST_CHANGE`]) and for verdicts
/// whose reasons or policy changed without a flip ([`STORY_CHANGE`]).
pub fn trust_events(
    changes: &[crate::fleet::registry::TrustChange],
    actor: &str,
    at_ms: i64,
) -> Vec<HistoryEvent> {
    changes
        .iter()
        .map(|c| HistoryEvent {
            at_ms,
            hostname: c.hostname.clone(),
            pool: c.pool.clone(),
            event: if c.flip { TRUST_CHANGE } else { STORY_CHANGE }.into(),
            trusted: c.trusted,
            policy_digest: c.policy_digest.clone(),
            reasons: c.reasons.clone(),
            actor: actor.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> HistoryEvent {
        HistoryEvent {
            at_ms: i,
            hostname: "h".into(),
            pool: "p".into(),
            event: "verdict".into(),
            trusted: i % 2 == 0,
            policy_digest: "d".into(),
            reasons: vec![],
            actor: "agent".into(),
        }
    }

    #[tokio::test]
    async fn every_event_is_committed_in_order_and_flushed_on_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("h.db")).await.expect("store");
        let (history, task) = History::start(store.clone());
        for i in 0..2500 {
            history.record(event(i)).await;
        }
        drop(history);
        task.await.expect("writer ends");
        let stored = store.history("h", 0, 5000).await.expect("read");
        assert_eq!(stored.len(), 2500);
        assert!(stored.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn lost_events_are_counted_by_kind() {
        let mut events: Vec<HistoryEvent> = (0..3).map(event).collect();
        events[1].event = "reboot".into();
        let counts = counts_by_kind(&events);
        assert_eq!(counts.get("verdict"), Some(&2));
        assert_eq!(counts.get("reboot"), Some(&1));
        let lost = AtomicU64::new(0);
        report_lost(&events, &lost, "test");
        assert_eq!(lost.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn events_refused_by_the_database_are_retried_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.db");
        let store = Store::open(&path).await.expect("store");
        // The history table refuses writes for a while (a trigger stands in
        // for the full disk), then accepts them again.
        sqlx_refuse(&store, true).await;
        let (history, task) = History::start_with(store.clone(), Duration::from_secs(30));
        for i in 0..5 {
            history.record(event(i)).await;
        }
        // The server stops while the database still refuses them.
        drop(history);
        tokio::time::sleep(FLUSH_EVERY + RETRY_EVERY * 2).await;
        assert!(store.history("h", 0, 10).await.expect("read").is_empty());
        assert!(!task.is_finished(), "the writer keeps retrying");
        sqlx_refuse(&store, false).await;
        task.await.expect("writer ends");
        assert_eq!(store.history("h", 0, 10).await.expect("read").len(), 5);
    }

    async fn sqlx_refuse(store: &Store, refuse: bool) {
        let sql = if refuse {
            "CREATE TRIGGER refuse BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'refused'); END"
        } else {
            "DROP TRIGGER refuse"
        };
        store.execute_for_tests(sql).await;
    }
}
