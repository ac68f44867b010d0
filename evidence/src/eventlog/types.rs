//! Event types and their names: those of the TCG PC Client Platform
//! Firmware Profile (PFP, section 10.4.1), as tpm2_eventlog prints them,
//! and those of the Intel TXT (DRTM) event log that the SINIT ACM and tboot
//! write (docs/eventlog.md, "TXT/DRTM log"), under the names tboot and
//! Intel's headers give them.
//!
//! The TXT values come from, and are checked against:
//! * Intel's STM (SMI transfer monitor) headers, `jyao1/STM`
//!   `Stm/StmPkg/Include/Library/Smx.h` (`TXT_EVTYPE_*`: BASE 0x400 to
//!   NV_INFO_HASH 0x414, CAP_VALUE 0x4ff), the same values as tboot's
//!   `txt-stat` (`EVTYPE_*`, 0x400 to LCP_HASH 0x411);
//! * u-root's TXT log reader, `u-root/u-root` `pkg/txtlog/constants.go`
//!   (the Boot Guard additions COLD_BOOT_BIOS_HASH 0x415 to BOOT_POL_HASH
//!   0x41a, and RANDOM_VALUE 0x4fe);
//! * tboot, `tboot/common/integrity.c`: `EVTTYPE_TB_MEASUREMENT (0x400 +
//!   0x101)`, the one type tboot logs its own measurements with (its
//!   policy, the kernel, the initrd, other modules), spelled as tboot
//!   spells it.
//!
//! Values between those are not named: no source we can cite gives them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An event type (`eventType` of a log record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(pub u32);

macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl EventType {
            $($(#[$doc])* pub const $name: EventType = EventType($value);)*

            /// The spec's name (`EV_SEPARATOR`), or None for a type it does
            /// not define.
            pub fn known_name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The type of a spec name (`EV_SEPARATOR`) or of `0x1234abcd`,
            /// as [`EventType::name`] writes them.
            pub fn from_name(name: &str) -> Option<EventType> {
                match name {
                    $(stringify!($name) => Some(EventType($value)),)*
                    other => other
                        .strip_prefix("0x")
                        .filter(|h| !h.is_empty() && h.len() <= 8)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .map(EventType),
                }
            }
        }
    };
}

