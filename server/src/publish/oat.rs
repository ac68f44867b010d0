//! OpenAttestation compatibility for Nova's legacy `TrustedFilter` (up to
//! Pike, 16.x): `POST {prefix}/PollHosts`.
//!
//! Nova sends `{"count": N, "hosts": ["hypervisor-hostname", …]}` with
//! `content-type: application/json`, `Accept: application/json` and, when
//! `[trusted_computing] attestation_auth_blob` is set, the header
//! `x-auth-blob`. It compares each answer's `trust_lvl` verbatim with the
//! flavor extra spec `trust:trusted_host` and caches it until `vtime` is
//! older than `attestation_auth_timeout`, parsing `vtime` with oslo's
//! `timeutils.parse_isotime`.
//!
//! Every requested host is answered, known or not, echoing the name exactly
//! as asked (Nova keys its cache by it): `trusted` only while the host is a
//! member of the configured pool (trusted and unexpired), with `vtime` = the
//! time of that attestation; everything else (stale, revoked, pending,
//! unknown, failing) is `untrusted`, with `vtime` = the last good
//! attestation when the host is merely stale, else now.

use crate::clock::{mono_ms, now_ms};
use crate::publish::feed::{error, read_body, FeedState};
use crate::publish::readers::secret_matches;
use anyhow::bail;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;
use tracing::warn;

/// Default path prefix, the one Nova's `attestation_api_url` defaults to.
pub const DEFAULT_PREFIX: &str = "/OpenAttestationWebServices/V1.0";

/// Largest PollHosts body read. Nova's filter asks for every compute node
/// it knows in one request (`ComputeAttestation._update_cache` sends the
/// hypervisor hostname of every compute node), about 40 bytes per host with
/// a typical FQDN: 1 MiB holds some 25,000 hosts, a 10,000-node site about
/// 400 KiB. It is read only after the `x-auth-blob` check, within
/// [`crate::publish::feed::BODY_READ_TIMEOUT`].
pub const MAX_BODY: usize = 1024 * 1024;

/// Who may call PollHosts.
#[derive(Clone, PartialEq, Eq)]
pub enum OatAuth {
    /// Nova's `attestation_auth_blob`, whose SHA-256 this is, in `x-auth-blob`.
    Blob([u8; 32]),
    /// Anyone who can reach the listener (`oat_allow_anonymous = true`, a lab).
    Anonymous,
}

/// Configuration of the PollHosts endpoint (served only when configured).
#[derive(Clone, PartialEq, Eq)]
pub struct OatConfig {
    /// Path prefix (Nova's `attestation_api_url`), without a trailing `/`.
    pub prefix: String,
    /// The pool whose membership PollHosts reports.
    pub pool: String,
    /// Who may call it.
    pub auth: OatAuth,
}

impl std::fmt::Debug for OatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OatConfig")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool)
            .field(
                "auth",
                &match self.auth {
                    OatAuth::Blob(_) => "blob",
                    OatAuth::Anonymous => "anonymous",
                },
            )
            .finish()
    }
}

impl OatConfig {
    /// PollHosts from the operator's values: served with a blob
    /// (`oat_auth_blob_sha256`) or, for a lab, with `oat_allow_anonymous`;
    /// `None` (not served) when neither is set and PollHosts is not
    /// otherwise configured; an error when `oat_prefix` or `oat_pool` asks
    /// for it without a blob, or when both a blob and anonymous access are
    /// asked for.
    pub fn resolve(
        prefix: Option<&str>,
        pool: Option<&str>,
        auth_blob_sha256: Option<[u8; 32]>,
        allow_anonymous: bool,
    ) -> anyhow::Result<Option<OatConfig>> {
        let auth = match (auth_blob_sha256, allow_anonymous) {
            (Some(_), true) => bail!(
                "oat_auth_blob_sha256 and oat_allow_anonymous = true contradict each other: PollHosts either requires the blob or answers anyone"
            ),
            (Some(blob), false) => OatAuth::Blob(blob),
            (None, true) => OatAuth::Anonymous,
            (None, false) if prefix.is_some() || pool.is_some() => bail!(
                "PollHosts (oat_prefix, oat_pool) needs oat_auth_blob_sha256, the SHA-256 of Nova's [trusted_computing] attestation_auth_blob (printf %s \"$BLOB\" | sha256sum); without it anyone who reaches the listener could read the pool. Only in a lab: oat_allow_anonymous = true"
            ),
            (None, false) => return Ok(None),
        };
        OatConfig::new(prefix, pool, auth).map(Some)
    }

    /// A configuration from the operator's values (prefix normalised to
    /// `/a/b`, refused when it is not a plain path).
    pub fn new(
        prefix: Option<&str>,
        pool: Option<&str>,
        auth: OatAuth,
    ) -> anyhow::Result<OatConfig> {
        let prefix = prefix
            .unwrap_or(DEFAULT_PREFIX)
            .trim()
            .trim_end_matches('/');
        let prefix = if prefix.starts_with('/') || prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("/{prefix}")
        };
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
            || prefix.contains("//")
            || prefix.starts_with("/v1/")
            || prefix == "/v1"
        {
            bail!(
                "oat_prefix '{prefix}' must be a plain path such as {DEFAULT_PREFIX} outside /v1"
            );
        }
        Ok(OatConfig {
            prefix,
            pool: pool.unwrap_or("default").to_string(),
            auth,
        })
    }

    /// The full path of the endpoint.
    pub fn poll_hosts_path(&self) -> String {
        format!("{}/PollHosts", self.prefix)
    }
}

