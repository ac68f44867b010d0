//! The operator CLI `trustpool` against a real server and real swtpm hosts:
//! capture → commit → reload, diff, offline check, dry-run, revoke and
//! readmit, "was it trusted at T", who may use the admin API, and a TPM
//! replacement held for approval. Each test has its own lab, server, ports
//! and operator certificate.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trustpool_tests::lab::{golden_policy, measured_boot_policy, Hardening, Lab, LabHost, Launch};
use trustpool_tests::pki::{CertFiles, TestCa};
use trustpool_tests::procs::{binary, read_sqlite, wait_until, ServerProcess};

/// The operator's certificate name (from the lab's operator CA), listed in
/// the server's `--operator`.
const OPERATOR: &str = "operator-alice";

/// What one run of `trustpool` did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `trustpool` with `conn` (connection flags) then `args`, with no
/// `TRUSTPOOL_*` variable inherited.
fn trustpool(conn: &[String], args: &[&str]) -> Run {
    let mut cmd = Command::new(binary("trustpool").expect("trustpool binary"));
    for var in [
        "TRUSTPOOL_SERVER",
        "TRUSTPOOL_CA",
        "TRUSTPOOL_CERT",
        "TRUSTPOOL_KEY",
        "TRUSTPOOL_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.args(conn).args(args).output().expect("trustpool runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tls_flags(server: &ServerProcess, ca: &Path, client: &CertFiles) -> Vec<String> {
    vec![
        "--server".into(),
        server.url(),
        "--ca".into(),
        ca.display().to_string(),
        "--cert".into(),
        client.cert.display().to_string(),
        "--key".into(),
        client.key.display().to_string(),
    ]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A lab whose server takes `OPERATOR` as an operator and serves the admin
/// socket too.
struct OpLab {
    _dir: tempfile::TempDir,
    lab: Lab,
    operator: CertFiles,
    server: ServerProcess,
    socket: PathBuf,
}

impl OpLab {
    /// Writes `policy` as the `default` pool, adds `hosts`, starts the server.
    fn start(policy: &str, hosts: &[(&str, Launch)]) -> (OpLab, Vec<LabHost>) {
        Self::start_with(policy, |lab| {
            hosts
                .iter()
                .map(|(name, launch)| lab.add_host(name, *launch).expect("host"))
                .collect()
        })
    }

    /// Like [`OpLab::start`] with hosts whose firmware booted: (name,
    /// OVMF capture), each with the golden launch and a hardened root.
    fn start_booted(policy: &str, hosts: &[(&str, &str)]) -> (OpLab, Vec<LabHost>) {
        Self::start_with(policy, |lab| {
            hosts
                .iter()
                .map(|(name, firmware)| {
                    lab.add_host_booted(name, Launch::Golden, Hardening::GoodCompute, firmware)
                        .expect("booted host")
                })
                .collect()
        })
    }

    fn start_with(policy: &str, add: impl FnOnce(&Lab) -> Vec<LabHost>) -> (OpLab, Vec<LabHost>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab::create(dir.path()).expect("lab");
        lab.write_policy("default", policy).expect("policy");
        let hosts = add(&lab);
        let operator = lab.issue_operator(OPERATOR).expect("operator certificate");
        let socket = dir.path().join("admin.sock");
        let mut options = lab.server_options("2s", "75s");
        options.operators = vec![OPERATOR.into()];
        options.admin_socket = Some(socket.clone());
        let server = ServerProcess::start(options).expect("server");
        (
            OpLab {
                _dir: dir,
                lab,
                operator,
                server,
                socket,
            },
            hosts,
        )
    }

    /// `trustpool` as the operator over mutual TLS.
    fn op(&self, args: &[&str]) -> Run {
        trustpool(
            &tls_flags(&self.server, &self.lab.ca_pem, &self.operator),
            args,
        )
    }

    /// `trustpool --json` as the operator.
    fn op_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.op(&all);
        assert_eq!(run.code, 0, "{run}");
        run.json()
    }

    /// One agent round (`--once`); its exit code and output.
    fn attest(&self, host: &LabHost) -> (i32, String) {
        let out = self
            .lab
            .agent_options(host, &self.server)
            .run_once()
            .expect("agent runs");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn members(&self) -> Vec<String> {
        self.server.pool_members("default").expect("feed")
    }

    /// The host's row of `trustpool hosts --json`.
    fn host_row(&self, host: &str) -> Value {
        let list = self.op_json(&["hosts"]);
        list["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["hostname"] == host).cloned())
            .unwrap_or_else(|| panic!("{host} not listed: {list}"))
    }

    fn logs(&self) -> String {
        self.server.log_text()
    }
}

/// A `default` pool that admits a build none of the lab hosts runs.
fn foreign_policy() -> String {
    format!(
        "# Pool 'default' before the capture.\nrequire_measured_launch = true\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]\n\n[[allow]]\nname = \"some-other-build\"\npcrs = {{ 17 = \"{}\", 18 = \"{}\" }}\n",
        "17".repeat(32),
        "18".repeat(32)
    )
}

#[test]
fn capture_commit_reload_makes_the_host_trusted_and_history_answers_before_and_after() {
    let (op, hosts) = OpLab::start(&foreign_policy(), &[("host-a", Launch::Golden)]);
    let host = &hosts[0];
    let (code, out) = op.attest(host);
    assert_eq!(code, 1, "not trusted under the foreign policy:\n{out}");
    let before_digest = op.op_json(&["policy", "show"])["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let before = now_ms();

    // Capture from the host's verified (but not allowed) evidence.
    let capture = op.op(&[
        "policy",
        "capture",
        "--host",
        "host-a",
        "--name",
        "golden-captured",
    ]);
    assert_eq!(capture.code, 0, "{capture}");
    assert!(
        capture.stdout.starts_with(
            "# Captured by `trustpool policy capture` from host-a's verified evidence of "
        ),
        "{capture}"
    );
    assert!(
        capture
            .stdout
            .contains("[[allow]]\nname = \"golden-captured\"\n"),
        "{capture}"
    );
    let golden17 = hex::encode(trustpool_tests::lab::expected_pcrs(Launch::Golden)[&17]);
    assert!(
        capture.stdout.contains(&format!("17 = \"{golden17}\"")),
        "{capture}"
    );

    // Commit: append to the pool file; it parses, and `policy check` agrees.
    let path = op.lab.policy_dir.join("default.toml");
    let text = format!("{}\n{}", foreign_policy(), capture.stdout);
    let pool = trustpool_evidence::policy::parse_pool("default.toml", &text)
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(pool.allow.len(), 2);
    assert_eq!(
        pool.allow[1].pcrs,
        trustpool_tests::lab::expected_pcrs(Launch::Golden)
    );
    // Write it elsewhere first and move it in, so the server never sees half a file.
    let staged = op.lab.dir.join("default.toml.new");
    std::fs::write(&staged, &text).expect("write");
    let check_dir = op.lab.dir.join("candidate");
    std::fs::create_dir_all(&check_dir).expect("dir");
    std::fs::write(check_dir.join("default.toml"), &text).expect("write");
    let check = trustpool(&[], &["policy", "check", &check_dir.display().to_string()]);
    assert_eq!(check.code, 0, "{check}");
    assert!(check.stdout.contains("valid, 1 pool, digest "), "{check}");
    std::fs::rename(&staged, &path).expect("commit");

    // Reload on SIGHUP (the server also notices the change by itself).
    let pid = nix::unistd::Pid::from_raw(i32::try_from(op.server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(20), || op.members()
            == vec!["host-a".to_string()]),
        "host-a not trusted after the reload: {:?}\n{}",
        op.members(),
        op.logs()
    );
    let info = op.op_json(&["policy", "show"]);
    let after_digest = info["digest"].as_str().expect("digest").to_string();
    assert_ne!(after_digest, before_digest);
    assert!(
        check.stdout.contains(&after_digest),
        "the offline digest is the server's: {after_digest}\n{check}"
    );
    let row = op.host_row("host-a");
    assert_eq!(row["state"], "trusted", "{row}");
    assert_eq!(row["trusted_pools"], serde_json::json!(["default"]));
    let table = op.op(&["hosts"]);
    assert_eq!(table.code, 0, "{table}");
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("host-a "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("trusted") && line.contains("default") && line.contains(" ago"),
        "{table}"
    );

    // History: the verdict change, and "was it trusted at T" before and after.
    // The server commits history in batches (every 200 ms).
    let verdicts = || {
        let history = op.op(&["hosts", "history", "host-a"]);
        assert_eq!(history.code, 0, "{history}");
        history
            .stdout
            .lines()
            .filter(|l| l.contains(" verdict "))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || verdicts()
            .iter()
            .any(|l| l.contains(" yes ") && l.contains("SIGHUP"))),
        "the reload's verdict change is in the history: {:?}\n{}",
        verdicts(),
        op.op(&["hosts", "history", "host-a"])
    );
    let at_before = op.op(&["hosts", "history", "host-a", "--at", &format!("@{before}")]);
    assert_eq!(at_before.code, 1, "{at_before}");
    assert!(at_before.stdout.contains("NOT trusted"), "{at_before}");
    assert!(at_before.stdout.contains(&before_digest), "{at_before}");
    assert!(
        at_before.stdout.contains("[pcr.not_allowed] PCR 17"),
        "{at_before}"
    );
    let at_now = op.op(&["hosts", "history", "host-a", "--at", "0s"]);
    assert_eq!(at_now.code, 0, "{at_now}");
    assert!(at_now.stdout.contains("TRUSTED in default"), "{at_now}");
    assert!(at_now.stdout.contains(&after_digest), "{at_now}");
    let json = op.op_json(&[
        "hosts", "history", "host-a", "--at", "0s", "--pool", "default",
    ]);
    assert_eq!(json["trusted"], true, "{json}");
    assert_eq!(json["pools"][0]["policy_digest"], after_digest.as_str());

    // The history survives a restart: the same questions get the same answers.
    let mut op = op;
    op.server.restart().expect("restart");
    let again = op.op(&["hosts", "history", "host-a", "--at", &format!("@{before}")]);
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stdout.contains(&before_digest), "{again}");
    assert!(again.stdout.contains("[pcr.not_allowed] PCR 17"), "{again}");
    let json = op.op_json(&[
        "hosts", "history", "host-a", "--at", "0s", "--pool", "default",
    ]);
    assert_eq!(
        json["trusted"], true,
        "still trusted from the stored verdict: {json}"
    );
}

/// The README's measured-boot flow on hosts that booted real OVMF logs: a
/// pool by events trusts the golden firmware and names the events of a
/// host whose boot order differs; capture --events from the golden host
/// gives the same rules; diff shows the boot order as changed events, not
/// PCRs; diff --rules, appended and reloaded, admits the other host from
/// its stored facts alone (no new report).
#[test]
fn measured_boot_policy_capture_diff_and_update_by_events() {
    let policy = measured_boot_policy("ovmf-default", &[]).expect("policy");
    let (mut op, hosts) = OpLab::start_booted(
        &policy,
        &[("host-a", "ovmf-default"), ("host-e", "ovmf-bootorder")],
    );
    let (code, out) = op.attest(&hosts[0]);
    assert_eq!(
        code, 0,
        "the golden firmware is trusted by its events:\n{out}"
    );
    let (code, out) = op.attest(&hosts[1]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[event.not_allowed] PCR 1 event 12 EV_EFI_VARIABLE_BOOT sha256 "),
        "the boot order is named as an event:\n{out}"
    );
    assert!(!out.contains("PCR 0 event"), "{out}");

    // Capture from the golden host: the same rules the pool was written with.
    let capture = op.op(&["policy", "capture", "--host", "host-a", "--events"]);
    assert_eq!(capture.code, 0, "{capture}");
    let rules = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .skip_while(|l| *l != "[events]")
            .map(str::to_string)
            .collect()
    };
    assert_eq!(rules(&capture.stdout), rules(&policy), "{capture}");

    // Diff: the boot order, as events of PCR 1 only.
    let diff = op.op(&["policy", "diff", "host-a", "host-e"]);
    assert_eq!(diff.code, 1, "{diff}");
    assert!(
        diff.stdout
            .contains("PCR 1 changed: host-a event 12 EV_EFI_VARIABLE_BOOT"),
        "{diff}"
    );
    let event_lines: Vec<&str> = diff
        .stdout
        .lines()
        .filter(|l| l.starts_with("  PCR "))
        .collect();
    assert!(
        !event_lines.is_empty() && event_lines.iter().all(|l| l.starts_with("  PCR 1 ")),
        "{diff}"
    );

    // Update: append host-e's events, check offline, reload: host-e joins
    // from its stored facts.
    let more = op.op(&["policy", "diff", "host-a", "host-e", "--rules"]);
    assert_eq!(more.code, 1, "{more}");
    let text = format!("{policy}\n{}", more.stdout);
    let candidate = op.lab.dir.join("candidate");
    std::fs::create_dir_all(&candidate).expect("dir");
    std::fs::write(candidate.join("default.toml"), &text).expect("write");
    let check = trustpool(&[], &["policy", "check", &candidate.display().to_string()]);
    assert_eq!(check.code, 0, "{check}\n{text}");
    std::fs::write(op.lab.policy_dir.join("default.toml"), &text).expect("commit");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(op.server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(20), || op.members()
            == vec!["host-a".to_string(), "host-e".to_string()]),
        "host-e not admitted by the reload: {:?}\n{}",
        op.members(),
        op.logs()
    );

    // Stored: each host's replayed logs in rows of their own, written when
    // a log changes; the facts body, which every report rewrites, refers
    // to them and holds no event.
    let (bodies, logs) = stored_facts(&op.server.options.db_path());
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for (host, body) in &bodies {
        assert!(body.contains("\"event_log_row\":\""), "{host}: {body}");
        assert!(!body.contains("\"events\""), "{host}: {body}");
    }
    let uefi: Vec<&(String, String, i64)> = logs.iter().filter(|l| l.1 == "uefi").collect();
    assert_eq!(uefi.len(), 2, "{logs:?}");
    assert!(uefi.iter().all(|l| l.2 > 4096), "{logs:?}");
    // A restart judges both hosts again by events from what is stored.
    op.server.restart().expect("restart");
    assert!(
        wait_until(Duration::from_secs(20), || op.members()
            == vec!["host-a".to_string(), "host-e".to_string()]),
        "not members after a restart: {:?}\n{}",
        op.members(),
        op.logs()
    );
}

#[test]
fn diff_between_golden_and_rogue_names_pcr_17() {
    let (op, hosts) = OpLab::start(
        &golden_policy(),
        &[("host-a", Launch::Golden), ("host-r", Launch::Rogue)],
    );
    assert_eq!(op.attest(&hosts[0]).0, 0);
    assert_eq!(op.attest(&hosts[1]).0, 1);
    let diff = op.op(&["policy", "diff", "host-a", "host-r"]);
    assert_eq!(diff.code, 1, "{diff}");
    let rows: Vec<&str> = diff
        .stdout
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 1, "only PCR 17 differs:\n{diff}");
    // The lab's swtpm hosts have no firmware, so no event log to compare.
    assert!(diff.stdout.contains("Events not compared: "), "{diff}");
    let golden = trustpool_tests::lab::expected_pcrs(Launch::Golden);
    let rogue = trustpool_tests::lab::expected_pcrs(Launch::Rogue);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        vec!["17", &hex::encode(golden[&17]), &hex::encode(rogue[&17])],
        "{diff}"
    );
    let json = op.op(&["--json", "policy", "diff", "host-a", "host-r"]);
    assert_eq!(json.code, 1, "{json}");
    assert_eq!(json.json()["differences"][0]["index"], 17);
    let same = op.op(&["policy", "diff", "host-a", "host-a"]);
    assert_eq!(same.code, 0, "{same}");
    assert!(same.stdout.contains("identical"), "{same}");
    let unknown = op.op(&["policy", "diff", "host-a", "nobody"]);
    assert_eq!(unknown.code, 3, "{unknown}");
}

