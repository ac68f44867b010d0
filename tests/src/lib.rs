//! Test and lab harness of trustpool: swtpm hosts with EK certificates, a
//! test PKI, and the server and agents started as real processes.

pub mod dbserver;
pub mod firmware;
pub mod http;
pub mod lab;
pub mod pki;
pub mod placement;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod swtpm;
