//! A software TPM for one simulated host: pure computation, no I/O.
//!
//! What a real agent gets from its TPM, this module computes in software
//! with the evidence crate's own encoders ([`trustpool_evidence::marshal`]):
//!
//! * an **EK**: ECC P-256 with the TCG default template L-2 (nameAlg
//!   sha256, objectAttributes 0x000300b2, the standard EK authPolicy,
//!   AES-128-CFB, no scheme). ECC because the server's MakeCredential takes
//!   ECC EKs (an ephemeral ECDH instead of RSA-OAEP) and a software P-256
//!   ECDH is ~50 times cheaper than an RSA-2048 decryption;
//! * an **AK**: ECC P-256 restricted signing key (fixedTPM, fixedParent,
//!   sensitiveDataOrigin, userWithAuth, restricted, sign; ECDSA-SHA256);
//! * **ActivateCredential**: the inverse of
//!   [`trustpool_evidence::credential::make_credential`]: ECDH of the EK
//!   private key with the ephemeral point, `seed = KDFe(..., "IDENTITY",
//!   eph.x, ek.x)`, the outer HMAC checked with `KDFa(seed, "INTEGRITY")`,
//!   the identity decrypted with `KDFa(seed, "STORAGE", akName)` AES-CFB;
//! * **Quotes**: a `TPMS_ATTEST` of type quote over the asked sha256 PCRs of
//!   a simulated bank, with the AK's qualified name under the EK as
//!   qualifiedSigner, the clock (resetCount/restartCount) of this simulated
//!   boot, signed with the AK.
//!
//! Keys are derived from a per-run seed and the host index
//! ([`SoftTpm::derive`]): the `run` command needs no stored private key
//! per host, and the same host presents the same EK and AK every time it
//! connects (the server then finds its enrolment, as for a real host).
//!
//! The simulated PCR bank is a measured-launch host's ([`Bank::golden`]):
//! PCR 0-7 firmware measurements, PCR 17 a TXT hash start of a SINIT plus a
//! launch policy, PCR 18 the MLE, PCR 19 the modules; [`Bank::rogue`] has
//! another SINIT in PCR 17 (what `--failing-fraction` and `--flip` send).
//! A run whose hosts send a real UEFI event log quotes [`Banks::from_uefi_log`]
//! instead: PCRs 0-16 as that log replays, 17-19 as above.

use anyhow::{anyhow, bail, Context};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::{Digest, Sha256};
use trustpool_evidence::credential::{hmac, kdfa, kdfe};
use trustpool_evidence::eventlog::{self, replay::replay, Alg};
use trustpool_evidence::marshal;
use trustpool_evidence::pcr::{drtm_hash_start, extend};
use trustpool_evidence::tpm::{
    attr, parse_public, ClockInfo, EccCurve, HashAlg, PublicKey, Scheme, SymDef, TpmPublic,
    TpmSignature,
};

/// The authPolicy of the TCG default EK templates (PolicySecret(TPM_RH_ENDORSEMENT)).
pub const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// objectAttributes of the TCG default EK templates (0x000300b2).
pub const EK_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

/// objectAttributes of an AK as tss-esapi's `create_ak` makes it.
pub const AK_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::RESTRICTED
    | attr::SIGN;

/// `firmwareVersion` the simulated TPMs sign (swtpm 0.7.1's).
pub const FIRMWARE_VERSION: u64 = 0x2019_1023_0016_3636;

/// Number of PCRs of the simulated sha256 bank.
pub const PCR_COUNT: usize = 24;

/// A simulated sha256 PCR bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bank(pub [[u8; 32]; PCR_COUNT]);

fn measure(what: &str) -> [u8; 32] {
    Sha256::digest(what.as_bytes()).into()
}

impl Bank {
    /// The golden build every simulated host runs: the values the policy
    /// written by `trustpool-loadgen pki` allows.
    pub fn golden() -> Bank {
        Self::with_sinit("trustpool-loadgen SINIT 1.0")
    }

    /// The golden build with another SINIT measured into PCR 17: a
    /// non-golden host (`pcr.not_allowed` for PCR 17).
    pub fn rogue() -> Bank {
        Self::with_sinit("trustpool-loadgen rogue SINIT")
    }

