//! TPM2_MakeCredential in software, and the TPM key derivation functions.
//!
//! The server proves that an AK lives in the same TPM as an EK by sending a
//! credential that only that TPM can open with TPM2_ActivateCredential
//! (TPM 2.0 Part 1 §24, "Credential Protection"):
//!
//! 1. `seed`: random, nameAlg-digest-sized, protected to the EK:
//!    RSA: `RSA-OAEP(nameAlg, label "IDENTITY\0")(seed)`;
//!    ECC: ephemeral ECDH with the EK, `seed = KDFe(nameAlg, Z, "IDENTITY", eph.x, ek.x)`,
//!    the encrypted secret is the ephemeral point (`TPMS_ECC_POINT`).
//! 2. `symKey = KDFa(nameAlg, seed, "STORAGE", akName, "", symBits)`;
//!    `encIdentity = AES-CFB(symKey, IV=0)(u16 len || credential)`.
//! 3. `hmacKey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)`;
//!    `outerHMAC = HMAC(hmacKey, encIdentity || akName)`.
//! 4. `credentialBlob = u16(hmac len) || outerHMAC || encIdentity`.
//!
//! Everything (nameAlg, AES key size) is taken from the parsed EK public: an
//! RSA-2048 EK is sha256/AES-128-CFB, a P-384 high-range EK may be
//! sha384/AES-256-CFB.

use crate::tpm::{EccCurve, HashAlg, PublicKey, TpmPublic};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use thiserror::Error;

/// The output of MakeCredential, ready to be sent to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Contents of the `TPM2B_ID_OBJECT` (without its own size):
    /// `u16 hmac len || outerHMAC || encIdentity`.
    pub credential_blob: Vec<u8>,
    /// Contents of the `TPM2B_ENCRYPTED_SECRET` (without its own size): the
    /// OAEP ciphertext (RSA) or the ephemeral `TPMS_ECC_POINT` (ECC).
    pub encrypted_secret: Vec<u8>,
}

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    /// The EK public is not a restricted decryption key.
    #[error("EK cannot receive a credential: {0}")]
    NotAnEk(String),
    /// The EK's nameAlg is not supported (SHA-1).
    #[error("unsupported EK nameAlg {0} (sha256, sha384 and sha512 are supported)")]
    UnsupportedNameAlg(HashAlg),
    /// The EK's symmetric algorithm is not AES-CFB.
    #[error("unsupported EK symmetric algorithm: {0}")]
    UnsupportedSymmetric(String),
    /// The secret is empty or longer than the nameAlg digest.
    #[error("credential secret must be 1 to {max} bytes for this EK, got {len}")]
    SecretSize {
        /// Given length.
        len: usize,
        /// Largest allowed length (nameAlg digest size).
        max: usize,
    },
    /// The AK name is not `u16 alg || digest`.
    #[error("malformed AK name: {0}")]
    BadAkName(String),
    /// The EK public key is unusable (point not on the curve, bad modulus).
    #[error("invalid EK public key: {0}")]
    InvalidEkKey(String),
    /// The asymmetric encryption failed.
    #[error("encrypting the seed failed: {0}")]
    Encryption(String),
}

