//! The HTTPS listener under abuse, against the real server: PollHosts
//! bodies that are never read without the blob, bodies too large or too
//! slow, thousands of silent connections, slowloris clients in the TLS
//! handshake and in the request head — each while a real reader is still
//! served — and the configurations the server refuses to start with.
//!
//! The clients here drive TLS by hand (rustls over a plain socket) so that
//! they can send a byte at a time and see exactly when the server hangs up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use trustpool_tests::lab::{golden_policy, Lab};
use trustpool_tests::procs::{sha256_hex, wait_until, ServerProcess};

const POLL_HOSTS: &str = "/OpenAttestationWebServices/V1.0/PollHosts";
const BLOB: &str = "listener-abuse-oat-blob-4d1c";

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    (dir, lab)
}

/// A server whose PollHosts requires [`BLOB`], with `config` as its file.
fn server(lab: &Lab, config: Option<&str>) -> ServerProcess {
    let mut options = lab.server_options("30s", "75s");
    options.publication.extra_args = vec!["--oat-auth-blob-sha256".into(), sha256_hex(BLOB)];
    options.publication.config = config.map(String::from);
    ServerProcess::start(options).expect("server")
}

/// The value of one sample of /metrics (0 when absent).
fn metric(server: &ServerProcess, sample: &str) -> f64 {
    let text = server.get("/metrics").map(|r| r.body).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A real reader reads its feed.
fn assert_reader_served(server: &ServerProcess) {
    let r = server
        .get("/v1/pools/default/hosts")
        .expect("the reader is answered");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().expect("json")["pool"], "default");
}

/// Lets this test process hold thousands of sockets.
fn raise_own_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// Sockets the process `pid` holds open.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn client_config(ca_pem: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

fn tls_session(config: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
        .expect("name")
        .to_owned();
    rustls::ClientConnection::new(config.clone(), name).expect("client session")
}

/// A TLS client driven by hand: what it sends and when, and whether the
/// server has hung up.
struct Client {
    tls: rustls::ClientConnection,
    tcp: TcpStream,
    /// Plaintext received so far.
    received: Vec<u8>,
    /// The server closed the connection (EOF, reset, close_notify).
    closed: bool,
    /// Sending failed: the server no longer reads (what it sent before may
    /// still be read).
    write_failed: bool,
}

impl Client {
    /// Connects and completes the TLS handshake.
    fn connect(server: &ServerProcess, config: &Arc<rustls::ClientConfig>) -> Client {
        let mut tcp = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        tcp.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut tls = tls_session(config);
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).expect("TLS handshake");
        }
        Client {
            tls,
            tcp,
            received: Vec::new(),
            closed: false,
            write_failed: false,
        }
    }

    /// Sends `bytes`; false once the server has hung up.
    fn send(&mut self, mut bytes: &[u8]) -> bool {
        if self.closed || self.write_failed {
            return false;
        }
        // rustls buffers a limited amount of plaintext: feed it piecewise.
        while !bytes.is_empty() {
            match self.tls.writer().write(bytes) {
                Ok(n) if n > 0 => bytes = &bytes[n..],
                _ if !self.tls.wants_write() => {
                    self.write_failed = true;
                    return false;
                }
                _ => {}
            }
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut self.tcp).is_err() {
                    self.write_failed = true;
                    return false;
                }
            }
        }
        true
    }

    /// Waits up to `wait` for data from the server; keeps what arrives.
    fn poll(&mut self, wait: Duration) {
        if self.closed {
            return;
        }
        let _ = self.tcp.set_read_timeout(Some(wait));
        match self.tls.read_tls(&mut self.tcp) {
            Ok(0) => self.closed = true,
            Ok(_) => {
                if self.tls.process_new_packets().is_err() {
                    self.closed = true;
                }
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match self.tls.reader().read(&mut buf) {
                        Ok(0) => {
                            self.closed = true;
                            break;
                        }
                        Ok(n) => self.received.extend_from_slice(&buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.closed = true,
        }
    }

    /// Reads until a whole response arrived or the server hung up, for at
    /// most `wait` in all; the response's status and body.
    fn response(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Some(r) = parse(&self.received) {
                return Some(r);
            }
            if self.closed {
                break;
            }
            self.poll(Duration::from_millis(200));
        }
        parse(&self.received)
    }

    /// Waits up to `wait` for the server to hang up; whether it did.
    fn wait_closed(&mut self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        while !self.closed && std::time::Instant::now() < deadline {
            self.poll(Duration::from_millis(200));
        }
        self.closed
    }
}

/// A complete response (`Content-Length` bodies) in `raw`: status and body.
fn parse(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| (status, body[..length].to_string()))
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from))
        .unwrap_or_default()
}

