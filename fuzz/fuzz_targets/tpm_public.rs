//! TPMT_PUBLIC / TPM2B_PUBLIC parser and what the server does with an
//! agent's key: name, AK and EK attribute checks, MakeCredential for the
//! key as an EK, and verifying a real quote with the key as an AK (when it
//! passes the AK checks, as the server requires). No panic
//! on any input; what parses survives a round trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use trustpool_evidence::credential::make_credential;
use trustpool_evidence::marshal::encode_public;
use trustpool_evidence::quote::verify_signature;
use trustpool_evidence::tpm::{
    parse_public, parse_public_2b, parse_signature, PublicKey, TpmPublic,
};
use trustpool_fuzz::{swtpm, swtpm_aks};

fn exercise(key: &TpmPublic) {
    let name = key.name();
    assert_eq!(name.len(), 2 + key.name_alg.digest_size());
    let _ = key.check_ak_attributes();
    let _ = key.check_ek_attributes();
    let again = encode_public(
        key.name_alg,
        key.attributes,
        &key.auth_policy,
        &key.key,
        key.symmetric.as_ref(),
        &key.scheme,
    )
    .expect("a parsed key re-encodes");
    let back = parse_public(&again).expect("a re-encoded key parses");
    assert_eq!(
        (
            &back.name_alg,
            back.attributes,
            &back.auth_policy,
            &back.key,
            &back.symmetric,
            &back.scheme
        ),
        (
            &key.name_alg,
            key.attributes,
            &key.auth_policy,
            &key.key,
            &key.symmetric,
            &key.scheme
        ),
    );
    // As an EK: the server makes a credential for the enrolled AK's name.
    let ak_name = swtpm_aks()[0].name();
    let mut rng = StdRng::seed_from_u64(1);
    let _ = make_credential(key, &ak_name, &[7u8; 32], &mut rng);
    // As an AK (the server only uses keys that pass the AK checks): a real
    // quote of the same key type must not verify under another key.
    if key.check_ak_attributes().is_err() {
        return;
    }
    let (quote, sig) = match key.key {
        PublicKey::Rsa { .. } => (swtpm::QUOTE_RSA, swtpm::SIG_RSA),
        PublicKey::Ecc { .. } => (swtpm::QUOTE_ECC, swtpm::SIG_ECC),
    };
    let sig = parse_signature(sig).expect("fixture signature parses");
    if verify_signature(key, quote, &sig).is_ok() {
        assert!(
            swtpm_aks().iter().any(|ak| ak.key == key.key),
            "a real quote verified under a key that is not its AK"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the framing: TPMT_PUBLIC (what agents send) or
    // TPM2B_PUBLIC (the tpm2-tools files).
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let parsed = if mode & 1 == 0 {
        parse_public(body)
    } else {
        parse_public_2b(body)
    };
    if let Ok(key) = parsed {
        exercise(&key);
    }
});
