//! The lab's firmware boot (trustpool_tests::firmware) on a real swtpm:
//! after replaying a real OVMF log into it, the TPM's PCRs are those the
//! OVMF vTPM had after that boot, so the log replays to its quotes.

use std::collections::BTreeMap;
use trustpool_tests::firmware::{boot, ovmf_log, ovmf_logs, read_sha256_pcrs};
use trustpool_tests::swtpm::{Swtpm, SwtpmState};

#[test]
fn a_real_ovmf_log_booted_into_swtpm_gives_the_ovmf_vtpms_pcrs() {
    for stem in ["ovmf-default", "ovmf-secboot"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = SwtpmState::provision(dir.path(), None).expect("provision");
        let swtpm = Swtpm::start(&state).expect("swtpm");
        let log = ovmf_log(stem).expect("log");
        let extends = boot(&swtpm, &log).expect("boot");
        assert!(extends > 10, "{stem}: {extends} extends");
        let got = read_sha256_pcrs(&swtpm, &[0, 1, 2, 3, 4, 5, 6, 7, 9]).expect("read");
        let want: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_slice(
            &std::fs::read(ovmf_logs().join(format!("{stem}.pcrs.json"))).expect("pcrs"),
        )
        .expect("json");
        for (i, v) in &got {
            assert_eq!(
                hex::encode(v),
                want["sha256"][&i.to_string()],
                "{stem}: PCR {i}"
            );
        }
    }
}
