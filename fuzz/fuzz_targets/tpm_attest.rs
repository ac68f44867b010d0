//! TPMS_ATTEST (quote) parser: no panic on any input, and what parses
//! survives a round trip through the encoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_evidence::marshal::encode_quote_attest;
use trustpool_evidence::tpm::parse_attest;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = parse_attest(data) else {
        return;
    };
    assert_eq!(a.raw, data);
    let again = encode_quote_attest(
        &a.qualified_signer,
        &a.extra_data,
        &a.clock_info,
        a.firmware_version,
        &a.pcr_select,
        &a.pcr_digest,
    )
    .expect("a parsed quote re-encodes");
    let b = parse_attest(&again).expect("a re-encoded quote parses");
    assert_eq!(
        (
            a.qualified_signer,
            a.extra_data,
            a.clock_info,
            a.firmware_version,
            a.pcr_select,
            a.pcr_digest
        ),
        (
            b.qualified_signer,
            b.extra_data,
            b.clock_info,
            b.firmware_version,
            b.pcr_select,
            b.pcr_digest
        ),
    );
});
