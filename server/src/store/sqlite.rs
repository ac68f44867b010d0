//! The SQLite engine of the store (WAL, synchronous=FULL).

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqlitePool};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use tracing::{info, warn};

use super::health::*;
use super::identity::*;
use super::*;

/// Handle on the database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    health: Arc<StoreHealth>,
    identity: Arc<OpenedFile>,
}

/// The database file as it was opened, to notice that it was removed or
/// replaced under the running server.
#[derive(Debug)]
struct OpenedFile {
    path: PathBuf,
    id_file: PathBuf,
    store_id: String,
    dev: u64,
    ino: u64,
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
    "CREATE TABLE IF NOT EXISTS store_identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        store_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS tpm_clocks (
        hostname TEXT PRIMARY KEY,
        reset_count INTEGER NOT NULL,
        restart_count INTEGER NOT NULL,
        clock INTEGER NOT NULL
    )",
];

impl Store {
    /// Opens the store at `path`; a first-ever start creates it. See
    /// [`Store::open_checked`].
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        Store::open_checked(path, false).await
    }

    /// Opens the store at `path` and checks its identity against the
    /// store-id file beside it ([`reconcile_identity`]): a missing database
    /// is created only on a first-ever start or with `init_db`.
    pub async fn open_checked(path: &Path, init_db: bool) -> anyhow::Result<Store> {
        Store::open_with(path, init_db, 4).await
    }

    async fn open_with(path: &Path, init_db: bool, connections: u32) -> anyhow::Result<Store> {
        let id_file = id_file_path(path);
        let in_file = read_id_file(&id_file)?;
        let db_exists = path.exists();
        if !db_exists {
            if let (Some(expected), false) = (&in_file, init_db) {
                let problem = IdentityProblem::Missing {
                    expected: expected.clone(),
                };
                anyhow::bail!("refusing to create {}: {problem}", path.display());
            }
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .with_context(|| format!("bad database path {}", path.display()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        if !db_exists {
            // Created here, once; the pool never creates a file (a database
            // removed under the server must not come back empty).
            let conn =
                sqlx::SqliteConnection::connect_with(&options.clone().create_if_missing(true))
                    .await
                    .with_context(|| format!("cannot open database {}", path.display()))?;
            if in_file.is_some() {
                warn!(db = %path.display(), "--init-db: creating a new, empty store in place of the one that existed");
            } else {
                info!(db = %path.display(), "first start: creating the database");
            }
            let _ = conn.close().await;
        }
        let health = Arc::new(StoreHealth::default());
        let released = health.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            // A connection is closed on release, never reused, when:
            // - its transaction did not end cleanly: SQLite rolls a
            //   transaction back by itself on a full disk or an I/O error, the
            //   driver's own ROLLBACK then fails and it would wrap every later
            //   transaction of that connection in a savepoint that never
            //   commits (and holds the write lock);
            // - writes are failing: a connection opened while the file could
            //   not be opened for writing is read-only for good (SQLite falls
            //   back silently), and must not outlive the fault.
            .after_release(move |conn, _meta| {
                let health = released.clone();
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction() && !health.write_failed())
                })
            })
            .connect_with(options.create_if_missing(false))
            .await
            .with_context(|| format!("cannot open database {}", path.display()))?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .with_context(|| format!("cannot create schema in {}", path.display()))?;
        }
        let in_db: Option<String> =
            sqlx::query_scalar("SELECT store_id FROM store_identity WHERE id = 1")
                .fetch_optional(&pool)
                .await
                .with_context(|| format!("reading the store id of {}", path.display()))?;
        let action = reconcile_identity(db_exists, in_db.as_deref(), in_file.as_deref(), init_db)
            .map_err(|problem| {
            anyhow::anyhow!("refusing to open {}: {problem}", path.display())
        })?;
        let store_id = match action {
            IdentityAction::Keep => in_db.unwrap_or_default(),
            IdentityAction::Remember(id) => {
                warn!(db = %path.display(), store_id = %id, id_file = %id_file.display(), "remembering the store id of this database");
                write_id_file(&id_file, &id)?;
                id
            }
            IdentityAction::Create => {
                let id = new_store_id();
                let now = crate::clock::now_ms();
                sqlx::query("INSERT OR REPLACE INTO store_identity (id, store_id, created_at_ms, heartbeat_ms) VALUES (1, ?, ?, ?)")
                    .bind(&id)
                    .bind(now)
                    .bind(now)
                    .execute(&pool)
                    .await
                    .with_context(|| format!("storing the store id in {}", path.display()))?;
                write_id_file(&id_file, &id)?;
                info!(db = %path.display(), store_id = %id, id_file = %id_file.display(), "new store id");
                id
            }
        };
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot stat the database {}", path.display()))?;
        Ok(Store {
            pool,
            health,
            identity: Arc::new(OpenedFile {
                path: path.to_path_buf(),
                id_file,
                store_id,
                dev: meta.dev(),
                ino: meta.ino(),
            }),
        })
    }

    /// The store's health, shared by every clone of this handle.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// The random id of this store.
    pub fn store_id(&self) -> &str {
        &self.identity.store_id
    }

    /// Records the outcome of a write in the store health.
    /// (A refused write that says nothing about the database, such as a
    /// conflicting enrolment, does not count.)
    fn outcome<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        match &r {
            Ok(_) => self.health.write_done(),
            Err(e) if is_store_fault(e) => self.health.write_error(e),
            Err(_) => {}
        }
        r
    }

    /// Refuses writes once the database file was removed or replaced (they
    /// would land in a deleted file, or in whatever was put in its place).
    fn writable(&self) -> anyhow::Result<()> {
        if self.health.identity_lost() {
            anyhow::bail!("{STORE_IDENTITY_LOST}: writes refused");
        }
        Ok(())
    }

    /// Checks that the database file is still the one opened (same device
    /// and inode at the path, store-id file unchanged); the first mismatch
    /// fails the store closed for good.
    pub fn check_identity(&self) -> Result<(), String> {
        let f = &self.identity;
        let problem = match std::fs::metadata(&f.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the database file {} was removed",
                f.path.display()
            )),
            Err(e) => Some(format!(
                "cannot stat the database file {}: {e}",
                f.path.display()
            )),
            Ok(m) if (m.dev(), m.ino()) != (f.dev, f.ino) => Some(format!(
                "the database file {} was replaced by another file",
                f.path.display()
            )),
            Ok(_) => match read_id_file(&f.id_file) {
                Ok(Some(id)) if id == f.store_id => None,
                Ok(Some(id)) => Some(format!(
                    "the store-id file {} now names store {id}, not {}",
                    f.id_file.display(),
                    f.store_id
                )),
                Ok(None) => Some(format!(
                    "the store-id file {} was removed",
                    f.id_file.display()
                )),
                Err(e) => Some(format!("{e:#}")),
            },
        };
        match problem {
            Some(why) => {
                self.health.lose_identity(&why);
                Err(why)
            }
            None if self.health.identity_lost() => Err(self.health.last_error()),
            None => Ok(()),
        }
    }

    /// The periodic probe behind readiness: the identity check, then a write
    /// (the heartbeat of the identity row, in a transaction). Success clears
    /// a write failure and tells the sessions; failure sets it.
    pub async fn probe(&self) -> Result<(), String> {
        self.check_identity()?;
        let outcome = async {
            let mut tx = self
                .pool
                .begin()
                .await
                .context("starting the write probe")?;
            let updated = sqlx::query("UPDATE store_identity SET heartbeat_ms = ? WHERE id = 1")
                .bind(crate::clock::now_ms())
                .execute(&mut *tx)
                .await
                .context("writing the store heartbeat")?
                .rows_affected();
            if updated != 1 {
                anyhow::bail!("the store identity row is gone");
            }
            tx.commit()
                .await
                .context("committing the store heartbeat")?;
            anyhow::Ok(())
        }
        .await;
        match self.outcome(outcome) {
            Ok(()) => {
                self.health.probe_ok();
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Copies the whole database, consistently, into a new file `to`
    /// (SQLite `VACUUM INTO`; the server may keep running). The copy keeps
    /// the store id, so it can be restored in place of this database.
    pub async fn backup(&self, to: &Path) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await.context("starting a backup")?;
        vacuum_into(&mut conn, to).await
    }

    /// Stores a new enrolment; fails if the host is already enrolled
    /// (a conflicting binding is never overwritten silently).
    pub async fn insert_enrolment(&self, e: &Enrolment) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.insert_enrolment_unchecked(e).await;
        self.outcome(r)
    }

    /// Replaces the latest verdicts of a host (all pools at once, one transaction).
    pub async fn put_verdicts(&self, verdicts: &[StoredVerdict]) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.put_verdicts_unchecked(verdicts).await;
        self.outcome(r)
    }

    /// Commits what one piece of evidence changes, in one transaction: the
    /// host's verdicts, its facts (replaced, kept, or withdrawn when the
    /// evidence was not sound) and its TPM clock. Nothing of it is visible
    /// unless all of it is.
    pub async fn commit_evidence(&self, c: &EvidenceCommit<'_>) -> anyhow::Result<()> {
        self.commit_evidence_batch(std::slice::from_ref(c)).await
    }

    /// Commits the evidence of several hosts in one transaction (one
    /// fsync): all of it or, on error, none of it. The group-commit writer
    /// ([`super::group::GroupCommit`]) calls this with what the sessions
    /// queued while the previous batch was being written.
    pub async fn commit_evidence_batch(&self, batch: &[EvidenceCommit<'_>]) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.commit_evidence_unchecked(batch).await;
        self.outcome(r)
    }

    /// Records the TPM clock of the latest accepted quote.
    pub async fn put_clock(&self, hostname: &str, c: StoredClock) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.put_clock_unchecked(hostname, c).await;
        self.outcome(r)
    }

    /// Stores (or replaces) a pending enrolment.
    pub async fn put_pending(&self, p: &PendingEnrolment) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.put_pending_unchecked(p).await;
        self.outcome(r)
    }

    /// Stores the latest verified facts of a host (JSON).
    pub async fn put_facts(&self, hostname: &str, body: &str) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.put_facts_unchecked(hostname, body).await;
        self.outcome(r)
    }

    /// Appends history events in one transaction.
    pub async fn append_history(&self, events: &[HistoryEvent]) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.append_history_unchecked(events).await;
        self.outcome(r)
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
        self.writable()?;
        let r = self.approve_unchecked(hostname, event).await;
        self.outcome(r)
    }

    /// Records a revocation (or, with `None`, removes it), durably with its history event.
    pub async fn set_revocation(
        &self,
        hostname: &str,
        revocation: Option<&Revocation>,
        event: &HistoryEvent,
    ) -> anyhow::Result<()> {
        self.writable()?;
        let r = self
            .set_revocation_unchecked(hostname, revocation, event)
            .await;
        self.outcome(r)
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
    async fn insert_enrolment_unchecked(&self, e: &Enrolment) -> anyhow::Result<()> {
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
    async fn put_verdicts_unchecked(&self, verdicts: &[StoredVerdict]) -> anyhow::Result<()> {
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
    async fn commit_evidence_unchecked(&self, batch: &[EvidenceCommit<'_>]) -> anyhow::Result<()> {
        let what = match batch {
            [one] => one.hostname.to_string(),
            many => format!("{} hosts", many.len()),
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .with_context(|| format!("starting the evidence transaction of {what}"))?;
        write_evidence_rows(&mut tx, batch)
            .await
            .with_context(|| format!("writing the evidence of {what}"))?;
        tx.commit()
            .await
            .with_context(|| format!("committing the evidence of {what}"))?;
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
    async fn put_clock_unchecked(&self, hostname: &str, c: StoredClock) -> anyhow::Result<()> {
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
    async fn put_pending_unchecked(&self, p: &PendingEnrolment) -> anyhow::Result<()> {
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
    async fn approve_unchecked(
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
    async fn set_revocation_unchecked(
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
    async fn put_facts_unchecked(&self, hostname: &str, body: &str) -> anyhow::Result<()> {
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
    async fn append_history_unchecked(&self, events: &[HistoryEvent]) -> anyhow::Result<()> {
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

    /// Runs one statement (tests that shape the database).
    #[cfg(test)]
    pub async fn execute_for_tests(&self, sql: &str) {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .expect("statement");
    }

    /// Closes every connection; later operations fail with an error.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `trustpool-server backup`: copies the database `db` (possibly in use by
/// a running server) into the new file `to`, and returns the store id of
/// the copy.
pub async fn backup_file(db: &Path, to: &Path) -> anyhow::Result<String> {
    if !db.exists() {
        anyhow::bail!("the database {} does not exist", db.display());
    }
    let url = format!("sqlite://{}", db.display());
    let options = SqliteConnectOptions::from_str(&url)
        .with_context(|| format!("bad database path {}", db.display()))?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot open database {}", db.display()))?;
    vacuum_into(&mut conn, to).await?;
    let _ = conn.close().await;
    let copy = SqliteConnectOptions::from_str(&format!("sqlite://{}", to.display()))
        .with_context(|| format!("bad backup path {}", to.display()))?
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&copy)
        .await
        .with_context(|| format!("cannot read the backup {}", to.display()))?;
    let id: Option<String> = sqlx::query_scalar("SELECT store_id FROM store_identity WHERE id = 1")
        .fetch_optional(&mut conn)
        .await
        .with_context(|| format!("reading the store id of the backup {}", to.display()))?;
    let _ = conn.close().await;
    id.with_context(|| {
        format!(
            "the backup {} holds no store id: {} is not a trustpool store opened by this version",
            to.display(),
            db.display()
        )
    })
}

async fn vacuum_into(conn: &mut sqlx::SqliteConnection, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        anyhow::bail!("{} exists: a backup never overwrites a file", to.display());
    }
    let target = to
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", to.display()))?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("backing up into {}", to.display()))?;
    Ok(())
}

/// True when `e` waited for a pooled connection longer than the acquire
/// timeout (the server's own slowness, not a database fault).
pub fn is_pool_timeout(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<sqlx::Error>())
        .any(|e| matches!(e, sqlx::Error::PoolTimedOut))
}

/// True when `e` says the database cannot take writes (full disk, I/O
/// error, read-only or locked file, closed pool…), false for refusals of one
/// write (a constraint, a value out of range) and errors of our own.
pub fn is_store_fault(e: &anyhow::Error) -> bool {
    let Some(sql) = e.chain().find_map(|c| c.downcast_ref::<sqlx::Error>()) else {
        return false;
    };
    match sql {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(1);
            // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE.
            !matches!(code & 0xff, 18 | 19 | 20 | 25)
        }
        // Every pooled connection was busy for the acquire timeout: the
        // server is slow, the database has not failed.
        sqlx::Error::PoolTimedOut => false,
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_) => false,
        _ => true,
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

/// Rows per multi-row statement of [`write_evidence_rows`]: 7 parameters a
/// verdict row, well below SQLite's 32,766 parameters per statement.
const ROWS_PER_STATEMENT: usize = 512;

/// Writes a batch of evidence as a few multi-row statements (verdicts,
/// facts put, facts withdrawn, clocks), whatever the batch's size: with
/// sqlx's SQLite driver every statement is a hand-off to its worker thread
/// and back, so one statement per row made the hand-offs, not SQLite, the
/// cost of a batch. A host that appears several times in a batch counts
/// with its last record, as if the records were written in order.
async fn write_evidence_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    batch: &[EvidenceCommit<'_>],
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    // The last word of the batch per (host, pool), per host's facts, per host's clock.
    let mut verdicts: HashMap<(&str, &str), &StoredVerdict> = HashMap::new();
    let mut facts: HashMap<&str, FactsChange<'_>> = HashMap::new();
    let mut clocks: HashMap<&str, StoredClock> = HashMap::new();
    for c in batch {
        for v in c.verdicts {
            verdicts.insert((v.hostname.as_str(), v.pool.as_str()), v);
        }
        if !matches!(c.facts, FactsChange::Keep) {
            facts.insert(c.hostname, c.facts);
        }
        if let Some(clock) = c.clock {
            clocks.insert(c.hostname, clock);
        }
    }
    let verdicts: Vec<(&StoredVerdict, String)> = verdicts
        .into_values()
        .map(|v| {
            Ok((
                v,
                serde_json::to_string(&v.reasons).context("encoding reasons")?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    for rows in verdicts.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO verdicts (hostname, pool, trusted, attested_at_ms, valid_until_ms, reasons, policy_digest) ",
        );
        q.push_values(rows, |mut b, (v, reasons)| {
            b.push_bind(v.hostname.as_str())
                .push_bind(v.pool.as_str())
                .push_bind(v.trusted)
                .push_bind(v.attested_at_ms)
                .push_bind(v.valid_until_ms)
                .push_bind(reasons.as_str())
                .push_bind(v.policy_digest.as_str());
        });
        q.push(
            " ON CONFLICT (hostname, pool) DO UPDATE SET trusted = excluded.trusted,
               attested_at_ms = excluded.attested_at_ms, valid_until_ms = excluded.valid_until_ms,
               reasons = excluded.reasons, policy_digest = excluded.policy_digest",
        );
        q.build()
            .persistent(false)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("storing {} verdicts", rows.len()))?;
    }
    let puts: Vec<(&str, &str)> = facts
        .iter()
        .filter_map(|(host, f)| match f {
            FactsChange::Put(body) => Some((*host, *body)),
            _ => None,
        })
        .collect();
    for rows in puts.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO facts (hostname, body) ");
        q.push_values(rows, |mut b, (host, body)| {
            b.push_bind(*host).push_bind(*body);
        });
        q.push(" ON CONFLICT (hostname) DO UPDATE SET body = excluded.body");
        q.build()
            .persistent(false)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("storing the evidence facts of {} hosts", rows.len()))?;
    }
    let withdrawn: Vec<&str> = facts
        .iter()
        .filter(|(_, f)| matches!(f, FactsChange::Withdraw))
        .map(|(host, _)| *host)
        .collect();
    for rows in withdrawn.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM facts WHERE hostname IN (");
        let mut list = q.separated(", ");
        for host in rows {
            list.push_bind(*host);
        }
        q.push(")");
        q.build()
            .persistent(false)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("withdrawing the evidence facts of {} hosts", rows.len()))?;
    }
    let clocks: Vec<(&str, StoredClock)> = clocks.into_iter().collect();
    for rows in clocks.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO tpm_clocks (hostname, reset_count, restart_count, clock) ",
        );
        q.push_values(rows, |mut b, (host, c)| {
            b.push_bind(*host)
                .push_bind(i64::from(c.reset_count))
                .push_bind(i64::from(c.restart_count))
                .push_bind(i64::try_from(c.clock).unwrap_or(i64::MAX));
        });
        q.push(
            " ON CONFLICT (hostname) DO UPDATE SET reset_count = excluded.reset_count,
               restart_count = excluded.restart_count, clock = excluded.clock",
        );
        q.build()
            .persistent(false)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("storing the TPM clocks of {} hosts", rows.len()))?;
    }
    Ok(())
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

    /// A batch larger than one multi-row statement, with hosts that appear
    /// twice: the store holds what writing the records in order would
    /// leave, every chunk of every table included.
    #[tokio::test]
    async fn a_large_batch_is_stored_as_if_written_record_by_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).await.expect("open");
        let n = ROWS_PER_STATEMENT * 2 + 7;
        let names: Vec<String> = (0..n).map(|i| format!("h{i:05}")).collect();
        let verdict = |host: &str, pool: &str, trusted: bool, at: i64| StoredVerdict {
            hostname: host.into(),
            pool: pool.into(),
            trusted,
            attested_at_ms: at,
            valid_until_ms: at + 75_000,
            reasons: if trusted {
                vec![]
            } else {
                vec![Reason::new("pcr.not_allowed", "PCR 17")]
            },
            policy_digest: "d".into(),
        };
        let clock = |c: u64| StoredClock {
            reset_count: 1,
            restart_count: 2,
            clock: c,
        };
        let first: Vec<Vec<StoredVerdict>> = names
            .iter()
            .map(|h| vec![verdict(h, "default", true, 1), verdict(h, "gold", false, 1)])
            .collect();
        let bodies: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i}}}")).collect();
        let mut batch: Vec<EvidenceCommit<'_>> = names
            .iter()
            .zip(&first)
            .zip(&bodies)
            .map(|((h, v), body)| EvidenceCommit {
                hostname: h,
                verdicts: v,
                facts: FactsChange::Put(body),
                clock: Some(clock(10)),
            })
            .collect();
        // Later in the same batch: h00000 fails and its facts are withdrawn;
        // h00001 keeps its facts and gets a newer clock.
        let later = vec![verdict(&names[0], "default", false, 2)];
        batch.push(EvidenceCommit {
            hostname: &names[0],
            verdicts: &later,
            facts: FactsChange::Withdraw,
            clock: None,
        });
        batch.push(EvidenceCommit {
            hostname: &names[1],
            verdicts: &[],
            facts: FactsChange::Keep,
            clock: Some(clock(20)),
        });
        store
            .commit_evidence_batch(&batch)
            .await
            .expect("committed");

        let verdicts = store.verdicts().await.expect("verdicts");
        assert_eq!(verdicts.len(), 2 * n);
        let of = |h: &str, pool: &str| {
            verdicts
                .iter()
                .find(|v| v.hostname == h && v.pool == pool)
                .cloned()
                .expect("stored")
        };
        assert_eq!(of(&names[0], "default"), later[0]);
        assert_eq!(of(&names[0], "gold"), first[0][1]);
        assert_eq!(of(&names[n - 1], "default"), first[n - 1][0]);
        assert_eq!(of(&names[n - 1], "gold").reasons, first[n - 1][1].reasons);
        let facts: std::collections::HashMap<String, String> =
            store.facts().await.expect("facts").into_iter().collect();
        assert_eq!(facts.len(), n - 1, "h00000's facts are withdrawn");
        assert!(!facts.contains_key(&names[0]));
        assert_eq!(facts[&names[1]], bodies[1]);
        assert_eq!(facts[&names[n - 1]], bodies[n - 1]);
        let clocks: std::collections::HashMap<String, StoredClock> =
            store.clocks().await.expect("clocks").into_iter().collect();
        assert_eq!(clocks.len(), n);
        assert_eq!(clocks[&names[1]].clock, 20);
        assert_eq!(clocks[&names[0]].clock, 10);
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
        assert!(store.probe().await.is_err());
        assert!(!store.health().ok());
        assert!(store.put_verdicts(&[]).await.is_err());
        assert!(store.enrolments().await.is_err());
        assert!(store.insert_enrolment(&enrolment("h")).await.is_err());
    }

    fn verdict(host: &str) -> StoredVerdict {
        StoredVerdict {
            hostname: host.into(),
            pool: "default".into(),
            trusted: true,
            attested_at_ms: 1,
            valid_until_ms: 2,
            reasons: vec![],
            policy_digest: "d".into(),
        }
    }

    /// SQLite rolls a transaction back by itself when the database is full;
    /// the connection must not carry a phantom transaction into the next
    /// write (which would then "commit" into a savepoint that never commits
    /// and hold the write lock).
    #[tokio::test]
    async fn a_transaction_sqlite_rolled_back_by_itself_leaves_nothing_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        // One connection, so that every step below runs on the same one.
        let store = Store::open_with(&path, false, 1).await.expect("open");
        store
            .insert_enrolment(&enrolment("host-a"))
            .await
            .expect("insert");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&store.pool)
            .await
            .expect("page_count");
        sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 1))
            .execute(&store.pool)
            .await
            .expect("limit");
        // "Disk full": SQLite rolls the transaction back on its own.
        let big = "x".repeat(200_000);
        let full = store
            .commit_evidence(&EvidenceCommit {
                hostname: "host-a",
                verdicts: &[verdict("host-a")],
                facts: FactsChange::Put(&big),
                clock: None,
            })
            .await
            .expect_err("full");
        assert!(is_store_fault(&full), "{full:#}");
        assert!(store.health().write_failed());
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&store.pool)
            .await
            .expect("no limit");
        // A refused write that keeps its transaction open (a conflict) …
        let conflict = store
            .insert_enrolment(&enrolment("host-a"))
            .await
            .expect_err("conflict");
        assert!(!is_store_fault(&conflict), "{conflict:#}");
        // … and then a write that says it committed.
        store
            .commit_evidence(&EvidenceCommit {
                hostname: "host-a",
                verdicts: &[verdict("host-a")],
                facts: FactsChange::Put("{}"),
                clock: None,
            })
            .await
            .expect("commit");
        // Another handle sees it (it was really committed), and can write.
        let other = Store::open(&path).await.expect("second handle");
        assert_eq!(
            other.verdicts().await.expect("read"),
            vec![verdict("host-a")]
        );
        other.put_facts("host-b", "{}").await.expect("not locked");
        assert!(store.probe().await.is_ok());
        assert!(store.health().ok());
    }

    #[test]
    fn identity_is_kept_remembered_created_or_refused() {
        use IdentityAction::*;
        assert_eq!(
            reconcile_identity(true, Some("a"), Some("a"), false),
            Ok(Keep)
        );
        assert_eq!(
            reconcile_identity(true, Some("a"), None, false),
            Ok(Remember("a".into()))
        );
        // First-ever start (and a database from before store ids).
        assert_eq!(reconcile_identity(false, None, None, false), Ok(Create));
        assert_eq!(reconcile_identity(true, None, None, false), Ok(Create));
        assert!(matches!(
            reconcile_identity(false, None, Some("a"), false),
            Err(IdentityProblem::Missing { .. })
        ));
        assert!(matches!(
            reconcile_identity(true, None, Some("a"), false),
            Err(IdentityProblem::Unidentified { .. })
        ));
        assert!(matches!(
            reconcile_identity(true, Some("b"), Some("a"), false),
            Err(IdentityProblem::Other { .. })
        ));
        // --init-db accepts what is there.
        assert_eq!(reconcile_identity(false, None, Some("a"), true), Ok(Create));
        assert_eq!(
            reconcile_identity(true, Some("b"), Some("a"), true),
            Ok(Remember("b".into()))
        );
        assert_eq!(
            id_file_path(Path::new("/x/t.db")),
            Path::new("/x/.t.db.store-id")
        );
    }

    fn remove_db(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn a_missing_database_is_never_created_again_without_init_db() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.expect("first start creates");
        let id = store.store_id().to_string();
        store.close().await;
        remove_db(&path);
        let err = Store::open(&path).await.err().expect("refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("missing") && msg.contains(&id) && msg.contains("--init-db"),
            "{msg}"
        );
        assert!(!path.exists(), "nothing created");
        // An empty file in its place is refused too.
        std::fs::write(&path, b"").expect("touch");
        let err = Store::open(&path).await.err().expect("refused");
        assert!(format!("{err:#}").contains("no store id"), "{err:#}");
        remove_db(&path);
        let fresh = Store::open_checked(&path, true).await.expect("--init-db");
        assert_ne!(fresh.store_id(), id);
        fresh.close().await;
        let again = Store::open(&path).await.expect("the new store opens");
        assert_eq!(again.enrolments().await.expect("read"), vec![]);
    }

    #[tokio::test]
    async fn a_database_removed_or_replaced_under_the_store_fails_it_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.expect("open");
        assert!(store.probe().await.is_ok());
        remove_db(&path);
        let why = store.probe().await.expect_err("gone");
        assert!(why.contains("removed"), "{why}");
        assert!(store.health().identity_lost());
        assert!(store.insert_enrolment(&enrolment("h")).await.is_err());
        // Replaced: another file at the path.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let p2 = dir2.path().join("t.db");
        let s2 = Store::open(&p2).await.expect("open");
        std::fs::copy(&p2, dir2.path().join("other.db")).expect("copy");
        std::fs::rename(dir2.path().join("other.db"), &p2).expect("replace");
        let why = s2.probe().await.expect_err("replaced");
        assert!(why.contains("replaced"), "{why}");
    }

    #[tokio::test]
    async fn a_backup_restores_in_place_with_its_revocations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.expect("open");
        store
            .insert_enrolment(&enrolment("host-a"))
            .await
            .expect("insert");
        let revocation = Revocation {
            hostname: "host-a".into(),
            revoked_by: "op".into(),
            revoked_at_ms: 5,
            comment: "c".into(),
        };
        let event = HistoryEvent {
            at_ms: 5,
            hostname: "host-a".into(),
            pool: String::new(),
            event: "revoked".into(),
            trusted: false,
            policy_digest: String::new(),
            reasons: vec![],
            actor: "op".into(),
        };
        store
            .set_revocation("host-a", Some(&revocation), &event)
            .await
            .expect("revoke");
        let backup = dir.path().join("backup.db");
        store.backup(&backup).await.expect("backup");
        assert!(store.backup(&backup).await.is_err(), "never overwrites");
        let id = store.store_id().to_string();
        store.close().await;
        remove_db(&path);
        std::fs::copy(&backup, &path).expect("restore");
        let restored = Store::open(&path)
            .await
            .expect("the backup is the same store");
        assert_eq!(restored.store_id(), id);
        assert_eq!(
            restored.revocations().await.expect("read"),
            vec![revocation]
        );
    }
}
