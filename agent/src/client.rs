//! The attestation client: one mutual-TLS gRPC stream to the server,
//! enrolment (credential activation), then a quote for every challenge.
//! Reconnects with exponential back-off and jitter while the server is away.

use crate::config::AgentConfig;
use crate::report::Reporter;
use crate::tpm::TpmWorker;
use crate::watch::ChangeWatch;
use anyhow::{anyhow, Context};
use rand::Rng;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{info, warn};
use trustpool_evidence::binding::qualifying_data;
use trustpool_proto::v1::agent_message::Msg as AgentMsg;
use trustpool_proto::v1::attestation_client::AttestationClient;
use trustpool_proto::v1::server_message::Msg as ServerMsg;
use trustpool_proto::v1::{
    ActivationProof, AgentMessage, AttestChallenge, ChallengeRequest, Evidence, Hello, PcrValue,
    Verdict,
};

/// First reconnection delay.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// `--once`: the verdict of the single round.
    Verdict(Verdict),
    /// The server closed the stream.
    Closed,
}

/// A refusal sent by the server (`Error` message): not worth a fast retry.
#[derive(Debug, thiserror::Error)]
#[error("server refused: {code}: {message}")]
pub struct Refused {
    /// Stable code, e.g. `enrolment.conflict`.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// Exponential back-off with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt: uniform in [next/2, next], then doubles up to the cap.
    pub fn delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let half = ceiling / 2;
        half + Duration::from_millis(
            rng.gen_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Back to the shortest delay (after a good session).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Opens the mutual-TLS channel to the server.
pub async fn connect(cfg: &AgentConfig) -> anyhow::Result<Channel> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
    };
    let ca = read(&cfg.ca, "server CA")?;
    let cert = read(&cfg.cert, "client certificate")?;
    let key = crate::secrets::read_private_key(&cfg.key, "client key")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    let endpoint = Endpoint::from_shared(cfg.server.clone())
        .with_context(|| format!("invalid server URL {}", cfg.server))?
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .connect_timeout(Duration::from_secs(10))
        // A partition is noticed within interval + timeout, not at the
        // kernel's TCP timeout: the agent then reconnects.
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout);
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", cfg.server))
}

/// Runs the agent until stopped: reconnects with back-off forever.
pub async fn run_forever(
    cfg: &AgentConfig,
    tpm: &TpmWorker,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match session(cfg, tpm, reporter, &mut backoff).await {
            Ok(_) => info!("the server closed the stream; reconnecting"),
            Err(e) => warn!(error = %format!("{e:#}"), "session failed"),
        }
        let delay = backoff.delay(&mut rand::thread_rng());
        info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after back-off"
        );
        tokio::time::sleep(delay).await;
    }
}

