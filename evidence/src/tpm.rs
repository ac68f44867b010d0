//! Parsed TPM 2.0 structures (TPM 2.0 Part 2 layouts).
//!
//! * [`parse_public`] / [`parse_public_2b`]: `TPMT_PUBLIC` / `TPM2B_PUBLIC`
//!   (RSA and ECC keys: AKs and EKs).
//! * [`parse_attest`]: `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`.
//! * [`parse_signature`]: `TPMT_SIGNATURE` (RSASSA, RSAPSS, ECDSA).
//!
//! All parsers are strict: they consume the whole input (trailing bytes are an
//! error), reject unknown algorithm identifiers and values the TPM itself
//! would never produce, and never panic. [`crate::marshal`] produces the same
//! layouts (for tests and simulated TPMs).

pub use crate::wire::WireError;
use crate::wire::{Reader, WireResultExt};
use std::fmt;

/// TPM algorithm identifiers (`TPM_ALG_ID`, TPM 2.0 Part 2 §6.3) used by this crate.
pub mod alg {
    /// RSA key type.
    pub const RSA: u16 = 0x0001;
    /// SHA-1.
    pub const SHA1: u16 = 0x0004;
    /// HMAC signature scheme.
    pub const HMAC: u16 = 0x0005;
    /// AES block cipher.
    pub const AES: u16 = 0x0006;
    /// MGF1 KDF.
    pub const MGF1: u16 = 0x0007;
    /// Keyed-hash object type.
    pub const KEYEDHASH: u16 = 0x0008;
    /// SHA-256.
    pub const SHA256: u16 = 0x000b;
    /// SHA-384.
    pub const SHA384: u16 = 0x000c;
    /// SHA-512.
    pub const SHA512: u16 = 0x000d;
    /// The NULL algorithm.
    pub const NULL: u16 = 0x0010;
    /// SM3-256 (unsupported here).
    pub const SM3_256: u16 = 0x0012;
    /// SM4 block cipher.
    pub const SM4: u16 = 0x0013;
    /// RSASSA-PKCS1-v1_5 signatures.
    pub const RSASSA: u16 = 0x0014;
    /// RSAES-PKCS1-v1_5 encryption.
    pub const RSAES: u16 = 0x0015;
    /// RSASSA-PSS signatures.
    pub const RSAPSS: u16 = 0x0016;
    /// RSAES-OAEP encryption.
    pub const OAEP: u16 = 0x0017;
    /// ECDSA signatures.
    pub const ECDSA: u16 = 0x0018;
    /// ECDH key exchange.
    pub const ECDH: u16 = 0x0019;
    /// ECDAA signatures.
    pub const ECDAA: u16 = 0x001a;
    /// SM2 signatures.
    pub const SM2: u16 = 0x001b;
    /// EC-Schnorr signatures.
    pub const ECSCHNORR: u16 = 0x001c;
    /// ECMQV key exchange.
    pub const ECMQV: u16 = 0x001d;
    /// KDF1 per SP800-56A.
    pub const KDF1_SP800_56A: u16 = 0x0020;
    /// KDF2.
    pub const KDF2: u16 = 0x0021;
    /// KDF1 per SP800-108.
    pub const KDF1_SP800_108: u16 = 0x0022;
    /// ECC key type.
    pub const ECC: u16 = 0x0023;
    /// Symmetric-cipher object type.
    pub const SYMCIPHER: u16 = 0x0025;
    /// Camellia block cipher.
    pub const CAMELLIA: u16 = 0x0026;
    /// Counter mode.
    pub const CTR: u16 = 0x0040;
    /// Output feedback mode.
    pub const OFB: u16 = 0x0041;
    /// Cipher block chaining mode.
    pub const CBC: u16 = 0x0042;
    /// Cipher feedback mode.
    pub const CFB: u16 = 0x0043;
    /// Electronic codebook mode.
    pub const ECB: u16 = 0x0044;
}

/// Object attribute bits (`TPMA_OBJECT`, TPM 2.0 Part 2 §8.3).
pub mod attr {
    /// The object cannot be duplicated (hierarchy fixed).
    pub const FIXED_TPM: u32 = 1 << 1;
    /// Cleared on TPM Reset/Restart.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// The parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the sensitive data.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// User role may use the object with an authValue or HMAC.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// Admin role needs a policy session.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// Not subject to dictionary-attack protection.
    pub const NO_DA: u32 = 1 << 10;
    /// Duplication needs an inner wrapper.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// Restricted key: signs only TPM-generated structures / decrypts only
    /// TPM-formatted data.
    pub const RESTRICTED: u32 = 1 << 16;
    /// Decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// Signing key.
    pub const SIGN: u32 = 1 << 18;
}

/// `TPM_GENERATED_VALUE`: magic at the start of every TPM-generated attestation.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_RH_ENDORSEMENT`: the handle of the endorsement hierarchy, the
/// parent of a primary EK (its qualified name is the handle itself).
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;
/// `TPM_ST_ATTEST_QUOTE`: attestation structure type of TPM2_Quote.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// Largest `sizeofSelect` accepted in a `TPMS_PCR_SELECTION` (256 PCRs).
pub const MAX_PCR_SELECT: usize = 32;
/// Largest number of banks accepted in a `TPML_PCR_SELECTION`.
pub const MAX_PCR_BANKS: u32 = 16;
/// Largest `TPM2B_NAME` / `TPM2B_DATA` (sizeof(TPMT_HA)).
const MAX_NAME: usize = 66;
/// Largest `TPM2B_DIGEST` (sizeof(TPMU_HA)).
const MAX_DIGEST: usize = 64;
/// Largest RSA modulus / signature (`MAX_RSA_KEY_BYTES`, 4096-bit keys and a
/// margin up to 8192 bits).
const MAX_RSA_BYTES: usize = 1024;
/// Largest ECC coordinate / signature half.
const MAX_ECC_BYTES: usize = 72;

/// A TPM hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// SHA-1 (`TPM_ALG_SHA1`, 0x0004). Parsed, hashed, never trusted for signatures.
    Sha1,
    /// SHA-256 (`TPM_ALG_SHA256`, 0x000b).
    Sha256,
    /// SHA-384 (`TPM_ALG_SHA384`, 0x000c).
    Sha384,
    /// SHA-512 (`TPM_ALG_SHA512`, 0x000d).
    Sha512,
}

impl HashAlg {
    /// Maps a `TPM_ALG_ID` to a hash algorithm (None for unknown ids and NULL).
    pub fn from_alg_id(id: u16) -> Option<HashAlg> {
        match id {
            alg::SHA1 => Some(HashAlg::Sha1),
            alg::SHA256 => Some(HashAlg::Sha256),
            alg::SHA384 => Some(HashAlg::Sha384),
            alg::SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The `TPM_ALG_ID` of this algorithm.
    pub fn alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => alg::SHA1,
            HashAlg::Sha256 => alg::SHA256,
            HashAlg::Sha384 => alg::SHA384,
            HashAlg::Sha512 => alg::SHA512,
        }
    }

    /// Digest size in bytes.
    pub fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Internal block size in bytes (for HMAC).
    pub fn block_size(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Sha256 => 64,
            HashAlg::Sha384 | HashAlg::Sha512 => 128,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts(&[data])
    }

    /// Hashes the concatenation of `parts` without copying them together.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            HashAlg::Sha1 => sha1::digest_parts(parts).to_vec(),
            HashAlg::Sha256 => run::<sha2::Sha256>(parts),
            HashAlg::Sha384 => run::<sha2::Sha384>(parts),
            HashAlg::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// The algorithm whose digest has `len` bytes, if any.
    pub fn from_digest_size(len: usize) -> Option<HashAlg> {
        match len {
            20 => Some(HashAlg::Sha1),
            32 => Some(HashAlg::Sha256),
            48 => Some(HashAlg::Sha384),
            64 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    fn read(r: &mut Reader<'_>, field: &'static str) -> Result<HashAlg, WireError> {
        let at = r.position();
        let id = r.u16().ctx(field)?;
        HashAlg::from_alg_id(id).ok_or_else(|| WireError::Invalid {
            field,
            offset: at,
            reason: format!("unsupported hash algorithm 0x{id:04x}"),
        })
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        })
    }
}

