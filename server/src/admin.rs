//! The operator API (`trustpool.v1.Admin`): hosts, history, approvals,
//! revocations, policy capture and dry-run. Reachable over mutual TLS with a
//! client certificate of the operator CA (`--operator-ca`, never the agents'
//! CA) that names a configured operator, or over the local UNIX socket by
//! root.

use crate::attest::streams::ENROLMENT_CHANGED;
use crate::clock::{mono_ms, now_ms};
use crate::fleet::history::{trust_events, STORY_CHANGE, TRUST_CHANGE};
use crate::fleet::registry::{HostSnapshot, PENDING};
use crate::state::AppState;
use crate::store::{HistoryEvent, Revocation, StoredVerdict};
use crate::tls::identity::PeerIdentity;
use crate::tls::pki::Role;
use crate::verify::facts::evaluate_all;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use trustpool_daemon::policy_dir::check_against_catalogue;
use trustpool_evidence::eventlog::measured::LogFacts;
use trustpool_evidence::policy::parse_policy_set;
use trustpool_evidence::reason::{codes, Reason};
use trustpool_proto::v1::admin_server::Admin;
use trustpool_proto::v1::{
    ActionResponse, CaptureResponse, DryRunRequest, DryRunResponse, HistoryEvent as HistoryMsg,
    HistoryRequest, HistoryResponse, HostDetail, HostRequest, HostSummary, ListHostsRequest,
    ListHostsResponse, PcrValue, PolicyInfoRequest, PolicyInfoResponse, PoolAt, PoolChange,
    PoolState, Reason as ReasonMsg, TrustedAtRequest, TrustedAtResponse,
};

/// The admin gRPC service.
pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    /// A service over the shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        AdminService { state }
    }

    /// Who is calling, if allowed: a certificate of the operator CA (with
    /// its CRLs) that names a configured operator, or root on the socket.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        if let Some(certs) = request.peer_certs() {
            let Some(pki) = self.state.pki.get() else {
                return Err(Status::unavailable("no client CA is configured"));
            };
            if !pki.has(Role::Operators) {
                return Err(Status::permission_denied(
                    "the admin API over mutual TLS is off (the server has no --operator-ca): not an operator; use the local admin socket",
                ));
            }
            pki.check_logged("admin", Role::Operators, &certs)
                .map_err(|r| {
                    Status::permission_denied(format!("{}: not an operator", r.message))
                })?;
            let leaf = certs
                .first()
                .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
            let peer = PeerIdentity::from_der(leaf.as_ref()).map_err(Status::unauthenticated)?;
            let operator = self
                .state
                .operators
                .get()
                .and_then(|ops| ops.iter().find(|o| peer.speaks_for(o)).cloned());
            return match operator {
                Some(name) => Ok(name),
                None => {
                    self.state.metrics.tls_refused("admin", "not_an_operator");
                    tracing::warn!(subject = %peer.subject, "admin API: the certificate names no configured operator");
                    Err(Status::permission_denied(format!(
                        "{} is not an operator",
                        peer.subject
                    )))
                }
            };
        }
        if let Some(info) = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
        {
            return match info.peer_cred.map(|c| c.uid()) {
                Some(0) => Ok("root@unix".into()),
                Some(uid) => Err(Status::permission_denied(format!(
                    "uid {uid} is not root: not an operator"
                ))),
                None => Err(Status::permission_denied(
                    "unknown peer on the admin socket",
                )),
            };
        }
        Err(Status::unauthenticated(
            "operators authenticate with a client certificate or the local socket",
        ))
    }

    fn host(&self, hostname: &str) -> Result<HostSnapshot, Status> {
        let name = hostname.to_ascii_lowercase();
        self.state
            .registry
            .host(&name, mono_ms())
            .ok_or_else(|| Status::not_found(format!("no host named '{hostname}'")))
    }
}

fn reason_msg(r: &Reason) -> ReasonMsg {
    ReasonMsg {
        code: r.code.clone(),
        message: r.message.clone(),
    }
}

