//! Tests of the pool files and their evaluation (without `[events]`).

use super::error::line_col;
use super::*;
use crate::pcr::drtm_hash_start;
use crate::pcr::DEFAULT_PCRS;
use crate::reason::{codes, Reason};
use sha2::{Digest, Sha256};

const H17: &str = "9851312028952521510e8eaab5be94e7dc24b5fc292b2e9781173cf11ffa9878";
const H0: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// PCR 18 of [`launched_pcrs`] ([18; 32]).
const P18: &str = "1212121212121212121212121212121212121212121212121212121212121212";

fn good() -> String {
    format!(
        r#"# trusted pool for TXT hosts
require_measured_launch = true
pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]
require_checks = ["mac.enforcing_any", "kvm.present"]

[[allow]]
name = "golden-2026-11"
pcrs = {{ 17 = "{H17}", 0 = "{H0}", 18 = "{P18}" }}

[[allow]]
name = "golden-2026-12"
[allow.pcrs]
17 = "{}"
18 = "{P18}"
"#,
        H17.to_uppercase().replace("9851", "1234")
    )
}

fn one_error(name: &str, text: &str) -> PolicyError {
    let mut e = parse_pool(name, text).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    e.remove(0)
}

#[test]
fn good_file_parses() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    assert_eq!(p.name, "gold");
    assert!(p.require_measured_launch);
    assert_eq!(p.pcrs, DEFAULT_PCRS.to_vec());
    assert_eq!(p.require_checks, vec!["mac.enforcing_any", "kvm.present"]);
    assert_eq!(p.allow.len(), 2);
    assert_eq!(p.allow[0].name, "golden-2026-11");
    assert_eq!(p.allow[0].pcrs[&17], drtm_hash_start(b"hello"));
    assert_eq!(p.allow[0].pcrs[&0][31], 1);
    assert_eq!(p.allow[1].pcrs.len(), 2);
    assert_eq!(p.allow[1].pcrs[&17][..2], [0x12, 0x34]);
}

#[test]
fn defaults() {
    let p = parse_pool(
        "dir/min.v2.toml",
        &format!("[[allow]]\nname = \"launch\"\npcrs = {{ 17 = \"{H17}\", 18 = \"{P18}\" }}\n"),
    )
    .unwrap();
    assert_eq!(p.name, "min.v2");
    assert!(p.require_measured_launch, "fails closed by default");
    assert_eq!(p.pcrs, DEFAULT_PCRS.to_vec());
    assert!(p.require_checks.is_empty());
    assert_eq!(p.allow[0].pcrs.len(), 2);
    // Selection is sorted and may omit 17/18 without measured launch.
    let p = parse_pool(
        "srtm.toml",
        "require_measured_launch = false\npcrs = [7, 0]\n[[allow]]\nname = \"a\"\npcrs = {}\n",
    )
    .unwrap();
    assert_eq!(p.pcrs, vec![0, 7]);
    assert!(!p.require_measured_launch);
}

#[test]
fn unknown_key_has_its_line() {
    let e = one_error("p.toml", "pcrs = [0, 17, 18]\nrequire_launch = true\n");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
    assert!(e.message.contains("unknown field `require_launch`"), "{e}");
    assert_eq!(e.to_string().split(": ").next().unwrap(), "p.toml:2:1");
    // Inside an allow entry.
    let e = one_error(
        "p.toml",
        "[[allow]]\nname = \"a\"\npcrs = {}\n\n[[allow]]\nname = \"b\"\npcr = {}\n",
    );
    assert_eq!(e.line, Some(7));
    assert!(e.message.contains("unknown field `pcr`"), "{e}");
}

#[test]
fn bad_hex_length_has_its_line() {
    let text = format!("[[allow]]\nname = \"a\"\npcrs = {{ 17 = \"abcd\", 18 = \"{P18}\" }}\n");
    let e = one_error("p.toml", &text);
    assert_eq!(e.line, Some(3));
    assert_eq!(e.column, Some(15));
    assert!(
        e.message.contains("PCR 17 value must be 64 hex characters"),
        "{e}"
    );
    assert!(e.message.contains("got 4"), "{e}");
    // 64 characters but not hex.
    let text = format!(
        "[[allow]]\nname = \"a\"\n[allow.pcrs]\n0 = \"{H0}\"\n17 = \"{}\"\n18 = \"{P18}\"\n",
        "zz".repeat(32)
    );
    let e = one_error("p.toml", &text);
    assert_eq!(e.line, Some(5));
}

