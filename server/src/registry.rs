//! The in-memory view of the fleet that the feed publishes: enrolled hosts,
//! their latest verdict per pool, and each pool's membership with a
//! generation number that changes whenever the membership changes.
//!
//! A host is a member of a pool only while its latest verdict there is
//! trusted and not expired (`now < valid_until`). The registry holds no I/O;
//! the session and sweeper tasks feed it after the store has committed.

use crate::facts::Facts;
use crate::store::{Enrolment, PendingEnrolment, Revocation, StoredClock, StoredVerdict};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use tokio::sync::watch;
use trustpool_evidence::reason::{codes, Reason};

/// Reason code of a pool for which no evidence of the host was evaluated yet.
pub const NOT_ATTESTED: &str = "host.not_attested";

/// What the feed shows about a trusted member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Host name.
    pub hostname: String,
    /// Unix ms of the trusted attestation.
    pub attested_at_ms: i64,
    /// Unix ms after which a consumer must not trust this entry.
    pub valid_until_ms: i64,
}

/// A pool's published membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Pool name.
    pub pool: String,
    /// Changes whenever the set of members changes.
    pub generation: u64,
    /// Current members, sorted by host name.
    pub members: Vec<Member>,
}

/// One host as the feed and the operator see it.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    /// Host name.
    pub hostname: String,
    /// The enrolment record, if the host is enrolled.
    pub enrolment: Option<Enrolment>,
    /// Latest verdict per pool, with expiry already applied (a trusted
    /// verdict past its `valid_until` reads as untrusted with `freshness.stale`).
    pub verdicts: Vec<StoredVerdict>,
    /// Whether an agent stream is open for this host right now.
    pub connected: bool,
    /// An enrolment waiting for approval (the host is never trusted meanwhile).
    pub pending: Option<PendingEnrolment>,
    /// The operator's revocation, if the host is revoked.
    pub revoked: Option<Revocation>,
    /// The latest verified evidence facts.
    pub facts: Option<Facts>,
    /// The last accepted TPM clock.
    pub clock: Option<StoredClock>,
    /// Per pool, when the host last had a trusted verdict (Unix ms), even if
    /// later verdicts are not trusted.
    pub last_good_ms: BTreeMap<String, i64>,
}

/// A change of a host's membership in a pool — or a verdict that says
/// something new (first verdict, other reasons, other policy) — for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustChange {
    /// Host name.
    pub hostname: String,
    /// Pool.
    pub pool: String,
    /// Member after the change.
    pub trusted: bool,
    /// Why not trusted (empty when it joined).
    pub reasons: Vec<Reason>,
    /// Policy digest of the verdict behind the change.
    pub policy_digest: String,
}

#[derive(Debug, Default)]
struct HostRecord {
    enrolment: Option<Enrolment>,
    pending: Option<PendingEnrolment>,
    revoked: Option<Revocation>,
    facts: Option<Facts>,
    verdicts: BTreeMap<String, StoredVerdict>,
    last_good_ms: BTreeMap<String, i64>,
    clock: Option<StoredClock>,
    connected: bool,
}

impl HostRecord {
    /// Whether the host may be a member of `pool` at `now_ms`.
    fn member_of(&self, pool: &str, now_ms: i64) -> bool {
        self.pending.is_none()
            && self.revoked.is_none()
            && self.enrolment.is_some()
            && self
                .verdicts
                .get(pool)
                .is_some_and(|v| v.trusted && now_ms < v.valid_until_ms)
    }

    /// The verdict of `pool` as it stands now: expiry, revocation and a
    /// pending enrolment all read as untrusted, with their reason.
    fn effective(&self, hostname: &str, pool: &str, now_ms: i64) -> StoredVerdict {
        let mut v = match self.verdicts.get(pool) {
            Some(v) => effective(v, now_ms),
            None => StoredVerdict {
                hostname: hostname.to_string(),
                pool: pool.to_string(),
                trusted: false,
                attested_at_ms: 0,
                valid_until_ms: 0,
                reasons: vec![Reason::new(
                    NOT_ATTESTED,
                    "no attestation of this host has been evaluated for this pool yet",
                )],
                policy_digest: String::new(),
            },
        };
        if let Some(p) = &self.pending {
            v.trusted = false;
            v.reasons.push(Reason::new(
                PENDING,
                format!("enrolment pending an operator's approval: {}", p.reason),
            ));
        }
        if let Some(r) = &self.revoked {
            v.trusted = false;
            v.reasons.push(Reason::new(
                codes::REVOKED,
                format!(
                    "revoked by {}{}",
                    r.revoked_by,
                    if r.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.comment)
                    }
                ),
            ));
        }
        v
    }
}

