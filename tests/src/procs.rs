//! The server and agents as real processes, exactly as an operator starts
//! them (the options of docs/configuration.md). Logs go to files next to their state so
//! a failing test can show them. Dropping a handle kills and reaps the process.

use crate::http;
use anyhow::{bail, Context};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (built by `cargo test --workspace` / `cargo build`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TRUSTPOOL_BIN_DIR") {
        return Ok(PathBuf::from(dir).join(name));
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}: run `cargo build --workspace` first",
        exe.display()
    )
}

pub use crate::ports::free_port;

/// Files and options of one server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Working directory for the database and logs.
    pub dir: PathBuf,
    /// CA of the agents' client certificates.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// EK roots directory.
    pub ek_roots: PathBuf,
    /// `--report-interval`.
    pub report_interval: String,
    /// `--down-time`.
    pub down_time: String,
    /// Readers, PollHosts and Placement options (none by default).
    pub publication: PublicationOptions,
    /// `--operator` names: client certificates of `operator_ca` allowed on the admin API.
    pub operators: Vec<String>,
    /// `--operator-ca`, if any.
    pub operator_ca: Option<PathBuf>,
    /// `--crl` files.
    pub crls: Vec<PathBuf>,
    /// `--admin-socket`, if any.
    pub admin_socket: Option<PathBuf>,
    /// `--db` (default `<dir>/trustpool.db`), e.g. on a file system a test
    /// makes fail.
    pub db: Option<PathBuf>,
    /// `--db` as a database server URL (`postgres://…`, `mysql://…`),
    /// instead of an SQLite file.
    pub db_url: Option<String>,
}

impl ServerOptions {
    /// What the server is given as `--db`.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.db_url {
            Some(url) => url.into(),
            None => self.db_path().into(),
        }
    }

    /// The database file the server is started with.
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.dir.join("trustpool.db"))
    }
}

/// Publication options of a test server. Whatever is set here, the harness
/// also gives the server a reader token of its own
/// ([`ServerProcess::reader_token`]) that `get` and `pool_members` use.
#[derive(Debug, Clone, Default)]
pub struct PublicationOptions {
    /// `--reader-ca`.
    pub reader_ca: Option<PathBuf>,
    /// More reader tokens as `(name, token)`; the server gets their SHA-256.
    pub feed_tokens: Vec<(String, String)>,
    /// More flags, given as they are (e.g. `--oat-auth-blob-sha256 HEX`).
    pub extra_args: Vec<String>,
    /// TOML written to `<dir>/server.toml` and given with `--config`
    /// (e.g. `placement_pools` and `[placement]`).
    pub config: Option<String>,
}

/// Hex SHA-256 of a secret (what the server is configured with).
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A running `trustpool-server`.
pub struct ServerProcess {
    child: Option<Child>,
    /// Options it was started with.
    pub options: ServerOptions,
    /// gRPC port.
    pub grpc_port: u16,
    /// HTTPS API port.
    pub http_port: u16,
    /// Its log file.
    pub log: PathBuf,
    /// The reader token the harness configured (name `harness`); also in
    /// `<dir>/reader.token`.
    pub reader_token: String,
    /// TLS client settings trusting the server's CA (no client certificate).
    pub tls: http::TlsClient,
}

impl ServerProcess {
    /// Starts a server on free ports and waits until the feed answers. A
    /// server that lost a port race to another process ("Address already in
    /// use") is started again on other ports.
    pub fn start(options: ServerOptions) -> anyhow::Result<ServerProcess> {
        let log = options.dir.join("server.log");
        crate::ports::start_on_free_ports("trustpool-server", &log, 2, |ports| {
            Self::start_on(options.clone(), ports[0], ports[1])
        })
    }

