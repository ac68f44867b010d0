//! `[events]`: the file form and its errors, and the judgement of
//! hand-built log facts. The real OVMF logs are judged in
//! evidence/tests/policy_events.rs.

use crate::eventlog::measured::{
    LogFacts, MeasuredBoot, MeasuredEvent, PcrMismatch, VariableFacts,
};
use crate::eventlog::EventType;
use crate::policy::{evaluate, parse_pool, HostFacts, PolicyError, PoolPolicy};
use crate::reason::{codes, Reason};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn d(byte: u8) -> String {
    hex::encode([byte; 32])
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A pool without measured launch judging PCR 0 and 4 by their events.
fn policy_text() -> String {
    format!(
        r#"require_measured_launch = false
pcrs = [0, 4, 7, 14]

[events]
pcrs = [0, 4]
ignore_pcrs = [7]

[[events.allow]]
pcr = 0
digest = "{}"
label = "firmware"

[[events.allow]]
pcr = 4
digest = "{}"
type = "EV_EFI_BOOT_SERVICES_APPLICATION"
file = "shimx64.efi"
label = "shim 15.7"
"#,
        d(0xa0),
        d(0xa4)
    )
}

fn pool(text: &str) -> PoolPolicy {
    parse_pool("p.toml", text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn event(number: u32, pcr: u8, t: EventType, digest: &str) -> MeasuredEvent {
    MeasuredEvent {
        number,
        pcr,
        event_type: t,
        digest: digest.into(),
        data_proven: false,
        summary: format!("event {number}"),
        device_path: None,
        variable: None,
        text: None,
    }
}

fn image(number: u32, digest: &str, path: &str) -> MeasuredEvent {
    MeasuredEvent {
        device_path: Some(path.into()),
        ..event(
            number,
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            digest,
        )
    }
}

fn variable(number: u32, name: &str, data: &[u8], proven: bool) -> MeasuredEvent {
    MeasuredEvent {
        data_proven: proven,
        variable: Some(Box::new(VariableFacts {
            guid: EFI_GLOBAL.into(),
            name: name.into(),
            data_sha256: sha(data),
            data: Some(hex::encode(data)),
            entries: vec![],
            subjects: vec![],
        })),
        ..event(
            number,
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &sha(data),
        )
    }
}

fn replayed(replayed: &[u8], events: Vec<MeasuredEvent>) -> LogFacts {
    LogFacts::Replayed(MeasuredBoot {
        log_sha256: "00".repeat(32),
        replayed: replayed.to_vec(),
        mismatches: vec![],
        events,
    })
}

/// The events of a host the policy of [`policy_text`] accepts.
fn good_events() -> Vec<MeasuredEvent> {
    vec![
        event(1, 0, EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB, &d(0xa0)),
        variable(2, "SecureBoot", &[1], true),
        image(
            3,
            &d(0xa4),
            "PciRoot(0x0)/Pci(0x3,0x0)/\\EFI\\debian\\SHIMX64.EFI",
        ),
    ]
}

fn quoted(pcrs: &[u8]) -> BTreeMap<u8, [u8; 32]> {
    pcrs.iter().map(|p| (*p, [*p; 32])).collect()
}

fn judge(policy: &PoolPolicy, log: Option<&LogFacts>, txt: Option<&LogFacts>) -> Vec<Reason> {
    let pcrs = quoted(&policy.pcrs);
    evaluate(
        policy,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: log,
            txt_log: txt,
        },
    )
}

fn codes_of(r: &[Reason]) -> Vec<&str> {
    r.iter().map(|r| r.code.as_str()).collect()
}

fn errors(text: &str) -> Vec<PolicyError> {
    parse_pool("p.toml", text).expect_err("refused")
}

fn one_error(text: &str) -> PolicyError {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e.remove(0)
}

// ---- the file ----

#[test]
fn an_events_table_parses_into_indexed_rules() {
    let text = format!(
        "{}\n[[events.require]]\npcr = 7\nvariable = \"SecureBoot\"\nguid = \"8BE4DF61-93CA-11D2-AA0D-00E098032B8C\"\ndata = \"01\"\nlabel = \"Secure Boot on\"\n\n[[events.require]]\nvariable = \"dbx\"\ncontains = [\"{}\"]\n\n[[events.forbid]]\ntext = \"Entering ROM based setup\"\nlabel = \"setup\"\n\n[[events.forbid]]\ndigest = \"{}\"\npcr = 4\n",
        policy_text(),
        d(0xdb),
        d(0xee)
    );
    let p = pool(&text);
    assert!(p.allow.is_empty(), "an [events] table is enough");
    let rules = p.events.as_ref().expect("events");
    assert_eq!(rules.pcrs(), &[0, 4]);
    assert_eq!(rules.ignore_pcrs(), &[7]);
    assert!(rules.values().is_empty());
    assert_eq!(rules.allow().len(), 2);
    let shim = &rules.allow()[1];
    assert_eq!(
        shim.event_type,
        Some(EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
    );
    assert_eq!(shim.file.as_deref(), Some("shimx64.efi"));
    assert_eq!(shim.label.as_deref(), Some("shim 15.7"));
    assert_eq!(rules.allow_candidates(4, &[0xa4; 32]), &[1]);
    assert!(rules.allow_candidates(0, &[0xa4; 32]).is_empty());
    let sb = &rules.require()[0];
    assert_eq!(sb.guid.as_deref(), Some(EFI_GLOBAL), "lower-cased");
    assert_eq!(sb.data.as_deref(), Some(&[1u8][..]));
    assert_eq!(rules.require()[1].contains, vec![[0xdb; 32]]);
    let setup: [u8; 32] = Sha256::digest(b"Entering ROM based setup").into();
    let setup_nul: [u8; 32] = Sha256::digest(b"Entering ROM based setup\0").into();
    assert_eq!(rules.forbid_candidates(&setup), &[0]);
    assert_eq!(rules.forbid_candidates(&setup_nul), &[0]);
    assert_eq!(rules.forbid_candidates(&[0xee; 32]), &[1]);
    assert_eq!(rules.forbid()[1].pcr, Some(4));
}

#[test]
fn a_pool_needs_allow_entries_or_an_events_table() {
    let e = one_error("require_measured_launch = false\npcrs = [0]\n");
    assert!(e.message.contains("no [[allow]] entry"), "{e}");
    assert!(e.message.contains("[events]"), "{e}");
    // Both together are fine.
    let both = format!(
        "{}\n[[allow]]\nname = \"gold\"\npcrs = {{ 0 = \"{}\" }}\n",
        policy_text(),
        d(1)
    );
    let p = pool(&both);
    assert_eq!(p.allow.len(), 1);
    assert!(p.events.is_some());
}

#[test]
fn an_events_table_that_judges_nothing_is_refused() {
    let e = one_error(
        "require_measured_launch = false\npcrs = [0, 1]\n\n[events]\nignore_pcrs = [1]\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.starts_with("[events] judges nothing"), "{e}");
}

#[test]
fn event_pcrs_are_in_range_in_the_selection_and_in_one_list_only() {
    let head = "require_measured_launch = false\npcrs = [0, 1, 2, 4]\n\n[events]\n";
    // Line 5: out of range, not selected, listed twice.
    let e = errors(&format!("{head}pcrs = [0, 24, 9, 0]\n"));
    let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].starts_with("p.toml:5:12: PCR index 24 is out of range"),
        "{msgs:?}"
    );
    assert!(
        msgs[1]
            .starts_with("p.toml:5:16: PCR 9 ([events].pcrs) is not in the pool's pcrs selection"),
        "{msgs:?}"
    );
    assert!(
        msgs[2].starts_with("p.toml:5:19: PCR 0 is listed twice in [events].pcrs"),
        "{msgs:?}"
    );
    // Overlaps: pcrs/ignore_pcrs, pcrs/values, ignore_pcrs/values.
    let e = errors(&format!(
        "{head}pcrs = [0, 1]\nignore_pcrs = [1, 2]\nvalues = {{ 0 = \"{}\", 2 = \"{}\" }}\n",
        d(1),
        d(2)
    ));
    let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].starts_with("p.toml:6:16: PCR 1 is in both [events].pcrs and ignore_pcrs"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("p.toml:7:12: PCR 0 is in both [events].pcrs and values"),
        "{msgs:?}"
    );
    assert!(
        msgs[2].contains("p.toml:7:")
            && msgs[2].contains("PCR 2 is in both [events].ignore_pcrs and values"),
        "{msgs:?}"
    );
    // ignore_pcrs and values keys outside the selection, a key that is no PCR.
    let e = errors(&format!(
        "{head}pcrs = [0]\nignore_pcrs = [5]\nvalues = {{ 6 = \"{}\", x = \"{}\" }}\n",
        d(1),
        d(2)
    ));
    let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(6), Some(7), Some(7)], "{e:?}");
    assert!(
        e[0].message
            .contains("PCR 5 ([events].ignore_pcrs) is not in the pool's pcrs selection"),
        "{e:?}"
    );
    assert!(
        e[1].message.contains("'6'") || e[1].message.contains("PCR 6"),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.message.contains("'x' is not a PCR index")),
        "{e:?}"
    );
}

