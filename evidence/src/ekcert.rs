//! EK certificate validation: chain to a configured TPM vendor root, EK
//! extended key usage, and binding of the certificate to the EK public.
//!
//! The chain is verified with rustls-webpki using
//! `KeyUsage::required_if_present(2.23.133.8.1)`: webpki applies the EKU
//! check to intermediates too, and vendor intermediates (e.g. swtpm's
//! "swtpm-localca") often have no EKU extension at all, so `required()`
//! would reject valid chains. The leaf's EKU is then checked explicitly with
//! x509-parser (absent is accepted: the TCG profile makes it optional; present
//! without tcg-kp-EKCertificate is rejected). Finally the certificate's key
//! must be exactly the EK public key: a valid certificate for another key
//! proves nothing.

use crate::tpm::{EccCurve, PublicKey, TpmPublic};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use std::time::Duration;
use thiserror::Error;
use x509_parser::certificate::X509Certificate;

/// DER contents of OID 2.23.133.8.1 (tcg-kp-EKCertificate).
pub const EK_CERTIFICATE_EKU: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];

/// DER contents of OID 1.2.840.10045.3.1.7 (prime256v1 / NIST P-256).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER contents of OID 1.3.132.0.34 (secp384r1 / NIST P-384).
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// Why an EK certificate (or a trust configuration) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EkCertError {
    /// The bytes are not a parsable X.509 certificate.
    #[error("EK certificate is not parsable: {0}")]
    Unparsable(String),
    /// PEM text could not be decoded.
    #[error("invalid PEM: {0}")]
    BadPem(String),
    /// A configured trust anchor is unusable.
    #[error("trust anchor #{index} is unusable: {message}")]
    BadTrustAnchor {
        /// Position in the list given to [`EkTrust::from_der_certs`].
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No valid chain to a configured root (unknown issuer, bad signature,
    /// CA constraints, ...).
    #[error("EK certificate chain is not trusted: {0}")]
    Chain(String),
    /// The certificate (or a CA certificate of its chain) has expired.
    #[error("EK certificate expired: {0}")]
    Expired(String),
    /// The certificate is not yet valid.
    #[error("EK certificate is not yet valid: {0}")]
    NotYetValid(String),
    /// The certificate is not an EK certificate (EKU without
    /// tcg-kp-EKCertificate, or a CA certificate).
    #[error("not an EK certificate: {0}")]
    NotEkCertificate(String),
    /// The certificate's key is not the EK public key.
    #[error("EK certificate is for a different key: {0}")]
    KeyMismatch(String),
    /// The certificate uses an algorithm this verifier does not support.
    #[error("unsupported algorithm in EK certificate: {0}")]
    UnsupportedAlgorithm(String),
}

/// Configured EK trust: every certificate given is a trust anchor, and the
/// ones that are not self-signed are also offered as intermediates (operators
/// drop vendor root and intermediate PEMs into one directory).
#[derive(Debug, Clone)]
pub struct EkTrust {
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl EkTrust {
    /// Builds the trust configuration from DER certificates. An empty list is
    /// allowed (every certificate will then fail with [`EkCertError::Chain`]).
    pub fn from_der_certs(certs: Vec<Vec<u8>>) -> Result<Self, EkCertError> {
        let mut anchors = Vec::with_capacity(certs.len());
        let mut intermediates = Vec::new();
        for (index, der) in certs.into_iter().enumerate() {
            let self_signed = match x509_parser::parse_x509_certificate(&der) {
                Ok((_, c)) => c.subject().as_raw() == c.issuer().as_raw(),
                Err(e) => {
                    return Err(EkCertError::BadTrustAnchor {
                        index,
                        message: format!("not a certificate: {e}"),
                    })
                }
            };
            let cert = CertificateDer::from(der);
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| EkCertError::BadTrustAnchor {
                    index,
                    message: format!("{e:?}"),
                })?
                .to_owned();
            anchors.push(anchor);
            if !self_signed {
                intermediates.push(cert);
            }
        }
        Ok(EkTrust {
            anchors,
            intermediates,
        })
    }

    /// Number of trust anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True if no trust anchor is configured.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// Facts about a verified EK certificate, for storage and display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EkCertInfo {
    /// Subject DN (RFC 4514-like; often empty or `CN=unknown` for EK certs).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// notAfter as Unix seconds (253402300799 for 9999-12-31T23:59:59Z).
    pub not_after_unix: i64,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint_sha256_hex: String,
}

/// Verifies an EK certificate: chain to `trust` (with the configured and
/// `extra_intermediates`) at `now_unix`, EK usage, and that its key is `ek`.
///
/// Bytes after the certificate's DER (NV indices are sometimes padded) are
/// ignored.
pub fn verify_ek_certificate(
    trust: &EkTrust,
    cert_der: &[u8],
    extra_intermediates: &[Vec<u8>],
    ek: &TpmPublic,
    now_unix: u64,
) -> Result<EkCertInfo, EkCertError> {
    let (rest, leaf) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| EkCertError::Unparsable(e.to_string()))?;
    let der = cert_der
        .get(..cert_der.len().saturating_sub(rest.len()))
        .unwrap_or(cert_der);

    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let validity = leaf.validity();
    let not_after = validity.not_after.timestamp();
    let not_before = validity.not_before.timestamp();
    if now > not_after {
        return Err(EkCertError::Expired(format!(
            "notAfter {} is before now ({now})",
            validity.not_after
        )));
    }
    if now < not_before {
        return Err(EkCertError::NotYetValid(format!(
            "notBefore {} is after now ({now})",
            validity.not_before
        )));
    }
    if leaf.is_ca() {
        return Err(EkCertError::NotEkCertificate(
            "it is a CA certificate (basicConstraints cA=TRUE)".into(),
        ));
    }

    verify_chain(trust, der, extra_intermediates, now_unix)?;
    check_leaf_eku(&leaf)?;
    check_key_matches(&leaf, ek)?;

    Ok(EkCertInfo {
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        serial_hex: hex::encode(leaf.raw_serial()),
        not_after_unix: not_after,
        fingerprint_sha256_hex: hex::encode(Sha256::digest(der)),
    })
}

