//! The TXT (DRTM) event log of a simulated measured launch against a real
//! swtpm: the log `simulated_launch_log` writes must replay, from the DRTM
//! start (PCRs 17-22 at zero), to exactly the PCRs the TPM holds after
//! `Swtpm::simulate_measured_launch`, and the lab must put that log where
//! the agent looks for it. tpm2_eventlog (tpm2-tools) must agree.
//!
//! No agent runs here, but the PCRs are read back from the TPM anyway
//! before they are compared: swtpm 0.7.1 has been seen to drop a hash
//! sequence silently under a concurrent client, and a test must not
//! compare a log with values it assumed.

use std::collections::BTreeMap;
use std::process::Command;
use trustpool_evidence::eventlog::measured::LogFacts;
use trustpool_evidence::eventlog::txt::{measure_txt, replay_drtm};
use trustpool_evidence::eventlog::{parse, Alg, EventType};
use trustpool_tests::lab::{golden_measurements, Hardening, Lab, Launch, SLAUNCH_EVENTLOG};
use trustpool_tests::swtpm::{
    expected_launch_pcrs, reset_value, simulated_launch_log, Swtpm, SwtpmState,
};

const DRTM: [u8; 6] = [17, 18, 19, 20, 21, 22];

fn replayed(facts: &LogFacts) -> (Vec<u8>, Vec<u8>) {
    let m = facts
        .replayed()
        .unwrap_or_else(|| panic!("not replayed: {facts:?}"));
    (
        m.replayed.clone(),
        m.mismatches.iter().map(|x| x.pcr).collect(),
    )
}

/// The `pcrs:` sha256 values tpm2_eventlog prints for a log file.
fn tpm2_eventlog_sha256(path: &std::path::Path) -> BTreeMap<u8, String> {
    let out = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tpm2_eventlog failed: {stdout}");
    let pcrs = stdout.split("pcrs:").nth(1).expect("a pcrs: section");
    let sha256 = pcrs.split("sha256:").nth(1).expect("a sha256 bank");
    sha256
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(p, v)| {
            let p = p.trim().parse().ok()?;
            Some((p, v.trim().trim_start_matches("0x").to_ascii_lowercase()))
        })
        .collect()
}

#[test]
fn simulated_launch_log_replays_to_the_swtpms_pcrs() {
    let tmp = tempfile::tempdir().unwrap();
    let state = SwtpmState::provision(&tmp.path().join("tpm"), None).unwrap();
    let sw = Swtpm::start(&state).unwrap();
    // Before the launch: 17-22 all-ones; the log cannot replay to them.
    let before = sw.read_pcrs(&DRTM).unwrap();
    for (pcr, value) in &before {
        assert_eq!(*value, reset_value(u32::from(*pcr)), "PCR {pcr} at startup");
    }
    let sinit = b"txt_eventlog test SINIT ACM";
    let mle = [[0x31; 32]];
    let modules = [[0x41; 32], [0x42; 32], [0x43; 32]];
    let log = simulated_launch_log(sinit, &mle, &modules);
    let (ok, bad) = replayed(&measure_txt(&log, &before));
    assert!(ok.is_empty(), "replayed before any launch: {ok:?}");
    assert_eq!(bad, DRTM.to_vec());

    sw.simulate_measured_launch(sinit, &mle, &modules).unwrap();
    // Read back from the TPM, not assumed: the launch took.
    let pcrs = sw.read_pcrs(&DRTM).unwrap();
    for (pcr, want) in expected_launch_pcrs(sinit, &mle, &modules) {
        let pcr = u8::try_from(pcr).unwrap();
        assert_eq!(pcrs[&pcr], want, "PCR {pcr} after the launch");
        assert_ne!(pcrs[&pcr], before[&pcr], "PCR {pcr} did not change");
    }
    let read: BTreeMap<u8, [u8; 32]> = pcrs
        .iter()
        .filter(|(p, _)| (17..=19).contains(*p))
        .map(|(p, v)| (*p, *v))
        .collect();
    let facts = measure_txt(&log, &read);
    let (ok, bad) = replayed(&facts);
    assert_eq!(ok, vec![17, 18, 19]);
    assert!(bad.is_empty(), "{facts:?}");
    let m = facts.replayed().unwrap();
    assert_eq!(m.events.len(), 1 + mle.len() + modules.len());
    assert_eq!(m.events[0].event_type, EventType::EVTYPE_HASH_START);
    assert!(m.events[1..=mle.len()]
        .iter()
        .all(|e| e.event_type == EventType::EVTYPE_MLE_HASH && e.pcr == 18));
    // PCRs 20-22: zero after the hash start, which the log leaves alone.
    let (ok, bad) = replayed(&measure_txt(&log, &pcrs));
    assert_eq!(ok, DRTM.to_vec());
    assert!(bad.is_empty());

    // The log of another launch: PCR 19 differs, and only 19.
    let other = simulated_launch_log(sinit, &mle, &modules[..2]);
    let (ok, bad) = replayed(&measure_txt(&other, &read));
    assert_eq!((ok, bad), (vec![17, 18], vec![19]));

    // tpm2_eventlog replays 17-22 from zero as well: its values are the
    // TPM's.
    let path = tmp.path().join("slaunch-eventlog");
    std::fs::write(&path, &log).unwrap();
    let theirs = tpm2_eventlog_sha256(&path);
    let want: BTreeMap<u8, String> = read.iter().map(|(p, v)| (*p, hex::encode(v))).collect();
    assert_eq!(theirs, want);
}

