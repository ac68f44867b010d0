//! Client certificates: which CA may issue what, and which certificates are
//! revoked.
//!
//! Three CA sets, each from its own option: the agents' CA (`--ca`: host
//! certificates, the Attestation service), the operator CA (`--operator-ca`:
//! the Admin service) and the reader CA (`--reader-ca`: the HTTPS feed). A
//! certificate is only ever accepted for the role of the CA that issued it:
//! the TLS listeners accept the union of their CAs in the handshake, then
//! every request is checked again against the one CA of its service.
//!
//! Certificate revocation lists (`--crl FILE`, repeatable) are matched to
//! the CA that signed them; start-up refuses a CRL that does not parse,
//! that no configured CA issued, whose signature does not verify, or a
//! second CRL of the same CA. Once a CA has a CRL, every certificate of a
//! chain to it must be covered by a CRL (an intermediate without one is
//! refused as `revocation_unknown`), and a CRL past its nextUpdate makes the
//! certificates of its CA refused (`crl_expired`) until a fresh CRL is
//! loaded: a stale list may be missing revocations. A CA without a CRL is
//! not checked for revocation.
//!
//! [`Pki::reload_crls`] (SIGHUP) re-reads the CRL files; a set that fails to
//! load leaves the previous CRLs in force. New handshakes and requests see a
//! reload at once; [`Pki::until_refused`] lets a long-lived agent stream end
//! when its certificate is revoked.

use crate::metrics::Metrics;
use anyhow::{bail, Context};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use tracing::{info, warn};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// The role a CA issues certificates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Agents' host certificates (`--ca`).
    Agents,
    /// Operators of the admin API (`--operator-ca`).
    Operators,
    /// Feed readers (`--reader-ca`).
    Readers,
}

impl Role {
    /// The role's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agents => "agents",
            Role::Operators => "operators",
            Role::Readers => "readers",
        }
    }

    /// The option that configures the role's CA.
    pub fn option(self) -> &'static str {
        match self {
            Role::Agents => "--ca",
            Role::Operators => "--operator-ca",
            Role::Readers => "--reader-ca",
        }
    }
}

/// Why a client certificate was refused: a stable code (a metric label) and
/// a message for the log and the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code: `revoked`, `unknown_issuer`, `expired`, `crl_expired`, …
    pub reason: &'static str,
    /// Human explanation, naming the certificate.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

/// The stable code of a certificate verification error.
pub fn reason_code(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_valid_yet"
            }
            CertificateError::UnknownRevocationStatus => "revocation_unknown",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::BadEncoding => "bad_encoding",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "invalid_purpose"
            }
            _ => "invalid_certificate",
        },
        rustls::Error::NoCertificatesPresented => "no_certificate",
        _ => "invalid_certificate",
    }
}

