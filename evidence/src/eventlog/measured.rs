//! What a host's UEFI event log proves once its quote is verified: the
//! compact, storable facts that event-level policy judges
//! ([`crate::policy`]'s `[events]`), so that a policy reload or dry-run
//! can re-judge a host without its log.
//!
//! [`measure`] parses the log, replays its sha256 bank, compares it with
//! the quoted sha256 PCRs of the log's domain, and keeps the events of the
//! PCRs that replayed — the only events that are evidence (module docs of
//! [`super`]). For each it records the digest, the type, whether the data
//! is proven by the digest, and what policy may ask of the data: a UEFI
//! variable's name, GUID and contents digest (with the entries of a
//! signature database), an image's device path, an action string.
//!
//! The TXT (DRTM) log is judged the same way by [`super::txt::measure_txt`]:
//! only the replay's start and the domain differ ([`Domain`]).

use super::events::{Decoder, EventData, Variable, VariableValue};
use super::guid::Guid;
use super::proof::{event_proof, EventProof};
use super::replay::{compare, replay, Replay};
use super::{parse, Alg, EventLog, EventType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use x509_parser::prelude::FromDer;

/// The PCRs a UEFI (SRTM) log is compared on even when it has no event on
/// them: the firmware's (0-7) and the boot loader's (8-9). A quoted PCR
/// outside these is compared only if the log extends it (shim's PCR 14);
/// PCRs 17-22 belong to the DRTM (TXT) log and never to this one.
const SRTM_DOMAIN: std::ops::RangeInclusive<u8> = 0..=9;

/// The dynamic (DRTM) PCRs, which a UEFI log never covers and a TXT log
/// covers whole.
pub(crate) const DRTM_PCRS: std::ops::RangeInclusive<u8> = 17..=22;

/// What differs between judging the UEFI (SRTM) log and the TXT (DRTM)
/// log: how the log is replayed (from which start values) and which
/// quoted PCRs it answers for. Everything else — the comparison with the
/// quote, the events kept, what they say — is [`measure_in`]'s, shared.
#[derive(Clone, Copy)]
pub(crate) struct Domain {
    /// Replays the parsed log from the domain's start values.
    pub replay: fn(&EventLog) -> Result<Replay, String>,
    /// Whether a quoted PCR is compared, given the PCRs the log extends.
    pub compares: fn(u8, &BTreeSet<u8>) -> bool,
}

/// The UEFI log: replayed from the TPM2_Startup values (PCR 0 from the
/// StartupLocality event), compared on PCRs 0-9 and any other it extends,
/// never on 17-22.
const SRTM: Domain = Domain {
    replay: |log| replay(log).map_err(|e| e.to_string()),
    compares: |pcr, extended| {
        !DRTM_PCRS.contains(&pcr) && (SRTM_DOMAIN.contains(&pcr) || extended.contains(&pcr))
    },
};

/// Longest text kept for an event's description.
const MAX_TEXT: usize = 200;

/// Most signature entries kept per signature-database variable (a real dbx
/// has a few hundred).
const MAX_ENTRIES: usize = 4096;

/// What the evidence says about one of the host's event logs (the UEFI one
/// of [`measure`], the TXT one of [`super::txt::measure_txt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LogFacts {
    /// The agent has no readable log; why, in its words.
    Unavailable {
        /// The agent's reason.
        reason: String,
    },
    /// The log could not be read as a log or replayed.
    Invalid {
        /// SHA-256 of the log bytes (hex).
        log_sha256: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log was replayed against the quote.
    Replayed(MeasuredBoot),
}

/// A replayed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredBoot {
    /// SHA-256 of the log bytes (hex).
    pub log_sha256: String,
    /// Quoted PCRs of the log's domain whose sha256 replay equals the quote.
    pub replayed: Vec<u8>,
    /// Quoted PCRs of the log's domain that the log does not replay to.
    pub mismatches: Vec<PcrMismatch>,
    /// The events of the `replayed` PCRs, in log order (EV_NO_ACTION
    /// excluded: never extended).
    pub events: Vec<MeasuredEvent>,
}

/// A quoted PCR that the log does not replay to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrMismatch {
    /// The PCR.
    pub pcr: u8,
    /// The event from which the log and the quote can no longer agree.
    pub event: Option<u32>,
    /// That event's type and sha256 digest, when there is one.
    pub event_type: Option<EventType>,
    /// Its sha256 digest (hex).
    pub digest: Option<String>,
    /// The explanation ([`super::replay::Mismatch`]'s).
    pub message: String,
}