/// SHA-1, only for hashing TPM structures of legacy banks/names (no `sha1`
/// crate in the dependency set). Checked against the FIPS 180 vectors.
mod sha1 {
    const H0: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];

    fn compress(h: &mut [u32; 5], block: &[u8; 64]) {
        let mut w = [0u32; 80];
        for (wi, chunk) in w.iter_mut().zip(block.chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            *wi = u32::from_be_bytes(b);
        }
        // Indices are constant-bounded; `get` keeps the no-indexing lint happy.
        let at = |w: &[u32; 80], i: usize| w.get(i).copied().unwrap_or(0);
        for i in 16..80 {
            let v =
                (at(&w, i - 3) ^ at(&w, i - 8) ^ at(&w, i - 14) ^ at(&w, i - 16)).rotate_left(1);
            if let Some(slot) = w.get_mut(i) {
                *slot = v;
            }
        }
        let [mut a, mut b, mut c, mut d, mut e] = *h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }

    pub(super) fn digest_parts(parts: &[&[u8]]) -> [u8; 20] {
        let mut h = H0;
        let mut block = [0u8; 64];
        let mut fill = 0usize;
        let mut total: u64 = 0;
        let feed = |byte: u8, h: &mut [u32; 5], block: &mut [u8; 64], fill: &mut usize| {
            if let Some(slot) = block.get_mut(*fill) {
                *slot = byte;
            }
            *fill += 1;
            if *fill == 64 {
                compress(h, block);
                *fill = 0;
            }
        };
        for p in parts {
            for &byte in *p {
                feed(byte, &mut h, &mut block, &mut fill);
                total = total.wrapping_add(8);
            }
        }
        feed(0x80, &mut h, &mut block, &mut fill);
        while fill != 56 {
            feed(0, &mut h, &mut block, &mut fill);
        }
        for byte in total.to_be_bytes() {
            feed(byte, &mut h, &mut block, &mut fill);
        }
        let mut out = [0u8; 20];
        for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

/// A supported ECC curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// NIST P-256 (`TPM_ECC_NIST_P256`, 0x0003).
    NistP256,
    /// NIST P-384 (`TPM_ECC_NIST_P384`, 0x0004).
    NistP384,
}

impl EccCurve {
    /// `TPM_ECC_CURVE` identifier.
    pub fn curve_id(self) -> u16 {
        match self {
            EccCurve::NistP256 => 0x0003,
            EccCurve::NistP384 => 0x0004,
        }
    }

    /// Maps a `TPM_ECC_CURVE` identifier (None if unsupported).
    pub fn from_curve_id(id: u16) -> Option<EccCurve> {
        match id {
            0x0003 => Some(EccCurve::NistP256),
            0x0004 => Some(EccCurve::NistP384),
            _ => None,
        }
    }

    /// Size of one coordinate (and of a scalar) in bytes.
    pub fn coordinate_size(self) -> usize {
        match self {
            EccCurve::NistP256 => 32,
            EccCurve::NistP384 => 48,
        }
    }
}

impl fmt::Display for EccCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EccCurve::NistP256 => "NIST P-256",
            EccCurve::NistP384 => "NIST P-384",
        })
    }
}

/// The public key of a TPM object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA key.
    Rsa {
        /// Big-endian modulus, exactly `bits / 8` bytes.
        modulus: Vec<u8>,
        /// Public exponent; the TPM's 0 (default) is normalised to 65537.
        exponent: u32,
        /// Key size in bits (`keyBits`).
        bits: u16,
    },
    /// An ECC key (the point is not validated by the parser).
    Ecc {
        /// The curve.
        curve: EccCurve,
        /// X coordinate as in the TPM structure (normally full size).
        x: Vec<u8>,
        /// Y coordinate as in the TPM structure (normally full size).
        y: Vec<u8>,
    },
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Rsa { bits, .. } => write!(f, "RSA-{bits}"),
            PublicKey::Ecc { curve, .. } => write!(f, "ECC {curve}"),
        }
    }
}

/// Symmetric definition of a storage key (`TPMT_SYM_DEF_OBJECT`), e.g. the
/// EK's AES-128-CFB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Algorithm id ([`alg::AES`], [`alg::SM4`], [`alg::CAMELLIA`]).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Mode id (normally [`alg::CFB`]).
    pub mode: u16,
}

impl SymDef {
    /// AES in CFB mode with `key_bits`.
    pub fn aes_cfb(key_bits: u16) -> SymDef {
        SymDef {
            algorithm: alg::AES,
            key_bits,
            mode: alg::CFB,
        }
    }

    /// The key size if this is AES-CFB, else None.
    pub fn aes_cfb_bits(&self) -> Option<u16> {
        (self.algorithm == alg::AES && self.mode == alg::CFB).then_some(self.key_bits)
    }
}

/// A key's scheme (`TPMT_RSA_SCHEME` / `TPMT_ECC_SCHEME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// No scheme fixed by the key (TPM_ALG_NULL).
    Null,
    /// RSASSA-PKCS1-v1_5 with the hash.
    RsaSsa(HashAlg),
    /// RSASSA-PSS with the hash.
    RsaPss(HashAlg),
    /// RSAES-PKCS1-v1_5.
    RsaEs,
    /// RSAES-OAEP with the hash.
    Oaep(HashAlg),
    /// ECDSA with the hash.
    EcDsa(HashAlg),
    /// ECDAA with the hash and commit counter.
    EcDaa {
        /// Hash algorithm.
        hash: HashAlg,
        /// Commit counter.
        count: u16,
    },
    /// SM2 with the hash.
    Sm2(HashAlg),
    /// EC-Schnorr with the hash.
    EcSchnorr(HashAlg),
    /// ECDH key exchange with the hash.
    EcDh(HashAlg),
    /// ECMQV key exchange with the hash.
    EcMqv(HashAlg),
}

impl Scheme {
    /// The `TPM_ALG_ID` of the scheme.
    pub fn alg_id(&self) -> u16 {
        match self {
            Scheme::Null => alg::NULL,
            Scheme::RsaSsa(_) => alg::RSASSA,
            Scheme::RsaPss(_) => alg::RSAPSS,
            Scheme::RsaEs => alg::RSAES,
            Scheme::Oaep(_) => alg::OAEP,
            Scheme::EcDsa(_) => alg::ECDSA,
            Scheme::EcDaa { .. } => alg::ECDAA,
            Scheme::Sm2(_) => alg::SM2,
            Scheme::EcSchnorr(_) => alg::ECSCHNORR,
            Scheme::EcDh(_) => alg::ECDH,
            Scheme::EcMqv(_) => alg::ECMQV,
        }
    }

    /// The scheme's hash, if it has one.
    pub fn hash(&self) -> Option<HashAlg> {
        match *self {
            Scheme::Null | Scheme::RsaEs => None,
            Scheme::RsaSsa(h)
            | Scheme::RsaPss(h)
            | Scheme::Oaep(h)
            | Scheme::EcDsa(h)
            | Scheme::Sm2(h)
            | Scheme::EcSchnorr(h)
            | Scheme::EcDh(h)
            | Scheme::EcMqv(h) => Some(h),
            Scheme::EcDaa { hash, .. } => Some(hash),
        }
    }

