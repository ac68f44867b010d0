//! Who may read the feed: a bearer token whose SHA-256 is configured (each
//! with a name for the audit log), or a client certificate issued by the
//! reader CA. Tokens are never stored, compared or logged in clear: the
//! server keeps only their SHA-256 and compares digests in constant time.
//!
//! Decisions:
//! - a valid token or a reader certificate → the request is served;
//! - a token that matches no configured hash → 401 (`invalid_token`);
//! - no credential at all → 401 (`unauthenticated`);
//! - a client certificate that is not a reader's (e.g. an agent's host
//!   certificate from the agents' CA) and no valid token → 403 (`forbidden`).

use crate::tls::certs::PeerInfo;
use crate::tls::identity::PeerIdentity;
use crate::tls::pki::{Pki, Role};
use anyhow::{bail, Context};
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A configured reader token: a name for the audit log and SHA-256(token).
#[derive(Clone, PartialEq, Eq)]
pub struct FeedToken {
    /// Name of the consumer, e.g. `nova-scheduler`.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FeedToken {
    /// A token entry from its name and the hex of SHA-256(token).
    pub fn new(name: &str, sha256_hex: &str) -> anyhow::Result<FeedToken> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            bail!("feed token name '{name}' must be letters, digits, '-', '_' or '.'");
        }
        Ok(FeedToken {
            name: name.to_string(),
            sha256: parse_sha256_hex(sha256_hex).with_context(|| format!("feed token '{name}'"))?,
        })
    }

    /// Parses `NAME=SHA256HEX` (the `--feed-token` flag).
    pub fn parse_flag(text: &str) -> anyhow::Result<FeedToken> {
        let (name, hash) = text
            .split_once('=')
            .with_context(|| "--feed-token takes NAME=SHA256HEX".to_string())?;
        FeedToken::new(name, hash)
    }
}

/// Parses the 64 hex digits of a SHA-256 digest.
pub fn parse_sha256_hex(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| {
            "expected the 64 hex digits of a SHA-256 digest (e.g. `printf %s TOKEN | sha256sum`)"
                .to_string()
        })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Constant-time equality of two digests.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when SHA-256(`secret`) equals `expected`, in constant time.
pub fn secret_matches(secret: &[u8], expected: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(secret).into();
    digest_eq(&digest, expected)
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A reader; the text names it for the audit log (`token:NAME` or `cert:SUBJECT`).
    Reader(String),
    /// No usable credential (401); the text is the stable error code.
    Unauthenticated(&'static str),
    /// Authenticated but not a reader (403); the text names the certificate.
    Forbidden(String),
}

/// The reader credentials the server accepts.
pub struct ReaderAuth {
    tokens: Vec<FeedToken>,
    readers: Option<Arc<Pki>>,
}

impl std::fmt::Debug for ReaderAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderAuth")
            .field("tokens", &self.tokens)
            .field("reader_ca", &self.readers.is_some())
            .finish()
    }
}

impl ReaderAuth {
    /// Reader credentials: `tokens`, and client certificates of the reader
    /// CA of `pki` (with its CRLs), if it has one.
    pub fn new(tokens: Vec<FeedToken>, pki: Option<Arc<Pki>>) -> anyhow::Result<ReaderAuth> {
        let readers = pki.filter(|p| p.has(Role::Readers));
        Ok(ReaderAuth { tokens, readers })
    }

    /// True when no reader credential at all is configured (every protected
    /// request is then refused: the feed never falls back to open).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.readers.is_none()
    }

    /// Decides on one request from its headers and its connection.
    pub fn decide(&self, headers: &HeaderMap, peer: Option<&PeerInfo>) -> Decision {
        let mut bad_token = false;
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            match bearer(value.as_bytes()) {
                Some(token) => match self.token_name(token) {
                    Some(name) => return Decision::Reader(format!("token:{name}")),
                    None => bad_token = true,
                },
                None => bad_token = true,
            }
        }
        let chain = peer
            .and_then(|p| p.chain.as_deref())
            .map(|c| c.as_slice())
            .unwrap_or_default();
        if let Some(leaf) = chain.first() {
            let subject = PeerIdentity::from_der(leaf.as_ref())
                .map(|id| id.subject)
                .unwrap_or_else(|_| "an unparsable certificate".into());
            let is_reader = self.readers.as_ref().is_some_and(|pki| {
                match pki.check(Role::Readers, chain) {
                    Ok(()) => true,
                    Err(refusal) => {
                        // A certificate of another CA (an agent's) is simply
                        // not a reader; one of the reader CA that fails
                        // (revoked, expired) is worth a warning.
                        if refusal.reason != "unknown_issuer" {
                            pki.refused("reader", &refusal);
                        }
                        false
                    }
                }
            });
            if is_reader {
                return Decision::Reader(format!("cert:{subject}"));
            }
            if !bad_token {
                return Decision::Forbidden(subject);
            }
        }
        if bad_token {
            Decision::Unauthenticated("invalid_token")
        } else {
            Decision::Unauthenticated("unauthenticated")
        }
    }

    /// The name of the configured token `token` is, if any. Every configured
    /// digest is compared (no early exit), each in constant time.
    fn token_name(&self, token: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for t in &self.tokens {
            if digest_eq(&digest, &t.sha256) && found.is_none() {
                found = Some(t.name.as_str());
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("header"),
            );
        }
        h
    }

    #[test]
    fn tokens_are_matched_by_digest() {
        let auth = ReaderAuth::new(
            vec![
                FeedToken::new("nova", &hash("s3cret")).expect("token"),
                FeedToken::parse_flag(&format!("ops={}", hash("other"))).expect("token"),
            ],
            None,
        )
        .expect("auth");
        assert_eq!(
            auth.decide(&headers(Some("Bearer s3cret")), None),
            Decision::Reader("token:nova".into())
        );
        assert_eq!(
            auth.decide(&headers(Some("bearer   other ")), None),
            Decision::Reader("token:ops".into())
        );
        assert_eq!(
            auth.decide(&headers(Some("Bearer wrong")), None),
            Decision::Unauthenticated("invalid_token")
        );
        assert_eq!(
            auth.decide(&headers(Some("Basic czNjcmV0")), None),
            Decision::Unauthenticated("invalid_token")
        );
        assert_eq!(
            auth.decide(&headers(None), None),
            Decision::Unauthenticated("unauthenticated")
        );
    }

    #[test]
    fn bad_token_configuration_is_refused() {
        assert!(FeedToken::new("nova", "abcd").is_err());
        assert!(FeedToken::new("", &hash("x")).is_err());
        assert!(FeedToken::new("a b", &hash("x")).is_err());
        assert!(FeedToken::parse_flag("no-equals-sign").is_err());
        let t = FeedToken::new("nova", &hash("x")).expect("token");
        assert!(
            !format!("{t:?}").contains(&hash("x")),
            "the digest stays out of Debug"
        );
    }

    #[test]
    fn secrets_compare_by_digest() {
        let expected = parse_sha256_hex(&hash("blob")).expect("hex");
        assert!(secret_matches(b"blob", &expected));
        assert!(!secret_matches(b"blob2", &expected));
        assert!(!secret_matches(b"", &expected));
    }
}
