//! Quote verification: signature, qualifying data, PCR selection, PCR digest,
//! and TPM clock monotonicity.
//!
//! [`verify_quote`] collects every problem as a [`Reason`] instead of stopping
//! at the first, and returns the PCR values only when all checks passed,
//! including the digest check that proves them.
//!
//! Signatures are verified with *ring* (through rustls-webpki's algorithm
//! objects, fast: ~20 µs RSA-2048, ~70 µs P-256), except for RSA-PSS with a
//! salt length other than the digest length and ECDSA with SHA-512, which
//! fall back to RustCrypto.

use crate::reason::{codes, Reason};
use crate::tpm::{
    parse_attest, parse_signature, Attest, ClockInfo, EccCurve, HashAlg, PublicKey, Scheme,
    TpmPublic, TpmSignature,
};
use rustls_pki_types::SignatureVerificationAlgorithm;
use std::collections::{BTreeMap, BTreeSet};

/// Everything needed to verify one quote.
#[derive(Debug, Clone, Copy)]
pub struct QuoteCheck<'a> {
    /// `TPMS_ATTEST` bytes as returned by TPM2_Quote (what was signed).
    pub attest: &'a [u8],
    /// `TPMT_SIGNATURE` bytes.
    pub signature: &'a [u8],
    /// The enrolled AK.
    pub ak: &'a TpmPublic,
    /// The enrolled EK, the AK's parent. When given, the quote's
    /// `qualifiedSigner` must be the AK's qualified name under it
    /// ([`TpmPublic::qualified_name_under_ek`], code
    /// `quote.signer_mismatch`). `None` skips that comparison: only for
    /// callers that do not know the EK (the signature still binds the AK).
    pub ek: Option<&'a TpmPublic>,
    /// The qualifying data the quote must carry
    /// ([`crate::binding::qualifying_data`] of our nonce and the report).
    pub expected_extra_data: &'a [u8],
    /// The sha256-bank PCR indices the server asked for.
    pub expected_pcrs: &'a [u8],
    /// PCR values as reported by the agent: (index, sha256 value).
    pub pcr_values: &'a [(u32, Vec<u8>)],
}

/// A quote that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The parsed attestation structure.
    pub attest: Attest,
    /// sha256 PCR values, proven by the signed pcrDigest.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
}

impl VerifiedQuote {
    /// The TPM's `firmwareVersion` as signed in the quote (vendor specific;
    /// a change between two quotes of one TPM means a firmware update).
    pub fn firmware_version(&self) -> u64 {
        self.attest.firmware_version
    }

    /// `clockInfo.safe` as signed in the quote: false if the TPM clock may
    /// have been reported before with a higher value (state lost since).
    pub fn clock_safe(&self) -> bool {
        self.attest.clock_info.safe
    }
}

/// Verifies a quote and collects EVERY reason it is not acceptable (does not
/// stop at the first): AK attributes, signature, quote structure,
/// qualifiedSigner (when the EK is given), extraData, PCR selection,
/// reported PCR values and the PCR digest.
pub fn verify_quote(check: &QuoteCheck) -> Result<VerifiedQuote, Vec<Reason>> {
    let mut reasons = Vec::new();

    if let Err(e) = check.ak.check_ak_attributes() {
        reasons.push(Reason::new(codes::AK_ATTRIBUTES, e));
    }

    // Signature: verifiable over the raw bytes even if they do not parse.
    let signature = match parse_signature(check.signature) {
        Ok(sig) => {
            if let Err(e) = verify_signature(check.ak, check.attest, &sig) {
                reasons.push(Reason::new(
                    codes::SIGNATURE_INVALID,
                    format!("quote signature does not verify with the enrolled AK: {e}"),
                ));
            }
            Some(sig)
        }
        Err(e) => {
            reasons.push(Reason::new(
                codes::SIGNATURE_MALFORMED,
                format!("quote signature (TPMT_SIGNATURE) is malformed: {e}"),
            ));
            None
        }
    };

    let attest = match parse_attest(check.attest) {
        Ok(a) => Some(a),
        Err(e) if e.is_not_a_quote() => {
            reasons.push(Reason::new(codes::QUOTE_NOT_A_QUOTE, e.to_string()));
            None
        }
        Err(e) => {
            reasons.push(Reason::new(
                codes::QUOTE_MALFORMED,
                format!("quote (TPMS_ATTEST) is malformed: {e}"),
            ));
            None
        }
    };

    let expected: BTreeSet<u8> = check.expected_pcrs.iter().copied().collect();
    let values = check_values(check.pcr_values, &expected, &mut reasons);

    let mut digest_verified = false;
    if let Some(a) = &attest {
        if let Some(ek) = check.ek {
            let expected = check.ak.qualified_name_under_ek(ek);
            if a.qualified_signer != expected {
                reasons.push(Reason::new(
                    codes::SIGNER_MISMATCH,
                    format!(
                        "quote qualifiedSigner is {} but the enrolled AK's qualified name under the enrolled EK is {}",
                        hex_or_empty(&a.qualified_signer),
                        hex::encode(&expected)
                    ),
                ));
            }
        }
        if a.extra_data != check.expected_extra_data {
            reasons.push(Reason::new(
                codes::NONCE_MISMATCH,
                format!(
                    "quote extraData is {} but {} was expected (nonce and report binding)",
                    hex_or_empty(&a.extra_data),
                    hex_or_empty(check.expected_extra_data)
                ),
            ));
        }

        // Banks with no PCR selected carry no information.
        let quoted: Vec<&(HashAlg, Vec<u8>)> = a
            .pcr_select
            .iter()
            .filter(|(_, idx)| !idx.is_empty())
            .collect();
        let expected_list: Vec<u8> = expected.iter().copied().collect();
        let selection_ok =
            matches!(quoted.as_slice(), [(HashAlg::Sha256, idx)] if *idx == expected_list);
        if !selection_ok {
            reasons.push(Reason::new(
                codes::SELECTION_MISMATCH,
                format!(
                    "quote selects {} but sha256:{} was asked for",
                    describe_selection(&a.pcr_select),
                    describe_indices(&expected_list)
                ),
            ));
        }

        // The digest covers the selection that was actually quoted. It can
        // be recomputed when only the sha256 bank is selected and a valid
        // value was reported for each quoted PCR.
        if let [(HashAlg::Sha256, indices)] = quoted.as_slice() {
            let in_order: Option<Vec<&[u8; 32]>> = indices.iter().map(|i| values.get(i)).collect();
            if let Some(in_order) = in_order {
                let hash = signature
                    .as_ref()
                    .map(TpmSignature::hash)
                    .or_else(|| HashAlg::from_digest_size(a.pcr_digest.len()))
                    .unwrap_or(HashAlg::Sha256);
                let parts: Vec<&[u8]> = in_order.iter().map(|v| v.as_slice()).collect();
                let computed = hash.digest_parts(&parts);
                if computed == a.pcr_digest {
                    digest_verified = true;
                } else {
                    reasons.push(Reason::new(
                        codes::PCR_DIGEST_MISMATCH,
                        format!(
                            "reported PCR values (sha256:{}) hash to {computed_hex} ({hash}) but the quote's pcrDigest is {}",
                            describe_indices(indices),
                            hex_or_empty(&a.pcr_digest),
                            computed_hex = hex::encode(&computed),
                        ),
                    ));
                }
            }
        }
    }

    match attest {
        Some(attest) if reasons.is_empty() && digest_verified => {
            let pcrs = values
                .into_iter()
                .filter(|(i, _)| expected.contains(i))
                .collect();
            Ok(VerifiedQuote { attest, pcrs })
        }
        _ => {
            if reasons.is_empty() {
                // Defensive: never accept PCR values whose digest was not checked.
                reasons.push(Reason::new(
                    codes::PCR_DIGEST_MISMATCH,
                    "the PCR digest could not be verified",
                ));
            }
            Err(reasons)
        }
    }
}

