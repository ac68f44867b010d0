//! Faults of the database under a running server, made for real by the test:
//! the SQLite files made immutable (`chattr +i`) on an ext4 image mounted
//! on a loop device, a full disk (a small tmpfs filled to the last byte),
//! the database deleted under the server, a restart without it, `--init-db`
//! and a restore from `trustpool-server backup`.
//!
//! Each fault must make the server fail closed (feed, host detail and
//! PollHosts 503, `/readyz` false) and nothing may be published that the
//! database does not hold; when the fault is cleared, readiness and the full
//! pool come back by themselves, without a restart.
//!
//! These tests need root (loop devices, mount, chattr). Without it they fail
//! with a message that says so: they are never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::procs::{binary, read_sqlite, wait_until, AgentProcess, ServerProcess};

const OAT_PATH: &str = "/OpenAttestationWebServices/V1.0/PollHosts";
/// The x-auth-blob Nova sends (PollHosts is served only with one configured).
const OAT_BLOB: &str = "fault-test-blob";

fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fault_* tests need root (loop devices, mount, chattr, tmpfs); CI runs them as root"
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small ext4 file system in an image file, mounted on a loop device;
/// unmounted (after clearing any immutable flag) when dropped.
struct Ext4Mount {
    image: PathBuf,
    dir: PathBuf,
}

impl Ext4Mount {
    fn new(base: &Path) -> Ext4Mount {
        let image = base.join("ext4.img");
        let dir = base.join("ext4");
        std::fs::create_dir_all(&dir).expect("mount point");
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(64 << 20).expect("size the image");
        drop(f);
        run("mkfs.ext4", &["-q", "-F", &image.display().to_string()]);
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.display().to_string(),
                &dir.display().to_string(),
            ],
        );
        Ext4Mount { image, dir }
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = Command::new("chattr").arg("-i").arg(e.path()).output();
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A tmpfs of `size` bytes; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(base: &Path, size: u64) -> Tmpfs {
        let dir = base.join("tmpfs");
        std::fs::create_dir_all(&dir).expect("mount point");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &dir.display().to_string(),
            ],
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// The database files of `db` (the database, its WAL and shared memory).
fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

struct Fleet {
    _dir: tempfile::TempDir,
    lab: Lab,
    hosts: Vec<LabHost>,
    server: ServerProcess,
    agents: Vec<AgentProcess>,
}

const NAMES: &[&str] = &["host-a", "host-b", "host-c"];

/// A lab with three golden hosts reporting every second, the database at
/// `db` (default: in the lab), every agent running and the pool complete.
fn fleet(db: Option<PathBuf>) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let hosts: Vec<LabHost> = NAMES
        .iter()
        .map(|n| lab.add_host(n, Launch::Golden).expect("host"))
        .collect();
    let mut options = lab.server_options("1s", "60s");
    options.db = db;
    options.admin_socket = Some(dir.path().join("admin.sock"));
    options.publication.extra_args = vec![
        "--oat-auth-blob-sha256".into(),
        trustpool_tests::procs::sha256_hex(OAT_BLOB),
    ];
    let server = ServerProcess::start(options).expect("server");
    let agents = hosts
        .iter()
        .map(|h| {
            lab.agent_options(h, &server)
                .spawn(&lab.dir.join(format!("agent-{}.log", h.name)))
                .expect("agent")
        })
        .collect();
    let fleet = Fleet {
        _dir: dir,
        lab,
        hosts,
        server,
        agents,
    };
    assert!(
        wait_until(Duration::from_secs(60), || fleet.complete()),
        "pool not complete: {:?}\n{}",
        fleet.members(),
        fleet.server.log_text()
    );
    fleet
}

impl Fleet {
    fn members(&self) -> Vec<String> {
        let mut m = self.server.pool_members("default").unwrap_or_default();
        m.sort();
        m
    }

    fn complete(&self) -> bool {
        self.status("/v1/pools/default/hosts") == 200 && self.members() == NAMES
    }

    fn status(&self, path: &str) -> u16 {
        self.server.get(path).map(|r| r.status).unwrap_or(0)
    }

    fn ready(&self) -> bool {
        self.status("/readyz") == 200
    }

    fn poll_hosts(&self) -> u16 {
        let body = br#"{"count": 3, "hosts": ["host-a", "host-b", "host-c"]}"#;
        self.server
            .https(
                &self.server.tls,
                "POST",
                OAT_PATH,
                &[
                    ("Content-Type", "application/json"),
                    ("x-auth-blob", OAT_BLOB),
                ],
                Some(body),
            )
            .map(|r| r.status)
            .unwrap_or(0)
    }

