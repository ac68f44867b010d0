//! I1 `iommu.active` (catalogue §2.4).

use super::{err_ev, CheckFn, Ctx, Def, Out};
use crate::report::{Evidence, Severity, Status};

pub(crate) const ACTIVE: Def<'static> = Def {
    id: "iommu.active",
    title: "DMA remapping (IOMMU) is on",
    severity: Severity::Medium,
    remediation: "Enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on (or amd_iommu=on); remove iommu=off/intel_iommu=off from the kernel command line.",
    refs: &["HARDENING-CHECKS:I1", "OSSG:hardening-the-virtualization-layers#pci-passthrough", "CaC:grub2_enable_iommu_force", "CCE-83920-9"],
    states: &[Status::Pass, Status::Fail, Status::Error, Status::Unknown, Status::NotApplicable],
    host_scoped: true,
};

pub(crate) fn checks() -> Vec<(&'static Def<'static>, CheckFn)> {
    vec![(&ACTIVE, active)]
}

/// Kernel command-line tokens that turn the IOMMU off, and `iommu=pt`.
fn cmdline_tokens(cmdline: &str) -> (Vec<String>, bool) {
    let mut off = Vec::new();
    let mut pt = false;
    for tok in cmdline.split_whitespace() {
        if tok == "--" {
            break;
        }
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        let vals: Vec<&str> = v.split(',').collect();
        match k {
            "intel_iommu" | "amd_iommu" if vals.contains(&"off") => off.push(tok.to_owned()),
            "iommu" if vals.contains(&"off") => off.push(tok.to_owned()),
            "iommu" if vals.contains(&"pt") => pt = true,
            "iommu.passthrough" if v == "1" => pt = true,
            _ => {}
        }
    }
    (off, pt)
}

/// I1.
fn active(ctx: &Ctx) -> Out {
    let mut ev = Vec::new();
    let (off, pt) = match ctx.cmdline() {
        Ok(c) => {
            ev.push(Evidence::new("/proc/cmdline", c));
            cmdline_tokens(c)
        }
        Err(e) if e.is_invisible() => {
            ev.push(err_ev(e));
            (Vec::new(), false)
        }
        Err(e) => return Out::from_err(e, "/proc/cmdline", ev),
    };
    if !off.is_empty() {
        return Out::new(
            Status::Fail,
            format!(
                "IOMMU disabled on the kernel command line ({})",
                off.join(" ")
            ),
            ev,
        )
        .items(off);
    }
    let list = |p: &str, ev: &mut Vec<Evidence>| -> Result<Option<Vec<String>>, Out> {
        match ctx.host.read_dir(p) {
            Ok(v) => {
                ev.push(Evidence::new(
                    p,
                    if v.is_empty() {
                        "(empty)".to_owned()
                    } else {
                        v.join(" ")
                    },
                ));
                Ok(Some(v))
            }
            Err(e) if e.is_not_found() => {
                ev.push(err_ev(&e));
                Ok(None)
            }
            Err(e) => Err(Out::from_err(&e, p, ev.clone())),
        }
    };
    let units = match list("/sys/class/iommu", &mut ev) {
        Ok(v) => v.unwrap_or_default(),
        Err(o) => return o,
    };
    let groups = match list("/sys/kernel/iommu_groups", &mut ev) {
        Ok(v) => v.map(|g| g.len()).unwrap_or(0),
        Err(o) => return o,
    };
    let mut table = |name: &str| -> Result<bool, Out> {
        let p = format!("/sys/firmware/acpi/tables/{name}");
        match ctx.host.exists(&p) {
            Ok(b) => {
                if b {
                    ev.push(Evidence::new(&p, "exists"));
                }
                Ok(b)
            }
            Err(e) => Err(Out::from_err(&e, &p, ev.clone())),
        }
    };
    let dmar = match table("DMAR") {
        Ok(b) => b,
        Err(o) => return o,
    };
    let ivrs = match table("IVRS") {
        Ok(b) => b,
        Err(o) => return o,
    };
    let pt_note = if pt {
        " (iommu=pt: host devices identity-mapped, assigned devices still isolated)"
    } else {
        ""
    };
    if groups > 0 && !units.is_empty() {
        return Out::new(
            Status::Pass,
            format!(
                "IOMMU active: {} ({groups} IOMMU groups){pt_note}",
                units.join(",")
            ),
            ev,
        );
    }
    if !matches!(ctx.host.exists("/sys/class"), Ok(true)) {
        return Out::new(Status::Unknown, "sysfs (/sys/class) not visible", ev);
    }
    let hw = dmar || ivrs;
    if hw && groups == 0 {
        let t = if dmar { "DMAR" } else { "IVRS" };
        return Out::new(
            Status::Fail,
            format!("the firmware has an IOMMU ({t} table) but no IOMMU groups exist: DMA remapping is off"),
            ev,
        );
    }
    if !hw {
        if !matches!(ctx.host.exists("/sys/firmware/acpi/tables"), Ok(true)) {
            return Out::new(
                Status::Unknown,
                "ACPI tables not visible, cannot tell whether IOMMU hardware exists",
                ev,
            );
        }
        if ctx.params.pci_passthrough {
            return Out::new(
                Status::Fail,
                "PCI passthrough is enabled but the platform reports no IOMMU (no DMAR/IVRS table)",
                ev,
            );
        }
        return Out::new(
            Status::NotApplicable,
            "no IOMMU hardware (no DMAR/IVRS ACPI table) and PCI passthrough is off",
            ev,
        );
    }
    Out::new(
        Status::Unknown,
        format!(
            "inconsistent IOMMU state: {groups} groups, units [{}]",
            units.join(",")
        ),
        ev,
    )
}

#[cfg(test)]
mod tests {
    use super::cmdline_tokens;

    #[test]
    fn tokens() {
        assert_eq!(cmdline_tokens("ro intel_iommu=on iommu=pt"), (vec![], true));
        assert_eq!(
            cmdline_tokens("intel_iommu=sm_on,off"),
            (vec!["intel_iommu=sm_on,off".to_owned()], false)
        );
        assert_eq!(cmdline_tokens("ro -- iommu=off"), (vec![], false));
        assert_eq!(cmdline_tokens("amd_iommu=off").0.len(), 1);
    }
}
