//! B2 `boot.secure_boot`, B3 `kernel.lockdown`, B4 `tpm.present`,
//! T2 `txt.measured_launch` (catalogue §2.6).

use super::{err_ev, CheckFn, Ctx, Def, Out};
use crate::parse;
use crate::report::{Evidence, Severity, Status};

pub(crate) const SECURE_BOOT: Def<'static> = Def {
    id: "boot.secure_boot",
    title: "UEFI Secure Boot was on at boot",
    severity: Severity::High,
    remediation: "Enrol platform keys (leave setup mode) and enable Secure Boot in the firmware; boot via UEFI.",
    refs: &["HARDENING-CHECKS:B2", "Lynis:BOOT-5116", "CaC:secure_boot_enabled", "OSSG:integrity-life-cycle#secure-bootstrapping"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const LOCKDOWN: Def<'static> = Def {
    id: "kernel.lockdown",
    title: "Kernel lockdown (integrity or confidentiality) is active",
    severity: Severity::Medium,
    remediation:
        "Boot with lockdown=integrity (or Secure Boot on distributions that tie lockdown to it).",
    refs: &[
        "HARDENING-CHECKS:B3",
        "linux:kernel_lockdown.7",
        "Lynis:issue-1477",
    ],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown],
    host_scoped: true,
};

pub(crate) const TPM: Def<'static> = Def {
    id: "tpm.present",
    title: "A TPM 2.0 is visible to the OS",
    severity: Severity::High,
    remediation: "Enable the TPM 2.0 in firmware and load the tpm_tis/tpm_crb driver; /dev/tpmrm0 must exist.",
    refs: &["HARDENING-CHECKS:B4", "OSSG:integrity-life-cycle#tpm", "linux:ABI/stable/sysfs-class-tpm"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown],
    host_scoped: true,
};

pub(crate) const TXT: Def<'static> = Def {
    id: "txt.measured_launch",
    title: "The boot went through an Intel TXT measured launch",
    severity: Severity::Medium,
    remediation: "Boot through tboot with a matching SINIT ACM, TXT and VT-d enabled in firmware; the authoritative proof is PCR17/18 in the quote.",
    refs: &["HARDENING-CHECKS:T2", "tboot:txt-stat.c", "linux:arch/x86/kernel/tboot.c", "OSSN-0059"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![
        (&SECURE_BOOT, secure_boot),
        (&LOCKDOWN, lockdown),
        (&TPM, tpm_present),
        (&TXT, txt),
    ]
}

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// B2.
fn secure_boot(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    match ctx.host.exists("/sys/firmware/efi") {
        Ok(true) => {}
        Ok(false) => {
            if !matches!(ctx.host.exists("/sys/firmware"), Ok(true)) {
                return Out::new(Status::Unknown, "/sys/firmware not visible", ev);
            }
            ev.push(Evidence::new("/sys/firmware/efi", "<absent>"));
            if ctx.params.secure_boot_required {
                return Out::new(
                    Status::Fail,
                    "not a UEFI boot, and the profile requires Secure Boot",
                    ev,
                );
            }
            return Out::new(
                Status::NotApplicable,
                "not a UEFI boot (no /sys/firmware/efi)",
                ev,
            );
        }
        Err(e) => return Out::from_err(&e, "/sys/firmware/efi", ev),
    }
    let var = |name: &str, ev: &mut Vec<Evidence>| -> Result<Option<u8>, Out> {
        let p = format!("/sys/firmware/efi/efivars/{name}-{EFI_GLOBAL}");
        match ctx.host.read(&p) {
            Ok(b) => {
                ev.push(Evidence::bytes(&p, &b));
                parse::efivar_byte(&b)
                    .map(Some)
                    .map_err(|m| Out::new(Status::Error, format!("{p}: {m}"), ev.clone()))
            }
            Err(e) if e.is_not_found() => {
                ev.push(err_ev(&e));
                Ok(None)
            }
            Err(e) => Err(Out::from_err(&e, &p, ev.clone())),
        }
    };
    let sb = match var("SecureBoot", &mut ev) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let Some(sb) = sb else {
        if ctx.dir_visible("/sys/firmware/efi/efivars") {
            return Out::new(
                Status::Fail,
                "UEFI boot but the firmware has no SecureBoot variable (Secure Boot unsupported)",
                ev,
            );
        }
        return Out::new(
            Status::Unknown,
            "UEFI boot but efivarfs is not mounted (/sys/firmware/efi/efivars empty)",
            ev,
        );
    };
    let setup = match var("SetupMode", &mut ev) {
        Ok(v) => v,
        Err(o) => return o,
    };
    match (sb, setup) {
        (1, Some(0) | None) => Out::new(
            Status::Pass,
            if setup.is_some() {
                "Secure Boot enabled (SecureBoot=1, SetupMode=0)"
            } else {
                "Secure Boot enabled (SecureBoot=1; no SetupMode variable)"
            },
            ev,
        ),
        (1, Some(1)) => Out::new(
            Status::Fail,
            "SecureBoot=1 but the firmware is in setup mode (SetupMode=1): no keys enforced",
            ev,
        )
        .items(vec!["SetupMode=1".into()]),
        (0, _) => Out::new(Status::Fail, "Secure Boot disabled (SecureBoot=0)", ev)
            .items(vec!["SecureBoot=0".into()]),
        (s, m) => Out::new(
            Status::Error,
            format!("unexpected efivar values SecureBoot={s} SetupMode={m:?}"),
            ev,
        ),
    }
}

