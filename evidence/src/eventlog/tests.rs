//! Tests of the event log modules on logs written by [`super::encode`].

use super::encode::*;
use super::events::{Decoder, EventData, VariableValue};
use super::guid::Guid;
use super::proof::{self, DataProof, EventProof, ProofForm};
use super::replay::{self, MismatchCause, PcrBank, ReplayError};
use super::*;
use std::collections::BTreeMap;

const ALL_BANKS: [Alg; 5] = [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512, Alg::Sm3];

fn sep() -> Vec<u8> {
    vec![0; 4]
}

/// The value of `pcr` after extending the hashes of `datas` from `start`.
fn chain(alg: Alg, start: Vec<u8>, datas: &[&[u8]]) -> Vec<u8> {
    datas
        .iter()
        .fold(start, |v, d| alg.extend(&v, &alg.digest(d)))
}

fn decode(log: &EventLog, n: usize) -> EventData {
    Decoder::for_log(log).decode(&log.events[n])
}

#[test]
fn crypto_agile_log_parses_and_replays_every_bank() {
    let mut b = LogBuilder::crypto_agile(&ALL_BANKS);
    b.event(0, EventType::EV_S_CRTM_VERSION, &utf16z("1.0"));
    b.event(0, EventType::EV_SEPARATOR, &sep());
    b.event(7, EventType::EV_SEPARATOR, &sep());
    let bytes = b.finish();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::CryptoAgile);
    assert_eq!(log.events.len(), 4);
    assert_eq!(log.banks(), ALL_BANKS.to_vec());
    let spec = log.spec_id.as_ref().unwrap();
    assert_eq!((spec.spec_version_major, spec.uintn_size), (2, 2));
    assert!(matches!(decode(&log, 0), EventData::SpecId(_)));
    assert_eq!(
        log.events[2].offset,
        log.events[1].offset + 8 + 4 + (2 + 20) + (2 + 32) + (2 + 48) + (2 + 64) + (2 + 32) + 4 + 8
    );
    let r = replay::replay(&log).unwrap();
    assert_eq!((r.events, r.extended, r.startup_locality), (4, 3, None));
    for alg in ALL_BANKS {
        let bank = r.bank(alg).unwrap();
        let pcr0 = chain(alg, vec![0; alg.size()], &[&utf16z("1.0"), &sep()]);
        assert_eq!(bank.value(0).unwrap(), pcr0.as_slice(), "{alg}");
        assert_eq!(
            bank.value(7).unwrap(),
            chain(alg, vec![0; alg.size()], &[&sep()]).as_slice()
        );
        assert_eq!(bank.extended_pcrs(), vec![0, 7]);
        assert_eq!(bank.value(1).unwrap(), vec![0; alg.size()].as_slice());
        // The DRTM PCRs keep their reset value.
        for pcr in 17..=22 {
            assert_eq!(bank.value(pcr).unwrap(), vec![0xff; alg.size()].as_slice());
        }
        assert_eq!(bank.value(23).unwrap(), vec![0; alg.size()].as_slice());
        assert_eq!(bank.history[0].len(), 2);
        assert_eq!(bank.history[0][1].event, 2);
    }
}

#[test]
fn legacy_sha1_log() {
    let mut b = LogBuilder::legacy();
    b.event(0, EventType::EV_POST_CODE, b"POST CODE");
    b.event(4, EventType::EV_IPL, b"grub");
    b.event(0, EventType::EV_SEPARATOR, &sep());
    let log = parse(&b.finish()).unwrap();
    assert_eq!(log.format, LogFormat::Sha1Legacy);
    assert_eq!(log.spec_id, None);
    assert_eq!(log.banks(), vec![Alg::Sha1]);
    assert_eq!(log.events.len(), 3);
    assert_eq!(log.events[1].offset, 32 + 9);
    let r = replay::replay(&log).unwrap();
    let bank = r.bank(Alg::Sha1).unwrap();
    assert_eq!(
        bank.value(0).unwrap(),
        chain(Alg::Sha1, vec![0; 20], &[b"POST CODE", &sep()]).as_slice()
    );
    assert_eq!(r.banks.len(), 1);
    // A first record that is an EV_NO_ACTION without the Spec ID signature
    // is a legacy log too.
    let mut b = LogBuilder::legacy();
    b.no_action(0, b"Spec ID Event00\0xxxx");
    b.event(0, EventType::EV_SEPARATOR, &sep());
    let log = parse(&b.finish()).unwrap();
    assert_eq!(log.format, LogFormat::Sha1Legacy);
    assert!(
        matches!(decode(&log, 0), EventData::NoAction { ref signature, .. } if signature == "Spec ID Event00")
    );
}

