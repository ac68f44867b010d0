//! `trustpool-loadgen pki`: everything a load run needs, in one directory.
//!
//! ```text
//! DIR/ca.pem               agents' CA (issues the host client certificates)
//! DIR/server.pem, .key     server certificate for localhost / 127.0.0.1 (key 0600)
//! DIR/hosts/lg-NNNNNN.pem  client certificate (SAN = host name) + its key, 0600
//! DIR/ek-roots/vendor-ca.pem   the simulated TPM vendor's CA (EK certificates)
//! DIR/vendor-ca.key        its key (0600): `run` issues the EK certificates
//! DIR/seed                 hex seed the simulated EK/AK keys are derived from (0600)
//! DIR/policy/default.toml  pool "default" trusting the simulated golden build
//! DIR/feed-token           a feed reader token (0600); server.toml has its SHA-256
//! DIR/server.toml          server configuration using all of the above
//! DIR/hosts.count          number of host certificates
//! DIR/uefi-event-log.bin   with --event-log only: the UEFI log every host sends
//! ```
//!
//! EK and AK private keys are not stored: host `i`'s are derived from the
//! seed ([`crate::softtpm::SoftTpm::derive`]). Its EK certificate is issued
//! by the vendor CA when the host connects ([`VendorCa::ek_certificate`]),
//! so nothing per host but the TLS client certificate is on disk. The
//! server compares a returning host's EK and AK publics with its enrolment,
//! not the EK certificate's bytes, so a freshly signed certificate of the
//! same key is what a real TPM's NV certificate is to it.
//!
//! With `--event-log FILE` the simulated firmware is the one that log
//! records: the policy pins the log's replay in PCRs 0-7
//! ([`crate::softtpm::Banks::from_uefi_log`]), and `run` sends the log
//! with every quote, so the server replays a log that matches. Without it
//! the policy pins [`Bank::golden`] and `run` sends the log's absence.

use crate::softtpm::{Bank, Banks, POLICY_PCRS, REQUIRED_CHECK};
use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of simulated host `index` (1-based): `lg-000001`.
pub fn host_name(index: u32) -> String {
    format!("lg-{index:06}")
}

/// Index of a host name made by [`host_name`].
pub fn host_index(name: &str) -> anyhow::Result<u32> {
    name.strip_prefix("lg-")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&i| i >= 1)
        .with_context(|| format!("'{name}' is not a load generator host name (lg-000001 ...)"))
}

/// The UEFI event log in a `pki` directory (`pki --event-log`).
pub const EVENT_LOG_FILE: &str = "uefi-event-log.bin";

