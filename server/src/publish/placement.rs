//! Placement trait sync for current Nova: while a host is a member of a pool
//! that opted in (`placement_pools`), its root resource provider (named
//! after the hypervisor hostname) carries the custom trait
//! `CUSTOM_TRUSTPOOL_<POOL>`; as soon as it leaves, the trait comes off.
//! Flavors then say `trait:CUSTOM_TRUSTPOOL_<POOL>=required`.
//!
//! Rules of engagement with Placement (nova-compute owns the other traits
//! of the same provider):
//! - the trait is created with `PUT /traits/{name}` before it is used;
//! - a provider's traits are only changed by read-modify-write: read the
//!   traits and the provider generation, write the whole set back with that
//!   generation, and on 409 `placement.concurrent_update` read again and
//!   retry after a random pause — never a blind write, never
//!   `DELETE /resource_providers/{uuid}/traits`;
//! - 5xx answers and connection errors are retried with back-off; a
//!   provider that does not exist is reported (log + metric), not fatal;
//! - membership changes arrive through `Registry::subscribe()` and are
//!   applied removals first; a periodic full reconcile (`GET
//!   /resource_providers?required=TRAIT`) repairs any drift;
//! - every request says `OpenStack-API-Version: placement 1.39`.
//!
//! Only one server replica may run the sync against one Placement (there is
//! one server today; with several, enable `[placement]` on one of them).

use crate::clock::{mono_ms, now_ms};
use crate::duration::serde_human;
use crate::fleet::registry::Registry;
use crate::metrics::Metrics;
use crate::tls::certs::{provider, read_certs};
use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The Placement microversion every request asks for.
pub const MICROVERSION: &str = "placement 1.39";
/// Default period of the full reconcile.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// Default timeout of one Placement or Keystone request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one read-modify-write under concurrent updates.
const MAX_CONFLICT_ATTEMPTS: u32 = 30;
/// Largest response body read from Placement or Keystone.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Where Debian keeps the system CA bundle (used when no `ca_file` is given).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The trait a pool's members carry: `CUSTOM_TRUSTPOOL_` + the pool name
/// upper-cased, every character other than A-Z and 0-9 written as `_`.
pub fn trait_name(pool: &str) -> String {
    let suffix: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CUSTOM_TRUSTPOOL_{suffix}")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `[placement]` of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementFile {
    /// Placement endpoint, e.g. `https://controller:8778` or `https://ctl/placement`.
    pub url: Option<String>,
    /// A static token (`X-Auth-Token`), e.g. `admin` with `noauth2` in tests.
    pub token: Option<String>,
    /// The static token, read from this file (mode 0600) instead.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle for HTTPS to Placement and Keystone (default: the system bundle).
    pub ca_file: Option<PathBuf>,
    /// Period of the full reconcile (default 60s).
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    pub reconcile_interval: Option<Duration>,
    /// Timeout of one request (default 10s).
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    pub timeout: Option<Duration>,
    /// Keystone credentials (instead of `token`).
    pub keystone: Option<KeystoneFile>,
    /// Accept `http://` for Placement and Keystone: the token (or the
    /// Keystone password) then crosses the network in clear. A lab only.
    pub allow_plain_http: Option<bool>,
}

/// `[placement.keystone]`: password or application credential.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneFile {
    /// Identity v3 endpoint, e.g. `https://keystone:5000/v3`.
    pub auth_url: Option<String>,
    /// User name (password method).
    pub username: Option<String>,
    /// User id (password method, instead of the name).
    pub user_id: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// The password, read from this file (mode 0600) instead.
    pub password_file: Option<PathBuf>,
    /// Domain of the user (default `Default`).
    pub user_domain_name: Option<String>,
    /// Project to scope the token to (password method).
    pub project_name: Option<String>,
    /// Project id (instead of the name).
    pub project_id: Option<String>,
    /// Domain of the project (default `Default`).
    pub project_domain_name: Option<String>,
    /// Application credential id.
    pub application_credential_id: Option<String>,
    /// Application credential secret.
    pub application_credential_secret: Option<String>,
    /// The application credential secret, read from this file (mode 0600) instead.
    pub application_credential_secret_file: Option<PathBuf>,
}

impl PlacementFile {
    /// The name of the first secret written inline in the file (`token`,
    /// `password`, `application_credential_secret`), if any: such a file
    /// must not be readable by every user.
    pub fn inline_secret(&self) -> Option<&'static str> {
        if self.token.is_some() {
            return Some("token");
        }
        let k = self.keystone.as_ref()?;
        if k.password.is_some() {
            Some("password")
        } else if k.application_credential_secret.is_some() {
            Some("application_credential_secret")
        } else {
            None
        }
    }
}

/// A secret given inline as `key` or in `key_file`, not both.
fn secret(
    section: &str,
    key: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("{section} takes {key} or {key}_file, not both"),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(path)) => {
            trustpool_daemon::secrets::read_secret_file(path, &format!("{section} {key}_file"))
                .map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// How the sync authenticates to Placement.
#[derive(Clone)]
pub enum PlacementAuth {
    /// A fixed token.
    Token(String),
    /// Tokens from Keystone, cached and renewed before they expire.
    Keystone(KeystoneConfig),
}

impl std::fmt::Debug for PlacementAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlacementAuth::Token(_) => f.write_str("Token(<redacted>)"),
            PlacementAuth::Keystone(k) => f.debug_tuple("Keystone").field(k).finish(),
        }
    }
}

