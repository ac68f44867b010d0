//! Benchmark of quote verification on real swtpm quotes (RSASSA, RSAPSS,
//! ECDSA P-256): `cargo run --release -p trustpool-evidence --example bench_verify`.
//! Prints the median and p99 of 25 batches of 400 verifications each; then
//! the same for parsing and replaying a ~40 KB event log (sha1 + sha256).

use std::time::{Duration, Instant};
use trustpool_evidence::eventlog::encode::{
    devpath_end, devpath_file, image_load, utf16z, variable_data, LogBuilder,
};
use trustpool_evidence::eventlog::guid::Guid;
use trustpool_evidence::eventlog::{parse, replay, Alg, EventType};
use trustpool_evidence::pcr::DEFAULT_PCRS;
use trustpool_evidence::quote::{verify_quote, QuoteCheck};
use trustpool_evidence::tpm::parse_public_2b;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/swtpm/",
            $name
        ))
        .as_slice()
    };
}

const NONCE: [u8; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let values: Vec<(u32, Vec<u8>)> = DEFAULT_PCRS
        .iter()
        .zip(fixture!("pcrs.bin").chunks_exact(32))
        .map(|(i, v)| (u32::from(*i), v.to_vec()))
        .collect();
    let cases = [
        (
            "RSASSA-2048",
            fixture!("ak_rsa.pub"),
            fixture!("quote_rsa.attest"),
            fixture!("quote_rsa.sig"),
        ),
        (
            "RSAPSS-2048",
            fixture!("ak_pss.pub"),
            fixture!("quote_pss.attest"),
            fixture!("quote_pss.sig"),
        ),
        (
            "ECDSA-P256",
            fixture!("ak_ecc.pub"),
            fixture!("quote_ecc.attest"),
            fixture!("quote_ecc.sig"),
        ),
    ];
    let ek = parse_public_2b(fixture!("ek_rsa.pub"))?;
    for (label, ak, attest, signature) in cases {
        let ak = parse_public_2b(ak)?;
        let check = QuoteCheck {
            attest,
            signature,
            ak: &ak,
            ek: Some(&ek),
            expected_extra_data: &NONCE,
            expected_pcrs: &DEFAULT_PCRS,
            pcr_values: &values,
        };
        let batch = 400u32;
        let mut per_quote: Vec<Duration> = (0..25)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..batch {
                    if verify_quote(&check).is_err() {
                        eprintln!("{label}: verification failed");
                        std::process::exit(1);
                    }
                }
                start.elapsed() / batch
            })
            .collect();
        per_quote.sort();
        println!(
            "verify_quote {label:12} median {:>8.1?}  p99 {:>8.1?}  ({} batches x {batch})",
            per_quote[per_quote.len() / 2],
            per_quote[per_quote.len() - 1],
            per_quote.len()
        );
    }
    bench_event_log()
}

/// A UEFI-like log of about 40 KB: variables, images with device paths,
/// separators, IPL strings, in the sha1 and sha256 banks.
fn event_log() -> Vec<u8> {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, &utf16z("EDK II"));
    let path = [devpath_file("\\EFI\\BOOT\\BOOTX64.EFI"), devpath_end()].concat();
    let mut i = 0u32;
    while b.bytes().len() < 40_000 {
        let name = format!("Var{i:04}");
        b.event(
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data(Guid::EFI_GLOBAL_VARIABLE, &name, &[0x5a; 64]),
        );
        b.event_hashing(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            &i.to_le_bytes(),
            &image_load(0x7e00_0000, 0x1_0000, 0, &path),
        );
        b.event(
            8,
            EventType::EV_IPL,
            format!("grub_cmd: linux /vmlinuz-{i} root=/dev/sda2 ro quiet\0").as_bytes(),
        );
        b.event(i % 8, EventType::EV_SEPARATOR, &[0; 4]);
        i += 1;
    }
    b.finish()
}

fn bench_event_log() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = event_log();
    let events = parse(&bytes)?.events.len();
    let batch = 50u32;
    let mut per_log: Vec<Duration> = (0..25)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                match parse(&bytes).map(|log| replay::replay(&log)) {
                    Ok(Ok(_)) => {}
                    _ => {
                        eprintln!("event log: parse or replay failed");
                        std::process::exit(1);
                    }
                }
            }
            start.elapsed() / batch
        })
        .collect();
    per_log.sort();
    println!(
        "event log parse+replay ({} bytes, {events} events, sha1+sha256) median {:>8.1?}  p99 {:>8.1?}  ({} batches x {batch})",
        bytes.len(),
        per_log[per_log.len() / 2],
        per_log[per_log.len() - 1],
        per_log.len()
    );
    Ok(())
}