    fn read(r: &mut Reader<'_>, is_rsa: bool) -> Result<Scheme, WireError> {
        const F: &str = "TPMT_PUBLIC.parameters.scheme";
        let at = r.position();
        let id = r.u16().ctx(F)?;
        let allowed = if is_rsa {
            matches!(
                id,
                alg::NULL | alg::RSASSA | alg::RSAPSS | alg::RSAES | alg::OAEP
            )
        } else {
            matches!(
                id,
                alg::NULL
                    | alg::ECDSA
                    | alg::ECDAA
                    | alg::SM2
                    | alg::ECSCHNORR
                    | alg::ECDH
                    | alg::ECMQV
            )
        };
        if !allowed {
            return Err(WireError::Invalid {
                field: F,
                offset: at,
                reason: format!(
                    "scheme 0x{id:04x} is not valid for an {} key",
                    if is_rsa { "RSA" } else { "ECC" }
                ),
            });
        }
        let hash = |r: &mut Reader<'_>| HashAlg::read(r, "TPMT_PUBLIC.parameters.scheme.hashAlg");
        Ok(match id {
            alg::NULL => Scheme::Null,
            alg::RSAES => Scheme::RsaEs,
            alg::RSASSA => Scheme::RsaSsa(hash(r)?),
            alg::RSAPSS => Scheme::RsaPss(hash(r)?),
            alg::OAEP => Scheme::Oaep(hash(r)?),
            alg::ECDSA => Scheme::EcDsa(hash(r)?),
            alg::SM2 => Scheme::Sm2(hash(r)?),
            alg::ECSCHNORR => Scheme::EcSchnorr(hash(r)?),
            alg::ECDH => Scheme::EcDh(hash(r)?),
            alg::ECMQV => Scheme::EcMqv(hash(r)?),
            _ => Scheme::EcDaa {
                hash: hash(r)?,
                count: r.u16().ctx("TPMT_PUBLIC.parameters.scheme.count")?,
            },
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Scheme::Null => return f.write_str("NULL"),
            Scheme::RsaEs => return f.write_str("RSAES"),
            Scheme::RsaSsa(_) => "RSASSA",
            Scheme::RsaPss(_) => "RSAPSS",
            Scheme::Oaep(_) => "OAEP",
            Scheme::EcDsa(_) => "ECDSA",
            Scheme::EcDaa { .. } => "ECDAA",
            Scheme::Sm2(_) => "SM2",
            Scheme::EcSchnorr(_) => "ECSCHNORR",
            Scheme::EcDh(_) => "ECDH",
            Scheme::EcMqv(_) => "ECMQV",
        };
        match self.hash() {
            Some(h) => write!(f, "{name}-{h}"),
            None => f.write_str(name),
        }
    }
}

/// A parsed `TPMT_PUBLIC` (RSA or ECC object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The exact `TPMT_PUBLIC` bytes (what the name is computed over).
    pub raw: Vec<u8>,
    /// `nameAlg`.
    pub name_alg: HashAlg,
    /// `objectAttributes` (see [`attr`]).
    pub attributes: u32,
    /// `authPolicy` digest (empty or nameAlg-sized).
    pub auth_policy: Vec<u8>,
    /// The public key (`unique` with its key parameters).
    pub key: PublicKey,
    /// Symmetric algorithm of a storage key (None = TPM_ALG_NULL).
    pub symmetric: Option<SymDef>,
    /// The key's signing/encryption scheme.
    pub scheme: Scheme,
}

impl TpmPublic {
    /// The TPM name of the object: `u16 nameAlg || H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.name_alg.digest_size());
        out.extend_from_slice(&self.name_alg.alg_id().to_be_bytes());
        out.extend_from_slice(&self.name_alg.digest(&self.raw));
        out
    }

    /// True if every bit of `mask` is set in the object attributes.
    pub fn has_attributes(&self, mask: u32) -> bool {
        self.attributes & mask == mask
    }

    /// Checks that this public area describes what an attestation key made
    /// by a TPM looks like, and lists every problem:
    ///
    /// * objectAttributes of a TPM-resident restricted signing key: fixedTPM
    ///   and fixedParent (never leaves this TPM or its parent),
    ///   sensitiveDataOrigin (generated inside the TPM, not imported),
    ///   restricted (signs only digests the TPM computed itself: without it
    ///   the key could sign arbitrary data that looks like a quote) and sign
    ///   set; decrypt clear;
    /// * no symmetric algorithm (only storage keys have one);
    /// * an empty authPolicy: a policy could authorise duplication
    ///   (PolicyDuplicationSelect) or other uses, and policies are not
    ///   evaluated here;
    /// * nameAlg sha256 or stronger (the name, and with it MakeCredential
    ///   and qualifiedSigner, must not rest on SHA-1);
    /// * an RSA key of at least 2048 bits, or an ECC key on NIST P-256 or
    ///   P-384 (the parser knows no other curve).
    pub fn check_ak_attributes(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (bit, name, why) in [
            (attr::FIXED_TPM, "fixedTPM", ""),
            (attr::FIXED_PARENT, "fixedParent", ""),
            (
                attr::SENSITIVE_DATA_ORIGIN,
                "sensitiveDataOrigin",
                " (the private key was not generated by the TPM)",
            ),
            (attr::RESTRICTED, "restricted", ""),
            (attr::SIGN, "sign", ""),
        ] {
            if self.attributes & bit == 0 {
                problems.push(format!("{name} is not set{why}"));
            }
        }
        if self.attributes & attr::DECRYPT != 0 {
            problems.push("decrypt is set".to_string());
        }
        if let Some(sym) = &self.symmetric {
            problems.push(format!(
                "a symmetric algorithm (0x{:04x}, {} bits) is set, which only storage keys have",
                sym.algorithm, sym.key_bits
            ));
        }
        if !self.auth_policy.is_empty() {
            problems.push(format!(
                "authPolicy is not empty ({}): a policy could allow duplication (PolicyDuplicationSelect) and policies are not evaluated",
                hex::encode(&self.auth_policy)
            ));
        }
        if matches!(self.name_alg, HashAlg::Sha1) {
            problems.push(format!(
                "nameAlg {} is too weak (sha256 or stronger)",
                self.name_alg
            ));
        }
        match &self.key {
            PublicKey::Rsa { bits, .. } if *bits < 2048 => {
                problems.push(format!("RSA-{bits} key is too small (at least 2048 bits)"));
            }
            PublicKey::Rsa { .. } => {}
            PublicKey::Ecc {
                curve: EccCurve::NistP256 | EccCurve::NistP384,
                ..
            } => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not an attestation key (objectAttributes 0x{:08x}, {}, nameAlg {}): {}",
                self.attributes,
                self.key,
                self.name_alg,
                problems.join(", ")
            ))
        }
    }

    /// The qualified name of this object as a primary key of `hierarchy`
    /// (a permanent handle such as [`TPM_RH_ENDORSEMENT`]):
    /// `nameAlg || H_nameAlg(u32be(hierarchy) || name)` (TPM 2.0 Part 1 §16).
    pub fn primary_qualified_name(&self, hierarchy: u32) -> Vec<u8> {
        self.qualified_name(&hierarchy.to_be_bytes())
    }

    /// The qualified name of this object under a parent whose qualified
    /// name is `parent_qualified_name`: `nameAlg || H_nameAlg(parentQN || name)`.
    pub fn qualified_name(&self, parent_qualified_name: &[u8]) -> Vec<u8> {
        let name = self.name();
        let mut out = Vec::with_capacity(2 + self.name_alg.digest_size());
        out.extend_from_slice(&self.name_alg.alg_id().to_be_bytes());
        out.extend_from_slice(&self.name_alg.digest_parts(&[parent_qualified_name, &name]));
        out
    }

    /// The qualified name of this key (an AK) created under `ek`, a primary
    /// key of the endorsement hierarchy: what a quote signed by this key
    /// carries in `qualifiedSigner`.
    pub fn qualified_name_under_ek(&self, ek: &TpmPublic) -> Vec<u8> {
        self.qualified_name(&ek.primary_qualified_name(TPM_RH_ENDORSEMENT))
    }

    /// Checks that this is a restricted decryption (storage) key such as an
    /// EK: restricted and decrypt set, sign clear, fixedTPM set, and a
    /// symmetric algorithm defined.
    pub fn check_ek_attributes(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (bit, name) in [
            (attr::FIXED_TPM, "fixedTPM"),
            (attr::RESTRICTED, "restricted"),
            (attr::DECRYPT, "decrypt"),
        ] {
            if self.attributes & bit == 0 {
                problems.push(format!("{name} is not set"));
            }
        }
        if self.attributes & attr::SIGN != 0 {
            problems.push("sign is set".to_string());
        }
        if self.symmetric.is_none() {
            problems.push("no symmetric algorithm".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not a restricted decryption key (objectAttributes 0x{:08x}): {}",
                self.attributes,
                problems.join(", ")
            ))
        }
    }
}

/// Parses a `TPMT_PUBLIC` (the whole input must be consumed). This is what
/// tss-esapi's `Public::marshall()` produces.
pub fn parse_public(bytes: &[u8]) -> Result<TpmPublic, WireError> {
    let mut r = Reader::new(bytes);
    let public = read_public(&mut r)?;
    r.finish_as("TPMT_PUBLIC")?;
    Ok(public)
}

