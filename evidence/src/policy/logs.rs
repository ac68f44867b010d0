//! The two event logs a host may send with its quote, as policy sees them:
//! which PCRs each one speaks for, and the rule every pool applies to them
//! whether or not it judges events — a log that contradicts the quote on a
//! PCR the pool selects, or that cannot be read at all, makes the host
//! untrusted (fail closed).
//!
//! * The **UEFI (SRTM) log** (`HostFacts::event_log`) speaks for every PCR
//!   but 17-22: the firmware's, the boot loader's, shim's.
//! * The **TXT (DRTM) log** (`HostFacts::txt_log`) speaks for PCRs 17-22.
//!
//! An *unavailable* log (the agent has none) fails nothing here: a pool
//! that judges PCR values alone judges them as before. Only the event rules
//! need a log ([`super::events`]).

use super::HostFacts;
use crate::eventlog::measured::{LogFacts, PcrMismatch};
use crate::reason::{codes, Reason};
use std::fmt::Write as _;

/// One of the two logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    /// The UEFI (SRTM) log: PCRs 0-16 and 23.
    Uefi,
    /// The TXT (DRTM) log: PCRs 17-22.
    Txt,
}

impl Log {
    /// Both, in the order reasons name them.
    pub(super) const BOTH: [Log; 2] = [Log::Uefi, Log::Txt];

    /// Whether this log speaks for `pcr`.
    pub(super) fn covers(self, pcr: u8) -> bool {
        let drtm = (17..=22).contains(&pcr);
        match self {
            Log::Uefi => !drtm,
            Log::Txt => drtm,
        }
    }

    /// What the host sent for this log.
    pub(super) fn facts<'a>(self, facts: &HostFacts<'a>) -> Option<&'a LogFacts> {
        match self {
            Log::Uefi => facts.event_log,
            Log::Txt => facts.txt_log,
        }
    }

    /// How messages name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Log::Uefi => "event log",
            Log::Txt => "TXT event log",
        }
    }
}

/// `eventlog.invalid`: the log does not parse or replay.
pub(super) fn invalid_reason(log: Log, reason: &str) -> Reason {
    Reason::new(
        codes::EVENTLOG_INVALID,
        format!(
            "the {} is invalid: {reason}; a host whose log cannot be read is not trusted",
            log.name()
        ),
    )
}

/// `eventlog.replay_mismatch`: the log does not replay to a quoted PCR.
pub(super) fn mismatch_reason(log: Log, m: &PcrMismatch) -> Reason {
    let mut text = format!("PCR {} does not replay from the {}", m.pcr, log.name());
    if let Some(n) = m.event {
        let _ = write!(text, ": event {n}");
        match (&m.event_type, &m.digest) {
            (Some(t), Some(d)) => {
                let _ = write!(text, " ({t}, sha256 {d})");
            }
            (Some(t), None) => {
                let _ = write!(text, " ({t})");
            }
            (None, Some(d)) => {
                let _ = write!(text, " (sha256 {d})");
            }
            (None, None) => {}
        }
    }
    let _ = write!(
        text,
        ": {}; a host whose log contradicts its quote is not trusted",
        m.message
    );
    Reason::new(codes::EVENTLOG_REPLAY_MISMATCH, text)
}

/// The reasons of the rule every pool applies to the logs: for each log,
/// `eventlog.invalid` when it is invalid and the pool selects a PCR it
/// speaks for; `eventlog.replay_mismatch` for each PCR of the selection the
/// log does not replay to. Nothing for an absent or unavailable log.
pub(super) fn integrity(selection: &[u8], facts: &HostFacts) -> Vec<Reason> {
    let mut reasons = Vec::new();
    for log in Log::BOTH {
        match log.facts(facts) {
            None | Some(LogFacts::Unavailable { .. }) => {}
            Some(LogFacts::Invalid { reason, .. }) => {
                if selection.iter().any(|p| log.covers(*p)) {
                    reasons.push(invalid_reason(log, reason));
                }
            }
            Some(LogFacts::Replayed(m)) => {
                for mismatch in &m.mismatches {
                    if selection.contains(&mismatch.pcr) {
                        reasons.push(mismatch_reason(log, mismatch));
                    }
                }
            }
        }
    }
    reasons
}