#[test]
fn hex_lengths_and_type_names_have_their_line() {
    let head = "require_measured_launch = false\npcrs = [0, 4, 7]\n\n[events]\npcrs = [4]\nvalues = { 0 = \"abcd\" }\n\n";
    let text = format!(
        "{head}[[events.allow]]\npcr = 4\ndigest = \"{}\"\ntype = \"EV_EFI_BOOT_SERVICE_APPLICATION\"\n\n[[events.allow]]\npcr = 4\ndigest = \"{}\"\n\n[[events.require]]\nvariable = \"dbx\"\ncontains = [\"{}\", \"12\"]\ndata_sha256 = \"xyz\"\ndata = \"0g\"\nguid = \"8be4df61-93ca-11d2-aa0d\"\n",
        d(1),
        "zz".repeat(32),
        d(2)
    );
    let e = errors(&text);
    let got: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.message.as_str())).collect();
    assert_eq!(e.len(), 7, "{got:?}");
    assert_eq!(e[0].line, Some(6));
    assert!(
        e[0].message.starts_with(
            "PCR 0 value must be 64 hex characters (a sha256 digest), got 4 characters"
        ),
        "{got:?}"
    );
    assert_eq!(e[1].line, Some(11));
    assert!(
        e[1].message
            .starts_with("unknown event type 'EV_EFI_BOOT_SERVICE_APPLICATION'"),
        "{got:?}"
    );
    assert_eq!(e[2].line, Some(15));
    assert!(
        e[2].message.contains("characters that are not hex"),
        "{got:?}"
    );
    assert_eq!(e[3].line, Some(22));
    assert!(
        e[3].message
            .starts_with("guid '8be4df61-93ca-11d2-aa0d' is not a GUID"),
        "{got:?}"
    );
    assert_eq!(e[4].line, Some(21));
    assert!(e[4].message.starts_with("data '0g' must be hex"), "{got:?}");
    assert_eq!(e[5].line, Some(20));
    assert!(
        e[5].message
            .starts_with("data_sha256 must be 64 hex characters"),
        "{got:?}"
    );
    assert_eq!(e[6].line, Some(19));
    assert!(
        e[6].message.starts_with(
            "each entry of contains must be 64 hex characters (a sha256 digest), got 2 characters"
        ),
        "{got:?}"
    );
    // A type as a number is fine.
    let ok = format!(
        "{head}[[events.allow]]\npcr = 4\ndigest = \"{}\"\ntype = \"0x80000003\"\n",
        d(1)
    )
    .replace("\"abcd\"", &format!("\"{}\"", d(3)));
    assert_eq!(
        pool(&ok).events.expect("events").allow()[0].event_type,
        Some(EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
    );
}

