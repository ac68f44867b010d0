//! Several `trustpool-server` replicas on one database server (PostgreSQL
//! and MariaDB, started by the test), with swtpm agents that know every
//! replica: each replica's feed shows the hosts the others attested; one
//! replica holds the maintenance lease; `kill -9` of the replica holding
//! the most streams moves its agents to the others without a trusted host
//! leaving any surviving feed, and the lease moves within its period; a
//! replica whose policy differs from the majority's vouches for nobody and
//! says so.

use std::time::{Duration, Instant};
use trustpool_tests::dbserver::{DbServer, Engine};
use trustpool_tests::lab::{golden_policy, policy_with_checks, Lab, LabHost, Launch};
use trustpool_tests::procs::{binary, wait_until, AgentProcess, ServerProcess};

const NAMES: &[&str] = &["host-a", "host-b", "host-c"];
const LEASE_PERIOD: &str = "2s";

struct Cluster {
    _dir: tempfile::TempDir,
    lab: Lab,
    db: DbServer,
    replicas: Vec<ServerProcess>,
    _hosts: Vec<LabHost>,
    agents: Vec<AgentProcess>,
}

/// The value of an unlabelled metric of `server`.
fn metric(server: &ServerProcess, name: &str) -> Option<f64> {
    let text = server.get("/metrics").ok()?.body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `trustpool` over replica `server`'s admin socket.
fn admin(server: &ServerProcess, args: &[&str]) {
    let socket = server.options.admin_socket.clone().expect("admin socket");
    let out = std::process::Command::new(binary("trustpool").expect("trustpool binary"))
        .env_remove("TRUSTPOOL_SERVER")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("trustpool runs");
    assert!(
        out.status.success(),
        "trustpool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn members(server: &ServerProcess) -> Vec<String> {
    let mut m = server.pool_members("default").unwrap_or_default();
    m.sort();
    m
}

fn ready(server: &ServerProcess) -> bool {
    server.get("/readyz").is_ok_and(|r| r.status == 200)
}

impl Cluster {
    /// `policies[i]` is replica i's policy for pool `default`.
    fn start(engine: Engine, policies: &[String]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab::create(dir.path()).expect("lab");
        let db = DbServer::start(engine).expect("database server");
        let replicas: Vec<ServerProcess> = policies
            .iter()
            .enumerate()
            .map(|(i, policy)| {
                let mut options = lab.server_options("1s", "20s");
                options.dir = lab.dir.join(format!("replica-{i}"));
                options.policy_dir = lab.dir.join(format!("policy-{i}"));
                std::fs::create_dir_all(&options.policy_dir).expect("policy dir");
                std::fs::write(options.policy_dir.join("default.toml"), policy).expect("policy");
                options.db_url = Some(db.url());
                options.admin_socket = Some(options.dir.join("admin.sock"));
                options.publication.extra_args.extend([
                    "--replica-name".to_string(),
                    format!("replica-{i}"),
                    "--lease-period".to_string(),
                    LEASE_PERIOD.to_string(),
                ]);
                ServerProcess::start(options).expect("replica")
            })
            .collect();
        let hosts: Vec<LabHost> = NAMES
            .iter()
            .map(|n| lab.add_host(n, Launch::Golden).expect("host"))
            .collect();
        let agents = hosts
            .iter()
            .map(|h| {
                let mut options = lab.agent_options(h, &replicas[0]);
                for r in &replicas[1..] {
                    options.extra_args.extend(["--server".to_string(), r.url()]);
                }
                options
                    .spawn(&lab.dir.join(format!("agent-{}.log", h.name)))
                    .expect("agent")
            })
            .collect();
        Cluster {
            _dir: dir,
            lab,
            db,
            replicas,
            _hosts: hosts,
            agents,
        }
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            text.push_str(&format!("--- replica {i}\n{}\n", r.log_text()));
        }
        for a in &self.agents {
            text.push_str(&format!("--- agent\n{}\n", a.log_text()));
        }
        text
    }

    fn lease_holders(&self, alive: &[usize]) -> Vec<usize> {
        alive
            .iter()
            .copied()
            .filter(|i| metric(&self.replicas[*i], "trustpool_lease_held") == Some(1.0))
            .collect()
    }
}

fn replicas_share_one_fleet(engine: Engine) {
    let policy = golden_policy();
    let mut c = Cluster::start(engine, &[policy.clone(), policy.clone(), policy]);
    let all = [0usize, 1, 2];
    assert!(
        wait_until(Duration::from_secs(90), || all.iter().all(|i| ready(
            &c.replicas[*i]
        ) && members(
            &c.replicas[*i]
        )
            == NAMES)),
        "every replica's feed shows every host\n{}",
        c.logs()
    );
    // The agents spread over the replicas; each feed has the hosts the
    // others attested.
    let streams: Vec<f64> = all
        .iter()
        .map(|i| metric(&c.replicas[*i], "trustpool_agent_streams_open").unwrap_or(0.0))
        .collect();
    assert_eq!(
        streams.iter().sum::<f64>(),
        NAMES.len() as f64,
        "{streams:?}"
    );
    assert!(
        streams.iter().filter(|s| **s > 0.0).count() >= 2,
        "the host-name hash spreads the agents: {streams:?}"
    );
    let host = c.replicas[2].get("/v1/hosts/host-a").expect("host");
    assert_eq!(host.status, 200, "{}", host.body);
    assert!(host.body.contains("\"trusted\":true"), "{}", host.body);
    assert!(
        wait_until(Duration::from_secs(10), || c.lease_holders(&all).len() == 1),
        "exactly one replica holds the maintenance lease: {:?}",
        c.lease_holders(&all)
    );
    assert!(all
        .iter()
        .all(|i| metric(&c.replicas[*i], "trustpool_replicas_live") == Some(3.0)));

    // A consumer that switches replicas behind a load balancer and passes
    // the generation it has never gets a lower one.
    let generation = |i: usize, query: &str| -> u64 {
        let body = c.replicas[i]
            .get(&format!("/v1/pools/default/hosts{query}"))
            .expect("feed")
            .json()
            .expect("json");
        body["generation"].as_u64().expect("generation")
    };
    let highest = all.iter().map(|i| generation(*i, "")).max().expect("max");
    for i in all {
        let answered = generation(i, &format!("?since={highest}&wait=2s"));
        assert!(
            answered >= highest,
            "replica {i} answered {answered} to since={highest}"
        );
        let newer = generation(i, &format!("?since={}&wait=1s", highest + 1_000_000));
        assert!(
            newer > highest + 1_000_000,
            "replica {i} went back: {newer}"
        );
    }

    // The admin API on any replica: a revocation on replica 1 empties the
    // host out of every feed; a readmission on replica 2 brings it back.
    admin(
        &c.replicas[1],
        &["hosts", "revoke", "host-c", "--comment", "moved rack"],
    );
    let revoked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || all
            .iter()
            .all(|i| !members(&c.replicas[*i]).contains(&"host-c".to_string()))),
        "host-c left every feed\n{}",
        c.logs()
    );
    eprintln!(
        "a revocation on one replica reached every feed in {:?}",
        revoked.elapsed()
    );
    admin(&c.replicas[2], &["hosts", "readmit", "host-c"]);
    assert!(
        wait_until(Duration::from_secs(30), || all
            .iter()
            .all(|i| members(&c.replicas[*i]) == NAMES)),
        "host-c is back in every feed after its readmission\n{}",
        c.logs()
    );
    let streams: Vec<f64> = all
        .iter()
        .map(|i| metric(&c.replicas[*i], "trustpool_agent_streams_open").unwrap_or(0.0))
        .collect();

    // kill -9 the replica with the most streams.
    let victim = (0..3)
        .max_by(|a, b| streams[*a].total_cmp(&streams[*b]))
        .expect("a replica");
    let lease_was = c.lease_holders(&all)[0];
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != victim).collect();
    let killed_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &c.replicas[victim].pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Read the surviving feeds every 0.2 s: no trusted host may drop out,
    // the victim's agents reconnect within a report interval or two, and
    // the lease is held by a survivor.
    let mut reconnected_after = None;
    let mut lease_after = None;
    while killed_at.elapsed() < Duration::from_secs(12) {
        for i in &survivors {
            let m = members(&c.replicas[*i]);
            assert_eq!(
                m,
                NAMES,
                "replica {i}'s feed lost a trusted host {:?} after the kill\n{}",
                killed_at.elapsed(),
                c.logs()
            );
        }
        let open: f64 = survivors
            .iter()
            .map(|i| metric(&c.replicas[*i], "trustpool_agent_streams_open").unwrap_or(0.0))
            .sum();
        if reconnected_after.is_none() && open == NAMES.len() as f64 {
            reconnected_after = Some(killed_at.elapsed());
        }
        if lease_after.is_none() && c.lease_holders(&survivors).len() == 1 {
            lease_after = Some(killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let reconnected_after = reconnected_after
        .unwrap_or_else(|| panic!("the agents did not all reconnect\n{}", c.logs()));
    eprintln!("agents reconnected {reconnected_after:?} after the kill");
    let lease_after = lease_after.expect("a survivor holds the lease");
    eprintln!(
        "lease held by a survivor {lease_after:?} after the kill (it was replica {lease_was})"
    );
    if lease_was == victim {
        // One lease period plus one renewal (a third of it) at most.
        assert!(
            lease_after <= Duration::from_millis(2000 + 700 + 500),
            "the lease moved in {lease_after:?}"
        );
    }
    assert_eq!(c.lease_holders(&survivors).len(), 1);

    // The killed replica comes back and catches up from the database.
    c.replicas[victim].restart().expect("restart");
    assert!(
        wait_until(Duration::from_secs(30), || ready(&c.replicas[victim])
            && members(&c.replicas[victim]) == NAMES),
        "the restarted replica serves the whole pool\n{}",
        c.logs()
    );
    // kill -9 the lease's holder: another replica holds it within one
    // lease period (plus the renewal tick that notices).
    assert!(wait_until(Duration::from_secs(10), || c
        .lease_holders(&all)
        .len()
        == 1));
    let holder = c.lease_holders(&all)[0];
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != holder).collect();
    let killed_at = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-9", &c.replicas[holder].pid().to_string()])
        .status()
        .expect("kill")
        .success());
    assert!(
        wait_until(Duration::from_secs(10), || c.lease_holders(&others).len()
            == 1),
        "no survivor took the lease\n{}",
        c.logs()
    );
    let moved = killed_at.elapsed();
    eprintln!("the lease moved {moved:?} after its holder was killed");
    assert!(
        moved <= Duration::from_millis(2000 + 700 + 800),
        "{moved:?}"
    );
    c.replicas[holder].restart().expect("restart");
    assert!(wait_until(Duration::from_secs(30), || all.iter().all(
        |i| ready(&c.replicas[*i]) && members(&c.replicas[*i]) == NAMES
    )));
    // No enrolment was lost: every replica knows every host as enrolled.
    for i in all {
        for name in NAMES {
            let h = c.replicas[i]
                .get(&format!("/v1/hosts/{name}"))
                .expect("host");
            assert!(
                h.body.contains("\"enrolled\":true"),
                "replica {i}, {name}: {}",
                h.body
            );
        }
    }

    // A stopped agent's host leaves every feed within the down time.
    let stopped_at = Instant::now();
    c.agents[0].stop().expect("stop agent");
    assert!(
        wait_until(Duration::from_secs(30), || all
            .iter()
            .all(|i| !members(&c.replicas[*i]).contains(&NAMES[0].to_string()))),
        "host-a leaves every feed\n{}",
        c.logs()
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20 + 2),
        "host-a left within the down time: {:?}",
        stopped_at.elapsed()
    );
    let _ = &c.lab;
}

