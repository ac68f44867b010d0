//! The in-memory view of the fleet that the feed publishes: enrolled hosts,
//! their latest verdict per pool, and each pool's membership with a
//! generation number that changes whenever the membership changes.
//!
//! A host is a member of a pool only while its latest verdict there is
//! trusted and not expired (`now < valid_until`). The registry holds no I/O;
//! the session and sweeper tasks feed it after the store has committed.

use crate::store::{Enrolment, StoredClock, StoredVerdict};
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
}

#[derive(Debug, Default)]
struct HostRecord {
    enrolment: Option<Enrolment>,
    verdicts: BTreeMap<String, StoredVerdict>,
    clock: Option<StoredClock>,
    connected: bool,
}

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
        let changed = recompute_all(&mut inner, now_ms);
        self.publish(&mut inner, changed);
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
    /// when any of them is trusted) and updates pool membership.
    pub fn record_verdicts(&self, verdicts: Vec<StoredVerdict>, now_ms: i64) {
        let mut inner = self.write();
        let mut touched = BTreeSet::new();
        for v in verdicts {
            touched.insert(v.hostname.clone());
            inner
                .hosts
                .entry(v.hostname.clone())
                .or_default()
                .verdicts
                .insert(v.pool.clone(), v);
        }
        let mut changed = BTreeSet::new();
        for host in touched {
            changed.extend(recompute_host(&mut inner, &host, now_ms));
        }
        self.publish(&mut inner, changed);
    }

    /// Drops members whose verdict expired. Returns the pools that changed.
    pub fn sweep(&self, now_ms: i64) -> Vec<String> {
        let mut inner = self.write();
        let changed = recompute_all(&mut inner, now_ms);
        let list = changed.iter().cloned().collect();
        self.publish(&mut inner, changed);
        list
    }

    fn publish(&self, inner: &mut Inner, changed: BTreeSet<String>) {
        if changed.is_empty() {
            return;
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        for pool in &changed {
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
                let v = inner.hosts.get(host)?.verdicts.get(pool)?;
                // The sweeper may lag by up to its period: never publish an expired entry.
                (v.trusted && now_ms < v.valid_until_ms).then(|| Member {
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
            .map(|pool| match record.verdicts.get(pool) {
                Some(v) => effective(v, now_ms),
                None => StoredVerdict {
                    hostname: hostname.to_string(),
                    pool: pool.clone(),
                    trusted: false,
                    attested_at_ms: 0,
                    valid_until_ms: 0,
                    reasons: vec![Reason::new(
                        NOT_ATTESTED,
                        "no attestation of this host has been evaluated for this pool yet",
                    )],
                    policy_digest: String::new(),
                },
            })
            .collect();
        Some(HostSnapshot {
            hostname: hostname.to_string(),
            enrolment: record.enrolment.clone(),
            verdicts,
            connected: record.connected,
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

fn recompute_host(inner: &mut Inner, host: &str, now_ms: i64) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    let Inner { hosts, pools, .. } = inner;
    for (pool, view) in pools.iter_mut() {
        let member = hosts
            .get(host)
            .and_then(|h| h.verdicts.get(pool))
            .is_some_and(|v| v.trusted && now_ms < v.valid_until_ms);
        let was = view.members.contains(host);
        if member && !was {
            view.members.insert(host.to_string());
            changed.insert(pool.clone());
        } else if !member && was {
            view.members.remove(host);
            changed.insert(pool.clone());
        }
    }
    changed
}

fn recompute_all(inner: &mut Inner, now_ms: i64) -> BTreeSet<String> {
    let hosts: Vec<String> = inner.hosts.keys().cloned().collect();
    let mut changed = BTreeSet::new();
    for host in hosts {
        changed.extend(recompute_host(inner, &host, now_ms));
    }
    // Members of pools whose host record vanished (cannot happen today) are dropped too.
    for (pool, view) in inner.pools.iter_mut() {
        let before = view.members.len();
        view.members.retain(|h| inner.hosts.contains_key(h));
        if view.members.len() != before {
            changed.insert(pool.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let g0 = r.pool("default", 0).expect("pool").generation;
        r.record_verdicts(vec![verdict("a", "default", true, 0, 1000)], 0);
        let snap = r.pool("default", 10).expect("pool");
        assert_eq!(snap.members.len(), 1);
        assert!(snap.generation > g0);
        // Same membership again: generation unchanged.
        r.record_verdicts(vec![verdict("a", "default", true, 5, 1005)], 5);
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
}