#[test]
fn allow_rules_must_apply_and_not_repeat() {
    let head = "require_measured_launch = false\npcrs = [0, 4, 7]\n\n[events]\npcrs = [4]\n\n";
    // PCR 7 is selected but not judged by events: the rule could never apply.
    let e = one_error(&format!(
        "{head}[[events.allow]]\npcr = 7\ndigest = \"{}\"\n",
        d(1)
    ));
    assert_eq!((e.line, e.column), (Some(8), Some(7)), "{e}");
    assert!(
        e.message
            .starts_with("PCR 7 is not in [events].pcrs, so this allow rule can never apply"),
        "{e}"
    );
    // Missing pcr and digest.
    let e = errors(&format!("{head}[[events.allow]]\nlabel = \"x\"\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].message.contains("has no pcr"), "{e:?}");
    assert!(e[1].message.contains("has no digest"), "{e:?}");
    assert!(e.iter().all(|e| e.line.is_some()), "{e:?}");
    // The same rule twice (labels aside; file case aside): the first line named.
    let rule = |label: &str, file: &str| {
        format!("[[events.allow]]\npcr = 4\ndigest = \"{}\"\nfile = \"{file}\"\nlabel = \"{label}\"\n\n", d(1))
    };
    let text = format!(
        "{head}{}{}{}",
        rule("a", "shimx64.efi"),
        rule("b", "grubx64.efi"),
        rule("c", "SHIMX64.EFI")
    );
    let e = one_error(&text);
    assert_eq!(e.line, Some(19), "{e}");
    assert_eq!(
        e.message,
        "duplicate allow rule: the rule on line 7 accepts the same events (same pcr, digest, type, path and file)"
    );
    // A file with a separator is a path.
    let e = one_error(&format!(
        "{head}[[events.allow]]\npcr = 4\ndigest = \"{}\"\nfile = \"EFI/shimx64.efi\"\n",
        d(1)
    ));
    assert_eq!(e.line, Some(10));
    assert!(e.message.contains("use path for a whole path"), "{e}");
    // Unknown keys are errors, with their line.
    let e = one_error(&format!(
        "{head}[[events.allow]]\npcr = 4\ndigest = \"{}\"\npcrs = [4]\n",
        d(1)
    ));
    assert_eq!(e.line, Some(10), "{e}");
    assert!(e.message.contains("unknown field `pcrs`"), "{e}");
}

#[test]
fn require_and_forbid_rules_are_complete() {
    let head = "require_measured_launch = false\npcrs = [0, 4, 7]\n\n[events]\npcrs = [4]\n\n";
    let e = one_error(&format!(
        "{head}[[events.require]]\npcr = 7\ndata = \"01\"\n"
    ));
    assert!(
        e.message
            .starts_with("[[events.require]] rule has no variable"),
        "{e}"
    );
    assert!(e.line.is_some());
    let e = one_error(&format!(
        "{head}[[events.require]]\nvariable = \"SecureBoot\"\npcr = 9\n"
    ));
    assert_eq!(e.line, Some(9));
    assert!(
        e.message
            .contains("PCR 9 ([[events.require]]) is not in the pool's pcrs selection"),
        "{e}"
    );
    // Forbid: exactly one of text and digest.
    let e = one_error(&format!(
        "{head}[[events.forbid]]\ntext = \"Entering ROM based setup\"\ndigest = \"{}\"\n",
        d(1)
    ));
    assert_eq!(e.line, Some(9));
    assert!(e.message.contains("has both text and digest"), "{e}");
    let e = one_error(&format!(
        "{head}[[events.forbid]]\npcr = 4\nlabel = \"x\"\n"
    ));
    assert!(e.message.contains("neither text nor digest"), "{e}");
    assert!(e.line.is_some());
    // No `type` on forbid: a forbidden event must not escape by its type.
    let e = one_error(&format!(
        "{head}[[events.forbid]]\ntext = \"x\"\ntype = \"EV_EFI_ACTION\"\n"
    ));
    assert_eq!(e.line, Some(9));
    assert!(e.message.contains("unknown field `type`"), "{e}");
}

#[test]
fn measured_launch_needs_17_and_18_judged_by_the_event_rules() {
    let text = "pcrs = [0, 17, 18]\n\n[events]\npcrs = [0, 17]\n";
    let e = one_error(text);
    assert_eq!(e.line, Some(3), "{e}");
    assert!(
        e.message.starts_with("[events] does not judge PCR 18: "),
        "{e}"
    );
    // In values: fine, unless the value shows no launch.
    let ok = format!(
        "pcrs = [0, 17, 18]\n\n[events]\npcrs = [0, 17]\nvalues = {{ 18 = \"{}\" }}\n",
        d(0x18)
    );
    assert_eq!(pool(&ok).events.expect("events").values()[&18], [0x18; 32]);
    for (value, what) in [
        ("00".repeat(32), "all zeros 00…00"),
        ("ff".repeat(32), "the reset value ff…ff"),
    ] {
        let e = one_error(&format!("pcrs = [0, 17, 18]\n\n[events]\npcrs = [0]\nvalues = {{ 17 = \"{value}\", 18 = \"{}\" }}\n", d(0x18)));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.message
                .starts_with(&format!("[events].values pins PCR 17 to {what}")),
            "{e}"
        );
    }
    // Allow entries still pin them too.
    let both = format!("pcrs = [0, 17, 18]\n\n[events]\npcrs = [0, 17, 18]\n\n[[allow]]\nname = \"open\"\npcrs = {{ 0 = \"{}\" }}\n", d(1));
    assert!(one_error(&both)
        .message
        .contains("does not pin PCR 17 and 18"));
}

// ---- the judgement ----

#[test]
fn every_allowed_event_accepts_the_host() {
    let p = pool(&policy_text());
    let log = replayed(&[0, 4, 7, 14], good_events());
    assert!(
        judge(&p, Some(&log), None).is_empty(),
        "{:?}",
        judge(&p, Some(&log), None)
    );
}

#[test]
fn every_event_not_allowed_is_named() {
    let p = pool(&policy_text());
    let mut events = good_events();
    events.push(event(
        4,
        0,
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
        &d(0xbb),
    ));
    // The digest of shim, but as grub: the file narrows.
    events.push(image(5, &d(0xa4), "\\EFI\\debian\\grubx64.efi"));
    // PCR 7 is ignored: anything goes there.
    events.push(event(6, 7, EventType::EV_SEPARATOR, &d(0x77)));
    let r = judge(&p, Some(&replayed(&[0, 4, 7, 14], events)), None);
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED; 2], "{r:?}");
    assert_eq!(
        r[0].message,
        format!("PCR 0 event 4 EV_EFI_PLATFORM_FIRMWARE_BLOB sha256 {} is not allowed by pool 'p': event 4", d(0xbb))
    );
    assert_eq!(
        r[1].message,
        format!("PCR 4 event 5 EV_EFI_BOOT_SERVICES_APPLICATION sha256 {} is not allowed by pool 'p': event 5 (rule 'shim 15.7' has this PCR and digest but asks type EV_EFI_BOOT_SERVICES_APPLICATION, file shimx64.efi)", d(0xa4))
    );
    // A lying type on the right digest is not accepted either.
    let mut liar = good_events();
    if let Some(e) = liar.get_mut(2) {
        e.event_type = EventType::EV_EFI_BOOT_SERVICES_DRIVER;
    }
    let r = judge(&p, Some(&replayed(&[0, 4, 7, 14], liar)), None);
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED]);
}

