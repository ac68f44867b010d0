//! Golden fixture tests of the hardening checks (catalogue §3.1) and live checks
//! of the test machine (state classes only).

mod details;
mod live;
mod robustness;
mod scenarios;

use std::collections::{BTreeMap, BTreeSet};

use trustpool_hardening::fixture::{self, FixtureBuilder, ProcessSpec, GUEST_UUIDS, QEMU_UID};
use trustpool_hardening::{
    check_catalogue, open_host, run_checks, CheckParams, CheckResult, Report, Role, Status,
};

/// Builds a fixture in a temporary directory and runs every check on it. Also
/// asserts the report invariants: every status is one the catalogue declares for
/// the check, and the canonical bytes round-trip.
pub fn run_with(b: &FixtureBuilder, role: Role, params: &CheckParams) -> Report {
    let dir = tempdir();
    b.build(dir.path()).expect("build fixture");
    let host = open_host(dir.path()).expect("open fixture");
    let report = run_checks(host.as_ref(), role, params);
    let catalogue: BTreeMap<String, Vec<Status>> = check_catalogue(params)
        .into_iter()
        .map(|c| (c.id, c.states))
        .collect();
    for r in &report.results {
        let states = catalogue
            .get(&r.id)
            .unwrap_or_else(|| panic!("{} not in the catalogue", r.id));
        assert!(
            states.contains(&r.status),
            "{}: status {} not declared in the catalogue {states:?}: {}",
            r.id,
            r.status,
            r.reason
        );
        assert!(!r.reason.is_empty(), "{}: empty reason", r.id);
        assert!(!r.refs.is_empty(), "{}: no refs", r.id);
    }
    assert_eq!(
        report.results.len(),
        catalogue.len(),
        "one result per catalogue entry"
    );
    let bytes = report.canonical_bytes();
    assert_eq!(
        Report::from_slice(&bytes).as_ref(),
        Ok(&report),
        "canonical bytes round-trip"
    );
    report
}

/// A temporary directory, on tmpfs when available (fixtures create many small
/// files; that is slow on some CI disks).
pub fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("tp-fixture-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// [`run_with`] with default parameters.
pub fn run(b: &FixtureBuilder, role: Role) -> Report {
    run_with(b, role, &CheckParams::default())
}

/// The result of a check (panics with the list of ids when absent).
pub fn res<'a>(r: &'a Report, id: &str) -> &'a CheckResult {
    r.get(id).unwrap_or_else(|| {
        panic!(
            "no result {id}; have {:?}",
            r.results.iter().map(|x| &x.id).collect::<Vec<_>>()
        )
    })
}

/// Asserts a status, showing the reason on failure.
#[track_caller]
pub fn assert_status(r: &Report, id: &str, want: Status) {
    let x = res(r, id);
    assert_eq!(
        x.status, want,
        "{id}: got {} ({}); items {:?}",
        x.status, x.reason, x.items
    );
}

/// The good compute host.
pub fn good() -> FixtureBuilder {
    fixture::good_compute()
}

/// The AppArmor profiles file of the good host plus `extra` lines.
pub fn profiles_with(extra: &str) -> String {
    let mut s = String::from("/usr/sbin/libvirtd (enforce)\nlibvirtd (enforce)\n");
    for u in GUEST_UUIDS {
        s.push_str(&format!("libvirt-{u} (enforce)\n"));
    }
    s.push_str(extra);
    s
}

/// A libvirt guest with an SELinux context.
pub fn se_guest(
    b: FixtureBuilder,
    pid: u32,
    name: &str,
    uuid: &str,
    context: &str,
) -> FixtureBuilder {
    b.process_spec(ProcessSpec {
        pid,
        comm: "qemu-kvm".into(),
        args: fixture::qemu_args(name, uuid)
            .into_iter()
            .map(|a| a.replace("qemu-system-x86_64", "qemu-kvm"))
            .collect(),
        uids: [107; 4],
        apparmor: None,
        selinux: Some(context.to_owned()),
        cgroup: None,
    })
}

/// A RHEL-like SELinux compute host (no AppArmor), guests with unique MCS pairs.
pub fn selinux_host() -> FixtureBuilder {
    let b = good()
        .remove("/sys/module/apparmor")
        .remove("/sys/kernel/security/apparmor")
        .file(
            "/sys/kernel/security/lsm",
            "lockdown,capability,yama,selinux,bpf",
        )
        .remove("/dev/kmsg")
        .kmsg("LSM: initializing lsm=lockdown,capability,yama,selinux,bpf")
        .kmsg("tboot: found shared page at phys addr 0x88000:")
        .file("/sys/fs/selinux/enforce", "1")
        .passwd("qemu", 107, 107)
        .group("qemu", 107, &[])
        .file(
            "/etc/libvirt/qemu.conf",
            "security_driver = \"selinux\"\nuser = \"qemu\"\ngroup = \"qemu\"\n",
        )
        .selinux_process(
            812,
            "libvirtd",
            &["/usr/sbin/libvirtd"],
            0,
            "system_u:system_r:virtd_t:s0-s0:c0.c1023",
        )
        .selinux_process(
            900,
            "nova-compute",
            &["/usr/bin/python3", "/usr/bin/nova-compute"],
            fixture::NOVA_ID,
            "system_u:system_r:nova_t:s0",
        );
    let b = se_guest(
        b,
        4242,
        "instance-00000001",
        GUEST_UUIDS[0],
        "system_u:system_r:svirt_t:s0:c12,c345",
    );
    se_guest(
        b,
        4243,
        "instance-00000002",
        GUEST_UUIDS[1],
        "system_u:system_r:svirt_t:s0:c7,c99",
    )
}

/// An AppArmor guest at pid 4243 with the given label.
pub fn second_guest_label(b: FixtureBuilder, label: &str) -> FixtureBuilder {
    fixture::guest(b, 4243, "instance-00000002", GUEST_UUIDS[1], Some(label))
}

/// Removes both mountinfo copies.
pub fn no_mountinfo(b: FixtureBuilder) -> FixtureBuilder {
    b.remove("/proc/self/mountinfo").remove("/proc/1/mountinfo")
}

/// Replaces the mount table.
pub fn with_mounts(b: FixtureBuilder, mounts: &[(&str, &str)]) -> FixtureBuilder {
    let mut b = no_mountinfo(b);
    for (mp, fs) in mounts {
        b = b.mount(mp, fs, fs);
    }
    b
}

/// Observed (id, status) pairs, for the coverage assertion.
pub type Seen = BTreeSet<(String, Status)>;

/// Default parameters with a tweak.
pub fn params(f: impl FnOnce(&mut CheckParams)) -> CheckParams {
    let mut p = CheckParams::default();
    f(&mut p);
    p
}

/// Shorthand for the QEMU uid.
pub const QEMU: u32 = QEMU_UID;
