//! Which server an agent dials next, and how long it waits first (the
//! agent's and the load generator's simulated hosts').
//!
//! The agent holds one stream to one server of its list at a time. When the
//! stream cannot be opened or is lost it moves to the next server in the
//! list (wrapping around); only after a whole pass over the list has failed
//! does it back off: exponential with full jitter, the ceiling doubling with
//! every failed pass from [`BACKOFF_BASE`] up to [`BACKOFF_CAP`]. Moves
//! within a pass wait at most [`BACKOFF_BASE`] (near-immediate: a replica
//! that went away costs its agents well under a second, and the jitter
//! spreads a fleet's reconnections to the next replica). A stream that
//! stayed healthy for one report interval resets the count.
//!
//! Everything here is pure (the random source is a parameter) so that the
//! schedule is unit-tested; the agent's `client::run_forever` and the load
//! generator's `host::run_host` do the I/O.

use rand::Rng;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest wait between two servers within a pass, and the back-off ceiling
/// after the first failed pass.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest back-off after failed passes.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Where in its list of `len` servers the agent of `hostname` starts: a
/// hash of the host name, so a fleet with the same list spreads evenly over
/// the replicas, and a host comes back to the same replica after a restart.
pub fn start_index(hostname: &str, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let digest = Sha256::digest(hostname.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % len as u64) as usize
}

/// How an attempt on the current server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The stream was healthy for at least one report interval, then ended.
    Healthy,
    /// The server could not be reached, the stream was lost or closed, or
    /// the server refused: the next server is tried.
    Failed,
    /// The attempt failed on this side (e.g. the TPM): another server would
    /// not help, so the same one is tried again after a pass's back-off.
    Local,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index of the server to dial next.
    pub server: usize,
    /// How long to wait before dialling it.
    pub delay: Duration,
    /// The upper bound `delay` was drawn from (uniformly, from zero).
    pub ceiling: Duration,
    /// True when a whole pass failed (or a local failure): a back-off, not
    /// a move within the pass.
    pub backoff: bool,
}

/// Rotation over the server list and the back-off between attempts.
#[derive(Debug, Clone)]
pub struct Failover {
    len: usize,
    current: usize,
    /// Attempts that failed since the last healthy stream (a local failure
    /// counts as a whole pass).
    failures: u32,
    base: Duration,
    cap: Duration,
}

impl Failover {
    /// `len` servers (at least one), starting at `start`, with the default limits.
    pub fn new(len: usize, start: usize) -> Failover {
        Failover::with_limits(len, start, BACKOFF_BASE, BACKOFF_CAP)
    }

    /// With other limits (`base` ≤ `cap`).
    pub fn with_limits(len: usize, start: usize, base: Duration, cap: Duration) -> Failover {
        let len = len.max(1);
        Failover {
            len,
            current: start % len,
            failures: 0,
            base,
            cap: cap.max(base),
        }
    }