/// One CA file of one role.
#[derive(Debug)]
struct CaFile {
    role: Role,
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

/// One loaded CRL and what it says, for logs and matching.
#[derive(Debug, Clone)]
struct CrlInfo {
    file: PathBuf,
    issuer: String,
    issuer_raw: Vec<u8>,
    /// Unix seconds of nextUpdate, if the CRL has one.
    next_update: Option<i64>,
    /// Revoked serial numbers (big-endian, no leading zeros) and their reason.
    revoked: Vec<(Vec<u8>, String)>,
    roles: Vec<Role>,
    der: CertificateRevocationListDer<'static>,
}

/// The verifiers in force, one per configured role, and the CRLs behind them.
#[derive(Debug)]
struct Loaded {
    verifiers: BTreeMap<Role, Arc<dyn ClientCertVerifier>>,
    crls: Vec<CrlInfo>,
}

/// The CA sets and CRLs of the server.
#[derive(Debug)]
pub struct Pki {
    cas: Vec<CaFile>,
    crl_files: Vec<PathBuf>,
    loaded: RwLock<Arc<Loaded>>,
    changes: tokio::sync::watch::Sender<u64>,
    metrics: OnceLock<Arc<Metrics>>,
}

/// Where each CA and each CRL is.
#[derive(Debug, Clone, Default)]
pub struct PkiFiles {
    /// `--ca`.
    pub agents_ca: PathBuf,
    /// `--operator-ca`, if given.
    pub operator_ca: Option<PathBuf>,
    /// `--reader-ca`, if given.
    pub reader_ca: Option<PathBuf>,
    /// `--crl` files.
    pub crls: Vec<PathBuf>,
}

impl Pki {
    /// Reads the CA files and the CRLs; any problem is an error naming the file.
    pub fn load(files: &PkiFiles) -> anyhow::Result<Pki> {
        let mut cas = vec![CaFile {
            role: Role::Agents,
            path: files.agents_ca.clone(),
            certs: crate::tls::certs::read_certs(&files.agents_ca, "agents' CA (--ca)")?,
        }];
        for (role, path) in [
            (Role::Operators, &files.operator_ca),
            (Role::Readers, &files.reader_ca),
        ] {
            if let Some(path) = path {
                cas.push(CaFile {
                    role,
                    path: path.clone(),
                    certs: crate::tls::certs::read_certs(
                        path,
                        &format!("{} CA ({})", role.as_str(), role.option()),
                    )?,
                });
            }
        }
        let agents = cas.iter().find(|c| c.role == Role::Agents);
        let operators = cas.iter().find(|c| c.role == Role::Operators);
        if let (Some(agents), Some(op)) = (agents, operators) {
            if op.certs.iter().any(|c| agents.certs.contains(c)) {
                bail!(
                    "the operator CA {} holds a certificate of the agents' CA {}: operators need a CA of their own, or any host certificate could be an operator",
                    op.path.display(),
                    agents.path.display()
                );
            }
        }
        let loaded = build(&cas, &files.crls)?;
        for w in expiry_warnings(&loaded.crls) {
            warn!("{w}");
        }
        for crl in &loaded.crls {
            info!(file = %crl.file.display(), issuer = %crl.issuer, revoked = crl.revoked.len(), roles = ?crl.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(), "CRL loaded");
        }
        Ok(Pki {
            cas,
            crl_files: files.crls.clone(),
            loaded: RwLock::new(Arc::new(loaded)),
            changes: tokio::sync::watch::channel(0).0,
            metrics: OnceLock::new(),
        })
    }

    /// Counts refusals and reloads in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// True when `role` has a CA configured.
    pub fn has(&self, role: Role) -> bool {
        self.cas.iter().any(|c| c.role == role)
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads every CRL file. On any error the CRLs in force stay (logged
    /// and counted as `trustpool_crl_reloads_total{outcome="error"}`).
    pub fn reload_crls(&self) -> anyhow::Result<()> {
        match build(&self.cas, &self.crl_files) {
            Ok(loaded) => {
                for w in expiry_warnings(&loaded.crls) {
                    warn!("{w}");
                }
                let total: usize = loaded.crls.iter().map(|c| c.revoked.len()).sum();
                info!(crls = loaded.crls.len(), revoked = total, "CRLs reloaded");
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                self.changes.send_modify(|g| *g = g.wrapping_add(1));
                if let Some(m) = self.metrics.get() {
                    m.crl_reload(true);
                }
                Ok(())
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "CRL reload refused: the previous CRLs stay in force");
                if let Some(m) = self.metrics.get() {
                    m.crl_reload(false);
                }
                Err(e)
            }
        }
    }

    /// Checks a presented chain (leaf first) against the CA of `role` and
    /// its CRLs, now.
    pub fn check(&self, role: Role, chain: &[CertificateDer<'_>]) -> Result<(), Refusal> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Refusal {
                reason: "no_certificate",
                message: "a client certificate is required".into(),
            });
        };
        let loaded = self.current();
        let Some(verifier) = loaded.verifiers.get(&role) else {
            return Err(Refusal {
                reason: "ca_not_configured",
                message: format!(
                    "{}: no {} CA is configured ({})",
                    describe(leaf),
                    role.as_str(),
                    role.option()
                ),
            });
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| refusal(&loaded, role, leaf, &e))
    }

    /// [`Pki::check`], and on a refusal a `warn!` and the metric
    /// `trustpool_tls_refused_total{listener, reason}`.
    pub fn check_logged(
        &self,
        listener: &'static str,
        role: Role,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), Refusal> {
        self.check(role, chain)
            .inspect_err(|r| self.refused(listener, r))
    }

    /// Logs and counts a refusal seen by `listener`.
    pub fn refused(&self, listener: &'static str, r: &Refusal) {
        warn!(
            listener,
            reason = r.reason,
            "client certificate refused: {}",
            r.message
        );
        if let Some(m) = self.metrics.get() {
            m.tls_refused(listener, r.reason);
        }
    }

