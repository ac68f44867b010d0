//! Operating the pool without waiting for reports: policy reloads (file
//! watch and SIGHUP) re-evaluate stored evidence at once, a broken policy is
//! refused while the old one stays in force, and a PCR change on a running
//! host is noticed by its agent and removes it from the feed.

use std::time::{Duration, Instant};
use trustpool_tests::lab::{golden_policy, Lab, Launch};
use trustpool_tests::procs::{wait_until, ServerProcess};

fn members(server: &ServerProcess) -> Vec<String> {
    server.pool_members("default").unwrap_or_default()
}

#[test]
fn a_stricter_policy_removes_hosts_at_once_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    // Reports every 60 s: anything faster is the reload, not a new report.
    let server = ServerProcess::start(lab.server_options("60s", "180s")).expect("server");
    let mut agent = lab
        .agent_options(&host, &server)
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(wait_until(Duration::from_secs(30), || members(&server) == ["host-a"]));

    // A broken candidate: refused, the previous policy stays in force.
    let good = golden_policy();
    lab.write_policy("default", "require_measured_launch = maybe\n")
        .expect("write");
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("policy reload refused")),
        "{}",
        server.log_text()
    );
    assert_eq!(
        members(&server),
        ["host-a"],
        "the old policy still admits host-a"
    );

    // A stricter policy (another golden PCR 17): host-a leaves without a new report.
    agent.stop().expect("stop the agent: no report can arrive");
    // A second broken candidate (PCR 17 value of 66 hex digits) is refused too.
    let refusals = server.log_text().matches("policy reload refused").count();
    lab.write_policy("default", &good.replace("17 = \"", "17 = \"00"))
        .expect("write");
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .matches("policy reload refused")
            .count()
            > refusals),
        "{}",
        server.log_text()
    );
    let stricter = fix_pcr17(&good);
    lab.write_policy("default", &stricter).expect("write");
    let written = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || members(&server).is_empty()),
        "host-a still trusted:\n{}",
        server.log_text()
    );
    println!(
        "stricter policy written -> host out of the feed: {:?}",
        written.elapsed()
    );
    let detail = server
        .get("/v1/hosts/host-a")
        .expect("get")
        .json()
        .expect("json");
    let reasons = detail["pools"][0]["reasons"].to_string();
    assert!(reasons.contains("PCR 17"), "{reasons}");

    // SIGHUP with the golden policy back: host-a returns from its stored evidence.
    lab.write_policy("default", &good).expect("write");
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(10), || members(&server) == ["host-a"]),
        "{}",
        server.log_text()
    );
}

/// Replaces the PCR 17 value of the golden policy by another valid hex value.
fn fix_pcr17(text: &str) -> String {
    let start = text.find("17 = \"").expect("pcr 17") + 6;
    let mut out = text.to_string();
    out.replace_range(start..start + 64, &"ab".repeat(32));
    out
}

#[test]
fn a_pcr_extend_on_a_running_host_removes_it_from_the_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("60s", "180s")).expect("server");
    let mut options = lab.agent_options(&host, &server);
    options.watch_interval = Some("1s".into());
    let agent = options.spawn(&lab.dir.join("agent.log")).expect("agent");
    assert!(wait_until(Duration::from_secs(30), || members(&server) == ["host-a"]));

    // A new dynamic launch of another SINIT on the running host (locality 4
    // hash sequence over the control channel): PCR 17-19 change at once.
    host.swtpm
        .txt_hash_start(b"an attacker's SINIT")
        .expect("DRTM hash sequence");
    let extended = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || members(&server).is_empty()),
        "host-a still trusted:\n{}",
        agent.log_text()
    );
    let removal = extended.elapsed();
    println!("PCR extend -> removal from the feed: {removal:?} (agent watch interval 1s)");
    assert!(removal < Duration::from_secs(5), "{removal:?}");
    assert!(
        agent.log_text().contains("PCR 17 changed"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn fault_an_emptied_policy_directory_is_refused_and_the_pool_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    lab.write_policy("gpu", &golden_policy()).expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("60s", "180s")).expect("server");
    let mut agent = lab
        .agent_options(&host, &server)
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(wait_until(Duration::from_secs(30), || members(&server) == ["host-a"]));
    let refusals = |s: &ServerProcess| s.log_text().matches("policy reload refused").count();

    // A moment of `rm`, rsync or git checkout: every file gone. Refused.
    let before = refusals(&server);
    for pool in ["default", "gpu"] {
        std::fs::remove_file(lab.policy_dir.join(format!("{pool}.toml"))).expect("rm");
    }
    assert!(
        wait_until(Duration::from_secs(10), || refusals(&server) > before),
        "{}",
        server.log_text()
    );
    assert_eq!(members(&server), ["host-a"], "the fleet is not emptied");
    assert!(server.log_text().contains("defines no pool"));
    // An explicit reload of an empty directory is refused as well.
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    let before = refusals(&server);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(wait_until(Duration::from_secs(10), || refusals(&server) > before));
    assert_eq!(members(&server), ["host-a"]);

    // Only `gpu` comes back: the watch refuses to drop `default`, which has a member.
    lab.write_policy("gpu", &golden_policy()).expect("policy");
    let before = refusals(&server);
    assert!(wait_until(Duration::from_secs(10), || refusals(&server) > before));
    assert!(
        server.log_text().contains("default (1 trusted hosts)"),
        "{}",
        server.log_text()
    );
    assert_eq!(members(&server), ["host-a"]);
    // The operator means it: SIGHUP removes the populated pool.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(10), || server
            .get("/v1/pools/default/hosts")
            .is_ok_and(|r| r.status == 404)),
        "{}",
        server.log_text()
    );
    agent.stop().expect("stop");
}
