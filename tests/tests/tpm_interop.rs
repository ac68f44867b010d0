//! TPM interoperability tests against real swtpm instances: the agent's TPM
//! layer (`trustpool_agent::tpm`), the pure verifier (`trustpool_evidence`)
//! and tpm2-tools 5.4 as an independent implementation, both ways.
//!
//! Every test starts its own swtpm(s) on free ports in its own temp
//! directories, so the tests run concurrently.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use rand::RngCore;
use tempfile::TempDir;
use trustpool_agent::tpm::{rc, AkAlg, EkAlg, Identity, Quote, Tpm, TpmError, TpmWorker};
use trustpool_evidence::tpm::{attr, parse_public, parse_public_2b, TpmPublic};
use trustpool_tests::swtpm::{self, EkCa, Swtpm, SwtpmState};

/// SRTM 0-7 and DRTM 17-19: the default selection of DESIGN.md §3.
const PCRS: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19];

/// One simulated host: temp dir, TPM state, running swtpm, agent state dir.
struct Host {
    tmp: TempDir,
    sw: Swtpm,
}

impl Host {
    fn new(ca: Option<&EkCa>) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let state = SwtpmState::provision(&tmp.path().join("tpm"), ca).unwrap();
        let sw = Swtpm::start(&state).unwrap();
        Host { tmp, sw }
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn open(&self, dir: &str, ek: EkAlg, ak: AkAlg) -> Tpm {
        Tpm::open(&self.sw.tcti(), &self.agent_dir(dir), ek, ak).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pcr_indices(pcrs: &[u32]) -> Vec<u8> {
    pcrs.iter().map(|&p| p as u8).collect()
}

fn verify(q: &Quote, ak: &TpmPublic, nonce: &[u8], pcrs: &[u32]) -> Result<(), String> {
    verify_under(q, ak, None, nonce, pcrs).map_err(|codes| format!("{codes:?}"))
}

/// Verifies with the EK too (qualifiedSigner = the AK's qualified name
/// under it); the error is the list of reason codes and messages.
fn verify_under(
    q: &Quote,
    ak: &TpmPublic,
    ek: Option<&TpmPublic>,
    nonce: &[u8],
    pcrs: &[u32],
) -> Result<(), Vec<trustpool_evidence::reason::Reason>> {
    let expected = pcr_indices(pcrs);
    trustpool_evidence::quote::verify_quote(&trustpool_evidence::quote::QuoteCheck {
        attest: &q.attest,
        signature: &q.signature,
        ak,
        ek,
        expected_extra_data: nonce,
        expected_pcrs: &expected,
        pcr_values: &q.pcr_values,
    })
    .map(|_| ())
}

// ---------------------------------------------------------------------------
// tpm2-tools helpers

fn tpm2(sw: &Swtpm, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", sw.tcti())
        // tpm2-tss logs to stderr; keep it, it is only shown on failure
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `tpm2_checkquote` needs no TPM.
fn checkquote(dir: &Path, nonce_hex: &str) -> Result<String, String> {
    let out = Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args([
            "-u", "ak.pub", "-m", "msg", "-s", "sig", "-f", "pcrs", "-g", "sha256",
        ])
        .args(["-q", nonce_hex])
        .output()
        .map_err(|e| format!("cannot run tpm2_checkquote: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "tpm2_checkquote failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Size of the C structs tpm2-tools 5.4 `fwrite`s into a `tpm2_quote -o`
/// (serialized format) PCR file, x86_64/aarch64 layout:
/// TPML_PCR_SELECTION = u32 count + 16 x TPMS_PCR_SELECTION {u16 hash,
/// u8 sizeofSelect, u8 pcrSelect[4], 1 byte padding}; TPML_DIGEST = u32 count
/// + 8 x TPM2B_DIGEST {u16 size, u8 buffer[64]}. Integers little-endian.
const TPML_PCR_SELECTION_SIZE: usize = 4 + 16 * 8;
const TPM2B_DIGEST_SIZE: usize = 2 + 64;
const TPML_DIGEST_SIZE: usize = 4 + 8 * TPM2B_DIGEST_SIZE;

/// Writes sha256 PCR values (ascending) in tpm2-tools' serialized PCR file
/// format (`pcr_fwrite_serialized`): TPML_PCR_SELECTION, u32 number of
/// TPML_DIGESTs, the TPML_DIGESTs with at most 8 digests each (as PCR_Read
/// returns them).
fn tpm2_pcr_file(values: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; TPML_PCR_SELECTION_SIZE];
    out[0..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..6].copy_from_slice(&0x000bu16.to_le_bytes()); // TPM_ALG_SHA256
    out[6] = 3; // sizeofSelect
    for (pcr, _) in values {
        out[7 + (*pcr as usize) / 8] |= 1 << (pcr % 8);
    }
    let chunks: Vec<_> = values.chunks(8).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        let mut d = vec![0u8; TPML_DIGEST_SIZE];
        d[0..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        for (i, (_, v)) in chunk.iter().enumerate() {
            let off = 4 + i * TPM2B_DIGEST_SIZE;
            d[off..off + 2].copy_from_slice(&(v.len() as u16).to_le_bytes());
            d[off + 2..off + 2 + v.len()].copy_from_slice(v);
        }
        out.extend_from_slice(&d);
    }
    out
}

/// Parses a tpm2-tools serialized PCR file with one sha256 bank.
fn parse_tpm2_pcr_file(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let le16 = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    assert_eq!(le32(0), 1, "one bank");
    assert_eq!(le16(4), 0x000b, "sha256 bank");
    let size_of_select = b[6] as usize;
    let pcrs: Vec<u32> = (0..size_of_select * 8)
        .filter(|i| b[7 + i / 8] & (1 << (i % 8)) != 0)
        .map(|i| i as u32)
        .collect();
    let lists = le32(TPML_PCR_SELECTION_SIZE) as usize;
    assert_eq!(
        b.len(),
        TPML_PCR_SELECTION_SIZE + 4 + lists * TPML_DIGEST_SIZE,
        "file size"
    );
    let mut digests = Vec::new();
    for l in 0..lists {
        let base = TPML_PCR_SELECTION_SIZE + 4 + l * TPML_DIGEST_SIZE;
        for i in 0..le32(base) as usize {
            let off = base + 4 + i * TPM2B_DIGEST_SIZE;
            let size = le16(off) as usize;
            digests.push(b[off + 2..off + 2 + size].to_vec());
        }
    }
    assert_eq!(pcrs.len(), digests.len());
    pcrs.into_iter().zip(digests).collect()
}

/// TPM2B_PUBLIC ("tss" format of tpm2-tools) from a TPMT_PUBLIC.
fn tpm2b(tpmt: &[u8]) -> Vec<u8> {
    let mut v = (tpmt.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(tpmt);
    v
}

fn ek_trust(ca: &EkCa) -> trustpool_evidence::ekcert::EkTrust {
    let mut ders = Vec::new();
    for p in [ca.root_cert_pem_path(), ca.intermediate_cert_pem_path()] {
        let pem = fs::read_to_string(&p).unwrap();
        ders.extend(trustpool_evidence::ekcert::pem_to_der_certs(&pem).unwrap());
    }
    trustpool_evidence::ekcert::EkTrust::from_der_certs(ders).unwrap()
}

fn check_ak(id: &Identity) -> TpmPublic {
    let ak = parse_public(&id.ak_public).unwrap();
    for (bit, name) in [
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::RESTRICTED, "restricted"),
        (attr::SIGN, "sign"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ] {
        assert!(ak.attributes & bit != 0, "AK attribute {name} not set");
    }
    assert_eq!(ak.attributes & attr::DECRYPT, 0, "AK must not decrypt");
    ak.check_ak_attributes().unwrap();
    assert_eq!(ak.name(), id.ak_name, "AK name = nameAlg || H(TPMT_PUBLIC)");
    ak
}

// ---------------------------------------------------------------------------

/// Identity: the EK public areas of RSA-2048 and P-384 EKs match the EK
/// certificates swtpm_setup put in NV (chain to the EkCa root through its
/// intermediate); the AK is a restricted, fixedTPM/fixedParent signing key;
/// a restarted swtpm + reopened agent keeps EK and AK (state dir); a cleared
/// TPM (new EPS) makes the agent create a new AK instead of failing.
#[test]
fn identity_ek_certificates_and_persistent_ak() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = EkCa::create(ca_dir.path()).unwrap();
    let trust = ek_trust(&ca);
    let mut host = Host::new(Some(&ca));

    let mut rsa = host.open("agent-rsa", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let id = rsa.identity().unwrap();
    let ek = parse_public(&id.ek_public).unwrap();
    ek.check_ek_attributes().unwrap();
    let cert = id
        .ek_certificate
        .clone()
        .expect("RSA EK certificate in NV 0x01c00002");
    trustpool_evidence::ekcert::verify_ek_certificate(&trust, &cert, &[], &ek, now_unix()).unwrap();
    let ak = check_ak(&id);
    assert!(matches!(
        ak.key,
        trustpool_evidence::tpm::PublicKey::Rsa { .. }
    ));
    // identity is stable within one agent run
    assert_eq!(rsa.identity().unwrap(), id);

    let mut p384 = host.open("agent-p384", EkAlg::EccP384, AkAlg::EcdsaP256);
    let id384 = p384.identity().unwrap();
    let ek384 = parse_public(&id384.ek_public).unwrap();
    let cert384 = id384
        .ek_certificate
        .clone()
        .expect("P-384 EK certificate in NV 0x01c00016");
    trustpool_evidence::ekcert::verify_ek_certificate(&trust, &cert384, &[], &ek384, now_unix())
        .unwrap();
    check_ak(&id384);
    // a certificate does not vouch for another EK
    assert!(trustpool_evidence::ekcert::verify_ek_certificate(
        &trust,
        &cert,
        &[],
        &ek384,
        now_unix()
    )
    .is_err());
    drop(p384);

    // swtpm 0.7 provisions no P-256 EK certificate: None, not an error
    let mut p256 = host.open("agent-p256", EkAlg::EccP256, AkAlg::RsaSsa2048);
    let id256 = p256.identity().unwrap();
    assert_eq!(id256.ek_certificate, None);
    drop(p256);

    // the AK blobs are private files
    for f in ["ak.pub", "ak.priv"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(host.agent_dir("agent-rsa").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // Reboot: an open Tpm reconnects by itself if swtpm comes back on the
    // same port; a reopened agent finds its AK in the state dir.
    let port = host.sw.port;
    host.sw.restart().unwrap();
    if host.sw.port == port {
        assert_eq!(rsa.identity().unwrap(), id, "reconnect after TPM restart");
    }
    drop(rsa);
    let mut rsa = host.open("agent-rsa", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    assert_eq!(rsa.identity().unwrap(), id, "same EK and AK after restart");
    drop(rsa);

    // TPM cleared / replaced (new endorsement seed): the stored AK cannot be
    // loaded; the agent says so and makes a new one instead of failing.
    host.sw.stop();
    let state = SwtpmState::provision(host.sw.state_dir(), None).unwrap();
    host.sw = Swtpm::start(&state).unwrap();
    let mut rsa = host.open("agent-rsa", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let new_id = rsa.identity().unwrap();
    assert_ne!(new_id.ek_public, id.ek_public);
    assert_ne!(new_id.ak_name, id.ak_name);
    assert_eq!(new_id.ek_certificate, None);
    check_ak(&new_id);
    let nonce = random_bytes(32);
    let q = rsa.quote(&nonce, &PCRS).unwrap();
    verify(&q, &parse_public(&new_id.ak_public).unwrap(), &nonce, &PCRS).unwrap();
}

/// Software MakeCredential (trustpool_evidence::credential) is accepted by a
/// real TPM2_ActivateCredential for RSA-2048, ECC P-384 and ECC P-256 EKs; a
/// blob for another AK name or another TPM's EK fails cleanly with
/// TPM_RC_INTEGRITY and the TPM stays usable.
#[test]
fn software_make_credential_activates_on_rsa_and_ecc_eks() {
    let host = Host::new(None);
    let other = Host::new(None);
    let mut other_tpm = other.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let other_id = other_tpm.identity().unwrap();
    let other_ek = parse_public(&other_id.ek_public).unwrap();
    drop(other_tpm);

    for (ek_alg, ak_alg) in [
        (EkAlg::Rsa2048, AkAlg::RsaSsa2048),
        (EkAlg::EccP384, AkAlg::RsaSsa2048),
        (EkAlg::EccP256, AkAlg::EcdsaP256),
    ] {
        let mut tpm = host.open(&format!("agent-{ek_alg}"), ek_alg, ak_alg);
        let id = tpm.identity().unwrap();
        let ek = parse_public(&id.ek_public).unwrap();
        let mut rng = rand::thread_rng();

        for _ in 0..2 {
            let secret = random_bytes(32);
            let c = trustpool_evidence::credential::make_credential(
                &ek,
                &id.ak_name,
                &secret,
                &mut rng,
            )
            .unwrap();
            let got = tpm
                .activate_credential(&c.credential_blob, &c.encrypted_secret)
                .unwrap_or_else(|e| panic!("{ek_alg}: {e}"));
            assert_eq!(got, secret, "{ek_alg}");
        }

        // made for another AK name
        let mut wrong_name = id.ak_name.clone();
        let last = wrong_name.len() - 1;
        wrong_name[last] ^= 1;
        let c =
            trustpool_evidence::credential::make_credential(&ek, &wrong_name, b"secret", &mut rng)
                .unwrap();
        let e = tpm
            .activate_credential(&c.credential_blob, &c.encrypted_secret)
            .unwrap_err();
        assert!(e.is_tpm_rc(rc::INTEGRITY), "{ek_alg}: {e}");

        // made for another TPM's EK
        if ek_alg == EkAlg::Rsa2048 {
            let c = trustpool_evidence::credential::make_credential(
                &other_ek,
                &id.ak_name,
                b"secret",
                &mut rng,
            )
            .unwrap();
            let e = tpm
                .activate_credential(&c.credential_blob, &c.encrypted_secret)
                .unwrap_err();
            assert!(matches!(e, TpmError::Tpm { .. }), "{e}");
        }

        // still usable; the quote names the AK under this EK as its signer
        let nonce = random_bytes(16);
        let q = tpm.quote(&nonce, &PCRS).unwrap();
        let ak = parse_public(&id.ak_public).unwrap();
        verify_under(&q, &ak, Some(&ek), &nonce, &PCRS)
            .unwrap_or_else(|e| panic!("{ek_alg}/{ak_alg}: {e:?}"));
        let e = verify_under(&q, &ak, Some(&other_ek), &nonce, &PCRS).unwrap_err();
        assert_eq!(
            e.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
            vec!["quote.signer_mismatch"],
            "{ek_alg}/{ak_alg}"
        );
        let loaded = tpm.loaded_handles().unwrap();
        assert!(loaded.transient_objects.is_empty(), "{loaded:?}");
        assert!(loaded.loaded_sessions.is_empty(), "{loaded:?}");
    }
}

/// (a) tpm2-tools make EK, AK (RSASSA) and the quote; our pure verifier
/// accepts it with the PCR values from `tpm2_quote -o`, and rejects it once
/// the attestation, the signature, a PCR value or the nonce is changed.
#[test]
fn tpm2_tools_quote_verifies_in_our_verifier() {
    let host = Host::new(None);
    host.sw
        .simulate_measured_launch(b"SINIT ACM", &[[0x11; 32]], &[[0x22; 32], [0x33; 32]])
        .unwrap();
    let dir = host.path("tools");
    fs::create_dir_all(&dir).unwrap();
    let sw = &host.sw;
    tpm2(
        sw,
        &dir,
        &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    )
    .unwrap();
    tpm2(
        sw,
        &dir,
        &[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-s",
            "rsassa",
            "-u",
            "ak.pub",
            "-f",
            "tss",
            "-n",
            "ak.name",
        ],
    )
    .unwrap();
    // tpm2-tools leave EK, AK and a session loaded: swtpm has 3 slots
    tpm2(sw, &dir, &["tpm2_flushcontext", "-t"]).unwrap();
    let nonce = random_bytes(20);
    let nonce_hex = hex::encode(&nonce);
    let pcr_list = "sha256:0,1,2,3,4,5,6,7,17,18,19";
    tpm2(
        sw,
        &dir,
        &[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            pcr_list,
            "-q",
            &nonce_hex,
            "-m",
            "msg",
            "-s",
            "sig",
            "-o",
            "pcrs",
            "-g",
            "sha256",
        ],
    )
    .unwrap();
    tpm2(sw, &dir, &["tpm2_flushcontext", "-t"]).unwrap();

    let ak = parse_public_2b(&fs::read(dir.join("ak.pub")).unwrap()).unwrap();
    assert_eq!(ak.name(), fs::read(dir.join("ak.name")).unwrap());
    let pcr_file = fs::read(dir.join("pcrs")).unwrap();
    let pcr_values = parse_tpm2_pcr_file(&pcr_file);
    // our writer produces byte-identical files
    assert_eq!(tpm2_pcr_file(&pcr_values), pcr_file);
    let expected =
        swtpm::expected_launch_pcrs(b"SINIT ACM", &[[0x11; 32]], &[[0x22; 32], [0x33; 32]]);
    for (pcr, value) in expected {
        let got = pcr_values.iter().find(|(p, _)| *p == pcr).unwrap();
        assert_eq!(got.1, value, "PCR {pcr}");
    }
    let q = Quote {
        attest: fs::read(dir.join("msg")).unwrap(),
        signature: fs::read(dir.join("sig")).unwrap(),
        pcr_values: pcr_values.clone(),
    };
    verify(&q, &ak, &nonce, &PCRS).unwrap();
    // the same values as the agent reads
    let mut tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    assert_eq!(tpm.read_pcrs(&PCRS).unwrap(), pcr_values);
    drop(tpm);

    // tampering
    let mut t = q.clone();
    let n = t.attest.len();
    t.attest[n - 1] ^= 1; // pcrDigest
    assert!(verify(&t, &ak, &nonce, &PCRS).is_err(), "tampered attest");
    let mut t = q.clone();
    let n = t.signature.len();
    t.signature[n - 1] ^= 1;
    assert!(
        verify(&t, &ak, &nonce, &PCRS).is_err(),
        "tampered signature"
    );
    let mut t = q.clone();
    t.pcr_values[9].1[0] ^= 1; // PCR 18
    assert!(
        verify(&t, &ak, &nonce, &PCRS).is_err(),
        "tampered PCR value"
    );
    assert!(
        verify(&q, &ak, &random_bytes(20), &PCRS).is_err(),
        "other nonce"
    );
    assert!(
        verify(&q, &ak, &nonce, &PCRS[..8]).is_err(),
        "other PCR selection"
    );
    // checkquote agrees (sanity check of the tool path itself)
    checkquote(&dir, &nonce_hex).unwrap();
}

/// (b) Quotes made by our Tpm::quote (RSASSA and ECDSA AKs) verify with
/// tpm2_checkquote 5.4, given the AK as TPM2B_PUBLIC, TPMS_ATTEST,
/// TPMT_SIGNATURE, the nonce and the PCRs in tpm2-tools' serialized PCR file
/// format; checkquote rejects a wrong nonce or a changed PCR value.
#[test]
fn our_quote_verifies_with_tpm2_checkquote() {
    let host = Host::new(None);
    host.sw
        .simulate_measured_launch(b"another SINIT", &[[0x44; 32]], &[[0x55; 32]])
        .unwrap();
    for ak_alg in [AkAlg::RsaSsa2048, AkAlg::EcdsaP256] {
        let mut tpm = host.open(&format!("agent-{ak_alg}"), EkAlg::Rsa2048, ak_alg);
        let id = tpm.identity().unwrap();
        let nonce = random_bytes(32);
        let q = tpm.quote(&nonce, &PCRS).unwrap();
        let ak = parse_public(&id.ak_public).unwrap();
        verify(&q, &ak, &nonce, &PCRS).unwrap();

        let dir = host.path(&format!("checkquote-{ak_alg}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ak.pub"), tpm2b(&id.ak_public)).unwrap();
        fs::write(dir.join("msg"), &q.attest).unwrap();
        fs::write(dir.join("sig"), &q.signature).unwrap();
        fs::write(dir.join("pcrs"), tpm2_pcr_file(&q.pcr_values)).unwrap();
        checkquote(&dir, &hex::encode(&nonce)).unwrap_or_else(|e| panic!("{ak_alg}: {e}"));

        let e = checkquote(&dir, &hex::encode(random_bytes(32)));
        assert!(e.is_err(), "{ak_alg}: wrong nonce accepted");
        let mut tampered = q.pcr_values.clone();
        tampered[0].1[31] ^= 1;
        fs::write(dir.join("pcrs"), tpm2_pcr_file(&tampered)).unwrap();
        let e = checkquote(&dir, &hex::encode(&nonce));
        assert!(e.is_err(), "{ak_alg}: tampered PCR accepted");
    }
}

/// TXT simulation: without a launch PCRs 17-22 are all-FF; locality 0 cannot
/// extend PCR 17; after simulate_measured_launch the agent reads PCR 17-19
/// equal to the pure-Rust expectation (trustpool_evidence::pcr arithmetic),
/// PCR 20-22 are zero, the quote over them verifies; a reboot resets them.
#[test]
fn txt_measured_launch_simulation() {
    let mut host = Host::new(None);
    let all: Vec<u32> = (0..=23).collect();
    {
        let mut tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
        for (pcr, value) in tpm.read_pcrs(&all).unwrap() {
            assert_eq!(value, swtpm::reset_value(pcr), "PCR {pcr} after startup");
        }
    }
    // PC Client: the DRTM PCRs cannot be extended from locality 0
    let e = host.sw.extend_pcr_at_locality(17, [1; 32], 0).unwrap_err();
    assert!(format!("{e:#}").contains("bad locality"), "{e:#}");
    let e = host.sw.extend_pcr_at_locality(19, [1; 32], 4).unwrap_err();
    assert!(format!("{e:#}").contains("bad locality"), "{e:#}");
    // ... but PCR 16 (debug) can
    host.sw.extend_pcr(16, [7; 32]).unwrap();

    let sinit = b"simulated SINIT ACM image";
    let mle = [[0xa1; 32], [0xa2; 32]];
    let modules = [[0xb1; 32], [0xb2; 32], [0xb3; 32]];
    host.sw
        .simulate_measured_launch(sinit, &mle, &modules)
        .unwrap();
    // computed with trustpool_evidence::pcr::{drtm_hash_start, extend}
    let expected = swtpm::expected_launch_pcrs(sinit, &mle, &modules);

    let mut tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let values = tpm.read_pcrs(&all).unwrap();
    for (pcr, value) in &expected {
        assert_eq!(values[*pcr as usize].1, value.to_vec(), "PCR {pcr}");
    }
    for (pcr, value) in &values[20..=22] {
        assert_eq!(value, &vec![0u8; 32], "PCR {pcr} after HASH_START");
    }
    assert_eq!(
        values[16].1,
        trustpool_evidence::pcr::extend(&[0; 32], &[7; 32]).to_vec()
    );
    let id = tpm.identity().unwrap();
    let nonce = random_bytes(32);
    let q = tpm.quote(&nonce, &PCRS).unwrap();
    verify(&q, &parse_public(&id.ak_public).unwrap(), &nonce, &PCRS).unwrap();
    drop(tpm);

    host.sw.restart().unwrap();
    let mut tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    for (pcr, value) in tpm.read_pcrs(&[16, 17, 18, 19]).unwrap() {
        assert_eq!(value, swtpm::reset_value(pcr), "PCR {pcr} after reboot");
    }
}

/// Resource hygiene: a long-running agent. 50 quotes (through the async
/// TpmWorker, from concurrent tasks), good and bad activations and PCR reads
/// in one TPM connection leave no transient object and no session loaded in
/// swtpm (which has only 3 of each and no resource manager); afterwards a
/// fresh client can still load 3 objects (and a 4th fails, proving that the
/// limit is real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transient_objects_or_sessions_leak() {
    let host = Host::new(None);
    let tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let worker = TpmWorker::spawn(tpm);
    let id = worker.identity().await.unwrap();
    let ak = parse_public(&id.ak_public).unwrap();
    let ek = parse_public(&id.ek_public).unwrap();

    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..5 {
        let w = worker.clone();
        let ak = ak.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let nonce = format!("task {t} quote {i}").into_bytes();
                let q = w.quote(nonce.clone(), PCRS.to_vec()).await.unwrap();
                verify(&q, &ak, &nonce, &PCRS).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("50 quotes + verifications: {:?}", started.elapsed());

    for i in 0..5 {
        let secret = random_bytes(32);
        let c = trustpool_evidence::credential::make_credential(
            &ek,
            &id.ak_name,
            &secret,
            &mut rand::thread_rng(),
        )
        .unwrap();
        let got = worker
            .activate_credential(c.credential_blob, c.encrypted_secret)
            .await
            .unwrap();
        assert_eq!(got, secret);
        // and a failing one
        let e = worker
            .activate_credential(random_bytes(34 + i), random_bytes(256))
            .await
            .unwrap_err();
        assert!(matches!(e, TpmError::Tpm { .. }), "{e}");
        worker.read_pcrs(vec![17, 18, 19]).await.unwrap();
        worker.identity().await.unwrap();
    }
    let loaded = worker.loaded_handles().await.unwrap();
    assert!(loaded.transient_objects.is_empty(), "{loaded:?}");
    assert!(loaded.loaded_sessions.is_empty(), "{loaded:?}");
    assert_eq!(loaded.transient_avail, Some(3), "{loaded:?}");
    assert_eq!(loaded.sessions_avail, Some(3), "{loaded:?}");
    // stop: the thread ends and the TPM connection is closed; no call after it
    worker.stop().await;
    let e = worker.read_pcrs(vec![0]).await.unwrap_err();
    assert!(matches!(e, TpmError::WorkerGone), "{e}");
    worker.stop().await; // a second stop is harmless

    // independent check with a raw tss-esapi client
    let tcti = host.sw.tcti();
    tokio::task::spawn_blocking(move || {
        use tss_esapi::abstraction::{ek, AsymmetricAlgorithmSelection};
        use tss_esapi::interface_types::ecc::EccCurve;
        use tss_esapi::tcti_ldr::TctiNameConf;
        let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&tcti).unwrap()).unwrap();
        let p256 = AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256);
        let p384 = AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384);
        // ECC primaries are fast on swtpm
        for alg in [p256, p384, p256] {
            ek::create_ek_object_2(&mut ctx, alg, None).unwrap();
        }
        let e = ek::create_ek_object_2(&mut ctx, p384, None).unwrap_err();
        let err = TpmError::Tpm {
            op: "4th CreatePrimary",
            source: e,
        };
        // 0x902 TPM_RC_OBJECT_MEMORY (or 0x903 SESSION_MEMORY for the
        // session create_ek_object_2 starts first)
        assert!(
            err.is_tpm_rc(rc::OBJECT_MEMORY) || err.is_tpm_rc(rc::SESSION_MEMORY),
            "{err}"
        );
    })
    .await
    .unwrap();
}

/// TPM errors come back as TpmError (never a panic) and leave the TPM usable:
/// garbage credential blob and secret, oversized blob, nonce > 64 bytes, PCR
/// index 24, empty PCR selection; the next quote still verifies and nothing
/// stays loaded.
#[test]
fn tpm_errors_leave_the_tpm_usable() {
    let host = Host::new(None);
    let mut tpm = host.open("agent", EkAlg::Rsa2048, AkAlg::RsaSsa2048);
    let id = tpm.identity().unwrap();
    let ak = parse_public(&id.ak_public).unwrap();

    let e = tpm
        .activate_credential(&random_bytes(66), &random_bytes(256))
        .unwrap_err();
    assert!(matches!(e, TpmError::Tpm { .. }), "{e}");
    assert!(e.response_code().is_some(), "{e}");
    assert!(e.to_string().contains("TPM2_ActivateCredential"), "{e}");
    let e = tpm.activate_credential(&[0u8; 4], &[]).unwrap_err();
    assert!(matches!(e, TpmError::InvalidInput { .. }), "{e}");
    let e = tpm
        .activate_credential(&random_bytes(10_000), &random_bytes(256))
        .unwrap_err();
    assert!(matches!(e, TpmError::InvalidInput { .. }), "{e}");
    let e = tpm.quote(&random_bytes(65), &PCRS).unwrap_err();
    assert!(matches!(e, TpmError::InvalidInput { .. }), "{e}");
    let e = tpm.quote(b"n", &[0, 24]).unwrap_err();
    assert!(matches!(e, TpmError::InvalidInput { .. }), "{e}");
    let e = tpm.read_pcrs(&[]).unwrap_err();
    assert!(matches!(e, TpmError::InvalidInput { .. }), "{e}");

    let nonce = random_bytes(32);
    let q = tpm.quote(&nonce, &PCRS).unwrap();
    verify(&q, &ak, &nonce, &PCRS).unwrap();
    // unsorted, duplicated selection is normalised
    let q = tpm.quote(&nonce, &[19, 0, 17, 0]).unwrap();
    assert_eq!(
        q.pcr_values.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![0, 17, 19]
    );
    verify(&q, &ak, &nonce, &[0, 17, 19]).unwrap();
    let loaded = tpm.loaded_handles().unwrap();
    assert!(
        loaded.transient_objects.is_empty() && loaded.loaded_sessions.is_empty(),
        "{loaded:?}"
    );

    // a dead TPM is an error too
    let mut host = host;
    host.sw.stop();
    let e = tpm.quote(&nonce, &PCRS).unwrap_err();
    assert!(
        matches!(e, TpmError::Tpm { .. } | TpmError::Open { .. }),
        "{e}"
    );
}
