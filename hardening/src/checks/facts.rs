//! The check context: the host view, role, parameters and the facts several
//! checks share, each read at most once per run.

use std::collections::BTreeSet;

use super::{err_ev, Lazy};
use crate::host::{HostError, HostView, MountEntry, ViewKind};
use crate::params::{CheckParams, MacSelection};
use crate::parse::{self, Accounts, Ini, LibvirtConf};
use crate::report::{Evidence, Role};

/// A configuration file as the checks see it.
#[derive(Debug, Clone)]
pub(crate) enum ConfFile<T> {
    /// Read and parsed.
    Parsed(T),
    /// ENOENT.
    Absent,
    /// Not visible (EACCES/EPERM) or another I/O error.
    Failed(HostError),
    /// Read, but not in the expected syntax.
    Bad(String),
}

/// A process as read from `/proc/PID`.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub pid: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

impl Proc {
    fn argv_base(&self, i: usize) -> &str {
        self.argv
            .get(i)
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// A QEMU process (comm or argv[0]).
    pub fn is_qemu(&self) -> bool {
        let q = |s: &str| s.starts_with("qemu-system-") || s == "qemu-kvm";
        q(&self.comm) || q(self.argv_base(0))
    }

    /// A nova-compute process: comm, argv[0], or a python interpreter running it.
    pub fn is_nova_compute(&self) -> bool {
        self.comm == "nova-compute"
            || self.argv_base(0) == "nova-compute"
            || (self.argv_base(0).starts_with("python") && self.argv_base(1) == "nova-compute")
    }

    /// The value following `flag` (`-uuid x` or `-uuid=x`).
    pub fn arg_value(&self, flag: &str) -> Option<&str> {
        let eq = format!("{flag}=");
        let mut it = self.argv.iter();
        while let Some(a) = it.next() {
            if a == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(&eq) {
                return Some(v);
            }
        }
        None
    }

    /// The guest name from `-name guest=NAME,...` or `-name NAME`.
    pub fn guest_name(&self) -> Option<String> {
        let v = self.arg_value("-name")?;
        let first = v.split(',').next().unwrap_or(v);
        let name = first.strip_prefix("guest=").unwrap_or(first);
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// "instance-0000001a (pid 4242)" or "pid 4242".
    pub fn ident(&self) -> String {
        match self.guest_name() {
            Some(n) => format!("{n} (pid {})", self.pid),
            None => format!("{} (pid {})", self.comm, self.pid),
        }
    }

    /// Compact evidence of the command line: comm, -name, -uuid.
    pub fn summary(&self) -> String {
        format!(
            "comm={} argv0={} name={} uuid={}",
            self.comm,
            self.argv.first().map(String::as_str).unwrap_or(""),
            self.guest_name().unwrap_or_default(),
            self.arg_value("-uuid").unwrap_or("")
        )
    }
}

/// Three-valued fact with reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    No(String),
    Unknown(String),
    Error(String),
}

/// The `enabled` parameter of the AppArmor module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AaEnabled {
    Yes,
    No,
    Absent,
    Hidden(HostError),
    Bad(String),
}

/// SELinux runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeState {
    Enforcing,
    Permissive,
    NotEnabled(String),
    Unknown(String),
    Error(String),
}

/// Which MAC the profile selects after auto-detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mac {
    AppArmor,
    SeLinux,
    Neither,
}

/// The LSM list and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct LsmFacts {
    pub list: Option<Vec<String>>,
    pub source: String,
    pub evidence: Vec<Evidence>,
    pub securityfs_visible: bool,
    pub read_error: Option<HostError>,
}

/// Container markers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerFacts {
    pub markers: Vec<String>,
    pub evidence: Vec<Evidence>,
    pub agent_markers: Vec<String>,
}

