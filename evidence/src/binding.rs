//! Binding of the hardening report to the quote.
//!
//! The agent passes `qualifying_data(nonce, report)` as the quote's
//! qualifyingData, so the TPM signature covers both the server's fresh nonce
//! and the exact bytes of the canonical hardening report: swapping the report
//! after the quote changes the expected extraData and fails verification
//! with `quote.nonce_mismatch`.

use sha2::{Digest, Sha256};

/// `SHA-256(nonce || SHA-256(report))`: the quote's qualifying data.
pub fn qualifying_data(nonce: &[u8], report: &[u8]) -> [u8; 32] {
    let report_hash = Sha256::digest(report);
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(report_hash);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition() {
        let nonce = [7u8; 32];
        let report = br#"{"checks":[]}"#;
        let mut cat = nonce.to_vec();
        cat.extend_from_slice(&Sha256::digest(report));
        let want: [u8; 32] = Sha256::digest(&cat).into();
        assert_eq!(qualifying_data(&nonce, report), want);
    }

    #[test]
    fn every_input_matters() {
        let base = qualifying_data(b"nonce", b"report");
        assert_ne!(base, qualifying_data(b"nonce2", b"report"));
        assert_ne!(base, qualifying_data(b"nonce", b"report2"));
        // No ambiguity from moving bytes between nonce and report.
        assert_ne!(qualifying_data(b"nonc", b"ereport"), base);
        assert_eq!(base, qualifying_data(b"nonce", b"report"));
    }
}
