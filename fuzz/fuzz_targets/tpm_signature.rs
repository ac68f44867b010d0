//! TPMT_SIGNATURE parser and signature verification: no panic on any
//! input; what parses re-encodes to the same bytes; verifying any parsed
//! signature against the real swtpm AKs (RSASSA, ECDSA, RSAPSS) over their
//! real quotes gives an answer, and an RSASSA signature (deterministic) is
//! only accepted when it is the TPM's own value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_evidence::marshal::encode_signature;
use trustpool_evidence::quote::verify_signature;
use trustpool_evidence::tpm::{parse_signature, TpmSignature};
use trustpool_fuzz::{swtpm, swtpm_aks};

fn trim(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fuzz_target!(|data: &[u8]| {
    let Ok(sig) = parse_signature(data) else {
        return;
    };
    assert_eq!(
        encode_signature(&sig).expect("a parsed signature re-encodes"),
        data
    );
    let _ = sig.scheme();
    let quotes = [
        (swtpm::QUOTE_RSA, swtpm::SIG_RSA),
        (swtpm::QUOTE_ECC, swtpm::SIG_ECC),
        (swtpm::QUOTE_PSS, swtpm::SIG_PSS),
    ];
    for (ak, (quote, real)) in swtpm_aks().iter().zip(quotes) {
        if verify_signature(ak, quote, &sig).is_err() {
            continue;
        }
        if let TpmSignature::RsaSsa { sig: value, .. } = &sig {
            let real = parse_signature(real).expect("fixture signature parses");
            let TpmSignature::RsaSsa {
                sig: real_value, ..
            } = real
            else {
                panic!("an RSASSA signature verified under a non-RSASSA AK");
            };
            assert_eq!(
                trim(value),
                trim(&real_value),
                "forged RSASSA signature accepted"
            );
        }
    }
});
