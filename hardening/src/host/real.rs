//! [`RealHost`]: the one [`HostView`] implementation, over a root prefix.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

use super::manifest::{errno_from_name, DeviceEntry, DeviceKind, Manifest, MAX_MANIFEST_BYTES};
use super::{
    components, is_within, normalize, FileKind, HostError, HostView, Metadata, VfsStat, ViewKind,
    MANIFEST_FILE, MAX_READ_BYTES,
};
use crate::kvm_ioctl;

/// Most symbolic links followed while resolving one path (as the kernel's 40).
const MAX_SYMLINKS: usize = 40;
/// Most bytes taken from the kernel log in one call.
const MAX_KMSG_BYTES: usize = 8 * 1024 * 1024;
/// KVM device numbers.
const KVM_MAJOR: u32 = 10;
const KVM_MINOR: u32 = 232;

/// Reads a host through a root prefix, consulting a fixture manifest when the
/// root holds one (see the [module documentation](super)).
#[derive(Debug, Clone)]
pub struct RealHost {
    root: PathBuf,
    slash: bool,
    manifest: Option<Manifest>,
}

struct Resolved {
    real: PathBuf,
    logical: String,
}

impl RealHost {
    /// Opens a view rooted at `root`. The root must be a directory; when
    /// `root/trustpool-fixture.toml` exists it is parsed and the view becomes a
    /// fixture view. A malformed manifest is an error.
    pub fn new(root: &Path) -> Result<Self, HostError> {
        let shown = root.display().to_string();
        let canon = fs::canonicalize(root).map_err(|e| HostError::from_io(&shown, &e))?;
        let md = fs::metadata(&canon).map_err(|e| HostError::from_io(&shown, &e))?;
        if !md.is_dir() {
            return Err(HostError::format(&shown, "root is not a directory"));
        }
        let mpath = canon.join(MANIFEST_FILE);
        let mshown = mpath.display().to_string();
        let manifest = match fs::symlink_metadata(&mpath) {
            Ok(m) if m.is_file() => {
                if m.len() > MAX_MANIFEST_BYTES {
                    return Err(HostError::format(
                        &mshown,
                        "fixture manifest larger than 1 MiB",
                    ));
                }
                let text =
                    fs::read_to_string(&mpath).map_err(|e| HostError::from_io(&mshown, &e))?;
                Some(Manifest::from_toml(&text, &mshown)?)
            }
            Ok(_) => {
                return Err(HostError::format(
                    &mshown,
                    "fixture manifest is not a regular file",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(HostError::from_io(&mshown, &e)),
        };
        let slash = canon == Path::new("/");
        Ok(RealHost {
            root: canon,
            slash,
            manifest,
        })
    }

    /// The live host at `/`, ignoring any manifest.
    pub fn live() -> Self {
        RealHost {
            root: PathBuf::from("/"),
            slash: true,
            manifest: None,
        }
    }

    /// The fixture manifest in use, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    fn real_of(&self, comps: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        for c in comps {
            p.push(c);
        }
        p
    }

    /// Resolves a logical path to a real path, following symbolic links inside the
    /// root (absolute targets restart at the root; `..` stops at the root).
    fn resolve(&self, norm: &str, follow_last: bool) -> Result<Resolved, HostError> {
        if self.slash {
            return Ok(Resolved {
                real: PathBuf::from(norm),
                logical: norm.to_owned(),
            });
        }
        let mut pending: VecDeque<String> = components(norm).into();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0usize;
        while let Some(c) = pending.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let cand = self.real_of(&done).join(&c);
            let last = pending.is_empty();
            match fs::symlink_metadata(&cand) {
                Ok(md) if md.file_type().is_symlink() && (follow_last || !last) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(HostError::from_errno(norm, libc::ELOOP));
                    }
                    let target = fs::read_link(&cand).map_err(|e| HostError::from_io(norm, &e))?;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        done.clear();
                    }
                    let mut next: VecDeque<String> = t.split('/').map(str::to_owned).collect();
                    next.extend(pending.drain(..));
                    pending = next;
                }
                Ok(_) => done.push(c),
                Err(_) => {
                    // Let the final operation report the error; keep the rest lexical.
                    done.push(c);
                    for r in pending.drain(..) {
                        match r.as_str() {
                            "" | "." => {}
                            ".." => {
                                done.pop();
                            }
                            _ => done.push(r),
                        }
                    }
                }
            }
        }
        let logical = if done.is_empty() {
            "/".to_owned()
        } else {
            format!("/{}", done.join("/"))
        };
        Ok(Resolved {
            real: self.real_of(&done),
            logical,
        })
    }

    fn forced_error(&self, logical: &str, for_stat: bool) -> Option<HostError> {
        let m = self.manifest.as_ref()?;
        m.errors.iter().find_map(|e| {
            let applies = if logical == e.path {
                !for_stat || e.stat
            } else {
                is_within(logical, &e.path)
            };
            if applies {
                errno_from_name(&e.errno).map(|n| HostError::from_errno(logical, n))
            } else {
                None
            }
        })
    }

    fn check_forced(&self, paths: &[&str], for_stat: bool) -> Result<(), HostError> {
        for p in paths {
            if let Some(e) = self.forced_error(p, for_stat) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn device(&self, logical: &str) -> Option<&DeviceEntry> {
        self.manifest
            .as_ref()?
            .devices
            .iter()
            .find(|d| d.path == logical)
    }

    fn apply_owner(&self, logical: &str, meta: &mut Metadata) {
        if let Some(m) = &self.manifest {
            for o in m.owners.iter().filter(|o| o.path == logical) {
                if let Some(u) = o.uid {
                    meta.uid = u;
                }
                if let Some(g) = o.gid {
                    meta.gid = g;
                }
                if let Some(mode) = o.mode {
                    meta.mode = mode & 0o7777;
                }
            }
        }
    }

    fn stat_common(&self, path: &str, follow: bool) -> Result<Metadata, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], true)?;
        if let Some(d) = self.device(&norm) {
            return Ok(device_meta(d));
        }
        let r = self.resolve(&norm, follow)?;
        if r.logical != norm {
            self.check_forced(&[&r.logical], true)?;
            if let Some(d) = self.device(&r.logical) {
                return Ok(device_meta(d));
            }
        }
        let md = if follow {
            fs::metadata(&r.real)
        } else {
            fs::symlink_metadata(&r.real)
        };
        let md = md.map_err(|e| HostError::from_io(&norm, &e))?;
        let mut meta = convert_meta(&md);
        self.apply_owner(&r.logical, &mut meta);
        if r.logical != norm {
            self.apply_owner(&norm, &mut meta);
        }
        Ok(meta)
    }

    fn statvfs_entry(&self, norm: &str) -> Option<&super::StatvfsEntry> {
        let m = self.manifest.as_ref()?;
        m.statvfs
            .iter()
            .filter(|s| is_within(norm, &s.path))
            .max_by_key(|s| s.path.len())
    }

    fn read_kmsg_device(&self, real: &Path, norm: &str) -> Result<Vec<String>, HostError> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(real)
            .map_err(|e| HostError::from_io(norm, &e))?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        let mut total = 0usize;
        for _ in 0..1_000_000 {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // First line is "prio,seq,ts,flags;message"; continuation lines
                    // (dictionary) start with a space.
                    if let Some(line) = rec.lines().next() {
                        out.push(strip_kmsg_prefix(line).to_owned());
                    }
                    if total > MAX_KMSG_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(HostError::from_io(norm, &e)),
            }
        }
        Ok(out)
    }
}