fn verify_chain(
    trust: &EkTrust,
    der: &[u8],
    extra_intermediates: &[Vec<u8>],
    now_unix: u64,
) -> Result<(), EkCertError> {
    if trust.anchors.is_empty() {
        return Err(EkCertError::Chain(
            "no EK trust anchors (TPM vendor roots) are configured".into(),
        ));
    }
    let cert = CertificateDer::from(der);
    let ee = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| EkCertError::Unparsable(format!("rejected by webpki: {e:?}")))?;
    let mut intermediates: Vec<CertificateDer<'_>> = trust.intermediates.clone();
    intermediates.extend(
        extra_intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice())),
    );
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now_unix));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust.anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(EK_CERTIFICATE_EKU),
        None,
        None,
    )
    .map(|_| ())
    .map_err(map_webpki_error)
}

fn map_webpki_error(e: webpki::Error) -> EkCertError {
    use webpki::Error as W;
    match e {
        W::CertExpired { .. } => {
            EkCertError::Expired("a CA certificate of the chain has expired".to_string())
        }
        W::CertNotValidYet { .. } => {
            EkCertError::NotYetValid("a CA certificate of the chain is not yet valid".to_string())
        }
        W::UnknownIssuer => EkCertError::Chain(
            "issuer unknown: no path to a configured TPM vendor root".to_string(),
        ),
        W::InvalidSignatureForPublicKey => {
            EkCertError::Chain("a certificate signature does not verify".to_string())
        }
        W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            EkCertError::UnsupportedAlgorithm(format!("signature algorithm ({e:?})"))
        }
        W::RequiredEkuNotFoundContext(_) => EkCertError::NotEkCertificate(format!(
            "a certificate's extended key usage lacks tcg-kp-EKCertificate ({e:?})"
        )),
        W::CaUsedAsEndEntity => EkCertError::NotEkCertificate("it is a CA certificate".to_string()),
        other => EkCertError::Chain(format!("{other:?}")),
    }
}

fn check_leaf_eku(leaf: &X509Certificate<'_>) -> Result<(), EkCertError> {
    match leaf.extended_key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(eku)) => {
            if eku
                .value
                .other
                .iter()
                .any(|oid| oid.as_bytes() == EK_CERTIFICATE_EKU)
            {
                Ok(())
            } else {
                Err(EkCertError::NotEkCertificate(
                    "extended key usage does not include tcg-kp-EKCertificate (2.23.133.8.1)"
                        .into(),
                ))
            }
        }
        Err(e) => Err(EkCertError::Unparsable(format!(
            "extended key usage extension: {e}"
        ))),
    }
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v.get(first..).unwrap_or(&[])
}

