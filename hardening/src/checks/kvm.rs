//! K1 `kvm.device`, K2 `kvm.api`, K4 `kvm.nested_disabled`, K5 `mem.ksm_off`
//! (catalogue §2.3).

use super::{err_ev, CheckFn, Ctx, Def, Out};
use crate::host::{FileKind, HostError, Metadata};
use crate::report::{Evidence, Role, Severity, Status};

pub(crate) const DEVICE: Def<'static> = Def {
    id: "kvm.device",
    title: "KVM device node exists and is not world-accessible",
    severity: Severity::High,
    remediation: "Load kvm and kvm_intel/kvm_amd (enable VT-x/AMD-V in firmware) and set /dev/kvm to 0660 root:kvm via a udev rule.",
    refs: &["HARDENING-CHECKS:K1", "libvirt:drvqemu#kvm"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const API: Def<'static> = Def {
    id: "kvm.api",
    title: "KVM is usable (KVM_GET_API_VERSION = 12)",
    severity: Severity::High,
    remediation:
        "Enable hardware virtualisation in firmware and load the kvm_intel or kvm_amd module.",
    refs: &[
        "HARDENING-CHECKS:K2",
        "linux:Documentation/virt/kvm/api.rst#KVM_GET_API_VERSION",
    ],
    states: &[
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Unknown,
        Status::NotApplicable,
    ],
    host_scoped: true,
};

pub(crate) const NESTED: Def<'static> = Def {
    id: "kvm.nested_disabled",
    title: "Guests cannot run their own hypervisor (nested virtualisation off)",
    severity: Severity::Medium,
    remediation: "Set options kvm_intel nested=0 (or kvm_amd nested=0) in /etc/modprobe.d and reload the module, or set nested_virt_allowed in the profile.",
    refs: &["HARDENING-CHECKS:K4"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const KSM: Def<'static> = Def {
    id: "mem.ksm_off",
    title: "No cross-VM page de-duplication (KSM stopped)",
    severity: Severity::Medium,
    remediation: "echo 2 > /sys/kernel/mm/ksm/run (unmerge) and disable ksm/ksmtuned services.",
    refs: &[
        "HARDENING-CHECKS:K5",
        "OSSG:hypervisor-selection#memory-optimization",
    ],
    states: &[
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Unknown,
        Status::NotApplicable,
    ],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![
        (&DEVICE, device),
        (&API, api),
        (&NESTED, nested),
        (&KSM, ksm),
    ]
}