fn strip_kmsg_prefix(line: &str) -> &str {
    // "6,142,253310,-;message"
    if let Some((head, msg)) = line.split_once(';') {
        let mut parts = head.split(',');
        let numeric = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if numeric(parts.next()) && numeric(parts.next()) && numeric(parts.next()) {
            return msg;
        }
    }
    line
}

fn device_meta(d: &DeviceEntry) -> Metadata {
    Metadata {
        kind: match d.kind {
            DeviceKind::Char => FileKind::CharDevice,
            DeviceKind::Block => FileKind::BlockDevice,
        },
        mode: d.mode & 0o7777,
        uid: d.uid,
        gid: d.gid,
        rdev_major: d.major,
        rdev_minor: d.minor,
        size: 0,
    }
}

fn dev_major(dev: u64) -> u32 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32
}

fn dev_minor(dev: u64) -> u32 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32
}

fn convert_meta(md: &fs::Metadata) -> Metadata {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::File
    };
    let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
    Metadata {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        rdev_major: if is_dev { dev_major(md.rdev()) } else { 0 },
        rdev_minor: if is_dev { dev_minor(md.rdev()) } else { 0 },
        size: md.len(),
    }
}

fn nix_err(path: &str, e: nix::errno::Errno) -> HostError {
    HostError::from_errno(path, e as i32)
}

impl HostView for RealHost {
    fn root(&self) -> &Path {
        &self.root
    }

