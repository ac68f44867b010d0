//! The check catalogue (HARDENING-CHECKS.md §2) and [`run_checks`].
//!
//! Every check reads the host only through the [`HostView`] in its [`Ctx`]; shared
//! facts (mount table, process list, LSM list, parsed configs) are read once per
//! run and cached in the context.

mod boot;
mod cgroup;
mod env;
mod facts;
mod iommu;
mod kvm;
mod mac;
mod nova;
mod svirt;
mod sysctl;

use std::cell::OnceCell;

use crate::host::{HostError, HostView};
use crate::params::CheckParams;
use crate::report::{
    cap_value, CheckResult, Evidence, Report, Role, Severity, Status, MAX_REPORT_BYTES,
};

pub(crate) use facts::Ctx;

/// Static description of a check.
#[derive(Debug, Clone)]
pub(crate) struct Def<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub severity: Severity,
    pub remediation: &'a str,
    pub refs: &'a [&'a str],
    /// States the check can produce (besides `unknown` from the container rule).
    pub states: &'a [Status],
    /// Whether container markers downgrade the result to `unknown`.
    pub host_scoped: bool,
}

/// What a check function returns.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub status: Status,
    pub reason: String,
    pub evidence: Vec<Evidence>,
    pub items: Vec<String>,
}

impl Out {
    pub fn new(status: Status, reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Out {
            status,
            reason: reason.into(),
            evidence,
            items: Vec::new(),
        }
    }

    pub fn items(mut self, items: Vec<String>) -> Self {
        self.items = items;
        self
    }

    /// `unknown` or `error` for a host error, per catalogue §1.1.
    pub fn from_err(e: &HostError, what: &str, mut evidence: Vec<Evidence>) -> Self {
        evidence.push(err_ev(e));
        let status = err_status(e);
        let reason = if status == Status::Unknown {
            format!("{what} not visible: {e}")
        } else {
            format!("cannot read {what}: {e}")
        };
        Out::new(status, reason, evidence)
    }
}

/// `unknown` for ENOENT/EACCES/EPERM/unavailable, `error` otherwise.
pub(crate) fn err_status(e: &HostError) -> Status {
    if e.is_invisible() {
        Status::Unknown
    } else {
        Status::Error
    }
}

/// Evidence recording a failed read.
pub(crate) fn err_ev(e: &HostError) -> Evidence {
    Evidence::new(e.path.clone(), format!("<{}>", e.detail))
}

type CheckFn = fn(&Ctx) -> Out;

fn static_checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    let mut v: Vec<(&'static Def<'static>, CheckFn)> = Vec::new();
    v.extend(env::checks());
    v.extend(mac::checks());
    v.extend(svirt::checks());
    v.extend(kvm::checks());
    v.extend(iommu::checks());
    v.extend(cgroup::checks());
    v.extend(boot::checks());
    v.extend(nova::checks());
    v
}

/// The severity of a check under the given parameters (some depend on the profile).
fn effective_severity(def: &Def<'_>, params: &CheckParams) -> Severity {
    match def.id {
        "iommu.active" if params.pci_passthrough => Severity::High,
        "txt.measured_launch" if params.txt_required => Severity::High,
        _ => def.severity,
    }
}

/// Public description of one check, from [`check_catalogue`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckInfo {
    /// Check id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity under the given parameters.
    pub severity: Severity,
    /// States the check can produce under some host state (every host-scoped
    /// check can also be `unknown` because of container markers).
    pub states: Vec<Status>,
    /// Anchors.
    pub refs: Vec<String>,
}

/// Every check [`run_checks`] runs under `params`, sorted by id. The server can
/// use it to reject pool policies that require ids no agent produces.
pub fn check_catalogue(params: &CheckParams) -> Vec<CheckInfo> {
    let mut out: Vec<CheckInfo> = static_checks()
        .into_iter()
        .map(|(d, _)| info_of(d, effective_severity(d, params)))
        .chain(sysctl::defs(params).iter().map(|s| {
            let d = s.def();
            info_of(&d, d.severity)
        }))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn info_of(d: &Def<'_>, severity: Severity) -> CheckInfo {
    let mut states: Vec<Status> = d.states.to_vec();
    if d.host_scoped && !states.contains(&Status::Unknown) {
        states.push(Status::Unknown);
    }
    states.sort();
    CheckInfo {
        id: d.id.to_owned(),
        title: d.title.to_owned(),
        severity,
        states,
        refs: d.refs.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn finish(def: &Def<'_>, severity: Severity, mut out: Out, ctx: &Ctx) -> CheckResult {
    if def.host_scoped && ctx.container_downgrade() {
        out.reason = format!(
            "container markers in this view ({}); host facts are not trusted: would be {}: {}",
            ctx.container().markers.join(", "),
            out.status,
            out.reason
        );
        out.status = Status::Unknown;
    }
    CheckResult {
        id: def.id.to_owned(),
        status: out.status,
        severity,
        title: def.title.to_owned(),
        reason: out.reason,
        evidence: out.evidence,
        items: out.items,
        remediation: def.remediation.to_owned(),
        refs: def.refs.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Runs every check against `host` and returns the report (results sorted by id).
///
/// Never panics and never fails as a whole: problems become `error` or `unknown`
/// results with a reason. Invalid parameters (see [`CheckParams::validate`]) make
/// the affected checks report `error`.
pub fn run_checks(host: &dyn HostView, role: Role, params: &CheckParams) -> Report {
    let ctx = Ctx::new(host, role, params);
    let mut results = Vec::new();
    for (def, f) in static_checks() {
        let out = f(&ctx);
        results.push(finish(def, effective_severity(def, params), out, &ctx));
    }
    for s in sysctl::defs(params) {
        let d = s.def();
        let out = sysctl::run(&ctx, &s);
        results.push(finish(&d, d.severity, out, &ctx));
    }
    let mut report = Report::new(role, host.root().display().to_string(), results);
    shrink_to_fit(&mut report);
    report
}

/// Keeps the canonical report well under [`MAX_REPORT_BYTES`] by cutting evidence
/// and items in steps (marking every cut).
fn shrink_to_fit(report: &mut Report) {
    let budget = MAX_REPORT_BYTES / 2;
    let levels: [(usize, usize, usize); 4] =
        [(64, 1024, 128), (16, 256, 32), (4, 96, 8), (0, 0, 0)];
    for (max_ev, max_val, max_items) in levels {
        if report.canonical_bytes().len() <= budget {
            return;
        }
        for r in &mut report.results {
            if r.evidence.len() > max_ev {
                let cut = r.evidence.len() - max_ev;
                r.evidence.truncate(max_ev);
                r.evidence.push(Evidence {
                    path: "(truncated)".into(),
                    value: format!("{cut} more evidence records"),
                });
            }
            for e in &mut r.evidence {
                e.value = cap_value(&e.value, max_val.max(16));
            }
            if r.items.len() > max_items {
                let cut = r.items.len() - max_items;
                r.items.truncate(max_items);
                r.items.push(format!("... and {cut} more"));
            }
            r.reason = cap_value(&r.reason, 1024);
        }
    }
}

/// Caps an item list at 256 entries (marking the cut).
pub(crate) fn cap_items(mut items: Vec<String>) -> Vec<String> {
    const MAX: usize = 256;
    if items.len() > MAX {
        let cut = items.len() - MAX;
        items.truncate(MAX);
        items.push(format!("... and {cut} more"));
    }
    items
}

/// Lazily computed value holder used by [`Ctx`].
pub(crate) type Lazy<T> = OnceCell<T>;
