//! trustpool evidence: the pure logic of TPM 2.0 remote attestation.
//!
//! No file, network, clock or TPM I/O happens here: time (`now_unix`) and
//! randomness (`rng`) come in as parameters, so the server, the tests and
//! the load generator share this code and it can be fuzzed. Nothing in this
//! crate panics on untrusted input; every failure is a typed error or a
//! [`reason::Reason`] with a stable code and a message that names the
//! offending item.
//!
//! Modules:
//! * [`wire`]: bounds-checked big-endian reader.
//! * [`tpm`]: TPMT_PUBLIC, TPMS_ATTEST (quote), TPMT_SIGNATURE parsing;
//!   [`marshal`]: the matching encoders (tests, simulated TPMs).
//! * [`quote`]: quote verification, clock monotonicity.
//! * [`credential`]: TPM2_MakeCredential in software (RSA and ECC EKs), KDFa/KDFe.
//! * [`ekcert`]: EK certificate chain validation and EK key binding.
//! * [`binding`]: qualifying data = H(nonce || H(report)).
//! * [`pcr`]: PCR arithmetic (extend, DRTM start value, digests).
//! * [`policy`]: pool policy files (TOML) and their evaluation.
//! * [`reason`]: reasons and their stable codes.
//!
//! API notes relative to the agreed sketch (additions only, nothing renamed):
//! * `tpm::WireError` has a `NotAQuote` variant (`is_not_a_quote()`) so
//!   `parse_attest` distinguishes "not a quote" from "malformed".
//! * `quote::ClockChange::Reboot` carries `previous_reset_count` and
//!   `reset_count`; `check_clock(None, _)` returns `Same`.
//! * Extra reason codes: `ak.attributes`, `pcr.missing`,
//!   `host.identity_mismatch`, `policy.unavailable`.
//! * `kdfa`/`kdfe` take the output size in bits as `u16`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]
#![deny(missing_docs)]

pub mod binding;
pub mod credential;
pub mod ekcert;
pub mod marshal;
pub mod pcr;
pub mod policy;
pub mod quote;
pub mod reason;
pub mod tpm;
pub mod wire;

#[cfg(test)]
mod swtpm_fixtures;
#[cfg(test)]
mod testutil;

pub use reason::{codes, Reason};
