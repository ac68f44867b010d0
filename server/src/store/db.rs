//! The store over any engine: one pool of sqlx's `Any` driver, statements
//! written once ([`Engine::sql`] adapts the placeholders, [`Upsert`] the
//! upserts), and the engine-specific parts kept where they must differ: the
//! schema text ([`super::schema`]), the SQLite file ([`super::file`]) and
//! how a migration is serialised between replicas.

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use super::engine::{DbLocation, Engine, Upsert};
use super::file::{self, OpenedFile};
use super::health::*;
use super::identity::*;
use super::schema;
use super::*;

/// Handle on the database.
#[derive(Clone)]
pub struct Store {
    pub(super) pool: AnyPool,
    pub(super) engine: Engine,
    health: Arc<StoreHealth>,
    identity: Arc<Identity>,
    /// This process's name in the change table (see [`Store::set_replica`]).
    replica: Arc<std::sync::OnceLock<String>>,
    /// Enrolments writing at once: fewer than the pool's connections (see
    /// [`enrolment_slots`]).
    enrol_slots: Arc<tokio::sync::Semaphore>,
}

/// Which store was opened, and where.
#[derive(Debug)]
struct Identity {
    /// The location, password redacted (logs and errors).
    location: String,
    store_id: String,
    /// The SQLite file, to notice it removed or replaced.
    file: Option<OpenedFile>,
}

/// Connections per pool: SQLite has one writer anyway; a server engine
/// takes the group commit, the probe, the admin API and start-up reads.
fn pool_size(engine: Engine) -> u32 {
    match engine {
        Engine::Sqlite => 4,
        Engine::Postgres | Engine::MySql => 8,
    }
}

/// Enrolments that may hold a connection at once, out of a pool of `pool`.
/// On a database server a cold start sends thousands of enrolments at once,
/// each its own commit, and they must not take the connections of the group
/// commit, the probe, the maintenance lease, the replica presence and the
/// change follower (starved for the 2 s acquire timeout, those answered 503
/// and lost the lease while the database was merely busy): three
/// connections stay for them, the enrolments beyond wait here, in order.
/// SQLite has none of that to starve (one writer, sqlx's 30 s acquire
/// timeout, no lease); limiting it to one enrolment at a time cost a fifth
/// of its cold-start rate, so it keeps its whole pool.
fn enrolment_slots(engine: Engine, pool: u32) -> usize {
    match engine {
        Engine::Sqlite => pool.max(1) as usize,
        Engine::Postgres | Engine::MySql => pool.saturating_sub(3).max(1) as usize,
    }
}

/// How long an enrolment waits for a slot before the agent is told to try
/// again (`enrolment.not_stored`; it retries with back-off).
const ENROLMENT_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Arbitrary key of the PostgreSQL advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7472_7573_7470_6f6f;

