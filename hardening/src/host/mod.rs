//! The host view: every check reads the host through [`HostView`], rooted at a
//! prefix (default `/`), like Lynis' `ROOTDIR` (catalogue §1.2, §3.1).
//!
//! One implementation, [`RealHost`], serves both the live host and fixture trees:
//!
//! * root `/` without a manifest ([`ViewKind::Live`]): the live host;
//! * another root without a manifest ([`ViewKind::HostMount`]): a host file system
//!   mounted somewhere (e.g. `/host` when the agent runs in a container); symlinks
//!   are resolved *inside* the root, as a chroot would;
//! * any root holding [`MANIFEST_FILE`] ([`ViewKind::Fixture`]): a directory tree laid
//!   out like a host. Facts a plain directory cannot hold (device numbers, owners,
//!   statvfs numbers, errno values, the KVM probe result) come from the manifest
//!   ([`Manifest`]), which then is authoritative for them.
//!
//! All paths given to a `HostView` are *logical* absolute paths as seen on the host
//! (`/sys/kernel/security/lsm`), never paths of the agent's own file system.

mod manifest;
mod real;

use std::fmt;
use std::path::Path;

pub use manifest::{
    errno_from_name, errno_name, DeviceEntry, DeviceKind, ErrorEntry, KvmEntry, Manifest,
    OwnerEntry, StatvfsEntry,
};
pub use real::RealHost;

use crate::parse;

/// Name of the fixture manifest at the root of a fixture tree.
pub const MANIFEST_FILE: &str = "trustpool-fixture.toml";

/// Largest file [`HostView::read`] returns (32 MiB); larger files are an error.
pub const MAX_READ_BYTES: u64 = 32 * 1024 * 1024;

/// What kind of host a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// The live host at `/`, without a fixture manifest.
    Live,
    /// A real file system mounted at a prefix other than `/` (for example the host's
    /// root bind-mounted at `/host` into the agent's container).
    HostMount,
    /// A fixture tree with a [`MANIFEST_FILE`].
    Fixture,
}

/// The type of a file system object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (only from [`HostView::symlink_metadata`]).
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// UNIX socket.
    Socket,
}

/// The subset of `stat(2)` the checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// File type.
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Device major number (devices only, else 0).
    pub rdev_major: u32,
    /// Device minor number (devices only, else 0).
    pub rdev_minor: u32,
    /// Size in bytes (meaningless for /proc and /sys files).
    pub size: u64,
}

/// The subset of `statvfs(3)` the checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VfsStat {
    /// `f_bsize`.
    pub bsize: u64,
    /// `f_frsize`.
    pub frsize: u64,
    /// `f_blocks` (in `frsize` units).
    pub blocks: u64,
    /// `f_bfree`.
    pub bfree: u64,
    /// `f_bavail` (free for unprivileged users).
    pub bavail: u64,
    /// `f_files` (0 on file systems without an inode limit, e.g. btrfs).
    pub files: u64,
    /// `f_ffree`.
    pub ffree: u64,
    /// `f_favail`.
    pub favail: u64,
}

/// One line of `/proc/PID/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id (field 1).
    pub mount_id: u64,
    /// Parent mount id (field 2).
    pub parent_id: u64,
    /// Root of the mount within its file system (field 4).
    pub root: String,
    /// Mount point (field 5), with octal escapes decoded.
    pub mount_point: String,
    /// File system type after the `-` separator (e.g. `cgroup2`, `tmpfs`).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
}

/// Classification of a [`HostError`]; it decides between `unknown` and `error`
/// (catalogue §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostErrorKind {
    /// ENOENT or ENOTDIR: the path does not exist in this view.
    NotFound,
    /// EACCES or EPERM: the view cannot see the fact.
    Denied,
    /// The view cannot provide this kind of fact at all (e.g. a fixture manifest
    /// without statvfs numbers for the path).
    Unavailable,
    /// Any other I/O error (EIO, ELOOP, ENXIO, ...).
    Io,
    /// The data is not in the expected format (e.g. a malformed mountinfo line,
    /// not a regular file, too large).
    Format,
}

/// An error while reading the host, with the logical path and the errno if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// Logical host path the operation was about.
    pub path: String,
    /// Classification.
    pub kind: HostErrorKind,
    /// The errno, when the error came from (or stands for) a system call.
    pub errno: Option<i32>,
    /// Human-readable detail.
    pub detail: String,
}

