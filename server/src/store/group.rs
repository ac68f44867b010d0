//! Group commit: one writer task turns the evidence of many sessions into
//! one transaction, so a fleet costs one fsync per batch rather than one per
//! report.
//!
//! A session hands its host's [`EvidenceRecord`] to [`GroupCommit::commit`]
//! and waits; the writer takes everything queued, commits it in one
//! transaction and answers every waiter with the outcome. Batching is
//! natural rather than timed: the first report of a quiet moment is written
//! at once (no added latency), and what arrives while a batch is being
//! written forms the next one, so the batch grows with the load and the
//! fsync rate stays bounded by the disk, not by the fleet.
//!
//! Durable before published: a session applies its verdicts (registry,
//! feed, Placement) only after its batch committed. A batch that fails
//! publishes nothing: when the database itself failed, every waiter gets the
//! error (and marks its host untrusted); when one record was refused (a
//! constraint, an oversized value), the records are written one by one so
//! that one host's bad data never costs the others their verdict.

use super::{
    is_pool_timeout, is_store_fault, EvidenceCommit, FactsChange, Store, StoredClock, StoredFacts,
    StoredVerdict,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// The most reports one transaction carries.
pub const MAX_BATCH: usize = 1024;

/// How often a batch waits again for a pooled connection.
const POOL_RETRIES: usize = 3;

/// Reports that may wait for the writer before sessions wait to queue.
const QUEUE: usize = 8 * MAX_BATCH;

/// What one piece of evidence changes durably, owned so it can wait in the
/// writer's queue (the owned form of [`EvidenceCommit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// The host.
    pub hostname: String,
    /// Its new latest verdicts (may be empty).
    pub verdicts: Vec<StoredVerdict>,
    /// Its facts.
    pub facts: FactsRecord,
    /// Its accepted TPM clock, when it changed.
    pub clock: Option<StoredClock>,
}

/// The owned form of [`FactsChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactsRecord {
    /// Leave them as they are.
    Keep,
    /// Replace them (the body, and the log rows that changed).
    Put(StoredFacts),
    /// Delete them: the newest evidence was not sound.
    Withdraw,
}

impl EvidenceRecord {
    fn as_commit(&self) -> EvidenceCommit<'_> {
        EvidenceCommit {
            hostname: &self.hostname,
            verdicts: &self.verdicts,
            facts: match &self.facts {
                FactsRecord::Keep => FactsChange::Keep,
                FactsRecord::Put(body) => FactsChange::Put(body),
                FactsRecord::Withdraw => FactsChange::Withdraw,
            },
            clock: self.clock,
        }
    }
}

struct Waiting {
    record: EvidenceRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// The group-commit writer of a store. The writer task starts with the
/// first commit (on the runtime of the caller) and ends when the last
/// handle is dropped.
pub struct GroupCommit {
    store: Store,
    queue: OnceLock<mpsc::Sender<Waiting>>,
    counts: Arc<Counts>,
}

/// What the writer did, for the metrics.
#[derive(Debug, Default)]
struct Counts {
    batches: AtomicU64,
    reports: AtomicU64,
}

impl GroupCommit {
    /// A writer for `store`.
    pub fn new(store: Store) -> GroupCommit {
        GroupCommit {
            store,
            queue: OnceLock::new(),
            counts: Arc::default(),
        }
    }

    /// Transactions written so far.
    pub fn batches(&self) -> u64 {
        self.counts.batches.load(Ordering::Relaxed)
    }

    /// Reports carried by those transactions.
    pub fn reports(&self) -> u64 {
        self.counts.reports.load(Ordering::Relaxed)
    }

    /// Commits one host's evidence in the next batch and returns once that
    /// batch is durable (or failed: the error says why).
    pub async fn commit(&self, record: EvidenceRecord) -> anyhow::Result<()> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(self.store.clone(), rx, self.counts.clone()));
            tx
        });
        let (done, answer) = oneshot::channel();
        queue
            .send(Waiting { record, done })
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(anyhow::anyhow!(message)),
            Err(_) => anyhow::bail!("the store's writer stopped before the commit"),
        }
    }
}

/// The writer task: one transaction per batch of whatever is queued.
async fn writer(store: Store, mut queue: mpsc::Receiver<Waiting>, counts: Arc<Counts>) {
    let mut batch: Vec<Waiting> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        counts.batches.fetch_add(1, Ordering::Relaxed);
        counts
            .reports
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let outcomes = commit_batch(&store, &batch).await;
        for (waiting, outcome) in batch.drain(..).zip(outcomes) {
            // A session that went away no longer waits: nothing to tell.
            let _ = waiting.done.send(outcome);
        }
    }
}

