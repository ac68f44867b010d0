//! Replay: the PCR values an event log says the TPM holds, per bank, and
//! the comparison of a replayed bank with quoted values.
//!
//! # Start values (PC Client PTP and PFP)
//! After TPM2_Startup PCRs 0-16 and 23 are zero and PCRs 17-22 (the DRTM
//! PCRs) all-ones (0xFF…FF); a dynamic launch (TXT SENTER) resets 17-22 to
//! zero. [`replay`] starts from these values ([`PcrBank::reset`]), except
//! PCR 0 when an EV_NO_ACTION `StartupLocality` event precedes every event
//! extended into PCR 0: PCR 0 then starts at `00…00 L`, its last byte the
//! locality L (3: TPM2_Startup at locality 3; 4: an H-CRTM sequence, whose
//! measurement is then logged as an event of PCR 0). Localities other than
//! 0, 3 and 4, two StartupLocality events, or one after PCR 0 was extended
//! are errors. The SRTM log does not extend PCRs 17-22; if one does, the
//! replay extends from all-ones, as the TPM would.
//!
//! [`replay_from`] starts from values given per bank instead and applies no
//! StartupLocality event; [`super::txt::replay_drtm`] replays a TXT log
//! with it, PCRs 17-22 from zero.
//!
//! EV_NO_ACTION events are never extended. An extended event on a PCR ≥ 24
//! or without a digest for a bank the log's header lists is an error.

use super::alg::Alg;
use super::events::STARTUP_LOCALITY;
use super::types::EventType;
use super::{ser_hex, Event, EventLog, PCR_COUNT};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// A log that cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// An extended event names a PCR a PC Client TPM does not have.
    #[error("event {event} (offset {offset}) extends PCR {pcr}; a PC Client TPM has PCRs 0-23")]
    PcrOutOfRange {
        /// The event.
        event: usize,
        /// Its record's offset.
        offset: usize,
        /// The PCR index.
        pcr: u32,
    },
    /// An extended event has no digest (or one of the wrong size) for a
    /// bank of the log.
    #[error("event {event} (offset {offset}) has no {alg} digest of {size} bytes, though the log's header lists {alg}")]
    MissingDigest {
        /// The event.
        event: usize,
        /// Its record's offset.
        offset: usize,
        /// The bank.
        alg: Alg,
        /// The size it needs.
        size: usize,
    },
    /// A StartupLocality event the spec does not allow.
    #[error("event {event}: {reason}")]
    StartupLocality {
        /// The event.
        event: usize,
        /// What is wrong.
        reason: String,
    },
    /// A DRTM (TXT) log extends a PCR outside 17-22 ([`super::txt`]).
    #[error("event {event} (offset {offset}) extends PCR {pcr}; a DRTM (TXT) log extends only PCRs 17-22 (the others belong to the UEFI log, replayed from other start values)")]
    OutsideDrtm {
        /// The event.
        event: usize,
        /// Its record's offset.
        offset: usize,
        /// The PCR index.
        pcr: u32,
    },
    /// [`replay_from`] was given no start values for a bank of the log.
    #[error("no start values given for the {alg} bank")]
    MissingStart {
        /// The bank.
        alg: Alg,
    },
}

/// The 24 PCR values of one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// The algorithm.
    pub alg: Alg,
    /// PCR 0 to 23, each of `alg.size()` bytes.
    pub values: Vec<Vec<u8>>,
}

impl PcrBank {
    /// The values after TPM2_Startup at locality 0: PCRs 0-16 and 23 zero,
    /// PCRs 17-22 all-ones.
    pub fn reset(alg: Alg) -> PcrBank {
        PcrBank {
            alg,
            values: (0..PCR_COUNT)
                .map(|i| vec![if (17..=22).contains(&i) { 0xff } else { 0 }; alg.size()])
                .collect(),
        }
    }

    /// After a dynamic launch: like [`PcrBank::reset`] with PCRs 17-22 zero
    /// (the start of a TXT log's replay).
    pub fn after_dynamic_launch(alg: Alg) -> PcrBank {
        PcrBank {
            alg,
            values: (0..PCR_COUNT).map(|_| vec![0; alg.size()]).collect(),
        }
    }
}

/// One extend of a PCR during the replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The event extended.
    pub event: usize,
    /// The PCR's value after it.
    #[serde(serialize_with = "ser_hex")]
    pub value: Vec<u8>,
}

/// One bank after the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedBank {
    /// The algorithm.
    pub alg: Alg,
    /// The values the replay started from (PCR 0 to 23).
    pub start: Vec<Vec<u8>>,
    /// The values at the end (PCR 0 to 23).
    pub values: Vec<Vec<u8>>,
    /// Per PCR, every event extended into it with the value after it.
    pub history: Vec<Vec<Step>>,
}

impl ReplayedBank {
    /// The final value of a PCR.
    pub fn value(&self, pcr: u8) -> Option<&[u8]> {
        self.values.get(usize::from(pcr)).map(Vec::as_slice)
    }