/// AppArmor facts.
#[derive(Debug, Clone)]
pub(crate) struct AaFacts {
    pub enabled: AaEnabled,
    pub evidence: Vec<Evidence>,
    /// `/sys/kernel/security/apparmor` exists.
    pub fs_dir: Result<bool, HostError>,
    /// Parsed profiles list.
    pub profiles: Result<Vec<(String, String)>, ProfilesErr>,
}

/// Why the profiles list is not available.
#[derive(Debug, Clone)]
pub(crate) enum ProfilesErr {
    Read(HostError),
    Bad(String),
}

/// AppArmor profile modes that confine.
pub(crate) const AA_ENFORCING_MODES: &[&str] = &["enforce", "kill"];
/// AppArmor profile modes that do not enforce.
pub(crate) const AA_LAX_MODES: &[&str] = &["complain", "prompt", "unconfined", "mixed"];

/// The check context.
pub(crate) struct Ctx<'a> {
    pub host: &'a dyn HostView,
    pub role: Role,
    pub params: &'a CheckParams,
    mounts: Lazy<Result<Vec<MountEntry>, HostError>>,
    kmsg: Lazy<Result<Vec<String>, HostError>>,
    procs: Lazy<Result<Vec<Proc>, HostError>>,
    accounts: Lazy<Result<Accounts, HostError>>,
    lsm: Lazy<LsmFacts>,
    container: Lazy<ContainerFacts>,
    qemu_conf: Lazy<ConfFile<LibvirtConf>>,
    nova_conf: Lazy<ConfFile<Ini>>,
    cmdline: Lazy<Result<String, HostError>>,
    cpuinfo: Lazy<Result<BTreeSet<String>, HostError>>,
    aa: Lazy<AaFacts>,
    se: Lazy<(SeState, Vec<Evidence>)>,
}

/// Path of libvirt's QEMU driver configuration.
pub(crate) const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// Path of nova's configuration.
pub(crate) const NOVA_CONF: &str = "/etc/nova/nova.conf";

impl<'a> Ctx<'a> {
    pub fn new(host: &'a dyn HostView, role: Role, params: &'a CheckParams) -> Self {
        Ctx {
            host,
            role,
            params,
            mounts: Lazy::new(),
            kmsg: Lazy::new(),
            procs: Lazy::new(),
            accounts: Lazy::new(),
            lsm: Lazy::new(),
            container: Lazy::new(),
            qemu_conf: Lazy::new(),
            nova_conf: Lazy::new(),
            cmdline: Lazy::new(),
            cpuinfo: Lazy::new(),
            aa: Lazy::new(),
            se: Lazy::new(),
        }
    }

    /// Reads a text file and records it (or the error) as evidence.
    pub fn read_ev(&self, path: &str, ev: &mut Vec<Evidence>) -> Result<String, HostError> {
        match self.host.read_string(path) {
            Ok(s) => {
                ev.push(Evidence::new(path, &s));
                Ok(s)
            }
            Err(e) => {
                ev.push(err_ev(&e));
                Err(e)
            }
        }
    }

    /// Whether a directory exists and can be listed (used to prove that an
    /// interface is visible before concluding from an absent file).
    pub fn dir_visible(&self, path: &str) -> bool {
        matches!(self.host.read_dir(path), Ok(v) if !v.is_empty())
    }

    pub fn mounts(&self) -> &Result<Vec<MountEntry>, HostError> {
        self.mounts.get_or_init(|| self.host.mounts())
    }

    /// The mount holding `path`, if the mount table is readable.
    pub fn mount_of(&self, path: &str) -> Option<&MountEntry> {
        self.mounts()
            .as_ref()
            .ok()
            .and_then(|m| crate::host::mount_for(m, path))
    }

    /// `/dev` is the host's devtmpfs (so an absent device node is meaningful).
    pub fn dev_is_host(&self) -> bool {
        self.mount_of("/dev")
            .is_some_and(|m| m.fs_type == "devtmpfs")
    }

