//! The golden table: one fixture host per case, with the expected state of the
//! checks it exercises, and a coverage assertion: every state the catalogue
//! declares for a check is produced by at least one case.

use trustpool_hardening::fixture::{
    self, FixtureBuilder, ProcessSpec, EFI_GLOBAL_GUID, GUEST_UUIDS, NOVA_ID,
};
use trustpool_hardening::{check_catalogue, CheckParams, MacSelection, Role, Status};

use super::*;
use Status::{
    Error as E, Fail as F, Informational as I, NotApplicable as NA, Pass as P, Unknown as U,
};

struct Case {
    name: String,
    b: FixtureBuilder,
    role: Role,
    params: CheckParams,
    expect: Vec<(&'static str, Status, Option<&'static str>)>,
}

fn case(name: &str, b: FixtureBuilder) -> Case {
    Case {
        name: name.to_owned(),
        b,
        role: Role::Compute,
        params: CheckParams::default(),
        expect: Vec::new(),
    }
}

impl Case {
    fn role(mut self, r: Role) -> Self {
        self.role = r;
        self
    }
    fn params(mut self, p: CheckParams) -> Self {
        self.params = p;
        self
    }
    /// Expect a status.
    fn x(mut self, id: &'static str, st: Status) -> Self {
        self.expect.push((id, st, None));
        self
    }
    /// Expect a status and a text in the items or the reason.
    fn xi(mut self, id: &'static str, st: Status, needle: &'static str) -> Self {
        self.expect.push((id, st, Some(needle)));
        self
    }
}

const SB: &str = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
const SETUP: &str = "/sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c";
const AA_EN: &str = "/sys/module/apparmor/parameters/enabled";
const AA_PROF: &str = "/sys/kernel/security/apparmor/profiles";
const QCONF: &str = "/etc/libvirt/qemu.conf";
const LCONF: &str = "/etc/libvirt/libvirtd.conf";
const PCR17: &str = "/sys/class/tpm/tpm0/pcr-sha256/17";

fn hybrid_mounts() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/", "ext4"),
        ("/dev", "devtmpfs"),
        ("/sys/fs/cgroup", "tmpfs"),
        ("/sys/fs/cgroup/cpu", "cgroup"),
        ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
    ]
}

fn legacy_mounts() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/", "ext4"),
        ("/dev", "devtmpfs"),
        ("/sys/fs/cgroup", "tmpfs"),
        ("/sys/fs/cgroup/memory", "cgroup"),
    ]
}

