//! The Intel TXT (DRTM) event log: the record format of the UEFI log
//! (crypto-agile, Spec ID Event03 header, then `TCG_PCR_EVENT2`; or legacy
//! SHA-1 records on TPM 1.2), written by the SINIT ACM and then by tboot or
//! the Linux Secure Launch kernel, with the TXT event types of
//! [`super::types`] (`EVTYPE_HASH_START`, `EVTYPE_MLE_HASH`…, tboot's
//! `EVTTYPE_TB_MEASUREMENT`). Linux Secure Launch exposes it as
//! `/sys/kernel/security/slaunch/eventlog`; docs/eventlog.md, "TXT/DRTM
//! log".
//!
//! # Start values
//! GETSEC[SENTER] runs the locality-4 hash sequence: the TPM resets PCRs
//! 17-22 to zero (from the all-ones they hold since TPM2_Startup) and
//! extends PCR 17 with the hash the CPU computed of the SINIT ACM — the
//! log's first event, `EVTYPE_HASH_START`. So [`replay_drtm`] replays from
//! [`PcrBank::after_dynamic_launch`]: PCRs 17-22 zero, the other PCRs as
//! after TPM2_Startup (zero; the log never extends them). No
//! StartupLocality event applies.
//!
//! # Events outside 17-22: refused
//! A TXT log that extends any other PCR is refused
//! ([`ReplayError::OutsideDrtm`]), not partly replayed. Such an event is not
//! what SINIT, tboot or Secure Launch write; its PCR's value also depends on
//! the firmware's measurements, which only the UEFI log has, so a replay of
//! it from the DRTM start would match no quote anyway. Ignoring it would
//! leave a log that says more than its replay can back; refusing names the
//! event (and the usual cause: the UEFI log given for the TXT one).
//! EV_NO_ACTION events (the Spec ID header is one, on PCR 0) are never
//! extended, so they may name any PCR.
//!
//! # Domain
//! [`measure_txt`] compares the quoted PCRs 17-22, every one of them even
//! without an event in the log: a PCR the log leaves alone must then be
//! at the DRTM start value, zero.

use super::measured::{measure_in, Domain, LogFacts, DRTM_PCRS};
use super::replay::{replay_from, PcrBank, Replay, ReplayError};
use super::{EventLog, EventType};
use std::collections::BTreeMap;

/// The start of a DRTM replay, one bank per bank of the log: PCRs 17-22
/// zero (after the hash start's reset), the others as after TPM2_Startup.
pub fn drtm_start(log: &EventLog) -> Vec<PcrBank> {
    log.banks()
        .into_iter()
        .map(PcrBank::after_dynamic_launch)
        .collect()
}

/// Replays a TXT (DRTM) log from [`drtm_start`]. An error if an extended
/// event names a PCR outside 17-22 (module docs), and for what
/// [`replay_from`] refuses (a missing bank digest).
pub fn replay_drtm(log: &EventLog) -> Result<Replay, ReplayError> {
    if let Some(e) = log.events.iter().find(|e| {
        e.event_type != EventType::EV_NO_ACTION
            && !u8::try_from(e.pcr).is_ok_and(|p| DRTM_PCRS.contains(&p))
    }) {
        return Err(ReplayError::OutsideDrtm {
            event: e.number,
            offset: e.offset,
            pcr: e.pcr,
        });
    }
    replay_from(log, &drtm_start(log))
}

/// True if the log is a DRTM log by where it extends: at least one event
/// is extended (EV_NO_ACTION aside) and every one lies in PCRs 17-22. A
/// UEFI log measures PCRs 0-9 (and 14) and never 17-22; a log without an
/// extended event is neither, and counts as not DRTM (its replays agree:
/// nothing extended).
pub fn is_drtm(log: &EventLog) -> bool {
    let mut extended = log
        .events
        .iter()
        .filter(|e| e.event_type != EventType::EV_NO_ACTION)
        .peekable();
    extended.peek().is_some()
        && extended.all(|e| u8::try_from(e.pcr).is_ok_and(|p| DRTM_PCRS.contains(&p)))
}

/// The TXT log: replayed by [`replay_drtm`], compared on PCRs 17-22.
const DRTM: Domain = Domain {
    replay: |log| replay_drtm(log).map_err(|e| e.to_string()),
    compares: |pcr, _| DRTM_PCRS.contains(&pcr),
};

