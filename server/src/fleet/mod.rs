//! The fleet in memory: which host is a member of which pool now, what
//! changed (the history), and what a policy reload changes.
//!
//! - [`registry`]: enrolments, verdicts with monotonic expiries, pool
//!   snapshots for the publishers;
//! - [`history`]: the append-only history writer;
//! - [`reload`]: policy, CRL and EK-allowlist reloads (SIGHUP or a change
//!   on disk) and the re-evaluation of every host under the new policy.

pub mod history;
pub mod registry;
pub mod reload;