#[test]
fn no_log_is_one_reason_per_log() {
    let p = pool(&policy_text());
    let r = judge(&p, None, None);
    assert_eq!(codes_of(&r), vec![codes::EVENTS_NO_LOG], "{r:?}");
    assert_eq!(
        r[0].message,
        "pool 'p' judges PCR 0, 4 by their events, but the agent sent no event log"
    );
    let unavailable = LogFacts::Unavailable {
        reason: "securityfs is not mounted".into(),
    };
    let r = judge(&p, Some(&unavailable), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTS_NO_LOG]);
    assert!(
        r[0].message
            .ends_with("the agent sent no event log: securityfs is not mounted"),
        "{r:?}"
    );
    // Invalid: one eventlog.invalid, not one from the integrity rule and one from the events.
    let invalid = LogFacts::Invalid {
        log_sha256: "00".repeat(32),
        reason: "the event log is empty".into(),
    };
    let r = judge(&p, Some(&invalid), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_INVALID], "{r:?}");
    // The TXT log for PCRs 17-22.
    let txt = pool(&format!(
        "pcrs = [0, 17, 18]\n\n[events]\npcrs = [0, 17, 18]\n\n[[events.allow]]\npcr = 0\ndigest = \"{}\"\n",
        d(0xa0)
    ));
    let log = replayed(&[0], good_events()[..1].to_vec());
    let r = judge(&txt, Some(&log), None);
    // quoted() sets PCR 17 to 1111… and 18 to 1212…: a launch, only its log is missing.
    assert_eq!(codes_of(&r), vec![codes::EVENTS_NO_TXT_LOG], "{r:?}");
    assert_eq!(
        r[0].message,
        "pool 'p' judges PCR 17, 18 by their events, but the agent sent no TXT event log"
    );
    let txt_log = replayed(
        &[17, 18],
        vec![
            event(1, 17, EventType(0x402), &d(0x17)),
            event(2, 18, EventType(0x403), &d(0x18)),
        ],
    );
    let r = judge(&txt, Some(&log), Some(&txt_log));
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED; 2], "{r:?}");
    assert!(
        r[0].message.starts_with(&format!(
            "PCR 17 event 1 EVTYPE_HASH_START sha256 {}",
            d(0x17)
        )),
        "{r:?}"
    );
}

