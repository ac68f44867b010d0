//! The store's schema as versioned migrations, one text per engine.
//!
//! `schema_version` records every migration applied. A database made before
//! migrations existed (release 1's SQLite file) has the tables of version 1
//! and no `schema_version`: version 1 only creates what is missing, so it
//! migrates in place. A database whose schema is newer than this server
//! knows is refused: an old replica must not write into a schema it does not
//! understand.
//!
//! Column types are chosen so that every engine compares and sorts the same
//! way: host and pool names are `VARCHAR(255)` with a binary collation on
//! MariaDB (case-sensitive, as in SQLite and PostgreSQL), booleans are
//! integers 0/1, times are milliseconds in 64-bit integers.

use super::engine::Engine;

/// One step of the schema.
#[derive(Debug)]
pub struct Migration {
    /// Its version (1, 2, …; applied in order).
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
    mysql: &'static [&'static str],
}

impl Migration {
    /// Its statements on `engine`.
    pub fn statements(&self, engine: Engine) -> &'static [&'static str] {
        match engine {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.postgres,
            Engine::MySql => self.mysql,
        }
    }
}

/// The table of applied migrations (created before any migration).
pub fn version_table(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite | Engine::Postgres => {
            "CREATE TABLE IF NOT EXISTS schema_version (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at_ms BIGINT NOT NULL
            )"
        }
        Engine::MySql => {
            "CREATE TABLE IF NOT EXISTS schema_version (
                version BIGINT PRIMARY KEY,
                name VARCHAR(255) NOT NULL,
                applied_at_ms BIGINT NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        }
    }
}

