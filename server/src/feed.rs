//! The HTTP feed (JSON): the trusted members of each pool and the latest
//! verdict of each host with its reasons.
//!
//! - `GET /v1/pools` — every pool with its generation and size
//! - `GET /v1/pools/{pool}/hosts` — `{"pool", "generation", "hosts": [{"hostname", "attested_at", "valid_until"}]}`
//! - `GET /v1/hosts/{hostname}` — the host's latest verdict per pool, with reasons
//! - `GET /healthz` — liveness
//!
//! Unknown pools and hosts answer 404 with `{"error": {"code", "message"}}`.

use crate::registry::Registry;
use crate::state::now_ms;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use trustpool_evidence::reason::Reason;

/// Builds the feed's router over the registry.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/pools", get(pools))
        .route("/v1/pools/{pool}/hosts", get(pool_hosts))
        .route("/v1/hosts/{hostname}", get(host))
        .fallback(|| async { not_found("no such endpoint") })
        .with_state(registry)
}

/// RFC 3339 UTC text of a Unix millisecond time.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

fn not_found(message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: ErrorDetail {
                code: "not_found",
                message,
            },
        }),
    )
        .into_response()
}

#[derive(Serialize)]
struct PoolsBody {
    pools: Vec<PoolSummary>,
}

#[derive(Serialize)]
struct PoolSummary {
    pool: String,
    generation: u64,
    size: usize,
}

async fn pools(State(registry): State<Arc<Registry>>) -> Response {
    let now = now_ms();
    let pools = registry
        .pool_names()
        .into_iter()
        .filter_map(|name| registry.pool(&name, now))
        .map(|p| PoolSummary {
            pool: p.pool,
            generation: p.generation,
            size: p.members.len(),
        })
        .collect();
    Json(PoolsBody { pools }).into_response()
}

#[derive(Serialize)]
struct PoolHostsBody {
    pool: String,
    generation: u64,
    hosts: Vec<PoolHost>,
}

#[derive(Serialize)]
struct PoolHost {
    hostname: String,
    attested_at: String,
    valid_until: String,
}

async fn pool_hosts(State(registry): State<Arc<Registry>>, Path(pool): Path<String>) -> Response {
    match registry.pool(&pool, now_ms()) {
        None => not_found(&format!("no pool named '{pool}'")),
        Some(snapshot) => Json(PoolHostsBody {
            pool: snapshot.pool,
            generation: snapshot.generation,
            hosts: snapshot
                .members
                .into_iter()
                .map(|m| PoolHost {
                    hostname: m.hostname,
                    attested_at: rfc3339(m.attested_at_ms),
                    valid_until: rfc3339(m.valid_until_ms),
                })
                .collect(),
        })
        .into_response(),
    }
}

#[derive(Serialize)]
struct HostBody {
    hostname: String,
    enrolled: bool,
    connected: bool,
    pools: Vec<HostPool>,
}

#[derive(Serialize)]
struct HostPool {
    pool: String,
    trusted: bool,
    attested_at: Option<String>,
    valid_until: Option<String>,
    policy_digest: Option<String>,
    reasons: Vec<Reason>,
}

async fn host(State(registry): State<Arc<Registry>>, Path(hostname): Path<String>) -> Response {
    let name = hostname.to_ascii_lowercase();
    match registry.host(&name, now_ms()) {
        None => not_found(&format!("no host named '{hostname}'")),
        Some(h) => Json(HostBody {
            hostname: h.hostname,
            enrolled: h.enrolment.is_some(),
            connected: h.connected,
            pools: h
                .verdicts
                .into_iter()
                .map(|v| HostPool {
                    pool: v.pool,
                    trusted: v.trusted,
                    attested_at: (v.attested_at_ms > 0).then(|| rfc3339(v.attested_at_ms)),
                    valid_until: v.trusted.then(|| rfc3339(v.valid_until_ms)),
                    policy_digest: (!v.policy_digest.is_empty()).then_some(v.policy_digest),
                    reasons: v.reasons,
                })
                .collect(),
        })
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }
}
