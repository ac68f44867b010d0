//! The attestation client: one mutual-TLS gRPC stream to the server,
//! enrolment (credential activation), then a quote for every challenge.
//! Fails over along the server list, with exponential back-off and jitter
//! per failed pass ([`trustpool_daemon::failover`]).

use crate::config::AgentConfig;
use crate::eventlog::EventLogReader;
use crate::report::Reporter;
use crate::tpm::TpmError;
use crate::tpm::TpmWorker;
use crate::watch::ChangeWatch;
use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{info, warn};
use trustpool_daemon::failover::{start_index, Failover, Outcome};
use trustpool_evidence::binding::qualifying_data;
use trustpool_proto::v1::agent_message::Msg as AgentMsg;
use trustpool_proto::v1::attestation_client::AttestationClient;
use trustpool_proto::v1::server_message::Msg as ServerMsg;
use trustpool_proto::v1::{
    ActivationProof, AgentMessage, AttestChallenge, ChallengeRequest, Evidence, Hello, PcrValue,
    Verdict,
};

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

/// How far a session got: filled in by [`session`] as it goes, read by
/// the caller once it ended (to tell a dead server from a lost stream, and a
/// healthy stream from a short one).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The attestation stream was opened.
    pub opened: bool,
    /// When the server said `Enrolled`, and the report interval it announced.
    pub enrolled: Option<(Instant, Duration)>,
}

impl Progress {
    /// True when the stream lived for at least one report interval after
    /// enrolment: the back-off starts over.
    pub fn was_healthy(&self) -> bool {
        self.enrolled
            .is_some_and(|(at, interval)| at.elapsed() >= interval)
    }
}

/// The report interval assumed when the server announces none.
const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// Opens the mutual-TLS channel to `server` (one of `cfg.servers`). A host
/// name that resolves to several addresses is left to the resolver and
/// tonic: each connection dials what the name resolves to then.
pub async fn connect(cfg: &AgentConfig, server: &str) -> anyhow::Result<Channel> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
    };
    let ca = read(&cfg.ca, "server CA")?;
    let cert = read(&cfg.cert, "client certificate")?;
    let key = crate::secrets::read_private_key(&cfg.key, "client key")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    let endpoint = Endpoint::from_shared(server.to_string())
        .with_context(|| format!("invalid server URL {server}"))?
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
        .with_context(|| format!("cannot connect to {server}"))
}

/// Runs the agent until stopped: one stream to one server at a time, failing
/// over along the list with back-off forever (see [`trustpool_daemon::failover`]).
pub async fn run_forever(
    cfg: &AgentConfig,
    tpm: &TpmWorker,
    reporter: &Reporter,
    event_logs: &EventLogReader,
) -> anyhow::Result<()> {
    let servers = &cfg.servers;
    let mut failover = Failover::new(servers.len(), start_index(&cfg.hostname, servers.len()));
    if servers.len() > 1 {
        info!(
            servers = ?servers,
            first = %servers[failover.current()],
            "several servers: one stream to one of them at a time, failing over in list order"
        );
    }
    loop {
        let server = &servers[failover.current()];
        let mut progress = Progress::default();
        let ended = session(cfg, server, tpm, reporter, event_logs, &mut progress).await;
        let (outcome, why) = classify(&ended, &progress);
        match &ended {
            Ok(_) => info!(%server, "the server closed the stream"),
            Err(e) => warn!(%server, error = %format!("{e:#}"), "session failed"),
        }
        let step = failover.next_delay(outcome, &mut rand::thread_rng());
        let next = &servers[step.server];
        let delay_ms = u64::try_from(step.delay.as_millis()).unwrap_or(u64::MAX);
        if next != server {
            info!(
                from = %server,
                to = %next,
                reason = why,
                delay_ms,
                backoff = step.backoff,
                "failing over to the next server"
            );
        } else {
            info!(%server, reason = why, delay_ms, "reconnecting after back-off");
        }
        tokio::time::sleep(step.delay).await;
    }
}

/// Why a session ended, for the rotation and the log.
fn classify(ended: &anyhow::Result<SessionEnd>, progress: &Progress) -> (Outcome, &'static str) {
    let outcome = |failed| {
        if progress.was_healthy() {
            Outcome::Healthy
        } else {
            failed
        }
    };
    match ended {
        Ok(_) => (outcome(Outcome::Failed), "closed by the server"),
        Err(e) if is_local(e) => (Outcome::Local, "TPM failure on this host"),
        Err(e) if e.chain().any(|c| c.is::<Refused>()) => {
            (outcome(Outcome::Failed), "refused by the server")
        }
        Err(_) if !progress.opened => (Outcome::Failed, "cannot reach the server"),
        Err(_) => (outcome(Outcome::Failed), "stream lost"),
    }
}

/// A refusal another replica would repeat (all but `server.stopping`).
fn is_final_refusal(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<Refused>())
        .any(|r| r.code != "server.stopping")
}

/// A failure of this host (its TPM), which another server would not cure.
fn is_local(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<TpmError>())
}