/// B3.
fn lockdown(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let p = "/sys/kernel/security/lockdown";
    match ctx.read_ev(p, &mut ev) {
        Ok(text) => {
            let active: Vec<&str> = text
                .split_whitespace()
                .filter_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
                .collect();
            match active.as_slice() {
                ["integrity"] | ["confidentiality"] => Out::new(
                    Status::Pass,
                    format!("kernel lockdown mode {}", active[0]),
                    ev,
                ),
                ["none"] => Out::new(Status::Fail, "kernel lockdown is off (none)", ev),
                _ => Out::new(
                    Status::Error,
                    format!("unexpected lockdown file content {:?}", text.trim()),
                    ev,
                ),
            }
        }
        Err(e) if e.is_not_found() => {
            if ctx.lsm().securityfs_visible {
                return Out::new(Status::Fail, "securityfs is mounted but has no lockdown file: the lockdown LSM is not built in", ev);
            }
            let mut reason = "securityfs is not mounted".to_owned();
            if let Some(l) = ctx
                .kmsg_find("locked down")
                .or_else(|| ctx.kmsg_find("Lockdown:"))
            {
                ev.push(Evidence::new("/dev/kmsg", l));
                reason.push_str(&format!("; boot log says: {l}"));
            }
            Out::new(Status::Unknown, reason, ev)
        }
        Err(e) => {
            ev.pop();
            Out::from_err(&e, p, ev)
        }
    }
}