/// Keystone v3 credentials.
#[derive(Clone)]
pub struct KeystoneConfig {
    /// URL of `POST …/auth/tokens`.
    pub tokens_url: String,
    /// The JSON body of the token request (holds the secret).
    body: serde_json::Value,
    /// For logs: `password:USER` or `application_credential:ID`.
    pub who: String,
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("tokens_url", &self.tokens_url)
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

impl KeystoneConfig {
    /// Validates `[placement.keystone]` and prepares the token request.
    pub fn from_file(k: &KeystoneFile) -> anyhow::Result<KeystoneConfig> {
        let auth_url = k
            .auth_url
            .as_deref()
            .context("[placement.keystone] needs auth_url")?
            .trim_end_matches('/');
        let tokens_url = if auth_url.ends_with("/v3") {
            format!("{auth_url}/auth/tokens")
        } else {
            format!("{auth_url}/v3/auth/tokens")
        };
        const SECTION: &str = "[placement.keystone]";
        let app_secret = secret(
            SECTION,
            "application_credential_secret",
            &k.application_credential_secret,
            &k.application_credential_secret_file,
        )?;
        if let (Some(id), Some(secret)) = (&k.application_credential_id, &app_secret) {
            return Ok(KeystoneConfig {
                tokens_url,
                body: serde_json::json!({"auth": {"identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": id, "secret": secret}
                }}}),
                who: format!("application_credential:{id}"),
            });
        }
        if k.application_credential_id.is_some() || app_secret.is_some() {
            bail!("[placement.keystone] needs both application_credential_id and application_credential_secret");
        }
        let password = secret(SECTION, "password", &k.password, &k.password_file)?
            .context("[placement.keystone] needs password (or an application credential)")?;
        let password = password.as_str();
        let user = match (&k.user_id, &k.username) {
            (Some(id), _) => serde_json::json!({"id": id, "password": password}),
            (None, Some(name)) => serde_json::json!({
                "name": name,
                "domain": {"name": k.user_domain_name.as_deref().unwrap_or("Default")},
                "password": password
            }),
            (None, None) => bail!("[placement.keystone] needs username or user_id"),
        };
        let project = match (&k.project_id, &k.project_name) {
            (Some(id), _) => serde_json::json!({"id": id}),
            (None, Some(name)) => serde_json::json!({
                "name": name,
                "domain": {"name": k.project_domain_name.as_deref().unwrap_or("Default")}
            }),
            (None, None) => bail!("[placement.keystone] needs project_name or project_id"),
        };
        let who = format!(
            "password:{}",
            k.username
                .as_deref()
                .or(k.user_id.as_deref())
                .unwrap_or("?")
        );
        Ok(KeystoneConfig {
            tokens_url,
            body: serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": project}
            }}),
            who,
        })
    }
}

/// The resolved Placement sync configuration.
#[derive(Debug, Clone)]
pub struct PlacementConfig {
    /// Placement endpoint without a trailing `/`.
    pub url: String,
    /// Authentication.
    pub auth: PlacementAuth,
    /// Pools whose members carry their trait.
    pub pools: Vec<String>,
    /// CA bundle for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Period of the full reconcile.
    pub reconcile_interval: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl PlacementConfig {
    /// Validates `[placement]` and `placement_pools`; `None` when the sync is off.
    pub fn resolve(
        file: Option<&PlacementFile>,
        pools: &[String],
    ) -> anyhow::Result<Option<PlacementConfig>> {
        let Some(file) = file else {
            if !pools.is_empty() {
                bail!(
                    "placement_pools is set but there is no [placement] section with the endpoint"
                );
            }
            return Ok(None);
        };
        if pools.is_empty() {
            bail!(
                "[placement] is configured but placement_pools is empty: name the pools to publish"
            );
        }
        let url = file
            .url
            .as_deref()
            .context("[placement] needs url")?
            .trim_end_matches('/')
            .to_string();
        let allow_plain_http = file.allow_plain_http.unwrap_or(false);
        check_url("[placement] url", &url, allow_plain_http)?;
        if let Some(auth_url) = file.keystone.as_ref().and_then(|k| k.auth_url.as_deref()) {
            check_url("[placement.keystone] auth_url", auth_url, allow_plain_http)?;
        }
        let token = secret("[placement]", "token", &file.token, &file.token_file)?;
        let auth = match (&token, &file.keystone) {
            (Some(_), Some(_)) => {
                bail!("[placement] takes token or [placement.keystone], not both")
            }
            (Some(t), None) if !t.is_empty() => PlacementAuth::Token(t.clone()),
            (None, Some(k)) => PlacementAuth::Keystone(KeystoneConfig::from_file(k)?),
            _ => bail!("[placement] needs a token or a [placement.keystone] section"),
        };
        let mut seen = BTreeSet::new();
        for p in pools {
            if !seen.insert(trait_name(p)) {
                bail!(
                    "placement_pools: two pools map to the trait {}",
                    trait_name(p)
                );
            }
        }
        let reconcile_interval = file
            .reconcile_interval
            .unwrap_or(DEFAULT_RECONCILE_INTERVAL);
        if reconcile_interval < Duration::from_secs(1) {
            bail!("[placement] reconcile_interval must be at least 1s");
        }
        Ok(Some(PlacementConfig {
            url,
            auth,
            pools: pools.to_vec(),
            ca_file: file.ca_file.clone(),
            reconcile_interval,
            timeout: file
                .timeout
                .unwrap_or(DEFAULT_TIMEOUT)
                .max(Duration::from_millis(100)),
        }))
    }
}

/// `https://HOST[:PORT][/path]`, or `http://` with `allow_plain_http`.
fn check_url(what: &str, url: &str, allow_plain_http: bool) -> anyhow::Result<()> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{what} '{url}' is not a URL"))?;
    if uri.host().is_none() {
        bail!("{what} '{url}' must be https://HOST[:PORT][/path]");
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if allow_plain_http => Ok(()),
        Some("http") => bail!(
            "{what} '{url}' is plain HTTP: the token would cross the network in clear; use https:// (allow_plain_http = true in [placement] accepts it, for a lab only)"
        ),
        _ => bail!("{what} '{url}' must be https://HOST[:PORT][/path]"),
    }
}

// ---------------------------------------------------------------------------
// A small HTTP/1.1 client (hyper + rustls/ring), one kept-alive connection per endpoint
// ---------------------------------------------------------------------------

/// A failed request that never got an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The URL cannot be used.
    #[error("bad URL {0}")]
    Url(String),
    /// TCP or TLS connection failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// Sending or reading failed.
    #[error("request to {0} failed: {1}")]
    Io(String, String),
    /// No answer within the timeout.
    #[error("no answer from {0} within the timeout")]
    Timeout(String),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// HTTP/1.1 client over TCP or TLS (rustls with ring).
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    conns: tokio::sync::Mutex<HashMap<String, SendRequest<Full<Bytes>>>>,
}