    fn with_sinit(sinit: &str) -> Bank {
        let mut pcrs = [[0u8; 32]; PCR_COUNT];
        for (i, pcr) in pcrs.iter_mut().enumerate().take(8) {
            *pcr = extend(
                &[0u8; 32],
                &measure(&format!("trustpool-loadgen firmware {i}")),
            );
            *pcr = extend(pcr, &measure("EV_SEPARATOR"));
        }
        // TXT: hash start of the SINIT, then the launch policy (PCR 17);
        // MLE (18) and modules (19) extended from the zero value a dynamic
        // launch leaves in 18-22.
        pcrs[17] = extend(
            &drtm_hash_start(sinit.as_bytes()),
            &measure("trustpool-loadgen tb_policy"),
        );
        pcrs[18] = extend(&[0u8; 32], &measure("trustpool-loadgen MLE (tboot)"));
        pcrs[19] = extend(&[0u8; 32], &measure("trustpool-loadgen kernel+initrd"));
        Bank(pcrs)
    }

    /// This bank with PCRs 0-16 replaced by `firmware`.
    fn with_firmware(mut self, firmware: &[[u8; 32]; FIRST_DRTM_PCR]) -> Bank {
        self.0[..FIRST_DRTM_PCR].copy_from_slice(firmware);
        self
    }

    /// Value of PCR `index` (None past the bank).
    pub fn get(&self, index: u32) -> Option<[u8; 32]> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
    }
}

/// First PCR of the dynamic-launch range (17-22), which a UEFI (SRTM)
/// event log never covers: the TXT measurements of [`Bank`] stay there.
pub const FIRST_DRTM_PCR: usize = 17;

/// The banks the hosts of a run quote: the golden build, and the same with
/// a rogue SINIT in PCR 17 (`--failing-fraction`, `--flip`). Built once
/// per run and shared by every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banks {
    /// What the policy written by `pki` allows.
    pub golden: Bank,
    /// [`Banks::golden`] with another SINIT in PCR 17.
    pub rogue: Bank,
}

impl Banks {
    /// The synthetic firmware of [`Bank::golden`] and [`Bank::rogue`]
    /// (hosts that send no event log).
    pub fn synthetic() -> Banks {
        Banks {
            golden: Bank::golden(),
            rogue: Bank::rogue(),
        }
    }

    /// The banks of hosts whose firmware measured what the UEFI event log
    /// `log` records: PCRs 0-16 are the log's sha256 replay (a PCR the log
    /// does not extend keeps the value TPM2_Startup gave it, as on a real
    /// TPM, so the server's replay agrees on every PCR of the log's
    /// domain), PCRs 17-19 the simulated measured launch of
    /// [`Banks::synthetic`] — PCR 17 is not the UEFI log's, so the rogue
    /// bank still differs in PCR 17 only.
    ///
    /// Errors when the log does not parse, has no sha256 bank, does not
    /// replay, or extends no PCR below 17 (not a UEFI log).
    pub fn from_uefi_log(log: &[u8]) -> anyhow::Result<Banks> {
        let parsed = eventlog::parse(log).context("the UEFI event log does not parse")?;
        if !parsed.banks().contains(&Alg::Sha256) {
            let banks: Vec<String> = parsed.banks().iter().map(ToString::to_string).collect();
            bail!(
                "the UEFI event log has no sha256 bank (it has: {}); the simulated TPM quotes sha256",
                banks.join(", ")
            );
        }
        let replayed = replay(&parsed).context("the UEFI event log does not replay")?;
        let sha256 = replayed
            .bank(Alg::Sha256)
            .context("the UEFI event log's replay has no sha256 bank")?;
        if !sha256
            .extended_pcrs()
            .iter()
            .any(|&p| usize::from(p) < FIRST_DRTM_PCR)
        {
            bail!("the event log extends no PCR below 17: not a UEFI (SRTM) log");
        }
        let mut firmware = [[0u8; 32]; FIRST_DRTM_PCR];
        for (pcr, value) in (0u8..).zip(firmware.iter_mut()) {
            let replayed = sha256
                .value(pcr)
                .with_context(|| format!("the replay has no PCR {pcr}"))?;
            *value = replayed
                .try_into()
                .with_context(|| format!("the replayed PCR {pcr} is not 32 bytes"))?;
        }
        Ok(Banks {
            golden: Bank::golden().with_firmware(&firmware),
            rogue: Bank::rogue().with_firmware(&firmware),
        })
    }

    /// The bank to quote.
    pub fn pick(&self, rogue: bool) -> Bank {
        if rogue {
            self.rogue
        } else {
            self.golden
        }
    }
}