/// The lab writes each launched host's TXT log where its agent looks
/// (`<root>/sys/kernel/security/slaunch/eventlog`), and that log replays
/// to the host's TPM; a host without a launch has none.
#[test]
fn the_lab_writes_the_launch_log_under_the_hosts_root() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::create(tmp.path()).unwrap();
    let golden = lab
        .add_host_with("golden", Launch::Golden, Hardening::GoodCompute)
        .unwrap();
    let root = golden.root.clone().expect("a fixture root");
    let path = golden.txt_log.clone().expect("a TXT log");
    assert_eq!(path, root.join(SLAUNCH_EVENTLOG));
    let bytes = std::fs::read(&path).unwrap();
    let (mle, modules) = golden_measurements();
    assert_eq!(
        bytes,
        simulated_launch_log(trustpool_tests::lab::GOLDEN_SINIT, &mle, &modules)
    );
    let log = parse(&bytes).unwrap();
    assert_eq!(log.banks(), vec![Alg::Sha256]);
    assert!(replay_drtm(&log).is_ok());
    let pcrs = golden.swtpm.read_pcrs(&DRTM).unwrap();
    let (ok, bad) = replayed(&measure_txt(&bytes, &pcrs));
    assert_eq!(ok, DRTM.to_vec());
    assert!(bad.is_empty());

    let none = lab
        .add_host_with("unlaunched", Launch::None, Hardening::GoodCompute)
        .unwrap();
    assert_eq!(none.txt_log, None);
    let unlaunched_root = none.root.clone().expect("a fixture root");
    assert!(!unlaunched_root.join(SLAUNCH_EVENTLOG).exists());

    // The hash start alone: a log of one event, and it replays too.
    let start_only = lab
        .add_host_with("start-only", Launch::HashStartOnly, Hardening::Live)
        .unwrap();
    let path = start_only.txt_log.clone().expect("a TXT log");
    assert!(!path.starts_with("/sys"), "{}", path.display());
    let bytes = std::fs::read(&path).unwrap();
    let pcrs = start_only.swtpm.read_pcrs(&DRTM).unwrap();
    let (ok, bad) = replayed(&measure_txt(&bytes, &pcrs));
    assert_eq!(ok, DRTM.to_vec());
    assert!(bad.is_empty());
}
