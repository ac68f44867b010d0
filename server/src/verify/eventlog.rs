//! The event logs of one piece of evidence, judged against its verified
//! quote: what [`Facts::event_log`] (UEFI) and [`Facts::txt_log`]
//! (TXT/DRTM) record. Pure.
//!
//! Each log is read back from its wire form (size limit, decompression),
//! then replayed ([`measure`]). A log identical to the one this host sent
//! with its previous sound evidence, under the same quoted PCR values,
//! has the same outcome: the previous facts are reused without parsing
//! (a SHA-256 of the log is all it costs).

use super::facts::Facts;
use std::collections::BTreeMap;
use std::sync::Arc;
use trustpool_evidence::eventlog::measured::{log_sha256, measure, LogFacts};
use trustpool_evidence::eventlog::txt::measure_txt;
use trustpool_proto::event_log::{decode, kind_name, ReceivedLog};
use trustpool_proto::v1::{EventLog, EventLogKind};

/// First PCR of the dynamic launch (DRTM), the TXT log's domain.
const FIRST_DRTM_PCR: u8 = 17;
/// Last PCR of the DRTM range.
const LAST_DRTM_PCR: u8 = 22;

/// How the UEFI log of a piece of evidence was judged (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWork {
    /// No log message at all (an agent that sends none).
    Absent,
    /// The agent said why it has none.
    Unavailable,
    /// Could not be read back or parsed.
    Invalid,
    /// Parsed and replayed.
    Replayed,
    /// Unchanged since the host's previous facts: reused.
    Reused,
}

impl LogWork {
    /// Label value for metrics.
    pub fn label(self) -> &'static str {
        match self {
            LogWork::Absent => "absent",
            LogWork::Unavailable => "unavailable",
            LogWork::Invalid => "invalid",
            LogWork::Replayed => "replayed",
            LogWork::Reused => "reused",
        }
    }
}

/// Judges the UEFI log among `logs` against the verified sha256 PCRs of
/// its quote. `previous` are the host's facts from its last sound
/// evidence. None when the evidence carries no UEFI log message.
pub fn judge_uefi_log(
    logs: &[EventLog],
    quoted: &BTreeMap<u8, [u8; 32]>,
    previous: Option<&Facts>,
) -> (Option<Arc<LogFacts>>, LogWork) {
    judge_log(
        EventLogKind::Uefi,
        logs,
        quoted,
        previous.and_then(|p| Some((p.event_log.as_ref()?, p))),
    )
}

/// Judges the TXT/DRTM log among `logs` (PCRs 17-22, replayed from the
/// dynamic launch's zero values), like [`judge_uefi_log`].
pub fn judge_txt_log(
    logs: &[EventLog],
    quoted: &BTreeMap<u8, [u8; 32]>,
    previous: Option<&Facts>,
) -> (Option<Arc<LogFacts>>, LogWork) {
    judge_log(
        EventLogKind::Txt,
        logs,
        quoted,
        previous.and_then(|p| Some((p.txt_log.as_ref()?, p))),
    )
}

fn judge_log(
    kind: EventLogKind,
    logs: &[EventLog],
    quoted: &BTreeMap<u8, [u8; 32]>,
    previous: Option<(&Arc<LogFacts>, &Facts)>,
) -> (Option<Arc<LogFacts>>, LogWork) {
    let name = kind_name(kind as i32);
    let mut of_kind = logs.iter().filter(|l| l.kind == kind as i32);
    let Some(msg) = of_kind.next() else {
        return (None, LogWork::Absent);
    };
    if of_kind.next().is_some() {
        return (
            Some(Arc::new(LogFacts::Invalid {
                log_sha256: String::new(),
                reason: format!("the evidence carries more than one {name} event log"),
            })),
            LogWork::Invalid,
        );
    }
    let bytes = match decode(msg) {
        Ok(ReceivedLog::Log(b)) => b,
        Ok(ReceivedLog::Unavailable(reason)) => {
            return (
                Some(Arc::new(LogFacts::Unavailable { reason })),
                LogWork::Unavailable,
            )
        }
        Err(e) => {
            return (
                Some(Arc::new(LogFacts::Invalid {
                    log_sha256: log_sha256(&msg.data),
                    reason: format!("{name} log: {e}"),
                })),
                LogWork::Invalid,
            )
        }
    };
    let digest = log_sha256(&bytes);
    if let Some((log, facts)) = previous {
        let domain = match kind {
            EventLogKind::Txt => FIRST_DRTM_PCR..=LAST_DRTM_PCR,
            _ => 0..=FIRST_DRTM_PCR - 1,
        };
        if unchanged(log, facts, &digest, quoted, domain) {
            return (Some(Arc::clone(log)), LogWork::Reused);
        }
    }
    let facts = match kind {
        EventLogKind::Txt => measure_txt(&bytes, quoted),
        _ => measure(&bytes, quoted),
    };
    let work = match facts {
        LogFacts::Replayed(_) => LogWork::Replayed,
        _ => LogWork::Invalid,
    };
    (Some(Arc::new(facts)), work)
}