    pub fn kmsg(&self) -> &Result<Vec<String>, HostError> {
        self.kmsg.get_or_init(|| self.host.kernel_log())
    }

    /// The last kernel log line containing `needle`.
    pub fn kmsg_find(&self, needle: &str) -> Option<&str> {
        self.kmsg()
            .as_ref()
            .ok()?
            .iter()
            .rev()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }

    pub fn cmdline(&self) -> &Result<String, HostError> {
        self.cmdline.get_or_init(|| {
            self.host
                .read_string("/proc/cmdline")
                .map(|s| s.trim().to_owned())
        })
    }

    pub fn cpu_flags(&self) -> &Result<BTreeSet<String>, HostError> {
        self.cpuinfo.get_or_init(|| {
            self.host
                .read_string("/proc/cpuinfo")
                .map(|s| parse::cpuinfo_flags(&s))
        })
    }

    /// All processes under `/proc` with comm and argv; vanished ones are skipped.
    pub fn procs(&self) -> &Result<Vec<Proc>, HostError> {
        self.procs.get_or_init(|| {
            let pids = self.host.processes()?;
            let mut out = Vec::new();
            for pid in pids {
                let comm = match self.host.read_string(&format!("/proc/{pid}/comm")) {
                    Ok(c) => c.trim_end_matches('\n').to_owned(),
                    Err(e) if e.is_not_found() => continue,
                    Err(_) => String::new(),
                };
                // The command line is only read for processes that may be QEMU or
                // nova-compute: reading it touches the process's memory and can
                // block on a process stuck in D state.
                let relevant = comm.is_empty()
                    || comm.starts_with("qemu")
                    || comm.starts_with("python")
                    || comm.starts_with("nova");
                let argv = if relevant {
                    self.host
                        .read(&format!("/proc/{pid}/cmdline"))
                        .map(|b| parse::cmdline_args(&b))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                out.push(Proc { pid, comm, argv });
            }
            Ok(out)
        })
    }

    /// The processes, or why they are not visible (an empty `/proc` counts as not
    /// visible: a live `/proc` always shows at least the reader).
    pub fn visible_procs(&self) -> Result<&[Proc], HostError> {
        match self.procs() {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(HostError::unavailable(
                "/proc",
                "no processes visible (/proc not mounted?)",
            )),
            Err(e) => Err(e.clone()),
        }
    }

    /// Users and groups from the view's own `/etc/passwd` and `/etc/group`.
    pub fn accounts(&self) -> &Result<Accounts, HostError> {
        self.accounts.get_or_init(|| {
            let passwd = self.host.read_string("/etc/passwd")?;
            let group = self.host.read_string("/etc/group")?;
            let (users, user_ids) = parse::id_file(&passwd);
            let (groups, group_ids) = parse::id_file(&group);
            Ok(Accounts {
                users,
                user_ids,
                groups,
                group_ids,
            })
        })
    }

    /// "0(root)" style rendering of a uid.
    pub fn user_name(&self, uid: u32) -> String {
        match self
            .accounts()
            .as_ref()
            .ok()
            .and_then(|a| a.users.get(&uid))
        {
            Some(n) => format!("{uid}({n})"),
            None => uid.to_string(),
        }
    }

    /// "108(kvm)" style rendering of a gid.
    pub fn group_name(&self, gid: u32) -> String {
        match self
            .accounts()
            .as_ref()
            .ok()
            .and_then(|a| a.groups.get(&gid))
        {
            Some(n) => format!("{gid}({n})"),
            None => gid.to_string(),
        }
    }

    fn load_conf<T>(&self, path: &str, parse: fn(&str) -> Result<T, String>) -> ConfFile<T> {
        match self.host.read_string(path) {
            Ok(text) => match parse(&text) {
                Ok(v) => ConfFile::Parsed(v),
                Err(e) => ConfFile::Bad(format!("{path}: {e}")),
            },
            Err(e) if e.is_not_found() => ConfFile::Absent,
            Err(e) if e.kind == crate::host::HostErrorKind::Format => ConfFile::Bad(e.to_string()),
            Err(e) => ConfFile::Failed(e),
        }
    }

    pub fn qemu_conf(&self) -> &ConfFile<LibvirtConf> {
        self.qemu_conf
            .get_or_init(|| self.load_conf(QEMU_CONF, parse::libvirt_conf))
    }

    /// Loads another libvirt-syntax file (not cached).
    pub fn libvirt_conf(&self, path: &str) -> ConfFile<LibvirtConf> {
        self.load_conf(path, parse::libvirt_conf)
    }

    pub fn nova_conf(&self) -> &ConfFile<Ini> {
        self.nova_conf
            .get_or_init(|| self.load_conf(NOVA_CONF, parse::ini))
    }

    /// Loads another INI file (not cached).
    pub fn ini_file(&self, path: &str) -> ConfFile<Ini> {
        self.load_conf(path, parse::ini)
    }

    // ----- container (E1) -------------------------------------------------------

    pub fn container(&self) -> &ContainerFacts {
        self.container.get_or_init(|| {
            let (markers, evidence) = container_markers(self.host);
            let agent_markers = match self.host.agent_view() {
                Some(agent) => container_markers(agent.as_ref()).0,
                None => Vec::new(),
            };
            ContainerFacts {
                markers,
                evidence,
                agent_markers,
            }
        })
    }

    /// Whether host-scoped results must be downgraded to `unknown`.
    pub fn container_downgrade(&self) -> bool {
        !self.params.trust_container_view && !self.container().markers.is_empty()
    }

    // ----- LSM / AppArmor / SELinux -------------------------------------------

    pub fn lsm(&self) -> &LsmFacts {
        self.lsm.get_or_init(|| {
            let securityfs_visible = self.dir_visible("/sys/kernel/security");
            let mut evidence = Vec::new();
            match self.read_ev("/sys/kernel/security/lsm", &mut evidence) {
                Ok(text) => {
                    let list: Vec<String> = text
                        .trim()
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    LsmFacts {
                        list: Some(list),
                        source: "/sys/kernel/security/lsm".into(),
                        evidence,
                        securityfs_visible,
                        read_error: None,
                    }
                }
                Err(e) => {
                    let from_log = self.kmsg_find("LSM: initializing lsm=").map(str::to_owned);
                    let list = from_log.as_ref().and_then(|l| {
                        l.split_once("lsm=").map(|(_, rest)| {
                            rest.split_whitespace()
                                .next()
                                .unwrap_or("")
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect::<Vec<_>>()
                        })
                    });
                    if let Some(l) = &from_log {
                        evidence.push(Evidence::new("/dev/kmsg", l));
                    }
                    LsmFacts {
                        list,
                        source: if from_log.is_some() {
                            "boot log (/dev/kmsg)".into()
                        } else {
                            String::new()
                        },
                        evidence,
                        securityfs_visible,
                        read_error: Some(e),
                    }
                }
            }
        })
    }

    pub fn apparmor(&self) -> &AaFacts {
        self.aa.get_or_init(|| {
            let mut evidence = Vec::new();
            let enabled =
                match self.read_ev("/sys/module/apparmor/parameters/enabled", &mut evidence) {
                    Ok(v) => match v.trim() {
                        "Y" | "1" => AaEnabled::Yes,
                        "N" | "0" => AaEnabled::No,
                        other => {
                            AaEnabled::Bad(format!("unexpected value {other:?} (expected Y or N)"))
                        }
                    },
                    Err(e) if e.is_not_found() => AaEnabled::Absent,
                    Err(e) if e.is_invisible() => AaEnabled::Hidden(e),
                    Err(e) => AaEnabled::Bad(format!("cannot read: {e}")),
                };
            let fs_dir = self.host.exists("/sys/kernel/security/apparmor");
            let profiles = match self
                .host
                .read_string("/sys/kernel/security/apparmor/profiles")
            {
                Ok(text) => {
                    evidence.push(Evidence::new(
                        "/sys/kernel/security/apparmor/profiles",
                        &text,
                    ));
                    parse::apparmor_profiles(&text).map_err(ProfilesErr::Bad)
                }
                Err(e) if e.is_invisible() => Err(ProfilesErr::Read(e)),
                Err(e) => Err(ProfilesErr::Bad(e.to_string())),
            };
            AaFacts {
                enabled,
                evidence,
                fs_dir,
                profiles,
            }
        })
    }

    /// Whether AppArmor is enabled in this kernel.
    pub fn aa_active(&self) -> Tri {
        let aa = self.apparmor();
        match &aa.enabled {
            AaEnabled::Yes => Tri::Yes,
            AaEnabled::No => Tri::No("AppArmor module parameter enabled = N".into()),
            AaEnabled::Absent => {
                let lsm = self.lsm();
                match &lsm.list {
                    Some(l) if l.iter().any(|x| x == "apparmor") => Tri::Unknown(format!(
                        "no /sys/module/apparmor/parameters/enabled, yet the LSM list ({}) names apparmor",
                        lsm.source
                    )),
                    Some(l) => Tri::No(format!(
                        "AppArmor is not built in (no /sys/module/apparmor) and not in the LSM list [{}] from {}",
                        l.join(","),
                        lsm.source
                    )),
                    None => Tri::Unknown(
                        "no /sys/module/apparmor/parameters/enabled and the LSM list is not visible (securityfs not mounted, no boot log)"
                            .into(),
                    ),
                }
            }
            AaEnabled::Hidden(e) => Tri::Unknown(format!("AppArmor module state not visible: {e}")),
            AaEnabled::Bad(m) => {
                Tri::Error(format!("/sys/module/apparmor/parameters/enabled: {m}"))
            }
        }
    }

    /// Whether AppArmor confines at least one process class (enabled and at least
    /// one profile in enforce/kill mode).
    pub fn aa_confines(&self) -> Tri {
        match self.aa_active() {
            Tri::Yes => {}
            other => return other,
        }
        let aa = self.apparmor();
        match &aa.profiles {
            Ok(list) => {
                let enforced = list
                    .iter()
                    .filter(|(_, m)| AA_ENFORCING_MODES.contains(&m.as_str()))
                    .count();
                if enforced > 0 {
                    Tri::Yes
                } else {
                    Tri::No(format!(
                        "AppArmor enabled but none of {} loaded profiles is enforced",
                        list.len()
                    ))
                }
            }
            Err(ProfilesErr::Read(e)) => {
                Tri::Unknown(format!("AppArmor profiles not visible: {e}"))
            }
            Err(ProfilesErr::Bad(m)) => Tri::Error(format!("AppArmor profiles list: {m}")),
        }
    }

    pub fn selinux(&self) -> &(SeState, Vec<Evidence>) {
        self.se.get_or_init(|| {
            let mut ev = Vec::new();
            for p in ["/sys/fs/selinux/enforce", "/selinux/enforce"] {
                match self.read_ev(p, &mut ev) {
                    Ok(v) => {
                        let st = match v.trim() {
                            "1" => SeState::Enforcing,
                            "0" => SeState::Permissive,
                            other => SeState::Error(format!(
                                "{p}: unexpected value {other:?} (expected 0 or 1)"
                            )),
                        };
                        return (st, ev);
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) if e.is_invisible() => return (SeState::Unknown(format!("{e}")), ev),
                    Err(e) => return (SeState::Error(format!("{e}")), ev),
                }
            }
            let lsm = self.lsm();
            if lsm
                .list
                .as_ref()
                .is_some_and(|l| l.iter().any(|x| x == "selinux"))
            {
                return (
                    SeState::Unknown(format!(
                        "SELinux is in the LSM list ({}) but selinuxfs is not mounted",
                        lsm.source
                    )),
                    ev,
                );
            }
            match self.host.exists("/sys/fs/selinux") {
                Ok(true) => {
                    return (
                        SeState::Unknown(
                            "/sys/fs/selinux exists but selinuxfs is not mounted".into(),
                        ),
                        ev,
                    );
                }
                Ok(false) => {}
                Err(e) => return (SeState::Unknown(format!("{e}")), ev),
            }
            match self.host.exists("/sys/fs") {
                Ok(true) => (
                    SeState::NotEnabled("SELinux is not enabled (no /sys/fs/selinux)".into()),
                    ev,
                ),
                _ => (SeState::Unknown("sysfs (/sys/fs) not visible".into()), ev),
            }
        })
    }

    /// The MAC framework the profile selects (auto-detected for `auto`).
    pub fn selected_mac(&self) -> Mac {
        match self.params.mac {
            MacSelection::Apparmor => Mac::AppArmor,
            MacSelection::Selinux => Mac::SeLinux,
            MacSelection::Auto => {
                if self.apparmor().enabled == AaEnabled::Yes {
                    return Mac::AppArmor;
                }
                if matches!(self.selinux().0, SeState::Enforcing | SeState::Permissive) {
                    return Mac::SeLinux;
                }
                match &self.lsm().list {
                    Some(l) if l.iter().any(|x| x == "apparmor") => Mac::AppArmor,
                    Some(l) if l.iter().any(|x| x == "selinux") => Mac::SeLinux,
                    _ => Mac::Neither,
                }
            }
        }
    }

    /// "profile selects" or "auto-detected" wording for reasons.
    pub fn mac_source(&self) -> &'static str {
        if self.params.mac == MacSelection::Auto {
            "auto-detected"
        } else {
            "selected by the profile"
        }
    }

