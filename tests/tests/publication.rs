//! Publication over the real HTTPS listener: reader authentication (tokens,
//! reader certificates, agent certificates refused), ETag/304, the
//! long-poll form and how fast it tells a consumer about a removal,
//! OpenAttestation PollHosts exactly as Nova's TrustedFilter calls it,
//! metrics, the served OpenAPI document, and no secret in the logs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trustpool_tests::http::{self, TlsClient};
use trustpool_tests::lab::{golden_policy, Lab, Launch};
use trustpool_tests::pki::TestCa;
use trustpool_tests::procs::{sha256_hex, wait_until, ServerProcess};

fn lab() -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    (dir, lab)
}

/// Unix ms of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn unix_ms(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { text[r].parse().expect("digits") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let secs = n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let millis = text
        .get(19..)
        .and_then(|rest| rest.strip_prefix('.'))
        .map(|f| {
            let digits: String = f.chars().take_while(char::is_ascii_digit).collect();
            format!("{digits:0<3}")[..3].parse::<i64>().expect("ms")
        })
        .unwrap_or(0);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + secs) * 1000 + millis
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn rfc3339_helper_is_right() {
    assert_eq!(unix_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(unix_ms("2026-11-18T11:06:40.123Z"), 1_795_000_000_123);
    assert_eq!(unix_ms("2026-11-18T11:06:40.5Z"), 1_795_000_000_500);
}

#[test]
fn the_feed_needs_a_reader_credential_and_never_logs_it() {
    let (_dir, lab) = lab();
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let reader_ca = TestCa::new("trustpool reader CA").expect("reader CA");
    let reader_ca_pem = reader_ca
        .write_cert(&lab.dir.join("reader-ca.pem"))
        .expect("write");
    let nova_cert = reader_ca
        .issue_client(&lab.dir.join("nova"), "nova-scheduler")
        .expect("reader cert");
    let stranger_ca = TestCa::new("some other CA").expect("CA");
    let stranger = stranger_ca
        .issue_client(&lab.dir.join("stranger"), "stranger")
        .expect("cert");

    let token = "tp-feed-token-8d1f0c2b5a77e4";
    let wrong = "tp-wrong-token-33aa55cc77ee99";
    let mut options = lab.server_options("30s", "75s");
    options.publication.reader_ca = Some(reader_ca_pem.clone());
    options.publication.feed_tokens = vec![("nova-scheduler".into(), token.into())];
    let server = ServerProcess::start(options).expect("server");
    let out = lab.agent_options(&host, &server).run_once().expect("agent");
    assert_eq!(out.status.code(), Some(0), "{}", server.log_text());

    let ca_only = server.tls.clone();
    let as_reader =
        TlsClient::new(&lab.ca_pem, Some((&nova_cert.cert, &nova_cert.key))).expect("tls");
    let as_agent =
        TlsClient::new(&lab.ca_pem, Some((&host.certs.cert, &host.certs.key))).expect("tls");
    let as_stranger =
        TlsClient::new(&lab.ca_pem, Some((&stranger.cert, &stranger.key))).expect("tls");
    let bearer = format!("Bearer {token}");
    let bad_bearer = format!("Bearer {wrong}");

    // Open endpoints.
    for path in ["/healthz", "/readyz", "/v1/openapi.json", "/metrics"] {
        let r = server.https(&ca_only, "GET", path, &[], None).expect("get");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    assert_eq!(
        server
            .https(&ca_only, "GET", "/readyz", &[], None)
            .expect("get")
            .json()
            .expect("json")["ready"],
        true
    );

    for path in ["/v1/pools", "/v1/pools/default/hosts", "/v1/hosts/host-a"] {
        // No credential: 401 with a challenge.
        let r = server.https(&ca_only, "GET", path, &[], None).expect("get");
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json().expect("json")["error"]["code"], "unauthenticated");
        assert!(r
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")));
        // A wrong token: 401.
        let r = server
            .https(
                &ca_only,
                "GET",
                path,
                &[("Authorization", &bad_bearer)],
                None,
            )
            .expect("get");
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json().expect("json")["error"]["code"], "invalid_token");
        // The configured token: 200.
        let r = server
            .https(&ca_only, "GET", path, &[("Authorization", &bearer)], None)
            .expect("get");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        // A reader certificate: 200.
        let r = server
            .https(&as_reader, "GET", path, &[], None)
            .expect("get");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        // An agent's host certificate: authenticated, but not a reader.
        let r = server
            .https(&as_agent, "GET", path, &[], None)
            .expect("get");
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert_eq!(r.json().expect("json")["error"]["code"], "forbidden");
        // A host certificate does not become a reader with a wrong token either.
        let r = server
            .https(
                &as_agent,
                "GET",
                path,
                &[("Authorization", &bad_bearer)],
                None,
            )
            .expect("get");
        assert_eq!(r.status, 401, "{path}");
    }
    let members = server
        .https(&as_reader, "GET", "/v1/pools/default/hosts", &[], None)
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(members["hosts"][0]["hostname"], "host-a");

    // Oversized headers are refused, not buffered.
    let huge = "x".repeat(100 * 1024);
    let r = server
        .https(&ca_only, "GET", "/v1/pools", &[("X-Padding", &huge)], None)
        .map(|r| r.status);
    assert!(matches!(r, Ok(431) | Err(_)), "{r:?}");
    assert_eq!(
        server
            .https(&ca_only, "GET", "/healthz", &[], None)
            .expect("still serving")
            .status,
        200
    );

    // A certificate from an unknown CA does not even get through TLS.
    assert!(server
        .https(&as_stranger, "GET", "/v1/pools", &[], None)
        .map(|r| r.status)
        .is_err());
    // Plain HTTP is not served.
    assert!(
        http::get(server.http_port, "/healthz")
            .map(|r| r.status)
            .ok()
            != Some(200)
    );

    // The served OpenAPI document is the checked-in one.
    let served = server
        .https(&ca_only, "GET", "/v1/openapi.json", &[], None)
        .expect("get");
    let checked_in = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/openapi.json"),
    )
    .expect("server/openapi.json");
    assert_eq!(served.body, checked_in);
    assert_eq!(served.header("content-type"), Some("application/json"));

    // Feed requests are counted by route template and status.
    let metrics = server
        .https(&ca_only, "GET", "/metrics", &[], None)
        .expect("metrics")
        .body;
    for line in [
        "trustpool_http_requests_total{route=\"/v1/pools/{pool}/hosts\",code=\"401\"} 3",
        "trustpool_http_requests_total{route=\"/v1/pools/{pool}/hosts\",code=\"403\"} 1",
        "trustpool_hosts{pool=\"default\",state=\"trusted\"} 1",
        "trustpool_pool_members{pool=\"default\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }

    // The audit log names readers, and never shows a token.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log_text();
    assert!(log.contains("reader=token:nova-scheduler"), "{log}");
    assert!(log.contains("reader=cert:CN=nova-scheduler"), "{log}");
    assert!(log.contains("feed read refused"), "{log}");
    for secret in [token, wrong, server.reader_token.as_str()] {
        assert!(!log.contains(secret), "a token leaked into the log");
    }
    assert!(
        !log.contains(&sha256_hex(token)),
        "a token hash leaked into the log"
    );
}

#[test]
fn etag_304_and_long_poll_tell_a_consumer_of_a_removal_within_a_second() {
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
        "host-a never joined:\n{}",
        server.log_text()
    );
    let bearer = format!("Bearer {}", server.reader_token);
    let auth = ("Authorization", bearer.as_str());

    // ETag / If-None-Match.
    let first = server.get("/v1/pools/default/hosts").expect("get");
    let etag = first.header("etag").expect("ETag").to_string();
    let generation = first.json().expect("json")["generation"]
        .as_u64()
        .expect("generation");
    let again = server
        .https(
            &server.tls,
            "GET",
            "/v1/pools/default/hosts",
            &[auth, ("If-None-Match", &etag)],
            None,
        )
        .expect("get");
    // valid_until moves with every report (1s): the tag changes with it.
    assert!(matches!(again.status, 200 | 304), "{}", again.status);
    if again.status == 304 {
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    } else {
        assert_ne!(again.header("etag"), Some(etag.as_str()));
    }
    let latest = server.get("/v1/pools/default/hosts").expect("get");
    let latest_tag = latest.header("etag").expect("ETag").to_string();
    let cond = server
        .https(
            &server.tls,
            "GET",
            "/v1/pools/default/hosts",
            &[auth, ("If-None-Match", &latest_tag)],
            None,
        )
        .expect("get");
    assert!(
        cond.status == 304 || cond.header("etag") != Some(latest_tag.as_str()),
        "an unchanged pool answers 304"
    );

    // The gzip representation: the same membership, its own tag, and a
    // conditional GET with either tag answers 304.
    let plain = server.get("/v1/pools/default/hosts").expect("get");
    let packed = server
        .https(
            &server.tls,
            "GET",
            "/v1/pools/default/hosts",
            &[auth, ("Accept-Encoding", "gzip, deflate")],
            None,
        )
        .expect("gzip get");
    assert_eq!(packed.status, 200);
    assert_eq!(packed.header("content-encoding"), Some("gzip"));
    assert_eq!(plain.header("content-encoding"), None);
    // (The harness's client inflates a gzip body, as a client library would.)
    let unpacked = packed.json().expect("the gzip body inflates to JSON");
    let plain_json = plain.json().expect("json");
    if unpacked["generation"] == plain_json["generation"] {
        assert_eq!(unpacked["hosts"], plain_json["hosts"]);
    }
    let gz_tag = packed.header("etag").expect("ETag").to_string();
    assert!(gz_tag.ends_with("-gz\""), "{gz_tag}");
    let cond = server
        .https(
            &server.tls,
            "GET",
            "/v1/pools/default/hosts",
            &[
                auth,
                ("Accept-Encoding", "gzip"),
                ("If-None-Match", &gz_tag),
            ],
            None,
        )
        .expect("get");
    assert!(
        cond.status == 304 || cond.header("etag") != Some(gz_tag.as_str()),
        "an unchanged pool answers 304 to the gzip tag"
    );

    // Long poll without a change: answers after `wait` with the same generation.
    let started = Instant::now();
    let r = server
        .https(
            &server.tls,
            "GET",
            &format!("/v1/pools/default/hosts?wait=1s&since={generation}"),
            &[auth],
            None,
        )
        .expect("long poll");
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json().expect("json")["generation"].as_u64(),
        Some(generation)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A stale `since` answers at once.
    let started = Instant::now();
    let r = server
        .get(&format!(
            "/v1/pools/default/hosts?wait=30s&since={}",
            generation - 1
        ))
        .expect("long poll");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Bad query: 400.
    assert_eq!(
        server
            .get("/v1/pools/default/hosts?wait=forever")
            .expect("get")
            .status,
        400
    );

    // The removal: a consumer waiting on the long poll learns it within a second
    // of the host's valid_until.
    let waiter = {
        let port = server.http_port;
        let tls = server.tls.clone();
        let bearer = bearer.clone();
        std::thread::spawn(move || {
            let r = http::request(
                port,
                Some(&tls),
                "GET",
                &format!("/v1/pools/default/hosts?wait=30s&since={generation}"),
                &[("Authorization", &bearer)],
                None,
                Duration::from_secs(60),
            );
            (r, now_ms())
        })
    };
    agent.stop().expect("stop");
    std::thread::sleep(Duration::from_millis(300));
    let last = server
        .get("/v1/hosts/host-a")
        .expect("host")
        .json()
        .expect("json");
    let valid_until = unix_ms(
        last["pools"][0]["valid_until"]
            .as_str()
            .expect("valid_until"),
    );
    let (answer, answered_at) = waiter.join().expect("waiter");
    let answer = answer.expect("long poll answered");
    assert_eq!(answer.status, 200);
    let body = answer.json().expect("json");
    assert_eq!(body["hosts"].as_array().map(Vec::len), Some(0), "{body}");
    assert!(body["generation"].as_u64() > Some(generation));
    let latency = answered_at - valid_until;
    println!("long-poll notification latency after valid_until: {latency} ms");
    assert!(
        (0..1000).contains(&latency),
        "the consumer learnt of the removal {latency} ms after valid_until"
    );
    assert_ne!(answer.header("etag"), Some(latest_tag.as_str()));
}