/// Reads DIR/[`EVENT_LOG_FILE`]: its path and bytes, None when `pki` was
/// run without `--event-log`.
pub fn read_event_log(dir: &Path) -> anyhow::Result<Option<(PathBuf, Vec<u8>)>> {
    let path = dir.join(EVENT_LOG_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some((path, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads and checks the `--event-log` FILE: it parses, has a sha256 bank
/// and replays, and the protocol can carry it. Returns it with the banks
/// it makes.
fn read_uefi_log(file: &Path) -> anyhow::Result<(Vec<u8>, Banks)> {
    let log = fs::read(file).with_context(|| format!("reading --event-log {}", file.display()))?;
    let banks =
        Banks::from_uefi_log(&log).with_context(|| format!("--event-log {}", file.display()))?;
    trustpool_proto::event_log::encode(trustpool_proto::v1::EventLogKind::Uefi, &log)
        .with_context(|| format!("--event-log {}", file.display()))?;
    Ok((log, banks))
}

/// Path of host `index`'s certificate + key file.
pub fn host_file(dir: &Path, index: u32) -> PathBuf {
    dir.join("hosts").join(format!("{}.pem", host_name(index)))
}

/// Options of the `pki` command.
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// Output directory.
    pub dir: PathBuf,
    /// Number of host certificates.
    pub hosts: u32,
    /// `report_interval` written to server.toml.
    pub report_interval: String,
    /// `down_time` written to server.toml.
    pub down_time: String,
    /// Placement endpoint to configure (`placement_pools = ["default"]`).
    pub placement: Option<String>,
    /// Static Placement token (written to DIR/placement-token).
    pub placement_token: String,
    /// A UEFI event log the hosts boot with and send (copied to
    /// DIR/[`EVENT_LOG_FILE`]); None: the synthetic firmware, no log.
    pub event_log: Option<PathBuf>,
}

const VENDOR_CA_NAME: &str = "trustpool-loadgen TPM vendor CA";
const TCG_KP_EK_CERTIFICATE: [u64; 5] = [2, 23, 133, 8, 1];

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn leaf_params(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("host"));
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    Ok(params)
}

/// Writes the whole directory. Returns a summary line.
pub fn write_all(opts: &PkiOptions) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let dir = &opts.dir;
    if opts.hosts == 0 || opts.hosts > 999_999 {
        bail!("--hosts must be 1 to 999999");
    }
    // Checked before anything is written.
    let uefi_log = opts.event_log.as_deref().map(read_uefi_log).transpose()?;
    for sub in ["hosts", "ek-roots", "policy"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;

    // Agents' CA and the server certificate.
    let ca_key = KeyPair::generate()?;
    let agents_ca = ca_params("trustpool-loadgen agents CA")?;
    let ca_cert = agents_ca.self_signed(&ca_key)?;
    write_public(&dir.join("ca.pem"), ca_cert.pem().as_bytes())?;
    let ca = Issuer::new(agents_ca, ca_key);
    let server_key = KeyPair::generate()?;
    let server_cert = leaf_params(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &ca)?;
    write_public(&dir.join("server.pem"), server_cert.pem().as_bytes())?;
    write_private(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
    )?;

    // The TPM vendor's CA.
    let vendor_key = KeyPair::generate()?;
    let vendor_cert = ca_params(VENDOR_CA_NAME)?.self_signed(&vendor_key)?;
    write_public(
        &dir.join("ek-roots").join("vendor-ca.pem"),
        vendor_cert.pem().as_bytes(),
    )?;
    write_private(
        &dir.join("vendor-ca.key"),
        vendor_key.serialize_pem().as_bytes(),
    )?;
    let seed: [u8; 32] = rand::random();
    write_private(&dir.join("seed"), hex::encode(seed).as_bytes())?;

    // Host certificates, in parallel threads.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16) as u32;
    let per = opts.hosts.div_ceil(threads);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (first, last) = (t * per + 1, ((t + 1) * per).min(opts.hosts));
            let ca = &ca;
            let dir = &dir;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                for i in first..=last {
                    let name = host_name(i);
                    let key = KeyPair::generate()?;
                    let cert = leaf_params(&[&name], ExtendedKeyUsagePurpose::ClientAuth)?
                        .signed_by(&key, ca)?;
                    let mut pem = cert.pem();
                    pem.push_str(&key.serialize_pem());
                    write_private(&host_file(dir, i), pem.as_bytes())?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a certificate thread panicked"))??;
        }
        Ok(())
    })?;
    write_public(
        &dir.join("hosts.count"),
        format!("{}\n", opts.hosts).as_bytes(),
    )?;

    // The log (or none: a directory written again without --event-log
    // must not keep a log its policy no longer matches).
    let log_path = dir.join(EVENT_LOG_FILE);
    let golden = match &uefi_log {
        Some((log, banks)) => {
            write_public(&log_path, log)?;
            banks.golden
        }
        None => {
            match fs::remove_file(&log_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", log_path.display()))
                }
            }
            Bank::golden()
        }
    };
    write_public(
        &dir.join("policy").join("default.toml"),
        policy(&golden).as_bytes(),
    )?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(&dir.join("feed-token"), token.as_bytes())?;
    let token_sha = hex::encode(Sha256::digest(token.as_bytes()));
    if opts.placement.is_some() {
        write_private(
            &dir.join("placement-token"),
            opts.placement_token.as_bytes(),
        )?;
    }
    write_public(
        &dir.join("server.toml"),
        server_toml(&dir, opts, &token_sha).as_bytes(),
    )?;
    let with_log = match &uefi_log {
        Some((log, _)) => format!(
            " (hosts send the {}-byte UEFI event log {EVENT_LOG_FILE})",
            log.len()
        ),
        None => String::new(),
    };
    Ok(format!(
        "wrote {} host certificates and the server configuration to {} in {:.1}s{with_log}",
        opts.hosts,
        dir.display(),
        started.elapsed().as_secs_f64()
    ))
}

/// The pool policy trusting the `golden` bank ([`Bank::golden`], or a
/// UEFI log's [`Banks::golden`]): every quoted PCR pinned (17 and 18 must
/// be, with require_measured_launch), the one hardening check the
/// simulated report passes.
pub fn policy(golden: &Bank) -> String {
    let mut pins = String::new();
    for &i in &POLICY_PCRS {
        let _ = writeln!(pins, "{i} = \"{}\"", hex::encode(golden.0[usize::from(i)]));
    }
    let pcrs: Vec<String> = POLICY_PCRS.iter().map(|p| p.to_string()).collect();
    format!(
        "# Written by trustpool-loadgen pki: the simulated golden build.\n\
         require_measured_launch = true\n\
         pcrs = [{}]\n\
         require_checks = [\"{REQUIRED_CHECK}\"]\n\n\
         [[allow]]\n\
         name = \"loadgen-golden\"\n\
         [allow.pcrs]\n{pins}",
        pcrs.join(", ")
    )
}

