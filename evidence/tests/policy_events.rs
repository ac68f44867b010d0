//! Pool policies with `[events]` judging the real OVMF logs of
//! evidence/testdata/eventlog/ovmf/ (their README says how each was made):
//! `ovmf-secboot` boots with Secure Boot on through shim and grub,
//! `ovmf-default` boots a kernel directly with Secure Boot off, and
//! `ovmf-bootorder` differs from `ovmf-default` in PCR 1 only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trustpool_evidence::eventlog::measured::{measure, LogFacts, MeasuredEvent};
use trustpool_evidence::policy::{evaluate, parse_pool, HostFacts, PoolPolicy};
use trustpool_evidence::reason::{codes, Reason};

fn ovmf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/eventlog/ovmf")
}

/// The vTPM's sha256 PCRs 0-7 after the boot of `stem`: what a quote of
/// PCRs 0-7 proves.
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

/// `measure` of the log of `log` against the quote of `quote`.
fn facts(log: &str, quote: &str) -> LogFacts {
    let bytes = std::fs::read(ovmf().join(format!("{log}.bin"))).unwrap();
    measure(&bytes, &quoted(quote))
}

fn events(f: &LogFacts) -> &[MeasuredEvent] {
    &f.replayed().expect("replayed").events
}

/// A TOML basic string (JSON's escapes are TOML's).
fn s(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

const HEAD: &str = "require_measured_launch = false\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n";

/// `[[events.allow]]` rules for every event of PCRs 0-7 of `f`, as an
/// operator's capture would write them: digest, type, the device path when
/// there is one, a label; the same rule once.
fn allow_rules(f: &LogFacts) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for e in events(f).iter().filter(|e| e.pcr <= 7) {
        let key = (e.pcr, e.digest.clone(), e.event_type, e.device_path.clone());
        if !seen.insert(key) {
            continue;
        }
        let _ = write!(
            out,
            "\n[[events.allow]]\npcr = {}\ndigest = \"{}\"\ntype = \"{}\"\nlabel = {}\n",
            e.pcr,
            e.digest,
            e.event_type,
            s(&format!("event {}: {}", e.number, e.summary))
        );
        if let Some(p) = &e.device_path {
            let _ = writeln!(out, "path = {}", s(p));
        }
    }
    out
}

fn captured(stem: &str) -> String {
    format!(
        "{HEAD}\n[events]\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n{}",
        allow_rules(&facts(stem, stem))
    )
}

fn pool(text: &str) -> PoolPolicy {
    parse_pool("ovmf.toml", text).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// The host that booted `log` and quoted `quote`, judged by `policy`.
fn judge(policy: &PoolPolicy, log: &str, quote: &str) -> Vec<Reason> {
    let f = facts(log, quote);
    let pcrs = quoted(quote);
    evaluate(
        policy,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: Some(&f),
            txt_log: None,
        },
    )
}

fn codes_of(r: &[Reason]) -> Vec<&str> {
    r.iter().map(|r| r.code.as_str()).collect()
}

fn messages(r: &[Reason]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_policy_of_the_secure_boot_hosts_events_accepts_it() {
    let text = captured("ovmf-secboot");
    let p = pool(&text);
    // Events 21/30 ("Calling EFI Application…") and 47/48 (the kernel, twice)
    // are one rule each: 39 events of PCRs 0-7, 37 rules.
    let rules = p.events.as_ref().expect("events");
    assert_eq!(rules.allow().len(), 37, "{text}");
    let r = judge(&p, "ovmf-secboot", "ovmf-secboot");
    assert!(r.is_empty(), "{}", messages(&r));
}

#[test]
fn the_same_policy_rejects_the_default_boot_naming_its_events() {
    let p = pool(&captured("ovmf-secboot"));
    let r = judge(&p, "ovmf-default", "ovmf-default");
    assert!(!r.is_empty());
    assert!(
        r.iter().all(|r| r.code == codes::EVENT_NOT_ALLOWED),
        "{}",
        messages(&r)
    );
    let text = messages(&r);
    // Other firmware volumes (PCR 0), Secure Boot off and empty keys (PCR 7),
    // another kernel loaded another way (PCR 4).
    for expected in [
        "PCR 0 event 2 EV_EFI_PLATFORM_FIRMWARE_BLOB sha256 4c251b0c52a393c134c2ddf7c9afb08878cf9dc95f9ff6827cad7ed4394dd209 is not allowed by pool 'ovmf': blob at 0x820000, 917504 bytes",
        "PCR 7 event 4 EV_EFI_VARIABLE_DRIVER_CONFIG sha256 115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8 is not allowed by pool 'ovmf': SecureBoot = 0",
        "PCR 4 event 11 EV_EFI_BOOT_SERVICES_APPLICATION sha256 44450f5fc4b2cd18e7d89d94bc357f1eeeb9ce8e79a462650beb138cffe56f16 is not allowed by pool 'ovmf'",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in\n{text}");
    }
    // The events both boots share are allowed: the separators, the
    // option ROM of the NIC (PCR 2), "Exit Boot Services" (PCR 5).
    assert!(!text.contains("EV_SEPARATOR"), "{text}");
    assert!(!text.contains("PCR 2 "), "{text}");
    assert!(!text.contains("PCR 5 "), "{text}");
}

#[test]
fn secure_boot_on_must_be_shown_by_a_proven_variable() {
    let text = format!(
        "{HEAD}\n[events]\n\n[[events.require]]\npcr = 7\nvariable = \"SecureBoot\"\nguid = \"8be4df61-93ca-11d2-aa0d-00e098032b8c\"\ndata = \"01\"\nlabel = \"Secure Boot on\"\n"
    );
    let p = pool(&text);
    assert!(judge(&p, "ovmf-secboot", "ovmf-secboot").is_empty());
    let r = judge(&p, "ovmf-default", "ovmf-default");
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING]);
    assert_eq!(
        r[0].message,
        "pool 'ovmf' requires SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c) = 01 on PCR 7 ('Secure Boot on'): SecureBoot is 00, the pool requires 01 (event 4 on PCR 7)"
    );
}

