//! N1 `nova.config_ownership`, N2 `nova.config_mode`, N6 `nova.compute_nonroot`,
//! N7 `nova.instances_space`, L1 `libvirt.remote_access` (catalogue §2.8).

use super::facts::{ConfFile, NOVA_CONF};
use super::kvm::describe;
use super::{cap_items, err_ev, CheckFn, Ctx, Def, Out};
use crate::host::{FileKind, HostError, Metadata};
use crate::parse::{self, ConfValue, LibvirtConf, TCP_LISTEN};
use crate::report::{Evidence, Role, Severity, Status};

pub(crate) const OWNERSHIP: Def<'static> = Def {
    id: "nova.config_ownership",
    title: "nova configuration files are owned by root:nova",
    severity: Severity::High,
    remediation: "chown root:nova /etc/nova /etc/nova/nova.conf /etc/nova/api-paste.ini /etc/nova/policy.yaml /etc/nova/rootwrap.conf",
    refs: &["HARDENING-CHECKS:N1", "OSSG:Check-Compute-01"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const MODE: Def<'static> = Def {
    id: "nova.config_mode",
    title: "nova configuration files are not world-readable or group-writable",
    severity: Severity::High,
    remediation: "chmod 640 the listed files (or 750 /etc/nova).",
    refs: &["HARDENING-CHECKS:N2", "OSSG:Check-Compute-02"],
    states: &[
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Unknown,
        Status::NotApplicable,
    ],
    host_scoped: true,
};

pub(crate) const NONROOT: Def<'static> = Def {
    id: "nova.compute_nonroot",
    title: "nova-compute runs as an unprivileged user",
    severity: Severity::High,
    remediation: "Run nova-compute as the nova user (privileges via privsep/rootwrap), e.g. User=nova in its systemd unit.",
    refs: &["HARDENING-CHECKS:N6", "nova:rootwrap", "OSSG:hardening-deployments"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) const SPACE: Def<'static> = Def {
    id: "nova.instances_space",
    title: "Instance storage has free space and inodes",
    severity: Severity::Medium,
    remediation: "Free or grow the file system holding instances_path (ideally its own mount); guests pause with I/O errors when it fills.",
    refs: &["HARDENING-CHECKS:N7", "OSSG:hardening-deployments", "wikimedia:incident-2015-11-05"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable, Status::Informational],
    host_scoped: true,
};

pub(crate) const REMOTE: Def<'static> = Def {
    id: "libvirt.remote_access",
    title: "No unauthenticated or plaintext libvirt TCP access",
    severity: Severity::High,
    remediation: "Disable libvirtd-tcp.socket/virtproxyd-tcp.socket and listen_tcp, or set auth_tcp = \"sasl\" with a strong mechanism; prefer TLS with client certificate verification.",
    refs: &["HARDENING-CHECKS:L1", "OSSN-0007", "libvirt:libvirtd.8#system-socket-activation", "kolla-ansible:libvirt-guide"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable, Status::Informational],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![
        (&OWNERSHIP, config_ownership),
        (&MODE, config_mode),
        (&NONROOT, compute_nonroot),
        (&SPACE, instances_space),
        (&REMOTE, remote_access),
    ]
}

const NOVA_DIR: &str = "/etc/nova";
const NOVA_FILES: &[&str] = &[
    "/etc/nova/nova.conf",
    "/etc/nova/api-paste.ini",
    "/etc/nova/policy.yaml",
    "/etc/nova/policy.json",
    "/etc/nova/rootwrap.conf",
];

enum Files {
    /// (path, metadata) of the directory and every existing file.
    Found(Vec<(String, Metadata)>),
    Early(Out),
}

/// Stats `/etc/nova` and its config files; `nova.conf` must exist.
fn stat_nova(ctx: &Ctx, ev: &mut Vec<Evidence>) -> Files {
    let mut found = Vec::new();
    let mut hidden: Vec<HostError> = Vec::new();
    for p in std::iter::once(&NOVA_DIR).chain(NOVA_FILES) {
        match ctx.host.metadata(p) {
            Ok(m) => {
                ev.push(Evidence::new(*p, describe(ctx, &m)));
                found.push(((*p).to_owned(), m));
            }
            Err(e) if e.is_not_found() => {
                if *p == NOVA_CONF {
                    ev.push(err_ev(&e));
                    return Files::Early(match ctx.role {
                        Role::Compute => Out::new(
                            Status::Fail,
                            format!("{NOVA_CONF} is missing on a compute node"),
                            ev.clone(),
                        ),
                        Role::Other => Out::new(
                            Status::NotApplicable,
                            "nova is not installed and the role is not compute",
                            ev.clone(),
                        ),
                    });
                }
            }
            Err(e) if e.is_invisible() => {
                ev.push(err_ev(&e));
                hidden.push(e);
            }
            Err(e) => return Files::Early(Out::from_err(&e, p, ev.clone())),
        }
    }
    if let Some(e) = hidden.first() {
        return Files::Early(Out::new(
            Status::Unknown,
            format!("not visible: {e}"),
            ev.clone(),
        ));
    }
    Files::Found(found)
}

