//! Check thresholds and profile switches ([`CheckParams`]), loadable from TOML.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Which mandatory-access-control framework the profile selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacSelection {
    /// Detect: AppArmor when its module says `Y`, else SELinux when selinuxfs is
    /// present; with neither, both checks are evaluated (and fail).
    #[default]
    Auto,
    /// AppArmor (Debian/Ubuntu): `selinux.enforcing` is `notapplicable`.
    Apparmor,
    /// SELinux (RHEL family): `apparmor.*` checks are `notapplicable`.
    Selinux,
}

/// Parameters of the checks. Every field has a default; TOML input rejects
/// unknown keys.
///
/// ```toml
/// mac = "apparmor"
/// apparmor_complain_allowed = ["/usr/sbin/cupsd"]
/// instances_free_pass_percent = 20.0
/// [sysctl]
/// "kernel.kptr_restrict" = ">=2"
/// "vm.mmap_min_addr" = ">=65536"     # adds a check sysctl.vm.mmap_min_addr
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckParams {
    /// Selected MAC framework.
    pub mac: MacSelection,
    /// AppArmor profiles allowed in complain (or prompt) mode: exact names or
    /// globs with `*` and `?`.
    pub apparmor_complain_allowed: Vec<String>,
    /// Whether nested virtualisation (`kvm_*.nested=Y`) is allowed.
    pub nested_virt_allowed: bool,
    /// Whether a hybrid or legacy cgroup hierarchy fails `cgroup.mode`.
    pub cgroup_v2_required: bool,
    /// Controllers `cgroup.controllers` requires on a unified (v2) hierarchy.
    pub cgroup_controllers_v2: Vec<String>,
    /// Controllers `cgroup.controllers` requires on v1 (legacy or hybrid).
    pub cgroup_controllers_v1: Vec<String>,
    /// Whether a non-UEFI boot fails `boot.secure_boot` (else `notapplicable`).
    pub secure_boot_required: bool,
    /// PCI passthrough in use: `iommu.active` becomes high severity and needs the
    /// IOMMU even without a DMAR/IVRS table.
    pub pci_passthrough: bool,
    /// A TXT pool: `txt.measured_launch` becomes high severity and applies even
    /// on CPUs without SMX.
    pub txt_required: bool,
    /// `nova.instances_space` passes at or above this free percentage (default 15).
    pub instances_free_pass_percent: f64,
    /// `nova.instances_space` fails below this free percentage (default 5); in
    /// between it is `informational`.
    pub instances_free_fail_percent: f64,
    /// Trust a view that carries container markers as the host's own (the
    /// operator vouches that `/proc`, `/sys` and `/etc` are the host's). By default
    /// container markers force host-scoped checks to `unknown` (catalogue §1.2).
    pub trust_container_view: bool,
    /// Whether `net.bridge.bridge-nf-call-ip{,6}tables` must be 1. Unset: required
    /// when a neutron agent config selects an iptables firewall driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge_nf_required: Option<bool>,
    /// Sysctl expectations, key -> expression: `"2"` / `"=2"` (equal), `">=1"`,
    /// `"<=1"`, `"any"` (informational), `"skip"` (no check). Overrides the
    /// catalogue defaults (§2.7); unknown keys add checks (severity medium).
    pub sysctl: BTreeMap<String, String>,
}

impl Default for CheckParams {
    fn default() -> Self {
        CheckParams {
            mac: MacSelection::Auto,
            apparmor_complain_allowed: Vec::new(),
            nested_virt_allowed: false,
            cgroup_v2_required: false,
            cgroup_controllers_v2: ["cpu", "memory", "pids", "io"].map(String::from).to_vec(),
            cgroup_controllers_v1: ["cpu", "memory", "devices", "blkio", "pids"]
                .map(String::from)
                .to_vec(),
            secure_boot_required: false,
            pci_passthrough: false,
            txt_required: false,
            instances_free_pass_percent: 15.0,
            instances_free_fail_percent: 5.0,
            trust_container_view: false,
            bridge_nf_required: None,
            sysctl: BTreeMap::new(),
        }
    }
}

/// Error of loading or validating [`CheckParams`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Not valid TOML of the expected shape.
    #[error("invalid check parameters: {0}")]
    Toml(String),
    /// A value out of range.
    #[error("invalid check parameter {field}: {detail}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
}

impl CheckParams {
    /// Parses TOML (unknown keys rejected) and validates.
    pub fn from_toml_str(text: &str) -> Result<Self, ParamsError> {
        let p: CheckParams = toml::from_str(text).map_err(|e| ParamsError::Toml(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks ranges and sysctl expressions.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let (pass, fail) = (
            self.instances_free_pass_percent,
            self.instances_free_fail_percent,
        );
        for (name, v) in [
            ("instances_free_pass_percent", pass),
            ("instances_free_fail_percent", fail),
        ] {
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err(ParamsError::Invalid {
                    field: name.into(),
                    detail: format!("{v} is not within 0..=100"),
                });
            }
        }
        if fail > pass {
            return Err(ParamsError::Invalid {
                field: "instances_free_fail_percent".into(),
                detail: format!("{fail} is above instances_free_pass_percent {pass}"),
            });
        }
        for (k, v) in &self.sysctl {
            validate_sysctl_key(k).map_err(|d| ParamsError::Invalid {
                field: format!("sysctl.{k}"),
                detail: d,
            })?;
            SysctlExpect::parse(v).map_err(|d| ParamsError::Invalid {
                field: format!("sysctl.{k}"),
                detail: d,
            })?;
        }
        for c in self
            .cgroup_controllers_v1
            .iter()
            .chain(&self.cgroup_controllers_v2)
        {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ParamsError::Invalid {
                    field: "cgroup_controllers".into(),
                    detail: format!("bad name {c:?}"),
                });
            }
        }
        Ok(())
    }
}

