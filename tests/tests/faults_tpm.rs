//! The agent and a TPM that goes away: swtpm killed under a running agent
//! (as a crashed vTPM back end or a restarted resource manager would do)
//! and started again on the same state and ports. The agent must come back
//! by itself without a restart, and give up (exit non-zero, for systemd's
//! `Restart=on-failure`) when the TPM stays away too long.
//!
//! The hosts boot without a measured launch: a restarted swtpm is a TPM
//! Reset (PCRs back to their reset values), and a measured launch cannot be
//! replayed while the agent holds swtpm's only data connection. The pool
//! policy admits exactly those reset values.

use std::time::Duration;
use trustpool_agent::tpm::{AkAlg, EkAlg, Tpm};
use trustpool_tests::lab::{expected_pcrs, Lab, LabHost, Launch};
use trustpool_tests::procs::{wait_until, AgentProcess, ServerProcess};

/// The `default` pool admits hosts with PCRs 0-7 at their reset values and
/// no measured launch (the PCRs of a lab host right after swtpm starts).
fn reset_value_policy() -> String {
    let values: Vec<String> = expected_pcrs(Launch::None)
        .iter()
        .filter(|(i, _)| **i <= 7)
        .map(|(i, v)| format!("{i} = \"{}\"", hex::encode(v)))
        .collect();
    format!(
        "require_measured_launch = false\n\
         pcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n\n\
         [[allow]]\n\
         name = \"swtpm-reset-values\"\n\
         pcrs = {{ {} }}\n",
        values.join(", ")
    )
}

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &reset_value_policy())
        .expect("policy");
    (dir, lab)
}

fn trusted_and_connected(server: &ServerProcess, host: &str) -> bool {
    server
        .get(&format!("/v1/hosts/{host}"))
        .and_then(|r| r.json())
        .is_ok_and(|v| v["connected"] == true && v["pools"][0]["trusted"] == true)
}

/// host-a in the pool with a running agent: rounds every second (down time
/// 3 s), PCRs watched every second, `extra` agent flags.
fn attesting_host(lab: &Lab, extra: &[&str]) -> (LabHost, ServerProcess, AgentProcess) {
    let host = lab.add_host("host-a", Launch::None).expect("host");
    let server = ServerProcess::start(lab.server_options("1s", "3s")).expect("server");
    let mut options = lab.agent_options(&host, &server);
    options.watch_interval = Some("1s".into());
    options.extra_args = extra.iter().map(|s| s.to_string()).collect();
    let agent = options.spawn(&lab.dir.join("agent.log")).expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || server
            .pool_members("default")
            .is_ok_and(|m| m == ["host-a"])),
        "host-a never joined:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    (host, server, agent)
}

/// swtpm is killed under a running agent, stays away past the server's down
/// time, and comes back with the same state on the same ports: the same
/// agent process (same PID, never restarted) reopens the TPM, loads the
/// same AK and the host is trusted again without a new enrolment.
#[test]
fn the_agent_recovers_when_its_tpm_comes_back() {
    let (_dir, lab) = lab();
    let (mut host, server, mut agent) = attesting_host(&lab, &[]);
    let pid = agent.pid();

    host.swtpm.kill();
    // Fail closed while the TPM is away: no quote, the host leaves the pool.
    assert!(
        wait_until(Duration::from_secs(30), || server
            .pool_members("default")
            .is_ok_and(|m| m.is_empty())),
        "host-a stayed in the pool without a TPM:\n{}",
        agent.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || agent
            .log_text()
            .contains("TPM connection failed")),
        "{}",
        agent.log_text()
    );
    // Several attempts hit the absent TPM before it returns.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running(), "{}", agent.log_text());

    host.swtpm.start_again().expect("swtpm on the same ports");
    assert!(
        wait_until(Duration::from_secs(90), || trusted_and_connected(
            &server, "host-a"
        )),
        "host-a was not trusted again after its TPM came back:\n{}\n{}",
        agent.log_text(),
        server.log_text()
    );
    assert!(agent.is_running(), "{}", agent.log_text());
    assert_eq!(agent.pid(), pid, "the same agent process");
    let log = agent.log_text();
    assert!(log.contains("TPM connection opened again"), "{log}");
    assert!(
        !log.contains("creating a NEW AK"),
        "the stored AK must be loaded again: {log}"
    );
    assert_eq!(
        log.matches("new_enrolment=true").count(),
        1,
        "enrolled once, at the start: {log}"
    );
    assert!(log.contains("new_enrolment=false"), "{log}");
}

