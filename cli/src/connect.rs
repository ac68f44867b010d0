//! Where the CLI connects and how: [`resolve_target`] decides from the
//! options (pure), [`connect`] opens the channel, [`describe_status`] turns a
//! gRPC error into one line and an exit code (pure).

use super::args::ConnectionArgs;
use super::{one_line, CliError};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// The admin socket used when neither `--server` nor `--socket` is given.
pub const DEFAULT_SOCKET: &str = "/run/trustpool/admin.sock";

/// A resolved connection target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// gRPC over mutual TLS with the operator's certificate.
    Tls {
        /// `https://host:port`.
        url: String,
        /// CA of the server certificate.
        ca: PathBuf,
        /// Operator certificate.
        cert: PathBuf,
        /// Operator key.
        key: PathBuf,
    },
    /// gRPC over the server's local UNIX socket.
    Socket(PathBuf),
}

impl Target {
    /// How the target is named in error messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Tls { url, .. } => url.clone(),
            Target::Socket(path) => format!("unix:{}", path.display()),
        }
    }
}

/// Chooses the target from the options (flags and environment already merged
/// by clap): `--server` needs `--ca`, `--cert` and `--key`; without
/// `--server`, the socket (`--socket` or [`DEFAULT_SOCKET`]). Giving both
/// `--server` and `--socket` is an error, as is a TLS file without `--server`
/// (it would be silently ignored).
pub fn resolve_target(conn: &ConnectionArgs) -> Result<Target, String> {
    let server = conn
        .server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match (server, &conn.socket) {
        (Some(_), Some(_)) => Err(
            "give either --server (TRUSTPOOL_SERVER) or --socket (TRUSTPOOL_SOCKET), not both"
                .into(),
        ),
        (Some(server), None) => {
            let mut missing = Vec::new();
            for (value, flag) in [
                (&conn.ca, "--ca"),
                (&conn.cert, "--cert"),
                (&conn.key, "--key"),
            ] {
                if value.is_none() {
                    missing.push(flag);
                }
            }
            match (&conn.ca, &conn.cert, &conn.key) {
                (Some(ca), Some(cert), Some(key)) => Ok(Target::Tls {
                    url: normalize_url(server)?,
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => Err(format!(
                    "--server needs {} (the server's CA and the operator's certificate and key)",
                    missing.join(", ")
                )),
            }
        }
        (None, socket) => {
            if conn.ca.is_some() || conn.cert.is_some() || conn.key.is_some() {
                return Err("--ca, --cert and --key are for --server (mutual TLS); the admin socket needs none".into());
            }
            Ok(Target::Socket(
                socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            ))
        }
    }
}

/// `host:port` → `https://host:port`; an `https://` URL stays as it is;
/// `http://` is refused (the admin API is only served over TLS).
pub fn normalize_url(server: &str) -> Result<String, String> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    if !url.starts_with("https://") {
        return Err(format!(
            "server URL {server}: only https:// is served (or use --socket)"
        ));
    }
    url.parse::<Uri>()
        .map_err(|e| format!("invalid server URL {server}: {e}"))?;
    Ok(url)
}

/// Opens the channel to the target (the connection is made now, so a
/// server that is down is reported before any request).
pub async fn connect(target: &Target) -> Result<Channel, CliError> {
    let result = match target {
        Target::Tls { url, ca, cert, key } => connect_tls(url, ca, cert, key).await,
        Target::Socket(path) => connect_socket(path).await,
    };
    result.map_err(|e| CliError::error(one_line(&format!("{e:#}"))))
}

async fn connect_tls(url: &str, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Channel> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
    };
    let ca = read(ca, "server CA")?;
    let cert = read(cert, "operator certificate")?;
    let key = trustpool_daemon::secrets::read_private_key(key, "operator key")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid server URL {url}"))?
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {}", error_chain(&e)))
}

/// A connector for tonic that opens the UNIX socket (the URI is ignored).
#[derive(Clone)]
struct UnixConnector(PathBuf);

impl tonic::codegen::Service<Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

async fn connect_socket(path: &Path) -> anyhow::Result<Channel> {
    // The authority is not used to connect; it only names the peer in requests.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect_with_connector(UnixConnector(path.to_path_buf()))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the admin socket {}: {} (is the server running with --admin-socket, and may this user open it? or give --server)",
                path.display(),
                error_chain(&e)
            )
        })
}