#[test]
fn a_judged_pcr_that_does_not_replay_is_one_mismatch() {
    let p = pool(&policy_text());
    let log = LogFacts::Replayed(MeasuredBoot {
        log_sha256: "00".repeat(32),
        replayed: vec![0, 7, 14],
        mismatches: vec![PcrMismatch {
            pcr: 4,
            event: Some(3),
            event_type: Some(EventType::EV_EFI_BOOT_SERVICES_APPLICATION),
            digest: Some(d(0xa4)),
            message: "PCR 4 (sha256): no prefix of the log replays to the quoted value; the log cannot be trusted up to event 3".into(),
        }],
        events: good_events().into_iter().filter(|e| e.pcr != 4).collect(),
    });
    let r = judge(&p, Some(&log), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_REPLAY_MISMATCH], "{r:?}");
    assert!(r[0].message.starts_with(&format!(
        "PCR 4 does not replay from the event log: event 3 (EV_EFI_BOOT_SERVICES_APPLICATION, sha256 {})",
        d(0xa4)
    )), "{r:?}");
}

#[test]
fn a_judged_pcr_the_log_does_not_explain_is_a_mismatch() {
    // PCR 14 judged by events; the log has no event on it (measure() then
    // does not compare it). Zero: nothing was extended, fine; anything
    // else came from events the log does not show.
    let text = policy_text().replace("pcrs = [0, 4]\n", "pcrs = [0, 4, 14]\n");
    let p = pool(&text);
    let log = replayed(&[0, 4, 7], good_events());
    let mut pcrs = quoted(&p.pcrs);
    let facts = |pcrs: &BTreeMap<u8, [u8; 32]>| {
        evaluate(
            &p,
            &HostFacts {
                pcrs,
                check_status: None,
                check_reason: None,
                event_log: Some(&log),
                txt_log: None,
            },
        )
    };
    let r = facts(&pcrs);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_REPLAY_MISMATCH], "{r:?}");
    assert!(
        r[0].message.starts_with(&format!(
            "PCR 14 is {} in the quote, but the event log has no event on it",
            d(14)
        )),
        "{r:?}"
    );
    pcrs.insert(14, [0; 32]);
    assert!(facts(&pcrs).is_empty());
}

