//! The wire protocol and the trust decision under attack: replayed and
//! unknown nonces, a report swapped after the quote, malformed and truncated
//! messages, a reload or restart that would re-admit a host on old evidence,
//! a stream that outlives its AK, one TPM behind two host names, an EK the
//! allowlist does not know. A scripted agent speaks the protocol in-process
//! with a real swtpm and real mutual TLS; a raw gRPC client sends bytes that
//! are not protobuf at all. Every test is named `attack_…`.

use bytes::{Buf, BufMut};
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Streaming;
use trustpool_agent::client::connect;
use trustpool_agent::config::{AgentConfig, EventLogPath};
use trustpool_agent::tpm::{AkAlg, EkAlg, Tpm, TpmWorker};
use trustpool_evidence::binding::qualifying_data;
use trustpool_proto::v1::agent_message::Msg as AgentMsg;
use trustpool_proto::v1::attestation_client::AttestationClient;
use trustpool_proto::v1::server_message::Msg as ServerMsg;
use trustpool_proto::v1::{
    ActivationProof, AgentMessage, AttestChallenge, ChallengeRequest, Evidence, Hello, PcrValue,
    ServerMessage, Verdict,
};
use trustpool_tests::lab::{golden_policy, Lab, LabHost, Launch};
use trustpool_tests::procs::{wait_until, ServerProcess};

fn agent_config(lab: &Lab, host: &LabHost, server: &ServerProcess) -> AgentConfig {
    AgentConfig {
        servers: vec![server.url()],
        ca: lab.ca_pem.clone(),
        cert: host.certs.cert.clone(),
        key: host.certs.key.clone(),
        tcti: host.swtpm.tcti(),
        hostname: host.name.clone(),
        state_dir: host.state_dir.clone(),
        once: true,
        pool: None,
        root: "/".into(),
        role: "compute".into(),
        watch_interval: std::time::Duration::from_secs(5),
        keepalive_interval: std::time::Duration::from_secs(10),
        keepalive_timeout: std::time::Duration::from_secs(5),
        tpm_lost_exit_after: trustpool_agent::config::DEFAULT_TPM_LOST_EXIT_AFTER,
        uefi_event_log: EventLogPath::Disabled,
        txt_event_log: EventLogPath::Disabled,
    }
}

/// A scripted agent: every step is explicit so a test can deviate.
struct Scripted {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ServerMessage>,
    tpm: TpmWorker,
}

impl Scripted {
    async fn open(cfg: &AgentConfig) -> Scripted {
        match Scripted::try_open(cfg).await {
            Ok(s) => s,
            Err(code) => panic!("the session was refused: {code}"),
        }
    }

    /// Opens a session; `Err` carries the server's error code.
    async fn try_open(cfg: &AgentConfig) -> Result<Scripted, String> {
        let tpm =
            Tpm::open(&cfg.tcti, &cfg.state_dir, EkAlg::Rsa2048, AkAlg::RsaSsa2048).expect("tpm");
        let tpm = TpmWorker::spawn(tpm);
        let id = tpm.identity().await.expect("identity");
        let channel = connect(cfg, &cfg.servers[0]).await.expect("connect");
        let (tx, rx) = mpsc::channel(8);
        tx.send(msg(AgentMsg::Hello(Hello {
            hostname: cfg.hostname.clone(),
            agent_version: "scripted".into(),
            ek_public: id.ek_public,
            ek_certificate: id.ek_certificate.unwrap_or_default(),
            ak_public: id.ak_public,
            ek_chain: vec![],
        })))
        .await
        .expect("send hello");
        let inbound = AttestationClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let mut s = Scripted { tx, inbound, tpm };
        match s.next().await {
            ServerMsg::CredentialChallenge(c) => {
                let secret = s
                    .tpm
                    .activate_credential(c.credential_blob, c.encrypted_secret)
                    .await
                    .expect("activate");
                s.send(AgentMsg::Activation(ActivationProof { secret }))
                    .await;
                match s.next().await {
                    ServerMsg::Enrolled(_) => {}
                    ServerMsg::Error(e) => return Err(e.code),
                    other => panic!("unexpected {other:?}"),
                }
            }
            ServerMsg::Enrolled(_) => {}
            ServerMsg::Error(e) => return Err(e.code),
            other => panic!("unexpected {other:?}"),
        }
        Ok(s)
    }

