//! Start-up and the server's tasks: load policy and EK roots, open the
//! store, rebuild the registry, serve gRPC (mutual TLS) and the HTTP feed,
//! and sweep expired verdicts.

use crate::admin::AdminService;
use crate::config::ServerConfig;
use crate::ek_allowlist::EkAllowlist;
use crate::loaders::{load_ek_roots, load_policy_dir};
use crate::registry::Registry;
use crate::session::AttestationService;
use crate::state::{mono_ms, now_ms, AppState};
use crate::store::Store;
use crate::store::StoredVerdict;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};
use trustpool_evidence::policy::PolicySet;
use trustpool_evidence::reason::Reason;
use trustpool_proto::v1::admin_server::AdminServer;
use trustpool_proto::v1::attestation_server::AttestationServer;

/// How long a stopping server waits for gRPC connections to close.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Period of the sweeper that drops expired members from the pools.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Runs the server until `shutdown` completes. `on_ready` is called once the
/// database is open, the policy loaded and both listeners bound (the point at
/// which a service manager may consider the server started).
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let policy = load_policy_dir(&cfg.policy_dir)?;
    info!(pools = ?policy.pools.keys().collect::<Vec<_>>(), digest = %policy.digest_hex(), "policy loaded");
    if policy.pools.is_empty() {
        warn!(dir = %cfg.policy_dir.display(), "the policy directory defines no pool: no host can be trusted");
    }
    let ek_trust = load_ek_roots(&cfg.ek_roots)?;
    let tls = tls_config(&cfg)?;
    let store = Store::open_checked(&cfg.db, cfg.init_db).await?;
    info!(db = %cfg.db.display(), store_id = %store.store_id(), "store opened");

    let ek_allowlist = EkAllowlist::new(cfg.ek_allowlist.clone());
    ek_allowlist
        .check()
        .map_err(|e| anyhow::anyhow!("the EK allowlist is unusable: {e}"))?;
    let registry = Arc::new(Registry::new(u64::try_from(now_ms()).unwrap_or(1)));
    let enrolled = restore(&store, &registry, &policy).await?;
    info!(enrolled, db = %cfg.db.display(), "state restored");
    let (history, history_task) = crate::history::History::start(store.clone());

    let state = Arc::new(
        AppState::new(
            store,
            registry.clone(),
            ek_trust,
            policy,
            cfg.report_interval,
            cfg.down_time,
        )
        .with_ek_allowlist(ek_allowlist),
    );
    let _ = state.history.set(history);
    let _ = state.operators.set(cfg.operators.clone());
    let _ = state.policy_dir.set(cfg.policy_dir.clone());

    let grpc_listener = TcpListener::bind(cfg.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} (gRPC)", cfg.grpc_listen))?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP)", cfg.http_listen))?;
    info!(
        grpc = %grpc_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        report_interval = ?cfg.report_interval,
        down_time = ?cfg.down_time,
        "trustpool-server listening"
    );
    let publication = crate::publish::Publication::prepare(&cfg, state.clone())?;
    on_ready();

    // One stop signal for every task: the state's (sessions watch it too).
    let stop_rx = state.stop_receiver();
    {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            info!("stopping: ending the agent sessions and the listeners");
            state.begin_stopping();
        });
    }

    crate::reload::spawn_watchers(state.clone(), stop_rx.clone());
    let sweeper = {
        let state = state.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_PERIOD);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = now_ms();
                        let changes = state.registry.sweep_changes(mono_ms());
                        for c in &changes {
                            info!(host = %c.hostname, pool = %c.pool, "a verdict expired: out of the pool");
                        }
                        for e in crate::history::trust_events(&changes, "sweeper", now) {
                            state.record(e).await;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };

    let http = publication.start(http_listener, stop_rx.clone())?;

    let admin_socket = match &cfg.admin_socket {
        Some(path) => Some(serve_admin_socket(path, state.clone(), stop_rx.clone())?),
        None => None,
    };
    let mut stop = stop_rx.clone();
    let grpc = Server::builder()
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .add_service(AttestationServer::new(AttestationService::new(
            state.clone(),
        )))
        .add_service(AdminServer::new(AdminService::new(state.clone())))
        .serve_with_incoming_shutdown(TcpIncoming::from(grpc_listener), async move {
            let _ = stop.changed().await;
        });
    // The graceful shutdown waits for open streams, which the sessions end
    // on their own once stopping; a stream that still hangs (a stalled TLS
    // peer) is cut after STOP_GRACE so that the history is flushed below
    // before the service manager's SIGKILL.
    let mut grpc = tokio::spawn(grpc);
    let mut stopping = stop_rx.clone();
    tokio::select! {
        outcome = &mut grpc => outcome.context("gRPC task panicked")?.context("gRPC server failed")?,
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            warn!(grace = ?STOP_GRACE, "gRPC connections still open after the grace period: closing them");
            grpc.abort();
        }
    }
    if let Some(task) = admin_socket {
        let _ = task.await;
    }
    // Flush the history: the writer ends once every sender is gone.
    drop(state);
    if tokio::time::timeout(Duration::from_secs(5), history_task)
        .await
        .is_err()
    {
        warn!("history writer did not finish in 5s");
    }
    http.await
        .context("HTTP task panicked")?
        .context("HTTP server failed")?;
    sweeper.abort();
    info!("trustpool-server stopped");
    Ok(())
}

