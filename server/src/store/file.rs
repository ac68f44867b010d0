//! What only the SQLite engine has: a database that is a file. It is
//! created once, never by the connection pool; it must stay the file that
//! was opened (same device and inode, same store-id file beside it); and it
//! is backed up with `VACUUM INTO`.

use anyhow::Context;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::Connection;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tracing::{info, warn};

use super::identity::*;

/// The database file as it was opened, to notice that it was removed or
/// replaced under the running server.
#[derive(Debug)]
pub(super) struct OpenedFile {
    pub path: PathBuf,
    pub id_file: PathBuf,
    dev: u64,
    ino: u64,
}

/// Before the pool opens `path`: refuses a missing database whose store-id
/// file says one existed (unless `init_db`), and creates the file on a
/// first start. Returns whether the file existed and the id the file
/// beside it remembers.
pub(super) async fn prepare(path: &Path, init_db: bool) -> anyhow::Result<(bool, Option<String>)> {
    let in_file = read_id_file(&id_file_path(path))?;
    let db_exists = path.exists();
    if !db_exists {
        if let (Some(expected), false) = (&in_file, init_db) {
            let problem = IdentityProblem::Missing {
                expected: expected.clone(),
            };
            anyhow::bail!("refusing to create {}: {problem}", path.display());
        }
        // Created here, once; the pool never creates a file (a database
        // removed under the server must not come back empty).
        let options = options(path)?.create_if_missing(true);
        let conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("cannot open database {}", path.display()))?;
        if in_file.is_some() {
            warn!(db = %path.display(), "--init-db: creating a new, empty store in place of the one that existed");
        } else {
            info!(db = %path.display(), "first start: creating the database");
        }
        let _ = conn.close().await;
    }
    Ok((db_exists, in_file))
}

/// The URL of `path` for the pool: read-write, never created.
pub(super) fn pool_url(path: &Path) -> anyhow::Result<String> {
    let path = path
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", path.display()))?;
    if path.contains(['?', '#']) {
        anyhow::bail!("{path}: a database path may not contain '?' or '#'");
    }
    Ok(format!("sqlite://{path}?mode=rw"))
}

/// What every pooled SQLite connection sets first.
pub(super) const PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000";

fn options(path: &Path) -> anyhow::Result<SqliteConnectOptions> {
    Ok(
        SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .with_context(|| format!("bad database path {}", path.display()))?
            .busy_timeout(std::time::Duration::from_secs(5)),
    )
}

/// Remembers the file just opened (after the schema and identity are in it).
pub(super) fn opened(
    path: &Path,
    store_id: &str,
    action: &IdentityAction,
) -> anyhow::Result<OpenedFile> {
    let id_file = id_file_path(path);
    if let IdentityAction::Remember(_) | IdentityAction::Create = action {
        write_id_file(&id_file, store_id)?;
        info!(db = %path.display(), store_id, id_file = %id_file.display(), "store id remembered beside the database");
    }
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot stat the database {}", path.display()))?;
    Ok(OpenedFile {
        path: path.to_path_buf(),
        id_file,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

impl OpenedFile {
    /// Why the file is no longer the store `store_id` that was opened, if it is not.
    pub fn problem(&self, store_id: &str) -> Option<String> {
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the database file {} was removed",
                self.path.display()
            )),
            Err(e) => Some(format!(
                "cannot stat the database file {}: {e}",
                self.path.display()
            )),
            Ok(m) if (m.dev(), m.ino()) != (self.dev, self.ino) => Some(format!(
                "the database file {} was replaced by another file",
                self.path.display()
            )),
            Ok(_) => match read_id_file(&self.id_file) {
                Ok(Some(id)) if id == store_id => None,
                Ok(Some(id)) => Some(format!(
                    "the store-id file {} now names store {id}, not {store_id}",
                    self.id_file.display(),
                )),
                Ok(None) => Some(format!(
                    "the store-id file {} was removed",
                    self.id_file.display()
                )),
                Err(e) => Some(format!("{e:#}")),
            },
        }
    }
}

/// `trustpool-server backup`: copies the database `db` (possibly in use by
/// a running server) into the new file `to`, and returns the store id of
/// the copy.
pub async fn backup_file(db: &Path, to: &Path) -> anyhow::Result<String> {
    if !db.exists() {
        anyhow::bail!("the database {} does not exist", db.display());
    }
    let mut conn = sqlx::SqliteConnection::connect_with(&options(db)?.create_if_missing(false))
        .await
        .with_context(|| format!("cannot open database {}", db.display()))?;
    vacuum_into(&mut conn, to).await?;
    let _ = conn.close().await;
    let copy = options(to)?.read_only(true);
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

/// Copies the database behind `conn` into the new file `to`.
pub(super) async fn vacuum_into<'c, E>(conn: E, to: &Path) -> anyhow::Result<()>
where
    E: sqlx::Executor<'c>,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
    for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
{
    if to.exists() {
        anyhow::bail!("{} exists: a backup never overwrites a file", to.display());
    }
    let target = to
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", to.display()))?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(conn)
        .await
        .with_context(|| format!("backing up into {}", to.display()))?;
    Ok(())
}