/// Commits a batch; the outcome of each record, in order.
async fn commit_batch(store: &Store, batch: &[Waiting]) -> Vec<Result<(), String>> {
    let commits: Vec<EvidenceCommit<'_>> = batch.iter().map(|w| w.record.as_commit()).collect();
    let mut result = store.commit_evidence_batch(&commits).await;
    // Waiting for a connection behind enrolments and history is the
    // server's own slowness: wait again rather than fail the batch's hosts.
    for _ in 0..POOL_RETRIES {
        match &result {
            Err(e) if is_pool_timeout(e) => {
                warn!(
                    reports = batch.len(),
                    "no database connection within the acquire timeout: retrying the batch"
                );
                result = store.commit_evidence_batch(&commits).await;
            }
            _ => break,
        }
    }
    match result {
        Ok(()) => vec![Ok(()); batch.len()],
        Err(e) if batch.len() == 1 || is_store_fault(&e) => {
            let message = format!("{e:#}");
            vec![Err(message); batch.len()]
        }
        Err(e) => {
            warn!(reports = batch.len(), error = %format!("{e:#}"), "a batch of evidence was refused: writing its reports one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for c in &commits {
                outcomes.push(store.commit_evidence(c).await.map_err(|e| format!("{e:#}")));
            }
            outcomes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(host: &str, trusted: bool, at: i64) -> StoredVerdict {
        StoredVerdict {
            hostname: host.into(),
            pool: "default".into(),
            trusted,
            attested_at_ms: at,
            valid_until_ms: at + 75_000,
            reasons: vec![],
            policy_digest: "d".into(),
        }
    }

    fn record(host: &str, at: i64) -> EvidenceRecord {
        EvidenceRecord {
            hostname: host.into(),
            verdicts: vec![verdict(host, true, at)],
            facts: FactsRecord::Put(StoredFacts::body_only(format!("{{\"at\":{at}}}"))),
            clock: Some(StoredClock {
                reset_count: 1,
                restart_count: 0,
                clock: at as u64,
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_sessions_share_few_transactions_and_all_of_it_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).await.expect("store");
        let group = Arc::new(GroupCommit::new(store.clone()));
        let mut tasks = Vec::new();
        for i in 0..300 {
            let group = group.clone();
            tasks.push(tokio::spawn(async move {
                group.commit(record(&format!("h{i:03}"), 1_000 + i)).await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("committed");
        }
        let verdicts = store.verdicts().await.expect("verdicts");
        assert_eq!(verdicts.len(), 300);
        assert!(verdicts.iter().all(|v| v.trusted));
        assert_eq!(store.clocks().await.expect("clocks").len(), 300);
        assert_eq!(group.reports(), 300);
        // 300 sessions queue faster than one fsync: far fewer transactions
        // than reports (one per report without group commit).
        assert!(
            group.batches() <= 150,
            "{} transactions for 300 reports",
            group.batches()
        );
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_answers_every_waiter_with_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.expect("store");
        let group = GroupCommit::new(store.clone());
        group.commit(record("h1", 1)).await.expect("first commit");
        // The database file is replaced under the server: the store fails
        // closed and refuses every write.
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(&path, b"").expect("an empty file in its place");
        let _ = store.check_identity();
        let err = group
            .commit(record("h2", 2))
            .await
            .expect_err("nothing is committed to a replaced database");
        assert!(format!("{err:#}").contains("writes refused"), "{err:#}");
    }

    #[tokio::test]
    async fn a_reopened_store_holds_exactly_what_was_answered_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let answered = {
            let store = Store::open(&path).await.expect("store");
            let group = GroupCommit::new(store);
            let mut answered = Vec::new();
            for i in 0..20 {
                let r = record(&format!("h{i}"), 100 + i);
                group.commit(r.clone()).await.expect("committed");
                answered.push(r);
            }
            // Dropped here without a shutdown of any kind.
            answered
        };
        let store = Store::open(&path).await.expect("reopened");
        let mut verdicts = store.verdicts().await.expect("verdicts");
        verdicts.sort_by_key(|v| v.attested_at_ms);
        let expected: Vec<StoredVerdict> =
            answered.iter().flat_map(|r| r.verdicts.clone()).collect();
        assert_eq!(verdicts, expected);
        let facts = store.facts().await.expect("facts");
        assert_eq!(facts.len(), 20);
    }
}
