//! TCG PC Client event logs (`binary_bios_measurements`, and the TXT log
//! of a dynamic launch): parsing, typed decoding of the events, replay into
//! PCR values and comparison with a quote. Pure: bytes in, values out
//! (docs/eventlog.md).
//!
//! # Formats
//! * **Crypto-agile** (PC Client PFP 1.05+, what UEFI firmware and
//!   SeaBIOS write for a TPM 2.0): the first record is a legacy
//!   `TCG_PCClientPCREvent` (SHA-1 layout, EV_NO_ACTION) whose data is the
//!   `Spec ID Event03` header listing the algorithms and their digest sizes;
//!   then `TCG_PCR_EVENT2` records, each with a digest per bank. A digest of
//!   an algorithm this crate does not know is skipped by the size the header
//!   gives it (kept in [`Event::digests`], never replayed).
//! * **Legacy SHA-1** (TPM 1.2 era): every record a `TCG_PCClientPCREvent`
//!   with one 20-byte SHA-1 digest, no header.
//!
//! Everything is little-endian (unlike TPM structures). The header counts
//! as event 0, as in tpm2_eventlog.
//!
//! # Modules, one job each
//! * [`parse`]: the records and the Spec ID header ([`parse()`] here);
//! * [`types`]: the event types and their names;
//! * [`events`]: what an event's data says (UEFI variables, images, device
//!   paths via [`devpath`], GPT, blobs, strings…);
//! * [`proof`]: whether an event's data is what its digest is the hash of;
//! * [`replay`]: PCR values per bank from the log, and the comparison with
//!   quoted values;
//! * [`txt`]: the TXT (DRTM) log: its replay of PCRs 17-22 from zero and
//!   what it proves;
//! * [`encode`]: writing logs (tests, fixtures, simulated hosts);
//! * [`alg`]: the bank algorithms.
//!
//! # What a log proves (go-attestation's lesson)
//! An event log is not signed: anyone who controls the host can write any
//! event into it. Only the digests that **replay to the quoted PCR values**
//! are evidence, because the TPM extended exactly those. So:
//! * an event means something only if the replay of its PCR matched the
//!   quote ([`replay::compare`] says which PCRs did not, and from which
//!   event on they cannot);
//! * and its *type and data* mean something only if, besides, the data is
//!   what the digest is the hash of ([`proof::DataProof::Proven`]) — for the
//!   types whose digest the spec defines as the hash of the data
//!   (EV_SEPARATOR, EV_EFI_VARIABLE_*, EV_EFI_ACTION, EV_EFI_GPT_EVENT…).
//!   For the others (an image, a firmware volume) the digest is of
//!   something the log does not contain, and the data is an unverified
//!   description ([`proof::DataProof::NotApplicable`]).
//!
//! An attacker can otherwise pair a genuine digest with made-up data (a
//! "SecureBoot = 1" variable whose digest is that of "SecureBoot = 0"), or
//! with a type that says the event does not count.
//!
//! # Limits
//! At most [`MAX_LOG_SIZE`] bytes and [`MAX_EVENTS`] events; every count
//! and size in a record is checked against the bytes left before anything
//! is allocated. Nothing here panics on input.

pub mod alg;
pub mod devpath;
pub mod encode;
pub mod events;
pub mod guid;
pub mod measured;
pub mod parse;
pub mod proof;
pub mod replay;
pub mod txt;
pub mod types;

#[cfg(test)]
mod tests;

pub use alg::Alg;
pub use parse::parse;
pub use types::EventType;

use crate::wire::WireError;
use serde::{Serialize, Serializer};
use thiserror::Error;

/// Largest event log accepted (16 MiB; real logs are 5-100 KB).
pub const MAX_LOG_SIZE: usize = 16 << 20;

/// Most events accepted in one log (64 Ki; real logs have tens to a few
/// thousand).
pub const MAX_EVENTS: usize = 64 << 10;

/// Number of PCRs of a PC Client TPM (0..=23).
pub const PCR_COUNT: usize = 24;