/// The PCRs the policy written by `pki` pins (the pool's default selection).
pub const POLICY_PCRS: [u8; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19];

/// Derives a valid P-256 secret key from `seed`, the host index and a label.
fn derive_key(seed: &[u8; 32], host: u32, label: &str) -> p256::SecretKey {
    let mut counter = 0u32;
    loop {
        let mut h = Sha256::new();
        h.update(b"trustpool-loadgen key\0");
        h.update(label.as_bytes());
        h.update(seed);
        h.update(host.to_be_bytes());
        h.update(counter.to_be_bytes());
        let bytes: [u8; 32] = h.finalize().into();
        // Fails only for 0 or values >= n (probability ~2^-32).
        if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
            return key;
        }
        counter += 1;
    }
}

fn ecc_public(key: &p256::SecretKey) -> PublicKey {
    let pt = key.public_key().to_encoded_point(false);
    PublicKey::Ecc {
        curve: EccCurve::NistP256,
        x: pt.x().map(|x| x.to_vec()).unwrap_or_default(),
        y: pt.y().map(|y| y.to_vec()).unwrap_or_default(),
    }
}

/// The quote a simulated host sends for one challenge.
#[derive(Debug, Clone)]
pub struct Quote {
    /// TPMS_ATTEST bytes.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE bytes.
    pub signature: Vec<u8>,
    /// (index, value) of the quoted PCRs, in selection order.
    pub pcr_values: Vec<(u32, Vec<u8>)>,
}

/// One simulated host's TPM: EK, AK, PCR bank and clock.
pub struct SoftTpm {
    ek_key: p256::SecretKey,
    ak_key: p256::ecdsa::SigningKey,
    /// The EK's TPMT_PUBLIC, as sent in Hello.
    pub ek_public: Vec<u8>,
    /// The AK's TPMT_PUBLIC, as sent in Hello.
    pub ak_public: Vec<u8>,
    ek: TpmPublic,
    ak_name: Vec<u8>,
    qualified_signer: Vec<u8>,
    /// The PCR values quoted.
    pub bank: Bank,
    /// resetCount / restartCount of the simulated boot.
    pub reset_count: u32,
    /// TPM2_Startup(STATE) count since the last reset.
    pub restart_count: u32,
}

impl SoftTpm {
    /// The TPM of host `index` of a run whose seed is `seed`.
    pub fn derive(seed: &[u8; 32], index: u32) -> anyhow::Result<SoftTpm> {
        let ek_key = derive_key(seed, index, "ek");
        let ak_key = derive_key(seed, index, "ak");
        let ek_public = marshal::encode_public(
            HashAlg::Sha256,
            EK_ATTRS,
            &EK_AUTH_POLICY,
            &ecc_public(&ek_key),
            Some(&SymDef::aes_cfb(128)),
            &Scheme::Null,
        )
        .map_err(|e| anyhow!("encoding the EK public: {e}"))?;
        let ak_public = marshal::encode_public(
            HashAlg::Sha256,
            AK_ATTRS,
            &[],
            &ecc_public(&ak_key),
            None,
            &Scheme::EcDsa(HashAlg::Sha256),
        )
        .map_err(|e| anyhow!("encoding the AK public: {e}"))?;
        let ek = parse_public(&ek_public).map_err(|e| anyhow!("EK public: {e}"))?;
        let ak = parse_public(&ak_public).map_err(|e| anyhow!("AK public: {e}"))?;
        Ok(SoftTpm {
            ak_key: p256::ecdsa::SigningKey::from(&ak_key),
            ek_key,
            ak_name: ak.name(),
            qualified_signer: ak.qualified_name_under_ek(&ek),
            ek,
            ek_public,
            ak_public,
            bank: Bank::golden(),
            reset_count: 1,
            restart_count: 0,
        })
    }

    /// The EK's public key as an uncompressed SEC1 point (for the EK certificate).
    pub fn ek_sec1(&self) -> Vec<u8> {
        self.ek_key
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// The AK's TPM name.
    #[cfg(test)]
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }

    /// The parsed EK public.
    #[cfg(test)]
    pub fn ek(&self) -> &TpmPublic {
        &self.ek
    }