/// swtpm stays away longer than `--tpm-lost-exit-after`: the agent exits
/// with code 3 and says why, so that systemd's `Restart=on-failure` takes
/// over.
#[test]
fn the_agent_exits_when_its_tpm_stays_away() {
    let (_dir, lab) = lab();
    let (mut host, _server, mut agent) = attesting_host(&lab, &["--tpm-lost-exit-after", "3s"]);
    host.swtpm.kill();
    let status = agent
        .wait_exit(Duration::from_secs(90))
        .expect("wait")
        .unwrap_or_else(|| panic!("the agent still runs:\n{}", agent.log_text()));
    let log = agent.log_text();
    assert_eq!(status.code(), Some(3), "{status}\n{log}");
    assert!(
        log.contains("no working TPM for longer than --tpm-lost-exit-after (3s)"),
        "{log}"
    );
    assert!(log.contains("exit_code=3"), "{log}");
}

/// A TPM that accepts commands but never answers (swtpm frozen): the TPM
/// thread is stuck in a command that no reopen can help, and after
/// `--tpm-lost-exit-after` the agent exits with code 3 all the same.
#[test]
fn the_agent_exits_when_a_tpm_command_does_not_return() {
    let (_dir, lab) = lab();
    let (host, _server, mut agent) = attesting_host(&lab, &["--tpm-lost-exit-after", "3s"]);
    host.swtpm.pause().expect("freeze swtpm");
    let status = agent.wait_exit(Duration::from_secs(90)).expect("wait");
    host.swtpm.resume().expect("thaw swtpm");
    let status = status.unwrap_or_else(|| panic!("the agent still runs:\n{}", agent.log_text()));
    let log = agent.log_text();
    assert_eq!(status.code(), Some(3), "{status}\n{log}");
    assert!(
        log.contains("no working TPM for longer than --tpm-lost-exit-after (3s)"),
        "{log}"
    );
    assert!(log.contains("a TPM request did not return"), "{log}");
}

/// The library alone: a `Tpm` whose swtpm was killed fails while it is
/// away, every call again (never a stale context's
/// `Esys called in bad sequence`), and works again with the same EK and AK
/// once swtpm is back on the same port, leaving nothing loaded.
#[test]
fn a_tpm_handle_works_again_after_swtpm_comes_back() {
    let (_dir, lab) = lab();
    let mut host = lab.add_host("host-a", Launch::None).expect("host");
    let mut tpm = Tpm::open(
        &host.swtpm.tcti(),
        &host.state_dir,
        EkAlg::Rsa2048,
        AkAlg::RsaSsa2048,
    )
    .expect("open");
    let id = tpm.identity().expect("identity");
    assert!(tpm.is_open());

    host.swtpm.kill();
    for attempt in 0..3 {
        let e = tpm.identity().expect_err("no TPM");
        assert!(
            e.discards_context(),
            "attempt {attempt}: {e} must not leave a context behind"
        );
        assert!(
            !e.to_string().contains("0x70007"),
            "attempt {attempt}: a stale context was used again: {e}"
        );
        assert!(!tpm.is_open(), "attempt {attempt}");
    }

    host.swtpm.start_again().expect("swtpm on the same port");
    assert_eq!(
        tpm.identity().expect("identity after the TPM came back"),
        id
    );
    assert!(tpm.is_open());
    let nonce = [7u8; 32];
    let quote = tpm.quote(&nonce, &[0, 1, 2, 3]).expect("quote");
    assert_eq!(quote.pcr_values.len(), 4);
    let loaded = tpm.loaded_handles().expect("handles");
    assert!(
        loaded.transient_objects.is_empty() && loaded.loaded_sessions.is_empty(),
        "{loaded:?}"
    );
}

/// A connection that dies leaves what it had loaded in a TPM without
/// resource manager (here: the primary keys tpm2-tools leave in swtpm, as
/// they do not flush them either). A reopened `Tpm` flushes them first, so
/// the TPM's few object slots are not lost for good.
#[test]
fn a_reopened_tpm_flushes_what_was_left_loaded() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::None).expect("host");
    let open = || {
        Tpm::open(
            &host.swtpm.tcti(),
            &host.state_dir,
            EkAlg::Rsa2048,
            AkAlg::RsaSsa2048,
        )
        .expect("open")
    };
    let mut tpm = open();
    let id = tpm.identity().expect("identity");
    tpm.close();
    let work = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["tpm2_createprimary", "-C", "o", "-c", "owner.ctx"],
        vec!["tpm2_createprimary", "-C", "e", "-c", "endorsement.ctx"],
    ] {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(work.path())
            .env("TPM2TOOLS_TCTI", host.swtpm.tcti())
            .output()
            .expect("tpm2-tools");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut probe = open();
    let left = probe.loaded_handles().expect("handles");
    drop(probe);
    assert!(
        left.transient_objects.len() >= 2,
        "the tools left something loaded: {left:?}"
    );

    assert_eq!(tpm.identity().expect("identity after reopening"), id);
    let loaded = tpm.loaded_handles().expect("handles");
    assert!(
        loaded.transient_objects.is_empty() && loaded.loaded_sessions.is_empty(),
        "{loaded:?}"
    );
}
