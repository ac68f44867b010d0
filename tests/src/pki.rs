//! A test PKI made with rcgen: one CA that issues the server's certificate
//! (SAN `localhost` and `127.0.0.1`) and the agents' client certificates
//! (SAN = host name), others for operators, readers and negative tests.
//! Revocations and CRLs are made by the real `openssl ca` ([`TestCa::crl`]).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority that lives in memory.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub cert_pem: String,
    key_pem: String,
}

/// A certificate and its key, written to disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate path.
    pub cert: PathBuf,
    /// PEM private key path (mode 0600).
    pub key: PathBuf,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> anyhow::Result<PathBuf> {
        fs::write(path, &self.cert_pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        fs::write(&files.cert, cert.pem())?;
        fs::write(&files.key, key.serialize_pem())?;
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn issue_server(&self, dir: &Path) -> anyhow::Result<CertFiles> {
        self.issue(
            dir,
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose SAN is `hostname`: an agent's (an
    /// operator's or a reader's, from their CAs).
    pub fn issue_client(&self, dir: &Path, hostname: &str) -> anyhow::Result<CertFiles> {
        self.issue(
            dir,
            hostname,
            &[hostname],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A CRL of this CA, made by `openssl ca -gencrl` in `dir` (its `openssl
    /// ca` database lives there): every certificate of `revoked` is revoked
    /// (reason keyCompromise) first; revocations made earlier in the same
    /// `dir` stay. Returns the PEM CRL, `dir/crl-N.pem` (N counts the CRLs
    /// made in `dir`).
    pub fn crl(
        &self,
        dir: &Path,
        revoked: &[&Path],
        validity: CrlValidity,
    ) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let config = dir.join("openssl-ca.cnf");
        if !config.exists() {
            fs::write(dir.join("ca.pem"), &self.cert_pem)?;
            fs::write(dir.join("ca.key"), &self.key_pem)?;
            fs::set_permissions(dir.join("ca.key"), fs::Permissions::from_mode(0o600))?;
            fs::write(dir.join("index.txt"), "")?;
            fs::write(dir.join("crlnumber"), "01\n")?;
            fs::write(
                &config,
                format!(
                    "[ ca ]\ndefault_ca = test_ca\n\n[ test_ca ]\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\ncertificate = {d}/ca.pem\nprivate_key = {d}/ca.key\ndefault_md = sha256\n",
                    d = dir.display()
                ),
            )?;
        }
        let openssl = |args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .context("running openssl (is it installed?)")?;
            if !out.status.success() {
                anyhow::bail!(
                    "openssl {:?} failed: {}",
                    args,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        for cert in revoked {
            openssl(&[
                "ca".as_ref(),
                "-config".as_ref(),
                config.as_os_str(),
                "-revoke".as_ref(),
                cert.as_os_str(),
                "-crl_reason".as_ref(),
                "keyCompromise".as_ref(),
            ])?;
        }
        let n = fs::read_dir(&dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("crl-"))
            .count()
            + 1;
        let out = dir.join(format!("crl-{n}.pem"));
        let times: Vec<String> = match validity {
            CrlValidity::Days(days) => vec!["-crldays".into(), days.to_string()],
            // lastUpdate two days ago, nextUpdate yesterday (UTC).
            CrlValidity::Expired => {
                let day = 86_400;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                vec![
                    "-crl_lastupdate".into(),
                    generalized_time(now - 2 * day),
                    "-crl_nextupdate".into(),
                    generalized_time(now - day),
                ]
            }
        };
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "ca".as_ref(),
            "-config".as_ref(),
            config.as_os_str(),
            "-gencrl".as_ref(),
            "-out".as_ref(),
            out.as_os_str(),
        ];
        args.extend(times.iter().map(|t| std::ffi::OsStr::new(t.as_str())));
        openssl(&args)?;
        Ok(out)
    }
}

/// How long a CRL made by [`TestCa::crl`] is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlValidity {
    /// nextUpdate this many days from now.
    Days(u32),
    /// nextUpdate already passed (yesterday).
    Expired,
}

/// `YYYYMMDDHHMMSSZ` of a unix time (UTC), as `openssl ca` takes it.
fn generalized_time(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