fn mode_string(m: &Metadata) -> String {
    let t = match m.kind {
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6u32, 3, 0] {
        let bits = (m.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `crw-rw---- 0(root):108(kvm) 10:232`.
pub(crate) fn describe(ctx: &Ctx, m: &Metadata) -> String {
    let mut s = format!(
        "{} {}:{} mode {:04o}",
        mode_string(m),
        ctx.user_name(m.uid),
        ctx.group_name(m.gid),
        m.mode
    );
    if matches!(m.kind, FileKind::CharDevice | FileKind::BlockDevice) {
        s.push_str(&format!(" {}:{}", m.rdev_major, m.rdev_minor));
    }
    s
}

/// The verdict when /dev/kvm does not exist.
fn kvm_absent(ctx: &Ctx, e: &HostError, ev: Vec<Evidence>) -> Out {
    if ctx.role == Role::Other {
        return Out::new(
            Status::NotApplicable,
            "no /dev/kvm and the role is not compute",
            ev,
        );
    }
    if ctx.dev_is_host() {
        return Out::new(
            Status::Fail,
            "no /dev/kvm on the host's devtmpfs: KVM is not available (module not loaded or virtualisation disabled)",
            ev,
        );
    }
    Out::new(
        Status::Unknown,
        format!("/dev/kvm not visible and /dev is not the host's devtmpfs: {e}"),
        ev,
    )
}

/// K1.
fn device(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    match ctx.host.metadata("/dev/kvm") {
        Ok(m) => {
            ev.push(Evidence::new("/dev/kvm", describe(ctx, &m)));
            if m.kind != FileKind::CharDevice || m.rdev_major != 10 || m.rdev_minor != 232 {
                return Out::new(
                    Status::Fail,
                    format!(
                        "/dev/kvm is not the KVM character device 10:232 ({})",
                        describe(ctx, &m)
                    ),
                    ev,
                )
                .items(vec!["/dev/kvm".into()]);
            }
            if m.mode & 0o006 != 0 {
                return Out::new(
                    Status::Fail,
                    format!("/dev/kvm is world-accessible (mode {:04o})", m.mode),
                    ev,
                )
                .items(vec!["/dev/kvm".into()]);
            }
            Out::new(
                Status::Pass,
                format!("/dev/kvm is char 10:232, mode {:04o}", m.mode),
                ev,
            )
        }
        Err(e) if e.is_not_found() => {
            ev.push(err_ev(&e));
            if let Some(m) = ctx.mount_of("/dev") {
                ev.push(Evidence::new(
                    "/proc/self/mountinfo",
                    format!("/dev is {} on {}", m.fs_type, m.mount_point),
                ));
            }
            kvm_absent(ctx, &e, ev)
        }
        Err(e) => Out::from_err(&e, "/dev/kvm", ev),
    }
}

/// K2.
fn api(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    match ctx.host.kvm_api_version() {
        Ok(v) => {
            ev.push(Evidence::new("/dev/kvm:KVM_GET_API_VERSION", v.to_string()));
            if v == 12 {
                Out::new(Status::Pass, "KVM_GET_API_VERSION returned 12", ev)
            } else {
                Out::new(
                    Status::Fail,
                    format!("KVM_GET_API_VERSION returned {v}, expected 12"),
                    ev,
                )
            }
        }
        Err(e) => {
            ev.push(Evidence::new(
                "/dev/kvm:KVM_GET_API_VERSION",
                format!("<{}>", e.detail),
            ));
            if e.is_errno(nix::libc::ENXIO) || e.is_errno(nix::libc::ENODEV) {
                Out::new(Status::Fail, format!("KVM is not usable: {e}"), ev)
            } else if e.is_not_found() {
                kvm_absent(ctx, &e, ev)
            } else if e.is_invisible() {
                Out::new(Status::Unknown, format!("KVM probe not possible: {e}"), ev)
            } else {
                Out::new(Status::Error, format!("KVM probe failed: {e}"), ev)
            }
        }
    }
}

/// K4.
fn nested(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let mut found: Option<(String, String)> = None;
    let mut module_dirs = Vec::new();
    for m in ["kvm_intel", "kvm_amd"] {
        let p = format!("/sys/module/{m}/parameters/nested");
        match ctx.host.read_string(&p) {
            Ok(v) => {
                ev.push(Evidence::new(&p, &v));
                found = Some((m.to_owned(), v.trim().to_owned()));
                break;
            }
            Err(e) if e.is_not_found() => {
                if matches!(ctx.host.exists(&format!("/sys/module/{m}")), Ok(true)) {
                    module_dirs.push(m);
                }
            }
            Err(e) => return Out::from_err(&e, &p, ev),
        }
    }
    let Some((module, value)) = found else {
        if !module_dirs.is_empty() {
            return Out::new(
                Status::Unknown,
                format!(
                    "{} loaded but its nested parameter is not visible",
                    module_dirs.join(",")
                ),
                ev,
            );
        }
        if ctx.dir_visible("/sys/module") {
            ev.push(Evidence::new("/sys/module", "no kvm_intel or kvm_amd"));
            return Out::new(
                Status::NotApplicable,
                "neither kvm_intel nor kvm_amd is loaded",
                ev,
            );
        }
        return Out::new(Status::Unknown, "/sys/module not visible", ev);
    };
    match value.as_str() {
        "N" | "0" => Out::new(Status::Pass, format!("{module}.nested = {value}"), ev),
        "Y" | "1" if ctx.params.nested_virt_allowed => Out::new(
            Status::Pass,
            format!("{module}.nested = {value}, allowed by the profile"),
            ev,
        ),
        "Y" | "1" => Out::new(
            Status::Fail,
            format!("nested virtualisation enabled ({module}.nested = {value})"),
            ev,
        )
        .items(vec![format!("{module}.nested")]),
        other => Out::new(
            Status::Error,
            format!("{module}.nested has an unexpected value {other:?}"),
            ev,
        ),
    }
}

/// K5.
fn ksm(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    match ctx.read_ev("/sys/kernel/mm/ksm/run", &mut ev) {
        Ok(v) => match v.trim() {
            "0" => Out::new(Status::Pass, "KSM stopped (run = 0)", ev),
            "2" => Out::new(Status::Pass, "KSM stopped and unmerged (run = 2)", ev),
            "1" => Out::new(
                Status::Fail,
                "KSM is merging pages across guests (run = 1)",
                ev,
            ),
            other => Out::new(
                Status::Error,
                format!("unexpected ksm/run value {other:?}"),
                ev,
            ),
        },
        Err(e) if e.is_not_found() => {
            if matches!(ctx.host.exists("/sys/kernel/mm"), Ok(true)) {
                Out::new(
                    Status::NotApplicable,
                    "kernel built without KSM (no /sys/kernel/mm/ksm)",
                    ev,
                )
            } else {
                Out::new(Status::Unknown, "/sys/kernel/mm not visible", ev)
            }
        }
        Err(e) => {
            ev.pop();
            Out::from_err(&e, "/sys/kernel/mm/ksm/run", ev)
        }
    }
}