impl HttpClient {
    /// A client that trusts the CA certificates of `ca_file` (or the system
    /// bundle) for HTTPS.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> anyhow::Result<HttpClient> {
        let mut roots = rustls::RootCertStore::empty();
        let bundle = ca_file
            .map(Path::to_path_buf)
            .or_else(|| Some(PathBuf::from(SYSTEM_CA_BUNDLE)).filter(|p| p.is_file()));
        if let Some(path) = bundle {
            for cert in read_certs(&path, "Placement CA bundle")? {
                // A system bundle may hold certificates webpki cannot use: skip those.
                let _ = roots.add(cert);
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            tls: Arc::new(tls),
            timeout,
            conns: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, CallError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, url, headers, body)).await
        {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(redact_query(url))),
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, CallError> {
        let uri: Uri = url.parse().map_err(|_| CallError::Url(redact_query(url)))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(CallError::Url(redact_query(url))),
        };
        let host = uri
            .host()
            .ok_or_else(|| CallError::Url(redact_query(url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let key = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let body = Bytes::from(body.unwrap_or_default());
        // A kept-alive connection may have been closed by the server in the
        // meantime: one more try on a fresh connection.
        for fresh in [false, true] {
            let mut sender = match self.take(&key, fresh).await {
                Some(s) => s,
                None => self.connect(&key, &host, port, tls).await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .header(header::HOST, authority.as_str());
            for (name, value) in headers {
                builder = builder.header(name, value.as_str());
            }
            if !body.is_empty() {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            let request = builder
                .body(Full::new(body.clone()))
                .map_err(|e| CallError::Url(format!("{}: {e}", redact_query(url))))?;
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e)
                    if !fresh
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    continue
                }
                Err(e) => return Err(CallError::Io(redact_query(url), e.to_string())),
            };
            let (parts, incoming) = response.into_parts();
            let keep = parts.version == hyper::Version::HTTP_11
                && !parts
                    .headers
                    .get(header::CONNECTION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let body = Limited::new(incoming, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| CallError::Io(redact_query(url), e.to_string()))?
                .to_bytes();
            if keep {
                self.conns.lock().await.insert(key, sender);
            }
            return Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        Err(CallError::Io(
            redact_query(url),
            "the connection closed twice".into(),
        ))
    }

    async fn take(&self, key: &str, fresh: bool) -> Option<SendRequest<Full<Bytes>>> {
        let cached = self.conns.lock().await.remove(key);
        if fresh {
            return None;
        }
        cached.filter(|s| !s.is_closed())
    }

    async fn connect(
        &self,
        key: &str,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| CallError::Connect(key.to_string(), e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if tls {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| CallError::Connect(key.to_string(), e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| CallError::Connect(key.to_string(), format!("TLS: {e}")))?;
            self.handshake(key, TokioIo::new(stream)).await
        } else {
            self.handshake(key, TokioIo::new(tcp)).await
        }
    }

    async fn handshake<T>(&self, key: &str, io: T) -> Result<SendRequest<Full<Bytes>>, CallError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| CallError::Connect(key.to_string(), e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// A URL for logs: without its query string.
fn redact_query(url: &str) -> String {
    url.split('?').next().unwrap_or("").to_string()
}

/// Percent-encodes a query value (unreserved characters pass).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Placement API
// ---------------------------------------------------------------------------

/// Why a Placement operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Worth retrying later (5xx, connection, timeout, conflicts exhausted).
    #[error("{kind}: {message}")]
    Retryable {
        /// Metric kind.
        kind: &'static str,
        /// Explanation.
        message: String,
    },
    /// No resource provider has the host's name.
    #[error("no resource provider named '{0}'")]
    ProviderMissing(String),
    /// Retrying will not help until the configuration changes (4xx).
    #[error("{kind}: {message}")]
    Permanent {
        /// Metric kind.
        kind: &'static str,
        /// Explanation.
        message: String,
    },
}

impl SyncError {
    fn kind(&self) -> &'static str {
        match self {
            SyncError::Retryable { kind, .. } | SyncError::Permanent { kind, .. } => kind,
            SyncError::ProviderMissing(_) => "provider_missing",
        }
    }
}

#[derive(Debug, Deserialize)]
struct ProviderList {
    resource_providers: Vec<ProviderRef>,
}

#[derive(Debug, Deserialize)]
struct ProviderRef {
    uuid: String,
    name: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct ProviderTraits {
    traits: Vec<String>,
    resource_provider_generation: u64,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    token: TokenBody,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    expires_at: String,
}

/// Placement as the sync uses it.
pub struct PlacementApi {
    http: HttpClient,
    base: String,
    auth: PlacementAuth,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    metrics: Arc<Metrics>,
}

impl PlacementApi {
    /// A client of the configured Placement.
    pub fn new(cfg: &PlacementConfig, metrics: Arc<Metrics>) -> anyhow::Result<PlacementApi> {
        Ok(PlacementApi {
            http: HttpClient::new(cfg.ca_file.as_deref(), cfg.timeout)?,
            base: cfg.url.clone(),
            auth: cfg.auth.clone(),
            token: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    fn transport_error(&self, e: CallError) -> SyncError {
        let kind = match e {
            CallError::Timeout(_) => "timeout",
            CallError::Url(_) => "config",
            _ => "connect",
        };
        self.metrics.placement_error(kind);
        SyncError::Retryable {
            kind,
            message: e.to_string(),
        }
    }

    /// A token for Placement: the static one, or a cached Keystone token
    /// renewed when less than a tenth of its life (at least a minute) is left.
    async fn token(&self) -> Result<String, SyncError> {
        let keystone = match &self.auth {
            PlacementAuth::Token(t) => return Ok(t.clone()),
            PlacementAuth::Keystone(k) => k,
        };
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let body = serde_json::to_vec(&keystone.body).unwrap_or_default();
        let reply = self
            .http
            .call(Method::POST, &keystone.tokens_url, &[], Some(body))
            .await
            .map_err(|e| self.transport_error(e))?;
        if reply.status != StatusCode::CREATED && reply.status != StatusCode::OK {
            self.metrics.placement_error("auth");
            let retryable = reply.status.is_server_error();
            let message = format!(
                "Keystone refused the credentials of {} ({})",
                keystone.who, reply.status
            );
            return Err(if retryable {
                SyncError::Retryable {
                    kind: "auth",
                    message,
                }
            } else {
                SyncError::Permanent {
                    kind: "auth",
                    message,
                }
            });
        }
        let token = reply
            .headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                self.metrics.placement_error("auth");
                SyncError::Retryable {
                    kind: "auth",
                    message: "Keystone answered without X-Subject-Token".into(),
                }
            })?;
        let lifetime = serde_json::from_slice::<TokenResponse>(&reply.body)
            .ok()
            .and_then(|t| {
                time::OffsetDateTime::parse(
                    &t.token.expires_at,
                    &time::format_description::well_known::Iso8601::DEFAULT,
                )
                .ok()
            })
            .map(|expires| {
                let left = expires - time::OffsetDateTime::now_utc();
                Duration::from_secs(u64::try_from(left.whole_seconds()).unwrap_or(0))
            })
            .unwrap_or(Duration::from_secs(600));
        let margin = (lifetime / 10).max(Duration::from_secs(60));
        let renew_at = Instant::now() + lifetime.saturating_sub(margin);
        info!(who = %keystone.who, lifetime_s = lifetime.as_secs(), "Keystone token obtained for Placement");
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// One Placement request with the token and microversion; a 401 renews
    /// a Keystone token once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, SyncError> {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        for attempt in 0..2 {
            let token = self.token().await?;
            let headers = [
                (HeaderName::from_static("x-auth-token"), token),
                (
                    HeaderName::from_static("openstack-api-version"),
                    MICROVERSION.to_string(),
                ),
                (header::ACCEPT, "application/json".to_string()),
            ];
            let reply = self
                .http
                .call(method.clone(), &url, &headers, body.clone())
                .await
                .map_err(|e| self.transport_error(e))?;
            if reply.status == StatusCode::UNAUTHORIZED
                && attempt == 0
                && matches!(self.auth, PlacementAuth::Keystone(_))
            {
                self.forget_token().await;
                continue;
            }
            return Ok(reply);
        }
        self.metrics.placement_error("auth");
        Err(SyncError::Permanent {
            kind: "auth",
            message: format!("Placement refused our token for {method} {path}"),
        })
    }

    /// Classifies an unexpected answer.
    fn unexpected(&self, what: &str, reply: &Reply) -> SyncError {
        let text = String::from_utf8_lossy(&reply.body);
        let text: String = text.chars().take(300).collect();
        let message = format!("{what}: Placement answered {}: {text}", reply.status);
        if reply.status.is_server_error() {
            self.metrics.placement_error("http_5xx");
            SyncError::Retryable {
                kind: "http_5xx",
                message,
            }
        } else {
            self.metrics.placement_error("http_4xx");
            SyncError::Permanent {
                kind: "http_4xx",
                message,
            }
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        reply: &Reply,
    ) -> Result<T, SyncError> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            self.metrics.placement_error("decode");
            SyncError::Retryable {
                kind: "decode",
                message: format!("{what}: unexpected answer from Placement: {e}"),
            }
        })
    }

    /// `PUT /traits/{name}` (201 created, 204 already there).
    pub async fn ensure_trait(&self, name: &str) -> Result<(), SyncError> {
        let reply = self
            .request(Method::PUT, &format!("/traits/{}", encode(name)), None)
            .await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            _ => Err(self.unexpected(&format!("creating trait {name}"), &reply)),
        }
    }

    /// The uuid of the provider named `name`, if there is one.
    pub async fn provider_uuid(&self, name: &str) -> Result<Option<String>, SyncError> {
        let reply = self
            .request(
                Method::GET,
                &format!("/resource_providers?name={}", encode(name)),
                None,
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.unexpected(&format!("looking up provider {name}"), &reply));
        }
        let list: ProviderList = self.decode("provider list", &reply)?;
        Ok(list
            .resource_providers
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.uuid))
    }

