//! Who may use which service, and revoked certificates, against a real
//! server, real swtpm hosts and CRLs made by the real `openssl ca -gencrl`:
//! operators have their own CA (an agents'-CA certificate is never an
//! operator, whatever it names), an operator certificate cannot open an
//! agent session, and a revoked agent, operator or reader certificate is
//! refused at the handshake (and after a SIGHUP that loads a new CRL). A CRL
//! that cannot be used stops start-up with a clear error, and one that
//! cannot be used at a reload leaves the previous CRLs in force.
//!
//! Each refusal is asserted by its reason code in
//! `trustpool_tls_refused_total{listener, reason}`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use trustpool_tests::http::TlsClient;
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::pki::{CertFiles, CrlValidity, TestCa};
use trustpool_tests::procs::{binary, wait_until, ServerOptions, ServerProcess};

/// The operator name the servers of these tests accept.
const OPERATOR: &str = "operator-alice";

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    (dir, lab)
}

fn options(lab: &Lab, crls: &[&Path]) -> ServerOptions {
    let mut options = lab.server_options("2s", "6s");
    options.operators = vec![OPERATOR.into()];
    options.crls = crls.iter().map(|p| p.to_path_buf()).collect();
    options
}

/// The value of the sample `line_prefix` (e.g. `name{labels}`) in /metrics; 0 if absent.
fn metric(server: &ServerProcess, sample: &str) -> u64 {
    let text = server.get("/metrics").expect("metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn refused(listener: &str, reason: &str) -> String {
    format!("trustpool_tls_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// `trustpool hosts` over mutual TLS with `client`: exit code and stderr.
fn admin(server: &ServerProcess, lab: &Lab, client: &CertFiles) -> (i32, String) {
    let out = Command::new(binary("trustpool").expect("trustpool"))
        .env_remove("TRUSTPOOL_SERVER")
        .env_remove("TRUSTPOOL_SOCKET")
        .args(["--server", &server.url(), "--ca"])
        .arg(&lab.ca_pem)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .args(["--json", "hosts"])
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

/// One agent round (`--once`) of `host` with the certificate `certs`.
fn attest_with(
    lab: &Lab,
    host: &LabHost,
    certs: &CertFiles,
    server: &ServerProcess,
) -> (i32, String) {
    let mut options = lab.agent_options(host, server);
    options.cert = certs.cert.clone();
    options.key = certs.key.clone();
    let out = options.run_once().expect("agent runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn attest(lab: &Lab, host: &LabHost, server: &ServerProcess) -> (i32, String) {
    attest_with(lab, host, &host.certs, server)
}

/// Puts `from` in place at `to` in one rename (the server never reads half a file).
fn install(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).expect("copy");
    std::fs::rename(&staged, to).expect("rename");
}

fn sighup(server: &ServerProcess) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
}

fn enrolled(server: &ServerProcess, host: &str) -> bool {
    server
        .get(&format!("/v1/hosts/{host}"))
        .is_ok_and(|r| r.status == 200)
}

#[test]
fn attack_host_certificate_naming_an_operator_is_refused_on_the_admin_api() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    // A certificate of the agents' CA whose name is the operator's, before
    // any host of that name enrolled (the old name-only check let it in).
    let impostor = lab
        .ca
        .issue_client(&lab.dir.join("impostor"), OPERATOR)
        .expect("certificate");
    let operator = lab.issue_operator(OPERATOR).expect("operator");
    let server = ServerProcess::start(options(&lab, &[])).expect("server");

    let (code, out) = admin(&server, &lab, &impostor);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not an operator"), "{out}");
    assert_eq!(metric(&server, &refused("admin", "unknown_issuer")), 1);

    // An agent's own host certificate, once enrolled: refused the same way.
    assert_eq!(attest(&lab, &host, &server).0, 0);
    let (code, out) = admin(&server, &lab, &host.certs);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not an operator"), "{out}");
    assert_eq!(metric(&server, &refused("admin", "unknown_issuer")), 2);

    // The operator's certificate from the operator CA is accepted.
    let (code, out) = admin(&server, &lab, &operator);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"host-a\""), "{out}");
}