    /// Starts a server on the given ports and waits until the feed answers.
    pub fn start_on(
        options: ServerOptions,
        grpc_port: u16,
        http_port: u16,
    ) -> anyhow::Result<ServerProcess> {
        std::fs::create_dir_all(&options.dir)?;
        let log = options.dir.join("server.log");
        let log_file = File::options().create(true).append(true).open(&log)?;
        let reader_token = hex::encode(rand::random::<[u8; 24]>());
        let token_file = options.dir.join("reader.token");
        std::fs::write(&token_file, &reader_token)?;
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let mut publication_args = vec![
            "--feed-token".to_string(),
            format!("harness={}", sha256_hex(&reader_token)),
        ];
        for (name, token) in &options.publication.feed_tokens {
            publication_args.push("--feed-token".into());
            publication_args.push(format!("{name}={}", sha256_hex(token)));
        }
        if let Some(ca) = &options.publication.reader_ca {
            publication_args.push("--reader-ca".into());
            publication_args.push(ca.display().to_string());
        }
        if let Some(text) = &options.publication.config {
            let path = options.dir.join("server.toml");
            std::fs::write(&path, text)?;
            publication_args.push("--config".into());
            publication_args.push(path.display().to_string());
        }
        publication_args.extend(options.publication.extra_args.iter().cloned());
        for name in &options.operators {
            publication_args.push("--operator".into());
            publication_args.push(name.clone());
        }
        if let Some(ca) = &options.operator_ca {
            publication_args.push("--operator-ca".into());
            publication_args.push(ca.display().to_string());
        }
        for crl in &options.crls {
            publication_args.push("--crl".into());
            publication_args.push(crl.display().to_string());
        }
        if let Some(socket) = &options.admin_socket {
            publication_args.push("--admin-socket".into());
            publication_args.push(socket.display().to_string());
        }
        let tls = http::TlsClient::new(&options.ca, None)?;
        let child = Command::new(binary("trustpool-server")?)
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--db")
            .arg(options.db_arg())
            .arg("--ca")
            .arg(&options.ca)
            .arg("--cert")
            .arg(&options.cert)
            .arg("--key")
            .arg(&options.key)
            .arg("--policy-dir")
            .arg(&options.policy_dir)
            .arg("--ek-roots")
            .arg(&options.ek_roots)
            .arg("--report-interval")
            .arg(&options.report_interval)
            .arg("--down-time")
            .arg(&options.down_time)
            .args(&publication_args)
            .env("TRUSTPOOL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting trustpool-server")?;
        let mut server = ServerProcess {
            child: Some(child),
            options,
            grpc_port,
            http_port,
            log,
            reader_token,
            tls,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "trustpool-server exited early ({status}):\n{}",
                        self.log_text()
                    );
                }
            }
            if self
                .https(&self.tls, "GET", "/healthz", &[], None)
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("trustpool-server not ready after 20s:\n{}", self.log_text())
    }

    /// Process id of the running server (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The gRPC URL agents use.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the HTTPS API with the harness's reader token.
    pub fn get(&self, path: &str) -> anyhow::Result<http::HttpResponse> {
        let auth = format!("Bearer {}", self.reader_token);
        self.https(&self.tls, "GET", path, &[("Authorization", &auth)], None)
    }

    /// One request on the HTTPS API with the given TLS settings and headers
    /// (no credential is added).
    pub fn https(
        &self,
        tls: &http::TlsClient,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<http::HttpResponse> {
        http::request(
            self.http_port,
            Some(tls),
            method,
            path,
            headers,
            body,
            Duration::from_secs(90),
        )
    }

    /// Hostnames currently in `pool` according to the feed.
    pub fn pool_members(&self, pool: &str) -> anyhow::Result<Vec<String>> {
        let body = self.get(&format!("/v1/pools/{pool}/hosts"))?.json()?;
        Ok(body["hosts"]
            .as_array()
            .map(|hosts| {
                hosts
                    .iter()
                    .filter_map(|h| h["hostname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Stops the server with SIGTERM and waits for it: an error if it had
    /// to be killed because it did not exit within 10 s of SIGTERM.
    pub fn stop(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        terminate(&mut child)
    }

    /// Stops and starts again on the same ports and files.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        let fresh = Self::start_on(self.options.clone(), self.grpc_port, self.http_port)?;
        *self = fresh;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child);
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s: the exit status, or an error saying it
/// had to be killed (a server must stop on SIGTERM, as systemd expects).
fn terminate(child: &mut Child) -> anyhow::Result<Option<ExitStatus>> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let status = child.wait()?;
    anyhow::bail!("still running 10 s after SIGTERM: killed ({status})")
}

/// Files and options of one agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Server URL.
    pub server: String,
    /// CA of the server certificate.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
    /// TCTI.
    pub tcti: String,
    /// Host name claimed.
    pub hostname: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Root for hardening checks (`--root`), if any.
    pub root: Option<PathBuf>,
    /// `--watch-interval`, if any.
    pub watch_interval: Option<String>,
    /// `--uefi-event-log` (a path on the host, read under `--root`), if any.
    pub uefi_event_log: Option<PathBuf>,
    /// `--txt-event-log` (a path on the host, read under `--root`), if any.
    pub txt_event_log: Option<PathBuf>,
    /// More flags, given as they are (e.g. `--tpm-lost-exit-after 3s`).
    pub extra_args: Vec<String>,
}

impl AgentOptions {
    fn command(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(binary("trustpool-agent")?);
        cmd.arg("--server")
            .arg(&self.server)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .arg("--tcti")
            .arg(&self.tcti)
            .arg("--hostname")
            .arg(&self.hostname)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("TRUSTPOOL_LOG", "info");
        if let Some(root) = &self.root {
            cmd.arg("--root").arg(root);
        }
        if let Some(interval) = &self.watch_interval {
            cmd.arg("--watch-interval").arg(interval);
        }
        if let Some(path) = &self.uefi_event_log {
            cmd.arg("--uefi-event-log").arg(path);
        }
        if let Some(path) = &self.txt_event_log {
            cmd.arg("--txt-event-log").arg(path);
        }
        cmd.args(&self.extra_args);
        Ok(cmd)
    }

    /// Runs `trustpool-agent --once` to completion.
    pub fn run_once(&self) -> anyhow::Result<Output> {
        let mut cmd = self.command()?;
        cmd.arg("--once");
        cmd.output().context("running trustpool-agent --once")
    }

    /// Starts the long-running agent; its log goes to `log`.
    pub fn spawn(&self, log: &Path) -> anyhow::Result<AgentProcess> {
        let file = File::options().create(true).append(true).open(log)?;
        let child = self
            .command()?
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting trustpool-agent")?;
        Ok(AgentProcess {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }
}

/// A running long-lived agent.
pub struct AgentProcess {
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl AgentProcess {
    /// Stops the agent with SIGTERM and reaps it: its exit status, or an
    /// error if it had to be killed 10 s after SIGTERM.
    pub fn stop(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.take() {
            Some(mut child) => terminate(&mut child),
            None => Ok(None),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Process id of the agent (0 once it was stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits up to `timeout` for the agent to exit by itself: its exit
    /// status (the process is reaped), or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            bail!("the agent was already stopped");
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `read` on a read-only connection to the SQLite file `db` (what a
/// server committed, read beside it) and returns what it returns.
pub fn read_sqlite<T>(db: &Path, read: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> T) -> T {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the database");
        let out = read(&mut conn).await;
        let _ = conn.close().await;
        out
    })
}
