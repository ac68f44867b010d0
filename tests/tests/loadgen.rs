//! The load generator end to end, CI-sized: `trustpool-loadgen pki`, a real
//! server started from its files, `trustpool-loadgen run` with 2,000
//! simulated hosts (each its own mutual-TLS stream, enrolment with
//! credential activation, quotes) for about 30 s of steady attestation and
//! one PCR flip of one host, out of the feed and back.
//!
//! Functional outcome only, no timing bound: every host enrolled and
//! trusted, the flipped host out and back, no session error of any code,
//! and no host made untrusted by the server's own trouble (`server.*`
//! reasons such as `server.store_unavailable`). Robust on a loaded 2-core
//! machine: a 20 s ramp, the load generator's reconnection with back-off,
//! a 10 s report interval with a 120 s down time (a slow round never
//! expires a verdict), waits bounded only by generous deadlines.
//!
//! Size: 2,000 hosts in a debug build take about 4 s of loadgen CPU and
//! 10 s of server CPU for the enrolments and ~600 rounds; this is the
//! size the issue asks for and it stays well inside the 20,000 open files
//! this machine allows each process.

use std::process::Command;
use trustpool_tests::procs::{binary, PublicationOptions, ServerOptions, ServerProcess};

const HOSTS: u32 = 2000;
const FLIPPED: &str = "lg-000007";

#[test]
fn two_thousand_simulated_hosts_enrol_attest_and_one_flip_is_detected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, server) = pki_and_server(tmp.path(), HOSTS, "10s", vec![]);

    let run = Command::new(binary("trustpool-loadgen").expect("binary"))
        .args(["run", "--dir"])
        .arg(&pki)
        .args(["--server", &server.url()])
        .args(["--hosts", &HOSTS.to_string()])
        .args([
            "--ramp",
            "20s",
            "--duration",
            "60s",
            "--interval-hint",
            "10s",
        ])
        .args(["--flip", FLIPPED, "--flips", "1", "--flip-hold", "2s"])
        .args(["--feed", &format!("https://127.0.0.1:{}", server.http_port)])
        .env("TRUSTPOOL_LOADGEN_LOG", "warn")
        .output()
        .expect("run the load generator");
    let summary = summary_of(&run);
    let n = u64::from(HOSTS);
    let field = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
    let context = || {
        format!(
            "{summary:#}\nserver log tail:\n{}",
            tail(&server.log_text())
        )
    };

    assert_eq!(field("hosts_connected"), n, "{}", context());
    assert_eq!(field("hosts_enrolled"), n, "{}", context());
    assert_eq!(field("new_enrolments"), n, "{}", context());
    assert_eq!(field("activations"), n, "{}", context());
    assert_eq!(
        summary["errors"].as_object().map(|m| m.len()),
        Some(0),
        "no session error of any code: {}",
        context()
    );
    // Every host's last verdict trusted, the flipped one back in too.
    assert_eq!(field("hosts_last_trusted"), n, "{}", context());
    // Every round trip answered; several rounds per host.
    assert!(field("attestations") >= 2 * n, "{}", context());
    // The only untrusted verdicts: the flipped host's rogue PCR 17.
    let reasons = summary["untrusted_reasons"].as_object().expect("reasons");
    for code in reasons.keys() {
        assert!(
            !code.starts_with("server."),
            "a host was untrusted by the server's own trouble: {}",
            context()
        );
        assert_eq!(code, "pcr.not_allowed", "{}", context());
    }
    let flip = &summary["flip"];
    assert_eq!(
        flip["failures"].as_array().map(Vec::len),
        Some(0),
        "{}",
        context()
    );
    assert_eq!(flip["feed_out_ms"]["samples"], 1, "{}", context());
    assert_eq!(flip["feed_back_ms"]["samples"], 1, "{}", context());
    assert_eq!(flip["verdict_out_ms"]["samples"], 1, "{}", context());

    // The server's own view: every host in the pool (the verdicts are valid
    // for the 120 s down time after the run), none with a server.* reason.
    let members = server.pool_members("default").expect("feed");
    assert_eq!(members.len(), HOSTS as usize, "{}", context());
    assert!(members.iter().any(|m| m == FLIPPED));
    for host in [FLIPPED, "lg-000001", "lg-001000", "lg-002000"] {
        let detail = server
            .get(&format!("/v1/hosts/{host}"))
            .expect("host detail")
            .json()
            .expect("json");
        let pools = detail["pools"].as_array().expect("pools");
        assert!(!pools.is_empty(), "{detail}");
        for p in pools {
            assert_eq!(p["trusted"], true, "{host}: {detail}");
            assert!(
                p["reasons"].as_array().is_some_and(|r| r
                    .iter()
                    .all(|r| !r["code"].as_str().unwrap_or("").starts_with("server."))),
                "{host}: {detail}"
            );
        }
    }
    let log = server.log_text();
    assert!(!log.contains("server.store_unavailable"), "{}", tail(&log));
    // Sanity of the load measured: a 60 s run kept every host connected.
    assert_eq!(field("connected_peak"), n, "{}", context());
}