#[test]
fn every_event_type_decodes() {
    let g = Guid::EFI_GLOBAL_VARIABLE;
    let db = Guid::EFI_IMAGE_SECURITY_DATABASE;
    let owner = Guid::from_fields(0x7701_d7e5, 0x7d1d, 0x48e4, [0; 8]);
    let cert = vec![0x30u8; 40];
    let path: Vec<u8> = [
        devpath_pci_root(0),
        devpath_pci(1, 1),
        devpath_hd_gpt(1, 0x800, 0x100000, owner),
        devpath_file("\\EFI\\BOOT\\BOOTX64.EFI"),
        devpath_end(),
    ]
    .concat();
    let fv_path = [devpath_fv(owner), devpath_fv_file(g), devpath_end()].concat();
    let boot = load_option(1, "debian", &path, b"opt");
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    let cases: Vec<(EventType, Vec<u8>)> = vec![
        (EventType::EV_NO_ACTION, startup_locality_event(0)),
        (EventType::EV_NO_ACTION, b"SP800-155 Event\0rest".to_vec()),
        (
            EventType::EV_NO_ACTION,
            spec_id_event(
                &[SpecIdAlgorithm {
                    alg_id: 0xb,
                    digest_size: 32,
                }],
                0,
                b"v",
            ),
        ),
        (EventType::EV_SEPARATOR, sep()),
        (EventType::EV_ACTION, b"Calling INT 19h".to_vec()),
        (
            EventType::EV_EFI_ACTION,
            b"Exit Boot Services Invocation".to_vec(),
        ),
        (EventType::EV_S_CRTM_VERSION, utf16z("EDK II")),
        (
            EventType::EV_S_CRTM_CONTENTS,
            firmware_blob(0xffc0_0000, 0x40_0000),
        ),
        (EventType::EV_POST_CODE, b"ACPI DATA".to_vec()),
        (EventType::EV_POST_CODE, firmware_blob(0x1000, 0x10)),
        (
            EventType::EV_POST_CODE2,
            firmware_blob2("SMM", 0x2000, 0x20),
        ),
        (
            EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
            firmware_blob(0x82_0000, 0xe_0000),
        ),
        (
            EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            firmware_blob2("Fv(PEIFV)", 0x90_0000, 0xc_0000),
        ),
        (EventType::EV_IPL, b"grub_cmd: linux /vmlinuz\0".to_vec()),
        (EventType::EV_IPL, utf16z("initrd=\\initrd.img")),
        (
            EventType::EV_EVENT_TAG,
            tagged_event(0x8f3b22ec, b"Linux initrd\0"),
        ),
        (EventType::EV_COMPACT_HASH, vec![1, 2, 3, 4]),
        (
            EventType::EV_OMIT_BOOT_DEVICE_EVENTS,
            b"BOOT ATTEMPTS OMITTED".to_vec(),
        ),
        (EventType::EV_TABLE_OF_DEVICES, vec![0xde, 0xad]),
        (EventType::EV_NONHOST_CODE, vec![0xff]),
        (EventType::EV_NONHOST_CONFIG, b"cfg".to_vec()),
        (EventType::EV_NONHOST_INFO, b"info".to_vec()),
        (EventType::EV_PLATFORM_CONFIG_FLAGS, vec![0, 1, 0xfe]),
        (EventType::EV_EFI_HCRTM_EVENT, b"HCRTM".to_vec()),
        (
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            variable_data(g, "SecureBoot", &[1]),
        ),
        (
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            variable_data(g, "PK", &[]),
        ),
        (
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            variable_data(
                db,
                "db",
                &signature_list(Guid::EFI_CERT_X509, &[(owner, &cert), (owner, &cert)]),
            ),
        ),
        (
            EventType::EV_EFI_VARIABLE_BOOT,
            variable_data(g, "BootOrder", &[1, 0, 0, 0]),
        ),
        (
            EventType::EV_EFI_VARIABLE_BOOT,
            variable_data(g, "Boot0001", &boot),
        ),
        (
            EventType::EV_EFI_VARIABLE_BOOT2,
            variable_data(g, "Boot000A", &boot),
        ),
        (
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            variable_data(db, "db", &[owner.0.as_slice(), &cert].concat()),
        ),
        (
            EventType::EV_EFI_SPDM_DEVICE_POLICY,
            variable_data(db, "devdb", b"pol"),
        ),
        (
            EventType::EV_EFI_SPDM_DEVICE_AUTHORITY,
            variable_data(db, "devdb", b"auth"),
        ),
        (
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7e00_0000, 0x1_0000, 0, &path),
        ),
        (
            EventType::EV_EFI_BOOT_SERVICES_DRIVER,
            image_load(0x7f00_0000, 0x2000, 0, &fv_path),
        ),
        (
            EventType::EV_EFI_RUNTIME_SERVICES_DRIVER,
            image_load(0x7f10_0000, 0x2000, 0, &[]),
        ),
        (
            EventType::EV_EFI_GPT_EVENT,
            gpt_data(
                owner,
                &[GptPartition {
                    type_guid: g,
                    unique_guid: owner,
                    start_lba: 2048,
                    end_lba: 4095,
                    name: "EFI System",
                }],
            ),
        ),
        (
            EventType::EV_EFI_HANDOFF_TABLES,
            handoff_tables(None, &[(g, 0x7f00_0000)]),
        ),
        (
            EventType::EV_EFI_HANDOFF_TABLES2,
            handoff_tables(Some("SMBIOS"), &[(g, 0x7f00_0000), (db, 1)]),
        ),
        (
            EventType::EV_EFI_SPDM_FIRMWARE_BLOB,
            [b"SPDM Device Sec\0".as_slice(), &[1, 0], &[9, 9]].concat(),
        ),
        (
            EventType::EV_EFI_SPDM_FIRMWARE_CONFIG,
            [b"SPDM Device Sec2".as_slice(), &[2, 0]].concat(),
        ),
        (EventType(0x1234_5678), vec![7, 7]),
    ];
    for (t, data) in &cases {
        if *t == EventType::EV_NO_ACTION {
            b.no_action(0, data);
        } else {
            b.event(1, *t, data);
        }
    }
    let log = parse(&b.finish()).unwrap();
    assert_eq!(log.events.len(), cases.len() + 1);
    let d: Vec<EventData> = (1..log.events.len()).map(|n| decode(&log, n)).collect();
    let s: Vec<String> = d.iter().map(EventData::summary).collect();
    let mut i = 0..;
    let mut next = || {
        let n = i.next().unwrap();
        (&d[n], s[n].as_str())
    };
    assert!(matches!(
        next().0,
        EventData::StartupLocality { locality: 0 }
    ));
    assert!(
        matches!(next(), (EventData::NoAction { signature, rest }, _) if signature == "SP800-155 Event" && rest == b"rest")
    );
    assert!(matches!(next().0, EventData::SpecId(s) if s.vendor_info == b"v"));
    assert_eq!(next(), (&EventData::Separator { value: 0 }, "separator"));
    assert_eq!(next().1, "\"Calling INT 19h\"");
    assert_eq!(next().1, "\"Exit Boot Services Invocation\"");
    assert_eq!(next().1, "\"EDK II\"");
    assert_eq!(
        next().0,
        &EventData::FirmwareBlob {
            base: 0xffc0_0000,
            length: 0x40_0000
        }
    );
    assert_eq!(next().1, "\"ACPI DATA\"");
    assert_eq!(
        next().0,
        &EventData::FirmwareBlob {
            base: 0x1000,
            length: 0x10
        }
    );
    assert_eq!(next().1, "\"SMM\" at 0x2000, 32 bytes");
    assert_eq!(next().1, "blob at 0x820000, 917504 bytes");
    assert_eq!(next().1, "\"Fv(PEIFV)\" at 0x900000, 786432 bytes");
    assert_eq!(next().1, "\"grub_cmd: linux /vmlinuz\"");
    assert_eq!(next().1, "\"initrd=\\\\initrd.img\"");
    assert_eq!(next().1, "tag 0x8f3b22ec, 13 bytes \"Linux initrd\"");
    assert_eq!(
        next().0,
        &EventData::Bytes {
            data: vec![1, 2, 3, 4]
        }
    );
    assert_eq!(next().1, "\"BOOT ATTEMPTS OMITTED\"");
    assert_eq!(next().1, "dead");
    assert_eq!(next().1, "ff");
    assert_eq!(next().1, "\"cfg\"");
    assert_eq!(next().1, "\"info\"");
    assert_eq!(next().1, "0001fe");
    assert_eq!(next().1, "\"HCRTM\"");
    assert!(
        matches!(next(), (EventData::Variable(v), "SecureBoot = 1") if v.value == VariableValue::Byte { value: 1 } && v.guid == Guid::EFI_GLOBAL_VARIABLE)
    );
    assert_eq!(next().1, "PK (empty)");
    assert_eq!(next().1, "db 1 list(s), 2 signature(s)");
    assert_eq!(next().1, "BootOrder = 0001,0000");
    let (boot1, text) = next();
    assert_eq!(
        text,
        "Boot0001 \"debian\" PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,7701d7e5-7d1d-48e4-0000-000000000000,0x800,0x100000)/\\EFI\\BOOT\\BOOTX64.EFI"
    );
    assert!(
        matches!(boot1, EventData::Variable(v) if matches!(&v.value, VariableValue::LoadOption(o) if o.optional_data == b"opt" && o.attributes == 1))
    );
    assert!(next().1.starts_with("Boot000A \"debian\" PciRoot(0x0)"));
    assert_eq!(
        next().1,
        "db owner 7701d7e5-7d1d-48e4-0000-000000000000, 40 bytes"
    );
    assert_eq!(next().1, "devdb 3 bytes");
    assert_eq!(next().1, "devdb 4 bytes");
    assert!(next().1.ends_with("/\\EFI\\BOOT\\BOOTX64.EFI"));
    assert_eq!(
        next().1,
        "image at 0x7f000000, 8192 bytes, Fv(7701d7e5-7d1d-48e4-0000-000000000000)/FvFile(8be4df61-93ca-11d2-aa0d-00e098032b8c)"
    );
    assert_eq!(next().1, "image at 0x7f100000, 8192 bytes");
    let (gpt, text) = next();
    assert_eq!(
        text,
        "GPT disk 7701d7e5-7d1d-48e4-0000-000000000000, 1 partition(s)"
    );
    assert!(
        matches!(gpt, EventData::Gpt(g) if g.partitions[0].name == "EFI System" && g.partitions[0].start_lba == 2048 && g.partition_entry_size == 128)
    );
    assert_eq!(next().1, "1 table(s): 8be4df61-93ca-11d2-aa0d-00e098032b8c");
    assert!(next().1.starts_with("\"SMBIOS\", 2 table(s)"));
    assert_eq!(next().1, "\"SPDM Device Sec\" version 1");
    assert_eq!(next().1, "\"SPDM Device Sec2\" version 2");
    assert_eq!(
        next(),
        (
            &EventData::Raw {
                error: None,
                data: vec![7, 7]
            },
            "raw: 0707"
        )
    );
}

