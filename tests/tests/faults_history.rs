//! History across an outage: verdicts that expire while the server is down
//! are recorded at start-up, so "was host X trusted at T" never answers yes
//! for a time its verdict had already expired.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use trustpool_tests::lab::{golden_policy, Lab, Launch};
use trustpool_tests::procs::{binary, wait_until, ServerProcess};

fn at(socket: &Path, host: &str, when: &str) -> (i32, String) {
    let out = Command::new(binary("trustpool").expect("trustpool"))
        .env_remove("TRUSTPOOL_SERVER")
        .arg("--socket")
        .arg(socket)
        .args(["hosts", "history", host, "--at", when])
        .output()
        .expect("trustpool runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn fault_verdicts_that_expired_while_the_server_was_down_are_in_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let socket = lab.dir.join("admin.sock");
    let mut options = lab.server_options("1s", "3s");
    options.admin_socket = Some(socket.clone());
    let mut server = ServerProcess::start(options).expect("server");
    let out = lab
        .agent_options(&host, &server)
        .run_once()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The history writer commits in batches of at most 200 ms.
    assert!(
        wait_until(Duration::from_secs(5), || at(&socket, "host-a", "0s").0
            == 0),
        "trusted now: {}",
        at(&socket, "host-a", "0s").1
    );

    // Down longer than the down time, then back.
    server.stop().expect("stop");
    std::thread::sleep(Duration::from_secs(5));
    server.restart().expect("restart");
    // Start-up queues the expiry; the history writer commits it within 200 ms.
    assert!(
        wait_until(Duration::from_secs(5), || at(&socket, "host-a", "0s").0
            == 1),
        "stale after the outage, not trusted:\n{}\n{}",
        at(&socket, "host-a", "0s").1,
        server.log_text()
    );
    let (_, text) = at(&socket, "host-a", "0s");
    assert!(text.contains("freshness.stale"), "{text}");
    // Two seconds ago the verdict had already expired too (it expired ~2 s
    // into the outage).
    let (code, text) = at(&socket, "host-a", "2s");
    assert_eq!(code, 1, "{text}");
}