    /// TPM2_ActivateCredential(AK, EK, credentialBlob, secret) in software:
    /// the credential the server protected to this EK for this AK's name.
    pub fn activate_credential(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        // TPMS_ECC_POINT: u16 len || x || u16 len || y.
        let (ex, rest) = take_2b(encrypted_secret).context("encrypted secret: point x")?;
        let (ey, rest) = take_2b(rest).context("encrypted secret: point y")?;
        if !rest.is_empty() || ex.len() > 32 || ey.len() > 32 {
            bail!("the encrypted secret is not a P-256 TPMS_ECC_POINT");
        }
        let mut sec1 = vec![0x04];
        sec1.extend(std::iter::repeat_n(0, 32 - ex.len()));
        sec1.extend_from_slice(ex);
        sec1.extend(std::iter::repeat_n(0, 32 - ey.len()));
        sec1.extend_from_slice(ey);
        let eph = p256::PublicKey::from_sec1_bytes(&sec1)
            .map_err(|_| anyhow!("the ephemeral point is not on P-256"))?;
        let shared = p256::ecdh::diffie_hellman(self.ek_key.to_nonzero_scalar(), eph.as_affine());
        let ek_x = match &self.ek.key {
            PublicKey::Ecc { x, .. } => x.as_slice(),
            PublicKey::Rsa { .. } => bail!("the EK is not an ECC key"),
        };
        let seed = kdfe(
            HashAlg::Sha256,
            shared.raw_secret_bytes(),
            b"IDENTITY",
            ex,
            ek_x,
            256,
        );
        // credentialBlob: u16 len || outer HMAC || encIdentity.
        let (outer_hmac, enc_identity) = take_2b(credential_blob).context("credential blob")?;
        let hmac_key = kdfa(HashAlg::Sha256, &seed, b"INTEGRITY", &[], &[], 256);
        let expected = hmac(HashAlg::Sha256, &hmac_key, &[enc_identity, &self.ak_name]);
        if expected.len() != outer_hmac.len()
            || expected
                .iter()
                .zip(outer_hmac)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            bail!("TPM_RC_INTEGRITY: the credential's HMAC does not verify (not made for this EK and AK)");
        }
        let sym_key = kdfa(HashAlg::Sha256, &seed, b"STORAGE", &self.ak_name, &[], 128);
        let mut identity = enc_identity.to_vec();
        {
            use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
            cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
                .map_err(|_| anyhow!("AES-128 key"))?
                .decrypt(&mut identity);
        }
        let (secret, rest) = take_2b(&identity).context("decrypted identity")?;
        if !rest.is_empty() {
            bail!("the decrypted identity has trailing bytes");
        }
        Ok(secret.to_vec())
    }

    /// TPM2_Quote over the sha256 PCRs `selection` (ascending, as the
    /// server sends them) with `extra_data` (the qualifying data), at
    /// `clock_ms` of the simulated TPM clock.
    pub fn quote(
        &self,
        extra_data: &[u8],
        selection: &[u32],
        clock_ms: u64,
    ) -> anyhow::Result<Quote> {
        let mut indices = Vec::with_capacity(selection.len());
        let mut pcr_values = Vec::with_capacity(selection.len());
        let mut digest = Sha256::new();
        for &i in selection {
            let value = self
                .bank
                .get(i)
                .ok_or_else(|| anyhow!("the server asked for PCR {i}, past the bank"))?;
            indices.push(u8::try_from(i).map_err(|_| anyhow!("PCR index {i}"))?);
            digest.update(value);
            pcr_values.push((i, value.to_vec()));
        }
        let attest = marshal::encode_quote_attest(
            &self.qualified_signer,
            extra_data,
            &ClockInfo {
                clock: clock_ms,
                reset_count: self.reset_count,
                restart_count: self.restart_count,
                safe: true,
            },
            FIRMWARE_VERSION,
            &[(HashAlg::Sha256, indices)],
            &digest.finalize(),
        )
        .map_err(|e| anyhow!("encoding the quote: {e}"))?;
        let signature = self.sign(&attest)?;
        Ok(Quote {
            attest,
            signature,
            pcr_values,
        })
    }

    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let digest = Sha256::digest(message);
        let sig: p256::ecdsa::Signature = self
            .ak_key
            .sign_prehash(&digest)
            .map_err(|e| anyhow!("ECDSA signing: {e}"))?;
        let (r, s) = sig.split_bytes();
        marshal::encode_signature(&TpmSignature::EcDsa {
            hash: HashAlg::Sha256,
            r: r.to_vec(),
            s: s.to_vec(),
        })
        .map_err(|e| anyhow!("encoding the signature: {e}"))
    }
}

