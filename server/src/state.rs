//! Shared server state: configuration values the sessions need, the store,
//! the registry, the policy in force and the EK trust anchors.

use crate::fleet::registry::Registry;
use crate::store::group::GroupCommit;
use crate::store::Store;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trustpool_evidence::ekcert::EkTrust;
use trustpool_evidence::policy::PolicySet;

/// Default HTTP/2 keep-alive timeout on agent connections.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a session, the feed and the sweeper share.
pub struct AppState {
    /// Durable state.
    pub store: Store,
    /// The store's group-commit writer: every session's evidence goes
    /// through it (one transaction per batch).
    pub evidence_writer: GroupCommit,
    /// Published view of the fleet.
    pub registry: Arc<Registry>,
    /// TPM vendor certificates trusted for EK certificates.
    pub ek_trust: EkTrust,
    /// Interval between attestation rounds.
    pub report_interval: Duration,
    /// Validity of a trusted verdict.
    pub down_time: Duration,
    /// Prometheus metrics (sessions, feed, Placement sync).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Admission of attestation rounds (bounded, first come first served).
    pub attest_gate: crate::attest::pacing::Gate,
    /// Admission of enrolments (credential activations).
    pub enrol_gate: crate::attest::pacing::Gate,
    /// The open agent streams, one per host.
    pub streams: crate::attest::streams::Streams,
    /// The EK allowlist, when enrolment is restricted to listed TPMs.
    pub ek_allowlist: crate::attest::ek_allowlist::EkAllowlist,
    /// HTTP/2 keep-alive timeout on agent connections (to name a lost link).
    pub keepalive_timeout: Duration,
    /// When this state was built (the server's start).
    pub started: std::time::Instant,
    policy: RwLock<Arc<PolicySet>>,
    /// The append-only history (set once at start-up; events are dropped
    /// with a warning in contexts that run without one, such as unit tests).
    pub history: std::sync::OnceLock<crate::fleet::history::History>,
    /// Certificate names (SAN DNS or CN) of operators allowed on the admin API.
    pub operators: std::sync::OnceLock<Vec<String>>,
    /// The policy directory (for reloads).
    pub policy_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// Client CAs and CRLs: which CA may issue which role's certificates
    /// (unset: every client certificate is refused).
    pub pki: std::sync::OnceLock<Arc<crate::tls::pki::Pki>>,
    /// This replica and what it knows of the others on its database.
    pub replica: Arc<crate::replica::Replica>,
    policy_status: RwLock<PolicyStatus>,
    policy_changes: tokio::sync::watch::Sender<String>,
    stopping: tokio::sync::watch::Sender<bool>,
}

/// When the policy in force was loaded, and the last refused reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Unix ms of the last successful load.
    pub loaded_at_ms: i64,
    /// The error of the last refused reload since then ("" = none).
    pub last_error: String,
}

impl AppState {
    /// Bundles the shared state.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        ek_trust: EkTrust,
        policy: PolicySet,
        report_interval: Duration,
        down_time: Duration,
    ) -> AppState {
        use crate::attest::pacing::{
            Gate, Stage, DEFAULT_ATTESTATIONS_IN_FLIGHT, DEFAULT_ENROLMENTS_IN_FLIGHT,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        AppState {
            evidence_writer: GroupCommit::new(store.clone()),
            store,
            registry,
            ek_trust,
            report_interval,
            down_time,
            attest_gate: Gate::new(
                Stage::Attest,
                DEFAULT_ATTESTATIONS_IN_FLIGHT,
                metrics.clone(),
            ),
            enrol_gate: Gate::new(Stage::Enrol, DEFAULT_ENROLMENTS_IN_FLIGHT, metrics.clone()),
            metrics,
            streams: crate::attest::streams::Streams::default(),
            ek_allowlist: crate::attest::ek_allowlist::EkAllowlist::new(None),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            started: std::time::Instant::now(),
            policy_changes: tokio::sync::watch::channel(policy.digest_hex()).0,
            stopping: tokio::sync::watch::channel(false).0,
            policy: RwLock::new(Arc::new(policy)),
            history: std::sync::OnceLock::new(),
            operators: std::sync::OnceLock::new(),
            policy_dir: std::sync::OnceLock::new(),
            pki: std::sync::OnceLock::new(),
            replica: Arc::default(),
            policy_status: RwLock::new(PolicyStatus {
                loaded_at_ms: crate::clock::now_ms(),
                last_error: String::new(),
            }),
        }
    }

    /// Names this replica (the store then names its changes after it).
    pub fn with_replica(mut self, replica: crate::replica::Replica) -> AppState {
        self.store.set_replica(&replica.instance);
        self.replica = Arc::new(replica);
        self
    }

    /// Sets the keep-alive timeout of agent connections.
    pub fn with_keepalive_timeout(mut self, timeout: Duration) -> AppState {
        self.keepalive_timeout = timeout;
        self
    }

    /// Bounds the attestation rounds and the enrolments in progress at once.
    pub fn with_admission(mut self, attestations: usize, enrolments: usize) -> AppState {
        use crate::attest::pacing::{Gate, Stage};
        self.attest_gate = Gate::new(Stage::Attest, attestations, self.metrics.clone());
        self.enrol_gate = Gate::new(Stage::Enrol, enrolments, self.metrics.clone());
        self
    }

    /// Restricts enrolment to the TPMs of an EK allowlist.
    pub fn with_ek_allowlist(mut self, list: crate::attest::ek_allowlist::EkAllowlist) -> AppState {
        self.ek_allowlist = list;
        self
    }

    /// Queues a history event (no-op without a history writer).
    pub async fn record(&self, event: crate::store::HistoryEvent) {
        match self.history.get() {
            Some(h) => h.record(event).await,
            None => tracing::debug!(event = %event.event, "no history writer: event not recorded"),
        }
    }

    /// Subscribes to policy changes (the value is the digest in force).
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<String> {
        self.policy_changes.subscribe()
    }

    /// Tells every agent session that the server is stopping: each ends its
    /// stream with an `Error` ("server.stopping") so that the gRPC server's
    /// graceful shutdown does not wait for streams that never end.
    pub fn begin_stopping(&self) {
        self.attest_gate.close();
        self.enrol_gate.close();
        self.stopping.send_replace(true);
    }

    /// The stop signal: `true` once [`AppState::begin_stopping`] was called.
    pub fn stop_receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Completes once [`AppState::begin_stopping`] was called (at once if it was).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_receiver();
        async move {
            // An error means the state is gone: stopping, too.
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// The status of the policy in force.
    pub fn policy_status(&self) -> PolicyStatus {
        self.policy_status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a refused reload.
    pub fn policy_refused(&self, error: String) {
        self.policy_status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = error;
    }

    /// The policy in force (a cheap shared handle).
    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a validated policy in force and tells the sessions.
    pub fn set_policy(&self, policy: PolicySet) {
        let digest = policy.digest_hex();
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        *self
            .policy_status
            .write()
            .unwrap_or_else(|p| p.into_inner()) = PolicyStatus {
            loaded_at_ms: crate::clock::now_ms(),
            last_error: String::new(),
        };
        self.policy_changes.send_replace(digest);
    }
}
