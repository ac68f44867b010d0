//! The trustpool gRPC API (`trustpool.v1`), generated from
//! `proto/trustpool/v1/attestation.proto` with tonic and prost.
//!
//! See the .proto file for the conversation between agent and server.

/// Generated messages, client and server of `trustpool.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("trustpool.v1");
}

pub mod codec;
pub mod event_log;
