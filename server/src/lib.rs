//! trustpool attestation server. The folders follow a report from the agent
//! to the scheduler (ARCHITECTURE.md has the whole map):
//!
//! - [`tls`]: who is speaking — TLS configurations, the client CAs of each
//!   role with their CRLs, host names in client certificates;
//! - [`verify`]: the trust decision for one piece of evidence (pure, no I/O):
//!   challenges, the hardening report, facts, verdicts;
//! - [`attest`]: the agent's gRPC stream (enrolment, challenges, verdicts),
//!   one stream per host, the EK allowlist and EK roots;
//! - [`store`]: durable state (the records and the SQLite engine);
//! - [`fleet`]: the in-memory view of the fleet and pool membership, the
//!   history, policy reloads;
//! - [`publish`]: the HTTPS API (feed, PollHosts, OpenAPI) with its listener
//!   and readers, and the Placement trait sync;
//! - [`admin`]: the operators' gRPC API;
//! - [`metrics`]: Prometheus counters and their exposition;
//! - [`clock`], [`state`], [`config`], [`server`]: clocks, the state the tasks
//!   share, configuration, start-up.

pub mod admin;
pub mod attest;
pub mod clock;
pub mod config;
pub mod fleet;
pub mod metrics;
pub mod publish;
pub mod replica;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod verify;

pub use trustpool_daemon::{sd_notify, secrets};
/// Human durations (`2s`, `75s`, `5m`), shared with the agent.
pub use trustpool_evidence::duration;
