//! One agent stream (`Attestation.Session`): identity check against the
//! client certificate, enrolment with credential activation, then paced
//! challenges and verdicts. Any protocol violation ends only this stream,
//! with an `Error` message that says why.

use crate::attest::ek_allowlist::EkVerdict;
use crate::attest::pacing::{first_round_delay, Slot};
use crate::attest::streams::{Ticket, ENROLMENT_CHANGED};
use crate::clock::{mono_ms, now_ms};
use crate::fleet::history::trust_events;
use crate::fleet::registry::PENDING;
use crate::state::AppState;
use crate::store::group::{EvidenceRecord, FactsRecord};
use crate::store::{Enrolment, HistoryEvent, PendingEnrolment, StoredVerdict};
use crate::tls::identity::{valid_hostname, PeerIdentity};
use crate::verify::challenge::ChallengeBook;
use crate::verify::facts::Facts;
use crate::verify::verdict::{evaluate_evidence_under_ek, Evaluation, EvidenceRef, Previous};
use rand::RngCore;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};
use trustpool_evidence::credential::make_credential;
use trustpool_evidence::ekcert::verify_ek_certificate;
use trustpool_evidence::reason::Reason;
use trustpool_evidence::tpm::{parse_public, TpmPublic};
use trustpool_proto::v1::agent_message::Msg as AgentMsg;
use trustpool_proto::v1::attestation_server::Attestation;
use trustpool_proto::v1::server_message::Msg as ServerMsg;
use trustpool_proto::v1::{
    AgentMessage, AttestChallenge, CredentialChallenge, Enrolled, Error as ErrorMsg, Evidence,
    PoolVerdict, Reason as ReasonMsg, ServerMessage, Verdict,
};

/// How long the server waits for `Hello` and for the activation proof.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Minimum time between two challenges asked for by the agent.
const MIN_REQUESTED_GAP: Duration = Duration::from_millis(500);

/// Session error code: the EK allowlist does not list this TPM for this host.
pub const EK_NOT_ALLOWED: &str = "enrolment.ek_not_allowed";
/// Leads the pending reason of a TPM already enrolled for another host name.
pub const TPM_IN_USE: &str = "tpm.in_use";

/// The gRPC service.
pub struct AttestationService {
    state: Arc<AppState>,
}

impl AttestationService {
    /// A service over the shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        AttestationService { state }
    }
}

/// Why a session ended early: a stable code and a message for the agent.
#[derive(Debug)]
pub struct SessionError {
    /// Stable code, e.g. `identity.mismatch`.
    pub code: &'static str,
    /// Human explanation.
    pub message: String,
}

impl SessionError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        SessionError {
            code,
            message: message.into(),
        }
    }
}

/// The session task's side of the response stream. Messages are boxed: the
/// channel allocates its slots in blocks of 32 when it is made, and 32
/// inline messages (each as large as the largest variant, plus a tonic
/// `Status` in the old `Result` form) stayed allocated for every connected
/// host.
type Outbound = mpsc::Sender<Box<ServerMessage>>;

#[tonic::async_trait]
impl Attestation for AttestationService {
    type SessionStream =
        Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send + 'static>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if !self.state.replica.policy_agrees() {
            return Err(Status::unavailable(
                crate::publish::feed::POLICY_DISAGREEMENT,
            ));
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let peer = PeerIdentity::from_der(leaf.as_ref()).map_err(Status::unauthenticated)?;
        // Only a certificate of the agents' CA opens a session (the listener
        // also accepts operator certificates, for the Admin service).
        let pki = self
            .state
            .pki
            .get()
            .ok_or_else(|| Status::unavailable("no client CA is configured"))?
            .clone();
        pki.check_logged("attestation", crate::tls::pki::Role::Agents, &certs)
            .map_err(|r| Status::permission_denied(r.to_string()))?;
        let revoked =
            pki.until_refused("attestation", crate::tls::pki::Role::Agents, certs.clone());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut session = Session {
                state,
                peer,
                inbound,
                tx,
                hostname: None,
                stream_id: None,
                counted: false,
                last_inbound: Instant::now(),
                last_inbound_before_end: Duration::ZERO,
            };
            let stopped = session.state.stopped();
            let mut agreement = session.state.replica.agreement_changes();
            // A stopping server ends the session between two awaits; store
            // writes are transactions, so an interrupted one leaves nothing
            // half-written and the agent attests again on the next server.
            let outcome = tokio::select! {
                outcome = session.run() => outcome,
                () = stopped => Err(SessionError::new(
                    "server.stopping",
                    "the server is stopping; reconnect later",
                )),
                refusal = revoked => Err(SessionError::new(
                    "identity.refused",
                    refusal.to_string(),
                )),
                // Agents move to the replicas whose policy is the majority's.
                _ = agreement.wait_for(|agrees| !agrees) => Err(SessionError::new(
                    "server.policy_disagreement",
                    crate::publish::feed::POLICY_DISAGREEMENT,
                )),
            };
            session.finish(outcome).await;
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|message| Ok(*message)),
        )))
    }
}

