//! The EK allowlist: which TPM (by its EK) each host name may enrol with,
//! as the operator's asset inventory knows it. When configured it replaces
//! trust on first use: a host enrols only with the EK listed for it, and a
//! host whose enrolled EK is no longer listed cannot open a session.
//!
//! File format, one host per line, `#` starts a comment:
//!
//! ```text
//! # host        EK name (tpm2_readpublic -c 0x81010001 prints it as "name:")
//! compute-001   000b6a4e…64 hex digits
//! ```
//!
//! The EK name is `nameAlg ‖ H(TPMT_PUBLIC)`; the bare 64-hex SHA-256 digest
//! (without the `000b` prefix) is accepted too. Parsing is pure
//! ([`parse_allowlist`]); [`EkAllowlist`] re-reads the file when it changes.

use crate::tls::identity::valid_hostname;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The TPM name algorithm id of SHA-256.
const SHA256_ALG: [u8; 2] = [0x00, 0x0b];

/// Host name → SHA-256 digest of the EK public area.
pub type Allowlist = HashMap<String, [u8; 32]>;

/// Parses an allowlist; `name` is used in errors (`name:line: …`).
pub fn parse_allowlist(name: &str, text: &str) -> Result<Allowlist, String> {
    let mut out = Allowlist::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("{name}:{}: {msg}", i + 1);
        let mut words = line.split_whitespace();
        let (Some(host), Some(ek), None) = (words.next(), words.next(), words.next()) else {
            return Err(at("expected two fields: HOSTNAME EK-NAME (hex)".to_string()));
        };
        let host = host.to_ascii_lowercase();
        if !valid_hostname(&host) {
            return Err(at(format!("'{host}' is not a valid host name")));
        }
        let bytes = hex::decode(ek).map_err(|_| at(format!("'{ek}' is not hex")))?;
        let digest: [u8; 32] = match bytes.as_slice() {
            [a, b, rest @ ..] if [*a, *b] == SHA256_ALG && rest.len() == 32 => {
                <[u8; 32]>::try_from(rest).map_err(|_| at("bad EK name".into()))?
            }
            d if d.len() == 32 => <[u8; 32]>::try_from(d).map_err(|_| at("bad digest".into()))?,
            _ => {
                return Err(at(format!(
                    "'{ek}' is neither a SHA-256 EK name (000b + 64 hex digits) nor a 64-hex-digit digest"
                )))
            }
        };
        if out.insert(host.clone(), digest).is_some() {
            return Err(at(format!("{host} is listed twice")));
        }
    }
    Ok(out)
}

/// What the allowlist says about one host's EK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkVerdict {
    /// No allowlist is configured: the vendor certificate chain decides.
    NotConfigured,
    /// The EK is the one listed for this host.
    Listed,
    /// Refused, with the reason.
    Refused(String),
}

/// The configured allowlist file, re-read when its size or mtime changes.
/// A file that cannot be read or parsed refuses every enrolment until fixed.
#[derive(Debug)]
pub struct EkAllowlist {
    path: Option<PathBuf>,
    cache: Mutex<Option<(FileStamp, Result<Allowlist, String>)>>,
}

type FileStamp = (u64, Option<SystemTime>);

impl EkAllowlist {
    /// An allowlist read from `path`, or none (`None`).
    pub fn new(path: Option<PathBuf>) -> EkAllowlist {
        EkAllowlist {
            path,
            cache: Mutex::new(None),
        }
    }

    /// Reads the file at start-up so that a broken one stops the server.
    pub fn check(&self) -> Result<(), String> {
        match &self.path {
            None => Ok(()),
            Some(path) => self.current(path).map(|_| ()),
        }
    }

    /// Judges `ek_public` (TPMT_PUBLIC bytes) for `hostname`.
    pub fn judge(&self, hostname: &str, ek_public: &[u8]) -> EkVerdict {
        let Some(path) = &self.path else {
            return EkVerdict::NotConfigured;
        };
        let list = match self.current(path) {
            Ok(list) => list,
            Err(e) => return EkVerdict::Refused(format!("the EK allowlist is unusable: {e}")),
        };
        judge_in(&list, hostname, ek_public)
    }

