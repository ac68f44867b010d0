//! EFI GUIDs (mixed-endian: `u32`, `u16`, `u16` little-endian, then 8
//! bytes) and the names of the ones event logs carry.

use serde::{Serialize, Serializer};
use std::fmt;

/// An EFI GUID as stored (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// `EFI_GLOBAL_VARIABLE` (BootOrder, Boot####, SecureBoot, PK, KEK).
    pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
        0x8be4_df61,
        0x93ca,
        0x11d2,
        [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
    );
    /// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db, dbx).
    pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
        0xd719_b2cb,
        0x3d3a,
        0x4596,
        [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
    );
    /// `EFI_CERT_X509_GUID` (a signature list of X.509 certificates).
    pub const EFI_CERT_X509: Guid = Guid::from_fields(
        0xa5c0_59a1,
        0x94e4,
        0x4aa7,
        [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
    );
    /// `EFI_CERT_SHA256_GUID` (a signature list of SHA-256 hashes).
    pub const EFI_CERT_SHA256: Guid = Guid::from_fields(
        0xc1c4_1626,
        0x504c,
        0x4092,
        [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
    );

    /// A GUID from its textual fields.
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A short name for a well-known GUID.
    pub fn name(&self) -> Option<&'static str> {
        match *self {
            Guid::EFI_GLOBAL_VARIABLE => Some("EFI_GLOBAL_VARIABLE"),
            Guid::EFI_IMAGE_SECURITY_DATABASE => Some("EFI_IMAGE_SECURITY_DATABASE"),
            Guid::EFI_CERT_X509 => Some("EFI_CERT_X509"),
            Guid::EFI_CERT_SHA256 => Some("EFI_CERT_SHA256"),
            _ => None,
        }
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_mixed_endian() {
        let bytes = [
            0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
            0x2b, 0x8c,
        ];
        assert_eq!(Guid(bytes), Guid::EFI_GLOBAL_VARIABLE);
        assert_eq!(
            Guid(bytes).to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        assert_eq!(
            Guid::EFI_IMAGE_SECURITY_DATABASE.to_string(),
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
        );
        assert_eq!(Guid::EFI_CERT_X509.name(), Some("EFI_CERT_X509"));
        assert_eq!(Guid([0; 16]).name(), None);
    }
}