/// N1: owner uid 0, group `nova` (resolved through the view's /etc/group).
fn config_ownership(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let files = match stat_nova(ctx, &mut ev) {
        Files::Found(f) => f,
        Files::Early(o) => return o,
    };
    let nova_gid = match ctx.accounts() {
        Ok(a) => a.group_ids.get("nova").copied(),
        Err(e) => return Out::from_err(e, "/etc/passwd and /etc/group", ev),
    };
    let mut offenders = Vec::new();
    for (p, m) in &files {
        let owner_ok = m.uid == 0;
        let group_ok = Some(m.gid) == nova_gid;
        if !owner_ok || !group_ok {
            offenders.push(format!(
                "{p} {}:{}",
                ctx.user_name(m.uid),
                ctx.group_name(m.gid)
            ));
        }
    }
    if nova_gid.is_none() {
        ev.push(Evidence::new("/etc/group", "no group named nova"));
    }
    if !offenders.is_empty() {
        return Out::new(
            Status::Fail,
            format!(
                "{} of {} nova paths not owned by root:nova",
                offenders.len(),
                files.len()
            ),
            ev,
        )
        .items(offenders);
    }
    Out::new(
        Status::Pass,
        format!("{} nova paths owned by root:nova", files.len()),
        ev,
    )
}

/// N2: files `mode & 0o037 == 0`, or `/etc/nova` itself 750 or stricter.
fn config_mode(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let files = match stat_nova(ctx, &mut ev) {
        Files::Found(f) => f,
        Files::Early(o) => return o,
    };
    let dir_strict = files
        .iter()
        .any(|(p, m)| p == NOVA_DIR && m.kind == FileKind::Dir && m.mode & 0o027 == 0);
    let mut offenders = Vec::new();
    for (p, m) in files.iter().filter(|(p, _)| p != NOVA_DIR) {
        if m.mode & 0o037 != 0 && !dir_strict {
            offenders.push(format!("{p} mode {:04o}", m.mode));
        }
    }
    if !offenders.is_empty() {
        return Out::new(
            Status::Fail,
            format!("{} nova config file(s) group-writable or world-accessible and /etc/nova is not 750 or stricter", offenders.len()),
            ev,
        )
        .items(offenders);
    }
    let how = if dir_strict {
        "/etc/nova is 750 or stricter"
    } else {
        "all files 640 or stricter"
    };
    Out::new(Status::Pass, format!("nova config modes ok ({how})"), ev)
}

