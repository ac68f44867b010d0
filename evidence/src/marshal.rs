//! Encoders for the TPM structures that [`crate::tpm`] parses.
//!
//! These produce byte-exact `TPMT_PUBLIC`, `TPMS_ATTEST` (quote) and
//! `TPMT_SIGNATURE` encodings. They exist for tests and for simulated TPMs
//! (the load generator signs TPM-format quotes in software); a real agent
//! sends what tss-esapi marshals.

use crate::tpm::{
    alg, indices_to_bitmap, ClockInfo, HashAlg, PublicKey, Scheme, SymDef, TpmSignature,
    TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE,
};
use crate::wire::WireError;

fn put_tpm2b(out: &mut Vec<u8>, field: &'static str, data: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(data.len()).map_err(|_| WireError::Invalid {
        field,
        offset: out.len(),
        reason: format!("{} bytes do not fit a TPM2B", data.len()),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

fn put_scheme(out: &mut Vec<u8>, scheme: &Scheme) {
    out.extend_from_slice(&scheme.alg_id().to_be_bytes());
    if let Some(h) = scheme.hash() {
        out.extend_from_slice(&h.alg_id().to_be_bytes());
    }
    if let Scheme::EcDaa { count, .. } = scheme {
        out.extend_from_slice(&count.to_be_bytes());
    }
}

/// Encodes a `TPMT_PUBLIC` for an RSA or ECC key (ECC keys get a NULL KDF).
/// The RSA exponent 65537 is encoded as the TPM default 0, like a TPM does.
pub fn encode_public(
    name_alg: HashAlg,
    attributes: u32,
    auth_policy: &[u8],
    key: &PublicKey,
    symmetric: Option<&SymDef>,
    scheme: &Scheme,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(64 + 512);
    let ty = match key {
        PublicKey::Rsa { .. } => alg::RSA,
        PublicKey::Ecc { .. } => alg::ECC,
    };
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&name_alg.alg_id().to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    put_tpm2b(&mut out, "authPolicy", auth_policy)?;
    match symmetric {
        None => out.extend_from_slice(&alg::NULL.to_be_bytes()),
        Some(s) => {
            out.extend_from_slice(&s.algorithm.to_be_bytes());
            out.extend_from_slice(&s.key_bits.to_be_bytes());
            out.extend_from_slice(&s.mode.to_be_bytes());
        }
    }
    put_scheme(&mut out, scheme);
    match key {
        PublicKey::Rsa {
            modulus,
            exponent,
            bits,
        } => {
            out.extend_from_slice(&bits.to_be_bytes());
            let e = if *exponent == 65537 { 0 } else { *exponent };
            out.extend_from_slice(&e.to_be_bytes());
            put_tpm2b(&mut out, "unique.rsa", modulus)?;
        }
        PublicKey::Ecc { curve, x, y } => {
            out.extend_from_slice(&curve.curve_id().to_be_bytes());
            out.extend_from_slice(&alg::NULL.to_be_bytes());
            put_tpm2b(&mut out, "unique.ecc.x", x)?;
            put_tpm2b(&mut out, "unique.ecc.y", y)?;
        }
    }
    Ok(out)
}

/// Encodes a `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`. Each bank's
/// bitmap is at least 3 bytes (24 PCRs), as PC-Client TPMs produce.
pub fn encode_quote_attest(
    qualified_signer: &[u8],
    extra_data: &[u8],
    clock_info: &ClockInfo,
    firmware_version: u64,
    pcr_select: &[(HashAlg, Vec<u8>)],
    pcr_digest: &[u8],
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
    out.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
    put_tpm2b(&mut out, "qualifiedSigner", qualified_signer)?;
    put_tpm2b(&mut out, "extraData", extra_data)?;
    out.extend_from_slice(&clock_info.clock.to_be_bytes());
    out.extend_from_slice(&clock_info.reset_count.to_be_bytes());
    out.extend_from_slice(&clock_info.restart_count.to_be_bytes());
    out.push(u8::from(clock_info.safe));
    out.extend_from_slice(&firmware_version.to_be_bytes());
    let count = u32::try_from(pcr_select.len()).map_err(|_| WireError::Invalid {
        field: "pcrSelect",
        offset: out.len(),
        reason: "too many banks".into(),
    })?;
    out.extend_from_slice(&count.to_be_bytes());
    for (hash, indices) in pcr_select {
        out.extend_from_slice(&hash.alg_id().to_be_bytes());
        let bitmap = indices_to_bitmap(indices, 3);
        // At most 32 bytes (indices are u8).
        out.push(bitmap.len() as u8);
        out.extend_from_slice(&bitmap);
    }
    put_tpm2b(&mut out, "pcrDigest", pcr_digest)?;
    Ok(out)
}

/// Encodes a `TPMT_SIGNATURE`.
pub fn encode_signature(sig: &TpmSignature) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(8 + 512);
    out.extend_from_slice(&sig.alg_id().to_be_bytes());
    out.extend_from_slice(&sig.hash().alg_id().to_be_bytes());
    match sig {
        TpmSignature::RsaSsa { sig, .. } | TpmSignature::RsaPss { sig, .. } => {
            put_tpm2b(&mut out, "signature.sig", sig)?;
        }
        TpmSignature::EcDsa { r, s, .. } => {
            put_tpm2b(&mut out, "signature.signatureR", r)?;
            put_tpm2b(&mut out, "signature.signatureS", s)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_buffers_are_errors_not_truncation() {
        let big = vec![0u8; 70_000];
        let e = encode_signature(&TpmSignature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: big.clone(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        let clock = ClockInfo {
            clock: 0,
            reset_count: 0,
            restart_count: 0,
            safe: true,
        };
        assert!(encode_quote_attest(&big, b"", &clock, 0, &[], &[]).is_err());
    }

    #[test]
    fn exponent_is_encoded_as_default() {
        let key = PublicKey::Rsa {
            modulus: vec![0x80; 128],
            exponent: 65537,
            bits: 1024,
        };
        let b = encode_public(HashAlg::Sha256, 0, &[], &key, None, &Scheme::Null).unwrap();
        // type, nameAlg, attrs, policy size, sym NULL, scheme NULL, keyBits, exponent
        assert_eq!(&b[16..20], &[0, 0, 0, 0]);
        assert_eq!(crate::tpm::parse_public(&b).unwrap().key, key);
    }
}
