//! Several active replicas on one database: what each one learns from the
//! others and what only one of them does at a time.
//!
//! * [`changes`]: the change follower. Every replica re-reads the hosts the
//!   others changed, so its registry (feed, PollHosts, `/v1/hosts`) follows
//!   theirs within a poll period.
//! * [`lease`]: the maintenance lease. Its holder runs the Placement sync
//!   and records expiries in the history; another takes over within one
//!   lease period when it dies.
//! * [`presence`]: each replica's policy digest. A replica whose policy is
//!   not the one most live replicas enforce vouches for nobody.
//!
//! [`Replica`] holds what these tasks found out, for the feed, the
//! sessions and the metrics; [`spawn`] starts them.

pub mod changes;
pub mod lease;
pub mod presence;

use crate::fleet::registry::Registry;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub use presence::ReplicaView;

/// The lease whose holder runs the Placement sync and the history of expiries.
pub const MAINTENANCE_LEASE: &str = "maintenance";

/// Default lease period: the longest a dead holder's work waits for another replica.
pub const DEFAULT_LEASE_PERIOD: Duration = Duration::from_secs(10);

/// This replica and what it knows of the others.
#[derive(Debug)]
pub struct Replica {
    /// Its configured name (`--replica-name`).
    pub name: String,
    /// This process: the name and a random suffix (the change table and
    /// the lease name processes, so a restarted replica is a new one).
    pub instance: String,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// How long a lease lasts unless renewed.
    pub lease_period: Duration,
    lease_held: watch::Sender<bool>,
    agreement: watch::Sender<bool>,
    changes_applied: AtomicU64,
    view: Mutex<ReplicaView>,
}

impl Default for Replica {
    /// A replica named after the machine that holds no lease yet.
    fn default() -> Self {
        Replica::new(&default_name(0), DEFAULT_LEASE_PERIOD)
    }
}

/// `<hostname>:<gRPC port>`: unique per replica on a machine.
pub fn default_name(grpc_port: u16) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{grpc_port}")
}

impl Replica {
    /// Replica `name` with leases of `lease_period`.
    pub fn new(name: &str, lease_period: Duration) -> Replica {
        use rand::Rng;
        let suffix: u32 = rand::thread_rng().gen();
        Replica {
            name: name.to_string(),
            instance: format!("{name}/{suffix:08x}"),
            started_ms: crate::clock::now_ms(),
            lease_period,
            lease_held: watch::channel(false).0,
            agreement: watch::channel(true).0,
            changes_applied: AtomicU64::new(0),
            view: Mutex::new(ReplicaView::default()),
        }
    }

    /// Whether this replica holds the maintenance lease.
    pub fn holds_lease(&self) -> bool {
        *self.lease_held.borrow()
    }

    /// Follows [`Replica::holds_lease`].
    pub fn lease_changes(&self) -> watch::Receiver<bool> {
        self.lease_held.subscribe()
    }

    pub(crate) fn set_lease_held(&self, held: bool) {
        self.lease_held
            .send_if_modified(|h| std::mem::replace(h, held) != held);
    }

    /// Whether this replica's policy is the one most live replicas enforce
    /// (true until the first presence round says otherwise).
    pub fn policy_agrees(&self) -> bool {
        *self.agreement.borrow()
    }

    /// Follows [`Replica::policy_agrees`].
    pub fn agreement_changes(&self) -> watch::Receiver<bool> {
        self.agreement.subscribe()
    }

    pub(crate) fn set_agreement(&self, agrees: bool) {
        self.agreement
            .send_if_modified(|a| std::mem::replace(a, agrees) != agrees);
    }

    /// Hosts re-read because another replica changed them, since start.
    pub fn changes_applied(&self) -> u64 {
        self.changes_applied.load(Ordering::Relaxed)
    }

    pub(crate) fn count_applied(&self, hosts: usize) {
        self.changes_applied
            .fetch_add(hosts as u64, Ordering::Relaxed);
    }

    /// The replicas as the last presence round saw them.
    pub fn view(&self) -> ReplicaView {
        self.view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_view(&self, view: ReplicaView) {
        *self
            .view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
    }
}

/// What the replica tasks use of the server.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The registry the change follower updates.
    pub registry: Arc<Registry>,
    /// This replica.
    pub replica: Arc<Replica>,
    /// The digest of the policy in force.
    pub policy: watch::Receiver<String>,
}

impl Shared {
    /// The digest of the policy in force now.
    pub fn policy_digest(&self) -> String {
        self.policy.borrow().clone()
    }
}

/// Starts the change follower (from `after`, the newest change before the
/// state was restored), the lease and the presence tasks; they end with `stop`.
pub fn spawn(
    state: Arc<Shared>,
    after: i64,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(changes::follow(state.clone(), after, stop.clone())),
        tokio::spawn(lease::hold(state.clone(), stop.clone())),
        tokio::spawn(presence::announce(state, stop)),
    ]
}