/// Splits `u16 len || data || rest`.
fn take_2b(bytes: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    let (len, rest) = match bytes {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => bail!("{} bytes: too short for a size field", bytes.len()),
    };
    if rest.len() < len {
        bail!("size field says {len} bytes, {} follow", rest.len());
    }
    Ok(rest.split_at(len))
}

/// The hardening report a simulated host sends: the one check the pool
/// policy requires (`mac.enforcing_any`), passing; `params_digest` echoes
/// the challenge's check parameters like the real agent
/// (agent/src/report.rs). Canonical bytes, as hashed into the quote.
pub fn hardening_report(check_params_json: &str) -> Vec<u8> {
    use trustpool_hardening::{CheckResult, Report, Role, Severity, Status};
    let mut report = Report::new(
        Role::Compute,
        "/",
        vec![CheckResult {
            id: REQUIRED_CHECK.into(),
            status: Status::Pass,
            severity: Severity::High,
            title: "A mandatory access control system is enforcing".into(),
            reason: "simulated host (trustpool-loadgen): AppArmor enforcing".into(),
            evidence: vec![],
            items: vec![],
            remediation: String::new(),
            refs: vec![],
        }],
    );
    if !check_params_json.is_empty() {
        report.params_digest = Some(hex::encode(Sha256::digest(check_params_json.as_bytes())));
    }
    report.canonical_bytes()
}

