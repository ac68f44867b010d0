//! SHA-256 PCR arithmetic: extend, DRTM (TXT) start values, quote digests.

use sha2::{Digest, Sha256};

/// PCRs quoted by default: SRTM PCRs 0-7 and DRTM PCRs 17, 18, 19 (sha256 bank).
pub const DEFAULT_PCRS: [u8; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19];

/// Highest PCR index of a PC-Client TPM (24 PCRs, 0..=23).
pub const MAX_PCR_INDEX: u8 = 23;

/// The value of a DRTM PCR (17-22) after TPM2_Startup without a dynamic
/// launch: all 0xFF.
pub const DRTM_RESET_VALUE: [u8; 32] = [0xff; 32];

/// `PCR_new = SHA-256(PCR_old || digest)`, what TPM2_PCR_Extend does.
pub fn extend(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// True if `value` is the DRTM reset value (all 0xFF): no dynamic (TXT)
/// launch happened since the TPM started.
pub fn is_reset_drtm(value: &[u8; 32]) -> bool {
    value == &DRTM_RESET_VALUE
}

/// True if `value` is all zeros. For PCR 17 or 18 this means no measured
/// launch either: the locality-4 hash start resets PCRs 17-22 to zero, and
/// a value that stayed zero had no SINIT/MLE measurement extended into it.
pub fn is_zero(value: &[u8; 32]) -> bool {
    value == &[0u8; 32]
}

/// PCR 17 after a locality-4 hash sequence (`TPM_HASH_START/DATA/END`, what
/// SINIT does and `swtpm_ioctl -h DATA` simulates): the PCR is reset to zero
/// and extended with SHA-256(data), i.e. `SHA-256(0^32 || SHA-256(data))`.
pub fn drtm_hash_start(data: &[u8]) -> [u8; 32] {
    extend(&[0u8; 32], &Sha256::digest(data).into())
}

/// The quote `pcrDigest` for a sha256 signing scheme: SHA-256 over the
/// values concatenated in selection order (ascending PCR index).
pub fn pcr_digest(values: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn drtm_hash_start_matches_swtpm_measurement() {
        // TPM-NOTES §5: swtpm_ioctl -h hello → PCR17 (sha256), MEASURED.
        assert_eq!(
            drtm_hash_start(b"hello"),
            h("9851312028952521510e8eaab5be94e7dc24b5fc292b2e9781173cf11ffa9878")
        );
    }

    #[test]
    fn extend_is_hash_of_concatenation() {
        let old = [0u8; 32];
        let d: [u8; 32] = Sha256::digest(b"hello").into();
        let mut cat = old.to_vec();
        cat.extend_from_slice(&d);
        let want: [u8; 32] = Sha256::digest(&cat).into();
        assert_eq!(extend(&old, &d), want);
        assert_eq!(extend(&old, &d), drtm_hash_start(b"hello"));
        assert_ne!(extend(&want, &d), want);
    }

    #[test]
    fn reset_value() {
        assert!(is_reset_drtm(&[0xff; 32]));
        assert!(!is_reset_drtm(&[0x00; 32]));
        let mut v = [0xff; 32];
        v[31] = 0xfe;
        assert!(!is_reset_drtm(&v));
        assert!(is_zero(&[0; 32]));
        assert!(!is_zero(&v));
    }

    #[test]
    fn digest_of_values() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut cat = a.to_vec();
        cat.extend_from_slice(&b);
        let want: [u8; 32] = Sha256::digest(&cat).into();
        assert_eq!(pcr_digest(&[a, b]), want);
        assert_ne!(pcr_digest(&[b, a]), want);
        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(pcr_digest(&[]), empty);
    }

    #[test]
    fn default_selection_is_sorted_and_in_range() {
        assert!(DEFAULT_PCRS.windows(2).all(|w| w[0] < w[1]));
        assert!(DEFAULT_PCRS.iter().all(|&p| p <= MAX_PCR_INDEX));
    }
}