    /// PCRs that some event extended, in order.
    pub fn extended_pcrs(&self) -> Vec<u8> {
        (0u8..)
            .zip(&self.history)
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    /// The extended PCRs and their final values (what tpm2_eventlog and
    /// `trustpool eventlog replay` print).
    pub fn extended_values(&self) -> BTreeMap<u8, &[u8]> {
        self.extended_pcrs()
            .into_iter()
            .filter_map(|i| self.value(i).map(|v| (i, v)))
            .collect()
    }
}

/// The replay of a whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// One per bank of the log, in header order.
    pub banks: Vec<ReplayedBank>,
    /// The StartupLocality event's locality, if the log has one (and the
    /// replay applied it: [`replay`] only).
    pub startup_locality: Option<u8>,
    /// Events in the log (the header included).
    pub events: usize,
    /// Events extended (all but EV_NO_ACTION).
    pub extended: usize,
}

impl Replay {
    /// The bank of an algorithm.
    pub fn bank(&self, alg: Alg) -> Option<&ReplayedBank> {
        self.banks.iter().find(|b| b.alg == alg)
    }
}

/// The locality of a StartupLocality event (None for any other event).
pub fn startup_locality(event: &Event) -> Option<u8> {
    if event.event_type != EventType::EV_NO_ACTION || event.data.len() != 17 {
        return None;
    }
    if !event.data.starts_with(STARTUP_LOCALITY) {
        return None;
    }
    event.data.get(16).copied()
}

/// Finds the StartupLocality event and checks it against the spec.
fn find_startup_locality(log: &EventLog) -> Result<Option<u8>, ReplayError> {
    let mut found: Option<(usize, u8)> = None;
    let mut pcr0_extended: Option<usize> = None;
    for e in &log.events {
        if let Some(locality) = startup_locality(e) {
            if let Some((first, _)) = found {
                return Err(ReplayError::StartupLocality {
                    event: e.number,
                    reason: format!("a second StartupLocality event (the first is event {first})"),
                });
            }
            if let Some(n) = pcr0_extended {
                return Err(ReplayError::StartupLocality {
                    event: e.number,
                    reason: format!(
                        "StartupLocality after event {n} was extended into PCR 0; it must precede"
                    ),
                });
            }
            if !matches!(locality, 0 | 3 | 4) {
                return Err(ReplayError::StartupLocality {
                    event: e.number,
                    reason: format!(
                        "StartupLocality {locality}: the PC Client spec allows 0, 3 and 4"
                    ),
                });
            }
            found = Some((e.number, locality));
        } else if e.pcr == 0 && e.event_type != EventType::EV_NO_ACTION && pcr0_extended.is_none() {
            pcr0_extended = Some(e.number);
        }
    }
    Ok(found.map(|(_, l)| l))
}

/// Replays a (SRTM) log from the TPM2_Startup values, PCR 0 from the
/// StartupLocality event's locality if there is one (module docs).
pub fn replay(log: &EventLog) -> Result<Replay, ReplayError> {
    let locality = find_startup_locality(log)?;
    let start: Vec<PcrBank> = log
        .banks()
        .into_iter()
        .map(|alg| {
            let mut bank = PcrBank::reset(alg);
            if let (Some(l), Some(pcr0)) = (locality, bank.values.first_mut()) {
                if let Some(last) = pcr0.last_mut() {
                    *last = l;
                }
            }
            bank
        })
        .collect();
    let mut replay = replay_from(log, &start)?;
    replay.startup_locality = locality;
    Ok(replay)
}

/// Replays a log from the given start values (one [`PcrBank`] per bank of
/// the log; extra banks are ignored). No StartupLocality is applied.
pub fn replay_from(log: &EventLog, start: &[PcrBank]) -> Result<Replay, ReplayError> {
    let mut banks = Vec::new();
    for alg in log.banks() {
        let given = start
            .iter()
            .find(|b| b.alg == alg && b.values.len() == PCR_COUNT)
            .ok_or(ReplayError::MissingStart { alg })?;
        let mut values = given.values.clone();
        for v in &mut values {
            v.resize(alg.size(), 0);
        }
        banks.push(ReplayedBank {
            alg,
            start: values.clone(),
            values,
            history: vec![Vec::new(); PCR_COUNT],
        });
    }
    let mut extended = 0;
    for e in &log.events {
        if e.event_type == EventType::EV_NO_ACTION {
            continue;
        }
        let pcr = usize::try_from(e.pcr)
            .ok()
            .filter(|p| *p < PCR_COUNT)
            .ok_or(ReplayError::PcrOutOfRange {
                event: e.number,
                offset: e.offset,
                pcr: e.pcr,
            })?;
        for bank in &mut banks {
            let alg = bank.alg;
            let digest = e.digest(alg).filter(|d| d.len() == alg.size()).ok_or(
                ReplayError::MissingDigest {
                    event: e.number,
                    offset: e.offset,
                    alg,
                    size: alg.size(),
                },
            )?;
            if let (Some(value), Some(history)) =
                (bank.values.get_mut(pcr), bank.history.get_mut(pcr))
            {
                *value = alg.extend(value, digest);
                history.push(Step {
                    event: e.number,
                    value: value.clone(),
                });
            }
        }
        extended += 1;
    }
    Ok(Replay {
        banks,
        startup_locality: None,
        events: log.events.len(),
        extended,
    })
}