#[test]
fn poll_hosts_answers_as_open_attestation_did_for_nova() {
    let (_dir, lab) = lab();
    let good = lab.add_host("host-a", Launch::Golden).expect("host-a");
    let bad = lab.add_host("host-c", Launch::None).expect("host-c");
    let blob = "oat-shared-secret-5f2e9a";
    let mut options = lab.server_options("30s", "75s");
    options.publication.extra_args = vec!["--oat-auth-blob-sha256".into(), sha256_hex(blob)];
    let server = ServerProcess::start(options).expect("server");
    assert_eq!(
        lab.agent_options(&good, &server)
            .run_once()
            .expect("agent")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        lab.agent_options(&bad, &server)
            .run_once()
            .expect("agent")
            .status
            .code(),
        Some(1)
    );
    // The host's own attestation (the feed lists members with times
    // lowered to its publication grid; PollHosts answers the real one).
    let attested_at = server
        .get("/v1/hosts/host-a")
        .expect("host")
        .json()
        .expect("json")["pools"][0]["attested_at"]
        .as_str()
        .expect("attested_at")
        .to_string();

    // What nova/scheduler/filters/trusted_filter.py (Pike) sends: requests.request(
    // "POST", "https://HOST:PORT/OpenAttestationWebServices/V1.0/PollHosts",
    // data=jsonutils.dumps({"count": N, "hosts": [...]}), headers={content-type,
    // Accept, x-auth-blob}) plus what python-requests adds itself.
    let path = "/OpenAttestationWebServices/V1.0/PollHosts";
    let body = br#"{"count": 3, "hosts": ["host-a", "host-c", "compute-unknown-7"]}"#;
    let nova_headers = |blob: Option<&'static str>| {
        let mut h = vec![
            ("User-Agent", "python-requests/2.18.4"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Accept", "application/json"),
            ("content-type", "application/json"),
        ];
        if let Some(b) = blob {
            h.push(("x-auth-blob", b));
        }
        h
    };
    let before = now_ms() / 1000 * 1000;
    let r = server
        .https(
            &server.tls,
            "POST",
            path,
            &nova_headers(Some("oat-shared-secret-5f2e9a")),
            Some(body),
        )
        .expect("PollHosts");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let answer = r.json().expect("json");
    let top: Vec<&String> = answer.as_object().expect("object").keys().collect();
    assert_eq!(top, ["hosts"]);
    let hosts = answer["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3, "every requested host is answered");
    let vtime_shape =
        |v: &str| v.len() == 20 && v.ends_with('Z') && v.as_bytes()[10] == b'T' && unix_ms(v) > 0;
    for (entry, (name, level)) in hosts.iter().zip([
        ("host-a", "trusted"),
        ("host-c", "untrusted"),
        ("compute-unknown-7", "untrusted"),
    ]) {
        let mut keys: Vec<&String> = entry.as_object().expect("entry").keys().collect();
        keys.sort();
        assert_eq!(keys, ["host_name", "trust_lvl", "vtime"]);
        assert_eq!(entry["host_name"], name);
        assert_eq!(entry["trust_lvl"], level, "{name}");
        let vtime = entry["vtime"].as_str().expect("vtime");
        assert!(vtime_shape(vtime), "{vtime}");
    }
    // vtime: the attestation for a trusted host, now for the others.
    assert_eq!(
        unix_ms(hosts[0]["vtime"].as_str().expect("vtime")),
        unix_ms(&attested_at) / 1000 * 1000
    );
    for h in &hosts[1..] {
        let v = unix_ms(h["vtime"].as_str().expect("vtime"));
        assert!(v >= before && v <= now_ms(), "{h}");
    }

    // The shared secret is required once configured.
    for headers in [nova_headers(None), nova_headers(Some("wrong-secret"))] {
        let r = server
            .https(&server.tls, "POST", path, &headers, Some(body))
            .expect("PollHosts");
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json().expect("json")["error"]["code"], "unauthenticated");
    }
    // Malformed JSON: 400 with a JSON error.
    let r = server
        .https(
            &server.tls,
            "POST",
            path,
            &nova_headers(Some("oat-shared-secret-5f2e9a")),
            Some(b"{\"count\": 1, \"hosts\": [\"a\""),
        )
        .expect("PollHosts");
    assert_eq!(r.status, 400);
    assert_eq!(r.json().expect("json")["error"]["code"], "bad_request");
    // Case of the name is echoed as asked.
    let r = server
        .https(
            &server.tls,
            "POST",
            path,
            &nova_headers(Some("oat-shared-secret-5f2e9a")),
            Some(br#"{"count": 1, "hosts": ["HOST-A"]}"#),
        )
        .expect("PollHosts");
    let answer = r.json().expect("json");
    assert_eq!(answer["hosts"][0]["host_name"], "HOST-A");
    assert_eq!(answer["hosts"][0]["trust_lvl"], "trusted");
    // The secret never reaches the log.
    assert!(!server.log_text().contains(blob));
}

#[test]
fn poll_hosts_prefix_and_pool_are_configurable() {
    let (_dir, lab) = lab();
    lab.write_policy("gold", &golden_policy()).expect("policy");
    let host = lab.add_host("host-a", Launch::Golden).expect("host");
    let mut options = lab.server_options("30s", "75s");
    // A lab: PollHosts without a blob must be asked for explicitly.
    options.publication.config =
        Some("oat_prefix = \"/attest\"\noat_pool = \"gold\"\noat_allow_anonymous = true\n".into());
    let server = ServerProcess::start(options).expect("server");
    assert_eq!(
        lab.agent_options(&host, &server)
            .run_once()
            .expect("agent")
            .status
            .code(),
        Some(0)
    );
    let body = br#"{"count": 1, "hosts": ["host-a"]}"#;
    let r = server
        .https(
            &server.tls,
            "POST",
            "/attest/PollHosts",
            &[("content-type", "application/json")],
            Some(body),
        )
        .expect("PollHosts");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().expect("json")["hosts"][0]["trust_lvl"], "trusted");
    let r = server
        .https(
            &server.tls,
            "POST",
            "/OpenAttestationWebServices/V1.0/PollHosts",
            &[],
            Some(body),
        )
        .expect("PollHosts");
    assert_eq!(r.status, 404);
    assert!(server
        .log_text()
        .contains("PollHosts answers anyone who can reach it"));
}