/// Runs TPM2_MakeCredential in software: protects `secret` so that only the
/// TPM holding the EK private key, with the object named `ak_name` loaded,
/// can recover it with TPM2_ActivateCredential.
pub fn make_credential(
    ek: &TpmPublic,
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<Credential, CredentialError> {
    ek.check_ek_attributes().map_err(CredentialError::NotAnEk)?;
    let name_alg = ek.name_alg;
    if name_alg == HashAlg::Sha1 {
        return Err(CredentialError::UnsupportedNameAlg(name_alg));
    }
    let sym = ek
        .symmetric
        .ok_or_else(|| CredentialError::UnsupportedSymmetric("none".into()))?;
    let sym_bits = sym.aes_cfb_bits().ok_or_else(|| {
        CredentialError::UnsupportedSymmetric(format!(
            "algorithm 0x{:04x} mode 0x{:04x} (only AES-CFB is supported)",
            sym.algorithm, sym.mode
        ))
    })?;
    check_name(ak_name)?;
    let max = name_alg.digest_size();
    if secret.is_empty() || secret.len() > max {
        return Err(CredentialError::SecretSize {
            len: secret.len(),
            max,
        });
    }

    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => rsa_seed(name_alg, modulus, *exponent, rng)?,
        PublicKey::Ecc { curve, x, y } => ecc_seed(name_alg, *curve, x, y, rng)?,
    };

    let sym_key = kdfa(name_alg, &seed, b"STORAGE", ak_name, &[], sym_bits);
    // secret.len() <= 64, fits u16.
    let mut enc_identity = (secret.len() as u16).to_be_bytes().to_vec();
    enc_identity.extend_from_slice(secret);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let digest_bits = (name_alg.digest_size() * 8) as u16;
    let hmac_key = kdfa(name_alg, &seed, b"INTEGRITY", &[], &[], digest_bits);
    let outer_hmac = hmac(name_alg, &hmac_key, &[&enc_identity, ak_name]);

    let mut credential_blob = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    credential_blob.extend_from_slice(&(outer_hmac.len() as u16).to_be_bytes());
    credential_blob.extend_from_slice(&outer_hmac);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(Credential {
        credential_blob,
        encrypted_secret,
    })
}

/// Checks that `name` is `u16 hashAlg || digest` of matching size.
fn check_name(name: &[u8]) -> Result<(), CredentialError> {
    let (alg, digest) = match name {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => {
            return Err(CredentialError::BadAkName(format!(
                "{} bytes is too short",
                name.len()
            )))
        }
    };
    let hash = HashAlg::from_alg_id(alg)
        .ok_or_else(|| CredentialError::BadAkName(format!("unknown name algorithm 0x{alg:04x}")))?;
    if digest.len() != hash.digest_size() {
        return Err(CredentialError::BadAkName(format!(
            "{hash} name with a {}-byte digest",
            digest.len()
        )));
    }
    Ok(())
}

fn rsa_seed(
    name_alg: HashAlg,
    modulus: &[u8],
    exponent: u32,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    use rsa::{BigUint, Oaep, RsaPublicKey};
    let key = RsaPublicKey::new_with_max_size(
        BigUint::from_bytes_be(modulus),
        BigUint::from(exponent),
        8192,
    )
    .map_err(|e| CredentialError::InvalidEkKey(e.to_string()))?;
    let mut seed = vec![0u8; name_alg.digest_size()];
    rng.fill_bytes(&mut seed);
    // The OAEP label is the NUL-terminated "IDENTITY" (valid UTF-8).
    let label = "IDENTITY\0";
    let padding = match name_alg {
        HashAlg::Sha256 => Oaep::new_with_label::<sha2::Sha256, _>(label),
        HashAlg::Sha384 => Oaep::new_with_label::<sha2::Sha384, _>(label),
        HashAlg::Sha512 => Oaep::new_with_label::<sha2::Sha512, _>(label),
        HashAlg::Sha1 => return Err(CredentialError::UnsupportedNameAlg(name_alg)),
    };
    let encrypted = key
        .encrypt(rng, padding, &seed)
        .map_err(|e| CredentialError::Encryption(format!("RSA-OAEP: {e}")))?;
    Ok((seed, encrypted))
}