    /// Whether this is a host-mount view (for E1 wording).
    pub fn is_host_mount(&self) -> bool {
        self.host.kind() == ViewKind::HostMount
    }
}

/// Container markers inside a view (catalogue E1).
pub(crate) fn container_markers(host: &dyn HostView) -> (Vec<String>, Vec<Evidence>) {
    let mut markers = Vec::new();
    let mut ev = Vec::new();
    for p in ["/.dockerenv", "/run/.containerenv"] {
        match host.exists(p) {
            Ok(true) => {
                markers.push(p.to_owned());
                ev.push(Evidence::new(p, "exists"));
            }
            Ok(false) => {}
            Err(e) => ev.push(err_ev(&e)),
        }
    }
    if let Ok(v) = host.read_string("/run/systemd/container") {
        let v = v.trim().to_owned();
        if !v.is_empty() {
            markers.push(format!("/run/systemd/container={v}"));
            ev.push(Evidence::new("/run/systemd/container", &v));
        }
    }
    let overlay_root = match host.fs_type("/") {
        Ok(Some(m)) => {
            ev.push(Evidence::new(
                "/proc/self/mountinfo",
                format!("/ is {} ({})", m.fs_type, m.source),
            ));
            m.mount_point == "/" && (m.fs_type == "overlay" || m.fs_type == "fuse-overlayfs")
        }
        Ok(None) => false,
        Err(e) => {
            ev.push(err_ev(&e));
            false
        }
    };
    match host.read_string("/proc/1/cgroup") {
        Ok(cg) => {
            let hit = cg
                .lines()
                .find(|l| {
                    ["docker", "kubepods", "containerd", "libpod"]
                        .iter()
                        .any(|k| l.contains(k))
                })
                .map(str::to_owned);
            ev.push(Evidence::new("/proc/1/cgroup", &cg));
            if overlay_root {
                if let Some(h) = hit {
                    markers.push(format!("overlay root with container cgroup path ({h})"));
                }
            }
        }
        Err(e) => ev.push(err_ev(&e)),
    }
    (markers, ev)
}