impl Store {
    /// Opens the SQLite store at `path`; a first-ever start creates it. See
    /// [`Store::connect`].
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        Store::open_checked(path, false).await
    }

    /// Opens the SQLite store at `path` and checks its identity against the
    /// store-id file beside it ([`reconcile_identity`]): a missing database
    /// is created only on a first-ever start or with `init_db`.
    pub async fn open_checked(path: &Path, init_db: bool) -> anyhow::Result<Store> {
        Store::connect(&DbLocation::Sqlite(path.to_path_buf()), init_db).await
    }

    /// Opens the store at `location`, migrates its schema to this server's
    /// version, and checks or creates its identity.
    ///
    /// SQLite: the file is created on a first-ever start only (or with
    /// `init_db`); see [`reconcile_identity`]. PostgreSQL and MariaDB: the
    /// database must exist (the operator creates it, owned by the server's
    /// user); an empty one is given the schema and a new store id, which
    /// several replicas starting at once agree on.
    pub async fn connect(location: &DbLocation, init_db: bool) -> anyhow::Result<Store> {
        Store::connect_with(location, init_db, None).await
    }

    /// Opens the existing store at `location` (the source of a migration):
    /// an SQLite file that does not exist, or a server database without a
    /// trustpool store in it, is refused and left as it was (nothing is
    /// created, no schema is written).
    pub async fn connect_existing(location: &DbLocation) -> anyhow::Result<Store> {
        match location {
            DbLocation::Sqlite(path) => {
                if !path.exists() {
                    anyhow::bail!("{location} does not exist: it holds no trustpool store");
                }
            }
            DbLocation::Postgres(url) | DbLocation::MySql(url) => {
                use sqlx::Connection;
                sqlx::any::install_default_drivers();
                let mut conn = sqlx::AnyConnection::connect(url)
                    .await
                    .with_context(|| format!("cannot open database {location}"))?;
                let found = sqlx::query("SELECT store_id FROM store_identity WHERE id = 1")
                    .fetch_optional(&mut conn)
                    .await;
                let _ = conn.close().await;
                if !matches!(found, Ok(Some(_))) {
                    anyhow::bail!("{location} holds no trustpool store");
                }
            }
        }
        Store::connect(location, false).await
    }

    async fn connect_with(
        location: &DbLocation,
        init_db: bool,
        connections: Option<u32>,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let engine = location.engine();
        let shown = location.to_string();
        let (db_existed, in_file, url) = match location {
            DbLocation::Sqlite(path) => {
                let (existed, in_file) = file::prepare(path, init_db).await?;
                (existed, in_file, file::pool_url(path)?)
            }
            DbLocation::Postgres(url) | DbLocation::MySql(url) => (true, None, url.clone()),
        };
        let health = Arc::new(StoreHealth::default());
        let released = health.clone();
        let max_connections = connections.unwrap_or_else(|| pool_size(engine));
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            // A connection is closed on release, never reused, when:
            // - its transaction did not end cleanly: SQLite rolls a
            //   transaction back by itself on a full disk or an I/O error, the
            //   driver's own ROLLBACK then fails and it would wrap every later
            //   transaction of that connection in a savepoint that never
            //   commits (and holds the write lock);
            // - writes are failing: a connection opened while the file could
            //   not be opened for writing is read-only for good (SQLite falls
            //   back silently), and a connection to a database server that
            //   failed over may still point at the old primary.
            .after_release(move |conn, _meta| {
                let health = released.clone();
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction() && !health.write_failed())
                })
            });
        if engine == Engine::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, file::PRAGMAS).await?;
                    Ok(())
                })
            });
        } else {
            // A database server that is down must fail a write in seconds
            // (the server then answers 503), not hold sessions for 30 s:
            // sqlx retries a refused connection until this timeout.
            options = options.acquire_timeout(Duration::from_secs(2));
        }
        let pool = options
            .connect(&url)
            .await
            .with_context(|| format!("cannot open database {shown}"))?;
        migrate(&pool, engine)
            .await
            .with_context(|| format!("cannot migrate the schema of {shown}"))?;
        let in_db = read_store_id(&pool, engine)
            .await
            .with_context(|| format!("reading the store id of {shown}"))?;
        let action = match location {
            DbLocation::Sqlite(_) => {
                reconcile_identity(db_existed, in_db.as_deref(), in_file.as_deref(), init_db)
                    .map_err(|problem| anyhow::anyhow!("refusing to open {shown}: {problem}"))?
            }
            _ => match &in_db {
                Some(_) => IdentityAction::Keep,
                None => IdentityAction::Create,
            },
        };
        let store_id = match &action {
            IdentityAction::Keep => in_db.unwrap_or_default(),
            IdentityAction::Remember(id) => {
                warn!(db = %shown, store_id = %id, "remembering the store id of this database");
                id.clone()
            }
            IdentityAction::Create => {
                let id = create_store_id(&pool, engine)
                    .await
                    .with_context(|| format!("storing the store id in {shown}"))?;
                info!(db = %shown, store_id = %id, "new store id");
                id
            }
        };
        let opened = match location {
            DbLocation::Sqlite(path) => Some(file::opened(path, &store_id, &action)?),
            _ => None,
        };
        info!(db = %shown, engine = engine.name(), schema = schema::latest(), "store ready");
        Ok(Store {
            pool,
            engine,
            health,
            identity: Arc::new(Identity {
                location: shown,
                store_id,
                file: opened,
            }),
            replica: Arc::default(),
            enrol_slots: Arc::new(tokio::sync::Semaphore::new(enrolment_slots(
                engine,
                max_connections,
            ))),
        })
    }

    /// The engine of this store.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The store's health, shared by every clone of this handle.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Names the changes this process writes (the other replicas re-read
    /// the hosts of every change not named so). Set once, before the first
    /// write; unset, changes are written under "".
    pub fn set_replica(&self, instance: &str) {
        let _ = self.replica.set(instance.to_string());
    }

    /// The name under which this process writes its changes.
    pub fn replica(&self) -> &str {
        self.replica.get().map_or("", String::as_str)
    }

    /// The random id of this store.
    pub fn store_id(&self) -> &str {
        &self.identity.store_id
    }

    /// `sql` in this store's placeholder syntax.
    pub(super) fn sql<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        self.engine.sql(sql)
    }

    /// Records the outcome of a write in the store health.
    /// (A refused write that says nothing about the database, such as a
    /// conflicting enrolment, does not count.)
    pub(super) fn outcome<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        match &r {
            Ok(_) => self.health.write_done(),
            Err(e) if is_store_fault(e) => self.health.write_error(e),
            Err(_) => {}
        }
        r
    }

    /// Refuses writes once the database was removed or replaced (they
    /// would land in a deleted file, or in another store).
    pub(super) fn writable(&self) -> anyhow::Result<()> {
        if self.health.identity_lost() {
            anyhow::bail!("{STORE_IDENTITY_LOST}: writes refused");
        }
        Ok(())
    }

    /// Checks that the SQLite file is still the one opened (same device and
    /// inode at the path, store-id file unchanged); the first mismatch fails
    /// the store closed for good. (A server database's identity is checked
    /// by [`Store::probe`], in the database.)
    pub fn check_identity(&self) -> Result<(), String> {
        let problem = self
            .identity
            .file
            .as_ref()
            .and_then(|f| f.problem(&self.identity.store_id));
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
    /// (the heartbeat of the identity row, in a transaction, only while the
    /// row names this store). Success clears a write failure and tells the
    /// sessions; failure sets it.
    pub async fn probe(&self) -> Result<(), String> {
        self.check_identity()?;
        let writes_before = self.health.writes_done();
        let outcome = async {
            let mut tx = self
                .pool
                .begin()
                .await
                .context("starting the write probe")?;
            let updated =
                sqlx::query(&self.sql(
                    "UPDATE store_identity SET heartbeat_ms = ? WHERE id = 1 AND store_id = ?",
                ))
                .bind(crate::clock::now_ms())
                .bind(self.store_id())
                .execute(&mut *tx)
                .await
                .context("writing the store heartbeat")?
                .rows_affected();
            tx.commit()
                .await
                .context("committing the store heartbeat")?;
            anyhow::Ok(updated)
        }
        .await;
        match self.outcome(outcome) {
            // MariaDB counts rows changed, not matched: a heartbeat in the
            // same millisecond as the last one changes nothing.
            Ok(0) if self.engine == Engine::MySql && self.identity_row_is_ours().await => {
                self.health.probe_ok();
                Ok(())
            }
            Ok(0) => {
                let why = format!(
                    "{} no longer holds store {} (its identity row is gone or names another store)",
                    self.identity.location,
                    self.store_id()
                );
                self.health.lose_identity(&why);
                Err(why)
            }
            Ok(_) => {
                self.health.probe_ok();
                Ok(())
            }
            Err(e) => {
                if is_pool_timeout(&e)
                    && pool_timeout_means_unreachable(
                        self.pool.size() < self.pool.options().get_max_connections(),
                        self.health.writes_done() > writes_before,
                    )
                {
                    self.health.write_error(&e);
                }
                Err(format!("{e:#}"))
            }
        }
    }

    async fn identity_row_is_ours(&self) -> bool {
        matches!(read_store_id(&self.pool, self.engine).await, Ok(Some(id)) if id == self.store_id())
    }

    /// Copies the whole database, consistently, into a new file `to`
    /// (SQLite `VACUUM INTO`; the server may keep running). The copy keeps
    /// the store id, so it can be restored in place of this database.
    /// PostgreSQL and MariaDB are backed up with their own tools.
    pub async fn backup(&self, to: &Path) -> anyhow::Result<()> {
        if self.engine != Engine::Sqlite {
            anyhow::bail!(
                "{} is a {} database: back it up with its own tools (pg_dump, mariadb-dump)",
                self.identity.location,
                self.engine.name()
            );
        }
        let mut conn = self.pool.acquire().await.context("starting a backup")?;
        file::vacuum_into(&mut *conn, to).await
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
    /// commit): all of it or, on error, none of it. The group-commit writer
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

    /// Stores the latest verified facts of a host (their body and the log
    /// rows they carry).
    pub async fn put_facts(&self, hostname: &str, facts: &StoredFacts) -> anyhow::Result<()> {
        self.writable()?;
        let r = self.put_facts_unchecked(hostname, facts).await;
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

    /// The rows of `select` (a `SELECT … FROM table` of a table keyed by
    /// host name), of `hosts` only when given (a few statements of at most
    /// [`Upsert::ROWS_PER_STATEMENT`] names each).
    async fn rows_of(
        &self,
        select: &str,
        hosts: Option<&[String]>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let Some(hosts) = hosts else {
            return sqlx::query(select).fetch_all(&self.pool).await;
        };
        let mut rows = Vec::new();
        for chunk in hosts.chunks(Upsert::ROWS_PER_STATEMENT) {
            let sql = self
                .sql(&format!(
                    "{select} WHERE hostname IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                ))
                .into_owned();
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql).persistent(false), |q, h| {
                    q.bind(h.as_str())
                });
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// Reads every enrolment.
    pub async fn enrolments(&self) -> anyhow::Result<Vec<Enrolment>> {
        self.enrolments_of(None).await
    }

    /// [`Store::enrolments`] of `hosts` only (all with `None`).
    pub(super) async fn enrolments_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<Enrolment>> {
        let rows = self.rows_of(
            "SELECT hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms FROM enrolments", hosts)
        .await
        .context("reading enrolments")?;
        rows.iter()
            .map(enrolment_row)
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding enrolments")
    }
    async fn insert_enrolment_unchecked(&self, e: &Enrolment) -> anyhow::Result<()> {
        let _slot = tokio::time::timeout(ENROLMENT_SLOT_WAIT, self.enrol_slots.acquire())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no database connection free for an enrolment within {}s: more agents are enrolling than the database commits",
                    ENROLMENT_SLOT_WAIT.as_secs()
                )
            })?
            .context("the store is closing")?;
        let mut tx = self.pool.begin().await.context("starting an enrolment")?;
        sqlx::query(&self.sql(
            "INSERT INTO enrolments (hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
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
        insert_history(&mut tx, self.engine, std::slice::from_ref(&event)).await?;
        note_change(&mut tx, self.engine, self.replica(), [e.hostname.as_str()]).await?;
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
        write_verdicts(&mut tx, self.engine, verdicts.iter()).await?;
        note_change(
            &mut tx,
            self.engine,
            self.replica(),
            verdicts.iter().map(|v| v.hostname.as_str()),
        )
        .await?;
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
        write_evidence_rows(&mut tx, self.engine, batch)
            .await
            .with_context(|| format!("writing the evidence of {what}"))?;
        note_change(
            &mut tx,
            self.engine,
            self.replica(),
            batch.iter().map(|c| c.hostname),
        )
        .await?;
        tx.commit()
            .await
            .with_context(|| format!("committing the evidence of {what}"))?;
        Ok(())
    }

    /// Reads every stored latest verdict.
    pub async fn verdicts(&self) -> anyhow::Result<Vec<StoredVerdict>> {
        self.verdicts_of(None).await
    }

    /// [`Store::verdicts`] of `hosts` only (all with `None`).
    pub(super) async fn verdicts_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<StoredVerdict>> {
        let rows = self.rows_of(
            "SELECT hostname, pool, trusted, attested_at_ms, valid_until_ms, reasons, policy_digest FROM verdicts", hosts)
        .await
        .context("reading verdicts")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let v = (|| {
                Ok::<_, anyhow::Error>(StoredVerdict {
                    hostname: text(&r, "hostname")?,
                    pool: text(&r, "pool")?,
                    trusted: flag(&r, "trusted")?,
                    attested_at_ms: r.try_get("attested_at_ms")?,
                    valid_until_ms: r.try_get("valid_until_ms")?,
                    reasons: serde_json::from_str(&text(&r, "reasons")?)
                        .context("decoding verdict reasons")?,
                    policy_digest: text(&r, "policy_digest")?,
                })
            })()
            .context("decoding a verdict")?;
            out.push(v);
        }
        Ok(out)
    }
    async fn put_clock_unchecked(&self, hostname: &str, c: StoredClock) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a TPM clock update")?;
        write_clocks(&mut tx, self.engine, &[(hostname, c)]).await?;
        note_change(&mut tx, self.engine, self.replica(), [hostname]).await?;
        tx.commit().await.context("committing a TPM clock")?;
        Ok(())
    }

    /// Reads every stored TPM clock.
    pub async fn clocks(&self) -> anyhow::Result<Vec<(String, StoredClock)>> {
        self.clocks_of(None).await
    }

    /// [`Store::clocks`] of `hosts` only (all with `None`).
    pub(super) async fn clocks_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<(String, StoredClock)>> {
        let rows = self
            .rows_of(
                "SELECT hostname, reset_count, restart_count, clock FROM tpm_clocks",
                hosts,
            )
            .await
            .context("reading TPM clocks")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let reset: i64 = r.try_get("reset_count").context("decoding a TPM clock")?;
            let restart: i64 = r.try_get("restart_count").context("decoding a TPM clock")?;
            let clock: i64 = r.try_get("clock").context("decoding a TPM clock")?;
            out.push((
                text(&r, "hostname").context("decoding a TPM clock")?,
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
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a pending enrolment")?;
        write_enrolments(&mut tx, self.engine, PENDING, &[p]).await?;
        note_change(
            &mut tx,
            self.engine,
            self.replica(),
            [p.enrolment.hostname.as_str()],
        )
        .await?;
        tx.commit().await.with_context(|| {
            format!("storing the pending enrolment of {}", p.enrolment.hostname)
        })?;
        Ok(())
    }

    /// Reads every pending enrolment.
    pub async fn pending(&self) -> anyhow::Result<Vec<PendingEnrolment>> {
        self.pending_of(None).await
    }

    /// [`Store::pending`] of `hosts` only (all with `None`).
    pub(super) async fn pending_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<PendingEnrolment>> {
        let rows = self.rows_of(
            "SELECT hostname, ek_public, ek_certificate, ak_public, ak_name, cert_fingerprint, cert_subject, enrolled_at_ms, reason FROM pending_enrolments", hosts)
        .await
        .context("reading pending enrolments")?;
        rows.iter()
            .map(|r| {
                Ok(PendingEnrolment {
                    enrolment: enrolment_row(r)?,
                    reason: text(r, "reason")?,
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
        let moved_from: Vec<String> = sqlx::query(&self.sql(
            "SELECT hostname FROM enrolments WHERE hostname <> ? AND (ek_public = ? OR ak_public = ?)
             UNION SELECT hostname FROM pending_enrolments WHERE hostname <> ? AND (ek_public = ? OR ak_public = ?)",
        ))
        .bind(hostname)
        .bind(&e.ek_public)
        .bind(&e.ak_public)
        .bind(hostname)
        .bind(&e.ek_public)
        .bind(&e.ak_public)
        .fetch_all(&mut *tx)
        .await
        .with_context(|| format!("looking for other hosts holding the TPM of {hostname}"))?
        .iter()
        .map(|r| text(r, "hostname"))
        .collect::<Result<_, _>>()
        .context("decoding the hosts holding a TPM")?;
        for other in &moved_from {
            for table in [
                "enrolments",
                "pending_enrolments",
                "verdicts",
                "facts",
                "event_logs",
                "tpm_clocks",
            ] {
                sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE hostname = ?")))
                    .bind(other)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("moving the TPM of {other} to {hostname}"))?;
            }
        }
        write_enrolments(&mut tx, self.engine, ENROLMENTS, &[&pending])
            .await
            .with_context(|| format!("approving the enrolment of {hostname}"))?;
        // A new TPM starts a new clock: forget the old one.
        for table in ["pending_enrolments", "tpm_clocks"] {
            sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE hostname = ?")))
                .bind(hostname)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("approving the enrolment of {hostname}"))?;
        }
        insert_history(&mut tx, self.engine, std::slice::from_ref(event)).await?;
        note_change(
            &mut tx,
            self.engine,
            self.replica(),
            std::iter::once(hostname).chain(moved_from.iter().map(String::as_str)),
        )
        .await?;
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
            Some(r) => write_revocations(&mut tx, self.engine, std::slice::from_ref(r)).await,
            None => sqlx::query(&self.sql("DELETE FROM revocations WHERE hostname = ?"))
                .bind(hostname)
                .execute(&mut *tx)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from),
        }
        .with_context(|| format!("changing the revocation of {hostname}"))?;
        if revocation.is_none() {
            // Readmitted: what the host sent while revoked decides nothing;
            // its next report does.
            for table in ["verdicts", "facts", "event_logs"] {
                sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE hostname = ?")))
                    .bind(hostname)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("readmitting {hostname}"))?;
            }
        }
        insert_history(&mut tx, self.engine, std::slice::from_ref(event)).await?;
        note_change(&mut tx, self.engine, self.replica(), [hostname]).await?;
        tx.commit().await.context("committing a revocation")?;
        Ok(())
    }

    /// Reads every revocation.
    pub async fn revocations(&self) -> anyhow::Result<Vec<Revocation>> {
        self.revocations_of(None).await
    }

    /// [`Store::revocations`] of `hosts` only (all with `None`).
    pub(super) async fn revocations_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<Revocation>> {
        let rows = self
            .rows_of(
                "SELECT hostname, revoked_by, revoked_at_ms, comment FROM revocations",
                hosts,
            )
            .await
            .context("reading revocations")?;
        rows.iter()
            .map(|r| {
                Ok(Revocation {
                    hostname: text(r, "hostname")?,
                    revoked_by: text(r, "revoked_by")?,
                    revoked_at_ms: r.try_get("revoked_at_ms")?,
                    comment: text(r, "comment")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding revocations")
    }
    async fn put_facts_unchecked(&self, hostname: &str, facts: &StoredFacts) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a facts update")?;
        write_facts(&mut tx, self.engine, &[(hostname, facts)])
            .await
            .with_context(|| format!("storing the evidence facts of {hostname}"))?;
        note_change(&mut tx, self.engine, self.replica(), [hostname]).await?;
        tx.commit()
            .await
            .with_context(|| format!("storing the evidence facts of {hostname}"))?;
        Ok(())
    }

    /// Reads every host's latest facts with the rows of their event logs.
    pub async fn facts(&self) -> anyhow::Result<Vec<(String, StoredFacts)>> {
        self.facts_of(None).await
    }

    /// [`Store::facts`] of `hosts` only (all with `None`).
    pub(super) async fn facts_of(
        &self,
        hosts: Option<&[String]>,
    ) -> anyhow::Result<Vec<(String, StoredFacts)>> {
        let rows = self
            .rows_of("SELECT hostname, body FROM facts", hosts)
            .await
            .context("reading evidence facts")?;
        let mut facts: std::collections::BTreeMap<String, StoredFacts> = rows
            .iter()
            .map(|r| {
                Ok((
                    text(r, "hostname")?,
                    StoredFacts::body_only(text(r, "body")?),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding evidence facts")?;
        let rows = self
            .rows_of(
                "SELECT hostname, domain, log_sha256, body FROM event_logs",
                hosts,
            )
            .await
            .context("reading the facts of event logs")?;
        for r in &rows {
            let host = text(r, "hostname").context("decoding the facts of an event log")?;
            let domain = text(r, "domain").context("decoding the facts of an event log")?;
            let Some(domain) = LogDomain::from_name(&domain) else {
                warn!(host = %host, domain = %domain, "stored event log of an unknown domain; ignored");
                continue;
            };
            // A row without facts (withdrawn) is never read: nothing refers to it.
            if let Some(f) = facts.get_mut(&host) {
                f.logs.push(LogRow {
                    domain,
                    log_sha256: text(r, "log_sha256")
                        .context("decoding the facts of an event log")?,
                    body: text(r, "body").context("decoding the facts of an event log")?,
                });
            }
        }
        Ok(facts.into_iter().collect())
    }
    async fn append_history_unchecked(&self, events: &[HistoryEvent]) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting a history batch")?;
        insert_history(&mut tx, self.engine, events).await?;
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
        let rows = sqlx::query(&self.sql(
            "SELECT at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor FROM history
             WHERE (hostname = ? OR hostname = '') AND at_ms >= ? ORDER BY at_ms DESC, id DESC LIMIT ?",
        ))
        .bind(hostname)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the history of {hostname}"))?;
        let mut out = rows
            .iter()
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
        let rows = sqlx::query(&self.sql(
            "SELECT at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor FROM history
             WHERE hostname = ? AND at_ms <= ? ORDER BY at_ms DESC, id DESC LIMIT 1000",
        ))
        .bind(hostname)
        .bind(at_ms)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("reading the history of {hostname}"))?;
        rows.iter().map(history_row).collect()
    }

    /// Whether the newest recorded verdict event of `hostname` in `pool` says
    /// trusted (`None`: no verdict event recorded).
    pub async fn last_recorded_trust(
        &self,
        hostname: &str,
        pool: &str,
    ) -> anyhow::Result<Option<bool>> {
        let row = sqlx::query(&self.sql(
            "SELECT trusted FROM history WHERE hostname = ? AND pool = ? AND event IN ('verdict', 'reasons')
             ORDER BY at_ms DESC, id DESC LIMIT 1",
        ))
        .bind(hostname)
        .bind(pool)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("reading the last verdict event of {hostname}"))?;
        row.map(|r| flag(&r, "trusted"))
            .transpose()
            .with_context(|| format!("decoding the last verdict event of {hostname}"))
    }

    /// Copies everything of this store into `to`, which must be empty (a
    /// store just created): `trustpool-server migrate`. The copy takes this
    /// store's id, so agents, backups and operators see the same store.
    /// Returns the number of rows copied per table.
    pub async fn copy_into(&self, to: &Store) -> anyhow::Result<Vec<(&'static str, u64)>> {
        let mut copied = Vec::new();
        let mut tx = to.pool.begin().await.context("starting the copy")?;
        for table in [
            "enrolments",
            "pending_enrolments",
            "revocations",
            "verdicts",
            "facts",
            "event_logs",
            "tpm_clocks",
            "history",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .with_context(|| format!("counting {table} in the destination"))?
                .try_get("n")?;
            if n != 0 {
                anyhow::bail!(
                    "the destination {} is not empty: its {table} holds {n} rows",
                    to.identity.location
                );
            }
        }
        let enrolments = self.enrolments().await?;
        let as_pending: Vec<PendingEnrolment> = enrolments
            .into_iter()
            .map(|enrolment| PendingEnrolment {
                enrolment,
                reason: String::new(),
            })
            .collect();
        let refs: Vec<&PendingEnrolment> = as_pending.iter().collect();
        write_enrolments(&mut tx, to.engine, ENROLMENTS, &refs).await?;
        copied.push(("enrolments", refs.len() as u64));
        let pending = self.pending().await?;
        let refs: Vec<&PendingEnrolment> = pending.iter().collect();
        write_enrolments(&mut tx, to.engine, PENDING, &refs).await?;
        copied.push(("pending_enrolments", refs.len() as u64));
        let revocations = self.revocations().await?;
        write_revocations(&mut tx, to.engine, &revocations).await?;
        copied.push(("revocations", revocations.len() as u64));
        let verdicts = self.verdicts().await?;
        write_verdicts(&mut tx, to.engine, verdicts.iter()).await?;
        copied.push(("verdicts", verdicts.len() as u64));
        let facts = self.facts().await?;
        let refs: Vec<(&str, &StoredFacts)> = facts.iter().map(|(h, f)| (h.as_str(), f)).collect();
        write_facts(&mut tx, to.engine, &refs).await?;
        copied.push(("facts", refs.len() as u64));
        copied.push((
            "event_logs",
            facts.iter().map(|(_, f)| f.logs.len() as u64).sum(),
        ));
        let clocks = self.clocks().await?;
        let refs: Vec<(&str, StoredClock)> = clocks.iter().map(|(h, c)| (h.as_str(), *c)).collect();
        write_clocks(&mut tx, to.engine, &refs).await?;
        copied.push(("tpm_clocks", refs.len() as u64));
        // History in its order, a page at a time (it can be large).
        let mut last_id = 0i64;
        let mut events = 0u64;
        loop {
            let rows = sqlx::query(&self.sql(
                "SELECT id, at_ms, hostname, pool, event, trusted, policy_digest, reasons, actor FROM history
                 WHERE id > ? ORDER BY id LIMIT 5000",
            ))
            .bind(last_id)
            .fetch_all(&self.pool)
            .await
            .context("reading history to copy")?;
            let Some(last) = rows.last() else { break };
            last_id = last.try_get("id").context("decoding a history id")?;
            let page = rows
                .iter()
                .map(history_row)
                .collect::<anyhow::Result<Vec<_>>>()?;
            insert_history(&mut tx, to.engine, &page).await?;
            events += page.len() as u64;
        }
        copied.push(("history", events));
        sqlx::query(&to.sql("UPDATE store_identity SET store_id = ? WHERE id = 1"))
            .bind(self.store_id())
            .execute(&mut *tx)
            .await
            .context("giving the destination the store id of the source")?;
        tx.commit().await.context("committing the copy")?;
        if let Some(f) = &to.identity.file {
            write_id_file(&f.id_file, self.store_id())?;
        }
        Ok(copied)
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

/// Brings the schema to [`schema::latest`]: creates the version table, then
/// applies each migration not yet recorded, in order. Replicas starting at
/// once on a server database are serialised (PostgreSQL: an advisory lock;
/// MariaDB: `GET_LOCK`, and on Galera, where that lock is node-local, DDL
/// is totally ordered and every statement is `IF NOT EXISTS`).
async fn migrate(pool: &AnyPool, engine: Engine) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("connecting for the migration")?
        .detach();
    let lock = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
        Engine::MySql => Some("SELECT GET_LOCK('trustpool.migrate', 120)".to_string()),
    };
    if let Some(lock) = &lock {
        sqlx::query(lock)
            .execute(&mut conn)
            .await
            .context("waiting for another server's migration")?;
    }
    let outcome = apply_migrations(&mut conn, engine).await;
    // Closing the session releases the lock, whatever happened.
    let _ = conn.close().await;
    outcome
}

async fn apply_migrations(conn: &mut sqlx::AnyConnection, engine: Engine) -> anyhow::Result<()> {
    sqlx::query(schema::version_table(engine))
        .execute(&mut *conn)
        .await
        .context("creating the schema version table")?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_version")
        .fetch_all(&mut *conn)
        .await
        .context("reading the schema version")?
        .iter()
        .map(|r| r.try_get("version"))
        .collect::<Result<_, _>>()
        .context("decoding the schema version")?;
    if let Some(newest) = applied.iter().max().filter(|v| **v > schema::latest()) {
        anyhow::bail!(
            "the database has schema version {newest}, newer than this server's {}: upgrade this server",
            schema::latest()
        );
    }
    for m in schema::MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        // DDL is transactional on SQLite and PostgreSQL (a failed migration
        // leaves nothing); MariaDB commits each statement, and every one is
        // written to be re-run.
        let mut tx = conn.begin().await.context("starting a migration")?;
        for statement in m.statements(engine) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("migration {} ({})", m.version, m.name))?;
        }
        let record = Upsert {
            table: "schema_version",
            columns: &["version", "name", "applied_at_ms"],
            key: &["version"],
        };
        let keep = format!(
            "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?){}",
            engine.upsert_tail(record.key, &[])
        );
        sqlx::query(&engine.sql(&keep))
            .bind(m.version)
            .bind(m.name)
            .bind(crate::clock::now_ms())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("recording migration {}", m.version))?;
        tx.commit()
            .await
            .with_context(|| format!("committing migration {}", m.version))?;
        info!(
            version = m.version,
            name = m.name,
            engine = engine.name(),
            "schema migrated"
        );
    }
    Ok(())
}

pub(super) async fn read_store_id(
    pool: &AnyPool,
    _engine: Engine,
) -> anyhow::Result<Option<String>> {
    let row = sqlx::query("SELECT store_id FROM store_identity WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| text(&r, "store_id")).transpose()?)
}

/// Gives the store a new id unless another server did first (replicas
/// starting at once on an empty database), and returns the id it has.
async fn create_store_id(pool: &AnyPool, engine: Engine) -> anyhow::Result<String> {
    let now = crate::clock::now_ms();
    let sql = format!(
        "INSERT INTO store_identity (id, store_id, created_at_ms, heartbeat_ms) VALUES (1, ?, ?, ?){}",
        engine.upsert_tail(&["id"], &[])
    );
    sqlx::query(&engine.sql(&sql))
        .bind(new_store_id())
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?;
    read_store_id(pool, engine)
        .await?
        .context("the store identity row vanished as it was written")
}

/// Whether a probe that waited the whole acquire timeout for a pooled
/// connection says the database server is unreachable (fail closed) rather
/// than busy. `room`: the pool held fewer connections than its maximum, so
/// the wait included opening one (sqlx retries a refused connection until
/// the timeout). `progressed`: another write committed while the probe
/// waited. Room alone is no proof: under a burst (thousands of agents
/// enrolling at a cold start) acquires that time out drop the idle
/// connection they were testing, so the pool shrinks below its maximum
/// while the database commits hundreds of writes a second. Only a wait in
/// which nothing committed is a database that does not answer.
pub(super) fn pool_timeout_means_unreachable(room: bool, progressed: bool) -> bool {
    room && !progressed
}

/// True when `e` waited for a pooled connection longer than the acquire
/// timeout.
pub fn is_pool_timeout(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<sqlx::Error>())
        .any(|e| matches!(e, sqlx::Error::PoolTimedOut))
}

/// True when `e` says the database cannot take writes (full disk, I/O
/// error, read-only or locked file, lost connection, closed pool…), false
/// for refusals of one write (a constraint, a value out of range) and
/// errors of our own.
pub fn is_store_fault(e: &anyhow::Error) -> bool {
    let Some(sql) = e.chain().find_map(|c| c.downcast_ref::<sqlx::Error>()) else {
        return false;
    };
    match sql {
        sqlx::Error::Database(db) => {
            if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
                // Unique, foreign key, not-null or check violation.
                return false;
            }
            match db.code() {
                // PostgreSQL and MariaDB give an SQLSTATE: class 22 is a
                // value the column cannot take, 23 a constraint.
                // (SQLite's result codes have at most four digits.)
                Some(state) if state.len() == 5 => {
                    !(state.starts_with("22") || state.starts_with("23"))
                }
                Some(code) => {
                    // SQLite's (extended) result code: SQLITE_TOOBIG,
                    // SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE.
                    let code = code.parse::<i32>().unwrap_or(1);
                    !matches!(code & 0xff, 18 | 19 | 20 | 25)
                }
                None => true,
            }
        }
        // Every pooled connection was busy for the acquire timeout: the
        // server is slow, or a database server does not answer; the probe
        // tells which (it fails only on the latter).
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

/// A text column. MariaDB sends `TEXT` columns as blobs to sqlx's `Any`
/// driver; they are UTF-8 all the same.
pub(super) fn text(r: &AnyRow, column: &str) -> Result<String, sqlx::Error> {
    match r.try_get::<String, _>(column) {
        Ok(s) => Ok(s),
        Err(first) => match r.try_get::<Vec<u8>, _>(column) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|e| sqlx::Error::ColumnDecode {
                index: column.to_string(),
                source: Box::new(e),
            }),
            Err(_) => Err(first),
        },
    }
}

/// A boolean stored as 0/1.
fn flag(r: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    Ok(r.try_get::<i64, _>(column)? != 0)
}

/// The enrolment columns shared by `enrolments` and `pending_enrolments`.
fn enrolment_row(r: &AnyRow) -> Result<Enrolment, sqlx::Error> {
    Ok(Enrolment {
        hostname: text(r, "hostname")?,
        ek_public: r.try_get("ek_public")?,
        ek_certificate: r.try_get("ek_certificate")?,
        ak_public: r.try_get("ak_public")?,
        ak_name: r.try_get("ak_name")?,
        cert_fingerprint: text(r, "cert_fingerprint")?,
        cert_subject: text(r, "cert_subject")?,
        enrolled_at_ms: r.try_get("enrolled_at_ms")?,
    })
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Records in `tx` that `hosts` changed, so that the other replicas re-read
/// them (see [`super::replication`]): the change commits with the change.
async fn note_change<'h>(
    tx: &mut Tx<'_>,
    engine: Engine,
    replica: &str,
    hosts: impl IntoIterator<Item = &'h str>,
) -> anyhow::Result<()> {
    let mut hosts: Vec<&str> = hosts.into_iter().collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(&hosts).context("encoding a change")?;
    sqlx::query(
        &engine.sql("INSERT INTO changes (at_ms, replica, stamp, hosts) VALUES (?, ?, ?, ?)"),
    )
    .bind(crate::clock::now_ms())
    .bind(replica)
    .bind(crate::clock::now_us())
    .bind(list)
    .execute(&mut **tx)
    .await
    .with_context(|| format!("recording the change of {} hosts", hosts.len()))?;
    Ok(())
}
type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Writes `rows` with `upsert`, [`Upsert::ROWS_PER_STATEMENT`] at a time,
/// binding each row's values with `bind`: every multi-row write of the store.
/// (With sqlx's SQLite driver every statement is a hand-off to its worker
/// thread and back; one statement per row made the hand-offs, not SQLite,
/// the cost of a batch.)
async fn write_rows<'r, R>(
    tx: &mut Tx<'_>,
    engine: Engine,
    upsert: &Upsert,
    rows: &'r [R],
    bind: impl for<'q> Fn(Query<'q>, &'q R) -> Query<'q>,
) -> anyhow::Result<()>
where
    R: Sync,
{
    for chunk in rows.chunks(Upsert::ROWS_PER_STATEMENT) {
        let sql = upsert.statement(engine, chunk.len());
        let query = chunk
            .iter()
            .fold(sqlx::query(&sql).persistent(false), &bind);
        query
            .execute(&mut **tx)
            .await
            .with_context(|| format!("storing {} rows of {}", chunk.len(), upsert.table))?;
    }
    Ok(())
}

