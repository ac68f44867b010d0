//! What judging a UEFI event log costs the server, per log: `measure`
//! (parse, decode every event, replay every bank, compare with the quote,
//! the facts), the SHA-256 that recognises an unchanged log, and the JSON
//! of the facts the store writes when a log changed. Corpus logs (OVMF,
//! 2.6-16 KB) and a server-class log built to about 40 KB (firmware
//! volumes, 60 boot services drivers, Secure Boot databases with a dbx of
//! 430 hashes, GPT, shim, grub, kernel). Medians of `ROUNDS` rounds; no timing is asserted.
//!
//!   cargo bench -p trustpool-evidence --bench eventlog
//!   scripts/bench --evidence        (the same, as the benchmark script)

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;
use trustpool_evidence::eventlog::encode::{
    devpath_end, devpath_hd_gpt, devpath_node, devpath_pci, devpath_pci_root, firmware_blob,
    gpt_data, image_load, signature_list, utf16, variable_data, GptPartition, LogBuilder,
};
use trustpool_evidence::eventlog::guid::Guid;
use trustpool_evidence::eventlog::measured::{log_sha256, measure, LogFacts};
use trustpool_evidence::eventlog::replay::replay;
use trustpool_evidence::eventlog::{parse, Alg, EventType};

/// Rounds per measurement (the median is printed).
const ROUNDS: usize = 31;

/// Calls per round (so that a round lasts well over the clock's grain).
const CALLS: usize = 50;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/eventlog/ovmf/");
    let mut logs: Vec<(String, Vec<u8>)> = [
        "ovmf-default",
        "ovmf-bootorder",
        "ovmf-esp",
        "ovmf-secboot-direct",
        "ovmf-secboot",
    ]
    .iter()
    .map(|stem| {
        let bytes = std::fs::read(format!("{dir}{stem}.bin")).expect("corpus log");
        (stem.to_string(), bytes)
    })
    .collect();
    logs.push(("server-class (built)".into(), server_class_log()));
    println!(
        "{:<22} {:>8} {:>7} {:>11} {:>11} {:>11} {:>10} {:>9}",
        "log", "bytes", "events", "measure µs", "µs per KB", "replay µs", "sha256 µs", "facts µs"
    );
    for (name, log) in &logs {
        let parsed = parse(log).expect("the log parses");
        let quoted = quoted_sha256(log);
        let facts = measure(log, &quoted);
        assert!(
            matches!(&facts, LogFacts::Replayed(m) if m.mismatches.is_empty()),
            "{name}: {facts:?}"
        );
        let measure_us = median_us(|| {
            black_box(measure(black_box(log), &quoted));
        });
        let replay_us = median_us(|| {
            let log = parse(black_box(log)).expect("parses");
            black_box(replay(&log).expect("replays"));
        });
        let sha_us = median_us(|| {
            black_box(log_sha256(black_box(log)));
        });
        let json_us = median_us(|| {
            black_box(serde_json::to_string(&facts).expect("json"));
        });
        println!(
            "{:<22} {:>8} {:>7} {:>11.1} {:>11.2} {:>11.1} {:>10.1} {:>9.1}",
            name,
            log.len(),
            parsed.events.len(),
            measure_us,
            measure_us / (log.len() as f64 / 1024.0),
            replay_us,
            sha_us,
            json_us,
        );
    }
}

/// The median over `ROUNDS` rounds of the time of one call, in µs.
fn median_us(mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / CALLS as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// The sha256 values a quote of this log's replay would prove.
fn quoted_sha256(log: &[u8]) -> BTreeMap<u8, [u8; 32]> {
    let replayed = replay(&parse(log).expect("parses")).expect("replays");
    let bank = replayed.bank(Alg::Sha256).expect("a sha256 bank");
    (0u8..=7)
        .filter_map(|i| Some((i, bank.value(i)?.try_into().ok()?)))
        .collect()
}

/// A log the size of a physical server's (about 40 KB), with the event types
/// and data sizes such logs have.
fn server_class_log() -> Vec<u8> {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
    b.startup_locality(0);
    b.event(0, EventType::EV_S_CRTM_VERSION, &utf16("1.21.0\0"));
    for i in 0..6u64 {
        let volume = vec![i as u8; 4096];
        b.event_hashing(
            0,
            EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
            &volume,
            &firmware_blob(0xff00_0000 + i * 0x10_0000, 0x10_0000),
        );
    }
    let global = Guid::EFI_GLOBAL_VARIABLE;
    let security = Guid::EFI_IMAGE_SECURITY_DATABASE;
    let cert = vec![0x30u8; 1400];
    let owner = Guid([7; 16]);
    b.event(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(global, "SecureBoot", &[1]),
    );
    for (guid, name, n) in [(global, "PK", 1), (global, "KEK", 2), (security, "db", 4)] {
        let entries: Vec<(Guid, &[u8])> = (0..n).map(|_| (owner, cert.as_slice())).collect();
        let list = signature_list(Guid::EFI_CERT_X509, &entries);
        b.event(
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data(guid, name, &list),
        );
    }
    let hashes: Vec<[u8; 32]> = (0..430u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            h
        })
        .collect();
    let revoked: Vec<(Guid, &[u8])> = hashes.iter().map(|h| (owner, h.as_slice())).collect();
    b.event(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(
            security,
            "dbx",
            &signature_list(Guid::EFI_CERT_SHA256, &revoked),
        ),
    );
    for pcr in 0..=7 {
        b.event(pcr, EventType::EV_SEPARATOR, &[0; 4]);
    }
    let pci = |dev: u8| {
        let mut p = devpath_pci_root(0);
        p.extend(devpath_pci(dev, 0));
        p.extend(devpath_end());
        p
    };
    for dev in 0..60u8 {
        let image = vec![dev; 2048];
        b.event_hashing(
            2,
            EventType::EV_EFI_BOOT_SERVICES_DRIVER,
            &image,
            &image_load(0x7e00_0000, 0x8000, 0, &pci(dev)),
        );
    }
    b.event(
        1,
        EventType::EV_EFI_VARIABLE_BOOT,
        &variable_data(global, "BootOrder", &[0, 0, 1, 0]),
    );
    b.event(
        5,
        EventType::EV_EFI_GPT_EVENT,
        &gpt_data(
            Guid([1; 16]),
            &[GptPartition {
                type_guid: Guid([2; 16]),
                unique_guid: Guid([3; 16]),
                start_lba: 2048,
                end_lba: 1_050_623,
                name: "EFI System Partition",
            }],
        ),
    );
    let mut disk = devpath_pci_root(0);
    disk.extend(devpath_pci(3, 0));
    disk.extend(devpath_hd_gpt(1, 2048, 1_048_576, Guid([3; 16])));
    disk.extend(devpath_node(4, 4, &utf16("\\EFI\\debian\\shimx64.efi\0")));
    disk.extend(devpath_end());
    for (name, size) in [("shim", 950_000), ("grub", 2_500_000), ("linux", 8_000_000)] {
        let image = vec![name.len() as u8; size];
        b.event_hashing(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            &image,
            &image_load(0x6000_0000, size as u64, 0, &disk),
        );
    }
    b.event(
        5,
        EventType::EV_EFI_ACTION,
        b"Exit Boot Services Invocation",
    );
    b.finish()
}