/// Reason code: the host's enrolment waits for an operator's approval.
pub const PENDING: &str = "host.pending";

#[derive(Debug, Default)]
struct PoolView {
    generation: u64,
    members: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<String, HostRecord>,
    pools: BTreeMap<String, PoolView>,
    next_generation: u64,
}

impl Inner {
    fn change(&self, host: &str, pool: &str, trusted: bool, now_ms: i64) -> TrustChange {
        let v = self
            .hosts
            .get(host)
            .map(|h| h.effective(host, pool, now_ms));
        TrustChange {
            hostname: host.to_string(),
            pool: pool.to_string(),
            trusted,
            reasons: if trusted {
                Vec::new()
            } else {
                v.as_ref().map(|v| v.reasons.clone()).unwrap_or_default()
            },
            policy_digest: v.map(|v| v.policy_digest).unwrap_or_default(),
        }
    }
}

/// Thread-safe registry. Readers take a short read lock and copy out.
#[derive(Debug)]
pub struct Registry {
    inner: RwLock<Inner>,
    changes: watch::Sender<u64>,
}

impl Registry {
    /// An empty registry whose generations start at `first_generation`
    /// (the server uses its start time in ms so generations grow across restarts).
    pub fn new(first_generation: u64) -> Registry {
        let (changes, _) = watch::channel(first_generation);
        Registry {
            inner: RwLock::new(Inner {
                next_generation: first_generation,
                ..Inner::default()
            }),
            changes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to membership changes (the value is the latest generation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Declares the pools of the policy in force; pools no longer in the
    /// policy disappear from the feed.
    pub fn set_pools(&self, names: &[String], now_ms: i64) {
        let mut inner = self.write();
        inner.pools.retain(|name, _| names.contains(name));
        for name in names {
            inner.pools.entry(name.clone()).or_default();
        }
        let changes = recompute_all(&mut inner, now_ms);
        self.publish(&mut inner, &changes);
    }

    /// Adds an enrolment (at start-up from the store, or after a new one committed).
    pub fn add_enrolment(&self, enrolment: Enrolment) {
        let mut inner = self.write();
        let hostname = enrolment.hostname.clone();
        inner.hosts.entry(hostname).or_default().enrolment = Some(enrolment);
    }

    /// The enrolment of a host, if any.
    pub fn enrolment(&self, hostname: &str) -> Option<Enrolment> {
        self.read()
            .hosts
            .get(hostname)
            .and_then(|h| h.enrolment.clone())
    }

    /// Restores a stored TPM clock at start-up or records an accepted one.
    pub fn set_clock(&self, hostname: &str, clock: StoredClock) {
        self.write()
            .hosts
            .entry(hostname.to_string())
            .or_default()
            .clock = Some(clock);
    }

    /// The last accepted TPM clock of a host.
    pub fn clock(&self, hostname: &str) -> Option<StoredClock> {
        self.read().hosts.get(hostname).and_then(|h| h.clock)
    }

    /// Marks whether an agent stream is open for the host.
    pub fn set_connected(&self, hostname: &str, connected: bool) {
        if let Some(h) = self.write().hosts.get_mut(hostname) {
            h.connected = connected;
        }
    }

    /// Records the latest verdicts of a host (already committed to the store
    /// when any of them is trusted) and updates pool membership; returns the
    /// membership changes.
    pub fn record_verdicts(&self, verdicts: Vec<StoredVerdict>, now_ms: i64) -> Vec<TrustChange> {
        let mut inner = self.write();
        let mut touched = BTreeSet::new();
        // Verdicts that say something new although membership may not flip:
        // the first verdict of a host in a pool, other reasons, another policy.
        let mut news = Vec::new();
        for v in verdicts {
            touched.insert(v.hostname.clone());
            let record = inner.hosts.entry(v.hostname.clone()).or_default();
            if v.trusted {
                let last = record.last_good_ms.entry(v.pool.clone()).or_insert(0);
                *last = (*last).max(v.attested_at_ms);
            }
            let old = record.verdicts.insert(v.pool.clone(), v.clone());
            let new_story = old.is_none_or(|o| {
                o.trusted != v.trusted
                    || o.reasons != v.reasons
                    || o.policy_digest != v.policy_digest
            });
            if new_story {
                news.push((v.hostname, v.pool));
            }
        }
        let mut flips = Vec::new();
        for host in touched {
            flips.extend(recompute_host(&mut inner, &host, now_ms));
        }
        self.publish(&mut inner, &flips);
        for (host, pool) in news {
            if flips.iter().any(|c| c.hostname == host && c.pool == pool) {
                continue;
            }
            let trusted = inner
                .hosts
                .get(&host)
                .is_some_and(|h| h.member_of(&pool, now_ms));
            flips.push(inner.change(&host, &pool, trusted, now_ms));
        }
        flips
    }

    /// Drops members whose verdict expired. Returns the pools that changed.
    pub fn sweep(&self, now_ms: i64) -> Vec<String> {
        let changes = self.sweep_changes(now_ms);
        let pools: BTreeSet<String> = changes.into_iter().map(|c| c.pool).collect();
        pools.into_iter().collect()
    }

    /// Drops members whose verdict expired; returns the membership changes.
    pub fn sweep_changes(&self, now_ms: i64) -> Vec<TrustChange> {
        let mut inner = self.write();
        let changes = recompute_all(&mut inner, now_ms);
        self.publish(&mut inner, &changes);
        changes
    }

    /// Applies `edit` to a host's record (created if needed) and updates
    /// membership at once; returns the membership changes.
    fn edit_host(
        &self,
        hostname: &str,
        now_ms: i64,
        edit: impl FnOnce(&mut HostRecord),
    ) -> Vec<TrustChange> {
        let mut inner = self.write();
        edit(inner.hosts.entry(hostname.to_string()).or_default());
        let changes = recompute_host(&mut inner, hostname, now_ms);
        self.publish(&mut inner, &changes);
        changes
    }

    /// Sets or clears the pending enrolment of a host.
    pub fn set_pending(
        &self,
        hostname: &str,
        pending: Option<PendingEnrolment>,
        now_ms: i64,
    ) -> Vec<TrustChange> {
        self.edit_host(hostname, now_ms, |h| h.pending = pending)
    }

    /// Sets or clears the revocation of a host.
    pub fn set_revoked(
        &self,
        hostname: &str,
        revoked: Option<Revocation>,
        now_ms: i64,
    ) -> Vec<TrustChange> {
        self.edit_host(hostname, now_ms, |h| h.revoked = revoked)
    }

    /// Replaces the enrolment after an approval: the pending candidate
    /// becomes the binding; old verdicts and TPM clock are forgotten.
    pub fn approve(&self, enrolment: Enrolment, now_ms: i64) -> Vec<TrustChange> {
        let hostname = enrolment.hostname.clone();
        self.edit_host(&hostname, now_ms, |h| {
            h.enrolment = Some(enrolment);
            h.pending = None;
            h.clock = None;
            h.verdicts.clear();
            h.last_good_ms.clear();
            h.facts = None;
        })
    }

    /// Records the latest verified evidence facts of a host.
    pub fn set_facts(&self, hostname: &str, facts: Facts) {
        self.write()
            .hosts
            .entry(hostname.to_string())
            .or_default()
            .facts = Some(facts);
    }

    /// Every host's latest facts.
    pub fn all_facts(&self) -> Vec<(String, Facts)> {
        self.read()
            .hosts
            .iter()
            .filter_map(|(name, h)| h.facts.clone().map(|f| (name.clone(), f)))
            .collect()
    }

    /// The pending enrolment of a host, if any.
    pub fn pending(&self, hostname: &str) -> Option<PendingEnrolment> {
        self.read()
            .hosts
            .get(hostname)
            .and_then(|h| h.pending.clone())
    }

    /// Whether the host is revoked.
    pub fn is_revoked(&self, hostname: &str) -> bool {
        self.read()
            .hosts
            .get(hostname)
            .is_some_and(|h| h.revoked.is_some())
    }

    fn publish(&self, inner: &mut Inner, changes: &[TrustChange]) {
        let changed: BTreeSet<&str> = changes.iter().map(|c| c.pool.as_str()).collect();
        if changed.is_empty() {
            return;
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        for pool in changed {
            if let Some(view) = inner.pools.get_mut(pool) {
                view.generation = generation;
            }
        }
        self.changes.send_replace(generation);
    }

    /// Names of the pools in force.
    pub fn pool_names(&self) -> Vec<String> {
        self.read().pools.keys().cloned().collect()
    }

    /// The members of a pool, or `None` for an unknown pool.
    pub fn pool(&self, pool: &str, now_ms: i64) -> Option<PoolSnapshot> {
        let inner = self.read();
        let view = inner.pools.get(pool)?;
        let members = view
            .members
            .iter()
            .filter_map(|host| {
                let record = inner.hosts.get(host)?;
                let v = record.verdicts.get(pool)?;
                // The sweeper may lag by up to its period: never publish an expired entry.
                record.member_of(pool, now_ms).then(|| Member {
                    hostname: host.clone(),
                    attested_at_ms: v.attested_at_ms,
                    valid_until_ms: v.valid_until_ms,
                })
            })
            .collect();
        Some(PoolSnapshot {
            pool: pool.to_string(),
            generation: view.generation,
            members,
        })
    }

    /// Everything known about one host, or `None` if the host is unknown.
    pub fn host(&self, hostname: &str, now_ms: i64) -> Option<HostSnapshot> {
        let inner = self.read();
        let record = inner.hosts.get(hostname)?;
        let verdicts = inner
            .pools
            .keys()
            .map(|pool| record.effective(hostname, pool, now_ms))
            .collect();
        Some(HostSnapshot {
            hostname: hostname.to_string(),
            enrolment: record.enrolment.clone(),
            verdicts,
            connected: record.connected,
            pending: record.pending.clone(),
            revoked: record.revoked.clone(),
            facts: record.facts.clone(),
            clock: record.clock,
            last_good_ms: record.last_good_ms.clone(),
        })
    }

    /// Every known host name, sorted.
    pub fn hostnames(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().hosts.keys().cloned().collect();
        names.sort();
        names
    }
}

/// A verdict as it stands at `now_ms`: a trusted verdict past its validity is
/// reported as untrusted, with the reason.
pub fn effective(v: &StoredVerdict, now_ms: i64) -> StoredVerdict {
    let mut v = v.clone();
    if v.trusted && now_ms >= v.valid_until_ms {
        v.trusted = false;
        v.reasons.push(Reason::new(
            codes::STALE,
            format!(
                "no good report since {} ms ago: the host is out of the pool after the down time",
                now_ms - v.attested_at_ms
            ),
        ));
    }
    v
}

fn recompute_host(inner: &mut Inner, host: &str, now_ms: i64) -> Vec<TrustChange> {
    let mut flips = Vec::new();
    let Inner { hosts, pools, .. } = inner;
    for (pool, view) in pools.iter_mut() {
        let member = hosts.get(host).is_some_and(|h| h.member_of(pool, now_ms));
        let was = view.members.contains(host);
        if member && !was {
            view.members.insert(host.to_string());
            flips.push((pool.clone(), true));
        } else if !member && was {
            view.members.remove(host);
            flips.push((pool.clone(), false));
        }
    }
    flips
        .into_iter()
        .map(|(pool, trusted)| inner.change(host, &pool, trusted, now_ms))
        .collect()
}

fn recompute_all(inner: &mut Inner, now_ms: i64) -> Vec<TrustChange> {
    let hosts: Vec<String> = inner.hosts.keys().cloned().collect();
    let mut changes = Vec::new();
    for host in hosts {
        changes.extend(recompute_host(inner, &host, now_ms));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrol(r: &Registry, host: &str) {
        r.add_enrolment(Enrolment {
            hostname: host.into(),
            ek_public: vec![1],
            ek_certificate: None,
            ak_public: vec![2],
            ak_name: vec![3],
            cert_fingerprint: String::new(),
            cert_subject: String::new(),
            enrolled_at_ms: 0,
        });
    }

    fn verdict(host: &str, pool: &str, trusted: bool, at: i64, until: i64) -> StoredVerdict {
        StoredVerdict {
            hostname: host.into(),
            pool: pool.into(),
            trusted,
            attested_at_ms: at,
            valid_until_ms: until,
            reasons: if trusted {
                vec![]
            } else {
                vec![Reason::new("pcr.not_allowed", "PCR 17")]
            },
            policy_digest: "d".into(),
        }
    }

    #[test]
    fn membership_follows_verdicts_and_generation_moves() {
        let r = Registry::new(100);
        r.set_pools(&["default".into()], 0);
        enrol(&r, "a");
        let g0 = r.pool("default", 0).expect("pool").generation;
        r.record_verdicts(vec![verdict("a", "default", true, 0, 1000)], 0);
        let snap = r.pool("default", 10).expect("pool");
        assert_eq!(snap.members.len(), 1);
        assert!(snap.generation > g0);
        // Same membership and story again: generation unchanged, nothing to record.
        assert!(r
            .record_verdicts(vec![verdict("a", "default", true, 5, 1005)], 5)
            .is_empty());
        assert_eq!(
            r.pool("default", 10).expect("pool").generation,
            snap.generation
        );
        // Untrusted: leaves at once.
        r.record_verdicts(vec![verdict("a", "default", false, 6, 0)], 6);
        let after = r.pool("default", 10).expect("pool");
        assert!(after.members.is_empty());
        assert!(after.generation > snap.generation);
    }

    #[test]
    fn expiry_removes_members_even_before_the_sweep() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        r.record_verdicts(vec![verdict("a", "p", true, 0, 1000)], 0);
        assert!(
            r.pool("p", 1000).expect("pool").members.is_empty(),
            "expired entries are never published"
        );
        let g = r.pool("p", 0).expect("pool").generation;
        assert_eq!(r.sweep(1000), vec!["p".to_string()]);
        assert!(r.pool("p", 0).expect("pool").generation > g);
        let host = r.host("a", 1000).expect("host");
        assert!(!host.verdicts[0].trusted);
        assert_eq!(host.verdicts[0].reasons[0].code, codes::STALE);
    }

    #[test]
    fn unknown_pool_and_host() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        assert!(r.pool("nope", 0).is_none());
        assert!(r.host("nope", 0).is_none());
    }

    #[test]
    fn dropping_a_pool_from_the_policy_hides_it() {
        let r = Registry::new(1);
        r.set_pools(&["p".into(), "q".into()], 0);
        r.set_pools(&["q".into()], 0);
        assert_eq!(r.pool_names(), vec!["q".to_string()]);
    }

    #[test]
    fn revocation_and_pending_approval_override_the_evidence() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        // Not enrolled: a trusted verdict alone admits nobody (the first
        // verdict is still worth a history entry).
        let changes = r.record_verdicts(vec![verdict("a", "p", true, 0, 1000)], 0);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].trusted);
        assert!(r.pool("p", 0).expect("pool").members.is_empty());
        enrol(&r, "a");
        let changes = r.record_verdicts(vec![verdict("a", "p", true, 0, 1000)], 0);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].trusted);
        let revocation = Revocation {
            hostname: "a".into(),
            revoked_by: "ops".into(),
            revoked_at_ms: 1,
            comment: "disk swap".into(),
        };
        let changes = r.set_revoked("a", Some(revocation), 1);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].trusted);
        assert!(changes[0]
            .reasons
            .iter()
            .any(|x| x.code == codes::REVOKED && x.message.contains("ops")));
        assert!(r.pool("p", 1).expect("pool").members.is_empty());
        let changes = r.set_revoked("a", None, 2);
        assert!(changes[0].trusted, "readmitted while the verdict is valid");
        let pending = PendingEnrolment {
            enrolment: Enrolment {
                hostname: "a".into(),
                ..r.enrolment("a").expect("enrolled")
            },
            reason: "new TPM".into(),
        };
        r.set_pending("a", Some(pending.clone()), 3);
        let host = r.host("a", 3).expect("host");
        assert!(!host.verdicts[0].trusted);
        assert!(host.verdicts[0].reasons.iter().any(|x| x.code == PENDING));
        // Approval replaces the binding and forgets evidence of the old TPM.
        let changes = r.approve(pending.enrolment, 4);
        assert!(changes.is_empty());
        assert!(r.pending("a").is_none());
        assert_eq!(
            r.host("a", 4).expect("host").verdicts[0].reasons[0].code,
            NOT_ATTESTED
        );
    }

    #[test]
    fn the_last_good_attestation_is_remembered_after_a_failing_one() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        r.record_verdicts(vec![verdict("a", "p", true, 10, 1000)], 10);
        r.record_verdicts(vec![verdict("a", "p", false, 20, 0)], 20);
        let h = r.host("a", 30).expect("host");
        assert!(!h.verdicts[0].trusted);
        assert_eq!(h.last_good_ms.get("p"), Some(&10));
    }
}
