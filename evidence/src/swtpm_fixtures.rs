//! Tests against real TPM bytes captured from swtpm (see
//! `testdata/swtpm/README.md`): an independent implementation of every
//! structure this crate parses, signs or certifies.

use crate::ekcert::{pem_to_der_certs, verify_ek_certificate, EkCertError, EkTrust};
use crate::pcr::{drtm_hash_start, DEFAULT_PCRS};
use crate::quote::{verify_quote, QuoteCheck};
use crate::reason::codes;
use crate::tpm::{parse_attest, parse_public_2b, EccCurve, HashAlg, PublicKey, Scheme, SymDef};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/swtpm/",
            $name
        ))
        .as_slice()
    };
}

const NONCE: [u8; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32,
];
/// After the swtpm EK certificates' notBefore (2026-11-22).
const NOW: u64 = 1_800_000_000;

fn values() -> Vec<(u32, Vec<u8>)> {
    DEFAULT_PCRS
        .iter()
        .zip(fixture!("pcrs.bin").chunks_exact(32))
        .map(|(i, v)| (u32::from(*i), v.to_vec()))
        .collect()
}

#[test]
fn real_pcr_values_match_the_drtm_formula() {
    let v = values();
    assert_eq!(v.len(), 11);
    assert_eq!(v[8], (17, drtm_hash_start(b"hello").to_vec()));
    for (i, value) in &v {
        if *i != 17 {
            assert_eq!(value, &vec![0u8; 32], "PCR {i}");
        }
    }
}

#[test]
fn real_aks_parse_and_have_tpm_names() {
    for (pub_bytes, name, scheme) in [
        (
            fixture!("ak_rsa.pub"),
            Some(fixture!("ak_rsa.name")),
            Scheme::RsaSsa(HashAlg::Sha256),
        ),
        (
            fixture!("ak_ecc.pub"),
            Some(fixture!("ak_ecc.name")),
            Scheme::EcDsa(HashAlg::Sha256),
        ),
        (
            fixture!("ak_pss.pub"),
            None,
            Scheme::RsaPss(HashAlg::Sha256),
        ),
    ] {
        let ak = parse_public_2b(pub_bytes).unwrap();
        ak.check_ak_attributes().unwrap();
        assert_eq!(ak.scheme, scheme);
        assert_eq!(ak.attributes, 0x0005_0072);
        if let Some(name) = name {
            assert_eq!(ak.name(), name, "name computed like the TPM");
        }
        // Our marshaller reproduces the TPM's bytes.
        assert_eq!(
            crate::marshal::encode_public(
                ak.name_alg,
                ak.attributes,
                &ak.auth_policy,
                &ak.key,
                ak.symmetric.as_ref(),
                &ak.scheme
            )
            .unwrap(),
            ak.raw
        );
    }
}

