//! Three replicas on one database server (PostgreSQL, MariaDB) under the
//! load generator: 240 simulated hosts, each given every replica's URL.
//! `kill -9` of the replica holding the most streams: its hosts reconnect
//! to the others within a report interval or two, no trusted host leaves
//! any surviving feed (read every 0.2 s), no host enrols again (no
//! enrolment was lost), the maintenance lease is held by a survivor. Then
//! the database server is killed under the same load: every surviving
//! replica answers 503 while it is down, and once it is started again on
//! the same data every replica serves the whole fleet by itself, with no
//! host enrolling again (nothing committed was lost). Once the hosts stop,
//! every host leaves every feed within the down time (no host is trusted
//! on evidence older than that).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trustpool_tests::dbserver::{DbServer, Engine};
use trustpool_tests::procs::{
    binary, wait_until, PublicationOptions, ServerOptions, ServerProcess,
};

const HOSTS: usize = 240;
const INTERVAL: &str = "2s";
const DOWN_TIME: &str = "12s";

fn metric(server: &ServerProcess, name: &str) -> Option<f64> {
    let text = server.get("/metrics").ok()?.body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn members(server: &ServerProcess) -> BTreeSet<String> {
    server
        .pool_members("default")
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn replicas_under_load(engine: Engine) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("pki");
    let out = Command::new(binary("trustpool-loadgen").expect("binary"))
        .args(["pki", "--dir"])
        .arg(&pki)
        .args(["--hosts", &HOSTS.to_string()])
        .args(["--report-interval", INTERVAL, "--down-time", DOWN_TIME])
        .output()
        .expect("run pki");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db = DbServer::start(engine).expect("database server");
    let mut replicas: Vec<ServerProcess> = (0..3)
        .map(|i| {
            ServerProcess::start(ServerOptions {
                dir: tmp.path().join(format!("replica-{i}")),
                ca: pki.join("ca.pem"),
                cert: pki.join("server.pem"),
                key: pki.join("server.key"),
                policy_dir: pki.join("policy"),
                ek_roots: pki.join("ek-roots"),
                report_interval: INTERVAL.into(),
                down_time: DOWN_TIME.into(),
                publication: PublicationOptions {
                    extra_args: vec![
                        "--replica-name".into(),
                        format!("replica-{i}"),
                        "--lease-period".into(),
                        "2s".into(),
                    ],
                    ..Default::default()
                },
                operators: vec![],
                operator_ca: None,
                crls: vec![],
                admin_socket: None,
                db: None,
                db_url: Some(db.url()),
            })
            .expect("replica")
        })
        .collect();
    let logs = |replicas: &[ServerProcess]| -> String {
        replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("--- replica {i}\n{}\n", tail(&r.log_text())))
            .collect()
    };
    let mut run = Command::new(binary("trustpool-loadgen").expect("binary"));
    run.args(["run", "--dir"]).arg(&pki);
    for r in &replicas {
        run.args(["--server", &r.url()]);
    }
    let loadgen = run
        .args(["--hosts", &HOSTS.to_string()])
        .args([
            "--ramp",
            "5s",
            "--duration",
            "75s",
            "--interval-hint",
            INTERVAL,
        ])
        .env("TRUSTPOOL_LOADGEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load generator");
    let all = [0usize, 1, 2];
    assert!(
        wait_until(Duration::from_secs(60), || all.iter().all(|i| members(
            &replicas[*i]
        )
        .len()
            == HOSTS)),
        "every replica's feed fills\n{}",
        logs(&replicas)
    );
    let full = members(&replicas[0]);
    let streams: Vec<f64> = all
        .iter()
        .map(|i| metric(&replicas[*i], "trustpool_agent_streams_open").unwrap_or(0.0))
        .collect();
    assert_eq!(streams.iter().sum::<f64>(), HOSTS as f64, "{streams:?}");
    assert!(
        streams.iter().all(|s| *s > 0.0),
        "the hosts spread: {streams:?}"
    );
    let victim = (0..3)
        .max_by(|a, b| streams[*a].total_cmp(&streams[*b]))
        .expect("a replica");
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != victim).collect();
    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &replicas[victim].pid().to_string()])
        .status()
        .expect("kill")
        .success());
    let mut moved_after = None;
    while killed.elapsed() < Duration::from_secs(12) {
        for i in &survivors {
            let now = members(&replicas[*i]);
            let lost: Vec<&String> = full.difference(&now).collect();
            assert!(
                lost.is_empty(),
                "replica {i} dropped trusted hosts {:?} after the kill: {lost:?}\n{}",
                killed.elapsed(),
                logs(&replicas)
            );
        }
        let open: f64 = survivors
            .iter()
            .map(|i| metric(&replicas[*i], "trustpool_agent_streams_open").unwrap_or(0.0))
            .sum();
        if moved_after.is_none() && open == HOSTS as f64 {
            moved_after = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let moved_after = moved_after.unwrap_or_else(|| {
        panic!(
            "the victim's hosts did not all reconnect\n{}",
            logs(&replicas)
        )
    });
    eprintln!(
        "{engine:?}: {} streams of replica {victim} moved to the others in {moved_after:?}",
        streams[victim]
    );
    assert_eq!(
        survivors
            .iter()
            .filter(|i| metric(&replicas[**i], "trustpool_lease_held") == Some(1.0))
            .count(),
        1,
        "one survivor holds the lease"
    );

    // The database killed under load: every survivor fails closed...
    db.kill();
    let db_killed = Instant::now();
    let unavailable = |replicas: &[ServerProcess]| {
        survivors.iter().all(|i| {
            replicas[*i]
                .get("/v1/pools/default/hosts")
                .map(|r| r.status)
                .unwrap_or(0)
                == 503
        })
    };
    assert!(
        wait_until(Duration::from_secs(15), || unavailable(&replicas)),
        "every survivor fails closed once the database is gone\n{}",
        logs(&replicas)
    );
    eprintln!(
        "{engine:?}: both survivors answered 503 {:?} after the database died",
        db_killed.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            unavailable(&replicas),
            "a replica vouched while the database was down\n{}",
            logs(&replicas)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ...and recovers by itself, the whole fleet, once it is back.
    db.start_again().expect("database restart");
    let db_back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || survivors
            .iter()
            .all(|i| members(&replicas[*i]).len() == HOSTS)),
        "every survivor serves the whole fleet again by itself\n{}",
        logs(&replicas)
    );
    eprintln!(
        "{engine:?}: both survivors served all {HOSTS} hosts {:?} after the database came back",
        db_back.elapsed()
    );
    let out = loadgen.wait_with_output().expect("load generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("summary");
    let n = HOSTS as u64;
    assert_eq!(summary["hosts_enrolled"].as_u64(), Some(n), "{summary:#}");
    assert_eq!(
        summary["new_enrolments"].as_u64(),
        Some(n),
        "a host enrolled again after moving or after the database restart: an enrolment was lost\n{summary:#}"
    );
    assert_eq!(
        summary["hosts_last_trusted"].as_u64(),
        Some(n),
        "{summary:#}"
    );
    assert!(
        summary["reconnects"].as_u64().unwrap_or(0) >= streams[victim] as u64,
        "{summary:#}"
    );
    // The hosts are gone: within the down time they leave every feed.
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || survivors
            .iter()
            .all(|i| members(&replicas[*i]).is_empty())),
        "{}",
        logs(&replicas)
    );
    assert!(
        stopped.elapsed() <= Duration::from_secs(12 + 2),
        "hosts stayed trusted {:?} after their last report",
        stopped.elapsed()
    );
    for r in &mut replicas {
        let _ = r.stop();
    }
}

#[test]
fn three_replicas_on_postgresql_keep_240_hosts_through_a_kill_and_a_database_restart() {
    replicas_under_load(Engine::Postgres);
}

#[test]
fn three_replicas_on_mariadb_keep_240_hosts_through_a_kill_and_a_database_restart() {
    replicas_under_load(Engine::MariaDb);
}
