//! End-to-end attestation with real components: swtpm TPMs with EK
//! certificates, the server and agent binaries, mutual TLS with real
//! certificates, a SQLite file. Each test builds its own lab in a temporary
//! directory on free ports, so tests run concurrently.

use std::time::Duration;
use trustpool_proto::v1::EventLogKind;
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::procs::{wait_until, AgentProcess, ServerProcess};

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    (dir, lab)
}

fn run_once(lab: &Lab, host: &LabHost, server: &ServerProcess) -> (i32, String, String) {
    let out = lab
        .agent_options(host, server)
        .run_once()
        .expect("agent runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reasons(server: &ServerProcess, host: &str) -> Vec<(String, String)> {
    let body = server
        .get(&format!("/v1/hosts/{host}"))
        .expect("get")
        .json()
        .expect("json");
    body["pools"][0]["reasons"]
        .as_array()
        .expect("reasons array")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap_or("").to_string(),
                r["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn happy_path_enrols_attests_and_publishes() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, stdout, stderr) = run_once(&lab, &host, &server);
    assert_eq!(
        code,
        0,
        "agent should be trusted:\n{stdout}\n{stderr}\n{}",
        server.log_text()
    );
    assert!(
        stdout.contains("host-a: TRUSTED in pool 'default'"),
        "{stdout}"
    );
    assert!(stderr.contains("new_enrolment=true"), "{stderr}");

    let feed = server
        .get("/v1/pools/default/hosts")
        .expect("feed")
        .json()
        .expect("json");
    assert_eq!(feed["pool"], "default");
    assert!(feed["generation"].as_u64().is_some());
    let hosts = feed["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["hostname"], "host-a");
    let attested = hosts[0]["attested_at"].as_str().expect("attested_at");
    let until = hosts[0]["valid_until"].as_str().expect("valid_until");
    assert!(
        attested.ends_with('Z') && until > attested,
        "{attested} {until}"
    );

    let detail = server
        .get("/v1/hosts/host-a")
        .expect("host")
        .json()
        .expect("json");
    assert_eq!(detail["pools"][0]["trusted"], true);
    assert_eq!(
        detail["pools"][0]["reasons"].as_array().map(Vec::len),
        Some(0)
    );

    let missing = server.get("/v1/hosts/nobody").expect("get");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json().expect("json")["error"]["code"], "not_found");
    assert_eq!(
        server.get("/v1/pools/nopool/hosts").expect("get").status,
        404
    );
}

/// The real agent reads the lab host's own event log files (never the lab
/// machine's) and names a missing one in its warning.
#[test]
fn the_agent_reads_the_lab_hosts_own_event_logs() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let uefi = host
        .event_log_file(EventLogKind::Uefi)
        .display()
        .to_string();
    let txt = host.event_log_file(EventLogKind::Txt).display().to_string();
    let (code, _, stderr) = run_once(&lab, &host, &server);
    assert_eq!(code, 0, "{stderr}\n{}", server.log_text());
    assert!(
        stderr.contains("event log unavailable") && stderr.contains(&uefi),
        "{stderr}"
    );
    assert!(stderr.contains(&txt), "{stderr}");
    let file = host.event_log_file(EventLogKind::Uefi);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, vec![0x5a; 40_000]).expect("write the log");
    let (_, _, stderr) = run_once(&lab, &host, &server);
    assert!(!stderr.contains(&uefi), "read, so no warning: {stderr}");
    assert!(stderr.contains(&txt), "{stderr}");
}

#[test]
fn unknown_sinit_is_refused_naming_pcr_17() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-r", Launch::Rogue).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, stdout, _) = run_once(&lab, &host, &server);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("NOT trusted"), "{stdout}");
    let reasons = reasons(&server, "host-r");
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "pcr.not_allowed" && m.contains("PCR 17")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|(c, _)| c == "launch.not_measured"),
        "a launch did happen: {reasons:?}"
    );
    assert!(server.pool_members("default").expect("feed").is_empty());
}

#[test]
fn no_measured_launch_is_refused_with_its_reason() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-c", Launch::None).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, stdout, _) = run_once(&lab, &host, &server);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("launch.not_measured"), "{stdout}");
    let reasons = reasons(&server, "host-c");
    assert!(
        reasons.iter().any(|(c, _)| c == "launch.not_measured"),
        "{reasons:?}"
    );
}