    /// Providers that carry `trait_name` now: (name, uuid).
    pub async fn providers_with(
        &self,
        trait_name: &str,
    ) -> Result<Vec<(String, String)>, SyncError> {
        let reply = self
            .request(
                Method::GET,
                &format!("/resource_providers?required={}", encode(trait_name)),
                None,
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.unexpected(&format!("listing providers with {trait_name}"), &reply));
        }
        let list: ProviderList = self.decode("provider list", &reply)?;
        Ok(list
            .resource_providers
            .into_iter()
            .map(|p| (p.name, p.uuid))
            .collect())
    }

    /// Read-modify-write of one provider's traits: `want` says whether
    /// `trait_name` must be in the set. Returns whether a write happened.
    pub async fn set_trait(
        &self,
        uuid: &str,
        trait_name: &str,
        want: bool,
    ) -> Result<bool, SyncError> {
        let path = format!("/resource_providers/{}/traits", encode(uuid));
        for attempt in 1..=MAX_CONFLICT_ATTEMPTS {
            let reply = self.request(Method::GET, &path, None).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Err(SyncError::ProviderMissing(uuid.to_string()));
            }
            if reply.status != StatusCode::OK {
                return Err(self.unexpected("reading provider traits", &reply));
            }
            let current: ProviderTraits = self.decode("provider traits", &reply)?;
            let has = current.traits.iter().any(|t| t == trait_name);
            if has == want {
                return Ok(false);
            }
            let mut traits: Vec<String> = current
                .traits
                .into_iter()
                .filter(|t| t != trait_name)
                .collect();
            if want {
                traits.push(trait_name.to_string());
            }
            let body = serde_json::json!({
                "traits": traits,
                "resource_provider_generation": current.resource_provider_generation,
            });
            let reply = self.request(Method::PUT, &path, Some(&body)).await?;
            match reply.status {
                StatusCode::OK => return Ok(true),
                StatusCode::CONFLICT if is_concurrent_update(&reply.body) => {
                    self.metrics.placement_conflict();
                    // Someone else wrote in between: read again after a random pause.
                    let cap = 10u64.saturating_mul(u64::from(attempt)).min(250);
                    let pause = rand::thread_rng().gen_range(1..=cap);
                    debug!(provider = %uuid, attempt, pause_ms = pause, "concurrent update of a provider's traits: retrying");
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                StatusCode::NOT_FOUND => return Err(SyncError::ProviderMissing(uuid.to_string())),
                _ => return Err(self.unexpected("writing provider traits", &reply)),
            }
        }
        self.metrics.placement_error("conflicts_exhausted");
        Err(SyncError::Retryable {
            kind: "conflicts_exhausted",
            message: format!(
                "provider {uuid}: still conflicting after {MAX_CONFLICT_ATTEMPTS} attempts"
            ),
        })
    }
}

