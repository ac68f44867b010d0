//! Store identity: the store id inside the database and in the file beside it.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// Why a database cannot be opened as this server's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityProblem {
    /// The database file is missing but the store-id file says one existed.
    Missing {
        /// The store id the file remembers.
        expected: String,
    },
    /// The database holds no store id (an empty or foreign file) while the
    /// store-id file remembers one.
    Unidentified {
        /// The store id the file remembers.
        expected: String,
    },
    /// The database belongs to another store.
    Other {
        /// The store id the file remembers.
        expected: String,
        /// The store id of the database.
        found: String,
    },
}

/// What start-up does about the store identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAction {
    /// Database and store-id file agree.
    Keep,
    /// The database has an id the file does not hold (first start with this
    /// version, a deleted id file, or `--init-db` over another store's
    /// database): write it to the file.
    Remember(String),
    /// Give the database a new id and remember it.
    Create,
}

/// Decides how to open the store from the store id in the database (if the
/// file exists and has one), the one in the store-id file, and `--init-db`.
/// `db_exists` is false when the database file is missing.
pub fn reconcile_identity(
    db_exists: bool,
    in_db: Option<&str>,
    in_file: Option<&str>,
    init_db: bool,
) -> Result<IdentityAction, IdentityProblem> {
    match (in_db, in_file) {
        (Some(db), Some(file)) if db == file => Ok(IdentityAction::Keep),
        (Some(db), None) => Ok(IdentityAction::Remember(db.to_string())),
        (None, None) => Ok(IdentityAction::Create),
        _ if init_db => Ok(match in_db {
            Some(db) => IdentityAction::Remember(db.to_string()),
            None => IdentityAction::Create,
        }),
        (Some(db), Some(file)) => Err(IdentityProblem::Other {
            expected: file.to_string(),
            found: db.to_string(),
        }),
        (None, Some(file)) if !db_exists => Err(IdentityProblem::Missing {
            expected: file.to_string(),
        }),
        (None, Some(file)) => Err(IdentityProblem::Unidentified {
            expected: file.to_string(),
        }),
    }
}

impl std::fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityProblem::Missing { expected } => write!(
                f,
                "the database is missing but store {expected} existed here: restore it from a backup (docs/database.md), or start once with --init-db to begin a new, empty store (every enrolment, approval and revocation is lost)"
            ),
            IdentityProblem::Unidentified { expected } => write!(
                f,
                "the database holds no store id but store {expected} existed here (an empty or foreign file?): restore the database from a backup, or start once with --init-db to accept this file as a new store"
            ),
            IdentityProblem::Other { expected, found } => write!(
                f,
                "the database is store {found}, not store {expected} that existed here: put the right database back, or start once with --init-db to accept this one"
            ),
        }
    }
}

/// The file beside the database that remembers its store id:
/// `<dir>/.<name>.store-id`. It is hidden so that `rm trustpool.db*` does
/// not take it along.
pub fn id_file_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trustpool.db".into());
    db.with_file_name(format!(".{name}.store-id"))
}

pub(super) fn read_id_file(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() {
                anyhow::bail!("the store-id file {} is empty", path.display());
            }
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the store-id file {}", path.display()))
        }
    }
}

/// Writes the store-id file durably (temporary file, fsync, rename, fsync of the directory).
pub(super) fn write_id_file(path: &Path, id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot write the store-id file {}", tmp.display()))?;
    f.write_all(format!("{id}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write the store-id file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the store-id file {}", path.display()))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
    }
    Ok(())
}

pub(super) fn new_store_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
