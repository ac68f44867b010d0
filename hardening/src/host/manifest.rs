//! The fixture manifest (`trustpool-fixture.toml`): facts a plain directory tree
//! cannot hold. Paths are logical host paths (`/dev/kvm`).
//!
//! ```toml
//! [[devices]]
//! path = "/dev/kvm"
//! kind = "char"
//! major = 10
//! minor = 232
//! mode = 0o660
//! uid = 0
//! gid = 108
//!
//! [[owners]]                      # overrides the real owner/mode of a tree file
//! path = "/etc/nova/nova.conf"
//! uid = 0
//! gid = 64060
//! mode = 0o640
//!
//! [[errors]]                      # reads of the path (and anything below it) fail
//! path = "/sys/kernel/security/apparmor/profiles"
//! errno = "EACCES"
//! stat = false                    # true: stat of the path itself fails as well
//!
//! [[statvfs]]                     # the longest matching path prefix applies
//! path = "/var/lib/nova/instances"
//! frsize = 4096
//! blocks = 1000000
//! bavail = 500000
//! files = 65536
//! favail = 60000
//!
//! [kvm]
//! api_version = 12                # or: errno = "ENXIO"
//! ```

use serde::{Deserialize, Serialize};

use super::{normalize, HostError};

/// Largest manifest accepted (1 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Device node kind in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// A device node (`[[devices]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// Logical path, e.g. `/dev/kvm`.
    pub path: String,
    /// `char` or `block`.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Permission bits (e.g. `0o660`).
    pub mode: u32,
    /// Owner uid.
    #[serde(default)]
    pub uid: u32,
    /// Owner gid.
    #[serde(default)]
    pub gid: u32,
}

/// An owner/mode override for a tree path (`[[owners]]`); absent fields keep the
/// real value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerEntry {
    /// Logical path.
    pub path: String,
    /// Owner uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// A forced error (`[[errors]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorEntry {
    /// Logical path; the error applies to it and everything below it.
    pub path: String,
    /// Errno name, e.g. `EACCES`, `EIO`.
    pub errno: String,
    /// Whether `stat` of the path itself fails as well (descendants always do).
    #[serde(default)]
    pub stat: bool,
}

/// statvfs numbers for the file system holding a path (`[[statvfs]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatvfsEntry {
    /// Logical path (the longest matching prefix applies).
    pub path: String,
    /// `f_bsize` (defaults to `frsize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bsize: Option<u64>,
    /// `f_frsize`.
    #[serde(default = "default_frsize")]
    pub frsize: u64,
    /// `f_blocks`.
    pub blocks: u64,
    /// `f_bfree` (defaults to `bavail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfree: Option<u64>,
    /// `f_bavail`.
    pub bavail: u64,
    /// `f_files`.
    #[serde(default)]
    pub files: u64,
    /// `f_ffree` (defaults to `favail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffree: Option<u64>,
    /// `f_favail`.
    #[serde(default)]
    pub favail: u64,
    /// `statfs.f_type` magic, e.g. `0x63677270` for cgroup2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_type: Option<i64>,
}

fn default_frsize() -> u64 {
    4096
}

/// The KVM probe result (`[kvm]`): exactly one of the two fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KvmEntry {
    /// Value returned by `KVM_GET_API_VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<i32>,
    /// Errno name the open/ioctl fails with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Device nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceEntry>,
    /// Owner/mode overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<OwnerEntry>,
    /// Forced errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorEntry>,
    /// statvfs numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statvfs: Vec<StatvfsEntry>,
    /// KVM probe result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<KvmEntry>,
}

