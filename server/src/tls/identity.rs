//! Who is on the other end of a stream: the host names carried by an agent's
//! client certificate. Pure parsing of DER, no I/O.

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The names and fingerprint of a peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// Subject distinguished name, for logs and the enrolment record.
    pub subject: String,
}

impl PeerIdentity {
    /// Parses the leaf certificate presented by a peer.
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, String> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("peer certificate does not parse: {e}"))?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_ascii_lowercase());
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(|s| s.to_ascii_lowercase());
        Ok(PeerIdentity {
            dns_names,
            common_name,
            fingerprint: hex::encode(Sha256::digest(der)),
            subject: cert.subject().to_string(),
        })
    }

    /// True when this certificate names `hostname`: one of its SAN DNS names,
    /// or its CN when the certificate has no SAN DNS name at all.
    pub fn speaks_for(&self, hostname: &str) -> bool {
        let wanted = hostname.to_ascii_lowercase();
        if self.dns_names.is_empty() {
            self.common_name.as_deref() == Some(wanted.as_str())
        } else {
            self.dns_names.contains(&wanted)
        }
    }
}

/// A host name as Nova knows it: 1-253 characters of letters, digits, `-`, `.` and `_`.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[&str], cn: &str) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn san_decides_when_present() {
        let id = PeerIdentity::from_der(&cert(&["host-a"], "host-z")).expect("parses");
        assert!(id.speaks_for("host-a"));
        assert!(id.speaks_for("HOST-A"));
        assert!(!id.speaks_for("host-z"), "CN is ignored when SANs exist");
        assert!(!id.speaks_for("host-c"));
    }

    #[test]
    fn cn_used_without_san() {
        let id = PeerIdentity::from_der(&cert(&[], "host-c")).expect("parses");
        assert!(id.speaks_for("host-c"));
        assert!(!id.speaks_for("host-a"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(PeerIdentity::from_der(b"not a certificate").is_err());
        assert!(PeerIdentity::from_der(&[]).is_err());
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("compute-01.example.org"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname("../etc"));
        assert!(!valid_hostname(&"a".repeat(254)));
    }
}
