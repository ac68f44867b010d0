//! Admission of expensive work from all sessions: at most N attestation
//! rounds (challenge sent → verdict sent) and at most M enrolments
//! (credential activation) at once, first come first served.
//!
//! Without a bound, an overloaded server sends every host its challenge on
//! time and then queues the evidence until it is judged past the challenge's
//! lifetime: healthy hosts would turn untrusted because the server was slow.
//! With one, a round that cannot start waits for a slot, so the report
//! interval stretches (the wait is the metric
//! `trustpool_admission_wait_seconds`) while every round that did start is
//! judged well within its challenge's lifetime. Slots are handed out in
//! request order (tokio's semaphore is fair), so the host that has waited
//! longest, whose verdict expires first, goes first.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default bound on attestation rounds in progress at once.
pub const DEFAULT_ATTESTATIONS_IN_FLIGHT: usize = 1024;
/// Default bound on enrolments (credential activations) in progress at once.
pub const DEFAULT_ENROLMENTS_IN_FLIGHT: usize = 256;

/// What a slot is for (the `stage` label of the admission metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// One attestation round: challenge, evidence, judgment, verdict.
    Attest,
    /// One enrolment: credential challenge, activation proof, store.
    Enrol,
}

impl Stage {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Attest => "attest",
            Stage::Enrol => "enrol",
        }
    }
}

/// A bounded set of slots for one stage.
#[derive(Debug, Clone)]
pub struct Gate {
    stage: Stage,
    slots: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

/// A slot in use: the work it admits may proceed until it is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    /// How long the slot was waited for.
    pub waited: Duration,
    stage: Stage,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.admission_released(self.stage.label());
    }
}

impl Gate {
    /// A gate of `limit` slots (at least one).
    pub fn new(stage: Stage, limit: usize, metrics: Arc<Metrics>) -> Gate {
        let limit = limit.max(1);
        Gate {
            stage,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
        }
    }

    /// The number of slots.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    /// Waits for a free slot (in request order) and records the wait;
    /// `None` once the gate is closed (the server is stopping).
    pub fn slot(&self) -> impl std::future::Future<Output = Option<Slot>> + Send + 'static {
        let slots = self.slots.clone();
        let stage = self.stage;
        let metrics = self.metrics.clone();
        async move {
            let asked = Instant::now();
            let permit = slots.acquire_owned().await.ok()?;
            let waited = asked.elapsed();
            metrics.admission_taken(stage.label(), waited);
            Some(Slot {
                _permit: permit,
                waited,
                stage,
                metrics,
            })
        }
    }

    /// Closes the gate: waiting and later requests get `None`.
    pub fn close(&self) {
        self.slots.close();
    }
}

/// How long a new session waits before its first attestation round.
///
/// Normally not at all: a reconnecting agent (a rebooted host) is judged at
/// once. In the first down time after the server started, though, every
/// agent of the fleet reconnects within seconds; a host that is still
/// trusted on its stored verdict for more than two intervals (`trusted_for`)
/// then waits a random part of one interval, leaving at least one interval
/// before its verdict expires, so that the fleet's first rounds spread over
/// an interval instead of arriving at once. Hosts that are not trusted, or
/// whose trust is about to expire, go first.
pub fn first_round_delay(
    since_start: Duration,
    trusted_for: Option<Duration>,
    interval: Duration,
    down_time: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let Some(left) = trusted_for else {
        return Duration::ZERO;
    };
    if since_start >= down_time {
        return Duration::ZERO;
    }
    let room = left.saturating_sub(interval).min(interval);
    if room < interval / 10 || room.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(room.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.gen_range(0..ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(30);
    const DOWN: Duration = Duration::from_secs(75);

    #[test]
    fn first_rounds_spread_only_after_a_restart_and_only_for_trusted_hosts() {
        let mut rng = rand::thread_rng();
        let s = Duration::from_secs;
        // Long after start-up: a reconnecting host is judged at once.
        assert_eq!(
            first_round_delay(s(600), Some(s(70)), I, DOWN, &mut rng),
            Duration::ZERO
        );
        // Untrusted, or trusted for less than an interval more: at once.
        assert_eq!(
            first_round_delay(s(1), None, I, DOWN, &mut rng),
            Duration::ZERO
        );
        assert_eq!(
            first_round_delay(s(1), Some(s(31)), I, DOWN, &mut rng),
            Duration::ZERO
        );
        // Trusted for 70 s after a restart: within one interval, leaving
        // one interval before the verdict expires.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = first_round_delay(s(1), Some(s(70)), I, DOWN, &mut rng);
            assert!(d < I, "{d:?}");
            seen.insert(d.as_secs());
        }
        assert!(seen.len() > 10, "delays are spread: {seen:?}");
        for _ in 0..200 {
            let d = first_round_delay(s(1), Some(s(45)), I, DOWN, &mut rng);
            assert!(d < s(15), "{d:?} leaves less than an interval");
        }
    }

    #[tokio::test]
    async fn never_more_slots_than_the_limit_and_first_come_first_served() {
        let metrics = Arc::new(Metrics::new());
        let gate = Gate::new(Stage::Attest, 2, metrics.clone());
        let a = gate.slot().await.expect("open");
        let b = gate.slot().await.expect("open");
        assert_eq!(gate.in_use(), 2);
        // Two more wait, in order.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..2 {
            let gate = gate.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let s = gate.slot().await.expect("open");
                tx.send((i, s)).expect("receiver alive");
            });
            // Let the task queue on the semaphore before the next one.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rx.try_recv().is_err(), "no third slot while two are held");
        drop(a);
        let (first, s1) = rx.recv().await.expect("a slot");
        assert_eq!(first, 0, "the earlier request is served first");
        assert!(s1.waited >= Duration::from_millis(10));
        assert_eq!(gate.in_use(), 2);
        drop(b);
        let (second, _s2) = rx.recv().await.expect("a slot");
        assert_eq!(second, 1);
        assert_eq!(metrics.admissions_waited("attest"), 4);
        assert_eq!(metrics.admissions_in_use("attest"), 2);
    }

    #[tokio::test]
    async fn a_zero_limit_still_admits_one_at_a_time() {
        let gate = Gate::new(Stage::Enrol, 0, Arc::new(Metrics::new()));
        assert_eq!(gate.limit(), 1);
        let s = gate.slot().await.expect("open");
        assert_eq!(gate.in_use(), 1);
        drop(s);
        assert_eq!(gate.in_use(), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_admits_nobody_and_wakes_the_waiting() {
        let gate = Gate::new(Stage::Attest, 1, Arc::new(Metrics::new()));
        let held = gate.slot().await.expect("open");
        let waiting = tokio::spawn(gate.slot());
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.close();
        assert!(waiting.await.expect("task").is_none());
        assert!(gate.slot().await.is_none());
        drop(held);
    }
}
