//! The whole `verify_quote` with the real swtpm AKs. Structured input:
//!
//! ```text
//! u8 ak (0 RSASSA, 1 ECDSA, 2 RSAPSS; mod 3)
//! u8 flags (bit 0: the expected PCR selection follows as u8 n || n indices,
//!           else the default selection; bit 1: expect the quotes' nonce,
//!           else a u8-prefixed expected extraData follows; bit 2: also
//!           check qualifiedSigner under the swtpm RSA EK)
//! u16 len || TPMS_ATTEST
//! u16 len || TPMT_SIGNATURE
//! [selection] [extraData]
//! (u8 index, u8 len, value)* reported PCR values
//! ```
//!
//! The seeds are the real quotes, so the fuzzer starts past the parsers and
//! the signature. No panic on any input, and an accepted quote proves what
//! it must: our extraData, exactly the asked selection, the reported values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use trustpool_evidence::pcr::DEFAULT_PCRS;
use trustpool_evidence::quote::{verify_quote, QuoteCheck};
use trustpool_fuzz::{swtpm, swtpm_aks, Input};

/// The swtpm RSA EK of the evidence test data.
fn swtpm_ek() -> Option<&'static trustpool_evidence::tpm::TpmPublic> {
    static EK: std::sync::OnceLock<Option<trustpool_evidence::tpm::TpmPublic>> =
        std::sync::OnceLock::new();
    EK.get_or_init(|| {
        trustpool_evidence::tpm::parse_public_2b(include_bytes!(
            "../../evidence/testdata/swtpm/ek_rsa.pub"
        ))
        .ok()
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ak = &swtpm_aks()[usize::from(input.u8() % 3)];
    let flags = input.u8();
    let attest = input.bytes16();
    let signature = input.bytes16();
    let expected_pcrs = if flags & 1 != 0 {
        input.bytes8()
    } else {
        &DEFAULT_PCRS[..]
    };
    let expected_extra_data = if flags & 2 == 0 {
        &swtpm::NONCE[..]
    } else {
        input.bytes8()
    };
    let pcr_values = input.pcr_values();
    let check = QuoteCheck {
        ek: if flags & 4 != 0 { swtpm_ek() } else { None },
        attest,
        signature,
        ak,
        expected_extra_data,
        expected_pcrs,
        pcr_values: &pcr_values,
    };
    let Ok(verified) = verify_quote(&check) else {
        return;
    };
    assert_eq!(verified.attest.raw, attest);
    assert_eq!(verified.attest.extra_data, expected_extra_data);
    let proven: BTreeSet<u8> = verified.pcrs.keys().copied().collect();
    let asked: BTreeSet<u8> = expected_pcrs.iter().copied().collect();
    assert_eq!(proven, asked, "proven PCRs differ from the asked selection");
    for (i, v) in &verified.pcrs {
        assert!(
            pcr_values
                .iter()
                .any(|(j, w)| *j == u32::from(*i) && w.as_slice() == v.as_slice()),
            "PCR {i} proven with a value the agent did not report"
        );
    }
});
