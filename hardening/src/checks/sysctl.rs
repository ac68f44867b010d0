//! The `sysctl.<key>` family (catalogue §2.7): one result per key, read from
//! `/proc/sys/<key with '.' replaced by '/'>`.

use super::facts::ConfFile;
use super::{Ctx, Def, Out};
use crate::params::{validate_sysctl_key, CheckParams, SysctlExpect};
use crate::report::{Evidence, Severity, Status};

/// How a key is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Compare an integer with the expectation.
    Plain,
    /// `kernel.tainted`: 0 passes, anything else is decoded as `informational`.
    Tainted,
    /// `net.bridge.bridge-nf-call-*`: required only with an iptables firewall driver.
    BridgeNf,
    /// The parameter for this key is invalid.
    Invalid(String),
}

/// One sysctl check.
#[derive(Debug, Clone)]
pub(crate) struct SysctlCheck {
    pub key: String,
    pub id: String,
    pub title: String,
    pub remediation: String,
    pub expect: SysctlExpect,
    pub severity: Severity,
    /// A directory whose existence proves the feature is absent when the key is.
    pub absent_na: Option<&'static str>,
    pub kind: Kind,
    pub refs: &'static [&'static str],
    /// States this key can produce.
    pub states: Vec<Status>,
}

impl SysctlCheck {
    pub fn def(&self) -> Def<'_> {
        Def {
            id: &self.id,
            title: &self.title,
            severity: self.severity,
            remediation: &self.remediation,
            refs: self.refs,
            states: &self.states,
            host_scoped: true,
        }
    }

    fn path(&self) -> String {
        format!("/proc/sys/{}", self.key.replace('.', "/"))
    }
}

const LYNIS: &[&str] = &["HARDENING-CHECKS:2.7", "Lynis:KRNL-6000"];
const ASLR: &[&str] = &[
    "HARDENING-CHECKS:2.7",
    "ansible-hardening:V-77825",
    "Lynis:KRNL-6000",
    "CaC:sysctl_kernel_randomize_va_space",
];
const KEXEC: &[&str] = &[
    "HARDENING-CHECKS:2.7",
    "CaC:sysctl_kernel_kexec_load_disabled",
];
const DUMP: &[&str] = &[
    "HARDENING-CHECKS:2.7",
    "Lynis:KRNL-6000",
    "ansible-hardening:V-72057",
];
const SRCROUTE: &[&str] = &[
    "HARDENING-CHECKS:2.7",
    "ansible-hardening:V-72283",
    "ansible-hardening:V-72285",
    "ansible-hardening:V-72319",
];
const REDIRECTS: &[&str] = &[
    "HARDENING-CHECKS:2.7",
    "ansible-hardening:V-73175",
    "ansible-hardening:V-72289",
    "ansible-hardening:V-72291",
    "ansible-hardening:V-72293",
];
const FORWARD: &[&str] = &["HARDENING-CHECKS:2.7", "ansible-hardening:V-72309"];
const BRIDGE: &[&str] = &["HARDENING-CHECKS:2.7", "neutron:iptables_hybrid"];
const PLAIN: &[&str] = &["HARDENING-CHECKS:2.7"];

/// (key, expectation, severity, proof directory for `notapplicable` when absent, refs, note)
type Row = (
    &'static str,
    SysctlExpect,
    Severity,
    Option<&'static str>,
    &'static [&'static str],
    &'static str,
);