#[test]
fn pcr_index_out_of_range_and_duplicates() {
    let e = one_error(
        "p.toml",
        "require_measured_launch = false\npcrs = [0,\n  24]\n[[allow]]\nname = \"a\"\npcrs = {}\n",
    );
    assert_eq!((e.line, e.column), (Some(3), Some(3)));
    assert!(e.message.contains("PCR index 24 is out of range"), "{e}");
    let errs = parse_pool(
        "p.toml",
        "require_measured_launch = false\npcrs = [1, -1, 1]\n[[allow]]\nname = \"a\"\npcrs = {}\n",
    )
    .unwrap_err();
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with("p.toml:2:12: PCR index -1 is out of range"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("p.toml:2:16: PCR 1 is listed twice"),
        "{msgs:?}"
    );
    // Empty selection.
    let e = parse_pool(
        "p.toml",
        "require_measured_launch = false\npcrs = []\n[[allow]]\nname = \"a\"\npcrs = {}\n",
    )
    .unwrap_err();
    assert!(e[0].message.contains("must not be empty"));
    assert_eq!(e[0].line, Some(2));
}

#[test]
fn duplicate_allow_name_has_its_line() {
    let e = one_error(
        "p.toml",
        "require_measured_launch = false\n[[allow]]\nname = \"gold\"\npcrs = {}\n\n[[allow]]\nname = \"gold\"\npcrs = {}\n",
    );
    assert_eq!(e.line, Some(7));
    assert!(
        e.message
            .contains("duplicate allow entry name 'gold' (first defined on line 3)"),
        "{e}"
    );
}

#[test]
fn allow_key_outside_selection_has_its_line() {
    let text = format!(
        "pcrs = [0, 17, 18]\n[[allow]]\nname = \"a\"\n[allow.pcrs]\n0 = \"{H0}\"\n19 = \"{H17}\"\n17 = \"{H17}\"\n18 = \"{P18}\"\n"
    );
    let e = one_error("p.toml", &text);
    assert_eq!((e.line, e.column), (Some(6), Some(1)));
    assert!(
        e.message
            .contains("PCR 19 is not in the pool's pcrs selection"),
        "{e}"
    );
    // Non-numeric key.
    let e = one_error(
        "p.toml",
        &format!("[[allow]]\nname = \"a\"\npcrs = {{ pcr17 = \"{H17}\", 17 = \"{H17}\", 18 = \"{P18}\" }}\n"),
    );
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("'pcr17' is not a PCR index"), "{e}");
    // Same PCR written twice ("17" and "017").
    let e = one_error(
        "p.toml",
        &format!("[[allow]]\nname = \"a\"\n[allow.pcrs]\n17 = \"{H17}\"\n017 = \"{H17}\"\n18 = \"{P18}\"\n"),
    );
    assert!(e.message.contains("listed twice"), "{e}");
}

