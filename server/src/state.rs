//! Shared server state: configuration values the sessions need, the store,
//! the registry, the policy in force and the EK trust anchors.

use crate::registry::Registry;
use crate::store::Store;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trustpool_evidence::ekcert::EkTrust;
use trustpool_evidence::policy::PolicySet;

/// Everything a session, the feed and the sweeper share.
pub struct AppState {
    /// Durable state.
    pub store: Store,
    /// Published view of the fleet.
    pub registry: Arc<Registry>,
    /// TPM vendor certificates trusted for EK certificates.
    pub ek_trust: EkTrust,
    /// Interval between attestation rounds.
    pub report_interval: Duration,
    /// Validity of a trusted verdict.
    pub down_time: Duration,
    policy: RwLock<Arc<PolicySet>>,
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
        AppState {
            store,
            registry,
            ek_trust,
            report_interval,
            down_time,
            policy: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force (a cheap shared handle).
    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a validated policy in force.
    pub fn set_policy(&self, policy: PolicySet) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