/// One event of a replayed PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredEvent {
    /// Its number in the log (the header is event 0).
    pub number: u32,
    /// Its PCR.
    pub pcr: u8,
    /// Its type as the log states it (proven only with `data_proven`).
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Its sha256 digest (hex): what the TPM extended.
    pub digest: String,
    /// The digest is the hash of the event data, so type and data are
    /// evidence ([`super::proof`]); false when the data is only a
    /// description (an image) or does not hash to the digest.
    pub data_proven: bool,
    /// One line of what the data says (unproven unless `data_proven`).
    pub summary: String,
    /// The device path of an image or boot option, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// A UEFI variable's identity and contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<Box<VariableFacts>>,
    /// The text of a string event (EV_EFI_ACTION, EV_IPL…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A UEFI variable measured by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableFacts {
    /// Vendor GUID.
    pub guid: String,
    /// Name (`SecureBoot`, `db`, `Boot0001`…).
    pub name: String,
    /// SHA-256 of `VariableData` (hex).
    pub data_sha256: String,
    /// `VariableData` itself (hex) when it is at most 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For a signature database (PK, KEK, db, dbx): every entry as hex —
    /// a 32-byte hash as itself, anything longer (a certificate) as its
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// The subjects of its X.509 entries (`CN=…, O=…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

impl LogFacts {
    /// The replayed log, if it was replayed.
    pub fn replayed(&self) -> Option<&MeasuredBoot> {
        match self {
            LogFacts::Replayed(m) => Some(m),
            _ => None,
        }
    }

    /// One line for an operator: why the log can or cannot be judged.
    pub fn describe(&self) -> String {
        match self {
            LogFacts::Unavailable { reason } => format!("the agent sent no event log: {reason}"),
            LogFacts::Invalid { reason, .. } => format!("the event log is invalid: {reason}"),
            LogFacts::Replayed(m) => format!(
                "the event log replays to PCR {} of the quote{}",
                join(&m.replayed),
                if m.mismatches.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", not to PCR {}",
                        join(&m.mismatches.iter().map(|x| x.pcr).collect::<Vec<_>>())
                    )
                }
            ),
        }
    }
}