/// The hardening check the loadgen policy requires.
pub const REQUIRED_CHECK: &str = "mac.enforcing_any";

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::binding::qualifying_data;
    use trustpool_evidence::credential::make_credential;
    use trustpool_evidence::quote::{verify_quote, QuoteCheck};

    fn tpm(i: u32) -> SoftTpm {
        SoftTpm::derive(&[7u8; 32], i).expect("derive")
    }

    #[test]
    fn keys_are_deterministic_per_host_and_distinct_between_hosts() {
        assert_eq!(tpm(1).ek_public, tpm(1).ek_public);
        assert_eq!(tpm(1).ak_public, tpm(1).ak_public);
        assert_ne!(tpm(1).ek_public, tpm(2).ek_public);
        assert_ne!(tpm(1).ak_public, tpm(2).ak_public);
        let other_seed = SoftTpm::derive(&[8u8; 32], 1).expect("derive");
        assert_ne!(tpm(1).ek_public, other_seed.ek_public);
    }

    #[test]
    fn keys_have_the_attributes_the_server_checks() {
        let t = tpm(3);
        let ak = parse_public(&t.ak_public).expect("AK parses");
        ak.check_ak_attributes().expect("a valid AK");
        t.ek().check_ek_attributes().expect("a valid EK");
        assert_eq!(t.ek().attributes, 0x0003_00b2);
    }

    #[test]
    fn credential_activation_round_trip_with_the_servers_make_credential() {
        let t = tpm(4);
        let secret = [0x5au8; 32];
        let cred =
            make_credential(t.ek(), t.ak_name(), &secret, &mut rand::thread_rng()).expect("make");
        let got = t
            .activate_credential(&cred.credential_blob, &cred.encrypted_secret)
            .expect("activate");
        assert_eq!(got, secret);
        // Made for another AK (or EK): the integrity check refuses it.
        let other = tpm(5);
        let wrong =
            make_credential(t.ek(), other.ak_name(), &secret, &mut rand::thread_rng()).unwrap();
        let e = t
            .activate_credential(&wrong.credential_blob, &wrong.encrypted_secret)
            .unwrap_err();
        assert!(e.to_string().contains("TPM_RC_INTEGRITY"), "{e}");
        // Garbage is an error, not a panic.
        assert!(t.activate_credential(&[1], &[0, 40]).is_err());
        assert!(t.activate_credential(&cred.credential_blob, &[]).is_err());
    }

    #[test]
    fn a_quote_verifies_with_the_evidence_crates_verify_quote() {
        let t = tpm(6);
        let nonce = [9u8; 32];
        let report = hardening_report("");
        let qd = qualifying_data(&nonce, &report);
        let selection: Vec<u32> = POLICY_PCRS.iter().map(|&p| u32::from(p)).collect();
        let q = t.quote(&qd, &selection, 12_345).expect("quote");
        let ak = parse_public(&t.ak_public).unwrap();
        let verified = verify_quote(&QuoteCheck {
            attest: &q.attest,
            signature: &q.signature,
            ak: &ak,
            ek: Some(t.ek()),
            expected_extra_data: &qd,
            expected_pcrs: &POLICY_PCRS,
            pcr_values: &q.pcr_values,
        })
        .expect("the quote verifies");
        assert_eq!(verified.attest.clock_info.clock, 12_345);
        assert_eq!(verified.attest.clock_info.reset_count, 1);
        assert_eq!(verified.pcrs[&17], Bank::golden().0[17]);
        // Another host's AK does not verify it.
        let other = parse_public(&tpm(7).ak_public).unwrap();
        assert!(verify_quote(&QuoteCheck {
            ak: &other,
            ek: Some(t.ek()),
            attest: &q.attest,
            signature: &q.signature,
            expected_extra_data: &qd,
            expected_pcrs: &POLICY_PCRS,
            pcr_values: &q.pcr_values,
        })
        .is_err());
    }

    #[test]
    fn golden_and_rogue_banks_differ_only_in_pcr_17_and_show_a_launch() {
        let (g, r) = (Bank::golden(), Bank::rogue());
        for i in 0..PCR_COUNT {
            assert_eq!(g.0[i] == r.0[i], i != 17, "PCR {i}");
        }
        assert!(!trustpool_evidence::pcr::is_reset_drtm(&g.0[17]));
        assert!(!trustpool_evidence::pcr::is_zero(&g.0[18]));
    }

    const OVMF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../evidence/testdata/eventlog/ovmf/"
    );

    fn ovmf_default() -> Vec<u8> {
        std::fs::read(format!("{OVMF}ovmf-default.bin")).expect("the OVMF log")
    }

    #[test]
    fn banks_from_a_uefi_log_hold_its_replay_below_17_and_the_launch_above() {
        let banks = Banks::from_uefi_log(&ovmf_default()).expect("banks");
        let pcrs: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{OVMF}ovmf-default.pcrs.json")).expect("pcrs"),
        )
        .expect("json");
        for i in 0..8 {
            let want = pcrs["sha256"][i.to_string()].as_str().expect("a value");
            assert_eq!(hex::encode(banks.golden.0[i]), want, "PCR {i}");
            assert_eq!(banks.rogue.0[i], banks.golden.0[i], "PCR {i}");
        }
        // The synthetic firmware is gone; the measured launch stays.
        let synthetic = Banks::synthetic();
        assert_ne!(banks.golden.0[0], synthetic.golden.0[0]);
        for i in FIRST_DRTM_PCR..PCR_COUNT {
            assert_eq!(banks.golden.0[i], synthetic.golden.0[i], "PCR {i}");
            assert_eq!(banks.rogue.0[i], synthetic.rogue.0[i], "PCR {i}");
        }
        for i in 0..PCR_COUNT {
            assert_eq!(banks.golden.0[i] == banks.rogue.0[i], i != 17, "PCR {i}");
        }
        assert_eq!(banks.pick(true), banks.rogue);
        assert_eq!(banks.pick(false), banks.golden);
    }

    #[test]
    fn a_file_that_is_no_usable_uefi_log_is_refused_with_the_reason() {
        let e = Banks::from_uefi_log(b"not a log").unwrap_err();
        assert!(format!("{e:#}").contains("does not parse"), "{e:#}");
        assert!(Banks::from_uefi_log(&[]).is_err());
        // A legacy SHA-1 log has no sha256 bank.
        let mut sha1 = Vec::new();
        for (pcr, data) in [(0u32, b"firmware".as_slice()), (7, b"separator")] {
            sha1.extend(pcr.to_le_bytes());
            sha1.extend(0x0000_0001u32.to_le_bytes()); // EV_POST_CODE
            sha1.extend([0x11u8; 20]);
            sha1.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
            sha1.extend(data);
        }
        let e = Banks::from_uefi_log(&sha1).unwrap_err();
        assert!(format!("{e:#}").contains("no sha256 bank"), "{e:#}");
    }

    #[test]
    fn the_report_parses_and_echoes_the_params_digest() {
        let r = trustpool_hardening::Report::from_slice(&hardening_report("{\"a\":1}")).unwrap();
        assert_eq!(r.status_map()[REQUIRED_CHECK], "pass");
        assert_eq!(
            r.params_digest.as_deref(),
            Some(hex::encode(Sha256::digest(b"{\"a\":1}")).as_str())
        );
        assert!(
            trustpool_hardening::Report::from_slice(&hardening_report(""))
                .unwrap()
                .params_digest
                .is_none()
        );
    }
}