    fn current(&self, path: &Path) -> Result<Allowlist, String> {
        let stamp = std::fs::metadata(path)
            .map(|m| (m.len(), m.modified().ok()))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, parsed)) = cache.as_ref() {
            if *seen == stamp {
                return parsed.clone();
            }
        }
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| parse_allowlist(&path.display().to_string(), &text));
        *cache = Some((stamp, parsed.clone()));
        parsed
    }
}

/// Judges one EK against a parsed allowlist (pure).
pub fn judge_in(list: &Allowlist, hostname: &str, ek_public: &[u8]) -> EkVerdict {
    use sha2::{Digest, Sha256};
    let digest: [u8; 32] = Sha256::digest(ek_public).into();
    match list.get(hostname) {
        None => EkVerdict::Refused(format!(
            "{hostname} is not in the EK allowlist (this TPM's EK name is 000b{})",
            hex::encode(digest)
        )),
        Some(expected) if *expected == digest => EkVerdict::Listed,
        Some(expected) => EkVerdict::Refused(format!(
            "the EK allowlist lists EK 000b{} for {hostname}, but this TPM's EK is 000b{}",
            hex::encode(expected),
            hex::encode(digest)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn parses_names_and_digests_with_comments() {
        let d = hex::encode(Sha256::digest(b"ek-a"));
        let text = format!("# inventory\ncompute-1 000b{d}  # rack 4\n\nCompute-2 {d}\n");
        let list = parse_allowlist("a.list", &text).expect("parses");
        assert_eq!(list.len(), 2);
        assert_eq!(judge_in(&list, "compute-1", b"ek-a"), EkVerdict::Listed);
        assert_eq!(judge_in(&list, "compute-2", b"ek-a"), EkVerdict::Listed);
    }

    #[test]
    fn attack_ek_allowlist_refuses_other_tpms_and_unlisted_hosts() {
        let d = hex::encode(Sha256::digest(b"ek-a"));
        let list = parse_allowlist("a", &format!("compute-1 {d}\n")).expect("parses");
        let EkVerdict::Refused(why) = judge_in(&list, "compute-1", b"ek-b") else {
            panic!("another TPM for a listed host must be refused");
        };
        assert!(why.contains("lists EK"), "{why}");
        let EkVerdict::Refused(why) = judge_in(&list, "compute-9", b"ek-a") else {
            panic!("an unlisted host must be refused");
        };
        assert!(why.contains("not in the EK allowlist"), "{why}");
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, needle) in [
            ("a\n", "a:1: expected two fields"),
            ("ok 00\nb c d\n", "a:1: '00' is neither"),
            ("bad_host! 00\n", "not a valid host name"),
            ("h zz\n", "is not hex"),
        ] {
            let e = parse_allowlist("a", text).expect_err(text);
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let d = hex::encode([1u8; 32]);
        let e = parse_allowlist("a", &format!("h {d}\nh {d}\n")).expect_err("dup");
        assert!(e.contains("a:2: h is listed twice"), "{e}");
    }

    #[test]
    fn an_unreadable_file_refuses_and_a_fixed_one_is_picked_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ek.list");
        let list = EkAllowlist::new(Some(path.clone()));
        assert!(matches!(list.judge("h", b"ek"), EkVerdict::Refused(_)));
        std::fs::write(&path, "h garbage\n").expect("write");
        assert!(list.check().is_err());
        let d = hex::encode(Sha256::digest(b"ek"));
        std::fs::write(&path, format!("h {d}   \n")).expect("write");
        assert_eq!(list.judge("h", b"ek"), EkVerdict::Listed);
        assert_eq!(
            EkAllowlist::new(None).judge("h", b"ek"),
            EkVerdict::NotConfigured
        );
    }
}