#[test]
fn a_required_variable_must_be_proven_and_say_what_the_pool_requires() {
    let text = format!(
        "{}\n[[events.require]]\npcr = 7\nvariable = \"SecureBoot\"\ndata = \"01\"\n",
        policy_text()
    );
    let p = pool(&text);
    let with = |sb: MeasuredEvent| {
        let mut events = good_events();
        events.retain(|e| e.variable.is_none());
        events.push(sb);
        judge(&p, Some(&replayed(&[0, 4, 7, 14], events)), None)
    };
    assert!(with(variable(2, "SecureBoot", &[1], true)).is_empty());
    let r = with(variable(2, "SecureBoot", &[0], true));
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING]);
    assert_eq!(r[0].message, "pool 'p' requires SecureBoot = 01 on PCR 7: SecureBoot is 00, the pool requires 01 (event 2 on PCR 7)");
    // "1" in the data, but not the data of its digest: no evidence.
    let mut forged = variable(2, "SecureBoot", &[1], false);
    forged.digest = sha(&[0]);
    let r = with(forged);
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING]);
    assert!(r[0].message.ends_with("SecureBoot is present (event 2 on PCR 7) but not data-proven: its data is not what its digest is the hash of, so what it says is no evidence"), "{r:?}");
    // On another PCR, or another variable: absent.
    let mut elsewhere = variable(2, "SecureBoot", &[1], true);
    elsewhere.pcr = 1;
    let r = with(elsewhere);
    assert!(r[0].message.contains("SecureBoot is absent: no event of that variable on PCR 7 that replayed (the event log replays to PCR 0, 4, 7, 14 of the quote)"), "{r:?}");
    let r = with(variable(2, "SetupMode", &[1], true));
    assert!(r[0].message.contains("SecureBoot is absent"), "{r:?}");
    // Without a log the requirement cannot be shown.
    let r = judge(&p, None, None);
    assert_eq!(
        codes_of(&r),
        vec![codes::EVENTS_NO_LOG, codes::EVENT_REQUIRED_MISSING]
    );
    assert!(
        r[1].message.ends_with("(the agent sent no event log)"),
        "{r:?}"
    );
}