/// `--once`: one pass over the servers from this host's place in the list;
/// the first verdict wins. A refusal (but `server.stopping`), or a failure of
/// the TPM, ends it at once: another replica of the same service decides the
/// same. An unreachable server, a stopping one or a lost stream moves on to
/// the next. Without a verdict the last error is returned.
pub async fn once(
    cfg: &AgentConfig,
    tpm: &TpmWorker,
    reporter: &Reporter,
    event_logs: &EventLogReader,
) -> anyhow::Result<Verdict> {
    let servers = &cfg.servers;
    let start = start_index(&cfg.hostname, servers.len());
    let mut last = None;
    for i in 0..servers.len() {
        let server = &servers[(start + i) % servers.len()];
        let mut progress = Progress::default();
        let error = match session(cfg, server, tpm, reporter, event_logs, &mut progress).await {
            Ok(SessionEnd::Verdict(v)) => return Ok(v),
            Ok(SessionEnd::Closed) => anyhow!("{server} closed the stream before a verdict"),
            Err(e) if is_local(&e) || is_final_refusal(&e) => return Err(e),
            Err(e) => e,
        };
        if i + 1 < servers.len() {
            let next = &servers[(start + i + 1) % servers.len()];
            warn!(from = %server, to = %next, error = %format!("{error:#}"), "failing over to the next server");
        }
        last = Some(error);
    }
    Err(last.unwrap_or_else(|| anyhow!("no server configured")))
}

fn agent_msg(msg: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

/// One session: Hello, enrolment if asked, then challenges until the stream
/// ends (or, with `--once`, until the first verdict).
pub async fn session(
    cfg: &AgentConfig,
    server: &str,
    tpm: &TpmWorker,
    reporter: &Reporter,
    event_logs: &EventLogReader,
    progress: &mut Progress,
) -> anyhow::Result<SessionEnd> {
    let identity = tpm.identity().await.context("reading the TPM identity")?;
    let channel = connect(cfg, server).await?;
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
        .with_context(|| format!("opening the attestation stream to {server}"))?
        .into_inner();
    progress.opened = true;
    info!(%server, "attestation stream open");
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
                let interval = match e.report_interval_secs {
                    0 => DEFAULT_REPORT_INTERVAL,
                    secs => Duration::from_secs(u64::from(secs)),
                };
                progress.enrolled = Some((Instant::now(), interval));
            }
            Some(ServerMsg::Challenge(challenge)) => {
                check_params.clone_from(&challenge.check_params_json);
                let (evidence, statuses) = answer(tpm, reporter, event_logs, challenge).await?;
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

/// The Evidence for one challenge: the hardening report bound into the
/// quote, the quote, then the event logs (read after the quote, so that a
/// log that grows holds at least what the quoted PCRs include).
async fn answer(
    tpm: &TpmWorker,
    reporter: &Reporter,
    event_logs: &EventLogReader,
    challenge: AttestChallenge,
) -> anyhow::Result<(Evidence, Option<std::collections::BTreeMap<String, String>>)> {
    let (report, statuses) = reporter.collect(&challenge.check_params_json).await;
    let qd = qualifying_data(&challenge.nonce, &report);
    let quote = tpm
        .quote(qd.to_vec(), challenge.pcrs.clone())
        .await
        .context("TPM2_Quote")?;
    let event_logs = event_logs.collect().await;
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
            event_logs,
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
    fn session_ends_are_classified_for_the_rotation() {
        let fresh = Progress::default();
        let opened = Progress {
            opened: true,
            enrolled: Some((Instant::now(), Duration::from_secs(30))),
        };
        let healthy = Progress {
            opened: true,
            enrolled: Some((Instant::now(), Duration::ZERO)),
        };
        let unreachable = Err(anyhow!("connection refused"));
        assert_eq!(
            classify(&unreachable, &fresh),
            (Outcome::Failed, "cannot reach the server")
        );
        let lost = Err(anyhow!("reset"));
        assert_eq!(classify(&lost, &opened), (Outcome::Failed, "stream lost"));
        assert_eq!(classify(&lost, &healthy), (Outcome::Healthy, "stream lost"));
        let closed = Ok(SessionEnd::Closed);
        assert_eq!(classify(&closed, &opened).0, Outcome::Failed);
        assert_eq!(classify(&closed, &healthy).0, Outcome::Healthy);
        let refused: anyhow::Result<SessionEnd> = Err(anyhow::Error::from(Refused {
            code: "server.stopping".into(),
            message: "bye".into(),
        })
        .context("session"));
        assert_eq!(
            classify(&refused, &opened),
            (Outcome::Failed, "refused by the server")
        );
        assert!(!is_final_refusal(refused.as_ref().expect_err("err")));
        let conflict = anyhow::Error::from(Refused {
            code: "identity.mismatch".into(),
            message: "no".into(),
        });
        assert!(is_final_refusal(&conflict));
        let tpm: anyhow::Result<SessionEnd> =
            Err(anyhow::Error::from(TpmError::WorkerGone).context("TPM2_Quote"));
        assert_eq!(classify(&tpm, &healthy).0, Outcome::Local);
    }
}
