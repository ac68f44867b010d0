//! The in-memory view of the fleet that the feed publishes: enrolled hosts,
//! their latest verdict per pool, and each pool's membership with a
//! generation number that changes whenever the membership changes.
//!
//! A host is a member of a pool only while its latest verdict there is
//! trusted and not expired. The registry holds no I/O; the session and
//! sweeper tasks feed it after the store has committed.
//!
//! Time: every `now_ms` argument is the server's monotonic clock
//! ([`crate::clock::mono_ms`]), never the wall clock. Each verdict's expiry
//! is kept on that clock (`expires_ms`), so a step of the system clock can
//! neither extend trust (backward) nor expire the fleet (forward); the wall
//! times `attested_at_ms`/`valid_until_ms` are only published.

use crate::store::{Enrolment, PendingEnrolment, Revocation, StoredClock, StoredVerdict};
use crate::verify::facts::Facts;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// True when membership flipped; false when only the story changed
    /// (first verdict, other reasons, another policy digest).
    pub flip: bool,
}

/// A verdict with its expiry on the monotonic clock.
#[derive(Debug, Clone)]
struct Held {
    verdict: StoredVerdict,
    expires_ms: i64,
}

/// Verified facts with the expiry of the evidence they came from.
#[derive(Debug, Clone)]
struct HeldFacts {
    facts: Facts,
    expires_ms: i64,
}

/// When a verdict recorded at `now_ms` expires: its validity (the down time)
/// from now, never more.
fn expiry_of(v: &StoredVerdict, now_ms: i64) -> i64 {
    now_ms.saturating_add(v.valid_until_ms.saturating_sub(v.attested_at_ms).max(0))
}

/// When a verdict restored from the store expires: what is left of its
/// validity by the wall clock, capped at its full validity (a wall clock
/// that went back while the server was down extends nothing).
pub fn restored_expiry(v: &StoredVerdict, now_ms: i64, wall_now_ms: i64) -> i64 {
    let validity = v.valid_until_ms.saturating_sub(v.attested_at_ms).max(0);
    let left = v
        .valid_until_ms
        .saturating_sub(wall_now_ms)
        .clamp(0, validity);
    now_ms.saturating_add(left)
}

/// A host as the store holds it, facts parsed (see [`Registry::apply_stored`]).
#[derive(Debug, Clone, Default)]
pub struct StoredHostState {
    /// Host name.
    pub hostname: String,
    /// Its enrolment.
    pub enrolment: Option<Enrolment>,
    /// Its pending enrolment.
    pub pending: Option<PendingEnrolment>,
    /// Its revocation.
    pub revocation: Option<Revocation>,
    /// Its last accepted TPM clock.
    pub clock: Option<StoredClock>,
    /// Its latest facts.
    pub facts: Option<Facts>,
    /// Its latest verdict per pool.
    pub verdicts: Vec<StoredVerdict>,
}

#[derive(Debug, Default)]
struct HostRecord {
    enrolment: Option<Enrolment>,
    pending: Option<PendingEnrolment>,
    revoked: Option<Revocation>,
    facts: Option<HeldFacts>,
    verdicts: BTreeMap<String, Held>,
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
                .is_some_and(|h| h.verdict.trusted && now_ms < h.expires_ms)
    }

    /// The verdict of `pool` as it stands now: expiry, revocation and a
    /// pending enrolment all read as untrusted, with their reason.
    fn effective(&self, hostname: &str, pool: &str, now_ms: i64) -> StoredVerdict {
        let mut v = match self.verdicts.get(pool) {
            Some(h) => effective(h, now_ms),
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

/// The states a host has in a pool, as `/metrics` counts them.
pub const HOST_STATES: [&str; 6] = [
    "trusted",
    "untrusted",
    "stale",
    "unattested",
    "pending",
    "revoked",
];

impl HostRecord {
    /// The host's state in `pool` at `now_ms`: the classification of
    /// [`HostRecord::effective`]'s verdict, computed without building it.
    fn state_in(&self, pool: &str, now_ms: i64) -> &'static str {
        let held = self.verdicts.get(pool);
        let has =
            |code: &str| held.is_some_and(|h| h.verdict.reasons.iter().any(|r| r.code == code));
        let trusted_now = held.is_some_and(|h| h.verdict.trusted && now_ms < h.expires_ms);
        if trusted_now && self.pending.is_none() && self.revoked.is_none() {
            "trusted"
        } else if self.revoked.is_some() || has(codes::REVOKED) {
            "revoked"
        } else if self.pending.is_some() || has(PENDING) {
            "pending"
        } else if held.is_none() || has(NOT_ATTESTED) {
            "unattested"
        } else if held.is_some_and(|h| h.verdict.trusted) || has(codes::STALE) {
            "stale"
        } else {
            "untrusted"
        }
    }
}

/// How many shards the hosts are spread over. Sessions of hosts in
/// different shards never wait for each other; 64 keeps the chance that two
/// of a few cores' sessions meet on one shard small, and a walk over every
/// shard (a feed snapshot, a sweep) cheap.
const SHARDS: usize = 64;

/// A pool as one shard holds it: the pool's generation (shared by every
/// shard and the registry) and the members that live in this shard.
#[derive(Debug)]
struct ShardPool {
    generation: Arc<AtomicU64>,
    members: BTreeSet<String>,
}

/// The hosts whose names hash to one shard, with their pool membership and
/// the expiries of their trusted verdicts.
#[derive(Debug, Default)]
struct Shard {
    hosts: HashMap<String, HostRecord>,
    /// Every pool in force, with this shard's members of it.
    pools: BTreeMap<String, ShardPool>,
    /// (expiry, host) of every trusted verdict recorded and not yet swept:
    /// the sweep visits only the hosts whose verdicts are due, not the
    /// fleet. An entry may be stale (the host attested again since); its
    /// visit then changes nothing.
    expiries: BTreeSet<(i64, String)>,
}

/// The digests under which a host's TPM keys are indexed.
fn tpm_keys(h: &HostRecord) -> Vec<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut keys = Vec::new();
    for e in h
        .enrolment
        .iter()
        .chain(h.pending.as_ref().map(|p| &p.enrolment))
    {
        keys.push(Sha256::digest(&e.ek_public).into());
        keys.push(Sha256::digest(&e.ak_public).into());
    }
    keys
}

