//! Network faults between an agent and the server: a partition that keeps
//! both sockets open (a frozen TCP proxy between them) must be noticed by
//! HTTP/2 keep-alive pings on both sides within seconds — the host shown
//! disconnected with a precise end reason, the agent reconnecting by
//! itself once the link is back.

use std::time::{Duration, Instant};
use trustpool_tests::lab::{golden_policy, Lab, Launch};
use trustpool_tests::procs::{wait_until, ServerProcess};
use trustpool_tests::proxy::Proxy;

fn connected(server: &ServerProcess, host: &str) -> Option<bool> {
    let body = server.get(&format!("/v1/hosts/{host}")).ok()?.json().ok()?;
    body["connected"].as_bool()
}

#[test]
fn fault_a_partition_is_noticed_by_keepalive_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    // A long down time: whatever happens within it is the keep-alive's doing.
    let mut options = lab.server_options("2s", "120s");
    options.publication.extra_args = vec![
        "--keepalive-interval".into(),
        "1s".into(),
        "--keepalive-timeout".into(),
        "1s".into(),
    ];
    let server = ServerProcess::start(options).expect("server");
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", server.grpc_port)
            .parse()
            .expect("addr"),
    )
    .expect("proxy");
    let mut agent_options = lab.agent_options(&host, &server);
    agent_options.server = format!("https://127.0.0.1:{}", proxy.addr.port());
    agent_options.extra_args = vec![
        "--keepalive-interval".into(),
        "1s".into(),
        "--keepalive-timeout".into(),
        "1s".into(),
    ];
    let mut agent = agent_options
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || server
            .pool_members("default")
            .is_ok_and(|m| m == ["host-a"])),
        "{}",
        server.log_text()
    );
    assert_eq!(connected(&server, "host-a"), Some(true));

    proxy.set_frozen(true);
    let frozen = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || connected(&server, "host-a")
            == Some(false)),
        "still connected after a partition:\n{}",
        server.log_text()
    );
    println!(
        "partition -> disconnected on the server: {:?}",
        frozen.elapsed()
    );
    assert!(
        server.log_text().contains("stream.lost"),
        "the end reason names the lost link:\n{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("protocol.malformed"));
    // The host is still trusted: it is out only after the down time.
    assert_eq!(server.pool_members("default").expect("feed"), ["host-a"]);

    proxy.set_frozen(false);
    assert!(
        wait_until(Duration::from_secs(30), || connected(&server, "host-a")
            == Some(true)),
        "the agent did not come back:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    assert!(agent.is_running());
    agent.stop().expect("stop");
}
