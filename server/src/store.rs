//! Durable state in SQLite (WAL, synchronous=FULL): enrolments (the binding
//! host ↔ certificate ↔ EK ↔ AK), the latest verdict of each host in each pool,
//! and the last TPM clock seen per host.
//!
//! An enrolment is committed before the agent is told it is enrolled; a trusted
//! verdict is committed before the host is published as trusted. Every error
//! carries the operation that failed.

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
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

/// The last TPM clock information accepted for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredClock {
    /// TPM resetCount.
    pub reset_count: u32,
    /// TPM restartCount.
    pub restart_count: u32,
    /// TPM clock (ms).
    pub clock: u64,
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

/// Handle on the database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS enrolments (
        hostname TEXT PRIMARY KEY,
        ek_public BLOB NOT NULL,
        ek_certificate BLOB,
        ak_public BLOB NOT NULL,
        ak_name BLOB NOT NULL,
        cert_fingerprint TEXT NOT NULL,
        cert_subject TEXT NOT NULL,
        enrolled_at_ms INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS verdicts (
        hostname TEXT NOT NULL,
        pool TEXT NOT NULL,
        trusted INTEGER NOT NULL,
        attested_at_ms INTEGER NOT NULL,
        valid_until_ms INTEGER NOT NULL,
        reasons TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        PRIMARY KEY (hostname, pool)
    )",
    "CREATE TABLE IF NOT EXISTS pending_enrolments (
        hostname TEXT PRIMARY KEY,
        ek_public BLOB NOT NULL,
        ek_certificate BLOB,
        ak_public BLOB NOT NULL,
        ak_name BLOB NOT NULL,
        cert_fingerprint TEXT NOT NULL,
        cert_subject TEXT NOT NULL,
        enrolled_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS revocations (
        hostname TEXT PRIMARY KEY,
        revoked_by TEXT NOT NULL,
        revoked_at_ms INTEGER NOT NULL,
        comment TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS facts (
        hostname TEXT PRIMARY KEY,
        body TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        hostname TEXT NOT NULL,
        pool TEXT NOT NULL,
        event TEXT NOT NULL,
        trusted INTEGER NOT NULL,
        policy_digest TEXT NOT NULL,
        reasons TEXT NOT NULL,
        actor TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS history_by_host ON history (hostname, at_ms)",
    "CREATE TABLE IF NOT EXISTS tpm_clocks (
        hostname TEXT PRIMARY KEY,
        reset_count INTEGER NOT NULL,
        restart_count INTEGER NOT NULL,
        clock INTEGER NOT NULL
    )",
];

