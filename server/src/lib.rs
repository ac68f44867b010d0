//! trustpool attestation server.
//!
//! Modules, one job each:
//! - [`config`]: command line and configuration file;
//! - [`loaders`]: reading the policy directory and EK roots;
//! - [`identity`]: host names in client certificates;
//! - [`pki`]: client CAs per role (agents, operators, readers) and CRLs;
//! - [`store`]: durable state in SQLite;
//! - [`registry`]: the in-memory fleet view and pool membership;
//! - [`challenge`]: nonces of one stream;
//! - [`streams`]: the open agent streams, one per host;
//! - [`ek_allowlist`]: which TPM each host may enrol with;
//! - [`verdict`]: the trust decision for one piece of evidence (pure);
//! - [`session`]: the gRPC agent stream;
//! - [`feed`]: the HTTPS JSON API (feed, PollHosts, metrics, OpenAPI);
//! - [`https`], [`listener`], [`http_auth`]: its TLS configuration, its
//!   accept loop (caps and timeouts) and its readers;
//! - [`oat`]: OpenAttestation PollHosts for Nova's legacy TrustedFilter;
//! - [`placement`]: Placement trait sync for current Nova;
//! - [`metrics`]: Prometheus metrics;
//! - [`publish`]: start-up and configuration of all of the above;
//! - [`server`]: start-up and tasks;
//! - [`secrets`], [`sd_notify`]: private-key file modes, systemd readiness.

pub mod admin;
pub mod challenge;
pub mod config;
/// Human durations (`2s`, `75s`, `5m`), shared with the agent.
pub use trustpool_evidence::duration;
pub mod cli;
pub mod ek_allowlist;
pub mod facts;
pub mod feed;
pub mod history;
pub mod http_auth;
pub mod https;
pub mod identity;
pub mod listener;
pub mod loaders;
pub mod metrics;
pub mod oat;
pub mod pki;
pub mod placement;
pub mod publish;
pub mod registry;
pub mod reload;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod streams;
pub mod verdict;

pub use trustpool_daemon::{sd_notify, secrets};
