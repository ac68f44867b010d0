//! [`measure`] on the real OVMF logs of evidence/testdata/eventlog/ovmf/:
//! what a server keeps of a log once it replayed against the quote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trustpool_evidence::eventlog::measured::{measure, LogFacts};
use trustpool_evidence::eventlog::EventType;

fn ovmf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/eventlog/ovmf")
}

fn log(stem: &str) -> Vec<u8> {
    std::fs::read(ovmf().join(format!("{stem}.bin"))).unwrap()
}

/// The vTPM's sha256 PCRs 0-7 after the boot of `stem` (what a quote of
/// PCRs 0-7 would prove).
fn quoted(stem: &str) -> BTreeMap<u8, [u8; 32]> {
    let all: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&std::fs::read(ovmf().join(format!("{stem}.pcrs.json"))).unwrap())
            .unwrap();
    all["sha256"]
        .iter()
        .map(|(k, v)| {
            (
                k.parse().unwrap(),
                hex::decode(v).unwrap().try_into().unwrap(),
            )
        })
        .filter(|(k, _): &(u8, [u8; 32])| *k <= 7)
        .collect()
}

#[test]
fn a_real_log_replays_to_its_quote_and_keeps_the_events_policy_needs() {
    let facts = measure(&log("ovmf-secboot"), &quoted("ovmf-secboot"));
    let m = facts.replayed().expect("replayed");
    assert_eq!(m.replayed, vec![0, 1, 2, 3, 4, 5, 6, 7], "{m:?}");
    assert!(m.mismatches.is_empty());
    // Secure Boot on: the variable is proven and says 1.
    let sb = m
        .events
        .iter()
        .find(|e| e.variable.as_ref().is_some_and(|v| v.name == "SecureBoot"))
        .expect("a SecureBoot event");
    assert!(sb.data_proven);
    assert_eq!(sb.pcr, 7);
    assert_eq!(sb.variable.as_ref().unwrap().data.as_deref(), Some("01"));
    // db holds certificates, named by subject.
    let db = m
        .events
        .iter()
        .find(|e| e.variable.as_ref().is_some_and(|v| v.name == "db"))
        .expect("a db event");
    let v = db.variable.as_ref().unwrap();
    assert!(!v.entries.is_empty() && !v.subjects.is_empty(), "{v:?}");
    // Boot applications carry their device path; nothing of EV_NO_ACTION.
    assert!(m.events.iter().any(
        |e| e.event_type == EventType::EV_EFI_BOOT_SERVICES_APPLICATION
            && e.device_path.is_some()
            && !e.data_proven
    ));
    assert!(m
        .events
        .iter()
        .all(|e| e.event_type != EventType::EV_NO_ACTION));
    // The facts survive storage.
    let json = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<LogFacts>(&json).unwrap(), facts);
}

#[test]
fn a_changed_boot_order_is_a_pcr_1_mismatch_naming_its_event() {
    // The boot-order capture's log against the default boot's quote: the
    // only difference is the boot order, so only PCR 1 fails to replay.
    let facts = measure(&log("ovmf-bootorder"), &quoted("ovmf-default"));
    let m = facts.replayed().expect("replayed");
    let bad: Vec<u8> = m.mismatches.iter().map(|x| x.pcr).collect();
    assert_eq!(bad, vec![1], "{:?}", m.mismatches);
    let mismatch = &m.mismatches[0];
    assert!(mismatch.event.is_some() && mismatch.digest.is_some());
    assert!(mismatch.message.contains("PCR 1"), "{}", mismatch.message);
    // Events of PCR 1 are not evidence any more; the others still are.
    assert!(m.events.iter().all(|e| e.pcr != 1));
    assert!(m.events.iter().any(|e| e.pcr == 0));
}

#[test]
fn garbage_and_logs_without_a_sha256_bank_are_invalid_not_panics() {
    let q = quoted("ovmf-default");
    for bad in [&b""[..], b"\x00\x01\x02", &[0xff; 200]] {
        match measure(bad, &q) {
            LogFacts::Invalid { reason, log_sha256 } => {
                assert!(!reason.is_empty());
                assert_eq!(log_sha256.len(), 64);
            }
            other => panic!("{other:?}"),
        }
    }
    // A truncated real log.
    let mut cut = log("ovmf-default");
    cut.truncate(cut.len() / 2 + 3);
    assert!(matches!(measure(&cut, &q), LogFacts::Invalid { .. }));
}
