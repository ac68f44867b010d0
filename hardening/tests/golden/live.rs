//! Live checks of the machine running the tests. Only state classes are asserted,
//! never machine-specific values (catalogue §3.1 "real-kernel tests").

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use trustpool_hardening::{
    check_catalogue, open_host, run_checks, CheckParams, Report, Role, Status, ViewKind,
};

use super::res;

fn live(role: Role, params: &CheckParams) -> Report {
    let host = open_host(Path::new("/")).expect("open /");
    if !Path::new("/trustpool-fixture.toml").exists() {
        assert_eq!(host.kind(), ViewKind::Live);
    }
    let t = std::time::Instant::now();
    let r = run_checks(host.as_ref(), role, params);
    eprintln!("live run_checks ({role}): {:?}", t.elapsed());
    let catalogue: BTreeMap<String, Vec<Status>> = check_catalogue(params)
        .into_iter()
        .map(|c| (c.id, c.states))
        .collect();
    for x in &r.results {
        assert!(
            catalogue[&x.id].contains(&x.status),
            "{}: undeclared status {} ({})",
            x.id,
            x.status,
            x.reason
        );
        if x.status == Status::Error {
            for benign in ["ENOENT", "EACCES", "EPERM"] {
                assert!(
                    !x.reason.contains(benign),
                    "{}: error for a {benign}-only reason: {}",
                    x.id,
                    x.reason
                );
            }
        }
    }
    assert_eq!(Report::from_slice(&r.canonical_bytes()).as_ref(), Ok(&r));
    r
}

fn trusted() -> CheckParams {
    CheckParams {
        trust_container_view: true,
        ..CheckParams::default()
    }
}

#[test]
fn live_default_view() {
    for role in [Role::Other, Role::Compute] {
        let r = live(role, &CheckParams::default());
        let marker = Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists();
        if marker {
            assert_eq!(r.container(), Some(true));
            for x in r.results.iter().filter(|x| !x.id.starts_with("env.")) {
                assert_eq!(x.status, Status::Unknown, "{} in a container view", x.id);
            }
        }
        assert_eq!(res(&r, "env.container").status, Status::Informational);
    }
}

#[test]
fn live_kvm_matches_dev_kvm() {
    let r = live(Role::Other, &trusted());
    let dev = res(&r, "kvm.device");
    match std::fs::metadata("/dev/kvm") {
        Ok(m) if m.file_type().is_char_device() && m.rdev() == ((10u64 << 8) | 232) => {
            let want = if m.mode() & 0o006 != 0 {
                Status::Fail
            } else {
                Status::Pass
            };
            assert_eq!(dev.status, want, "{}", dev.reason);
            let api = res(&r, "kvm.api");
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
            {
                Ok(_) => assert_eq!(api.status, Status::Pass, "{}", api.reason),
                Err(_) => assert!(
                    matches!(api.status, Status::Unknown | Status::Fail),
                    "{}",
                    api.reason
                ),
            }
        }
        Ok(_) => assert_eq!(dev.status, Status::Fail),
        Err(_) => assert!(
            matches!(
                dev.status,
                Status::Fail | Status::Unknown | Status::NotApplicable
            ),
            "{}",
            dev.reason
        ),
    }
}

#[test]
fn live_sysctls_match_proc_sys() {
    for params in [CheckParams::default(), trusted()] {
        let r = live(Role::Other, &params);
        let mut compared = 0;
        for x in r.results.iter().filter(|x| x.id.starts_with("sysctl.")) {
            let key = &x.id["sysctl.".len()..];
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    let ev = x.evidence.iter().find(|e| e.path == path);
                    if key.starts_with("net.bridge.") && ev.is_none() {
                        continue; // not required here: the value is not read
                    }
                    let ev = ev.unwrap_or_else(|| {
                        panic!("{}: no evidence for {path}: {:?}", x.id, x.evidence)
                    });
                    assert_eq!(ev.value, v.trim(), "{}", x.id);
                    compared += 1;
                    if params.trust_container_view {
                        assert!(
                            matches!(
                                x.status,
                                Status::Pass
                                    | Status::Fail
                                    | Status::Informational
                                    | Status::NotApplicable
                            ),
                            "{}: {}",
                            x.id,
                            x.reason
                        );
                    }
                }
                Err(_) => assert!(
                    matches!(
                        x.status,
                        Status::Unknown | Status::NotApplicable | Status::Fail
                    ),
                    "{}: {} ({})",
                    x.id,
                    x.status,
                    x.reason
                ),
            }
        }
        assert!(compared > 5, "only {compared} sysctls compared");
        if params.trust_container_view {
            if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space") {
                let want = if v.trim() == "2" {
                    Status::Pass
                } else {
                    Status::Fail
                };
                assert_eq!(res(&r, "sysctl.kernel.randomize_va_space").status, want);
            }
            if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict") {
                let want = if v.trim().parse::<i64>().unwrap_or(0) >= 1 {
                    Status::Pass
                } else {
                    Status::Fail
                };
                assert_eq!(res(&r, "sysctl.kernel.kptr_restrict").status, want);
            }
        }
    }
}

#[test]
fn live_ksm_and_cgroup_match_the_kernel() {
    let r = live(Role::Other, &trusted());
    let ksm = res(&r, "mem.ksm_off").status;
    match std::fs::read_to_string("/sys/kernel/mm/ksm/run").map(|s| s.trim().to_owned()) {
        Ok(v) if v == "0" || v == "2" => assert_eq!(ksm, Status::Pass),
        Ok(v) if v == "1" => assert_eq!(ksm, Status::Fail),
        Ok(_) => assert_eq!(ksm, Status::Error),
        Err(_) => assert!(matches!(ksm, Status::NotApplicable | Status::Unknown)),
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let top = mi.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        if f.get(4) == Some(&"/sys/fs/cgroup") {
            f.get(sep + 1).map(|s| (*s).to_owned())
        } else {
            None
        }
    });
    let mode = res(&r, "cgroup.mode");
    match top.as_deref() {
        Some("cgroup2") => assert_eq!(mode.status, Status::Pass),
        Some("tmpfs") | Some("cgroup") => assert!(
            matches!(mode.status, Status::Informational | Status::Error),
            "{}",
            mode.reason
        ),
        _ => assert!(matches!(mode.status, Status::Unknown | Status::Error)),
    }
    // The lab's CI VM (catalogue §3.2) has no IOMMU hardware and no TPM; wherever
    // these run, the states must be from the declared set, which `live` checked.
    assert!(!res(&r, "iommu.active").reason.is_empty());
}