fn agent_msg(msg: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

/// One session: Hello, enrolment if asked, then challenges until the stream
/// ends (or, with `--once`, until the first verdict).
pub async fn session(
    cfg: &AgentConfig,
    tpm: &TpmWorker,
    reporter: &Reporter,
    backoff: &mut Backoff,
) -> anyhow::Result<SessionEnd> {
    let identity = tpm.identity().await.context("reading the TPM identity")?;
    let channel = connect(cfg).await?;
    let mut client = AttestationClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    tx.send(agent_msg(AgentMsg::Hello(Hello {
        hostname: cfg.hostname.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        ek_public: identity.ek_public.clone(),
        ek_certificate: identity.ek_certificate.clone().unwrap_or_default(),
        ak_public: identity.ak_public.clone(),
        ek_chain: Vec::new(),
    })))
    .await
    .map_err(|_| anyhow!("stream closed before Hello"))?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .context("opening the attestation stream")?
        .into_inner();
    // Change watch between rounds (not with --once).
    let mut ticker = (!cfg.once).then(|| {
        let mut t = tokio::time::interval(cfg.watch_interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut watch = ChangeWatch::default();
    let mut check_params = String::new();
    loop {
        let message = tokio::select! {
            m = inbound.message() => m.context("reading from the server")?,
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending().await,
                }
            } => {
                if let Some(reason) = watch.poll(tpm, reporter, &check_params).await {
                    info!(%reason, "the host changed: asking for a challenge");
                    let _ = tx
                        .send(agent_msg(AgentMsg::ChallengeRequest(ChallengeRequest { reason })))
                        .await;
                }
                continue;
            }
        };
        let Some(message) = message else {
            return Ok(SessionEnd::Closed);
        };
        match message.msg {
            Some(ServerMsg::CredentialChallenge(c)) => {
                info!("enrolling: activating the server's credential");
                let secret = tpm
                    .activate_credential(c.credential_blob, c.encrypted_secret)
                    .await
                    .context("TPM2_ActivateCredential")?;
                tx.send(agent_msg(AgentMsg::Activation(ActivationProof { secret })))
                    .await
                    .map_err(|_| anyhow!("stream closed during enrolment"))?;
            }
            Some(ServerMsg::Enrolled(e)) => {
                info!(
                    new_enrolment = e.new_enrolment,
                    report_interval_secs = e.report_interval_secs,
                    "enrolled"
                );
                backoff.reset();
            }
            Some(ServerMsg::Challenge(challenge)) => {
                check_params.clone_from(&challenge.check_params_json);
                let (evidence, statuses) = answer(tpm, reporter, challenge).await?;
                let observed: Vec<(u32, Vec<u8>)> = evidence
                    .pcr_values
                    .iter()
                    .map(|p| (p.index, p.digest.clone()))
                    .collect();
                watch.observed(&observed, statuses);
                tx.send(agent_msg(AgentMsg::Evidence(evidence)))
                    .await
                    .map_err(|_| anyhow!("stream closed before the evidence was sent"))?;
            }
            Some(ServerMsg::Verdict(v)) => {
                let trusted: Vec<&str> = v
                    .pools
                    .iter()
                    .filter(|p| p.trusted)
                    .map(|p| p.pool.as_str())
                    .collect();
                let first = v.pools.iter().flat_map(|p| p.reasons.first()).next();
                info!(trusted_in = ?trusted, first_reason = ?first.map(|r| &r.code), "verdict");
                if cfg.once {
                    return Ok(SessionEnd::Verdict(v));
                }
            }
            Some(ServerMsg::Error(e)) => {
                return Err(Refused {
                    code: e.code,
                    message: e.message,
                }
                .into())
            }
            None => return Err(anyhow!("empty message from the server")),
        }
    }
}

async fn answer(
    tpm: &TpmWorker,
    reporter: &Reporter,
    challenge: AttestChallenge,
) -> anyhow::Result<(Evidence, Option<std::collections::BTreeMap<String, String>>)> {
    let (report, statuses) = reporter.collect(&challenge.check_params_json).await;
    let qd = qualifying_data(&challenge.nonce, &report);
    let quote = tpm
        .quote(qd.to_vec(), challenge.pcrs.clone())
        .await
        .context("TPM2_Quote")?;
    Ok((
        Evidence {
            nonce: challenge.nonce,
            attest: quote.attest,
            signature: quote.signature,
            pcr_values: quote
                .pcr_values
                .into_iter()
                .map(|(index, digest)| PcrValue { index, digest })
                .collect(),
            hardening_report: report,
        },
        statuses,
    ))
}

/// Renders a verdict for people (used by `--once`).
pub fn render_verdict(hostname: &str, v: &Verdict) -> String {
    let mut out = String::new();
    for p in &v.pools {
        if p.trusted {
            out.push_str(&format!("{hostname}: TRUSTED in pool '{}'\n", p.pool));
        } else {
            out.push_str(&format!("{hostname}: NOT trusted in pool '{}'\n", p.pool));
            for r in &p.reasons {
                out.push_str(&format!("  - [{}] {}\n", r.code, r.message));
            }
        }
    }
    if v.pools.is_empty() {
        out.push_str(&format!("{hostname}: the server defines no pool\n"));
        for r in &v.reasons {
            out.push_str(&format!("  - [{}] {}\n", r.code, r.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let mut rng = rand::thread_rng();
        let mut ceiling = BACKOFF_MIN;
        for _ in 0..12 {
            let d = b.delay(&mut rng);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(BACKOFF_MAX);
        }
        assert!(b.delay(&mut rng) <= BACKOFF_MAX);
        b.reset();
        assert!(b.delay(&mut rng) <= BACKOFF_MIN);
    }
}