#[allow(clippy::vec_init_then_push)]
fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // ---- presets ---------------------------------------------------------------
    v.push(
        case("good compute host", good())
            .x("env.container", I)
            .x("env.virtualized", I)
            .x("lsm.active", I)
            .x("apparmor.enabled", P)
            .x("apparmor.profiles_enforcing", P)
            .x("selinux.enforcing", NA)
            .x("mac.enforcing_any", P)
            .x("svirt.driver_configured", P)
            .xi("svirt.guests_confined", P, "all 2 guests")
            .x("libvirt.qemu_nonroot", P)
            .x("kvm.device", P)
            .x("kvm.api", P)
            .x("kvm.nested_disabled", P)
            .x("mem.ksm_off", P)
            .x("iommu.active", P)
            .x("cgroup.mode", P)
            .x("cgroup.controllers", P)
            .x("boot.secure_boot", P)
            .x("kernel.lockdown", P)
            .x("tpm.present", P)
            .x("txt.measured_launch", P)
            .x("nova.config_ownership", P)
            .x("nova.config_mode", P)
            .x("nova.compute_nonroot", P)
            .x("nova.instances_space", P)
            .x("libvirt.remote_access", P)
            .x("sysctl.kernel.randomize_va_space", P)
            .x("sysctl.net.ipv4.ip_forward", I),
    );
    v.push(
        case("AppArmor disabled preset", fixture::apparmor_disabled())
            .x("apparmor.enabled", F)
            .x("apparmor.profiles_enforcing", NA)
            .x("selinux.enforcing", F)
            .x("mac.enforcing_any", F)
            .xi("svirt.driver_configured", F, "no MAC framework")
            .xi("svirt.guests_confined", F, "instance-00000001")
            .x("kvm.device", P),
    );

    // ---- E1 container ------------------------------------------------------------
    v.push(
        case(
            "container markers: .dockerenv",
            good().file("/.dockerenv", ""),
        )
        .xi("env.container", I, "/.dockerenv")
        .x("env.virtualized", I)
        .x("apparmor.enabled", U)
        .x("kvm.device", U)
        .x("svirt.guests_confined", U)
        .x("sysctl.kernel.randomize_va_space", U)
        .x("nova.config_ownership", U),
    );
    v.push(
        case(
            "container markers: overlay root + kubepods cgroup",
            with_mounts(good(), &[("/", "overlay"), ("/dev", "tmpfs")])
                .file("/proc/1/cgroup", "0::/kubepods/besteffort/pod1/abc\n"),
        )
        .xi("env.container", I, "overlay root")
        .x("kvm.device", U),
    );
    v.push(
        case(
            "container markers: /run/.containerenv",
            good().file("/run/.containerenv", "engine=podman\n"),
        )
        .xi("env.container", I, "/run/.containerenv")
        .x("tpm.present", U),
    );
    v.push(
        case(
            "container view trusted by the profile",
            good().file("/.dockerenv", ""),
        )
        .params(params(|p| p.trust_container_view = true))
        .xi("env.container", I, "trusted")
        .x("kvm.device", P)
        .x("apparmor.enabled", P),
    );
    v.push(
        case(
            "overlay root without container cgroup",
            with_mounts(good(), &[("/", "overlay"), ("/dev", "devtmpfs")]),
        )
        .x("kvm.device", P),
    );

    // ---- E2 / M1 ---------------------------------------------------------------------
    v.push(
        case(
            "virtualized node",
            good().file("/proc/cpuinfo", "flags\t: fpu vmx hypervisor\n"),
        )
        .xi("env.virtualized", I, "virtual machine"),
    );
    v.push(
        case("cpuinfo missing", good().remove("/proc/cpuinfo"))
            .x("env.virtualized", U)
            .x("txt.measured_launch", P),
    );
    v.push(
        case("cpuinfo EIO", good().error("/proc/cpuinfo", "EIO"))
            .x("env.virtualized", E)
            .x("txt.measured_launch", E),
    );
    v.push(
        case(
            "lsm file empty",
            good().file("/sys/kernel/security/lsm", ""),
        )
        .x("lsm.active", E),
    );
    v.push(
        case(
            "lsm file EIO",
            good().error("/sys/kernel/security/lsm", "EIO"),
        )
        .x("lsm.active", E),
    );

    // ---- M2 / M3 / M5 / M7 -------------------------------------------------------------
    v.push(
        case(
            "securityfs not mounted (module Y)",
            good().remove("/sys/kernel/security"),
        )
        .x("lsm.active", U)
        .x("apparmor.enabled", U)
        .x("apparmor.profiles_enforcing", U)
        .x("selinux.enforcing", NA)
        .x("mac.enforcing_any", U)
        .xi("kernel.lockdown", U, "locked down"),
    );
    v.push(
        case(
            "securityfs not mounted, no module, no boot log",
            good()
                .remove("/sys/kernel/security")
                .remove("/sys/module/apparmor")
                .remove("/dev/kmsg"),
        )
        .x("apparmor.enabled", U)
        .x("lsm.active", U),
    );
    v.push(
        case(
            "CI-like: no AppArmor module, boot log LSM list without it",
            good()
                .remove("/sys/kernel/security")
                .remove("/sys/module/apparmor")
                .remove("/dev/kmsg")
                .kmsg("LSM: initializing lsm=lockdown,capability,landlock,bpf"),
        )
        .xi("apparmor.enabled", F, "not built in")
        .x("apparmor.profiles_enforcing", NA)
        .xi("selinux.enforcing", F, "not enabled")
        .x("mac.enforcing_any", F)
        .xi("lsm.active", U, "boot log says lsm=lockdown"),
    );
    v.push(
        case(
            "AppArmor Y but no securityfs directory",
            good().remove("/sys/kernel/security/apparmor"),
        )
        .xi("apparmor.enabled", F, "did not initialise")
        .x("apparmor.profiles_enforcing", U)
        .x("mac.enforcing_any", U),
    );
    v.push(
        case(
            "AppArmor enabled = Q (malformed)",
            good().file(AA_EN, "Q\n"),
        )
        .x("apparmor.enabled", E)
        .x("apparmor.profiles_enforcing", E)
        .x("mac.enforcing_any", E)
        .x("selinux.enforcing", NA),
    );
    v.push(case("AppArmor enabled EACCES", good().error(AA_EN, "EACCES")).x("apparmor.enabled", U));
    v.push(
        case(
            "profile in complain mode",
            good().file(AA_PROF, profiles_with("/usr/sbin/cupsd (complain)\n")),
        )
        .xi(
            "apparmor.profiles_enforcing",
            F,
            "/usr/sbin/cupsd (complain)",
        )
        .x("mac.enforcing_any", P),
    );
    v.push(
        case(
            "complain profile on the allow-list",
            good().file(AA_PROF, profiles_with("/usr/sbin/cupsd (complain)\n")),
        )
        .params(params(|p| {
            p.apparmor_complain_allowed = vec!["/usr/sbin/cups*".into()]
        }))
        .xi("apparmor.profiles_enforcing", P, "/usr/sbin/cupsd"),
    );
    v.push(
        case(
            "profiles line without parenthesis",
            good().file(AA_PROF, profiles_with("broken-profile-line\n")),
        )
        .xi("apparmor.profiles_enforcing", E, "broken-profile-line")
        .x("mac.enforcing_any", E),
    );
    v.push(
        case(
            "unknown profile mode",
            good().file(AA_PROF, profiles_with("x (wibble)\n")),
        )
        .xi("apparmor.profiles_enforcing", E, "wibble"),
    );
    v.push(
        case("profiles EACCES", good().error(AA_PROF, "EACCES"))
            .xi("apparmor.profiles_enforcing", U, "permission denied")
            .x("mac.enforcing_any", U)
            .x("svirt.guests_confined", P),
    );
    v.push(case("profiles EIO", good().error(AA_PROF, "EIO")).x("apparmor.profiles_enforcing", E));
    v.push(
        case("no profiles loaded", good().file(AA_PROF, ""))
            .x("apparmor.profiles_enforcing", F)
            .x("mac.enforcing_any", F),
    );
    v.push(
        case("SELinux host, enforcing", selinux_host())
            .x("apparmor.enabled", NA)
            .x("apparmor.profiles_enforcing", NA)
            .x("selinux.enforcing", P)
            .x("mac.enforcing_any", P)
            .x("svirt.driver_configured", P)
            .x("svirt.guests_confined", P)
            .x("libvirt.qemu_nonroot", P),
    );
    v.push(
        case(
            "SELinux host, permissive",
            selinux_host().file("/sys/fs/selinux/enforce", "0"),
        )
        .xi("selinux.enforcing", F, "permissive")
        .x("mac.enforcing_any", F)
        .xi("svirt.guests_confined", F, "permissive"),
    );
    v.push(
        case(
            "SELinux enforce malformed",
            selinux_host().file("/sys/fs/selinux/enforce", "2"),
        )
        .x("selinux.enforcing", E),
    );
    v.push(
        case(
            "SELinux selected, selinuxfs not mounted",
            good().dir("/sys/fs/selinux"),
        )
        .params(params(|p| p.mac = MacSelection::Selinux))
        .x("selinux.enforcing", U)
        .x("apparmor.enabled", NA)
        .x("mac.enforcing_any", U),
    );
    v.push(
        case(
            "SELinux enforce EIO",
            selinux_host().error("/sys/fs/selinux/enforce", "EIO"),
        )
        .x("selinux.enforcing", E),
    );

    // ---- S1 ------------------------------------------------------------------------------
    v.push(
        case(
            "security_driver = none",
            good().file(
                QCONF,
                "security_driver = \"none\"\nuser = \"libvirt-qemu\"\n",
            ),
        )
        .xi("svirt.driver_configured", F, "security_driver = \"none\""),
    );
    v.push(
        case(
            "security_default_confined = 0",
            good().file(QCONF, "security_default_confined = 0\n"),
        )
        .xi(
            "svirt.driver_configured",
            F,
            "security_default_confined = 0",
        ),
    );
    v.push(
        case(
            "security_driver list with none",
            good().file(QCONF, "security_driver = [ \"apparmor\", \"none\" ]\n"),
        )
        .x("svirt.driver_configured", F),
    );
    v.push(
        case(
            "explicit apparmor driver",
            good().file(QCONF, "security_driver = \"apparmor\"\n"),
        )
        .xi("svirt.driver_configured", P, "recommended"),
    );
    v.push(
        case(
            "qemu.conf syntax error",
            good().file(QCONF, "security_driver = none\n"),
        )
        .x("svirt.driver_configured", E)
        .x("libvirt.qemu_nonroot", E),
    );
    v.push(
        case(
            "qemu.conf wrong type",
            good().file(QCONF, "security_default_confined = \"no\"\n"),
        )
        .x("svirt.driver_configured", E),
    );
    v.push(
        case("qemu.conf EACCES", good().error(QCONF, "EACCES"))
            .x("svirt.driver_configured", U)
            .x("libvirt.qemu_nonroot", U),
    );
    v.push(case("qemu.conf EIO", good().error(QCONF, "EIO")).x("svirt.driver_configured", E));
    v.push(
        case(
            "role other without libvirt",
            good()
                .remove("/etc/libvirt")
                .remove("/proc/4242")
                .remove("/proc/4243"),
        )
        .role(Role::Other)
        .x("svirt.driver_configured", NA)
        .x("svirt.guests_confined", NA)
        .x("libvirt.qemu_nonroot", NA)
        .x("libvirt.remote_access", NA),
    );
    v.push(
        case(
            "compute without libvirt",
            good()
                .remove("/etc/libvirt")
                .remove("/proc/4242")
                .remove("/proc/4243"),
        )
        .x("svirt.driver_configured", F)
        .xi("svirt.guests_confined", P, "guests=0")
        .x("libvirt.qemu_nonroot", F)
        .x("libvirt.remote_access", F),
    );

    // ---- S2 --------------------------------------------------------------------------------
    v.push(
        case(
            "one guest in complain mode",
            second_guest_label(good(), &format!("libvirt-{} (complain)", GUEST_UUIDS[1])),
        )
        .xi("svirt.guests_confined", F, "instance-00000002"),
    );
    v.push(
        case(
            "guest profile uuid differs from -uuid",
            second_guest_label(good(), &format!("libvirt-{} (enforce)", GUEST_UUIDS[0])),
        )
        .xi("svirt.guests_confined", F, "does not match -uuid"),
    );
    v.push(
        case("unconfined guest", second_guest_label(good(), "unconfined")).xi(
            "svirt.guests_confined",
            F,
            "unconfined",
        ),
    );
    v.push(
        case(
            "guest profile in complain per the profiles list",
            good().file(
                AA_PROF,
                format!(
                    "libvirt-{} (enforce)\nlibvirt-{} (complain)\n",
                    GUEST_UUIDS[0], GUEST_UUIDS[1]
                ),
            ),
        )
        .xi("svirt.guests_confined", F, "loaded in complain mode")
        .x("apparmor.profiles_enforcing", F),
    );
    v.push(
        case(
            "guest profile not loaded",
            good().file(AA_PROF, format!("libvirt-{} (enforce)\n", GUEST_UUIDS[0])),
        )
        .xi("svirt.guests_confined", F, "not in the loaded profiles"),
    );
    v.push(
        case(
            "guest label unknown mode",
            second_guest_label(good(), &format!("libvirt-{} (wobble)", GUEST_UUIDS[1])),
        )
        .x("svirt.guests_confined", E),
    );
    v.push(
        case(
            "guest label unrecognised",
            second_guest_label(good(), "garbage"),
        )
        .xi("svirt.guests_confined", E, "unrecognised"),
    );
    v.push(
        case(
            "guest label EACCES",
            good().error("/proc/4243/attr", "EACCES"),
        )
        .x("svirt.guests_confined", U),
    );
    v.push(
        case("guest label EIO", good().error("/proc/4243/attr", "EIO"))
            .x("svirt.guests_confined", E),
    );
    v.push(
        case("guest without label", good().remove("/proc/4243/attr")).xi(
            "svirt.guests_confined",
            U,
            "no security label",
        ),
    );
    v.push(
        case(
            "guests without labels on a host without MAC",
            fixture::apparmor_disabled()
                .remove("/proc/4242/attr")
                .remove("/proc/4243/attr"),
        )
        .xi("svirt.guests_confined", F, "no MAC framework"),
    );
    v.push(
        case("guest without -uuid", {
            let b = good();
            b.process_spec(ProcessSpec {
                pid: 4243,
                comm: "qemu-system-x86".into(),
                args: vec![
                    "/usr/bin/qemu-system-x86_64".into(),
                    "-name".into(),
                    "guest=manual".into(),
                ],
                uids: [QEMU; 4],
                apparmor: Some(format!("libvirt-{} (enforce)", GUEST_UUIDS[1])),
                ..ProcessSpec::default()
            })
        })
        .xi("svirt.guests_confined", F, "no -uuid"),
    );
    v.push(
        case(
            "zero guests",
            good().remove("/proc/4242").remove("/proc/4243"),
        )
        .xi("svirt.guests_confined", P, "guests=0")
        .x("libvirt.qemu_nonroot", P),
    );
    v.push(
        case("no /proc", good().remove("/proc"))
            .x("svirt.guests_confined", U)
            .x("libvirt.qemu_nonroot", U)
            .x("nova.compute_nonroot", U)
            .x("cgroup.mode", U)
            .x("cgroup.controllers", U)
            .x("sysctl.kernel.randomize_va_space", U),
    );
    v.push(
        case("/proc EIO", good().error("/proc", "EIO"))
            .x("svirt.guests_confined", E)
            .x("nova.compute_nonroot", E)
            .x("cgroup.mode", E),
    );
    v.push(
        case(
            "SELinux guests sharing an MCS pair",
            se_guest(
                selinux_host(),
                4243,
                "instance-00000002",
                GUEST_UUIDS[1],
                "system_u:system_r:svirt_t:s0:c345,c12",
            ),
        )
        .xi("svirt.guests_confined", F, "shares MCS pair c12,c345"),
    );
    v.push(
        case(
            "SELinux guest with the wrong type",
            se_guest(
                selinux_host(),
                4243,
                "instance-00000002",
                GUEST_UUIDS[1],
                "system_u:system_r:unconfined_t:s0:c1,c2",
            ),
        )
        .xi("svirt.guests_confined", F, "unconfined_t"),
    );
    v.push(
        case(
            "SELinux guest without a category pair",
            se_guest(
                selinux_host(),
                4243,
                "instance-00000002",
                GUEST_UUIDS[1],
                "system_u:system_r:svirt_t:s0",
            ),
        )
        .xi("svirt.guests_confined", F, "no unique MCS"),
    );
    v.push(
        case(
            "SELinux guests, enforce not visible",
            selinux_host().error("/sys/fs/selinux/enforce", "EACCES"),
        )
        .x("svirt.guests_confined", U)
        .x("selinux.enforcing", U),
    );

    // ---- S4 ---------------------------------------------------------------------------
    v.push(
        case(
            "qemu.conf user = root",
            good().file(QCONF, "user = \"root\"\n"),
        )
        .xi("libvirt.qemu_nonroot", F, "user = \"root\""),
    );
    v.push(
        case("qemu.conf user = +0", good().file(QCONF, "user = \"+0\"\n"))
            .x("libvirt.qemu_nonroot", F),
    );
    v.push(
        case(
            "qemu.conf user resolving to uid 0",
            good().file(QCONF, "user = \"toor\"\n").passwd("toor", 0, 0),
        )
        .x("libvirt.qemu_nonroot", F),
    );
    v.push(
        case(
            "guest running as root",
            good().process_spec(ProcessSpec {
                pid: 4243,
                comm: "qemu-system-x86".into(),
                args: fixture::qemu_args("instance-00000002", GUEST_UUIDS[1]),
                uids: [0; 4],
                apparmor: Some(format!("libvirt-{} (enforce)", GUEST_UUIDS[1])),
                ..ProcessSpec::default()
            }),
        )
        .xi("libvirt.qemu_nonroot", F, "instance-00000002")
        .x("svirt.guests_confined", P),
    );
    v.push(
        case(
            "guest status malformed",
            good().file("/proc/4242/status", "Name:\tqemu\nUid:\t1\n"),
        )
        .x("libvirt.qemu_nonroot", E),
    );
    v.push(
        case(
            "guest status EACCES",
            good().error("/proc/4242/status", "EACCES"),
        )
        .x("libvirt.qemu_nonroot", U),
    );
    v.push(
        case(
            "qemu.conf user wrong type",
            good().file(QCONF, "user = 0\n"),
        )
        .x("libvirt.qemu_nonroot", E),
    );

    // ---- K1 / K2 -------------------------------------------------------------------------
    v.push(
        case(
            "/dev/kvm world-accessible",
            good().char_device("/dev/kvm", 10, 232, 0o666, 0, fixture::KVM_GID),
        )
        .xi("kvm.device", F, "world-accessible"),
    );
    v.push(
        case(
            "/dev/kvm wrong numbers",
            good().char_device("/dev/kvm", 10, 233, 0o660, 0, 0),
        )
        .x("kvm.device", F),
    );
    v.push(
        case(
            "/dev/kvm a regular file",
            good().remove("/dev/kvm").file("/dev/kvm", ""),
        )
        .x("kvm.device", F)
        .x("kvm.api", U),
    );
    v.push(
        case(
            "no /dev/kvm on devtmpfs (compute)",
            good().remove("/dev/kvm"),
        )
        .xi("kvm.device", F, "devtmpfs")
        .x("kvm.api", F),
    );
    v.push(
        case("no /dev/kvm (other role)", good().remove("/dev/kvm"))
            .role(Role::Other)
            .x("kvm.device", NA)
            .x("kvm.api", NA),
    );
    v.push(
        case(
            "no /dev/kvm, /dev not visible as devtmpfs",
            no_mountinfo(good().remove("/dev/kvm")),
        )
        .x("kvm.device", U)
        .x("kvm.api", U),
    );
    v.push(
        case("/dev/kvm stat EIO", good().error_stat("/dev/kvm", "EIO"))
            .x("kvm.device", E)
            .x("kvm.api", E),
    );
    v.push(
        case(
            "/dev/kvm stat EACCES",
            good().error_stat("/dev/kvm", "EACCES"),
        )
        .x("kvm.device", U)
        .x("kvm.api", U),
    );
    v.push(case("KVM probe ENXIO", good().kvm_errno("ENXIO")).xi("kvm.api", F, "ENXIO"));
    v.push(case("KVM probe EACCES", good().kvm_errno("EACCES")).x("kvm.api", U));
    v.push(case("KVM probe EIO", good().kvm_errno("EIO")).x("kvm.api", E));
    v.push(case("KVM API version 11", good().kvm_api(11)).x("kvm.api", F));

    // ---- K4 / K5 -------------------------------------------------------------------------
    let nested = "/sys/module/kvm_intel/parameters/nested";
    v.push(case("nested Y", good().file(nested, "Y\n")).x("kvm.nested_disabled", F));
    v.push(
        case("nested 1 allowed", good().file(nested, "1\n"))
            .params(params(|p| p.nested_virt_allowed = true))
            .xi("kvm.nested_disabled", P, "allowed"),
    );
    v.push(case("nested malformed", good().file(nested, "maybe\n")).x("kvm.nested_disabled", E));
    v.push(
        case(
            "no kvm_intel/kvm_amd",
            good().remove("/sys/module/kvm_intel"),
        )
        .x("kvm.nested_disabled", NA),
    );
    v.push(
        case(
            "kvm_intel without nested parameter",
            good()
                .remove(nested)
                .dir("/sys/module/kvm_intel/parameters"),
        )
        .x("kvm.nested_disabled", U),
    );
    v.push(case("nested EIO", good().error(nested, "EIO")).x("kvm.nested_disabled", E));
    v.push(
        case("no /sys/module", good().remove("/sys/module"))
            .x("kvm.nested_disabled", U)
            .xi("apparmor.enabled", U, "names apparmor"),
    );
    v.push(case("ksm running", good().file("/sys/kernel/mm/ksm/run", "1\n")).x("mem.ksm_off", F));
    v.push(case("ksm unmerged", good().file("/sys/kernel/mm/ksm/run", "2\n")).x("mem.ksm_off", P));
    v.push(
        case(
            "ksm malformed",
            good().file("/sys/kernel/mm/ksm/run", "7\n"),
        )
        .x("mem.ksm_off", E),
    );
    v.push(case("no KSM", good().remove("/sys/kernel/mm/ksm")).x("mem.ksm_off", NA));
    v.push(case("no /sys/kernel/mm", good().remove("/sys/kernel/mm")).x("mem.ksm_off", U));
    v.push(
        case(
            "ksm EACCES",
            good().error("/sys/kernel/mm/ksm/run", "EACCES"),
        )
        .x("mem.ksm_off", U),
    );
    v.push(case("ksm EIO", good().error("/sys/kernel/mm/ksm/run", "EIO")).x("mem.ksm_off", E));

    // ---- I1 ------------------------------------------------------------------------------------
    v.push(
        case(
            "intel_iommu=off",
            good().file("/proc/cmdline", "ro intel_iommu=off\n"),
        )
        .xi("iommu.active", F, "intel_iommu=off"),
    );
    v.push(
        case(
            "DMAR table but no IOMMU groups",
            good().remove("/sys/kernel/iommu_groups"),
        )
        .xi("iommu.active", F, "DMAR"),
    );
    v.push(
        case(
            "no IOMMU hardware",
            good()
                .remove("/sys/firmware/acpi/tables/DMAR")
                .remove("/sys/kernel/iommu_groups")
                .remove("/sys/class/iommu"),
        )
        .x("iommu.active", NA),
    );
    v.push(
        case(
            "no IOMMU hardware with passthrough",
            good()
                .remove("/sys/firmware/acpi/tables/DMAR")
                .remove("/sys/kernel/iommu_groups")
                .remove("/sys/class/iommu"),
        )
        .params(params(|p| p.pci_passthrough = true))
        .x("iommu.active", F),
    );
    v.push(
        case(
            "no sysfs class",
            good()
                .remove("/sys/class")
                .remove("/sys/kernel/iommu_groups"),
        )
        .x("iommu.active", U)
        .x("tpm.present", U)
        .x("txt.measured_launch", U),
    );
    v.push(
        case(
            "ACPI tables not visible",
            good()
                .remove("/sys/firmware")
                .remove("/sys/kernel/iommu_groups"),
        )
        .x("iommu.active", U)
        .x("boot.secure_boot", U),
    );
    v.push(
        case(
            "/sys/class/iommu EIO",
            good().error("/sys/class/iommu", "EIO"),
        )
        .x("iommu.active", E),
    );
    v.push(
        case(
            "iommu=pt",
            good().file("/proc/cmdline", "ro intel_iommu=on iommu=pt\n"),
        )
        .xi("iommu.active", P, "iommu=pt"),
    );
    v.push(case("cmdline EIO", good().error("/proc/cmdline", "EIO")).x("iommu.active", E));

    // ---- C1 / C2 ---------------------------------------------------------------------------
    v.push(
        case("cgroup hybrid", with_mounts(good(), &hybrid_mounts()))
            .xi("cgroup.mode", I, "hybrid")
            .x("cgroup.controllers", P),
    );
    v.push(
        case(
            "cgroup hybrid, v2 required",
            with_mounts(good(), &hybrid_mounts()),
        )
        .params(params(|p| p.cgroup_v2_required = true))
        .x("cgroup.mode", F),
    );
    v.push(
        case("cgroup legacy", with_mounts(good(), &legacy_mounts())).xi("cgroup.mode", I, "legacy"),
    );
    v.push(
        case(
            "ext4 at /sys/fs/cgroup",
            with_mounts(good(), &[("/", "ext4"), ("/sys/fs/cgroup", "ext4")]),
        )
        .x("cgroup.mode", E)
        .x("cgroup.controllers", E),
    );
    v.push(
        case(
            "tmpfs without hierarchies",
            with_mounts(good(), &[("/", "ext4"), ("/sys/fs/cgroup", "tmpfs")]),
        )
        .x("cgroup.mode", E),
    );
    v.push(
        case(
            "nothing at /sys/fs/cgroup",
            with_mounts(good(), &[("/", "ext4")]),
        )
        .x("cgroup.mode", U)
        .x("cgroup.controllers", U),
    );
    v.push(
        case("no mountinfo", no_mountinfo(good()))
            .x("cgroup.mode", U)
            .x("cgroup.controllers", U)
            .x("kvm.device", P),
    );
    v.push(
        case(
            "malformed mountinfo",
            good().file("/proc/self/mountinfo", "garbage\n"),
        )
        .x("cgroup.mode", E),
    );
    v.push(
        case(
            "statfs magic disagrees with mountinfo",
            good().statvfs_entry(trustpool_hardening::host::StatvfsEntry {
                path: "/sys/fs/cgroup".into(),
                bsize: None,
                frsize: 4096,
                blocks: 1,
                bfree: None,
                bavail: 1,
                files: 0,
                ffree: None,
                favail: 0,
                f_type: Some(0x0102_1994),
            }),
        )
        .xi("cgroup.mode", E, "statfs"),
    );
    v.push(
        case(
            "v2 controller io missing",
            good().file(
                "/sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu memory pids\n",
            ),
        )
        .xi("cgroup.controllers", F, "io"),
    );
    v.push(
        case(
            "cgroup_disable=memory",
            good().file("/proc/cmdline", "ro intel_iommu=on cgroup_disable=memory\n"),
        )
        .xi("cgroup.controllers", F, "cgroup_disable=memory"),
    );
    v.push(
        case("v1 controller disabled", with_mounts(good(), &hybrid_mounts()).file("/proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t3\t1\t0\ndevices\t4\t1\t1\nblkio\t5\t1\t1\npids\t6\t1\t1\n"))
            .xi("cgroup.controllers", F, "memory"),
    );
    v.push(
        case(
            "/proc/cgroups malformed",
            with_mounts(good(), &hybrid_mounts()).file("/proc/cgroups", "cpu 1 x\n"),
        )
        .x("cgroup.controllers", E),
    );
    v.push(
        case(
            "cgroup.controllers EACCES",
            good().error("/sys/fs/cgroup/cgroup.controllers", "EACCES"),
        )
        .x("cgroup.controllers", U),
    );

    // ---- B2 --------------------------------------------------------------------------------------
    v.push(
        case("Secure Boot off", good().file(SB, [6u8, 0, 0, 0, 0])).xi(
            "boot.secure_boot",
            F,
            "SecureBoot=0",
        ),
    );
    v.push(
        case(
            "firmware in setup mode",
            good().file(SETUP, [6u8, 0, 0, 0, 1]),
        )
        .xi("boot.secure_boot", F, "SetupMode=1"),
    );
    v.push(case("no SetupMode variable", good().remove(SETUP)).x("boot.secure_boot", P));
    v.push(case("not a UEFI boot", good().remove("/sys/firmware/efi")).x("boot.secure_boot", NA));
    v.push(
        case(
            "not a UEFI boot, SB required",
            good().remove("/sys/firmware/efi"),
        )
        .params(params(|p| p.secure_boot_required = true))
        .x("boot.secure_boot", F),
    );
    v.push(
        case(
            "efivarfs not mounted",
            good()
                .remove("/sys/firmware/efi/efivars")
                .dir("/sys/firmware/efi/efivars"),
        )
        .x("boot.secure_boot", U),
    );
    v.push(case("no SecureBoot variable", good().remove(SB)).xi(
        "boot.secure_boot",
        F,
        "no SecureBoot variable",
    ));
    v.push(
        case(
            "SecureBoot variable too short",
            good().file(SB, [6u8, 0, 0]),
        )
        .x("boot.secure_boot", E),
    );
    v.push(case("SecureBoot value 7", good().file(SB, [6u8, 0, 0, 0, 7])).x("boot.secure_boot", E));
    v.push(case("SecureBoot EACCES", good().error(SB, "EACCES")).x("boot.secure_boot", U));
    v.push(
        case("efi dir EIO", good().error_stat("/sys/firmware/efi", "EIO")).x("boot.secure_boot", E),
    );
    let _ = EFI_GLOBAL_GUID;

    // ---- B3 ---------------------------------------------------------------------------------------
    v.push(
        case(
            "lockdown none",
            good().file(
                "/sys/kernel/security/lockdown",
                "[none] integrity confidentiality\n",
            ),
        )
        .x("kernel.lockdown", F),
    );
    v.push(
        case(
            "lockdown confidentiality",
            good().file(
                "/sys/kernel/security/lockdown",
                "none integrity [confidentiality]\n",
            ),
        )
        .x("kernel.lockdown", P),
    );
    v.push(
        case(
            "lockdown malformed",
            good().file("/sys/kernel/security/lockdown", "integrity\n"),
        )
        .x("kernel.lockdown", E),
    );
    v.push(
        case(
            "securityfs without lockdown file",
            good().remove("/sys/kernel/security/lockdown"),
        )
        .xi("kernel.lockdown", F, "not built in"),
    );
    v.push(
        case(
            "lockdown EACCES",
            good().error("/sys/kernel/security/lockdown", "EACCES"),
        )
        .x("kernel.lockdown", U),
    );

    // ---- B4 ----------------------------------------------------------------------------------------
    v.push(
        case("no TPM", good().remove("/sys/class/tpm"))
            .x("tpm.present", F)
            .xi("txt.measured_launch", F, "no TPM"),
    );
    v.push(
        case(
            "empty tpm class",
            good().remove("/sys/class/tpm").dir("/sys/class/tpm"),
        )
        .x("tpm.present", F),
    );
    v.push(
        case(
            "TPM 1.2",
            good().file("/sys/class/tpm/tpm0/tpm_version_major", "1\n"),
        )
        .xi("tpm.present", F, "TPM 1.2"),
    );
    v.push(
        case(
            "tpm version malformed",
            good().file("/sys/class/tpm/tpm0/tpm_version_major", "two\n"),
        )
        .x("tpm.present", E),
    );
    v.push(
        case(
            "old kernel without tpm_version_major",
            good().remove("/sys/class/tpm/tpm0/tpm_version_major"),
        )
        .x("tpm.present", P),
    );
    v.push(case("no /dev/tpmrm0", good().remove("/dev/tpmrm0")).xi("tpm.present", F, "tpmrm0"));
    v.push(
        case(
            "no /dev/tpmrm0, /dev not the host's",
            no_mountinfo(good().remove("/dev/tpmrm0")),
        )
        .x("tpm.present", U),
    );
    v.push(
        case("tpm class EIO", good().error("/sys/class/tpm", "EIO"))
            .x("tpm.present", E)
            .x("txt.measured_launch", E),
    );
    v.push(case("tpmrm0 stat EIO", good().error_stat("/dev/tpmrm0", "EIO")).x("tpm.present", E));
    v.push(
        case(
            "tpm version EACCES",
            good().error("/sys/class/tpm/tpm0/tpm_version_major", "EACCES"),
        )
        .x("tpm.present", U),
    );

    // ---- T2 ------------------------------------------------------------------------------------------
    v.push(case("PCR17 all ff", good().file(PCR17, "F".repeat(64))).xi(
        "txt.measured_launch",
        F,
        "all ff",
    ));
    v.push(case("PCR17 malformed", good().file(PCR17, "xyz")).x("txt.measured_launch", E));
    v.push(case("PCR17 not readable", good().remove(PCR17)).x("txt.measured_launch", U));
    v.push(
        case(
            "PCR17 extended without tboot evidence",
            good()
                .remove("/sys/kernel/debug/x86/tboot_log")
                .remove("/dev/kmsg"),
        )
        .xi("txt.measured_launch", U, "no tboot evidence"),
    );
    v.push(
        case(
            "tboot only in the boot log",
            good().remove("/sys/kernel/debug/x86/tboot_log"),
        )
        .x("txt.measured_launch", P),
    );
    let no_smx = "flags\t: fpu vmx\n";
    v.push(
        case("CPU without SMX", good().file("/proc/cpuinfo", no_smx)).x("txt.measured_launch", NA),
    );
    v.push(
        case(
            "CPU without SMX in a TXT pool",
            good().file("/proc/cpuinfo", no_smx),
        )
        .params(params(|p| p.txt_required = true))
        .x("txt.measured_launch", F),
    );

    // ---- N1 / N2 ---------------------------------------------------------------------------------------
    v.push(
        case(
            "nova.conf owned by root:root",
            good().owner("/etc/nova/nova.conf", 0, 0, 0o640),
        )
        .xi(
            "nova.config_ownership",
            F,
            "/etc/nova/nova.conf 0(root):0(root)",
        )
        .x("nova.config_mode", P),
    );
    v.push(
        case(
            "nova.conf owned by nova",
            good().owner("/etc/nova/nova.conf", NOVA_ID, NOVA_ID, 0o640),
        )
        .x("nova.config_ownership", F),
    );
    v.push(
        case(
            "no nova group in /etc/group",
            good().file("/etc/group", "root:x:0:\nkvm:x:108:\n"),
        )
        .x("nova.config_ownership", F),
    );
    v.push(case("/etc/group missing", good().remove("/etc/group")).x("nova.config_ownership", U));
    v.push(
        case(
            "nova.conf world-readable, dir 0755",
            good().owner("/etc/nova", 0, NOVA_ID, 0o755).owner(
                "/etc/nova/nova.conf",
                0,
                NOVA_ID,
                0o644,
            ),
        )
        .xi("nova.config_mode", F, "/etc/nova/nova.conf mode 0644"),
    );
    v.push(
        case(
            "nova.conf group-writable, dir 0750",
            good().owner("/etc/nova/nova.conf", 0, NOVA_ID, 0o664),
        )
        .x("nova.config_mode", P),
    );
    v.push(
        case("compute without nova", good().remove("/etc/nova"))
            .x("nova.config_ownership", F)
            .x("nova.config_mode", F)
            .x("nova.instances_space", P),
    );
    v.push(
        case(
            "other role without nova",
            good()
                .remove("/etc/nova")
                .remove("/var/lib/nova")
                .remove("/proc/900"),
        )
        .role(Role::Other)
        .x("nova.config_ownership", NA)
        .x("nova.config_mode", NA)
        .x("nova.instances_space", NA)
        .x("nova.compute_nonroot", NA),
    );
    v.push(
        case(
            "nova.conf stat EACCES",
            good().error_stat("/etc/nova/nova.conf", "EACCES"),
        )
        .x("nova.config_ownership", U)
        .x("nova.config_mode", U),
    );
    v.push(
        case(
            "nova.conf stat EIO",
            good().error_stat("/etc/nova/nova.conf", "EIO"),
        )
        .x("nova.config_ownership", E)
        .x("nova.config_mode", E),
    );

    // ---- N6 -------------------------------------------------------------------------------------------------
    v.push(
        case(
            "nova-compute as root",
            good().process(
                900,
                "nova-compute",
                &["/usr/bin/python3", "/usr/bin/nova-compute"],
                0,
                None,
            ),
        )
        .xi("nova.compute_nonroot", F, "pid 900"),
    );
    v.push(
        case("nova-compute not running", good().remove("/proc/900")).x("nova.compute_nonroot", F),
    );
    v.push(
        case(
            "nova-compute status malformed",
            good().file("/proc/900/status", "Uid: a b c d\n"),
        )
        .x("nova.compute_nonroot", E),
    );
    v.push(
        case(
            "nova-compute status EACCES",
            good().error("/proc/900/status", "EACCES"),
        )
        .x("nova.compute_nonroot", U),
    );
    v.push(
        case(
            "grep nova-compute is not nova-compute",
            good()
                .remove("/proc/900")
                .process(901, "grep", &["grep", "nova-compute"], 0, None),
        )
        .x("nova.compute_nonroot", F),
    );

    // ---- N7 -------------------------------------------------------------------------------------------------
    let inst = "/var/lib/nova/instances";
    v.push(
        case(
            "instances 3% free",
            good().statvfs(inst, 1000, 30, 1000, 900),
        )
        .xi("nova.instances_space", F, "3.0%"),
    );
    v.push(
        case(
            "instances 10% free",
            good().statvfs(inst, 1000, 100, 1000, 900),
        )
        .xi("nova.instances_space", I, "10.0%"),
    );
    v.push(
        case(
            "instances inodes 2% free",
            good().statvfs(inst, 1000, 900, 1000, 20),
        )
        .xi("nova.instances_space", F, "2.0% inodes"),
    );
    v.push(
        case(
            "instances thresholds from params",
            good().statvfs(inst, 1000, 100, 0, 0),
        )
        .params(params(|p| p.instances_free_pass_percent = 8.0))
        .xi("nova.instances_space", P, "no inode limit"),
    );
    v.push(
        case(
            "instances statvfs not in manifest",
            good()
                .remove("/var/lib/nova/instances")
                .dir("/var/lib/nova/instances"),
        )
        .x("nova.instances_space", U),
    );
    v.push(
        case(
            "instances statvfs zero blocks",
            good().statvfs(inst, 0, 0, 0, 0),
        )
        .x("nova.instances_space", E),
    );
    v.push(case("instances statvfs EIO", good().error(inst, "EIO")).x("nova.instances_space", E));
    v.push(
        case("instances path missing", good().remove("/var/lib/nova")).x("nova.instances_space", F),
    );
    v.push(
        case(
            "custom instances_path",
            good()
                .file(
                    "/etc/nova/nova.conf",
                    "[DEFAULT]\nstate_path = /srv/nova\ninstances_path = $state_path/inst\n",
                )
                .dir("/srv/nova/inst")
                .statvfs("/srv/nova", 100, 50, 0, 0),
        )
        .xi("nova.instances_space", P, "/srv/nova/inst"),
    );
    v.push(
        case(
            "nova.conf malformed",
            good().file("/etc/nova/nova.conf", "state_path = /x\n"),
        )
        .x("nova.instances_space", E),
    );
    v.push(
        case(
            "nova.conf relative instances_path",
            good().file("/etc/nova/nova.conf", "[DEFAULT]\ninstances_path = inst\n"),
        )
        .x("nova.instances_space", E),
    );
    v.push(
        case(
            "nova.conf EACCES",
            good().error("/etc/nova/nova.conf", "EACCES"),
        )
        .x("nova.instances_space", U),
    );

    // ---- L1 ---------------------------------------------------------------------------------------------------
    v.push(
        case(
            "libvirt TCP listening with auth_tcp = none",
            good()
                .file(LCONF, "listen_tcp = 1\nauth_tcp = \"none\"\n")
                .tcp_listen(16509),
        )
        .xi("libvirt.remote_access", F, "auth_tcp = \"none\""),
    );
    v.push(
        case(
            "libvirtd-tcp.socket enabled with auth_tcp = none",
            good().file(LCONF, "auth_tcp = \"none\"\n").symlink(
                "/etc/systemd/system/sockets.target.wants/libvirtd-tcp.socket",
                "/lib/systemd/system/libvirtd-tcp.socket",
            ),
        )
        .xi("libvirt.remote_access", F, "libvirtd-tcp.socket"),
    );
    v.push(
        case(
            "virtproxyd TCP with auth_tcp = none",
            good()
                .file("/etc/libvirt/virtproxyd.conf", "auth_tcp = \"none\"\n")
                .symlink(
                    "/etc/systemd/system/sockets.target.wants/virtproxyd-tcp.socket",
                    "/lib/systemd/system/virtproxyd-tcp.socket",
                ),
        )
        .xi("libvirt.remote_access", F, "virtproxyd"),
    );
    v.push(
        case("libvirt TCP listening with SASL", good().tcp_listen(16509)).xi(
            "libvirt.remote_access",
            I,
            "not encrypted",
        ),
    );
    v.push(case("libvirt TLS only", good().tcp_listen(16514)).x("libvirt.remote_access", P));
    v.push(
        case(
            "libvirt TLS without certificate verification",
            good()
                .file(LCONF, "tls_no_verify_certificate = 1\n")
                .tcp_listen(16514),
        )
        .x("libvirt.remote_access", F),
    );
    v.push(
        case(
            "libvirt TLS no-verify with SASL",
            good()
                .file(
                    LCONF,
                    "tls_no_verify_certificate = 1\nauth_tls = \"sasl\"\n",
                )
                .tcp_listen(16514),
        )
        .x("libvirt.remote_access", I),
    );
    v.push(
        case("/proc/net/tcp not visible", good().remove("/proc/net")).x("libvirt.remote_access", U),
    );
    v.push(
        case(
            "/proc/net/tcp malformed",
            good().file("/proc/net/tcp", "hdr\n 0: zz:zz 0:0 0A\n"),
        )
        .x("libvirt.remote_access", E),
    );
    v.push(
        case(
            "libvirtd.conf malformed",
            good().file(LCONF, "auth_tcp = none\n"),
        )
        .x("libvirt.remote_access", E),
    );
    v.push(
        case(
            "libvirtd.conf wrong type",
            good().file(LCONF, "auth_tcp = 0\n").tcp_listen(16509),
        )
        .x("libvirt.remote_access", E),
    );
    v.push(
        case("libvirtd.conf EACCES", good().error(LCONF, "EACCES")).x("libvirt.remote_access", U),
    );

    v
}