fn poll_hosts_head(extra: &str) -> String {
    format!(
        "POST {POLL_HOSTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json\r\n{extra}\r\n"
    )
}

#[test]
fn attack_poll_hosts_without_blob_gets_401_before_its_body() {
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let config = client_config(&lab.ca_pem);
    for blob in ["", "x-auth-blob: not-the-blob\r\n"] {
        // A 100 MB body is announced and never sent: the answer cannot wait for it.
        let mut c = Client::connect(&server, &config);
        assert!(c.send(poll_hosts_head(&format!("{blob}Content-Length: 100000000\r\n")).as_bytes()));
        let (status, body) = c
            .response(Duration::from_secs(60))
            .expect("answered without the body");
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_code(&body), "unauthenticated");
        assert!(
            c.wait_closed(Duration::from_secs(30)),
            "the server does not wait for the announced body either"
        );
    }
    assert_reader_served(&server);
    assert!(!server.log_text().contains(BLOB));
}

#[test]
fn attack_poll_hosts_huge_body_with_blob_gets_413_unread() {
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let config = client_config(&lab.ca_pem);
    let blob = format!("x-auth-blob: {BLOB}\r\n");

    // Declared: 413 on the headers alone.
    let mut c = Client::connect(&server, &config);
    assert!(c.send(poll_hosts_head(&format!("{blob}Content-Length: 100000000\r\n")).as_bytes()));
    let (status, body) = c
        .response(Duration::from_secs(60))
        .expect("answered without the body");
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");

    // Chunked, 100 MB: cut once the limit is passed, long before the end.
    let mut c = Client::connect(&server, &config);
    assert!(c.send(poll_hosts_head(&format!("{blob}Transfer-Encoding: chunked\r\n")).as_bytes()));
    let chunk = {
        let data = vec![b' '; 64 * 1024];
        let mut wire = format!("{:x}\r\n", data.len()).into_bytes();
        wire.extend_from_slice(&data);
        wire.extend_from_slice(b"\r\n");
        wire
    };
    let total: usize = 100 * 1000 * 1000;
    let mut sent = 0usize;
    while sent < total && c.send(&chunk) {
        sent += 64 * 1024;
        if sent.is_multiple_of(1024 * 1024) {
            c.poll(Duration::from_millis(1));
            if parse(&c.received).is_some() || c.closed {
                break;
            }
        }
    }
    assert!(sent < total, "the server read all 100 MB");
    let (status, body) = c
        .response(Duration::from_secs(60))
        .expect("a 413 before the end of the body");
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    println!("chunked body cut after {} KiB sent", sent / 1024);
    assert_reader_served(&server);
}

#[test]
fn attack_slow_body_gets_408_while_a_reader_is_served() {
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let config = client_config(&lab.ca_pem);
    let body = br#"{"count": 3, "hosts": ["compute-1", "compute-2", "compute-3"]}"#;
    let mut c = Client::connect(&server, &config);
    assert!(c.send(
        poll_hosts_head(&format!(
            "x-auth-blob: {BLOB}\r\nContent-Length: {}\r\n",
            body.len()
        ))
        .as_bytes()
    ));
    // One byte a second: the whole body would take a minute.
    let mut sent = 0;
    for (i, byte) in body.iter().enumerate() {
        if i == 3 {
            assert_reader_served(&server);
        }
        if !c.send(&[*byte]) {
            break;
        }
        sent += 1;
        c.poll(Duration::from_secs(1));
        if parse(&c.received).is_some() || c.closed {
            break;
        }
    }
    assert!(sent < body.len(), "the whole slow body was read");
    let (status, answer) = c.response(Duration::from_secs(30)).expect("a 408");
    assert_eq!(status, 408, "{answer}");
    assert_eq!(error_code(&answer), "body_timeout");
    assert!(metric(&server, "trustpool_http_timeouts_total{phase=\"body\"}") >= 1.0);
}