struct Session {
    state: Arc<AppState>,
    peer: PeerIdentity,
    inbound: Streaming<AgentMessage>,
    tx: Outbound,
    hostname: Option<String>,
    /// This stream's registration in the one-stream-per-host table.
    stream_id: Option<u64>,
    /// Whether the stream was counted as open in the metrics.
    counted: bool,
    /// When the agent last sent something (or the stream ended).
    last_inbound: Instant,
    /// How long the agent had been silent when its stream ended.
    last_inbound_before_end: Duration,
}

/// Which enrolment the session's AK belongs to, checked before every verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// The AK is the host's enrolled AK.
    Enrolled,
    /// The AK belongs to an enrolment waiting for an operator's approval:
    /// its evidence is judged and shown, but never trusted.
    Pending,
}

/// The outcome of one piece of evidence, ready to commit and apply.
struct Judged {
    evaluation: Evaluation,
    verdicts: Vec<StoredVerdict>,
    attested_at_ms: i64,
    /// The host's facts the evidence was judged against (what the store
    /// holds: an unchanged log shared with them is not written again).
    previous_facts: Option<Facts>,
    /// False when the commit failed: facts and clock are then left alone.
    committed: bool,
}

impl Session {
    async fn send(&self, msg: ServerMsg) -> Result<(), SessionError> {
        self.tx
            .send(Box::new(ServerMessage { msg: Some(msg) }))
            .await
            .map_err(|_| SessionError::new("stream.closed", "the agent closed the stream"))
    }

    /// Next message from the agent; `None` when the agent closed the stream.
    async fn next(&mut self) -> Result<Option<AgentMsg>, SessionError> {
        let read = self.inbound.message().await;
        self.last_inbound_before_end = self.last_inbound.elapsed();
        self.last_inbound = Instant::now();
        match read {
            Ok(Some(AgentMessage { msg: Some(m) })) => Ok(Some(m)),
            Ok(Some(AgentMessage { msg: None })) => Err(SessionError::new(
                "protocol.malformed",
                "empty message from the agent",
            )),
            Ok(None) => Ok(None),
            Err(status) => Err(inbound_error(&status)),
        }
    }

