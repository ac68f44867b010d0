//! The server on a database server (PostgreSQL, MariaDB), each started by
//! the test in a temporary directory (`trustpool_tests::dbserver`), with
//! swtpm agents: the pool fills; the server restarted keeps every enrolment;
//! the database killed under load makes the server fail closed (503, no new
//! trusted verdict) and, once the database is back on the same port, the
//! server reconnects by itself and the full pool returns without a restart,
//! every published member backed by a committed verdict. A store made on
//! SQLite and copied with `trustpool-server migrate` serves the same hosts
//! from PostgreSQL and MariaDB.

use std::time::{Duration, Instant};
use trustpool_tests::dbserver::{DbServer, Engine};
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::procs::{wait_until, AgentProcess, ServerProcess};

const NAMES: &[&str] = &["host-a", "host-b", "host-c"];

struct Fleet {
    _dir: tempfile::TempDir,
    lab: Lab,
    hosts: Vec<LabHost>,
    server: ServerProcess,
    agents: Vec<AgentProcess>,
}

impl Fleet {
    fn start(db: &DbServer) -> Fleet {
        Fleet::start_with(Some(db.url()))
    }

    /// A fleet on `db_url`, or on an SQLite file in the lab with `None`.
    fn start_with(db_url: Option<String>) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab::create(dir.path()).expect("lab");
        lab.write_policy("default", &golden_policy())
            .expect("policy");
        let hosts: Vec<LabHost> = NAMES
            .iter()
            .map(|n| lab.add_host(n, Launch::Golden).expect("host"))
            .collect();
        let mut options = lab.server_options("1s", "60s");
        options.db_url = db_url;
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
        fleet.wait_complete("first start");
        fleet
    }

    fn members(&self) -> Vec<String> {
        let mut m = self.server.pool_members("default").unwrap_or_default();
        m.sort();
        m
    }

    fn status(&self, path: &str) -> u16 {
        self.server.get(path).map(|r| r.status).unwrap_or(0)
    }

    fn complete(&self) -> bool {
        self.status("/v1/pools/default/hosts") == 200 && self.members() == NAMES
    }

    fn wait_complete(&self, what: &str) {
        assert!(
            wait_until(Duration::from_secs(60), || self.status("/readyz") == 200
                && self.complete()),
            "{what}: pool not complete: {:?}\n{}",
            self.members(),
            self.server.log_text()
        );
    }
}

/// The store id and the number of enrolments in the database.
fn store_of(url: &str) -> (String, i64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .expect("connect to the database");
        let row = sqlx::query(
            "SELECT (SELECT store_id FROM store_identity WHERE id = 1) AS id, \
             (SELECT COUNT(*) FROM enrolments) AS n",
        )
        .fetch_one(&mut conn)
        .await
        .expect("read the store");
        let id = row
            .try_get::<String, _>("id")
            .or_else(|_| {
                row.try_get::<Vec<u8>, _>("id")
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .expect("store id");
        let n: i64 = row.try_get("n").expect("count");
        let _ = conn.close().await;
        (id, n)
    })
}

/// The hosts with a trusted, unexpired verdict in `default`, read from the
/// database server itself (committed data only).
fn trusted_in_db(url: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .expect("connect to the database");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let sql = if url.starts_with("postgres") {
            "SELECT hostname FROM verdicts WHERE pool = 'default' AND trusted = 1 AND valid_until_ms > $1"
        } else {
            "SELECT hostname FROM verdicts WHERE pool = 'default' AND trusted = 1 AND valid_until_ms > ?"
        };
        let rows = sqlx::query(sql)
            .bind(now)
            .fetch_all(&mut conn)
            .await
            .expect("read verdicts");
        let _ = conn.close().await;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("hostname")
                    .or_else(|_| {
                        r.try_get::<Vec<u8>, _>("hostname")
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                    })
                    .expect("hostname")
            })
            .collect()
    })
}

