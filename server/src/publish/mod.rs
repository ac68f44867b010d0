//! Publication: what the schedulers and monitoring read. Start-up of the
//! HTTPS API (feed, PollHosts, metrics) and of the Placement trait sync.
//!
//! - [`config`]: the publication options, validated;
//! - [`listener`]: the HTTPS accept loop (caps, timeouts, eviction);
//! - [`readers`]: who may read (reader tokens, reader certificates);
//! - [`feed`]: the JSON feed and the handlers' shared state;
//! - [`oat`]: OpenAttestation `PollHosts` for Nova's legacy TrustedFilter;
//! - [`routes`]: the API's routes;
//! - [`placement`]: the Placement trait sync for current Nova.

pub mod config;
pub mod feed;
pub mod listener;
pub mod oat;
pub mod placement;
pub mod readers;
pub mod routes;

use crate::config::ServerConfig;
use crate::publish::feed::{FeedState, Health};
use crate::publish::listener::ListenerLimits;
use crate::publish::oat::{OatAuth, OatConfig};
use crate::publish::placement::PlacementConfig;
use crate::publish::readers::ReaderAuth;
use crate::state::AppState;
use crate::tls::certs::server_config;
use crate::tls::pki::Role;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// Period of the database probe (identity check and write probe) behind
/// `/readyz` and the feed's 503s.
const HEALTH_PERIOD: Duration = Duration::from_secs(1);

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
        match crate::publish::listener::raise_open_files_limit() {
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
                            let writes_before = state.store.health().writes_done();
                            let probe = tokio::time::timeout(HEALTH_PERIOD * 3, state.store.probe()).await;
                            if let Ok(Err(e)) = &probe {
                                tracing::debug!(error = %e, "database probe failed");
                            }
                            let others = state.store.health().writes_done() > writes_before;
                            let answered = database_answers(probe.is_ok(), others);
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
        let sync = crate::publish::placement::spawn(
            self.placement,
            self.state.registry.clone(),
            self.state.metrics.clone(),
            self.state.replica.lease_changes(),
            stop.clone(),
        )?;
        let metrics = self.state.metrics.clone();
        let feed = FeedState::new(
            self.state,
            self.auth,
            health,
            self.metrics_auth,
            stop.clone(),
        );
        let app = routes::router(feed, self.oat);
        let limits = self.limits;
        let tls = self.tls;
        Ok(tokio::spawn(async move {
            let served =
                crate::publish::listener::serve(listener, tls, app, limits, metrics, stop).await;
            probe.abort();
            if let Some(sync) = sync {
                let _ = tokio::time::timeout(Duration::from_secs(2), sync).await;
            }
            served
        }))
    }
}

/// Whether the database answers, after one probe: the probe itself came
/// back (a failed write is an answer: the store health tracks failures),
/// or, when it timed out, other writes succeeded meanwhile — the probe then
/// waited behind a busy database (an enrolment storm), which is the
/// server's load, not a dead database, and must not empty the feed.
fn database_answers(probe_came_back: bool, other_writes_succeeded: bool) -> bool {
    probe_came_back || other_writes_succeeded
}

#[cfg(test)]
mod tests {
    use super::database_answers;

    #[test]
    fn a_slow_probe_behind_working_writes_is_load_not_a_dead_database() {
        assert!(database_answers(true, false));
        assert!(database_answers(false, true));
        // Nothing came back and nothing else got through: the database hangs.
        assert!(!database_answers(false, false));
    }
}
