//! The agent's side of the server: one mutual-TLS gRPC stream per host
//! that enrols it (EK certificate chain, AK credential activation), sends
//! challenges and answers each piece of evidence with a verdict.
//!
//! - [`ek_roots`]: the TPM vendors' certificates trusted for EK chains;
//! - [`ek_allowlist`]: which TPM each host may enrol with, when restricted;
//! - [`streams`]: the open streams, one per host;
//! - [`session`]: one stream, from `Hello` to its end.

pub mod ek_allowlist;
pub mod ek_roots;
pub mod pacing;
pub mod session;
pub mod streams;