#[test]
fn a_signature_database_must_contain_the_entries_and_subject_required() {
    let text = format!(
        "{}\n[[events.require]]\nvariable = \"dbx\"\ncontains = [\"{}\", \"{}\"]\nlabel = \"BlackLotus revoked\"\n\n[[events.require]]\nvariable = \"db\"\nsubject = \"CN=Debian\"\n",
        policy_text(),
        d(0xd1),
        d(0xd2)
    );
    let p = pool(&text);
    let db = |name: &str, entries: Vec<String>, subjects: Vec<String>| {
        let mut e = variable(8, name, b"lists", true);
        if let Some(v) = e.variable.as_mut() {
            v.data = None;
            v.entries = entries;
            v.subjects = subjects;
        }
        e
    };
    let events = |dbx: Vec<String>, subjects: Vec<String>| {
        let mut e = good_events();
        e.push(db("dbx", dbx, vec![]));
        e.push(db("db", vec![d(0xc0)], subjects));
        replayed(&[0, 4, 7, 14], e)
    };
    let good = events(
        vec![d(0xd0), d(0xd1), d(0xd2).to_uppercase()],
        vec!["O=Debian, CN=Debian Secure Boot CA".into()],
    );
    assert!(
        judge(&p, Some(&good), None).is_empty(),
        "{:?}",
        judge(&p, Some(&good), None)
    );
    let r = judge(
        &p,
        Some(&events(vec![d(0xd1)], vec!["CN=Microsoft".into()])),
        None,
    );
    assert_eq!(codes_of(&r), vec![codes::EVENT_REQUIRED_MISSING; 2]);
    assert_eq!(
        r[0].message,
        format!("pool 'p' requires dbx containing {}, {} ('BlackLotus revoked'): dbx lacks {} (it has 1 entry) (event 8 on PCR 7)", d(0xd1), d(0xd2), d(0xd2))
    );
    assert!(
        r[1].message
            .contains("no X.509 subject of db contains 'CN=Debian' (its subjects: CN=Microsoft)"),
        "{r:?}"
    );
}

#[test]
fn a_forbidden_event_is_found_by_its_digest_whatever_type_it_claims() {
    let text = format!(
        "{}\n[[events.forbid]]\ntext = \"Entering ROM based setup\"\nlabel = \"firmware setup\"\n\n[[events.forbid]]\ndigest = \"{}\"\npcr = 0\n",
        policy_text(),
        d(0xa0)
    );
    let p = pool(&text);
    let mut events = good_events();
    // EV_EFI_ACTION's digest, under a type that claims to be a firmware
    // variable and with data that says something else: still forbidden.
    let mut liar = event(
        9,
        7,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
        &sha(b"Entering ROM based setup"),
    );
    liar.summary = "db owner 77fa9abd, 1556 bytes".into();
    events.push(liar);
    // The same text with its NUL, on another (ignored) PCR.
    events.push(event(
        10,
        14,
        EventType::EV_IPL,
        &sha(b"Entering ROM based setup\0"),
    ));
    let r = judge(&p, Some(&replayed(&[0, 4, 7, 14], events)), None);
    assert_eq!(codes_of(&r), vec![codes::EVENT_FORBIDDEN; 3], "{r:?}");
    // Log order: the firmware blob of PCR 0 (digest rule, narrowed to PCR 0) first.
    assert_eq!(
        r[0].message,
        format!("PCR 0 event 1 EV_EFI_PLATFORM_FIRMWARE_BLOB sha256 {} is forbidden by pool 'p': digest {}", d(0xa0), d(0xa0))
    );
    assert_eq!(
        r[1].message,
        format!("PCR 7 event 9 EV_EFI_VARIABLE_AUTHORITY sha256 {} is forbidden by pool 'p': 'firmware setup' (text \"Entering ROM based setup\")", sha(b"Entering ROM based setup"))
    );
    assert!(r[2].message.starts_with("PCR 14 event 10 EV_IPL"), "{r:?}");
}