/// A measured-launch pool whose entry leaves PCR 18 open would accept any
/// MLE (or none): `policy check` refuses it with file and line, offline.
#[test]
fn attack_policy_check_refuses_an_entry_that_does_not_pin_pcr_18() {
    let dir = tempfile::tempdir().expect("tempdir");
    let golden17 = hex::encode(trustpool_tests::lab::expected_pcrs(Launch::Golden)[&17]);
    std::fs::write(
        dir.path().join("default.toml"),
        format!(
            "require_measured_launch = true\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]\n\n[[allow]]\nname = \"any-mle\"\npcrs = {{ 17 = \"{golden17}\" }}\n"
        ),
    )
    .expect("write");
    let run = trustpool(&[], &["policy", "check", &dir.path().display().to_string()]);
    assert_eq!(run.code, 1, "{run}");
    let errors: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(errors.len(), 1, "{run}");
    assert!(
        errors[0].contains("default.toml:6:8: allow entry 'any-mle' does not pin PCR 18: "),
        "{run}"
    );
}

#[test]
fn policy_check_is_offline_and_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("default.toml"), golden_policy()).expect("write");
    // broken.toml line 5: a PCR value that is not 64 hex characters; gold.toml line 2: unknown key.
    std::fs::write(
        dir.path().join("broken.toml"),
        "require_measured_launch = false\n\n[[allow]]\nname = \"x\"\npcrs = { 0 = \"00\" }\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("gold.toml"),
        "require_measured_launch = false\nrequire_chekcs = []\n[[allow]]\nname = \"any\"\npcrs = {}\n",
    )
    .expect("write");
    // No server anywhere: the connection options are not even looked at.
    let conn = vec![
        "--socket".to_string(),
        "/nonexistent/admin.sock".to_string(),
    ];
    let run = trustpool(
        &conn,
        &["policy", "check", &dir.path().display().to_string()],
    );
    assert_eq!(run.code, 1, "{run}");
    let errors: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(errors.len(), 2, "{run}");
    assert!(
        errors[0].contains("broken.toml:5:") && errors[0].contains("64 hex"),
        "{run}"
    );
    assert!(
        errors[1].contains("gold.toml:2:") && errors[1].contains("require_chekcs"),
        "{run}"
    );
    let json = trustpool(
        &[],
        &[
            "--json",
            "policy",
            "check",
            &dir.path().display().to_string(),
        ],
    );
    assert_eq!(json.code, 1, "{json}");
    assert_eq!(json.json()["errors"].as_array().map(Vec::len), Some(2));

    std::fs::remove_file(dir.path().join("broken.toml")).expect("rm");
    std::fs::write(
        dir.path().join("gold.toml"),
        "require_measured_launch = false\n[[allow]]\nname = \"any\"\npcrs = {}\n",
    )
    .expect("write");
    let run = trustpool(&[], &["policy", "check", &dir.path().display().to_string()]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("valid, 2 pools, digest "), "{run}");
    assert!(
        run.stdout.contains("  default: ") && run.stdout.contains("  gold: "),
        "{run}"
    );
    let missing = trustpool(&[], &["policy", "check", "/nonexistent/policy"]);
    assert_eq!(missing.code, 2, "{missing}");
}