const VERDICTS: Upsert = Upsert {
    table: "verdicts",
    columns: &[
        "hostname",
        "pool",
        "trusted",
        "attested_at_ms",
        "valid_until_ms",
        "reasons",
        "policy_digest",
    ],
    key: &["hostname", "pool"],
};

const FACTS: Upsert = Upsert {
    table: "facts",
    columns: &["hostname", "body"],
    key: &["hostname"],
};

const EVENT_LOGS: Upsert = Upsert {
    table: "event_logs",
    columns: &["hostname", "domain", "log_sha256", "body"],
    key: &["hostname", "domain"],
};

const CLOCKS: Upsert = Upsert {
    table: "tpm_clocks",
    columns: &["hostname", "reset_count", "restart_count", "clock"],
    key: &["hostname"],
};

const REVOCATIONS: Upsert = Upsert {
    table: "revocations",
    columns: &["hostname", "revoked_by", "revoked_at_ms", "comment"],
    key: &["hostname"],
};

const ENROLMENTS: Upsert = Upsert {
    table: "enrolments",
    columns: &[
        "hostname",
        "ek_public",
        "ek_certificate",
        "ak_public",
        "ak_name",
        "cert_fingerprint",
        "cert_subject",
        "enrolled_at_ms",
    ],
    key: &["hostname"],
};

