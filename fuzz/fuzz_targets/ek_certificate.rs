//! EK certificate parsing and chain validation against the swtpm-localca
//! trust. Structured input:
//!
//! ```text
//! u8 flags (bits 0-1: EK RSA-2048 / P-256 / P-384 (3 = P-384);
//!           bit 2: trust the root only (the intermediate must come from
//!           the agent); bit 3: build the trust from the intermediates
//!           below instead, as the server loads a roots directory)
//! u16 len || certificate DER
//! (u16 len || intermediate DER)*
//! ```
//!
//! No panic on any input; an accepted certificate is a leaf for this EK,
//! valid now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustpool_evidence::ekcert::{pem_to_der_certs, verify_ek_certificate, EkTrust};
use trustpool_fuzz::{swtpm, swtpm_eks, swtpm_trust, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let ek = &swtpm_eks()[usize::from(flags & 3).min(2)];
    let cert = input.bytes16();
    let mut intermediates = Vec::new();
    while !input.is_empty() {
        intermediates.push(input.bytes16().to_vec());
    }
    let (full, root_only) = swtpm_trust();
    let built;
    let trust = if flags & 8 != 0 {
        match EkTrust::from_der_certs(intermediates.clone()) {
            Ok(t) => {
                built = t;
                &built
            }
            Err(_) => return,
        }
    } else if flags & 4 != 0 {
        root_only
    } else {
        full
    };
    // The PEM reader of the roots directory, on the same bytes.
    if let Ok(text) = std::str::from_utf8(cert) {
        let _ = pem_to_der_certs(text);
    }
    if let Ok(info) = verify_ek_certificate(trust, cert, &intermediates, ek, swtpm::NOW) {
        assert!(info.not_after_unix >= swtpm::NOW as i64);
    }
});