    /// The code of the `Error` that ends the stream, skipping challenges.
    async fn ended_with(&mut self) -> String {
        loop {
            match self.next().await {
                ServerMsg::Error(e) => return e.code,
                ServerMsg::Challenge(_) | ServerMsg::Verdict(_) => continue,
                other => panic!("expected the stream to end, got {other:?}"),
            }
        }
    }

    /// Answers the next challenge honestly and returns the verdict.
    async fn attest(&mut self) -> Verdict {
        let c = self.challenge().await;
        let e = self.evidence(&c.nonce, &c.nonce, &c.pcrs, b"", b"").await;
        self.verdict(e).await
    }

    async fn send(&self, m: AgentMsg) {
        self.tx.send(msg(m)).await.expect("send");
    }

    async fn next(&mut self) -> ServerMsg {
        tokio::time::timeout(Duration::from_secs(30), self.inbound.message())
            .await
            .expect("server answers in time")
            .expect("stream ok")
            .expect("stream open")
            .msg
            .expect("non-empty")
    }

    async fn challenge(&mut self) -> AttestChallenge {
        match self.next().await {
            ServerMsg::Challenge(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    async fn request_challenge(&mut self) -> AttestChallenge {
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.send(AgentMsg::ChallengeRequest(ChallengeRequest {
            reason: "test".into(),
        }))
        .await;
        self.challenge().await
    }

    /// Quotes for `quote_nonce` with `report`, and sends it as the answer to `claimed_nonce`.
    async fn evidence(
        &self,
        quote_nonce: &[u8],
        claimed_nonce: &[u8],
        pcrs: &[u32],
        report: &[u8],
        sent_report: &[u8],
    ) -> Evidence {
        let qd = qualifying_data(quote_nonce, report);
        let q = self
            .tpm
            .quote(qd.to_vec(), pcrs.to_vec())
            .await
            .expect("quote");
        Evidence {
            nonce: claimed_nonce.to_vec(),
            attest: q.attest,
            signature: q.signature,
            pcr_values: q
                .pcr_values
                .into_iter()
                .map(|(index, digest)| PcrValue { index, digest })
                .collect(),
            hardening_report: sent_report.to_vec(),
            event_logs: Vec::new(),
        }
    }

    async fn verdict(&mut self, e: Evidence) -> Verdict {
        self.send(AgentMsg::Evidence(e)).await;
        loop {
            match self.next().await {
                ServerMsg::Verdict(v) => return v,
                // A reload challenges every stream at once.
                ServerMsg::Challenge(_) => continue,
                other => panic!("expected a verdict, got {other:?}"),
            }
        }
    }
}

fn msg(m: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

fn codes(v: &Verdict) -> Vec<String> {
    v.pools
        .iter()
        .flat_map(|p| p.reasons.iter().map(|r| r.code.clone()))
        .collect()
}

fn setup(names: &[&str]) -> (tempfile::TempDir, Lab, Vec<LabHost>, ServerProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let hosts = names
        .iter()
        .map(|n| lab.add_host(n, Launch::Golden).expect("host"))
        .collect();
    let server = ServerProcess::start(lab.server_options("30s", "75s")).expect("server");
    (dir, lab, hosts, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_replayed_unknown_and_swapped_evidence_is_rejected() {
    let (_dir, lab, hosts, server) = setup(&["host-a"]);
    let cfg = agent_config(&lab, &hosts[0], &server);
    let mut agent = Scripted::open(&cfg).await;

    // An honest answer: trusted.
    let c1 = agent.challenge().await;
    let good = agent
        .evidence(&c1.nonce, &c1.nonce, &c1.pcrs, b"", b"")
        .await;
    let v = agent.verdict(good.clone()).await;
    assert!(
        v.pools.iter().all(|p| p.trusted),
        "{v:?}\n{}",
        server.log_text()
    );

    // Replaying the same evidence (an old nonce) while c2 is pending: rejected,
    // the host leaves the pool at once.
    let c2 = agent.request_challenge().await;
    let v = agent.verdict(good).await;
    assert!(codes(&v).contains(&"nonce.reused".to_string()), "{v:?}");
    assert!(v.pools.iter().all(|p| !p.trusted));
    assert!(server.pool_members("default").expect("feed").is_empty());

    // A nonce the server never issued.
    let forged = [7u8; 32];
    let e = agent.evidence(&forged, &forged, &c2.pcrs, b"", b"").await;
    let v = agent.verdict(e).await;
    assert!(codes(&v).contains(&"nonce.unknown".to_string()), "{v:?}");

    // A hardening report swapped after the quote: the qualifying data no longer matches.
    let honest = br#"{"results":[{"id":"mac.enforcing_any","status":"fail"}]}"#;
    let forged_report = br#"{"results":[{"id":"mac.enforcing_any","status":"pass"}]}"#;
    let e = agent
        .evidence(&c2.nonce, &c2.nonce, &c2.pcrs, honest, forged_report)
        .await;
    let v = agent.verdict(e).await;
    assert!(
        codes(&v).contains(&"quote.nonce_mismatch".to_string()),
        "{v:?}"
    );

    // Evidence for a PCR selection other than the one asked.
    let c3 = agent.request_challenge().await;
    let e = agent
        .evidence(&c3.nonce, &c3.nonce, &[0, 1, 2], b"", b"")
        .await;
    let v = agent.verdict(e).await;
    assert!(
        codes(&v).contains(&"quote.selection_mismatch".to_string()),
        "{v:?}"
    );

    // Truncated TPM structures: reasons, not a crash.
    let c4 = agent.request_challenge().await;
    let mut e = agent
        .evidence(&c4.nonce, &c4.nonce, &c4.pcrs, b"", b"")
        .await;
    e.attest.truncate(e.attest.len() / 2);
    e.signature.truncate(3);
    let v = agent.verdict(e).await;
    let got = codes(&v);
    assert!(got.contains(&"quote.malformed".to_string()), "{got:?}");

    // Honest again: back in the pool.
    let c7 = agent.request_challenge().await;
    let e = agent
        .evidence(&c7.nonce, &c7.nonce, &c7.pcrs, b"", b"")
        .await;
    let v = agent.verdict(e).await;
    assert!(v.pools.iter().all(|p| p.trusted), "{v:?}");
    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-a".to_string()]
    );
}

/// Sends and receives raw bytes on the Session method: no protobuf at all.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn raw_session(cfg: &AgentConfig, frames: Vec<Vec<u8>>) -> Vec<ServerMessage> {
    let channel = connect(cfg, &cfg.servers[0]).await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/trustpool.v1.Attestation/Session");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    for f in frames {
        tx.send(f).await.expect("queue");
    }
    let response = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await
        .expect("stream opens");
    let mut inbound = response.into_inner();
    let mut out = Vec::new();
    while let Ok(Ok(Some(bytes))) =
        tokio::time::timeout(Duration::from_secs(10), inbound.message()).await
    {
        out.push(ServerMessage::decode(bytes.as_slice()).expect("server speaks protobuf"));
    }
    drop(tx);
    out
}

fn error_code(messages: &[ServerMessage]) -> Option<String> {
    messages.iter().find_map(|m| match &m.msg {
        Some(ServerMsg::Error(e)) => Some(e.code.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_malformed_messages_end_only_their_own_stream() {
    let (_dir, lab, hosts, server) = setup(&["host-a", "host-b"]);
    // host-b runs a real long-lived agent and stays trusted throughout.
    let mut agent_b = lab
        .agent_options(&hosts[1], &server)
        .spawn(&lab.dir.join("agent-b.log"))
        .expect("agent b");
    assert!(wait_until(Duration::from_secs(30), || server
        .pool_members("default")
        .is_ok_and(|m| m.contains(&"host-b".to_string()))));
    let cfg = agent_config(&lab, &hosts[0], &server);

    // Bytes that are not protobuf.
    let got = raw_session(&cfg, vec![vec![0xff, 0xff, 0xff, 0xff, 0x0f]]).await;
    assert_eq!(
        error_code(&got).as_deref(),
        Some("protocol.malformed"),
        "{got:?}"
    );
    // A protobuf message that ends in the middle of a field.
    let mut hello = msg(AgentMsg::Hello(Hello {
        hostname: "host-a".into(),
        ek_public: vec![1; 300],
        ..Default::default()
    }))
    .encode_to_vec();
    hello.truncate(hello.len() - 100);
    let got = raw_session(&cfg, vec![hello]).await;
    assert_eq!(
        error_code(&got).as_deref(),
        Some("protocol.malformed"),
        "{got:?}"
    );
    // Well-formed protobuf carrying garbage TPM structures.
    let hello = msg(AgentMsg::Hello(Hello {
        hostname: "host-a".into(),
        ek_public: vec![0x00, 0x01, 0x00],
        ak_public: b"garbage".to_vec(),
        ..Default::default()
    }))
    .encode_to_vec();
    let got = raw_session(&cfg, vec![hello]).await;
    assert_eq!(
        error_code(&got).as_deref(),
        Some("enrolment.malformed"),
        "{got:?}"
    );
    // An empty message and a message out of order.
    let got = raw_session(&cfg, vec![AgentMessage { msg: None }.encode_to_vec()]).await;
    assert_eq!(
        error_code(&got).as_deref(),
        Some("protocol.malformed"),
        "{got:?}"
    );
    let got = raw_session(
        &cfg,
        vec![msg(AgentMsg::Evidence(Evidence::default())).encode_to_vec()],
    )
    .await;
    assert_eq!(
        error_code(&got).as_deref(),
        Some("protocol.unexpected"),
        "{got:?}"
    );

    // The server still serves, host-b is still trusted and still reporting.
    assert_eq!(server.get("/healthz").expect("healthz").status, 200);
    assert!(agent_b.is_running());
    assert!(server
        .pool_members("default")
        .expect("feed")
        .contains(&"host-b".to_string()));
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
    // And host-a can still enrol properly afterwards.
    let mut a = Scripted::open(&cfg).await;
    let c = a.challenge().await;
    let e = a.evidence(&c.nonce, &c.nonce, &c.pcrs, b"", b"").await;
    assert!(a.verdict(e).await.pools.iter().all(|p| p.trusted));
    agent_b.stop().expect("stop b");
}

fn trusted(v: &Verdict) -> bool {
    !v.pools.is_empty() && v.pools.iter().all(|p| p.trusted)
}

/// The reason codes of `host` in the default pool, from `/v1/hosts/{host}`.
fn host_codes(server: &ServerProcess, host: &str) -> Vec<String> {
    let body = server
        .get(&format!("/v1/hosts/{host}"))
        .expect("get")
        .json()
        .expect("json");
    body["pools"][0]["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A lab whose server also serves the admin socket (returned last).
fn setup_with_socket(
    names: &[&str],
) -> (
    tempfile::TempDir,
    Lab,
    Vec<LabHost>,
    ServerProcess,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let hosts = names
        .iter()
        .map(|n| lab.add_host(n, Launch::Golden).expect("host"))
        .collect();
    let socket = lab.dir.join("admin.sock");
    let mut options = lab.server_options("30s", "75s");
    options.admin_socket = Some(socket.clone());
    let server = ServerProcess::start(options).expect("server");
    (dir, lab, hosts, server, socket)
}

/// `cfg` (a host's certificate) on another host's TPM, with a fresh agent
/// state directory `state` (so a fresh AK).
fn on_tpm(cfg: &AgentConfig, tpm: &LabHost, state: &std::path::Path) -> AgentConfig {
    std::fs::create_dir_all(state).expect("state dir");
    AgentConfig {
        tcti: tpm.swtpm.tcti(),
        state_dir: state.to_path_buf(),
        ..cfg.clone()
    }
}

/// `trustpool` over the admin socket.
fn admin(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(trustpool_tests::procs::binary("trustpool").expect("trustpool"))
        .env_remove("TRUSTPOOL_SERVER")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("trustpool runs")
}

/// Counts the "policy reloaded" lines of the server's log.
fn reloads(server: &ServerProcess) -> usize {
    server.log_text().matches("policy reloaded").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_reload_does_not_readmit_a_host_on_old_evidence() {
    let (_dir, lab, hosts, server) = setup(&["host-a"]);
    let cfg = agent_config(&lab, &hosts[0], &server);
    let mut agent = Scripted::open(&cfg).await;
    let c1 = agent.challenge().await;
    let good = agent
        .evidence(&c1.nonce, &c1.nonce, &c1.pcrs, b"", b"")
        .await;
    assert!(trusted(&agent.verdict(good.clone()).await));
    // Unsound evidence (a replay): out of the pool.
    let c2 = agent.request_challenge().await;
    let v = agent.verdict(good).await;
    assert!(codes(&v).contains(&"nonce.reused".to_string()), "{v:?}");
    assert!(server.pool_members("default").expect("feed").is_empty());
    // A reload well within the down time (75 s) must not re-admit it from
    // the facts of its earlier good evidence.
    let before = reloads(&server);
    lab.write_policy("default", &format!("# reviewed\n{}", golden_policy()))
        .expect("policy");
    assert!(
        wait_until(Duration::from_secs(20), || reloads(&server) > before),
        "{}",
        server.log_text()
    );
    assert!(
        server.pool_members("default").expect("feed").is_empty(),
        "re-admitted on old evidence:\n{}",
        server.log_text()
    );
    assert!(host_codes(&server, "host-a").contains(&"nonce.reused".to_string()));
    // Sound evidence again (the challenge still outstanding): trusted again.
    let e = agent
        .evidence(&c2.nonce, &c2.nonce, &c2.pcrs, b"", b"")
        .await;
    assert!(trusted(&agent.verdict(e).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_restart_does_not_publish_verdicts_the_policy_now_refuses() {
    let (_dir, lab, hosts, mut server) = setup(&["host-a", "host-b"]);
    for host in &hosts {
        let cfg = agent_config(&lab, host, &server);
        let mut agent = Scripted::open(&cfg).await;
        assert!(trusted(&agent.attest().await));
    }
    let mut members = server.pool_members("default").expect("feed");
    members.sort();
    assert_eq!(members, vec!["host-a".to_string(), "host-b".to_string()]);
    // While the server is down, the policy changes so that nobody passes.
    server.stop().expect("stop");
    let strict = golden_policy().replace(
        &hex::encode(trustpool_tests::lab::expected_pcrs(Launch::Golden)[&17]),
        &"ab".repeat(32),
    );
    assert_ne!(strict, golden_policy(), "the policy pins PCR 17");
    lab.write_policy("default", &strict).expect("policy");
    server.restart().expect("restart");
    // The stored trusted verdicts (valid for 75 s) are re-evaluated before
    // anything is published: nobody is in the feed, and the reason is named.
    assert!(
        server.pool_members("default").expect("feed").is_empty(),
        "{}",
        server.log_text()
    );
    assert!(
        host_codes(&server, "host-a").contains(&"pcr.not_allowed".to_string()),
        "{:?}",
        host_codes(&server, "host-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_stream_never_outlives_its_ak() {
    let (_dir, lab, hosts, server, socket) = setup_with_socket(&["host-a", "spare-tpm"]);
    let (host, spare) = (&hosts[0], &hosts[1]);
    let old_cfg = agent_config(&lab, host, &server);
    let mut old = Scripted::open(&old_cfg).await;
    assert!(trusted(&old.attest().await));

    // A second stream for the same host certificate, from another TPM: it
    // replaces the first, which must not go on receiving verdicts.
    let new_cfg = on_tpm(&old_cfg, spare, &lab.dir.join("host-a-new-agent"));
    let mut new = Scripted::open(&new_cfg).await;
    assert_eq!(old.ended_with().await, "session.replaced");
    let v = new.attest().await;
    assert!(!trusted(&v), "{v:?}");
    assert!(codes(&v).contains(&"host.pending".to_string()), "{v:?}");

    // The operator approves the new TPM: the open stream (which spoke for
    // the pending keys) ends, and the agent reconnects under the new binding.
    let out = admin(&socket, &["hosts", "approve", "host-a"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(new.ended_with().await, "enrolment.changed");
    drop(new);
    let mut new = Scripted::open(&new_cfg).await;
    assert!(trusted(&new.attest().await));
    // The old TPM can no longer speak for the host: held for approval.
    drop(old);
    let mut old = Scripted::open(&old_cfg).await;
    assert_eq!(new.ended_with().await, "session.replaced");
    let v = old.attest().await;
    assert!(!trusted(&v), "{v:?}");
    assert!(codes(&v).contains(&"host.pending".to_string()), "{v:?}");
    assert!(server.pool_members("default").expect("feed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_one_tpm_cannot_back_two_host_names() {
    let (_dir, lab, hosts, server, socket) = setup_with_socket(&["host-a", "host-b"]);
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut agent_a = Scripted::open(&agent_config(&lab, a, &server)).await;
    assert!(trusted(&agent_a.attest().await));
    // Its verdict stays valid for the down time; the TPM is free for host-b.
    drop(agent_a);

    // host-b's certificate with host-a's TPM (same EK, a fresh AK).
    let cfg_b = on_tpm(
        &agent_config(&lab, b, &server),
        a,
        &lab.dir.join("host-b-on-a"),
    );
    let mut agent_b = Scripted::open(&cfg_b).await;
    let v = agent_b.attest().await;
    assert!(!trusted(&v), "{v:?}");
    assert!(
        v.pools
            .iter()
            .flat_map(|p| &p.reasons)
            .any(|r| r.code == "host.pending"
                && r.message.contains("tpm.in_use")
                && r.message.contains("host-a")),
        "{v:?}"
    );
    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-a".to_string()],
        "host-a keeps its trust, host-b never gets any"
    );
    // An operator who really moved the TPM approves: host-a's enrolment goes.
    let out = admin(&socket, &["hosts", "approve", "host-b"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(agent_b.ended_with().await, "enrolment.changed");
    drop(agent_b);
    let mut agent_b = Scripted::open(&cfg_b).await;
    assert!(trusted(&agent_b.attest().await));
    assert_eq!(
        server.pool_members("default").expect("feed"),
        vec!["host-b".to_string()],
        "host-a's enrolment went with its TPM"
    );
    assert!(host_codes(&server, "host-a").contains(&"host.not_attested".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_ek_allowlist_admits_only_listed_tpms() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::create(dir.path()).expect("lab");
    lab.write_policy("default", &golden_policy())
        .expect("policy");
    let a = lab.add_host("host-a", Launch::Golden).expect("host");
    let b = lab.add_host("host-b", Launch::Golden).expect("host");
    // The inventory knows host-a's EK (read from its TPM, as tpm2_readpublic would).
    let ek_a = {
        let tpm = Tpm::open(
            &a.swtpm.tcti(),
            &a.state_dir,
            EkAlg::Rsa2048,
            AkAlg::RsaSsa2048,
        )
        .expect("tpm");
        let worker = TpmWorker::spawn(tpm);
        worker.identity().await.expect("identity").ek_public
    };
    let list = lab.dir.join("ek-allowlist");
    std::fs::write(
        &list,
        format!(
            "# asset inventory\nhost-a 000b{}\n",
            hex::encode(Sha256::digest(&ek_a))
        ),
    )
    .expect("allowlist");
    let mut options = lab.server_options("30s", "75s");
    options.publication.extra_args = vec!["--ek-allowlist".into(), list.display().to_string()];
    let server = ServerProcess::start(options).expect("server");

    let mut agent_a = Scripted::open(&agent_config(&lab, &a, &server)).await;
    assert!(trusted(&agent_a.attest().await));
    drop(agent_a);
    // An unlisted host, and host-a's name with another TPM, are refused.
    let refused = Scripted::try_open(&agent_config(&lab, &b, &server)).await;
    assert_eq!(refused.err().as_deref(), Some("enrolment.ek_not_allowed"));
    let other_tpm = on_tpm(
        &agent_config(&lab, &a, &server),
        &b,
        &lab.dir.join("host-a-other-tpm"),
    );
    let refused = Scripted::try_open(&other_tpm).await;
    assert_eq!(refused.err().as_deref(), Some("enrolment.ek_not_allowed"));
    // Listing host-b takes effect without a restart.
    let ek_b = {
        let tpm = Tpm::open(
            &b.swtpm.tcti(),
            &b.state_dir,
            EkAlg::Rsa2048,
            AkAlg::RsaSsa2048,
        )
        .expect("tpm");
        TpmWorker::spawn(tpm)
            .identity()
            .await
            .expect("identity")
            .ek_public
    };
    std::fs::write(
        &list,
        format!(
            "host-a 000b{}\nhost-b {}\n",
            hex::encode(Sha256::digest(&ek_a)),
            hex::encode(Sha256::digest(&ek_b))
        ),
    )
    .expect("allowlist");
    let mut agent_b = Scripted::open(&agent_config(&lab, &b, &server)).await;
    assert!(trusted(&agent_b.attest().await));
}
