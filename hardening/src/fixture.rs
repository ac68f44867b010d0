//! Fixture hosts: build a directory tree laid out like a host (`sys/…`, `proc/…`,
//! `etc/…`) plus its [`Manifest`], so that the checks can be
//! exercised without the hardware (catalogue §3.1).
//!
//! ```
//! use trustpool_hardening::fixture::FixtureBuilder;
//! use trustpool_hardening::{open_host, run_checks, CheckParams, Role, Status};
//!
//! let dir = tempfile::tempdir().unwrap();
//! FixtureBuilder::new()
//!     .file("/sys/kernel/mm/ksm/run", "1\n")
//!     .build(dir.path())
//!     .unwrap();
//! let host = open_host(dir.path()).unwrap();
//! let report = run_checks(host.as_ref(), Role::Other, &CheckParams::default());
//! assert_eq!(report.get("mem.ksm_off").unwrap().status, Status::Fail);
//! ```
//!
//! Presets: [`good_compute`] (an Ubuntu-like AppArmor KVM compute node on which
//! every high-severity check passes) and [`apparmor_disabled`] (the same host
//! booted with AppArmor off), with [`good_compute_host`] and
//! [`apparmor_disabled_host`] writing them to a directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::{
    components, normalize, DeviceEntry, DeviceKind, ErrorEntry, KvmEntry, Manifest, OwnerEntry,
    StatvfsEntry, MANIFEST_FILE,
};

/// Error while writing a fixture tree.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// An I/O error at a path.
    #[error("fixture {path}: {source}")]
    Io {
        /// The real path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Two entries conflict (a file where a directory is needed).
    #[error("fixture conflict: {0}")]
    Conflict(String),
    /// The manifest cannot be serialised.
    #[error("fixture manifest: {0}")]
    Manifest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// A process to put under `/proc/PID`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSpec {
    /// Pid.
    pub pid: u32,
    /// `comm` (the kernel keeps at most 15 bytes; so does the builder).
    pub comm: String,
    /// argv, written NUL-separated to `cmdline`.
    pub args: Vec<String>,
    /// Real, effective, saved and fs uid (`Uid:` line of `status`).
    pub uids: [u32; 4],
    /// AppArmor label, e.g. `libvirt-<uuid> (enforce)`; written to
    /// `attr/apparmor/current` and `attr/current`.
    pub apparmor: Option<String>,
    /// SELinux context; written to `attr/current` (NUL-terminated, as the kernel does).
    pub selinux: Option<String>,
    /// Content of `/proc/PID/cgroup`.
    pub cgroup: Option<String>,
}

/// Builds a fixture host in memory; [`FixtureBuilder::build`] writes it out.
/// Paths are logical host paths (`/etc/nova/nova.conf`).
#[derive(Debug, Clone, Default)]
pub struct FixtureBuilder {
    nodes: BTreeMap<String, Node>,
    manifest: Manifest,
    next_mount_id: u64,
}

impl FixtureBuilder {
    /// An empty host (only the manifest).
    pub fn new() -> Self {
        FixtureBuilder {
            nodes: BTreeMap::new(),
            manifest: Manifest::default(),
            next_mount_id: 20,
        }
    }

