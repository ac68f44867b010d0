//! Shared pieces of the trustpool fuzz targets (docs/FUZZING.md): the real
//! swtpm vectors the targets verify against, and [`Input`], the splitter of
//! the structured inputs.
//!
//! Harness code may panic on its *own* fixed data (a fixture that does not
//! parse is a broken harness); it never unwraps what came from the fuzzer.

use std::sync::OnceLock;
use trustpool_evidence::ekcert::{pem_to_der_certs, EkTrust};
use trustpool_evidence::pcr::DEFAULT_PCRS;
use trustpool_evidence::tpm::{parse_public_2b, TpmPublic};

macro_rules! swtpm {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/swtpm/",
            $name
        ))
        .as_slice()
    };
}

macro_rules! bound {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/", $name)).as_slice()
    };
}

/// Real TPM bytes captured from swtpm (evidence/testdata/swtpm/README.md).
pub mod swtpm {
    /// TPM2B_PUBLIC of the RSASSA-SHA256 AK.
    pub const AK_RSA: &[u8] = swtpm!("ak_rsa.pub");
    /// TPM2B_PUBLIC of the ECDSA P-256 AK.
    pub const AK_ECC: &[u8] = swtpm!("ak_ecc.pub");
    /// TPM2B_PUBLIC of the RSAPSS AK.
    pub const AK_PSS: &[u8] = swtpm!("ak_pss.pub");
    /// TPM2B_PUBLIC of the RSA-2048 EK.
    pub const EK_RSA: &[u8] = swtpm!("ek_rsa.pub");
    /// TPM2B_PUBLIC of the P-256 EK.
    pub const EK_P256: &[u8] = swtpm!("ek_p256.pub");
    /// TPM2B_PUBLIC of the P-384 EK.
    pub const EK_P384: &[u8] = swtpm!("ek_p384.pub");
    /// DER EK certificate of the RSA EK.
    pub const EK_RSA_CERT: &[u8] = swtpm!("ek_rsa_cert.der");
    /// DER EK certificate of the P-384 EK.
    pub const EK_P384_CERT: &[u8] = swtpm!("ek_p384_cert.der");
    /// swtpm-localca root (PEM).
    pub const ROOT_PEM: &[u8] = swtpm!("rootca.pem");
    /// swtpm-localca intermediate (PEM).
    pub const ISSUER_PEM: &[u8] = swtpm!("issuercert.pem");
    /// TPMS_ATTEST of the RSA quote.
    pub const QUOTE_RSA: &[u8] = swtpm!("quote_rsa.attest");
    /// TPMT_SIGNATURE of the RSA quote.
    pub const SIG_RSA: &[u8] = swtpm!("quote_rsa.sig");
    /// TPMS_ATTEST of the ECDSA quote.
    pub const QUOTE_ECC: &[u8] = swtpm!("quote_ecc.attest");
    /// TPMT_SIGNATURE of the ECDSA quote.
    pub const SIG_ECC: &[u8] = swtpm!("quote_ecc.sig");
    /// TPMS_ATTEST of the RSAPSS quote.
    pub const QUOTE_PSS: &[u8] = swtpm!("quote_pss.attest");
    /// TPMT_SIGNATURE of the RSAPSS quote.
    pub const SIG_PSS: &[u8] = swtpm!("quote_pss.sig");
    /// sha256 PCR 0-7,17,18,19 at quote time (11 × 32 bytes).
    pub const PCRS: &[u8] = swtpm!("pcrs.bin");
    /// The qualifying data of these quotes (bytes 1..=32).
    pub const NONCE: [u8; 32] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29, 30, 31, 32,
    ];
    /// A time after the EK certificates' notBefore (2026-11-22).
    pub const NOW: u64 = 1_800_000_000;
}