/// The first `tpmN` class device, or the `Out` explaining why there is none.
fn tpm_device(ctx: &Ctx, ev: &mut Vec<Evidence>) -> Result<String, Out> {
    match ctx.host.read_dir("/sys/class/tpm") {
        Ok(v) => {
            ev.push(Evidence::new(
                "/sys/class/tpm",
                if v.is_empty() {
                    "(empty)".to_owned()
                } else {
                    v.join(" ")
                },
            ));
            let mut tpms: Vec<&String> = v
                .iter()
                .filter(|n| {
                    n.strip_prefix("tpm")
                        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect();
            tpms.sort_by_key(|n| n[3..].parse::<u32>().unwrap_or(u32::MAX));
            match tpms.first() {
                Some(t) => Ok((*t).clone()),
                None => Err(Out::new(
                    Status::Fail,
                    "no TPM class device in /sys/class/tpm",
                    ev.clone(),
                )),
            }
        }
        Err(e) if e.is_not_found() => {
            ev.push(err_ev(&e));
            if matches!(ctx.host.exists("/sys/class"), Ok(true)) {
                Err(Out::new(
                    Status::Fail,
                    "no TPM: /sys/class/tpm does not exist",
                    ev.clone(),
                ))
            } else {
                Err(Out::new(
                    Status::Unknown,
                    "sysfs (/sys/class) not visible",
                    ev.clone(),
                ))
            }
        }
        Err(e) => Err(Out::from_err(&e, "/sys/class/tpm", ev.clone())),
    }
}

/// B4.
fn tpm_present(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let dev = match tpm_device(ctx, &mut ev) {
        Ok(d) => d,
        Err(o) => return o,
    };
    let vp = format!("/sys/class/tpm/{dev}/tpm_version_major");
    let version = match ctx.read_ev(&vp, &mut ev) {
        Ok(v) => match v.trim() {
            "2" => Some(2),
            "1" => Some(1),
            other => {
                return Out::new(
                    Status::Error,
                    format!("unexpected tpm_version_major {other:?}"),
                    ev,
                )
            }
        },
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            ev.pop();
            return Out::from_err(&e, &vp, ev);
        }
    };
    if version == Some(1) {
        return Out::new(
            Status::Fail,
            format!("{dev} is a TPM 1.2; TPM 2.0 is required"),
            ev,
        )
        .items(vec![dev]);
    }
    let rm = format!("/dev/tpmrm{}", &dev[3..]);
    match ctx.host.exists(&rm) {
        Ok(true) => {
            ev.push(Evidence::new(&rm, "exists"));
            let how = if version.is_some() {
                "tpm_version_major = 2"
            } else {
                "no tpm_version_major (kernel < 5.6); the resource manager implies TPM 2.0"
            };
            Out::new(
                Status::Pass,
                format!("TPM 2.0 present: {dev}, {rm} ({how})"),
                ev,
            )
        }
        Ok(false) => {
            ev.push(Evidence::new(&rm, "<absent>"));
            if ctx.dev_is_host() {
                Out::new(
                    Status::Fail,
                    format!("{dev} exists but there is no {rm} (no TPM 2.0 resource manager)"),
                    ev,
                )
            } else {
                Out::new(
                    Status::Unknown,
                    format!(
                        "{dev} exists but {rm} is not visible (/dev is not the host's devtmpfs)"
                    ),
                    ev,
                )
            }
        }
        Err(e) => Out::from_err(&e, &rm, ev),
    }
}

/// T2: PCR17 extended (not all-ff) and the kernel found the tboot shared page.
fn txt(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    match ctx.cpu_flags() {
        Ok(flags) => {
            let smx = flags.contains("smx");
            ev.push(Evidence::new(
                "/proc/cpuinfo",
                format!("smx flag {}", if smx { "present" } else { "absent" }),
            ));
            if !smx && !ctx.params.txt_required {
                return Out::new(
                    Status::NotApplicable,
                    "CPU without SMX (no Intel TXT) and the pool does not require TXT",
                    ev,
                );
            }
            if !smx {
                return Out::new(
                    Status::Fail,
                    "the pool requires TXT but the CPU reports no SMX",
                    ev,
                );
            }
        }
        Err(e) if e.is_invisible() => ev.push(err_ev(e)),
        Err(e) => return Out::from_err(e, "/proc/cpuinfo", ev),
    }
    let dev = match tpm_device(ctx, &mut ev) {
        Ok(d) => d,
        Err(mut o) => {
            if o.status == Status::Fail {
                o.reason = format!(
                    "no TPM, so no measured launch can be recorded ({})",
                    o.reason
                );
            }
            return o;
        }
    };
    let p = format!("/sys/class/tpm/{dev}/pcr-sha256/17");
    let pcr = match ctx.read_ev(&p, &mut ev) {
        Ok(v) => v.trim().to_ascii_lowercase(),
        Err(e) => {
            ev.pop();
            let mut o = Out::from_err(&e, &p, ev);
            if o.status == Status::Unknown {
                o.reason = format!("PCR17 not readable (kernel < 5.12, no sha256 bank, or no access) and /dev/mem is not used: {e}");
            }
            return o;
        }
    };
    if pcr.len() != 64 || !pcr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Out::new(
            Status::Error,
            format!("PCR17 is not 64 hex digits: {pcr:?}"),
            ev,
        );
    }
    if pcr.bytes().all(|b| b == b'f') {
        return Out::new(
            Status::Fail,
            "PCR17 is at its reset value (all ff): no dynamic launch happened",
            ev,
        );
    }
    let log_line = ctx
        .kmsg_find("tboot: found shared page at phys addr")
        .map(str::to_owned);
    let tboot_log = matches!(ctx.host.exists("/sys/kernel/debug/x86/tboot_log"), Ok(true));
    if let Some(l) = &log_line {
        ev.push(Evidence::new("/dev/kmsg", l));
    }
    if tboot_log {
        ev.push(Evidence::new("/sys/kernel/debug/x86/tboot_log", "exists"));
    }
    if log_line.is_some() || tboot_log {
        return Out::new(
            Status::Pass,
            "PCR17 extended and the kernel found the tboot shared page (TXT measured launch)",
            ev,
        );
    }
    Out::new(
        Status::Unknown,
        "PCR17 was extended but there is no tboot evidence (boot log, tboot_log); the quote's PCR17/18 decide",
        ev,
    )
}