impl HostError {
    /// An error from an errno value.
    pub fn from_errno(path: &str, errno: i32) -> Self {
        let kind = match errno {
            e if e == nix::libc::ENOENT || e == nix::libc::ENOTDIR => HostErrorKind::NotFound,
            e if e == nix::libc::EACCES || e == nix::libc::EPERM => HostErrorKind::Denied,
            _ => HostErrorKind::Io,
        };
        let name = errno_name(errno)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("errno {errno}"));
        let desc = nix::errno::Errno::from_raw(errno).desc();
        HostError {
            path: path.to_owned(),
            kind,
            errno: Some(errno),
            detail: format!("{name} ({desc})"),
        }
    }

    /// An error from `std::io::Error`.
    pub fn from_io(path: &str, err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Self::from_errno(path, errno),
            None => HostError {
                path: path.to_owned(),
                kind: match err.kind() {
                    std::io::ErrorKind::NotFound => HostErrorKind::NotFound,
                    std::io::ErrorKind::PermissionDenied => HostErrorKind::Denied,
                    std::io::ErrorKind::InvalidData => HostErrorKind::Format,
                    _ => HostErrorKind::Io,
                },
                errno: None,
                detail: err.to_string(),
            },
        }
    }

    /// An unexpected-format error.
    pub fn format(path: &str, detail: impl Into<String>) -> Self {
        HostError {
            path: path.to_owned(),
            kind: HostErrorKind::Format,
            errno: None,
            detail: detail.into(),
        }
    }

    /// A "this view cannot provide the fact" error.
    pub fn unavailable(path: &str, detail: impl Into<String>) -> Self {
        HostError {
            path: path.to_owned(),
            kind: HostErrorKind::Unavailable,
            errno: None,
            detail: detail.into(),
        }
    }

    /// True for ENOENT/ENOTDIR.
    pub fn is_not_found(&self) -> bool {
        self.kind == HostErrorKind::NotFound
    }

    /// True for EACCES/EPERM.
    pub fn is_denied(&self) -> bool {
        self.kind == HostErrorKind::Denied
    }

    /// True when the check must report `unknown` rather than `error`: the path is
    /// absent, access is denied, or the view cannot provide the fact.
    pub fn is_invisible(&self) -> bool {
        matches!(
            self.kind,
            HostErrorKind::NotFound | HostErrorKind::Denied | HostErrorKind::Unavailable
        )
    }

    /// True if the errno equals `errno`.
    pub fn is_errno(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

impl std::error::Error for HostError {}

/// Read-only access to one host (live, mounted, or fixture), by logical path.
///
/// Implementations must never panic and must not block on special files.
pub trait HostView: Send + Sync {
    /// The prefix this view is rooted at.
    fn root(&self) -> &Path;

    /// What kind of view this is.
    fn kind(&self) -> ViewKind;

    /// Reads a regular file (at most [`MAX_READ_BYTES`]). Non-regular files
    /// (devices, FIFOs) are refused with a `Format` error and never opened.
    fn read(&self, path: &str) -> Result<Vec<u8>, HostError>;

    /// Reads the target of a symbolic link.
    fn read_link(&self, path: &str) -> Result<String, HostError>;

    /// `stat(2)`, following symbolic links.
    fn metadata(&self, path: &str) -> Result<Metadata, HostError>;

    /// `lstat(2)`: does not follow a symbolic link in the last component.
    fn symlink_metadata(&self, path: &str) -> Result<Metadata, HostError>;

    /// Names of the entries of a directory, sorted, without `.` and `..`.
    fn read_dir(&self, path: &str) -> Result<Vec<String>, HostError>;

    /// `statvfs(3)` of the file system holding `path`.
    fn statvfs(&self, path: &str) -> Result<VfsStat, HostError>;

    /// `statfs(2).f_type` (file system magic) of `path`; `Ok(None)` when the view
    /// has no such fact (fixtures without one).
    fn statfs_magic(&self, path: &str) -> Result<Option<i64>, HostError>;

    /// Opens `/dev/kvm` and issues `KVM_GET_API_VERSION`; returns the version.
    fn kvm_api_version(&self) -> Result<i32, HostError>;

    /// Kernel log messages (`/dev/kmsg` records or, in a fixture, the lines of a
    /// regular file at `/dev/kmsg`), oldest first, without record prefixes.
    fn kernel_log(&self) -> Result<Vec<String>, HostError>;

    /// For a [`ViewKind::HostMount`] view: the agent's own root (`/`), used to report
    /// that the agent itself runs in a container. `None` otherwise.
    fn agent_view(&self) -> Option<Box<dyn HostView>> {
        None
    }

    /// Reads a file as UTF-8 text (invalid UTF-8 is a `Format` error).
    fn read_string(&self, path: &str) -> Result<String, HostError> {
        let bytes = self.read(path)?;
        String::from_utf8(bytes).map_err(|_| HostError::format(path, "not valid UTF-8"))
    }

    /// Whether a path exists: `Ok(false)` for ENOENT/ENOTDIR, errors otherwise.
    fn exists(&self, path: &str) -> Result<bool, HostError> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The mount table from mountinfo. Host-mount views prefer `/proc/1/mountinfo`
    /// (the host's init mount namespace, whose mount points are host paths); the
    /// others prefer `/proc/self/mountinfo`.
    fn mounts(&self) -> Result<Vec<MountEntry>, HostError> {
        let order: [&str; 2] = if self.kind() == ViewKind::HostMount {
            ["/proc/1/mountinfo", "/proc/self/mountinfo"]
        } else {
            ["/proc/self/mountinfo", "/proc/1/mountinfo"]
        };
        let mut first_err = None;
        for p in order {
            match self.read_string(p) {
                Ok(text) => return parse::mountinfo(&text).map_err(|e| HostError::format(p, e)),
                Err(e) if e.is_invisible() => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err
            .unwrap_or_else(|| HostError::unavailable("/proc/self/mountinfo", "no mountinfo")))
    }

    /// The mount that holds `path` (longest mount-point prefix; the last of several
    /// mounts on the same point wins), answered from mountinfo.
    fn fs_type(&self, path: &str) -> Result<Option<MountEntry>, HostError> {
        let mounts = self.mounts()?;
        Ok(mount_for(&mounts, path).cloned())
    }

    /// The pids under `/proc`, sorted.
    fn processes(&self) -> Result<Vec<u32>, HostError> {
        let names = self.read_dir("/proc")?;
        let mut pids: Vec<u32> = names.iter().filter_map(|n| n.parse::<u32>().ok()).collect();
        pids.sort_unstable();
        Ok(pids)
    }
}

impl dyn HostView {
    /// Opens a view rooted at `root`: a [`RealHost`], which consults
    /// `root/trustpool-fixture.toml` when present. Same as [`open`].
    pub fn open(root: &Path) -> Result<Box<dyn HostView>, HostError> {
        open(root)
    }
}

/// Opens a view rooted at `root` (see [`RealHost::new`]).
pub fn open(root: &Path) -> Result<Box<dyn HostView>, HostError> {
    Ok(Box::new(RealHost::new(root)?))
}

/// The mount holding `path` within `mounts`.
pub fn mount_for<'m>(mounts: &'m [MountEntry], path: &str) -> Option<&'m MountEntry> {
    let path = normalize(path);
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        let mp = normalize(&m.mount_point);
        let inside = mp == "/" || path == mp || path.starts_with(&format!("{mp}/"));
        if !inside {
            continue;
        }
        match best {
            Some(b) if normalize(&b.mount_point).len() > mp.len() => {}
            _ => best = Some(m),
        }
    }
    best
}

