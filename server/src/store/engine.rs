//! The database engines the store runs on (`--db`), and the few places where
//! their SQL differs. Everything else is one code path over sqlx's `Any`
//! driver: the statements are written once, with `?` placeholders, and
//! [`Engine::sql`] adapts them.

use anyhow::Context;
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the store lives, as given by `--db`.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// An SQLite file (`sqlite:///var/lib/trustpool/trustpool.db`, `sqlite:rel.db`
    /// or a plain path): the embedded default, for one server.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://user:pass@host:port/db`).
    Postgres(String),
    /// A MariaDB or MySQL database (`mysql://user:pass@host:port/db`;
    /// `mariadb://` is taken as a synonym).
    MySql(String),
}

impl DbLocation {
    /// The engine behind this location.
    pub fn engine(&self) -> Engine {
        match self {
            DbLocation::Sqlite(_) => Engine::Sqlite,
            DbLocation::Postgres(_) => Engine::Postgres,
            DbLocation::MySql(_) => Engine::MySql,
        }
    }

    /// The SQLite file, for the SQLite engine.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            DbLocation::Sqlite(p) => Some(p),
            _ => None,
        }
    }
}

impl FromStr for DbLocation {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<DbLocation> {
        let s = s.trim();
        if s.is_empty() {
            anyhow::bail!("the database location is empty");
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Ok(DbLocation::Sqlite(PathBuf::from(s)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    anyhow::bail!("{s}: an sqlite: location needs a file path");
                }
                Ok(DbLocation::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => {
                check_server_url(s)?;
                Ok(DbLocation::Postgres(s.to_string()))
            }
            "mysql" | "mariadb" => {
                check_server_url(s)?;
                Ok(DbLocation::MySql(format!("mysql:{rest}")))
            }
            // A path with a colon in it, not a URL.
            _ if !rest.starts_with("//") => Ok(DbLocation::Sqlite(PathBuf::from(s))),
            other => anyhow::bail!(
                "{}: unknown database scheme {other}: (use sqlite:, postgres:// or mysql://)",
                redact(s)
            ),
        }
    }
}

/// A server URL needs a host and a database name.
fn check_server_url(s: &str) -> anyhow::Result<()> {
    let rest = s.split_once("://").map(|(_, r)| r).with_context(|| {
        format!(
            "{}: expected scheme://user:password@host:port/database",
            redact(s)
        )
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        anyhow::bail!("{}: the URL names no host", redact(s));
    }
    let database = path.split('?').next().unwrap_or_default();
    if database.is_empty() {
        anyhow::bail!("{}: the URL names no database", redact(s));
    }
    Ok(())
}

/// The URL with its password replaced by `***` (for logs and errors).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(p) => write!(f, "{}", p.display()),
            DbLocation::Postgres(u) | DbLocation::MySql(u) => f.write_str(&redact(u)),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbLocation({self})")
    }
}

/// A database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite (WAL, synchronous=FULL).
    Sqlite,
    /// PostgreSQL ≥ 15.
    Postgres,
    /// MariaDB ≥ 10.11 or MySQL (InnoDB).
    MySql,
}

impl Engine {
    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
        }
    }

    /// An SQL expression for the database server's clock in Unix
    /// milliseconds: leases and replica presence are timed by the one clock
    /// every replica shares, not by theirs.
    pub fn now_ms_sql(self) -> &'static str {
        match self {
            Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Engine::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Engine::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        }
    }

    /// `sql` with its `?` placeholders in this engine's syntax (PostgreSQL
    /// numbers them: `$1`, `$2`…). A `?` inside a quoted literal is left alone.
    pub fn sql(self, sql: &str) -> Cow<'_, str> {
        if self != Engine::Postgres || !sql.contains('?') {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        let mut quote: Option<char> = None;
        for c in sql.chars() {
            match (quote, c) {
                (None, '\'' | '"') => {
                    quote = Some(c);
                    out.push(c);
                }
                (Some(q), c) if c == q => {
                    quote = None;
                    out.push(c);
                }
                (None, '?') => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            }
        }
        Cow::Owned(out)
    }

    /// The tail of an `INSERT` that updates `update` from the inserted row
    /// when a row with the same `key` exists; with no `update` columns, the
    /// existing row is kept and the insert does nothing.
    pub fn upsert_tail(self, key: &[&str], update: &[&str]) -> String {
        match self {
            Engine::Sqlite | Engine::Postgres => {
                let key = key.join(", ");
                if update.is_empty() {
                    return format!(" ON CONFLICT ({key}) DO NOTHING");
                }
                let set: Vec<String> = update
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", "))
            }
            Engine::MySql => {
                if update.is_empty() {
                    // Not INSERT IGNORE: that also turns real errors into warnings.
                    let k = key[0];
                    return format!(" ON DUPLICATE KEY UPDATE {k} = {k}");
                }
                let set: Vec<String> = update
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
        }
    }
}