/// True when a 409 body carries the error code `placement.concurrent_update`.
fn is_concurrent_update(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| {
            e.errors
                .iter()
                .any(|x| x.code.as_deref() == Some("placement.concurrent_update"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// The sync task
// ---------------------------------------------------------------------------

/// One trait change waiting to be applied.
#[derive(Debug, Clone)]
struct Pending {
    want: bool,
    /// When the change was first seen (for the lag metric).
    since: Instant,
    attempts: u32,
    not_before: Instant,
}

/// The sync's state: what it believes Placement shows, and what is pending.
pub struct PlacementSync {
    api: PlacementApi,
    cfg: PlacementConfig,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Members per opted-in pool as last seen.
    applied: BTreeMap<String, BTreeSet<String>>,
    /// (trait, host) → pending change.
    pending: BTreeMap<(String, String), Pending>,
    uuids: HashMap<String, String>,
    traits_ready: BTreeSet<String>,
    missing: BTreeSet<String>,
}

impl PlacementSync {
    /// A sync of `cfg.pools` from `registry` to Placement.
    pub fn new(
        cfg: PlacementConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<PlacementSync> {
        Ok(PlacementSync {
            api: PlacementApi::new(&cfg, metrics.clone())?,
            cfg,
            registry,
            metrics,
            applied: BTreeMap::new(),
            pending: BTreeMap::new(),
            uuids: HashMap::new(),
            traits_ready: BTreeSet::new(),
            missing: BTreeSet::new(),
        })
    }

    /// Runs until `stop` becomes true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.registry.subscribe();
        info!(
            placement = %self.cfg.url,
            pools = ?self.cfg.pools,
            reconcile_interval = ?self.cfg.reconcile_interval,
            "Placement trait sync started"
        );
        let mut next_reconcile = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            changes.borrow_and_update();
            self.observe_membership();
            if Instant::now() >= next_reconcile {
                let ok = self.reconcile().await;
                let wait = if ok {
                    self.cfg.reconcile_interval
                } else {
                    self.cfg.reconcile_interval.min(Duration::from_secs(5))
                };
                next_reconcile = Instant::now() + wait;
            }
            self.drain(&mut changes).await;
            self.metrics.placement_pending(self.pending.len());
            let wake = self
                .pending
                .values()
                .map(|p| p.not_before)
                .min()
                .map_or(next_reconcile, |t| t.min(next_reconcile));
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
                _ = stop.changed() => {}
            }
        }
        info!("Placement trait sync stopped");
    }

    /// Compares each opted-in pool's members with what was last seen and
    /// queues the differences.
    fn observe_membership(&mut self) {
        let now = Instant::now();
        let at = mono_ms();
        for pool in self.cfg.pools.clone() {
            let members: BTreeSet<String> = self
                .registry
                .pool(&pool, at)
                .map(|s| s.members.into_iter().map(|m| m.hostname).collect())
                .unwrap_or_default();
            let before = self.applied.remove(&pool).unwrap_or_default();
            let trait_name = trait_name(&pool);
            for gone in before.difference(&members) {
                info!(pool = %pool, host = %gone, "host left the pool: removing {trait_name}");
                self.queue(&trait_name, gone, false, now);
            }
            for new in members.difference(&before) {
                info!(pool = %pool, host = %new, "host joined the pool: adding {trait_name}");
                self.queue(&trait_name, new, true, now);
            }
            self.applied.insert(pool, members);
        }
    }

    fn queue(&mut self, trait_name: &str, host: &str, want: bool, now: Instant) {
        let key = (trait_name.to_string(), host.to_string());
        match self.pending.get_mut(&key) {
            Some(p) if p.want == want => {}
            Some(p) => {
                *p = Pending {
                    want,
                    since: now,
                    attempts: 0,
                    not_before: now,
                }
            }
            None => {
                self.pending.insert(
                    key,
                    Pending {
                        want,
                        since: now,
                        attempts: 0,
                        not_before: now,
                    },
                );
            }
        }
    }

    /// Applies every due pending change, removals first; re-reads the
    /// membership whenever it changes in between.
    async fn drain(&mut self, changes: &mut watch::Receiver<u64>) {
        loop {
            if changes.has_changed().unwrap_or(false) {
                changes.borrow_and_update();
                self.observe_membership();
            }
            let now = Instant::now();
            let next = self
                .pending
                .iter()
                .filter(|(_, p)| p.not_before <= now)
                .min_by_key(|(_, p)| (p.want, p.since))
                .map(|(k, p)| (k.clone(), p.clone()));
            let Some(((trait_name, host), p)) = next else {
                return;
            };
            let op = if p.want { "add" } else { "remove" };
            match self.apply(&trait_name, &host, p.want).await {
                Ok(wrote) => {
                    self.pending.remove(&(trait_name.clone(), host.clone()));
                    self.missing.remove(&host);
                    let lag = p.since.elapsed();
                    self.metrics
                        .placement_op(op, if wrote { "ok" } else { "unchanged" });
                    self.metrics.placement_lag(lag);
                    info!(host = %host, trait_name = %trait_name, op, lag_ms = lag.as_millis() as u64, "Placement updated");
                }
                Err(SyncError::ProviderMissing(_)) => {
                    self.pending.remove(&(trait_name.clone(), host.clone()));
                    self.metrics.placement_op(op, "provider_missing");
                    self.metrics.placement_error("provider_missing");
                    if self.missing.insert(host.clone()) {
                        warn!(host = %host, trait_name = %trait_name, "no resource provider named after this host in Placement: trait not changed (checked again at every reconcile)");
                    }
                }
                Err(e) => {
                    self.metrics.placement_op(op, "error");
                    let key = (trait_name.clone(), host.clone());
                    if let Some(entry) = self.pending.get_mut(&key) {
                        entry.attempts += 1;
                        let backoff = backoff(entry.attempts);
                        entry.not_before = Instant::now() + backoff;
                        warn!(host = %host, trait_name = %trait_name, op, attempt = entry.attempts, retry_in_ms = backoff.as_millis() as u64, error = %e, "Placement update failed: will retry");
                    }
                    if matches!(
                        e,
                        SyncError::Retryable {
                            kind: "connect" | "timeout",
                            ..
                        }
                    ) {
                        // Placement is away: do not hammer it with the rest of the queue now.
                        let until = Instant::now() + backoff(1);
                        for p in self.pending.values_mut() {
                            p.not_before = p.not_before.max(until);
                        }
                    }
                }
            }
        }
    }

    async fn apply(&mut self, trait_name: &str, host: &str, want: bool) -> Result<bool, SyncError> {
        if want && !self.traits_ready.contains(trait_name) {
            self.api.ensure_trait(trait_name).await?;
            self.traits_ready.insert(trait_name.to_string());
        }
        for _ in 0..2 {
            let uuid = match self.uuids.get(host) {
                Some(u) => u.clone(),
                None => match self.api.provider_uuid(host).await? {
                    Some(u) => {
                        self.uuids.insert(host.to_string(), u.clone());
                        u
                    }
                    None => return Err(SyncError::ProviderMissing(host.to_string())),
                },
            };
            match self.api.set_trait(&uuid, trait_name, want).await {
                // The provider was deleted and maybe re-created: look it up again.
                Err(SyncError::ProviderMissing(_)) => {
                    self.uuids.remove(host);
                }
                Err(SyncError::Permanent {
                    kind: "http_4xx",
                    message,
                }) if want && message.contains("No such trait") => {
                    // e.g. the trait was deleted by someone: create it again.
                    self.traits_ready.remove(trait_name);
                    self.api.ensure_trait(trait_name).await?;
                    self.traits_ready.insert(trait_name.to_string());
                }
                other => return other,
            }
        }
        Err(SyncError::ProviderMissing(host.to_string()))
    }

    /// Full reconcile: makes sure every trait exists, and queues a change for
    /// every provider whose trait disagrees with the membership.
    async fn reconcile(&mut self) -> bool {
        let started = Instant::now();
        let now = Instant::now();
        let mut ok = true;
        for pool in self.cfg.pools.clone() {
            let trait_name = trait_name(&pool);
            if let Err(e) = self.api.ensure_trait(&trait_name).await {
                warn!(trait_name = %trait_name, error = %e, kind = e.kind(), "cannot create the trait in Placement");
                ok = false;
                continue;
            }
            self.traits_ready.insert(trait_name.clone());
            let carrying = match self.api.providers_with(&trait_name).await {
                Ok(list) => list,
                Err(e) => {
                    warn!(trait_name = %trait_name, error = %e, "cannot list the providers carrying the trait");
                    ok = false;
                    continue;
                }
            };
            let members = self.applied.get(&pool).cloned().unwrap_or_default();
            let mut carrying_names = BTreeSet::new();
            for (name, uuid) in carrying {
                self.uuids.insert(name.clone(), uuid);
                if !members.contains(&name) {
                    info!(host = %name, trait_name = %trait_name, "reconcile: provider carries the trait but the host is not in the pool");
                    self.queue(&trait_name, &name, false, now);
                }
                carrying_names.insert(name);
            }
            for m in members.difference(&carrying_names) {
                if !self.pending.contains_key(&(trait_name.clone(), m.clone())) {
                    debug!(host = %m, trait_name = %trait_name, "reconcile: member lacks the trait");
                }
                self.queue(&trait_name, m, true, now);
            }
        }
        self.metrics.placement_reconcile(ok, now_ms());
        debug!(
            ok,
            millis = started.elapsed().as_millis() as u64,
            "Placement reconcile done"
        );
        ok
    }
}

/// Back-off of the `attempt`-th retry: 0.5 s doubling to 30 s, with ±25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(6))
        .min(30_000);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    Duration::from_millis((base as f64 * jitter) as u64)
}

/// Starts the sync task when `[placement]` is configured.
///
/// The sync runs only while `lease` says this replica holds the
/// maintenance lease: it starts (with a full reconcile) when the lease is
/// taken and stops when it is lost, so replicas never write traits at once.
pub fn spawn(
    cfg: Option<PlacementConfig>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    mut lease: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    // Refuse a bad configuration now, not at the first lease.
    drop(PlacementSync::new(
        cfg.clone(),
        registry.clone(),
        metrics.clone(),
    )?);
    Ok(Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                held = lease.wait_for(|held| *held) => if held.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
            let sync = match PlacementSync::new(cfg.clone(), registry.clone(), metrics.clone()) {
                Ok(sync) => sync,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "cannot start the Placement sync");
                    break;
                }
            };
            // The sync's stop: the server stops or the lease is lost.
            let (lost, until) = watch::channel(false);
            let mut watch_lease = lease.clone();
            let mut watch_stop = stop.clone();
            let relay = tokio::spawn(async move {
                tokio::select! {
                    _ = watch_lease.wait_for(|held| !*held) => {}
                    _ = watch_stop.wait_for(|s| *s) => {}
                }
                let _ = lost.send(true);
            });
            sync.run(until).await;
            relay.abort();
            if *stop.borrow() {
                break;
            }
            info!("the maintenance lease moved: Placement sync stopped on this replica");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_names_follow_the_pool() {
        assert_eq!(trait_name("default"), "CUSTOM_TRUSTPOOL_DEFAULT");
        assert_eq!(trait_name("gold-tier.2"), "CUSTOM_TRUSTPOOL_GOLD_TIER_2");
    }

    #[test]
    fn conflict_bodies_are_recognised() {
        assert!(is_concurrent_update(
            br#"{"errors": [{"status": 409, "code": "placement.concurrent_update", "title": "Conflict"}]}"#
        ));
        assert!(!is_concurrent_update(
            br#"{"errors": [{"status": 409, "code": "placement.undefined_code"}]}"#
        ));
        assert!(!is_concurrent_update(b"not json"));
    }

    #[test]
    fn configuration_is_validated() {
        let file = |text: &str| -> PlacementFile { toml::from_str(text).expect("toml") };
        let pools = vec!["default".to_string()];
        let ok = PlacementConfig::resolve(
            Some(&file("url = \"http://127.0.0.1:8778/\"\ntoken = \"admin\"\nreconcile_interval = \"5s\"\nallow_plain_http = true\n")),
            &pools,
        )
        .expect("valid")
        .expect("on");
        assert_eq!(ok.url, "http://127.0.0.1:8778");
        assert_eq!(ok.reconcile_interval, Duration::from_secs(5));
        assert!(
            !format!("{ok:?}").contains("admin"),
            "token stays out of Debug"
        );
        assert!(PlacementConfig::resolve(None, &[]).expect("off").is_none());
        assert!(PlacementConfig::resolve(None, &pools).is_err());
        assert!(
            PlacementConfig::resolve(Some(&file("url = \"https://x\"\ntoken = \"t\"\n")), &[])
                .is_err()
        );
        assert!(PlacementConfig::resolve(
            Some(&file("url = \"ftp://x\"\ntoken = \"t\"\n")),
            &pools
        )
        .is_err());
        assert!(PlacementConfig::resolve(Some(&file("url = \"https://x\"\n")), &pools).is_err());
        assert!(PlacementConfig::resolve(
            Some(&file("url = \"https://x\"\ntoken = \"t\"\n")),
            &["a-b".into(), "a.b".into()]
        )
        .is_err());
        assert!(toml::from_str::<PlacementFile>("bogus = 1").is_err());
    }

    #[test]
    fn attack_plain_http_placement_and_keystone_are_refused() {
        let file = |text: &str| -> PlacementFile { toml::from_str(text).expect("toml") };
        let pools = vec!["default".to_string()];
        let keystone = "[keystone]\nusername = \"u\"\npassword = \"p\"\nproject_name = \"s\"\n";
        for (text, what) in [
            (
                "url = \"http://ctl:8778\"\ntoken = \"t\"\n".to_string(),
                "[placement] url",
            ),
            (
                format!("url = \"https://ctl:8778\"\n{keystone}auth_url = \"http://ks:5000/v3\"\n"),
                "[placement.keystone] auth_url",
            ),
        ] {
            let err = PlacementConfig::resolve(Some(&file(&text)), &pools).expect_err("plain http");
            let msg = err.to_string();
            assert!(
                msg.starts_with(what)
                    && msg.contains("plain HTTP")
                    && msg.contains("allow_plain_http = true"),
                "{msg}"
            );
            // Explicitly allowed (a lab): accepted.
            let lab = format!("allow_plain_http = true\n{text}");
            PlacementConfig::resolve(Some(&file(&lab)), &pools)
                .expect("allowed")
                .expect("on");
        }
        let https =
            format!("url = \"https://ctl:8778\"\n{keystone}auth_url = \"https://ks:5000/v3\"\n");
        PlacementConfig::resolve(Some(&file(&https)), &pools)
            .expect("https")
            .expect("on");
    }

    #[test]
    fn keystone_requests_are_built_for_both_methods() {
        let k = KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://keystone:5000/v3/".into()),
            username: Some("trustpool".into()),
            password: Some("pw".into()),
            project_name: Some("service".into()),
            ..KeystoneFile::default()
        })
        .expect("password");
        assert_eq!(k.tokens_url, "https://keystone:5000/v3/auth/tokens");
        assert_eq!(
            k.body["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        assert_eq!(k.body["auth"]["scope"]["project"]["name"], "service");
        assert!(!format!("{k:?}").contains("pw"));
        let a = KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://keystone:5000".into()),
            application_credential_id: Some("id1".into()),
            application_credential_secret: Some("sec".into()),
            ..KeystoneFile::default()
        })
        .expect("app cred");
        assert_eq!(a.tokens_url, "https://keystone:5000/v3/auth/tokens");
        assert_eq!(
            a.body["auth"]["identity"]["methods"][0],
            "application_credential"
        );
        assert!(KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://k/v3".into()),
            application_credential_id: Some("id1".into()),
            ..KeystoneFile::default()
        })
        .is_err());
        assert!(KeystoneFile::default().auth_url.is_none());
        assert!(KeystoneConfig::from_file(&KeystoneFile::default()).is_err());
    }

    fn secret_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn secrets_come_from_owner_only_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pools = ["default".to_string()];
        let token = secret_file(dir.path(), "token", "t0ken\n", 0o600);
        let file: PlacementFile = toml::from_str(&format!(
            "url = \"https://x\"\ntoken_file = \"{}\"\n",
            token.display()
        ))
        .expect("toml");
        assert_eq!(file.inline_secret(), None);
        let cfg = PlacementConfig::resolve(Some(&file), &pools)
            .expect("valid")
            .expect("on");
        assert!(matches!(&cfg.auth, PlacementAuth::Token(t) if t == "t0ken"));

        // both forms, or a file others may read: refused, naming the file
        let both: PlacementFile = toml::from_str(&format!(
            "url = \"https://x\"\ntoken = \"t\"\ntoken_file = \"{}\"\n",
            token.display()
        ))
        .expect("toml");
        let err = PlacementConfig::resolve(Some(&both), &pools).expect_err("both");
        assert!(
            format!("{err:#}").contains("token or token_file"),
            "{err:#}"
        );
        let loose = secret_file(dir.path(), "loose", "pw", 0o644);
        let err = KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://k/v3".into()),
            username: Some("trustpool".into()),
            password_file: Some(loose.clone()),
            ..KeystoneFile::default()
        })
        .expect_err("world-readable password file");
        let text = format!("{err:#}");
        assert!(
            text.contains(&loose.display().to_string()) && text.contains("0644"),
            "{text}"
        );

        let password = secret_file(dir.path(), "password", "pw\n", 0o400);
        let k = KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://k/v3".into()),
            username: Some("trustpool".into()),
            password_file: Some(password),
            project_name: Some("service".into()),
            ..KeystoneFile::default()
        })
        .expect("password file");
        assert_eq!(
            k.body["auth"]["identity"]["password"]["user"]["password"],
            "pw"
        );
        let app = secret_file(dir.path(), "app", "sec", 0o600);
        let k = KeystoneConfig::from_file(&KeystoneFile {
            auth_url: Some("https://k/v3".into()),
            application_credential_id: Some("id1".into()),
            application_credential_secret_file: Some(app),
            ..KeystoneFile::default()
        })
        .expect("application credential secret file");
        assert_eq!(
            k.body["auth"]["identity"]["application_credential"]["secret"],
            "sec"
        );
        let inline: PlacementFile =
            toml::from_str("url = \"https://x\"\n[keystone]\npassword = \"pw\"\n").expect("toml");
        assert_eq!(inline.inline_secret(), Some("password"));
    }

    /// A stand-in for Keystone and Placement on loopback: Keystone hands out
    /// numbered tokens; Placement accepts only the latest one, answers 503
    /// once, and records what it was sent.
    #[tokio::test]
    async fn keystone_tokens_are_cached_renewed_on_401_and_5xx_is_retryable() {
        use axum::extract::State;
        use axum::routing::{post, put};
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Mutex;

        #[derive(Default)]
        struct Fake {
            issued: AtomicU32,
            bodies: Mutex<Vec<serde_json::Value>>,
            seen: Mutex<Vec<(String, String)>>,
            fail_next: AtomicU32,
        }
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .route(
                "/identity/v3/auth/tokens",
                post(
                    |State(f): State<Arc<Fake>>, body: axum::body::Bytes| async move {
                        let n = f.issued.fetch_add(1, Ordering::SeqCst) + 1;
                        f.bodies
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or_default());
                        (
                            StatusCode::CREATED,
                            [("X-Subject-Token", format!("tok-{n}"))],
                            r#"{"token": {"expires_at": "2099-01-01T00:00:00.000000Z"}}"#,
                        )
                    },
                ),
            )
            .route(
                "/placement/traits/{name}",
                put(
                    |State(f): State<Arc<Fake>>, headers: HeaderMap| async move {
                        let token = headers
                            .get("x-auth-token")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let version = headers
                            .get("openstack-api-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        f.seen.lock().unwrap().push((token.clone(), version));
                        if f.fail_next.swap(0, Ordering::SeqCst) == 1 {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let latest = format!("tok-{}", f.issued.load(Ordering::SeqCst));
                        if token == latest {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::UNAUTHORIZED
                        }
                    },
                ),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let file: PlacementFile = toml::from_str(&format!(
            "url = \"http://127.0.0.1:{port}/placement\"\nallow_plain_http = true\n[keystone]\nauth_url = \"http://127.0.0.1:{port}/identity/v3\"\napplication_credential_id = \"ac1\"\napplication_credential_secret = \"s3cret\"\n"
        ))
        .expect("toml");
        let cfg = PlacementConfig::resolve(Some(&file), &["default".into()])
            .expect("valid")
            .expect("on");
        let metrics = Arc::new(Metrics::new());
        let api = PlacementApi::new(&cfg, metrics.clone()).expect("api");

        api.ensure_trait("CUSTOM_TRUSTPOOL_DEFAULT")
            .await
            .expect("first");
        api.ensure_trait("CUSTOM_TRUSTPOOL_DEFAULT")
            .await
            .expect("cached token");
        assert_eq!(fake.issued.load(Ordering::SeqCst), 1, "the token is cached");
        let body = fake.bodies.lock().unwrap()[0].clone();
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["secret"],
            "s3cret"
        );

        // Keystone revoked it (another token is now the only valid one): a 401
        // makes the client fetch a new token and try once more.
        fake.issued.fetch_add(1, Ordering::SeqCst);
        api.ensure_trait("CUSTOM_TRUSTPOOL_DEFAULT")
            .await
            .expect("renewed");
        assert_eq!(fake.issued.load(Ordering::SeqCst), 3);

        // A 5xx is retryable, counted, and not fatal.
        fake.fail_next.store(1, Ordering::SeqCst);
        let err = api
            .ensure_trait("CUSTOM_TRUSTPOOL_DEFAULT")
            .await
            .expect_err("503");
        assert!(
            matches!(
                err,
                SyncError::Retryable {
                    kind: "http_5xx",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = metrics.render(&Registry::new(1), 0, true);
        assert!(
            text.contains("trustpool_placement_errors_total{kind=\"http_5xx\"} 1"),
            "{text}"
        );

        let seen = fake.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(_, v)| v == MICROVERSION), "{seen:?}");
        assert_eq!(seen[0].0, "tok-1");
        assert_eq!(seen[1].0, "tok-1");
        assert_eq!(seen[2].0, "tok-1");
        assert_eq!(seen[3].0, "tok-3");

        // Nothing listens: a connection error, retryable.
        let dead: PlacementFile =
            toml::from_str("url = \"http://127.0.0.1:1\"\ntoken = \"t\"\ntimeout = \"2s\"\nallow_plain_http = true\n")
                .expect("toml");
        let cfg = PlacementConfig::resolve(Some(&dead), &["default".into()])
            .expect("ok")
            .expect("on");
        let api = PlacementApi::new(&cfg, metrics.clone()).expect("api");
        let err = api.ensure_trait("CUSTOM_X").await.expect_err("refused");
        assert!(
            matches!(
                err,
                SyncError::Retryable {
                    kind: "connect",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_millis(1500));
        assert!(backoff(50) <= Duration::from_millis(37_500));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("host-a.example_1"), "host-a.example_1");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
