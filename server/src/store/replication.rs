//! What the replicas of one database share besides the fleet's state: the
//! change table, the leases and the replicas' presence.
//!
//! * **Changes.** Every write that changes a host (enrolment, approval,
//!   revocation, evidence, clock) adds one row to `changes` in its own
//!   transaction: the hosts it touched, the replica that wrote it and a
//!   microsecond stamp. The other replicas read the rows after the last one
//!   they saw ([`Store::changes_after`]) and re-read those hosts
//!   ([`Store::stored_hosts`]); the row commits with the change, so a
//!   replica never learns of a change it cannot read.
//! * **Leases.** A row per lease with a holder and an expiry on the
//!   database's clock, taken or renewed by one conditional `UPDATE`
//!   ([`Store::take_lease`]): it works on every engine and on Galera, where
//!   `GET_LOCK` is local to a node.
//! * **Presence.** Each replica keeps a row with its policy digest fresh
//!   ([`Store::announce`]); [`Store::replicas`] reads them with their age on
//!   the database's clock.

use anyhow::Context;
use sqlx::Row;

use super::db::text;
use super::*;

/// One row of the change table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the table (grows, with gaps: see [`crate::replica::changes`]).
    pub seq: i64,
    /// The replica instance that wrote it.
    pub replica: String,
    /// Wall-clock microseconds of the writer when it wrote it.
    pub stamp: i64,
    /// The hosts it touched.
    pub hosts: Vec<String>,
}

/// Everything the store holds about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredHost {
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
    pub facts: Option<StoredFacts>,
    /// Its latest verdict per pool.
    pub verdicts: Vec<StoredVerdict>,
}

/// A replica's row in `replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// Its configured name (`--replica-name`).
    pub name: String,
    /// The process (name plus a random suffix: a restart is a new instance).
    pub instance: String,
    /// The digest of the policy it enforces.
    pub policy_digest: String,
    /// When it started (Unix ms, its clock).
    pub started_ms: i64,
    /// How long ago it last announced itself, on the database's clock.
    pub age_ms: i64,
}

impl Store {
    /// The newest change's place (0 when there is none): where a replica
    /// that just restored the whole state starts reading.
    pub async fn last_change(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM changes")
            .fetch_one(&self.pool)
            .await
            .context("reading the newest change")?;
        Ok(row
            .try_get::<Option<i64>, _>("seq")
            .context("decoding the newest change")?
            .unwrap_or(0))
    }

    /// The places and writers of at most `limit` changes after `after`, in
    /// order (a cheap read: the follower fetches only the rows of others it
    /// has not seen, see [`Store::changes_at`]).
    pub async fn change_seqs_after(
        &self,
        after: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            &self.sql("SELECT seq, replica FROM changes WHERE seq > ? ORDER BY seq LIMIT ?"),
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading the change table")?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, text(r, "replica")?)))
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding the change table")
    }