event_types! {
    /// Deprecated (TPM 1.2).
    EV_PREBOOT_CERT = 0x0000_0000;
    /// A POST code measurement (digest of the code; data: a string or a blob).
    EV_POST_CODE = 0x0000_0001;
    /// Unused.
    EV_UNUSED = 0x0000_0002;
    /// Information only: never extended.
    EV_NO_ACTION = 0x0000_0003;
    /// The end of the pre-OS measurements into a PCR.
    EV_SEPARATOR = 0x0000_0004;
    /// An action string.
    EV_ACTION = 0x0000_0005;
    /// A tagged event (`TCG_PCClientTaggedEvent`).
    EV_EVENT_TAG = 0x0000_0006;
    /// The S-CRTM contents.
    EV_S_CRTM_CONTENTS = 0x0000_0007;
    /// The S-CRTM version string.
    EV_S_CRTM_VERSION = 0x0000_0008;
    /// CPU microcode.
    EV_CPU_MICROCODE = 0x0000_0009;
    /// Platform configuration flags.
    EV_PLATFORM_CONFIG_FLAGS = 0x0000_000a;
    /// A table of devices.
    EV_TABLE_OF_DEVICES = 0x0000_000b;
    /// A compact hash (the data is what was hashed).
    EV_COMPACT_HASH = 0x0000_000c;
    /// Initial Program Loader code or data.
    EV_IPL = 0x0000_000d;
    /// IPL partition data.
    EV_IPL_PARTITION_DATA = 0x0000_000e;
    /// Non-host code.
    EV_NONHOST_CODE = 0x0000_000f;
    /// Non-host configuration.
    EV_NONHOST_CONFIG = 0x0000_0010;
    /// Non-host information.
    EV_NONHOST_INFO = 0x0000_0011;
    /// "BOOT ATTEMPTS OMITTED".
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x0000_0012;
    /// A POST code with a description, base and length (blob2 layout).
    EV_POST_CODE2 = 0x0000_0013;
    /// UEFI variable (Secure Boot configuration) in PCR 7 or 1.
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x8000_0001;
    /// UEFI boot variable (BootOrder, Boot####).
    EV_EFI_VARIABLE_BOOT = 0x8000_0002;
    /// A UEFI boot services application (an image: digest of the PE).
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x8000_0003;
    /// A UEFI boot services driver.
    EV_EFI_BOOT_SERVICES_DRIVER = 0x8000_0004;
    /// A UEFI runtime services driver.
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x8000_0005;
    /// The GPT of the boot disk.
    EV_EFI_GPT_EVENT = 0x8000_0006;
    /// A UEFI action string.
    EV_EFI_ACTION = 0x8000_0007;
    /// A firmware volume (base, length).
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x8000_0008;
    /// UEFI configuration tables handed off.
    EV_EFI_HANDOFF_TABLES = 0x8000_0009;
    /// A firmware blob with a description.
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000_000a;
    /// Handoff tables with a description.
    EV_EFI_HANDOFF_TABLES2 = 0x8000_000b;
    /// A boot variable (PFP 1.05: BOOT2).
    EV_EFI_VARIABLE_BOOT2 = 0x8000_000c;
    /// The GPT, PFP 1.06 form.
    EV_EFI_GPT_EVENT2 = 0x8000_000d;
    /// An H-CRTM measurement.
    EV_EFI_HCRTM_EVENT = 0x8000_0010;
    /// The authority (certificate) that verified an image.
    EV_EFI_VARIABLE_AUTHORITY = 0x8000_00e0;
    /// SPDM device firmware.
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x8000_00e1;
    /// SPDM device configuration.
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x8000_00e2;
    /// SPDM device policy (a variable).
    EV_EFI_SPDM_DEVICE_POLICY = 0x8000_00e3;
    /// SPDM device authority (a variable).
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x8000_00e4;
    /// TXT: the base of the TXT event types (SINIT ACM).
    EVTYPE_BASE = 0x0000_0400;
    /// TXT: which PCR mapping the launch uses (legacy or
    /// Details/Authorities).
    EVTYPE_PCRMAPPING = 0x0000_0401;
    /// TXT: the locality-4 hash start, PCR 17's first extend after
    /// GETSEC[SENTER] (its digest: the SINIT ACM's hash).
    EVTYPE_HASH_START = 0x0000_0402;
    /// TXT: the combined hash of the SINIT's measurements (legacy mapping).
    EVTYPE_COMBINED_HASH = 0x0000_0403;
    /// TXT: the MLE (tboot, or the Secure Launch kernel) measured by SINIT.
    EVTYPE_MLE_HASH = 0x0000_0404;
    /// TXT: the BIOS ACM's registration data.
    EVTYPE_BIOSAC_REG_DATA = 0x0000_040a;
    /// TXT: the processor's S-CRTM status.
    EVTYPE_CPU_SCRTM_STAT = 0x0000_040b;
    /// TXT: the launch control policy's control field.
    EVTYPE_LCP_CONTROL_HASH = 0x0000_040c;
    /// TXT: the launch control policy's matching elements.
    EVTYPE_ELEMENTS_HASH = 0x0000_040d;
    /// TXT: the STM (SMI transfer monitor).
    EVTYPE_STM_HASH = 0x0000_040e;
    /// TXT: the OsSinitData capabilities.
    EVTYPE_OSSINITDATA_CAP_HASH = 0x0000_040f;
    /// TXT: the public key that signed the SINIT ACM.
    EVTYPE_SINIT_PUBKEY_HASH = 0x0000_0410;
    /// TXT: the launch control policy.
    EVTYPE_LCP_HASH = 0x0000_0411;
    /// TXT: the launch control policy's details.
    EVTYPE_LCP_DETAILS_HASH = 0x0000_0412;
    /// TXT: the launch control policy's authorities.
    EVTYPE_LCP_AUTHORITIES_HASH = 0x0000_0413;
    /// TXT: the TPM NV index information.
    EVTYPE_NV_INFO_HASH = 0x0000_0414;
    /// TXT: the cold-boot BIOS (Boot Guard).
    EVTYPE_COLD_BOOT_BIOS_HASH = 0x0000_0415;
    /// TXT: the Boot Guard key manifest.
    EVTYPE_KM_HASH = 0x0000_0416;
    /// TXT: the Boot Guard boot policy manifest.
    EVTYPE_BPM_HASH = 0x0000_0417;
    /// TXT: the key manifest's information.
    EVTYPE_KM_INFO_HASH = 0x0000_0418;
    /// TXT: the boot policy manifest's information.
    EVTYPE_BPM_INFO_HASH = 0x0000_0419;
    /// TXT: the boot policy.
    EVTYPE_BOOT_POL_HASH = 0x0000_041a;
    /// TXT: a random value.
    EVTYPE_RANDOM_VALUE = 0x0000_04fe;
    /// TXT: a capping value (a PCR closed to further meaning).
    EVTYPE_CAP_VALUE = 0x0000_04ff;
    /// tboot: one of its verified-launch measurements (its policy, a
    /// module: kernel, initrd…), on the PCR its policy names.
    EVTTYPE_TB_MEASUREMENT = 0x0000_0501;
}

impl EventType {
    /// The spec's name, or `0x1234abcd` for an unknown type.
    pub fn name(self) -> String {
        match self.known_name() {
            Some(n) => n.to_string(),
            None => format!("0x{:08x}", self.0),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        EventType::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(EventType::EV_SEPARATOR.name(), "EV_SEPARATOR");
        assert_eq!(
            EventType(0x8000_00e0).to_string(),
            "EV_EFI_VARIABLE_AUTHORITY"
        );
        assert_eq!(EventType(0x1234).name(), "0x00001234");
        assert_eq!(EventType(0x1234).known_name(), None);
        for t in [EventType::EV_IPL, EventType(0x1234), EventType(0x8000_00e0)] {
            assert_eq!(EventType::from_name(&t.name()), Some(t));
        }
        assert_eq!(EventType::from_name("EV_NOPE"), None);
        // The TXT types round-trip too, and a value no source names stays
        // a number.
        assert_eq!(EventType(0x402).name(), "EVTYPE_HASH_START");
        assert_eq!(EventType(0x501).name(), "EVTTYPE_TB_MEASUREMENT");
        assert_eq!(EventType(0x405).name(), "0x00000405");
        for v in (0x400..=0x41a).chain([0x4fe, 0x4ff, 0x500, 0x501, 0x502]) {
            let t = EventType(v);
            assert_eq!(EventType::from_name(&t.name()), Some(t));
        }
        assert_eq!(EventType::from_name("0x"), None);
        assert_eq!(EventType::from_name("0x123456789"), None);
        assert_eq!(
            serde_json::to_string(&EventType::EV_IPL).unwrap(),
            "\"EV_IPL\""
        );
    }
}
