//! Test-only helpers: deterministic software keys, a software AK that signs
//! TPM-format quotes, and software EKs.

use crate::marshal;
use crate::tpm::{
    attr, parse_public, ClockInfo, EccCurve, HashAlg, PublicKey, Scheme, SymDef, TpmPublic,
    TpmSignature,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Deterministic RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Three RSA-2048 keys, generated once per test binary.
pub fn rsa_key(i: usize) -> &'static RsaPrivateKey {
    static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        (0..3)
            .map(|i| RsaPrivateKey::new(&mut rng(1000 + i as u64), 2048).unwrap())
            .collect()
    });
    &keys[i]
}

/// A deterministic P-256 key.
pub fn p256_key(seed: u8) -> p256::SecretKey {
    p256::SecretKey::from_slice(&[seed.max(1); 32]).unwrap()
}

/// A deterministic P-384 key.
pub fn p384_key(seed: u8) -> p384::SecretKey {
    p384::SecretKey::from_slice(&[seed.max(1); 48]).unwrap()
}

/// AK attributes as tss-esapi's create_ak_2 sets them.
pub const AK_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::RESTRICTED
    | attr::SIGN;

/// EK attributes of the TCG default templates (0x000300b2).
pub const EK_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

pub fn rsa_public_key(key: &RsaPrivateKey) -> PublicKey {
    let modulus = key.n().to_bytes_be();
    PublicKey::Rsa {
        bits: (modulus.len() * 8) as u16,
        modulus,
        exponent: 65537,
    }
}

pub fn p256_public_key(key: &p256::SecretKey) -> PublicKey {
    let pt = key.public_key().to_encoded_point(false);
    PublicKey::Ecc {
        curve: EccCurve::NistP256,
        x: pt.x().unwrap().to_vec(),
        y: pt.y().unwrap().to_vec(),
    }
}

pub fn p384_public_key(key: &p384::SecretKey) -> PublicKey {
    let pt = key.public_key().to_encoded_point(false);
    PublicKey::Ecc {
        curve: EccCurve::NistP384,
        x: pt.x().unwrap().to_vec(),
        y: pt.y().unwrap().to_vec(),
    }
}

pub fn public(
    name_alg: HashAlg,
    attributes: u32,
    key: &PublicKey,
    symmetric: Option<SymDef>,
    scheme: Scheme,
) -> TpmPublic {
    let policy = if attributes & attr::DECRYPT != 0 {
        vec![0x5a; name_alg.digest_size()]
    } else {
        vec![]
    };
    let bytes = marshal::encode_public(
        name_alg,
        attributes,
        &policy,
        key,
        symmetric.as_ref(),
        &scheme,
    )
    .unwrap();
    parse_public(&bytes).unwrap()
}

/// The signing half of a software AK.
pub enum Signer {
    Rsa {
        key: &'static RsaPrivateKey,
        pss_salt: Option<usize>,
    },
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

/// A software AK.
pub struct SoftAk {
    pub public: TpmPublic,
    pub signer: Signer,
    pub hash: HashAlg,
}

impl SoftAk {
    pub fn rsassa(i: usize) -> SoftAk {
        let key = rsa_key(i);
        SoftAk {
            public: public(
                HashAlg::Sha256,
                AK_ATTRS,
                &rsa_public_key(key),
                None,
                Scheme::RsaSsa(HashAlg::Sha256),
            ),
            signer: Signer::Rsa {
                key,
                pss_salt: None,
            },
            hash: HashAlg::Sha256,
        }
    }

    pub fn rsapss(i: usize, salt: usize) -> SoftAk {
        let key = rsa_key(i);
        SoftAk {
            public: public(
                HashAlg::Sha256,
                AK_ATTRS,
                &rsa_public_key(key),
                None,
                Scheme::RsaPss(HashAlg::Sha256),
            ),
            signer: Signer::Rsa {
                key,
                pss_salt: Some(salt),
            },
            hash: HashAlg::Sha256,
        }
    }

    pub fn p256(seed: u8) -> SoftAk {
        let key = p256_key(seed);
        SoftAk {
            public: public(
                HashAlg::Sha256,
                AK_ATTRS,
                &p256_public_key(&key),
                None,
                Scheme::EcDsa(HashAlg::Sha256),
            ),
            signer: Signer::P256(key),
            hash: HashAlg::Sha256,
        }
    }

    pub fn p384(seed: u8) -> SoftAk {
        let key = p384_key(seed);
        SoftAk {
            public: public(
                HashAlg::Sha384,
                AK_ATTRS,
                &p384_public_key(&key),
                None,
                Scheme::EcDsa(HashAlg::Sha384),
            ),
            signer: Signer::P384(key),
            hash: HashAlg::Sha384,
        }
    }