impl Shard {
    fn change(
        &self,
        host: &str,
        pool: &str,
        trusted: bool,
        now_ms: i64,
        flip: bool,
    ) -> TrustChange {
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
            flip,
        }
    }

    /// Brings `host`'s membership of every pool in line with its record;
    /// returns the flips.
    fn recompute_host(&mut self, host: &str, now_ms: i64) -> Vec<TrustChange> {
        let mut flips = Vec::new();
        let Shard { hosts, pools, .. } = self;
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
            .map(|(pool, trusted)| self.change(host, &pool, trusted, now_ms, true))
            .collect()
    }

    fn recompute_all(&mut self, now_ms: i64) -> Vec<TrustChange> {
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        let mut changes = Vec::new();
        for host in hosts {
            changes.extend(self.recompute_host(&host, now_ms));
        }
        changes
    }

    /// Records verdicts of hosts of this shard; returns the flips and the
    /// verdicts that say something new without a flip.
    fn record_held(
        &mut self,
        verdicts: Vec<Held>,
        now_ms: i64,
    ) -> (Vec<TrustChange>, Vec<(String, String)>) {
        let mut touched = BTreeSet::new();
        // Verdicts that say something new although membership may not flip:
        // the first verdict of a host in a pool, other reasons, another policy.
        let mut news = Vec::new();
        for held in verdicts {
            let v = &held.verdict;
            touched.insert(v.hostname.clone());
            let (hostname, pool) = (v.hostname.clone(), v.pool.clone());
            let record = self.hosts.entry(hostname.clone()).or_default();
            if v.trusted {
                let last = record.last_good_ms.entry(pool.clone()).or_insert(0);
                *last = (*last).max(v.attested_at_ms);
            }
            let new_story = record.verdicts.get(&pool).is_none_or(|o| {
                o.verdict.trusted != v.trusted
                    || o.verdict.reasons != v.reasons
                    || o.verdict.policy_digest != v.policy_digest
            });
            if held.verdict.trusted {
                self.expiries.insert((held.expires_ms, hostname.clone()));
            }
            let record = self.hosts.entry(hostname.clone()).or_default();
            record.verdicts.insert(pool.clone(), held);
            if new_story {
                news.push((hostname, pool));
            }
        }
        let mut flips = Vec::new();
        for host in touched {
            flips.extend(self.recompute_host(&host, now_ms));
        }
        (flips, news)
    }
}

/// Thread-safe registry, sharded by host name: an attestation locks its own
/// host's shard only, so sessions of different hosts do not serialise. The
/// pools' generations are atomics shared by the shards. Readers take short
/// read locks and copy out; a walk over the fleet (feed snapshot, `/metrics`
/// counts, sweep) takes one shard at a time.
///
/// Lock order: `reconfiguring` → `pools` → a shard → `tpm_owners`; no path
/// holds two shards at once.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// The pools in force and their generations.
    pools: RwLock<BTreeMap<String, Arc<AtomicU64>>>,
    /// Serialises changes of the pools in force.
    reconfiguring: Mutex<()>,
    next_generation: AtomicU64,
    /// SHA-256 of every enrolled or pending EK and AK public → the hosts
    /// that hold it (one TPM must back one host name). Touched by
    /// enrolments and approvals only, never by an attestation.
    tpm_owners: Mutex<HashMap<[u8; 32], BTreeSet<String>>>,
    changes: watch::Sender<u64>,
}