fn ecc_seed(
    name_alg: HashAlg,
    curve: EccCurve,
    x: &[u8],
    y: &[u8],
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let size = curve.coordinate_size();
    let pad = |c: &[u8]| {
        crate::quote::left_pad(c, size)
            .ok_or_else(|| CredentialError::InvalidEkKey("coordinate too long".into()))
    };
    let mut sec1 = vec![0x04];
    sec1.extend(pad(x)?);
    sec1.extend(pad(y)?);
    let bad_point = |_| CredentialError::InvalidEkKey(format!("the EK point is not on {curve}"));
    // (Z = shared x coordinate, ephemeral x, ephemeral y), all full size.
    let (z, ex, ey): (Vec<u8>, Vec<u8>, Vec<u8>) = match curve {
        EccCurve::NistP256 => {
            let ek_pub = p256::PublicKey::from_sec1_bytes(&sec1).map_err(bad_point)?;
            let eph = p256::ecdh::EphemeralSecret::random(rng);
            let point = eph.public_key().to_encoded_point(false);
            let shared = eph.diffie_hellman(&ek_pub);
            let (ex, ey) = match (point.x(), point.y()) {
                (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
                _ => return Err(CredentialError::Encryption("ephemeral point".into())),
            };
            (shared.raw_secret_bytes().to_vec(), ex, ey)
        }
        EccCurve::NistP384 => {
            let ek_pub = p384::PublicKey::from_sec1_bytes(&sec1).map_err(bad_point)?;
            let eph = p384::ecdh::EphemeralSecret::random(rng);
            let point = eph.public_key().to_encoded_point(false);
            let shared = eph.diffie_hellman(&ek_pub);
            let (ex, ey) = match (point.x(), point.y()) {
                (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
                _ => return Err(CredentialError::Encryption("ephemeral point".into())),
            };
            (shared.raw_secret_bytes().to_vec(), ex, ey)
        }
    };
    let seed_bits = (name_alg.digest_size() * 8) as u16;
    // partyVInfo is the EK's x exactly as in its public area.
    let seed = kdfe(name_alg, &z, b"IDENTITY", &ex, x, seed_bits);
    let mut encrypted = Vec::with_capacity(4 + ex.len() + ey.len());
    encrypted.extend_from_slice(&(ex.len() as u16).to_be_bytes());
    encrypted.extend_from_slice(&ex);
    encrypted.extend_from_slice(&(ey.len() as u16).to_be_bytes());
    encrypted.extend_from_slice(&ey);
    Ok((seed, encrypted))
}

fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    let iv = [0u8; 16];
    let bad = |_| CredentialError::UnsupportedSymmetric(format!("AES key of {} bytes", key.len()));
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(bad)?
            .encrypt(data),
        24 => cfb_mode::Encryptor::<aes::Aes192>::new_from_slices(key, &iv)
            .map_err(bad)?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(bad)?
            .encrypt(data),
        n => {
            return Err(CredentialError::UnsupportedSymmetric(format!(
                "AES key of {n} bytes"
            )))
        }
    }
    Ok(())
}

/// HMAC over the concatenation of `parts`.
pub fn hmac(hash: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length.
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    match hash {
        HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HashAlg::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts),
        HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        HashAlg::Sha1 => {
            // RFC 2104 with the crate's SHA-1 (no sha1 crate dependency).
            let block = hash.block_size();
            let mut k = if key.len() > block {
                hash.digest(key)
            } else {
                key.to_vec()
            };
            k.resize(block, 0);
            let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
            let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
            let mut inner_parts: Vec<&[u8]> = vec![&ipad];
            inner_parts.extend_from_slice(parts);
            let inner = hash.digest_parts(&inner_parts);
            hash.digest_parts(&[&opad, &inner])
        }
    }
}

/// Appends the terminating NUL to a label unless it already ends with one.
fn nul_terminated(label: &[u8]) -> Vec<u8> {
    let mut l = label.to_vec();
    if l.last() != Some(&0) {
        l.push(0);
    }
    l
}

/// Truncates KDF output to `bits`, masking the excess leading bits of the
/// first byte when `bits` is not a multiple of 8 (TPM 2.0 Part 1 §11.4.10).
fn truncate_bits(mut out: Vec<u8>, bits: u16) -> Vec<u8> {
    let bytes = usize::from(bits).div_ceil(8);
    out.truncate(bytes);
    let rem = bits % 8;
    if rem != 0 {
        if let Some(first) = out.first_mut() {
            *first &= (1u8 << rem) - 1;
        }
    }
    out
}