    /// Sets a file's content (replacing it).
    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        self.nodes
            .insert(normalize(path), Node::File(content.as_ref().to_vec()));
        self
    }

    /// Appends to a file (creating it).
    pub fn append(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        let p = normalize(path);
        match self.nodes.get_mut(&p) {
            Some(Node::File(v)) => v.extend_from_slice(content.as_ref()),
            _ => {
                self.nodes.insert(p, Node::File(content.as_ref().to_vec()));
            }
        }
        self
    }

    /// Creates a directory (and its parents).
    pub fn dir(mut self, path: &str) -> Self {
        self.nodes.insert(normalize(path), Node::Dir);
        self
    }

    /// Creates a symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.nodes
            .insert(normalize(path), Node::Symlink(target.to_owned()));
        self
    }

    /// Removes a path, everything below it and its manifest entries (removing
    /// `/dev/kvm` also clears the KVM probe result).
    pub fn remove(mut self, path: &str) -> Self {
        let p = normalize(path);
        let prefix = format!("{p}/");
        let under = |x: &str| p == "/" || x == p || x.starts_with(&prefix);
        self.nodes.retain(|k, _| !under(k));
        self.manifest.devices.retain(|d| !under(&d.path));
        self.manifest.owners.retain(|o| !under(&o.path));
        self.manifest.errors.retain(|e| !under(&e.path));
        self.manifest.statvfs.retain(|s| !under(&s.path));
        if under("/dev/kvm") {
            self.manifest.kvm = None;
        }
        self
    }

    /// The paths of all regular files set so far, sorted.
    pub fn files(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The content of a file set so far.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(&normalize(path)) {
            Some(Node::File(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether a file or directory is set at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(&normalize(path))
    }

    /// A process with an AppArmor label (or none), all four uids equal to `uid`.
    pub fn process(
        self,
        pid: u32,
        comm: &str,
        args: &[&str],
        uid: u32,
        apparmor_label: Option<&str>,
    ) -> Self {
        self.process_spec(ProcessSpec {
            pid,
            comm: comm.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            uids: [uid; 4],
            apparmor: apparmor_label.map(str::to_owned),
            selinux: None,
            cgroup: None,
        })
    }

    /// A process with an SELinux context.
    pub fn selinux_process(
        self,
        pid: u32,
        comm: &str,
        args: &[&str],
        uid: u32,
        context: &str,
    ) -> Self {
        self.process_spec(ProcessSpec {
            pid,
            comm: comm.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            uids: [uid; 4],
            apparmor: None,
            selinux: Some(context.to_owned()),
            cgroup: None,
        })
    }

    /// A process from a full specification (replaces any earlier one with that pid).
    pub fn process_spec(self, p: ProcessSpec) -> Self {
        let base = format!("/proc/{}", p.pid);
        let comm: String = p.comm.chars().take(15).collect();
        let mut cmdline = Vec::new();
        for a in &p.args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        let [u0, u1, u2, u3] = p.uids;
        let status = format!(
            "Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\nUid:\t{u0}\t{u1}\t{u2}\t{u3}\nGid:\t{u0}\t{u1}\t{u2}\t{u3}\n",
            pid = p.pid
        );
        let mut b = self
            .remove(&base)
            .file(&format!("{base}/comm"), format!("{comm}\n"))
            .file(&format!("{base}/cmdline"), cmdline)
            .file(&format!("{base}/status"), status);
        if let Some(l) = &p.apparmor {
            b = b
                .file(&format!("{base}/attr/apparmor/current"), format!("{l}\n"))
                .file(&format!("{base}/attr/current"), format!("{l}\n"));
        }
        if let Some(c) = &p.selinux {
            b = b.file(&format!("{base}/attr/current"), format!("{c}\0"));
        }
        if let Some(cg) = &p.cgroup {
            b = b.file(&format!("{base}/cgroup"), cg.as_bytes());
        }
        b
    }

    /// A device node (manifest `[[devices]]`).
    pub fn device(mut self, entry: DeviceEntry) -> Self {
        let p = normalize(&entry.path);
        self.manifest.devices.retain(|d| d.path != p);
        self.manifest.devices.push(DeviceEntry { path: p, ..entry });
        self
    }

    /// A character device node.
    pub fn char_device(
        self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Self {
        self.device(DeviceEntry {
            path: path.to_owned(),
            kind: DeviceKind::Char,
            major,
            minor,
            mode,
            uid,
            gid,
        })
    }

    /// Overrides owner and mode of a tree path (manifest `[[owners]]`).
    pub fn owner(mut self, path: &str, uid: u32, gid: u32, mode: u32) -> Self {
        let p = normalize(path);
        self.manifest.owners.retain(|o| o.path != p);
        self.manifest.owners.push(OwnerEntry {
            path: p,
            uid: Some(uid),
            gid: Some(gid),
            mode: Some(mode),
        });
        self
    }

    /// Reads of `path` and below fail with `errno` (e.g. `"EACCES"`); stat of the
    /// path itself still works.
    pub fn error(mut self, path: &str, errno: &str) -> Self {
        self.manifest.errors.push(ErrorEntry {
            path: normalize(path),
            errno: errno.to_owned(),
            stat: false,
        });
        self
    }

    /// Like [`FixtureBuilder::error`], and stat of the path itself fails too.
    pub fn error_stat(mut self, path: &str, errno: &str) -> Self {
        self.manifest.errors.push(ErrorEntry {
            path: normalize(path),
            errno: errno.to_owned(),
            stat: true,
        });
        self
    }

    /// statvfs numbers for the file system holding `path` (frsize 4096).
    pub fn statvfs(
        mut self,
        path: &str,
        blocks: u64,
        bavail: u64,
        files: u64,
        favail: u64,
    ) -> Self {
        let p = normalize(path);
        self.manifest.statvfs.retain(|s| s.path != p);
        self.manifest.statvfs.push(StatvfsEntry {
            path: p,
            bsize: None,
            frsize: 4096,
            blocks,
            bfree: None,
            bavail,
            files,
            ffree: None,
            favail,
            f_type: None,
        });
        self
    }

    /// A full statvfs entry.
    pub fn statvfs_entry(mut self, entry: StatvfsEntry) -> Self {
        let p = normalize(&entry.path);
        self.manifest.statvfs.retain(|s| s.path != p);
        self.manifest
            .statvfs
            .push(StatvfsEntry { path: p, ..entry });
        self
    }

    /// `KVM_GET_API_VERSION` returns `version`.
    pub fn kvm_api(mut self, version: i32) -> Self {
        self.manifest.kvm = Some(KvmEntry {
            api_version: Some(version),
            errno: None,
        });
        self
    }

    /// The KVM probe fails with `errno` (e.g. `"ENXIO"`).
    pub fn kvm_errno(mut self, errno: &str) -> Self {
        self.manifest.kvm = Some(KvmEntry {
            api_version: None,
            errno: Some(errno.to_owned()),
        });
        self
    }

    /// Appends a user to `/etc/passwd`.
    pub fn passwd(self, name: &str, uid: u32, gid: u32) -> Self {
        self.append(
            "/etc/passwd",
            format!("{name}:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n"),
        )
    }

    /// Appends a group to `/etc/group`.
    pub fn group(self, name: &str, gid: u32, members: &[&str]) -> Self {
        self.append(
            "/etc/group",
            format!("{name}:x:{gid}:{}\n", members.join(",")),
        )
    }

    /// Appends a mount to `/proc/self/mountinfo` and `/proc/1/mountinfo`.
    pub fn mount(mut self, mount_point: &str, fs_type: &str, source: &str) -> Self {
        let id = self.next_mount_id;
        self.next_mount_id += 1;
        let esc = |s: &str| {
            s.replace('\\', "\\134")
                .replace(' ', "\\040")
                .replace('\t', "\\011")
                .replace('\n', "\\012")
        };
        let line = format!(
            "{id} 1 0:{id} / {} rw,relatime - {fs_type} {} rw\n",
            esc(mount_point),
            esc(source)
        );
        self.append("/proc/self/mountinfo", &line)
            .append("/proc/1/mountinfo", &line)
    }

    /// Sets `/proc/sys/<key>`.
    pub fn sysctl(self, key: &str, value: &str) -> Self {
        self.file(
            &format!("/proc/sys/{}", key.replace('.', "/")),
            format!("{value}\n"),
        )
    }

    /// Adds a LISTEN socket on `port` (0.0.0.0) to `/proc/net/tcp`.
    pub fn tcp_listen(mut self, port: u16) -> Self {
        const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        if !self.has("/proc/net/tcp") {
            self = self.file("/proc/net/tcp", HEADER);
        }
        let n = match self.nodes.get("/proc/net/tcp") {
            Some(Node::File(v)) => v.iter().filter(|b| **b == b'\n').count().saturating_sub(1),
            _ => 0,
        };
        self.append(
            "/proc/net/tcp",
            format!("{n:4}: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {} 1 0000000000000000 100 0 0 10 0\n", 10000 + n),
        )
    }

    /// Appends a kernel log line (`/dev/kmsg` as a regular file).
    pub fn kmsg(self, line: &str) -> Self {
        self.append("/dev/kmsg", format!("6,1,1000,-;{line}\n"))
    }

    /// The manifest as it will be written.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes the tree and `trustpool-fixture.toml` under `dir` (created if needed).
    pub fn build(&self, dir: &Path) -> Result<(), FixtureError> {
        let io = |path: &Path, source: std::io::Error| FixtureError::Io {
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (p, node) in &self.nodes {
            let comps = components(p);
            let mut ancestor = String::new();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                ancestor.push('/');
                ancestor.push_str(c);
                if matches!(
                    self.nodes.get(&ancestor),
                    Some(Node::File(_) | Node::Symlink(_))
                ) {
                    return Err(FixtureError::Conflict(format!(
                        "{p} lies below the non-directory {ancestor}"
                    )));
                }
            }
            let mut real = dir.to_path_buf();
            for c in comps {
                real.push(c);
            }
            if let Some(parent) = real.parent() {
                fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            match node {
                Node::File(data) => fs::write(&real, data).map_err(|e| io(&real, e))?,
                Node::Dir => fs::create_dir_all(&real).map_err(|e| io(&real, e))?,
                Node::Symlink(t) => {
                    if fs::symlink_metadata(&real).is_ok() {
                        fs::remove_file(&real).map_err(|e| io(&real, e))?;
                    }
                    std::os::unix::fs::symlink(t, &real).map_err(|e| io(&real, e))?;
                }
            }
        }
        let text = self
            .manifest
            .to_toml()
            .map_err(|e| FixtureError::Manifest(e.to_string()))?;
        let mp = dir.join(MANIFEST_FILE);
        fs::write(&mp, text).map_err(|e| io(&mp, e))?;
        Ok(())
    }
}

/// Instance uuids of the two guests of [`good_compute`].
pub const GUEST_UUIDS: [&str; 2] = [
    "8d4c4f2e-5b6a-4c1d-9e0f-1a2b3c4d5e6f",
    "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b",
];
/// Guest (QEMU) pids of [`good_compute`].
pub const GUEST_PIDS: [u32; 2] = [4242, 4243];
/// Uid/gid of `nova` in [`good_compute`].
pub const NOVA_ID: u32 = 64060;
/// Uid of `libvirt-qemu` in [`good_compute`].
pub const QEMU_UID: u32 = 64055;
/// Gid of `kvm` in [`good_compute`].
pub const KVM_GID: u32 = 108;
/// EFI global-variable GUID used in efivarfs file names.
pub const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// QEMU argv of a libvirt guest.
pub fn qemu_args(name: &str, uuid: &str) -> Vec<String> {
    [
        "/usr/bin/qemu-system-x86_64",
        "-name",
        &format!("guest={name},debug-threads=on"),
        "-S",
        "-machine",
        "pc-q35-8.2,usb=off,dump-guest-core=off",
        "-accel",
        "kvm",
        "-uuid",
        uuid,
        "-no-user-config",
        "-nodefaults",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// A libvirt guest confined by `label` (AppArmor), running as `libvirt-qemu`.
pub fn guest(
    b: FixtureBuilder,
    pid: u32,
    name: &str,
    uuid: &str,
    label: Option<&str>,
) -> FixtureBuilder {
    b.process_spec(ProcessSpec {
        pid,
        comm: "qemu-system-x86".into(),
        args: qemu_args(name, uuid),
        uids: [QEMU_UID; 4],
        apparmor: label.map(str::to_owned),
        selinux: None,
        cgroup: Some(format!(
            "0::/machine.slice/machine-qemu\\x2d1\\x2d{name}.scope/libvirt/emulator\n"
        )),
    })
}

fn profiles(extra: &[String]) -> String {
    let mut s = String::from("/usr/sbin/libvirtd (enforce)\nlibvirtd (enforce)\n/usr/bin/man (enforce)\nlsb_release (enforce)\nvirt-aa-helper (enforce)\n");
    for e in extra {
        s.push_str(e);
        s.push('\n');
    }
    s
}

/// An Ubuntu-like KVM compute node with AppArmor, two confined guests, a TPM 2.0,
/// Secure Boot, lockdown=integrity, VT-d, cgroup v2, a TXT measured launch and
/// hardened sysctls. Every high-severity check passes (`exit_code() == 0`).
pub fn good_compute() -> FixtureBuilder {
    let cpu_flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc vmx smx est tm2 ssse3 fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch ept vpid";
    let cpuinfo = format!(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nflags\t\t: {cpu_flags}\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: {cpu_flags}\n\n"
    );
    let mut b = FixtureBuilder::new()
        .passwd("root", 0, 0)
        .passwd("daemon", 1, 1)
        .passwd("libvirt-qemu", QEMU_UID, KVM_GID)
        .passwd("nova", NOVA_ID, NOVA_ID)
        .group("root", 0, &[])
        .group("kvm", KVM_GID, &["libvirt-qemu", "nova"])
        .group("libvirt", 116, &["nova"])
        .group("nova", NOVA_ID, &[])
        .group("libvirt-qemu", QEMU_UID, &[])
        .mount("/", "ext4", "/dev/sda2")
        .mount("/dev", "devtmpfs", "udev")
        .mount("/proc", "proc", "proc")
        .mount("/sys", "sysfs", "sysfs")
        .mount("/sys/kernel/security", "securityfs", "securityfs")
        .mount("/sys/fs/cgroup", "cgroup2", "cgroup2")
        .mount("/sys/firmware/efi/efivars", "efivarfs", "efivarfs")
        .mount("/sys/kernel/debug", "debugfs", "debugfs")
        .mount("/var/lib/nova/instances", "xfs", "/dev/sdb1")
        .file("/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=UUID=0f4e9a1c ro intel_iommu=on quiet\n")
        .file("/proc/cpuinfo", cpuinfo)
        .file("/proc/1/cgroup", "0::/init.scope\n")
        .file(
            "/proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t120\t1\ncpu\t0\t120\t1\ncpuacct\t0\t120\t1\nblkio\t0\t120\t1\nmemory\t0\t120\t1\ndevices\t0\t120\t1\nfreezer\t0\t120\t1\nnet_cls\t0\t120\t1\nperf_event\t0\t120\t1\npids\t0\t120\t1\n",
        )
        .file("/sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
        // AppArmor and LSMs
        .file("/sys/module/apparmor/parameters/enabled", "Y\n")
        .file("/sys/kernel/security/lsm", "lockdown,capability,landlock,yama,apparmor")
        .file(
            "/sys/kernel/security/apparmor/profiles",
            profiles(&GUEST_UUIDS.iter().map(|u| format!("libvirt-{u} (enforce)")).collect::<Vec<_>>()),
        )
        .file("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
        .kmsg("LSM: initializing lsm=lockdown,capability,landlock,yama,apparmor")
        .kmsg("Kernel is locked down from command line; see man kernel_lockdown.7")
        .kmsg("tboot: found shared page at phys addr 0x88000:")
        // cgroups
        .file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
        .file("/sys/fs/cgroup/machine.slice/cgroup.subtree_control", "cpuset cpu io memory pids\n")
        // KVM
        .dir("/sys/module/kvm/parameters")
        .file("/sys/module/kvm_intel/parameters/nested", "N\n")
        .file("/sys/kernel/mm/ksm/run", "0\n")
        .dir("/sys/kernel/mm/transparent_hugepage")
        .char_device("/dev/kvm", 10, 232, 0o660, 0, KVM_GID)
        .kvm_api(12)
        // IOMMU
        .dir("/sys/class/iommu/dmar0")
        .dir("/sys/class/iommu/dmar1")
        .dir("/sys/kernel/iommu_groups/0/devices")
        .dir("/sys/kernel/iommu_groups/1/devices")
        .dir("/sys/kernel/iommu_groups/2/devices")
        .file("/sys/firmware/acpi/tables/DMAR", b"DMAR\x50\x00\x00\x00")
        .file("/sys/firmware/acpi/tables/APIC", b"APIC")
        // UEFI Secure Boot
        .file(&format!("/sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL_GUID}"), [6u8, 0, 0, 0, 1])
        .file(&format!("/sys/firmware/efi/efivars/SetupMode-{EFI_GLOBAL_GUID}"), [6u8, 0, 0, 0, 0])
        .dir("/sys/fs/bpf")
        // TPM 2.0 with a TXT launch in PCR17
        .file("/sys/class/tpm/tpm0/tpm_version_major", "2\n")
        .file("/sys/class/tpm/tpm0/pcr-sha256/17", "9A3F0C5E51D7C9B2A4E6F1D3C5B7A9E0F2D4C6B8A0E1F3D5C7B9A1E3F5D7C9B1\n")
        .file("/sys/class/tpm/tpm0/pcr-sha256/0", "3D458CFE55CC03EA1F443F1562BEEC8DF51C75E14A9FCF9A7234A13F198E7969\n")
        .dir("/sys/kernel/debug/x86")
        .file("/sys/kernel/debug/x86/tboot_log", "TBOOT: ...\n")
        .char_device("/dev/tpm0", 10, 224, 0o660, 0, 0)
        .char_device("/dev/tpmrm0", 253, 65536, 0o660, 0, 0)
        // libvirt
        .file(
            "/etc/libvirt/qemu.conf",
            "# Master configuration file for the QEMU driver (trustpool fixture)\n#security_driver = \"selinux\"\nsecurity_default_confined = 1\nsecurity_require_confined = 1\nuser = \"libvirt-qemu\"\ngroup = \"kvm\"\ncgroup_controllers = [ \"cpu\", \"devices\", \"memory\", \"blkio\", \"cpuset\", \"cpuacct\" ]\n",
        )
        .file("/etc/libvirt/libvirtd.conf", "# libvirtd configuration\nlisten_tls = 0\nlisten_tcp = 0\nunix_sock_group = \"libvirt\"\nauth_unix_rw = \"none\"\n")
        // nova
        .file(
            "/etc/nova/nova.conf",
            "[DEFAULT]\nstate_path = /var/lib/nova\ncompute_driver = libvirt.LibvirtDriver\nmy_ip = 192.0.2.10\n\n[libvirt]\nvirt_type = kvm\n\n[keystone_authtoken]\nwww_authenticate_uri = https://keystone.example.org:5000\n",
        )
        .file("/etc/nova/api-paste.ini", "[composite:osapi_compute]\nuse = call:nova.api.openstack.urlmap:urlmap_factory\n")
        .file("/etc/nova/rootwrap.conf", "[DEFAULT]\nfilters_path=/etc/nova/rootwrap.d,/usr/share/nova/rootwrap\n")
        .owner("/etc/nova", 0, NOVA_ID, 0o750)
        .owner("/etc/nova/nova.conf", 0, NOVA_ID, 0o640)
        .owner("/etc/nova/api-paste.ini", 0, NOVA_ID, 0o640)
        .owner("/etc/nova/rootwrap.conf", 0, NOVA_ID, 0o640)
        .dir("/var/lib/nova/instances/_base")
        .statvfs("/var/lib/nova/instances", 26_214_400, 13_107_200, 6_553_600, 6_000_000)
        // network
        .tcp_listen(22)
        .file("/proc/net/tcp6", "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
        // processes
        .process(1, "systemd", &["/sbin/init"], 0, Some("unconfined"))
        .process(812, "libvirtd", &["/usr/sbin/libvirtd", "--timeout", "120"], 0, Some("libvirtd (enforce)"))
        .process(
            900,
            "nova-compute",
            &["/usr/bin/python3", "/usr/bin/nova-compute", "--config-file=/etc/nova/nova.conf"],
            NOVA_ID,
            Some("unconfined"),
        );
    for (i, uuid) in GUEST_UUIDS.iter().enumerate() {
        let label = format!("libvirt-{uuid} (enforce)");
        b = guest(
            b,
            GUEST_PIDS[i],
            &format!("instance-0000000{}", i + 1),
            uuid,
            Some(&label),
        );
    }
    for (k, v) in [
        ("kernel.randomize_va_space", "2"),
        ("kernel.kptr_restrict", "1"),
        ("kernel.dmesg_restrict", "1"),
        ("kernel.yama.ptrace_scope", "1"),
        ("kernel.unprivileged_bpf_disabled", "2"),
        ("net.core.bpf_jit_harden", "2"),
        ("kernel.kexec_load_disabled", "1"),
        ("kernel.perf_event_paranoid", "3"),
        ("kernel.sysrq", "0"),
        ("fs.protected_symlinks", "1"),
        ("fs.protected_hardlinks", "1"),
        ("fs.protected_fifos", "2"),
        ("fs.protected_regular", "2"),
        ("fs.suid_dumpable", "0"),
        ("net.ipv4.conf.all.accept_source_route", "0"),
        ("net.ipv4.conf.default.accept_source_route", "0"),
        ("net.ipv6.conf.all.accept_source_route", "0"),
        ("net.ipv6.conf.default.accept_source_route", "0"),
        ("net.ipv4.conf.all.accept_redirects", "0"),
        ("net.ipv4.conf.default.accept_redirects", "0"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.default.send_redirects", "0"),
        ("net.ipv4.tcp_syncookies", "1"),
        ("net.ipv4.ip_forward", "1"),
        ("kernel.tainted", "0"),
    ] {
        b = b.sysctl(k, v);
    }
    b
}

/// [`good_compute`] booted with AppArmor disabled (`apparmor=0`): the module says
/// `N`, securityfs has no apparmor directory, the LSM list lacks it and every
/// process (guests included) is unconfined.
pub fn apparmor_disabled() -> FixtureBuilder {
    let mut b = good_compute()
        .file("/sys/module/apparmor/parameters/enabled", "N\n")
        .remove("/sys/kernel/security/apparmor")
        .file(
            "/sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama",
        )
        .remove("/dev/kmsg")
        .kmsg("LSM: initializing lsm=lockdown,capability,landlock,yama")
        .kmsg("Kernel is locked down from command line; see man kernel_lockdown.7")
        .kmsg("tboot: found shared page at phys addr 0x88000:")
        .process(
            812,
            "libvirtd",
            &["/usr/sbin/libvirtd", "--timeout", "120"],
            0,
            Some("unconfined"),
        );
    for (i, uuid) in GUEST_UUIDS.iter().enumerate() {
        b = guest(
            b,
            GUEST_PIDS[i],
            &format!("instance-0000000{}", i + 1),
            uuid,
            Some("unconfined"),
        );
    }
    b
}

/// Writes [`good_compute`] to `dir`.
pub fn good_compute_host(dir: &Path) -> Result<(), FixtureError> {
    good_compute().build(dir)
}

/// Writes [`apparmor_disabled`] to `dir`.
pub fn apparmor_disabled_host(dir: &Path) -> Result<(), FixtureError> {
    apparmor_disabled().build(dir)
}
