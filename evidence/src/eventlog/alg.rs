//! The hash algorithms of event log banks: their `TPM_ALG_ID`s, names,
//! digest sizes and hashing.

use crate::tpm::HashAlg;
use serde::Serialize;
use std::fmt;

/// A PCR bank algorithm an event log can carry and this crate can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Alg {
    /// SHA-1 (`TPM_ALG_SHA1`, 0x0004).
    Sha1,
    /// SHA-256 (`TPM_ALG_SHA256`, 0x000b).
    Sha256,
    /// SHA-384 (`TPM_ALG_SHA384`, 0x000c).
    Sha384,
    /// SHA-512 (`TPM_ALG_SHA512`, 0x000d).
    Sha512,
    /// SM3-256 (`TPM_ALG_SM3_256`, 0x0012).
    Sm3,
}

impl Alg {
    /// Every algorithm, in `TPM_ALG_ID` order.
    pub const ALL: [Alg; 5] = [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512, Alg::Sm3];

    /// The algorithm of a `TPM_ALG_ID` (None for one this crate cannot hash).
    pub fn from_id(id: u16) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The algorithm named `sha1`, `sha256`, `sha384`, `sha512` or `sm3`
    /// (also `sm3_256`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Alg> {
        let name = name.to_ascii_lowercase();
        if name == "sm3_256" {
            return Some(Alg::Sm3);
        }
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Its `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            Alg::Sha1 => 0x0004,
            Alg::Sha256 => 0x000b,
            Alg::Sha384 => 0x000c,
            Alg::Sha512 => 0x000d,
            Alg::Sm3 => 0x0012,
        }
    }

    /// Its lower-case name, as in the JSON output (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha1 => "sha1",
            Alg::Sha256 => "sha256",
            Alg::Sha384 => "sha384",
            Alg::Sha512 => "sha512",
            Alg::Sm3 => "sm3",
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Alg::Sha1 => 20,
            Alg::Sm3 | Alg::Sha256 => 32,
            Alg::Sha384 => 48,
            Alg::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Alg::Sha1 => HashAlg::Sha1.digest_parts(parts),
            Alg::Sha256 => HashAlg::Sha256.digest_parts(parts),
            Alg::Sha384 => HashAlg::Sha384.digest_parts(parts),
            Alg::Sha512 => HashAlg::Sha512.digest_parts(parts),
            Alg::Sm3 => {
                use sm3::Digest;
                let mut h = sm3::Sm3::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().to_vec()
            }
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts(&[data])
    }

    /// `H(old || digest)`: what TPM2_PCR_Extend does in this bank.
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Vec<u8> {
        self.digest_parts(&[old, digest])
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a `TPM_ALG_ID`: the algorithm's name when known, else
/// `0x1234`.
pub fn alg_id_name(id: u16) -> String {
    match Alg::from_id(id) {
        Some(a) => a.name().to_string(),
        None => format!("0x{id:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_sizes() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_id(a.id()), Some(a));
            assert_eq!(Alg::from_name(a.name()), Some(a));
            assert_eq!(a.digest(b"").len(), a.size());
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!(Alg::from_id(0x0010), None);
        assert_eq!(Alg::from_name("SM3_256"), Some(Alg::Sm3));
        assert_eq!(Alg::from_name("md5"), None);
        assert_eq!(alg_id_name(0x000b), "sha256");
        assert_eq!(alg_id_name(0x0027), "0x0027");
    }

    #[test]
    fn known_answers() {
        // FIPS 180 / GB/T 32905 test vectors for "abc".
        let abc = |a: Alg| hex::encode(a.digest(b"abc"));
        assert_eq!(abc(Alg::Sha1), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            abc(Alg::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            abc(Alg::Sm3),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(Alg::Sha384.digest(b"abc").len(), 48);
        let old = [0u8; 32];
        let d = Alg::Sha256.digest(b"x");
        assert_eq!(
            Alg::Sha256.extend(&old, &d),
            crate::pcr::extend(&old, &d.clone().try_into().unwrap()).to_vec()
        );
    }
}