    /// Index of the server to dial now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Records how the attempt on the current server ended; moves on (to
    /// the next server unless the failure was local) and says how long to
    /// wait before the next attempt.
    pub fn next_delay(&mut self, outcome: Outcome, rng: &mut impl Rng) -> Step {
        let len = u32::try_from(self.len).unwrap_or(u32::MAX);
        let backoff = match outcome {
            Outcome::Healthy => {
                self.failures = 1;
                self.len == 1
            }
            Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                self.failures.is_multiple_of(len)
            }
            Outcome::Local => {
                self.failures = self.failures.saturating_add(len);
                true
            }
        };
        if outcome != Outcome::Local {
            self.current = (self.current + 1) % self.len;
        }
        let ceiling = if backoff {
            let passes = self.failures.div_ceil(len).max(1);
            // base * 2^(passes-1), saturating long before overflow.
            self.base
                .saturating_mul(1u32 << (passes - 1).min(24))
                .min(self.cap)
        } else {
            self.base
        };
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Step {
            server: self.current,
            delay: Duration::from_nanos(rng.gen_range(0..=nanos)),
            ceiling,
            backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn rotation_visits_every_server_in_order_from_the_start() {
        let mut f = Failover::new(3, 1);
        let mut r = rng();
        assert_eq!(f.current(), 1);
        let order: Vec<usize> = (0..7)
            .map(|_| f.next_delay(Outcome::Failed, &mut r).server)
            .collect();
        assert_eq!(order, [2, 0, 1, 2, 0, 1, 2]);
        // A healthy stream that ends also moves on.
        assert_eq!(f.next_delay(Outcome::Healthy, &mut r).server, 0);
        // A local failure stays.
        assert_eq!(f.next_delay(Outcome::Local, &mut r).server, 0);
        assert_eq!(Failover::new(3, 5).current(), 2);
    }

    #[test]
    fn moves_within_a_pass_are_near_immediate_and_a_failed_pass_backs_off() {
        let mut f = Failover::new(3, 0);
        let mut r = rng();
        let steps: Vec<Step> = (0..9)
            .map(|_| f.next_delay(Outcome::Failed, &mut r))
            .collect();
        let kinds: Vec<bool> = steps.iter().map(|s| s.backoff).collect();
        assert_eq!(
            kinds,
            [false, false, true, false, false, true, false, false, true]
        );
        let ceilings: Vec<Duration> = steps.iter().map(|s| s.ceiling).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            ceilings,
            [
                ms(200),
                ms(200),
                ms(200),
                ms(200),
                ms(200),
                ms(400),
                ms(200),
                ms(200),
                ms(800)
            ]
        );
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling_and_use_the_range() {
        let mut r = rng();
        let mut f = Failover::new(1, 0);
        let (mut low, mut high) = (false, false);
        for _ in 0..2000 {
            let s = f.next_delay(Outcome::Failed, &mut r);
            assert!(s.delay <= s.ceiling && s.ceiling <= BACKOFF_CAP, "{s:?}");
            if s.ceiling == BACKOFF_CAP {
                low |= s.delay < BACKOFF_CAP / 4;
                high |= s.delay > BACKOFF_CAP * 3 / 4;
            }
        }
        assert!(low && high, "full jitter covers [0, cap]");
    }

    #[test]
    fn growth_doubles_per_pass_and_stops_at_the_cap() {
        let mut r = rng();
        let mut f = Failover::new(1, 0);
        let ceilings: Vec<Duration> = (0..12)
            .map(|_| f.next_delay(Outcome::Failed, &mut r).ceiling)
            .collect();
        let expected: Vec<Duration> = (0..12)
            .map(|i| (BACKOFF_BASE * 2u32.pow(i)).min(BACKOFF_CAP))
            .collect();
        assert_eq!(ceilings, expected);
        // Far beyond: no overflow, still the cap.
        for _ in 0..100 {
            f.next_delay(Outcome::Failed, &mut r);
        }
        assert_eq!(f.next_delay(Outcome::Failed, &mut r).ceiling, BACKOFF_CAP);
    }

    #[test]
    fn a_healthy_stream_resets_the_back_off() {
        let mut r = rng();
        let mut f = Failover::new(2, 0);
        for _ in 0..21 {
            f.next_delay(Outcome::Failed, &mut r);
        }
        assert_eq!(f.next_delay(Outcome::Failed, &mut r).ceiling, BACKOFF_CAP);
        let after = f.next_delay(Outcome::Healthy, &mut r);
        assert!(!after.backoff && after.ceiling == BACKOFF_BASE, "{after:?}");
        let pass = f.next_delay(Outcome::Failed, &mut r);
        assert!(pass.backoff && pass.ceiling == BACKOFF_BASE, "{pass:?}");
        // One server: the lost stream is retried after the first pass's ceiling.
        let mut one = Failover::new(1, 0);
        for _ in 0..20 {
            one.next_delay(Outcome::Failed, &mut r);
        }
        let after = one.next_delay(Outcome::Healthy, &mut r);
        assert_eq!(after.ceiling, BACKOFF_BASE);
    }

    #[test]
    fn a_local_failure_backs_off_on_the_same_server() {
        let mut r = rng();
        let mut f = Failover::new(3, 0);
        let a = f.next_delay(Outcome::Local, &mut r);
        let b = f.next_delay(Outcome::Local, &mut r);
        assert_eq!((a.server, a.backoff, a.ceiling), (0, true, BACKOFF_BASE));
        assert_eq!((b.server, b.ceiling), (0, BACKOFF_BASE * 2));
        // The rotation keeps its place in the pass.
        let c = f.next_delay(Outcome::Failed, &mut r);
        assert_eq!((c.server, c.backoff), (1, false));
    }

    #[test]
    fn start_index_spreads_hosts_over_the_list() {
        assert_eq!(start_index("h", 1), 0);
        assert_eq!(start_index("h", 0), 0);
        let mut counts = [0usize; 3];
        for i in 0..300 {
            counts[start_index(&format!("compute-{i:03}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        assert_eq!(start_index("compute-1", 3), start_index("compute-1", 3));
    }
}