/// Parses a `TPM2B_PUBLIC` (`u16 size || TPMT_PUBLIC`, the tpm2-tools "tss"
/// format); the size must cover exactly the rest of the input.
pub fn parse_public_2b(bytes: &[u8]) -> Result<TpmPublic, WireError> {
    let mut r = Reader::new(bytes);
    let inner = r.tpm2b().ctx("TPM2B_PUBLIC")?;
    r.finish_as("TPM2B_PUBLIC")?;
    let mut inner_reader = Reader::new(inner);
    let public = read_public(&mut inner_reader)?;
    inner_reader.finish_as("TPMT_PUBLIC (inside TPM2B_PUBLIC)")?;
    Ok(public)
}

fn read_public(r: &mut Reader<'_>) -> Result<TpmPublic, WireError> {
    let start = r.position();
    let at = r.position();
    let ty = r.u16().ctx("TPMT_PUBLIC.type")?;
    let name_alg = HashAlg::read(r, "TPMT_PUBLIC.nameAlg")?;
    let attributes = r.u32().ctx("TPMT_PUBLIC.objectAttributes")?;
    let policy_at = r.position();
    let auth_policy = r.tpm2b().ctx("TPMT_PUBLIC.authPolicy")?.to_vec();
    if !auth_policy.is_empty() && auth_policy.len() != name_alg.digest_size() {
        return Err(WireError::Invalid {
            field: "TPMT_PUBLIC.authPolicy",
            offset: policy_at,
            reason: format!(
                "{} bytes, but nameAlg {name_alg} digests are {} bytes",
                auth_policy.len(),
                name_alg.digest_size()
            ),
        });
    }
    let (key, symmetric, scheme) = match ty {
        alg::RSA => read_rsa(r)?,
        alg::ECC => read_ecc(r)?,
        alg::KEYEDHASH | alg::SYMCIPHER => {
            return Err(WireError::Invalid {
                field: "TPMT_PUBLIC.type",
                offset: at,
                reason: format!("object type 0x{ty:04x} is not an asymmetric key"),
            })
        }
        _ => {
            return Err(WireError::Invalid {
                field: "TPMT_PUBLIC.type",
                offset: at,
                reason: format!("unknown object type 0x{ty:04x}"),
            })
        }
    };
    let raw = r.consumed().get(start..).unwrap_or(&[]).to_vec();
    Ok(TpmPublic {
        raw,
        name_alg,
        attributes,
        auth_policy,
        key,
        symmetric,
        scheme,
    })
}

fn read_sym_def_object(r: &mut Reader<'_>) -> Result<Option<SymDef>, WireError> {
    const F: &str = "TPMT_PUBLIC.parameters.symmetric";
    let at = r.position();
    let algorithm = r.u16().ctx(F)?;
    match algorithm {
        alg::NULL => Ok(None),
        alg::AES | alg::SM4 | alg::CAMELLIA => {
            let bits_at = r.position();
            let key_bits = r.u16().ctx("TPMT_PUBLIC.parameters.symmetric.keyBits")?;
            if !matches!(key_bits, 128 | 192 | 256) {
                return Err(WireError::Invalid {
                    field: "TPMT_PUBLIC.parameters.symmetric.keyBits",
                    offset: bits_at,
                    reason: format!("unsupported symmetric key size {key_bits}"),
                });
            }
            let mode_at = r.position();
            let mode = r.u16().ctx("TPMT_PUBLIC.parameters.symmetric.mode")?;
            if !matches!(
                mode,
                alg::CTR | alg::OFB | alg::CBC | alg::CFB | alg::ECB | alg::NULL
            ) {
                return Err(WireError::Invalid {
                    field: "TPMT_PUBLIC.parameters.symmetric.mode",
                    offset: mode_at,
                    reason: format!("unknown symmetric mode 0x{mode:04x}"),
                });
            }
            Ok(Some(SymDef {
                algorithm,
                key_bits,
                mode,
            }))
        }
        _ => Err(WireError::Invalid {
            field: F,
            offset: at,
            reason: format!("unknown symmetric algorithm 0x{algorithm:04x}"),
        }),
    }
}

fn read_rsa(r: &mut Reader<'_>) -> Result<(PublicKey, Option<SymDef>, Scheme), WireError> {
    let symmetric = read_sym_def_object(r)?;
    let scheme = Scheme::read(r, true)?;
    let bits_at = r.position();
    let bits = r.u16().ctx("TPMT_PUBLIC.parameters.keyBits")?;
    if bits < 1024 || bits % 8 != 0 || usize::from(bits / 8) > MAX_RSA_BYTES {
        return Err(WireError::Invalid {
            field: "TPMT_PUBLIC.parameters.keyBits",
            offset: bits_at,
            reason: format!("unsupported RSA key size {bits}"),
        });
    }
    let exp_at = r.position();
    let raw_exponent = r.u32().ctx("TPMT_PUBLIC.parameters.exponent")?;
    let exponent = if raw_exponent == 0 {
        65537
    } else {
        raw_exponent
    };
    if exponent < 3 || exponent % 2 == 0 {
        return Err(WireError::Invalid {
            field: "TPMT_PUBLIC.parameters.exponent",
            offset: exp_at,
            reason: format!("invalid RSA exponent {exponent}"),
        });
    }
    let n_at = r.position();
    let modulus = r.tpm2b().ctx("TPMT_PUBLIC.unique.rsa")?.to_vec();
    if modulus.len() != usize::from(bits / 8) {
        return Err(WireError::Invalid {
            field: "TPMT_PUBLIC.unique.rsa",
            offset: n_at,
            reason: format!("modulus has {} bytes but keyBits is {bits}", modulus.len()),
        });
    }
    Ok((
        PublicKey::Rsa {
            modulus,
            exponent,
            bits,
        },
        symmetric,
        scheme,
    ))
}

fn read_ecc(r: &mut Reader<'_>) -> Result<(PublicKey, Option<SymDef>, Scheme), WireError> {
    let symmetric = read_sym_def_object(r)?;
    let scheme = Scheme::read(r, false)?;
    let curve_at = r.position();
    let curve_id = r.u16().ctx("TPMT_PUBLIC.parameters.curveID")?;
    let curve = EccCurve::from_curve_id(curve_id).ok_or_else(|| WireError::Invalid {
        field: "TPMT_PUBLIC.parameters.curveID",
        offset: curve_at,
        reason: format!("unsupported ECC curve 0x{curve_id:04x} (supported: NIST P-256, P-384)"),
    })?;
    let kdf_at = r.position();
    let kdf = r.u16().ctx("TPMT_PUBLIC.parameters.kdf")?;
    match kdf {
        alg::NULL => {}
        alg::MGF1 | alg::KDF1_SP800_56A | alg::KDF2 | alg::KDF1_SP800_108 => {
            HashAlg::read(r, "TPMT_PUBLIC.parameters.kdf.hashAlg")?;
        }
        _ => {
            return Err(WireError::Invalid {
                field: "TPMT_PUBLIC.parameters.kdf",
                offset: kdf_at,
                reason: format!("unknown KDF 0x{kdf:04x}"),
            })
        }
    }
    let size = curve.coordinate_size();
    let mut coordinate = |field: &'static str| -> Result<Vec<u8>, WireError> {
        let at = r.position();
        let c = r.tpm2b().ctx(field)?;
        if c.is_empty() || c.len() > size {
            return Err(WireError::Invalid {
                field,
                offset: at,
                reason: format!("{} bytes for a {curve} coordinate ({size})", c.len()),
            });
        }
        Ok(c.to_vec())
    };
    let x = coordinate("TPMT_PUBLIC.unique.ecc.x")?;
    let y = coordinate("TPMT_PUBLIC.unique.ecc.y")?;
    Ok((PublicKey::Ecc { curve, x, y }, symmetric, scheme))
}

/// `TPMS_CLOCK_INFO`: the TPM clock state at the time of the attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (persisted periodically).
    pub clock: u64,
    /// Number of TPM Resets (reboots) since the TPM was cleared.
    pub reset_count: u32,
    /// Number of TPM Restarts/Resumes since the last reset.
    pub restart_count: u32,
    /// False if the clock may have been reported before (state lost).
    pub safe: bool,
}

/// A parsed `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// The exact bytes (what the signature covers).
    pub raw: Vec<u8>,
    /// Qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the qualifying data supplied by the caller (our binding).
    pub extra_data: Vec<u8>,
    /// Clock state.
    pub clock_info: ClockInfo,
    /// TPM firmware version (vendor specific).
    pub firmware_version: u64,
    /// `TPML_PCR_SELECTION`: per bank, the selected PCR indices, ascending.
    pub pcr_select: Vec<(HashAlg, Vec<u8>)>,
    /// `pcrDigest`: hash of the selected PCR values (hash of the signing scheme).
    pub pcr_digest: Vec<u8>,
}

