//! An agent given several servers (`--server` repeated) holds one stream to
//! one of them and fails over along the list: past a server where nothing
//! listens, and away from a server whose stream is lost, fast enough that
//! its host stays trusted. The "servers" are one real server reached under
//! two URLs (directly and through a TCP proxy, or a dead port): replicas
//! share one database, two independent servers would not share enrolments.
//!
//! The agent starts at a place in its list chosen by a hash of its host
//! name (`trustpool_daemon::failover::start_index`); each test picks a host
//! name that starts at the first URL, so that the failover is exercised.

use std::time::{Duration, Instant};
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::procs::{free_port, wait_until, ServerProcess};
use trustpool_tests::proxy::Proxy;

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    (dir, lab)
}

/// A host whose agent, given two servers, dials the first one first.
fn host_starting_at_the_first_url(lab: &Lab) -> LabHost {
    let name = (0..)
        .map(|i| format!("host-{i}"))
        .find(|n| trustpool_daemon::failover::start_index(n, 2) == 0)
        .expect("some name starts at 0");
    lab.add_host(&name, Launch::Golden).expect("host")
}

fn attested_at(server: &ServerProcess, host: &str) -> Option<String> {
    let body = server.get(&format!("/v1/hosts/{host}")).ok()?.json().ok()?;
    body["pools"][0]["attested_at"].as_str().map(String::from)
}

fn trusted(server: &ServerProcess, host: &str) -> bool {
    server
        .pool_members("default")
        .is_ok_and(|m| m.iter().any(|h| h == host))
}

#[test]
fn failover_skips_a_server_where_nothing_listens_and_enrols_on_the_next() {
    let (_dir, lab) = lab();
    let host = host_starting_at_the_first_url(&lab);
    let server = ServerProcess::start(lab.server_options("2s", "10s")).expect("server");
    let dead = format!("https://127.0.0.1:{}", free_port());
    let real = server.url();
    let mut options = lab.agent_options(&host, &server);
    options.server = dead.clone();
    options.extra_args = vec!["--server".into(), real.clone()];
    let started = Instant::now();
    let mut agent = options.spawn(&lab.dir.join("agent.log")).expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || trusted(&server, &host.name)),
        "not trusted through the second server:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    println!("trusted after {:?}", started.elapsed());
    let log = agent.log_text();
    let moved = log
        .lines()
        .find(|l| l.contains("failing over to the next server"))
        .unwrap_or_else(|| panic!("no failover logged:\n{log}"));
    assert!(
        moved.contains(&format!("from={dead} "))
            && moved.contains(&format!("to={real} "))
            && moved.contains("cannot reach the server"),
        "{moved}"
    );
    assert!(log.contains("new_enrolment=true"), "{log}");
    assert!(
        log.contains(&format!("attestation stream open server={real}")),
        "{log}"
    );
    assert!(!log.contains(&format!("attestation stream open server={dead}")));
    assert!(agent.is_running());
    agent.stop().expect("stop");
}

#[test]
fn failover_once_tries_the_next_server_in_the_same_run() {
    let (_dir, lab) = lab();
    let host = host_starting_at_the_first_url(&lab);
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let dead = format!("https://127.0.0.1:{}", free_port());
    let mut options = lab.agent_options(&host, &server);
    options.server = dead.clone();
    options.extra_args = vec!["--server".into(), server.url()];
    let out = options.run_once().expect("agent runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{}: TRUSTED in pool 'default'", host.name)),
        "{stdout}"
    );
    assert!(
        stderr.contains("failing over to the next server") && stderr.contains(&dead),
        "{stderr}"
    );
}

#[test]
fn failover_a_lost_stream_moves_to_the_other_url_and_the_host_stays_trusted() {
    let (_dir, lab) = lab();
    let host = host_starting_at_the_first_url(&lab);
    // Report every 2 s; out of the pool 8 s after the last good report.
    let server = ServerProcess::start(lab.server_options("2s", "8s")).expect("server");
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", server.grpc_port)
            .parse()
            .expect("addr"),
    )
    .expect("proxy");
    let via_proxy = format!("https://127.0.0.1:{}", proxy.addr.port());
    let direct = server.url();
    let mut options = lab.agent_options(&host, &server);
    options.server = via_proxy.clone();
    options.extra_args = vec!["--server".into(), direct.clone()];
    let mut agent = options.spawn(&lab.dir.join("agent.log")).expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || trusted(&server, &host.name)),
        "not trusted:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    let log = agent.log_text();
    assert!(
        log.contains(&format!("attestation stream open server={via_proxy}")),
        "the first stream goes through the first URL:\n{log}"
    );
    assert!(!log.contains("failing over to the next server"), "{log}");

    // The first URL goes away: its connections close, its port refuses.
    drop(proxy);
    let lost = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let before = attested_at(&server, &host.name).expect("attested_at");
    let mut dropped_out = false;
    let reattested = wait_until(Duration::from_secs(10), || {
        dropped_out |= !trusted(&server, &host.name);
        attested_at(&server, &host.name).is_some_and(|now| now != before)
    });
    assert!(
        reattested,
        "no attestation after the first URL went away (still {before}):\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    println!("re-attested {:?} after the stream was lost", lost.elapsed());
    assert!(
        !dropped_out,
        "the host left the pool during the failover:\n{}",
        server.log_text()
    );
    let log = agent.log_text();
    let moved = log
        .lines()
        .find(|l| l.contains("failing over to the next server"))
        .unwrap_or_else(|| panic!("no failover logged:\n{log}"));
    assert!(
        moved.contains(&format!("from={via_proxy} ")) && moved.contains(&format!("to={direct} ")),
        "{moved}"
    );
    assert!(
        log.contains(&format!("attestation stream open server={direct}")),
        "{log}"
    );
    // And it stays on the direct URL, trusted, round after round.
    let after = attested_at(&server, &host.name);
    std::thread::sleep(Duration::from_secs(3));
    assert!(trusted(&server, &host.name));
    assert_ne!(attested_at(&server, &host.name), after);
    assert!(agent.is_running());
    agent.stop().expect("stop");
}