/// A real swtpm that ran only the locality-4 hash start of the golden SINIT
/// (PCR 17 golden, PCR 18 all zeros: no MLE): not a measured launch.
#[test]
fn attack_hash_start_without_mle_is_not_a_measured_launch() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-h", Launch::HashStartOnly).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, stdout, _) = run_once(&lab, &host, &server);
    assert_eq!(code, 1, "{stdout}");
    let reasons = reasons(&server, "host-h");
    let launch: Vec<&str> = reasons
        .iter()
        .filter(|(c, _)| c == "launch.not_measured")
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(
        launch,
        vec!["no TXT measured launch: PCR 18 is all zeros 00…00"],
        "{reasons:?}"
    );
    assert!(server.pool_members("default").expect("feed").is_empty());
}

#[test]
fn a_certificate_for_another_host_is_refused_and_the_victim_is_unaffected() {
    let (_dir, lab) = lab();
    let victim = lab.add_host("host-a", Launch::Golden).expect("host-a");
    let attacker = lab.add_host("host-c", Launch::Golden).expect("host-c");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    assert_eq!(run_once(&lab, &victim, &server).0, 0);
    // The --once session has ended once the server marks host-a disconnected:
    // from then on nothing legitimate changes its record.
    assert!(wait_until(Duration::from_secs(10), || server
        .get("/v1/hosts/host-a")
        .and_then(|r| r.json())
        .is_ok_and(|v| v["connected"] == false)));
    let before = server.get("/v1/hosts/host-a").expect("get").body;

    // host-c's certificate and TPM, claiming to be host-a.
    let mut options = lab.agent_options(&attacker, &server);
    options.hostname = "host-a".into();
    let out = options.run_once().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("identity.mismatch"), "{stderr}");

    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-a".to_string()]
    );
    let after = server.get("/v1/hosts/host-a").expect("get").body;
    assert_eq!(before, after, "host-a's record must not change");
    assert!(server
        .log_text()
        .contains("refused a stream speaking for another host"));
}

#[test]
fn an_ek_certificate_from_an_unknown_vendor_is_held_for_approval() {
    let (_dir, lab) = lab();
    // The server trusts another swtpm CA than the one that signed the EK certificate.
    let other = tempfile::tempdir().expect("tempdir");
    let other_ca = trustpool_tests::swtpm::EkCa::create(other.path()).expect("other EK CA");
    for entry in std::fs::read_dir(&lab.ek_roots).expect("ls") {
        std::fs::remove_file(entry.expect("entry").path()).expect("rm");
    }
    std::fs::copy(
        other_ca.root_cert_pem_path(),
        lab.ek_roots.join("other-root.pem"),
    )
    .expect("copy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, stdout, stderr) = run_once(&lab, &host, &server);
    assert_eq!(code, 1, "never trusted while pending:\n{stdout}\n{stderr}");
    let reasons = reasons(&server, "host-a");
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "host.pending" && m.contains("EK certificate refused")),
        "{reasons:?}"
    );
    assert!(server.pool_members("default").expect("feed").is_empty());
    assert!(server
        .log_text()
        .contains("enrolment held for an operator's approval"));
}

#[test]
fn a_silent_host_leaves_the_pool_after_the_down_time() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("1s", "3s")).expect("server");
    let mut agent = lab
        .agent_options(&host, &server)
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || server
            .pool_members("default")
            .is_ok_and(|m| m == ["host-a"])),
        "host-a never joined:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    // Still there after several report intervals while the agent runs.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-a".to_string()]
    );
    agent.stop().expect("stop");
    let stopped = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .pool_members("default")
            .is_ok_and(|m| m.is_empty())),
        "host-a is still in the pool"
    );
    let gone_after = stopped.elapsed();
    assert!(
        gone_after <= Duration::from_secs(5),
        "left after {gone_after:?}"
    );
    let reasons = reasons(&server, "host-a");
    assert!(
        reasons.iter().any(|(c, _)| c == "freshness.stale"),
        "{reasons:?}"
    );
}

#[test]
fn enrolment_survives_a_server_restart() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let mut server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let (code, _, stderr) = run_once(&lab, &host, &server);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("new_enrolment=true"), "{stderr}");
    server.restart().expect("restart");
    // The verdict stored before the restart is still published until it expires.
    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-a".to_string()]
    );
    let (code, _, stderr) = run_once(&lab, &host, &server);
    assert_eq!(code, 0, "{stderr}\n{}", server.log_text());
    assert!(
        stderr.contains("new_enrolment=false"),
        "no second enrolment: {stderr}"
    );
    assert!(!stderr.contains("enrolling"), "{stderr}");
}

