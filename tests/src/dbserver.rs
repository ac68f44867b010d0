//! Real PostgreSQL and MariaDB servers for the tests: Debian's packages,
//! started by the tests themselves in a temporary directory, never the
//! system instance.
//!
//! Each [`DbServer`] has a temporary directory of its own with the data
//! directory, the unix socket directory and the server log; it listens on
//! 127.0.0.1 and a port from [`crate::ports`] (below 32768, never 5432 or
//! 3306), so several tests and test binaries can run servers at once. On
//! start it creates the database `trustpool` owned by the non-superuser
//! `trustpool` (with a random password): [`DbServer::url`] is what the code
//! under test gets, the superuser is only used by the harness itself, over
//! the socket.
//!
//! Nothing of the machine's configuration is read: MariaDB's programs run
//! with `--no-defaults` (no `/etc/mysql`), PostgreSQL's with the data
//! directory's own configuration, and the clients without the `PG*` and
//! `MYSQL_*` variables. As root, the servers run as the `postgres` and
//! `mysql` users (initdb refuses root).
//!
//! Durability: PostgreSQL runs with `fsync=off` and MariaDB with
//! `innodb_flush_log_at_trx_commit=2`: a committed transaction is in the
//! kernel before the commit returns, so it survives [`DbServer::kill`] (the
//! server's processes killed with SIGKILL), only not a crash of the machine.
//!
//! The servers are started from one thread of the harness that lives as long
//! as the test process, with `PR_SET_PDEATHSIG` = SIGKILL: when the test
//! process dies (a panic, an abort, SIGKILL), the kernel kills the server too,
//! even one that was kept in a `static` and so never dropped. Dropping a
//! [`DbServer`] kills its process group and removes its directory.

use anyhow::{bail, Context};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections (a crash recovery on a
/// busy 2-core CI machine included).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long [`DbServer::stop`] waits for a clean shutdown before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the server log shown in an error.
const LOG_TAIL_LINES: usize = 40;
/// The non-superuser that owns the databases (and the default database).
pub const USER: &str = "trustpool";
/// The default database.
pub const DATABASE: &str = "trustpool";
/// Longest unix socket path the kernel accepts (`sun_path` less the NUL).
const SUN_PATH_MAX: usize = 107;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL (Debian's `postgresql`, 15 on Debian 12).
    Postgres,
    /// MariaDB (Debian's `mariadb-server`, 10.11 on Debian 12).
    MariaDb,
}

impl Engine {
    /// The URL scheme sqlx knows it by.
    pub fn scheme(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        }
    }

    /// The system user that runs it when the tests run as root.
    fn system_user(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        }
    }

    /// The Debian package.
    fn package(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::MariaDb => "mariadb-server",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "PostgreSQL",
            Engine::MariaDb => "MariaDB",
        })
    }
}

/// MariaDB's programs.
const MARIADBD: &str = "/usr/sbin/mariadbd";
const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const MARIADB: &str = "/usr/bin/mariadb";

/// The newest `/usr/lib/postgresql/N/bin` that has initdb, postgres and psql.
fn postgres_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "postgres", "psql"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn engine_installed(engine: Engine) -> bool {
    match engine {
        Engine::Postgres => postgres_bindir().is_some(),
        Engine::MariaDb => [MARIADBD, MARIADB_INSTALL_DB, MARIADB]
            .iter()
            .all(|p| Path::new(p).is_file()),
    }
}

/// Installs Debian's `postgresql` and `mariadb-server` when their programs
/// are missing (`apt-get install -y --no-install-recommends`, as root; an
/// error saying what to install otherwise). Cheap when they are there; runs
/// once per process. The system instances the packages may start are never
/// used: the servers here have their own ports, sockets and configuration.
pub fn ensure_installed() -> anyhow::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let missing: Vec<&str> = [Engine::Postgres, Engine::MariaDb]
        .into_iter()
        .filter(|&e| !engine_installed(e))
        .map(Engine::package)
        .collect();
    if !missing.is_empty() {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "the database tests need Debian's {}: install them as root with \
                 `apt-get install -y --no-install-recommends {}` (or run scripts/setup / .ci/run)",
                missing.join(" and "),
                missing.join(" ")
            );
        }
        eprintln!("dbserver: installing {} with apt-get", missing.join(" "));
        apt_get(&["update", "-qq"])?;
        let mut install = vec![
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            // Another test binary may be installing at the same time.
            "-o",
            "DPkg::Lock::Timeout=600",
        ];
        install.extend(&missing);
        apt_get(&install)?;
        for engine in [Engine::Postgres, Engine::MariaDb] {
            if !engine_installed(engine) {
                bail!(
                    "{engine}'s programs are still missing after installing {}",
                    engine.package()
                );
            }
        }
    }
    *done = true;
    Ok(())
}

fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get")?;
    if !out.status.success() {
        bail!(
            "apt-get {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A request to the spawner thread.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, in a new
/// process group, with SIGKILL as its parent-death signal: the kernel kills
/// the server when the test process ends, however it ends. (The signal is
/// tied to the thread that forked, which is why a test's own thread, which
/// ends with the test, cannot spawn it.)
fn spawn_watched(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("dbserver-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the dbserver spawner thread");
        tx
    });
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the dbserver spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the dbserver spawner thread is gone"))?
}

/// Kills a server's whole process group (PostgreSQL's backends too) and
/// reaps the server.
fn kill_group(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// File of a server directory with the id of the test process that made it.
const OWNER_FILE: &str = "owner.pid";

/// Removes, once per process, the server directories of test processes
/// that are gone (killed before they could drop their servers; their
/// servers died with them, by the parent-death signal).
fn sweep_stale_dirs() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        for tmp in [std::env::temp_dir(), PathBuf::from("/tmp")] {
            let Ok(entries) = std::fs::read_dir(&tmp) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with("trustpool-pg-") || name.starts_with("trustpool-maria-")) {
                    continue;
                }
                let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE));
                let Ok(pid) = owner.as_deref().unwrap_or("").trim().parse::<u32>() else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

/// A name usable unquoted as a database name by both engines.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!("database name {name:?}: use 1-63 of [a-z0-9_], not starting with a digit");
    }
    Ok(())
}

/// A running (or stopped) PostgreSQL or MariaDB server of the tests.
pub struct DbServer {
    engine: Engine,
    /// The server process (its process group has the same id).
    child: Option<Child>,
    port: u16,
    password: String,
    /// User and group the server runs as (None: as the test process).
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    /// PostgreSQL's bin directory (unused for MariaDB).
    pg_bin: PathBuf,
    /// Commits reach the disk before they return (benchmarks), and
    /// PostgreSQL counts statements (pg_stat_statements).
    durable: bool,
    /// Dropped last: removes the data directory, socket and logs.
    dir: tempfile::TempDir,
}

impl DbServer {
    /// Starts a PostgreSQL server (see [`DbServer::start`]).
    pub fn postgres() -> anyhow::Result<DbServer> {
        Self::start(Engine::Postgres)
    }

    /// Starts a MariaDB server (see [`DbServer::start`]).
    pub fn mariadb() -> anyhow::Result<DbServer> {
        Self::start(Engine::MariaDb)
    }

    /// Installs the packages if needed ([`ensure_installed`]), creates a
    /// temporary directory with a new data directory, starts the server on
    /// 127.0.0.1 and a free port (another one if a port race is lost),
    /// waits until it accepts connections, and creates the database
    /// `trustpool` owned by the non-superuser `trustpool`.
    pub fn start(engine: Engine) -> anyhow::Result<DbServer> {
        Self::start_with(engine, false)
    }

    /// As [`DbServer::start`], with the engine's durable defaults (fsync on
    /// every commit) and PostgreSQL's statement counters: for benchmarks,
    /// where a commit must cost what it costs in production.
    pub fn start_durable(engine: Engine) -> anyhow::Result<DbServer> {
        Self::start_with(engine, true)
    }

    fn start_with(engine: Engine, durable: bool) -> anyhow::Result<DbServer> {
        ensure_installed()?;
        let mut server = Self::init(engine)?;
        server.durable = durable;
        let log = server.log_path();
        crate::ports::start_on_free_ports(&engine.to_string(), &log, 1, |ports| {
            server.port = ports[0];
            server.launch()
        })?;
        server.provision()?;
        Ok(server)
    }

