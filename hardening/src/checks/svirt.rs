//! S1 `svirt.driver_configured`, S2 `svirt.guests_confined`,
//! S4 `libvirt.qemu_nonroot` (catalogue §2.2).

use std::collections::BTreeMap;

use super::facts::{
    ConfFile, Proc, ProfilesErr, SeState, Tri, AA_ENFORCING_MODES, AA_LAX_MODES, QEMU_CONF,
};
use super::{cap_items, err_ev, CheckFn, Ctx, Def, Out};
use crate::host::HostError;
use crate::parse::{self, ConfValue};
use crate::report::{Evidence, Role, Severity, Status};

pub(crate) const DRIVER: Def<'static> = Def {
    id: "svirt.driver_configured",
    title: "libvirt is configured to confine guests (sVirt)",
    severity: Severity::High,
    remediation: "In /etc/libvirt/qemu.conf remove security_driver = \"none\" and security_default_confined = 0 (set security_require_confined = 1), then restart libvirt; fix broken guests with profile exceptions instead of disabling sVirt.",
    refs: &["HARDENING-CHECKS:S1", "libvirt:qemu.conf#security_driver", "OSSG:hardening-the-virtualization-layers#mandatory-access-controls"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const GUESTS: Def<'static> = Def {
    id: "svirt.guests_confined",
    title: "Every running guest is confined by its own enforcing sVirt label",
    severity: Severity::High,
    remediation: "Restart the listed guests under an enforcing libvirt-<uuid> AppArmor profile or a unique svirt_t MCS label; never run guests unconfined or in complain mode.",
    refs: &["HARDENING-CHECKS:S2", "libvirt:security_apparmor.c", "OSSG:hardening-the-virtualization-layers#svirt-labels-and-categories", "docker-bench:5.2"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const QEMU_NONROOT: Def<'static> = Def {
    id: "libvirt.qemu_nonroot",
    title: "QEMU does not run as root",
    severity: Severity::High,
    remediation: "Set user/group in /etc/libvirt/qemu.conf to an unprivileged account (e.g. libvirt-qemu or qemu), keep dynamic_ownership = 1, and restart the listed guests.",
    refs: &["HARDENING-CHECKS:S4", "libvirt:qemu.conf#user"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![
        (&DRIVER, driver_configured),
        (&GUESTS, guests_confined),
        (&QEMU_NONROOT, qemu_nonroot),
    ]
}

fn conf_missing(ctx: &Ctx, what: &str, ev: Vec<Evidence>) -> Out {
    match ctx.role {
        Role::Compute => Out::new(
            Status::Fail,
            format!("{QEMU_CONF} is missing on a compute node: {what}"),
            ev,
        ),
        Role::Other => Out::new(Status::NotApplicable, format!("libvirt's QEMU driver is not installed ({QEMU_CONF} absent) and the role is not compute"), ev),
    }
}

/// S1.
fn driver_configured(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let conf = match ctx.qemu_conf() {
        ConfFile::Parsed(c) => c,
        ConfFile::Absent => {
            ev.push(Evidence::new(QEMU_CONF, "<absent>"));
            return conf_missing(ctx, "the sVirt configuration cannot be checked", ev);
        }
        ConfFile::Failed(e) => return Out::from_err(e, QEMU_CONF, ev),
        ConfFile::Bad(m) => return Out::new(Status::Error, format!("cannot parse {m}"), ev),
    };
    let mut offenders = Vec::new();
    let mut drivers: Vec<String> = Vec::new();
    match conf.get("security_driver") {
        None => {}
        Some(ConfValue::Str(s)) => drivers.push(s.clone()),
        Some(ConfValue::List(v)) => {
            for x in v {
                match x {
                    ConfValue::Str(s) => drivers.push(s.clone()),
                    other => {
                        return Out::new(
                            Status::Error,
                            format!("security_driver list holds a non-string {}", other.render()),
                            ev,
                        );
                    }
                }
            }
        }
        Some(other) => {
            return Out::new(
                Status::Error,
                format!("security_driver has an unexpected value {}", other.render()),
                ev,
            );
        }
    }
    if let Some(v) = conf.get("security_driver") {
        ev.push(Evidence::new(
            format!("{QEMU_CONF}:security_driver"),
            v.render(),
        ));
    }
    if drivers.iter().any(|d| d == "none") {
        offenders.push("security_driver = \"none\"".to_owned());
    }
    let int_knob = |k: &str| -> Result<Option<i64>, String> {
        match conf.get(k) {
            None => Ok(None),
            Some(ConfValue::Int(i)) => Ok(Some(*i)),
            Some(other) => Err(format!("{k} has an unexpected value {}", other.render())),
        }
    };
    let default_confined = match int_knob("security_default_confined") {
        Ok(v) => v,
        Err(m) => return Out::new(Status::Error, m, ev),
    };
    let require_confined = match int_knob("security_require_confined") {
        Ok(v) => v,
        Err(m) => return Out::new(Status::Error, m, ev),
    };
    if let Some(v) = default_confined {
        ev.push(Evidence::new(
            format!("{QEMU_CONF}:security_default_confined"),
            v.to_string(),
        ));
        if v == 0 {
            offenders.push("security_default_confined = 0".to_owned());
        }
    }
    if let Some(v) = require_confined {
        ev.push(Evidence::new(
            format!("{QEMU_CONF}:security_require_confined"),
            v.to_string(),
        ));
    }
    let note = if require_confined == Some(1) {
        "; security_require_confined = 1".to_owned()
    } else {
        "; note: security_require_confined = 1 is recommended".to_owned()
    };
    if !offenders.is_empty() {
        return Out::new(
            Status::Fail,
            format!("sVirt disabled in qemu.conf: {}", offenders.join(", ")),
            ev,
        )
        .items(offenders);
    }
    if drivers.is_empty() {
        let aa = ctx.aa_active();
        let se = &ctx.selinux().0;
        let se_on = matches!(se, SeState::Enforcing | SeState::Permissive);
        if let (Tri::No(r), SeState::NotEnabled(_)) = (&aa, se) {
            return Out::new(
                Status::Fail,
                format!("security_driver is unset and no MAC framework is available ({r}; SELinux not enabled): libvirt falls back to the \"none\" driver"),
                ev,
            )
            .items(vec!["security_driver (unset, no LSM)".to_owned()]);
        }
        let which = if aa == Tri::Yes {
            "apparmor"
        } else if se_on {
            "selinux"
        } else {
            "the host's LSM"
        };
        return Out::new(
            Status::Pass,
            format!("security_driver unset: libvirt uses {which}{note}"),
            ev,
        );
    }
    Out::new(
        Status::Pass,
        format!("security_driver = {}{note}", drivers.join(",")),
        ev,
    )
}

enum Verdict {
    Ok(String),
    Fail(String),
    Unknown(String),
    Error(String),
}

/// Reads a process label: AppArmor's own attribute first, then the generic one.
fn read_label(ctx: &Ctx, pid: u32) -> Result<Option<(String, String)>, HostError> {
    for p in [
        format!("/proc/{pid}/attr/apparmor/current"),
        format!("/proc/{pid}/attr/current"),
    ] {
        match ctx.host.read_string(&p) {
            Ok(s) => {
                let t = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                if !t.is_empty() {
                    return Ok(Some((p, t.to_owned())));
                }
            }
            Err(e) if e.is_not_found() || e.is_errno(nix::libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn libvirt_absent(ctx: &Ctx) -> bool {
    matches!(ctx.qemu_conf(), ConfFile::Absent)
        && matches!(ctx.host.exists("/etc/libvirt"), Ok(false))
}

/// S2.
fn guests_confined(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let procs = match ctx.visible_procs() {
        Ok(p) => p,
        Err(e) => return Out::from_err(&e, "process list", ev),
    };
    let guests: Vec<&Proc> = procs.iter().filter(|p| p.is_qemu()).collect();
    if guests.is_empty() {
        ev.push(Evidence::new("/proc", "guests=0"));
        if ctx.role == Role::Other && libvirt_absent(ctx) {
            return Out::new(
                Status::NotApplicable,
                "no libvirt and no QEMU guests on a non-compute node",
                ev,
            );
        }
        return Out::new(Status::Pass, "no running guests (guests=0)", ev);
    }
    let profiles = &ctx.apparmor().profiles;
    let se_state = &ctx.selinux().0;
    let mut verdicts: Vec<(String, Verdict)> = Vec::new();
    let mut mcs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for g in &guests {
        let ident = g.ident();
        ev.push(Evidence::new(
            format!("/proc/{}/cmdline", g.pid),
            g.summary(),
        ));
        let (path, label) = match read_label(ctx, g.pid) {
            Ok(Some(x)) => x,
            Ok(None) => {
                if matches!(ctx.host.exists(&format!("/proc/{}", g.pid)), Ok(false)) {
                    continue; // exited meanwhile
                }
                let no_mac = matches!(ctx.aa_active(), Tri::No(_))
                    && matches!(ctx.selinux().0, SeState::NotEnabled(_));
                let v = if no_mac {
                    Verdict::Fail(format!(
                        "{ident}: no security label and no MAC framework is active (unconfined)"
                    ))
                } else {
                    Verdict::Unknown(format!("{ident}: no security label readable"))
                };
                verdicts.push((ident, v));
                continue;
            }
            Err(e) => {
                ev.push(err_ev(&e));
                let v = if e.is_invisible() {
                    Verdict::Unknown(format!("label not visible: {e}"))
                } else {
                    Verdict::Error(format!("cannot read label: {e}"))
                };
                verdicts.push((ident, v));
                continue;
            }
        };
        ev.push(Evidence::new(path, &label));
        let uuid = g.arg_value("-uuid").map(str::to_ascii_lowercase);
        let verdict = if label == "unconfined" {
            Verdict::Fail(format!("{ident}: unconfined"))
        } else if let Some((name, mode)) = parse::split_label(&label) {
            apparmor_verdict(&ident, name, mode, uuid.as_deref(), profiles)
        } else if !label.contains(char::is_whitespace) && label.split(':').count() >= 4 {
            let f: Vec<&str> = label.split(':').collect();
            let typ = f[2];
            let level = f[3..].join(":");
            if typ != "svirt_t" && typ != "svirt_tcg_t" {
                Verdict::Fail(format!(
                    "{ident}: SELinux type {typ} is not svirt_t/svirt_tcg_t ({label})"
                ))
            } else {
                match mcs_pair(&level) {
                    Some(pair) => {
                        mcs.entry(pair.clone()).or_default().push(ident.clone());
                        match se_state {
                            SeState::Enforcing => Verdict::Ok(format!("{ident}: {label}")),
                            SeState::Permissive => {
                                Verdict::Fail(format!("{ident}: SELinux is permissive"))
                            }
                            SeState::NotEnabled(r) | SeState::Unknown(r) => Verdict::Unknown(
                                format!("{ident}: SELinux enforcement not visible: {r}"),
                            ),
                            SeState::Error(r) => Verdict::Error(format!("{ident}: {r}")),
                        }
                    }
                    None => Verdict::Fail(format!(
                        "{ident}: no unique MCS category pair in level {level:?}"
                    )),
                }
            }
        } else {
            Verdict::Error(format!("{ident}: unrecognised security label {label:?}"))
        };
        verdicts.push((ident, verdict));
    }
    for ((a, b), owners) in &mcs {
        if owners.len() > 1 {
            for (ident, v) in verdicts.iter_mut() {
                if owners.contains(ident) && !matches!(v, Verdict::Fail(_)) {
                    *v = Verdict::Fail(format!(
                        "{ident}: shares MCS pair {a},{b} with {}",
                        owners.len() - 1
                    ));
                }
            }
        }
    }
    let n = verdicts.len();
    let fails: Vec<String> = verdicts
        .iter()
        .filter_map(|(_, v)| {
            if let Verdict::Fail(m) = v {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect();
    let errors: Vec<String> = verdicts
        .iter()
        .filter_map(|(_, v)| {
            if let Verdict::Error(m) = v {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect();
    let unknowns: Vec<String> = verdicts
        .iter()
        .filter_map(|(_, v)| {
            if let Verdict::Unknown(m) = v {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect();
    ev.insert(0, Evidence::new("/proc", format!("guests={n}")));
    if !fails.is_empty() {
        return Out::new(
            Status::Fail,
            format!(
                "{} of {n} guests not confined: {}",
                fails.len(),
                fails.join("; ")
            ),
            ev,
        )
        .items(cap_items(fails));
    }
    if !errors.is_empty() {
        return Out::new(Status::Error, errors.join("; "), ev).items(cap_items(errors));
    }
    if !unknowns.is_empty() {
        return Out::new(Status::Unknown, unknowns.join("; "), ev).items(cap_items(unknowns));
    }
    let confined: Vec<String> = verdicts
        .iter()
        .filter_map(|(_, v)| {
            if let Verdict::Ok(m) = v {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect();
    if confined.is_empty() {
        ev.push(Evidence::new(
            "/proc",
            "guests=0 (all exited while checking)",
        ));
        return Out::new(Status::Pass, "no running guests (guests=0)", ev);
    }
    Out::new(
        Status::Pass,
        format!("all {n} guests confined and enforcing"),
        ev,
    )
}

fn apparmor_verdict(
    ident: &str,
    name: &str,
    mode: &str,
    uuid: Option<&str>,
    profiles: &Result<Vec<(String, String)>, ProfilesErr>,
) -> Verdict {
    if name == "unconfined" {
        return Verdict::Fail(format!("{ident}: unconfined"));
    }
    if AA_LAX_MODES.contains(&mode) {
        return Verdict::Fail(format!("{ident}: profile {name} in {mode} mode"));
    }
    if !AA_ENFORCING_MODES.contains(&mode) {
        return Verdict::Error(format!(
            "{ident}: unknown AppArmor mode {mode:?} in label of profile {name}"
        ));
    }
    let Some(uuid) = uuid else {
        return Verdict::Fail(format!(
            "{ident}: no -uuid on the command line, label {name} cannot be bound to the guest"
        ));
    };
    let expected = format!("libvirt-{uuid}");
    if !name.eq_ignore_ascii_case(&expected) {
        return Verdict::Fail(format!(
            "{ident}: profile {name} does not match -uuid {uuid} (expected {expected})"
        ));
    }
    if let Ok(list) = profiles {
        match list.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, m)) if AA_ENFORCING_MODES.contains(&m.as_str()) => {}
            Some((_, m)) => {
                return Verdict::Fail(format!("{ident}: profile {name} is loaded in {m} mode"))
            }
            None => {
                return Verdict::Fail(format!(
                    "{ident}: profile {name} is not in the loaded profiles list"
                ))
            }
        }
    }
    Verdict::Ok(format!("{ident}: {name} ({mode})"))
}

/// The category pair of an sVirt level such as `s0:c87,c520` (sorted), if it is
/// exactly two distinct single categories.
fn mcs_pair(level: &str) -> Option<(String, String)> {
    let (_sens, cats) = level.split_once(':')?;
    let cats: Vec<&str> = cats.split(',').collect();
    let ok =
        |c: &str| c.len() > 1 && c.starts_with('c') && c[1..].bytes().all(|b| b.is_ascii_digit());
    match cats.as_slice() {
        [a, b] if ok(a) && ok(b) && a != b => {
            let (x, y) = if a <= b { (a, b) } else { (b, a) };
            Some(((*x).to_owned(), (*y).to_owned()))
        }
        _ => None,
    }
}

/// S4.
fn qemu_nonroot(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let mut offenders = Vec::new();
    let mut unknowns = Vec::new();
    let mut errors = Vec::new();
    let conf_present = match ctx.qemu_conf() {
        ConfFile::Parsed(c) => {
            match c.get("user") {
                None => ev.push(Evidence::new(
                    format!("{QEMU_CONF}:user"),
                    "<unset: build default>",
                )),
                Some(ConfValue::Str(u)) => {
                    ev.push(Evidence::new(
                        format!("{QEMU_CONF}:user"),
                        format!("\"{u}\""),
                    ));
                    let uid = if let Some(n) = u.strip_prefix('+') {
                        n.parse::<u32>().ok()
                    } else if u == "root" {
                        Some(0)
                    } else {
                        ctx.accounts()
                            .as_ref()
                            .ok()
                            .and_then(|a| a.user_ids.get(u.as_str()).copied())
                    };
                    if uid == Some(0) {
                        offenders.push(format!("qemu.conf user = \"{u}\" (uid 0)"));
                    }
                }
                Some(other) => errors.push(format!(
                    "qemu.conf user has an unexpected value {}",
                    other.render()
                )),
            }
            if let Some(g) = c.get("group") {
                ev.push(Evidence::new(format!("{QEMU_CONF}:group"), g.render()));
            }
            true
        }
        ConfFile::Absent => false,
        ConfFile::Failed(e) => {
            ev.push(err_ev(e));
            if e.is_invisible() {
                unknowns.push(format!("{QEMU_CONF} not visible: {e}"));
            } else {
                errors.push(format!("cannot read {QEMU_CONF}: {e}"));
            }
            true
        }
        ConfFile::Bad(m) => {
            errors.push(format!("cannot parse {m}"));
            true
        }
    };
    let mut guests = 0usize;
    match ctx.visible_procs() {
        Ok(procs) => {
            for g in procs.iter().filter(|p| p.is_qemu()) {
                let path = format!("/proc/{}/status", g.pid);
                match ctx.host.read_string(&path) {
                    Ok(st) => match parse::status_ids(&st, "Uid") {
                        Ok(ids) => {
                            guests += 1;
                            let shown = format!("{} {} {} {}", ids[0], ids[1], ids[2], ids[3]);
                            ev.push(Evidence::new(path, format!("{}: Uid {shown}", g.ident())));
                            if ids.contains(&0) {
                                offenders.push(format!("{} runs with Uid {shown}", g.ident()));
                            }
                        }
                        Err(m) => errors.push(format!("{path}: {m}")),
                    },
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        ev.push(err_ev(&e));
                        if e.is_invisible() {
                            unknowns.push(format!("{}: status not visible", g.ident()));
                        } else {
                            errors.push(format!("{}: {e}", g.ident()));
                        }
                    }
                }
            }
        }
        Err(e) => {
            ev.push(err_ev(&e));
            unknowns.push(format!("process list not visible: {e}"));
        }
    }
    if !offenders.is_empty() {
        return Out::new(
            Status::Fail,
            format!("QEMU runs as root: {}", offenders.join("; ")),
            ev,
        )
        .items(cap_items(offenders));
    }
    if !errors.is_empty() {
        return Out::new(Status::Error, errors.join("; "), ev).items(cap_items(errors));
    }
    if !unknowns.is_empty() {
        return Out::new(Status::Unknown, unknowns.join("; "), ev);
    }
    if !conf_present && guests == 0 {
        ev.push(Evidence::new(QEMU_CONF, "<absent>"));
        return conf_missing(ctx, "QEMU's user cannot be checked", ev);
    }
    Out::new(
        Status::Pass,
        format!("QEMU runs unprivileged ({guests} guests checked)"),
        ev,
    )
}

#[cfg(test)]
mod tests {
    use super::mcs_pair;

    #[test]
    fn mcs_pairs() {
        assert_eq!(mcs_pair("s0:c520,c87"), Some(("c520".into(), "c87".into())));
        assert_eq!(mcs_pair("s0:c1,c1"), None);
        assert_eq!(mcs_pair("s0:c0.c1023"), None);
        assert_eq!(mcs_pair("s0"), None);
        assert_eq!(mcs_pair("s0:c1,c2,c3"), None);
    }
}