/// A sysctl key must be dot-separated segments of `[A-Za-z0-9_-]` (no path tricks).
pub(crate) fn validate_sysctl_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 128 {
        return Err("empty or overlong key".into());
    }
    for seg in key.split('.') {
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("bad key {key:?}: segments must be [A-Za-z0-9_-]+"));
        }
    }
    Ok(())
}

/// What a sysctl value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlExpect {
    /// Equal to.
    Eq(i64),
    /// At least.
    Ge(i64),
    /// At most.
    Le(i64),
    /// Recorded as `informational`.
    Any,
    /// Not checked at all (no result).
    Skip,
}

impl SysctlExpect {
    /// Parses `"2"`, `"=2"`, `">=1"`, `"<=1"`, `"any"`, `"skip"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let num = |x: &str| {
            x.trim()
                .parse::<i64>()
                .map_err(|_| format!("bad sysctl expectation {s:?}"))
        };
        if t.eq_ignore_ascii_case("any") {
            Ok(SysctlExpect::Any)
        } else if t.eq_ignore_ascii_case("skip") {
            Ok(SysctlExpect::Skip)
        } else if let Some(x) = t.strip_prefix(">=") {
            Ok(SysctlExpect::Ge(num(x)?))
        } else if let Some(x) = t.strip_prefix("<=") {
            Ok(SysctlExpect::Le(num(x)?))
        } else if let Some(x) = t.strip_prefix('=') {
            Ok(SysctlExpect::Eq(num(x)?))
        } else {
            Ok(SysctlExpect::Eq(num(t)?))
        }
    }

    /// Whether `v` satisfies the expectation (`Any`/`Skip` accept everything).
    pub fn accepts(self, v: i64) -> bool {
        match self {
            SysctlExpect::Eq(x) => v == x,
            SysctlExpect::Ge(x) => v >= x,
            SysctlExpect::Le(x) => v <= x,
            SysctlExpect::Any | SysctlExpect::Skip => true,
        }
    }
}

impl fmt::Display for SysctlExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysctlExpect::Eq(x) => write!(f, "= {x}"),
            SysctlExpect::Ge(x) => write!(f, ">= {x}"),
            SysctlExpect::Le(x) => write!(f, "<= {x}"),
            SysctlExpect::Any => f.write_str("any"),
            SysctlExpect::Skip => f.write_str("skip"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_empty_toml() {
        let p = CheckParams::from_toml_str("").expect("empty");
        assert_eq!(p, CheckParams::default());
        assert_eq!(p.instances_free_pass_percent, 15.0);
        assert_eq!(p.instances_free_fail_percent, 5.0);
    }

    #[test]
    fn parses_and_rejects() {
        let p = CheckParams::from_toml_str(
            "mac = \"selinux\"\nnested_virt_allowed = true\n[sysctl]\n\"kernel.kptr_restrict\" = \">=2\"\n",
        )
        .expect("ok");
        assert_eq!(p.mac, MacSelection::Selinux);
        assert!(p.nested_virt_allowed);
        assert!(CheckParams::from_toml_str("bogus = 1\n").is_err());
        assert!(CheckParams::from_toml_str("mac = \"smack\"\n").is_err());
        assert!(CheckParams::from_toml_str("instances_free_pass_percent = 3.0\n").is_err());
        assert!(CheckParams::from_toml_str("instances_free_pass_percent = 300.0\n").is_err());
        assert!(CheckParams::from_toml_str("[sysctl]\n\"kernel..x\" = \"1\"\n").is_err());
        assert!(CheckParams::from_toml_str("[sysctl]\n\"../etc/shadow\" = \"1\"\n").is_err());
        assert!(CheckParams::from_toml_str("[sysctl]\n\"kernel.x\" = \">=a\"\n").is_err());
    }

    #[test]
    fn expectations() {
        assert_eq!(SysctlExpect::parse("2"), Ok(SysctlExpect::Eq(2)));
        assert_eq!(SysctlExpect::parse(">= 1"), Ok(SysctlExpect::Ge(1)));
        assert_eq!(SysctlExpect::parse("<=0"), Ok(SysctlExpect::Le(0)));
        assert_eq!(SysctlExpect::parse("ANY"), Ok(SysctlExpect::Any));
        assert!(SysctlExpect::Ge(1).accepts(2));
        assert!(!SysctlExpect::Eq(1).accepts(2));
        assert!(SysctlExpect::parse("").is_err());
    }
}