    /// Same key, different scheme/hash (the public is rebuilt with `scheme`).
    pub fn with_scheme(mut self, scheme: Scheme, hash: HashAlg) -> SoftAk {
        self.public = public(
            self.public.name_alg,
            self.public.attributes,
            &self.public.key,
            self.public.symmetric,
            scheme,
        );
        self.hash = hash;
        self
    }

    pub fn sign_raw(&self, message: &[u8]) -> TpmSignature {
        let digest = self.hash.digest(message);
        match &self.signer {
            Signer::Rsa { key, pss_salt } => {
                let sig = match (pss_salt, self.hash) {
                    (None, HashAlg::Sha256) => key
                        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                        .unwrap(),
                    (None, HashAlg::Sha384) => key
                        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), &digest)
                        .unwrap(),
                    (None, HashAlg::Sha512) => key
                        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), &digest)
                        .unwrap(),
                    (Some(salt), HashAlg::Sha256) => key
                        .sign_with_rng(
                            &mut rng(7),
                            rsa::Pss::new_with_salt::<sha2::Sha256>(*salt),
                            &digest,
                        )
                        .unwrap(),
                    (Some(salt), HashAlg::Sha384) => key
                        .sign_with_rng(
                            &mut rng(7),
                            rsa::Pss::new_with_salt::<sha2::Sha384>(*salt),
                            &digest,
                        )
                        .unwrap(),
                    other => panic!("unsupported test combination {other:?}"),
                };
                if pss_salt.is_some() {
                    TpmSignature::RsaPss {
                        hash: self.hash,
                        sig,
                    }
                } else {
                    TpmSignature::RsaSsa {
                        hash: self.hash,
                        sig,
                    }
                }
            }
            Signer::P256(key) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                let sk = p256::ecdsa::SigningKey::from(key);
                let sig: p256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
                let (r, s) = sig.split_bytes();
                TpmSignature::EcDsa {
                    hash: self.hash,
                    r: r.to_vec(),
                    s: s.to_vec(),
                }
            }
            Signer::P384(key) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner;
                let sk = p384::ecdsa::SigningKey::from(key);
                let sig: p384::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
                let (r, s) = sig.split_bytes();
                TpmSignature::EcDsa {
                    hash: self.hash,
                    r: r.to_vec(),
                    s: s.to_vec(),
                }
            }
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        marshal::encode_signature(&self.sign_raw(message)).unwrap()
    }
}

/// A PCR bank like a measured-launch host's: PCR i = [i+1; 32], 17-19 set.
pub fn sample_pcrs() -> BTreeMap<u8, [u8; 32]> {
    (0u8..24).map(|i| (i, [i.wrapping_add(1); 32])).collect()
}

pub fn clock() -> ClockInfo {
    ClockInfo {
        clock: 123_456,
        reset_count: 3,
        restart_count: 0,
        safe: true,
    }
}

/// The EK every [`SoftAk`] is taken to be created under: an RSA-2048 EK
/// of the TCG default template (key 2 of [`rsa_key`]).
pub fn test_ek() -> &'static TpmPublic {
    static EK: OnceLock<TpmPublic> = OnceLock::new();
    EK.get_or_init(|| {
        public(
            HashAlg::Sha256,
            EK_ATTRS,
            &rsa_public_key(rsa_key(2)),
            Some(SymDef::aes_cfb(128)),
            Scheme::Null,
        )
    })
}

/// A quote over `selection` (sha256 bank) of `values`, with the digest
/// computed with the AK's hash, signed (qualifiedSigner) as by `ak`
/// created under [`test_ek`].
pub fn quote_bytes(
    ak: &SoftAk,
    extra: &[u8],
    selection: &[u8],
    values: &BTreeMap<u8, [u8; 32]>,
) -> Vec<u8> {
    let parts: Vec<&[u8]> = selection
        .iter()
        .map(|i| values.get(i).unwrap().as_slice())
        .collect();
    let digest = ak.hash.digest_parts(&parts);
    marshal::encode_quote_attest(
        &ak.public.qualified_name_under_ek(test_ek()),
        extra,
        &clock(),
        0x2019_1023_0016_3636,
        &[(HashAlg::Sha256, selection.to_vec())],
        &digest,
    )
    .unwrap()
}

/// Values as the agent reports them for `selection`.
pub fn reported(selection: &[u8], values: &BTreeMap<u8, [u8; 32]>) -> Vec<(u32, Vec<u8>)> {
    selection
        .iter()
        .map(|i| (u32::from(*i), values.get(i).unwrap().to_vec()))
        .collect()
}