#[test]
fn a_dbx_revocation_and_a_db_authority_are_read_from_the_measured_databases() {
    let secboot = facts("ovmf-secboot", "ovmf-secboot");
    let dbx = events(&secboot)
        .iter()
        .find_map(|e| e.variable.as_ref().filter(|v| v.name == "dbx"))
        .expect("dbx");
    let revoked = dbx.entries[0].clone();
    let text = format!(
        "{HEAD}\n[events]\n\n[[events.require]]\nvariable = \"dbx\"\ncontains = [\"{revoked}\"]\nlabel = \"revocation\"\n\n[[events.require]]\nvariable = \"db\"\nsubject = \"CN=Microsoft Corporation UEFI CA 2011\"\n"
    );
    let p = pool(&text);
    let r = judge(&p, "ovmf-secboot", "ovmf-secboot");
    assert!(r.is_empty(), "{}", messages(&r));
    // Secure Boot off: empty databases.
    let r = judge(&p, "ovmf-default", "ovmf-default");
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING; 2]);
    assert!(
        r[0].message
            .contains(&format!("dbx lacks {revoked} (it has 0 entries)")),
        "{}",
        messages(&r)
    );
    assert!(
        r[1].message.contains("db has no X.509 entry"),
        "{}",
        messages(&r)
    );
    // A revocation the secboot dbx does not have.
    let newer = pool(&text.replace(&revoked, &"5a".repeat(32)));
    let r = judge(&newer, "ovmf-secboot", "ovmf-secboot");
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING]);
    assert!(
        r[0].message
            .contains(&format!("dbx lacks {}", "5a".repeat(32))),
        "{}",
        messages(&r)
    );
}

#[test]
fn a_forbidden_text_is_found_by_the_digest_the_firmware_extended() {
    let text = format!(
        "{HEAD}\n[events]\n\n[[events.forbid]]\ntext = \"Entering ROM based setup\"\nlabel = \"firmware setup\"\n\n[[events.forbid]]\ntext = \"Calling EFI Application from Boot Option\"\npcr = 4\n"
    );
    let p = pool(&text);
    let r = judge(&p, "ovmf-secboot", "ovmf-secboot");
    assert_eq!(
        codes_of(&r),
        vec![codes::EVENT_FORBIDDEN; 2],
        "{}",
        messages(&r)
    );
    assert_eq!(
        r[0].message,
        "PCR 4 event 21 EV_EFI_ACTION sha256 3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba is forbidden by pool 'ovmf': text \"Calling EFI Application from Boot Option\""
    );
    assert!(
        r[1].message.starts_with("PCR 4 event 30 "),
        "{}",
        messages(&r)
    );
    // Only the setup rule: these boots never entered setup.
    let setup_only = pool(&text[..text.find("\n[[events.forbid]]\ntext = \"Calling").unwrap()]);
    assert!(judge(&setup_only, "ovmf-secboot", "ovmf-secboot").is_empty());
    assert!(judge(&setup_only, "ovmf-default", "ovmf-default").is_empty());
}

#[test]
fn a_device_path_file_matches_case_insensitively() {
    let secboot = facts("ovmf-secboot", "ovmf-secboot");
    let shim = events(&secboot)
        .iter()
        .find(|e| e.number == 32)
        .expect("event 32");
    assert_eq!(
        shim.device_path.as_deref(),
        Some("PciRoot(0x0)/Pci(0x3,0x0)/\\EFI\\BOOT\\BOOTX64.EFI")
    );
    // The captured policy with its image rules narrowed to a file name.
    let text = captured("ovmf-secboot").replace(
        "path = \"PciRoot(0x0)/Pci(0x3,0x0)/\\\\EFI\\\\BOOT\\\\BOOTX64.EFI\"",
        "file = \"bootx64.efi\"",
    );
    assert!(text.contains("file = \"bootx64.efi\""), "{text}");
    assert!(judge(&pool(&text), "ovmf-secboot", "ovmf-secboot").is_empty());
    let wrong = text.replace("file = \"bootx64.efi\"", "file = \"grubx64.efi\"");
    let r = judge(&pool(&wrong), "ovmf-secboot", "ovmf-secboot");
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED]);
    assert!(
        r[0].message.contains("PCR 4 event 32 ") && r[0].message.contains("file grubx64.efi"),
        "{}",
        messages(&r)
    );
}