/// An `INSERT` of many rows at once that replaces (or, with no update
/// columns, keeps) the rows whose key already exists: the one shape of every
/// multi-row write of the store.
#[derive(Debug, Clone, Copy)]
pub struct Upsert {
    /// The table.
    pub table: &'static str,
    /// Every column written, in bind order.
    pub columns: &'static [&'static str],
    /// The primary key columns (a prefix or subset of `columns`).
    pub key: &'static [&'static str],
}

impl Upsert {
    /// Rows per statement: few enough for every engine's parameter limit
    /// (SQLite 32,766, PostgreSQL and MySQL 65,535) with ten columns a row.
    pub const ROWS_PER_STATEMENT: usize = 512;

    /// The statement for `rows` rows, in `engine`'s syntax.
    pub fn statement(&self, engine: Engine, rows: usize) -> String {
        let mut sql = self.insert(rows);
        let update: Vec<&str> = self
            .columns
            .iter()
            .copied()
            .filter(|c| !self.key.contains(c))
            .collect();
        sql.push_str(&engine.upsert_tail(self.key, &update));
        engine.sql(&sql).into_owned()
    }

    /// A plain `INSERT` of `rows` rows (for a table with no key to meet,
    /// such as the append-only history).
    pub fn insert_statement(&self, engine: Engine, rows: usize) -> String {
        engine.sql(&self.insert(rows)).into_owned()
    }

    fn insert(&self, rows: usize) -> String {
        let row = format!("({})", vec!["?"; self.columns.len()].join(", "));
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.columns.join(", ")
        );
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&row);
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_to_their_engine() {
        let l: DbLocation = "/var/lib/trustpool/trustpool.db".parse().expect("path");
        assert_eq!(
            l,
            DbLocation::Sqlite("/var/lib/trustpool/trustpool.db".into())
        );
        let l: DbLocation = "sqlite:///var/lib/t.db".parse().expect("url");
        assert_eq!(l, DbLocation::Sqlite("/var/lib/t.db".into()));
        let l: DbLocation = "sqlite:rel.db".parse().expect("relative");
        assert_eq!(l, DbLocation::Sqlite("rel.db".into()));
        let l: DbLocation = "postgres://u:secret@db:5432/trustpool".parse().expect("pg");
        assert_eq!(l.engine(), Engine::Postgres);
        let l: DbLocation = "mariadb://u:secret@db:3306/trustpool"
            .parse()
            .expect("maria");
        assert_eq!(
            l,
            DbLocation::MySql("mysql://u:secret@db:3306/trustpool".into())
        );
        assert_eq!(l.to_string(), "mysql://u:***@db:3306/trustpool");
        assert!(!format!("{l:?}").contains("secret"));
    }

    #[test]
    fn bad_locations_are_refused_without_showing_the_password() {
        for bad in [
            "",
            "sqlite://",
            "postgres://u:secret@db:5432",
            "postgres://u:secret@/trustpool",
            "mysql://u:secret@db/",
            "oracle://u:secret@db/x",
        ] {
            let err = bad.parse::<DbLocation>().expect_err(bad).to_string();
            assert!(!err.contains("secret"), "{bad}: {err}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)";
        assert_eq!(Engine::Sqlite.sql(sql), sql);
        assert_eq!(Engine::MySql.sql(sql), sql);
        assert_eq!(
            Engine::Postgres.sql(sql),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)"
        );
    }

    #[test]
    fn an_upsert_updates_every_column_but_the_key() {
        let u = Upsert {
            table: "t",
            columns: &["k1", "k2", "v"],
            key: &["k1", "k2"],
        };
        assert_eq!(
            u.statement(Engine::Postgres, 2),
            "INSERT INTO t (k1, k2, v) VALUES ($1, $2, $3), ($4, $5, $6) \
             ON CONFLICT (k1, k2) DO UPDATE SET v = excluded.v"
        );
        assert_eq!(
            u.statement(Engine::MySql, 1),
            "INSERT INTO t (k1, k2, v) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        );
        let keep = Upsert {
            table: "t",
            columns: &["k"],
            key: &["k"],
        };
        assert_eq!(
            keep.statement(Engine::Sqlite, 1),
            "INSERT INTO t (k) VALUES (?) ON CONFLICT (k) DO NOTHING"
        );
        assert_eq!(
            keep.statement(Engine::MySql, 1),
            "INSERT INTO t (k) VALUES (?) ON DUPLICATE KEY UPDATE k = k"
        );
    }
}
