//! C1 `cgroup.mode`, C2 `cgroup.controllers` (catalogue §2.5).

use std::collections::BTreeSet;

use super::{cap_items, CheckFn, Ctx, Def, Out};
use crate::host::MountEntry;
use crate::report::{Evidence, Severity, Status};

pub(crate) const MODE: Def<'static> = Def {
    id: "cgroup.mode",
    title: "cgroup hierarchy mode (unified v2, hybrid or legacy)",
    severity: Severity::Medium,
    remediation: "Boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1, the default on current distributions).",
    refs: &["HARDENING-CHECKS:C1", "OSSN-0001", "OSSG:hypervisor-selection#cgroups"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::Informational],
    host_scoped: true,
};

pub(crate) const CONTROLLERS: Def<'static> = Def {
    id: "cgroup.controllers",
    title: "cgroup controllers libvirt uses to fence guests are enabled",
    severity: Severity::Medium,
    remediation: "Remove cgroup_disable= from the kernel command line and enable the listed controllers (cpu, memory, pids, io/blkio, devices).",
    refs: &["HARDENING-CHECKS:C2", "libvirt:qemu.conf#cgroup_controllers"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![(&MODE, mode), (&CONTROLLERS, controllers)]
}

const MAGIC_CGROUP2: i64 = 0x6367_7270;
const MAGIC_TMPFS: i64 = 0x0102_1994;
const MAGIC_CGROUP1: i64 = 0x0027_e0eb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgMode {
    Unified,
    Hybrid,
    Legacy,
}

impl CgMode {
    fn name(self) -> &'static str {
        match self {
            CgMode::Unified => "unified",
            CgMode::Hybrid => "hybrid",
            CgMode::Legacy => "legacy",
        }
    }
}

/// The cgroup mode from mountinfo, or the `Out` explaining why not.
fn detect(ctx: &Ctx, ev: &mut Vec<Evidence>) -> Result<CgMode, Out> {
    let mounts = match ctx.mounts() {
        Ok(m) => m,
        Err(e) => return Err(Out::from_err(e, "mountinfo", ev.clone())),
    };
    let cg: Vec<&MountEntry> = mounts
        .iter()
        .filter(|m| {
            m.mount_point == "/sys/fs/cgroup" || m.mount_point.starts_with("/sys/fs/cgroup/")
        })
        .collect();
    let shown: Vec<String> = cg
        .iter()
        .map(|m| format!("{} {}", m.mount_point, m.fs_type))
        .collect();
    ev.push(Evidence::new(
        "/proc/self/mountinfo",
        if shown.is_empty() {
            "(no cgroup mounts)".to_owned()
        } else {
            shown.join("\n")
        },
    ));
    let Some(top) = cg.iter().rev().find(|m| m.mount_point == "/sys/fs/cgroup") else {
        return Err(Out::new(
            Status::Unknown,
            "nothing is mounted at /sys/fs/cgroup",
            ev.clone(),
        ));
    };
    let under = |fs: &str| {
        cg.iter()
            .any(|m| m.mount_point != "/sys/fs/cgroup" && m.fs_type == fs)
    };
    match top.fs_type.as_str() {
        "cgroup2" => Ok(CgMode::Unified),
        "cgroup" => Ok(CgMode::Legacy),
        "tmpfs" => {
            if cg
                .iter()
                .any(|m| m.mount_point == "/sys/fs/cgroup/unified" && m.fs_type == "cgroup2")
            {
                Ok(CgMode::Hybrid)
            } else if under("cgroup") {
                Ok(CgMode::Legacy)
            } else {
                Err(Out::new(
                    Status::Error,
                    "tmpfs at /sys/fs/cgroup without any cgroup hierarchy below it",
                    ev.clone(),
                ))
            }
        }
        other => Err(Out::new(
            Status::Error,
            format!("unexpected file system {other:?} at /sys/fs/cgroup"),
            ev.clone(),
        )),
    }
}

