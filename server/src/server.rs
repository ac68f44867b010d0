//! Start-up and the server's tasks: load policy and EK roots, open the
//! store, rebuild the registry, serve gRPC (mutual TLS) and the HTTP feed,
//! and sweep expired verdicts.

use crate::config::ServerConfig;
use crate::loaders::{load_ek_roots, load_policy_dir};
use crate::registry::Registry;
use crate::session::AttestationService;
use crate::state::{now_ms, AppState};
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};
use trustpool_proto::v1::attestation_server::AttestationServer;

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
    let store = Store::open(&cfg.db).await?;

    let registry = Arc::new(Registry::new(u64::try_from(now_ms()).unwrap_or(1)));
    let pool_names: Vec<String> = policy.pools.keys().cloned().collect();
    registry.set_pools(&pool_names, now_ms());
    let enrolments = store.enrolments().await?;
    let enrolled = enrolments.len();
    for e in enrolments {
        registry.add_enrolment(e);
    }
    for (host, clock) in store.clocks().await? {
        registry.set_clock(&host, clock);
    }
    registry.record_verdicts(store.verdicts().await?, now_ms());
    info!(enrolled, db = %cfg.db.display(), "state restored");

    let state = Arc::new(AppState::new(
        store,
        registry.clone(),
        ek_trust,
        policy,
        cfg.report_interval,
        cfg.down_time,
    ));

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
    on_ready();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let sweeper = {
        let registry = registry.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_PERIOD);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for pool in registry.sweep(now_ms()) {
                            info!(pool = %pool, "pool membership changed: a verdict expired");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };

    let http = {
        let mut stop = stop_rx.clone();
        let app = crate::feed::router(registry.clone());
        tokio::spawn(async move {
            axum::serve(http_listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
        })
    };

    let mut stop = stop_rx.clone();
    let grpc = Server::builder()
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .add_service(AttestationServer::new(AttestationService::new(state)))
        .serve_with_incoming_shutdown(TcpIncoming::from(grpc_listener), async move {
            let _ = stop.changed().await;
        });
    grpc.await.context("gRPC server failed")?;
    http.await
        .context("HTTP task panicked")?
        .context("HTTP server failed")?;
    sweeper.abort();
    info!("trustpool-server stopped");
    Ok(())
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