    /// Completes once `chain` no longer passes [`Pki::check`] for `role`
    /// after a CRL reload (never, while it does); the refusal is logged and
    /// counted under `listener`.
    pub fn until_refused(
        self: &Arc<Self>,
        listener: &'static str,
        role: Role,
        chain: Arc<Vec<CertificateDer<'static>>>,
    ) -> impl std::future::Future<Output = Refusal> + Send + 'static {
        let pki = self.clone();
        let mut changes = self.changes.subscribe();
        async move {
            loop {
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if let Err(r) = pki.check_logged(listener, role, &chain) {
                    return r;
                }
            }
        }
    }

    /// The handshake verifier of a listener that accepts certificates of
    /// `roles`; `mandatory`: a client without a certificate is refused.
    pub fn listener_verifier(
        self: &Arc<Self>,
        listener: &'static str,
        roles: &[Role],
        mandatory: bool,
    ) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
        let roles: Vec<Role> = roles.iter().copied().filter(|r| self.has(*r)).collect();
        let mut hints = Vec::new();
        for ca in self.cas.iter().filter(|c| roles.contains(&c.role)) {
            for cert in &ca.certs {
                let parsed = webpki::anchor_from_trusted_cert(cert).with_context(|| {
                    format!("{} is not a usable CA certificate", ca.path.display())
                })?;
                // A trust anchor's subject is the Name's contents; the hint
                // sent in CertificateRequest must be the whole DER Name.
                let dn = DistinguishedName::in_sequence(parsed.subject.as_ref());
                if !hints
                    .iter()
                    .any(|h: &DistinguishedName| h.as_ref() == dn.as_ref())
                {
                    hints.push(dn);
                }
            }
        }
        if roles.is_empty() {
            bail!("the {listener} listener has no client CA");
        }
        Ok(Arc::new(ListenerVerifier {
            pki: self.clone(),
            listener,
            roles,
            mandatory,
            hints,
            provider: crate::tls::certs::provider(),
        }))
    }
}

/// A short description of a certificate for logs: subject and serial.
pub fn describe(der: &CertificateDer<'_>) -> String {
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => format!(
            "certificate '{}' (serial {})",
            cert.subject(),
            cert.raw_serial_as_string()
        ),
        Err(_) => "an unparsable certificate".into(),
    }
}

fn refusal(loaded: &Loaded, role: Role, leaf: &CertificateDer<'_>, e: &rustls::Error) -> Refusal {
    let reason = reason_code(e);
    let mut message = format!(
        "{} refused for the {} CA: {e}",
        describe(leaf),
        role.as_str()
    );
    if reason == "revoked" {
        if let Some((crl, why)) = revocation_of(loaded, leaf) {
            message = format!(
                "{} is revoked ({why}) by the CRL {} of '{}'",
                describe(leaf),
                crl.file.display(),
                crl.issuer
            );
        }
    }
    Refusal { reason, message }
}

/// The CRL entry that revokes `leaf`, if any: the CRL and the reason.
fn revocation_of<'a>(
    loaded: &'a Loaded,
    leaf: &CertificateDer<'_>,
) -> Option<(&'a CrlInfo, String)> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let issuer = cert.issuer().as_raw();
    let serial = cert.tbs_certificate.serial.to_bytes_be();
    loaded
        .crls
        .iter()
        .filter(|c| c.issuer_raw == issuer)
        .find_map(|c| {
            c.revoked
                .iter()
                .find(|(s, _)| *s == serial)
                .map(|(_, why)| (c, why.clone()))
        })
}

fn expiry_warnings(crls: &[CrlInfo]) -> Vec<String> {
    let now = crate::clock::now_ms() / 1000;
    crls.iter()
        .filter(|c| c.next_update.is_some_and(|t| t <= now))
        .map(|c| {
            format!(
                "the CRL {} of '{}' is past its nextUpdate: certificates of this CA are refused (crl_expired) until a fresh CRL is loaded",
                c.file.display(),
                c.issuer
            )
        })
        .collect()
}