fn check_key_matches(leaf: &X509Certificate<'_>, ek: &TpmPublic) -> Result<(), EkCertError> {
    use x509_parser::public_key::PublicKey as X509Key;
    let spki = leaf.public_key();
    let parsed = spki
        .parsed()
        .map_err(|e| EkCertError::Unparsable(format!("subject public key: {e}")))?;
    match (&parsed, &ek.key) {
        (
            X509Key::RSA(cert_key),
            PublicKey::Rsa {
                modulus, exponent, ..
            },
        ) => {
            if strip_zeros(cert_key.modulus) != strip_zeros(modulus) {
                return Err(EkCertError::KeyMismatch(format!(
                    "RSA modulus differs (certificate {} bits, EK {} bits)",
                    strip_zeros(cert_key.modulus).len() * 8,
                    strip_zeros(modulus).len() * 8
                )));
            }
            if strip_zeros(cert_key.exponent) != strip_zeros(&exponent.to_be_bytes()) {
                return Err(EkCertError::KeyMismatch(format!(
                    "RSA exponent differs (certificate 0x{}, EK {exponent})",
                    hex::encode(cert_key.exponent)
                )));
            }
            Ok(())
        }
        (X509Key::EC(point), PublicKey::Ecc { curve, x, y }) => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let cert_curve = match curve_oid.as_ref().map(|o| o.as_bytes()) {
                Some(OID_P256) => EccCurve::NistP256,
                Some(OID_P384) => EccCurve::NistP384,
                _ => {
                    return Err(EkCertError::UnsupportedAlgorithm(format!(
                        "EC curve {}",
                        curve_oid
                            .map(|o| o.to_id_string())
                            .unwrap_or_else(|| "(missing)".into())
                    )))
                }
            };
            if cert_curve != *curve {
                return Err(EkCertError::KeyMismatch(format!(
                    "certificate key is on {cert_curve}, the EK on {curve}"
                )));
            }
            let size = curve.coordinate_size();
            let mut want = vec![0x04];
            match (
                crate::quote::left_pad(x, size),
                crate::quote::left_pad(y, size),
            ) {
                (Some(px), Some(py)) => {
                    want.extend(px);
                    want.extend(py);
                }
                _ => return Err(EkCertError::KeyMismatch("EK point is malformed".into())),
            }
            if point.data() != want.as_slice() {
                return Err(EkCertError::KeyMismatch(format!("{curve} point differs")));
            }
            Ok(())
        }
        (X509Key::RSA(_), PublicKey::Ecc { .. }) | (X509Key::EC(_), PublicKey::Rsa { .. }) => {
            Err(EkCertError::KeyMismatch(format!(
                "certificate key type differs from the {} EK",
                ek.key
            )))
        }
        _ => Err(EkCertError::UnsupportedAlgorithm(format!(
            "subject public key algorithm {}",
            spki.algorithm.algorithm.to_id_string()
        ))),
    }
}