#[test]
fn undecodable_data_is_kept_raw_and_the_log_still_parses() {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    let bad: Vec<(EventType, Vec<u8>)> = vec![
        (EventType::EV_SEPARATOR, vec![0; 3]),
        (EventType::EV_EFI_ACTION, vec![0xff, 0]),
        (EventType::EV_EFI_VARIABLE_BOOT, vec![1; 20]),
        (EventType::EV_EFI_VARIABLE_BOOT, {
            let mut v = variable_data(Guid::EFI_GLOBAL_VARIABLE, "BootOrder", &[1]);
            v.push(0);
            v
        }),
        (
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(1, 2, 3, &[1, 1, 2, 0])[..31].to_vec(),
        ),
        (EventType::EV_EFI_GPT_EVENT, b"EFI PART".to_vec()),
        (
            EventType::EV_EFI_HANDOFF_TABLES,
            handoff_tables(None, &[(Guid([0; 16]), 1)])[..30].to_vec(),
        ),
        (EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB, vec![0; 15]),
        (EventType::EV_EVENT_TAG, tagged_event(1, b"x")[..8].to_vec()),
        (
            EventType::EV_EFI_SPDM_FIRMWARE_BLOB,
            b"not spdm at all!!!".to_vec(),
        ),
        (EventType::EV_POST_CODE, vec![0xff; 5]),
    ];
    for (t, d) in &bad {
        b.event(1, *t, d);
    }
    let log = parse(&b.finish()).unwrap();
    for n in 1..log.events.len() {
        let d = decode(&log, n);
        assert!(
            matches!(&d, EventData::Raw { error: Some(_), .. }),
            "event {n}: {d:?}"
        );
        assert!(d.summary().starts_with("raw ("), "{}", d.summary());
    }
    // The image's device path alone does not decode: the image does, without text.
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event(
        2,
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
        &image_load(1, 2, 3, &[1, 1, 3, 0]),
    );
    b.event(
        1,
        EventType::EV_EFI_VARIABLE_BOOT,
        &variable_data(Guid::EFI_GLOBAL_VARIABLE, "BootOrder", &[1]),
    );
    b.event(
        1,
        EventType::EV_EFI_VARIABLE_BOOT,
        &variable_data(Guid::EFI_GLOBAL_VARIABLE, "Boot0003", &[1]),
    );
    let log = parse(&b.finish()).unwrap();
    assert!(matches!(decode(&log, 1), EventData::Image(i) if i.device_path.is_none()));
    assert!(
        matches!(decode(&log, 2), EventData::Variable(v) if matches!(v.value, VariableValue::Undecoded { .. }))
    );
    assert!(
        matches!(decode(&log, 3), EventData::Variable(v) if matches!(v.value, VariableValue::Undecoded { .. }))
    );
}

