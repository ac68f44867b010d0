//! The HTTPS API (JSON): the trusted members of each pool for consumers, the
//! latest verdict of each host with its reasons, OpenAttestation
//! `PollHosts` for Nova's legacy TrustedFilter, Prometheus metrics and the
//! OpenAPI document of all of it (`server/openapi.json`).
//!
//! Open: `GET /healthz`, `GET /readyz`, `GET /v1/openapi.json`, `GET /metrics`
//! (unless `metrics_auth`). `POST {oat_prefix}/PollHosts` is served only
//! when configured and is guarded by its own `x-auth-blob`, checked before
//! its body is read (anonymous only with `oat_allow_anonymous`, a lab).
//! Everything under `/v1/pools` and `/v1/hosts` needs a reader credential
//! ([`crate::http_auth`]).
//!
//! Bodies: PollHosts reads at most [`crate::oat::MAX_BODY`] within
//! [`BODY_READ_TIMEOUT`] ([`read_body`]); no other route reads one.
//!
//! Fail-closed rules, endpoint by endpoint:
//! - membership and host detail come from the registry, which holds only
//!   durably committed verdicts and applies expiry at read time: an entry is
//!   never published past its `valid_until`;
//! - while the database refuses writes or does not answer, its file was
//!   removed or replaced ([`crate::store::StoreHealth`]), or no usable
//!   policy is in force,
//!   the feed answers 503 `unavailable` (never an empty 200) and `PollHosts`
//!   answers 503 too, which Nova's filter reads as "nobody is trusted";
//!   `/readyz` answers 503 with the problems;
//! - a consumer keeps no entry past its `valid_until`, so a consumer cut off
//!   from the feed degrades to an empty pool within the down time.

use crate::http_auth::{Decision, ReaderAuth};
use crate::https::PeerInfo;
use crate::oat::{self, OatConfig};
use crate::registry::PoolSnapshot;
use crate::state::{mono_ms, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{info, warn};
use trustpool_evidence::reason::Reason;

/// The OpenAPI 3 document of this API, as checked in.
pub const OPENAPI: &str = include_str!("../openapi.json");
/// Body limit of every extractor of the router: no route but PollHosts
/// reads a body, and it reads its own with [`read_body`]; a route that
/// comes to need one sets the limit it needs.
const NO_BODY: usize = 0;
/// A request body must arrive whole within this time of the handler
/// starting to read it (408 `body_timeout` otherwise).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest long-poll wait; a longer `wait` is shortened to this.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether the server can vouch for what it publishes right now: the store
/// health (every write's outcome, the write probe and the database identity,
/// [`crate::store::StoreHealth`]) and whether the last probe answered at all.
#[derive(Debug)]
pub struct Health {
    store_ok: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            store_ok: AtomicBool::new(true),
        }
    }
}

impl Health {
    /// Records whether the latest database probe answered in time.
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
    }

    /// Whether the latest database probe answered in time.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    /// Every reason the server is not ready (empty when ready).
    pub fn problems(&self, app: &AppState) -> Vec<&'static str> {
        let mut problems = app.store.health().problems();
        if !self.store_ok() {
            problems.push("the database does not answer");
        }
        if app.policy().pools.is_empty() {
            problems.push("no usable pool policy is in force");
        }
        problems
    }
}

/// Everything the HTTPS handlers share.
#[derive(Clone)]
pub struct FeedState {
    /// Server state (registry, store, policy, metrics).
    pub app: Arc<AppState>,
    /// Reader credentials.
    pub auth: Arc<ReaderAuth>,
    /// Readiness.
    pub health: Arc<Health>,
    /// OpenAttestation compatibility, when configured.
    pub oat: Option<Arc<OatConfig>>,
    /// Whether `/metrics` needs a reader credential.
    pub metrics_auth: bool,
    /// Becomes true when the server stops (ends long polls).
    pub stop: watch::Receiver<bool>,
    bodies: Arc<Mutex<HashMap<String, (String, axum::body::Bytes)>>>,
}