    async fn next_within(&mut self, what: &str) -> Result<AgentMsg, SessionError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.next()).await {
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(SessionError::new(
                "stream.closed",
                format!("the agent closed the stream before {what}"),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SessionError::new(
                "protocol.timeout",
                format!("no {what} within {}s", HANDSHAKE_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn run(&mut self) -> Result<(), SessionError> {
        let hello = match self.next_within("Hello").await? {
            AgentMsg::Hello(h) => h,
            _ => {
                return Err(SessionError::new(
                    "protocol.unexpected",
                    "the first message must be Hello",
                ))
            }
        };
        let hostname = hello.hostname.to_ascii_lowercase();
        if !valid_hostname(&hostname) {
            return Err(SessionError::new(
                "identity.invalid",
                format!("'{}' is not a valid host name", hello.hostname),
            ));
        }
        if !self.peer.speaks_for(&hostname) {
            warn!(claimed = %hostname, certificate = %self.peer.subject, "refused a stream speaking for another host");
            return Err(SessionError::new(
                "identity.mismatch",
                format!(
                    "this client certificate ({}) does not name host '{hostname}'",
                    self.peer.subject
                ),
            ));
        }
        let ek = parse_public(&hello.ek_public).map_err(|e| {
            SessionError::new(
                "enrolment.malformed",
                format!("EK public does not parse: {e}"),
            )
        })?;
        let ak = parse_public(&hello.ak_public).map_err(|e| {
            SessionError::new(
                "enrolment.malformed",
                format!("AK public does not parse: {e}"),
            )
        })?;
        ak.check_ak_attributes().map_err(|e| {
            SessionError::new("enrolment.ak_attributes", format!("AK refused: {e}"))
        })?;
        // One stream per host: this one replaces any other from now on.
        let mut ticket = self.state.streams.open(&hostname);
        self.stream_id = Some(ticket.id);
        self.hostname = Some(hostname.clone());
        let allowlisted = match self.state.ek_allowlist.judge(&hostname, &hello.ek_public) {
            EkVerdict::Refused(why) => {
                warn!(host = %hostname, %why, "EK not in the allowlist: session refused");
                return Err(SessionError::new(EK_NOT_ALLOWED, why));
            }
            EkVerdict::Listed => true,
            EkVerdict::NotConfigured => false,
        };

        let existing = self.state.registry.enrolment(&hostname);
        let pending = self.state.registry.pending(&hostname);
        let same_keys =
            |e: &Enrolment| e.ek_public == hello.ek_public && e.ak_public == hello.ak_public;
        let new_enrolment = if existing.as_ref().is_some_and(same_keys)
            || pending.as_ref().is_some_and(|p| same_keys(&p.enrolment))
        {
            self.state.metrics.enrolment("known");
            false
        } else {
            self.enrol(&hostname, &hello, &ek, &ak, existing.is_some(), allowlisted)
                .await?;
            true
        };
        self.state.registry.set_connected(&hostname, true);
        self.state.metrics.stream_opened();
        self.counted = true;
        self.send(ServerMsg::Enrolled(Enrolled {
            new_enrolment,
            report_interval_secs: u32::try_from(self.state.report_interval.as_secs())
                .unwrap_or(u32::MAX),
        }))
        .await?;
        info!(host = %hostname, new_enrolment, "agent session open");
        self.attest_loop(&hostname, &ek, &ak, &hello.ak_public, &mut ticket)
            .await
    }

    /// After the request stream ended: true when the connection died under
    /// it (our response stream is gone too, and the agent had been silent
    /// for at least the keep-alive timeout: an unanswered ping), false when
    /// the agent closed its stream (then it had just spoken).
    async fn link_lost(&self) -> bool {
        let silent_before = self.last_inbound_before_end;
        let gone = tokio::time::timeout(Duration::from_millis(200), self.tx.closed())
            .await
            .is_ok();
        gone && silent_before >= self.state.keepalive_timeout
    }

    /// Whether this session's AK is still the host's: an operator's approval
    /// of other keys (or a TPM moved to another name) ends the session.
    fn binding(&self, hostname: &str, ak_public: &[u8]) -> Result<Binding, SessionError> {
        if self
            .state
            .registry
            .enrolment(hostname)
            .is_some_and(|e| e.ak_public == ak_public)
        {
            return Ok(Binding::Enrolled);
        }
        if self
            .state
            .registry
            .pending(hostname)
            .is_some_and(|p| p.enrolment.ak_public == ak_public)
        {
            return Ok(Binding::Pending);
        }
        Err(SessionError::new(
            ENROLMENT_CHANGED,
            "this stream's AK is no longer the host's enrolled AK; reconnect",
        ))
    }

    /// Proves that the AK lives in the TPM of this EK (credential
    /// activation), then admits the binding — or holds it for an operator's
    /// approval when the EK has no valid chain to the configured roots or the
    /// host was enrolled with other keys before (TPM replaced or cleared).
    async fn enrol(
        &mut self,
        hostname: &str,
        hello: &trustpool_proto::v1::Hello,
        ek: &TpmPublic,
        ak: &TpmPublic,
        re_enrolment: bool,
        allowlisted: bool,
    ) -> Result<(), SessionError> {
        // Held until the enrolment is stored: a storm of new hosts is
        // admitted a bounded number at a time (attest::pacing).
        let Some(_slot) = self.state.enrol_gate.slot().await else {
            return Err(SessionError::new(
                "server.stopping",
                "the server is stopping; reconnect later",
            ));
        };
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let credential = make_credential(ek, &ak.name(), &secret, &mut rand::thread_rng())
            .map_err(|e| {
                SessionError::new(
                    "enrolment.ek_unusable",
                    format!("cannot make a credential for this EK: {e}"),
                )
            })?;
        self.send(ServerMsg::CredentialChallenge(CredentialChallenge {
            credential_blob: credential.credential_blob,
            encrypted_secret: credential.encrypted_secret,
        }))
        .await?;
        let proof = match self.next_within("the activation proof").await? {
            AgentMsg::Activation(p) => p,
            _ => {
                return Err(SessionError::new(
                    "protocol.unexpected",
                    "expected the activation proof",
                ))
            }
        };
        if !constant_time_eq(&proof.secret, &secret) {
            warn!(host = %hostname, "credential activation failed");
            return Err(SessionError::new(
                "enrolment.activation_failed",
                "the activated credential is wrong: the AK is not resident in the TPM that holds this EK",
            ));
        }
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let chain = if hello.ek_certificate.is_empty() {
            Err("the TPM presented no EK certificate".to_string())
        } else {
            verify_ek_certificate(
                &self.state.ek_trust,
                &hello.ek_certificate,
                &hello.ek_chain,
                ek,
                now,
            )
            .map_err(|e| format!("EK certificate refused: {e}"))
        };
        let enrolment = Enrolment {
            hostname: hostname.to_string(),
            ek_public: hello.ek_public.clone(),
            ek_certificate: (!hello.ek_certificate.is_empty())
                .then(|| hello.ek_certificate.clone()),
            ak_public: hello.ak_public.clone(),
            ak_name: ak.name(),
            cert_fingerprint: self.peer.fingerprint.clone(),
            cert_subject: self.peer.subject.clone(),
            enrolled_at_ms: now_ms(),
        };
        // Held for an operator's approval, with every reason that applies:
        // an EK the vendor roots do not vouch for (unless the allowlist
        // lists it), new keys for a known host, or a TPM that already backs
        // another host name.
        let mut holds = Vec::new();
        if re_enrolment {
            holds.push(
                "re-enrolled with a different EK or AK (TPM replaced or cleared?)".to_string(),
            );
        }
        let others = self
            .state
            .registry
            .tpm_owners(&hello.ek_public, &hello.ak_public, hostname);
        if !others.is_empty() {
            warn!(host = %hostname, others = ?others, "a TPM already enrolled for another host name");
            holds.push(format!(
                "{TPM_IN_USE}: this TPM (EK or AK) is already enrolled for {}; approving moves it to {hostname} and removes that enrolment",
                others.join(", ")
            ));
        }
        if let (Err(e), false) = (&chain, allowlisted) {
            holds.push(e.clone());
        }
        let hold = (!holds.is_empty()).then(|| holds.join("; "));
        let not_stored = |e: anyhow::Error| {
            warn!(host = %hostname, error = %format!("{e:#}"), "could not store an enrolment");
            SessionError::new(
                "enrolment.not_stored",
                "the enrolment could not be stored; try again",
            )
        };
        match hold {
            None => {
                self.state
                    .store
                    .insert_enrolment(&enrolment)
                    .await
                    .map_err(not_stored)?;
                self.state.registry.add_enrolment(enrolment);
                self.state.metrics.enrolment("enrolled");
                if let Ok(info) = chain {
                    info!(host = %hostname, ek_certificate = %info.subject, ek_issuer = %info.issuer, "host enrolled");
                }
            }
            Some(reason) => {
                warn!(host = %hostname, %reason, "enrolment held for an operator's approval");
                let pending = PendingEnrolment {
                    enrolment,
                    reason: reason.clone(),
                };
                self.state
                    .store
                    .put_pending(&pending)
                    .await
                    .map_err(not_stored)?;
                let at = now_ms();
                let changes = self.state.registry.set_pending(hostname, Some(pending), at);
                self.state.metrics.enrolment("pending");
                self.state
                    .record(HistoryEvent {
                        at_ms: at,
                        hostname: hostname.to_string(),
                        pool: String::new(),
                        event: "pending".into(),
                        trusted: false,
                        policy_digest: self.state.policy().digest_hex(),
                        reasons: vec![Reason::new(PENDING, reason)],
                        actor: "agent".into(),
                    })
                    .await;
                for e in trust_events(&changes, "agent", at) {
                    self.state.record(e).await;
                }
            }
        }
        Ok(())
    }

    /// The attestation rounds of an open session. A round is wanted at every
    /// tick of the report interval, after a policy change, when the store
    /// works again after a fault, and when the agent asks; it starts (the
    /// challenge is sent) once the server's admission gives it a slot
    /// (`attest::pacing`), and the slot is held until the evidence is judged
    /// or the challenge expires unanswered.
    async fn attest_loop(
        &mut self,
        hostname: &str,
        ek: &TpmPublic,
        ak: &TpmPublic,
        ak_public: &[u8],
        ticket: &mut Ticket,
    ) -> Result<(), SessionError> {
        let mut book = ChallengeBook::default();
        let interval = self.state.report_interval;
        let trusted_for = self
            .state
            .registry
            .trusted_for_ms(hostname, mono_ms())
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let delay = first_round_delay(
            self.state.started.elapsed(),
            trusted_for,
            interval,
            self.state.down_time,
            &mut rand::thread_rng(),
        );
        if !delay.is_zero() {
            debug!(host = %hostname, delay_ms = delay.as_millis() as u64, "server restarted: first round spread over the interval");
        }
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + delay, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_requested: Option<Instant> = None;
        let mut policy_changes = self.state.policy_changes();
        // The store works again after a fault: attest at once, so that the
        // hosts a failed commit left untrusted are back within a round trip.
        let mut store_recovered = self.state.store.health().recovered();
        let mut round = Round::default();
        loop {
            let round_expiry = round.expiry(&book);
            tokio::select! {
                ended = ticket.ended() => return Err(SessionError::new(ended.code, ended.message)),
                Ok(()) = policy_changes.changed() => round.want(&self.state, &book),
                Ok(()) = store_recovered.changed() => {
                    info!(host = %hostname, "the store works again: attesting at once");
                    round.want(&self.state, &book);
                }
                _ = ticker.tick() => round.want(&self.state, &book),
                slot = round.admitted() => {
                    let Some(slot) = slot else {
                        return Err(SessionError::new("server.stopping", "the server is stopping; reconnect later"));
                    };
                    self.challenge(&mut book).await?;
                    round.start(slot);
                }
                () = sleep_until_or_never(round_expiry) => {
                    debug!(host = %hostname, "the challenge expired unanswered: its slot is given back");
                    round.end();
                }
                msg = self.next() => match msg? {
                    None if self.link_lost().await => return Err(SessionError::new(
                        STREAM_LOST,
                        "the connection to the agent was lost (keep-alive ping unanswered or connection reset)",
                    )),
                    None => return Ok(()),
                    Some(AgentMsg::Evidence(evidence)) => {
                        self.judge(hostname, (ek, ak), ak_public, &mut book, evidence).await?;
                        if !book.has_pending(Instant::now()) {
                            round.end();
                        }
                    }
                    Some(AgentMsg::ChallengeRequest(req)) => {
                        let now = Instant::now();
                        let too_soon = last_requested.is_some_and(|t| now.duration_since(t) < MIN_REQUESTED_GAP);
                        if !round.busy(&book) && !too_soon {
                            info!(host = %hostname, reason = %req.reason, "agent asked for a challenge");
                            last_requested = Some(now);
                            round.want(&self.state, &book);
                        }
                    }
                    Some(_) => return Err(SessionError::new("protocol.unexpected", "unexpected message after enrolment")),
                }
            }
        }
    }

    async fn challenge(&self, book: &mut ChallengeBook) -> Result<(), SessionError> {
        let policy = self.state.policy();
        let pcrs = policy.union_pcrs();
        let c = book.issue(pcrs, Instant::now(), &mut rand::thread_rng());
        self.send(ServerMsg::Challenge(AttestChallenge {
            nonce: c.nonce.to_vec(),
            pcrs: c.pcrs.iter().map(|p| u32::from(*p)).collect(),
            expires_in_ms: u32::try_from(crate::verify::challenge::CHALLENGE_TTL.as_millis())
                .unwrap_or(u32::MAX),
            check_params_json: policy.check_params().unwrap_or_default().to_string(),
        }))
        .await
    }

    /// One piece of evidence, in four steps: decide (pure), commit (store),
    /// apply (registry, history, metrics), reply.
    async fn judge(
        &self,
        hostname: &str,
        keys: (&TpmPublic, &TpmPublic),
        ak_public: &[u8],
        book: &mut ChallengeBook,
        evidence: Evidence,
    ) -> Result<(), SessionError> {
        let started = Instant::now();
        let binding = self.binding(hostname, ak_public)?;
        let challenge = book.take(&evidence.nonce, started);
        let mut judged = self.decide(hostname, keys, binding, challenge.as_ref(), &evidence);
        self.commit(hostname, binding, &mut judged).await;
        self.apply(hostname, binding, &judged).await;
        if let Ok(c) = &challenge {
            self.state
                .metrics
                .attestation_round_trip(c.issued.elapsed());
        }
        self.reply(hostname, &judged, started).await
    }

    /// Decides: evaluates the evidence under the policy in force (pure).
    /// `keys` are the stream's EK and AK: the quote must be signed by the AK
    /// and name it, qualified under that EK, as its signer.
    fn decide(
        &self,
        hostname: &str,
        (ek, ak): (&TpmPublic, &TpmPublic),
        binding: Binding,
        challenge: Result<&crate::verify::challenge::Outstanding, &Reason>,
        evidence: &Evidence,
    ) -> Judged {
        let attested_at_ms = now_ms();
        let valid_until_ms = attested_at_ms
            + i64::try_from(self.state.down_time.as_millis()).unwrap_or(i64::MAX / 2);
        let pcr_values: Vec<(u32, Vec<u8>)> = evidence
            .pcr_values
            .iter()
            .map(|p| (p.index, p.digest.clone()))
            .collect();
        let policy = self.state.policy();
        // A pending TPM starts a clock history of its own.
        let (previous_clock, previous_facts) = match binding {
            Binding::Enrolled => (
                self.state.registry.clock(hostname),
                self.state.registry.host_facts(hostname),
            ),
            Binding::Pending => (None, None),
        };
        let evaluation = evaluate_evidence_under_ek(
            ak,
            ek,
            challenge.map_err(Clone::clone),
            EvidenceRef {
                nonce: &evidence.nonce,
                attest: &evidence.attest,
                signature: &evidence.signature,
                pcr_values: &pcr_values,
                report: &evidence.hardening_report,
                event_logs: &evidence.event_logs,
            },
            &policy,
            Previous {
                clock: previous_clock,
                facts: previous_facts.as_ref(),
            },
            (attested_at_ms, valid_until_ms),
        );
        if let Some(work) = evaluation.log_work {
            self.state.metrics.event_log(work.label());
        }
        let digest = policy.digest_hex();
        let verdicts = evaluation
            .pools
            .iter()
            .map(|(pool, reasons)| {
                let mut reasons = reasons.clone();
                if binding == Binding::Pending {
                    reasons.push(Reason::new(
                        PENDING,
                        "signed by an AK that waits for an operator's approval",
                    ));
                }
                StoredVerdict {
                    hostname: hostname.to_string(),
                    pool: pool.clone(),
                    trusted: reasons.is_empty(),
                    attested_at_ms,
                    valid_until_ms,
                    reasons,
                    policy_digest: digest.clone(),
                }
            })
            .collect();
        Judged {
            evaluation,
            verdicts,
            attested_at_ms,
            previous_facts,
            committed: true,
        }
    }

    /// Commits what the evidence changes before any of it is published, in
    /// the next batch of the group-commit writer (one transaction for the
    /// evidence of many sessions). Sound evidence of the enrolled TPM replaces the
    /// host's facts and clock; unsound evidence withdraws the facts (so no
    /// reload or restart can re-admit the host from older evidence). A
    /// repeat of an untrusted outcome already stored writes nothing. A
    /// failed commit leaves the host untrusted (`server.store_unavailable`),
    /// its facts and clock unchanged; the session attests again as soon as
    /// the store works ([`crate::store::StoreHealth::recovered`]).
    async fn commit(&self, hostname: &str, binding: Binding, judged: &mut Judged) {
        let facts = match (&judged.evaluation.facts, binding) {
            (Some(facts), Binding::Enrolled) => {
                match facts.to_stored(judged.previous_facts.as_ref()) {
                    Ok(stored) => FactsRecord::Put(stored),
                    Err(e) => {
                        warn!(host = %hostname, error = %e, "could not encode the evidence facts");
                        FactsRecord::Withdraw
                    }
                }
            }
            (Some(_), Binding::Pending) => FactsRecord::Keep,
            (None, _) => FactsRecord::Withdraw,
        };
        let clock = match binding {
            Binding::Enrolled => judged.evaluation.clock,
            Binding::Pending => None,
        };
        let unchanged = facts == FactsRecord::Withdraw
            && self.state.registry.host_facts(hostname).is_none()
            && same_untrusted_story(
                &self.state.registry.recorded_verdicts(hostname),
                &judged.verdicts,
            );
        if unchanged {
            return;
        }
        let record = EvidenceRecord {
            hostname: hostname.to_string(),
            verdicts: judged.verdicts.clone(),
            facts,
            clock,
        };
        if let Err(e) = self.state.evidence_writer.commit(record).await {
            warn!(host = %hostname, error = %format!("{e:#}"), "could not store the evidence: host marked untrusted");
            for v in &mut judged.verdicts {
                v.trusted = false;
                v.reasons.push(Reason::new(
                    "server.store_unavailable",
                    "the verdict could not be stored durably",
                ));
            }
            // Nothing was stored: the host's facts and clock stay as they
            // were in memory too; only the untrusted verdicts are applied.
            judged.committed = false;
        }
    }

    /// Applies committed evidence: registry (facts, clock, membership),
    /// history, metrics.
    async fn apply(&self, hostname: &str, binding: Binding, judged: &Judged) {
        let at = judged.attested_at_ms;
        let now = mono_ms();
        let evaluation = &judged.evaluation;
        match (&evaluation.facts, binding) {
            _ if !judged.committed => {}
            (Some(facts), Binding::Enrolled) => {
                let before = self.state.registry.host_facts(hostname);
                if let Some(event) = firmware_change(hostname, before.as_ref(), facts) {
                    info!(host = %hostname, "the TPM's firmware version changed");
                    self.state.record(event).await;
                }
                self.state.registry.set_facts(hostname, facts.clone(), now)
            }
            (Some(_), Binding::Pending) => {}
            (None, _) => {
                if self.state.registry.withdraw_facts(hostname) {
                    info!(host = %hostname, "unsound evidence: the host's earlier facts are withdrawn");
                }
            }
        }
        if let (Some(clock), Binding::Enrolled, true) =
            (evaluation.clock, binding, judged.committed)
        {
            if evaluation.rebooted {
                info!(host = %hostname, reset_count = clock.reset_count, restart_count = clock.restart_count, "host rebooted or its TPM restarted");
                self.state
                    .record(HistoryEvent {
                        at_ms: at,
                        hostname: hostname.to_string(),
                        pool: String::new(),
                        event: "reboot".into(),
                        trusted: false,
                        policy_digest: self.state.policy().digest_hex(),
                        reasons: vec![Reason::new(
                            "tpm.reboot",
                            format!(
                                "TPM resetCount {} restartCount {}: the host rebooted or its TPM restarted",
                                clock.reset_count, clock.restart_count
                            ),
                        )],
                        actor: "agent".into(),
                    })
                    .await;
            }
            self.state.registry.set_clock(hostname, clock);
        }
        let changes = self
            .state
            .registry
            .record_verdicts(judged.verdicts.clone(), now);
        for e in trust_events(&changes, "agent", at) {
            self.state.record(e).await;
        }
    }

    /// Replies with the verdict as it stands, revocation and pending approval included.
    async fn reply(
        &self,
        hostname: &str,
        judged: &Judged,
        started: Instant,
    ) -> Result<(), SessionError> {
        let effective = self.state.registry.verdicts_now(hostname, mono_ms());
        let reply = Verdict {
            attested_at_ms: judged.attested_at_ms,
            reasons: judged.evaluation.common.iter().map(reason_msg).collect(),
            pools: effective
                .iter()
                .map(|v| PoolVerdict {
                    pool: v.pool.clone(),
                    trusted: v.trusted,
                    reasons: v.reasons.iter().map(reason_msg).collect(),
                    valid_until_ms: if v.trusted { v.valid_until_ms } else { 0 },
                })
                .collect(),
        };
        for v in &effective {
            let codes: Vec<&str> = v.reasons.iter().map(|r| r.code.as_str()).collect();
            self.state.metrics.verdict(&v.pool, v.trusted, &codes);
        }
        let trusted_in: Vec<String> = effective
            .iter()
            .filter(|v| v.trusted)
            .map(|v| v.pool.clone())
            .collect();
        let first_reason = effective
            .iter()
            .flat_map(|v| v.reasons.first())
            .next()
            .map(|r| r.code.clone());
        info!(
            host = %hostname,
            trusted_in = ?trusted_in,
            first_reason = ?first_reason,
            micros = started.elapsed().as_micros() as u64,
            "verdict"
        );
        self.send(ServerMsg::Verdict(reply)).await
    }

    async fn finish(&mut self, outcome: Result<(), SessionError>) {
        if let (Some(host), Some(id)) = (&self.hostname, self.stream_id) {
            // A replaced stream leaves the host's connected state to its successor.
            if self.state.streams.close(host, id) {
                self.state.registry.set_connected(host, false);
            }
        }
        if self.counted {
            self.state.metrics.stream_closed();
        }
        let host = self.hostname.clone().unwrap_or_else(|| "?".into());
        match outcome {
            Ok(()) => info!(host = %host, "agent closed its session"),
            Err(e) if e.code == "stream.closed" => info!(host = %host, "{}", e.message),
            Err(e) => {
                if e.code.starts_with("enrolment.") {
                    self.state.metrics.enrolment(e.code);
                }
                warn!(host = %host, code = e.code, "session ended: {}", e.message);
                let _ = self
                    .tx
                    .send(Box::new(ServerMessage {
                        msg: Some(ServerMsg::Error(ErrorMsg {
                            code: e.code.into(),
                            message: e.message,
                        })),
                    }))
                    .await;
            }
        }
    }
}

/// The admission state of one session's attestation round: waiting for a
/// slot, in progress (holding one), or idle.
#[derive(Default)]
struct Round {
    waiting: Option<Pin<Box<dyn Future<Output = Option<Slot>> + Send>>>,
    held: Option<Slot>,
}

impl Round {
    /// Whether a round is waiting for its slot, in progress, or a challenge
    /// is still pending.
    fn busy(&self, book: &ChallengeBook) -> bool {
        self.waiting.is_some() || self.held.is_some() || book.has_pending(Instant::now())
    }

    /// Asks for a round unless one is already on its way.
    fn want(&mut self, state: &AppState, book: &ChallengeBook) {
        if !self.busy(book) {
            self.waiting = Some(Box::pin(state.attest_gate.slot()));
        }
    }

    /// Completes when the wanted round is admitted (`None`: the server is
    /// stopping); never while no round is wanted.
    async fn admitted(&mut self) -> Option<Slot> {
        match self.waiting.as_mut() {
            Some(waiting) => {
                let slot = waiting.await;
                self.waiting = None;
                slot
            }
            None => std::future::pending().await,
        }
    }

    /// The round is in progress: its challenge was sent.
    fn start(&mut self, slot: Slot) {
        self.held = Some(slot);
    }

    /// When the round in progress is over for lack of an answer: its last
    /// challenge expires (`None` while no round is in progress).
    fn expiry(&self, book: &ChallengeBook) -> Option<Instant> {
        self.held
            .as_ref()
            .map(|_| book.pending_until().unwrap_or_else(Instant::now))
    }

    /// The round is over: its slot goes back.
    fn end(&mut self) {
        self.held = None;
    }
}

/// Sleeps until `deadline`; never completes without one.
async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The history event of a TPM firmware update, when `new` was signed by the
/// same TPM with another `firmwareVersion` than the host's previous facts.
fn firmware_change(
    hostname: &str,
    before: Option<&crate::verify::facts::Facts>,
    new: &crate::verify::facts::Facts,
) -> Option<HistoryEvent> {
    let before = before?;
    // 0: facts stored by a release that did not record the version.
    if before.firmware_version == 0 || before.firmware_version == new.firmware_version {
        return None;
    }
    Some(HistoryEvent {
        at_ms: new.attested_at_ms,
        hostname: hostname.to_string(),
        pool: String::new(),
        event: "firmware".into(),
        trusted: false,
        policy_digest: String::new(),
        reasons: vec![Reason::new(
            FIRMWARE_CHANGED,
            format!(
                "TPM firmwareVersion {:#018x} -> {:#018x}",
                before.firmware_version, new.firmware_version
            ),
        )],
        actor: "agent".into(),
    })
}

/// History reason code: the TPM's firmwareVersion changed between two quotes.
pub const FIRMWARE_CHANGED: &str = "tpm.firmware_changed";

/// True when `new` repeats what is stored: the same pools, all untrusted,
/// with the same reasons under the same policy (a flood of the same bad
/// evidence costs no write).
fn same_untrusted_story(stored: &[StoredVerdict], new: &[StoredVerdict]) -> bool {
    stored.len() == new.len()
        && new.iter().all(|n| {
            !n.trusted
                && stored.iter().any(|s| {
                    s.pool == n.pool
                        && !s.trusted
                        && s.reasons == n.reasons
                        && s.policy_digest == n.policy_digest
                })
        })
}

/// Why reading the agent's stream failed: a message that does not decode is
/// the agent's fault (`protocol.malformed`); anything else — a keep-alive
/// ping unanswered, a reset, a broken connection — is the link
/// (`stream.lost`).
fn inbound_error(status: &Status) -> SessionError {
    let decode = status.code() == tonic::Code::Internal
        && status.message().to_ascii_lowercase().contains("decode");
    if decode {
        SessionError::new(
            "protocol.malformed",
            format!("unreadable message from the agent: {}", status.message()),
        )
    } else {
        SessionError::new(
            STREAM_LOST,
            format!("the connection to the agent was lost: {}", status.message()),
        )
    }
}

/// Session end code: the connection to the agent broke (keep-alive timeout, reset).
pub const STREAM_LOST: &str = "stream.lost";

fn reason_msg(r: &Reason) -> ReasonMsg {
    ReasonMsg {
        code: r.code.clone(),
        message: r.message.clone(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pool: &str, trusted: bool, code: &str) -> StoredVerdict {
        StoredVerdict {
            hostname: "h".into(),
            pool: pool.into(),
            trusted,
            attested_at_ms: 1,
            valid_until_ms: 2,
            reasons: if code.is_empty() {
                vec![]
            } else {
                vec![Reason::new(code, "m")]
            },
            policy_digest: "d".into(),
        }
    }

    #[test]
    fn a_firmware_update_is_a_history_event() {
        let facts = |fw: u64| {
            let mut f = crate::verify::facts::Facts::from_json(
                r#"{"attested_at_ms":5,"valid_until_ms":6,"pcrs":{},"statuses":null,
                    "check_reasons":null,"params_digest":null,"reset_count":0,"restart_count":0,"clock":0}"#,
            )
            .expect("facts");
            f.firmware_version = fw;
            f
        };
        assert!(firmware_change("h", None, &facts(1)).is_none());
        assert!(firmware_change("h", Some(&facts(1)), &facts(1)).is_none());
        assert!(firmware_change("h", Some(&facts(0)), &facts(7)).is_none());
        let e = firmware_change("h", Some(&facts(1)), &facts(2)).expect("changed");
        assert_eq!(e.event, "firmware");
        assert_eq!(e.reasons[0].code, FIRMWARE_CHANGED);
        assert!(e.reasons[0].message.contains("0x0000000000000002"), "{e:?}");
    }

    #[test]
    fn attack_a_flood_of_the_same_bad_evidence_is_not_rewritten() {
        let stored = vec![v("p", false, "nonce.unknown")];
        assert!(same_untrusted_story(
            &stored,
            &[v("p", false, "nonce.unknown")]
        ));
        // Anything new is written: other reasons, trust, another pool.
        assert!(!same_untrusted_story(
            &stored,
            &[v("p", false, "nonce.reused")]
        ));
        assert!(!same_untrusted_story(&stored, &[v("p", true, "")]));
        assert!(!same_untrusted_story(
            &[v("p", true, "")],
            &[v("p", false, "x")]
        ));
        assert!(!same_untrusted_story(
            &[],
            &[v("p", false, "nonce.unknown")]
        ));
    }
}