#[test]
fn dry_run_of_a_stricter_policy_lists_the_host_under_leave_without_enforcing_it() {
    let (op, hosts) = OpLab::start(&golden_policy(), &[("host-a", Launch::Golden)]);
    assert_eq!(op.attest(&hosts[0]).0, 0);
    assert_eq!(op.members(), vec!["host-a".to_string()]);
    let candidate = op.lab.dir.join("candidate");
    std::fs::create_dir_all(&candidate).expect("dir");
    let dir = candidate.display().to_string();

    // The same policy: host-a stays, exit 0.
    std::fs::write(candidate.join("default.toml"), golden_policy()).expect("write");
    let same = op.op(&["policy", "dry-run", &dir]);
    assert_eq!(same.code, 0, "{same}");
    assert!(same.stdout.contains("  stay:  host-a"), "{same}");

    // Stricter: only a build nobody runs. host-a would leave; exit 1.
    std::fs::write(candidate.join("default.toml"), foreign_policy()).expect("write");
    let stricter = op.op(&["policy", "dry-run", &dir]);
    assert_eq!(stricter.code, 1, "{stricter}");
    assert!(
        stricter
            .stdout
            .contains("Pool default:\n  join:  -\n  leave: host-a\n"),
        "{stricter}"
    );
    let json = op.op(&["--json", "policy", "dry-run", &dir]);
    assert_eq!(
        json.json()["pools"][0]["leave"],
        serde_json::json!(["host-a"])
    );
    // Not enforced.
    assert_eq!(op.members(), vec!["host-a".to_string()]);
    assert_eq!(op.host_row("host-a")["state"], "trusted");

    // Invalid candidate: the errors with file and line, exit 1.
    std::fs::write(
        candidate.join("default.toml"),
        "require_measured_launch = maybe\n",
    )
    .expect("write");
    let invalid = op.op(&["policy", "dry-run", &dir]);
    assert_eq!(invalid.code, 1, "{invalid}");
    assert!(invalid.stdout.contains("default.toml:1:"), "{invalid}");
}