    fn metrics(&self) -> String {
        self.server
            .get("/metrics")
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// Asserts that the server fails closed now: every consumer answer is 503.
    fn assert_fails_closed(&self, during: &str) {
        let readyz = self
            .server
            .get("/readyz")
            .unwrap_or_else(|e| panic!("{during}: /readyz: {e:#}\n{}", self.server.log_text()));
        assert_eq!(readyz.status, 503, "{during}: /readyz");
        assert_eq!(
            readyz.json().expect("json")["ready"],
            false,
            "{during}: /readyz"
        );
        assert_eq!(
            self.status("/v1/pools/default/hosts"),
            503,
            "{during}: the feed"
        );
        assert_eq!(self.status("/v1/pools"), 503, "{during}: the pool list");
        assert_eq!(
            self.status("/v1/hosts/host-a"),
            503,
            "{during}: host detail"
        );
        assert_eq!(self.poll_hosts(), 503, "{during}: PollHosts");
    }

    /// Polls the feed for `time`: it never answers anything but 503.
    fn assert_stays_closed(&self, time: Duration, during: &str) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            let status = self.status("/v1/pools/default/hosts");
            assert_eq!(status, 503, "{during}: the feed answered {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// After a fault is cleared: ready and the full pool again, without a
    /// restart; every published member has a trusted verdict in the database.
    fn assert_recovers(&self, what: &str) {
        let cleared = Instant::now();
        assert!(
            wait_until(Duration::from_secs(15), || self.ready() && self.complete()),
            "{what}: not back 15 s after the fault was cleared: ready={} members={:?}\n{}",
            self.ready(),
            self.members(),
            self.server.log_text()
        );
        println!(
            "{what}: ready with the full pool {:?} after clearing",
            cleared.elapsed()
        );
        let committed = trusted_in_db(&self.server.options.db_path());
        for m in self.members() {
            assert!(
                committed.contains(&m),
                "{what}: {m} is published but the database holds no trusted verdict for it ({committed:?})"
            );
        }
        assert!(
            !self.server.log_text().contains("database is locked"),
            "{what}: a connection kept the write lock:\n{}",
            self.server.log_text()
        );
    }
}

/// The hosts with a trusted, unexpired verdict in `default`, read from the
/// SQLite file itself (committed data only).
fn trusted_in_db(db: &Path) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    read_sqlite(db, async |conn| {
        sqlx::query_scalar(
            "SELECT hostname FROM verdicts WHERE pool = 'default' AND trusted = 1 AND valid_until_ms > ?",
        )
        .bind(now)
        .fetch_all(conn)
        .await
        .expect("read verdicts")
    })
}

/// Truncates the WAL (a checkpoint from another connection) so that the
/// server's next writes need new blocks on the disk.
fn truncate_wal(db: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the database");
        for _ in 0..50 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await
                .expect("checkpoint");
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = conn.close().await;
    });
}

/// Fills the file system of `dir` to the last byte; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    loop {
        match f.write(&block[..512]) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = f.sync_all();
    path
}

#[test]
fn fault_read_only_database_files_fail_closed_and_recover_without_restart() {
    need_root();
    let base = tempfile::tempdir().expect("tempdir");
    let ext4 = Ext4Mount::new(base.path());
    let db = ext4.dir.join("trustpool.db");
    let fleet = fleet(Some(db.clone()));
    assert!(fleet.ready());

    // The database and its WAL become immutable (the files that hold data;
    // an immutable `-shm` makes the kernel kill the process with SIGBUS on
    // its next write to the mapping, see docs/database.md).
    for f in &db_files(&db)[..2] {
        run("chattr", &["+i", &f.display().to_string()]);
    }
    let made = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || !fleet.ready()),
        "/readyz still ready 15 s after the database became read-only:\n{}",
        fleet.server.log_text()
    );
    println!("read-only -> not ready after {:?}", made.elapsed());
    fleet.assert_fails_closed("read-only database");
    fleet.assert_stays_closed(Duration::from_secs(4), "read-only database");
    let metrics = fleet.metrics();
    assert!(metrics.contains("trustpool_store_writable 0"), "{metrics}");
    assert!(metrics.contains("trustpool_ready 0"), "{metrics}");

    for f in &db_files(&db)[..2] {
        run("chattr", &["-i", &f.display().to_string()]);
    }
    fleet.assert_recovers("read-only database cleared");
    assert!(fleet.metrics().contains("trustpool_store_writable 1"));
    drop(fleet);
    drop(ext4);
}