/// Generated cases for every sysctl check: good, bad, garbage, absent, EIO.
fn sysctl_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let base = || {
        FixtureBuilder::new()
            .dir("/proc/sys/kernel")
            .dir("/proc/sys/net/core")
            .dir("/proc/sys/fs")
            .file("/proc/1/comm", "init\n")
    };
    for info in check_catalogue(&CheckParams::default()) {
        let Some(key) = info.id.strip_prefix("sysctl.") else {
            continue;
        };
        let key: &'static str = Box::leak(key.to_owned().into_boxed_str());
        let id: &'static str = Box::leak(info.id.clone().into_boxed_str());
        let (good_v, bad_v) = match key {
            "kernel.randomize_va_space"
            | "net.core.bpf_jit_harden"
            | "fs.protected_fifos"
            | "fs.protected_regular" => ("2", "0"),
            "kernel.kptr_restrict"
            | "kernel.dmesg_restrict"
            | "kernel.yama.ptrace_scope"
            | "kernel.unprivileged_bpf_disabled" => ("1", "0"),
            "kernel.kexec_load_disabled"
            | "fs.protected_symlinks"
            | "fs.protected_hardlinks"
            | "net.ipv4.tcp_syncookies" => ("1", "0"),
            "kernel.perf_event_paranoid" => ("2", "1"),
            "kernel.sysrq" | "fs.suid_dumpable" | "kernel.tainted" => ("0", "1"),
            k if k.starts_with("net.bridge.") => ("1", "0"),
            "net.ipv4.ip_forward" => ("1", "0"),
            _ => ("0", "1"),
        };
        let bridge = key.starts_with("net.bridge.");
        let p = if bridge {
            params(|p| p.bridge_nf_required = Some(true))
        } else {
            CheckParams::default()
        };
        let with = |v: &str| base().sysctl(key, v);
        let want_bad = match key {
            "net.ipv4.ip_forward" => I,
            "kernel.tainted" => I,
            _ => F,
        };
        let want_good = if key == "net.ipv4.ip_forward" { I } else { P };
        v.push(
            case(&format!("{key} good"), with(good_v))
                .params(p.clone())
                .x(id, want_good),
        );
        v.push(
            case(&format!("{key} bad"), with(bad_v))
                .params(p.clone())
                .x(id, want_bad),
        );
        let garbage_want = if key == "net.ipv4.ip_forward" { I } else { E };
        v.push(
            case(&format!("{key} garbage"), with("abc"))
                .params(p.clone())
                .x(id, garbage_want),
        );
        v.push(
            case(
                &format!("{key} EIO"),
                with("1").error(&format!("/proc/sys/{}", key.replace('.', "/")), "EIO"),
            )
            .params(p.clone())
            .x(id, E),
        );
        v.push(
            case(
                &format!("{key} no /proc/sys"),
                FixtureBuilder::new().file("/proc/1/comm", "init\n"),
            )
            .params(p.clone())
            .x(id, U),
        );
        let absent_want = if info.states.contains(&NA) { NA } else { U };
        if !bridge {
            v.push(
                case(&format!("{key} absent"), base().dir("/proc/sys/net/ipv4"))
                    .params(p.clone())
                    .x(id, absent_want),
            );
        } else {
            v.push(
                case(&format!("{key} absent, br_netfilter not loaded"), base())
                    .params(p.clone())
                    .x(id, F),
            );
            v.push(case(&format!("{key} not required"), with("0")).x(id, NA));
            v.push(
                case(
                    &format!("{key} required by neutron iptables_hybrid"),
                    with("0").file(
                        "/etc/neutron/plugins/ml2/openvswitch_agent.ini",
                        "[securitygroup]\nfirewall_driver = iptables_hybrid\n",
                    ),
                )
                .x(id, F),
            );
            v.push(
                case(
                    &format!("{key} neutron config malformed"),
                    with("1").file("/etc/neutron/plugins/ml2/linuxbridge_agent.ini", "junk\n"),
                )
                .x(id, E),
            );
        }
    }
    v.push(
        case(
            "custom sysctl via params",
            FixtureBuilder::new().sysctl("vm.mmap_min_addr", "4096"),
        )
        .params(params(|p| {
            p.sysctl.insert("vm.mmap_min_addr".into(), ">=65536".into());
            p.sysctl.insert("kernel.kptr_restrict".into(), ">=2".into());
            p.sysctl.insert("kernel.sysrq".into(), "skip".into());
        }))
        .x("sysctl.vm.mmap_min_addr", F)
        .x("sysctl.kernel.kptr_restrict", U),
    );
    v.push(
        case("invalid sysctl params", FixtureBuilder::new())
            .params(params(|p| {
                p.sysctl
                    .insert("kernel.dmesg_restrict".into(), "most".into());
                p.sysctl.insert("../etc/shadow".into(), "1".into());
            }))
            .x("sysctl.kernel.dmesg_restrict", E)
            .x("sysctl..._etc_shadow", E),
    );
    v.push(
        case(
            "tainted kernel decoded",
            FixtureBuilder::new().sysctl("kernel.tainted", "12289"),
        )
        .xi("sysctl.kernel.tainted", I, "unsigned module"),
    );
    v
}