/// `trustpool-loadgen pki` for `hosts` hosts in `dir/pki`, and a server
/// started from its files (report interval `interval`, a 120 s down time so
/// that a slow round never expires a verdict, `extra_args` added).
fn pki_and_server(
    dir: &std::path::Path,
    hosts: u32,
    interval: &str,
    extra_args: Vec<String>,
) -> (std::path::PathBuf, ServerProcess) {
    let pki = dir.join("pki");
    let out = Command::new(binary("trustpool-loadgen").expect("binary"))
        .args(["pki", "--dir"])
        .arg(&pki)
        .args(["--hosts", &hosts.to_string()])
        .args(["--report-interval", interval, "--down-time", "120s"])
        .output()
        .expect("run pki");
    assert!(
        out.status.success(),
        "pki failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(pki.join("feed-token"))
        .expect("feed token")
        .trim()
        .to_string();
    let server = ServerProcess::start(ServerOptions {
        dir: dir.join("server"),
        ca: pki.join("ca.pem"),
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
        policy_dir: pki.join("policy"),
        ek_roots: pki.join("ek-roots"),
        report_interval: interval.into(),
        down_time: "120s".into(),
        publication: PublicationOptions {
            feed_tokens: vec![("loadgen".into(), token)],
            extra_args,
            ..Default::default()
        },
        operators: vec![],
        operator_ca: None,
        crls: vec![],
        admin_socket: None,
        db: None,
        db_url: None,
    })
    .expect("server");
    (pki, server)
}

/// The JSON line a successful `trustpool-loadgen run` printed.
fn summary_of(run: &std::process::Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadgen run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the summary is not JSON ({e}): {stdout}\n{stderr}"))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The value of one sample of `/metrics` (`None` when absent).
fn metric(server: &ServerProcess, sample: &str) -> Option<f64> {
    let text = server.get("/metrics").ok()?.body;
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// Overload, made small: 200 hosts at a 1 s interval against a server that
/// admits two attestation rounds and three enrolments at a time. Rounds
/// wait for their slot (the interval stretches, the wait is in
/// `trustpool_admission_wait_seconds`), never more than two are in
/// progress, and still every host enrols and is trusted, with no session
/// error and no `server.*` reason: a slow server stretches, it does not
/// make hosts untrusted.
#[test]
fn an_overloaded_server_paces_its_rounds_and_keeps_every_host_trusted() {
    const N: u32 = 200;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, server) = pki_and_server(
        tmp.path(),
        N,
        "1s",
        vec![
            "--max-attestations-in-flight".into(),
            "2".into(),
            "--max-enrolments-in-flight".into(),
            "3".into(),
        ],
    );
    let mut run = Command::new(binary("trustpool-loadgen").expect("binary"))
        .args(["run", "--dir"])
        .arg(&pki)
        .args(["--server", &server.url()])
        .args(["--hosts", &N.to_string()])
        .args(["--ramp", "2s", "--duration", "25s", "--interval-hint", "1s"])
        .env("TRUSTPOOL_LOADGEN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the load generator");
    // Sample the rounds in progress while the load runs.
    let mut most_in_use = 0.0f64;
    let mut samples = 0;
    while run.try_wait().expect("wait").is_none() {
        if let Some(v) = metric(&server, "trustpool_admission_in_use{stage=\"attest\"}") {
            most_in_use = most_in_use.max(v);
            samples += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let run = run.wait_with_output().expect("load generator output");
    let summary = summary_of(&run);
    let context = || {
        format!(
            "{summary:#}\nserver log tail:\n{}",
            tail(&server.log_text())
        )
    };
    let field = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
    let n = u64::from(N);

    assert!(samples > 10, "the metric was sampled during the run");
    assert!(most_in_use >= 1.0, "rounds were in progress: {most_in_use}");
    assert!(
        most_in_use <= 2.0,
        "never more rounds in progress than admitted: {most_in_use}"
    );
    assert_eq!(field("hosts_enrolled"), n, "{}", context());
    assert_eq!(field("hosts_last_trusted"), n, "{}", context());
    assert_eq!(
        summary["errors"].as_object().map(|m| m.len()),
        Some(0),
        "{}",
        context()
    );
    let reasons = summary["untrusted_reasons"].as_object().expect("reasons");
    assert!(reasons.is_empty(), "no host was untrusted: {}", context());
    assert_eq!(
        server.pool_members("default").expect("feed").len(),
        N as usize
    );
    // 200 hosts asking for a round every second through two slots: rounds
    // waited, and every round went through the gate.
    let waited = metric(
        &server,
        "trustpool_admission_wait_seconds_sum{stage=\"attest\"}",
    )
    .expect("wait sum");
    let rounds = metric(
        &server,
        "trustpool_admission_wait_seconds_count{stage=\"attest\"}",
    )
    .expect("wait count");
    let answered =
        metric(&server, "trustpool_attestation_round_trip_seconds_count").expect("round trips");
    assert!(waited > 0.0, "rounds waited for a slot: {waited}");
    assert!(
        rounds >= answered,
        "every round was admitted: {rounds} < {answered}"
    );
    let enrol_waits = metric(
        &server,
        "trustpool_admission_wait_seconds_count{stage=\"enrol\"}",
    )
    .expect("enrol count");
    assert_eq!(
        enrol_waits,
        f64::from(N),
        "each enrolment was admitted once"
    );
    assert!(!server.log_text().contains("server.store_unavailable"));
}