fn builtin() -> Vec<Row> {
    use Severity::{High as H, Low as L, Medium as M};
    use SysctlExpect::{Any, Eq, Ge};
    let k = Some("/proc/sys/kernel");
    let net = Some("/proc/sys/net");
    vec![
        (
            "kernel.randomize_va_space",
            Eq(2),
            H,
            None,
            ASLR,
            "full ASLR",
        ),
        (
            "kernel.kptr_restrict",
            Ge(1),
            M,
            None,
            LYNIS,
            "hide kernel pointers",
        ),
        (
            "kernel.dmesg_restrict",
            Eq(1),
            M,
            None,
            LYNIS,
            "restrict the kernel log",
        ),
        (
            "kernel.yama.ptrace_scope",
            Ge(1),
            M,
            k,
            LYNIS,
            "restrict ptrace (Yama)",
        ),
        (
            "kernel.unprivileged_bpf_disabled",
            Ge(1),
            M,
            k,
            LYNIS,
            "no unprivileged BPF",
        ),
        (
            "net.core.bpf_jit_harden",
            Eq(2),
            L,
            Some("/proc/sys/net/core"),
            LYNIS,
            "harden the BPF JIT",
        ),
        (
            "kernel.kexec_load_disabled",
            Eq(1),
            M,
            k,
            KEXEC,
            "no kexec_load",
        ),
        (
            "kernel.perf_event_paranoid",
            Ge(2),
            L,
            k,
            LYNIS,
            "restrict perf events",
        ),
        ("kernel.sysrq", Eq(0), L, k, LYNIS, "no magic SysRq"),
        (
            "fs.protected_symlinks",
            Eq(1),
            M,
            None,
            LYNIS,
            "symlink protection",
        ),
        (
            "fs.protected_hardlinks",
            Eq(1),
            M,
            None,
            LYNIS,
            "hardlink protection",
        ),
        (
            "fs.protected_fifos",
            Eq(2),
            L,
            Some("/proc/sys/fs"),
            LYNIS,
            "FIFO protection",
        ),
        (
            "fs.protected_regular",
            Eq(2),
            L,
            Some("/proc/sys/fs"),
            LYNIS,
            "regular-file protection",
        ),
        (
            "fs.suid_dumpable",
            Eq(0),
            M,
            None,
            DUMP,
            "no core dumps of setuid programs",
        ),
        (
            "net.ipv4.conf.all.accept_source_route",
            Eq(0),
            M,
            None,
            SRCROUTE,
            "no source routing",
        ),
        (
            "net.ipv4.conf.default.accept_source_route",
            Eq(0),
            M,
            None,
            SRCROUTE,
            "no source routing",
        ),
        (
            "net.ipv6.conf.all.accept_source_route",
            Eq(0),
            M,
            net,
            SRCROUTE,
            "no IPv6 source routing",
        ),
        (
            "net.ipv6.conf.default.accept_source_route",
            Eq(0),
            M,
            net,
            SRCROUTE,
            "no IPv6 source routing",
        ),
        (
            "net.ipv4.conf.all.accept_redirects",
            Eq(0),
            M,
            None,
            REDIRECTS,
            "no ICMP redirects",
        ),
        (
            "net.ipv4.conf.default.accept_redirects",
            Eq(0),
            M,
            None,
            REDIRECTS,
            "no ICMP redirects",
        ),
        (
            "net.ipv4.conf.all.send_redirects",
            Eq(0),
            M,
            None,
            REDIRECTS,
            "send no ICMP redirects",
        ),
        (
            "net.ipv4.conf.default.send_redirects",
            Eq(0),
            M,
            None,
            REDIRECTS,
            "send no ICMP redirects",
        ),
        (
            "net.ipv4.tcp_syncookies",
            Eq(1),
            L,
            None,
            LYNIS,
            "SYN cookies",
        ),
        (
            "net.ipv4.ip_forward",
            Any,
            L,
            None,
            FORWARD,
            "recorded only: hypervisors need forwarding",
        ),
        (
            "net.bridge.bridge-nf-call-iptables",
            Eq(1),
            M,
            net,
            BRIDGE,
            "bridged traffic passes iptables (security groups)",
        ),
        (
            "net.bridge.bridge-nf-call-ip6tables",
            Eq(1),
            M,
            net,
            BRIDGE,
            "bridged traffic passes ip6tables (security groups)",
        ),
        (
            "kernel.tainted",
            Eq(0),
            L,
            None,
            PLAIN,
            "kernel not tainted",
        ),
    ]
}

fn sanitize(key: &str) -> String {
    let s: String = key
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".to_owned()
    } else {
        s
    }
}

fn make(
    key: &str,
    expect: SysctlExpect,
    severity: Severity,
    absent_na: Option<&'static str>,
    refs: &'static [&'static str],
    note: &str,
    kind: Kind,
) -> SysctlCheck {
    let title = match (&kind, expect) {
        (Kind::Invalid(_), _) => format!("sysctl {key} (invalid parameter)"),
        (_, SysctlExpect::Any) => format!("{key} ({note})"),
        (_, e) => format!("{key} {e} ({note})"),
    };
    let remediation = match expect {
        SysctlExpect::Eq(v) | SysctlExpect::Ge(v) | SysctlExpect::Le(v) => {
            format!("Set {key} = {v} in /etc/sysctl.d/99-hardening.conf and run sysctl --system.")
        }
        _ => "None: recorded for information.".to_owned(),
    };
    use Status::{Error, Fail, Informational, NotApplicable, Pass, Unknown};
    let mut states = match (&kind, expect) {
        (Kind::Invalid(_), _) => vec![Error],
        (Kind::Tainted, _) => vec![Pass, Informational, Error, Unknown],
        (Kind::BridgeNf, _) => vec![Pass, Fail, Error, Unknown, NotApplicable],
        (Kind::Plain, SysctlExpect::Any) => vec![Informational, Error, Unknown],
        (Kind::Plain, _) => vec![Pass, Fail, Error, Unknown],
    };
    if absent_na.is_some() && !matches!(kind, Kind::Invalid(_)) && !states.contains(&NotApplicable)
    {
        states.push(NotApplicable);
    }
    states.sort();
    SysctlCheck {
        states,
        key: key.to_owned(),
        id: format!("sysctl.{}", sanitize(key)),
        title,
        remediation,
        expect,
        severity,
        absent_na,
        kind,
        refs,
    }
}

