//! A tiny blocking HTTP/1.1 client for the server's HTTPS API (rustls with
//! ring, optional client certificate) and for plain-HTTP services on
//! loopback (Placement), enough for tests and the lab without pulling in a
//! client library.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
    /// Response headers (names lower-cased), in order.
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// TLS settings of a client of the HTTPS API: the CA that issued the
/// server's certificate and, optionally, a client certificate.
#[derive(Clone)]
pub struct TlsClient {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// Trusts the CA certificates of `ca_pem`; presents `client` (certificate
    /// and key PEM files) when given.
    pub fn new(
        ca_pem: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<TlsClient> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem)
            .with_context(|| format!("reading {}", ca_pem.display()))?
        {
            roots.add(cert.context("CA PEM")?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading {}", key.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        Ok(TlsClient {
            config: std::sync::Arc::new(config),
        })
    }
}

/// One request on `127.0.0.1:port`, over TLS when `tls` is given: `headers`
/// are sent as is, `body` with a Content-Length. Waits up to `timeout` for
/// the answer.
pub fn request(
    port: u16,
    tls: Option<&TlsClient>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect to port {port}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body.unwrap_or_default());
    let mut raw = Vec::new();
    match tls {
        None => {
            tcp.write_all(&wire)?;
            read_all(&mut tcp, &mut raw)?;
        }
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
            let conn = rustls::ClientConnection::new(tls.config.clone(), name)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream.write_all(&wire).context("TLS write")?;
            stream.flush()?;
            read_all(&mut stream, &mut raw)?;
        }
    }
    parse_response(&raw)
}

/// Reads to the end; a peer that closes without TLS close_notify is the end too.
fn read_all(stream: &mut impl Read, raw: &mut Vec<u8>) -> anyhow::Result<()> {
    match stream.read_to_end(raw) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        Err(e) => Err(e).context("reading the response"),
    }
}

/// Splits a response into status, headers and body: the body de-chunked
/// and, under `Content-Encoding: gzip`, inflated (as a client library
/// would; the header stays in `headers`).
fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "no header/body separator in {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status code")?
        .parse()
        .context("bad status code")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let has = |name: &str, value: &str| {
        headers
            .iter()
            .any(|(n, v)| n == name && v.eq_ignore_ascii_case(value))
    };
    let mut body = if has("transfer-encoding", "chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if has("content-encoding", "gzip") {
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut inflated)
            .context("the gzip body does not inflate")?;
        body = inflated;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    })
}

/// `GET path` on `127.0.0.1:port`.
pub fn get(port: u16, path: &str) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect to port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = std::str::from_utf8(&body[..line]).context("bad chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        let rest = &body[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
}