/// KDFa (SP800-108 counter mode with HMAC, TPM 2.0 Part 1 §11.4.10.2):
/// `HMAC(key, u32(i) || label || 0x00 || context_u || context_v || u32(bits))`
/// for i = 1, 2, ..., truncated to `bits`. `label` is given without its
/// terminating NUL (one is appended unless present).
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u16,
) -> Vec<u8> {
    let label = nul_terminated(label);
    let bytes = usize::from(bits).div_ceil(8);
    let bits_be = u32::from(bits).to_be_bytes();
    let mut out = Vec::with_capacity(bytes + hash.digest_size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hmac(
            hash,
            key,
            &[
                &counter.to_be_bytes(),
                &label,
                context_u,
                context_v,
                &bits_be,
            ],
        ));
        counter = counter.wrapping_add(1);
    }
    truncate_bits(out, bits)
}

/// KDFe (SP800-56A concatenation KDF, TPM 2.0 Part 1 §11.4.10.3):
/// `H(u32(i) || Z || label || 0x00 || party_u || party_v)` for i = 1, 2, ...,
/// truncated to `bits`. `label` is given without its terminating NUL.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u16,
) -> Vec<u8> {
    let label = nul_terminated(label);
    let bytes = usize::from(bits).div_ceil(8);
    let mut out = Vec::with_capacity(bytes + hash.digest_size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.digest_parts(&[&counter.to_be_bytes(), z, &label, party_u, party_v]));
        counter = counter.wrapping_add(1);
    }
    truncate_bits(out, bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::tpm::{alg, Scheme, SymDef};
    use crate::wire::Reader;
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};

    // ---- Independent reference implementations (straight from the spec
    // text, no shared code with the module under test). ----

    fn ref_hash(h: HashAlg, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match h {
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
            HashAlg::Sha1 => unreachable!(),
        }
    }

    fn ref_hmac(h: HashAlg, key: &[u8], msg: &[u8]) -> Vec<u8> {
        let block = if h == HashAlg::Sha256 { 64 } else { 128 };
        let mut k = if key.len() > block {
            ref_hash(h, key)
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        inner.extend_from_slice(msg);
        let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        outer.extend_from_slice(&ref_hash(h, &inner));
        ref_hash(h, &outer)
    }

    fn ref_kdfa(h: HashAlg, key: &[u8], label: &str, u: &[u8], v: &[u8], bits: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 1u32;
        while out.len() * 8 < bits as usize {
            let mut m = i.to_be_bytes().to_vec();
            m.extend_from_slice(label.as_bytes());
            m.push(0);
            m.extend_from_slice(u);
            m.extend_from_slice(v);
            m.extend_from_slice(&bits.to_be_bytes());
            out.extend(ref_hmac(h, key, &m));
            i += 1;
        }
        out.truncate(bits as usize / 8);
        out
    }

    fn ref_kdfe(h: HashAlg, z: &[u8], label: &str, u: &[u8], v: &[u8], bits: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 1u32;
        while out.len() * 8 < bits as usize {
            let mut m = i.to_be_bytes().to_vec();
            m.extend_from_slice(z);
            m.extend_from_slice(label.as_bytes());
            m.push(0);
            m.extend_from_slice(u);
            m.extend_from_slice(v);
            out.extend(ref_hash(h, &m));
            i += 1;
        }
        out.truncate(bits as usize / 8);
        out
    }

    enum EkPrivate {
        Rsa(&'static rsa::RsaPrivateKey),
        P256(p256::SecretKey),
        P384(p384::SecretKey),
    }

    /// TPM2_ActivateCredential in software (what the TPM does with the EK
    /// private key), written independently of make_credential.
    fn activate(
        ek_priv: &EkPrivate,
        ek: &TpmPublic,
        ak_name: &[u8],
        cred: &Credential,
    ) -> Result<Vec<u8>, String> {
        let h = ek.name_alg;
        let seed = match ek_priv {
            EkPrivate::Rsa(k) => {
                let padding = match h {
                    HashAlg::Sha256 => rsa::Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"),
                    HashAlg::Sha384 => rsa::Oaep::new_with_label::<sha2::Sha384, _>("IDENTITY\0"),
                    _ => unreachable!(),
                };
                k.decrypt(padding, &cred.encrypted_secret)
                    .map_err(|e| format!("OAEP: {e}"))?
            }
            EkPrivate::P256(_) | EkPrivate::P384(_) => {
                let mut r = Reader::new(&cred.encrypted_secret);
                let ex = r.tpm2b().map_err(|e| e.to_string())?.to_vec();
                let ey = r.tpm2b().map_err(|e| e.to_string())?.to_vec();
                r.finish_as("TPMS_ECC_POINT").map_err(|e| e.to_string())?;
                let mut sec1 = vec![4];
                sec1.extend_from_slice(&ex);
                sec1.extend_from_slice(&ey);
                let PublicKey::Ecc { x: ek_x, .. } = &ek.key else {
                    unreachable!()
                };
                let z = match ek_priv {
                    EkPrivate::P256(sk) => {
                        let eph =
                            p256::PublicKey::from_sec1_bytes(&sec1).map_err(|e| e.to_string())?;
                        p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), eph.as_affine())
                            .raw_secret_bytes()
                            .to_vec()
                    }
                    EkPrivate::P384(sk) => {
                        let eph =
                            p384::PublicKey::from_sec1_bytes(&sec1).map_err(|e| e.to_string())?;
                        p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), eph.as_affine())
                            .raw_secret_bytes()
                            .to_vec()
                    }
                    EkPrivate::Rsa(_) => unreachable!(),
                };
                ref_kdfe(h, &z, "IDENTITY", &ex, ek_x, (h.digest_size() * 8) as u32)
            }
        };
        if seed.len() != h.digest_size() {
            return Err("seed size".into());
        }
        let mut r = Reader::new(&cred.credential_blob);
        let outer = r.tpm2b().map_err(|e| e.to_string())?.to_vec();
        let enc = r.bytes(r.remaining()).unwrap().to_vec();
        let hmac_key = ref_kdfa(
            h,
            &seed,
            "INTEGRITY",
            &[],
            &[],
            (h.digest_size() * 8) as u32,
        );
        let mut msg = enc.clone();
        msg.extend_from_slice(ak_name);
        if ref_hmac(h, &hmac_key, &msg) != outer {
            return Err("TPM_RC_INTEGRITY: outer HMAC mismatch".into());
        }
        let bits = ek.symmetric.unwrap().key_bits;
        let sym_key = ref_kdfa(h, &seed, "STORAGE", ak_name, &[], u32::from(bits));
        let mut plain = enc;
        let iv = [0u8; 16];
        match bits {
            128 => cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
                .unwrap()
                .decrypt(&mut plain),
            256 => cfb_mode::Decryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
                .unwrap()
                .decrypt(&mut plain),
            _ => unreachable!(),
        }
        let mut r = Reader::new(&plain);
        let secret = r.tpm2b().map_err(|e| e.to_string())?.to_vec();
        r.finish_as("TPM2B_DIGEST").map_err(|e| e.to_string())?;
        Ok(secret)
    }

    fn ek(name_alg: HashAlg, key: &PublicKey, aes_bits: u16) -> TpmPublic {
        public(
            name_alg,
            EK_ATTRS,
            key,
            Some(SymDef::aes_cfb(aes_bits)),
            Scheme::Null,
        )
    }

    fn ak_name() -> Vec<u8> {
        SoftAk::p256(3).public.name()
    }

    fn cases() -> Vec<(&'static str, TpmPublic, EkPrivate)> {
        let p256k = p256_key(11);
        let p384k = p384_key(12);
        vec![
            (
                "RSA-2048 sha256 AES-128",
                ek(HashAlg::Sha256, &rsa_public_key(rsa_key(0)), 128),
                EkPrivate::Rsa(rsa_key(0)),
            ),
            (
                "RSA-2048 sha384 AES-256",
                ek(HashAlg::Sha384, &rsa_public_key(rsa_key(1)), 256),
                EkPrivate::Rsa(rsa_key(1)),
            ),
            (
                "P-256 sha256 AES-128",
                ek(HashAlg::Sha256, &p256_public_key(&p256k), 128),
                EkPrivate::P256(p256k),
            ),
            (
                "P-384 sha384 AES-256",
                ek(HashAlg::Sha384, &p384_public_key(&p384k), 256),
                EkPrivate::P384(p384k),
            ),
        ]
    }

    #[test]
    fn activation_recovers_the_secret() {
        let name = ak_name();
        for (label, ek, ek_priv) in cases() {
            for (i, secret) in [vec![0x5a; 32], vec![1], b"sixteen byte sec".to_vec()]
                .into_iter()
                .enumerate()
            {
                let cred = make_credential(&ek, &name, &secret, &mut rng(i as u64)).unwrap();
                assert_eq!(
                    activate(&ek_priv, &ek, &name, &cred).unwrap(),
                    secret,
                    "{label}"
                );
                let h = ek.name_alg.digest_size();
                assert_eq!(
                    &cred.credential_blob[..2],
                    &(h as u16).to_be_bytes(),
                    "{label}"
                );
                assert_eq!(cred.credential_blob.len(), 2 + h + 2 + secret.len());
                match &ek.key {
                    PublicKey::Rsa { modulus, .. } => {
                        assert_eq!(cred.encrypted_secret.len(), modulus.len())
                    }
                    PublicKey::Ecc { curve, .. } => {
                        assert_eq!(cred.encrypted_secret.len(), 4 + 2 * curve.coordinate_size())
                    }
                }
            }
        }
    }

    #[test]
    fn a_different_ak_name_or_ek_fails_the_integrity_check() {
        let name = ak_name();
        let other_name = SoftAk::p256(4).public.name();
        let all = cases();
        for (label, ek, ek_priv) in &all {
            let cred = make_credential(ek, &name, b"secret", &mut rng(1)).unwrap();
            let e = activate(ek_priv, ek, &other_name, &cred).unwrap_err();
            assert!(e.contains("INTEGRITY"), "{label}: {e}");
            // Tampered blob.
            let mut bad = cred.clone();
            let n = bad.credential_blob.len();
            bad.credential_blob[n - 1] ^= 1;
            assert!(activate(ek_priv, ek, &name, &bad).is_err(), "{label}");
        }
        // RSA credential for EK 0 cannot be opened with EK 1's key.
        let cred = make_credential(&all[0].1, &name, b"s", &mut rng(1)).unwrap();
        assert!(activate(&all[1].2, &all[0].1, &name, &cred).is_err());
        // ECC: another P-256 private key derives another seed.
        let cred = make_credential(&all[2].1, &name, b"s", &mut rng(1)).unwrap();
        let e = activate(&EkPrivate::P256(p256_key(99)), &all[2].1, &name, &cred).unwrap_err();
        assert!(e.contains("INTEGRITY"), "{e}");
    }

    #[test]
    fn randomness_is_used() {
        let (_, ek, _) = cases().remove(2);
        let a = make_credential(&ek, &ak_name(), b"s", &mut rng(1)).unwrap();
        let b = make_credential(&ek, &ak_name(), b"s", &mut rng(2)).unwrap();
        assert_ne!(a.encrypted_secret, b.encrypted_secret);
        assert_ne!(a.credential_blob, b.credential_blob);
        let c = make_credential(&ek, &ak_name(), b"s", &mut rng(1)).unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn input_errors() {
        let all = cases();
        let rsa_ek = &all[0].1;
        let name = ak_name();
        let mut r = rng(0);
        assert_eq!(
            make_credential(rsa_ek, &name, &[0; 33], &mut r),
            Err(CredentialError::SecretSize { len: 33, max: 32 })
        );
        assert_eq!(
            make_credential(rsa_ek, &name, &[], &mut r),
            Err(CredentialError::SecretSize { len: 0, max: 32 })
        );
        // sha384 EK allows 48 bytes.
        assert!(make_credential(&all[1].1, &name, &[0; 48], &mut r).is_ok());
        for bad in [vec![], vec![0x00], vec![0x00, 0x0b, 1, 2], {
            let mut v = vec![0x00, 0x99];
            v.extend([0; 32]);
            v
        }] {
            assert!(
                matches!(
                    make_credential(rsa_ek, &bad, b"s", &mut r),
                    Err(CredentialError::BadAkName(_))
                ),
                "{bad:?}"
            );
        }
        // An AK (signing key) is not an EK.
        let e = make_credential(&SoftAk::p256(3).public, &name, b"s", &mut r).unwrap_err();
        assert!(matches!(e, CredentialError::NotAnEk(_)), "{e}");
        // Non-AES-CFB symmetric.
        let mut cbc = rsa_ek.clone();
        cbc.symmetric = Some(SymDef {
            algorithm: alg::AES,
            key_bits: 128,
            mode: alg::CBC,
        });
        assert!(matches!(
            make_credential(&cbc, &name, b"s", &mut r),
            Err(CredentialError::UnsupportedSymmetric(_))
        ));
        // SHA-1 nameAlg.
        let mut sha1 = rsa_ek.clone();
        sha1.name_alg = HashAlg::Sha1;
        assert_eq!(
            make_credential(&sha1, &name, b"s", &mut r),
            Err(CredentialError::UnsupportedNameAlg(HashAlg::Sha1))
        );
        // ECC point not on the curve.
        let mut off_curve = all[2].1.clone();
        if let PublicKey::Ecc { y, .. } = &mut off_curve.key {
            y[31] ^= 1;
        }
        let e = make_credential(&off_curve, &name, b"s", &mut r).unwrap_err();
        assert!(matches!(e, CredentialError::InvalidEkKey(_)), "{e}");
        assert!(e.to_string().contains("not on NIST P-256"), "{e}");
        // Even modulus RSA is rejected by the rsa crate, not a panic.
        let mut bad_rsa = rsa_ek.clone();
        if let PublicKey::Rsa { modulus, .. } = &mut bad_rsa.key {
            modulus.iter_mut().for_each(|b| *b = 0);
        }
        assert!(make_credential(&bad_rsa, &name, b"s", &mut r).is_err());
    }

    #[test]
    fn odd_ek_keys_give_errors_not_panics() {
        use rand::{Rng, RngCore};
        let name = ak_name();
        let all = cases();
        let mut r = rng(5);
        for round in 0..200 {
            let mut ek = all[round % 4].1.clone();
            match &mut ek.key {
                PublicKey::Rsa {
                    modulus, exponent, ..
                } => {
                    r.fill_bytes(modulus);
                    let zeros = r.gen_range(0..=modulus.len());
                    modulus.iter_mut().take(zeros).for_each(|b| *b = 0);
                    *exponent = [3, 65537, u32::MAX, 1, 0][round % 5];
                }
                PublicKey::Ecc { x, y, .. } => {
                    r.fill_bytes(x);
                    if round % 3 == 0 {
                        y.clear();
                    } else {
                        r.fill_bytes(y);
                    }
                    if round % 7 == 0 {
                        x.push(1);
                    }
                }
            }
            let _ = make_credential(&ek, &name, b"secret", &mut r);
        }
    }

    #[test]
    fn hmac_known_vectors() {
        // RFC 4231 test case 1, RFC 2202 test cases 1, 2 and 6.
        let key = [0x0bu8; 20];
        assert_eq!(
            hex::encode(hmac(HashAlg::Sha256, &key, &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac(HashAlg::Sha384, &key, &[b"Hi ", b"There"])),
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"
        );
        assert_eq!(
            hex::encode(hmac(HashAlg::Sha1, &key, &[b"Hi There"])),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex::encode(hmac(
                HashAlg::Sha1,
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex::encode(hmac(
                HashAlg::Sha1,
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "90d0dace1c1bdc957339307803160335bde6df2b"
        );
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            for klen in [0, 1, 64, 65, 128, 129, 200] {
                let k = vec![0x33u8; klen];
                assert_eq!(hmac(h, &k, &[b"ab", b"c"]), ref_hmac(h, &k, b"abc"));
            }
        }
    }

    #[test]
    fn kdf_known_vectors() {
        // Computed independently with Python's hmac/hashlib.
        let key: Vec<u8> = (0..32).collect();
        let mut name = vec![0x00, 0x0b];
        name.extend([0x42; 32]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                kdfa(HashAlg::Sha256, &key, b"STORAGE", &name, &[], 128),
                "b0dc6ad808dc0d615514a79436b6b90d",
            ),
            (
                kdfa(HashAlg::Sha256, &key, b"INTEGRITY", &[], &[], 256),
                "bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e",
            ),
            (
                kdfa(HashAlg::Sha384, &key, b"STORAGE", &name, &[], 256),
                "950b899f3bec4cc7258959b25e63f8a67ddaf7586ab4096685d064444377d555",
            ),
            (
                kdfa(HashAlg::Sha256, &key, b"XYZ", b"u", b"v", 600),
                "07822ff8cf5af72017eec607981e3d1256041f342971c5a66ae7349dcfde57c92f475b2c31a20e6bd1a1566c0e5a01c9bc7e0d77b53df8e01d6791a46f4c38d8b12f3e7fa8384e5fefca6e",
            ),
            (
                kdfa(HashAlg::Sha1, &key, b"ABC", &[], &[], 200),
                "ed2b9a0000e4c2ed5ead960b81688ab967d2fbd85bee826920",
            ),
            (
                kdfe(HashAlg::Sha256, &[7; 32], b"IDENTITY", &[1; 32], &[2; 32], 256),
                "4b91fa923cc2e699a33b2d6d53f2991387c50a5654f1c8807116309b42b063de",
            ),
            (
                kdfe(HashAlg::Sha384, &[7; 48], b"IDENTITY", &[1; 48], &[2; 48], 384),
                "320ab0fc497060cd5e8f5b74ca4867978b8bfb9c5a1c2903e99a31084b85321b25505db8857dc73517a7bb1fa6787820",
            ),
            (
                kdfe(HashAlg::Sha256, &[7; 32], b"IDENTITY", &[], &[], 520),
                "c9b2a8c4b2a6e49a815e8b7e34941b02050642fe056b02d3b7714af91cc42233d586cf79141c85c9093ab93cf6c045f3ff5945b7ce883c07aa3ab780b23425b14d",
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(hex::encode(got), want, "case {i}");
        }
    }

    #[test]
    fn kdf_matches_reference_implementation_and_label_handling() {
        let key = b"seed material";
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            for bits in [8u16, 128, 256, 264, 1000] {
                assert_eq!(
                    kdfa(h, key, b"STORAGE", b"u", b"vv", bits),
                    ref_kdfa(h, key, "STORAGE", b"u", b"vv", u32::from(bits))
                );
                assert_eq!(
                    kdfe(h, key, b"IDENTITY", b"u", b"vv", bits),
                    ref_kdfe(h, key, "IDENTITY", b"u", b"vv", u32::from(bits))
                );
            }
            // A label that already carries its NUL is not doubled.
            assert_eq!(
                kdfa(h, key, b"STORAGE\0", b"", b"", 128),
                kdfa(h, key, b"STORAGE", b"", b"", 128)
            );
        }
        assert!(kdfa(HashAlg::Sha256, key, b"L", b"", b"", 0).is_empty());
        // Non-byte-multiple sizes mask the leading bits.
        let v = kdfa(HashAlg::Sha256, key, b"L", b"", b"", 12);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0] & 0xf0, 0);
    }
}