/// Reads through a poisoned lock: every registry update leaves the data
/// consistent before it can panic, so a panicked writer loses nothing.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// An empty registry whose generations start at `first_generation`
    /// (the server uses its start time in ms so generations grow across restarts).
    pub fn new(first_generation: u64) -> Registry {
        let (changes, _) = watch::channel(first_generation);
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            pools: RwLock::default(),
            reconfiguring: Mutex::new(()),
            next_generation: AtomicU64::new(first_generation),
            tpm_owners: Mutex::default(),
            changes,
        }
    }

    fn shard_index(&self, hostname: &str) -> usize {
        (self.hasher.hash_one(hostname) % SHARDS as u64) as usize
    }

    fn shard(&self, hostname: &str) -> &RwLock<Shard> {
        &self.shards[self.shard_index(hostname)]
    }

    fn read_host(&self, hostname: &str) -> RwLockReadGuard<'_, Shard> {
        read(self.shard(hostname))
    }

    fn write_host(&self, hostname: &str) -> RwLockWriteGuard<'_, Shard> {
        write(self.shard(hostname))
    }

    /// Subscribes to membership changes (the value is the latest generation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Declares the pools of the policy in force; pools no longer in the
    /// policy disappear from the feed.
    pub fn set_pools(&self, names: &[String], now_ms: i64) {
        let _one_at_a_time = lock(&self.reconfiguring);
        let cells: BTreeMap<String, Arc<AtomicU64>> = {
            let mut pools = write(&self.pools);
            pools.retain(|name, _| names.contains(name));
            // A pool new to the policy (or back in it) starts at the latest
            // generation given out, so a consumer that saw it before never
            // sees its generation go back.
            let latest = self.next_generation.load(Ordering::Acquire);
            for name in names {
                pools
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(AtomicU64::new(latest)));
            }
            pools.clone()
        };
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            shard.pools.retain(|name, _| cells.contains_key(name));
            for (name, generation) in &cells {
                shard
                    .pools
                    .entry(name.clone())
                    .or_insert_with(|| ShardPool {
                        generation: Arc::clone(generation),
                        members: BTreeSet::new(),
                    });
            }
            let changes = shard.recompute_all(now_ms);
            self.publish(&shard, &changes);
        }
    }

    /// Applies `edit` to a host's record (created if needed), keeping the
    /// TPM key index in step.
    fn edit(&self, shard: &mut Shard, hostname: &str, edit: impl FnOnce(&mut HostRecord)) {
        let record = shard.hosts.entry(hostname.to_string()).or_default();
        let before = tpm_keys(record);
        edit(record);
        let after = tpm_keys(record);
        if before == after {
            return;
        }
        let mut owners = lock(&self.tpm_owners);
        for k in before {
            if let Some(set) = owners.get_mut(&k) {
                set.remove(hostname);
                if set.is_empty() {
                    owners.remove(&k);
                }
            }
        }
        for k in after {
            owners.entry(k).or_default().insert(hostname.to_string());
        }
    }

    /// Adds an enrolment (at start-up from the store, or after a new one committed).
    pub fn add_enrolment(&self, enrolment: Enrolment) {
        let hostname = enrolment.hostname.clone();
        let mut shard = self.write_host(&hostname);
        self.edit(&mut shard, &hostname, |h| h.enrolment = Some(enrolment));
    }

    /// The other hosts whose enrolment (or pending enrolment) holds this EK
    /// or this AK: one TPM must not back several host names.
    pub fn tpm_owners(&self, ek_public: &[u8], ak_public: &[u8], except: &str) -> Vec<String> {
        use sha2::{Digest, Sha256};
        let index = lock(&self.tpm_owners);
        let mut owners = BTreeSet::new();
        for key in [Sha256::digest(ek_public), Sha256::digest(ak_public)] {
            let key: [u8; 32] = key.into();
            for host in index.get(&key).into_iter().flatten() {
                if host != except {
                    owners.insert(host.clone());
                }
            }
        }
        owners.into_iter().collect()
    }

    /// Forgets a host's enrolment and everything proven with it (its TPM was
    /// moved to another host name by an operator's approval).
    pub fn forget_enrolment(&self, hostname: &str, now_ms: i64) -> Vec<TrustChange> {
        self.edit_host(hostname, now_ms, |h| {
            h.enrolment = None;
            h.pending = None;
            h.clock = None;
            h.verdicts.clear();
            h.facts = None;
        })
    }

    /// The enrolment of a host, if any.
    pub fn enrolment(&self, hostname: &str) -> Option<Enrolment> {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .and_then(|h| h.enrolment.clone())
    }

    /// Restores a stored TPM clock at start-up or records an accepted one.
    pub fn set_clock(&self, hostname: &str, clock: StoredClock) {
        self.write_host(hostname)
            .hosts
            .entry(hostname.to_string())
            .or_default()
            .clock = Some(clock);
    }

    /// The last accepted TPM clock of a host.
    pub fn clock(&self, hostname: &str) -> Option<StoredClock> {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .and_then(|h| h.clock)
    }

    /// Marks whether an agent stream is open for the host.
    pub fn set_connected(&self, hostname: &str, connected: bool) {
        if let Some(h) = self.write_host(hostname).hosts.get_mut(hostname) {
            h.connected = connected;
        }
    }

    /// Records fresh verdicts (evaluated from evidence received now, already
    /// committed to the store when any of them is trusted) and updates pool
    /// membership; returns the membership changes. Each expires after its
    /// validity from `now_ms`.
    pub fn record_verdicts(&self, verdicts: Vec<StoredVerdict>, now_ms: i64) -> Vec<TrustChange> {
        let held = verdicts
            .into_iter()
            .map(|v| Held {
                expires_ms: expiry_of(&v, now_ms),
                verdict: v,
            })
            .collect();
        self.record_held(held, now_ms)
    }

    /// Records verdicts re-evaluated from a host's facts under another
    /// policy: they expire with the evidence the facts came from, so a
    /// re-evaluation never extends trust. Hosts without facts are skipped.
    pub fn record_reevaluated(
        &self,
        verdicts: Vec<StoredVerdict>,
        now_ms: i64,
    ) -> Vec<TrustChange> {
        let held = verdicts
            .into_iter()
            .filter_map(|v| {
                let expires_ms = self
                    .read_host(&v.hostname)
                    .hosts
                    .get(&v.hostname)?
                    .facts
                    .as_ref()?
                    .expires_ms;
                Some(Held {
                    verdict: v,
                    expires_ms,
                })
            })
            .collect();
        self.record_held(held, now_ms)
    }

    /// Records verdicts read back from the store at start-up, expiring with
    /// what is left of their validity by the wall clock (see [`restored_expiry`]).
    pub fn restore_verdicts(
        &self,
        verdicts: Vec<StoredVerdict>,
        now_ms: i64,
        wall_now_ms: i64,
    ) -> Vec<TrustChange> {
        let held = verdicts
            .into_iter()
            .map(|v| Held {
                expires_ms: restored_expiry(&v, now_ms, wall_now_ms),
                verdict: v,
            })
            .collect();
        self.record_held(held, now_ms)
    }

    /// Records verdicts, each under its host's shard (one shard at a time).
    fn record_held(&self, verdicts: Vec<Held>, now_ms: i64) -> Vec<TrustChange> {
        let mut by_shard: BTreeMap<usize, Vec<Held>> = BTreeMap::new();
        for held in verdicts {
            by_shard
                .entry(self.shard_index(&held.verdict.hostname))
                .or_default()
                .push(held);
        }
        let mut changes = Vec::new();
        for (index, verdicts) in by_shard {
            let mut shard = write(&self.shards[index]);
            let (mut flips, news) = shard.record_held(verdicts, now_ms);
            self.publish(&shard, &flips);
            for (host, pool) in news {
                if flips.iter().any(|c| c.hostname == host && c.pool == pool) {
                    continue;
                }
                let trusted = shard
                    .hosts
                    .get(&host)
                    .is_some_and(|h| h.member_of(&pool, now_ms));
                flips.push(shard.change(&host, &pool, trusted, now_ms, false));
            }
            changes.extend(flips);
        }
        changes
    }

    /// The latest stored-form verdicts of a host as recorded (no expiry
    /// applied), for deciding whether a new outcome changes anything durable.
    pub fn recorded_verdicts(&self, hostname: &str) -> Vec<StoredVerdict> {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .map(|h| h.verdicts.values().map(|x| x.verdict.clone()).collect())
            .unwrap_or_default()
    }

    /// Drops members whose verdict expired. Returns the pools that changed.
    pub fn sweep(&self, now_ms: i64) -> Vec<String> {
        let changes = self.sweep_changes(now_ms);
        let pools: BTreeSet<String> = changes.into_iter().map(|c| c.pool).collect();
        pools.into_iter().collect()
    }

    /// Drops members whose verdict expired; returns the membership changes.
    /// Costs O(verdicts due) plus one lock per shard, not O(fleet).
    pub fn sweep_changes(&self, now_ms: i64) -> Vec<TrustChange> {
        let mut changes = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let later = shard
                .expiries
                .split_off(&(now_ms.saturating_add(1), String::new()));
            let due = std::mem::replace(&mut shard.expiries, later);
            let hosts: BTreeSet<String> = due.into_iter().map(|(_, host)| host).collect();
            let mut flips = Vec::new();
            for host in hosts {
                flips.extend(shard.recompute_host(&host, now_ms));
            }
            self.publish(&shard, &flips);
            changes.extend(flips);
        }
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
        let mut shard = self.write_host(hostname);
        self.edit(&mut shard, hostname, edit);
        let changes = shard.recompute_host(hostname, now_ms);
        self.publish(&shard, &changes);
        changes
    }

    /// Brings a host in line with what the store holds about it (another
    /// replica changed it): enrolment, pending enrolment, revocation and
    /// facts as stored; per pool, the stored verdict unless the one held
    /// here is newer (this replica's own session may have committed and
    /// recorded a later one since the store was read), and no verdict where
    /// the store has none (a readmission or an approval deleted it). Stored
    /// verdicts and facts expire with what is left of their validity by the
    /// wall clock. Returns the membership changes.
    pub fn apply_stored(
        &self,
        stored: StoredHostState,
        now_ms: i64,
        wall_now_ms: i64,
    ) -> Vec<TrustChange> {
        let hostname = stored.hostname.clone();
        let mut shard = self.write_host(&hostname);
        let mut due = Vec::new();
        self.edit(&mut shard, &hostname, |h| {
            h.enrolment = stored.enrolment;
            h.pending = stored.pending;
            h.revoked = stored.revocation;
            if let Some(clock) = stored.clock {
                let newer = h.clock.is_none_or(|c| {
                    (clock.reset_count, clock.restart_count, clock.clock)
                        >= (c.reset_count, c.restart_count, c.clock)
                });
                if newer {
                    h.clock = Some(clock);
                }
            } else {
                h.clock = None;
            }
            h.facts = match (stored.facts, h.facts.take()) {
                (None, _) => None,
                (Some(mine), Some(held)) if held.facts.attested_at_ms > mine.attested_at_ms => {
                    Some(held)
                }
                (Some(f), _) => {
                    let validity = f.valid_until_ms.saturating_sub(f.attested_at_ms).max(0);
                    let left = f
                        .valid_until_ms
                        .saturating_sub(wall_now_ms)
                        .clamp(0, validity);
                    Some(HeldFacts {
                        facts: f,
                        expires_ms: now_ms.saturating_add(left),
                    })
                }
            };
            let mut verdicts = BTreeMap::new();
            for v in stored.verdicts {
                let pool = v.pool.clone();
                let held = match h.verdicts.remove(&pool) {
                    Some(held) if held.verdict.attested_at_ms > v.attested_at_ms => held,
                    _ => Held {
                        expires_ms: restored_expiry(&v, now_ms, wall_now_ms),
                        verdict: v,
                    },
                };
                if held.verdict.trusted {
                    let last = h.last_good_ms.entry(pool.clone()).or_insert(0);
                    *last = (*last).max(held.verdict.attested_at_ms);
                    due.push(held.expires_ms);
                }
                verdicts.insert(pool, held);
            }
            h.verdicts = verdicts;
        });
        for expires in due {
            shard.expiries.insert((expires, hostname.clone()));
        }
        let changes = shard.recompute_host(&hostname, now_ms);
        self.publish(&shard, &changes);
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

    /// Lifts a revocation: the evidence the host sent while revoked is
    /// forgotten, so only its next report can make it trusted again.
    pub fn readmit(&self, hostname: &str, now_ms: i64) -> Vec<TrustChange> {
        self.edit_host(hostname, now_ms, |h| {
            h.revoked = None;
            h.verdicts.clear();
            h.facts = None;
        })
    }

    /// Records the latest verified evidence facts of a host, received at
    /// `now_ms` (they can justify trust for their validity from then).
    pub fn set_facts(&self, hostname: &str, facts: Facts, now_ms: i64) {
        let validity = facts
            .valid_until_ms
            .saturating_sub(facts.attested_at_ms)
            .max(0);
        self.put_facts(hostname, facts, now_ms.saturating_add(validity));
    }

    /// Restores stored facts at start-up: they justify trust only for what
    /// is left of their validity by the wall clock, capped at the full validity.
    pub fn restore_facts(&self, hostname: &str, facts: Facts, now_ms: i64, wall_now_ms: i64) {
        let validity = facts
            .valid_until_ms
            .saturating_sub(facts.attested_at_ms)
            .max(0);
        let left = facts
            .valid_until_ms
            .saturating_sub(wall_now_ms)
            .clamp(0, validity);
        self.put_facts(hostname, facts, now_ms.saturating_add(left));
    }

    fn put_facts(&self, hostname: &str, facts: Facts, expires_ms: i64) {
        self.write_host(hostname)
            .hosts
            .entry(hostname.to_string())
            .or_default()
            .facts = Some(HeldFacts { facts, expires_ms });
    }

    /// The latest facts of a host, if it has any.
    pub fn host_facts(&self, hostname: &str) -> Option<Facts> {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .and_then(|h| h.facts.as_ref().map(|f| f.facts.clone()))
    }

    /// Withdraws the facts of a host whose newest evidence was not sound:
    /// nothing may be re-evaluated from older evidence any more. Returns
    /// whether there were facts to withdraw.
    pub fn withdraw_facts(&self, hostname: &str) -> bool {
        self.write_host(hostname)
            .hosts
            .get_mut(hostname)
            .and_then(|h| h.facts.take())
            .is_some()
    }

    /// Every host's latest facts that still justify trust at `now_ms`
    /// (unexpired), for re-evaluation and dry runs.
    pub fn live_facts(&self, now_ms: i64) -> Vec<(String, Facts)> {
        let mut live = Vec::new();
        for shard in self.shards.iter() {
            let shard = read(shard);
            live.extend(shard.hosts.iter().filter_map(|(name, h)| {
                let held = h.facts.as_ref()?;
                (now_ms < held.expires_ms).then(|| (name.clone(), held.facts.clone()))
            }));
        }
        live
    }

    /// The pending enrolment of a host, if any.
    pub fn pending(&self, hostname: &str) -> Option<PendingEnrolment> {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .and_then(|h| h.pending.clone())
    }

    /// Whether the host is revoked.
    pub fn is_revoked(&self, hostname: &str) -> bool {
        self.read_host(hostname)
            .hosts
            .get(hostname)
            .is_some_and(|h| h.revoked.is_some())
    }

    /// Gives the pools that `changes` touched a new generation, while the
    /// caller still holds the shard whose membership changed: a reader that
    /// read a pool's generation before the change sees the change's members
    /// or none of them, never a newer generation with older members.
    /// Generations only grow (`fetch_max`), also when two shards publish at once.
    fn publish(&self, shard: &Shard, changes: &[TrustChange]) {
        let changed: BTreeSet<&str> = changes.iter().map(|c| c.pool.as_str()).collect();
        if changed.is_empty() {
            return;
        }
        let generation = self.next_generation();
        for pool in changed {
            if let Some(view) = shard.pools.get(pool) {
                view.generation.fetch_max(generation, Ordering::AcqRel);
            }
        }
        self.changes.send_if_modified(|latest| {
            let newer = generation > *latest;
            if newer {
                *latest = generation;
            }
            newer
        });
    }

    /// A new generation: one more than the last given out, and at least the
    /// wall clock in microseconds, so that the generations of replicas on
    /// one database follow one clock and a replica's next generation is
    /// newer than any change stamp it has seen ([`Registry::observe`]).
    fn next_generation(&self) -> u64 {
        let clock = u64::try_from(crate::clock::now_us()).unwrap_or(0);
        let previous = self
            .next_generation
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(last.saturating_add(1).max(clock))
            })
            .unwrap_or_else(|last| last);
        previous.saturating_add(1).max(clock)
    }

    /// Gives `pool` a generation of at least `at_least` without changing
    /// its members, and returns it (`None` for an unknown pool): a consumer
    /// that got `at_least - 1` from another replica behind the same load
    /// balancer never gets a lower generation from this one.
    pub fn raise_pool_generation(&self, pool: &str, at_least: u64) -> Option<u64> {
        let cell = read(&self.pools).get(pool).cloned()?;
        self.next_generation.fetch_max(at_least, Ordering::AcqRel);
        let generation = cell.fetch_max(at_least, Ordering::AcqRel).max(at_least);
        self.changes.send_if_modified(|latest| {
            let newer = generation > *latest;
            if newer {
                *latest = generation;
            }
            newer
        });
        Some(generation)
    }

    /// Takes note of a change stamp of another replica: every generation
    /// given out from now on is newer, whatever this replica's clock says.
    pub fn observe(&self, stamp: i64) {
        if let Ok(stamp) = u64::try_from(stamp) {
            self.next_generation.fetch_max(stamp, Ordering::AcqRel);
        }
    }

    /// Names of the pools in force.
    pub fn pool_names(&self) -> Vec<String> {
        read(&self.pools).keys().cloned().collect()
    }

    /// The generation of a pool (`None` for an unknown pool), without
    /// copying its members.
    pub fn pool_generation(&self, pool: &str) -> Option<u64> {
        read(&self.pools)
            .get(pool)
            .map(|g| g.load(Ordering::Acquire))
    }

    /// The members of a pool, or `None` for an unknown pool. The generation
    /// is read before the members: the snapshot may hold a change its
    /// generation does not count yet (a later generation follows), never
    /// the reverse.
    pub fn pool(&self, pool: &str, now_ms: i64) -> Option<PoolSnapshot> {
        let generation = self.pool_generation(pool)?;
        let mut members = Vec::new();
        for shard in self.shards.iter() {
            let shard = read(shard);
            let Some(view) = shard.pools.get(pool) else {
                continue;
            };
            members.extend(view.members.iter().filter_map(|host| {
                let record = shard.hosts.get(host)?;
                let v = &record.verdicts.get(pool)?.verdict;
                // The sweeper may lag by up to its period: never publish an expired entry.
                record.member_of(pool, now_ms).then(|| Member {
                    hostname: host.clone(),
                    attested_at_ms: v.attested_at_ms,
                    valid_until_ms: v.valid_until_ms,
                })
            }));
        }
        members.sort_unstable_by(|a, b| a.hostname.cmp(&b.hostname));
        Some(PoolSnapshot {
            pool: pool.to_string(),
            generation,
            members,
        })
    }

    /// Everything known about one host, or `None` if the host is unknown.
    pub fn host(&self, hostname: &str, now_ms: i64) -> Option<HostSnapshot> {
        let shard = self.read_host(hostname);
        let record = shard.hosts.get(hostname)?;
        let verdicts = shard
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
            facts: record.facts.as_ref().map(|f| f.facts.clone()),
            clock: record.clock,
            last_good_ms: record.last_good_ms.clone(),
        })
    }

    /// A host's verdicts per pool as they stand at `now_ms` (what
    /// [`Registry::host`] reports), without copying the rest of its record:
    /// the session's reply reads this after every report.
    pub fn verdicts_now(&self, hostname: &str, now_ms: i64) -> Vec<StoredVerdict> {
        let shard = self.read_host(hostname);
        let Some(record) = shard.hosts.get(hostname) else {
            return Vec::new();
        };
        shard
            .pools
            .keys()
            .map(|pool| record.effective(hostname, pool, now_ms))
            .collect()
    }

    /// How many hosts are in each state per pool at `now_ms`, the states of
    /// `trustpool_hosts` (what [`Registry::host`]'s verdicts would say,
    /// classified in the same order: trusted, revoked, pending, unattested,
    /// stale, untrusted). One shard's read lock at a time, nothing copied
    /// but the counts: a `/metrics` scrape must not clone the fleet.
    pub fn state_counts(&self, now_ms: i64) -> BTreeMap<(String, &'static str), u64> {
        let mut counts = BTreeMap::new();
        for pool in self.pool_names() {
            for state in HOST_STATES {
                counts.insert((pool.clone(), state), 0);
            }
        }
        for shard in self.shards.iter() {
            let shard = read(shard);
            for record in shard.hosts.values() {
                for pool in shard.pools.keys() {
                    let state = record.state_in(pool, now_ms);
                    if let Some(n) = counts.get_mut(&(pool.clone(), state)) {
                        *n += 1;
                    }
                }
            }
        }
        counts
    }

    /// How long the host stays a member of the pools it is a member of now
    /// (the shortest of them), on the monotonic clock; `None` when it is a
    /// member of none.
    pub fn trusted_for_ms(&self, hostname: &str, now_ms: i64) -> Option<i64> {
        let shard = self.read_host(hostname);
        let record = shard.hosts.get(hostname)?;
        shard
            .pools
            .keys()
            .filter(|pool| record.member_of(pool, now_ms))
            .filter_map(|pool| record.verdicts.get(pool))
            .map(|h| h.expires_ms - now_ms)
            .min()
    }

    /// The number of members of every pool at `now_ms` (what
    /// [`Registry::pool`] would list), counted without copying them.
    pub fn pool_sizes(&self, now_ms: i64) -> Vec<(String, usize)> {
        let mut sizes: BTreeMap<String, usize> =
            self.pool_names().into_iter().map(|p| (p, 0)).collect();
        for shard in self.shards.iter() {
            let shard = read(shard);
            for (name, view) in &shard.pools {
                let live = view
                    .members
                    .iter()
                    .filter(|h| {
                        shard
                            .hosts
                            .get(*h)
                            .is_some_and(|r| r.member_of(name, now_ms))
                    })
                    .count();
                if let Some(n) = sizes.get_mut(name) {
                    *n += live;
                }
            }
        }
        sizes.into_iter().collect()
    }

    /// Every known host name, sorted.
    pub fn hostnames(&self) -> Vec<String> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            names.extend(read(shard).hosts.keys().cloned());
        }
        names.sort();
        names
    }

    /// Holds the shard of `hostname` as an attestation of that host would,
    /// so a test can show that other hosts' attestations do not wait for it.
    #[cfg(test)]
    fn hold_shard_of(&self, hostname: &str) -> RwLockWriteGuard<'_, Shard> {
        self.write_host(hostname)
    }
}

