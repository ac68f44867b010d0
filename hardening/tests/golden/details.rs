//! Detailed assertions on single fixtures: evidence, items, report helpers.

use trustpool_hardening::fixture::{self, FixtureBuilder, GUEST_UUIDS};
use trustpool_hardening::{
    check_catalogue, open_host, run_checks, CheckParams, Report, Role, Severity, Status, ViewKind,
    MAX_REPORT_BYTES,
};

use super::*;

#[test]
fn good_host_admits_and_renders() {
    let r = run(&good(), Role::Compute);
    assert_eq!(r.exit_code(), 0, "{}", r.render_table());
    for x in r.results.iter().filter(|x| x.severity == Severity::High) {
        assert!(
            matches!(x.status, Status::Pass | Status::NotApplicable),
            "{}: {} {}",
            x.id,
            x.status,
            x.reason
        );
    }
    assert_eq!(r.container(), Some(false));
    let t = r.render_table();
    for fam in [
        "== env ==",
        "== mac/svirt ==",
        "== kvm ==",
        "== iommu ==",
        "== cgroup ==",
        "== boot/tpm/txt ==",
        "== nova/libvirt ==",
        "== sysctl ==",
        "== summary ==",
    ] {
        assert!(t.contains(fam), "missing {fam} in\n{t}");
    }
    // JSON shape.
    let v: serde_json::Value = serde_json::from_slice(&r.canonical_bytes()).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["results", "role", "root", "summary"]);
    let first = v["results"][0].as_object().expect("result");
    let mut rk: Vec<&str> = first.keys().map(String::as_str).collect();
    rk.sort_unstable();
    assert_eq!(
        rk,
        [
            "evidence",
            "id",
            "items",
            "reason",
            "refs",
            "remediation",
            "severity",
            "status",
            "title"
        ]
    );
    assert_eq!(v["summary"].as_object().expect("summary").len(), 7);
    let text = String::from_utf8(r.canonical_bytes()).expect("utf8");
    assert!(
        text.starts_with("{\"role\":\"compute\",\"root\":"),
        "{}",
        &text[..60]
    );
}

#[test]
fn apparmor_disabled_preset_blocks_admission() {
    let dir = tempdir();
    fixture::apparmor_disabled_host(dir.path()).expect("build");
    let host = open_host(dir.path()).expect("open");
    assert_eq!(host.kind(), ViewKind::Fixture);
    let r = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
    assert_eq!(r.exit_code(), 1);
    let failed: Vec<String> = r
        .failed_required(&["mac.enforcing_any", "svirt.guests_confined", "kvm.device"])
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(failed, ["mac.enforcing_any", "svirt.guests_confined"]);
    let guests = res(&r, "svirt.guests_confined");
    assert_eq!(guests.items.len(), 2);
    let dir2 = tempdir();
    fixture::good_compute_host(dir2.path()).expect("build");
    let good = run_checks(
        open_host(dir2.path()).expect("open").as_ref(),
        Role::Compute,
        &CheckParams::default(),
    );
    let changed = Report::changed_ids(&good.status_map(), &r.status_map());
    for id in [
        "apparmor.enabled",
        "mac.enforcing_any",
        "svirt.guests_confined",
        "svirt.driver_configured",
        "selinux.enforcing",
    ] {
        assert!(changed.contains(&id.to_owned()), "{id} not in {changed:?}");
    }
    assert!(!changed.contains(&"kvm.device".to_owned()));
}