    /// The changes at `seqs`, in order.
    pub async fn changes_at(&self, seqs: &[i64]) -> anyhow::Result<Vec<Change>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(512) {
            let sql = self
                .sql(&format!(
                    "SELECT seq, replica, stamp, hosts FROM changes WHERE seq IN ({}) ORDER BY seq",
                    vec!["?"; chunk.len()].join(", ")
                ))
                .into_owned();
            let rows = chunk
                .iter()
                .fold(sqlx::query(&sql).persistent(false), |q, seq| q.bind(*seq))
                .fetch_all(&self.pool)
                .await
                .context("reading changes")?;
            for r in &rows {
                let hosts = text(r, "hosts").context("decoding a change")?;
                out.push(Change {
                    seq: r.try_get("seq").context("decoding a change")?,
                    replica: text(r, "replica").context("decoding a change")?,
                    stamp: r.try_get("stamp").context("decoding a change")?,
                    hosts: serde_json::from_str(&hosts)
                        .with_context(|| format!("a change lists its hosts badly: {hosts:.80}"))?,
                });
            }
        }
        Ok(out)
    }

    /// Everything stored about `hosts`, one entry per host asked for (a
    /// host the store no longer knows comes back empty).
    pub async fn stored_hosts(&self, hosts: &[String]) -> anyhow::Result<Vec<StoredHost>> {
        use std::collections::BTreeMap;
        let mut out: BTreeMap<String, StoredHost> = hosts
            .iter()
            .map(|h| {
                let host = StoredHost {
                    hostname: h.clone(),
                    ..StoredHost::default()
                };
                (h.clone(), host)
            })
            .collect();
        let wanted = Some(hosts);
        for e in self.enrolments_of(wanted).await? {
            if let Some(h) = out.get_mut(&e.hostname) {
                h.enrolment = Some(e);
            }
        }
        for p in self.pending_of(wanted).await? {
            if let Some(h) = out.get_mut(&p.enrolment.hostname) {
                h.pending = Some(p);
            }
        }
        for r in self.revocations_of(wanted).await? {
            if let Some(h) = out.get_mut(&r.hostname) {
                h.revocation = Some(r);
            }
        }
        for (host, clock) in self.clocks_of(wanted).await? {
            if let Some(h) = out.get_mut(&host) {
                h.clock = Some(clock);
            }
        }
        for (host, body) in self.facts_of(wanted).await? {
            if let Some(h) = out.get_mut(&host) {
                h.facts = Some(body);
            }
        }
        for v in self.verdicts_of(wanted).await? {
            if let Some(h) = out.get_mut(&v.hostname) {
                h.verdicts.push(v);
            }
        }
        Ok(out.into_values().collect())
    }

    /// Deletes the changes written before `before_ms` (every replica has
    /// read them long since); returns how many.
    pub async fn prune_changes(&self, before_ms: i64) -> anyhow::Result<u64> {
        self.writable()?;
        let r = sqlx::query(&self.sql("DELETE FROM changes WHERE at_ms < ?"))
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .context("pruning the change table");
        self.outcome(r)
    }

    /// Takes or renews the lease `name` for `holder` for `period_ms` on
    /// the database's clock: only when it is free, expired or already
    /// `holder`'s. Returns whether `holder` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        period_ms: i64,
    ) -> anyhow::Result<bool> {
        self.writable()?;
        let now = self.engine.now_ms_sql();
        let r = async {
            let seed = format!(
                "INSERT INTO leases (name, holder, expires_ms) VALUES (?, '', 0){}",
                self.engine.upsert_tail(&["name"], &[])
            );
            sqlx::query(&self.sql(&seed))
                .bind(name)
                .execute(&self.pool)
                .await
                .with_context(|| format!("creating the lease {name}"))?;
            sqlx::query(&self.sql(&format!(
                "UPDATE leases SET holder = ?, expires_ms = {now} + ? WHERE name = ? AND (holder = ? OR expires_ms < {now})"
            )))
            .bind(holder)
            .bind(period_ms)
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .with_context(|| format!("taking the lease {name}"))?;
            // MariaDB counts rows changed, not matched: read the outcome back.
            anyhow::Ok(self.lease_holder(name).await?.is_some_and(|(h, _)| h == holder))
        }
        .await;
        self.outcome(r)
    }

    /// Gives the lease `name` up if `holder` holds it (a clean stop: another
    /// replica takes it at once rather than after its expiry).
    pub async fn release_lease(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        sqlx::query(
            &self
                .sql("UPDATE leases SET holder = '', expires_ms = 0 WHERE name = ? AND holder = ?"),
        )
        .bind(name)
        .bind(holder)
        .execute(&self.pool)
        .await
        .with_context(|| format!("releasing the lease {name}"))?;
        Ok(())
    }

    /// The holder of the lease `name` and the milliseconds its lease has
    /// left (negative once expired), if it was ever taken.
    pub async fn lease_holder(&self, name: &str) -> anyhow::Result<Option<(String, i64)>> {
        let now = self.engine.now_ms_sql();
        let row = sqlx::query(&self.sql(&format!(
            "SELECT holder, expires_ms - {now} AS left_ms FROM leases WHERE name = ?"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the lease {name}"))?;
        row.map(|r| {
            let holder = text(&r, "holder")?;
            let left: i64 = r.try_get("left_ms")?;
            Ok::<_, sqlx::Error>((holder, left))
        })
        .transpose()
        .with_context(|| format!("decoding the lease {name}"))
        .map(|o| o.filter(|(h, _)| !h.is_empty()))
    }

    /// Writes this replica's presence row, seen now on the database's clock.
    pub async fn announce(
        &self,
        name: &str,
        instance: &str,
        policy_digest: &str,
        started_ms: i64,
    ) -> anyhow::Result<()> {
        self.writable()?;
        let now = self.engine.now_ms_sql();
        let sql = format!(
            "INSERT INTO replicas (name, instance, policy_digest, started_ms, seen_ms) VALUES (?, ?, ?, ?, {now}){}",
            self.engine.upsert_tail(
                &["name"],
                &["instance", "policy_digest", "started_ms", "seen_ms"]
            )
        );
        let r = sqlx::query(&self.sql(&sql))
            .bind(name)
            .bind(instance)
            .bind(policy_digest)
            .bind(started_ms)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .with_context(|| format!("announcing replica {name}"));
        self.outcome(r)
    }

    /// Removes this replica's presence row (a clean stop).
    pub async fn withdraw(&self, instance: &str) -> anyhow::Result<()> {
        sqlx::query(&self.sql("DELETE FROM replicas WHERE instance = ?"))
            .bind(instance)
            .execute(&self.pool)
            .await
            .context("withdrawing this replica's presence")?;
        Ok(())
    }

    /// Every replica row, with its age on the database's clock.
    pub async fn replicas(&self) -> anyhow::Result<Vec<ReplicaRow>> {
        let now = self.engine.now_ms_sql();
        let rows = sqlx::query(&format!(
            "SELECT name, instance, policy_digest, started_ms, {now} - seen_ms AS age_ms FROM replicas"
        ))
        .fetch_all(&self.pool)
        .await
        .context("reading the replicas")?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRow {
                    name: text(r, "name")?,
                    instance: text(r, "instance")?,
                    policy_digest: text(r, "policy_digest")?,
                    started_ms: r.try_get("started_ms")?,
                    age_ms: r.try_get("age_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding the replicas")
    }
}