#[test]
fn three_replicas_on_postgresql_share_one_fleet_and_survive_a_kill() {
    replicas_share_one_fleet(Engine::Postgres);
}

#[test]
fn three_replicas_on_mariadb_share_one_fleet_and_survive_a_kill() {
    replicas_share_one_fleet(Engine::MariaDb);
}

/// Replica 2 enforces another policy: it says so and vouches for nobody;
/// the two that agree serve the pool.
#[test]
fn a_replica_with_another_policy_vouches_for_nobody_and_says_so() {
    let policy = golden_policy();
    let other = policy_with_checks(&["nova.instances_space"]);
    let c = Cluster::start(Engine::Postgres, &[policy.clone(), policy, other]);
    assert!(
        wait_until(Duration::from_secs(90), || [0, 1]
            .iter()
            .all(
                |i| ready(&c.replicas[*i]) && members(&c.replicas[*i]) == NAMES
            )),
        "the agreeing replicas serve the pool\n{}",
        c.logs()
    );
    let odd = &c.replicas[2];
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            odd,
            "trustpool_policy_agreement"
        ) == Some(0.0)),
        "{}",
        c.logs()
    );
    let readyz = odd.get("/readyz").expect("readyz");
    assert_eq!(readyz.status, 503);
    assert!(
        readyz.body.contains("policy_disagreement"),
        "{}",
        readyz.body
    );
    let feed = odd.get("/v1/pools/default/hosts").expect("feed");
    assert_eq!(feed.status, 503, "{}", feed.body);
    assert!(odd
        .log_text()
        .contains("not the one most live replicas enforce"));
    // The operator sees who disagrees, and who holds the lease.
    let view = odd
        .get("/v1/replicas")
        .expect("replicas")
        .json()
        .expect("json");
    assert_eq!(view["replica"], "replica-2");
    assert_eq!(view["policy_agrees"], false);
    assert_eq!(view["replicas"].as_array().map(Vec::len), Some(3), "{view}");
    assert!(
        view["lease_holder"]
            .as_str()
            .is_some_and(|h| h != "replica-2"),
        "{view}"
    );
    // Its agents moved to the others.
    assert_eq!(metric(odd, "trustpool_agent_streams_open"), Some(0.0));
    for i in [0, 1] {
        assert_eq!(
            metric(&c.replicas[i], "trustpool_policy_agreement"),
            Some(1.0)
        );
    }
}