/// Body of a PollHosts request.
#[derive(Debug, Deserialize)]
struct PollHostsRequest {
    #[serde(default)]
    count: Option<u64>,
    hosts: Vec<String>,
}

/// Body of the answer.
#[derive(Debug, Serialize)]
struct PollHostsResponse {
    hosts: Vec<HostTrust>,
}

#[derive(Debug, Serialize)]
struct HostTrust {
    host_name: String,
    trust_lvl: &'static str,
    vtime: String,
}

/// ISO 8601 UTC with second precision, `2026-11-22T16:03:42Z`: what
/// `timeutils.parse_isotime` reads.
pub fn vtime(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `POST {prefix}/PollHosts`. The `x-auth-blob` is checked from the
/// headers before any of the body is read: a client without it gets its
/// 401 at once, whatever it declared or sends.
pub async fn poll_hosts(
    State(s): State<FeedState>,
    oat: Arc<OatConfig>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let OatAuth::Blob(expected) = &oat.auth {
        let ok = headers
            .get("x-auth-blob")
            .is_some_and(|v| secret_matches(v.as_bytes(), expected));
        if !ok {
            warn!(target: "trustpool_server::audit", "PollHosts refused: missing or wrong x-auth-blob");
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid x-auth-blob header is required",
            );
        }
    }
    let body = match read_body(&s, body, &headers, MAX_BODY).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let request: PollHostsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the body is not {{\"count\": N, \"hosts\": [names]}}: {e}"),
            )
        }
    };
    if let Some(count) = request.count {
        if count != request.hosts.len() as u64 {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "count is {count} but {} hosts are listed",
                    request.hosts.len()
                ),
            );
        }
    }
    // Nobody is vouched for while the server cannot confirm its state.
    if let Some(resp) = s.unavailable() {
        return resp;
    }
    let now = mono_ms();
    let registry = &s.app.registry;
    let members = registry
        .pool(&oat.pool, now)
        .map(|p| p.members)
        .unwrap_or_default();
    let hosts = request
        .hosts
        .into_iter()
        .map(|name| {
            let key = name.to_ascii_lowercase();
            if let Ok(i) = members.binary_search_by(|m| m.hostname.as_str().cmp(&key)) {
                return HostTrust {
                    host_name: name,
                    trust_lvl: "trusted",
                    vtime: vtime(members[i].attested_at_ms),
                };
            }
            // The time of the last good attestation, stale or since failed.
            let last_good = registry
                .host(&key, now)
                .and_then(|h| h.last_good_ms.get(&oat.pool).copied());
            HostTrust {
                host_name: name,
                trust_lvl: "untrusted",
                vtime: vtime(last_good.unwrap_or_else(now_ms)),
            }
        })
        .collect();
    Json(PollHostsResponse { hosts }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtime_is_iso8601_utc_seconds() {
        assert_eq!(vtime(0), "1970-01-01T00:00:00Z");
        assert_eq!(vtime(1_795_000_000_999), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn prefix_is_normalised_and_checked() {
        assert_eq!(
            OatConfig::new(None, None, OatAuth::Anonymous)
                .expect("default")
                .poll_hosts_path(),
            "/OpenAttestationWebServices/V1.0/PollHosts"
        );
        assert_eq!(
            OatConfig::new(Some("oat/"), Some("gold"), OatAuth::Anonymous)
                .expect("custom")
                .poll_hosts_path(),
            "/oat/PollHosts"
        );
        for bad in ["/a b", "/a//b", "/v1", "/v1/x", "/a?b"] {
            assert!(
                OatConfig::new(Some(bad), None, OatAuth::Anonymous).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn poll_hosts_needs_a_blob_or_an_explicit_lab_flag() {
        let blob = [7u8; 32];
        // Nothing configured: not served at all.
        assert_eq!(
            OatConfig::resolve(None, None, None, false).expect("off"),
            None
        );
        let with_blob = OatConfig::resolve(None, None, Some(blob), false)
            .expect("blob")
            .expect("served");
        assert!(with_blob.auth == OatAuth::Blob(blob));
        let lab = OatConfig::resolve(Some("/attest"), Some("gold"), None, true)
            .expect("lab")
            .expect("served");
        assert!(lab.auth == OatAuth::Anonymous);
        assert_eq!(lab.poll_hosts_path(), "/attest/PollHosts");
        // Asked for without a blob: refused, naming what to set.
        for (prefix, pool) in [(Some("/attest"), None), (None, Some("gold"))] {
            let err = OatConfig::resolve(prefix, pool, None, false).expect_err("no blob");
            let msg = err.to_string();
            assert!(
                msg.contains("oat_auth_blob_sha256") && msg.contains("oat_allow_anonymous = true"),
                "{msg}"
            );
        }
        let err = OatConfig::resolve(None, None, Some(blob), true).expect_err("both");
        assert!(err.to_string().contains("contradict"), "{err}");
    }
}