impl FeedState {
    /// Bundles the handlers' state.
    pub fn new(
        app: Arc<AppState>,
        auth: Arc<ReaderAuth>,
        health: Arc<Health>,
        oat: Option<Arc<OatConfig>>,
        metrics_auth: bool,
        stop: watch::Receiver<bool>,
    ) -> FeedState {
        FeedState {
            app,
            auth,
            health,
            oat,
            metrics_auth,
            stop,
            bodies: Arc::default(),
        }
    }

    /// The 503 answer while the server cannot vouch for its state, else `None`.
    pub fn unavailable(&self) -> Option<Response> {
        let problems = self.health.problems(&self.app);
        if problems.is_empty() {
            return None;
        }
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &format!("membership cannot be confirmed: {}", problems.join("; ")),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Some(resp)
    }
}

/// Builds the API's router.
pub fn router(state: FeedState) -> Router {
    let readers = Router::new()
        .route("/v1/pools", get(pools))
        .route("/v1/pools/{pool}/hosts", get(pool_hosts))
        .route("/v1/hosts/{hostname}", get(host));
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let (readers, metrics_route) = if state.metrics_auth {
        (readers.merge(metrics_route), Router::new())
    } else {
        (readers, metrics_route)
    };
    let readers = readers.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_reader,
    ));
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi));
    if let Some(cfg) = &state.oat {
        router = router.route(&cfg.poll_hosts_path(), post(oat::poll_hosts));
    }
    router
        .merge(metrics_route)
        .merge(readers)
        .fallback(|| async { not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(NO_BODY))
        .with_state(state)
}

/// Reads a request body of at most `limit` bytes within
/// [`BODY_READ_TIMEOUT`]. The answer, as a JSON error, when it cannot:
/// 413 `payload_too_large` at once when the declared `Content-Length` is
/// larger (nothing is read) or as soon as more than `limit` bytes arrive;
/// 408 `body_timeout` when the client is too slow; 400 when the body breaks
/// off. Call it only once the request's credentials are checked.
pub async fn read_body(
    s: &FeedState,
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Response> {
    use http_body_util::BodyExt;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the body is limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("the body could not be read: {e}"),
        )),
        Err(_) => {
            s.app.metrics.http_timeout("body");
            Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!(
                    "the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ))
        }
    }
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

/// A JSON error `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

/// Counts every answered request by route template and status.
async fn count_requests(State(s): State<FeedState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    s.app.metrics.feed_request(&route, resp.status().as_u16());
    resp
}

/// Lets readers through; answers 401/403 to everyone else. Logs who read
/// what (by credential name, never the credential).
async fn require_reader(State(s): State<FeedState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .map(|c| c.0.clone());
    let remote = peer
        .as_ref()
        .map(|p| p.remote.to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    match s.auth.decide(req.headers(), peer.as_ref()) {
        Decision::Reader(reader) => {
            let resp = next.run(req).await;
            info!(target: "trustpool_server::audit", reader = %reader, peer = %remote, path = %path, status = resp.status().as_u16(), "feed read");
            resp
        }
        Decision::Unauthenticated(code) => {
            warn!(target: "trustpool_server::audit", peer = %remote, path = %path, code, "feed read refused: no valid credential");
            let message = if code == "invalid_token" {
                "the bearer token is not valid"
            } else {
                "a bearer token or a reader client certificate is required"
            };
            let mut resp = error(StatusCode::UNAUTHORIZED, code, message);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"trustpool\""),
            );
            resp
        }
        Decision::Forbidden(subject) => {
            warn!(target: "trustpool_server::audit", peer = %remote, path = %path, certificate = %subject, "feed read refused: the certificate is not a reader's");
            error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this client certificate is not issued by the reader CA",
            )
        }
    }
}