/// An error and its sources, joined with ": ", without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// A gRPC error as one line and an exit code: NotFound → 3; PermissionDenied
/// and Unauthenticated → "not an operator" (2); Unavailable → the
/// transport's own words (2); anything else → code and message (2).
pub fn describe_status(status: &tonic::Status, target: &str) -> CliError {
    let message = one_line(status.message());
    let source = std::error::Error::source(status)
        .map(|s| one_line(&error_chain(s)))
        .filter(|s| !s.is_empty() && !message.contains(s.as_str()));
    let detail = match source {
        Some(source) if message.is_empty() || source.contains(message.as_str()) => source,
        Some(source) => format!("{message}: {source}"),
        None => message,
    };
    use tonic::Code;
    let transport = detail.contains("transport error") || detail.contains("connection closed");
    match status.code() {
        Code::Cancelled | Code::Unavailable | Code::Unknown if transport => CliError::error(format!(
            "the connection to {target} failed: {detail} (if the server is up, it refused this client certificate: it must be issued by the CA the server trusts)"
        )),
        Code::NotFound => CliError::not_found(if detail.is_empty() {
            "not found".into()
        } else {
            detail
        }),
        Code::PermissionDenied | Code::Unauthenticated => CliError::error(format!(
            "not an operator: {target} refused this client ({})",
            if detail.is_empty() {
                "permission denied"
            } else {
                detail.as_str()
            }
        )),
        Code::Unavailable => CliError::error(format!("{target} is unavailable: {detail}")),
        Code::Unimplemented => CliError::error(format!(
            "{target} does not serve this request (a server without the Admin API?): {detail}"
        )),
        code => CliError::error(format!(
            "{target}: {} ({code:?})",
            if detail.is_empty() {
                code.description()
            } else {
                detail.as_str()
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Exit;

    fn conn(server: Option<&str>, socket: Option<&str>, tls: bool) -> ConnectionArgs {
        ConnectionArgs {
            server: server.map(String::from),
            ca: tls.then(|| PathBuf::from("ca.pem")),
            cert: tls.then(|| PathBuf::from("op.pem")),
            key: tls.then(|| PathBuf::from("op.key")),
            socket: socket.map(PathBuf::from),
        }
    }

    #[test]
    fn default_is_the_local_socket() {
        assert_eq!(
            resolve_target(&conn(None, None, false)),
            Ok(Target::Socket(PathBuf::from(DEFAULT_SOCKET)))
        );
        assert_eq!(
            resolve_target(&conn(None, Some("/tmp/a.sock"), false)),
            Ok(Target::Socket(PathBuf::from("/tmp/a.sock")))
        );
    }

    #[test]
    fn server_needs_all_tls_files() {
        let t = resolve_target(&conn(Some("attest.example.org:7443"), None, true)).expect("tls");
        assert_eq!(t.describe(), "https://attest.example.org:7443");
        let mut c = conn(Some("https://a:1"), None, true);
        c.key = None;
        c.ca = None;
        let e = resolve_target(&c).expect_err("missing");
        assert!(
            e.contains("--ca") && e.contains("--key") && !e.contains("--cert"),
            "{e}"
        );
        assert!(resolve_target(&conn(Some("https://a:1"), Some("/s"), true)).is_err());
        assert!(resolve_target(&conn(None, None, true)).is_err());
        assert!(resolve_target(&conn(Some("http://a:1"), None, true)).is_err());
        assert!(resolve_target(&conn(Some("https://a b"), None, true)).is_err());
        // An empty TRUSTPOOL_SERVER counts as unset.
        assert!(matches!(
            resolve_target(&conn(Some(" "), None, false)),
            Ok(Target::Socket(_))
        ));
    }

    #[test]
    fn statuses_become_one_line_and_an_exit_code() {
        let e = describe_status(&tonic::Status::not_found("no host 'x'"), "unix:/s");
        assert_eq!(
            (e.code, e.message.as_str()),
            (Exit::NotFound, "no host 'x'")
        );
        let e = describe_status(
            &tonic::Status::permission_denied("CN=host-a is\nnot an operator"),
            "https://a:1",
        );
        assert_eq!(e.code, Exit::Error);
        assert!(
            e.message
                .starts_with("not an operator: https://a:1 refused this client"),
            "{}",
            e.message
        );
        assert!(!e.message.contains('\n'));
        let e = describe_status(
            &tonic::Status::unavailable("tcp connect error"),
            "https://a:1",
        );
        assert!(
            e.message.contains("unavailable") && e.message.contains("tcp connect"),
            "{}",
            e.message
        );
        let e = describe_status(
            &tonic::Status::cancelled("transport error: connection closed"),
            "https://a:1",
        );
        assert!(e.message.starts_with("the connection to https://a:1 failed: transport error: connection closed (if the server is up, it refused this client certificate"), "{}", e.message);
        let e = describe_status(
            &tonic::Status::failed_precondition("host is not pending"),
            "t",
        );
        assert_eq!(e.code, Exit::Error);
        assert!(
            e.message.contains("host is not pending") && e.message.contains("FailedPrecondition"),
            "{}",
            e.message
        );
    }
}