/// Rebuilds the registry from the store before anything is published, and
/// returns the number of enrolled hosts. A stored trusted verdict is
/// published again only when the host's stored facts, re-evaluated under the
/// policy in force now, still trust it; its expiry is what is left of its
/// validity (never more than the down time from now).
async fn restore(store: &Store, registry: &Registry, policy: &PolicySet) -> anyhow::Result<usize> {
    let (now, wall) = (mono_ms(), now_ms());
    let pool_names: Vec<String> = policy.pools.keys().cloned().collect();
    registry.set_pools(&pool_names, now);
    let enrolments = store.enrolments().await?;
    let enrolled = enrolments.len();
    for e in enrolments {
        registry.add_enrolment(e);
    }
    for (host, clock) in store.clocks().await? {
        registry.set_clock(&host, clock);
    }
    for pending in store.pending().await? {
        let host = pending.enrolment.hostname.clone();
        registry.set_pending(&host, Some(pending), now);
    }
    for revocation in store.revocations().await? {
        let host = revocation.hostname.clone();
        registry.set_revoked(&host, Some(revocation), now);
    }
    let mut facts = std::collections::HashMap::new();
    for (host, body) in store.facts().await? {
        match crate::facts::Facts::from_json(&body) {
            Ok(f) => {
                registry.restore_facts(&host, f.clone(), now, wall);
                facts.insert(host, f);
            }
            Err(e) => {
                warn!(host = %host, error = %e, "stored evidence facts do not parse; ignored")
            }
        }
    }
    let digest = policy.digest_hex();
    let mut changed = 0usize;
    let verdicts: Vec<StoredVerdict> = store
        .verdicts()
        .await?
        .into_iter()
        .map(|v| {
            let f = facts.get(v.hostname.as_str());
            let (v, lost_trust) = reevaluate_restored(v, f, policy, &digest);
            changed += usize::from(lost_trust);
            v
        })
        .collect();
    if changed > 0 {
        info!(
            verdicts = changed,
            "stored trusted verdicts no longer trusted under the policy in force"
        );
    }
    registry.restore_verdicts(verdicts, now, wall);
    Ok(enrolled)
}

/// A stored verdict as the policy in force judges it: a trusted verdict
/// stays trusted only if the facts of the same evidence still pass; the
/// flag says whether it lost its trust.
fn reevaluate_restored(
    v: StoredVerdict,
    facts: Option<&crate::facts::Facts>,
    policy: &PolicySet,
    digest: &str,
) -> (StoredVerdict, bool) {
    if !v.trusted {
        return (v, false);
    }
    let Some(pool) = policy.pools.get(&v.pool) else {
        return (v, false);
    };
    let reasons = match facts {
        Some(f) if f.attested_at_ms == v.attested_at_ms => {
            crate::facts::evaluate_pool(f, pool, policy)
        }
        _ => vec![Reason::new(
            NOT_REEVALUATED,
            "the stored trusted verdict has no stored evidence to re-evaluate after a restart; the next report decides",
        )],
    };
    if reasons.is_empty() {
        let v = StoredVerdict {
            policy_digest: digest.to_string(),
            ..v
        };
        return (v, false);
    }
    (
        StoredVerdict {
            trusted: false,
            reasons,
            policy_digest: digest.to_string(),
            ..v
        },
        true,
    )
}

/// Reason code: a stored trusted verdict whose evidence is gone was not
/// published again after a restart.
pub const NOT_REEVALUATED: &str = "server.not_reevaluated";

/// Serves the admin API on a local UNIX socket that only root can use
/// (mode 0600; callers are also checked by their peer credentials).
fn serve_admin_socket(
    path: &std::path::Path,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot replace the admin socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the admin socket {}", path.display()))?;
    info!(socket = %path.display(), "admin API on the local socket");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        let served = Server::builder()
            .add_service(AdminServer::new(AdminService::new(state)))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = served {
            warn!(error = %e, "admin socket server failed");
        }
    }))
}

fn tls_config(cfg: &ServerConfig) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let cert = read(&cfg.cert, "server certificate")?;
    let key = crate::secrets::read_private_key(&cfg.key, "server private key")?;
    let ca = read(&cfg.ca, "client CA")?;
    for (bytes, path, what) in [
        (&cert, &cfg.cert, "certificate"),
        (&ca, &cfg.ca, "certificate"),
    ] {
        if !String::from_utf8_lossy(bytes).contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!("{} holds no PEM {what}", path.display());
        }
    }
    if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
        anyhow::bail!("{} holds no PEM private key", cfg.key.display());
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca)))
}