#[test]
fn revoke_takes_the_host_out_at_once_and_readmit_lets_its_next_report_decide() {
    let (op, hosts) = OpLab::start(&golden_policy(), &[("host-a", Launch::Golden)]);
    assert_eq!(op.attest(&hosts[0]).0, 0);
    assert_eq!(op.members(), vec!["host-a".to_string()]);
    let trusted_at = now_ms();

    let revoke = op.op(&["hosts", "revoke", "host-a", "--comment", "disk swapped"]);
    assert_eq!(revoke.code, 0, "{revoke}");
    assert!(
        revoke.stdout.starts_with("host-a: revoked by")
            && !revoke.stdout.contains("host-a: host-a"),
        "{revoke}"
    );
    // At once, without waiting for a report.
    assert!(op.members().is_empty(), "{:?}", op.members());
    let revoked_at = now_ms();
    let table = op.op(&["hosts"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("host-a "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("revoked") && line.contains(&format!("revoked by {OPERATOR}")),
        "{table}"
    );
    let show = op.op(&["hosts", "show", "host-a"]);
    assert_eq!(show.code, 0, "{show}");
    assert!(
        show.stdout
            .contains(&format!("Revoked:     by {OPERATOR} at ")),
        "{show}"
    );
    // Its next report does not bring it back.
    assert_ne!(op.attest(&hosts[0]).0, 0);
    assert!(op.members().is_empty());

    // "Was it trusted at T?" before and during the revocation (the history
    // writer commits its batches within 200 ms).
    let ask_before = || {
        op.op(&[
            "hosts",
            "history",
            "host-a",
            "--at",
            &format!("@{trusted_at}"),
        ])
    };
    assert!(
        wait_until(Duration::from_secs(5), || ask_before().code == 0),
        "{}",
        ask_before()
    );
    let during = op.op(&[
        "hosts",
        "history",
        "host-a",
        "--at",
        &format!("@{revoked_at}"),
    ]);
    assert_eq!(during.code, 1, "{during}");
    assert!(during.stdout.contains("revoked"), "{during}");

    let readmit = op.op(&["hosts", "readmit", "host-a"]);
    assert_eq!(readmit.code, 0, "{readmit}");
    // Its verdict from before the revocation is still within the down time,
    // yet readmitting alone trusts nobody: the next report decides.
    assert!(op.members().is_empty(), "{:?}", op.members());
    let (code, out) = op.attest(&hosts[0]);
    assert_eq!(
        code,
        0,
        "trusted after its next report:\n{out}\n{}",
        op.logs()
    );
    assert_eq!(op.members(), vec!["host-a".to_string()]);
    let history = op.op(&["hosts", "history", "host-a"]);
    for event in ["revoked", "readmitted"] {
        assert!(
            history
                .stdout
                .lines()
                .any(|l| l.contains(event) && l.contains(OPERATOR)),
            "{event} by {OPERATOR}:\n{history}"
        );
    }
    // Readmitting a host that is not revoked is refused.
    assert_eq!(op.op(&["hosts", "readmit", "host-a"]).code, 2);
    assert_eq!(op.op(&["hosts", "revoke", "nobody"]).code, 3);
}

#[test]
fn the_admin_api_refuses_host_certificates_and_other_cas() {
    let (op, hosts) = OpLab::start(&golden_policy(), &[("host-a", Launch::Golden)]);
    assert_eq!(op.attest(&hosts[0]).0, 0);

    // The operator may; an agent's host certificate may not.
    assert_eq!(op.op(&["hosts"]).code, 0);
    let as_host = trustpool(
        &tls_flags(&op.server, &op.lab.ca_pem, &hosts[0].certs),
        &["hosts"],
    );
    assert_eq!(as_host.code, 2, "{as_host}");
    assert!(as_host.stderr.contains("not an operator"), "{as_host}");
    assert_eq!(as_host.stderr.lines().count(), 1, "{as_host}");
    assert!(as_host.stdout.is_empty(), "{as_host}");
    let revoke = trustpool(
        &tls_flags(&op.server, &op.lab.ca_pem, &hosts[0].certs),
        &["hosts", "revoke", "host-a"],
    );
    assert_eq!(revoke.code, 2, "{revoke}");
    assert_eq!(op.members(), vec!["host-a".to_string()]);

    // The operator's name, from another CA: refused in the TLS handshake.
    let other = TestCa::new("another CA").expect("ca");
    let impostor = other
        .issue_client(&op.lab.dir.join("impostor"), OPERATOR)
        .expect("certificate");
    let run = trustpool(
        &tls_flags(&op.server, &op.lab.ca_pem, &impostor),
        &["hosts"],
    );
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(run.stderr.starts_with("trustpool: error: "), "{run}");
    assert!(run.stderr.contains("certificate"), "{run}");

    // Nothing listens: a clear one-line connection error.
    let nowhere = trustpool(
        &[
            "--socket".into(),
            op.lab.dir.join("none.sock").display().to_string(),
        ],
        &["hosts"],
    );
    assert_eq!(nowhere.code, 2, "{nowhere}");
    assert!(
        nowhere
            .stderr
            .contains("cannot connect to the admin socket"),
        "{nowhere}"
    );

    // Root on the local socket is an operator.
    if nix::unistd::geteuid().is_root() {
        let socket = vec!["--socket".to_string(), op.socket.display().to_string()];
        let run = trustpool(&socket, &["policy", "show"]);
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains("Pools:           default"), "{run}");
        let unknown = trustpool(&socket, &["hosts", "show", "nobody"]);
        assert_eq!(unknown.code, 3, "{unknown}");
    }
}

#[test]
fn a_new_tpm_for_a_known_host_is_pending_until_approved() {
    let (op, hosts) = OpLab::start(
        &golden_policy(),
        &[
            ("host-a", Launch::Golden),
            ("host-a-new-tpm", Launch::Golden),
        ],
    );
    let (old, new_tpm) = (&hosts[0], &hosts[1]);
    assert_eq!(op.attest(old).0, 0);
    let ak_before = op.op_json(&["hosts", "show", "host-a"])["evidence"]["ak_fingerprint"]
        .as_str()
        .expect("ak")
        .to_string();

    // The same hostname and certificate, a fresh TPM and a new agent state dir.
    let mut replaced = op.lab.agent_options(old, &op.server);
    replaced.tcti = new_tpm.swtpm.tcti();
    replaced.state_dir = op.lab.dir.join("host-a-replaced-agent");
    std::fs::create_dir_all(&replaced.state_dir).expect("dir");
    let out = replaced.run_once().expect("agent runs");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("tpm.clock_rollback"),
        "a new TPM starts a clock history of its own:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a new TPM must not be trusted before approval:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(op.members().is_empty(), "{:?}", op.members());
    let row = op.host_row("host-a");
    assert_eq!(row["state"], "pending", "{row}");
    let show = op.op(&["hosts", "show", "host-a"]);
    assert!(show.stdout.contains("Pending:"), "{show}");

    let approve = op.op(&[
        "hosts",
        "approve",
        "host-a",
        "--comment",
        "motherboard replaced",
    ]);
    assert_eq!(approve.code, 0, "{approve}");
    let out = replaced.run_once().expect("agent runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "trusted after approval:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        op.logs()
    );
    assert_eq!(op.members(), vec!["host-a".to_string()]);
    let detail = op.op_json(&["hosts", "show", "host-a"]);
    assert_eq!(detail["state"], "trusted");
    assert_ne!(detail["evidence"]["ak_fingerprint"], ak_before.as_str());
    // Nothing left to approve.
    assert_eq!(op.op(&["hosts", "approve", "host-a"]).code, 3);
}

/// The facts bodies (host, JSON) and the log rows (host, domain, bytes) in
/// the server's SQLite file.
type StoredRows = (Vec<(String, String)>, Vec<(String, String, i64)>);
fn stored_facts(db: &std::path::Path) -> StoredRows {
    read_sqlite(db, async |conn| {
        let bodies = sqlx::query_as("SELECT hostname, body FROM facts ORDER BY hostname")
            .fetch_all(&mut *conn)
            .await
            .expect("facts");
        let logs = sqlx::query_as(
            "SELECT hostname, domain, length(body) FROM event_logs ORDER BY hostname, domain",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("event logs");
        (bodies, logs)
    })
}