/// The sysctl checks under `params` (built-in table plus overrides), by id.
pub(crate) fn defs(params: &CheckParams) -> Vec<SysctlCheck> {
    let mut out: Vec<SysctlCheck> = Vec::new();
    for (key, expect, sev, na, refs, note) in builtin() {
        let (expect, kind) = match params.sysctl.get(key) {
            Some(raw) => match SysctlExpect::parse(raw) {
                Ok(e) => (e, Kind::Plain),
                Err(m) => (expect, Kind::Invalid(m)),
            },
            None if key == "kernel.tainted" => (expect, Kind::Tainted),
            None if key.starts_with("net.bridge.") => (expect, Kind::BridgeNf),
            None => (expect, Kind::Plain),
        };
        if expect == SysctlExpect::Skip {
            continue;
        }
        out.push(make(key, expect, sev, na, refs, note, kind));
    }
    for (key, raw) in &params.sysctl {
        if out.iter().any(|c| &c.key == key) || builtin().iter().any(|r| r.0 == key) {
            continue;
        }
        let check = match (validate_sysctl_key(key), SysctlExpect::parse(raw)) {
            (Err(m), _) | (Ok(()), Err(m)) => make(
                key,
                SysctlExpect::Any,
                Severity::Medium,
                None,
                PLAIN,
                "custom",
                Kind::Invalid(m),
            ),
            (Ok(()), Ok(SysctlExpect::Skip)) => continue,
            (Ok(()), Ok(e)) => make(key, e, Severity::Medium, None, PLAIN, "custom", Kind::Plain),
        };
        out.push(check);
    }
    // Ids must be unique even for sanitised invalid keys.
    let mut seen = std::collections::BTreeSet::new();
    for c in &mut out {
        let base = c.id.clone();
        let mut n = 2;
        while !seen.insert(c.id.clone()) {
            c.id = format!("{base}_{n}");
            n += 1;
        }
    }
    out
}

/// Runs one sysctl check.
pub(crate) fn run(ctx: &Ctx, s: &SysctlCheck) -> Out {
    match &s.kind {
        Kind::Invalid(m) => Out::new(
            Status::Error,
            format!("invalid sysctl parameter for {:?}: {m}", s.key),
            Vec::new(),
        ),
        Kind::Plain => plain(ctx, s),
        Kind::Tainted => tainted(ctx, s),
        Kind::BridgeNf => bridge(ctx, s),
    }
}

/// Reads the value; `Err(out)` for absent/unreadable keys.
fn read_value(ctx: &Ctx, s: &SysctlCheck, ev: &mut Vec<Evidence>) -> Result<String, Out> {
    let path = s.path();
    match ctx.read_ev(&path, ev) {
        Ok(v) => Ok(v.trim().to_owned()),
        Err(e) if e.is_not_found() => {
            if let Some(dir) = s.absent_na {
                if matches!(ctx.host.exists(dir), Ok(true)) {
                    return Err(Out::new(
                        Status::NotApplicable,
                        format!("{} does not exist while {dir} does: the feature is not built into this kernel", s.key),
                        ev.clone(),
                    ));
                }
            }
            Err(Out::new(
                Status::Unknown,
                format!("{path} not visible"),
                ev.clone(),
            ))
        }
        Err(e) => {
            ev.pop();
            Err(Out::from_err(&e, &path, ev.clone()))
        }
    }
}

fn plain(ctx: &Ctx, s: &SysctlCheck) -> Out {
    let mut ev = Vec::new();
    let v = match read_value(ctx, s, &mut ev) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if s.expect == SysctlExpect::Any {
        return Out::new(Status::Informational, format!("{} = {v}", s.key), ev);
    }
    let n = match v.parse::<i64>() {
        Ok(n) => n,
        Err(_) => {
            return Out::new(
                Status::Error,
                format!("{} = {v:?} is not an integer", s.key),
                ev,
            )
        }
    };
    if s.expect.accepts(n) {
        Out::new(
            Status::Pass,
            format!("{} = {n} (expected {})", s.key, s.expect),
            ev,
        )
    } else {
        Out::new(
            Status::Fail,
            format!("{} = {n}, expected {}", s.key, s.expect),
            ev,
        )
        .items(vec![format!("{} = {n}", s.key)])
    }
}