#[test]
fn attack_operator_certificate_cannot_open_an_agent_session() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    // The operator CA issues a certificate naming the host.
    let forged = lab
        .operator_ca
        .issue_client(&lab.dir.join("forged"), "host-a")
        .expect("certificate");
    let server = ServerProcess::start(options(&lab, &[])).expect("server");

    let (code, out) = attest_with(&lab, &host, &forged, &server);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown_issuer"), "{out}");
    assert_eq!(
        metric(&server, &refused("attestation", "unknown_issuer")),
        1
    );
    assert!(!enrolled(&server, "host-a"), "{}", server.log_text());

    // The host's own certificate still enrols.
    assert_eq!(attest(&lab, &host, &server).0, 0);
}

#[test]
fn attack_revoked_agent_certificate_is_refused_at_the_handshake() {
    let (_dir, lab) = lab();
    let revoked = lab.add_host("host-a", Launch::Golden).expect("host");
    let good = lab.add_host("host-b", Launch::Golden).expect("host");
    let crl = lab
        .ca
        .crl(
            &lab.dir.join("agents-ca"),
            &[&revoked.certs.cert],
            CrlValidity::Days(30),
        )
        .expect("openssl ca -gencrl");
    let server = ServerProcess::start(options(&lab, &[&crl])).expect("server");

    let (code, out) = attest(&lab, &revoked, &server);
    assert_eq!(code, 2, "{out}");
    assert!(metric(&server, &refused("grpc", "revoked")) >= 1);
    let log = server.log_text();
    assert!(
        log.contains("CN=host-a") && log.contains("is revoked (KeyCompromise)"),
        "{log}"
    );
    assert!(!enrolled(&server, "host-a"), "host-a never attests");
    assert!(server.pool_members("default").expect("feed").is_empty());

    // A certificate the CRL does not list is not affected.
    assert_eq!(attest(&lab, &good, &server).0, 0);
    assert_eq!(server.pool_members("default").expect("feed"), ["host-b"]);
}

#[test]
fn attack_certificate_revoked_while_running_is_refused_after_sighup() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let ca_dir = lab.dir.join("agents-ca");
    let crl = lab.dir.join("agents.crl");
    install(
        &lab.ca
            .crl(&ca_dir, &[], CrlValidity::Days(30))
            .expect("empty CRL"),
        &crl,
    );
    let server = ServerProcess::start(options(&lab, &[&crl])).expect("server");
    let mut agent = lab
        .agent_options(&host, &server)
        .spawn(&lab.dir.join("agent.log"))
        .expect("agent");
    assert!(
        wait_until(Duration::from_secs(30), || server
            .pool_members("default")
            .is_ok_and(|m| m == ["host-a"])),
        "{}",
        server.log_text()
    );

    // Revoke it, install the new CRL, SIGHUP: the open stream ends, every
    // reconnection is refused in the handshake, the host leaves the pool
    // when its last verdict expires.
    install(
        &lab.ca
            .crl(&ca_dir, &[&host.certs.cert], CrlValidity::Days(30))
            .expect("CRL"),
        &crl,
    );
    sighup(&server);
    assert!(
        wait_until(Duration::from_secs(20), || metric(
            &server,
            &refused("attestation", "revoked")
        ) == 1),
        "{}",
        server.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            &server,
            &refused("grpc", "revoked")
        ) >= 1),
        "the agent reconnects and is refused:\n{}",
        agent.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(20), || server
            .pool_members("default")
            .is_ok_and(|m| m.is_empty())),
        "{}",
        server.log_text()
    );
    assert_eq!(
        metric(&server, "trustpool_crl_reloads_total{outcome=\"ok\"}"),
        1
    );
    agent.stop().expect("agent stops");
}

