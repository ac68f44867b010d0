//! The wire protocol under attack: replayed and unknown nonces, a report
//! swapped after the quote, malformed and truncated messages. A scripted
//! agent speaks the protocol in-process with a real swtpm and real mutual
//! TLS; a raw gRPC client sends bytes that are not protobuf at all.

use bytes::{Buf, BufMut};
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Streaming;
use trustpool_agent::client::connect;
use trustpool_agent::config::AgentConfig;
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
        server: server.url(),
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
        tpm_lost_exit_after: trustpool_agent::config::DEFAULT_TPM_LOST_EXIT_AFTER,
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
        let tpm =
            Tpm::open(&cfg.tcti, &cfg.state_dir, EkAlg::Rsa2048, AkAlg::RsaSsa2048).expect("tpm");
        let tpm = TpmWorker::spawn(tpm);
        let id = tpm.identity().await.expect("identity");
        let channel = connect(cfg).await.expect("connect");
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
                assert!(matches!(s.next().await, ServerMsg::Enrolled(_)));
            }
            ServerMsg::Enrolled(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        s
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
        }
    }

    async fn verdict(&mut self, e: Evidence) -> Verdict {
        self.send(AgentMsg::Evidence(e)).await;
        match self.next().await {
            ServerMsg::Verdict(v) => v,
            other => panic!("expected a verdict, got {other:?}"),
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
async fn old_unknown_and_swapped_evidence_is_rejected() {
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
    let channel = connect(cfg).await.expect("connect");
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
async fn malformed_messages_end_only_their_own_stream() {
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