    /// Creates the directories and the data directory.
    fn init(engine: Engine) -> anyhow::Result<DbServer> {
        let prefix = match engine {
            Engine::Postgres => "trustpool-pg-",
            Engine::MariaDb => "trustpool-maria-",
        };
        sweep_stale_dirs();
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let mut dir = builder
            .tempdir()
            .context("creating the temporary directory")?;
        // The socket path must fit in sun_path: ".../run/.s.PGSQL.NNNNN".
        if dir.path().join("run/.s.PGSQL.65535").as_os_str().len() > SUN_PATH_MAX {
            dir = builder
                .tempdir_in("/tmp")
                .context("creating the temporary directory in /tmp")?;
        }
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        // The server's user must reach its directories inside.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let owner = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(engine.system_user())?.with_context(|| {
                format!(
                    "no user {} (it comes with {})",
                    engine.system_user(),
                    engine.package()
                )
            })?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        for sub in ["data", "run", "tmp"] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", path.display()))?;
            }
        }
        let server = DbServer {
            engine,
            child: None,
            port: 0,
            password: hex::encode(rand::random::<[u8; 16]>()),
            owner,
            pg_bin: postgres_bindir().unwrap_or_default(),
            durable: false,
            dir,
        };
        let init_log = server.dir.path().join("init.log");
        let mut cmd = match engine {
            Engine::Postgres => {
                let mut cmd = server.command(server.pg_bin.join("initdb"), true);
                cmd.arg("-D")
                    .arg(server.data_dir())
                    .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
                    // The superuser over the socket (only the harness reaches
                    // it); a password over TCP, as in production.
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .args(["--no-sync", "--no-instructions"]);
                cmd
            }
            Engine::MariaDb => {
                let mut cmd = server.command(MARIADB_INSTALL_DB.into(), true);
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", server.data_dir().display()))
                    .arg("--auth-root-authentication-method=normal")
                    .args(["--skip-test-db", "--skip-name-resolve"]);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(File::create(&init_log)?)
            .stderr(File::options().append(true).open(&init_log)?);
        // Watched too: it does not outlive a test process killed meanwhile.
        let status = spawn_watched(cmd)
            .and_then(|mut child| child.wait())
            .with_context(|| format!("initialising the {engine} data directory"))?;
        if !status.success() {
            bail!(
                "initialising the {engine} data directory failed ({status}):\n{}",
                tail(&init_log, LOG_TAIL_LINES)
            );
        }
        Ok(server)
    }

    /// A command of the engine: as the engine's user when `as_owner` and
    /// running as root, in the temporary directory, without the `PG*` and
    /// `MYSQL_*` variables that would point it elsewhere.
    fn command(&self, program: PathBuf, as_owner: bool) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("PG") || key_text.starts_with("MYSQL") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C.UTF-8");
        if let (true, Some((uid, gid))) = (as_owner, self.owner) {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
                cmd.env("HOME", &user.dir).env("USER", &user.name);
            }
        }
        cmd
    }

    /// Starts the server process on `self.port` and waits until it is ready;
    /// kills it again on failure.
    fn launch(&mut self) -> anyhow::Result<()> {
        let log = self.log_path();
        let log_file = File::options().create(true).append(true).open(&log)?;
        writeln!(
            &log_file,
            "==== dbserver: starting {} on 127.0.0.1:{}",
            self.engine, self.port
        )?;
        let port = self.port.to_string();
        let mut cmd = match self.engine {
            Engine::Postgres => {
                let mut cmd = self.command(self.pg_bin.join("postgres"), true);
                cmd.arg("-D").arg(self.data_dir());
                for setting in [
                    "listen_addresses=127.0.0.1".to_string(),
                    format!("port={port}"),
                    format!("unix_socket_directories={}", self.socket_dir().display()),
                    if self.durable {
                        "shared_preload_libraries=pg_stat_statements".into()
                    } else {
                        "fsync=off".into()
                    },
                    "max_connections=200".into(),
                    "logging_collector=off".into(),
                    "log_destination=stderr".into(),
                ] {
                    cmd.arg("-c").arg(setting);
                }
                cmd
            }
            Engine::MariaDb => {
                let mut cmd = self.command(MARIADBD.into(), true);
                // --no-defaults must come first.
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data_dir().display()))
                    .arg(format!("--socket={}", self.socket().display()))
                    .arg(format!("--port={port}"))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!(
                        "--pid-file={}",
                        self.socket_dir().join("mariadbd.pid").display()
                    ))
                    .arg(format!(
                        "--tmpdir={}",
                        self.dir.path().join("tmp").display()
                    ))
                    .args([
                        "--skip-name-resolve",
                        if self.durable {
                            "--innodb-flush-log-at-trx-commit=1"
                        } else {
                            "--innodb-flush-log-at-trx-commit=2"
                        },
                        "--max-connections=200",
                        // Debian's 50-server.cnf, which --no-defaults skips.
                        "--character-set-server=utf8mb4",
                        "--collation-server=utf8mb4_general_ci",
                    ]);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = spawn_watched(cmd).with_context(|| format!("starting {}", self.engine))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            if let Some(mut child) = self.child.take() {
                kill_group(&mut child);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Polls until the superuser gets an answer over the socket and the TCP
    /// port accepts connections.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{} exited while starting ({status}); its log ({}):\n{}",
                        self.engine,
                        self.log_path().display(),
                        self.log_tail()
                    );
                }
            }
            match self.superuser_sql(None, "SELECT 1") {
                Ok(_) => {
                    if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                        return Ok(());
                    }
                    last_error = format!("127.0.0.1:{} refuses connections", self.port);
                }
                Err(e) => last_error = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} not ready after {:?} (last: {last_error}); its log ({}):\n{}",
            self.engine,
            READY_TIMEOUT,
            self.log_path().display(),
            self.log_tail()
        )
    }

    /// Creates the user `trustpool` and its database (first start only).
    fn provision(&self) -> anyhow::Result<()> {
        let password = &self.password;
        let sql = match self.engine {
            Engine::Postgres => format!(
                "CREATE ROLE {USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}';\n\
                 CREATE DATABASE {DATABASE} OWNER {USER};\n"
            ),
            Engine::MariaDb => format!(
                "DELETE FROM mysql.global_priv WHERE User = '';\n\
                 FLUSH PRIVILEGES;\n\
                 CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
                 CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{password}';\n\
                 CREATE DATABASE {DATABASE};\n\
                 GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1', '{USER}'@'localhost';\n"
            ),
        };
        self.superuser_sql(None, &sql)
            .with_context(|| format!("creating the {USER} user and database"))?;
        Ok(())
    }

    /// Runs SQL (one or more statements, each ending with `;`) as the
    /// superuser over the unix socket, in `database` (default: the engine's
    /// own), and returns what the client printed (tab-separated rows, no
    /// headers). For tests that must do what the `trustpool` user cannot,
    /// e.g. terminate its connections.
    pub fn superuser_sql(&self, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
        let mut cmd = match self.engine {
            Engine::Postgres => {
                let mut cmd = self.command(self.pg_bin.join("psql"), false);
                cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                    .arg("-h")
                    .arg(self.socket_dir())
                    .arg("-p")
                    .arg(self.port.to_string())
                    .args(["-U", "postgres", "-d", database.unwrap_or("postgres")]);
                cmd
            }
            Engine::MariaDb => {
                let mut cmd = self.command(MARIADB.into(), false);
                cmd.arg("--no-defaults")
                    .arg(format!("--socket={}", self.socket().display()))
                    .args(["-u", "root", "--batch", "--skip-column-names"])
                    .arg("--connect-timeout=5");
                if let Some(db) = database {
                    cmd.arg(db);
                }
                cmd
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {} client", self.engine))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} client failed ({}): {}",
                self.engine,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The TCP port on 127.0.0.1 (the same after [`DbServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of the `trustpool` user.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of the database `trustpool` as the non-superuser `trustpool`:
    /// `postgres://trustpool:PASS@127.0.0.1:PORT/trustpool` or
    /// `mysql://trustpool:PASS@127.0.0.1:PORT/trustpool`.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// URL of another database of this server as `trustpool`.
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "{}://{USER}:{}@127.0.0.1:{}/{database}",
            self.engine.scheme(),
            self.password,
            self.port
        )
    }

    /// Creates another empty database owned by (PostgreSQL) or granted
    /// wholly to (MariaDB) `trustpool`, and returns its URL: tests that
    /// share a server each take their own database. `name`: 1-63 of
    /// `[a-z0-9_]`, not yet used on this server (an error otherwise).
    /// Costs one client run (some 10-100 ms).
    pub fn fresh_database(&self, name: &str) -> anyhow::Result<String> {
        check_name(name)?;
        let sql = match self.engine {
            Engine::Postgres => format!("CREATE DATABASE {name} OWNER {USER};\n"),
            Engine::MariaDb => format!(
                "CREATE DATABASE {name};\n\
                 GRANT ALL ON {name}.* TO '{USER}'@'127.0.0.1', '{USER}'@'localhost';\n"
            ),
        };
        self.superuser_sql(None, &sql)
            .with_context(|| format!("creating the database {name}"))?;
        Ok(self.url_of(name))
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Process id of the server (PostgreSQL's postmaster), 0 when stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Clean, fast shutdown (PostgreSQL: SIGINT, "fast" mode: open
    /// transactions are rolled back; MariaDB: SIGTERM) and waits for it. An
    /// error if the server had to be killed because it did not exit within
    /// 30 s. Does nothing when it is not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signal = match self.engine {
            Engine::Postgres => nix::sys::signal::Signal::SIGINT,
            Engine::MariaDb => nix::sys::signal::Signal::SIGTERM,
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                // Nothing of the server may be left behind.
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&mut child);
        bail!(
            "{} still running {STOP_TIMEOUT:?} after {signal}: killed; its log:\n{}",
            self.engine,
            self.log_tail()
        )
    }

    /// Kills the server with SIGKILL, all its processes at once (a crash:
    /// no shutdown, the next start recovers), and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Starts the server again on the same data directory and port after
    /// [`DbServer::stop`] or [`DbServer::kill`], and waits until it accepts
    /// connections (after its crash recovery). An error if it still runs.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!(
                "{} is still running: stop() or kill() it first",
                self.engine
            );
        }
        self.child = None;
        let mut attempt = 1;
        loop {
            let offset = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            match self.launch() {
                Ok(()) => return Ok(()),
                // The port is ours (reserved in this process), but another
                // program may hold it for a moment; after a kill, the old
                // PostgreSQL's backends may still be exiting, holding its
                // shared memory: wait and try again.
                Err(_)
                    if attempt < 10 && {
                        let log = self.log_since(offset);
                        log.contains("Address already in use")
                            || log.contains("pre-existing shared memory block")
                    } =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The temporary directory of this server (data, socket, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn socket(&self) -> PathBuf {
        match self.engine {
            Engine::Postgres => self.socket_dir().join(format!(".s.PGSQL.{}", self.port)),
            Engine::MariaDb => self.socket_dir().join("mariadb.sock"),
        }
    }

    /// The server log (every start appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), LOG_TAIL_LINES)
    }

    fn log_since(&self, offset: u64) -> String {
        let text = std::fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }
}

impl fmt::Debug for DbServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbServer")
            .field("engine", &self.engine)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.kill();
        if self.port != 0 {
            crate::ports::release(self.port);
        }
        // `dir` is removed when the field drops, after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Executor, Row};

    fn runtime() -> tokio::runtime::Runtime {
        sqlx::any::install_default_drivers();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// Writes a row, kills the server, starts it again and reads the row
    /// back; checks the user is no superuser and the databases of
    /// [`DbServer::fresh_database`] are isolated.
    fn survives_a_kill_and_isolates_fresh_databases(engine: Engine) {
        let started = Instant::now();
        let mut server = DbServer::start(engine).expect("start");
        eprintln!("{engine} started in {:?}", started.elapsed());
        assert!(server.port() < 32768 && server.port() != 5432 && server.port() != 3306);
        let url = server.url();
        assert_eq!(
            url,
            format!(
                "{}://trustpool:{}@127.0.0.1:{}/trustpool",
                engine.scheme(),
                server.password(),
                server.port()
            )
        );
        let rt = runtime();
        rt.block_on(async {
            let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
            conn.execute("CREATE TABLE hosts (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
                .await
                .expect("create table");
            conn.execute("INSERT INTO hosts (id, name) VALUES (1, 'node-1')")
                .await
                .expect("insert");
            conn.close().await.expect("close");
        });
        let old_pid = server.pid();
        server.kill();
        assert!(!server.is_running());
        assert!(!pid_alive(old_pid), "the killed server still runs");
        let restarted = Instant::now();
        server.start_again().expect("start again");
        eprintln!("{engine} restarted after kill in {:?}", restarted.elapsed());
        assert_eq!(server.url(), url, "same port and password after a restart");
        let creating = Instant::now();
        let fresh_url = server
            .fresh_database("isolated_one")
            .expect("fresh database");
        eprintln!("{engine}: fresh_database in {:?}", creating.elapsed());
        assert!(
            server.fresh_database("isolated_one").is_err(),
            "a name is used once"
        );
        assert!(server.fresh_database("Bad-Name").is_err());
        rt.block_on(async {
            let mut conn = sqlx::AnyConnection::connect(&url).await.expect("reconnect");
            let row = sqlx::query("SELECT name FROM hosts WHERE id = 1")
                .fetch_one(&mut conn)
                .await
                .expect("the committed row survived the kill");
            assert_eq!(row.get::<String, _>(0), "node-1");
            // Not a superuser: cannot create databases of its own.
            assert!(conn.execute("CREATE DATABASE sneaky").await.is_err());
            conn.close().await.expect("close");

            let mut fresh = sqlx::AnyConnection::connect(&fresh_url)
                .await
                .expect("fresh");
            assert!(
                sqlx::query("SELECT name FROM hosts")
                    .fetch_all(&mut fresh)
                    .await
                    .is_err(),
                "the fresh database sees no table of the first one"
            );
            fresh
                .execute("CREATE TABLE hosts (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
                .await
                .expect("the owner creates tables in its fresh database");
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts")
                .fetch_one(&mut fresh)
                .await
                .expect("count");
            assert_eq!(count, 0);
            fresh.close().await.expect("close");
        });
        // A clean stop and start again keep the data too.
        server.stop().expect("stop");
        assert!(!server.is_running());
        server.start_again().expect("start again after stop");
        assert!(server.start_again().is_err(), "it runs already");
        let out = server
            .superuser_sql(Some("trustpool"), "SELECT name FROM hosts;")
            .expect("superuser query");
        assert_eq!(out.trim(), "node-1");
    }

    fn pid_alive(pid: u32) -> bool {
        // Reaped by the harness: a dead server has no /proc entry.
        pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn postgres_survives_a_kill_and_isolates_fresh_databases() {
        survives_a_kill_and_isolates_fresh_databases(Engine::Postgres);
    }

    #[test]
    fn mariadb_survives_a_kill_and_isolates_fresh_databases() {
        survives_a_kill_and_isolates_fresh_databases(Engine::MariaDb);
    }

    #[test]
    fn the_user_is_no_superuser_and_needs_its_password() {
        let pg = DbServer::postgres().expect("postgres");
        let out = pg
            .superuser_sql(
                None,
                "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = 'trustpool';",
            )
            .expect("query");
        assert_eq!(out.trim(), "f|f");
        let maria = DbServer::mariadb().expect("mariadb");
        let rt = runtime();
        rt.block_on(async {
            let mut conn = sqlx::AnyConnection::connect(&maria.url())
                .await
                .expect("connect");
            assert!(
                sqlx::query("SELECT * FROM mysql.user")
                    .fetch_all(&mut conn)
                    .await
                    .is_err(),
                "no access to the grant tables"
            );
            conn.close().await.expect("close");
            for server in [&pg, &maria] {
                let wrong = server.url().replace(server.password(), "wrong");
                assert!(
                    sqlx::AnyConnection::connect(&wrong).await.is_err(),
                    "{} accepted a wrong password",
                    server.engine()
                );
            }
        });
    }

    #[test]
    fn two_servers_run_at_once_and_drop_leaves_nothing_behind() {
        let a = DbServer::postgres().expect("first");
        let b = DbServer::postgres().expect("second");
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
        let (pid, dir) = (a.pid(), a.dir().to_path_buf());
        drop(a);
        assert!(!pid_alive(pid), "the dropped server still runs");
        assert!(
            !dir.exists(),
            "the dropped server's directory is still there"
        );
        b.fresh_database("still_up")
            .expect("the other server is unaffected");
    }

    #[test]
    fn a_server_that_cannot_start_says_why_with_its_log() {
        let mut server = DbServer::postgres().expect("postgres");
        server.kill();
        // A broken configuration: the restart fails with the server's words.
        std::fs::write(
            server.data_dir().join("postgresql.auto.conf"),
            "shared_buffers = 'lots'\n",
        )
        .expect("write");
        let err = server.start_again().expect_err("a bad setting");
        let text = format!("{err:#}");
        assert!(text.contains("exited while starting"), "{text}");
        assert!(text.contains("shared_buffers"), "{text}");
    }
}