#[test]
fn a_boot_order_log_against_the_default_quote_is_a_pcr_1_mismatch_for_every_pool() {
    // A pool of PCR values (the default boot's): the values match, the log
    // does not, so the host is not trusted.
    let values: Vec<String> = quoted("ovmf-default")
        .iter()
        .map(|(p, v)| format!("{p} = \"{}\"", hex::encode(v)))
        .collect();
    let by_values = pool(&format!(
        "{HEAD}\n[[allow]]\nname = \"default\"\npcrs = {{ {} }}\n",
        values.join(", ")
    ));
    assert!(judge(&by_values, "ovmf-default", "ovmf-default").is_empty());
    let r = judge(&by_values, "ovmf-bootorder", "ovmf-default");
    assert_eq!(
        codes_of(&r),
        vec![codes::EVENTLOG_REPLAY_MISMATCH],
        "{}",
        messages(&r)
    );
    let m = &r[0].message;
    assert!(
        m.starts_with("PCR 1 does not replay from the event log: event "),
        "{m}"
    );
    assert!(
        m.contains("EV_EFI_VARIABLE_BOOT, sha256 ") || m.contains("EV_SEPARATOR, sha256 "),
        "{m}"
    );
    // A pool of the default boot's events: the same one reason (PCR 1's
    // events are no evidence any more; nothing else differs).
    let by_events = pool(&captured("ovmf-default"));
    assert!(judge(&by_events, "ovmf-default", "ovmf-default").is_empty());
    let r = judge(&by_events, "ovmf-bootorder", "ovmf-default");
    assert_eq!(
        codes_of(&r),
        vec![codes::EVENTLOG_REPLAY_MISMATCH],
        "{}",
        messages(&r)
    );
    assert_eq!(&r[0].message, m);
}

#[test]
fn allow_entries_or_event_rules_accept_a_host() {
    // The secure-boot host by its events, the default host by its values.
    let values: Vec<String> = quoted("ovmf-default")
        .iter()
        .map(|(p, v)| format!("{p} = \"{}\"", hex::encode(v)))
        .collect();
    let text = format!(
        "{}\n[[allow]]\nname = \"default\"\npcrs = {{ {} }}\n",
        captured("ovmf-secboot"),
        values.join(", ")
    );
    let p = pool(&text);
    assert!(judge(&p, "ovmf-secboot", "ovmf-secboot").is_empty());
    assert!(judge(&p, "ovmf-default", "ovmf-default").is_empty());
    // The boot-order host is neither: the events' reasons, then PCR 1
    // against the default build.
    let r = judge(&p, "ovmf-bootorder", "ovmf-bootorder");
    let last = r.last().expect("reasons");
    assert_eq!(last.code, codes::PCR_NOT_ALLOWED, "{}", messages(&r));
    assert!(last.message.starts_with("PCR 1 is "), "{}", messages(&r));
    assert!(r[..r.len() - 1]
        .iter()
        .all(|r| r.code == codes::EVENT_NOT_ALLOWED));
}

/// The example of docs/policy.md ("A complete example: an OVMF host").
fn documented_example() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"))
            .unwrap();
    let after = &doc[doc.find("<!-- example: ovmf-secboot -->").expect("marker")..];
    let start = after.find("```toml\n").expect("block") + "```toml\n".len();
    let len = after[start..].find("\n```").expect("end");
    after[start..start + len].to_string()
}

#[test]
fn the_documented_ovmf_example_accepts_its_host_and_refuses_the_default_one() {
    let p = pool(&documented_example());
    let rules = p.events.as_ref().expect("events");
    assert_eq!(rules.pcrs(), &[0, 2, 4, 5, 7]);
    assert_eq!(rules.ignore_pcrs(), &[1, 3, 6]);
    let r = judge(&p, "ovmf-secboot", "ovmf-secboot");
    assert!(r.is_empty(), "{}", messages(&r));
    let r = judge(&p, "ovmf-default", "ovmf-default");
    let text = messages(&r);
    assert!(
        text.contains("event.not_allowed: PCR 7 event 4 EV_EFI_VARIABLE_DRIVER_CONFIG sha256 115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8 is not allowed by pool 'ovmf': SecureBoot = 0"),
        "{text}"
    );
    assert!(
        text.contains("event.required_missing: pool 'ovmf' requires SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c) = 01 on PCR 7 ('Secure Boot on'): SecureBoot is 00, the pool requires 01 (event 4 on PCR 7)"),
        "{text}"
    );
    assert!(
        text.contains("dbx lacks e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 (it has 0 entries) (event 8 on PCR 7)"),
        "{text}"
    );
    // The boot-order host: PCR 1 is ignored, but its log and its quote
    // disagree nowhere, so only the other differences count.
    let r = judge(&p, "ovmf-bootorder", "ovmf-bootorder");
    assert!(
        r.iter().all(|r| r.code != codes::EVENTLOG_REPLAY_MISMATCH),
        "{}",
        messages(&r)
    );
}