    fn kind(&self) -> ViewKind {
        if self.manifest.is_some() {
            ViewKind::Fixture
        } else if self.slash {
            ViewKind::Live
        } else {
            ViewKind::HostMount
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], false)?;
        let r = self.resolve(&norm, true)?;
        self.check_forced(&[&r.logical], false)?;
        if self.device(&norm).is_some() || self.device(&r.logical).is_some() {
            return Err(HostError::format(&norm, "is a device node; not read"));
        }
        let md = fs::metadata(&r.real).map_err(|e| HostError::from_io(&norm, &e))?;
        if !md.is_file() {
            return Err(HostError::format(&norm, "not a regular file"));
        }
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&r.real)
            .map_err(|e| HostError::from_io(&norm, &e))?;
        let mut out = Vec::new();
        f.take(MAX_READ_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| HostError::from_io(&norm, &e))?;
        if out.len() as u64 > MAX_READ_BYTES {
            return Err(HostError::format(
                &norm,
                format!("larger than {MAX_READ_BYTES} bytes"),
            ));
        }
        Ok(out)
    }

    fn read_link(&self, path: &str) -> Result<String, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], false)?;
        let r = self.resolve(&norm, false)?;
        self.check_forced(&[&r.logical], false)?;
        let t = fs::read_link(&r.real).map_err(|e| HostError::from_io(&norm, &e))?;
        Ok(t.to_string_lossy().into_owned())
    }

    fn metadata(&self, path: &str) -> Result<Metadata, HostError> {
        self.stat_common(path, true)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, HostError> {
        self.stat_common(path, false)
    }

    fn read_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], false)?;
        let r = self.resolve(&norm, true)?;
        self.check_forced(&[&r.logical], false)?;
        let mut extra: Vec<String> = Vec::new();
        if let Some(m) = &self.manifest {
            for d in &m.devices {
                let comps = components(&d.path);
                if let Some((last, parent)) = comps.split_last() {
                    let parent = if parent.is_empty() {
                        "/".to_owned()
                    } else {
                        format!("/{}", parent.join("/"))
                    };
                    if parent == norm || parent == r.logical {
                        extra.push(last.clone());
                    }
                }
            }
        }
        let mut names = match fs::read_dir(&r.real) {
            Ok(rd) => {
                let mut names = Vec::new();
                for ent in rd {
                    let ent = ent.map_err(|e| HostError::from_io(&norm, &e))?;
                    names.push(ent.file_name().to_string_lossy().into_owned());
                }
                names
            }
            Err(e) => {
                let he = HostError::from_io(&norm, &e);
                if he.is_not_found() && !extra.is_empty() {
                    Vec::new()
                } else {
                    return Err(he);
                }
            }
        };
        names.extend(extra);
        if self.manifest.is_some() && norm == "/" {
            names.retain(|n| n != MANIFEST_FILE);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn statvfs(&self, path: &str) -> Result<VfsStat, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], false)?;
        if self.manifest.is_some() {
            return match self.statvfs_entry(&norm) {
                Some(s) => Ok(VfsStat {
                    bsize: s.bsize.unwrap_or(s.frsize),
                    frsize: s.frsize,
                    blocks: s.blocks,
                    bfree: s.bfree.unwrap_or(s.bavail),
                    bavail: s.bavail,
                    files: s.files,
                    ffree: s.ffree.unwrap_or(s.favail),
                    favail: s.favail,
                }),
                None => Err(HostError::unavailable(
                    &norm,
                    "no [[statvfs]] entry in the fixture manifest",
                )),
            };
        }
        let r = self.resolve(&norm, true)?;
        let s = nix::sys::statvfs::statvfs(&r.real).map_err(|e| nix_err(&norm, e))?;
        #[allow(clippy::useless_conversion)]
        Ok(VfsStat {
            bsize: u64::from(s.block_size()),
            frsize: u64::from(s.fragment_size()),
            blocks: u64::from(s.blocks()),
            bfree: u64::from(s.blocks_free()),
            bavail: u64::from(s.blocks_available()),
            files: u64::from(s.files()),
            ffree: u64::from(s.files_free()),
            favail: u64::from(s.files_available()),
        })
    }

    fn statfs_magic(&self, path: &str) -> Result<Option<i64>, HostError> {
        let norm = normalize(path);
        self.check_forced(&[&norm], false)?;
        if self.manifest.is_some() {
            return Ok(self.statvfs_entry(&norm).and_then(|s| s.f_type));
        }
        let r = self.resolve(&norm, true)?;
        let s = nix::sys::statfs::statfs(&r.real).map_err(|e| nix_err(&norm, e))?;
        #[allow(clippy::unnecessary_cast)]
        Ok(Some(s.filesystem_type().0 as i64))
    }

    fn kvm_api_version(&self) -> Result<i32, HostError> {
        let norm = "/dev/kvm";
        self.check_forced(&[norm], false)?;
        if let Some(m) = &self.manifest {
            return match &m.kvm {
                Some(k) => match (k.api_version, &k.errno) {
                    (Some(v), _) => Ok(v),
                    (None, Some(n)) => Err(HostError::from_errno(
                        norm,
                        errno_from_name(n).unwrap_or(libc::EIO),
                    )),
                    (None, None) => Err(HostError::unavailable(norm, "empty [kvm] entry")),
                },
                None => {
                    if self.exists(norm)? {
                        Err(HostError::unavailable(
                            norm,
                            "no [kvm] probe result in the fixture manifest",
                        ))
                    } else {
                        Err(HostError::from_errno(norm, libc::ENOENT))
                    }
                }
            };
        }
        let r = self.resolve(norm, true)?;
        let md = fs::metadata(&r.real).map_err(|e| HostError::from_io(norm, &e))?;
        let meta = convert_meta(&md);
        if meta.kind != FileKind::CharDevice
            || meta.rdev_major != KVM_MAJOR
            || meta.rdev_minor != KVM_MINOR
        {
            let mut e = HostError::from_errno(norm, libc::ENODEV);
            e.detail = format!(
                "{} (not the KVM character device 10:232; not probed)",
                e.detail
            );
            return Err(e);
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&r.real)
            .map_err(|e| HostError::from_io(norm, &e))?;
        kvm_ioctl::api_version(&f).map_err(|e| nix_err(norm, e))
    }

    fn kernel_log(&self) -> Result<Vec<String>, HostError> {
        let norm = "/dev/kmsg";
        self.check_forced(&[norm], false)?;
        let r = self.resolve(norm, true)?;
        let meta = self.metadata(norm)?;
        match meta.kind {
            FileKind::File => {
                let text = String::from_utf8_lossy(&self.read(norm)?).into_owned();
                Ok(text
                    .lines()
                    .filter(|l| !l.starts_with(' '))
                    .map(|l| strip_kmsg_prefix(l).to_owned())
                    .collect())
            }
            FileKind::CharDevice
                if meta.rdev_major == 1 && meta.rdev_minor == 11 && self.device(norm).is_none() =>
            {
                self.read_kmsg_device(&r.real, norm)
            }
            _ => Err(HostError::unavailable(norm, "not the kernel log device")),
        }
    }

    fn agent_view(&self) -> Option<Box<dyn HostView>> {
        if self.kind() == ViewKind::HostMount {
            Some(Box::new(RealHost::live()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        // glibc's makedev
        fn makedev(ma: u64, mi: u64) -> u64 {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        }
        let d = makedev(10, 232);
        assert_eq!((dev_major(d), dev_minor(d)), (10, 232));
        let big = makedev(253, 65536);
        assert_eq!((dev_major(big), dev_minor(big)), (253, 65536));
    }

    #[test]
    fn kmsg_prefix() {
        assert_eq!(
            strip_kmsg_prefix("6,142,253310,-;LSM: initializing lsm=a,b"),
            "LSM: initializing lsm=a,b"
        );
        assert_eq!(strip_kmsg_prefix("plain; text"), "plain; text");
    }

    #[test]
    fn resolves_symlinks_inside_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("etc/real")).expect("mkdir");
        fs::write(root.join("etc/real/x.conf"), "inside").expect("write");
        std::os::unix::fs::symlink("/etc/real", root.join("etc/abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../etc/real/x.conf", root.join("etc/rel"))
            .expect("symlink");
        std::os::unix::fs::symlink("loop2", root.join("etc/loop1")).expect("symlink");
        std::os::unix::fs::symlink("loop1", root.join("etc/loop2")).expect("symlink");
        let h = RealHost::new(root).expect("open");
        assert_eq!(h.kind(), ViewKind::HostMount);
        assert_eq!(h.read_string("/etc/abs/x.conf").expect("abs"), "inside");
        assert_eq!(h.read_string("/etc/rel").expect("rel"), "inside");
        let e = h.read("/etc/loop1").expect_err("loop");
        assert!(e.is_errno(libc::ELOOP));
        assert_eq!(
            h.symlink_metadata("/etc/abs").expect("lstat").kind,
            FileKind::Symlink
        );
        assert_eq!(h.read_link("/etc/abs").expect("readlink"), "/etc/real");
        assert!(h.read("/missing").expect_err("missing").is_not_found());
        assert_eq!(
            h.read("/etc").expect_err("dir").kind,
            super::super::HostErrorKind::Format
        );
        assert!(h.agent_view().is_some());
    }
}