fn toml_path(p: &Path) -> String {
    // Paths are written as TOML basic strings.
    format!("{:?}", p.display().to_string())
}

fn server_toml(dir: &Path, opts: &PkiOptions, token_sha: &str) -> String {
    let mut s = format!(
        "# Written by trustpool-loadgen pki. Start a server for a load run with\n\
         #   trustpool-server --config {cfg} --db FILE --grpc-listen ADDR --http-listen ADDR\n\
         # (a new database file needs no --init-db; flags override the keys below).\n\
         grpc_listen = \"127.0.0.1:7443\"\n\
         http_listen = \"127.0.0.1:8443\"\n\
         db = {db}\n\
         ca = {ca}\n\
         cert = {cert}\n\
         key = {key}\n\
         policy_dir = {policy}\n\
         ek_roots = {roots}\n\
         report_interval = \"{ri}\"\n\
         down_time = \"{dt}\"\n\
         # Connections of the HTTPS API: the bench's feed loops and long polls.\n\
         http_max_connections = 1024\n",
        cfg = dir.join("server.toml").display(),
        db = toml_path(&dir.join("trustpool.db")),
        ca = toml_path(&dir.join("ca.pem")),
        cert = toml_path(&dir.join("server.pem")),
        key = toml_path(&dir.join("server.key")),
        policy = toml_path(&dir.join("policy")),
        roots = toml_path(&dir.join("ek-roots")),
        ri = opts.report_interval,
        dt = opts.down_time,
    );
    if opts.placement.is_some() {
        s.push_str("placement_pools = [\"default\"]\n");
    }
    let _ = write!(
        s,
        "\n[[feed_tokens]]\nname = \"loadgen\"\nsha256 = \"{token_sha}\"\n"
    );
    if let Some(url) = &opts.placement {
        let _ = write!(
            s,
            "\n[placement]\nurl = {:?}\ntoken_file = {}\n",
            url,
            toml_path(&dir.join("placement-token"))
        );
        if url.starts_with("http://") {
            s.push_str("allow_plain_http = true\n");
        }
    }
    s
}

/// Reads DIR/seed.
pub fn read_seed(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join("seed");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `trustpool-loadgen pki` first)",
            path.display()
        )
    })?;
    let bytes =
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} does not hold 32 bytes", path.display()))
}

/// Reads DIR/hosts.count.
pub fn read_host_count(dir: &Path) -> anyhow::Result<u32> {
    let path = dir.join("hosts.count");
    fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} is not a number", path.display()))
}

/// The simulated TPM vendor: issues EK certificates at connect time.
pub struct VendorCa {
    issuer: Issuer<'static, KeyPair>,
}

/// An EK public key for rcgen (the certificate's subject key).
struct EkKey(Vec<u8>);

impl rcgen::PublicKeyData for EkKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl VendorCa {
    /// Loads DIR/vendor-ca.key (the CA certificate is rebuilt from the same
    /// name and key, so its subject and key identifier match ek-roots/).
    pub fn load(dir: &Path) -> anyhow::Result<VendorCa> {
        let path = dir.join("vendor-ca.key");
        let pem =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let key = KeyPair::from_pem(&pem).with_context(|| format!("{}", path.display()))?;
        Ok(VendorCa {
            issuer: Issuer::new(ca_params(VENDOR_CA_NAME)?, key),
        })
    }