/// Parses a `TPMS_ATTEST` that must be a quote. Wrong magic or type gives
/// [`WireError::NotAQuote`]; anything else wrong gives the other variants.
pub fn parse_attest(bytes: &[u8]) -> Result<Attest, WireError> {
    let mut r = Reader::new(bytes);
    let magic = r.u32().ctx("TPMS_ATTEST.magic")?;
    if magic != TPM_GENERATED_VALUE {
        return Err(WireError::NotAQuote {
            reason: format!(
                "magic is 0x{magic:08x}, not TPM_GENERATED_VALUE 0x{TPM_GENERATED_VALUE:08x}"
            ),
        });
    }
    let ty = r.u16().ctx("TPMS_ATTEST.type")?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(WireError::NotAQuote {
            reason: format!(
                "attestation type is 0x{ty:04x} ({}), not TPM_ST_ATTEST_QUOTE 0x8018",
                attest_type_name(ty)
            ),
        });
    }
    let qualified_signer = r
        .tpm2b_max(MAX_NAME)
        .ctx("TPMS_ATTEST.qualifiedSigner")?
        .to_vec();
    let extra_data = r.tpm2b_max(MAX_NAME).ctx("TPMS_ATTEST.extraData")?.to_vec();
    let clock = r.u64().ctx("TPMS_ATTEST.clockInfo.clock")?;
    let reset_count = r.u32().ctx("TPMS_ATTEST.clockInfo.resetCount")?;
    let restart_count = r.u32().ctx("TPMS_ATTEST.clockInfo.restartCount")?;
    let safe_at = r.position();
    let safe = match r.u8().ctx("TPMS_ATTEST.clockInfo.safe")? {
        0 => false,
        1 => true,
        v => {
            return Err(WireError::Invalid {
                field: "TPMS_ATTEST.clockInfo.safe",
                offset: safe_at,
                reason: format!("TPMI_YES_NO value {v}"),
            })
        }
    };
    let firmware_version = r.u64().ctx("TPMS_ATTEST.firmwareVersion")?;
    let pcr_select = read_pcr_selection(&mut r)?;
    let pcr_digest = r
        .tpm2b_max(MAX_DIGEST)
        .ctx("TPMS_ATTEST.attested.quote.pcrDigest")?
        .to_vec();
    r.finish_as("TPMS_ATTEST")?;
    Ok(Attest {
        raw: bytes.to_vec(),
        qualified_signer,
        extra_data,
        clock_info: ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        },
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

fn attest_type_name(ty: u16) -> &'static str {
    match ty {
        0x8014 => "TPM_ST_ATTEST_NV",
        0x8015 => "TPM_ST_ATTEST_COMMAND_AUDIT",
        0x8016 => "TPM_ST_ATTEST_SESSION_AUDIT",
        0x8017 => "TPM_ST_ATTEST_CERTIFY",
        0x8019 => "TPM_ST_ATTEST_TIME",
        0x801a => "TPM_ST_ATTEST_CREATION",
        0x801c => "TPM_ST_ATTEST_NV_DIGEST",
        _ => "unknown",
    }
}

/// Reads a `TPML_PCR_SELECTION` into (bank, ascending indices) pairs.
fn read_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<(HashAlg, Vec<u8>)>, WireError> {
    const F: &str = "TPMS_ATTEST.attested.quote.pcrSelect";
    let count_at = r.position();
    let count = r.u32().ctx(F)?;
    if count > MAX_PCR_BANKS {
        return Err(WireError::Invalid {
            field: F,
            offset: count_at,
            reason: format!("{count} banks (at most {MAX_PCR_BANKS})"),
        });
    }
    let mut banks = Vec::new();
    for _ in 0..count {
        let hash = HashAlg::read(r, "TPMS_PCR_SELECTION.hash")?;
        let size_at = r.position();
        let size = usize::from(r.u8().ctx("TPMS_PCR_SELECTION.sizeofSelect")?);
        if size > MAX_PCR_SELECT {
            return Err(WireError::Invalid {
                field: "TPMS_PCR_SELECTION.sizeofSelect",
                offset: size_at,
                reason: format!("{size} bytes (at most {MAX_PCR_SELECT})"),
            });
        }
        let bitmap = r.bytes(size).ctx("TPMS_PCR_SELECTION.pcrSelect")?;
        banks.push((hash, bitmap_to_indices(bitmap)));
    }
    Ok(banks)
}

/// Converts a PCR selection bitmap (PCR i = byte i/8, bit i%8) to ascending
/// indices. Bitmaps longer than 32 bytes are truncated to 256 PCRs.
pub fn bitmap_to_indices(bitmap: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (byte_index, byte) in bitmap.iter().take(MAX_PCR_SELECT).enumerate() {
        for bit in 0..8u8 {
            if byte & (1 << bit) != 0 {
                // byte_index < 32, so the index fits in u8.
                out.push((byte_index as u8) * 8 + bit);
            }
        }
    }
    out
}

/// Converts PCR indices to a selection bitmap of at least `min_size` bytes
/// (3 for the 24 PCRs of a PC-Client TPM).
pub fn indices_to_bitmap(indices: &[u8], min_size: usize) -> Vec<u8> {
    let needed = indices
        .iter()
        .map(|&i| usize::from(i) / 8 + 1)
        .max()
        .unwrap_or(0);
    let mut bitmap = vec![0u8; needed.max(min_size)];
    for &i in indices {
        if let Some(byte) = bitmap.get_mut(usize::from(i) / 8) {
            *byte |= 1 << (i % 8);
        }
    }
    bitmap
}

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash the signature was made over.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Hash the signature was made over.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// ECDSA.
    EcDsa {
        /// Hash the signature was made over.
        hash: HashAlg,
        /// r, big-endian (possibly shorter than the scalar size).
        r: Vec<u8>,
        /// s, big-endian (possibly shorter than the scalar size).
        s: Vec<u8>,
    },
}

impl TpmSignature {
    /// The hash algorithm of the signature.
    pub fn hash(&self) -> HashAlg {
        match self {
            TpmSignature::RsaSsa { hash, .. }
            | TpmSignature::RsaPss { hash, .. }
            | TpmSignature::EcDsa { hash, .. } => *hash,
        }
    }

    /// The `TPM_ALG_ID` of the signature scheme.
    pub fn alg_id(&self) -> u16 {
        match self {
            TpmSignature::RsaSsa { .. } => alg::RSASSA,
            TpmSignature::RsaPss { .. } => alg::RSAPSS,
            TpmSignature::EcDsa { .. } => alg::ECDSA,
        }
    }

    /// The scheme as it would appear in a key's public area.
    pub fn scheme(&self) -> Scheme {
        match *self {
            TpmSignature::RsaSsa { hash, .. } => Scheme::RsaSsa(hash),
            TpmSignature::RsaPss { hash, .. } => Scheme::RsaPss(hash),
            TpmSignature::EcDsa { hash, .. } => Scheme::EcDsa(hash),
        }
    }
}

