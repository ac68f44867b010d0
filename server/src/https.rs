//! The HTTPS listener of the API: TLS (rustls, `ring` provider) with the
//! server's certificate, client certificates requested but optional at the
//! TLS layer. A client certificate that is presented must chain to the
//! agents' CA or to the reader CA and not be revoked ([`crate::pki`]);
//! *which* of the two decides the role, per request, in [`crate::http_auth`].
//!
//! Handshakes run in their own tasks with a deadline, so a slow or silent
//! client never holds up the accept loop; request headers must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`].

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Deadline of a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server to pick them up.
const ACCEPT_QUEUE: usize = 1024;
/// A request's headers must arrive within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests may finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end of one HTTPS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote address.
    pub remote: SocketAddr,
    /// The certificate chain the client presented (leaf first), already
    /// verified by the TLS layer against the agents' CA or the reader CA.
    pub chain: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The crypto provider of every TLS endpoint of the server: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every PEM certificate of `path`.
pub fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds a malformed PEM certificate", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate ({what})", path.display());
    }
    Ok(certs)
}

/// A root store of every certificate of `path`.
pub fn read_roots(path: &Path, what: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots.add(cert).with_context(|| {
            format!("{} is not a usable CA certificate ({what})", path.display())
        })?;
    }
    Ok(roots)
}

/// The TLS configuration of the HTTPS listener: our certificate, and
/// optional client certificates accepted by `verifier` (the agents' CA or
/// the reader CA, with their CRLs: [`crate::pki::Pki::listener_verifier`]).
pub fn server_config(
    cert: &Path,
    key: &Path,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = read_certs(cert, "server certificate")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the server private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate does not match its private key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that hands out handshaken TLS connections.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, PeerInfo)>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting TLS connections on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        let local = listener.local_addr().context("HTTPS listener address")?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let chain = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .filter(|c| !c.is_empty())
                                .map(|c| {
                                    Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())
                                });
                            let _ = tx.send((tls, PeerInfo { remote, chain })).await;
                        }
                        Ok(Err(e)) => debug!(peer = %remote, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(peer = %remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor_task,
        })
    }
}

impl TlsListener {
    /// The next handshaken connection.
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, PeerInfo) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The acceptor task is gone (it never ends on its own): accept nothing more.
            None => std::future::pending().await,
        }
    }
}

/// Serves `app` (HTTP/1.1) on the TLS connections of `listener` until `stop`
/// becomes true, then lets in-flight requests finish for a few seconds.
/// Each request carries the connection's [`PeerInfo`] as `ConnectInfo`.
pub async fn serve(
    mut listener: TlsListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(100);
    while !*stop.borrow() {
        let (io, peer) = tokio::select! {
            pair = listener.accept() => pair,
            _ = stop.changed() => break,
        };
        let remote = peer.remote;
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                req
            },
        );
        let conn = builder.serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %remote, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("in-flight HTTPS requests did not finish in time");
    }
    Ok(())
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl TlsListener {
    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