#[test]
fn a_bad_policy_stops_start_up_with_file_and_line() {
    let (_dir, lab) = lab();
    lab.write_policy(
        "broken",
        "require_measured_launch = true\n\n[[allow]]\nname = \"x\"\npcrs = { 17 = \"abc\" }\n",
    )
    .expect("write");
    let err = ServerProcess::start(lab.server_options("30s", "75s"))
        .err()
        .expect("must not start");
    let text = format!("{err:#}");
    assert!(text.contains("broken.toml:5"), "{text}");
}

/// The server refuses to start on a measured-launch pool whose entry pins
/// neither PCR 17 nor 18 (it would admit any SINIT and MLE).
#[test]
fn attack_server_refuses_a_measured_launch_pool_that_pins_no_launch_pcrs() {
    let (_dir, lab) = lab();
    lab.write_policy(
        "open",
        "require_measured_launch = true\n\n[[allow]]\nname = \"anything\"\npcrs = {}\n",
    )
    .expect("write");
    let err = ServerProcess::start(lab.server_options("30s", "75s"))
        .err()
        .expect("must not start");
    let text = format!("{err:#}");
    assert!(
        text.contains("open.toml:5:8: allow entry 'anything' does not pin PCR 17 and 18"),
        "{text}"
    );
}

/// host-a with a long-running agent, rounds every second (down time 3 s),
/// once it is in the pool.
fn host_a_attesting_every_second(lab: &Lab) -> (LabHost, ServerProcess, AgentProcess) {
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(lab.server_options("1s", "3s")).expect("server");
    let agent = lab
        .agent_options(&host, &server)
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(wait_until(Duration::from_secs(30), || server
        .pool_members("default")
        .is_ok_and(|m| m == ["host-a"])));
    (host, server, agent)
}

#[test]
fn the_agent_reconnects_when_the_server_comes_back() {
    let (_dir, lab) = lab();
    let (_host, mut server, mut agent) = host_a_attesting_every_second(&lab);
    // SIGTERM with an agent connected: the server ends the agent's stream
    // and exits 0 at once (systemd's stop and restart rely on it).
    let status = server
        .stop()
        .expect("stops on SIGTERM")
        .expect("an exit status");
    assert!(status.success(), "{status}\n{}", server.log_text());
    assert!(
        server.log_text().contains("trustpool-server stopped"),
        "{}",
        server.log_text()
    );
    // The session was ended by the server, not cut by the grace period.
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .log_text()
            .contains("server.stopping")),
        "{}",
        agent.log_text()
    );
    assert!(
        !server
            .log_text()
            .contains("still open after the grace period"),
        "{}",
        server.log_text()
    );
    // The agent keeps running and retries with back-off while the server is away.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running(), "{}", agent.log_text());
    server.restart().expect("start again on the same ports");
    assert!(
        wait_until(Duration::from_secs(30), || {
            server
                .get("/v1/hosts/host-a")
                .and_then(|r| r.json())
                .is_ok_and(|v| v["connected"] == true && v["pools"][0]["trusted"] == true)
        }),
        "agent did not come back:\n{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(log.contains("reconnecting after back-off"), "{log}");
    assert!(
        log.contains("new_enrolment=false"),
        "no re-enrolment after reconnecting: {log}"
    );
}

#[test]
fn the_agent_stops_on_sigterm_and_leaves_nothing_loaded_in_the_tpm() {
    use trustpool_agent::tpm::{AkAlg, EkAlg, Tpm};
    let (_dir, lab) = lab();
    // Rounds every second: SIGTERM is likely to meet a quote in flight.
    let (host, _server, mut agent) = host_a_attesting_every_second(&lab);
    let status = agent
        .stop()
        .expect("stops on SIGTERM")
        .expect("an exit status");
    assert!(status.success(), "{status}\n{}", agent.log_text());
    assert!(
        agent.log_text().contains("trustpool-agent stopped"),
        "{}",
        agent.log_text()
    );
    // swtpm has no resource manager: whatever the agent left loaded would
    // still be there for the next client.
    let state = tempfile::tempdir().expect("tempdir");
    let mut tpm = Tpm::open(
        &host.swtpm.tcti(),
        state.path(),
        EkAlg::Rsa2048,
        AkAlg::RsaSsa2048,
    )
    .expect("the TPM opens again");
    let loaded = tpm.loaded_handles().expect("handles");
    assert!(
        loaded.transient_objects.is_empty() && loaded.loaded_sessions.is_empty(),
        "{loaded:?}"
    );
}