/// Normalises a logical path: absolute, no `.`/empty components, `..` resolved
/// lexically and clamped at `/`.
pub fn normalize(path: &str) -> String {
    let comps = components(path);
    if comps.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}", comps.join("/"))
    }
}

/// The components of a logical path after lexical normalisation.
pub(crate) fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out
}

/// True if `path` equals `ancestor` or lies below it (both normalised).
pub(crate) fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/" || path == ancestor || path.starts_with(&format!("{ancestor}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalize("../../etc"), "/etc");
        assert_eq!(normalize(""), "/");
        assert!(is_within(
            "/sys/kernel/security/lsm",
            "/sys/kernel/security"
        ));
        assert!(!is_within("/sys/kernel/securityx", "/sys/kernel/security"));
    }

    #[test]
    fn mount_lookup() {
        let m = |id, mp: &str, t: &str| MountEntry {
            mount_id: id,
            parent_id: 1,
            root: "/".into(),
            mount_point: mp.into(),
            fs_type: t.into(),
            source: "x".into(),
        };
        let ms = vec![
            m(1, "/", "ext4"),
            m(2, "/sys/fs/cgroup", "tmpfs"),
            m(3, "/sys/fs/cgroup", "cgroup2"),
        ];
        assert_eq!(
            mount_for(&ms, "/sys/fs/cgroup").map(|e| e.mount_id),
            Some(3)
        );
        assert_eq!(
            mount_for(&ms, "/sys/fs/cgroupx").map(|e| e.mount_id),
            Some(1)
        );
        assert_eq!(
            mount_for(&ms, "/var/lib").map(|e| e.fs_type.as_str()),
            Some("ext4")
        );
    }
}
