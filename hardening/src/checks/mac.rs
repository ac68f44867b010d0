//! M1 `lsm.active`, M2 `apparmor.enabled`, M3 `apparmor.profiles_enforcing`,
//! M5 `selinux.enforcing`, M7 `mac.enforcing_any` (catalogue §2.2).

use super::facts::{AaEnabled, Mac, ProfilesErr, SeState, Tri, AA_ENFORCING_MODES, AA_LAX_MODES};
use super::{cap_items, err_ev, err_status, CheckFn, Ctx, Def, Out};
use crate::params::MacSelection;
use crate::parse::glob_match;
use crate::report::{Evidence, Severity, Status};

pub(crate) const LSM_ACTIVE: Def<'static> = Def {
    id: "lsm.active",
    title: "Linux security modules the kernel initialised",
    severity: Severity::Low,
    remediation: "Mount securityfs (mount -t securityfs securityfs /sys/kernel/security) so the LSM list is visible.",
    refs: &["HARDENING-CHECKS:M1"],
    states: &[Status::Informational, Status::Unknown, Status::Error],
    host_scoped: true,
};

pub(crate) const AA_ENABLED: Def<'static> = Def {
    id: "apparmor.enabled",
    title: "AppArmor module is active",
    severity: Severity::High,
    remediation: "Boot with AppArmor enabled (apparmor=1 security=apparmor or lsm=...,apparmor), install apparmor and make sure securityfs is mounted.",
    refs: &["HARDENING-CHECKS:M2", "Lynis:MACF-6204", "Lynis:MACF-6208", "ansible-hardening:V-71989", "CIS-Ubuntu:1.6.1"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const AA_PROFILES: Def<'static> = Def {
    id: "apparmor.profiles_enforcing",
    title: "Loaded AppArmor profiles are enforced, not in complain mode",
    severity: Severity::Medium,
    remediation: "Put the listed profiles in enforce mode (aa-enforce PROFILE) or add them to apparmor_complain_allowed with a documented reason.",
    refs: &["HARDENING-CHECKS:M3", "CaC:all_apparmor_profiles_enforced", "CIS-Ubuntu-22.04:1.6.1.4", "Lynis:MACF-6208"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const SE_ENFORCING: Def<'static> = Def {
    id: "selinux.enforcing",
    title: "SELinux is active and enforcing",
    severity: Severity::High,
    remediation:
        "Set SELINUX=enforcing in /etc/selinux/config, relabel if needed, and run setenforce 1.",
    refs: &[
        "HARDENING-CHECKS:M5",
        "CaC:selinux_state",
        "CCE-80869-1",
        "RHEL-07-020210",
        "Lynis:MACF-6234",
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

pub(crate) const MAC_ANY: Def<'static> = Def {
    id: "mac.enforcing_any",
    title: "At least one MAC framework confines processes",
    severity: Severity::High,
    remediation: "Enable and enforce AppArmor (Debian/Ubuntu) or SELinux (RHEL family).",
    refs: &[
        "HARDENING-CHECKS:M7",
        "OSSG:integrity-life-cycle#mac",
        "OSSG:hypervisor-selection#mac-policy",
    ],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![
        (&LSM_ACTIVE, lsm_active),
        (&AA_ENABLED, apparmor_enabled),
        (&AA_PROFILES, apparmor_profiles),
        (&SE_ENFORCING, selinux_enforcing),
        (&MAC_ANY, mac_any),
    ]
}

/// `informational` with the list; `unknown` when securityfs is not mounted
/// (the boot-log line, if any, is attached as evidence).
fn lsm_active(ctx: &Ctx) -> Out {
    let lsm = ctx.lsm();
    match (&lsm.read_error, &lsm.list) {
        (None, Some(list)) => {
            if list.is_empty() {
                return Out::new(
                    Status::Error,
                    "/sys/kernel/security/lsm is empty",
                    lsm.evidence.clone(),
                );
            }
            Out::new(
                Status::Informational,
                format!("active LSMs: {}", list.join(",")),
                lsm.evidence.clone(),
            )
            .items(list.clone())
        }
        (Some(e), list) => {
            let status = err_status(e);
            let mut reason = if status == Status::Unknown {
                format!("LSM list not visible: {e}")
            } else {
                format!("cannot read the LSM list: {e}")
            };
            if let Some(l) = list {
                reason.push_str(&format!("; boot log says lsm={}", l.join(",")));
            }
            Out::new(status, reason, lsm.evidence.clone())
        }
        (None, None) => Out::new(Status::Error, "LSM list missing", lsm.evidence.clone()),
    }
}

fn selinux_selected_reason(ctx: &Ctx) -> String {
    format!("SELinux is the MAC framework ({})", ctx.mac_source())
}

/// M2, see the catalogue: pass = `Y` and the securityfs directory exists.
fn apparmor_enabled(ctx: &Ctx) -> Out {
    if ctx.selected_mac() == Mac::SeLinux {
        return Out::new(
            Status::NotApplicable,
            selinux_selected_reason(ctx),
            ctx.apparmor().evidence.clone(),
        );
    }
    let aa = ctx.apparmor();
    let mut ev = aa.evidence.clone();
    ev.extend(ctx.lsm().evidence.iter().cloned());
    match &aa.enabled {
        AaEnabled::Yes => match &aa.fs_dir {
            Ok(true) => {
                ev.push(Evidence::new("/sys/kernel/security/apparmor", "exists"));
                Out::new(Status::Pass, "AppArmor enabled (Y) and its securityfs interface is present", ev)
            }
            Ok(false) if ctx.lsm().securityfs_visible => {
                ev.push(Evidence::new("/sys/kernel/security/apparmor", "absent"));
                Out::new(
                    Status::Fail,
                    "module parameter says Y but securityfs has no apparmor directory: AppArmor did not initialise (not in lsm=?)",
                    ev,
                )
            }
            Ok(false) => Out::new(
                Status::Unknown,
                "module parameter says Y but securityfs is not mounted, so policy loading cannot be confirmed",
                ev,
            ),
            Err(e) => Out::from_err(e, "/sys/kernel/security/apparmor", ev),
        },
        _ => match ctx.aa_active() {
            Tri::No(r) => Out::new(Status::Fail, r, ev),
            Tri::Unknown(r) => Out::new(Status::Unknown, r, ev),
            Tri::Error(r) => Out::new(Status::Error, r, ev),
            Tri::Yes => Out::new(Status::Error, "inconsistent AppArmor facts", ev),
        },
    }
}

/// M3: every loaded profile in enforce/kill mode, or complain-mode ones allowed.
fn apparmor_profiles(ctx: &Ctx) -> Out {
    if ctx.selected_mac() == Mac::SeLinux {
        return Out::new(
            Status::NotApplicable,
            selinux_selected_reason(ctx),
            Vec::new(),
        );
    }
    let aa = ctx.apparmor();
    let mut ev = aa.evidence.clone();
    match ctx.aa_active() {
        Tri::No(r) => {
            return Out::new(
                Status::NotApplicable,
                format!("AppArmor is not enabled: {r}"),
                ev,
            )
        }
        Tri::Error(r) => return Out::new(Status::Error, r, ev),
        Tri::Yes | Tri::Unknown(_) => {}
    }
    let list = match &aa.profiles {
        Ok(l) => l,
        Err(ProfilesErr::Read(e)) => {
            ev.push(err_ev(e));
            let why = if e.is_denied() {
                "permission denied (reading the profiles list needs root)".to_owned()
            } else if !ctx.lsm().securityfs_visible {
                "securityfs is not mounted".to_owned()
            } else {
                e.to_string()
            };
            return Out::new(
                Status::Unknown,
                format!("AppArmor profiles list not visible: {why}"),
                ev,
            );
        }
        Err(ProfilesErr::Bad(m)) => {
            return Out::new(
                Status::Error,
                format!("malformed AppArmor profiles list: {m}"),
                ev,
            );
        }
    };
    let allowed = |name: &str| {
        ctx.params
            .apparmor_complain_allowed
            .iter()
            .any(|p| glob_match(p, name))
    };
    let mut offenders = Vec::new();
    let mut exempt = Vec::new();
    let mut unknown_modes = Vec::new();
    let mut enforced = 0usize;
    for (name, mode) in list {
        if AA_ENFORCING_MODES.contains(&mode.as_str()) {
            enforced += 1;
        } else if AA_LAX_MODES.contains(&mode.as_str()) {
            if allowed(name) {
                exempt.push(format!("{name} ({mode})"));
            } else {
                offenders.push(format!("{name} ({mode})"));
            }
        } else {
            unknown_modes.push(format!("{name} ({mode})"));
        }
    }
    let counts = format!(
        "{} profiles: {enforced} enforced, {} allowed in complain mode",
        list.len(),
        exempt.len()
    );
    if !offenders.is_empty() {
        let mut reason = format!("{} profile(s) not enforced ({counts})", offenders.len());
        if !unknown_modes.is_empty() {
            reason.push_str(&format!("; unknown modes: {}", unknown_modes.join(", ")));
        }
        return Out::new(Status::Fail, reason, ev).items(cap_items(offenders));
    }
    if !unknown_modes.is_empty() {
        return Out::new(
            Status::Error,
            format!(
                "unknown AppArmor profile mode(s): {}",
                unknown_modes.join(", ")
            ),
            ev,
        )
        .items(cap_items(unknown_modes));
    }
    if list.is_empty() {
        return Out::new(
            Status::Fail,
            "AppArmor is enabled but no profiles are loaded",
            ev,
        );
    }
    Out::new(Status::Pass, counts, ev).items(exempt)
}

/// M5: `/sys/fs/selinux/enforce` is `1`.
fn selinux_enforcing(ctx: &Ctx) -> Out {
    let (state, ev) = ctx.selinux();
    let ev = ev.clone();
    if ctx.selected_mac() == Mac::AppArmor {
        return Out::new(
            Status::NotApplicable,
            format!("AppArmor is the MAC framework ({})", ctx.mac_source()),
            ev,
        );
    }
    match state {
        SeState::Enforcing => Out::new(Status::Pass, "SELinux is enforcing", ev),
        SeState::Permissive => Out::new(Status::Fail, "SELinux is permissive (enforce = 0)", ev),
        SeState::NotEnabled(r) => Out::new(Status::Fail, r.clone(), ev),
        SeState::Unknown(r) => Out::new(Status::Unknown, r.clone(), ev),
        SeState::Error(r) => Out::new(Status::Error, r.clone(), ev),
    }
}

/// M7: AppArmor confining (enabled + an enforced profile) or SELinux enforcing,
/// limited to the selected framework unless `mac = "auto"`.
fn mac_any(ctx: &Ctx) -> Out {
    let aa = || ctx.aa_confines();
    let se = || match &ctx.selinux().0 {
        SeState::Enforcing => Tri::Yes,
        SeState::Permissive => Tri::No("SELinux permissive".into()),
        SeState::NotEnabled(r) => Tri::No(r.clone()),
        SeState::Unknown(r) => Tri::Unknown(r.clone()),
        SeState::Error(r) => Tri::Error(r.clone()),
    };
    let considered: Vec<(&str, Tri)> = match ctx.params.mac {
        MacSelection::Apparmor => vec![("AppArmor", aa())],
        MacSelection::Selinux => vec![("SELinux", se())],
        MacSelection::Auto => vec![("AppArmor", aa()), ("SELinux", se())],
    };
    let mut ev: Vec<Evidence> = considered
        .iter()
        .map(|(n, t)| {
            let v = match t {
                Tri::Yes => "enforcing".to_owned(),
                Tri::No(r) => format!("no: {r}"),
                Tri::Unknown(r) => format!("unknown: {r}"),
                Tri::Error(r) => format!("error: {r}"),
            };
            Evidence::new(format!("mac.{}", n.to_ascii_lowercase()), v)
        })
        .collect();
    ev.extend(ctx.lsm().evidence.iter().cloned());
    if let Some((n, _)) = considered.iter().find(|(_, t)| *t == Tri::Yes) {
        return Out::new(Status::Pass, format!("{n} confines processes"), ev);
    }
    if considered.iter().all(|(_, t)| matches!(t, Tri::No(_))) {
        let why: Vec<String> = considered
            .iter()
            .map(|(n, t)| match t {
                Tri::No(r) => format!("{n}: {r}"),
                _ => String::new(),
            })
            .collect();
        return Out::new(
            Status::Fail,
            format!("no MAC framework enforces ({})", why.join("; ")),
            ev,
        );
    }
    if let Some((n, Tri::Error(r))) = considered.iter().find(|(_, t)| matches!(t, Tri::Error(_))) {
        return Out::new(Status::Error, format!("{n}: {r}"), ev);
    }
    let why: Vec<String> = considered
        .iter()
        .filter_map(|(n, t)| match t {
            Tri::Unknown(r) => Some(format!("{n}: {r}")),
            _ => None,
        })
        .collect();
    Out::new(
        Status::Unknown,
        format!(
            "cannot tell whether a MAC framework enforces ({})",
            why.join("; ")
        ),
        ev,
    )
}