#[test]
fn values_are_judged_inside_the_event_rules() {
    let text = policy_text().replace(
        "ignore_pcrs = [7]\n",
        &format!("ignore_pcrs = [7]\nvalues = {{ 14 = \"{}\" }}\n", d(14)),
    );
    let p = pool(&text);
    let log = replayed(&[0, 4, 7, 14], good_events());
    assert!(judge(&p, Some(&log), None).is_empty());
    let other = pool(&text.replace(&d(14), &d(0x41)));
    let r = judge(&other, Some(&log), None);
    assert_eq!(codes_of(&r), vec![codes::PCR_NOT_ALLOWED]);
    assert_eq!(
        r[0].message,
        format!(
            "PCR 14 is {}; pool 'p' [events].values expect {}",
            d(14),
            d(0x41)
        )
    );
}

#[test]
fn allow_entries_or_event_rules_accept_and_event_reasons_come_first() {
    let with_allow = |value: u8| {
        pool(&format!(
            "{}\n[[allow]]\nname = \"gold\"\npcrs = {{ 14 = \"{}\" }}\n",
            policy_text(),
            d(value)
        ))
    };
    let bad_events = {
        let mut e = good_events();
        e.push(event(4, 0, EventType::EV_POST_CODE, &d(0xbb)));
        replayed(&[0, 4, 7, 14], e)
    };
    let good_log = replayed(&[0, 4, 7, 14], good_events());
    // The allow entry matches (PCR 14 = 0e…): trusted whatever the events say.
    assert!(judge(&with_allow(14), Some(&bad_events), None).is_empty());
    assert!(
        judge(&with_allow(14), None, None).is_empty(),
        "a pool of values needs no log"
    );
    // The allow entry does not match but the events are all allowed: trusted.
    assert!(judge(&with_allow(0x41), Some(&good_log), None).is_empty());
    // Neither: the events' reasons, then the closest allow entry's.
    let r = judge(&with_allow(0x41), Some(&bad_events), None);
    assert_eq!(
        codes_of(&r),
        vec![codes::EVENT_NOT_ALLOWED, codes::PCR_NOT_ALLOWED],
        "{r:?}"
    );
    assert!(r[1].message.starts_with("PCR 14 is 0e0e"), "{r:?}");
    // A pool of events only names no allow entry.
    let r = judge(&pool(&policy_text()), Some(&bad_events), None);
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED]);
    // A log that contradicts the quote fails even a matching allow entry.
    let mut contradicting = bad_events.clone();
    if let LogFacts::Replayed(m) = &mut contradicting {
        m.mismatches.push(PcrMismatch {
            pcr: 7,
            event: None,
            event_type: None,
            digest: None,
            message: "PCR 7 (sha256): mismatch".into(),
        });
    }
    let r = judge(&with_allow(14), Some(&contradicting), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_REPLAY_MISMATCH], "{r:?}");
}

#[test]
fn reasons_of_the_event_rules_are_capped_at_20() {
    let p = pool(&policy_text());
    let mut events = good_events();
    for n in 0..30u8 {
        events.push(event(100 + u32::from(n), 0, EventType::EV_POST_CODE, &d(n)));
    }
    events.push(event(200, 4, EventType::EV_EFI_ACTION, &d(0xcc)));
    let text = format!("{}\n[[events.require]]\nvariable = \"PK\"\n", policy_text());
    let r = judge(
        &pool(&text),
        Some(&replayed(&[0, 4, 7, 14], events.clone())),
        None,
    );
    assert_eq!(r.len(), 20, "{r:?}");
    assert!(r[..19].iter().all(|r| r.code == codes::EVENT_NOT_ALLOWED));
    assert_eq!(r[19].code, codes::EVENT_NOT_ALLOWED);
    assert_eq!(
        r[19].message,
        "and 13 more reasons of the event rules (12 event.not_allowed, 1 event.required_missing), not listed"
    );
    // 20 exactly: all listed.
    events.truncate(3 + 20);
    let r = judge(&p, Some(&replayed(&[0, 4, 7, 14], events)), None);
    assert_eq!(r.len(), 20);
    assert!(!r[19].message.starts_with("and "), "{r:?}");
}

#[test]
fn tampered_facts_match_no_rule() {
    let p = pool(&policy_text());
    let mut events = good_events();
    if let Some(e) = events.get_mut(0) {
        e.digest = "not hex".into();
    }
    let r = judge(&p, Some(&replayed(&[0, 4, 7, 14], events)), None);
    assert_eq!(codes_of(&r), vec![codes::EVENT_NOT_ALLOWED]);
}