#[test]
fn fault_full_disk_fails_closed_and_recovers_without_restart() {
    need_root();
    let base = tempfile::tempdir().expect("tempdir");
    let tmpfs = Tmpfs::new(base.path(), 8 << 20);
    let db = tmpfs.dir.join("trustpool.db");
    let fleet = fleet(Some(db.clone()));

    // The WAL starts over empty, then the disk fills up: the next write
    // that needs a new block fails with ENOSPC.
    truncate_wal(&db);
    let filler = fill(&tmpfs.dir);
    let made = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || !fleet.ready()),
        "/readyz still ready 20 s after the disk filled up:\n{}",
        fleet.server.log_text()
    );
    println!("disk full -> not ready after {:?}", made.elapsed());
    fleet.assert_fails_closed("full disk");
    fleet.assert_stays_closed(Duration::from_secs(4), "full disk");

    std::fs::remove_file(&filler).expect("free the disk");
    fleet.assert_recovers("full disk cleared");
    // The history written during the fault was kept and stored afterwards:
    // nothing was dropped.
    assert!(
        fleet.metrics().contains("trustpool_history_lost_total 0"),
        "{}",
        fleet.metrics()
    );
    drop(fleet);
    drop(tmpfs);
}

#[test]
fn fault_database_deleted_under_a_running_server_fails_closed_and_is_never_recreated() {
    need_root();
    let mut fleet = fleet(None);
    let db = fleet.server.options.db_path();
    // What an operator's `rm trustpool.db*` removes.
    for f in db_files(&db) {
        let _ = std::fs::remove_file(&f);
    }
    let removed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !fleet.ready()),
        "still ready 5 s after the database was deleted:\n{}",
        fleet.server.log_text()
    );
    println!(
        "database deleted -> not ready after {:?}",
        removed.elapsed()
    );
    fleet.assert_fails_closed("database deleted");
    fleet.assert_stays_closed(Duration::from_secs(3), "database deleted");
    assert!(fleet.metrics().contains("trustpool_store_identity_ok 0"));
    assert!(
        fleet
            .server
            .log_text()
            .contains("THE DATABASE WAS REMOVED OR REPLACED"),
        "{}",
        fleet.server.log_text()
    );
    assert!(!db.exists(), "the running server never creates it again");

    // A restart refuses to create a fresh database in its place.
    fleet.agents.iter_mut().for_each(|a| {
        let _ = a.stop();
    });
    fleet.server.stop().expect("stop");
    let options = fleet.server.options.clone();
    let err = match ServerProcess::start(options.clone()) {
        Ok(_) => panic!("the server started without its database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("refusing to create") && err.contains("--init-db"),
        "{err}"
    );
    assert!(!db.exists(), "nothing was created");

    // --init-db: deliberately a new, empty store; the hosts enrol again.
    let mut fresh = options;
    fresh.publication.extra_args.push("--init-db".into());
    let server = ServerProcess::start(fresh).expect("--init-db starts");
    assert!(db.exists());
    assert_eq!(server.get("/readyz").expect("readyz").status, 200);
    let out = fleet
        .lab
        .agent_options(&fleet.hosts[0], &server)
        .run_once()
        .expect("agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.log_text().contains("host enrolled"),
        "{}",
        server.log_text()
    );
}

/// `trustpool` as root over the admin socket.
fn admin(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("trustpool").expect("trustpool binary"))
        .env_remove("TRUSTPOOL_SERVER")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("trustpool runs")
}

#[test]
fn fault_a_revoked_host_stays_revoked_across_backup_and_restore() {
    need_root();
    let mut fleet = fleet(None);
    let socket = fleet.server.options.admin_socket.clone().expect("socket");
    let revoke = admin(
        &socket,
        &["hosts", "revoke", "host-a", "--comment", "stolen disk"],
    );
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    assert!(wait_until(Duration::from_secs(5), || fleet.members()
        == ["host-b", "host-c"]));

    // Online backup while the server runs.
    let db = fleet.server.options.db_path();
    let backup = fleet.lab.dir.join("backup.db");
    let out = Command::new(binary("trustpool-server").expect("binary"))
        .args(["backup", "--db"])
        .arg(&db)
        .arg("--to")
        .arg(&backup)
        .output()
        .expect("backup runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("store "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The database is lost; the operator restores it as docs/database.md says:
    // stop, copy the backup in place, start.
    fleet.server.stop().expect("stop");
    for f in db_files(&db) {
        let _ = std::fs::remove_file(&f);
    }
    std::fs::copy(&backup, &db).expect("restore");
    let options = fleet.server.options.clone();
    let server = ServerProcess::start_on(options, fleet.server.grpc_port, fleet.server.http_port)
        .expect("the restored database starts");
    fleet.server = server;
    // Every agent reconnects by itself; host-a stays out, the others return.
    assert!(
        wait_until(Duration::from_secs(30), || fleet.members()
            == ["host-b", "host-c"]),
        "{:?}\n{}",
        fleet.members(),
        fleet.server.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fleet.members(),
        ["host-b", "host-c"],
        "host-a stays revoked"
    );
    let detail = fleet.server.get("/v1/hosts/host-a").expect("detail");
    assert!(detail.body.contains("revoked"), "{}", detail.body);
}