#[test]
fn attack_revoked_operator_certificate_is_refused() {
    let (_dir, lab) = lab();
    let alice = lab.issue_operator(OPERATOR).expect("operator");
    let bob = lab.issue_operator("operator-bob").expect("operator");
    let crl = lab
        .operator_ca
        .crl(
            &lab.dir.join("operator-ca"),
            &[&alice.cert],
            CrlValidity::Days(30),
        )
        .expect("openssl ca -gencrl");
    let mut options = options(&lab, &[&crl]);
    options.operators.push("operator-bob".into());
    let server = ServerProcess::start(options).expect("server");

    let (code, out) = admin(&server, &lab, &alice);
    assert_eq!(code, 2, "{out}");
    assert!(metric(&server, &refused("grpc", "revoked")) >= 1);
    assert!(
        server.log_text().contains("CN=operator-alice"),
        "{}",
        server.log_text()
    );
    let (code, out) = admin(&server, &lab, &bob);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn attack_revoked_reader_certificate_is_refused() {
    let (_dir, lab) = lab();
    let reader_ca = TestCa::new("trustpool reader CA").expect("reader CA");
    let reader_ca_pem = reader_ca
        .write_cert(&lab.dir.join("reader-ca.pem"))
        .expect("write");
    let nova = reader_ca
        .issue_client(&lab.dir.join("readers"), "nova-scheduler")
        .expect("reader");
    let other = reader_ca
        .issue_client(&lab.dir.join("readers"), "dashboard")
        .expect("reader");
    let crl = reader_ca
        .crl(
            &lab.dir.join("reader-ca"),
            &[&nova.cert],
            CrlValidity::Days(30),
        )
        .expect("openssl ca -gencrl");
    let mut options = options(&lab, &[&crl]);
    options.publication.reader_ca = Some(reader_ca_pem);
    let server = ServerProcess::start(options).expect("server");

    let as_nova = TlsClient::new(&lab.ca_pem, Some((&nova.cert, &nova.key))).expect("tls");
    let as_other = TlsClient::new(&lab.ca_pem, Some((&other.cert, &other.key))).expect("tls");
    let refused_request = server.https(&as_nova, "GET", "/v1/pools/default/hosts", &[], None);
    assert!(
        refused_request.is_err(),
        "a revoked reader is served: {refused_request:?}"
    );
    assert!(metric(&server, &refused("https", "revoked")) >= 1);
    let ok = server
        .https(&as_other, "GET", "/v1/pools/default/hosts", &[], None)
        .expect("served");
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// Starts a server with `crl` and returns its start-up error.
fn start_error(lab: &Lab, crl: &Path) -> String {
    match ServerProcess::start(options(lab, &[crl])) {
        Ok(_) => panic!("the server started with the CRL {}", crl.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn attack_bad_crl_at_start_is_a_clear_error() {
    let (_dir, lab) = lab();
    // Not a CRL at all.
    let garbage = lab.dir.join("garbage.crl");
    std::fs::write(
        &garbage,
        "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
    )
    .expect("write");
    let err = start_error(&lab, &garbage);
    assert!(
        err.contains(&format!("{} is not a CRL", garbage.display())),
        "{err}"
    );

    // A CRL of a CA the server does not know.
    let stranger = TestCa::new("some other CA").expect("CA");
    let foreign = stranger
        .crl(&lab.dir.join("stranger-ca"), &[], CrlValidity::Days(30))
        .expect("CRL");
    let err = start_error(&lab, &foreign);
    assert!(
        err.contains("is issued by 'CN=some other CA', which is none of the configured CAs"),
        "{err}"
    );

    // A CRL that names the agents' CA but is signed by another key.
    let lookalike = TestCa::new("trustpool lab CA").expect("CA");
    let forged = lookalike
        .crl(&lab.dir.join("lookalike-ca"), &[], CrlValidity::Days(30))
        .expect("CRL");
    let err = start_error(&lab, &forged);
    assert!(
        err.contains("does not verify with the key of 'CN=trustpool lab CA'"),
        "{err}"
    );

    // A missing file.
    let err = start_error(&lab, &lab.dir.join("missing.crl"));
    assert!(err.contains("cannot read the CRL"), "{err}");

    // Two CRLs of the same CA: which one is in force would be a guess.
    let ca_dir = lab.dir.join("agents-ca");
    let first = lab
        .ca
        .crl(&ca_dir, &[], CrlValidity::Days(30))
        .expect("CRL");
    let second = lab
        .ca
        .crl(&ca_dir, &[], CrlValidity::Days(30))
        .expect("CRL");
    let err = match ServerProcess::start(options(&lab, &[&first, &second])) {
        Ok(_) => panic!("the server started with two CRLs of one CA"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("both hold a CRL of 'CN=trustpool lab CA': give one CRL per CA"),
        "{err}"
    );
}

#[test]
fn attack_agents_ca_as_operator_ca_is_refused_at_start() {
    let (_dir, lab) = lab();
    let mut options = options(&lab, &[]);
    options.operator_ca = Some(lab.ca_pem.clone());
    let err = match ServerProcess::start(options) {
        Ok(_) => panic!("the server took the agents' CA as the operator CA"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("operators need a CA of their own"), "{err}");
    // Operators named without an operator CA: refused too.
    let mut options = self::options(&lab, &[]);
    options.operator_ca = None;
    let err = match ServerProcess::start(options) {
        Ok(_) => panic!("the server took --operator without --operator-ca"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--operator is given without --operator-ca"),
        "{err}"
    );
}

#[test]
fn attack_bad_crl_at_reload_keeps_the_old_one() {
    let (_dir, lab) = lab();
    let revoked = lab.add_host("host-a", Launch::Golden).expect("host");
    let good = lab.add_host("host-b", Launch::Golden).expect("host");
    let crl = lab.dir.join("agents.crl");
    install(
        &lab.ca
            .crl(
                &lab.dir.join("agents-ca"),
                &[&revoked.certs.cert],
                CrlValidity::Days(30),
            )
            .expect("CRL"),
        &crl,
    );
    let server = ServerProcess::start(options(&lab, &[&crl])).expect("server");
    assert_eq!(attest(&lab, &revoked, &server).0, 2);

    std::fs::write(lab.dir.join("broken.crl"), "this is not a CRL\n").expect("write");
    install(&lab.dir.join("broken.crl"), &crl);
    sighup(&server);
    assert!(
        wait_until(Duration::from_secs(20), || metric(
            &server,
            "trustpool_crl_reloads_total{outcome=\"error\"}"
        ) == 1),
        "{}",
        server.log_text()
    );
    assert!(
        server
            .log_text()
            .contains("CRL reload refused: the previous CRLs stay in force"),
        "{}",
        server.log_text()
    );
    // The previous CRL is still in force.
    let before = metric(&server, &refused("grpc", "revoked"));
    let (code, out) = attest(&lab, &revoked, &server);
    assert_eq!(code, 2, "{out}");
    assert!(metric(&server, &refused("grpc", "revoked")) > before);
    assert_eq!(attest(&lab, &good, &server).0, 0);
}

#[test]
fn attack_expired_crl_refuses_the_certificates_of_its_ca() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let crl: PathBuf = lab
        .ca
        .crl(&lab.dir.join("agents-ca"), &[], CrlValidity::Expired)
        .expect("CRL");
    let server = ServerProcess::start(options(&lab, &[&crl])).expect("server");
    assert!(
        server.log_text().contains("is past its nextUpdate"),
        "{}",
        server.log_text()
    );
    let (code, out) = attest(&lab, &host, &server);
    assert_eq!(code, 2, "{out}");
    assert!(metric(&server, &refused("grpc", "crl_expired")) >= 1);
    assert!(!enrolled(&server, "host-a"));
}

#[test]
fn attack_silent_tls_clients_do_not_block_the_handshakes_of_others() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let server = ServerProcess::start(options(&lab, &[])).expect("server");
    // Connections that never say a word, held open during the agent's round.
    let silent: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", server.grpc_port)).expect("connect"))
        .collect();
    let (code, out) = attest(&lab, &host, &server);
    assert_eq!(code, 0, "{out}");
    // Each silent handshake ends at its deadline, counted.
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            &server,
            &refused("grpc", "handshake_timeout")
        ) == 8),
        "{}",
        server.get("/metrics").expect("metrics").body
    );
    drop(silent);
}