#[test]
fn startup_locality_sets_pcr0_start() {
    for locality in [0u8, 3, 4] {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
        b.startup_locality(locality);
        b.event(0, EventType::EV_S_CRTM_VERSION, &utf16z(""));
        let log = parse(&b.finish()).unwrap();
        assert!(
            matches!(decode(&log, 1), EventData::StartupLocality { locality: l } if l == locality)
        );
        let r = replay::replay(&log).unwrap();
        assert_eq!(r.startup_locality, Some(locality));
        assert_eq!(r.extended, 1);
        for alg in [Alg::Sha1, Alg::Sha256] {
            let mut start = vec![0; alg.size()];
            *start.last_mut().unwrap() = locality;
            assert_eq!(
                r.bank(alg).unwrap().value(0).unwrap(),
                chain(alg, start, &[&utf16z("")]).as_slice(),
                "locality {locality} {alg}"
            );
        }
        // replay_from applies no locality.
        let start: Vec<PcrBank> = [Alg::Sha1, Alg::Sha256].map(PcrBank::reset).to_vec();
        let plain = replay::replay_from(&log, &start).unwrap();
        assert_eq!(plain.startup_locality, None);
        assert_eq!(
            plain.bank(Alg::Sha256).unwrap().value(0).unwrap(),
            chain(Alg::Sha256, vec![0; 32], &[&utf16z("")]).as_slice()
        );
    }
}

