//! The trust decision for one piece of evidence (DESIGN.md §3). Pure: no
//! I/O, no clock, no global state, so that every rule is unit-tested and
//! fuzzed. Read in this order:
//!
//! - [`challenge`]: the nonces a stream has outstanding;
//! - [`report`]: the hardening report as the verdict reads it;
//! - [`eventlog`]: the event logs sent with the quote, replayed against it;
//! - [`facts`]: what sound evidence proved, and a pool's verdict from it;
//! - [`verdict`]: quote, nonce, TPM clock, measurements, launch, checks.

pub mod challenge;
pub mod eventlog;
pub mod facts;
pub mod report;
pub mod verdict;