/// A verdict as it stands at `now_ms`: a trusted verdict past its expiry is
/// reported as untrusted, with the reason.
fn effective(h: &Held, now_ms: i64) -> StoredVerdict {
    let mut v = h.verdict.clone();
    if v.trusted && now_ms >= h.expires_ms {
        v.trusted = false;
        v.reasons.push(Reason::new(
            codes::STALE,
            format!(
                "no good report within the down time (expired {} ms ago): the host is out of the pool",
                now_ms - h.expires_ms
            ),
        ));
    }
    v
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

    /// The state of a host in a pool as read from its full snapshot: what
    /// `/metrics` reported before it counted without copying.
    fn state_from_snapshot(v: &StoredVerdict) -> &'static str {
        let has = |code: &str| v.reasons.iter().any(|r| r.code == code);
        if v.trusted {
            "trusted"
        } else if has(codes::REVOKED) {
            "revoked"
        } else if has(PENDING) {
            "pending"
        } else if has(NOT_ATTESTED) {
            "unattested"
        } else if has(codes::STALE) {
            "stale"
        } else {
            "untrusted"
        }
    }

    /// What another replica committed replaces what this one holds, except
    /// a newer verdict of this replica's own; what the store no longer has
    /// (a readmission's deleted verdicts) is dropped; a revocation applies.
    #[test]
    fn a_host_changed_by_another_replica_is_taken_from_the_store() {
        let r = Registry::new(1);
        r.set_pools(&["default".into(), "gold".into()], 0);
        enrol(&r, "h");
        let wall = 1_000_000;
        let stored =
            |verdicts: Vec<StoredVerdict>, revocation: Option<Revocation>| StoredHostState {
                hostname: "h".into(),
                enrolment: r.enrolment("h"),
                revocation,
                verdicts,
                ..StoredHostState::default()
            };
        // Another replica's trusted verdict: a member, generation newer
        // than the change's stamp.
        let g0 = r.pool_generation("default").expect("pool");
        r.observe(i64::MAX / 4);
        let flips = r.apply_stored(
            stored(
                vec![verdict("h", "default", true, wall, wall + 60_000)],
                None,
            ),
            0,
            wall,
        );
        assert_eq!(flips.len(), 1);
        assert!(flips[0].trusted && flips[0].flip);
        let g1 = r.pool_generation("default").expect("pool");
        assert!(g1 > g0 && g1 > (i64::MAX / 4) as u64);
        assert_eq!(r.pool("default", 0).expect("pool").members.len(), 1);
        // Its expiry is what is left by the wall clock, not a new validity.
        assert!(r.pool("default", 59_999).expect("pool").members.len() == 1);
        assert!(r.pool("default", 60_000).expect("pool").members.is_empty());
        // This replica records a newer verdict of its own; a stale read of
        // the store does not undo it.
        r.record_verdicts(vec![verdict("h", "gold", true, wall + 5, wall + 60_005)], 0);
        r.apply_stored(
            stored(
                vec![
                    verdict("h", "default", true, wall, wall + 60_000),
                    verdict("h", "gold", false, wall + 1, wall + 60_001),
                ],
                None,
            ),
            0,
            wall,
        );
        assert_eq!(r.pool("gold", 0).expect("pool").members.len(), 1);
        // Readmitted elsewhere: the store has no verdict of "default" any more.
        r.apply_stored(stored(vec![], None), 0, wall);
        assert!(r.pool("default", 0).expect("pool").members.is_empty());
        assert!(r.pool("gold", 0).expect("pool").members.is_empty());
        // Revoked elsewhere: out of every pool whatever its verdicts.
        r.apply_stored(
            stored(
                vec![verdict("h", "default", true, wall + 10, wall + 60_010)],
                Some(Revocation {
                    hostname: "h".into(),
                    revoked_by: "op".into(),
                    revoked_at_ms: wall,
                    comment: String::new(),
                }),
            ),
            0,
            wall,
        );
        assert!(r.is_revoked("h"));
        assert!(r.pool("default", 0).expect("pool").members.is_empty());
    }

    #[test]
    fn state_counts_agree_with_the_snapshots_of_every_host() {
        let r = Registry::new(1);
        r.set_pools(&["default".into(), "gold".into()], 0);
        for h in ["trusted", "expired", "bad", "pending", "revoked", "fresh"] {
            enrol(&r, h);
        }
        r.record_verdicts(
            vec![
                verdict("trusted", "default", true, 0, 10_000),
                verdict("trusted", "gold", false, 0, 10_000),
                verdict("expired", "default", true, 0, 100),
                verdict("bad", "default", false, 0, 10_000),
                verdict("pending", "default", true, 0, 10_000),
                verdict("revoked", "default", true, 0, 10_000),
            ],
            0,
        );
        r.set_pending(
            "pending",
            Some(PendingEnrolment {
                enrolment: r.enrolment("pending").expect("enrolled"),
                reason: "new AK".into(),
            }),
            0,
        );
        r.set_revoked(
            "revoked",
            Some(Revocation {
                hostname: "revoked".into(),
                revoked_by: "op".into(),
                revoked_at_ms: 0,
                comment: String::new(),
            }),
            0,
        );
        let now = 500;
        let mut expected: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for pool in ["default", "gold"] {
            for state in HOST_STATES {
                expected.insert((pool.to_string(), state), 0);
            }
        }
        for name in r.hostnames() {
            for v in r.host(&name, now).expect("known").verdicts {
                *expected
                    .entry((v.pool.clone(), state_from_snapshot(&v)))
                    .or_default() += 1;
            }
        }
        let counts = r.state_counts(now);
        assert_eq!(counts, expected);
        assert_eq!(r.trusted_for_ms("trusted", now), Some(10_000 - now));
        assert_eq!(r.trusted_for_ms("expired", now), None);
        assert_eq!(r.trusted_for_ms("pending", now), None);
        assert_eq!(r.trusted_for_ms("nobody", now), None);
        let sizes = r.pool_sizes(now);
        for (pool, n) in &sizes {
            assert_eq!(*n, r.pool(pool, now).expect("pool").members.len(), "{pool}");
        }
        assert_eq!(
            sizes,
            vec![("default".to_string(), 1), ("gold".to_string(), 0)]
        );
        assert_eq!(counts[&("default".to_string(), "trusted")], 1);
        assert_eq!(counts[&("default".to_string(), "stale")], 1);
        assert_eq!(counts[&("default".to_string(), "untrusted")], 1);
        assert_eq!(counts[&("default".to_string(), "pending")], 1);
        assert_eq!(counts[&("default".to_string(), "revoked")], 1);
        assert_eq!(counts[&("default".to_string(), "unattested")], 1);
        assert_eq!(counts[&("gold".to_string(), "unattested")], 3);
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
    fn the_sweep_visits_due_verdicts_only_and_follows_renewals() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        for h in ["a", "b"] {
            enrol(&r, h);
        }
        // a expires at 1000, b at 2000; a renews at 500 (now expires at 1500).
        r.record_verdicts(vec![verdict("a", "p", true, 0, 1000)], 0);
        r.record_verdicts(vec![verdict("b", "p", true, 0, 2000)], 0);
        r.record_verdicts(vec![verdict("a", "p", true, 500, 1500)], 500);
        let members = |r: &Registry| -> Vec<String> {
            r.pool("p", 0)
                .expect("pool")
                .members
                .into_iter()
                .map(|m| m.hostname)
                .collect()
        };
        // The stale entry of a's first verdict is visited and changes nothing.
        assert!(r.sweep_changes(1200).is_empty());
        assert_eq!(members(&r), ["a", "b"]);
        let gone = r.sweep_changes(1500);
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].hostname, "a");
        assert_eq!(members(&r), ["b"]);
        assert!(r.sweep_changes(1999).is_empty());
        assert_eq!(r.sweep_changes(2000).len(), 1);
        assert!(members(&r).is_empty());
        // What the session replies is what the host detail shows.
        for now in [0, 1499, 1500, 2500] {
            assert_eq!(
                r.verdicts_now("a", now),
                r.host("a", now).expect("host").verdicts
            );
        }
        assert!(r.verdicts_now("nobody", 0).is_empty());
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

    #[test]
    fn attack_wall_clock_step_back_does_not_extend_trust() {
        // Wall times far from the monotonic clock: expiry follows the latter.
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        let wall = 1_000_000_000;
        r.record_verdicts(vec![verdict("a", "p", true, wall, wall + 75_000)], 0);
        assert_eq!(r.pool("p", 74_999).expect("pool").members.len(), 1);
        assert!(
            r.pool("p", 75_000).expect("pool").members.is_empty(),
            "expired after the down time on the monotonic clock, whatever the wall clock says"
        );
        assert_eq!(r.sweep(75_000), vec!["p".to_string()]);
        let h = r.host("a", 75_000).expect("host");
        assert_eq!(h.verdicts[0].reasons[0].code, codes::STALE);
        // Published times stay wall times.
        r.record_verdicts(vec![verdict("a", "p", true, wall, wall + 75_000)], 100_000);
        let m = &r.pool("p", 100_001).expect("pool").members[0];
        assert_eq!((m.attested_at_ms, m.valid_until_ms), (wall, wall + 75_000));
    }

    #[test]
    fn restored_verdicts_keep_only_what_is_left_capped_at_the_down_time() {
        let v = verdict("a", "p", true, 1_000, 76_000);
        // 30 s left by the wall clock.
        assert_eq!(restored_expiry(&v, 500, 46_000), 30_500);
        // The wall clock went back an hour while the server was down: no more
        // than the full validity from now.
        assert_eq!(restored_expiry(&v, 500, 1_000 - 3_600_000), 75_500);
        // Already past: expired at once.
        assert_eq!(restored_expiry(&v, 500, 80_000), 500);
    }

    #[test]
    fn reevaluated_verdicts_expire_with_their_evidence() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        let f = Facts::from_json(
            r#"{"attested_at_ms":0,"valid_until_ms":1000,"pcrs":{},"statuses":null,
                "check_reasons":null,"params_digest":null,"reset_count":0,"restart_count":0,"clock":0}"#,
        )
        .expect("facts");
        r.set_facts("a", f, 0);
        r.record_verdicts(vec![verdict("a", "p", true, 0, 1_000)], 0);
        // A reload at 900 re-evaluates: still valid only until 1_000.
        r.record_reevaluated(vec![verdict("a", "p", true, 0, 1_000)], 900);
        assert!(r.pool("p", 1_000).expect("pool").members.is_empty());
        assert!(r.live_facts(1_000).is_empty());
        assert_eq!(r.live_facts(999).len(), 1);
        // Withdrawn facts are gone for good.
        assert!(r.withdraw_facts("a"));
        assert!(r.live_facts(0).is_empty());
        assert!(!r.withdraw_facts("a"));
    }

    #[test]
    fn attack_one_tpm_indexed_under_every_host_that_holds_it() {
        let r = Registry::new(1);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        // `enrol` gives every host EK [1] and AK [2].
        assert_eq!(r.tpm_owners(&[1], &[9], "b"), vec!["a".to_string()]);
        assert_eq!(r.tpm_owners(&[9], &[2], "b"), vec!["a".to_string()]);
        assert!(
            r.tpm_owners(&[1], &[2], "a").is_empty(),
            "a host is not its own rival"
        );
        assert!(r.tpm_owners(&[8], &[9], "b").is_empty());
        r.forget_enrolment("a", 0);
        assert!(r.tpm_owners(&[1], &[2], "b").is_empty());
    }

    #[test]
    fn an_attestation_does_not_wait_for_another_hosts_shard() {
        let r = std::sync::Arc::new(Registry::new(1));
        r.set_pools(&["default".into()], 0);
        let held_host = "held";
        let other = (0..1000)
            .map(|i| format!("host-{i}"))
            .find(|h| r.shard_index(h) != r.shard_index(held_host))
            .expect("some host name hashes to another shard");
        enrol(&r, held_host);
        enrol(&r, &other);
        let (done, finished) = std::sync::mpsc::channel();
        let guard = r.hold_shard_of(held_host);
        let worker = {
            let r = std::sync::Arc::clone(&r);
            let other = other.clone();
            std::thread::spawn(move || {
                r.record_verdicts(vec![verdict(&other, "default", true, 0, 1000)], 0);
                r.set_clock(
                    &other,
                    StoredClock {
                        clock: 1,
                        reset_count: 0,
                        restart_count: 0,
                    },
                );
                let _ = done.send(r.clock(&other).is_some());
            })
        };
        // With one lock over the fleet the worker would wait for `guard`
        // until the timeout; sharded, it only waits for its own shard. (A
        // feed snapshot walks every shard, so it would wait: not done here.)
        let recorded = finished.recv_timeout(std::time::Duration::from_secs(10));
        drop(guard);
        worker.join().expect("worker");
        assert_eq!(
            recorded,
            Ok(true),
            "the other host's attestation waited for a held shard"
        );
        let members = r.pool("default", 1).expect("pool").members;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].hostname, other);
    }

    #[test]
    fn generations_never_go_back_under_concurrent_sessions() {
        let r = std::sync::Arc::new(Registry::new(1));
        r.set_pools(&["default".into()], 0);
        let hosts: Vec<String> = (0..64).map(|i| format!("h{i:02}")).collect();
        for h in &hosts {
            enrol(&r, h);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (r, stop) = (std::sync::Arc::clone(&r), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let watch = r.subscribe();
                let (mut last_pool, mut last_watch, mut reads) = (0, 0, 0u64);
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let snap = r.pool("default", 0).expect("pool");
                    assert!(snap.generation >= last_pool, "pool generation went back");
                    let seen = *watch.borrow();
                    assert!(seen >= last_watch, "published generation went back");
                    (last_pool, last_watch) = (snap.generation, seen);
                    reads += 1;
                }
                last_pool
            })
        };
        let writers: Vec<_> = hosts
            .chunks(16)
            .map(|chunk| {
                let r = std::sync::Arc::clone(&r);
                let chunk = chunk.to_vec();
                std::thread::spawn(move || {
                    for round in 0..200 {
                        for h in &chunk {
                            let trusted = round % 2 == 0 || h.ends_with('0');
                            r.record_verdicts(vec![verdict(h, "default", trusted, 0, 1000)], 0);
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        stop.store(true, Ordering::Relaxed);
        let last_read = reader.join().expect("reader");
        // Round 199 is odd: only the hosts whose name ends in 0 stay.
        let snap = r.pool("default", 0).expect("pool");
        let want: Vec<&String> = hosts.iter().filter(|h| h.ends_with('0')).collect();
        let got: Vec<&String> = snap.members.iter().map(|m| &m.hostname).collect();
        assert_eq!(got, want, "members are sorted across shards and complete");
        assert!(snap.generation >= last_read);
        assert_eq!(
            *r.subscribe().borrow(),
            r.next_generation.load(Ordering::Acquire)
        );
    }

    #[test]
    fn a_pool_back_in_the_policy_does_not_go_back_in_generation() {
        let r = Registry::new(5);
        r.set_pools(&["p".into()], 0);
        enrol(&r, "a");
        r.record_verdicts(vec![verdict("a", "p", true, 0, 1000)], 0);
        r.record_verdicts(vec![verdict("a", "p", false, 1, 0)], 1);
        // The pool is empty again: re-adding it flips nobody in, so only
        // its starting generation can keep it from going back.
        let seen = r.pool_generation("p").expect("pool");
        assert!(seen > 5);
        r.set_pools(&[], 1);
        assert_eq!(r.pool_generation("p"), None);
        r.set_pools(&["p".into()], 2);
        let back = r.pool_generation("p").expect("pool");
        assert!(back >= seen, "generation went back from {seen} to {back}");
        assert!(r.pool("p", 2).expect("pool").members.is_empty());
    }
}