async fn readyz(State(s): State<FeedState>) -> Response {
    #[derive(Serialize)]
    struct Ready {
        ready: bool,
        problems: Vec<&'static str>,
    }
    let problems = s.health.problems(&s.app);
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            ready: problems.is_empty(),
            problems,
        }),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn metrics(State(s): State<FeedState>) -> Response {
    let ready = s.health.problems(&s.app).is_empty();
    let mut text = s.app.metrics.render(&s.app.registry, mono_ms(), ready);
    store_metrics(&mut text, &s.app);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The store-health gauges and counters (README "Metrics").
fn store_metrics(out: &mut String, app: &AppState) {
    use std::fmt::Write as _;
    let h = app.store.health();
    let history_lost = app.history.get().map(|h| h.lost()).unwrap_or(0);
    for (name, kind, help, value) in [
        (
            "trustpool_store_writable",
            "gauge",
            "1 while database writes work (every write and the write probe decide).",
            u64::from(!h.write_failed()),
        ),
        (
            "trustpool_store_identity_ok",
            "gauge",
            "0 once the database file was removed or replaced under the running server.",
            u64::from(!h.identity_lost()),
        ),
        (
            "trustpool_store_write_errors_total",
            "counter",
            "Database writes that failed.",
            h.write_errors(),
        ),
        (
            "trustpool_history_lost_total",
            "counter",
            "History events that could not be stored and were dropped.",
            history_lost,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
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

async fn pools(State(s): State<FeedState>) -> Response {
    if let Some(resp) = s.unavailable() {
        return resp;
    }
    let registry = &s.app.registry;
    let now = mono_ms();
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
struct PoolHostsBody<'a> {
    pool: &'a str,
    generation: u64,
    hosts: Vec<PoolHost<'a>>,
}

#[derive(Serialize)]
struct PoolHost<'a> {
    hostname: &'a str,
    attested_at: String,
    valid_until: String,
}

/// `?wait=DUR&since=GENERATION` of the long-poll form.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollQuery {
    /// How long to wait for a change (at most [`MAX_WAIT`]).
    pub wait: Option<Duration>,
    /// The generation the consumer already has.
    pub since: Option<u64>,
}

/// Parses the query of `GET /v1/pools/{pool}/hosts`.
pub fn parse_poll_query(query: Option<&str>) -> Result<PollQuery, String> {
    let mut q = PollQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "wait" => {
                let d = crate::duration::parse_duration(value)?;
                q.wait = Some(d.min(MAX_WAIT));
            }
            "since" => {
                q.since = Some(
                    value
                        .parse()
                        .map_err(|_| format!("since='{value}' is not a generation number"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown query parameter '{}' (wait, since)",
                    other.chars().take(40).collect::<String>()
                ))
            }
        }
    }
    Ok(q)
}

/// The entity tag of a pool's membership: it changes whenever the body
/// would (membership via the generation, and every member's timestamps).
pub fn pool_etag(snap: &PoolSnapshot) -> String {
    // FNV-1a over the generation, the count and each member's timestamps.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    mix(snap.generation);
    mix(snap.members.len() as u64);
    for m in &snap.members {
        mix(m.attested_at_ms as u64);
        mix(m.valid_until_ms as u64);
    }
    format!("\"{}-{h:016x}\"", snap.generation)
}

/// True when `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

async fn pool_hosts(
    State(s): State<FeedState>,
    Path(pool): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = match parse_poll_query(query.as_deref()) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    if let Some(resp) = s.unavailable() {
        return resp;
    }
    let registry = &s.app.registry;
    // Subscribe before reading so that no change between the two is missed.
    let mut changes = registry.subscribe();
    let Some(mut snap) = registry.pool(&pool, mono_ms()) else {
        return not_found(&format!("no pool named '{pool}'"));
    };
    if let Some(wait) = params.wait {
        let since = params.since.unwrap_or(snap.generation);
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = s.stop.clone();
        while snap.generation == since && !*stop.borrow() {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
            }
            snap = match registry.pool(&pool, mono_ms()) {
                Some(snap) => snap,
                None => return not_found(&format!("no pool named '{pool}'")),
            };
        }
        if let Some(resp) = s.unavailable() {
            return resp;
        }
    }
    let etag = pool_etag(&snap);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if not_modified(&headers, &etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
        )
            .into_response();
    }
    let body = pool_body(&s, &snap, &etag);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from(body),
    )
        .into_response()
}