/// C1.
fn mode(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let mode = match detect(ctx, &mut ev) {
        Ok(m) => m,
        Err(o) => return o,
    };
    // Live cross-check with statfs magic, when the view can answer it.
    if let Ok(Some(magic)) = ctx.host.statfs_magic("/sys/fs/cgroup") {
        ev.push(Evidence::new(
            "/sys/fs/cgroup:statfs.f_type",
            format!("{magic:#x}"),
        ));
        let expected = match mode {
            CgMode::Unified => MAGIC_CGROUP2,
            CgMode::Hybrid => MAGIC_TMPFS,
            CgMode::Legacy if magic == MAGIC_CGROUP1 => MAGIC_CGROUP1,
            CgMode::Legacy => MAGIC_TMPFS,
        };
        let known = [MAGIC_CGROUP2, MAGIC_TMPFS, MAGIC_CGROUP1].contains(&magic);
        if known && magic != expected {
            return Out::new(
                Status::Error,
                format!(
                    "mountinfo says {} but statfs(/sys/fs/cgroup) magic is {magic:#x}",
                    mode.name()
                ),
                ev,
            );
        }
    }
    ev.push(Evidence::new("cgroup.mode", mode.name()));
    match mode {
        CgMode::Unified => Out::new(Status::Pass, "unified cgroup v2 hierarchy", ev),
        m if ctx.params.cgroup_v2_required => Out::new(
            Status::Fail,
            format!(
                "{} cgroup hierarchy, the profile requires unified v2",
                m.name()
            ),
            ev,
        ),
        m => Out::new(
            Status::Informational,
            format!("{} cgroup hierarchy", m.name()),
            ev,
        ),
    }
}

/// C2.
fn controllers(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let mode = match detect(ctx, &mut ev) {
        Ok(m) => m,
        Err(o) => return o,
    };
    let disabled: BTreeSet<String> = match ctx.cmdline() {
        Ok(c) => c
            .split_whitespace()
            .take_while(|t| *t != "--")
            .filter_map(|t| t.strip_prefix("cgroup_disable="))
            .flat_map(|v| v.split(','))
            .map(str::to_owned)
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    let (required, available): (&[String], BTreeSet<String>) = if mode == CgMode::Unified {
        let p = "/sys/fs/cgroup/cgroup.controllers";
        let text = match ctx.read_ev(p, &mut ev) {
            Ok(t) => t,
            Err(e) => {
                ev.pop();
                return Out::from_err(&e, p, ev);
            }
        };
        if let Ok(sub) = ctx
            .host
            .read_string("/sys/fs/cgroup/machine.slice/cgroup.subtree_control")
        {
            ev.push(Evidence::new(
                "/sys/fs/cgroup/machine.slice/cgroup.subtree_control",
                &sub,
            ));
        }
        (
            &ctx.params.cgroup_controllers_v2,
            text.split_whitespace().map(str::to_owned).collect(),
        )
    } else {
        let p = "/proc/cgroups";
        let text = match ctx.read_ev(p, &mut ev) {
            Ok(t) => t,
            Err(e) => {
                ev.pop();
                return Out::from_err(&e, p, ev);
            }
        };
        let mut avail = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 || f[1..].iter().any(|x| x.parse::<u64>().is_err()) {
                return Out::new(
                    Status::Error,
                    format!("/proc/cgroups line {}: unexpected format {l:?}", n + 1),
                    ev,
                );
            }
            if f[3] == "1" {
                avail.insert(f[0].to_owned());
            }
        }
        (&ctx.params.cgroup_controllers_v1, avail)
    };
    let mut missing: Vec<String> = Vec::new();
    for c in required {
        if disabled.contains(c) {
            missing.push(format!("{c} (cgroup_disable={c})"));
        } else if !available.contains(c) {
            missing.push(c.clone());
        }
    }
    let which = if mode == CgMode::Unified { "v2" } else { "v1" };
    if !missing.is_empty() {
        return Out::new(
            Status::Fail,
            format!(
                "required {which} controllers missing or disabled: {}",
                missing.join(", ")
            ),
            ev,
        )
        .items(cap_items(missing));
    }
    Out::new(
        Status::Pass,
        format!(
            "required {which} controllers enabled: {}",
            required.join(" ")
        ),
        ev,
    )
}
