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
//! * [`eventlog`]: TCG PC Client event logs (crypto-agile and legacy
//!   SHA-1): parsing, typed decoding of the events, replay per bank, the
//!   comparison with quoted PCRs, and which events' data is proven by
//!   their digests (docs/eventlog.md).
//! * [`policy`]: pool policy files (TOML) and their evaluation.
//! * [`reason`]: reasons and their stable codes.
//! * [`duration`]: human durations (`2s`, `75s`, `5m`) of the command lines.
//!
//! What a caller should know:
//! * Parsing errors say *what* is wrong: `wire::WireError::NotAQuote`
//!   (`is_not_a_quote()`) tells "not a quote" (bad magic or type) from
//!   "malformed", and `WireResultExt::ctx(field)` names the field.
//! * `verify_quote` checks more than the signature: the AK must look like a
//!   TPM-resident restricted signing key (`TpmPublic::check_ak_attributes`,
//!   code `ak.attributes`), a signature must use the AK's scheme when the AK
//!   fixes one, and, given the enrolled EK (`QuoteCheck::ek`),
//!   `qualifiedSigner` must be the AK's qualified name under that EK (code
//!   `quote.signer_mismatch`). `VerifiedQuote` exposes the signed
//!   `firmware_version()` and `clock_safe()`.
//! * `quote::check_clock` classifies a clock as `Same`, `Reboot` or
//!   `Restart`; without a previous clock it answers `Same`.
//! * `credential::kdfa` / `kdfe` take labels without their NUL (appended).
//! * `policy::policy_digest(files)` defines `PolicySet::digest`;
//!   `codes::ALL` lists every stable reason code.
//!
//! Signatures are verified with *ring* through rustls-webpki's algorithm
//! objects (release build: ~25 µs per RSA quote, ~55 µs per P-256 quote,
//! parse + signature + digest), with RustCrypto fallbacks for RSA-PSS salt
//! lengths other than the digest length and ECDSA with SHA-512.
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
pub mod duration;
pub mod ekcert;
pub mod eventlog;
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
