//! TPMT_SIGNATURE parser: no panic on any input, and what parses re-encodes
//! to the same bytes. (Verifying fuzzed signatures under the real swtpm AKs
//! is the `verify_quote` target's job, where the signature comes with its
//! quote; here the parser gets the whole CPU.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_evidence::marshal::encode_signature;
use trustpool_evidence::tpm::{parse_signature, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(sig) = parse_signature(data) else {
        return;
    };
    assert_eq!(
        encode_signature(&sig).expect("a parsed signature re-encodes"),
        data
    );
    assert_eq!(sig.scheme().alg_id(), sig.alg_id());
    assert!(!matches!(sig.scheme(), Scheme::Null));
    assert_eq!(sig.scheme().hash(), Some(sig.hash()));
});
