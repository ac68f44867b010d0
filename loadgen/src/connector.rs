//! TLS plumbing: the connector that binds each host's socket to a chosen
//! loopback source address before connecting (tonic's `Endpoint` cannot),
//! so that 100,000 connections to one server port fit in the ephemeral
//! port range (each source address has its own ~28,000 ports), then runs
//! the mutual-TLS handshake with that host's own client certificate.
//!
//! What is shared between hosts: the ring provider and the server
//! certificate verifier (one `Arc` each). What is per host: its
//! `ClientConfig` (its certificate chain and key), built when the host
//! connects and dropped with its channel; TLS session resumption is off
//! so a config holds no session cache.

use anyhow::{anyhow, Context};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What every host's TLS shares.
#[derive(Clone)]
pub struct TlsShared {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
}

impl TlsShared {
    /// Trusts the server certificates issued by the CA in `ca_pem`.
    pub fn new(ca_pem: &Path) -> anyhow::Result<TlsShared> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem)
            .with_context(|| format!("reading {}", ca_pem.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", ca_pem.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{} is not a usable CA", ca_pem.display()))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("building the server certificate verifier")?;
        Ok(TlsShared {
            provider,
            verifier,
            roots,
        })
    }

    /// A client config with the certificate and key found in `pem` (one
    /// file holding both), HTTP/2 by ALPN.
    pub fn client_config(&self, pem: &[u8]) -> anyhow::Result<Arc<ClientConfig>> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .context("parsing the host certificate")?;
        if chain.is_empty() {
            return Err(anyhow!("no certificate in the host file"));
        }
        let key = PrivateKeyDer::from_pem_slice(pem).context("parsing the host key")?;
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_webpki_verifier(self.verifier.clone())
            .with_client_auth_cert(chain, key)
            .context("the host certificate and key do not match")?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(cfg))
    }

    /// A client config without client certificate (the HTTPS feed).
    pub fn anonymous_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Connects a TCP socket bound to `source` (port chosen by the kernel).
pub async fn tcp_from(source: Option<IpAddr>, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The tower service tonic calls for a connection: TCP from `source`, then TLS.
#[derive(Clone)]
pub struct BoundTlsConnector {
    /// Local address to bind (None: the kernel's choice).
    pub source: Option<IpAddr>,
    /// The server.
    pub server: SocketAddr,
    /// The name the server certificate must carry.
    pub server_name: ServerName<'static>,
    /// This host's TLS configuration.
    pub tls: Arc<ClientConfig>,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<tonic::codegen::http::Uri> for BoundTlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let tcp = tcp_from(me.source, me.server).await?;
            let tls = TlsConnector::from(me.tls)
                .connect(me.server_name, tcp)
                .await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(std::io::Error::other(
                    "the server did not agree to HTTP/2 (ALPN h2)",
                ));
            }
            Ok(TokioIo::new(tls))
        })
    }
}

/// Server address and TLS name from `https://HOST:PORT`.
pub async fn resolve_server(url: &str) -> anyhow::Result<(SocketAddr, ServerName<'static>)> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("--server must be https://HOST:PORT, got '{url}'"))?;
    let authority = rest.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .with_context(|| format!("bad port in '{url}'"))?,
        ),
        None => (authority, 443),
    };
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("'{host}' is not a TLS server name: {e}"))?;
    Ok((addr, name))
}