#[test]
fn startup_locality_errors() {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.startup_locality(2);
    let e = replay::replay(&parse(&b.finish()).unwrap()).unwrap_err();
    assert!(
        matches!(e, ReplayError::StartupLocality { event: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("allows 0, 3 and 4"), "{e}");

    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, b"x");
    b.startup_locality(3);
    let e = replay::replay(&parse(&b.finish()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("after event 1"), "{e}");

    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.startup_locality(3);
    b.event(1, EventType::EV_SEPARATOR, &sep());
    b.startup_locality(3);
    let e = replay::replay(&parse(&b.finish()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("second StartupLocality"), "{e}");

    // A PCR 1 event before it is fine; so is a StartupLocality-like event
    // of another length (not one).
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event(1, EventType::EV_SEPARATOR, &sep());
    b.startup_locality(3);
    b.no_action(0, b"StartupLocality\0\x03\x00");
    assert_eq!(
        replay::replay(&parse(&b.finish()).unwrap())
            .unwrap()
            .startup_locality,
        Some(3)
    );
}

#[test]
fn unknown_algorithm_is_skipped_by_its_size() {
    let algorithms = [
        SpecIdAlgorithm {
            alg_id: 0x0027,
            digest_size: 48,
        },
        SpecIdAlgorithm {
            alg_id: Alg::Sha256.id(),
            digest_size: 32,
        },
    ];
    let mut b = LogBuilder::crypto_agile_with(&algorithms, b"vendor");
    b.event(0, EventType::EV_SEPARATOR, &sep());
    let log = parse(&b.finish()).unwrap();
    assert_eq!(log.banks(), vec![Alg::Sha256]);
    assert_eq!(log.unknown_algorithms(), vec![0x0027]);
    assert_eq!(log.spec_id.as_ref().unwrap().vendor_info, b"vendor");
    let e = &log.events[1];
    assert_eq!(e.digests.len(), 2);
    assert_eq!(
        (
            e.digests[0].alg_id,
            e.digests[0].digest.len(),
            e.digests[0].alg()
        ),
        (0x27, 48, None)
    );
    let r = replay::replay(&log).unwrap();
    assert_eq!(r.banks.len(), 1);
    assert_eq!(
        r.bank(Alg::Sha256).unwrap().value(0).unwrap(),
        chain(Alg::Sha256, vec![0; 32], &[&sep()]).as_slice()
    );
    let proofs = proof::check(e);
    assert_eq!(proofs[0].proof, DataProof::Unchecked);
    assert_eq!(
        proofs[1].proof,
        DataProof::Proven {
            form: ProofForm::Data
        }
    );
    assert_eq!(proof::summarize(&proofs), EventProof::Proven);
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["digests"][0]["alg"], "0x0027");
    assert_eq!(json["digests"][1]["alg"], "sha256");
    assert_eq!(json["event_type"], "EV_SEPARATOR");
    assert_eq!(json["data"], "00000000");
}

/// A small log with three events after the header.
fn small_log() -> Vec<u8> {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, &utf16z("v"));
    b.event(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]),
    );
    b.event(4, EventType::EV_SEPARATOR, &sep());
    b.finish()
}

#[test]
fn truncation_at_every_offset_names_the_event() {
    for bytes in [small_log(), {
        let mut b = LogBuilder::legacy();
        b.event(0, EventType::EV_SEPARATOR, &sep());
        b.event(1, EventType::EV_ACTION, b"abc");
        b.finish()
    }] {
        let full = parse(&bytes).unwrap();
        let ends: Vec<usize> = full
            .events
            .iter()
            .skip(1)
            .map(|e| e.offset)
            .chain([bytes.len()])
            .collect();
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Ok(log) => {
                    // Only at a record boundary, with the events before it.
                    let n = ends
                        .iter()
                        .position(|e| *e == cut)
                        .unwrap_or_else(|| panic!("cut {cut} parsed"));
                    assert_eq!(log.events, full.events[..=n]);
                }
                Err(EventLogError::Empty) => assert_eq!(cut, 0),
                Err(EventLogError::Record {
                    event,
                    offset,
                    source,
                }) => {
                    let e = &full.events[event];
                    assert_eq!(offset, e.offset, "cut {cut}");
                    assert!(
                        cut > e.offset && cut < ends[event],
                        "cut {cut} event {event}"
                    );
                    let text = EventLogError::Record {
                        event,
                        offset,
                        source,
                    }
                    .to_string();
                    assert!(
                        text.starts_with(&format!("event {event} (record at offset {offset}): ")),
                        "{text}"
                    );
                }
                Err(other) => panic!("cut {cut}: {other}"),
            }
        }
    }
    // Trailing garbage too short for a record is the next event, truncated.
    let mut bytes = small_log();
    bytes.extend_from_slice(&[1, 2, 3]);
    let e = parse(&bytes).unwrap_err();
    assert!(matches!(e, EventLogError::Record { event: 4, .. }), "{e}");
}