fn the_server_survives_its_database_server(engine: Engine) {
    let mut db = DbServer::start(engine).expect("database server");
    let mut fleet = Fleet::start(&db);
    let _ = &fleet.lab;

    // Durable on the database server: a restarted server opens the same
    // store and knows every host (no enrolment is repeated).
    let (id, enrolled) = store_of(&db.url());
    assert_eq!(enrolled, NAMES.len() as i64);
    fleet.server.restart().expect("server restart");
    fleet.wait_complete("after a server restart");
    assert_eq!(store_of(&db.url()), (id, NAMES.len() as i64));

    // The database dies under load: fail closed.
    db.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || fleet.status("/readyz") == 503
            && fleet.status("/v1/pools/default/hosts") == 503),
        "{engine}: still serving {:?} after the database died\n{}",
        killed.elapsed(),
        fleet.server.log_text()
    );
    println!(
        "{engine}: failed closed {:?} after the database died",
        killed.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let status = fleet.status("/v1/pools/default/hosts");
        assert_eq!(
            status, 503,
            "{engine}: the feed answered {status} while the database was down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Back on the same port: the server reconnects by itself.
    db.start_again().expect("database restart");
    let back = Instant::now();
    fleet.wait_complete("after the database came back");
    println!(
        "{engine}: full pool {:?} after the database came back",
        back.elapsed()
    );
    let committed = trusted_in_db(&db.url());
    for m in fleet.members() {
        assert!(
            committed.contains(&m),
            "{engine}: {m} is published but the database holds no trusted verdict for it ({committed:?})"
        );
    }
    assert_eq!(fleet.hosts.len(), NAMES.len());
}

#[test]
fn on_postgresql_the_server_fails_closed_without_its_database_and_recovers_by_itself() {
    the_server_survives_its_database_server(Engine::Postgres);
}

#[test]
fn on_mariadb_the_server_fails_closed_without_its_database_and_recovers_by_itself() {
    the_server_survives_its_database_server(Engine::MariaDb);
}

/// `trustpool-server migrate --from FROM --to TO`.
fn migrate(from: &str, to: &str) -> std::process::Output {
    std::process::Command::new(trustpool_tests::procs::binary("trustpool-server").expect("binary"))
        .args(["migrate", "--from", from, "--to", to])
        .output()
        .expect("run migrate")
}

/// The lab's SQLite store, copied with `trustpool-server migrate` into an
/// empty database, serves the same fleet: same store id, every host trusted
/// again without a new enrolment or an approval.
fn a_store_migrated_from_sqlite_keeps_its_hosts(engine: Engine) {
    let db = DbServer::start(engine).expect("database server");
    let mut fleet = Fleet::start_with(None);
    let sqlite = fleet.server.options.db_path();
    fleet.server.stop().expect("stop the server");
    let out = migrate(&format!("sqlite://{}", sqlite.display()), &db.url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{engine}: migrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enrolments: 3 rows"), "{stdout}");
    assert!(
        !stdout.contains(db.password()),
        "the password is never printed: {stdout}"
    );
    // Again into the same database: refused, nothing changed.
    let again = migrate(&sqlite.display().to_string(), &db.url());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let mut options = fleet.server.options.clone();
    options.db_url = Some(db.url());
    fleet.server = ServerProcess::start(options).expect("server on the new database");
    for (agent, host) in fleet.agents.iter_mut().zip(&fleet.hosts) {
        let _ = agent.stop();
        *agent = fleet
            .lab
            .agent_options(host, &fleet.server)
            .spawn(
                &fleet
                    .lab
                    .dir
                    .join(format!("agent-{}-migrated.log", host.name)),
            )
            .expect("agent");
    }
    fleet.wait_complete("on the migrated store");
    let (_, enrolled) = store_of(&db.url());
    assert_eq!(enrolled, NAMES.len() as i64, "no host enrolled again");
    let sqlite_id = std::fs::read_to_string(sqlite.with_file_name(".trustpool.db.store-id"))
        .expect("the SQLite store's id file");
    assert_eq!(
        store_of(&db.url()).0,
        sqlite_id.trim(),
        "the store id came along"
    );
}

#[test]
fn an_sqlite_store_migrated_into_postgresql_keeps_its_hosts() {
    a_store_migrated_from_sqlite_keeps_its_hosts(Engine::Postgres);
}

#[test]
fn an_sqlite_store_migrated_into_mariadb_keeps_its_hosts() {
    a_store_migrated_from_sqlite_keeps_its_hosts(Engine::MariaDb);
}
