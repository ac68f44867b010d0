//! Durable state: enrolments (the binding host ↔ certificate ↔ EK ↔ AK),
//! the latest verdict of each host in each pool, the last TPM clock seen per
//! host, and the history. One API ([`Store`]) over three engines
//! ([`Engine`], chosen by `--db`): SQLite (WAL, synchronous=FULL; the
//! embedded default), PostgreSQL and MariaDB/MySQL (shared by replicas).
//! The schema is versioned ([`schema`]) and migrated at start-up.
//!
//! An enrolment is committed before the agent is told it is enrolled; a trusted
//! verdict is committed before the host is published as trusted. Every error
//! carries the operation that failed.
//!
//! Store health ([`StoreHealth`]) is the one answer to "can the server vouch
//! for what it publishes": every write reports its outcome to it, and a
//! periodic [`Store::probe`] (a one-row `UPDATE` of the identity row in a
//! transaction, plus, for SQLite, a check that the database file is still
//! the one that was opened) sets and clears it.
//!
//! Store identity: a random store id is written into the database when it is
//! created. For SQLite it is also remembered in a small file beside it (see
//! [`id_file_path`]): start-up refuses a missing database or one of another
//! store while that file says one existed, unless the operator asks for a
//! new store (`--init-db`). A server database is the operator's to create;
//! an empty one gets a new id, and a probe that finds another id (or none)
//! fails the store closed.

mod db;
pub mod engine;
mod file;
pub mod group;
mod health;
mod identity;
pub mod replication;
pub mod schema;

pub use crate::verify::facts::{LogDomain, LogRow, StoredFacts};
pub use crate::verify::verdict::StoredClock;
pub use db::{is_pool_timeout, is_store_fault, Store};
pub use engine::{DbLocation, Engine};
pub use file::backup_file;
pub use health::{StoreHealth, STORE_IDENTITY_LOST, STORE_NOT_WRITABLE};
pub use identity::{id_file_path, reconcile_identity, IdentityAction, IdentityProblem};
pub use replication::{Change, ReplicaRow, StoredHost};

use trustpool_evidence::reason::Reason;

/// The stored identity of an enrolled host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// Host name (hypervisor hostname).
    pub hostname: String,
    /// Marshalled TPMT_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
    /// DER EK certificate, if the TPM had one.
    pub ek_certificate: Option<Vec<u8>>,
    /// Marshalled TPMT_PUBLIC of the AK.
    pub ak_public: Vec<u8>,
    /// TPM name of the AK.
    pub ak_name: Vec<u8>,
    /// SHA-256 of the agent's client certificate at enrolment.
    pub cert_fingerprint: String,
    /// Subject of that certificate.
    pub cert_subject: String,
    /// Unix milliseconds of the enrolment.
    pub enrolled_at_ms: i64,
}

/// The latest verdict of a host in one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVerdict {
    /// Host name.
    pub hostname: String,
    /// Pool name.
    pub pool: String,
    /// Whether the evidence satisfied the pool.
    pub trusted: bool,
    /// Unix ms of the evaluation.
    pub attested_at_ms: i64,
    /// Unix ms until which a trusted verdict stays valid.
    pub valid_until_ms: i64,
    /// Every reason against trust.
    pub reasons: Vec<Reason>,
    /// Digest of the policy the verdict was evaluated under (hex).
    pub policy_digest: String,
}

/// An enrolment waiting for an operator's approval, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEnrolment {
    /// The candidate binding.
    pub enrolment: Enrolment,
    /// Why it was not admitted automatically.
    pub reason: String,
}

/// A revocation by an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Host name.
    pub hostname: String,
    /// The operator.
    pub revoked_by: String,
    /// Unix ms.
    pub revoked_at_ms: i64,
    /// Free text.
    pub comment: String,
}

/// One entry of the append-only history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// Unix ms.
    pub at_ms: i64,
    /// Host name ("" for server-wide events such as policy reloads).
    pub hostname: String,
    /// Pool ("" when the event is not about one pool).
    pub pool: String,
    /// Kind: verdict, enrolled, pending, approved, revoked, readmitted, reboot, policy_reload, policy_rejected.
    pub event: String,
    /// Trust in the pool after a verdict event.
    pub trusted: bool,
    /// Policy digest in force.
    pub policy_digest: String,
    /// Reasons (against trust, or explaining the event).
    pub reasons: Vec<Reason>,
    /// Who caused it.
    pub actor: String,
}

/// How one piece of evidence changes a host's stored facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsChange<'a> {
    /// Leave them as they are.
    Keep,
    /// Replace them (the body, and the log rows that changed).
    Put(&'a StoredFacts),
    /// Delete them: the newest evidence was not sound.
    Withdraw,
}

/// What one piece of evidence changes durably (see [`Store::commit_evidence`]).
#[derive(Debug, Clone, Copy)]
pub struct EvidenceCommit<'a> {
    /// The host.
    pub hostname: &'a str,
    /// Its new latest verdicts (may be empty).
    pub verdicts: &'a [StoredVerdict],
    /// Its facts.
    pub facts: FactsChange<'a>,
    /// Its accepted TPM clock, when it changed.
    pub clock: Option<StoredClock>,
}