impl Manifest {
    /// Parses and validates a manifest (errno names, normalised paths).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, HostError> {
        let mut m: Manifest = toml::from_str(text)
            .map_err(|e| HostError::format(origin, format!("invalid fixture manifest: {e}")))?;
        for e in &m.errors {
            if errno_from_name(&e.errno).is_none() {
                return Err(HostError::format(
                    origin,
                    format!("unknown errno name {:?} for {}", e.errno, e.path),
                ));
            }
        }
        if let Some(k) = &m.kvm {
            match (&k.api_version, &k.errno) {
                (Some(_), None) => {}
                (None, Some(n)) if errno_from_name(n).is_some() => {}
                (None, Some(n)) => {
                    return Err(HostError::format(
                        origin,
                        format!("unknown errno name {n:?} in [kvm]"),
                    ));
                }
                _ => {
                    return Err(HostError::format(
                        origin,
                        "[kvm] needs exactly one of api_version, errno",
                    ))
                }
            }
        }
        for d in &mut m.devices {
            d.path = normalize(&d.path);
        }
        for o in &mut m.owners {
            o.path = normalize(&o.path);
        }
        for e in &mut m.errors {
            e.path = normalize(&e.path);
        }
        for s in &mut m.statvfs {
            s.path = normalize(&s.path);
        }
        Ok(m)
    }

    /// Serialises the manifest as TOML.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", nix::libc::EPERM),
    ("ENOENT", nix::libc::ENOENT),
    ("ESRCH", nix::libc::ESRCH),
    ("EINTR", nix::libc::EINTR),
    ("EIO", nix::libc::EIO),
    ("ENXIO", nix::libc::ENXIO),
    ("E2BIG", nix::libc::E2BIG),
    ("EBADF", nix::libc::EBADF),
    ("EAGAIN", nix::libc::EAGAIN),
    ("ENOMEM", nix::libc::ENOMEM),
    ("EACCES", nix::libc::EACCES),
    ("EFAULT", nix::libc::EFAULT),
    ("EBUSY", nix::libc::EBUSY),
    ("EEXIST", nix::libc::EEXIST),
    ("ENODEV", nix::libc::ENODEV),
    ("ENOTDIR", nix::libc::ENOTDIR),
    ("EISDIR", nix::libc::EISDIR),
    ("EINVAL", nix::libc::EINVAL),
    ("EMFILE", nix::libc::EMFILE),
    ("ENOTTY", nix::libc::ENOTTY),
    ("EFBIG", nix::libc::EFBIG),
    ("ENOSPC", nix::libc::ENOSPC),
    ("EROFS", nix::libc::EROFS),
    ("EPIPE", nix::libc::EPIPE),
    ("ENOSYS", nix::libc::ENOSYS),
    ("ELOOP", nix::libc::ELOOP),
    ("ENODATA", nix::libc::ENODATA),
    ("EOPNOTSUPP", nix::libc::EOPNOTSUPP),
    ("ETIMEDOUT", nix::libc::ETIMEDOUT),
    ("ESTALE", nix::libc::ESTALE),
];

/// The errno value of a name such as `EACCES` (case-insensitive).
pub fn errno_from_name(name: &str) -> Option<i32> {
    ERRNOS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|(_, v)| *v)
}

/// The name of an errno value, if it is one this crate knows.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|(_, v)| *v == errno).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_manifest() {
        let text = r#"
[[devices]]
path = "/dev/kvm"
kind = "char"
major = 10
minor = 232
mode = 0o660
uid = 0
gid = 108

[[errors]]
path = "/sys/kernel/security/apparmor/profiles/"
errno = "EACCES"

[[statvfs]]
path = "/var/lib/nova/instances"
blocks = 100
bavail = 50

[kvm]
errno = "ENXIO"
"#;
        let m = Manifest::from_toml(text, "m").expect("valid");
        assert_eq!(m.devices[0].mode, 0o660);
        assert_eq!(m.errors[0].path, "/sys/kernel/security/apparmor/profiles");
        assert_eq!(m.statvfs[0].frsize, 4096);
        let again = Manifest::from_toml(&m.to_toml().expect("ser"), "m").expect("round trip");
        assert_eq!(again, m);
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(Manifest::from_toml("[[errors]]\npath=\"/x\"\nerrno=\"EWHAT\"\n", "m").is_err());
        assert!(Manifest::from_toml("[kvm]\n", "m").is_err());
        assert!(Manifest::from_toml("[kvm]\napi_version=12\nerrno=\"EIO\"\n", "m").is_err());
        assert!(Manifest::from_toml("bogus = 1\n", "m").is_err());
        assert!(Manifest::from_toml(
            "[[devices]]\npath=\"/dev/x\"\nkind=\"pipe\"\nmajor=1\nminor=1\nmode=0\n",
            "m"
        )
        .is_err());
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_from_name("eacces"), Some(nix::libc::EACCES));
        assert_eq!(errno_name(nix::libc::ENXIO), Some("ENXIO"));
        assert_eq!(errno_from_name("nope"), None);
    }
}