/// N6: no nova-compute process with effective uid 0.
fn compute_nonroot(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let procs = match ctx.visible_procs() {
        Ok(p) => p,
        Err(e) => return Out::from_err(&e, "process list", ev),
    };
    let nova: Vec<_> = procs.iter().filter(|p| p.is_nova_compute()).collect();
    if nova.is_empty() {
        ev.push(Evidence::new("/proc", "no nova-compute process"));
        return match ctx.role {
            Role::Compute => Out::new(
                Status::Fail,
                "nova-compute is not running on a compute node",
                ev,
            ),
            Role::Other => Out::new(
                Status::NotApplicable,
                "no nova-compute process and the role is not compute",
                ev,
            ),
        };
    }
    let mut offenders = Vec::new();
    let mut unknown = Vec::new();
    let mut checked = 0usize;
    for p in nova {
        let path = format!("/proc/{}/status", p.pid);
        match ctx.host.read_string(&path) {
            Ok(st) => match parse::status_ids(&st, "Uid") {
                Ok(ids) => {
                    checked += 1;
                    ev.push(Evidence::new(
                        &path,
                        format!(
                            "comm={} Uid {} {} {} {}",
                            p.comm, ids[0], ids[1], ids[2], ids[3]
                        ),
                    ));
                    if ids[1] == 0 {
                        offenders.push(format!("pid {} ({}) euid 0", p.pid, p.comm));
                    }
                }
                Err(m) => return Out::new(Status::Error, format!("{path}: {m}"), ev),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_invisible() => {
                ev.push(err_ev(&e));
                unknown.push(format!("pid {}: {e}", p.pid));
            }
            Err(e) => return Out::from_err(&e, &path, ev),
        }
    }
    if !offenders.is_empty() {
        return Out::new(Status::Fail, "nova-compute runs as root", ev).items(offenders);
    }
    if !unknown.is_empty() {
        return Out::new(
            Status::Unknown,
            format!("nova-compute status not visible: {}", unknown.join("; ")),
            ev,
        );
    }
    if checked == 0 {
        return match ctx.role {
            Role::Compute => Out::new(
                Status::Fail,
                "nova-compute is not running on a compute node",
                ev,
            ),
            Role::Other => Out::new(
                Status::NotApplicable,
                "no nova-compute process and the role is not compute",
                ev,
            ),
        };
    }
    Out::new(
        Status::Pass,
        format!("nova-compute runs unprivileged ({checked} process(es))"),
        ev,
    )
}

/// The instances path from nova.conf (`instances_path`, default `$state_path/instances`).
fn instances_path(ctx: &Ctx, ev: &mut Vec<Evidence>) -> Result<(String, bool), Out> {
    let (state, inst, conf) = match ctx.nova_conf() {
        ConfFile::Parsed(ini) => (
            ini.get("DEFAULT", "state_path").map(str::to_owned),
            ini.get("DEFAULT", "instances_path").map(str::to_owned),
            true,
        ),
        ConfFile::Absent => (None, None, false),
        ConfFile::Failed(e) => return Err(Out::from_err(e, NOVA_CONF, ev.clone())),
        ConfFile::Bad(m) => {
            return Err(Out::new(
                Status::Error,
                format!("cannot parse {m}"),
                ev.clone(),
            ))
        }
    };
    let state = state.unwrap_or_else(|| "/var/lib/nova".to_owned());
    let raw = inst.unwrap_or_else(|| "$state_path/instances".to_owned());
    let path = raw
        .replace("${state_path}", &state)
        .replace("$state_path", &state);
    ev.push(Evidence::new(
        format!("{NOVA_CONF}:[DEFAULT]instances_path"),
        format!("{raw} -> {path}"),
    ));
    if !path.starts_with('/') || path.contains('$') {
        return Err(Out::new(
            Status::Error,
            format!("instances_path {path:?} is not an absolute path"),
            ev.clone(),
        ));
    }
    Ok((path, conf))
}

/// N7.
fn instances_space(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let (path, conf) = match instances_path(ctx, &mut ev) {
        Ok(p) => p,
        Err(o) => return o,
    };
    match ctx.host.metadata(&path) {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            ev.push(err_ev(&e));
            return match ctx.role {
                Role::Compute => Out::new(
                    Status::Fail,
                    format!("instances path {path} does not exist on a compute node"),
                    ev,
                ),
                Role::Other if !conf => Out::new(
                    Status::NotApplicable,
                    "nova is not installed and the role is not compute",
                    ev,
                ),
                Role::Other => Out::new(
                    Status::NotApplicable,
                    format!("instances path {path} absent and the role is not compute"),
                    ev,
                ),
            };
        }
        Err(e) => return Out::from_err(&e, &path, ev),
    }
    let st = match ctx.host.statvfs(&path) {
        Ok(s) => s,
        Err(e) => return Out::from_err(&e, &format!("statvfs({path})"), ev),
    };
    ev.push(Evidence::new(
        format!("statvfs({path})"),
        format!(
            "frsize={} blocks={} bavail={} files={} favail={}",
            st.frsize, st.blocks, st.bavail, st.files, st.favail
        ),
    ));
    if st.blocks == 0 || st.frsize == 0 {
        return Out::new(
            Status::Error,
            format!("statvfs({path}) reports an empty file system"),
            ev,
        );
    }
    let space = st.bavail as f64 * 100.0 / st.blocks as f64;
    let inodes = (st.files > 0).then(|| st.favail as f64 * 100.0 / st.files as f64);
    let own = match ctx.mount_of(&path) {
        Some(m) => {
            let own = m.mount_point == path;
            ev.push(Evidence::new(
                "/proc/self/mountinfo",
                format!(
                    "{path} on {} ({}); own mount: {}",
                    m.mount_point,
                    m.fs_type,
                    if own { "yes" } else { "no" }
                ),
            ));
            if own {
                "own mount"
            } else {
                "not its own mount"
            }
        }
        None => "mount unknown",
    };
    let worst = inodes.map_or(space, |i| i.min(space));
    let desc = match inodes {
        Some(i) => format!("{space:.1}% space and {i:.1}% inodes free on {path} ({own})"),
        None => format!("{space:.1}% space free on {path} ({own}; no inode limit)"),
    };
    let (pass, fail) = (
        ctx.params.instances_free_pass_percent,
        ctx.params.instances_free_fail_percent,
    );
    if !(pass.is_finite() && fail.is_finite() && fail <= pass) {
        return Out::new(
            Status::Error,
            format!("invalid thresholds pass={pass} fail={fail}"),
            ev,
        );
    }
    if worst >= pass {
        Out::new(Status::Pass, desc, ev)
    } else if worst < fail {
        Out::new(Status::Fail, format!("{desc}: below {fail}%"), ev).items(vec![path])
    } else {
        Out::new(Status::Informational, format!("{desc}: below {pass}%"), ev)
    }
}

