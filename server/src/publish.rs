//! Publication: start-up of the HTTPS API (feed, PollHosts, metrics) and of
//! the Placement trait sync, and their configuration.

use crate::config::ServerConfig;
use crate::feed::{FeedState, Health};
use crate::http_auth::{parse_sha256_hex, FeedToken, ReaderAuth};
use crate::https::server_config;
use crate::listener::ListenerLimits;
use crate::oat::{OatAuth, OatConfig};
use crate::pki::Role;
use crate::placement::{PlacementConfig, PlacementFile};
use crate::state::AppState;
use anyhow::Context;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// Period of the database probe (identity check and write probe) behind
/// `/readyz` and the feed's 503s.
const HEALTH_PERIOD: Duration = Duration::from_secs(1);

/// A `[[feed_tokens]]` entry of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedTokenEntry {
    /// Name of the consumer for the audit log.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// Publication options as given (flags merged over the file), before validation.
#[derive(Debug, Default)]
pub struct PublicationOptions {
    /// `--reader-ca` / `reader_ca`.
    pub reader_ca: Option<PathBuf>,
    /// `--feed-token NAME=SHA256HEX` (repeatable).
    pub feed_token_flags: Vec<String>,
    /// `[[feed_tokens]]`.
    pub feed_tokens: Vec<FeedTokenEntry>,
    /// `--oat-prefix` / `oat_prefix`.
    pub oat_prefix: Option<String>,
    /// `--oat-pool` / `oat_pool`.
    pub oat_pool: Option<String>,
    /// `--oat-auth-blob-sha256` / `oat_auth_blob_sha256`.
    pub oat_auth_blob_sha256: Option<String>,
    /// `--oat-allow-anonymous` / `oat_allow_anonymous`.
    pub oat_allow_anonymous: bool,
    /// `--http-max-connections` / `http_max_connections`.
    pub http_max_connections: Option<usize>,
    /// `--metrics-auth` / `metrics_auth`.
    pub metrics_auth: bool,
    /// `placement_pools`.
    pub placement_pools: Vec<String>,
    /// `[placement]`.
    pub placement: Option<PlacementFile>,
}

/// The validated publication configuration.
#[derive(Debug, Clone, Default)]
pub struct PublicationConfig {
    /// CA whose client certificates may read the feed.
    pub reader_ca: Option<PathBuf>,
    /// Reader tokens (hashes).
    pub feed_tokens: Vec<FeedToken>,
    /// PollHosts, when served.
    pub oat: Option<OatConfig>,
    /// Whether `/metrics` needs a reader credential.
    pub metrics_auth: bool,
    /// Placement sync, when configured.
    pub placement: Option<PlacementConfig>,
    /// Caps of the HTTPS listener.
    pub limits: ListenerLimits,
}

impl PublicationOptions {
    /// Validates the options; every error names the option.
    pub fn resolve(self) -> anyhow::Result<PublicationConfig> {
        let mut feed_tokens = Vec::new();
        for flag in &self.feed_token_flags {
            feed_tokens.push(FeedToken::parse_flag(flag).context("--feed-token")?);
        }
        for entry in &self.feed_tokens {
            feed_tokens
                .push(FeedToken::new(&entry.name, &entry.sha256).context("[[feed_tokens]]")?);
        }
        let mut names: Vec<&str> = feed_tokens.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!(
                "two feed tokens are named '{}': names identify readers in the audit log",
                w[0]
            );
        }
        let blob = self
            .oat_auth_blob_sha256
            .as_deref()
            .map(parse_sha256_hex)
            .transpose()
            .context("--oat-auth-blob-sha256")?;
        let oat = OatConfig::resolve(
            self.oat_prefix.as_deref(),
            self.oat_pool.as_deref(),
            blob,
            self.oat_allow_anonymous,
        )?;
        let placement = PlacementConfig::resolve(self.placement.as_ref(), &self.placement_pools)?;
        Ok(PublicationConfig {
            reader_ca: self.reader_ca,
            feed_tokens,
            oat,
            metrics_auth: self.metrics_auth,
            placement,
            limits: ListenerLimits::new(self.http_max_connections)?,
        })
    }
}

/// The HTTPS API and the Placement sync, prepared (certificates and CAs
/// read) before the server reports itself ready.
pub struct Publication {
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
    auth: Arc<ReaderAuth>,
    oat: Option<Arc<OatConfig>>,
    metrics_auth: bool,
    placement: Option<PlacementConfig>,
    limits: ListenerLimits,
}

