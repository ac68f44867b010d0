//! A real OpenStack Placement for the trait-sync tests: `openstack-placement`
//! from PyPI in a virtualenv (`scripts/placement-venv`, created once and
//! shared), started on a free port with its own SQLite file and the
//! `noauth2` strategy (token `admin`). Placement on SQLite needs its
//! requests serialised, so it is served by a single-threaded `wsgiref`
//! server. Dropping the handle stops it.

use crate::http::{self, HttpResponse};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The microversion the harness speaks.
pub const MICROVERSION: &str = "placement 1.39";

/// The serving script: Placement's WSGI app on one thread.
const RUNNER: &str = r#"
import os, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler, WSGIServer

class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass

class Server(WSGIServer):
    # Concurrent clients queue in the backlog instead of being dropped.
    request_queue_size = 128

os.environ['OS_PLACEMENT_CONFIG_DIR'] = sys.argv[1]
from placement.wsgi import api
server = make_server('127.0.0.1', int(sys.argv[2]), api.application,
                     server_class=Server, handler_class=QuietHandler)
print('placement listening', flush=True)
server.serve_forever()
"#;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The virtualenv, created by `scripts/placement-venv` if needed (under a
/// file lock, so concurrent tests create it once).
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let venv = std::env::var_os("TRUSTPOOL_PLACEMENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/placement-venv"));
    std::fs::create_dir_all(root.join("target"))?;
    let out = Command::new("flock")
        .arg(root.join("target/placement-venv.lock"))
        .arg(root.join("scripts/placement-venv"))
        .env("TRUSTPOOL_PLACEMENT_VENV", &venv)
        .output()
        .context("running scripts/placement-venv")?;
    if !out.status.success() {
        bail!(
            "scripts/placement-venv failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(venv)
}

/// A running Placement; derefs to its [`PlacementApi`].
pub struct Placement {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its directory (configuration, database, log).
    pub dir: PathBuf,
    /// The virtualenv it runs from.
    pub venv: PathBuf,
    api: PlacementApi,
}

/// The Placement API as an admin, for any thread (owns no process).
#[derive(Debug, Clone, Copy)]
pub struct PlacementApi {
    /// Placement's port on 127.0.0.1.
    pub port: u16,
}

impl std::ops::Deref for Placement {
    type Target = PlacementApi;
    fn deref(&self) -> &PlacementApi {
        &self.api
    }
}

impl Placement {
    /// Creates the database in `dir` and starts Placement on a free port.
    /// Placement started again on another port if it lost its port to
    /// another process ("Address already in use").
    pub fn start(dir: &Path) -> anyhow::Result<Placement> {
        let log = dir.join("placement.log");
        crate::ports::start_on_free_ports("Placement", &log, 1, |ports| {
            Self::start_on(dir, ports[0])
        })
    }

    /// Like [`Placement::start`] on a given port (the database is kept if it exists).
    pub fn start_on(dir: &Path, port: u16) -> anyhow::Result<Placement> {
        let venv = ensure_venv()?;
        std::fs::create_dir_all(dir)?;
        let conf = format!(
            "[DEFAULT]\ndebug = false\n[api]\nauth_strategy = noauth2\n[placement_database]\nconnection = sqlite:///{}\n",
            dir.join("placement.db").display()
        );
        std::fs::write(dir.join("placement.conf"), conf)?;
        std::fs::write(dir.join("run_placement.py"), RUNNER)?;
        let sync = Command::new(venv.join("bin/placement-manage"))
            .arg("--config-file")
            .arg(dir.join("placement.conf"))
            .args(["db", "sync"])
            .output()
            .context("placement-manage db sync")?;
        if !sync.status.success() {
            bail!(
                "placement-manage db sync failed:\n{}",
                String::from_utf8_lossy(&sync.stderr)
            );
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("placement.log"))?;
        let child = Command::new(venv.join("bin/python"))
            .arg(dir.join("run_placement.py"))
            .arg(dir)
            .arg(port.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting Placement")?;
        let mut p = Placement {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            venv,
            api: PlacementApi { port },
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = p.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("Placement exited ({status}):\n{}", p.log_text());
                }
            }
            if p.request("GET", "/", None).is_ok_and(|r| r.status == 200) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("Placement not up after 60s:\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("placement.log")).unwrap_or_default()
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl PlacementApi {
    /// One request as an admin (`X-Auth-Token: admin`, microversion 1.39).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<HttpResponse> {
        let body = body.map(|b| b.to_string());
        let mut headers = vec![
            ("X-Auth-Token", "admin"),
            ("OpenStack-API-Version", MICROVERSION),
            ("Accept", "application/json"),
        ];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http::request(
            self.port,
            None,
            method,
            path,
            &headers,
            body.as_deref().map(str::as_bytes),
            Duration::from_secs(30),
        )
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> anyhow::Result<HttpResponse> {
        let r = self.request(method, path, body)?;
        if !ok.contains(&r.status) {
            bail!("{method} {path}: {} {}", r.status, r.body);
        }
        Ok(r)
    }

    /// Creates a trait (`PUT /traits/{name}`).
    pub fn create_trait(&self, name: &str) -> anyhow::Result<()> {
        self.expect("PUT", &format!("/traits/{name}"), None, &[201, 204])?;
        Ok(())
    }

    /// Creates a root provider named `name` with `vcpus` VCPU and `traits`
    /// (created first if custom); returns its uuid.
    pub fn create_provider(
        &self,
        name: &str,
        traits: &[&str],
        vcpus: u32,
    ) -> anyhow::Result<String> {
        let r = self.expect(
            "POST",
            "/resource_providers",
            Some(&serde_json::json!({"name": name})),
            &[200],
        )?;
        let uuid = r.json()?["uuid"].as_str().context("uuid")?.to_string();
        let (_, generation) = self.traits(&uuid)?;
        let r = self.expect(
            "PUT",
            &format!("/resource_providers/{uuid}/inventories"),
            Some(&serde_json::json!({
                "resource_provider_generation": generation,
                "inventories": {"VCPU": {"total": vcpus}}
            })),
            &[200],
        )?;
        let generation = r.json()?["resource_provider_generation"]
            .as_u64()
            .context("generation")?;
        for t in traits.iter().filter(|t| t.starts_with("CUSTOM_")) {
            self.create_trait(t)?;
        }
        // A running trustpool may add its trait between our reads and this
        // write (409 concurrent_update): read again and keep what is there,
        // as nova-compute's read-modify-write does.
        let mut generation = generation;
        let mut wanted: Vec<String> = traits.iter().map(|t| t.to_string()).collect();
        for _ in 0..5 {
            let r = self.request(
                "PUT",
                &format!("/resource_providers/{uuid}/traits"),
                Some(
                    &serde_json::json!({"traits": wanted, "resource_provider_generation": generation}),
                ),
            )?;
            if r.status == 200 {
                return Ok(uuid);
            }
            if r.status != 409 {
                anyhow::bail!(
                    "PUT /resource_providers/{uuid}/traits: {} {}",
                    r.status,
                    r.body
                );
            }
            let (present, now) = self.traits(&uuid)?;
            for t in present {
                if !wanted.contains(&t) {
                    wanted.push(t);
                }
            }
            generation = now;
        }
        anyhow::bail!("PUT /resource_providers/{uuid}/traits: still conflicting after 5 attempts")
    }

    /// The traits of a provider and its generation.
    pub fn traits(&self, uuid: &str) -> anyhow::Result<(Vec<String>, u64)> {
        let body = self
            .expect(
                "GET",
                &format!("/resource_providers/{uuid}/traits"),
                None,
                &[200],
            )?
            .json()?;
        let mut traits: Vec<String> = body["traits"]
            .as_array()
            .context("traits")?
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        traits.sort();
        Ok((
            traits,
            body["resource_provider_generation"]
                .as_u64()
                .context("generation")?,
        ))
    }

    /// Read-modify-write of one trait of a provider, retried on 409 (what
    /// another well-behaved writer such as nova-compute does). Returns the
    /// number of conflicts it met.
    pub fn set_trait(&self, uuid: &str, name: &str, present: bool) -> anyhow::Result<u32> {
        let mut conflicts = 0;
        for _ in 0..200 {
            let (mut traits, generation) = self.traits(uuid)?;
            traits.retain(|t| t != name);
            if present {
                traits.push(name.to_string());
            }
            let r = self.request(
                "PUT",
                &format!("/resource_providers/{uuid}/traits"),
                Some(&serde_json::json!({"traits": traits, "resource_provider_generation": generation})),
            )?;
            match r.status {
                200 => return Ok(conflicts),
                409 => {
                    conflicts += 1;
                    std::thread::sleep(Duration::from_millis(u64::from(rand::random::<u8>() % 20)));
                }
                other => bail!("PUT traits of {uuid}: {other} {}", r.body),
            }
        }
        bail!("PUT traits of {uuid}: still conflicting after 200 attempts")
    }

    /// Names of the providers `GET /allocation_candidates` offers for `query`.
    pub fn allocation_candidates(&self, query: &str) -> anyhow::Result<Vec<String>> {
        let names: BTreeMap<String, String> = self
            .expect("GET", "/resource_providers", None, &[200])?
            .json()?["resource_providers"]
            .as_array()
            .context("providers")?
            .iter()
            .filter_map(|p| {
                Some((
                    p["uuid"].as_str()?.to_string(),
                    p["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        let body = self
            .expect(
                "GET",
                &format!("/allocation_candidates?{query}"),
                None,
                &[200],
            )?
            .json()?;
        let mut out: Vec<String> = body["provider_summaries"]
            .as_object()
            .context("provider_summaries")?
            .keys()
            .filter_map(|uuid| names.get(uuid).cloned())
            .collect();
        out.sort();
        Ok(out)
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A proxy in front of Placement that plays the worst-timed concurrent
/// writer: right after it forwards a `GET /resource_providers/{uuid}/traits`
/// of the watched provider (the read of a read-modify-write), it adds a
/// trait of its own to that provider by its own read-modify-write, before
/// answering. The client's following `PUT` then carries a stale generation
/// and must meet a 409 `placement.concurrent_update`. It does so for as many
/// reads as it is armed for ([`ConflictProxy::arm`]); every other request is
/// forwarded untouched. Each answer closes its connection.
pub struct ConflictProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicU32>,
    added: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ConflictProxy {
    /// Starts the proxy in front of `upstream`, watching provider `uuid`.
    pub fn start(upstream: PlacementApi, uuid: &str) -> anyhow::Result<ConflictProxy> {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let armed = Arc::new(AtomicU32::new(0));
        let added = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let watched = format!("/resource_providers/{uuid}/traits");
        let (a, d, s) = (armed.clone(), added.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok((method, path, headers, body)) = read_request(&mut conn) else {
                    continue;
                };
                let forwarded: Vec<(&str, &str)> = headers
                    .iter()
                    .filter(|(n, _)| {
                        !matches!(n.as_str(), "host" | "connection" | "content-length")
                    })
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let reply = http::request(
                    upstream.port,
                    None,
                    &method,
                    &path,
                    &forwarded,
                    (!body.is_empty()).then_some(body.as_slice()),
                    Duration::from_secs(30),
                );
                if method == "GET"
                    && path == watched
                    && a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    let mut list = d.lock().unwrap_or_else(|p| p.into_inner());
                    let name = format!("CUSTOM_INTERPOSED_{}", list.len());
                    let uuid = watched.split('/').nth(2).unwrap_or("").to_string();
                    if upstream.create_trait(&name).is_ok()
                        && upstream.set_trait(&uuid, &name, true).is_ok()
                    {
                        list.push(name);
                    }
                }
                let answer = match reply {
                    Ok(r) => format!(
                        "HTTP/1.1 {} Proxied\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        r.status,
                        r.body.len(),
                        r.body
                    ),
                    Err(_) => "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                };
                let _ = std::io::Write::write_all(&mut conn, answer.as_bytes());
            }
        });
        Ok(ConflictProxy {
            port,
            armed,
            added,
            stop,
        })
    }

    /// Interposes a write after each of the next `reads` watched reads.
    pub fn arm(&self, reads: u32) {
        self.armed.store(reads, std::sync::atomic::Ordering::SeqCst);
    }

    /// The traits the proxy added so far.
    pub fn added(&self) -> Vec<String> {
        self.added.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ConflictProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one HTTP/1.1 request: method, path, headers (names lower-cased), body.
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_request(conn: &mut std::net::TcpStream) -> anyhow::Result<RawRequest> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the request head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed in the request body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((method, path, headers, body))
}