const PENDING: Upsert = Upsert {
    table: "pending_enrolments",
    columns: &[
        "hostname",
        "ek_public",
        "ek_certificate",
        "ak_public",
        "ak_name",
        "cert_fingerprint",
        "cert_subject",
        "enrolled_at_ms",
        "reason",
    ],
    key: &["hostname"],
};

/// History is appended, never upserted.
const HISTORY: Upsert = Upsert {
    table: "history",
    columns: &[
        "at_ms",
        "hostname",
        "pool",
        "event",
        "trusted",
        "policy_digest",
        "reasons",
        "actor",
    ],
    key: &[],
};

async fn write_verdicts<'v>(
    tx: &mut Tx<'_>,
    engine: Engine,
    verdicts: impl Iterator<Item = &'v StoredVerdict>,
) -> anyhow::Result<()> {
    let rows: Vec<(&StoredVerdict, String)> = verdicts
        .map(|v| {
            Ok((
                v,
                serde_json::to_string(&v.reasons).context("encoding reasons")?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    write_rows(tx, engine, &VERDICTS, &rows, |q, (v, reasons)| {
        q.bind(v.hostname.as_str())
            .bind(v.pool.as_str())
            .bind(i64::from(v.trusted))
            .bind(v.attested_at_ms)
            .bind(v.valid_until_ms)
            .bind(reasons.as_str())
            .bind(v.policy_digest.as_str())
    })
    .await
}

/// Writes each host's facts body and the log rows it carries (a log
/// without a row here keeps the row the store has).
async fn write_facts(
    tx: &mut Tx<'_>,
    engine: Engine,
    rows: &[(&str, &StoredFacts)],
) -> anyhow::Result<()> {
    write_rows(tx, engine, &FACTS, rows, |q, (host, facts)| {
        q.bind(*host).bind(facts.body.as_str())
    })
    .await?;
    let logs: Vec<(&str, &LogRow)> = rows
        .iter()
        .flat_map(|(host, facts)| facts.logs.iter().map(move |l| (*host, l)))
        .collect();
    write_log_rows(tx, engine, &logs).await
}

async fn write_log_rows(
    tx: &mut Tx<'_>,
    engine: Engine,
    logs: &[(&str, &LogRow)],
) -> anyhow::Result<()> {
    write_rows(tx, engine, &EVENT_LOGS, logs, |q, (host, log)| {
        q.bind(*host)
            .bind(log.domain.as_str())
            .bind(log.log_sha256.as_str())
            .bind(log.body.as_str())
    })
    .await
}

async fn write_clocks(
    tx: &mut Tx<'_>,
    engine: Engine,
    rows: &[(&str, StoredClock)],
) -> anyhow::Result<()> {
    write_rows(tx, engine, &CLOCKS, rows, |q, (host, c)| {
        q.bind(*host)
            .bind(i64::from(c.reset_count))
            .bind(i64::from(c.restart_count))
            .bind(i64::try_from(c.clock).unwrap_or(i64::MAX))
    })
    .await
}

async fn write_revocations(
    tx: &mut Tx<'_>,
    engine: Engine,
    rows: &[Revocation],
) -> anyhow::Result<()> {
    write_rows(tx, engine, &REVOCATIONS, rows, |q, r| {
        q.bind(r.hostname.as_str())
            .bind(r.revoked_by.as_str())
            .bind(r.revoked_at_ms)
            .bind(r.comment.as_str())
    })
    .await
}

/// Writes enrolments into `enrolments` or (with their reason) `pending_enrolments`.
async fn write_enrolments(
    tx: &mut Tx<'_>,
    engine: Engine,
    table: Upsert,
    rows: &[&PendingEnrolment],
) -> anyhow::Result<()> {
    let with_reason = table.columns.len() == PENDING.columns.len();
    write_rows(tx, engine, &table, rows, |q, p| {
        let e = &p.enrolment;
        let q = q
            .bind(e.hostname.as_str())
            .bind(e.ek_public.as_slice())
            .bind(e.ek_certificate.as_deref())
            .bind(e.ak_public.as_slice())
            .bind(e.ak_name.as_slice())
            .bind(e.cert_fingerprint.as_str())
            .bind(e.cert_subject.as_str())
            .bind(e.enrolled_at_ms);
        if with_reason {
            q.bind(p.reason.as_str())
        } else {
            q
        }
    })
    .await
}

async fn insert_history(
    tx: &mut Tx<'_>,
    engine: Engine,
    events: &[HistoryEvent],
) -> anyhow::Result<()> {
    let rows: Vec<(&HistoryEvent, String)> = events
        .iter()
        .map(|e| {
            Ok((
                e,
                serde_json::to_string(&e.reasons).context("encoding history reasons")?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    for chunk in rows.chunks(Upsert::ROWS_PER_STATEMENT) {
        let sql = HISTORY.insert_statement(engine, chunk.len());
        let query = chunk.iter().fold(
            sqlx::query(&sql).persistent(chunk.len() == 1),
            |q, (e, reasons)| {
                q.bind(e.at_ms)
                    .bind(e.hostname.as_str())
                    .bind(e.pool.as_str())
                    .bind(e.event.as_str())
                    .bind(i64::from(e.trusted))
                    .bind(e.policy_digest.as_str())
                    .bind(reasons.as_str())
                    .bind(e.actor.as_str())
            },
        );
        query
            .execute(&mut **tx)
            .await
            .with_context(|| match chunk {
                [(e, _)] => format!("appending a {} event of {}", e.event, e.hostname),
                many => format!("appending {} history events", many.len()),
            })?;
    }
    Ok(())
}

fn history_row(r: &AnyRow) -> anyhow::Result<HistoryEvent> {
    (|| {
        Ok::<_, anyhow::Error>(HistoryEvent {
            at_ms: r.try_get("at_ms")?,
            hostname: text(r, "hostname")?,
            pool: text(r, "pool")?,
            event: text(r, "event")?,
            trusted: flag(r, "trusted")?,
            policy_digest: text(r, "policy_digest")?,
            reasons: serde_json::from_str(&text(r, "reasons")?)
                .context("decoding history reasons")?,
            actor: text(r, "actor")?,
        })
    })()
    .context("decoding a history event")
}

/// Writes a batch of evidence as a few multi-row statements (verdicts,
/// facts put, facts withdrawn, clocks), whatever the batch's size. A host
/// that appears several times in a batch counts with its last record, as if
/// the records were written in order.
async fn write_evidence_rows(
    tx: &mut Tx<'_>,
    engine: Engine,
    batch: &[EvidenceCommit<'_>],
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    // The last word of the batch per (host, pool), per host's facts, per host's clock.
    let mut verdicts: HashMap<(&str, &str), &StoredVerdict> = HashMap::new();
    let mut facts: HashMap<&str, FactsChange<'_>> = HashMap::new();
    // A log row stays written by a later body alone, not past a withdrawal.
    let mut logs: HashMap<(&str, LogDomain), &LogRow> = HashMap::new();
    let mut logs_withdrawn: Vec<&str> = Vec::new();
    let mut clocks: HashMap<&str, StoredClock> = HashMap::new();
    for c in batch {
        for v in c.verdicts {
            verdicts.insert((v.hostname.as_str(), v.pool.as_str()), v);
        }
        match c.facts {
            FactsChange::Keep => {}
            FactsChange::Put(f) => {
                for l in &f.logs {
                    logs.insert((c.hostname, l.domain), l);
                }
            }
            FactsChange::Withdraw => {
                logs.retain(|(host, _), _| *host != c.hostname);
                logs_withdrawn.push(c.hostname);
            }
        }
        if !matches!(c.facts, FactsChange::Keep) {
            facts.insert(c.hostname, c.facts);
        }
        if let Some(clock) = c.clock {
            clocks.insert(c.hostname, clock);
        }
    }
    write_verdicts(tx, engine, verdicts.into_values()).await?;
    let puts: Vec<(&str, &StoredFacts)> = facts
        .iter()
        .filter_map(|(host, f)| match f {
            FactsChange::Put(facts) => Some((*host, *facts)),
            _ => None,
        })
        .collect();
    write_rows(tx, engine, &FACTS, &puts, |q, (host, facts)| {
        q.bind(*host).bind(facts.body.as_str())
    })
    .await?;
    let withdrawn: Vec<&str> = facts
        .iter()
        .filter(|(_, f)| matches!(f, FactsChange::Withdraw))
        .map(|(host, _)| *host)
        .collect();
    // Facts withdrawn by the batch's last word; log rows by any withdrawal
    // (the rows written after it are written below).
    logs_withdrawn.sort_unstable();
    logs_withdrawn.dedup();
    for (table, hosts) in [("facts", &withdrawn), ("event_logs", &logs_withdrawn)] {
        for chunk in hosts.chunks(Upsert::ROWS_PER_STATEMENT) {
            let sql = engine
                .sql(&format!(
                    "DELETE FROM {table} WHERE hostname IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                ))
                .into_owned();
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql).persistent(false), |q, host| q.bind(*host));
            query.execute(&mut **tx).await.with_context(|| {
                format!("withdrawing the evidence facts of {} hosts", chunk.len())
            })?;
        }
    }
    let logs: Vec<(&str, &LogRow)> = logs.into_iter().map(|((h, _), l)| (h, l)).collect();
    write_log_rows(tx, engine, &logs).await?;
    let clocks: Vec<(&str, StoredClock)> = clocks.into_iter().collect();
    write_clocks(tx, engine, &clocks).await
}

/// The engine-independent cases are the store suite (server/tests/store_engines.rs),
/// run on every engine; these are SQLite's own.
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
        let store = Store::connect_with(&DbLocation::Sqlite(path.clone()), false, Some(1))
            .await
            .expect("open");
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
        let big = StoredFacts::body_only("x".repeat(200_000));
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
                facts: FactsChange::Put(&StoredFacts::body_only("{}")),
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
        other
            .put_facts("host-b", &StoredFacts::body_only("{}"))
            .await
            .expect("not locked");
        assert!(store.probe().await.is_ok());
        assert!(store.health().ok());
    }

    /// A burst of enrolments leaves connections to the group commit, the
    /// probe, the lease and the change follower.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_enrolments_never_holds_every_connection() {
        assert_eq!(enrolment_slots(Engine::Postgres, 8), 5);
        assert_eq!(enrolment_slots(Engine::MySql, 8), 5);
        assert_eq!(enrolment_slots(Engine::MySql, 2), 1);
        assert_eq!(enrolment_slots(Engine::Sqlite, 4), 4);
        // The limit at work, on an SQLite file with a server engine's rule
        // (a pool of 4: one enrolment at a time).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("t.db")).await.expect("open");
        let max = store.pool.options().get_max_connections() as usize;
        assert_eq!(max, 4);
        let slots = enrolment_slots(Engine::Postgres, max as u32);
        store.enrol_slots = Arc::new(tokio::sync::Semaphore::new(slots));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let monitor = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut busiest = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let in_use = (store.pool.size() as usize).saturating_sub(store.pool.num_idle());
                    busiest = busiest.max(in_use);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                busiest
            })
        };
        let burst: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.insert_enrolment(&enrolment(&format!("h{i}"))).await },
                )
            })
            .collect();
        for b in burst {
            b.await.expect("join").expect("stored");
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let busiest = monitor.await.expect("monitor");
        // One enrolment writing, and at most one connection on its way back
        // to the pool (sqlx returns it in a task of its own).
        assert!(
            busiest <= 2 * slots,
            "{busiest} of {max} connections held by enrolments"
        );
        assert_eq!(store.enrolments().await.expect("read").len(), 40);
    }

    #[test]
    fn a_probe_starved_of_connections_fails_closed_only_when_nothing_commits() {
        // A pool at its maximum is busy, whatever committed.
        assert!(!pool_timeout_means_unreachable(false, false));
        assert!(!pool_timeout_means_unreachable(false, true));
        // Below its maximum: unreachable only if no other write committed
        // meanwhile (a cold start of 19,000 agents on two replicas shrank
        // the pool while PostgreSQL committed hundreds of enrolments a
        // second, and the old rule answered 503 for 1.6-4 s).
        assert!(!pool_timeout_means_unreachable(true, true));
        assert!(pool_timeout_means_unreachable(true, false));
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

    /// The schema of the release before migrations, verbatim: its databases
    /// must open in place.
    const RELEASE_1_SCHEMA: &[&str] = &[
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

    #[tokio::test]
    async fn a_database_of_the_release_before_migrations_migrates_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("create");
        for statement in RELEASE_1_SCHEMA {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .expect("old schema");
        }
        sqlx::query("INSERT INTO store_identity VALUES (1, 'old-store', 1, 1)")
            .execute(&mut conn)
            .await
            .expect("identity");
        sqlx::query(
            "INSERT INTO enrolments VALUES ('host-a', x'010203', x'04', x'0506', x'000b07', 'ab', 'CN=host-a', 42)",
        )
        .execute(&mut conn)
        .await
        .expect("enrolment");
        sqlx::query("INSERT INTO verdicts VALUES ('host-a', 'default', 1, 1, 2, '[]', 'd')")
            .execute(&mut conn)
            .await
            .expect("verdict");
        conn.close().await.expect("close");
        std::fs::write(id_file_path(&path), "old-store\n").expect("id file");

        let store = Store::open(&path).await.expect("migrated in place");
        assert_eq!(store.store_id(), "old-store");
        assert_eq!(
            store.enrolments().await.expect("read"),
            vec![enrolment("host-a")]
        );
        assert!(store.verdicts().await.expect("read")[0].trusted);
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .expect("versions");
        let all: Vec<i64> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, all);
        store
            .insert_enrolment(&enrolment("host-b"))
            .await
            .expect("writes");
        assert!(store.probe().await.is_ok());
    }

    #[tokio::test]
    async fn every_pooled_connection_runs_in_wal_with_full_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).await.expect("open");
        for _ in 0..4 {
            let mut conn = store.pool.acquire().await.expect("connection");
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .expect("journal_mode");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .expect("synchronous");
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .expect("busy_timeout");
            assert_eq!((mode.as_str(), sync, busy), ("wal", 2, 5000));
        }
    }
}
