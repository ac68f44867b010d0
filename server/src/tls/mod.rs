//! Who is speaking: the server's TLS configurations, the client CAs of each
//! role (agents, operators, readers) with their CRLs, and the host name a
//! client certificate carries.
//!
//! - [`certs`]: certificate files, the crypto provider (ring), server configs;
//! - [`pki`]: client CAs per role, CRLs, client-certificate verifiers;
//! - [`identity`]: host names in client certificates.

pub mod certs;
pub mod identity;
pub mod pki;