const TAINT_FLAGS: &[(u32, char, &str)] = &[
    (0, 'P', "proprietary module loaded"),
    (1, 'F', "module force-loaded"),
    (2, 'S', "SMP with CPUs not designed for SMP"),
    (3, 'R', "module force-unloaded"),
    (4, 'M', "machine check exception"),
    (5, 'B', "bad page referenced"),
    (6, 'U', "taint requested by user space"),
    (7, 'D', "kernel died recently (OOPS or BUG)"),
    (8, 'A', "ACPI table overridden"),
    (9, 'W', "kernel warning"),
    (10, 'C', "staging driver loaded"),
    (11, 'I', "firmware bug workaround"),
    (12, 'O', "out-of-tree module loaded"),
    (13, 'E', "unsigned module loaded"),
    (14, 'L', "soft lockup occurred"),
    (15, 'K', "kernel live-patched"),
    (16, 'X', "auxiliary taint"),
    (17, 'T', "struct randomization plugin"),
    (18, 'N', "in-kernel test run"),
    (
        19,
        'J',
        "userspace used a mutating debug operation in fwctl",
    ),
];

fn tainted(ctx: &Ctx, s: &SysctlCheck) -> Out {
    let mut ev = Vec::new();
    let v = match read_value(ctx, s, &mut ev) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let n = match v.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            return Out::new(
                Status::Error,
                format!("kernel.tainted = {v:?} is not an unsigned integer"),
                ev,
            )
        }
    };
    if n == 0 {
        return Out::new(Status::Pass, "kernel not tainted (0)", ev);
    }
    let mut flags = Vec::new();
    for (bit, letter, desc) in TAINT_FLAGS {
        if n & (1u64 << bit) != 0 {
            flags.push(format!("{letter}: {desc}"));
        }
    }
    let known: u64 = TAINT_FLAGS.iter().map(|(b, _, _)| 1u64 << b).sum();
    if n & !known != 0 {
        flags.push(format!("unknown bits {:#x}", n & !known));
    }
    Out::new(
        Status::Informational,
        format!("kernel tainted ({n}): {}", flags.join(", ")),
        ev,
    )
    .items(flags)
}

/// Whether a neutron agent config selects an iptables firewall driver.
fn neutron_iptables(ctx: &Ctx, ev: &mut Vec<Evidence>) -> Result<bool, Out> {
    let mut found = false;
    for p in [
        "/etc/neutron/plugins/ml2/openvswitch_agent.ini",
        "/etc/neutron/plugins/ml2/linuxbridge_agent.ini",
    ] {
        match ctx.ini_file(p) {
            ConfFile::Parsed(ini) => {
                if let Some(d) = ini.get("securitygroup", "firewall_driver") {
                    ev.push(Evidence::new(
                        format!("{p}:[securitygroup]firewall_driver"),
                        d,
                    ));
                    if d.contains("iptables") || d.contains("Iptables") {
                        found = true;
                    }
                }
            }
            ConfFile::Absent => {}
            ConfFile::Failed(e) => return Err(Out::from_err(&e, p, ev.clone())),
            ConfFile::Bad(m) => {
                return Err(Out::new(
                    Status::Error,
                    format!("cannot parse {m}"),
                    ev.clone(),
                ))
            }
        }
    }
    Ok(found)
}

fn bridge(ctx: &Ctx, s: &SysctlCheck) -> Out {
    let mut ev = Vec::new();
    let required = match ctx.params.bridge_nf_required {
        Some(r) => {
            ev.push(Evidence::new("params.bridge_nf_required", r.to_string()));
            r
        }
        None => match neutron_iptables(ctx, &mut ev) {
            Ok(r) => r,
            Err(o) => return o,
        },
    };
    if !required {
        return Out::new(
            Status::NotApplicable,
            "neutron does not use an iptables-based firewall driver here",
            ev,
        );
    }
    let path = s.path();
    match ctx.read_ev(&path, &mut ev) {
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(1) => Out::new(Status::Pass, format!("{} = 1", s.key), ev),
            Ok(n) => Out::new(
                Status::Fail,
                format!("{} = {n}: bridged traffic bypasses security groups", s.key),
                ev,
            )
            .items(vec![format!("{} = {n}", s.key)]),
            Err(_) => Out::new(
                Status::Error,
                format!("{} = {:?} is not an integer", s.key, v.trim()),
                ev,
            ),
        },
        Err(e) if e.is_not_found() => {
            if matches!(ctx.host.exists("/proc/sys/net"), Ok(true)) {
                Out::new(
                    Status::Fail,
                    format!(
                        "{} absent: br_netfilter is not loaded, bridged traffic bypasses iptables",
                        s.key
                    ),
                    ev,
                )
                .items(vec![s.key.clone()])
            } else {
                Out::new(Status::Unknown, "/proc/sys/net not visible", ev)
            }
        }
        Err(e) => {
            ev.pop();
            Out::from_err(&e, &path, ev)
        }
    }
}