#[test]
fn real_quotes_verify() {
    for (ak, attest, sig) in [
        (
            fixture!("ak_rsa.pub"),
            fixture!("quote_rsa.attest"),
            fixture!("quote_rsa.sig"),
        ),
        (
            fixture!("ak_ecc.pub"),
            fixture!("quote_ecc.attest"),
            fixture!("quote_ecc.sig"),
        ),
        (
            fixture!("ak_pss.pub"),
            fixture!("quote_pss.attest"),
            fixture!("quote_pss.sig"),
        ),
    ] {
        let ak = parse_public_2b(ak).unwrap();
        let ek = parse_public_2b(fixture!("ek_rsa.pub")).unwrap();
        let values = values();
        let check = QuoteCheck {
            attest,
            signature: sig,
            ak: &ak,
            ek: Some(&ek),
            expected_extra_data: &NONCE,
            expected_pcrs: &DEFAULT_PCRS,
            pcr_values: &values,
        };
        let v = verify_quote(&check).unwrap_or_else(|e| panic!("{} AK: {e:?}", ak.key));
        assert_eq!(v.pcrs[&17], drtm_hash_start(b"hello"));
        assert_eq!(v.firmware_version(), 0x2019_1023_0016_3636);
        assert!(v.clock_safe());
        // qualifiedSigner is the AK's qualified name under the EK it was made under.
        assert_eq!(v.attest.qualified_signer, ak.qualified_name_under_ek(&ek));
        // Tampering with a reported value is caught by the digest.
        let mut bad = values.clone();
        bad[0].1[0] = 1;
        let e = verify_quote(&QuoteCheck {
            pcr_values: &bad,
            ..check
        })
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].code, codes::PCR_DIGEST_MISMATCH);
        // A different nonce is caught.
        let e = verify_quote(&QuoteCheck {
            expected_extra_data: &[0; 32],
            ..check
        })
        .unwrap_err();
        assert_eq!(e[0].code, codes::NONCE_MISMATCH);
    }
    // Cross-AK: the RSA quote does not verify with the PSS AK (another key).
    let pss = parse_public_2b(fixture!("ak_pss.pub")).unwrap();
    let values = values();
    let e = verify_quote(&QuoteCheck {
        attest: fixture!("quote_rsa.attest"),
        signature: fixture!("quote_rsa.sig"),
        ak: &pss,
        ek: None,
        expected_extra_data: &NONCE,
        expected_pcrs: &DEFAULT_PCRS,
        pcr_values: &values,
    })
    .unwrap_err();
    assert_eq!(e[0].code, codes::SIGNATURE_INVALID);
}

/// A real quote, correctly signed by the enrolled AK, checked against an
/// enrolment that names another EK: the TPM's qualifiedSigner shows the AK
/// lives under a different parent.
#[test]
fn attack_real_quote_from_an_ak_under_another_ek() {
    let ak = parse_public_2b(fixture!("ak_rsa.pub")).unwrap();
    let other_ek = parse_public_2b(fixture!("ek_p256.pub")).unwrap();
    let values = values();
    let e = verify_quote(&QuoteCheck {
        attest: fixture!("quote_rsa.attest"),
        signature: fixture!("quote_rsa.sig"),
        ak: &ak,
        ek: Some(&other_ek),
        expected_extra_data: &NONCE,
        expected_pcrs: &DEFAULT_PCRS,
        pcr_values: &values,
    })
    .unwrap_err();
    let codes: Vec<&str> = e.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, vec![codes::SIGNER_MISMATCH]);
    assert!(
        e[0].message.starts_with(
            "quote qualifiedSigner is 000baf5d1bdd1eb5ee08c16f0bbe486da0d7066243d39ec4d03854fa1c7ef4c8f4dd"
        ),
        "{e:?}"
    );
}

#[test]
fn real_quote_layout() {
    let a = parse_attest(fixture!("quote_rsa.attest")).unwrap();
    // qualifiedSigner is the AK's qualified name (tpm2_readpublic).
    assert_eq!(
        hex::encode(&a.qualified_signer),
        "000baf5d1bdd1eb5ee08c16f0bbe486da0d7066243d39ec4d03854fa1c7ef4c8f4dd"
    );
    assert_eq!(a.pcr_select, vec![(HashAlg::Sha256, DEFAULT_PCRS.to_vec())]);
    assert_eq!(a.extra_data, NONCE);
}