#[test]
fn container_markers_downgrade_every_host_check() {
    let r = run(&good().file("/.dockerenv", ""), Role::Compute);
    assert_eq!(r.container(), Some(true));
    for x in &r.results {
        if x.id.starts_with("env.") {
            assert_eq!(x.status, Status::Informational, "{}", x.id);
        } else {
            assert_eq!(x.status, Status::Unknown, "{}: {}", x.id, x.reason);
            assert!(x.reason.contains("container markers"), "{}", x.reason);
        }
    }
    // Evidence is kept so the server can re-evaluate.
    assert!(res(&r, "kvm.device")
        .evidence
        .iter()
        .any(|e| e.path == "/dev/kvm" && e.value.contains("10:232")));
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn complain_guest_is_named_with_evidence() {
    let label = format!("libvirt-{} (complain)", GUEST_UUIDS[1]);
    let r = run(&second_guest_label(good(), &label), Role::Compute);
    let g = res(&r, "svirt.guests_confined");
    assert_eq!(g.status, Status::Fail);
    assert_eq!(g.items.len(), 1, "{:?}", g.items);
    assert!(
        g.items[0].starts_with("instance-00000002 (pid 4243)"),
        "{:?}",
        g.items
    );
    assert!(
        g.reason.starts_with("1 of 2 guests not confined"),
        "{}",
        g.reason
    );
    assert!(g
        .evidence
        .iter()
        .any(|e| e.path == "/proc/4243/attr/apparmor/current" && e.value == label));
    assert!(g
        .evidence
        .iter()
        .any(|e| e.path == "/proc" && e.value == "guests=2"));
    assert!(g
        .evidence
        .iter()
        .any(|e| e.path == "/proc/4243/cmdline" && e.value.contains(GUEST_UUIDS[1])));
    assert!(!g.remediation.is_empty());
    assert!(g.refs.iter().any(|r| r.contains("S2")));
}

#[test]
fn evidence_of_device_and_sysctl() {
    let r = run(&good(), Role::Compute);
    let k = res(&r, "kvm.device");
    assert_eq!(k.evidence[0].path, "/dev/kvm");
    assert_eq!(
        k.evidence[0].value,
        "crw-rw---- 0(root):108(kvm) mode 0660 10:232"
    );
    let s = res(&r, "sysctl.kernel.randomize_va_space");
    assert_eq!(s.evidence[0].path, "/proc/sys/kernel/randomize_va_space");
    assert_eq!(s.evidence[0].value, "2");
    let sb = res(&r, "boot.secure_boot");
    assert!(
        sb.evidence.iter().any(|e| e.value == "hex:0600000001"),
        "{:?}",
        sb.evidence
    );
}

#[test]
fn reports_are_deterministic() {
    let dir = tempdir();
    good().build(dir.path()).expect("build");
    let host = open_host(dir.path()).expect("open");
    let a = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
    let b = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn host_mount_view_reports_agent_container_state() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
    let host = open_host(dir.path()).expect("open");
    assert_eq!(host.kind(), ViewKind::HostMount);
    let r = run_checks(host.as_ref(), Role::Other, &CheckParams::default());
    let agent_in_container = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists();
    if agent_in_container {
        assert_eq!(r.container(), Some(true));
        assert!(res(&r, "env.container")
            .items
            .iter()
            .any(|i| i.starts_with("agent root:")));
    }
    // Markers at the agent's root do not downgrade a host mount.
    assert!(!res(&r, "kvm.device").reason.contains("container markers"));
}

#[test]
fn real_owners_when_running_as_root() {
    // Without [[owners]] overrides the tree's own owners and modes are used.
    let b = good()
        .remove("/etc/nova")
        .file("/etc/nova/nova.conf", "[DEFAULT]\n")
        .file("/etc/nova/api-paste.ini", "[x]\n");
    let dir = tempdir();
    b.build(dir.path()).expect("build");
    let conf = dir.path().join("etc/nova/nova.conf");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(
        dir.path().join("etc/nova"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let host = open_host(dir.path()).expect("open");
    let r = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
    assert_eq!(res(&r, "nova.config_mode").status, Status::Fail);
    assert!(res(&r, "nova.config_mode")
        .items
        .iter()
        .any(|i| i.contains("nova.conf mode 0644")));
    if nix::unistd::geteuid().is_root() {
        for p in ["etc/nova", "etc/nova/nova.conf", "etc/nova/api-paste.ini"] {
            std::os::unix::fs::chown(dir.path().join(p), Some(0), Some(fixture::NOVA_ID))
                .expect("chown");
        }
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::set_permissions(
            dir.path().join("etc/nova/api-paste.ini"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        let r = run_checks(host.as_ref(), Role::Compute, &CheckParams::default());
        assert_eq!(
            res(&r, "nova.config_ownership").status,
            Status::Pass,
            "{}",
            res(&r, "nova.config_ownership").reason
        );
        assert_eq!(res(&r, "nova.config_mode").status, Status::Pass);
    }
}

#[test]
fn params_from_toml() {
    let p = CheckParams::from_toml_str(
        "mac = \"apparmor\"\napparmor_complain_allowed = [\"/usr/sbin/cups*\"]\ninstances_free_pass_percent = 20.0\ninstances_free_fail_percent = 10.0\npci_passthrough = true\n[sysctl]\n\"kernel.kptr_restrict\" = \">=2\"\n",
    )
    .expect("valid");
    assert!(p.pci_passthrough);
    let cat = check_catalogue(&p);
    assert_eq!(
        cat.iter()
            .find(|c| c.id == "iommu.active")
            .map(|c| c.severity),
        Some(Severity::High)
    );
    assert!(CheckParams::from_toml_str("unknown_knob = 1\n").is_err());
    let r = run_with(&good(), Role::Compute, &p);
    assert_eq!(res(&r, "sysctl.kernel.kptr_restrict").status, Status::Fail);
    assert_eq!(res(&r, "nova.instances_space").status, Status::Pass);
}

#[test]
fn catalogue_has_the_required_ids() {
    let ids: Vec<String> = check_catalogue(&CheckParams::default())
        .into_iter()
        .map(|c| c.id)
        .collect();
    for id in [
        "env.container",
        "apparmor.enabled",
        "apparmor.profiles_enforcing",
        "selinux.enforcing",
        "mac.enforcing_any",
        "svirt.driver_configured",
        "svirt.guests_confined",
        "libvirt.qemu_nonroot",
        "kvm.device",
        "kvm.api",
        "mem.ksm_off",
        "iommu.active",
        "cgroup.mode",
        "cgroup.controllers",
        "boot.secure_boot",
        "kernel.lockdown",
        "tpm.present",
        "txt.measured_launch",
        "nova.config_ownership",
        "nova.config_mode",
        "nova.compute_nonroot",
        "nova.instances_space",
        "libvirt.remote_access",
        "sysctl.kernel.randomize_va_space",
        "sysctl.kernel.kptr_restrict",
        "sysctl.fs.suid_dumpable",
    ] {
        assert!(ids.contains(&id.to_owned()), "missing {id}");
    }
}

#[test]
fn malformed_manifest_is_an_error() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("trustpool-fixture.toml"),
        "[[devices]]\npath = 3\n",
    )
    .expect("write");
    let e = open_host(dir.path()).err().expect("must fail");
    assert!(e.to_string().contains("invalid fixture manifest"), "{e}");
    assert!(open_host(std::path::Path::new("/nonexistent/root")).is_err());
}

#[test]
fn huge_fleet_of_guests_stays_within_the_report_cap() {
    let mut b = good();
    for i in 0..1500u32 {
        let uuid = format!("00000000-0000-4000-8000-{i:012}");
        b = fixture::guest(
            b,
            10_000 + i,
            &format!("instance-{i:08x}-with-a-rather-long-name-to-inflate-evidence"),
            &uuid,
            Some(&format!("libvirt-{uuid} (complain)")),
        );
    }
    let r = run(&b, Role::Compute);
    assert!(
        r.canonical_bytes().len() <= MAX_REPORT_BYTES / 2,
        "{} bytes",
        r.canonical_bytes().len()
    );
    let g = res(&r, "svirt.guests_confined");
    assert_eq!(g.status, Status::Fail);
    assert!(
        g.items.last().is_some_and(|i| i.contains("more")),
        "{:?}",
        g.items.last()
    );
}

#[test]
fn empty_fixture_runs() {
    for role in [Role::Compute, Role::Other] {
        let r = run(&FixtureBuilder::new(), role);
        assert_eq!(res(&r, "env.container").status, Status::Informational);
        assert_eq!(
            res(&r, "kvm.device").status,
            if role == Role::Compute {
                Status::Unknown
            } else {
                Status::NotApplicable
            }
        );
    }
}