/// Decodes every `CERTIFICATE` block of PEM text to DER (other block types
/// are skipped). Text without any certificate is an error.
pub fn pem_to_der_certs(pem_text: &str) -> Result<Vec<Vec<u8>>, EkCertError> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem_text.as_bytes()) {
        let cert = item.map_err(|e| EkCertError::BadPem(e.to_string()))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err(EkCertError::BadPem(
            "no CERTIFICATE block found".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::tpm::{Scheme, SymDef};
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
    };
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::EncodePrivateKey;

    const NOW: u64 = 1_790_000_000; // 2026-09

    /// A subject public key without its private half (an EK).
    struct EkSpki {
        der: Vec<u8>,
        alg: &'static SignatureAlgorithm,
    }

    impl PublicKeyData for EkSpki {
        fn der_bytes(&self) -> &[u8] {
            &self.der
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            self.alg
        }
    }

    fn rsa_spki(i: usize) -> EkSpki {
        EkSpki {
            der: rsa_key(i)
                .to_public_key()
                .to_pkcs1_der()
                .unwrap()
                .as_bytes()
                .to_vec(),
            alg: &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn p384_spki(seed: u8) -> EkSpki {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        EkSpki {
            der: p384_key(seed)
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            alg: &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn rsa_ek(i: usize) -> TpmPublic {
        public(
            crate::tpm::HashAlg::Sha256,
            EK_ATTRS,
            &rsa_public_key(rsa_key(i)),
            Some(SymDef::aes_cfb(128)),
            Scheme::Null,
        )
    }

    fn p384_ek(seed: u8) -> TpmPublic {
        public(
            crate::tpm::HashAlg::Sha384,
            EK_ATTRS,
            &p384_public_key(&p384_key(seed)),
            Some(SymDef::aes_cfb(256)),
            Scheme::Null,
        )
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    struct Pki {
        root: CertifiedIssuer<'static, KeyPair>,
        intermediate: CertifiedIssuer<'static, KeyPair>,
    }

    /// Root (RSA, like TPM vendor roots) → intermediate (P-256, no EKU, like
    /// swtpm-localca).
    fn pki(root_name: &str) -> Pki {
        let root_pkcs8 = rsa_key(2).to_pkcs8_der().unwrap();
        let root_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(root_pkcs8.as_bytes()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let root = CertifiedIssuer::self_signed(ca_params(root_name), root_key).unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("Test EK Intermediate"),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        Pki { root, intermediate }
    }

    fn ek_leaf_params() -> CertificateParams {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "unknown");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
        p
    }

    fn leaf(pki: &Pki, params: CertificateParams, key: &EkSpki) -> Vec<u8> {
        params
            .signed_by(key, &pki.intermediate)
            .unwrap()
            .der()
            .to_vec()
    }

    fn trust_all(pki: &Pki) -> EkTrust {
        EkTrust::from_der_certs(vec![
            pki.root.der().to_vec(),
            pki.intermediate.der().to_vec(),
        ])
        .unwrap()
    }

    #[test]
    fn valid_chain_passes() {
        let pki = pki("Test TPM Root");
        let cert = leaf(&pki, ek_leaf_params(), &rsa_spki(0));
        let trust = trust_all(&pki);
        assert_eq!(trust.len(), 2);
        let info = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap();
        assert_eq!(info.subject, "CN=unknown");
        assert_eq!(info.issuer, "CN=Test EK Intermediate");
        assert_eq!(
            info.fingerprint_sha256_hex,
            hex::encode(Sha256::digest(&cert))
        );
        assert!(!info.serial_hex.is_empty());
        // rcgen's default notAfter is 4096-01-01T00:00:00Z.
        assert_eq!(info.not_after_unix, 67_090_118_400);
        // Root only as anchor, intermediate supplied by the agent.
        let root_only = EkTrust::from_der_certs(vec![pki.root.der().to_vec()]).unwrap();
        verify_ek_certificate(
            &root_only,
            &cert,
            &[pki.intermediate.der().to_vec()],
            &rsa_ek(0),
            NOW,
        )
        .unwrap();
        // Padding after the DER (fixed-size NV index) is ignored.
        let mut padded = cert.clone();
        padded.extend([0xff; 40]);
        let info2 = verify_ek_certificate(&trust, &padded, &[], &rsa_ek(0), NOW).unwrap();
        assert_eq!(info2, info);
    }

    #[test]
    fn ecc_p384_ek_certificate() {
        let pki = pki("Test TPM Root");
        let cert = leaf(&pki, ek_leaf_params(), &p384_spki(12));
        let trust = trust_all(&pki);
        verify_ek_certificate(&trust, &cert, &[], &p384_ek(12), NOW).unwrap();
        let e = verify_ek_certificate(&trust, &cert, &[], &p384_ek(13), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::KeyMismatch(_)), "{e}");
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::KeyMismatch(_)), "{e}");
        // P-256 EK with the same x/y lengths would be a curve mismatch.
        let p256_ek = public(
            crate::tpm::HashAlg::Sha256,
            EK_ATTRS,
            &p256_public_key(&p256_key(3)),
            Some(SymDef::aes_cfb(128)),
            Scheme::Null,
        );
        let e = verify_ek_certificate(&trust, &cert, &[], &p256_ek, NOW).unwrap_err();
        assert!(
            e.to_string().contains("NIST P-384, the EK on NIST P-256"),
            "{e}"
        );
    }

    #[test]
    fn missing_intermediate_or_wrong_root_fails() {
        let pki_a = pki("Test TPM Root");
        let pki_b = pki("Other Vendor Root");
        let cert = leaf(&pki_a, ek_leaf_params(), &rsa_spki(0));
        let root_only = EkTrust::from_der_certs(vec![pki_a.root.der().to_vec()]).unwrap();
        let e = verify_ek_certificate(&root_only, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::Chain(_)), "{e}");
        assert!(e.to_string().contains("issuer unknown"), "{e}");
        // Another vendor's root (even with our intermediate offered).
        let wrong = EkTrust::from_der_certs(vec![pki_b.root.der().to_vec()]).unwrap();
        let e = verify_ek_certificate(
            &wrong,
            &cert,
            &[pki_a.intermediate.der().to_vec()],
            &rsa_ek(0),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(e, EkCertError::Chain(_)), "{e}");
        // No anchors at all.
        let empty = EkTrust::from_der_certs(vec![]).unwrap();
        assert!(empty.is_empty());
        let e = verify_ek_certificate(&empty, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(e.to_string().contains("no EK trust anchors"), "{e}");
    }

    #[test]
    fn certificate_for_another_key_fails() {
        let pki = pki("Test TPM Root");
        let cert = leaf(&pki, ek_leaf_params(), &rsa_spki(0));
        let trust = trust_all(&pki);
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(1), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::KeyMismatch(_)), "{e}");
        assert!(e.to_string().contains("modulus"), "{e}");
        // Same modulus, different exponent.
        let mut ek = rsa_ek(0);
        if let PublicKey::Rsa { exponent, .. } = &mut ek.key {
            *exponent = 3;
        }
        let e = verify_ek_certificate(&trust, &cert, &[], &ek, NOW).unwrap_err();
        assert!(e.to_string().contains("exponent"), "{e}");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let pki = pki("Test TPM Root");
        let mut p = ek_leaf_params();
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = leaf(&pki, p, &rsa_spki(0));
        let trust = trust_all(&pki);
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::Expired(_)), "{e}");
        // Valid in 2000.
        verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), 960_000_000).unwrap();
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), 900_000_000).unwrap_err();
        assert!(matches!(e, EkCertError::NotYetValid(_)), "{e}");
        // Expired intermediate (leaf still valid), only as untrusted intermediate.
        let mut ip = ca_params("Expired Intermediate");
        ip.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired_int =
            CertifiedIssuer::signed_by(ip, KeyPair::generate().unwrap(), &pki.root).unwrap();
        let cert = ek_leaf_params()
            .signed_by(&rsa_spki(0), &expired_int)
            .unwrap()
            .der()
            .to_vec();
        let root_only = EkTrust::from_der_certs(vec![pki.root.der().to_vec()]).unwrap();
        let e = verify_ek_certificate(
            &root_only,
            &cert,
            &[expired_int.der().to_vec()],
            &rsa_ek(0),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(e, EkCertError::Expired(_)), "{e}");
    }

    #[test]
    fn eku_rules() {
        let pki = pki("Test TPM Root");
        let trust = trust_all(&pki);
        // No EKU on the leaf: accepted (optional in the TCG profile).
        let mut p = ek_leaf_params();
        p.extended_key_usages = vec![];
        let cert = leaf(&pki, p, &rsa_spki(0));
        verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap();
        // EKU without tcg-kp-EKCertificate: rejected.
        let mut p = ek_leaf_params();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf(&pki, p, &rsa_spki(0));
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::NotEkCertificate(_)), "{e}");
        // A CA certificate is not an EK certificate.
        let mut p = ek_leaf_params();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = leaf(&pki, p, &rsa_spki(0));
        let e = verify_ek_certificate(&trust, &cert, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::NotEkCertificate(_)), "{e}");
    }

    #[test]
    fn garbage_is_unparsable() {
        let pki = pki("Test TPM Root");
        let trust = trust_all(&pki);
        let cert = leaf(&pki, ek_leaf_params(), &rsa_spki(0));
        for bad in [
            vec![],
            vec![0x30],
            b"not a certificate".to_vec(),
            cert[..cert.len() / 2].to_vec(),
        ] {
            let e = verify_ek_certificate(&trust, &bad, &[], &rsa_ek(0), NOW).unwrap_err();
            assert!(matches!(e, EkCertError::Unparsable(_)), "{e}");
        }
        // A flipped bit in the signature: parsable, but the chain fails.
        let mut flipped = cert.clone();
        let n = flipped.len();
        flipped[n - 3] ^= 1;
        let e = verify_ek_certificate(&trust, &flipped, &[], &rsa_ek(0), NOW).unwrap_err();
        assert!(matches!(e, EkCertError::Chain(_)), "{e}");
        // Every bit flip: an error or (for unsigned-irrelevant bits) never a panic.
        for bit in (0..cert.len() * 8).step_by(3) {
            let mut b = cert.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify_ek_certificate(&trust, &b, &[], &rsa_ek(0), NOW).is_err(),
                "bit {bit}"
            );
        }
        // Garbage trust anchors.
        let e = EkTrust::from_der_certs(vec![pki.root.der().to_vec(), vec![1, 2, 3]]).unwrap_err();
        assert!(
            matches!(e, EkCertError::BadTrustAnchor { index: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn pem_decoding() {
        let pki = pki("Test TPM Root");
        let text = format!(
            "# vendor bundle\n{}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            pki.root.pem(),
            pki.intermediate.pem()
        );
        let certs = pem_to_der_certs(&text).unwrap();
        assert_eq!(
            certs,
            vec![pki.root.der().to_vec(), pki.intermediate.der().to_vec()]
        );
        assert!(matches!(
            pem_to_der_certs("nothing here"),
            Err(EkCertError::BadPem(_))
        ));
        assert!(matches!(
            pem_to_der_certs("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(EkCertError::BadPem(_))
        ));
    }
}
