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

use crate::feed::{error, FeedState};
use crate::http_auth::secret_matches;
use crate::state::{mono_ms, now_ms};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::warn;

/// Default path prefix, the one Nova's `attestation_api_url` defaults to.
pub const DEFAULT_PREFIX: &str = "/OpenAttestationWebServices/V1.0";

/// Configuration of the PollHosts endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct OatConfig {
    /// Path prefix (Nova's `attestation_api_url`), without a trailing `/`.
    pub prefix: String,
    /// The pool whose membership PollHosts reports.
    pub pool: String,
    /// SHA-256 of the `x-auth-blob` Nova must send, when one is required.
    pub auth_blob_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for OatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OatConfig")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool)
            .field("auth_blob", &self.auth_blob_sha256.is_some())
            .finish()
    }
}

impl Default for OatConfig {
    fn default() -> Self {
        OatConfig {
            prefix: DEFAULT_PREFIX.into(),
            pool: "default".into(),
            auth_blob_sha256: None,
        }
    }
}

impl OatConfig {
    /// A configuration from the operator's values (prefix normalised to
    /// `/a/b`, refused when it is not a plain path).
    pub fn new(
        prefix: Option<&str>,
        pool: Option<&str>,
        auth_blob_sha256: Option<[u8; 32]>,
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
            anyhow::bail!(
                "oat_prefix '{prefix}' must be a plain path such as {DEFAULT_PREFIX} outside /v1"
            );
        }
        Ok(OatConfig {
            prefix,
            pool: pool.unwrap_or("default").to_string(),
            auth_blob_sha256,
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

/// `POST {prefix}/PollHosts`.
pub async fn poll_hosts(
    State(s): State<FeedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(expected) = &s.oat.auth_blob_sha256 {
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
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            };
            return error(status, code, &rejection.body_text());
        }
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
        .pool(&s.oat.pool, now)
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
                .and_then(|h| h.last_good_ms.get(&s.oat.pool).copied());
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
            OatConfig::new(None, None, None)
                .expect("default")
                .poll_hosts_path(),
            "/OpenAttestationWebServices/V1.0/PollHosts"
        );
        assert_eq!(
            OatConfig::new(Some("oat/"), Some("gold"), None)
                .expect("custom")
                .poll_hosts_path(),
            "/oat/PollHosts"
        );
        for bad in ["/a b", "/a//b", "/v1", "/v1/x", "/a?b"] {
            assert!(OatConfig::new(Some(bad), None, None).is_err(), "{bad}");
        }
    }
}