fn join(pcrs: &[u8]) -> String {
    if pcrs.is_empty() {
        return "(none)".into();
    }
    pcrs.iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// SHA-256 of a log's bytes as hex (what [`MeasuredBoot::log_sha256`]
/// holds, and what the server compares to know a log is unchanged).
pub fn log_sha256(log: &[u8]) -> String {
    hex::encode(Sha256::digest(log))
}

/// Judges a UEFI event log against the verified sha256 PCR values of its
/// quote. Never fails: a log that does not parse or replay is
/// [`LogFacts::Invalid`] with the reason.
pub fn measure(log: &[u8], quoted: &BTreeMap<u8, [u8; 32]>) -> LogFacts {
    measure_in(log, quoted, &SRTM)
}

/// Judges a log of `domain` against the verified sha256 PCR values of its
/// quote: parse, replay from the domain's start, compare the quoted PCRs
/// the domain answers for, keep the events of those that replayed.
pub(crate) fn measure_in(log: &[u8], quoted: &BTreeMap<u8, [u8; 32]>, domain: &Domain) -> LogFacts {
    let log_digest = log_sha256(log);
    let parsed = match parse(log) {
        Ok(p) => p,
        Err(e) => {
            return LogFacts::Invalid {
                log_sha256: log_digest,
                reason: e.to_string(),
            }
        }
    };
    if !parsed.banks().contains(&Alg::Sha256) {
        return LogFacts::Invalid {
            log_sha256: log_digest,
            reason: "the log has no sha256 bank, the bank the quote covers".into(),
        };
    }
    let replayed = match (domain.replay)(&parsed) {
        Ok(r) => r,
        Err(reason) => {
            return LogFacts::Invalid {
                log_sha256: log_digest,
                reason,
            }
        }
    };
    let Some(bank) = replayed.bank(Alg::Sha256) else {
        return LogFacts::Invalid {
            log_sha256: log_digest,
            reason: "the replay has no sha256 bank".into(),
        };
    };
    let extended: BTreeSet<u8> = bank.extended_pcrs().into_iter().collect();
    let compared: BTreeMap<u8, Vec<u8>> = quoted
        .iter()
        .filter(|(p, _)| (domain.compares)(**p, &extended))
        .map(|(p, v)| (*p, v.to_vec()))
        .collect();
    let by_number: BTreeMap<usize, &super::Event> =
        parsed.events.iter().map(|e| (e.number, e)).collect();
    let mismatches: Vec<PcrMismatch> = compare(bank, &compared)
        .into_iter()
        .map(|m| {
            let event = m.event.and_then(|n| by_number.get(&n).copied());
            PcrMismatch {
                pcr: m.pcr,
                event: m.event.and_then(|n| u32::try_from(n).ok()),
                event_type: event.map(|e| e.event_type),
                digest: event.and_then(|e| e.digest(Alg::Sha256)).map(hex::encode),
                message: m.to_string(),
            }
        })
        .collect();
    let bad: BTreeSet<u8> = mismatches.iter().map(|m| m.pcr).collect();
    let good: Vec<u8> = compared
        .keys()
        .copied()
        .filter(|p| !bad.contains(p))
        .collect();
    let decoder = Decoder::for_log(&parsed);
    let mut events: Vec<MeasuredEvent> = parsed
        .events
        .iter()
        .filter(|e| e.event_type != EventType::EV_NO_ACTION)
        .filter_map(|e| {
            let pcr = u8::try_from(e.pcr).ok().filter(|p| good.contains(p))?;
            let digest = e.digest(Alg::Sha256)?;
            let data = decoder.decode(e);
            let proven = event_proof(e) == EventProof::Proven;
            Some(measured_event(e, pcr, digest, proven, &data))
        })
        .collect();
    // Held per host for as long as its log is unchanged: no spare room.
    events.shrink_to_fit();
    LogFacts::Replayed(MeasuredBoot {
        log_sha256: log_digest,
        replayed: good,
        mismatches,
        events,
    })
}

fn measured_event(
    e: &super::Event,
    pcr: u8,
    digest: &[u8],
    data_proven: bool,
    data: &EventData,
) -> MeasuredEvent {
    let (device_path, variable, text) = match data {
        EventData::Image(i) => (i.device_path.clone(), None, None),
        EventData::Variable(v) => {
            let path = match &v.value {
                VariableValue::LoadOption(o) => o.device_path.clone(),
                _ => None,
            };
            (path, Some(Box::new(variable_facts(v))), None)
        }
        EventData::Text { text } => (None, None, Some(truncate(text))),
        _ => (None, None, None),
    };
    MeasuredEvent {
        number: u32::try_from(e.number).unwrap_or(u32::MAX),
        pcr,
        event_type: e.event_type,
        digest: hex::encode(digest),
        data_proven,
        summary: truncate(&data.summary()),
        device_path,
        variable,
        text,
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_TEXT {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_TEXT).collect();
        t.push('…');
        t
    }
}

fn variable_facts(v: &Variable) -> VariableFacts {
    let mut entries = Vec::new();
    let mut subjects = Vec::new();
    let signatures: Vec<(&Guid, &[u8])> = match &v.value {
        VariableValue::SignatureLists { lists } => lists
            .iter()
            .flat_map(|l| {
                l.signatures
                    .iter()
                    .map(move |s| (&l.signature_type, s.data.as_slice()))
            })
            .collect(),
        VariableValue::Signature(s) => {
            // EV_EFI_VARIABLE_AUTHORITY: one EFI_SIGNATURE_DATA whose type
            // the event does not say; a certificate is recognisable as one.
            vec![(&Guid::EFI_CERT_X509, s.data.as_slice())]
        }
        _ => Vec::new(),
    };
    for (kind, data) in signatures.into_iter().take(MAX_ENTRIES) {
        entries.push(entry_hex(data));
        if *kind == Guid::EFI_CERT_X509 {
            if let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(data) {
                subjects.push(cert.subject().to_string());
            }
        }
    }
    entries.shrink_to_fit();
    subjects.shrink_to_fit();
    let mut guid = v.guid.to_string();
    guid.shrink_to_fit();
    VariableFacts {
        guid,
        name: v.name.clone(),
        data_sha256: hex::encode(Sha256::digest(&v.data)),
        data: (v.data.len() <= 64).then(|| hex::encode(&v.data)),
        entries,
        subjects,
    }
}

/// A signature entry as policy names it: a 32-byte hash as itself, any
/// other data (a certificate) by its SHA-256.
pub fn entry_hex(data: &[u8]) -> String {
    if data.len() == 32 {
        hex::encode(data)
    } else {
        hex::encode(Sha256::digest(data))
    }
}
