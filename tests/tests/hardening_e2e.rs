//! Hardening checks in the attestation, end to end: the agent's report is
//! bound into each quote, the pool's required checks decide admission, and
//! the pool's check parameters reach the agent and are proven in the report.

use trustpool_tests::lab::{policy_with_checks, Hardening, Lab, Launch};
use trustpool_tests::procs::ServerProcess;

fn reasons(server: &ServerProcess, host: &str) -> Vec<(String, String)> {
    let body = server
        .get(&format!("/v1/hosts/{host}"))
        .expect("get")
        .json()
        .expect("json");
    body["pools"][0]["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap_or("").into(),
                r["message"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

#[test]
fn a_pool_requiring_mac_excludes_a_host_without_apparmor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy(
        "default",
        &policy_with_checks(&["mac.enforcing_any", "svirt.guests_confined"]),
    )
    .expect("policy");
    let good = lab
        .add_host_with("host-good", Launch::Golden, Hardening::GoodCompute)
        .expect("good");
    let bad = lab
        .add_host_with("host-bad", Launch::Golden, Hardening::AppArmorDisabled)
        .expect("bad");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");

    let out = lab.agent_options(&good, &server).run_once().expect("agent");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.agent_options(&bad, &server).run_once().expect("agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("mac.enforcing_any"), "{stdout}");

    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-good".to_string()]
    );
    let reasons = reasons(&server, "host-bad");
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "check.required_failed" && m.contains("mac.enforcing_any")),
        "{reasons:?}"
    );
    // Without AppArmor the guests are not confined either; each failing check
    // is named with the agent's own explanation.
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "check.required_failed" && m.contains("svirt.guests_confined")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().all(|(_, m)| !m.ends_with("(must be pass)")),
        "reasons carry the report's explanation: {reasons:?}"
    );
    // The measurements are golden: no PCR reason.
    assert!(
        !reasons
            .iter()
            .any(|(c, _)| c.starts_with("pcr.") || c.starts_with("quote.")),
        "{reasons:?}"
    );
}

#[test]
fn pool_check_parameters_reach_the_agent_and_are_proven_in_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    let host = lab
        .add_host_with("host-a", Launch::Golden, Hardening::GoodCompute)
        .expect("host");

    // Default thresholds: the fixture node's instance storage has enough space.
    lab.write_policy("default", &policy_with_checks(&["nova.instances_space"]))
        .expect("policy");
    let mut server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let out = lab.agent_options(&host, &server).run_once().expect("agent");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A pool that demands 99.5 % free space: the same node now fails the check,
    // judged by the agent with the pool's threshold (no params mismatch).
    let strict = policy_with_checks(&["nova.instances_space"])
        .replace("[[allow]]", "[check_params]\ninstances_free_pass_percent = 99.5\ninstances_free_fail_percent = 99.0\n\n[[allow]]");
    lab.write_policy("default", &strict).expect("policy");
    server.restart().expect("restart with the strict policy");
    let out = lab.agent_options(&host, &server).run_once().expect("agent");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let reasons = reasons(&server, "host-a");
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "check.required_failed" && m.contains("nova.instances_space")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|(c, _)| c == "report.params_mismatch"),
        "{reasons:?}"
    );
}

#[test]
fn a_policy_requiring_an_unknown_check_stops_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &policy_with_checks(&["mac.enforcing_anyy"]))
        .expect("policy");
    let err = ServerProcess::start(lab.server_options("30s", "75s"))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("mac.enforcing_anyy"), "{text}");
}

#[test]
fn a_check_that_flips_triggers_an_immediate_attestation() {
    use std::time::{Duration, Instant};
    use trustpool_tests::procs::wait_until;
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &policy_with_checks(&["mac.enforcing_any"]))
        .expect("policy");
    let host = lab
        .add_host_with("host-a", Launch::Golden, Hardening::GoodCompute)
        .expect("host");
    // Rounds every 60 s: anything faster than that is change-driven.
    let server = ServerProcess::start(lab.server_options("60s", "180s")).expect("server");
    let mut options = lab.agent_options(&host, &server);
    options.watch_interval = Some("500ms".into());
    let agent = options.spawn(&lab.dir.join("agent.log")).expect("agent");
    assert!(wait_until(Duration::from_secs(30), || server
        .pool_members("default")
        .is_ok_and(|m| m == ["host-a"])));

    let enabled = host
        .root
        .as_ref()
        .expect("fixture root")
        .join("sys/module/apparmor/parameters/enabled");
    std::fs::write(&enabled, "N\n").expect("disable AppArmor in the fixture");
    let changed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || server
            .pool_members("default")
            .is_ok_and(|m| m.is_empty())),
        "host-a still trusted:\n{}",
        agent.log_text()
    );
    let removal = changed.elapsed();
    println!("check flip -> removal from the feed: {removal:?}");
    assert!(removal < Duration::from_secs(10), "{removal:?}");
    assert!(
        agent.log_text().contains("mac.enforcing_any: pass -> fail"),
        "{}",
        agent.log_text()
    );

    std::fs::write(&enabled, "Y\n").expect("enable AppArmor again");
    assert!(
        wait_until(Duration::from_secs(15), || server
            .pool_members("default")
            .is_ok_and(|m| m == ["host-a"])),
        "host-a not readmitted:\n{}",
        agent.log_text()
    );
}