/// Whether the previous facts `log` judged this very log under the same
/// quoted values (so replaying it again would give them again).
fn unchanged(
    log: &LogFacts,
    previous: &Facts,
    digest: &str,
    quoted: &BTreeMap<u8, [u8; 32]>,
    domain: std::ops::RangeInclusive<u8>,
) -> bool {
    let same_log = match log {
        LogFacts::Replayed(m) => m.log_sha256 == digest,
        LogFacts::Invalid { log_sha256, .. } => log_sha256 == digest,
        LogFacts::Unavailable { .. } => false,
    };
    // Only the PCRs the log can speak for matter: a flip of PCR 17 does not
    // change what a UEFI log proves, nor PCR 0 what a TXT log proves.
    let in_domain = |i: &u8| domain.contains(i);
    let now: Vec<(&u8, String)> = quoted
        .iter()
        .filter(|(i, _)| in_domain(i))
        .map(|(i, v)| (i, hex::encode(v)))
        .collect();
    let before: Vec<(&u8, &String)> = previous.pcrs.iter().filter(|(i, _)| in_domain(i)).collect();
    same_log
        && now.len() == before.len()
        && now
            .iter()
            .zip(&before)
            .all(|((i, v), (j, w))| i == j && v == *w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_proto::event_log::{encode, unavailable};

    const OVMF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../evidence/testdata/eventlog/ovmf/"
    );

    fn ovmf(stem: &str) -> (Vec<u8>, BTreeMap<u8, [u8; 32]>) {
        let log = std::fs::read(format!("{OVMF}{stem}.bin")).expect("log");
        let pcrs: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_slice(
            &std::fs::read(format!("{OVMF}{stem}.pcrs.json")).expect("pcrs"),
        )
        .expect("json");
        let quoted = pcrs["sha256"]
            .iter()
            .filter_map(|(k, v)| {
                let i: u8 = k.parse().ok()?;
                let v: [u8; 32] = hex::decode(v).ok()?.try_into().ok()?;
                (i <= 7).then_some((i, v))
            })
            .collect();
        (log, quoted)
    }

    fn facts_with(log: Option<Arc<LogFacts>>, quoted: &BTreeMap<u8, [u8; 32]>) -> Facts {
        Facts {
            attested_at_ms: 1,
            valid_until_ms: 2,
            pcrs: quoted.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
            statuses: None,
            check_reasons: None,
            params_digest: None,
            reset_count: 0,
            restart_count: 0,
            clock: 0,
            firmware_version: 0,
            clock_safe: true,
            event_log: log,
            txt_log: None,
        }
    }

    #[test]
    fn a_log_is_replayed_once_then_reused_while_log_and_quote_stay_the_same() {
        let (log, quoted) = ovmf("ovmf-default");
        let msgs = vec![encode(EventLogKind::Uefi, &log).expect("encode")];
        let (first, work) = judge_uefi_log(&msgs, &quoted, None);
        assert_eq!(work, LogWork::Replayed);
        let first = first.expect("facts");
        assert!(first.replayed().expect("replayed").mismatches.is_empty());
        let previous = facts_with(Some(first.clone()), &quoted);
        let (again, work) = judge_uefi_log(&msgs, &quoted, Some(&previous));
        assert_eq!((again.as_ref(), work), (Some(&first), LogWork::Reused));
        // A DRTM PCR that moved (a new launch) does not concern the UEFI log.
        let mut launched = quoted.clone();
        launched.insert(17, [1; 32]);
        let previous_launch = facts_with(Some(first.clone()), &launched);
        let mut relaunched = quoted.clone();
        relaunched.insert(17, [2; 32]);
        assert_eq!(
            judge_uefi_log(&msgs, &relaunched, Some(&previous_launch)).1,
            LogWork::Reused
        );
        // A PCR that moved: judged again, and now PCR 4 does not replay.
        let mut moved = quoted.clone();
        moved.insert(4, [9; 32]);
        let (judged, work) = judge_uefi_log(&msgs, &moved, Some(&previous));
        assert_eq!(work, LogWork::Replayed);
        let m = judged.expect("facts");
        let bad: Vec<u8> = m
            .replayed()
            .expect("replayed")
            .mismatches
            .iter()
            .map(|x| x.pcr)
            .collect();
        assert_eq!(bad, vec![4]);
        // Another log under the same quote: judged again.
        let (other, _) = ovmf("ovmf-bootorder");
        let msgs = vec![encode(EventLogKind::Uefi, &other).expect("encode")];
        let (_, work) = judge_uefi_log(&msgs, &quoted, Some(&previous));
        assert_eq!(work, LogWork::Replayed);
    }

    #[test]
    fn no_log_a_stated_absence_and_attack_bad_transport_each_say_so() {
        let (_, quoted) = ovmf("ovmf-default");
        assert_eq!(judge_uefi_log(&[], &quoted, None), (None, LogWork::Absent));
        // A TXT log alone is not a UEFI log.
        let txt = vec![unavailable(EventLogKind::Txt, "no TXT")];
        assert_eq!(judge_uefi_log(&txt, &quoted, None).1, LogWork::Absent);
        let (facts, work) = judge_uefi_log(
            &[unavailable(EventLogKind::Uefi, "/sys/x: No such file")],
            &quoted,
            None,
        );
        assert_eq!(work, LogWork::Unavailable);
        assert!(
            matches!(facts.as_deref(), Some(LogFacts::Unavailable { reason }) if reason.contains("No such file"))
        );
        // Two UEFI logs: which one would count? Neither.
        let two = vec![
            unavailable(EventLogKind::Uefi, "a"),
            unavailable(EventLogKind::Uefi, "b"),
        ];
        let (facts, work) = judge_uefi_log(&two, &quoted, None);
        assert_eq!(work, LogWork::Invalid);
        assert!(
            matches!(facts.as_deref(), Some(LogFacts::Invalid { reason, .. }) if reason.contains("more than one"))
        );
        // Data without a reason or compressed garbage.
        let empty = EventLog {
            kind: EventLogKind::Uefi as i32,
            ..Default::default()
        };
        let (facts, work) = judge_uefi_log(&[empty], &quoted, None);
        assert_eq!(work, LogWork::Invalid);
        assert!(
            matches!(facts.as_deref(), Some(LogFacts::Invalid { reason, .. }) if reason.contains("uefi"))
        );
        let garbage = EventLog {
            kind: EventLogKind::Uefi as i32,
            encoding: 1,
            data: vec![0xff; 64],
            size: 64,
            unavailable: String::new(),
        };
        assert_eq!(
            judge_uefi_log(&[garbage], &quoted, None).1,
            LogWork::Invalid
        );
        // Not a log at all.
        let junk = vec![encode(EventLogKind::Uefi, b"not an event log").expect("encode")];
        assert_eq!(judge_uefi_log(&junk, &quoted, None).1, LogWork::Invalid);
    }

    #[test]
    fn a_txt_log_is_judged_on_pcrs_17_to_22_apart_from_the_uefi_log() {
        let log = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/eventlog/txt/legacy-mapping-sha256.bin"
        ))
        .expect("log");
        let parsed = trustpool_evidence::eventlog::parse(&log).expect("parse");
        let replayed = trustpool_evidence::eventlog::txt::replay_drtm(&parsed).expect("replay");
        let bank = replayed
            .bank(trustpool_evidence::eventlog::Alg::Sha256)
            .expect("sha256");
        let (_, mut quoted) = ovmf("ovmf-default");
        for i in 17..=19u8 {
            quoted.insert(i, bank.value(i).expect("pcr").try_into().expect("32"));
        }
        let msgs = vec![
            encode(EventLogKind::Txt, &log).expect("encode"),
            unavailable(EventLogKind::Uefi, "none"),
        ];
        let (txt, work) = judge_txt_log(&msgs, &quoted, None);
        assert_eq!(work, LogWork::Replayed);
        let m = txt
            .as_deref()
            .and_then(LogFacts::replayed)
            .expect("replayed");
        assert_eq!(m.replayed, vec![17, 18, 19]);
        assert!(m.mismatches.is_empty());
        // The UEFI log of the same evidence is its own matter.
        assert_eq!(judge_uefi_log(&msgs, &quoted, None).1, LogWork::Unavailable);
        // A TXT log whose PCR 18 was not what the TPM extended.
        quoted.insert(18, [7; 32]);
        let (txt, _) = judge_txt_log(&msgs, &quoted, None);
        let m = txt
            .as_deref()
            .and_then(LogFacts::replayed)
            .expect("replayed");
        assert_eq!(
            m.mismatches.iter().map(|x| x.pcr).collect::<Vec<_>>(),
            vec![18]
        );
    }
}
