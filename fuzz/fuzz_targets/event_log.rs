//! TCG event log parser (`eventlog::parse`), then everything the verifier
//! does with a log: decoding every event, the data-proven flags, the replay
//! (the UEFI one and the TXT one from the DRTM start) and the comparison
//! with quoted values, and what a server keeps of it (`measure`,
//! `measure_txt`). No panic on any input; a log that replays matches its
//! own replayed values; re-encoding the parsed records gives the same
//! bytes; a TXT log that replays is judged replayed on its own values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use trustpool_evidence::eventlog::encode::LogBuilder;
use trustpool_evidence::eventlog::events::Decoder;
use trustpool_evidence::eventlog::measured::{measure, LogFacts};
use trustpool_evidence::eventlog::txt::{self, measure_txt};
use trustpool_evidence::eventlog::{parse, proof, replay, Alg, EventType, LogFormat};

/// The sha256 values of a replay, as a quote of them would prove.
fn sha256_values(r: &replay::Replay) -> BTreeMap<u8, [u8; 32]> {
    r.bank(Alg::Sha256)
        .map(|b| {
            (0u8..24)
                .filter_map(|i| Some((i, b.value(i)?.try_into().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    // What a server keeps never fails, whatever the bytes.
    let zeros: BTreeMap<u8, [u8; 32]> = (0u8..24).map(|i| (i, [0; 32])).collect();
    let _ = measure(data, &zeros);
    let _ = measure_txt(data, &zeros);
    let Ok(log) = parse(data) else {
        return;
    };
    // The TXT replay: refused exactly when an extended event lies outside
    // 17-22 (or a digest is missing); a log that replays is judged
    // replayed on PCRs 17-22 of its own values.
    match txt::replay_drtm(&log) {
        Ok(r) => {
            assert!(log
                .events
                .iter()
                .filter(|e| e.event_type != EventType::EV_NO_ACTION)
                .all(|e| (17..=22).contains(&e.pcr)));
            if r.bank(Alg::Sha256).is_some() {
                match measure_txt(data, &sha256_values(&r)) {
                    LogFacts::Replayed(m) => {
                        assert_eq!(m.replayed, vec![17, 18, 19, 20, 21, 22]);
                        assert!(m.mismatches.is_empty());
                    }
                    other => panic!("a replayed TXT log judged {other:?}"),
                }
            }
        }
        Err(replay::ReplayError::OutsideDrtm { event, pcr, .. }) => {
            let e = &log.events[event];
            assert_eq!(e.pcr, pcr);
            assert!(!(17..=22).contains(&pcr));
            assert_ne!(e.event_type, EventType::EV_NO_ACTION);
        }
        Err(_) => {}
    }
    let decoder = Decoder::for_log(&log);
    for e in &log.events {
        let _ = decoder.decode(e).summary();
        let proofs = proof::check(e);
        assert_eq!(proofs.len(), e.digests.len());
        let _ = proof::summarize(&proofs);
    }
    // The records re-encode to the input.
    let mut b = match (&log.format, &log.spec_id) {
        (LogFormat::CryptoAgile, Some(spec)) => {
            LogBuilder::crypto_agile_with(&spec.algorithms, &spec.vendor_info)
        }
        _ => LogBuilder::legacy(),
    };
    let skip = usize::from(log.format == LogFormat::CryptoAgile);
    for e in log.events.iter().skip(skip) {
        let digests: Vec<(u16, Vec<u8>)> =
            e.digests.iter().map(|d| (d.alg_id, d.digest.clone())).collect();
        b.event_digests(e.pcr, e.event_type, &digests, &e.data);
    }
    if log.format == LogFormat::Sha1Legacy {
        assert_eq!(b.bytes(), data);
    } else {
        // The header is re-encoded from its fields: compare the records.
        let header_len = log.events.get(1).map_or(data.len(), |e| e.offset);
        let ours = LogBuilder::crypto_agile_with(
            &log.spec_id.as_ref().map(|s| s.algorithms.clone()).unwrap_or_default(),
            &log.spec_id.as_ref().map(|s| s.vendor_info.clone()).unwrap_or_default(),
        );
        let our_header = ours.bytes().len();
        assert_eq!(b.bytes().get(our_header..), data.get(header_len..));
    }
    let Ok(r) = replay::replay(&log) else {
        return;
    };
    assert!(r.extended <= log.events.len());
    for bank in &r.banks {
        let quoted: BTreeMap<u8, Vec<u8>> = (0u8..24)
            .filter_map(|i| bank.value(i).map(|v| (i, v.to_vec())))
            .collect();
        assert!(replay::compare(bank, &quoted).is_empty());
        // A quote that differs everywhere names only PCRs 0-23 and events
        // of the log on that PCR.
        let other: BTreeMap<u8, Vec<u8>> = (0u8..26).map(|i| (i, vec![0x5a; 3])).collect();
        for m in replay::compare(bank, &other) {
            if let Some(n) = m.event {
                let e = &log.events[n];
                assert_eq!(e.pcr, u32::from(m.pcr));
                assert_ne!(e.event_type, EventType::EV_NO_ACTION);
            }
        }
    }
});