impl Store {
    /// Opens (creating if needed) the SQLite file and its schema.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .with_context(|| format!("bad database path {}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open database {}", path.display()))?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .with_context(|| format!("cannot create schema in {}", path.display()))?;
        }
        Ok(Store { pool })
    }

    /// Reads every enrolment.
    pub async fn enrolments(&self) -> anyhow::Result<Vec<Enrolment>> {
        let rows = sqlx::query(
            "SELECT hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms FROM enrolments",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading enrolments")?;
        rows.into_iter()
            .map(|r| enrolment_row(&r))
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding enrolments")
    }

    /// Stores a new enrolment; fails if the host is already enrolled
    /// (a conflicting binding is never overwritten silently).
    pub async fn insert_enrolment(&self, e: &Enrolment) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting an enrolment")?;
        sqlx::query(
            "INSERT INTO enrolments (hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.hostname)
        .bind(&e.ek_public)
        .bind(&e.ek_certificate)
        .bind(&e.ak_public)
        .bind(&e.ak_name)
        .bind(&e.cert_fingerprint)
        .bind(&e.cert_subject)
        .bind(e.enrolled_at_ms)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("storing the enrolment of {}", e.hostname))?;
        let event = HistoryEvent {
            at_ms: e.enrolled_at_ms,
            hostname: e.hostname.clone(),
            pool: String::new(),
            event: "enrolled".into(),
            trusted: false,
            policy_digest: String::new(),
            reasons: vec![],
            actor: e.cert_subject.clone(),
        };
        insert_history(&mut tx, &event).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing the enrolment of {}", e.hostname))?;
        Ok(())
    }

    /// Replaces the latest verdicts of a host (all pools at once, one transaction).
    pub async fn put_verdicts(&self, verdicts: &[StoredVerdict]) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a verdict transaction")?;
        for v in verdicts {
            upsert_verdict(&mut tx, v).await?;
        }
        tx.commit().await.context("committing verdicts")?;
        Ok(())
    }

    /// Commits what one piece of evidence changes, in one transaction: the
    /// host's verdicts, its facts (replaced, kept, or withdrawn when the
    /// evidence was not sound) and its TPM clock. Nothing of it is visible
    /// unless all of it is.
    pub async fn commit_evidence(&self, c: &EvidenceCommit<'_>) -> anyhow::Result<()> {
        let host = c.hostname;
        let mut tx = self
            .pool
            .begin()
            .await
            .with_context(|| format!("starting the evidence transaction of {host}"))?;
        for v in c.verdicts {
            upsert_verdict(&mut tx, v).await?;
        }
        match c.facts {
            FactsChange::Keep => {}
            FactsChange::Put(body) => {
                sqlx::query("INSERT INTO facts (hostname, body) VALUES (?, ?) ON CONFLICT (hostname) DO UPDATE SET body = excluded.body")
                    .bind(host)
                    .bind(body)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("storing the evidence facts of {host}"))?;
            }
            FactsChange::Withdraw => {
                sqlx::query("DELETE FROM facts WHERE hostname = ?")
                    .bind(host)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("withdrawing the evidence facts of {host}"))?;
            }
        }
        if let Some(clock) = c.clock {
            upsert_clock(&mut tx, host, clock).await?;
        }
        tx.commit()
            .await
            .with_context(|| format!("committing the evidence of {host}"))?;
        Ok(())
    }

    /// Reads every stored latest verdict.
    pub async fn verdicts(&self) -> anyhow::Result<Vec<StoredVerdict>> {
        let rows = sqlx::query(
            "SELECT hostname, pool, trusted, attested_at_ms, valid_until_ms, reasons, policy_digest FROM verdicts",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading verdicts")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let reasons: String = r.try_get("reasons").context("decoding a verdict")?;
            out.push(StoredVerdict {
                hostname: r.try_get("hostname").context("decoding a verdict")?,
                pool: r.try_get("pool").context("decoding a verdict")?,
                trusted: r.try_get("trusted").context("decoding a verdict")?,
                attested_at_ms: r.try_get("attested_at_ms").context("decoding a verdict")?,
                valid_until_ms: r.try_get("valid_until_ms").context("decoding a verdict")?,
                reasons: serde_json::from_str(&reasons).context("decoding verdict reasons")?,
                policy_digest: r.try_get("policy_digest").context("decoding a verdict")?,
            });
        }
        Ok(out)
    }

    /// Records the TPM clock of the latest accepted quote.
    pub async fn put_clock(&self, hostname: &str, c: StoredClock) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a TPM clock update")?;
        upsert_clock(&mut tx, hostname, c).await?;
        tx.commit().await.context("committing a TPM clock")?;
        Ok(())
    }

    /// Reads every stored TPM clock.
    pub async fn clocks(&self) -> anyhow::Result<Vec<(String, StoredClock)>> {
        let rows =
            sqlx::query("SELECT hostname, reset_count, restart_count, clock FROM tpm_clocks")
                .fetch_all(&self.pool)
                .await
                .context("reading TPM clocks")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let reset: i64 = r.try_get("reset_count").context("decoding a TPM clock")?;
            let restart: i64 = r.try_get("restart_count").context("decoding a TPM clock")?;
            let clock: i64 = r.try_get("clock").context("decoding a TPM clock")?;
            out.push((
                r.try_get("hostname").context("decoding a TPM clock")?,
                StoredClock {
                    reset_count: u32::try_from(reset).context("TPM resetCount out of range")?,
                    restart_count: u32::try_from(restart)
                        .context("TPM restartCount out of range")?,
                    clock: u64::try_from(clock).context("TPM clock out of range")?,
                },
            ));
        }
        Ok(out)
    }

    /// Stores (or replaces) a pending enrolment.
    pub async fn put_pending(&self, p: &PendingEnrolment) -> anyhow::Result<()> {
        let e = &p.enrolment;
        sqlx::query(
            "INSERT INTO pending_enrolments (hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (hostname) DO UPDATE SET ek_public = excluded.ek_public, ek_certificate = excluded.ek_certificate,
               ak_public = excluded.ak_public, ak_name = excluded.ak_name, cert_fingerprint = excluded.cert_fingerprint,
               cert_subject = excluded.cert_subject, enrolled_at_ms = excluded.enrolled_at_ms, reason = excluded.reason",
        )
        .bind(&e.hostname)
        .bind(&e.ek_public)
        .bind(&e.ek_certificate)
        .bind(&e.ak_public)
        .bind(&e.ak_name)
        .bind(&e.cert_fingerprint)
        .bind(&e.cert_subject)
        .bind(e.enrolled_at_ms)
        .bind(&p.reason)
        .execute(&self.pool)
        .await
        .with_context(|| format!("storing the pending enrolment of {}", e.hostname))?;
        Ok(())
    }

    /// Reads every pending enrolment.
    pub async fn pending(&self) -> anyhow::Result<Vec<PendingEnrolment>> {
        let rows = sqlx::query(
            "SELECT hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms, reason FROM pending_enrolments",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading pending enrolments")?;
        rows.into_iter()
            .map(|r| {
                Ok(PendingEnrolment {
                    enrolment: enrolment_row(&r)?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding pending enrolments")
    }

    /// Makes the pending enrolment of `hostname` the enrolment, in one
    /// transaction with its history event (an approval is never lost). A TPM
    /// (EK or AK) enrolled for other host names moves: their enrolments and
    /// everything proven with them are removed in the same transaction, and
    /// their names are returned.
    pub async fn approve(
        &self,
        hostname: &str,
        event: &HistoryEvent,
    ) -> anyhow::Result<(Enrolment, Vec<String>)> {
        let pending = self
            .pending()
            .await?
            .into_iter()
            .find(|p| p.enrolment.hostname == hostname)
            .with_context(|| format!("{hostname} has no pending enrolment"))?;
        let e = &pending.enrolment;
        let mut tx = self.pool.begin().await.context("starting an approval")?;
        let moved_from: Vec<String> = sqlx::query_scalar(
            "SELECT hostname FROM enrolments WHERE hostname <> ? AND (ek_public = ? OR ak_public = ?)
             UNION SELECT hostname FROM pending_enrolments WHERE hostname <> ? AND (ek_public = ? OR ak_public = ?)",
        )
        .bind(hostname)
        .bind(&e.ek_public)
        .bind(&e.ak_public)
        .bind(hostname)
        .bind(&e.ek_public)
        .bind(&e.ak_public)
        .fetch_all(&mut *tx)
        .await
        .with_context(|| format!("looking for other hosts holding the TPM of {hostname}"))?;
        for other in &moved_from {
            for table in [
                "enrolments",
                "pending_enrolments",
                "verdicts",
                "facts",
                "tpm_clocks",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE hostname = ?"))
                    .bind(other)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("moving the TPM of {other} to {hostname}"))?;
            }
        }
        sqlx::query(
            "INSERT INTO enrolments (hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (hostname) DO UPDATE SET ek_public = excluded.ek_public, ek_certificate = excluded.ek_certificate,
               ak_public = excluded.ak_public, ak_name = excluded.ak_name, cert_fingerprint = excluded.cert_fingerprint,
               cert_subject = excluded.cert_subject, enrolled_at_ms = excluded.enrolled_at_ms",
        )
        .bind(&e.hostname)
        .bind(&e.ek_public)
        .bind(&e.ek_certificate)
        .bind(&e.ak_public)
        .bind(&e.ak_name)
        .bind(&e.cert_fingerprint)
        .bind(&e.cert_subject)
        .bind(e.enrolled_at_ms)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("approving the enrolment of {hostname}"))?;
        sqlx::query("DELETE FROM pending_enrolments WHERE hostname = ?")
            .bind(hostname)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("approving the enrolment of {hostname}"))?;
        // A new TPM starts a new clock: forget the old one.
        sqlx::query("DELETE FROM tpm_clocks WHERE hostname = ?")
            .bind(hostname)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("approving the enrolment of {hostname}"))?;
        insert_history(&mut tx, event).await?;
        tx.commit().await.context("committing an approval")?;
        Ok((pending.enrolment, moved_from))
    }

    /// Records a revocation (or, with `None`, removes it), durably with its history event.
    pub async fn set_revocation(
        &self,
        hostname: &str,
        revocation: Option<&Revocation>,
        event: &HistoryEvent,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a revocation")?;
        match revocation {
            Some(r) => sqlx::query(
                "INSERT INTO revocations (hostname, revoked_by, revoked_at_ms, comment) VALUES (?, ?, ?, ?)
                 ON CONFLICT (hostname) DO UPDATE SET revoked_by = excluded.revoked_by,
                   revoked_at_ms = excluded.revoked_at_ms, comment = excluded.comment",
            )
            .bind(&r.hostname)
            .bind(&r.revoked_by)
            .bind(r.revoked_at_ms)
            .bind(&r.comment),
            None => sqlx::query("DELETE FROM revocations WHERE hostname = ?").bind(hostname),
        }
        .execute(&mut *tx)
        .await
        .with_context(|| format!("changing the revocation of {hostname}"))?;
        if revocation.is_none() {
            // Readmitted: what the host sent while revoked decides nothing;
            // its next report does.
            for table in ["verdicts", "facts"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE hostname = ?"))
                    .bind(hostname)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("readmitting {hostname}"))?;
            }
        }
        insert_history(&mut tx, event).await?;
        tx.commit().await.context("committing a revocation")?;
        Ok(())
    }

    /// Reads every revocation.
    pub async fn revocations(&self) -> anyhow::Result<Vec<Revocation>> {
        let rows =
            sqlx::query("SELECT hostname, revoked_by, revoked_at_ms, comment FROM revocations")
                .fetch_all(&self.pool)
                .await
                .context("reading revocations")?;
        rows.into_iter()
            .map(|r| {
                Ok(Revocation {
                    hostname: r.try_get("hostname")?,
                    revoked_by: r.try_get("revoked_by")?,
                    revoked_at_ms: r.try_get("revoked_at_ms")?,
                    comment: r.try_get("comment")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding revocations")
    }

    /// Stores the latest verified facts of a host (JSON).
    pub async fn put_facts(&self, hostname: &str, body: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO facts (hostname, body) VALUES (?, ?) ON CONFLICT (hostname) DO UPDATE SET body = excluded.body")
            .bind(hostname)
            .bind(body)
            .execute(&self.pool)
            .await
            .with_context(|| format!("storing the evidence facts of {hostname}"))?;
        Ok(())
    }

    /// Reads every host's latest facts (JSON).
    pub async fn facts(&self) -> anyhow::Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT hostname, body FROM facts")
            .fetch_all(&self.pool)
            .await
            .context("reading evidence facts")?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("hostname")?, r.try_get("body")?)))
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding evidence facts")
    }

    /// Appends history events in one transaction.
    pub async fn append_history(&self, events: &[HistoryEvent]) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a history batch")?;
        for e in events {
            insert_history(&mut tx, e).await?;
        }
        tx.commit().await.context("committing a history batch")?;
        Ok(())
    }

    /// History of a host (or server-wide events with `""`), oldest first:
    /// events at or after `since_ms`, at most the newest `limit`.
    pub async fn history(
        &self,
        hostname: &str,
        since_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<HistoryEvent>> {
        let rows = sqlx::query(
            "SELECT at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor FROM history
             WHERE (hostname = ? OR hostname = '') AND at_ms >= ? ORDER BY at_ms DESC, id DESC LIMIT ?",
        )
        .bind(hostname)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the history of {hostname}"))?;
        let mut out = rows
            .into_iter()
            .map(history_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The last events of a host at or before `at_ms`, newest first (for "trusted at T").
    pub async fn history_until(
        &self,
        hostname: &str,
        at_ms: i64,
    ) -> anyhow::Result<Vec<HistoryEvent>> {
        let rows = sqlx::query(
            "SELECT at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor FROM history
             WHERE hostname = ? AND at_ms <= ? ORDER BY at_ms DESC, id DESC LIMIT 1000",
        )
        .bind(hostname)
        .bind(at_ms)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the history of {hostname}"))?;
        rows.into_iter().map(history_row).collect()
    }

    /// Whether the newest recorded verdict event of `hostname` in `pool` says
    /// trusted (`None`: no verdict event recorded).
    pub async fn last_recorded_trust(
        &self,
        hostname: &str,
        pool: &str,
    ) -> anyhow::Result<Option<bool>> {
        sqlx::query_scalar(
            "SELECT trusted FROM history WHERE hostname = ? AND pool = ? AND event IN ('verdict', 'reasons')
             ORDER BY at_ms DESC, id DESC LIMIT 1",
        )
        .bind(hostname)
        .bind(pool)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the last verdict event of {hostname}"))
    }

    /// Closes every connection; later operations fail with an error.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// True when the database answers a trivial query.
    pub async fn healthy(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// The enrolment columns shared by `enrolments` and `pending_enrolments`.
fn enrolment_row(r: &sqlx::sqlite::SqliteRow) -> Result<Enrolment, sqlx::Error> {
    Ok(Enrolment {
        hostname: r.try_get("hostname")?,
        ek_public: r.try_get("ek_public")?,
        ek_certificate: r.try_get("ek_certificate")?,
        ak_public: r.try_get("ak_public")?,
        ak_name: r.try_get("ak_name")?,
        cert_fingerprint: r.try_get("cert_fingerprint")?,
        cert_subject: r.try_get("cert_subject")?,
        enrolled_at_ms: r.try_get("enrolled_at_ms")?,
    })
}

/// How one piece of evidence changes a host's stored facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsChange<'a> {
    /// Leave them as they are.
    Keep,
    /// Replace them (JSON).
    Put(&'a str),
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

async fn upsert_verdict(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    v: &StoredVerdict,
) -> anyhow::Result<()> {
    let reasons = serde_json::to_string(&v.reasons).context("encoding reasons")?;
    sqlx::query(
        "INSERT INTO verdicts (hostname, pool, trusted, attested_at_ms, valid_until_ms, reasons, policy_digest)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (hostname, pool) DO UPDATE SET trusted = excluded.trusted,
           attested_at_ms = excluded.attested_at_ms, valid_until_ms = excluded.valid_until_ms,
           reasons = excluded.reasons, policy_digest = excluded.policy_digest",
    )
    .bind(&v.hostname)
    .bind(&v.pool)
    .bind(v.trusted)
    .bind(v.attested_at_ms)
    .bind(v.valid_until_ms)
    .bind(reasons)
    .bind(&v.policy_digest)
    .execute(&mut **tx)
    .await
    .with_context(|| format!("storing the verdict of {} in pool {}", v.hostname, v.pool))?;
    Ok(())
}

async fn upsert_clock(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    hostname: &str,
    c: StoredClock,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO tpm_clocks (hostname, reset_count, restart_count, clock) VALUES (?, ?, ?, ?)
         ON CONFLICT (hostname) DO UPDATE SET reset_count = excluded.reset_count,
           restart_count = excluded.restart_count, clock = excluded.clock",
    )
    .bind(hostname)
    .bind(i64::from(c.reset_count))
    .bind(i64::from(c.restart_count))
    .bind(i64::try_from(c.clock).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await
    .with_context(|| format!("storing the TPM clock of {hostname}"))?;
    Ok(())
}

async fn insert_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    e: &HistoryEvent,
) -> anyhow::Result<()> {
    let reasons = serde_json::to_string(&e.reasons).context("encoding history reasons")?;
    sqlx::query(
        "INSERT INTO history (at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at_ms)
    .bind(&e.hostname)
    .bind(&e.pool)
    .bind(&e.event)
    .bind(e.trusted)
    .bind(&e.policy_digest)
    .bind(reasons)
    .bind(&e.actor)
    .execute(&mut **tx)
    .await
    .with_context(|| format!("appending a {} event of {}", e.event, e.hostname))?;
    Ok(())
}

fn history_row(r: sqlx::sqlite::SqliteRow) -> anyhow::Result<HistoryEvent> {
    let reasons: String = r.try_get("reasons").context("decoding a history event")?;
    Ok(HistoryEvent {
        at_ms: r.try_get("at_ms").context("decoding a history event")?,
        hostname: r.try_get("hostname").context("decoding a history event")?,
        pool: r.try_get("pool").context("decoding a history event")?,
        event: r.try_get("event").context("decoding a history event")?,
        trusted: r.try_get("trusted").context("decoding a history event")?,
        policy_digest: r
            .try_get("policy_digest")
            .context("decoding a history event")?,
        reasons: serde_json::from_str(&reasons).context("decoding history reasons")?,
        actor: r.try_get("actor").context("decoding a history event")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolment(host: &str) -> Enrolment {
        Enrolment {
            hostname: host.into(),
            ek_public: vec![1, 2, 3],
            ek_certificate: Some(vec![4]),
            ak_public: vec![5, 6],
            ak_name: vec![0, 11, 7],
            cert_fingerprint: "ab".into(),
            cert_subject: "CN=host-a".into(),
            enrolled_at_ms: 42,
        }
    }

    #[tokio::test]
    async fn state_survives_reopening_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.expect("open");
        store
            .insert_enrolment(&enrolment("host-a"))
            .await
            .expect("insert");
        let verdict = StoredVerdict {
            hostname: "host-a".into(),
            pool: "default".into(),
            trusted: true,
            attested_at_ms: 1,
            valid_until_ms: 2,
            reasons: vec![Reason::new("x.y", "why")],
            policy_digest: "d".into(),
        };
        store
            .put_verdicts(std::slice::from_ref(&verdict))
            .await
            .expect("verdicts");
        store
            .put_clock(
                "host-a",
                StoredClock {
                    reset_count: 3,
                    restart_count: 4,
                    clock: 5,
                },
            )
            .await
            .expect("clock");
        store.close().await;
        let store = Store::open(&path).await.expect("reopen");
        assert_eq!(
            store.enrolments().await.expect("read"),
            vec![enrolment("host-a")]
        );
        assert_eq!(store.verdicts().await.expect("read"), vec![verdict]);
        assert_eq!(store.clocks().await.expect("read")[0].1.reset_count, 3);
    }

    #[tokio::test]
    async fn a_second_enrolment_never_overwrites_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).await.expect("open");
        store
            .insert_enrolment(&enrolment("host-a"))
            .await
            .expect("insert");
        let mut other = enrolment("host-a");
        other.ek_public = vec![9];
        let err = store.insert_enrolment(&other).await.expect_err("conflict");
        assert!(
            format!("{err:#}").contains("storing the enrolment of host-a"),
            "{err:#}"
        );
        assert_eq!(
            store.enrolments().await.expect("read")[0].ek_public,
            vec![1, 2, 3]
        );
    }

    #[tokio::test]
    async fn a_dead_database_gives_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Store::open(&dir.path().join("missing-dir/t.db"))
            .await
            .err()
            .expect("cannot open");
        assert!(
            format!("{err:#}").contains("cannot open database"),
            "{err:#}"
        );
        let store = Store::open(&dir.path().join("t.db")).await.expect("open");
        store.close().await;
        assert!(!store.healthy().await);
        assert!(store.put_verdicts(&[]).await.is_err());
        assert!(store.enrolments().await.is_err());
        assert!(store.insert_enrolment(&enrolment("h")).await.is_err());
    }
}