/// The JSON body of a pool, serialized once per ETag and shared by every
/// consumer that asks for the same state.
fn pool_body(s: &FeedState, snap: &PoolSnapshot, etag: &str) -> axum::body::Bytes {
    let mut cache = s.bodies.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((tag, body)) = cache.get(&snap.pool) {
        if tag == etag {
            return body.clone();
        }
    }
    let body = PoolHostsBody {
        pool: &snap.pool,
        generation: snap.generation,
        hosts: snap
            .members
            .iter()
            .map(|m| PoolHost {
                hostname: &m.hostname,
                attested_at: rfc3339(m.attested_at_ms),
                valid_until: rfc3339(m.valid_until_ms),
            })
            .collect(),
    };
    let bytes =
        axum::body::Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()));
    cache.insert(snap.pool.clone(), (etag.to_string(), bytes.clone()));
    bytes
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

async fn host(State(s): State<FeedState>, Path(hostname): Path<String>) -> Response {
    if let Some(resp) = s.unavailable() {
        return resp;
    }
    let name = hostname.to_ascii_lowercase();
    match s.app.registry.host(&name, mono_ms()) {
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
    use crate::registry::Member;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn poll_query_parses_and_refuses_garbage() {
        assert_eq!(parse_poll_query(None), Ok(PollQuery::default()));
        assert_eq!(
            parse_poll_query(Some("wait=30s&since=42")),
            Ok(PollQuery {
                wait: Some(Duration::from_secs(30)),
                since: Some(42)
            })
        );
        assert_eq!(
            parse_poll_query(Some("wait=1h")).map(|q| q.wait),
            Ok(Some(MAX_WAIT))
        );
        for bad in ["wait=30", "since=-1", "since=x", "token=abc", "wait=%ff"] {
            assert!(parse_poll_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn etag_follows_membership_and_timestamps() {
        let member = |until| Member {
            hostname: "a".into(),
            attested_at_ms: 1,
            valid_until_ms: until,
        };
        let snap = |g, until| PoolSnapshot {
            pool: "p".into(),
            generation: g,
            members: vec![member(until)],
        };
        assert_eq!(pool_etag(&snap(1, 10)), pool_etag(&snap(1, 10)));
        assert_ne!(pool_etag(&snap(1, 10)), pool_etag(&snap(2, 10)));
        assert_ne!(pool_etag(&snap(1, 10)), pool_etag(&snap(1, 11)));
        let tag = pool_etag(&snap(1, 10));
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).expect("value"),
        );
        assert!(not_modified(&h, &tag));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }

    mod router {
        use super::super::*;
        use crate::http_auth::FeedToken;
        use crate::registry::Registry;
        use crate::state::now_ms;
        use crate::store::{Store, StoredVerdict};
        use axum::body::Body;
        use axum::http::Request;
        use sha2::Digest;
        use tower::ServiceExt;
        use trustpool_evidence::ekcert::EkTrust;
        use trustpool_evidence::policy::parse_policy_set;

        struct Fixture {
            _dir: tempfile::TempDir,
            state: FeedState,
            _stop: watch::Sender<bool>,
        }

        async fn fixture(blob: Option<&str>) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&dir.path().join("t.db")).await.expect("store");
            let registry = Arc::new(Registry::new(1));
            registry.set_pools(&["default".into()], now_ms());
            registry.add_enrolment(crate::store::Enrolment {
                hostname: "host-a".into(),
                ek_public: vec![1],
                ek_certificate: None,
                ak_public: vec![2],
                ak_name: vec![3],
                cert_fingerprint: "f".into(),
                cert_subject: "CN=host-a".into(),
                enrolled_at_ms: 0,
            });
            let _ = registry.record_verdicts(
                vec![StoredVerdict {
                    hostname: "host-a".into(),
                    pool: "default".into(),
                    trusted: true,
                    attested_at_ms: now_ms(),
                    valid_until_ms: now_ms() + 60_000,
                    reasons: vec![],
                    policy_digest: "d".into(),
                }],
                now_ms(),
            );
            let text = format!(
                "require_measured_launch = false\n[[allow]]\nname = \"x\"\npcrs = {{ 0 = \"{}\" }}\n",
                "00".repeat(32)
            );
            let policy = parse_policy_set(&[("default.toml".into(), text)]).expect("policy");
            let app = Arc::new(AppState::new(
                store,
                registry,
                EkTrust::from_der_certs(vec![]).expect("trust"),
                policy,
                Duration::from_secs(30),
                Duration::from_secs(75),
            ));
            let token =
                FeedToken::new("t", &hex::encode(sha2::Sha256::digest(b"tok"))).expect("token");
            let auth = Arc::new(ReaderAuth::new(vec![token], None).expect("auth"));
            let oat_auth = match blob {
                Some(b) => crate::oat::OatAuth::Blob(sha2::Sha256::digest(b.as_bytes()).into()),
                None => crate::oat::OatAuth::Anonymous,
            };
            let oat = Some(Arc::new(OatConfig::new(None, None, oat_auth).expect("oat")));
            let (stop_tx, stop) = watch::channel(false);
            Fixture {
                _dir: dir,
                state: FeedState::new(app, auth, Arc::new(Health::default()), oat, false, stop),
                _stop: stop_tx,
            }
        }

        async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, serde_json::Value) {
            let resp = router(f.state.clone())
                .oneshot(req)
                .await
                .expect("infallible");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        }

        fn get(path: &str, token: Option<&str>) -> Request<Body> {
            let mut b = Request::get(path);
            if let Some(t) = token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            b.body(Body::empty()).expect("request")
        }

        fn poll(body: impl Into<Body>, blob: Option<&str>) -> Request<Body> {
            let mut b = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("content-type", "application/json");
            if let Some(x) = blob {
                b = b.header("x-auth-blob", x);
            }
            b.body(body.into()).expect("request")
        }

        #[tokio::test]
        async fn readers_only_and_fail_closed_when_the_database_is_gone() {
            let f = fixture(None).await;
            assert_eq!(
                call(&f, get("/v1/pools/default/hosts", None)).await.0,
                StatusCode::UNAUTHORIZED
            );
            let (status, body) = call(&f, get("/v1/pools/default/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["hosts"][0]["hostname"], "host-a");
            let (status, body) = call(&f, get("/v1/pools/default/hosts?wait=1", Some("tok"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(call(&f, get("/readyz", None)).await.0, StatusCode::OK);

            // The database stops answering: 503, never an empty list.
            f.state.app.store.close().await;
            assert!(f.state.app.store.probe().await.is_err());
            let (status, body) = call(&f, get("/v1/pools/default/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["error"]["code"], "unavailable");
            assert_eq!(
                call(&f, get("/v1/pools", Some("tok"))).await.0,
                StatusCode::SERVICE_UNAVAILABLE
            );
            assert_eq!(
                call(&f, get("/v1/hosts/host-a", Some("tok"))).await.0,
                StatusCode::SERVICE_UNAVAILABLE
            );
            let (status, body) = call(&f, get("/readyz", None)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["ready"], false);
            let (status, _) = call(&f, poll(r#"{"count":1,"hosts":["host-a"]}"#, None)).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "PollHosts vouches for nobody"
            );
            // Liveness stays up.
            let resp = router(f.state.clone())
                .oneshot(get("/healthz", None))
                .await
                .expect("ok");
            assert_eq!(resp.status(), StatusCode::OK);
        }

        #[tokio::test]
        async fn poll_hosts_refuses_bad_input_without_panicking() {
            let f = fixture(Some("blob")).await;
            let good = r#"{"count": 2, "hosts": ["host-a", "Nobody"]}"#;
            assert_eq!(call(&f, poll(good, None)).await.0, StatusCode::UNAUTHORIZED);
            assert_eq!(
                call(&f, poll(good, Some("wrong"))).await.0,
                StatusCode::UNAUTHORIZED
            );
            let (status, body) = call(&f, poll(good, Some("blob"))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["hosts"][0]["trust_lvl"], "trusted");
            assert_eq!(body["hosts"][1]["host_name"], "Nobody");
            assert_eq!(body["hosts"][1]["trust_lvl"], "untrusted");
            for bad in [
                "",
                "{",
                "[]",
                r#"{"hosts": "host-a"}"#,
                r#"{"count": 3, "hosts": ["a"]}"#,
                r#"{"count": -1, "hosts": []}"#,
                r#"{"hosts": [1, 2]}"#,
            ] {
                let (status, body) = call(&f, poll(bad, Some("blob"))).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
                assert_eq!(body["error"]["code"], "bad_request", "{bad}");
            }
            let huge = vec![b' '; crate::oat::MAX_BODY + 1];
            let (status, body) = call(&f, poll(huge, Some("blob"))).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
            assert_eq!(body["error"]["code"], "payload_too_large");
            let bin = vec![0xffu8, 0xfe, 0x00, 0x7b];
            assert_eq!(
                call(&f, poll(bin, Some("blob"))).await.0,
                StatusCode::BAD_REQUEST
            );
        }

        /// A body that never arrives: a handler that reads it never returns.
        fn never_arriving(declared: Option<u64>, blob: Option<&str>) -> Request<Body> {
            let mut b = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("content-type", "application/json");
            if let Some(n) = declared {
                b = b.header("content-length", n.to_string());
            }
            if let Some(x) = blob {
                b = b.header("x-auth-blob", x);
            }
            let pending = tokio_stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
            b.body(Body::from_stream(pending)).expect("request")
        }

        /// `call`, failing instead of hanging when the handler waits for a
        /// body that never comes (well past [`BODY_READ_TIMEOUT`]: a
        /// handler that read the body would wait for ever).
        async fn call_or_hang(f: &Fixture, req: Request<Body>) -> (StatusCode, serde_json::Value) {
            tokio::time::timeout(BODY_READ_TIMEOUT * 6, call(f, req))
                .await
                .expect("the handler waited for a body it should not have read")
        }

        #[tokio::test]
        async fn attack_poll_hosts_without_blob_is_refused_before_its_body() {
            let f = fixture(Some("blob")).await;
            for blob in [None, Some("wrong")] {
                let (status, body) =
                    call_or_hang(&f, never_arriving(Some(100_000_000), blob)).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
                assert_eq!(body["error"]["code"], "unauthenticated");
            }
        }

        #[tokio::test]
        async fn attack_poll_hosts_declaring_a_huge_body_gets_413_unread() {
            use tokio_stream::StreamExt as _;
            let f = fixture(Some("blob")).await;
            let (status, body) =
                call_or_hang(&f, never_arriving(Some(100_000_000), Some("blob"))).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
            assert_eq!(body["error"]["code"], "payload_too_large");
            // Undeclared (chunked) and larger than the limit: cut at the limit.
            let chunks = (0..64)
                .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 64 * 1024])));
            let req = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("x-auth-blob", "blob")
                .body(Body::from_stream(
                    tokio_stream::iter(chunks).chain(tokio_stream::pending()),
                ))
                .expect("request");
            let (status, body) = call_or_hang(&f, req).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        }

        #[tokio::test]
        async fn attack_poll_hosts_slow_body_gets_408() {
            let f = fixture(Some("blob")).await;
            let (status, body) = call_or_hang(&f, never_arriving(Some(40), Some("blob"))).await;
            assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
            assert_eq!(body["error"]["code"], "body_timeout");
        }

        #[tokio::test]
        async fn poll_hosts_is_not_served_unless_configured() {
            let mut f = fixture(Some("blob")).await;
            f.state.oat = None;
            let (status, body) = call(&f, poll(r#"{"count":0,"hosts":[]}"#, Some("blob"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }

        #[tokio::test]
        async fn unknown_paths_and_methods() {
            let f = fixture(None).await;
            let (status, body) = call(&f, get("/v2/nothing", Some("tok"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body["error"]["code"], "not_found");
            let (status, _) = call(&f, get("/v1/pools/nopool/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let resp = router(f.state.clone())
                .oneshot(
                    Request::get("/OpenAttestationWebServices/V1.0/PollHosts")
                        .body(Body::empty())
                        .expect("req"),
                )
                .await
                .expect("ok");
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
    }

    /// Every route the router declares is in the OpenAPI document, and every
    /// documented path is a route.
    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let source = include_str!("feed.rs");
        let mut routes: Vec<String> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(String::from)
            .collect();
        routes.push(format!("{}/PollHosts", crate::oat::DEFAULT_PREFIX));
        for r in &routes {
            assert!(documented.contains(r), "route {r} is not in openapi.json");
        }
        for d in &documented {
            assert!(
                routes.contains(d),
                "openapi.json documents {d}, which is not a route"
            );
        }
    }
}