/// Judges a TXT (DRTM) event log against the verified sha256 PCR values of
/// its quote, as [`super::measured::measure`] judges the UEFI log: the
/// quoted PCRs 17-22 are compared with the log's replay from the DRTM start,
/// and the events of those that replayed are kept. Never fails: a log that
/// does not parse, has no sha256 bank or does not replay (an event outside
/// 17-22) is [`LogFacts::Invalid`] with the reason.
pub fn measure_txt(log: &[u8], quoted: &BTreeMap<u8, [u8; 32]>) -> LogFacts {
    measure_in(log, quoted, &DRTM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::encode::LogBuilder;
    use crate::eventlog::replay::replay;
    use crate::eventlog::{parse, Alg};
    use crate::pcr::{drtm_hash_start, extend};
    use sha2::{Digest, Sha256};

    const SINIT: &[u8] = b"a SINIT ACM";

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    /// A tboot-like log: hash start and SINIT's details on 17, the MLE on
    /// 18, a kernel and an initrd on 19 (sha1 and sha256 banks).
    fn txt_log() -> Vec<u8> {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
        b.event_hashing(17, EventType::EVTYPE_HASH_START, SINIT, &[]);
        b.event_hashing(17, EventType::EVTYPE_BIOSAC_REG_DATA, b"regs", &[]);
        b.event_hashing(18, EventType::EVTYPE_MLE_HASH, b"tboot", &[]);
        b.event_hashing(19, EventType::EVTTYPE_TB_MEASUREMENT, b"vmlinuz", &[]);
        b.event_hashing(19, EventType::EVTTYPE_TB_MEASUREMENT, b"initrd", &[]);
        b.finish()
    }

    /// The sha256 PCRs 17-22 after that launch.
    fn launched() -> BTreeMap<u8, [u8; 32]> {
        let p17 = extend(&drtm_hash_start(SINIT), &sha256(b"regs"));
        let p18 = extend(&[0; 32], &sha256(b"tboot"));
        let p19 = extend(&extend(&[0; 32], &sha256(b"vmlinuz")), &sha256(b"initrd"));
        let mut q: BTreeMap<u8, [u8; 32]> = (17..=22).map(|i| (i, [0; 32])).collect();
        q.insert(17, p17);
        q.insert(18, p18);
        q.insert(19, p19);
        q
    }

    #[test]
    fn a_drtm_log_replays_pcrs_17_to_22_from_zero() {
        let log = parse(&txt_log()).unwrap();
        assert!(is_drtm(&log));
        let r = replay_drtm(&log).unwrap();
        assert_eq!(r.startup_locality, None);
        assert_eq!(r.extended, 5);
        let bank = r.bank(Alg::Sha256).unwrap();
        for pcr in 0..24 {
            assert_eq!(bank.start[pcr], vec![0; 32], "start of PCR {pcr}");
        }
        // The hash start's event replays to what the TPM computes.
        assert_eq!(
            bank.history[17][0].value,
            drtm_hash_start(SINIT).to_vec(),
            "PCR 17 after EVTYPE_HASH_START"
        );
        for (pcr, want) in launched() {
            assert_eq!(bank.value(pcr), Some(&want[..]), "PCR {pcr}");
        }
        assert_eq!(bank.extended_pcrs(), vec![17, 18, 19]);
        // The sha1 bank replays from zero too.
        let sha1 = r.bank(Alg::Sha1).unwrap();
        let want = Alg::Sha1.extend(&[0; 20], &Alg::Sha1.digest(b"tboot"));
        assert_eq!(sha1.value(18), Some(&want[..]));
        // The SRTM replay starts 17-22 from all-ones: not the TPM's values.
        let srtm = replay(&log).unwrap();
        let srtm = srtm.bank(Alg::Sha256).unwrap();
        assert_eq!(srtm.start[17], vec![0xff; 32]);
        assert_ne!(srtm.value(17), bank.value(17));
    }

    #[test]
    fn an_event_outside_17_to_22_is_refused_naming_it() {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event_hashing(17, EventType::EVTYPE_HASH_START, SINIT, &[]);
        b.event(5, EventType::EV_SEPARATOR, &[0; 4]);
        b.event_hashing(18, EventType::EVTYPE_MLE_HASH, b"tboot", &[]);
        let bytes = b.finish();
        let log = parse(&bytes).unwrap();
        assert!(!is_drtm(&log));
        let e = replay_drtm(&log).unwrap_err();
        assert!(
            matches!(
                e,
                ReplayError::OutsideDrtm {
                    event: 2,
                    pcr: 5,
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("event 2") && text.contains("PCR 5"), "{text}");
        match measure_txt(&bytes, &launched()) {
            LogFacts::Invalid { reason, .. } => assert!(reason.contains("PCR 5"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // PCR 23 and PCR 40 are outside too; an EV_NO_ACTION event is not
        // extended and may name any PCR.
        for pcr in [16, 23, 40] {
            let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
            b.event(pcr, EventType::EVTTYPE_TB_MEASUREMENT, b"x");
            let log = parse(&b.finish()).unwrap();
            assert!(
                matches!(replay_drtm(&log), Err(ReplayError::OutsideDrtm { .. })),
                "PCR {pcr}"
            );
        }
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.no_action(3, b"anything");
        b.event_hashing(17, EventType::EVTYPE_HASH_START, SINIT, &[]);
        let log = parse(&b.finish()).unwrap();
        assert!(is_drtm(&log));
        assert_eq!(replay_drtm(&log).unwrap().extended, 1);
    }

    #[test]
    fn measure_txt_compares_17_to_22_and_keeps_the_replayed_events() {
        let facts = measure_txt(&txt_log(), &launched());
        let m = facts.replayed().expect("replayed");
        assert_eq!(m.replayed, vec![17, 18, 19, 20, 21, 22]);
        assert!(m.mismatches.is_empty(), "{:?}", m.mismatches);
        let types: Vec<EventType> = m.events.iter().map(|e| e.event_type).collect();
        assert_eq!(types[0], EventType::EVTYPE_HASH_START);
        assert_eq!(m.events[0].digest, hex::encode(sha256(SINIT)));
        assert_eq!(m.events.len(), 5);
        // The SRTM PCRs of the quote are the UEFI log's business.
        let mut quoted = launched();
        quoted.insert(0, [7; 32]);
        quoted.insert(7, [7; 32]);
        let m2 = measure_txt(&txt_log(), &quoted);
        assert_eq!(
            m2.replayed().map(|m| m.replayed.clone()),
            Some(m.replayed.clone())
        );
        // A quote whose PCR 19 differs: only 19 fails, its events go.
        let mut quoted = launched();
        quoted.insert(19, extend(&[0; 32], &sha256(b"vmlinuz")));
        let m = measure_txt(&txt_log(), &quoted);
        let m = m.replayed().expect("replayed");
        assert_eq!(m.mismatches.len(), 1);
        assert_eq!(m.mismatches[0].pcr, 19);
        assert_eq!(
            m.mismatches[0].event,
            Some(5),
            "the first event not extended"
        );
        assert!(m.events.iter().all(|e| e.pcr != 19));
        // No launch: PCRs 17-22 all-ones in the quote, nothing replays.
        let unlaunched: BTreeMap<u8, [u8; 32]> = (17..=22).map(|i| (i, [0xff; 32])).collect();
        let m = measure_txt(&txt_log(), &unlaunched);
        let m = m.replayed().expect("replayed");
        assert!(m.replayed.is_empty());
        assert_eq!(m.mismatches.len(), 6);
        assert!(m.events.is_empty());
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let q = launched();
        let log = txt_log();
        for bad in [
            &b""[..],
            b"\x00\x01\x02",
            &[0xff; 300],
            &log[..log.len() - 1],
        ] {
            match measure_txt(bad, &q) {
                LogFacts::Invalid { reason, log_sha256 } => {
                    assert!(!reason.is_empty());
                    assert_eq!(log_sha256.len(), 64);
                }
                other => panic!("{other:?}"),
            }
        }
        // A sha1-only TXT log (TPM 1.2 era) cannot answer a sha256 quote.
        let mut b = LogBuilder::legacy();
        b.event(17, EventType::EVTYPE_HASH_START, SINIT);
        assert!(matches!(
            measure_txt(&b.finish(), &q),
            LogFacts::Invalid { .. }
        ));
        // Not DRTM: a UEFI log, and a log that extends nothing.
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event(4, EventType::EV_SEPARATOR, &[0; 4]);
        assert!(!is_drtm(&parse(&b.finish()).unwrap()));
        let b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        assert!(!is_drtm(&parse(&b.finish()).unwrap()));
    }
}