/// Validates the reported values against the expected selection; returns the
/// usable ones (valid index and length, first occurrence).
fn check_values(
    reported: &[(u32, Vec<u8>)],
    expected: &BTreeSet<u8>,
    reasons: &mut Vec<Reason>,
) -> BTreeMap<u8, [u8; 32]> {
    let mut values = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (index, value) in reported {
        let idx = match u8::try_from(*index) {
            Ok(i) if expected.contains(&i) => i,
            _ => {
                reasons.push(Reason::new(
                    codes::PCR_VALUES_INVALID,
                    format!("a value was reported for PCR {index}, which was not asked for"),
                ));
                continue;
            }
        };
        if !seen.insert(idx) {
            reasons.push(Reason::new(
                codes::PCR_VALUES_INVALID,
                format!("PCR {idx} was reported more than once"),
            ));
            continue;
        }
        match <[u8; 32]>::try_from(value.as_slice()) {
            Ok(v) => {
                values.insert(idx, v);
            }
            Err(_) => reasons.push(Reason::new(
                codes::PCR_VALUES_INVALID,
                format!(
                    "PCR {idx} value has {} bytes; a sha256 PCR has 32",
                    value.len()
                ),
            )),
        }
    }
    let missing: Vec<u8> = expected
        .iter()
        .copied()
        .filter(|i| !seen.contains(i))
        .collect();
    if !missing.is_empty() {
        reasons.push(Reason::new(
            codes::PCR_VALUES_INVALID,
            format!(
                "no value was reported for PCR {}",
                describe_indices(&missing)
            ),
        ));
    }
    values
}

fn hex_or_empty(b: &[u8]) -> String {
    if b.is_empty() {
        "(empty)".to_string()
    } else {
        hex::encode(b)
    }
}

fn describe_indices(idx: &[u8]) -> String {
    if idx.is_empty() {
        return "(none)".to_string();
    }
    idx.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_selection(sel: &[(HashAlg, Vec<u8>)]) -> String {
    let banks: Vec<String> = sel
        .iter()
        .filter(|(_, idx)| !idx.is_empty())
        .map(|(h, idx)| format!("{h}:{}", describe_indices(idx)))
        .collect();
    if banks.is_empty() {
        "no PCRs".to_string()
    } else {
        banks.join(" ")
    }
}

/// Verifies a TPM signature over `message` with the AK's public key.
///
/// Supported: RSASSA-PKCS1-v1_5 and RSA-PSS (any salt length; libtpms uses
/// the digest length) with SHA-256/384/512 and RSA keys of 2048 bits or more;
/// ECDSA on P-256 and P-384 with SHA-256/384/512 (r and s may be shorter than
/// the scalar size; high-S is accepted as TPMs do not normalise). SHA-1 is
/// refused. If the AK fixes a scheme, the signature must use it.
pub fn verify_signature(ak: &TpmPublic, message: &[u8], sig: &TpmSignature) -> Result<(), String> {
    if ak.scheme != Scheme::Null && ak.scheme != sig.scheme() {
        return Err(format!(
            "signature scheme {} does not match the AK's scheme {}",
            sig.scheme(),
            ak.scheme
        ));
    }
    if sig.hash() == HashAlg::Sha1 {
        return Err("SHA-1 signatures are not accepted".to_string());
    }
    match (&ak.key, sig) {
        (
            PublicKey::Rsa {
                modulus,
                exponent,
                bits,
            },
            TpmSignature::RsaSsa { hash, sig: s } | TpmSignature::RsaPss { hash, sig: s },
        ) => {
            if *bits < 2048 {
                return Err(format!(
                    "RSA-{bits} keys are not accepted (at least 2048 bits)"
                ));
            }
            if s.len() != modulus.len() {
                return Err(format!(
                    "RSA signature has {} bytes, the modulus {}",
                    s.len(),
                    modulus.len()
                ));
            }
            let pss = matches!(sig, TpmSignature::RsaPss { .. });
            verify_rsa(modulus, *exponent, *hash, pss, message, s)
        }
        (PublicKey::Ecc { curve, x, y }, TpmSignature::EcDsa { hash, r, s }) => {
            verify_ecdsa(*curve, x, y, *hash, message, r, s)
        }
        (key, sig) => Err(format!(
            "a {} signature cannot be made by the {key} AK",
            sig.scheme()
        )),
    }
}

/// RSA verification: *ring* first; for PSS, a salt-length-agnostic
/// EMSA-PSS check as fallback (TPMs differ in the salt length they use).
fn verify_rsa(
    modulus: &[u8],
    exponent: u32,
    hash: HashAlg,
    pss: bool,
    message: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    use webpki::ring as algs;
    let alg: &dyn SignatureVerificationAlgorithm = match (pss, hash) {
        (false, HashAlg::Sha256) => algs::RSA_PKCS1_2048_8192_SHA256,
        (false, HashAlg::Sha384) => algs::RSA_PKCS1_2048_8192_SHA384,
        (false, HashAlg::Sha512) => algs::RSA_PKCS1_2048_8192_SHA512,
        (true, HashAlg::Sha256) => algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        (true, HashAlg::Sha384) => algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        (true, HashAlg::Sha512) => algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        (_, HashAlg::Sha1) => return Err("SHA-1 signatures are not accepted".to_string()),
    };
    let der = rsa_public_key_der(modulus, exponent);
    if alg.verify_signature(&der, message, sig).is_ok() {
        return Ok(());
    }
    if pss && pss_verify_any_salt(modulus, exponent, hash, message, sig) {
        return Ok(());
    }
    Err(format!(
        "{}-{hash} signature does not verify",
        if pss { "RSAPSS" } else { "RSASSA" }
    ))
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) that recovers the salt length from the
/// encoded message instead of assuming one ("auto").
fn pss_verify_any_salt(
    modulus: &[u8],
    exponent: u32,
    hash: HashAlg,
    message: &[u8],
    sig: &[u8],
) -> bool {
    use rsa::traits::PublicKeyParts;
    use rsa::BigUint;
    let n = BigUint::from_bytes_be(modulus);
    let key = match rsa::RsaPublicKey::new_with_max_size(n, BigUint::from(exponent), 8192) {
        Ok(k) => k,
        Err(_) => return false,
    };
    let s = BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return false;
    }
    let m = s.modpow(key.e(), key.n());
    let mod_bits = key.n().bits();
    if mod_bits < 2 {
        return false;
    }
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let m_bytes = m.to_bytes_be();
    if m_bytes.len() > em_len {
        return false;
    }
    let mut em = vec![0u8; em_len - m_bytes.len()];
    em.extend_from_slice(&m_bytes);
    let h_len = hash.digest_size();
    if em_len < h_len + 2 || em.last() != Some(&0xbc) {
        return false;
    }
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = match rest.get(..h_len) {
        Some(h) => h,
        None => return false,
    };
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8 >> unused_bits;
    if masked_db.first().is_some_and(|b| b & !top_mask != 0) {
        return false;
    }
    let mask = mgf1(hash, h, db_len);
    let mut db: Vec<u8> = masked_db.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
    if let Some(first) = db.first_mut() {
        *first &= top_mask;
    }
    let Some(sep) = db.iter().position(|&b| b != 0) else {
        return false;
    };
    if db.get(sep) != Some(&0x01) {
        return false;
    }
    let salt = db.get(sep + 1..).unwrap_or(&[]);
    let m_hash = hash.digest(message);
    let h2 = hash.digest_parts(&[&[0u8; 8], &m_hash, salt]);
    h2 == h
}