    /// The DER EK certificate of `host` for the EK point `ek_sec1`
    /// (uncompressed SEC1): key encipherment, EKU tcg-kp-EKCertificate.
    pub fn ek_certificate(&self, host: &str, ek_sec1: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{host} EK"));
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
            TCG_KP_EK_CERTIFICATE.to_vec(),
        )];
        let cert = params
            .signed_by(&EkKey(ek_sec1.to_vec()), &self.issuer)
            .context("issuing an EK certificate")?;
        Ok(cert.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::ekcert::{pem_to_der_certs, verify_ek_certificate, EkTrust};
    use trustpool_evidence::policy::{parse_policy_set, parse_pool};

    #[test]
    fn names_round_trip() {
        assert_eq!(host_name(42), "lg-000042");
        assert_eq!(host_index("lg-000042").unwrap(), 42);
        assert!(host_index("lg-0").is_err());
        assert!(host_index("compute-1").is_err());
    }

    #[test]
    fn the_policy_passes_the_servers_rules_and_trusts_the_golden_bank_only() {
        let text = policy(&Bank::golden());
        let pool = parse_pool("default.toml", &text).expect("valid policy");
        assert!(pool.require_measured_launch);
        let set = parse_policy_set(&[("default.toml".into(), text)]).expect("set");
        assert_eq!(set.union_pcrs(), POLICY_PCRS.to_vec());
    }

    #[test]
    fn a_directory_the_server_can_use_and_ek_certificates_that_verify() {
        let dir = std::env::temp_dir().join(format!("lg-pki-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let opts = PkiOptions {
            dir: dir.clone(),
            hosts: 5,
            report_interval: "30s".into(),
            down_time: "75s".into(),
            placement: None,
            placement_token: String::new(),
            event_log: None,
        };
        write_all(&opts).expect("pki");
        assert!(!dir.join(EVENT_LOG_FILE).exists());
        assert!(read_event_log(&dir).unwrap().is_none());
        let text = fs::read_to_string(dir.join("policy/default.toml")).unwrap();
        assert_eq!(text, policy(&Bank::golden()));
        for i in 1..=5 {
            let meta = fs::metadata(host_file(&dir, i)).expect("host file");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(read_host_count(&dir).unwrap(), 5);
        let seed = read_seed(&dir).unwrap();
        let tpm = crate::softtpm::SoftTpm::derive(&seed, 3).unwrap();
        let vendor = VendorCa::load(&dir).unwrap();
        let der = vendor.ek_certificate("lg-000003", &tpm.ek_sec1()).unwrap();
        let roots = fs::read_to_string(dir.join("ek-roots/vendor-ca.pem")).unwrap();
        let trust = EkTrust::from_der_certs(pem_to_der_certs(&roots).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        verify_ek_certificate(&trust, &der, &[], tpm.ek(), now).expect("EK certificate verifies");
        // Another host's EK does not match the certificate.
        let other = crate::softtpm::SoftTpm::derive(&seed, 4).unwrap();
        assert!(verify_ek_certificate(&trust, &der, &[], other.ek(), now).is_err());
        let toml = fs::read_to_string(dir.join("server.toml")).unwrap();
        assert!(toml.contains("[[feed_tokens]]"), "{toml}");
        let _ = fs::remove_dir_all(&dir);
    }

    const OVMF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../evidence/testdata/eventlog/ovmf/"
    );

    fn options(dir: &Path, event_log: Option<PathBuf>) -> PkiOptions {
        PkiOptions {
            dir: dir.to_path_buf(),
            hosts: 1,
            report_interval: "30s".into(),
            down_time: "75s".into(),
            placement: None,
            placement_token: String::new(),
            event_log,
        }
    }

    #[test]
    fn an_event_log_is_copied_and_its_replay_is_what_the_policy_pins() {
        let dir = std::env::temp_dir().join(format!("lg-pki-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = PathBuf::from(format!("{OVMF}ovmf-default.bin"));
        let line = write_all(&options(&dir, Some(file.clone()))).expect("pki");
        assert!(line.contains(EVENT_LOG_FILE), "{line}");
        let log = fs::read(&file).unwrap();
        let (path, copied) = read_event_log(&dir).unwrap().expect("the log is there");
        assert_eq!(path, fs::canonicalize(&dir).unwrap().join(EVENT_LOG_FILE));
        assert_eq!(copied, log);
        let banks = Banks::from_uefi_log(&log).unwrap();
        let text = fs::read_to_string(dir.join("policy/default.toml")).unwrap();
        assert_eq!(text, policy(&banks.golden));
        assert_ne!(text, policy(&Bank::golden()));
        parse_pool("default.toml", &text).expect("a valid policy");
        // What the policy pins for PCR 0 is the log's replay.
        let pcrs: serde_json::Value =
            serde_json::from_slice(&fs::read(format!("{OVMF}ovmf-default.pcrs.json")).unwrap())
                .unwrap();
        let pcr0 = pcrs["sha256"]["0"].as_str().unwrap();
        assert!(text.contains(&format!("0 = \"{pcr0}\"")), "{text}");
        // Written again without --event-log: the log is gone with its policy.
        write_all(&options(&dir, None)).expect("pki");
        assert!(read_event_log(&dir).unwrap().is_none());
        let text = fs::read_to_string(dir.join("policy/default.toml")).unwrap();
        assert_eq!(text, policy(&Bank::golden()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_no_uefi_log_is_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("lg-pki-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let not_a_log = PathBuf::from(format!("{OVMF}ovmf-default.txt"));
        let e = write_all(&options(&dir, Some(not_a_log))).unwrap_err();
        assert!(format!("{e:#}").contains("--event-log"), "{e:#}");
        assert!(!dir.exists());
        let e = write_all(&options(&dir, Some(dir.join("missing.bin")))).unwrap_err();
        assert!(format!("{e:#}").contains("reading --event-log"), "{e:#}");
        assert!(!dir.exists());
    }
}