#[test]
fn attack_slowloris_headers_are_cut_while_a_reader_is_served() {
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let config = client_config(&lab.ca_pem);
    // A short head, a byte a second: 18 s in all, longer than the 10 s the
    // server gives a head.
    let head = b"GET / HTTP/1.0\r\n\r\n";
    let mut c = Client::connect(&server, &config);
    let mut sent = 0;
    for (i, byte) in head.iter().enumerate() {
        if i == 3 {
            assert_reader_served(&server);
        }
        if !c.send(&[*byte]) {
            break;
        }
        sent += 1;
        c.poll(Duration::from_secs(1));
        if c.closed {
            break;
        }
    }
    assert!(
        c.wait_closed(Duration::from_secs(30)),
        "the slow head was not cut"
    );
    assert!(
        sent < head.len(),
        "the server waited for the whole slow head ({sent} bytes)"
    );
    assert!(
        c.received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&c.received)
    );
    assert_reader_served(&server);
    assert!(metric(&server, "trustpool_http_timeouts_total{phase=\"headers\"}") >= 1.0);
}

#[test]
fn attack_slow_tls_handshake_is_cut_while_a_reader_is_served() {
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let config = client_config(&lab.ca_pem);
    // The ClientHello in 16 pieces over 8 s, then the rest of the handshake.
    let mut tls = tls_session(&config);
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("ClientHello");
    let mut tcp = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let piece = hello.len().div_ceil(16);
    let mut sent_all = true;
    for (i, part) in hello.chunks(piece).enumerate() {
        if i == 2 {
            assert_reader_served(&server);
        }
        if tcp.write_all(part).is_err() {
            sent_all = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let finished = sent_all && {
        let mut ok = true;
        while ok && tls.is_handshaking() {
            ok = tls.complete_io(&mut tcp).is_ok();
        }
        ok
    };
    assert!(!finished, "an 8 s handshake was accepted");
    assert_reader_served(&server);
    assert!(
        metric(
            &server,
            "trustpool_http_timeouts_total{phase=\"handshake\"}"
        ) >= 1.0
    );
}

#[test]
fn attack_two_thousand_silent_connections_do_not_starve_a_reader() {
    raise_own_open_files_limit();
    let (_dir, lab) = lab();
    let server = server(&lab, None);
    let port = server.http_port;
    let (opened_tx, opened_rx) = std::sync::mpsc::channel::<usize>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // 2,000 TCP connections that never say anything, held open until the end.
    let flood = std::thread::spawn(move || {
        let mut held = Vec::new();
        for i in 0..2000 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                held.push(s);
            }
            if i % 100 == 99 {
                let _ = opened_tx.send(held.len());
            }
        }
        let _ = opened_tx.send(usize::MAX);
        let _ = done_rx.recv();
        held.len()
    });
    // Readers are served while the flood is under way and once it is
    // complete, and the server never holds the flood's sockets: beyond the
    // 128 handshakes in progress each is closed as the next arrives (the
    // margin covers closings not yet run and the listeners).
    let mut reads = 0;
    let mut most_sockets = 0;
    while let Ok(n) = opened_rx.recv() {
        most_sockets = most_sockets.max(open_sockets(server.pid()));
        if n == usize::MAX {
            break;
        }
        if n >= 1000 && reads < 3 {
            assert_reader_served(&server);
            reads += 1;
        }
    }
    assert_reader_served(&server);
    assert!(
        most_sockets <= 128 + 256,
        "the server held {most_sockets} sockets during the flood"
    );
    // Every silent connection beyond the 128 handshakes in progress is
    // closed (to make room, or at its handshake deadline), not held.
    let shed = || {
        metric(
            &server,
            "trustpool_http_connections_evicted_total{phase=\"handshake\"}",
        ) + metric(
            &server,
            "trustpool_http_timeouts_total{phase=\"handshake\"}",
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || shed() >= 2000.0 - 128.0),
        "only {} silent connections were shed",
        shed()
    );
    let sockets = open_sockets(server.pid());
    assert!(
        sockets <= 128 + 32,
        "the server holds {sockets} sockets for 2,000 silent clients"
    );
    assert_reader_served(&server);
    let _ = done_tx.send(());
    let held = flood.join().expect("flood");
    assert!(held >= 1900, "the flood opened only {held} connections");
}