/// MGF1 with the given hash (RFC 8017 B.2.1).
fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.digest_size());
    let mut counter: u32 = 0;
    while out.len() < len {
        out.extend_from_slice(&hash.digest_parts(&[seed, &counter.to_be_bytes()]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

fn verify_ecdsa(
    curve: EccCurve,
    x: &[u8],
    y: &[u8],
    hash: HashAlg,
    message: &[u8],
    r: &[u8],
    s: &[u8],
) -> Result<(), String> {
    let size = curve.coordinate_size();
    let r = left_pad(r, size).ok_or_else(|| format!("ECDSA r is longer than {size} bytes"))?;
    let s = left_pad(s, size).ok_or_else(|| format!("ECDSA s is longer than {size} bytes"))?;
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend(left_pad(x, size).ok_or("AK x coordinate too long")?);
    point.extend(left_pad(y, size).ok_or("AK y coordinate too long")?);
    use webpki::ring as algs;
    let ring_alg: Option<&dyn SignatureVerificationAlgorithm> = match (curve, hash) {
        (EccCurve::NistP256, HashAlg::Sha256) => Some(algs::ECDSA_P256_SHA256),
        (EccCurve::NistP256, HashAlg::Sha384) => Some(algs::ECDSA_P256_SHA384),
        (EccCurve::NistP384, HashAlg::Sha256) => Some(algs::ECDSA_P384_SHA256),
        (EccCurve::NistP384, HashAlg::Sha384) => Some(algs::ECDSA_P384_SHA384),
        _ => None,
    };
    let ok = match ring_alg {
        Some(alg) => alg
            .verify_signature(&point, message, &ecdsa_sig_der(&r, &s))
            .is_ok(),
        None => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let prehash = hash.digest(message);
            let mut rs = r.clone();
            rs.extend_from_slice(&s);
            match curve {
                EccCurve::NistP256 => {
                    match (
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point),
                        p256::ecdsa::Signature::from_slice(&rs),
                    ) {
                        (Ok(vk), Ok(sig)) => vk.verify_prehash(&prehash, &sig).is_ok(),
                        _ => false,
                    }
                }
                EccCurve::NistP384 => {
                    match (
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point),
                        p384::ecdsa::Signature::from_slice(&rs),
                    ) {
                        (Ok(vk), Ok(sig)) => vk.verify_prehash(&prehash, &sig).is_ok(),
                        _ => false,
                    }
                }
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("ECDSA-{hash} signature on {curve} does not verify"))
    }
}

/// Left-pads `v` (after stripping leading zeros) to `size` bytes; None if
/// it does not fit.
pub(crate) fn left_pad(v: &[u8], size: usize) -> Option<Vec<u8>> {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let trimmed = v.get(first..)?;
    if trimmed.len() > size {
        return None;
    }
    let mut out = vec![0u8; size - trimmed.len()];
    out.extend_from_slice(trimmed);
    Some(out)
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let sig = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | sig.len() as u8);
        out.extend_from_slice(sig);
    }
}

/// DER INTEGER of an unsigned big-endian number (minimal encoding).
fn der_uint(out: &mut Vec<u8>, v: &[u8]) {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let trimmed = v.get(first..).unwrap_or(&[]);
    let pad = trimmed.first().is_none_or(|&b| b & 0x80 != 0);
    out.push(0x02);
    der_length(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(0x30);
    der_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub(crate) fn rsa_public_key_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    let mut content = Vec::with_capacity(modulus.len() + 16);
    der_uint(&mut content, modulus);
    der_uint(&mut content, &exponent.to_be_bytes());
    der_sequence(&content)
}

/// DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
fn ecdsa_sig_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(r.len() + s.len() + 8);
    der_uint(&mut content, r);
    der_uint(&mut content, s);
    der_sequence(&content)
}