/// One libvirt daemon that may accept remote connections.
struct Daemon {
    name: &'static str,
    conf: Option<LibvirtConf>,
    tcp_unit: bool,
    tls_unit: bool,
}

impl Daemon {
    fn str_knob(&self, k: &str, default: &str) -> Result<String, String> {
        match self.conf.as_ref().and_then(|c| c.get(k)) {
            None => Ok(default.to_owned()),
            Some(ConfValue::Str(s)) => Ok(s.clone()),
            Some(o) => Err(format!(
                "{}.conf {k} has an unexpected value {}",
                self.name,
                o.render()
            )),
        }
    }

    fn int_knob(&self, k: &str, default: i64) -> Result<i64, String> {
        match self.conf.as_ref().and_then(|c| c.get(k)) {
            None => Ok(default),
            Some(ConfValue::Int(i)) => Ok(*i),
            Some(o) => Err(format!(
                "{}.conf {k} has an unexpected value {}",
                self.name,
                o.render()
            )),
        }
    }

    fn present(&self) -> bool {
        self.conf.is_some() || self.tcp_unit || self.tls_unit
    }
}

/// L1.
fn remote_access(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let mut daemons = Vec::new();
    for name in ["libvirtd", "virtproxyd"] {
        let path = format!("/etc/libvirt/{name}.conf");
        let conf = match ctx.libvirt_conf(&path) {
            ConfFile::Parsed(c) => {
                let shown: Vec<String> = [
                    "listen_tcp",
                    "listen_tls",
                    "auth_tcp",
                    "auth_tls",
                    "tls_no_verify_certificate",
                ]
                .iter()
                .filter_map(|k| c.get(k).map(|v| format!("{k} = {}", v.render())))
                .collect();
                ev.push(Evidence::new(
                    &path,
                    if shown.is_empty() {
                        "(defaults)".to_owned()
                    } else {
                        shown.join("\n")
                    },
                ));
                Some(c)
            }
            ConfFile::Absent => None,
            ConfFile::Failed(e) => return Out::from_err(&e, &path, ev),
            ConfFile::Bad(m) => return Out::new(Status::Error, format!("cannot parse {m}"), ev),
        };
        let unit = |kind: &str, ev: &mut Vec<Evidence>| -> Result<bool, Out> {
            let p = format!("/etc/systemd/system/sockets.target.wants/{name}-{kind}.socket");
            match ctx.host.symlink_metadata(&p) {
                Ok(_) => {
                    ev.push(Evidence::new(&p, "enabled"));
                    Ok(true)
                }
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(Out::from_err(&e, &p, ev.clone())),
            }
        };
        let tcp_unit = match unit("tcp", &mut ev) {
            Ok(b) => b,
            Err(o) => return o,
        };
        let tls_unit = match unit("tls", &mut ev) {
            Ok(b) => b,
            Err(o) => return o,
        };
        daemons.push(Daemon {
            name,
            conf,
            tcp_unit,
            tls_unit,
        });
    }
    // Runtime listeners decide (socket activation ignores listen_tcp/listen_tls).
    let mut runtime: Option<(bool, bool)> = None;
    let mut runtime_err: Option<HostError> = None;
    for p in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match ctx.host.read_string(p) {
            Ok(t) => match parse::proc_net_tcp(&t) {
                Ok(socks) => {
                    let listening = |port| {
                        socks
                            .iter()
                            .any(|s| s.state == TCP_LISTEN && s.port == port)
                    };
                    let (tcp, tls) = (listening(16509), listening(16514));
                    ev.push(Evidence::new(
                        p,
                        format!(
                            "LISTEN 16509: {tcp}, LISTEN 16514: {tls} ({} sockets)",
                            socks.len()
                        ),
                    ));
                    let (a, b) = runtime.unwrap_or((false, false));
                    runtime = Some((a || tcp, b || tls));
                }
                Err(m) => return Out::new(Status::Error, format!("{p}: {m}"), ev),
            },
            Err(e) if e.is_invisible() => {
                ev.push(err_ev(&e));
                runtime_err.get_or_insert(e);
            }
            Err(e) => return Out::from_err(&e, p, ev),
        }
    }
    let (tcp_listen, tls_listen) = runtime.unwrap_or((false, false));
    let libvirt_present =
        daemons.iter().any(Daemon::present) || matches!(ctx.host.exists("/etc/libvirt"), Ok(true));
    if !libvirt_present && !tcp_listen && !tls_listen {
        ev.push(Evidence::new("/etc/libvirt", "<absent>"));
        return match ctx.role {
            Role::Compute => Out::new(
                Status::Fail,
                "libvirt is not installed on a compute node (/etc/libvirt missing)",
                ev,
            ),
            Role::Other => Out::new(
                Status::NotApplicable,
                "libvirt is not installed and the role is not compute",
                ev,
            ),
        };
    }
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    for d in &daemons {
        let auth_tcp = match d.str_knob("auth_tcp", "sasl") {
            Ok(v) => v,
            Err(m) => return Out::new(Status::Error, m, ev),
        };
        let auth_tls = match d.str_knob("auth_tls", "none") {
            Ok(v) => v,
            Err(m) => return Out::new(Status::Error, m, ev),
        };
        let no_verify = match d.int_knob("tls_no_verify_certificate", 0) {
            Ok(v) => v,
            Err(m) => return Out::new(Status::Error, m, ev),
        };
        // A listener cannot be attributed to a daemon without walking sockets;
        // any configured daemon with auth_tcp = none is suspect.
        let relevant = d.present() || d.name == "libvirtd";
        if tcp_listen && relevant {
            if auth_tcp == "none" {
                offenders.push(format!(
                    "TCP 16509 is listening and {}.conf auth_tcp = \"none\"",
                    d.name
                ));
            } else {
                notes.push(format!("TCP 16509 listening with {} auth_tcp = \"{auth_tcp}\" (authenticated, not encrypted)", d.name));
            }
        }
        if d.tcp_unit {
            if auth_tcp == "none" {
                offenders.push(format!(
                    "{}-tcp.socket is enabled and auth_tcp = \"none\"",
                    d.name
                ));
            } else {
                notes.push(format!(
                    "{}-tcp.socket enabled with auth_tcp = \"{auth_tcp}\"",
                    d.name
                ));
            }
        }
        if (tls_listen && relevant) || d.tls_unit {
            if no_verify != 0 && auth_tls == "none" {
                offenders.push(format!(
                    "{} TLS without client certificate verification and auth_tls = \"none\"",
                    d.name
                ));
            } else if no_verify != 0 {
                notes.push(format!(
                    "{} TLS with tls_no_verify_certificate = {no_verify}",
                    d.name
                ));
            }
        }
    }
    offenders.dedup();
    notes.dedup();
    if !offenders.is_empty() {
        return Out::new(
            Status::Fail,
            format!(
                "unauthenticated libvirt remote access: {}",
                offenders.join("; ")
            ),
            ev,
        )
        .items(cap_items(offenders));
    }
    if let (None, Some(e)) = (runtime, &runtime_err) {
        return Out::new(
            Status::Unknown,
            format!("listening sockets not visible: {e}"),
            ev,
        );
    }
    if !notes.is_empty() {
        return Out::new(Status::Informational, notes.join("; "), ev);
    }
    let what = if tls_listen {
        "only TLS (16514) with certificate verification is listening"
    } else {
        "no libvirt TCP/TLS listener"
    };
    Out::new(Status::Pass, what, ev)
}
