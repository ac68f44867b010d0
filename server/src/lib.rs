//! trustpool attestation server.
//!
//! Modules, one job each:
//! - [`config`]: command line and configuration file;
//! - [`loaders`]: reading the policy directory and EK roots;
//! - [`identity`]: host names in client certificates;
//! - [`store`]: durable state in SQLite;
//! - [`registry`]: the in-memory fleet view and pool membership;
//! - [`challenge`]: nonces of one stream;
//! - [`verdict`]: the trust decision for one piece of evidence (pure);
//! - [`session`]: the gRPC agent stream;
//! - [`feed`]: the HTTP JSON feed;
//! - [`server`]: start-up and tasks;
//! - [`secrets`], [`sd_notify`]: private-key file modes, systemd readiness.

pub mod challenge;
pub mod config;
/// Human durations (`2s`, `75s`, `5m`), shared with the agent.
pub use trustpool_evidence::duration;
pub mod feed;
pub mod identity;
pub mod loaders;
pub mod registry;
pub mod sd_notify;
pub mod secrets;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod verdict;