/// Reads the CRLs of `files` (PEM `X509 CRL` blocks, or one DER CRL per
/// file), matches each to the CA that signed it and builds one verifier
/// per role.
fn build(cas: &[CaFile], files: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut crls: Vec<CrlInfo> = Vec::new();
    for file in files {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read the CRL {}", file.display()))?;
        let ders: Vec<CertificateRevocationListDer<'static>> =
            if String::from_utf8_lossy(&bytes).contains("-----BEGIN X509 CRL-----") {
                CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{} holds a malformed PEM CRL", file.display()))?
            } else {
                vec![CertificateRevocationListDer::from(bytes)]
            };
        for der in ders {
            let info = read_crl(cas, file, der)?;
            if let Some(other) = crls.iter().find(|c| {
                c.issuer_raw == info.issuer_raw && c.roles.iter().any(|r| info.roles.contains(r))
            }) {
                bail!(
                    "{} and {} both hold a CRL of '{}': give one CRL per CA",
                    other.file.display(),
                    file.display(),
                    info.issuer
                );
            }
            crls.push(info);
        }
    }
    let mut verifiers = BTreeMap::new();
    for ca in cas {
        let mut roots = RootCertStore::empty();
        for cert in &ca.certs {
            roots
                .add(cert.clone())
                .with_context(|| format!("{} is not a usable CA certificate", ca.path.display()))?;
        }
        let mine: Vec<CertificateRevocationListDer<'static>> = crls
            .iter()
            .filter(|c| c.roles.contains(&ca.role))
            .map(|c| c.der.clone())
            .collect();
        let mut builder = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            crate::tls::certs::provider(),
        );
        if !mine.is_empty() {
            builder = builder.with_crls(mine).enforce_revocation_expiration();
        }
        let verifier = builder.build().with_context(|| {
            format!(
                "building the certificate verifier of the {} CA {}",
                ca.role.as_str(),
                ca.path.display()
            )
        })?;
        verifiers.insert(ca.role, verifier);
    }
    Ok(Loaded { verifiers, crls })
}

/// Parses one CRL and finds the configured CAs that issued it.
fn read_crl(
    cas: &[CaFile],
    file: &Path,
    der: CertificateRevocationListDer<'static>,
) -> anyhow::Result<CrlInfo> {
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{} is not a CRL: {e}", file.display()))?;
    webpki::OwnedCertRevocationList::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: unusable CRL: {e:?}", file.display()))?;
    let issuer = crl.issuer().to_string();
    let issuer_raw = crl.issuer().as_raw().to_vec();
    let mut roles = Vec::new();
    let mut bad_signature = None;
    for ca in cas {
        for cert in &ca.certs {
            let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
                continue;
            };
            if parsed.subject().as_raw() != issuer_raw.as_slice() {
                continue;
            }
            match crl.verify_signature(parsed.public_key()) {
                Ok(()) => {
                    if !roles.contains(&ca.role) {
                        roles.push(ca.role);
                    }
                }
                Err(e) => bad_signature = Some((ca.path.clone(), e)),
            }
        }
    }
    if roles.is_empty() {
        if let Some((ca, e)) = bad_signature {
            bail!(
                "the signature of the CRL {} does not verify with the key of '{issuer}' in {}: {e}",
                file.display(),
                ca.display()
            );
        }
        bail!(
            "the CRL {} is issued by '{issuer}', which is none of the configured CAs (--ca, --operator-ca, --reader-ca)",
            file.display()
        );
    }
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| {
            let why = r
                .reason_code()
                .map(|(_, code)| code.to_string())
                .unwrap_or_else(|| "no reason given".into());
            (r.serial().to_bytes_be(), why)
        })
        .collect();
    Ok(CrlInfo {
        file: file.to_path_buf(),
        issuer,
        issuer_raw,
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked,
        roles,
        der,
    })
}

/// The handshake verifier of one listener: a chain is accepted when it
/// passes the verifier of one of the listener's roles (with that role's
/// CRLs, as they are now). Refusals are logged and counted.
#[derive(Debug)]
struct ListenerVerifier {
    pki: Arc<Pki>,
    listener: &'static str,
    roles: Vec<Role>,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for ListenerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.pki.current();
        let mut refused: Option<(Role, rustls::Error)> = None;
        for role in &self.roles {
            let Some(verifier) = loaded.verifiers.get(role) else {
                continue;
            };
            match verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    // The most telling error: one from the CA that issued the
                    // certificate, rather than "unknown issuer" from another.
                    let specific = !matches!(
                        e,
                        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                    );
                    if refused.is_none() || specific {
                        refused = Some((*role, e));
                    }
                }
            }
        }
        let (role, error) = refused.unwrap_or((
            Role::Agents,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let r = refusal(&loaded, role, end_entity, &error);
        self.pki.refused(self.listener, &r);
        Err(error)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
