//! The append-only history, written in batches off the attestation path.
//!
//! Sessions push events into a channel; one task commits them in batches
//! (at most [`BATCH`] events or every [`FLUSH_EVERY`]), so thousands of
//! reports per second cost one SQLite transaction per batch. A crash loses at
//! most the batch being collected. Enrolments, approvals and revocations are
//! not written here: the store commits them with their event in the same
//! transaction.

use crate::store::{HistoryEvent, Store};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// Largest batch committed at once.
pub const BATCH: usize = 1000;
/// Longest time an event waits before it is committed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Events kept in memory while the database refuses them; beyond, the
/// oldest are dropped with an error in the log.
const BACKLOG_LIMIT: usize = 100_000;

/// Sends events to the writer task.
#[derive(Clone, Debug)]
pub struct History {
    tx: mpsc::Sender<HistoryEvent>,
}

impl History {
    /// Starts the writer task on `store`. Dropping every `History` clone
    /// flushes what is queued and ends the task.
    pub fn start(store: Store) -> (History, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16_384);
        let task = tokio::spawn(write_batches(store, rx));
        (History { tx }, task)
    }

    /// Queues an event (waits only if the queue is full).
    pub async fn record(&self, event: HistoryEvent) {
        if self.tx.send(event).await.is_err() {
            warn!("history writer stopped: an event was not recorded");
        }
    }
}

async fn write_batches(store: Store, mut rx: mpsc::Receiver<HistoryEvent>) {
    let mut backlog: Vec<HistoryEvent> = Vec::new();
    let mut open = true;
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
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), queued = backlog.len(), "history batch not stored; retrying");
                if backlog.len() > BACKLOG_LIMIT {
                    let dropped = backlog.len() - BACKLOG_LIMIT;
                    backlog.drain(..dropped);
                    error!(dropped, "history backlog full: oldest events dropped");
                }
                if !open {
                    error!(lost = backlog.len(), "shutting down with unstored history");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// History event kind: a host joined or left a pool.
pub const TRUST_CHANGE: &str = "verdict";
/// History event kind: a verdict that says something new (its reasons or
/// policy digest) without changing membership.
pub const STORY_CHANGE: &str = "reasons";

/// History events for membership changes ([`TRUST_CHANGE`]) and for verdicts
/// whose reasons or policy changed without a flip ([`STORY_CHANGE`]).
pub fn trust_events(
    changes: &[crate::registry::TrustChange],
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
}