#[test]
fn attack_idle_tls_connections_beyond_the_cap_make_room_for_a_reader() {
    let (_dir, lab) = lab();
    let server = server(&lab, Some("http_max_connections = 64\n"));
    let config = client_config(&lab.ca_pem);
    // 200 handshaken connections that never send a request.
    let mut idle: Vec<Client> = (0..200)
        .map(|_| Client::connect(&server, &config))
        .collect();
    assert_reader_served(&server);
    // The oldest were closed to make room; the newest still work.
    assert!(
        idle[0].wait_closed(Duration::from_secs(30)),
        "the oldest idle connection is still open"
    );
    let newest = idle.last_mut().expect("newest");
    assert!(newest.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let (status, body) = newest
        .response(Duration::from_secs(30))
        .expect("the newest idle connection is served");
    assert_eq!(status, 200, "{body}");
    let shed = metric(
        &server,
        "trustpool_http_connections_evicted_total{phase=\"idle\"}",
    ) + metric(&server, "trustpool_http_timeouts_total{phase=\"headers\"}");
    assert!(
        shed >= 200.0 - 64.0,
        "only {shed} idle connections were shed"
    );
    assert!(
        open_sockets(server.pid()) <= 64 + 32,
        "more sockets than the cap"
    );
}

#[test]
fn attack_poll_hosts_without_blob_is_refused_at_start() {
    let (_dir, lab) = lab();
    for (config, args) in [
        ("oat_pool = \"default\"\n", vec![]),
        ("oat_prefix = \"/attest\"\n", vec![]),
        (
            "oat_allow_anonymous = true\n",
            vec!["--oat-auth-blob-sha256".to_string(), sha256_hex(BLOB)],
        ),
    ] {
        let mut options = lab.server_options("30s", "75s");
        options.publication.config = Some(config.into());
        options.publication.extra_args = args;
        let err = match ServerProcess::start(options) {
            Ok(_) => panic!("the server started with {config}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("trustpool-server: error:") && err.contains("oat_allow_anonymous"),
            "{err}"
        );
        if !config.contains("anonymous") {
            assert!(err.contains("needs oat_auth_blob_sha256"), "{err}");
        }
    }
    // Nothing configured: PollHosts is not served at all.
    let mut server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    let r = server
        .https(
            &server.tls,
            "POST",
            POLL_HOSTS,
            &[("content-type", "application/json")],
            Some(br#"{"count": 1, "hosts": ["compute-1"]}"#),
        )
        .expect("PollHosts");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(server.log_text().contains("PollHosts is off"));
    server.stop().expect("stop");
}

#[test]
fn attack_plain_http_placement_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, lab) = lab();
    let token = lab.dir.join("placement-token");
    std::fs::write(&token, "admin\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let keystone = "[placement.keystone]\nauth_url = \"http://127.0.0.1:5000/v3\"\nusername = \"trustpool\"\npassword_file = \"TOKEN\"\nproject_name = \"service\"\n";
    for (placement, what) in [
        (
            "url = \"http://127.0.0.1:8778\"\ntoken_file = \"TOKEN\"\n".to_string(),
            "[placement] url 'http://127.0.0.1:8778' is plain HTTP",
        ),
        (
            format!("url = \"https://127.0.0.1:8778\"\n{keystone}"),
            "[placement.keystone] auth_url 'http://127.0.0.1:5000/v3' is plain HTTP",
        ),
    ] {
        let mut options = lab.server_options("30s", "75s");
        options.publication.config = Some(
            format!("placement_pools = [\"default\"]\n[placement]\n{placement}")
                .replace("TOKEN", &token.display().to_string()),
        );
        let err = match ServerProcess::start(options) {
            Ok(_) => panic!("the server started with Placement over http://"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(what) && err.contains("allow_plain_http = true"),
            "{err}"
        );
    }
}