#[test]
fn inconsistent_records_are_errors() {
    let header = LogBuilder::crypto_agile(&[Alg::Sha256]).finish();
    let record = |count: u32, digests: &[(u16, usize)], size: u32| {
        let mut v = header.clone();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&count.to_le_bytes());
        for (id, len) in digests {
            v.extend_from_slice(&id.to_le_bytes());
            v.extend(vec![0u8; *len]);
        }
        v.extend_from_slice(&size.to_le_bytes());
        v
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            record(2, &[(0xb, 32), (0xb, 32)], 0),
            "2 digests but the Spec ID header lists 1",
        ),
        (
            record(1, &[(0x4, 20)], 0),
            "algorithm 0x0004 is not in the Spec ID header",
        ),
        (record(u32::MAX, &[], 0), "4294967295 digests"),
        (
            record(1, &[(0xb, 32)], 0x7fff_ffff),
            "need 2147483647 bytes",
        ),
    ];
    for (bytes, want) in cases {
        let e = parse(&bytes).unwrap_err();
        assert!(
            matches!(e, EventLogError::Record { event: 1, offset, .. } if offset == header.len()),
            "{e}"
        );
        assert!(e.to_string().contains(want), "{e}");
    }
    let mut dup = LogBuilder::crypto_agile(&[Alg::Sha256, Alg::Sha1]);
    dup.event_digests(
        0,
        EventType::EV_SEPARATOR,
        &[(0xb, vec![0; 32]), (0xb, vec![0; 32])],
        &sep(),
    );
    assert!(parse(&dup.finish())
        .unwrap_err()
        .to_string()
        .contains("second digest"));

    // Bad Spec ID headers: event 0.
    let spec = |algs: &[SpecIdAlgorithm]| {
        let data = spec_id_event(algs, 2, &[]);
        let mut b = LogBuilder::legacy();
        b.event_digests(0, EventType::EV_NO_ACTION, &[(4, vec![0; 20])], &data);
        b.finish()
    };
    let a = |alg_id, digest_size| SpecIdAlgorithm {
        alg_id,
        digest_size,
    };
    for (bytes, want) in [
        (spec(&[]), "0 algorithms"),
        (spec(&[a(0xb, 20)]), "20 bytes for algorithm 0x000b"),
        (spec(&[a(0x99, 0)]), "0 bytes"),
        (spec(&[a(0x99, 129)]), "129 bytes"),
        (spec(&[a(0xb, 32), a(0xb, 32)]), "listed twice"),
        (spec(&[a(0xb, 32); 17]), "17 algorithms"),
    ] {
        let e = parse(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                EventLogError::Record {
                    event: 0,
                    offset: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    let mut trailing = spec_id_event(&[a(0xb, 32)], 2, &[]);
    trailing.push(0);
    let mut b = LogBuilder::legacy();
    b.event_digests(0, EventType::EV_NO_ACTION, &[(4, vec![0; 20])], &trailing);
    let e = parse(&b.finish()).unwrap_err();
    assert!(
        e.to_string()
            .contains("trailing bytes after TCG_EfiSpecIDEvent (at offset 65)"),
        "{e}"
    );
}

#[test]
fn limits() {
    assert_eq!(parse(&[]), Err(EventLogError::Empty));
    let big = vec![0u8; MAX_LOG_SIZE + 1];
    assert_eq!(
        parse(&big),
        Err(EventLogError::TooLarge {
            size: MAX_LOG_SIZE + 1,
            max: MAX_LOG_SIZE
        })
    );
    // 64 Ki + 1 legacy records of 32 bytes each.
    let many = vec![0u8; 32 * (MAX_EVENTS + 1)];
    assert_eq!(
        parse(&many),
        Err(EventLogError::TooManyEvents { max: MAX_EVENTS })
    );
    let log = parse(&many[..32 * MAX_EVENTS]).unwrap();
    assert_eq!(log.events.len(), MAX_EVENTS);
    assert!(parse(&many)
        .unwrap_err()
        .to_string()
        .contains("more than 65536 events"));
}

#[test]
fn pcr_index_24_and_more_is_refused_by_the_replay() {
    for pcr in [24u32, 255, u32::MAX] {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event(0, EventType::EV_SEPARATOR, &sep());
        b.event(pcr, EventType::EV_SEPARATOR, &sep());
        let log = parse(&b.finish()).unwrap();
        let e = replay::replay(&log).unwrap_err();
        assert_eq!(
            e,
            ReplayError::PcrOutOfRange {
                event: 2,
                offset: log.events[2].offset,
                pcr
            }
        );
        assert!(e.to_string().contains(&format!("extends PCR {pcr}")), "{e}");
    }
    // EV_NO_ACTION events are never extended, whatever their PCR and digest.
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event_digests(99, EventType::EV_NO_ACTION, &[(0xb, vec![7; 32])], b"x");
    b.event_digests(0, EventType::EV_NO_ACTION, &[(0xb, vec![7; 32])], b"x");
    let r = replay::replay(&parse(&b.finish()).unwrap()).unwrap();
    assert_eq!(r.extended, 0);
    assert_eq!(
        r.bank(Alg::Sha256).unwrap().value(0).unwrap(),
        [0; 32].as_slice()
    );
    assert!(r.bank(Alg::Sha256).unwrap().extended_pcrs().is_empty());
}

#[test]
fn a_missing_bank_digest_is_a_replay_error() {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
    b.event_digests(3, EventType::EV_SEPARATOR, &[(0xb, vec![0; 32])], &sep());
    let log = parse(&b.finish()).unwrap();
    let e = replay::replay(&log).unwrap_err();
    assert!(
        matches!(
            e,
            ReplayError::MissingDigest {
                event: 1,
                alg: Alg::Sha1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no sha1 digest"), "{e}");
}

#[test]
fn replay_from_given_values() {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event(17, EventType(0x402), b"sinit");
    b.event(18, EventType(0x404), b"mle");
    let log = parse(&b.finish()).unwrap();
    let r = replay::replay_from(&log, &[PcrBank::after_dynamic_launch(Alg::Sha256)]).unwrap();
    let bank = r.bank(Alg::Sha256).unwrap();
    assert_eq!(
        bank.value(17).unwrap(),
        chain(Alg::Sha256, vec![0; 32], &[b"sinit"]).as_slice()
    );
    assert_eq!(bank.value(19).unwrap(), [0; 32].as_slice());
    assert_eq!(bank.extended_values().len(), 2);
    // From the SRTM reset values, 17 extends from all-ones.
    let srtm = replay::replay(&log).unwrap();
    assert_eq!(
        srtm.bank(Alg::Sha256).unwrap().value(17).unwrap(),
        chain(Alg::Sha256, vec![0xff; 32], &[b"sinit"]).as_slice()
    );
    assert_eq!(
        replay::replay_from(&log, &[PcrBank::reset(Alg::Sha1)]),
        Err(ReplayError::MissingStart { alg: Alg::Sha256 })
    );
    let mut short = PcrBank::reset(Alg::Sha256);
    short.values.pop();
    assert!(replay::replay_from(&log, &[short]).is_err());
}

#[test]
fn data_proven_flags() {
    let g = Guid::EFI_GLOBAL_VARIABLE;
    let var = variable_data(g, "Boot0000", &load_option(1, "x", &devpath_end(), &[]));
    let var_contents = load_option(1, "x", &devpath_end(), &[]);
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
    b.event(7, EventType::EV_SEPARATOR, &sep()); // 1 proven
    b.event_hashing(7, EventType::EV_SEPARATOR, &[1, 0, 0, 0], &sep()); // 2 not proven
    b.event(1, EventType::EV_EFI_VARIABLE_BOOT, &var); // 3 whole
    b.event_hashing(1, EventType::EV_EFI_VARIABLE_BOOT, &var_contents, &var); // 4 VariableData
    b.event_hashing(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &[1],
        &variable_data(g, "SecureBoot", &[1]),
    ); // 5: DRIVER_CONFIG must be whole
    b.event_hashing(
        4,
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"PE image",
        &image_load(0, 0, 0, &[]),
    ); // 6 n/a
    b.event_hashing(8, EventType::EV_IPL, b"kernel", b"/vmlinuz\0"); // 7 may: n/a
    b.event_hashing(8, EventType::EV_IPL, b"grub_cmd: ls", b"grub_cmd: ls\0"); // 8 without NUL
    b.event(
        5,
        EventType::EV_EFI_ACTION,
        b"Exit Boot Services Invocation",
    ); // 9
    b.no_action(0, &startup_locality_event(0)); // 10 n/a
    b.event_digests(
        7,
        EventType::EV_SEPARATOR,
        &[(4, Alg::Sha1.digest(&sep())), (0xb, vec![1; 32])],
        &sep(),
    ); // 11 mixed
    b.event_digests(
        8,
        EventType::EV_IPL,
        &[(4, Alg::Sha1.digest(b"a")), (0xb, vec![1; 32])],
        b"a",
    ); // 12 mixed may
    b.event(
        0,
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
        &firmware_blob(0, 0),
    ); // 13 n/a even when equal
    let log = parse(&b.finish()).unwrap();
    let p = |n: usize| proof::event_proof(&log.events[n]);
    let forms = |n: usize| {
        proof::check(&log.events[n])
            .iter()
            .map(|b| b.proof)
            .collect::<Vec<_>>()
    };
    let proven = |form| DataProof::Proven { form };
    assert_eq!(p(1), EventProof::Proven);
    assert_eq!(p(2), EventProof::NotProven);
    assert_eq!(forms(2), vec![DataProof::NotProven; 2]);
    assert_eq!(forms(3), vec![proven(ProofForm::Data); 2]);
    assert_eq!(forms(4), vec![proven(ProofForm::VariableData); 2]);
    assert_eq!(p(5), EventProof::NotProven);
    assert_eq!(p(6), EventProof::NotApplicable);
    assert_eq!(forms(6), vec![DataProof::NotApplicable; 2]);
    assert_eq!(p(7), EventProof::NotApplicable);
    assert_eq!(forms(8), vec![proven(ProofForm::DataWithoutNul); 2]);
    assert_eq!(p(9), EventProof::Proven);
    assert_eq!(p(10), EventProof::NotApplicable);
    assert_eq!(
        forms(11),
        vec![proven(ProofForm::Data), DataProof::NotProven]
    );
    assert_eq!(p(11), EventProof::NotProven);
    assert_eq!(p(12), EventProof::NotProven);
    assert_eq!(p(13), EventProof::NotApplicable);
    let json = serde_json::to_value(proof::check(&log.events[4])).unwrap();
    assert_eq!(
        json[1],
        serde_json::json!({"alg": "sha256", "status": "proven", "form": "variable_data"})
    );
    assert_eq!(
        serde_json::to_value(EventProof::NotProven).unwrap(),
        "not_proven"
    );
}

#[test]
fn mismatches_name_the_pcr_and_the_event() {
    let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, b"a"); // 1
    b.event(1, EventType::EV_EFI_VARIABLE_BOOT, b"b"); // 2
    b.event(4, EventType::EV_EFI_ACTION, b"c"); // 3
    b.event(1, EventType::EV_EFI_VARIABLE_BOOT, b"d"); // 4
    b.event(4, EventType::EV_EFI_ACTION, b"e"); // 5
    b.event(1, EventType::EV_SEPARATOR, &sep()); // 6
    let log = parse(&b.finish()).unwrap();
    let r = replay::replay(&log).unwrap();
    let bank = r.bank(Alg::Sha256).unwrap();
    let z = vec![0u8; 32];
    let quoted: BTreeMap<u8, Vec<u8>> = [
        (0, bank.value(0).unwrap().to_vec()),        // matches
        (1, chain(Alg::Sha256, z.clone(), &[b"b"])), // only event 2 happened
        (4, chain(Alg::Sha256, z.clone(), &[b"x"])), // something else
        (5, vec![1; 32]),                            // no events
        (7, z.clone()),                              // no events, matches start
        (17, vec![0xff; 32]),                        // DRTM reset value
        (2, vec![]),                                 // wrong length
        (30, z.clone()),                             // not a PCR
    ]
    .into_iter()
    .collect();
    let m = replay::compare(bank, &quoted);
    let got: Vec<(u8, Option<usize>, MismatchCause)> =
        m.iter().map(|m| (m.pcr, m.event, m.cause)).collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                Some(4),
                MismatchCause::ExtraEvents { matching_prefix: 1 }
            ),
            (2, None, MismatchCause::NoEvents),
            (4, Some(5), MismatchCause::NoPrefix),
            (5, None, MismatchCause::NoEvents),
            (30, None, MismatchCause::NotAPcr),
        ]
    );
    assert!(m[0].to_string().contains("event 4 and later"), "{}", m[0]);
    assert!(m[2].to_string().contains("up to event 5"), "{}", m[2]);
    assert!(m[3].to_string().contains("extends nothing"), "{}", m[3]);
    assert!(m[4].to_string().contains("not a PCR"), "{}", m[4]);
    // The quote of a TPM that saw none of PCR 4's events: the first one is named.
    let none: BTreeMap<u8, Vec<u8>> = [(4, z.clone())].into_iter().collect();
    let m = replay::compare(bank, &none);
    assert_eq!(
        (m[0].event, m[0].cause),
        (Some(3), MismatchCause::ExtraEvents { matching_prefix: 0 })
    );
    let json = serde_json::to_value(&m[0]).unwrap();
    assert_eq!(json["cause"], "extra_events");
    assert_eq!(json["matching_prefix"], 0);
    assert_eq!(json["quoted"], hex::encode(&z));
    assert!(replay::compare(bank, &BTreeMap::new()).is_empty());
}

#[test]
fn thirty_two_bit_uintn() {
    let algorithms = [SpecIdAlgorithm {
        alg_id: 0xb,
        digest_size: 32,
    }];
    let mut header = spec_id_event(&algorithms, 0, &[]);
    header[23] = 1; // uintnSize: 32-bit
    let mut b = LogBuilder::legacy();
    b.event_digests(0, EventType::EV_NO_ACTION, &[(4, vec![0; 20])], &header);
    let mut tables = 1u32.to_le_bytes().to_vec();
    tables.extend_from_slice(&Guid::EFI_GLOBAL_VARIABLE.0);
    tables.extend_from_slice(&0x1234u32.to_le_bytes());
    let mut bytes = b.finish();
    let mut rest = LogBuilder::crypto_agile(&[Alg::Sha256]);
    rest.event(1, EventType::EV_EFI_HANDOFF_TABLES, &tables);
    bytes
        .extend_from_slice(&rest.bytes()[LogBuilder::crypto_agile(&[Alg::Sha256]).bytes().len()..]);
    let log = parse(&bytes).unwrap();
    assert_eq!(Decoder::for_log(&log).uintn, 4);
    assert!(
        matches!(decode(&log, 1), EventData::HandoffTables { tables, .. } if tables[0].address == 0x1234)
    );
    assert!(matches!(
        super::events::decode(&log.events[1]),
        EventData::Raw { .. }
    ));
}

#[test]
fn json_of_a_log() {
    let log = parse(&small_log()).unwrap();
    let json = serde_json::to_value(&log).unwrap();
    assert_eq!(json["format"], "crypto_agile");
    assert_eq!(
        json["spec_id"]["algorithms"][1],
        serde_json::json!({"alg_id": "sha256", "digest_size": 32})
    );
    assert_eq!(json["events"][2]["pcr"], 7);
    let d = serde_json::to_value(decode(&log, 2)).unwrap();
    assert_eq!(d["kind"], "variable");
    assert_eq!(d["name"], "SecureBoot");
    assert_eq!(d["guid"], "8be4df61-93ca-11d2-aa0d-00e098032b8c");
    assert_eq!(d["value"], serde_json::json!({"type": "byte", "value": 1}));
    assert_eq!(d["data"], "01");
}
