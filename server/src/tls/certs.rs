//! The HTTPS listener of the API: TLS (rustls, `ring` provider) with the
//! server's certificate, client certificates requested but optional at the
//! TLS layer. A client certificate that is presented must chain to the
//! agents' CA or to the reader CA and not be revoked ([`crate::tls::pki`]);
//! *which* of the two decides the role, per request, in [`crate::publish::readers`].
//!
//! The accept loop, its caps and timeouts are in [`crate::publish::listener`].

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

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
/// the reader CA, with their CRLs: [`crate::tls::pki::Pki::listener_verifier`]).
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