#[test]
fn real_eks_parse() {
    let rsa = parse_public_2b(fixture!("ek_rsa.pub")).unwrap();
    rsa.check_ek_attributes().unwrap();
    assert_eq!(rsa.name_alg, HashAlg::Sha256);
    assert_eq!(rsa.symmetric, Some(SymDef::aes_cfb(128)));
    assert!(matches!(
        rsa.key,
        PublicKey::Rsa {
            bits: 2048,
            exponent: 65537,
            ..
        }
    ));
    // TCG PolicyA (sha256).
    assert_eq!(
        hex::encode(&rsa.auth_policy),
        "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
    );
    let p256 = parse_public_2b(fixture!("ek_p256.pub")).unwrap();
    p256.check_ek_attributes().unwrap();
    assert!(matches!(
        p256.key,
        PublicKey::Ecc {
            curve: EccCurve::NistP256,
            ..
        }
    ));
    let p384 = parse_public_2b(fixture!("ek_p384.pub")).unwrap();
    p384.check_ek_attributes().unwrap();
    assert_eq!(p384.name_alg, HashAlg::Sha384);
    assert_eq!(p384.symmetric, Some(SymDef::aes_cfb(256)));
    assert!(matches!(
        p384.key,
        PublicKey::Ecc {
            curve: EccCurve::NistP384,
            ..
        }
    ));
    // Credentials can be made for all three.
    let name = parse_public_2b(fixture!("ak_rsa.pub")).unwrap().name();
    for ek in [&rsa, &p256, &p384] {
        crate::credential::make_credential(ek, &name, &[7; 32], &mut crate::testutil::rng(1))
            .unwrap();
    }
}

fn swtpm_trust() -> EkTrust {
    let mut certs = pem_to_der_certs(std::str::from_utf8(fixture!("rootca.pem")).unwrap()).unwrap();
    certs.extend(
        pem_to_der_certs(std::str::from_utf8(fixture!("issuercert.pem")).unwrap()).unwrap(),
    );
    EkTrust::from_der_certs(certs).unwrap()
}

#[test]
fn real_ek_certificates_verify() {
    let trust = swtpm_trust();
    let rsa = parse_public_2b(fixture!("ek_rsa.pub")).unwrap();
    let info = verify_ek_certificate(&trust, fixture!("ek_rsa_cert.der"), &[], &rsa, NOW).unwrap();
    assert_eq!(info.subject, "CN=unknown");
    assert_eq!(info.issuer, "CN=swtpm-localca");
    assert_eq!(info.not_after_unix, 253_402_300_799); // 9999-12-31T23:59:59Z
    let p384 = parse_public_2b(fixture!("ek_p384.pub")).unwrap();
    verify_ek_certificate(&trust, fixture!("ek_p384_cert.der"), &[], &p384, NOW).unwrap();

    // Swapped: a valid certificate for another key.
    let e =
        verify_ek_certificate(&trust, fixture!("ek_rsa_cert.der"), &[], &p384, NOW).unwrap_err();
    assert!(matches!(e, EkCertError::KeyMismatch(_)), "{e}");
    let p256 = parse_public_2b(fixture!("ek_p256.pub")).unwrap();
    let e =
        verify_ek_certificate(&trust, fixture!("ek_p384_cert.der"), &[], &p256, NOW).unwrap_err();
    assert!(matches!(e, EkCertError::KeyMismatch(_)), "{e}");

    // Root only: the intermediate must come from the agent.
    let root = pem_to_der_certs(std::str::from_utf8(fixture!("rootca.pem")).unwrap()).unwrap();
    let root_only = EkTrust::from_der_certs(root).unwrap();
    let e =
        verify_ek_certificate(&root_only, fixture!("ek_rsa_cert.der"), &[], &rsa, NOW).unwrap_err();
    assert!(matches!(e, EkCertError::Chain(_)), "{e}");
    let inter = pem_to_der_certs(std::str::from_utf8(fixture!("issuercert.pem")).unwrap()).unwrap();
    verify_ek_certificate(&root_only, fixture!("ek_rsa_cert.der"), &inter, &rsa, NOW).unwrap();

    // Before the certificates existed.
    let e = verify_ek_certificate(
        &trust,
        fixture!("ek_rsa_cert.der"),
        &[],
        &rsa,
        1_700_000_000,
    )
    .unwrap_err();
    assert!(matches!(e, EkCertError::NotYetValid(_)), "{e}");
}