impl Publication {
    /// Reads the certificates and checks the configuration against the policy.
    pub fn prepare(cfg: &ServerConfig, state: Arc<AppState>) -> anyhow::Result<Publication> {
        let p = &cfg.publication;
        if let Some(reader_ca) = &p.reader_ca {
            let same = std::fs::read(reader_ca).ok() == std::fs::read(&cfg.ca).ok();
            if same {
                warn!(reader_ca = %reader_ca.display(), "the reader CA is the agents' CA: every agent certificate can read the feed");
            }
        }
        let pki = state
            .pki
            .get()
            .cloned()
            .context("the client CAs are not loaded")?;
        let verifier = pki
            .listener_verifier("https", &[Role::Agents, Role::Readers], false)
            .context("HTTPS listener")?;
        let tls = server_config(&cfg.cert, &cfg.key, verifier).context("HTTPS listener")?;
        let auth = ReaderAuth::new(p.feed_tokens.clone(), Some(pki))?;
        if auth.is_empty() {
            warn!("no reader credential is configured (--feed-token, --reader-ca): the feed refuses every reader");
        }
        let policy = state.policy();
        match &p.oat {
            None => {
                info!("PollHosts is off (set oat_auth_blob_sha256 to serve Nova's TrustedFilter)")
            }
            Some(oat) => {
                if oat.auth == OatAuth::Anonymous {
                    warn!(path = %oat.poll_hosts_path(), "oat_allow_anonymous = true: PollHosts answers anyone who can reach it (a lab only)");
                }
                if !policy.pools.contains_key(&oat.pool) {
                    warn!(pool = %oat.pool, "oat_pool is not a pool of the policy: PollHosts answers every host untrusted");
                }
            }
        }
        match crate::listener::raise_open_files_limit() {
            Ok(open_files) => {
                // The listener's own descriptors plus room for the agents' streams.
                let needed = p.limits.max_connections as u64 + 64;
                if open_files < needed {
                    warn!(open_files, http_max_connections = p.limits.max_connections, "the open-files limit is below http_max_connections + 64: EMFILE, not the cap, will refuse connections (raise LimitNOFILE)");
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "the open-files limit could not be raised"),
        }
        if let Some(pl) = &p.placement {
            for pool in &pl.pools {
                if !policy.pools.contains_key(pool) {
                    warn!(pool = %pool, "placement_pools names a pool the policy does not define: no host will carry its trait");
                }
            }
        }
        state.metrics.policy_reload(true);
        Ok(Publication {
            state,
            tls,
            auth: Arc::new(auth),
            oat: p.oat.clone().map(Arc::new),
            metrics_auth: p.metrics_auth,
            placement: p.placement.clone(),
            limits: p.limits,
        })
    }

    /// Starts the database probe, the Placement sync and the HTTPS server on
    /// `listener`; the returned task ends when `stop` becomes true.
    pub fn start(
        self,
        listener: TcpListener,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
        let health = Arc::new(Health::default());
        let probe = {
            let state = self.state.clone();
            let health = health.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(HEALTH_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let answered = match tokio::time::timeout(HEALTH_PERIOD * 3, state.store.probe()).await {
                                Ok(Ok(())) => true,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "database probe failed");
                                    true
                                }
                                Err(_) => false,
                            };
                            if answered != health.store_ok() {
                                if answered {
                                    info!("the database answers the probe again");
                                } else {
                                    warn!("the database does not answer the probe: the feed answers 503 until it does");
                                }
                            }
                            health.set_store_ok(answered);
                        }
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        let sync = crate::placement::spawn(
            self.placement,
            self.state.registry.clone(),
            self.state.metrics.clone(),
            stop.clone(),
        )?;
        let metrics = self.state.metrics.clone();
        let feed = FeedState::new(
            self.state,
            self.auth,
            health,
            self.oat,
            self.metrics_auth,
            stop.clone(),
        );
        let app = crate::feed::router(feed);
        let limits = self.limits;
        let tls = self.tls;
        Ok(tokio::spawn(async move {
            let served = crate::listener::serve(listener, tls, app, limits, metrics, stop).await;
            probe.abort();
            if let Some(sync) = sync {
                let _ = tokio::time::timeout(Duration::from_secs(2), sync).await;
            }
            served
        }))
    }
}
