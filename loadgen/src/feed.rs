//! Consumers' view, for detection times: the HTTPS trusted-pool feed
//! (`GET /v1/pools/{pool}/hosts`, bearer token, long poll with
//! `?wait=DUR&since=GENERATION`: the answer comes as soon as the
//! membership generation moves; server/src/publish/feed.rs) and, optionally,
//! Placement (the host's resource provider traits).

use crate::connector::{tcp_from, TlsShared};
use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An HTTPS/1.1 client for the server's API (one connection per request).
#[derive(Clone)]
pub struct FeedClient {
    addr: SocketAddr,
    name: ServerName<'static>,
    authority: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    token: String,
}

/// A response.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl FeedClient {
    /// A client of `https://HOST:PORT` with a reader `token`.
    pub async fn new(url: &str, tls: &TlsShared, token: String) -> anyhow::Result<FeedClient> {
        let (addr, name) = crate::connector::resolve_server(url).await?;
        Ok(FeedClient {
            addr,
            name,
            authority: url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string(),
            tls: tls.anonymous_config()?,
            token,
        })
    }

    /// GET `path` with an optional If-None-Match.
    pub async fn get(&self, path: &str, if_none_match: Option<&str>) -> anyhow::Result<Answer> {
        let tcp = tcp_from(None, self.addr)
            .await
            .with_context(|| format!("connecting to the feed at {}", self.addr))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.name.clone(), tcp)
            .await
            .context("TLS handshake with the feed")?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake with the feed")?;
        let conn = tokio::spawn(conn);
        let mut req = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if let Some(tag) = if_none_match {
            req = req.header(hyper::header::IF_NONE_MATCH, tag);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .context("building the request")?;
        let resp = send
            .send_request(req)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the body of GET {path}"))?
            .to_bytes();
        drop(send);
        conn.abort();
        Ok(Answer { status, body })
    }
}

#[derive(Deserialize)]
struct PoolBody {
    generation: u64,
    hosts: Vec<PoolHost>,
}

#[derive(Deserialize)]
struct PoolHost {
    hostname: String,
}

/// One observation of the pool: whether the watched host is a member, when seen.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Member of the pool.
    pub member: bool,
    /// When this answer arrived.
    pub at: Instant,
}

/// Long-polls the pool and publishes whether `host` is a member, as soon
/// as each answer arrives. Errors are retried after a short pause (and
/// reported on the channel's `Err`).
pub fn watch_pool(
    client: FeedClient,
    pool: String,
    host: String,
) -> watch::Receiver<Result<Seen, String>> {
    let (tx, rx) = watch::channel(Err("no answer yet".to_string()));
    tokio::spawn(async move {
        let mut since: Option<u64> = None;
        loop {
            let path = match since {
                Some(g) => format!("/v1/pools/{pool}/hosts?wait=30s&since={g}"),
                None => format!("/v1/pools/{pool}/hosts"),
            };
            let outcome = async {
                let a = client.get(&path, None).await?;
                if a.status != 200 {
                    bail!(
                        "feed answered {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    );
                }
                let body: PoolBody =
                    serde_json::from_slice(&a.body).context("the feed body does not parse")?;
                let member = body.hosts.iter().any(|h| h.hostname == host);
                Ok::<_, anyhow::Error>((body.generation, member))
            }
            .await;
            match outcome {
                Ok((generation, member)) => {
                    since = Some(generation);
                    if tx
                        .send(Ok(Seen {
                            member,
                            at: Instant::now(),
                        }))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    if tx.send(Err(format!("{e:#}"))).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    rx
}

/// A plain-HTTP Placement client (a lab Placement with a static token):
/// whether a provider carries a trait.
pub struct Placement {
    base: String,
    token: String,
}

impl Placement {
    /// `url` = `http://HOST:PORT[/prefix]`.
    pub fn new(url: &str, token: String) -> anyhow::Result<Placement> {
        if !url.starts_with("http://") {
            bail!("--placement must be an http:// URL (a lab Placement), got '{url}'");
        }
        Ok(Placement {
            base: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let rest = url.trim_start_matches("http://");
        let (authority, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} has no address"))?;
        let tcp = tcp_from(None, addr)
            .await
            .context("connecting to Placement")?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP handshake with Placement")?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(if p.is_empty() { "/" } else { p })
            .header(hyper::header::HOST, authority)
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "placement 1.23")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .context("building the request")?;
        let resp = send.send_request(req).await.context("GET from Placement")?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        conn.abort();
        if !status.is_success() {
            bail!(
                "Placement answered {status} to GET {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).context("Placement's answer does not parse")
    }

    /// The UUID of the resource provider named `name`.
    pub async fn provider(&self, name: &str) -> anyhow::Result<String> {
        let v = self
            .get_json(&format!("/resource_providers?name={name}"))
            .await?;
        v["resource_providers"][0]["uuid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("Placement has no resource provider named '{name}'"))
    }

    /// Names of the providers that do not carry `trait_name` (`required=!TRAIT`,
    /// microversion 1.22+).
    pub async fn providers_lacking(&self, trait_name: &str) -> anyhow::Result<Vec<String>> {
        let v = self
            .get_json(&format!("/resource_providers?required=!{trait_name}"))
            .await?;
        Ok(v["resource_providers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether provider `uuid` has `trait_name`.
    pub async fn has_trait(&self, uuid: &str, trait_name: &str) -> anyhow::Result<bool> {
        let v = self
            .get_json(&format!("/resource_providers/{uuid}/traits"))
            .await?;
        Ok(v["traits"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(trait_name))))
    }
}