/// Parses a `TPMT_SIGNATURE` (RSASSA, RSAPSS or ECDSA; the whole input must
/// be consumed).
pub fn parse_signature(bytes: &[u8]) -> Result<TpmSignature, WireError> {
    let mut r = Reader::new(bytes);
    let at = r.position();
    let sig_alg = r.u16().ctx("TPMT_SIGNATURE.sigAlg")?;
    let sig = match sig_alg {
        alg::RSASSA | alg::RSAPSS => {
            let hash = HashAlg::read(&mut r, "TPMT_SIGNATURE.signature.hash")?;
            let sig = r
                .tpm2b_max(MAX_RSA_BYTES)
                .ctx("TPMT_SIGNATURE.signature.sig")?
                .to_vec();
            if sig_alg == alg::RSASSA {
                TpmSignature::RsaSsa { hash, sig }
            } else {
                TpmSignature::RsaPss { hash, sig }
            }
        }
        alg::ECDSA => {
            let hash = HashAlg::read(&mut r, "TPMT_SIGNATURE.signature.hash")?;
            let sr = r
                .tpm2b_max(MAX_ECC_BYTES)
                .ctx("TPMT_SIGNATURE.signature.signatureR")?
                .to_vec();
            let ss = r
                .tpm2b_max(MAX_ECC_BYTES)
                .ctx("TPMT_SIGNATURE.signature.signatureS")?
                .to_vec();
            TpmSignature::EcDsa { hash, r: sr, s: ss }
        }
        alg::ECDAA | alg::SM2 | alg::ECSCHNORR | alg::HMAC | alg::NULL => {
            return Err(WireError::Invalid {
                field: "TPMT_SIGNATURE.sigAlg",
                offset: at,
                reason: format!(
                    "unsupported signature algorithm 0x{sig_alg:04x} (supported: RSASSA, RSAPSS, ECDSA)"
                ),
            })
        }
        _ => {
            return Err(WireError::Invalid {
                field: "TPMT_SIGNATURE.sigAlg",
                offset: at,
                reason: format!("unknown signature algorithm 0x{sig_alg:04x}"),
            })
        }
    };
    r.finish_as("TPMT_SIGNATURE")?;
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marshal;

    fn unhex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(clean).unwrap()
    }

    #[test]
    fn hash_alg_ids_and_sizes() {
        for (h, id, size) in [
            (HashAlg::Sha1, 0x0004, 20),
            (HashAlg::Sha256, 0x000b, 32),
            (HashAlg::Sha384, 0x000c, 48),
            (HashAlg::Sha512, 0x000d, 64),
        ] {
            assert_eq!(h.alg_id(), id);
            assert_eq!(HashAlg::from_alg_id(id), Some(h));
            assert_eq!(h.digest_size(), size);
            assert_eq!(h.digest(b"abc").len(), size);
            assert_eq!(HashAlg::from_digest_size(size), Some(h));
        }
        assert_eq!(HashAlg::from_alg_id(alg::NULL), None);
        assert_eq!(HashAlg::from_alg_id(alg::SM3_256), None);
        assert_eq!(HashAlg::from_digest_size(31), None);
    }

    #[test]
    fn known_digests() {
        // FIPS 180-2 "abc" vectors.
        assert_eq!(
            hex::encode(HashAlg::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(HashAlg::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(HashAlg::Sha1.digest(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex::encode(
                HashAlg::Sha1.digest(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            ),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex::encode(HashAlg::Sha1.digest(&million_a)),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
        // Split input gives the same digest as contiguous input.
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(h.digest_parts(&[b"ab", b"", b"c"]), h.digest(b"abc"), "{h}");
        }
        // Every length around the block boundaries.
        for len in 50..140 {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (a, b) = data.split_at(len / 3);
            assert_eq!(
                HashAlg::Sha1.digest_parts(&[a, b]),
                HashAlg::Sha1.digest(&data)
            );
        }
    }

    /// An RSA-2048 AK public as tss-esapi's `create_ak_2` (RSASSA-SHA256)
    /// lays it out, written out by hand from TPM 2.0 Part 2 (not with our
    /// marshaller), with a dummy modulus.
    fn hand_written_rsa_ak() -> Vec<u8> {
        let mut v = unhex(
            "0001 000b 00050072 0000
             0010 0014 000b 0800 00000000 0100",
        );
        v.extend((0..256).map(|i| (i as u8) | 0x80));
        v
    }

    #[test]
    fn parses_hand_written_rsa_ak() {
        let bytes = hand_written_rsa_ak();
        let p = parse_public(&bytes).unwrap();
        assert_eq!(p.raw, bytes);
        assert_eq!(p.name_alg, HashAlg::Sha256);
        assert_eq!(p.attributes, 0x0005_0072);
        assert!(p.auth_policy.is_empty());
        assert_eq!(p.symmetric, None);
        assert_eq!(p.scheme, Scheme::RsaSsa(HashAlg::Sha256));
        match &p.key {
            PublicKey::Rsa {
                modulus,
                exponent,
                bits,
            } => {
                assert_eq!(*bits, 2048);
                assert_eq!(*exponent, 65537);
                assert_eq!(modulus.len(), 256);
                assert_eq!(modulus[1], 0x81);
            }
            k => panic!("{k:?}"),
        }
        p.check_ak_attributes().unwrap();
        assert!(p.check_ek_attributes().is_err());
        let name = p.name();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(&name[2..], HashAlg::Sha256.digest(&bytes).as_slice());
        // TPM2B form.
        let mut b2 = (bytes.len() as u16).to_be_bytes().to_vec();
        b2.extend_from_slice(&bytes);
        assert_eq!(parse_public_2b(&b2).unwrap(), p);
        // Our marshaller reproduces the same bytes.
        assert_eq!(
            marshal::encode_public(
                p.name_alg,
                p.attributes,
                &p.auth_policy,
                &p.key,
                p.symmetric.as_ref(),
                &p.scheme
            )
            .unwrap(),
            bytes
        );
    }

    /// An RSA-2048 EK public, TCG default template L-1 (EK Credential Profile
    /// 2.0 B.3.3): sha256 nameAlg, attributes 0x000300b2, PolicyA digest,
    /// AES-128-CFB, NULL scheme. Hand-written.
    fn hand_written_rsa_ek() -> Vec<u8> {
        let mut v = unhex(
            "0001 000b 000300b2
             0020 837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa
             0006 0080 0043 0010 0800 00000000 0100",
        );
        v.extend((0..256).map(|i| (i as u8) ^ 0xa5));
        v
    }

    #[test]
    fn parses_hand_written_rsa_ek() {
        let p = parse_public(&hand_written_rsa_ek()).unwrap();
        assert_eq!(p.attributes, 0x0003_00b2);
        assert_eq!(p.auth_policy.len(), 32);
        assert_eq!(p.symmetric, Some(SymDef::aes_cfb(128)));
        assert_eq!(p.symmetric.unwrap().aes_cfb_bits(), Some(128));
        assert_eq!(p.scheme, Scheme::Null);
        p.check_ek_attributes().unwrap();
        let e = p.check_ak_attributes().unwrap_err();
        assert!(e.contains("sign is not set"), "{e}");
        assert!(e.contains("decrypt is set"), "{e}");
        assert!(!e.contains("fixedTPM"), "{e}");
    }

    /// ECC P-256 AK (ECDSA-SHA256), hand-written.
    fn hand_written_ecc_ak() -> Vec<u8> {
        let mut v = unhex("0023 000b 00050072 0000 0010 0018 000b 0003 0010 0020");
        v.extend([0x11u8; 32]);
        v.extend(unhex("0020"));
        v.extend([0x22u8; 32]);
        v
    }

    #[test]
    fn parses_hand_written_ecc_ak() {
        let bytes = hand_written_ecc_ak();
        let p = parse_public(&bytes).unwrap();
        assert_eq!(p.scheme, Scheme::EcDsa(HashAlg::Sha256));
        assert_eq!(
            p.key,
            PublicKey::Ecc {
                curve: EccCurve::NistP256,
                x: vec![0x11; 32],
                y: vec![0x22; 32]
            }
        );
        assert_eq!(p.key.to_string(), "ECC NIST P-256");
        p.check_ak_attributes().unwrap();
        assert_eq!(
            marshal::encode_public(
                p.name_alg,
                p.attributes,
                &p.auth_policy,
                &p.key,
                p.symmetric.as_ref(),
                &p.scheme
            )
            .unwrap(),
            bytes
        );
    }

    #[test]
    fn ecc_kdf_and_schemes() {
        // ECDAA scheme with count, MGF1 kdf with sha256, P-384.
        let mut v = unhex("0023 000c 00050072 0000 0010 001a 000c 0001 0004 0007 000b 0030");
        v.extend([1u8; 48]);
        v.extend(unhex("0030"));
        v.extend([2u8; 48]);
        let p = parse_public(&v).unwrap();
        assert_eq!(
            p.scheme,
            Scheme::EcDaa {
                hash: HashAlg::Sha384,
                count: 1
            }
        );
        assert_eq!(p.scheme.to_string(), "ECDAA-sha384");
        assert_eq!(p.name_alg, HashAlg::Sha384);
        // RSA scheme on an ECC key is rejected.
        let mut bad = v.clone();
        bad[12..14].copy_from_slice(&alg::RSASSA.to_be_bytes());
        let e = parse_public(&bad).unwrap_err();
        assert!(e.to_string().contains("not valid for an ECC key"), "{e}");
        // Unknown KDF.
        let mut bad = v.clone();
        bad[20..22].copy_from_slice(&0x0099u16.to_be_bytes());
        assert!(parse_public(&bad).unwrap_err().to_string().contains("KDF"));
        // Unsupported curve (P-521).
        let mut bad = v;
        bad[18..20].copy_from_slice(&0x0005u16.to_be_bytes());
        assert!(parse_public(&bad)
            .unwrap_err()
            .to_string()
            .contains("curve"));
    }

    #[test]
    fn public_rejects_bad_values() {
        let good = hand_written_rsa_ak();
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (0, vec![0x00, 0x08], "not an asymmetric key"),
            (0, vec![0x00, 0x99], "unknown object type"),
            (2, vec![0x00, 0x12], "unsupported hash algorithm"),
            (2, vec![0x00, 0x10], "unsupported hash algorithm"),
            (10, vec![0x00, 0x99], "unknown symmetric algorithm"),
            (12, vec![0x00, 0x18], "not valid for an RSA key"),
            (14, vec![0x00, 0x12], "unsupported hash algorithm"),
            (16, vec![0x01, 0x00], "unsupported RSA key size"),
            (16, vec![0x08, 0x01], "unsupported RSA key size"),
            (
                16,
                vec![0x0c, 0x00],
                "modulus has 256 bytes but keyBits is 3072",
            ),
            (18, vec![0x00, 0x00, 0x00, 0x02], "invalid RSA exponent"),
        ];
        for (at, patch, want) in cases {
            let mut b = good.clone();
            b[at..at + patch.len()].copy_from_slice(&patch);
            let e = parse_public(&b).unwrap_err();
            assert!(e.to_string().contains(want), "patch at {at}: {e}");
        }
        // authPolicy of the wrong size.
        let mut b = unhex("0001 000b 00050072 0003 aabbcc");
        b.extend_from_slice(&good[10..]);
        assert!(parse_public(&b)
            .unwrap_err()
            .to_string()
            .contains("authPolicy"));
        // Trailing byte.
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            parse_public(&b),
            Err(WireError::TrailingBytes { count: 1, .. })
        ));
        // TPM2B size that does not match.
        let mut b2 = ((good.len() + 1) as u16).to_be_bytes().to_vec();
        b2.extend_from_slice(&good);
        b2.push(0);
        assert!(parse_public_2b(&b2).is_err());
        // Exponent 3 explicitly is accepted.
        let mut b = good;
        b[18..22].copy_from_slice(&3u32.to_be_bytes());
        match parse_public(&b).unwrap().key {
            PublicKey::Rsa { exponent, .. } => assert_eq!(exponent, 3),
            _ => unreachable!(),
        }
    }

    #[test]
    fn ak_attribute_check_names_each_problem() {
        let mut p = parse_public(&hand_written_rsa_ak()).unwrap();
        p.attributes = attr::SIGN | attr::DECRYPT;
        let e = p.check_ak_attributes().unwrap_err();
        for w in [
            "fixedTPM is not set",
            "fixedParent is not set",
            "restricted is not set",
            "decrypt is set",
        ] {
            assert!(e.contains(w), "{e}");
        }
        assert!(!e.contains("sign is not set"));
        p.attributes = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::RESTRICTED
            | attr::SIGN;
        p.check_ak_attributes().unwrap();
        assert!(p.has_attributes(attr::RESTRICTED | attr::SIGN));
        assert!(!p.has_attributes(attr::DECRYPT));
    }

    /// The AK of `hand_written_rsa_ak` re-encoded with one field changed
    /// (through the marshaller, so the bytes are what a TPM would send).
    fn rsa_ak_with(
        name_alg: HashAlg,
        attributes: u32,
        auth_policy: &[u8],
        key: Option<PublicKey>,
        symmetric: Option<SymDef>,
    ) -> TpmPublic {
        let base = parse_public(&hand_written_rsa_ak()).unwrap();
        let bytes = marshal::encode_public(
            name_alg,
            attributes,
            auth_policy,
            &key.unwrap_or(base.key),
            symmetric.as_ref(),
            &base.scheme,
        )
        .unwrap();
        parse_public(&bytes).unwrap()
    }

    const GOOD_AK: u32 = 0x0005_0072;

    fn refusal(p: &TpmPublic) -> String {
        let e = p.check_ak_attributes().unwrap_err();
        assert!(e.starts_with("not an attestation key"), "{e}");
        e
    }

    #[test]
    fn attack_ak_with_decrypt() {
        let p = rsa_ak_with(HashAlg::Sha256, GOOD_AK | attr::DECRYPT, &[], None, None);
        let e = refusal(&p);
        assert!(e.ends_with(": decrypt is set"), "{e}");
    }

    #[test]
    fn attack_ak_unrestricted() {
        let p = rsa_ak_with(
            HashAlg::Sha256,
            GOOD_AK & !attr::RESTRICTED,
            &[],
            None,
            None,
        );
        let e = refusal(&p);
        assert!(e.ends_with(": restricted is not set"), "{e}");
    }

    #[test]
    fn attack_ak_imported_without_sensitive_data_origin() {
        let p = rsa_ak_with(
            HashAlg::Sha256,
            GOOD_AK & !attr::SENSITIVE_DATA_ORIGIN,
            &[],
            None,
            None,
        );
        let e = refusal(&p);
        assert!(
            e.ends_with(
                ": sensitiveDataOrigin is not set (the private key was not generated by the TPM)"
            ),
            "{e}"
        );
    }

    #[test]
    fn attack_ak_sha1_name_alg() {
        let p = rsa_ak_with(HashAlg::Sha1, GOOD_AK, &[], None, None);
        let e = refusal(&p);
        assert!(
            e.ends_with(": nameAlg sha1 is too weak (sha256 or stronger)"),
            "{e}"
        );
    }

    #[test]
    fn attack_ak_rsa_1024() {
        let key = PublicKey::Rsa {
            modulus: vec![0xc5; 128],
            exponent: 65537,
            bits: 1024,
        };
        let p = rsa_ak_with(HashAlg::Sha256, GOOD_AK, &[], Some(key), None);
        let e = refusal(&p);
        assert!(
            e.ends_with(": RSA-1024 key is too small (at least 2048 bits)"),
            "{e}"
        );
        assert!(e.contains("RSA-1024, nameAlg sha256"), "{e}");
    }

    #[test]
    fn attack_ak_with_auth_policy() {
        // A PolicyDuplicationSelect-style digest: any non-empty policy is refused.
        let policy = [0x5a; 32];
        let p = rsa_ak_with(HashAlg::Sha256, GOOD_AK, &policy, None, None);
        let e = refusal(&p);
        assert!(
            e.ends_with(&format!(
                ": authPolicy is not empty ({}): a policy could allow duplication (PolicyDuplicationSelect) and policies are not evaluated",
                "5a".repeat(32)
            )),
            "{e}"
        );
    }

    #[test]
    fn attack_ak_with_symmetric_algorithm() {
        let p = rsa_ak_with(
            HashAlg::Sha256,
            GOOD_AK,
            &[],
            None,
            Some(SymDef::aes_cfb(128)),
        );
        let e = refusal(&p);
        assert!(
            e.ends_with(
                ": a symmetric algorithm (0x0006, 128 bits) is set, which only storage keys have"
            ),
            "{e}"
        );
    }

    /// P-521 (0x0005) and BN P-256 (0x0010) are refused already by the
    /// parser (the AK cannot even be represented), with the curve named.
    #[test]
    fn attack_ak_p521_or_bn_curve() {
        for (curve, id) in [("P-521", 0x0005u16), ("BN P-256", 0x0010)] {
            let mut v = hand_written_ecc_ak();
            v[16..18].copy_from_slice(&id.to_be_bytes());
            let e = parse_public(&v).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "unsupported ECC curve 0x{id:04x} (supported: NIST P-256, P-384)"
                )),
                "{curve}: {e}"
            );
        }
        // P-384 is fine.
        let mut v = unhex("0023 000c 00050072 0000 0010 0018 000c 0004 0010 0030");
        v.extend([1u8; 48]);
        v.extend(unhex("0030"));
        v.extend([2u8; 48]);
        parse_public(&v).unwrap().check_ak_attributes().unwrap();
    }

    #[test]
    fn every_ak_problem_is_listed() {
        let key = PublicKey::Rsa {
            modulus: vec![0xc5; 128],
            exponent: 65537,
            bits: 1024,
        };
        let p = rsa_ak_with(
            HashAlg::Sha1,
            attr::SIGN | attr::DECRYPT,
            &[1; 20],
            Some(key),
            Some(SymDef::aes_cfb(128)),
        );
        let e = refusal(&p);
        for w in [
            "fixedTPM is not set",
            "fixedParent is not set",
            "sensitiveDataOrigin is not set",
            "restricted is not set",
            "decrypt is set",
            "symmetric algorithm",
            "authPolicy is not empty",
            "nameAlg sha1",
            "RSA-1024",
        ] {
            assert!(e.contains(w), "{w}: {e}");
        }
    }

    #[test]
    fn qualified_names_match_the_tpm() {
        // TPM 2.0 Part 1 §16: QN(primary) = nameAlg || H(hierarchy || name);
        // QN(child) = nameAlg || H(QN(parent) || name).
        let ek = parse_public(&hand_written_rsa_ek()).unwrap();
        let ak = parse_public(&hand_written_rsa_ak()).unwrap();
        let mut ek_qn = vec![0x00, 0x0b];
        ek_qn.extend(HashAlg::Sha256.digest_parts(&[&[0x40, 0x00, 0x00, 0x0b], &ek.name()]));
        assert_eq!(ek.primary_qualified_name(TPM_RH_ENDORSEMENT), ek_qn);
        let mut ak_qn = vec![0x00, 0x0b];
        ak_qn.extend(HashAlg::Sha256.digest_parts(&[&ek_qn, &ak.name()]));
        assert_eq!(ak.qualified_name_under_ek(&ek), ak_qn);
        assert_ne!(ak.qualified_name_under_ek(&ek), ak.name());
    }

    /// A quote exactly as TPM-NOTES §4 describes (11 PCRs, selection bytes
    /// `000b 03 ff000e`), hand-written.
    fn hand_written_quote() -> Vec<u8> {
        unhex(
            "ff544347 8018
             0022 000b 0101010101010101010101010101010101010101010101010101010101010101
             0004 deadbeef
             0000000000001234 00000005 00000002 01
             2019102300163636
             00000001 000b 03 ff000e
             0020 abababababababababababababababababababababababababababababababab",
        )
    }

    #[test]
    fn parses_hand_written_quote() {
        let bytes = hand_written_quote();
        let a = parse_attest(&bytes).unwrap();
        assert_eq!(a.raw, bytes);
        assert_eq!(a.qualified_signer.len(), 34);
        assert_eq!(a.extra_data, vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            a.clock_info,
            ClockInfo {
                clock: 0x1234,
                reset_count: 5,
                restart_count: 2,
                safe: true
            }
        );
        assert_eq!(a.firmware_version, 0x2019_1023_0016_3636);
        assert_eq!(
            a.pcr_select,
            vec![(HashAlg::Sha256, vec![0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19])]
        );
        assert_eq!(a.pcr_digest, vec![0xab; 32]);
        assert_eq!(
            marshal::encode_quote_attest(
                &a.qualified_signer,
                &a.extra_data,
                &a.clock_info,
                a.firmware_version,
                &a.pcr_select,
                &a.pcr_digest
            )
            .unwrap(),
            bytes
        );
    }

    #[test]
    fn attest_distinguishes_not_a_quote() {
        let mut b = hand_written_quote();
        b[0] = 0xfe;
        let e = parse_attest(&b).unwrap_err();
        assert!(e.is_not_a_quote(), "{e}");
        assert!(e.to_string().contains("magic"), "{e}");
        let mut b = hand_written_quote();
        b[5] = 0x17;
        let e = parse_attest(&b).unwrap_err();
        assert!(e.is_not_a_quote(), "{e}");
        assert!(e.to_string().contains("TPM_ST_ATTEST_CERTIFY"), "{e}");
        // Malformed is not "not a quote".
        let b = hand_written_quote();
        let e = parse_attest(&b[..b.len() - 1]).unwrap_err();
        assert!(!e.is_not_a_quote());
        assert!(e.to_string().contains("pcrDigest"), "{e}");
    }

    #[test]
    fn attest_rejects_bad_values() {
        let good = hand_written_quote();
        // safe flag 2
        let mut b = good.clone();
        let safe_at = 6 + 36 + 6 + 16;
        assert_eq!(b[safe_at], 1);
        b[safe_at] = 2;
        assert!(parse_attest(&b).unwrap_err().to_string().contains("safe"));
        // unsupported bank hash (SM3)
        let sel_at = safe_at + 1 + 8 + 4;
        let mut b = good.clone();
        b[sel_at..sel_at + 2].copy_from_slice(&alg::SM3_256.to_be_bytes());
        assert!(parse_attest(&b)
            .unwrap_err()
            .to_string()
            .contains("unsupported hash"));
        // absurd bank count
        let mut b = good.clone();
        b[sel_at - 4..sel_at].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        assert!(parse_attest(&b).unwrap_err().to_string().contains("banks"));
        // sizeofSelect too large
        let mut b = good.clone();
        b[sel_at + 2] = 33;
        assert!(parse_attest(&b)
            .unwrap_err()
            .to_string()
            .contains("sizeofSelect"));
        // trailing
        let mut b = good;
        b.push(0);
        assert!(matches!(
            parse_attest(&b),
            Err(WireError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn multi_bank_selection() {
        let sel = vec![
            (HashAlg::Sha1, vec![0, 7]),
            (HashAlg::Sha256, vec![]),
            (HashAlg::Sha384, vec![23, 24]),
        ];
        let b = marshal::encode_quote_attest(
            b"",
            b"n",
            &ClockInfo {
                clock: 1,
                reset_count: 0,
                restart_count: 0,
                safe: false,
            },
            0,
            &sel,
            &[0u8; 48],
        )
        .unwrap();
        let a = parse_attest(&b).unwrap();
        assert_eq!(a.pcr_select, sel);
        assert!(!a.clock_info.safe);
    }

    #[test]
    fn bitmaps() {
        assert_eq!(
            indices_to_bitmap(&[0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19], 3),
            vec![0xff, 0x00, 0x0e]
        );
        assert_eq!(indices_to_bitmap(&[], 3), vec![0, 0, 0]);
        assert_eq!(indices_to_bitmap(&[255], 3).len(), 32);
        assert_eq!(
            bitmap_to_indices(&[0xff, 0x00, 0x0e]),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]
        );
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(bitmap_to_indices(&indices_to_bitmap(&all, 0)), all);
        assert_eq!(bitmap_to_indices(&[0xff; 40]).len(), 256);
    }

    #[test]
    fn signatures() {
        let rsassa = unhex("0014 000b 0004 01020304");
        assert_eq!(
            parse_signature(&rsassa).unwrap(),
            TpmSignature::RsaSsa {
                hash: HashAlg::Sha256,
                sig: vec![1, 2, 3, 4]
            }
        );
        let pss = unhex("0016 000c 0001 ff");
        let p = parse_signature(&pss).unwrap();
        assert_eq!(p.hash(), HashAlg::Sha384);
        assert_eq!(p.alg_id(), alg::RSAPSS);
        assert_eq!(p.scheme(), Scheme::RsaPss(HashAlg::Sha384));
        let ecdsa = unhex("0018 000b 0002 0102 0003 030405");
        assert_eq!(
            parse_signature(&ecdsa).unwrap(),
            TpmSignature::EcDsa {
                hash: HashAlg::Sha256,
                r: vec![1, 2],
                s: vec![3, 4, 5]
            }
        );
        for s in [&rsassa, &pss, &ecdsa] {
            let sig = parse_signature(s).unwrap();
            assert_eq!(&marshal::encode_signature(&sig).unwrap(), s);
        }
        for (bytes, want) in [
            ("001a 000b 0000 0000", "unsupported signature algorithm"),
            ("0010", "unsupported signature algorithm"),
            ("0099 000b", "unknown signature algorithm"),
            ("0014 0012 0000", "unsupported hash"),
            ("0014 000b 0000 00", "trailing"),
        ] {
            let e = parse_signature(&unhex(bytes)).unwrap_err();
            assert!(e.to_string().contains(want), "{bytes}: {e}");
        }
    }
}
