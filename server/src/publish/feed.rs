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
//! ([`crate::publish::readers`]).
//!
//! Bodies: PollHosts reads at most [`crate::publish::oat::MAX_BODY`] within
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

use crate::clock::{mono_ms, now_ms};
use crate::fleet::registry::{Member, PoolSnapshot};
use crate::publish::readers::{Decision, ReaderAuth};
use crate::state::AppState;
use crate::tls::certs::PeerInfo;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
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
pub const OPENAPI: &str = include_str!("../../openapi.json");
/// Body limit of every extractor of the router: no route but PollHosts
/// reads a body, and it reads its own with [`read_body`]; a route that
/// comes to need one sets the limit it needs.
pub const NO_BODY: usize = 0;
/// A request body must arrive whole within this time of the handler
/// starting to read it (408 `body_timeout` otherwise).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a long poll whose `since` is above this replica's generation
/// waits for this replica to catch up (a few change-table polls) before it
/// raises its generation above `since`.
pub const BEHIND_WAIT: Duration = Duration::from_secs(1);
/// Longest long-poll wait; a longer `wait` is shortened to this.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Readiness problem: this replica's policy is not the majority's.
pub const POLICY_DISAGREEMENT: &str =
    "policy_disagreement: this replica's policy digest is not the one most live replicas enforce";

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
        if !app.replica.policy_agrees() {
            problems.push(POLICY_DISAGREEMENT);
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
    /// Whether `/metrics` needs a reader credential.
    pub metrics_auth: bool,
    /// Becomes true when the server stops (ends long polls).
    pub stop: watch::Receiver<bool>,
    bodies: Arc<Mutex<HashMap<String, Published>>>,
}