/// Quotes captured from swtpm whose qualifying data binds a hardening
/// report, as an agent makes them (fuzz/testdata/README.md): they pass the
/// whole trust decision.
pub mod bound {
    /// TPM2B_PUBLIC of the RSA-2048 EK both AKs were made under.
    pub const EK_RSA: &[u8] = bound!("ek_rsa.pub");
    /// TPM2B_PUBLIC of the RSASSA-SHA256 AK.
    pub const AK_RSA: &[u8] = bound!("ak_rsa.pub");
    /// TPM2B_PUBLIC of the ECDSA P-256 AK.
    pub const AK_ECC: &[u8] = bound!("ak_ecc.pub");
    /// TPMS_ATTEST by the RSA AK over `qualifying_data(NONCE, REPORT)`.
    pub const QUOTE_RSA: &[u8] = bound!("quote_rsa.attest");
    /// Its TPMT_SIGNATURE.
    pub const SIG_RSA: &[u8] = bound!("quote_rsa.sig");
    /// TPMS_ATTEST by the ECC AK over `qualifying_data(NONCE, REPORT)`.
    pub const QUOTE_ECC: &[u8] = bound!("quote_ecc.attest");
    /// Its TPMT_SIGNATURE.
    pub const SIG_ECC: &[u8] = bound!("quote_ecc.sig");
    /// sha256 PCR 0-7,17,18,19 at quote time (11 × 32 bytes).
    pub const PCRS: &[u8] = bound!("pcrs.bin");
    /// The hardening report the quotes are bound to.
    pub const REPORT: &[u8] = bound!("report.json");
    /// The nonce of the challenge (bytes 0xa0..0xc0).
    pub const NONCE: [u8; 32] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae,
        0xaf, 0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd,
        0xbe, 0xbf,
    ];
}

/// Parses a fixture TPM2B_PUBLIC (harness data: a failure is a harness bug).
pub fn fixture_public(bytes: &[u8]) -> TpmPublic {
    parse_public_2b(bytes).expect("fixture TPM2B_PUBLIC parses")
}

/// The swtpm AKs: RSASSA, ECDSA, RSAPSS.
pub fn swtpm_aks() -> &'static [TpmPublic; 3] {
    static AKS: OnceLock<[TpmPublic; 3]> = OnceLock::new();
    AKS.get_or_init(|| {
        [
            fixture_public(swtpm::AK_RSA),
            fixture_public(swtpm::AK_ECC),
            fixture_public(swtpm::AK_PSS),
        ]
    })
}

/// The swtpm EKs: RSA-2048, P-256, P-384.
pub fn swtpm_eks() -> &'static [TpmPublic; 3] {
    static EKS: OnceLock<[TpmPublic; 3]> = OnceLock::new();
    EKS.get_or_init(|| {
        [
            fixture_public(swtpm::EK_RSA),
            fixture_public(swtpm::EK_P256),
            fixture_public(swtpm::EK_P384),
        ]
    })
}

fn pem(bytes: &[u8]) -> Vec<Vec<u8>> {
    pem_to_der_certs(std::str::from_utf8(bytes).expect("fixture PEM is text"))
        .expect("fixture PEM has certificates")
}

/// The swtpm-localca root and intermediate as DER.
pub fn swtpm_ca_der() -> (Vec<u8>, Vec<u8>) {
    let root = pem(swtpm::ROOT_PEM).remove(0);
    let issuer = pem(swtpm::ISSUER_PEM).remove(0);
    (root, issuer)
}

/// EK trust as a server configured with the swtpm-localca root and
/// intermediate has it; and with the root only.
pub fn swtpm_trust() -> &'static (EkTrust, EkTrust) {
    static TRUST: OnceLock<(EkTrust, EkTrust)> = OnceLock::new();
    TRUST.get_or_init(|| {
        let (root, issuer) = swtpm_ca_der();
        (
            EkTrust::from_der_certs(vec![root.clone(), issuer]).expect("swtpm trust"),
            EkTrust::from_der_certs(vec![root]).expect("swtpm root"),
        )
    })
}

/// PCR values in the selection order of [`DEFAULT_PCRS`] from 11 × 32 bytes.
pub fn pcr_values(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    DEFAULT_PCRS
        .iter()
        .zip(bytes.chunks_exact(32))
        .map(|(i, v)| (u32::from(*i), v.to_vec()))
        .collect()
}

/// Splits a structured fuzz input. Every read succeeds: past the end it
/// yields zeros / empty slices, and a length is clamped to what is left, so
/// any byte string is a valid input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the fuzzer's bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A big-endian u16 (missing bytes read as 0).
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// `n` bytes, or what is left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A u16-length-prefixed byte string.
    pub fn bytes16(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// A u8-length-prefixed byte string.
    pub fn bytes8(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.data;
        self.data = &[];
        rest
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// PCR values as `(index u8, len u8, value)` triples until the end.
    pub fn pcr_values(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !self.is_empty() {
            let index = u32::from(self.u8());
            out.push((index, self.bytes8().to_vec()));
        }
        out
    }
}

/// The encoding [`Input::pcr_values`] reads (for seeds and tests).
pub fn encode_pcr_values(values: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in values {
        out.push(*i as u8);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    }
    out
}