#[test]
fn empty_or_missing_allow() {
    let e = one_error("p.toml", "pcrs = [0, 17, 18]\nallow = []\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("allow is empty"), "{e}");
    let e = one_error("p.toml", "pcrs = [0, 17, 18]\n");
    assert_eq!(e.line, None);
    assert!(e.message.contains("no [[allow]] entry"), "{e}");
    assert_eq!(e.to_string(), format!("p.toml: {}", e.message));
    // An entry without a pcrs table is not "allow anything".
    let e = one_error("p.toml", "[[allow]]\nname = \"a\"\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("pcrs = {}"), "{e}");
}

#[test]
fn toml_syntax_and_type_errors_have_their_line() {
    let e = one_error("p.toml", "pcrs = [0, 17, 18]\n\n[[allow]\nname = \"a\"\n");
    assert_eq!(e.line, Some(3));
    let e = one_error("p.toml", "require_measured_launch = \"yes\"\n");
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("expected a boolean"), "{e}");
    let e = one_error("p.toml", "pcrs = [0]\npcrs = [1]\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("duplicate key"), "{e}");
}

#[test]
fn measured_launch_needs_17_and_18() {
    let e = one_error(
        "p.toml",
        &format!("pcrs = [0, 17]\n[[allow]]\nname = \"a\"\npcrs = {{ 17 = \"{H17}\" }}\n"),
    );
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("missing: 18"), "{e}");
}

#[test]
fn bad_names_and_checks() {
    let errs = parse_pool(
        "bad pool!.toml",
        &format!("require_checks = [\"ok\", \"not ok\", \"ok\"]\n[[allow]]\nname = \"\"\npcrs = {{ 17 = \"{H17}\", 18 = \"{P18}\" }}\n"),
    )
    .unwrap_err();
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert!(
        msgs[0].starts_with("bad pool!.toml: pool name 'bad pool!'"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("bad pool!.toml:1:25: check id 'not ok'"),
        "{msgs:?}"
    );
    assert!(
        msgs[2].starts_with("bad pool!.toml:1:35: check 'ok' is listed twice"),
        "{msgs:?}"
    );
    assert!(
        msgs[3].starts_with("bad pool!.toml:3:8: allow entry name must not be empty"),
        "{msgs:?}"
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_col("aé\nxyz", 4), (2, 1));
    assert_eq!(line_col("aéb", 3), (1, 3));
    assert_eq!(line_col("aé", 2), (1, 2)); // inside the é: clamped to its start
    assert_eq!(line_col("", 10), (1, 1));
}

#[test]
fn policy_set_collects_errors_from_all_files_and_digests() {
    let files = vec![
        (
            "b.toml".to_string(),
            "pcrs = [0, 17, 18]\nbogus = 1\n".to_string(),
        ),
        ("a.toml".to_string(), good()),
        (
            "c.toml".to_string(),
            format!("[[allow]]\nname = \"x\"\npcrs = {{ 17 = \"ab\", 18 = \"{P18}\" }}\n"),
        ),
    ];
    let errs = parse_policy_set(&files).unwrap_err();
    let where_: Vec<(String, Option<usize>)> =
        errs.iter().map(|e| (e.file.clone(), e.line)).collect();
    assert_eq!(
        where_,
        vec![("b.toml".into(), Some(2)), ("c.toml".into(), Some(3))]
    );

    let ok_files = vec![
        (
            "z.toml".to_string(),
            "require_measured_launch = false\npcrs = [0, 23]\n[[allow]]\nname = \"a\"\npcrs = {}\n"
                .to_string(),
        ),
        ("a.toml".to_string(), good()),
    ];
    let set = parse_policy_set(&ok_files).unwrap();
    assert_eq!(set.pools.keys().collect::<Vec<_>>(), vec!["a", "z"]);
    assert_eq!(
        set.union_pcrs(),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19, 23]
    );
    assert_eq!(set.digest_hex().len(), 64);
    // Order of the input does not matter; content does.
    let mut rev = ok_files.clone();
    rev.reverse();
    assert_eq!(parse_policy_set(&rev).unwrap().digest, set.digest);
    let mut changed = ok_files.clone();
    changed[0].1.push_str("# comment\n");
    assert_ne!(parse_policy_set(&changed).unwrap().digest, set.digest);
    // Moving a byte between name and content changes the digest.
    assert_ne!(
        policy_digest(&[("x.toml".into(), "".into())]),
        policy_digest(&[("x.tom".into(), "l".into())])
    );
    // Independent check of the digest definition.
    let mut h = Sha256::new();
    for (name, text) in [&ok_files[1], &ok_files[0]] {
        h.update((name.len() as u32).to_be_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    }
    assert_eq!(set.digest, <[u8; 32]>::from(h.finalize()));
    // No pools.
    let empty = parse_policy_set(&[]).unwrap();
    assert_eq!(empty.union_pcrs(), DEFAULT_PCRS.to_vec());
    assert_eq!(
        empty.digest_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // Same stem twice.
    let errs = parse_policy_set(&[("gold.toml".into(), good()), ("x/gold.toml".into(), good())])
        .unwrap_err();
    assert!(
        errs[0].message.contains("also defined by gold.toml"),
        "{errs:?}"
    );
}

// ---- evaluate ----

fn launched_pcrs() -> BTreeMap<u8, [u8; 32]> {
    let mut m: BTreeMap<u8, [u8; 32]> = DEFAULT_PCRS.iter().map(|&i| (i, [i; 32])).collect();
    m.insert(0, {
        let mut v = [0u8; 32];
        v[31] = 1;
        v
    });
    m.insert(17, drtm_hash_start(b"hello"));
    m
}

fn checks(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn codes_of(r: &[Reason]) -> Vec<&str> {
    r.iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn trusted_host_has_no_reasons() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let pcrs = launched_pcrs();
    let st = checks(&[
        ("mac.enforcing_any", "pass"),
        ("kvm.present", "pass"),
        ("other", "fail"),
    ]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert!(r.is_empty(), "{r:?}");
}

#[test]
fn second_allow_entry_can_match() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let mut pcrs = launched_pcrs();
    pcrs.insert(17, p.allow[1].pcrs[&17]);
    pcrs.insert(0, [9; 32]); // unconstrained by entry 2
    let st = checks(&[("mac.enforcing_any", "pass"), ("kvm.present", "pass")]);
    assert!(evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        }
    )
    .is_empty());
}

#[test]
fn pcr_not_allowed_names_pcr_17_against_the_closest_build() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let mut pcrs = launched_pcrs();
    pcrs.insert(17, [0xab; 32]);
    let st = checks(&[("mac.enforcing_any", "pass"), ("kvm.present", "pass")]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(codes_of(&r), vec![codes::PCR_NOT_ALLOWED]);
    // Both entries have one mismatch (PCR 17): the first one wins the tie.
    assert_eq!(
        r[0].message,
        format!(
            "PCR 17 is {}; build 'golden-2026-11' expects {H17} (closest of 2 allowed builds)",
            "ab".repeat(32)
        )
    );
    // PCR 0 and 17 wrong: entry 2 (only 17) is closer.
    pcrs.insert(0, [0xcd; 32]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(codes_of(&r), vec![codes::PCR_NOT_ALLOWED]);
    assert!(
        r[0].message.contains("build 'golden-2026-12' expects 1234"),
        "{r:?}"
    );
    // Single entry, two mismatches: one reason per PCR.
    let single = PoolPolicy {
        allow: vec![p.allow[0].clone()],
        ..p.clone()
    };
    let r = evaluate(
        &single,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(
        codes_of(&r),
        vec![codes::PCR_NOT_ALLOWED, codes::PCR_NOT_ALLOWED]
    );
    assert!(r[0].message.starts_with("PCR 0 is cdcd"), "{r:?}");
    assert!(r[1].message.starts_with("PCR 17 is abab"), "{r:?}");
    assert!(!r[1].message.contains("closest"), "{r:?}");
}

#[test]
fn launch_not_measured() {
    // Built by hand: the parser refuses an open entry under measured launch.
    let p = PoolPolicy {
        name: "gold".into(),
        require_measured_launch: true,
        pcrs: DEFAULT_PCRS.to_vec(),
        require_checks: vec![],
        check_params: None,
        allow: vec![AllowEntry {
            name: "any".into(),
            pcrs: BTreeMap::new(),
        }],
        events: None,
    };
    let mut pcrs = launched_pcrs();
    pcrs.insert(17, [0xff; 32]);
    pcrs.insert(18, [0xff; 32]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(
        codes_of(&r),
        vec![codes::LAUNCH_NOT_MEASURED, codes::LAUNCH_NOT_MEASURED]
    );
    assert_eq!(
        r[0].message,
        "no TXT measured launch: PCR 17 is the reset value ff…ff"
    );
    assert!(r[1].message.contains("PCR 18"));
    // Not required: no reason.
    let relaxed = PoolPolicy {
        require_measured_launch: false,
        ..p.clone()
    };
    assert!(evaluate(
        &relaxed,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        }
    )
    .is_empty());
    // Missing PCR 17: missing and not measured.
    pcrs.remove(&17);
    pcrs.insert(18, [0x12; 32]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(
        codes_of(&r),
        vec![codes::PCR_MISSING, codes::LAUNCH_NOT_MEASURED]
    );
    assert!(r[0].message.contains("PCR 17"));
    assert!(r[1].message.contains("PCR 17 was not quoted"));
}

#[test]
fn required_checks() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let pcrs = launched_pcrs();
    let st = checks(&[("mac.enforcing_any", "fail")]);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(codes_of(&r), vec![codes::CHECK_REQUIRED_FAILED; 2]);
    assert_eq!(
        r[0].message,
        "required check 'mac.enforcing_any' is fail (must be pass)"
    );
    assert_eq!(
        r[1].message,
        "required check 'kvm.present' is missing from the hardening report (must be pass)"
    );
    for status in ["unknown", "error", "notchecked", "PASS", ""] {
        let st = checks(&[("mac.enforcing_any", status), ("kvm.present", "pass")]);
        let r = evaluate(
            &p,
            &HostFacts {
                pcrs: &pcrs,
                check_status: Some(&st),
                check_reason: None,
                event_log: None,
                txt_log: None,
            },
        );
        assert_eq!(codes_of(&r), vec![codes::CHECK_REQUIRED_FAILED], "{status}");
    }
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(r.len(), 2);
    assert!(r[0].message.contains("no hardening report"));
}

#[test]
fn every_reason_at_once() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let mut pcrs = launched_pcrs();
    pcrs.insert(17, [0xff; 32]);
    pcrs.remove(&19);
    let r = evaluate(
        &p,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(
        codes_of(&r),
        vec![
            codes::PCR_MISSING,
            codes::PCR_NOT_ALLOWED,
            codes::LAUNCH_NOT_MEASURED,
            codes::CHECK_REQUIRED_FAILED,
            codes::CHECK_REQUIRED_FAILED
        ]
    );
    assert!(r[0].message.contains("PCR 19"));
    assert!(r[1].message.contains("PCR 17 is ffff"));
}

#[test]
fn hand_built_policies_fail_closed() {
    let pcrs = launched_pcrs();
    let none = PoolPolicy {
        name: "x".into(),
        require_measured_launch: false,
        pcrs: vec![0],
        require_checks: vec![],
        check_params: None,
        allow: vec![],
        events: None,
    };
    let r = evaluate(
        &none,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(codes_of(&r), vec![codes::PCR_NOT_ALLOWED]);
    // Entry constrains a PCR outside the selection that is not in the facts.
    let outside = PoolPolicy {
        allow: vec![AllowEntry {
            name: "e".into(),
            pcrs: [(9u8, [1u8; 32])].into_iter().collect(),
        }],
        ..none
    };
    let r = evaluate(
        &outside,
        &HostFacts {
            pcrs: &pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(codes_of(&r), vec![codes::PCR_NOT_ALLOWED]);
    assert!(r[0].message.contains("PCR 9 was not quoted"));
}

#[test]
fn parser_never_panics_on_odd_input() {
    let samples = [
        "",
        "\u{0}",
        "[[allow]]",
        "allow = 5",
        "pcrs = 5",
        "pcrs = [1.5]",
        "pcrs = [99999999999999]",
        "[allow]\nname=\"a\"",
        "[[allow]]\nname = \"a\"\npcrs = { 17 = 1 }",
        "[[allow]]\nname = \"é\"\npcrs = { \"\" = \"\" }",
        "require_checks = [1]",
        "\n\n\n\u{feff}pcrs = [",
    ];
    for s in samples {
        let _ = parse_pool("x.toml", s);
        let _ = parse_pool("", s);
        let _ = parse_pool(".toml", s);
    }
    // Every prefix of a good file.
    let g = good();
    for (i, _) in g.char_indices() {
        let _ = parse_pool("g.toml", &g[..i]);
    }
}

#[test]
fn check_params_are_kept_canonically_and_pools_must_agree() {
    let a = "require_measured_launch = false\nrequire_checks = [\"nova.instances_space\"]\n[check_params]\ninstances_free_pass_percent = 20.0\nmac = \"apparmor\"\n[[allow]]\nname = \"any\"\npcrs = {}\n";
    let p = parse_pool("a.toml", a).expect("parses");
    assert_eq!(
        p.check_params.as_deref(),
        Some(r#"{"instances_free_pass_percent":20.0,"mac":"apparmor"}"#)
    );
    // Same parameters written in another order: same canonical form, accepted.
    let b = a.replace(
        "instances_free_pass_percent = 20.0\nmac = \"apparmor\"",
        "mac = \"apparmor\"\ninstances_free_pass_percent = 20.0",
    );
    let set =
        parse_policy_set(&[("a.toml".into(), a.to_string()), ("b.toml".into(), b)]).expect("agree");
    assert_eq!(set.check_params(), p.check_params.as_deref());
    // A pool without parameters is fine; one with other parameters is refused.
    let c = "require_measured_launch = false\n[[allow]]\nname = \"any\"\npcrs = {}\n";
    let d = a.replace("20.0", "30.0");
    assert!(parse_policy_set(&[
        ("a.toml".into(), a.to_string()),
        ("c.toml".into(), c.to_string())
    ])
    .is_ok());
    let errors = parse_policy_set(&[("a.toml".into(), a.to_string()), ("d.toml".into(), d)])
        .expect_err("disagree");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "d.toml");
    assert!(
        errors[0].message.contains("differ from those of pool 'a'"),
        "{}",
        errors[0]
    );
    // Not a table: an error with its line.
    let e = parse_pool(
        "e.toml",
        "require_measured_launch = false\ncheck_params = 3\n[[allow]]\nname = \"x\"\npcrs = {}\n",
    )
    .expect_err("not a table");
    assert_eq!(e[0].line, Some(2), "{:?}", e);
}

#[test]
fn a_failed_required_check_quotes_the_report_reason() {
    let policy = parse_pool(
        "p.toml",
        "require_measured_launch = false\nrequire_checks = [\"mac.enforcing_any\"]\n[[allow]]\nname = \"any\"\npcrs = {}\n",
    )
    .expect("parses");
    let pcrs: BTreeMap<u8, [u8; 32]> = DEFAULT_PCRS.iter().map(|i| (*i, [0u8; 32])).collect();
    let status: BTreeMap<String, String> =
        [("mac.enforcing_any".to_string(), "fail".to_string())].into();
    let why: BTreeMap<String, String> = [(
        "mac.enforcing_any".to_string(),
        "AppArmor is disabled and SELinux absent".to_string(),
    )]
    .into();
    let r = evaluate(
        &policy,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&status),
            check_reason: Some(&why),
            event_log: None,
            txt_log: None,
        },
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, codes::CHECK_REQUIRED_FAILED);
    assert_eq!(
        r[0].message,
        "required check 'mac.enforcing_any' is fail (must be pass): AppArmor is disabled and SELinux absent"
    );
}

// ---- measured launch: allow entries must pin PCR 17 and 18 ----

#[test]
fn the_packaged_example_policy_parses() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/policy-example.toml"
    ));
    let p = parse_pool("default.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(p.require_measured_launch);
    assert_eq!(p.allow[0].pcrs[&17], drtm_hash_start(b"hello"));
}

const H18: &str = "0323b36d6f71bd2b52c8b0e3b2b1e1c85e14a51c2d6f2d60b9e3f3c2a47e50d8";

#[test]
fn attack_policy_unpinned_pcr_18_under_measured_launch() {
    // Any MLE (or none: PCR 18 = 0 after a bare hash start) would match.
    let text = format!(
        "require_measured_launch = true\npcrs = [0, 17, 18]\n\n[[allow]]\nname = \"sinit-only\"\npcrs = {{ 17 = \"{H17}\" }}\n"
    );
    let e = one_error("gold.toml", &text);
    assert_eq!((e.line, e.column), (Some(6), Some(8)));
    assert_eq!(
        e.to_string(),
        "gold.toml:6:8: allow entry 'sinit-only' does not pin PCR 18: with require_measured_launch (the default) every entry must pin PCR 17 (SINIT) and PCR 18 (MLE), or it accepts any SINIT and MLE; pin them or set require_measured_launch = false"
    );
}

#[test]
fn attack_policy_unpinned_pcr_17_under_measured_launch() {
    // [allow.pcrs] table form: the error names the entry and its table.
    let text = format!(
        "pcrs = [0, 17, 18]\n[[allow]]\nname = \"mle-only\"\n[allow.pcrs]\n0 = \"{H0}\"\n18 = \"{H18}\"\n"
    );
    let e = one_error("gold.toml", &text);
    assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
    assert!(
        e.message
            .starts_with("allow entry 'mle-only' does not pin PCR 17: "),
        "{e}"
    );
}

#[test]
fn attack_policy_accept_anything_under_measured_launch() {
    // `pcrs = {}` with the default require_measured_launch = true.
    let e = one_error("any.toml", "[[allow]]\nname = \"any\"\npcrs = {}\n");
    assert_eq!((e.line, e.column), (Some(3), Some(8)));
    assert!(
        e.message
            .starts_with("allow entry 'any' does not pin PCR 17 and 18: "),
        "{e}"
    );
    // Each entry is judged on its own: the good one passes, the open one is named.
    let text = format!(
        "[[allow]]\nname = \"good\"\npcrs = {{ 17 = \"{H17}\", 18 = \"{H18}\" }}\n\n[[allow]]\nname = \"open\"\npcrs = {{ 0 = \"{H0}\" }}\n"
    );
    let e = one_error("two.toml", &text);
    assert_eq!(e.line, Some(7));
    assert!(
        e.message
            .starts_with("allow entry 'open' does not pin PCR 17 and 18"),
        "{e}"
    );
    // Without measured launch an open entry is fine.
    parse_pool(
        "srtm.toml",
        "require_measured_launch = false\n[[allow]]\nname = \"any\"\npcrs = {}\n",
    )
    .unwrap();
}

#[test]
fn attack_policy_pins_pcr_18_to_a_not_launched_value() {
    for (value, what) in [
        ("00".repeat(32), "all zeros 00…00"),
        ("ff".repeat(32), "the reset value ff…ff"),
        ("FF".repeat(32), "the reset value ff…ff"),
    ] {
        let text = format!(
            "[[allow]]\nname = \"bare-hash-start\"\n[allow.pcrs]\n17 = \"{H17}\"\n18 = \"{value}\"\n"
        );
        let e = one_error("gold.toml", &text);
        assert_eq!((e.line, e.column), (Some(5), Some(6)), "{e}");
        assert_eq!(
            e.message,
            format!("allow entry 'bare-hash-start' pins PCR 18 to {what}, which shows no measured launch: with require_measured_launch no host can match it; pin the value of the launched SINIT/MLE")
        );
    }
    // PCR 17 too; without measured launch such a value is allowed.
    let text = format!(
        "[[allow]]\nname = \"x\"\npcrs = {{ 17 = \"{}\", 18 = \"{H18}\" }}\n",
        "ff".repeat(32)
    );
    assert!(one_error("g.toml", &text)
        .message
        .contains("pins PCR 17 to the reset value"));
    parse_pool(
        "g.toml",
        &format!("require_measured_launch = false\n{text}"),
    )
    .unwrap();
}

#[test]
fn attack_launch_pcr_18_all_zero_is_not_measured() {
    // A host that ran the locality-4 hash start but extended no MLE:
    // PCR 17 is a SINIT value, PCR 18 stays all zeros.
    let mut pcrs = launched_pcrs();
    pcrs.insert(18, [0; 32]);
    // A policy that bypasses the load-time rule (built by hand).
    let open = PoolPolicy {
        name: "open".into(),
        require_measured_launch: true,
        pcrs: DEFAULT_PCRS.to_vec(),
        require_checks: vec![],
        check_params: None,
        allow: vec![AllowEntry {
            name: "any".into(),
            pcrs: BTreeMap::new(),
        }],
        events: None,
    };
    fn facts(pcrs: &BTreeMap<u8, [u8; 32]>) -> HostFacts<'_> {
        HostFacts {
            pcrs,
            check_status: None,
            check_reason: None,
            event_log: None,
            txt_log: None,
        }
    }
    let r = evaluate(&open, &facts(&pcrs));
    assert_eq!(codes_of(&r), vec![codes::LAUNCH_NOT_MEASURED]);
    assert_eq!(
        r[0].message,
        "no TXT measured launch: PCR 18 is all zeros 00…00"
    );
    // PCR 17 all zeros too: both named.
    pcrs.insert(17, [0; 32]);
    let r = evaluate(&open, &facts(&pcrs));
    assert_eq!(
        codes_of(&r),
        vec![codes::LAUNCH_NOT_MEASURED, codes::LAUNCH_NOT_MEASURED]
    );
    assert!(r[0].message.contains("PCR 17 is all zeros"), "{r:?}");
    // Not required: no reason.
    let relaxed = PoolPolicy {
        require_measured_launch: false,
        ..open
    };
    assert!(evaluate(&relaxed, &facts(&pcrs)).is_empty());
}

// ---- event logs: every pool fails closed on a log that contradicts the quote ----

fn mismatch(pcr: u8) -> crate::eventlog::measured::PcrMismatch {
    crate::eventlog::measured::PcrMismatch {
        pcr,
        event: Some(12),
        event_type: Some(crate::eventlog::EventType::EV_EFI_VARIABLE_BOOT),
        digest: Some("ab".repeat(32)),
        message: format!("PCR {pcr} (sha256): no prefix of the log replays to the quoted value; the log cannot be trusted up to event 12"),
    }
}

fn replayed(mismatches: Vec<crate::eventlog::measured::PcrMismatch>) -> LogFacts {
    LogFacts::Replayed(crate::eventlog::measured::MeasuredBoot {
        log_sha256: "00".repeat(32),
        replayed: vec![0, 2, 3, 4, 5, 6, 7],
        mismatches,
        events: vec![],
    })
}

use crate::eventlog::measured::LogFacts;

#[test]
fn a_log_that_contradicts_the_quote_fails_a_pool_of_values() {
    let p = parse_pool("gold.toml", &good()).unwrap();
    let pcrs = launched_pcrs();
    let st = checks(&[("mac.enforcing_any", "pass"), ("kvm.present", "pass")]);
    let judge = |event_log: Option<&LogFacts>, txt_log: Option<&LogFacts>| {
        evaluate(
            &p,
            &HostFacts {
                pcrs: &pcrs,
                check_status: Some(&st),
                check_reason: None,
                event_log,
                txt_log,
            },
        )
    };
    // The values match; a log that replays, or none at all, changes nothing.
    assert!(judge(None, None).is_empty());
    assert!(judge(Some(&replayed(vec![])), None).is_empty());
    let unavailable = LogFacts::Unavailable {
        reason: "no securityfs".into(),
    };
    assert!(judge(Some(&unavailable), Some(&unavailable)).is_empty());
    // A mismatch on PCR 1 (selected) fails it, naming PCR, event and digest.
    let r = judge(Some(&replayed(vec![mismatch(1)])), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_REPLAY_MISMATCH], "{r:?}");
    assert!(
        r[0].message.starts_with(&format!(
            "PCR 1 does not replay from the event log: event 12 (EV_EFI_VARIABLE_BOOT, sha256 {})",
            "ab".repeat(32)
        )),
        "{}",
        r[0].message
    );
    // One on PCR 9 (not selected) does not.
    assert!(judge(Some(&replayed(vec![mismatch(9)])), None).is_empty());
    // An invalid UEFI log fails a pool selecting PCR 0-7; an invalid TXT
    // log fails one selecting PCR 17-19.
    let invalid = LogFacts::Invalid {
        log_sha256: "00".repeat(32),
        reason: "event 3 (record at offset 80): truncated".into(),
    };
    let r = judge(Some(&invalid), None);
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_INVALID]);
    assert!(
        r[0].message
            .starts_with("the event log is invalid: event 3 (record at offset 80): truncated"),
        "{}",
        r[0].message
    );
    let r = judge(None, Some(&invalid));
    assert_eq!(codes_of(&r), vec![codes::EVENTLOG_INVALID]);
    assert!(
        r[0].message.starts_with("the TXT event log is invalid"),
        "{r:?}"
    );
    // A pool of PCRs 17 and 18 only does not care about the UEFI log.
    let drtm_only = PoolPolicy {
        pcrs: vec![17, 18],
        ..p.clone()
    };
    let r = evaluate(
        &drtm_only,
        &HostFacts {
            pcrs: &pcrs,
            check_status: Some(&st),
            check_reason: None,
            event_log: Some(&invalid),
            txt_log: None,
        },
    );
    assert!(r.is_empty(), "{r:?}");
}