/// How the TPM clock moved between two attestations of the same TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// Same boot cycle (resetCount and restartCount unchanged), or no
    /// previous attestation to compare with.
    Same,
    /// The TPM was reset (host reboot): resetCount increased. Not a failure,
    /// but worth recording.
    Reboot {
        /// resetCount of the previous attestation.
        previous_reset_count: u32,
        /// resetCount now.
        reset_count: u32,
    },
    /// TPM Restart/Resume (e.g. hibernation) within the same reset cycle:
    /// restartCount increased.
    Restart,
}

/// Checks that the TPM clock state never goes backwards: resetCount and
/// restartCount are monotonic, and within one boot cycle the clock too. A
/// rollback means a replayed quote or a TPM state restored from a copy.
///
/// (resetCount/restartCount are only meaningful for keys of the endorsement
/// or platform hierarchy; the TPM obfuscates them for other keys. AKs under
/// the EK qualify.)
pub fn check_clock(
    previous: Option<&ClockInfo>,
    current: &ClockInfo,
) -> Result<ClockChange, Reason> {
    let Some(prev) = previous else {
        return Ok(ClockChange::Same);
    };
    let rollback = |what: String| {
        Err(Reason::new(
            codes::CLOCK_ROLLBACK,
            format!("TPM {what} (replayed quote or restored TPM state)"),
        ))
    };
    if current.reset_count < prev.reset_count {
        return rollback(format!(
            "resetCount went backwards from {} to {}",
            prev.reset_count, current.reset_count
        ));
    }
    if current.reset_count > prev.reset_count {
        return Ok(ClockChange::Reboot {
            previous_reset_count: prev.reset_count,
            reset_count: current.reset_count,
        });
    }
    if current.restart_count < prev.restart_count {
        return rollback(format!(
            "restartCount went backwards from {} to {} within resetCount {}",
            prev.restart_count, current.restart_count, current.reset_count
        ));
    }
    if current.restart_count > prev.restart_count {
        return Ok(ClockChange::Restart);
    }
    if current.clock < prev.clock {
        return rollback(format!(
            "clock went backwards from {} ms to {} ms within one boot (resetCount {}, restartCount {})",
            prev.clock, current.clock, current.reset_count, current.restart_count
        ));
    }
    Ok(ClockChange::Same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marshal;
    use crate::pcr::DEFAULT_PCRS;
    use crate::testutil::*;
    use crate::tpm::{attr, parse_public};
    use rand::{Rng, RngCore};

    const NONCE: &[u8] = &[0xa5; 32];

    struct Fixture {
        attest: Vec<u8>,
        sig: Vec<u8>,
        values: Vec<(u32, Vec<u8>)>,
    }

    fn fixture(ak: &SoftAk) -> Fixture {
        let pcrs = sample_pcrs();
        let attest = quote_bytes(ak, NONCE, &DEFAULT_PCRS, &pcrs);
        let sig = ak.sign(&attest);
        Fixture {
            attest,
            sig,
            values: reported(&DEFAULT_PCRS, &pcrs),
        }
    }

    fn run(ak: &TpmPublic, f: &Fixture) -> Result<VerifiedQuote, Vec<Reason>> {
        verify_quote(&QuoteCheck {
            attest: &f.attest,
            signature: &f.sig,
            ak,
            ek: Some(test_ek()),
            expected_extra_data: NONCE,
            expected_pcrs: &DEFAULT_PCRS,
            pcr_values: &f.values,
        })
    }

    fn codes_of(r: Result<VerifiedQuote, Vec<Reason>>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(reasons) => reasons.into_iter().map(|r| r.code).collect(),
        }
    }

    fn all_aks() -> Vec<(&'static str, SoftAk)> {
        vec![
            ("rsassa-sha256", SoftAk::rsassa(0)),
            ("rsapss-salt32", SoftAk::rsapss(0, 32)),
            ("rsapss-salt-max", SoftAk::rsapss(0, 256 - 32 - 2)),
            ("rsapss-salt0", SoftAk::rsapss(0, 0)),
            ("p256", SoftAk::p256(3)),
            ("p384", SoftAk::p384(4)),
            (
                "rsassa-sha384",
                SoftAk::rsassa(1).with_scheme(Scheme::RsaSsa(HashAlg::Sha384), HashAlg::Sha384),
            ),
            (
                "rsassa-sha512",
                SoftAk::rsassa(1).with_scheme(Scheme::RsaSsa(HashAlg::Sha512), HashAlg::Sha512),
            ),
            (
                "p256-sha384",
                SoftAk::p256(5).with_scheme(Scheme::EcDsa(HashAlg::Sha384), HashAlg::Sha384),
            ),
            (
                "p384-sha256",
                SoftAk::p384(6).with_scheme(Scheme::EcDsa(HashAlg::Sha256), HashAlg::Sha256),
            ),
            (
                "p384-sha512 (RustCrypto fallback)",
                SoftAk::p384(7).with_scheme(Scheme::EcDsa(HashAlg::Sha512), HashAlg::Sha512),
            ),
            (
                "p256-sha512 (RustCrypto fallback)",
                SoftAk::p256(8).with_scheme(Scheme::EcDsa(HashAlg::Sha512), HashAlg::Sha512),
            ),
            (
                "rsassa, AK scheme NULL",
                SoftAk::rsassa(2).with_scheme(Scheme::Null, HashAlg::Sha256),
            ),
        ]
    }

    #[test]
    fn valid_quotes_pass_for_every_key_type() {
        for (label, ak) in all_aks() {
            let f = fixture(&ak);
            let v = run(&ak.public, &f).unwrap_or_else(|e| panic!("{label}: {e:?}"));
            assert_eq!(v.pcrs, {
                let all = sample_pcrs();
                DEFAULT_PCRS
                    .iter()
                    .map(|i| (*i, all[i]))
                    .collect::<BTreeMap<_, _>>()
            });
            assert_eq!(v.attest.extra_data, NONCE);
            assert_eq!(v.attest.clock_info, clock());
        }
    }

    #[test]
    fn unordered_expected_pcrs_and_reported_values_are_fine() {
        let ak = SoftAk::p256(3);
        let mut f = fixture(&ak);
        f.values.reverse();
        let expected = [19, 18, 17, 7, 6, 5, 4, 3, 2, 1, 0, 0];
        let r = verify_quote(&QuoteCheck {
            attest: &f.attest,
            signature: &f.sig,
            ak: &ak.public,
            ek: Some(test_ek()),
            expected_extra_data: NONCE,
            expected_pcrs: &expected,
            pcr_values: &f.values,
        });
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn tampered_signature_byte() {
        for (label, ak) in all_aks() {
            let mut f = fixture(&ak);
            let n = f.sig.len();
            f.sig[n - 5] ^= 0x01;
            assert_eq!(
                codes_of(run(&ak.public, &f)),
                vec![codes::SIGNATURE_INVALID],
                "{label}"
            );
        }
    }

    #[test]
    fn wrong_ak() {
        let ak = SoftAk::rsassa(0);
        let other = SoftAk::rsassa(1);
        let f = fixture(&ak);
        let r = run(&other.public, &f);
        let reasons = r.clone().unwrap_err();
        assert_eq!(
            codes_of(r),
            vec![codes::SIGNATURE_INVALID, codes::SIGNER_MISMATCH]
        );
        assert!(reasons[0].message.contains("enrolled AK"), "{reasons:?}");
        // ECC AK signed, RSA AK enrolled: key type mismatch.
        let ecc = SoftAk::p256(3);
        let f = fixture(&ecc);
        let r = run(&ak.public, &f);
        assert_eq!(
            codes_of(r.clone()),
            vec![codes::SIGNATURE_INVALID, codes::SIGNER_MISMATCH]
        );
        assert!(r.unwrap_err()[0].message.contains("ECDSA"));
        // Another P-256 key.
        assert_eq!(
            codes_of(run(&SoftAk::p256(9).public, &f)),
            vec![codes::SIGNATURE_INVALID, codes::SIGNER_MISMATCH]
        );
    }

    /// A quote whose signature verifies with the enrolled AK but whose
    /// qualifiedSigner names another key: refused with its own code.
    #[test]
    fn attack_quote_with_another_qualified_signer() {
        let ak = SoftAk::rsassa(0);
        let pcrs = sample_pcrs();
        let digest = ak.hash.digest_parts(
            &DEFAULT_PCRS
                .iter()
                .map(|i| pcrs[i].as_slice())
                .collect::<Vec<_>>(),
        );
        for (label, signer) in [
            ("the AK's plain name", ak.public.name()),
            (
                "another AK under the same EK",
                SoftAk::rsassa(1).public.qualified_name_under_ek(test_ek()),
            ),
            (
                "the AK under another EK",
                ak.public.qualified_name(&[0x40, 0x00, 0x00, 0x01]),
            ),
            ("empty", vec![]),
        ] {
            let attest = marshal::encode_quote_attest(
                &signer,
                NONCE,
                &clock(),
                0x2019_1023_0016_3636,
                &[(HashAlg::Sha256, DEFAULT_PCRS.to_vec())],
                &digest,
            )
            .unwrap();
            let f = Fixture {
                sig: ak.sign(&attest),
                attest,
                values: reported(&DEFAULT_PCRS, &pcrs),
            };
            let r = run(&ak.public, &f);
            assert_eq!(codes_of(r.clone()), vec![codes::SIGNER_MISMATCH], "{label}");
            let msg = &r.unwrap_err()[0].message;
            assert!(
                msg.contains(&hex::encode(ak.public.qualified_name_under_ek(test_ek()))),
                "{label}: {msg}"
            );
        }
        // Without the EK the comparison is skipped (callers that lack it).
        let attest = marshal::encode_quote_attest(
            &ak.public.name(),
            NONCE,
            &clock(),
            7,
            &[(HashAlg::Sha256, DEFAULT_PCRS.to_vec())],
            &digest,
        )
        .unwrap();
        let sig = ak.sign(&attest);
        let values = reported(&DEFAULT_PCRS, &pcrs);
        let v = verify_quote(&QuoteCheck {
            attest: &attest,
            signature: &sig,
            ak: &ak.public,
            ek: None,
            expected_extra_data: NONCE,
            expected_pcrs: &DEFAULT_PCRS,
            pcr_values: &values,
        })
        .unwrap();
        assert_eq!(v.firmware_version(), 7);
    }

    #[test]
    fn firmware_version_and_clock_safe_are_exposed() {
        let ak = SoftAk::p256(3);
        let f = fixture(&ak);
        let v = run(&ak.public, &f).unwrap();
        assert_eq!(v.firmware_version(), 0x2019_1023_0016_3636);
        assert!(v.clock_safe());
        // An unsafe clock is reported as such (it is not a refusal).
        let pcrs = sample_pcrs();
        let digest = ak.hash.digest_parts(
            &DEFAULT_PCRS
                .iter()
                .map(|i| pcrs[i].as_slice())
                .collect::<Vec<_>>(),
        );
        let attest = marshal::encode_quote_attest(
            &ak.public.qualified_name_under_ek(test_ek()),
            NONCE,
            &ClockInfo {
                safe: false,
                ..clock()
            },
            0x0102_0304_0506_0708,
            &[(HashAlg::Sha256, DEFAULT_PCRS.to_vec())],
            &digest,
        )
        .unwrap();
        let f = Fixture {
            sig: ak.sign(&attest),
            attest,
            values: reported(&DEFAULT_PCRS, &pcrs),
        };
        let v = run(&ak.public, &f).unwrap();
        assert!(!v.clock_safe());
        assert_eq!(v.firmware_version(), 0x0102_0304_0506_0708);
    }

    #[test]
    fn wrong_nonce_signed_by_the_tpm() {
        let ak = SoftAk::rsassa(0);
        let pcrs = sample_pcrs();
        let attest = quote_bytes(&ak, &[0x11; 32], &DEFAULT_PCRS, &pcrs);
        let f = Fixture {
            sig: ak.sign(&attest),
            attest,
            values: reported(&DEFAULT_PCRS, &pcrs),
        };
        let r = run(&ak.public, &f);
        assert_eq!(codes_of(r.clone()), vec![codes::NONCE_MISMATCH]);
        let msg = &r.unwrap_err()[0].message;
        assert!(msg.contains(&hex::encode([0x11; 32])), "{msg}");
        assert!(msg.contains(&hex::encode(NONCE)), "{msg}");
    }

    #[test]
    fn extra_data_tampered_after_signing() {
        let ak = SoftAk::p256(3);
        let mut f = fixture(&ak);
        // extraData starts after magic(4) type(2) qualifiedSigner(2+34) size(2).
        f.attest[44] ^= 0xff;
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::SIGNATURE_INVALID, codes::NONCE_MISMATCH]
        );
    }

    #[test]
    fn selection_mismatch_signed_by_the_tpm() {
        let ak = SoftAk::rsassa(0);
        let pcrs = sample_pcrs();
        let subset = [0u8, 1, 2, 3, 4, 5, 6, 7, 17, 18];
        let attest = quote_bytes(&ak, NONCE, &subset, &pcrs);
        let f = Fixture {
            sig: ak.sign(&attest),
            attest,
            values: reported(&DEFAULT_PCRS, &pcrs),
        };
        let r = run(&ak.public, &f);
        assert_eq!(codes_of(r.clone()), vec![codes::SELECTION_MISMATCH]);
        let msg = &r.unwrap_err()[0].message;
        assert!(
            msg.contains("sha256:0,1,2,3,4,5,6,7,17,18 but sha256:0,1,2,3,4,5,6,7,17,18,19"),
            "{msg}"
        );
    }

    #[test]
    fn selection_tampered_after_signing() {
        let ak = SoftAk::p384(4);
        let mut f = fixture(&ak);
        // Real selection bytes from TPM-NOTES §4: 000b 03 ff000e.
        let pos = f
            .attest
            .windows(6)
            .position(|w| w == [0x00, 0x0b, 0x03, 0xff, 0x00, 0x0e])
            .unwrap();
        f.attest[pos + 5] = 0x06; // drop PCR 19
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![
                codes::SIGNATURE_INVALID,
                codes::SELECTION_MISMATCH,
                codes::PCR_DIGEST_MISMATCH
            ]
        );
    }

    #[test]
    fn extra_bank_with_pcrs_is_a_selection_mismatch_empty_bank_is_not() {
        let ak = SoftAk::rsassa(0);
        let pcrs = sample_pcrs();
        let values: Vec<&[u8]> = DEFAULT_PCRS.iter().map(|i| pcrs[i].as_slice()).collect();
        let digest = HashAlg::Sha256.digest_parts(&values);
        for (sha1_bank, ok) in [(vec![], true), (vec![0u8], false)] {
            let attest = marshal::encode_quote_attest(
                &ak.public.qualified_name_under_ek(test_ek()),
                NONCE,
                &clock(),
                1,
                &[
                    (HashAlg::Sha1, sha1_bank),
                    (HashAlg::Sha256, DEFAULT_PCRS.to_vec()),
                ],
                &digest,
            )
            .unwrap();
            let f = Fixture {
                sig: ak.sign(&attest),
                attest,
                values: reported(&DEFAULT_PCRS, &pcrs),
            };
            let got = codes_of(run(&ak.public, &f));
            if ok {
                assert!(got.is_empty(), "{got:?}");
            } else {
                assert_eq!(got, vec![codes::SELECTION_MISMATCH]);
            }
        }
    }

    #[test]
    fn reported_pcr_value_changed() {
        for (label, ak) in all_aks() {
            let mut f = fixture(&ak);
            f.values[8].1[0] ^= 1; // PCR 17
            let r = run(&ak.public, &f);
            assert_eq!(
                codes_of(r.clone()),
                vec![codes::PCR_DIGEST_MISMATCH],
                "{label}"
            );
        }
    }

    #[test]
    fn pcr_digest_changed_and_signed() {
        let ak = SoftAk::p256(3);
        let mut f = fixture(&ak);
        let n = f.attest.len();
        f.attest[n - 1] ^= 1;
        f.sig = ak.sign(&f.attest);
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::PCR_DIGEST_MISMATCH]
        );
    }

    #[test]
    fn reported_values_problems() {
        let ak = SoftAk::rsassa(0);
        let base = fixture(&ak);
        type Edit = fn(&mut Vec<(u32, Vec<u8>)>);
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "missing",
                |v| {
                    v.remove(3);
                },
                "no value was reported for PCR 3",
            ),
            (
                "extra",
                |v| v.push((9, vec![0; 32])),
                "PCR 9, which was not asked for",
            ),
            (
                "huge index",
                |v| v.push((1 << 20, vec![0; 32])),
                "PCR 1048576",
            ),
            ("short", |v| v[0].1.truncate(20), "PCR 0 value has 20 bytes"),
            (
                "duplicate",
                |v| {
                    let d = v[1].clone();
                    v.push(d)
                },
                "PCR 1 was reported more than once",
            ),
        ];
        for (label, edit, want) in cases {
            let mut f = Fixture {
                attest: base.attest.clone(),
                sig: base.sig.clone(),
                values: base.values.clone(),
            };
            edit(&mut f.values);
            let r = run(&ak.public, &f);
            let reasons = r.clone().unwrap_err();
            assert_eq!(codes_of(r), vec![codes::PCR_VALUES_INVALID], "{label}");
            assert!(reasons[0].message.contains(want), "{label}: {reasons:?}");
        }
    }

    #[test]
    fn several_defects_give_several_reasons() {
        let ak = SoftAk::rsassa(0);
        let pcrs = sample_pcrs();
        let attest = quote_bytes(&ak, b"stale nonce", &DEFAULT_PCRS, &pcrs);
        let mut sig = ak.sign(&attest);
        sig[10] ^= 0x80;
        let mut values = reported(&DEFAULT_PCRS, &pcrs);
        values[0].1[5] ^= 1;
        values.push((23, vec![0; 32]));
        let f = Fixture {
            attest,
            sig,
            values,
        };
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![
                codes::SIGNATURE_INVALID,
                codes::PCR_VALUES_INVALID,
                codes::NONCE_MISMATCH,
                codes::PCR_DIGEST_MISMATCH
            ]
        );
    }

    #[test]
    fn not_a_quote_and_malformed() {
        let ak = SoftAk::p256(3);
        let mut f = fixture(&ak);
        f.attest[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::SIGNATURE_INVALID, codes::QUOTE_NOT_A_QUOTE]
        );
        // Signed by the AK but not a quote (e.g. a certify structure).
        f.sig = ak.sign(&f.attest);
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::QUOTE_NOT_A_QUOTE]
        );
        let mut f = fixture(&ak);
        f.attest.push(0);
        f.sig = ak.sign(&f.attest);
        let r = run(&ak.public, &f);
        assert_eq!(codes_of(r.clone()), vec![codes::QUOTE_MALFORMED]);
        assert!(r.unwrap_err()[0].message.contains("trailing"));
        let mut f = fixture(&ak);
        f.sig.truncate(10);
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::SIGNATURE_MALFORMED]
        );
        let mut f = fixture(&ak);
        f.sig = vec![];
        f.attest = vec![];
        assert_eq!(
            codes_of(run(&ak.public, &f)),
            vec![codes::SIGNATURE_MALFORMED, codes::QUOTE_MALFORMED]
        );
    }

    #[test]
    fn unrestricted_ak_is_rejected_even_with_valid_signature() {
        let mut ak = SoftAk::p256(3);
        let f = fixture(&ak);
        let mut public = ak.public.clone();
        public.attributes &= !attr::RESTRICTED;
        ak.public = public;
        let r = run(&ak.public, &f);
        assert_eq!(codes_of(r.clone()), vec![codes::AK_ATTRIBUTES]);
        assert!(r.unwrap_err()[0].message.contains("restricted is not set"));
    }

    #[test]
    fn signature_scheme_must_match_the_ak() {
        let ak = SoftAk::rsassa(0);
        let pss = SoftAk::rsapss(0, 32); // same key, PSS
        let f = fixture(&pss);
        let r = run(&ak.public, &f);
        // (The quote names the PSS public area as its signer, not the enrolled one.)
        assert_eq!(
            codes_of(r.clone()),
            vec![codes::SIGNATURE_INVALID, codes::SIGNER_MISMATCH]
        );
        assert!(r.unwrap_err()[0]
            .message
            .contains("RSAPSS-sha256 does not match the AK's scheme RSASSA-sha256"));
        // A NULL-scheme AK accepts the PSS signature of that key (its own
        // quote: another public area is another qualifiedSigner).
        let null = SoftAk::rsapss(0, 32).with_scheme(Scheme::Null, HashAlg::Sha256);
        assert!(run(&null.public, &fixture(&null)).is_ok());
    }

    #[test]
    fn sha1_and_small_rsa_are_refused() {
        let ak = SoftAk::rsassa(0).with_scheme(Scheme::Null, HashAlg::Sha256);
        let sig = TpmSignature::RsaSsa {
            hash: HashAlg::Sha1,
            sig: vec![0; 256],
        };
        assert!(verify_signature(&ak.public, b"m", &sig)
            .unwrap_err()
            .contains("SHA-1"));
        let mut small = ak.public.clone();
        small.key = PublicKey::Rsa {
            modulus: vec![0xc1; 128],
            exponent: 65537,
            bits: 1024,
        };
        let sig = TpmSignature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: vec![0; 128],
        };
        assert!(verify_signature(&small, b"m", &sig)
            .unwrap_err()
            .contains("RSA-1024"));
        let sig = TpmSignature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: vec![0; 255],
        };
        assert!(verify_signature(&ak.public, b"m", &sig)
            .unwrap_err()
            .contains("255 bytes"));
    }

    #[test]
    fn ecdsa_high_s_and_short_scalars_are_accepted() {
        use p256::elliptic_curve::ops::Neg;
        let ak = SoftAk::p256(3);
        let msg = b"attest bytes";
        let TpmSignature::EcDsa { r, s, .. } = ak.sign_raw(msg) else {
            unreachable!()
        };
        let sig = p256::ecdsa::Signature::from_scalars(
            *p256::FieldBytes::from_slice(&r),
            *p256::FieldBytes::from_slice(&s),
        )
        .unwrap();
        let (sr, ss) = sig.split_scalars();
        let flipped =
            p256::ecdsa::Signature::from_scalars(sr.to_bytes(), ss.as_ref().neg().to_bytes())
                .unwrap();
        for sig in [sig, flipped] {
            let (r, s) = sig.split_bytes();
            let t = TpmSignature::EcDsa {
                hash: HashAlg::Sha256,
                r: r.to_vec(),
                s: s.to_vec(),
            };
            verify_signature(&ak.public, msg, &t).unwrap();
        }
        // Leading zero bytes stripped (some TPMs) or extra zero padding.
        let t = TpmSignature::EcDsa {
            hash: HashAlg::Sha256,
            r: [vec![0, 0], r.clone()].concat(),
            s: s.clone(),
        };
        verify_signature(&ak.public, msg, &t).unwrap();
        // r too long.
        let t = TpmSignature::EcDsa {
            hash: HashAlg::Sha256,
            r: [vec![1], r.clone()].concat(),
            s: s.clone(),
        };
        assert!(verify_signature(&ak.public, msg, &t)
            .unwrap_err()
            .contains("longer"));
        // Zero r.
        let t = TpmSignature::EcDsa {
            hash: HashAlg::Sha256,
            r: vec![],
            s,
        };
        assert!(verify_signature(&ak.public, msg, &t).is_err());
    }

    #[test]
    fn short_scalar_signatures_verify() {
        // Find signatures whose r or s has a leading zero byte and strip it.
        let ak = SoftAk::p256(3);
        let mut found = 0;
        for i in 0u32..2000 {
            let msg = i.to_be_bytes();
            let TpmSignature::EcDsa { r, s, .. } = ak.sign_raw(&msg) else {
                unreachable!()
            };
            if r[0] == 0 || s[0] == 0 {
                let t = TpmSignature::EcDsa {
                    hash: HashAlg::Sha256,
                    r: r[usize::from(r[0] == 0)..].to_vec(),
                    s: s[usize::from(s[0] == 0)..].to_vec(),
                };
                verify_signature(&ak.public, &msg, &t).unwrap();
                found += 1;
                if found == 3 {
                    break;
                }
            }
        }
        assert!(found > 0);
    }

    #[test]
    fn rsa_der_matches_pkcs1_encoder() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        for i in 0..3 {
            let key = rsa_key(i).to_public_key();
            let PublicKey::Rsa {
                modulus, exponent, ..
            } = rsa_public_key(rsa_key(i))
            else {
                unreachable!()
            };
            assert_eq!(
                rsa_public_key_der(&modulus, exponent),
                key.to_pkcs1_der().unwrap().as_bytes()
            );
        }
        // Small values: zero, high bit, long-form length.
        let mut v = Vec::new();
        der_uint(&mut v, &[]);
        assert_eq!(v, [0x02, 0x01, 0x00]);
        let mut v = Vec::new();
        der_uint(&mut v, &[0, 0, 0x80]);
        assert_eq!(v, [0x02, 0x02, 0x00, 0x80]);
        let mut v = Vec::new();
        der_length(&mut v, 300);
        assert_eq!(v, [0x82, 0x01, 0x2c]);
    }

    #[test]
    fn pss_any_salt_rejects_wrong_message() {
        let ak = SoftAk::rsapss(0, 100);
        let PublicKey::Rsa {
            modulus, exponent, ..
        } = &ak.public.key
        else {
            unreachable!()
        };
        let TpmSignature::RsaPss { sig, .. } = ak.sign_raw(b"m1") else {
            unreachable!()
        };
        assert!(pss_verify_any_salt(
            modulus,
            *exponent,
            HashAlg::Sha256,
            b"m1",
            &sig
        ));
        assert!(!pss_verify_any_salt(
            modulus,
            *exponent,
            HashAlg::Sha256,
            b"m2",
            &sig
        ));
        assert!(!pss_verify_any_salt(
            modulus,
            *exponent,
            HashAlg::Sha384,
            b"m1",
            &sig
        ));
        assert!(!pss_verify_any_salt(
            modulus,
            *exponent,
            HashAlg::Sha256,
            b"m1",
            &[0xff; 256]
        ));
        assert!(!pss_verify_any_salt(
            modulus,
            *exponent,
            HashAlg::Sha256,
            b"m1",
            &[]
        ));
        assert!(!pss_verify_any_salt(
            &[],
            *exponent,
            HashAlg::Sha256,
            b"m1",
            &sig
        ));
    }

    #[test]
    fn every_prefix_and_random_input_is_an_error_not_a_panic() {
        let ak = SoftAk::p256(3);
        let f = fixture(&ak);
        let rsa = SoftAk::rsassa(0);
        let rf = fixture(&rsa);
        for bytes in [&f.attest, &rf.attest] {
            for n in 0..bytes.len() {
                assert!(crate::tpm::parse_attest(&bytes[..n]).is_err(), "prefix {n}");
            }
        }
        for bytes in [&f.sig, &rf.sig] {
            for n in 0..bytes.len() {
                assert!(
                    crate::tpm::parse_signature(&bytes[..n]).is_err(),
                    "prefix {n}"
                );
            }
        }
        for public in [&ak.public.raw, &rsa.public.raw] {
            for n in 0..public.len() {
                assert!(parse_public(&public[..n]).is_err(), "prefix {n}");
                let mut b2 = (n as u16).to_be_bytes().to_vec();
                b2.extend_from_slice(&public[..n]);
                assert!(crate::tpm::parse_public_2b(&b2).is_err(), "2b prefix {n}");
            }
        }
        // Truncated quotes through the whole verifier.
        for n in (0..f.attest.len()).step_by(7) {
            let g = Fixture {
                attest: f.attest[..n].to_vec(),
                sig: f.sig.clone(),
                values: f.values.clone(),
            };
            assert!(run(&ak.public, &g).is_err());
        }
        // Random bytes and single-bit flips.
        let mut r = rng(42);
        for _ in 0..20_000 {
            let len = r.gen_range(0..200);
            let mut buf = vec![0u8; len];
            r.fill_bytes(&mut buf);
            let _ = crate::tpm::parse_attest(&buf);
            let _ = crate::tpm::parse_signature(&buf);
            let _ = parse_public(&buf);
            let _ = crate::tpm::parse_public_2b(&buf);
        }
        for source in [&f.attest, &f.sig, &ak.public.raw, &rf.sig, &rsa.public.raw] {
            for bit in 0..source.len() * 8 {
                let mut b = source.to_vec();
                b[bit / 8] ^= 1 << (bit % 8);
                let _ = crate::tpm::parse_attest(&b);
                let _ = crate::tpm::parse_signature(&b);
                if let Ok(p) = parse_public(&b) {
                    // A mutated key must never verify the original quote
                    // (unless the mutation hit a non-key field).
                    let _ = verify_signature(&p, &f.attest, &ak.sign_raw(&f.attest));
                }
            }
        }
        // Random signatures of every kind through verify_signature.
        for _ in 0..300 {
            let mut s = vec![0u8; r.gen_range(0..300)];
            r.fill_bytes(&mut s);
            let mut t = vec![0u8; r.gen_range(0..60)];
            r.fill_bytes(&mut t);
            for sig in [
                TpmSignature::RsaSsa {
                    hash: HashAlg::Sha256,
                    sig: s.clone(),
                },
                TpmSignature::RsaPss {
                    hash: HashAlg::Sha256,
                    sig: s.clone(),
                },
                TpmSignature::EcDsa {
                    hash: HashAlg::Sha512,
                    r: t.clone(),
                    s: s.clone(),
                },
                TpmSignature::EcDsa {
                    hash: HashAlg::Sha256,
                    r: t.clone(),
                    s: t.clone(),
                },
            ] {
                let _ = verify_signature(&ak.public, &f.attest, &sig);
                let _ = verify_signature(&rsa.public.clone(), &f.attest, &sig);
                let null = rsa.public.clone();
                let _ = verify_signature(
                    &TpmPublic {
                        scheme: Scheme::Null,
                        ..null
                    },
                    &f.attest,
                    &sig,
                );
            }
        }
    }

    #[test]
    fn clock_monotonicity() {
        let c = |clock, reset_count, restart_count| ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe: true,
        };
        let prev = c(1000, 5, 2);
        assert_eq!(check_clock(None, &prev), Ok(ClockChange::Same));
        assert_eq!(
            check_clock(Some(&prev), &c(1000, 5, 2)),
            Ok(ClockChange::Same)
        );
        assert_eq!(
            check_clock(Some(&prev), &c(2000, 5, 2)),
            Ok(ClockChange::Same)
        );
        assert_eq!(
            check_clock(Some(&prev), &c(3000, 5, 3)),
            Ok(ClockChange::Restart)
        );
        assert_eq!(
            check_clock(Some(&prev), &c(10, 6, 0)),
            Ok(ClockChange::Reboot {
                previous_reset_count: 5,
                reset_count: 6
            })
        );
        for (cur, want) in [
            (c(5000, 4, 9), "resetCount went backwards from 5 to 4"),
            (c(5000, 5, 1), "restartCount went backwards from 2 to 1"),
            (c(999, 5, 2), "clock went backwards from 1000 ms to 999 ms"),
        ] {
            let e = check_clock(Some(&prev), &cur).unwrap_err();
            assert_eq!(e.code, codes::CLOCK_ROLLBACK);
            assert!(e.message.contains(want), "{}", e.message);
        }
    }
}