/// Why a quoted PCR does not match the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum MismatchCause {
    /// The log extends nothing into this PCR and the quoted value is not its
    /// start value. No event is named.
    NoEvents,
    /// The first `matching_prefix` events of the log on this PCR replay to
    /// the quoted value: the log has events the TPM did not extend. The
    /// event named is the first of them.
    ExtraEvents {
        /// How many of the PCR's events do replay to the quote.
        matching_prefix: usize,
    },
    /// No prefix of the log's events on this PCR (not even none) replays to
    /// the quoted value: an event's digest is wrong, or the TPM extended
    /// something the log does not have. The event named is the last of the
    /// PCR's events: the log cannot be trusted for this PCR up to and
    /// including it.
    NoPrefix,
    /// The quoted index is not a PCR of a PC Client TPM (≥ 24).
    NotAPcr,
}

/// One quoted PCR the replayed bank does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The PCR.
    pub pcr: u8,
    /// The bank.
    pub alg: Alg,
    /// The quoted value.
    #[serde(serialize_with = "ser_hex")]
    pub quoted: Vec<u8>,
    /// The replayed value (None for an index ≥ 24).
    #[serde(serialize_with = "ser_opt_hex")]
    pub replayed: Option<Vec<u8>>,
    /// The event from which log and quote can no longer agree (see
    /// [`MismatchCause`]).
    pub event: Option<usize>,
    /// Why.
    #[serde(flatten)]
    pub cause: MismatchCause,
}

fn ser_opt_hex<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pcr, alg) = (self.pcr, self.alg);
        match (self.cause, self.event) {
            (MismatchCause::NotAPcr, _) => write!(f, "quoted PCR {pcr} ({alg}) is not a PCR 0-23"),
            (MismatchCause::NoEvents, _) => write!(
                f,
                "PCR {pcr} ({alg}): quoted {} but the log extends nothing into it",
                hex::encode(&self.quoted)
            ),
            (MismatchCause::ExtraEvents { matching_prefix }, Some(e)) => write!(
                f,
                "PCR {pcr} ({alg}): the quote matches the log's first {matching_prefix} event(s) on it; event {e} and later were not extended"
            ),
            (_, Some(e)) => write!(
                f,
                "PCR {pcr} ({alg}): no prefix of the log replays to the quoted value; the log cannot be trusted up to event {e}"
            ),
            (_, None) => write!(f, "PCR {pcr} ({alg}): mismatch"),
        }
    }
}

/// Compares a replayed bank with quoted values (PCR index → value in this
/// bank); returns the PCRs that do not match, in index order, each with
/// the event from which log and quote can no longer agree:
/// * the log has no event on the PCR: no event ([`MismatchCause::NoEvents`]);
/// * some prefix of the PCR's events (the first k, possibly none) replays
///   to the quoted value: the (k+1)-th event, the first the TPM did not
///   extend ([`MismatchCause::ExtraEvents`]);
/// * no prefix does: the last event on the PCR ([`MismatchCause::NoPrefix`]).
///
/// PCRs the quote does not name are not compared.
pub fn compare(bank: &ReplayedBank, quoted: &BTreeMap<u8, Vec<u8>>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (&pcr, want) in quoted {
        let i = usize::from(pcr);
        let (Some(start), Some(value), Some(history)) =
            (bank.start.get(i), bank.values.get(i), bank.history.get(i))
        else {
            out.push(Mismatch {
                pcr,
                alg: bank.alg,
                quoted: want.clone(),
                replayed: None,
                event: None,
                cause: MismatchCause::NotAPcr,
            });
            continue;
        };
        if value == want {
            continue;
        }
        let (event, cause) = if history.is_empty() {
            (None, MismatchCause::NoEvents)
        } else {
            // Values after 0, 1, … events; the full replay did not match.
            let prefix = std::iter::once(start)
                .chain(history.iter().map(|s| &s.value))
                .position(|v| v == want);
            match prefix {
                Some(k) => (
                    history.get(k).map(|s| s.event),
                    MismatchCause::ExtraEvents { matching_prefix: k },
                ),
                None => (history.last().map(|s| s.event), MismatchCause::NoPrefix),
            }
        };
        out.push(Mismatch {
            pcr,
            alg: bank.alg,
            quoted: want.clone(),
            replayed: Some(value.clone()),
            event,
            cause,
        });
    }
    out
}
