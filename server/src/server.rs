//! Start-up and the server's tasks: load policy and EK roots, open the
//! store, rebuild the registry, serve gRPC (mutual TLS) and the HTTP feed,
//! and sweep expired verdicts.

use crate::admin::AdminService;
use crate::attest::ek_allowlist::EkAllowlist;
use crate::attest::ek_roots::load_ek_roots;
use crate::attest::session::AttestationService;
use crate::clock::{mono_ms, now_ms};
use crate::config::ServerConfig;
use crate::fleet::registry::Registry;
use crate::state::AppState;
use crate::store::Store;
use crate::store::{HistoryEvent, StoredVerdict};
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::Server;
use tracing::{debug, info, warn};
use trustpool_daemon::policy_dir::load_policy_dir;
use trustpool_evidence::policy::PolicySet;
use trustpool_evidence::reason::Reason;
use trustpool_proto::v1::admin_server::AdminServer;
use trustpool_proto::v1::attestation_server::AttestationServer;

/// How long a stopping server waits for gRPC connections to close.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Period of the sweeper that drops expired members from the pools.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Deadline of a TLS handshake on the gRPC listener.
const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once on the gRPC listener; more
/// connections wait in the kernel's accept queue.
const GRPC_MAX_HANDSHAKES: usize = 1024;
/// Handshaken connections waiting for the gRPC server to pick them up.
const GRPC_ACCEPT_QUEUE: usize = 1024;

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
    if cfg.operator_ca.is_none() && !cfg.operators.is_empty() {
        anyhow::bail!(
            "--operator is given without --operator-ca: operator certificates need a CA of their own (never the agents' --ca)"
        );
    }
    let pki = Arc::new(crate::tls::pki::Pki::load(&crate::tls::pki::PkiFiles {
        agents_ca: cfg.ca.clone(),
        operator_ca: cfg.operator_ca.clone(),
        reader_ca: cfg.publication.reader_ca.clone(),
        crls: cfg.crls.clone(),
    })?);
    if !pki.has(crate::tls::pki::Role::Operators) {
        info!("no --operator-ca: the admin API is served on the local admin socket only");
    }
    let tls = grpc_tls_config(&cfg, &pki)?;
    let store = Store::connect(&cfg.db, cfg.init_db).await?;
    info!(db = %cfg.db, engine = store.engine().name(), store_id = %store.store_id(), "store opened");

    let ek_allowlist = EkAllowlist::new(cfg.ek_allowlist.clone());
    ek_allowlist
        .check()
        .map_err(|e| anyhow::anyhow!("the EK allowlist is unusable: {e}"))?;
    let replica = crate::replica::Replica::new(&cfg.replica_name, cfg.lease_period);
    store.set_replica(&replica.instance);
    // Changes committed from here on are followed even if the restore below
    // already read them (re-reading a host twice changes nothing).
    let changes_after = store.last_change().await?;
    let registry = Arc::new(Registry::new(
        u64::try_from(crate::clock::now_us()).unwrap_or(1),
    ));
    let (enrolled, expired) = restore(&store, &registry, &policy).await?;
    info!(enrolled, db = %cfg.db, "state restored");
    let (history, history_task) = crate::fleet::history::History::start(store.clone());
    if !expired.is_empty() {
        info!(
            verdicts = expired.len(),
            "trusted verdicts expired while the server was down: recorded"
        );
    }
    // Another replica that kept running recorded these expiries already:
    // only the lease's holder writes them.
    if !expired.is_empty()
        && crate::replica::lease::take(&store, &replica.name, &replica.instance, cfg.lease_period)
            .await
    {
        for e in expired {
            history.record(e).await;
        }
    }

    let state = Arc::new(
        AppState::new(
            store,
            registry.clone(),
            ek_trust,
            policy,
            cfg.report_interval,
            cfg.down_time,
        )
        .with_ek_allowlist(ek_allowlist)
        .with_replica(replica)
        .with_keepalive_timeout(cfg.keepalive_timeout)
        .with_admission(cfg.max_attestations_in_flight, cfg.max_enrolments_in_flight),
    );
    let _ = state.history.set(history);
    let _ = state.operators.set(cfg.operators.clone());
    let _ = state.policy_dir.set(cfg.policy_dir.clone());
    pki.set_metrics(state.metrics.clone());
    let _ = state.pki.set(pki.clone());

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

    let replica_tasks = crate::replica::spawn(
        Arc::new(crate::replica::Shared {
            store: state.store.clone(),
            registry: state.registry.clone(),
            replica: state.replica.clone(),
            policy: state.policy_changes(),
        }),
        changes_after,
        stop_rx.clone(),
    );
    crate::fleet::reload::spawn_watchers(state.clone(), stop_rx.clone());
    crate::fleet::reload::spawn_crl_reload(pki.clone(), stop_rx.clone());
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
                        // Every replica expires the same verdicts; one records them.
                        if state.replica.holds_lease() {
                            for e in crate::fleet::history::trust_events(&changes, "sweeper", now) {
                                state.record(e).await;
                            }
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
    let incoming = grpc_incoming(grpc_listener, tls, state.metrics.clone(), stop_rx.clone());
    let grpc = Server::builder()
        // A partitioned agent is disconnected within interval + timeout.
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .add_service(AttestationServer::new(AttestationService::new(
            state.clone(),
        )))
        .add_service(AdminServer::new(AdminService::new(state.clone())))
        .serve_with_incoming_shutdown(incoming, async move {
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
    // The lease is given up and the presence row removed before exiting,
    // so another replica takes over at once rather than after the lease.
    for task in replica_tasks {
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            warn!("a replica task did not finish in 3s");
        }
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
/// validity (never more than the down time from now). Also returns the
/// history events of trusted verdicts that expired while the server was down
/// (at their `valid_until`), so that "was it trusted at T" stays true.
async fn restore(
    store: &Store,
    registry: &Registry,
    policy: &PolicySet,
) -> anyhow::Result<(usize, Vec<HistoryEvent>)> {
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
        match crate::verify::facts::Facts::from_stored(&body) {
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
    let stored = store.verdicts().await?;
    let mut expired = Vec::new();
    for v in stored
        .iter()
        .filter(|v| v.trusted && v.valid_until_ms <= wall)
    {
        if store.last_recorded_trust(&v.hostname, &v.pool).await? == Some(true) {
            expired.push(HistoryEvent {
                at_ms: v.valid_until_ms,
                hostname: v.hostname.clone(),
                pool: v.pool.clone(),
                event: crate::fleet::history::TRUST_CHANGE.into(),
                trusted: false,
                policy_digest: v.policy_digest.clone(),
                reasons: vec![Reason::new(
                    trustpool_evidence::reason::codes::STALE,
                    "the verdict expired while the server was down (recorded at start-up)",
                )],
                actor: "sweeper".into(),
            });
        }
    }
    let verdicts: Vec<StoredVerdict> = stored
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
    Ok((enrolled, expired))
}

/// A stored verdict as the policy in force judges it: a trusted verdict
/// stays trusted only if the facts of the same evidence still pass; the
/// flag says whether it lost its trust.
fn reevaluate_restored(
    v: StoredVerdict,
    facts: Option<&crate::verify::facts::Facts>,
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
            crate::verify::facts::evaluate_pool(f, pool, policy)
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

/// The TLS configuration of the gRPC listener: our certificate, a client
/// certificate mandatory from the agents' CA or the operator CA (with their
/// CRLs, as reloaded), HTTP/2 only.
fn grpc_tls_config(
    cfg: &ServerConfig,
    pki: &Arc<crate::tls::pki::Pki>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    let chain = crate::tls::certs::read_certs(&cfg.cert, "server certificate")?;
    let key = crate::secrets::read_private_key(&cfg.key, "server private key")?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| anyhow::anyhow!("{} holds no PEM private key: {e}", cfg.key.display()))?;
    let verifier = pki.listener_verifier(
        "grpc",
        &[
            crate::tls::pki::Role::Agents,
            crate::tls::pki::Role::Operators,
        ],
        true,
    )?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::certs::provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate does not match its private key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The handshaken TLS connections of the gRPC listener. Each handshake runs
/// in its own task with a deadline, at most [`GRPC_MAX_HANDSHAKES`] at once,
/// so a slow or silent client never holds up the others.
fn grpc_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    metrics: Arc<crate::metrics::Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(GRPC_ACCEPT_QUEUE);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(GRPC_MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(GRPC_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        // Certificate refusals are logged and counted by the verifier.
                        let from_verifier = e
                            .get_ref()
                            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                            .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                        if !from_verifier {
                            let reason = match e
                                .get_ref()
                                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                            {
                                Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
                                _ => "handshake_failed",
                            };
                            metrics.tls_refused("grpc", reason);
                        }
                        debug!(peer = %remote, error = %e, "gRPC TLS handshake failed");
                    }
                    Err(_) => {
                        metrics.tls_refused("grpc", "handshake_timeout");
                        debug!(peer = %remote, "gRPC TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