/// An event log that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventLogError {
    /// No bytes at all.
    #[error("the event log is empty")]
    Empty,
    /// Larger than [`MAX_LOG_SIZE`].
    #[error("the event log is {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_EVENTS`] events.
    #[error("the event log has more than {max} events")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
    /// A record is truncated, overlong or inconsistent with the header.
    #[error("event {event} (record at offset {offset}): {source}")]
    Record {
        /// Number of the event (0 = the first record).
        event: usize,
        /// Byte offset of its record in the log.
        offset: usize,
        /// What is wrong, with the offset of the field in the log.
        source: WireError,
    },
}

/// The two record formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Spec ID Event03 header, then `TCG_PCR_EVENT2` records.
    CryptoAgile,
    /// `TCG_PCClientPCREvent` records with SHA-1 digests only.
    Sha1Legacy,
}

/// One algorithm of the Spec ID header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpecIdAlgorithm {
    /// `TPM_ALG_ID`.
    #[serde(serialize_with = "ser_alg_id")]
    pub alg_id: u16,
    /// Size of its digests in the log.
    pub digest_size: u16,
}

/// The `TCG_EfiSpecIDEvent` header of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecId {
    /// `platformClass` (0 = client, 1 = server).
    pub platform_class: u32,
    /// `specVersionMajor` (2).
    pub spec_version_major: u8,
    /// `specVersionMinor` (0).
    pub spec_version_minor: u8,
    /// `specErrata`.
    pub spec_errata: u8,
    /// `uintnSize`: 1 = 32-bit UINTN, 2 = 64-bit.
    pub uintn_size: u8,
    /// The banks and their digest sizes, in header order.
    pub algorithms: Vec<SpecIdAlgorithm>,
    /// `vendorInfo`.
    #[serde(serialize_with = "ser_hex")]
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    /// Digest size of an algorithm the header lists.
    pub fn digest_size(&self, alg_id: u16) -> Option<u16> {
        self.algorithms
            .iter()
            .find(|a| a.alg_id == alg_id)
            .map(|a| a.digest_size)
    }
}

/// One digest of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventDigest {
    /// `TPM_ALG_ID` (serialized as its name, or `0x1234` when unknown).
    #[serde(rename = "alg", serialize_with = "ser_alg_id")]
    pub alg_id: u16,
    /// The digest.
    #[serde(serialize_with = "ser_hex")]
    pub digest: Vec<u8>,
}

impl EventDigest {
    /// The algorithm, if this crate can hash it.
    pub fn alg(&self) -> Option<Alg> {
        Alg::from_id(self.alg_id)
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Its number (0 = the first record; in a crypto-agile log, the header).
    pub number: usize,
    /// Byte offset of its record in the log.
    pub offset: usize,
    /// `pcrIndex` (not checked here: [`replay`] refuses an index ≥ 24).
    pub pcr: u32,
    /// `eventType`.
    pub event_type: EventType,
    /// The digests, in record order.
    pub digests: Vec<EventDigest>,
    /// The event data.
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of a bank, if the record has one.
    pub fn digest(&self, alg: Alg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg_id == alg.id())
            .map(|d| d.digest.as_slice())
    }
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventLog {
    /// Crypto-agile or legacy SHA-1.
    pub format: LogFormat,
    /// The Spec ID Event03 header (crypto-agile only).
    pub spec_id: Option<SpecId>,
    /// Every record, the header included.
    pub events: Vec<Event>,
}

impl EventLog {
    /// The banks this crate replays: the header's algorithms it knows, in
    /// header order (a legacy log: SHA-1).
    pub fn banks(&self) -> Vec<Alg> {
        match &self.spec_id {
            Some(spec) => spec
                .algorithms
                .iter()
                .filter_map(|a| Alg::from_id(a.alg_id))
                .collect(),
            None => vec![Alg::Sha1],
        }
    }

    /// The header's algorithms this crate does not know (skipped).
    pub fn unknown_algorithms(&self) -> Vec<u16> {
        self.spec_id
            .iter()
            .flat_map(|s| s.algorithms.iter())
            .map(|a| a.alg_id)
            .filter(|id| Alg::from_id(*id).is_none())
            .collect()
    }
}

/// Serializes bytes as lower-case hex.
pub(crate) fn ser_hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Serializes a `TPM_ALG_ID` as its name (`sha256`) or `0x1234`.
pub(crate) fn ser_alg_id<S: Serializer>(id: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&alg::alg_id_name(*id))
}