impl FeedState {
    /// Bundles the handlers' state.
    pub fn new(
        app: Arc<AppState>,
        auth: Arc<ReaderAuth>,
        health: Arc<Health>,
        metrics_auth: bool,
        stop: watch::Receiver<bool>,
    ) -> FeedState {
        FeedState {
            app,
            auth,
            health,
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

pub fn not_found(message: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

/// Counts every answered request by route template and status.
pub async fn count_requests(State(s): State<FeedState>, req: Request, next: Next) -> Response {
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
pub async fn require_reader(State(s): State<FeedState>, req: Request, next: Next) -> Response {
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

pub async fn readyz(State(s): State<FeedState>) -> Response {
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

pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

pub async fn metrics(State(s): State<FeedState>) -> Response {
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

/// The store-health gauges and counters (docs/metrics.md).
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
            "trustpool_store_evidence_batches_total",
            "counter",
            "Transactions of the group-commit writer (each carries the evidence of one or more reports).",
            app.evidence_writer.batches(),
        ),
        (
            "trustpool_store_evidence_reports_total",
            "counter",
            "Reports the group-commit writer committed or failed; divided by the batches, the mean batch size.",
            app.evidence_writer.reports(),
        ),
        (
            "trustpool_history_lost_total",
            "counter",
            "History events that could not be stored and were dropped.",
            history_lost,
        ),
        (
            "trustpool_lease_held",
            "gauge",
            "1 while this replica holds the maintenance lease (Placement sync, expiry history).",
            u64::from(app.replica.holds_lease()),
        ),
        (
            "trustpool_replicas_live",
            "gauge",
            "Replicas on this database that announced themselves recently, this one included.",
            app.replica.view().live.len().max(1) as u64,
        ),
        (
            "trustpool_policy_agreement",
            "gauge",
            "0 while this replica's policy digest is not the one most live replicas enforce (it vouches for nobody).",
            u64::from(app.replica.policy_agrees()),
        ),
        (
            "trustpool_changes_applied_total",
            "counter",
            "Hosts re-read from the database because another replica changed them.",
            app.replica.changes_applied(),
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

pub async fn pools(State(s): State<FeedState>) -> Response {
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
struct ReplicasBody {
    replica: String,
    policy_digest: String,
    policy_agrees: bool,
    lease_holder: Option<String>,
    replicas: Vec<ReplicaEntry>,
}

#[derive(Serialize)]
struct ReplicaEntry {
    name: String,
    policy_digest: String,
    started_at: String,
    last_seen_ms_ago: i64,
}

/// The replicas sharing this database as this one last saw them (answered
/// also while this replica vouches for nobody: that is when it matters).
pub async fn replicas(State(s): State<FeedState>) -> Response {
    let r = &s.app.replica;
    let view = r.view();
    Json(ReplicasBody {
        replica: r.name.clone(),
        policy_digest: s.app.policy().digest_hex(),
        policy_agrees: r.policy_agrees(),
        lease_holder: view.lease_holder,
        replicas: view
            .live
            .into_iter()
            .map(|row| ReplicaEntry {
                name: row.name,
                policy_digest: row.policy_digest,
                started_at: rfc3339(row.started_ms),
                last_seen_ms_ago: row.age_ms.max(0),
            })
            .collect(),
    })
    .into_response()
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

/// The publication grid point at wall time `wall_now_ms` (see [`published`]):
/// it moves once per fifth of the validity and lies one to two steps ahead.
pub fn grid_point(wall_now_ms: i64, validity_ms: i64) -> i64 {
    let step = (validity_ms / 5).max(1_000);
    wall_now_ms.div_euclid(step) * step + 2 * step
}

/// The membership as the feed publishes it at wall time `wall_now_ms`:
/// every member's `valid_until` is lowered to a grid point that moves once
/// per fifth of the down time (`validity_ms`), and its `attested_at` by the
/// same amount, so that the body and its ETag change with the membership
/// and once per grid step — not at every report of every host — and a
/// consumer polling an unchanged pool gets 304s. Lowering only ever
/// shortens what a consumer may trust: a published `valid_until` is never
/// later than the member's own, and a published `attested_at` never later
/// than its real attestation. A member whose own `valid_until` is below the
/// grid point (a late report) is published as it is.
pub fn published(snap: &PoolSnapshot, wall_now_ms: i64, validity_ms: i64) -> PoolSnapshot {
    let grid = grid_point(wall_now_ms, validity_ms);
    let members = snap
        .members
        .iter()
        .map(|m| {
            let valid_until_ms = m.valid_until_ms.min(grid);
            Member {
                hostname: m.hostname.clone(),
                attested_at_ms: m.attested_at_ms - (m.valid_until_ms - valid_until_ms),
                valid_until_ms,
            }
        })
        .collect();
    PoolSnapshot {
        pool: snap.pool.clone(),
        generation: snap.generation,
        members,
    }
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

/// The entity tag of the gzip representation of the body tagged `etag`:
/// another representation needs another strong tag (RFC 9110 §8.8.3).
pub fn gzip_etag(etag: &str) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}-gz\""),
        None => format!("{etag}-gz"),
    }
}

/// True when `If-None-Match` names `etag` or its gzip representation's tag
/// (or is `*`): both stand for the same membership, so a consumer that
/// holds either has what a 200 would send.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let gz = gzip_etag(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| {
            let t = t.strip_prefix("W/").unwrap_or(t);
            t == "*" || t == etag || t == gz
        })
}

/// True when `Accept-Encoding` accepts gzip (`gzip` or `x-gzip`, not with
/// `q=0`). `*` is not taken as gzip: a client that names no coding gets
/// the identity body.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
                && !refused
        })
}

/// `body` compressed with gzip at the fastest level: a pool's JSON repeats
/// the same keys and similar timestamps for every member and shrinks about
/// tenfold, which saves the TLS encryption and the copies of the rest.
pub fn gzip(body: &[u8]) -> Bytes {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

pub async fn pool_hosts(
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
    let Some(mut generation) = registry.pool_generation(&pool) else {
        return not_found(&format!("no pool named '{pool}'"));
    };
    if let Some(wait) = params.wait {
        let since = params.since.unwrap_or(generation);
        let deadline = tokio::time::Instant::now() + wait;
        // A `since` above this replica's generation came from another
        // replica behind the same load balancer: this one is behind (by a
        // change-table poll at most) or numbers the same members lower.
        let behind_until = tokio::time::Instant::now() + BEHIND_WAIT;
        let mut stop = s.stop.clone();
        while generation <= since && !*stop.borrow() {
            let until = if generation < since {
                deadline.min(behind_until)
            } else {
                deadline
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.changed() => break,
            }
            generation = match registry.pool_generation(&pool) {
                Some(g) => g,
                None => return not_found(&format!("no pool named '{pool}'")),
            };
        }
        if generation < since {
            // Never answer a generation below one the consumer has seen.
            generation = match registry.raise_pool_generation(&pool, since + 1) {
                Some(g) => g,
                None => return not_found(&format!("no pool named '{pool}'")),
            };
        }
        if let Some(resp) = s.unavailable() {
            return resp;
        }
    }
    let Some(published) = pool_body(&s, &pool, generation) else {
        return not_found(&format!("no pool named '{pool}'"));
    };
    let gzip_wanted = accepts_gzip(&headers);
    let etag = if gzip_wanted {
        gzip_etag(&published.etag)
    } else {
        published.etag.clone()
    };
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    if not_modified(&headers, &published.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                vary,
            ],
        )
            .into_response();
    }
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            vary,
        ],
        if gzip_wanted {
            Body::from(published.gzip_body())
        } else {
            Body::from(published.body)
        },
    )
        .into_response();
    if gzip_wanted {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// A pool's published body, as served until its membership generation or
/// the publication grid point moves (or its earliest `valid_until` passes).
#[derive(Clone)]
pub struct Published {
    generation: u64,
    grid: i64,
    earliest_valid_until_ms: i64,
    etag: String,
    body: axum::body::Bytes,
    /// The body compressed, made by the first request that accepts gzip
    /// and shared by every clone of this publication.
    gzip: Arc<std::sync::OnceLock<Bytes>>,
}

impl Published {
    /// The gzip representation of the body (compressed once).
    fn gzip_body(&self) -> Bytes {
        self.gzip.get_or_init(|| gzip(&self.body)).clone()
    }
}

/// The published body of `pool` at `generation`: from the cache while the
/// generation and the grid point are those it was built for and none of its
/// entries is past its `valid_until` (so neither a 304 nor a GET copies the
/// membership), else built from a fresh snapshot. `None` for an unknown pool.
fn pool_body(s: &FeedState, pool: &str, generation: u64) -> Option<Published> {
    let validity = i64::try_from(s.app.down_time.as_millis()).unwrap_or(i64::MAX / 4);
    let wall = now_ms();
    let grid = grid_point(wall, validity);
    {
        let cache = s.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(pool) {
            if p.generation == generation && p.grid == grid && wall < p.earliest_valid_until_ms {
                return Some(p.clone());
            }
        }
    }
    let snap = published(&s.app.registry.pool(pool, mono_ms())?, wall, validity);
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
    let published = Published {
        generation: snap.generation,
        grid,
        earliest_valid_until_ms: snap
            .members
            .iter()
            .map(|m| m.valid_until_ms)
            .min()
            .unwrap_or(i64::MAX),
        etag: pool_etag(&snap),
        body: bytes,
        gzip: Arc::default(),
    };
    s.bodies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pool.to_string(), published.clone());
    Some(published)
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

pub async fn host(State(s): State<FeedState>, Path(hostname): Path<String>) -> Response {
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
    fn gzip_is_offered_only_to_clients_that_accept_it() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("value"),
            );
            accepts_gzip(&h)
        };
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(with("gzip"));
        assert!(with("gzip, deflate"), "python-requests' default");
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("x-gzip"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; q=0.0, identity"));
        assert!(!with("deflate, br"));
        assert!(!with("*"));
        assert!(!with("gzipped"));
    }

    #[test]
    fn the_gzip_body_is_the_identity_body_and_has_its_own_tag() {
        use std::io::Read;
        let body = br#"{"pool":"default","hosts":[{"hostname":"a"},{"hostname":"b"}]}"#.repeat(50);
        let packed = gzip(&body);
        assert!(
            packed.len() < body.len() / 4,
            "{} of {}",
            packed.len(),
            body.len()
        );
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("gunzip");
        assert_eq!(unpacked, body);

        let tag = "\"7-00ff\"";
        assert_eq!(gzip_etag(tag), "\"7-00ff-gz\"");
        let asking = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(value).expect("value"),
            );
            not_modified(&h, tag)
        };
        assert!(asking(tag));
        assert!(
            asking("\"7-00ff-gz\""),
            "either representation's tag is current"
        );
        assert!(asking("W/\"7-00ff-gz\""));
        assert!(!asking("\"6-00ff-gz\""));
        assert!(!asking("\"7-00ff-gzz\""));
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

    #[test]
    fn published_times_move_with_the_grid_not_with_every_report() {
        let validity = 75_000;
        let at = |attested: i64| PoolSnapshot {
            pool: "p".into(),
            generation: 7,
            members: vec![Member {
                hostname: "a".into(),
                attested_at_ms: attested,
                valid_until_ms: attested + validity,
            }],
        };
        let now = 1_000_000_000_000;
        // Two reports 30 s apart, read within one grid step: same body, same ETag.
        let first = published(&at(now - 31_000), now, validity);
        let second = published(&at(now - 1_000), now + 1_000, validity);
        assert_eq!(first, second);
        assert_eq!(pool_etag(&first), pool_etag(&second));
        // Never later than the member's own times.
        for snap in [&first, &second] {
            let m = &snap.members[0];
            assert!(m.valid_until_ms <= now - 1_000 + validity);
            assert!(m.valid_until_ms >= now + 15_000, "{m:?}");
            assert_eq!(m.valid_until_ms - m.attested_at_ms, validity);
        }
        // A late member is published as it is (its own time is below the grid).
        let late = published(&at(now - 70_000), now, validity);
        assert_eq!(late.members[0].valid_until_ms, now + 5_000);
        // The next grid step changes the ETag.
        let later = published(&at(now - 1_000), now + 15_000, validity);
        assert_ne!(pool_etag(&later), pool_etag(&second));
    }
}