fn history_msg(e: &HistoryEvent) -> HistoryMsg {
    HistoryMsg {
        at_ms: e.at_ms,
        hostname: e.hostname.clone(),
        pool: e.pool.clone(),
        event: e.event.clone(),
        trusted: e.trusted,
        policy_digest: e.policy_digest.clone(),
        reasons: e.reasons.iter().map(reason_msg).collect(),
        actor: e.actor.clone(),
    }
}

/// The state of a host as the CLI shows it (optionally for one pool).
pub fn host_state(h: &HostSnapshot, pool: Option<&str>) -> &'static str {
    let verdicts: Vec<&StoredVerdict> = h
        .verdicts
        .iter()
        .filter(|v| pool.is_none_or(|p| v.pool == p))
        .collect();
    if h.revoked.is_some() {
        "revoked"
    } else if h.pending.is_some() || h.enrolment.is_none() {
        "pending"
    } else if verdicts.iter().any(|v| v.trusted) {
        "trusted"
    } else if verdicts.iter().all(|v| v.attested_at_ms == 0) {
        "enrolled"
    } else if verdicts
        .iter()
        .any(|v| v.reasons.iter().any(|r| r.code == codes::STALE))
    {
        "stale"
    } else {
        "untrusted"
    }
}

fn last_good_ms(h: &HostSnapshot) -> i64 {
    h.last_good_ms.values().copied().max().unwrap_or(0)
}

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn pcr_values(h: &HostSnapshot) -> Vec<PcrValue> {
    h.facts
        .as_ref()
        .map(|f| {
            f.pcrs
                .iter()
                .map(|(i, v)| PcrValue {
                    index: u32::from(*i),
                    digest: hex::decode(v).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        self.authorize(&request)?;
        let pool = request.into_inner().pool;
        let pool = (!pool.is_empty()).then_some(pool);
        if let Some(p) = &pool {
            if !self.state.registry.pool_names().contains(p) {
                return Err(Status::not_found(format!("no pool named '{p}'")));
            }
        }
        let now = mono_ms();
        let hosts = self
            .state
            .registry
            .hostnames()
            .into_iter()
            .filter_map(|name| self.state.registry.host(&name, now))
            .map(|h| HostSummary {
                hostname: h.hostname.clone(),
                state: host_state(&h, pool.as_deref()).into(),
                trusted_pools: h
                    .verdicts
                    .iter()
                    .filter(|v| v.trusted && pool.as_ref().is_none_or(|p| &v.pool == p))
                    .map(|v| v.pool.clone())
                    .collect(),
                last_good_ms: last_good_ms(&h),
                first_reason: h
                    .verdicts
                    .iter()
                    .filter(|v| pool.as_ref().is_none_or(|p| &v.pool == p))
                    .flat_map(|v| v.reasons.first())
                    .next()
                    .map(reason_msg),
                connected: h.connected,
            })
            .collect();
        Ok(Response::new(ListHostsResponse {
            hosts,
            policy_digest: self.state.policy().digest_hex(),
        }))
    }

    async fn show_host(
        &self,
        request: Request<HostRequest>,
    ) -> Result<Response<HostDetail>, Status> {
        self.authorize(&request)?;
        let h = self.host(&request.get_ref().hostname)?;
        let recent = self
            .state
            .store
            .history(&h.hostname, 0, 20)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let enrolment = h
            .enrolment
            .clone()
            .or_else(|| h.pending.as_ref().map(|p| p.enrolment.clone()));
        Ok(Response::new(HostDetail {
            hostname: h.hostname.clone(),
            state: host_state(&h, None).into(),
            connected: h.connected,
            pools: h
                .verdicts
                .iter()
                .map(|v| PoolState {
                    pool: v.pool.clone(),
                    trusted: v.trusted,
                    attested_at_ms: v.attested_at_ms,
                    valid_until_ms: v.valid_until_ms,
                    policy_digest: v.policy_digest.clone(),
                    reasons: v.reasons.iter().map(reason_msg).collect(),
                })
                .collect(),
            pcrs: pcr_values(&h),
            evidence_at_ms: h.facts.as_ref().map(|f| f.attested_at_ms).unwrap_or(0),
            reset_count: h.clock.map(|c| c.reset_count).unwrap_or(0),
            restart_count: h.clock.map(|c| c.restart_count).unwrap_or(0),
            clock: h.clock.map(|c| c.clock).unwrap_or(0),
            ak_fingerprint: enrolment
                .as_ref()
                .map(|e| fingerprint(&e.ak_public))
                .unwrap_or_default(),
            ek_fingerprint: enrolment
                .as_ref()
                .map(|e| fingerprint(&e.ek_public))
                .unwrap_or_default(),
            cert_subject: enrolment
                .as_ref()
                .map(|e| e.cert_subject.clone())
                .unwrap_or_default(),
            cert_fingerprint: enrolment
                .as_ref()
                .map(|e| e.cert_fingerprint.clone())
                .unwrap_or_default(),
            enrolled_at_ms: enrolment.as_ref().map(|e| e.enrolled_at_ms).unwrap_or(0),
            pending_reason: h
                .pending
                .as_ref()
                .map(|p| p.reason.clone())
                .unwrap_or_default(),
            revoked_by: h
                .revoked
                .as_ref()
                .map(|r| r.revoked_by.clone())
                .unwrap_or_default(),
            revoked_at_ms: h.revoked.as_ref().map(|r| r.revoked_at_ms).unwrap_or(0),
            recent: recent.iter().map(history_msg).collect(),
        }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(10_000)
        };
        let events = self
            .state
            .store
            .history(&r.hostname.to_ascii_lowercase(), r.since_ms, limit)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        Ok(Response::new(HistoryResponse {
            events: events.iter().map(history_msg).collect(),
        }))
    }

    async fn trusted_at(
        &self,
        request: Request<TrustedAtRequest>,
    ) -> Result<Response<TrustedAtResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let hostname = r.hostname.to_ascii_lowercase();
        let events = self
            .state
            .store
            .history_until(&hostname, r.at_ms)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        if events.is_empty() && self.state.registry.host(&hostname, mono_ms()).is_none() {
            return Err(Status::not_found(format!("no host named '{hostname}'")));
        }
        // Newest first: the first verdict event per pool is the state at that time.
        let mut pools: BTreeMap<String, PoolAt> = self
            .state
            .policy()
            .pools
            .keys()
            .map(|p| {
                (
                    p.clone(),
                    PoolAt {
                        pool: p.clone(),
                        ..PoolAt::default()
                    },
                )
            })
            .collect();
        // The state at T is the newest verdict event of each pool; "since" is
        // when that trust state began: the oldest of the newest run of events
        // with the same trust (a change of reasons alone is not a new "since").
        let mut by_pool: BTreeMap<String, Vec<&crate::store::HistoryEvent>> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.event == TRUST_CHANGE || e.event == STORY_CHANGE)
        {
            by_pool.entry(e.pool.clone()).or_default().push(e);
        }
        for (pool, newest_first) in by_pool {
            let Some(latest) = newest_first.first() else {
                continue;
            };
            let since_ms = newest_first
                .iter()
                .take_while(|e| e.trusted == latest.trusted)
                .last()
                .map(|e| e.at_ms)
                .unwrap_or(latest.at_ms);
            pools.insert(
                pool.clone(),
                PoolAt {
                    pool,
                    known: true,
                    trusted: latest.trusted,
                    policy_digest: latest.policy_digest.clone(),
                    reasons: latest.reasons.iter().map(reason_msg).collect(),
                    since_ms,
                },
            );
        }
        let revoked = events
            .iter()
            .find(|e| e.event == "revoked" || e.event == "readmitted")
            .is_some_and(|e| e.event == "revoked");
        Ok(Response::new(TrustedAtResponse {
            hostname,
            at_ms: r.at_ms,
            pools: pools.into_values().collect(),
            revoked,
        }))
    }

    async fn approve(
        &self,
        request: Request<HostRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let actor = self.authorize(&request)?;
        let r = request.into_inner();
        let hostname = r.hostname.to_ascii_lowercase();
        let pending = self.state.registry.pending(&hostname).ok_or_else(|| {
            Status::not_found(format!("{hostname} has no enrolment pending approval"))
        })?;
        let now = now_ms();
        let event = HistoryEvent {
            at_ms: now,
            hostname: hostname.clone(),
            pool: String::new(),
            event: "approved".into(),
            trusted: false,
            policy_digest: self.state.policy().digest_hex(),
            reasons: vec![Reason::new(
                PENDING,
                format!("approved: {}{}", pending.reason, comment(&r.comment)),
            )],
            actor: actor.clone(),
        };
        let (enrolment, moved_from) = self
            .state
            .store
            .approve(&hostname, &event)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let mut changes = Vec::new();
        for other in &moved_from {
            warn!(from = %other, to = %hostname, %actor, "TPM moved to another host name: the old enrolment is removed");
            changes.extend(self.state.registry.forget_enrolment(other, mono_ms()));
            self.state.streams.end(
                other,
                ENROLMENT_CHANGED,
                format!("this host's TPM was moved to {hostname} by {actor}"),
            );
        }
        changes.extend(self.state.registry.approve(enrolment, mono_ms()));
        for e in trust_events(&changes, &actor, now) {
            self.state.record(e).await;
        }
        // The host's open stream spoke for keys that are no longer pending:
        // the agent reconnects under the approved binding.
        self.state.streams.end(
            &hostname,
            ENROLMENT_CHANGED,
            format!("enrolment approved by {actor}; reconnect"),
        );
        info!(host = %hostname, %actor, "enrolment approved");
        Ok(Response::new(ActionResponse {
            message: format!(
                "enrolment approved by {actor}; trusted again after its next good report"
            ),
        }))
    }

    async fn revoke(
        &self,
        request: Request<HostRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let actor = self.authorize(&request)?;
        let r = request.into_inner();
        let h = self.host(&r.hostname)?;
        let now = now_ms();
        let revocation = Revocation {
            hostname: h.hostname.clone(),
            revoked_by: actor.clone(),
            revoked_at_ms: now,
            comment: r.comment.clone(),
        };
        let event = HistoryEvent {
            at_ms: now,
            hostname: h.hostname.clone(),
            pool: String::new(),
            event: "revoked".into(),
            trusted: false,
            policy_digest: self.state.policy().digest_hex(),
            reasons: vec![Reason::new(
                codes::REVOKED,
                format!("revoked by {actor}{}", comment(&r.comment)),
            )],
            actor: actor.clone(),
        };
        self.state
            .store
            .set_revocation(&h.hostname, Some(&revocation), &event)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let changes = self
            .state
            .registry
            .set_revoked(&h.hostname, Some(revocation), mono_ms());
        for e in trust_events(&changes, &actor, now) {
            self.state.record(e).await;
        }
        self.state.streams.end(
            &h.hostname,
            ENROLMENT_CHANGED,
            format!("revoked by {actor}"),
        );
        info!(host = %h.hostname, %actor, "host revoked");
        Ok(Response::new(ActionResponse {
            message: format!("revoked by {actor}; out of every pool"),
        }))
    }

    async fn readmit(
        &self,
        request: Request<HostRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let actor = self.authorize(&request)?;
        let r = request.into_inner();
        let h = self.host(&r.hostname)?;
        if h.revoked.is_none() {
            return Err(Status::failed_precondition(format!(
                "{} is not revoked",
                h.hostname
            )));
        }
        let now = now_ms();
        let event = HistoryEvent {
            at_ms: now,
            hostname: h.hostname.clone(),
            pool: String::new(),
            event: "readmitted".into(),
            trusted: false,
            policy_digest: self.state.policy().digest_hex(),
            reasons: vec![Reason::new(
                "host.readmitted",
                format!("readmitted by {actor}{}", comment(&r.comment)),
            )],
            actor: actor.clone(),
        };
        self.state
            .store
            .set_revocation(&h.hostname, None, &event)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let changes = self.state.registry.readmit(&h.hostname, mono_ms());
        for e in trust_events(&changes, &actor, now) {
            self.state.record(e).await;
        }
        // Its next report decides: the stream reconnects and is challenged at once.
        self.state.streams.end(
            &h.hostname,
            ENROLMENT_CHANGED,
            format!("readmitted by {actor}; reconnect"),
        );
        info!(host = %h.hostname, %actor, "host readmitted");
        Ok(Response::new(ActionResponse {
            message: format!(
                "readmitted by {actor}; evidence sent while revoked is forgotten, its next report decides"
            ),
        }))
    }

    async fn capture(
        &self,
        request: Request<HostRequest>,
    ) -> Result<Response<CaptureResponse>, Status> {
        self.authorize(&request)?;
        let h = self.host(&request.get_ref().hostname)?;
        let facts = h.facts.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!("{} has no verified evidence yet", h.hostname))
        })?;
        let json = |log: &Option<std::sync::Arc<LogFacts>>| match log {
            None => Ok(String::new()),
            Some(log) => serde_json::to_string(log.as_ref())
                .map_err(|e| Status::internal(format!("cannot encode the event log facts: {e}"))),
        };
        let event_log_json = json(&facts.event_log)?;
        let txt_log_json = json(&facts.txt_log)?;
        Ok(Response::new(CaptureResponse {
            hostname: h.hostname.clone(),
            attested_at_ms: facts.attested_at_ms,
            pcrs: pcr_values(&h),
            event_log_json,
            txt_log_json,
        }))
    }

    async fn dry_run(
        &self,
        request: Request<DryRunRequest>,
    ) -> Result<Response<DryRunResponse>, Status> {
        self.authorize(&request)?;
        let files: Vec<(String, String)> = request
            .into_inner()
            .files
            .into_iter()
            .map(|f| (f.name, f.text))
            .collect();
        let current = self.state.policy();
        let candidate = match parse_policy_set(&files) {
            Ok(c) => c,
            Err(errors) => {
                return Ok(Response::new(DryRunResponse {
                    current_digest: current.digest_hex(),
                    errors: errors.iter().map(|e| e.to_string()).collect(),
                    ..DryRunResponse::default()
                }))
            }
        };
        let problems = check_against_catalogue(&candidate);
        if !problems.is_empty() {
            return Ok(Response::new(DryRunResponse {
                current_digest: current.digest_hex(),
                candidate_digest: candidate.digest_hex(),
                errors: problems,
                ..DryRunResponse::default()
            }));
        }
        let now = mono_ms();
        let mut would: BTreeMap<String, BTreeSet<String>> = candidate
            .pools
            .keys()
            .map(|p| (p.clone(), BTreeSet::new()))
            .collect();
        for (host, facts) in self.state.registry.live_facts(now) {
            let Some(h) = self.state.registry.host(&host, now) else {
                continue;
            };
            if h.revoked.is_some() || h.pending.is_some() {
                continue;
            }
            for (pool, reasons) in evaluate_all(&facts, &candidate) {
                if reasons.is_empty() {
                    would.entry(pool).or_default().insert(host.clone());
                }
            }
        }
        let mut pools: BTreeSet<String> = would.keys().cloned().collect();
        pools.extend(self.state.registry.pool_names());
        let changes = pools
            .into_iter()
            .map(|pool| {
                let now_members: BTreeSet<String> = self
                    .state
                    .registry
                    .pool(&pool, now)
                    .map(|p| p.members.into_iter().map(|m| m.hostname).collect())
                    .unwrap_or_default();
                let then = would.get(&pool).cloned().unwrap_or_default();
                PoolChange {
                    pool,
                    join: then.difference(&now_members).cloned().collect(),
                    leave: now_members.difference(&then).cloned().collect(),
                    stay: then.intersection(&now_members).cloned().collect(),
                }
            })
            .collect();
        Ok(Response::new(DryRunResponse {
            candidate_digest: candidate.digest_hex(),
            current_digest: current.digest_hex(),
            pools: changes,
            errors: vec![],
        }))
    }

    async fn policy_info(
        &self,
        request: Request<PolicyInfoRequest>,
    ) -> Result<Response<PolicyInfoResponse>, Status> {
        self.authorize(&request)?;
        let policy = self.state.policy();
        let status = self.state.policy_status();
        Ok(Response::new(PolicyInfoResponse {
            digest: policy.digest_hex(),
            pools: policy.pools.keys().cloned().collect(),
            loaded_at_ms: status.loaded_at_ms,
            last_error: status.last_error,
        }))
    }
}

fn comment(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}