/// The database restarted under three replicas: every replica fails closed
/// for the outage and recovers by itself, nothing committed is lost.
fn the_database_restarted_under_replicas(engine: Engine) {
    let policy = golden_policy();
    let mut c = Cluster::start(engine, &[policy.clone(), policy.clone(), policy]);
    let all = [0usize, 1, 2];
    let complete = |c: &Cluster| {
        all.iter()
            .all(|i| ready(&c.replicas[*i]) && members(&c.replicas[*i]) == NAMES)
    };
    assert!(
        wait_until(Duration::from_secs(90), || complete(&c)),
        "{}",
        c.logs()
    );
    c.db.kill();
    let killed = Instant::now();
    let unavailable = |c: &Cluster| {
        all.iter().all(|i| {
            c.replicas[*i]
                .get("/v1/pools/default/hosts")
                .map(|r| r.status)
                .unwrap_or(0)
                == 503
        })
    };
    assert!(
        wait_until(Duration::from_secs(15), || unavailable(&c)),
        "every replica fails closed once the database is gone\n{}",
        c.logs()
    );
    eprintln!(
        "{engine:?}: every replica failed closed {:?} after the database died",
        killed.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            unavailable(&c),
            "a replica vouched while the database was down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.db.start_again().expect("database restart");
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || complete(&c)),
        "every replica recovers by itself\n{}",
        c.logs()
    );
    eprintln!(
        "{engine:?}: every replica serves the full pool {:?} after the database came back",
        back.elapsed()
    );
    // Exactly one lease holder again, and every enrolment is still there.
    assert!(wait_until(Duration::from_secs(10), || c
        .lease_holders(&all)
        .len()
        == 1));
    for name in NAMES {
        let h = c.replicas[2]
            .get(&format!("/v1/hosts/{name}"))
            .expect("host");
        assert!(h.body.contains("\"enrolled\":true"), "{name}: {}", h.body);
    }
}

#[test]
fn the_postgresql_server_restarted_under_three_replicas() {
    the_database_restarted_under_replicas(Engine::Postgres);
}

#[test]
fn the_mariadb_server_restarted_under_three_replicas() {
    the_database_restarted_under_replicas(Engine::MariaDb);
}