/// Statuses seen and failures of one case.
type Outcome = (Vec<(String, Status)>, Vec<String>);

fn run_case(c: &Case) -> Outcome {
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_with(&c.b, c.role, &c.params)
    })) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return (
                Vec::new(),
                vec![format!("[{}] invariant violated: {msg}", c.name)],
            );
        }
    };
    let seen = r.results.iter().map(|x| (x.id.clone(), x.status)).collect();
    let mut failures = Vec::new();
    for (id, st, needle) in &c.expect {
        match r.get(id) {
            None => failures.push(format!("[{}] no result {id}", c.name)),
            Some(x) => {
                if x.status != *st {
                    failures.push(format!(
                        "[{}] {id}: expected {st}, got {} ({}; items {:?})",
                        c.name, x.status, x.reason, x.items
                    ));
                }
                if let Some(n) = needle {
                    let hay = format!("{} | {}", x.reason, x.items.join(" | "));
                    if !hay.contains(n) {
                        failures.push(format!("[{}] {id}: {n:?} not in {hay:?}", c.name));
                    }
                }
            }
        }
    }
    (seen, failures)
}

#[test]
fn golden_cases_and_state_coverage() {
    let all: Vec<Case> = cases().into_iter().chain(sysctl_cases()).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let chunk = all.len().div_ceil(threads);
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|cs| s.spawn(move || cs.iter().map(run_case).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("case thread"))
            .collect()
    });
    let mut seen = Seen::new();
    let mut failures = Vec::new();
    for (s, f) in results {
        seen.extend(s);
        failures.extend(f);
    }
    // Coverage: every declared state of every check is produced by some case.
    for info in check_catalogue(&CheckParams::default()) {
        for st in &info.states {
            if !seen.contains(&(info.id.clone(), *st)) {
                failures.push(format!("coverage: {} never produced {st}", info.id));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failures ({} cases):\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
