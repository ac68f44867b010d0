//! E1 `env.container`, E2 `env.virtualized` (context facts, catalogue §2.1).

use super::{CheckFn, Ctx, Def, Out};
use crate::report::{Evidence, Severity, Status};

pub(crate) const CONTAINER: Def<'static> = Def {
    id: "env.container",
    title: "Agent sees the real host, not a container",
    severity: Severity::Low,
    remediation: "Run the agent on the host, or mount the host's root into the container and pass --root (e.g. /host); the server should refuse containerised agents unless explicitly allowed.",
    refs: &["HARDENING-CHECKS:E1", "CaC:installed_env_is_a_container", "Lynis:IsContainer"],
    states: &[Status::Informational],
    host_scoped: false,
};

pub(crate) const VIRTUALIZED: Def<'static> = Def {
    id: "env.virtualized",
    title: "Compute node is itself a virtual machine",
    severity: Severity::Low,
    remediation:
        "TXT, IOMMU and TPM facts of a guest are synthetic; run trusted pools on bare metal.",
    refs: &["HARDENING-CHECKS:E2", "Lynis:VIRT-1920"],
    states: &[Status::Informational, Status::Unknown, Status::Error],
    host_scoped: false,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![(&CONTAINER, container), (&VIRTUALIZED, virtualized)]
}

/// Always `informational`. Evidence starts with `env.container = true|false`;
/// `items` lists the markers. A view with markers downgrades host-scoped checks.
fn container(ctx: &Ctx) -> Out {
    let c = ctx.container();
    let in_view = !c.markers.is_empty();
    let agent = !c.agent_markers.is_empty();
    let value = in_view || agent;
    let mut ev = vec![Evidence::new(
        "env.container",
        if value { "true" } else { "false" },
    )];
    ev.extend(c.evidence.iter().cloned());
    let mut items: Vec<String> = c.markers.clone();
    items.extend(c.agent_markers.iter().map(|m| format!("agent root: {m}")));
    let reason = if in_view && ctx.params.trust_container_view {
        format!(
            "container markers in the view ({}); trusted as the host's view by the profile",
            c.markers.join(", ")
        )
    } else if in_view {
        format!(
            "container markers in the view ({}); host-scoped checks are reported as unknown",
            c.markers.join(", ")
        )
    } else if agent {
        format!(
            "the agent runs in a container ({}) but reads the host through {}",
            c.agent_markers.join(", "),
            ctx.host.root().display()
        )
    } else if ctx.is_host_mount() {
        format!(
            "no container markers in the host view at {}",
            ctx.host.root().display()
        )
    } else {
        "no container markers".to_owned()
    };
    Out::new(Status::Informational, reason, ev).items(items)
}

/// `informational` with `env.virtualized = true|false` from the cpuinfo
/// `hypervisor` flag; `unknown` when cpuinfo is not visible.
fn virtualized(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let vendor = ctx
        .host
        .read_string("/sys/class/dmi/id/sys_vendor")
        .ok()
        .map(|s| s.trim().to_owned());
    match ctx.cpu_flags() {
        Ok(flags) => {
            let v = flags.contains("hypervisor");
            ev.push(Evidence::new(
                "env.virtualized",
                if v { "true" } else { "false" },
            ));
            ev.push(Evidence::new(
                "/proc/cpuinfo",
                format!("hypervisor flag {}", if v { "present" } else { "absent" }),
            ));
            if let Some(vd) = &vendor {
                ev.push(Evidence::new("/sys/class/dmi/id/sys_vendor", vd));
            }
            let reason = if v {
                format!(
                    "the node is a virtual machine (hypervisor cpu flag{})",
                    vendor.map(|v| format!(", vendor {v}")).unwrap_or_default()
                )
            } else {
                "no hypervisor cpu flag: bare metal".to_owned()
            };
            Out::new(Status::Informational, reason, ev)
        }
        Err(e) => Out::from_err(e, "/proc/cpuinfo", ev),
    }
}