/// The newest schema version this server knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "enrolments, verdicts, facts, TPM clocks, history, store identity",
        sqlite: &[
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
        ],
        postgres: &[
            "CREATE TABLE IF NOT EXISTS enrolments (
            hostname VARCHAR(255) PRIMARY KEY,
            ek_public BYTEA NOT NULL,
            ek_certificate BYTEA,
            ak_public BYTEA NOT NULL,
            ak_name BYTEA NOT NULL,
            cert_fingerprint TEXT NOT NULL,
            cert_subject TEXT NOT NULL,
            enrolled_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS verdicts (
            hostname VARCHAR(255) NOT NULL,
            pool VARCHAR(255) NOT NULL,
            trusted BIGINT NOT NULL,
            attested_at_ms BIGINT NOT NULL,
            valid_until_ms BIGINT NOT NULL,
            reasons TEXT NOT NULL,
            policy_digest TEXT NOT NULL,
            PRIMARY KEY (hostname, pool)
        )",
            "CREATE TABLE IF NOT EXISTS pending_enrolments (
            hostname VARCHAR(255) PRIMARY KEY,
            ek_public BYTEA NOT NULL,
            ek_certificate BYTEA,
            ak_public BYTEA NOT NULL,
            ak_name BYTEA NOT NULL,
            cert_fingerprint TEXT NOT NULL,
            cert_subject TEXT NOT NULL,
            enrolled_at_ms BIGINT NOT NULL,
            reason TEXT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS revocations (
            hostname VARCHAR(255) PRIMARY KEY,
            revoked_by TEXT NOT NULL,
            revoked_at_ms BIGINT NOT NULL,
            comment TEXT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS facts (
            hostname VARCHAR(255) PRIMARY KEY,
            body TEXT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS history (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            hostname VARCHAR(255) NOT NULL,
            pool VARCHAR(255) NOT NULL,
            event VARCHAR(64) NOT NULL,
            trusted BIGINT NOT NULL,
            policy_digest TEXT NOT NULL,
            reasons TEXT NOT NULL,
            actor TEXT NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS history_by_host ON history (hostname, at_ms)",
            "CREATE TABLE IF NOT EXISTS store_identity (
            id BIGINT PRIMARY KEY CHECK (id = 1),
            store_id TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            heartbeat_ms BIGINT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS tpm_clocks (
            hostname VARCHAR(255) PRIMARY KEY,
            reset_count BIGINT NOT NULL,
            restart_count BIGINT NOT NULL,
            clock BIGINT NOT NULL
        )",
        ],
        mysql: &[
            "CREATE TABLE IF NOT EXISTS enrolments (
            hostname VARCHAR(255) PRIMARY KEY,
            ek_public LONGBLOB NOT NULL,
            ek_certificate LONGBLOB,
            ak_public LONGBLOB NOT NULL,
            ak_name LONGBLOB NOT NULL,
            cert_fingerprint VARCHAR(255) NOT NULL,
            cert_subject TEXT NOT NULL,
            enrolled_at_ms BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS verdicts (
            hostname VARCHAR(255) NOT NULL,
            pool VARCHAR(255) NOT NULL,
            trusted BIGINT NOT NULL,
            attested_at_ms BIGINT NOT NULL,
            valid_until_ms BIGINT NOT NULL,
            reasons LONGTEXT NOT NULL,
            policy_digest VARCHAR(255) NOT NULL,
            PRIMARY KEY (hostname, pool)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS pending_enrolments (
            hostname VARCHAR(255) PRIMARY KEY,
            ek_public LONGBLOB NOT NULL,
            ek_certificate LONGBLOB,
            ak_public LONGBLOB NOT NULL,
            ak_name LONGBLOB NOT NULL,
            cert_fingerprint VARCHAR(255) NOT NULL,
            cert_subject TEXT NOT NULL,
            enrolled_at_ms BIGINT NOT NULL,
            reason TEXT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS revocations (
            hostname VARCHAR(255) PRIMARY KEY,
            revoked_by VARCHAR(255) NOT NULL,
            revoked_at_ms BIGINT NOT NULL,
            comment TEXT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS facts (
            hostname VARCHAR(255) PRIMARY KEY,
            body LONGTEXT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS history (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            hostname VARCHAR(255) NOT NULL,
            pool VARCHAR(255) NOT NULL,
            event VARCHAR(64) NOT NULL,
            trusted BIGINT NOT NULL,
            policy_digest VARCHAR(255) NOT NULL,
            reasons LONGTEXT NOT NULL,
            actor VARCHAR(1024) NOT NULL,
            INDEX history_by_host (hostname, at_ms)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS store_identity (
            id BIGINT PRIMARY KEY CHECK (id = 1),
            store_id VARCHAR(255) NOT NULL,
            created_at_ms BIGINT NOT NULL,
            heartbeat_ms BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS tpm_clocks (
            hostname VARCHAR(255) PRIMARY KEY,
            reset_count BIGINT NOT NULL,
            restart_count BIGINT NOT NULL,
            clock BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 2,
        name: "replicas: the change table, leases, replica presence",
        sqlite: &[
            "CREATE TABLE IF NOT EXISTS changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            replica TEXT NOT NULL,
            stamp INTEGER NOT NULL,
            hosts TEXT NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS changes_by_time ON changes (at_ms)",
            "CREATE TABLE IF NOT EXISTS leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_ms INTEGER NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS replicas (
            name TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            policy_digest TEXT NOT NULL,
            started_ms INTEGER NOT NULL,
            seen_ms INTEGER NOT NULL
        )",
        ],
        postgres: &[
            "CREATE TABLE IF NOT EXISTS changes (
            seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            replica TEXT NOT NULL,
            stamp BIGINT NOT NULL,
            hosts TEXT NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS changes_by_time ON changes (at_ms)",
            "CREATE TABLE IF NOT EXISTS leases (
            name VARCHAR(255) PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_ms BIGINT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS replicas (
            name VARCHAR(255) PRIMARY KEY,
            instance TEXT NOT NULL,
            policy_digest TEXT NOT NULL,
            started_ms BIGINT NOT NULL,
            seen_ms BIGINT NOT NULL
        )",
        ],
        mysql: &[
            "CREATE TABLE IF NOT EXISTS changes (
            seq BIGINT AUTO_INCREMENT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            replica VARCHAR(255) NOT NULL,
            stamp BIGINT NOT NULL,
            hosts LONGTEXT NOT NULL,
            INDEX changes_by_time (at_ms)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS leases (
            name VARCHAR(255) PRIMARY KEY,
            holder VARCHAR(255) NOT NULL,
            expires_ms BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS replicas (
            name VARCHAR(255) PRIMARY KEY,
            instance VARCHAR(255) NOT NULL,
            policy_digest VARCHAR(255) NOT NULL,
            started_ms BIGINT NOT NULL,
            seen_ms BIGINT NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 3,
        name: "event logs: the facts of each host's replayed logs, a row per log",
        sqlite: &["CREATE TABLE IF NOT EXISTS event_logs (
            hostname TEXT NOT NULL,
            domain TEXT NOT NULL,
            log_sha256 TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (hostname, domain)
        )"],
        postgres: &["CREATE TABLE IF NOT EXISTS event_logs (
            hostname VARCHAR(255) NOT NULL,
            domain VARCHAR(16) NOT NULL,
            log_sha256 VARCHAR(64) NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (hostname, domain)
        )"],
        mysql: &["CREATE TABLE IF NOT EXISTS event_logs (
            hostname VARCHAR(255) NOT NULL,
            domain VARCHAR(16) NOT NULL,
            log_sha256 VARCHAR(64) NOT NULL,
            body LONGTEXT NOT NULL,
            PRIMARY KEY (hostname, domain)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_follow_each_other() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            for engine in [Engine::Sqlite, Engine::Postgres, Engine::MySql] {
                assert!(!m.statements(engine).is_empty(), "{} on {engine:?}", m.name);
            }
        }
        assert_eq!(latest(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn every_engine_creates_the_same_tables() {
        fn tables(statements: &[&str]) -> Vec<String> {
            let mut t: Vec<String> = statements
                .iter()
                .filter_map(|s| s.split("CREATE TABLE IF NOT EXISTS ").nth(1))
                .filter_map(|s| s.split_whitespace().next())
                .map(str::to_string)
                .collect();
            t.sort();
            t
        }
        for m in MIGRATIONS {
            let sqlite = tables(m.statements(Engine::Sqlite));
            assert_eq!(sqlite, tables(m.statements(Engine::Postgres)), "{}", m.name);
            assert_eq!(sqlite, tables(m.statements(Engine::MySql)), "{}", m.name);
        }
    }
}
