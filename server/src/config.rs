//! Server configuration: command-line flags, optionally backed by a TOML file
//! given with `--config`. A flag always overrides the file; unknown keys in the
//! file are refused with their line.

use crate::store::DbLocation;
use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trustpool_evidence::duration::{parse_duration, serde_human};

/// Command line of `trustpool-server`.
#[derive(Debug, Parser)]
#[command(
    name = "trustpool-server",
    version,
    about = "trustpool attestation server",
    after_help = "Backup: `trustpool-server backup --db FILE --to NEWFILE` copies an SQLite database consistently while the server runs.\nMigrate: `trustpool-server migrate --from sqlite:///var/lib/trustpool/trustpool.db --to postgres://…` copies a store into another database (docs/database.md)."
)]
pub struct ServerArgs {
    /// TOML file with any of the options below (keys in snake_case, e.g. grpc_listen);
    /// without --config, /etc/trustpool/server.toml is read if it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the mutual-TLS gRPC listener for agents, e.g. 0.0.0.0:7443.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the HTTP feed listener, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// The database: an SQLite file (a path or `sqlite:///path`; created on
    /// the first start only: once a store existed there, its id kept in
    /// `.<name>.store-id` beside it, a missing or foreign database stops
    /// start-up unless --init-db is given), or a database shared by
    /// replicas: `postgres://user:password@host:port/database` or
    /// `mysql://user:password@host:port/database` (MariaDB). Put a URL with
    /// a password in the configuration file, not on the command line.
    #[arg(long)]
    pub db: Option<DbLocation>,
    /// Accept a missing database (a new, empty store is created) or a
    /// database of another store in place of the one that existed: every
    /// enrolment, approval and revocation of the old store is gone. Give it
    /// once, deliberately; restore from a backup instead when there is one.
    #[arg(long)]
    pub init_db: bool,
    /// PEM CA certificate(s) that issue agent client certificates.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// PEM certificate of this server.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// PEM private key of this server.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Directory of pool policies, one `<pool>.toml` per pool.
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
    /// Directory of PEM TPM vendor certificates (roots and intermediates) trusted for EK certificates.
    #[arg(long)]
    pub ek_roots: Option<PathBuf>,
    /// EK allowlist: a file of `HOSTNAME EK-NAME` lines (the EK's TPM name in
    /// hex, as `tpm2_readpublic` prints it). When set, a host enrols only with
    /// the EK listed for it (a listed EK needs no vendor certificate).
    #[arg(long)]
    pub ek_allowlist: Option<PathBuf>,
    /// Time between two attestation rounds of an agent (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub report_interval: Option<Duration>,
    /// A host whose last good report is older than this is out of every pool (default 75s).
    #[arg(long, value_parser = parse_duration)]
    pub down_time: Option<Duration>,
    /// HTTP/2 keep-alive on agent streams: ping after this much silence (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_interval: Option<Duration>,
    /// HTTP/2 keep-alive: an agent whose ping is not answered within this time
    /// is disconnected (`stream.lost`) (default 5s).
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// This replica's name among the servers sharing its database, unique
    /// per replica (default `<hostname>:<gRPC port>`).
    #[arg(long)]
    pub replica_name: Option<String>,
    /// How long the maintenance lease (Placement sync, expiry history) lasts
    /// unrenewed: a dead holder's work moves to another replica within it
    /// (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub lease_period: Option<Duration>,
    /// Attestation rounds (challenge sent to verdict sent) in progress at
    /// once across all agents (default 1024); a round beyond it waits for a
    /// slot, stretching that host's interval (docs/operating.md, overload).
    #[arg(long)]
    pub max_attestations_in_flight: Option<usize>,
    /// Enrolments (credential activations) in progress at once (default 256).
    #[arg(long)]
    pub max_enrolments_in_flight: Option<usize>,
    /// PEM CA certificate(s) whose client certificates may read the feed (HTTPS listener).
    #[arg(long)]
    pub reader_ca: Option<PathBuf>,
    /// A feed reader token as NAME=SHA256HEX (hex of SHA-256 of the token); repeatable.
    #[arg(long = "feed-token", value_name = "NAME=SHA256HEX")]
    pub feed_tokens: Vec<String>,
    /// Path prefix of OpenAttestation PollHosts (default /OpenAttestationWebServices/V1.0).
    #[arg(long)]
    pub oat_prefix: Option<String>,
    /// The pool PollHosts reports on (default "default").
    #[arg(long)]
    pub oat_pool: Option<String>,
    /// Hex SHA-256 of the x-auth-blob that PollHosts requires; PollHosts is
    /// served only with it (or with --oat-allow-anonymous).
    #[arg(long)]
    pub oat_auth_blob_sha256: Option<String>,
    /// Serve PollHosts without an x-auth-blob, to anyone who reaches the listener (a lab only).
    #[arg(long)]
    pub oat_allow_anonymous: bool,
    /// Connections the HTTPS listener holds open at once (default 1024).
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// Require a reader credential on /metrics (default: open).
    #[arg(long)]
    pub metrics_auth: bool,
    /// Certificate name (SAN DNS or CN) of an operator allowed on the admin
    /// API over mutual TLS; repeatable. The certificate must be issued by
    /// --operator-ca.
    #[arg(long = "operator", value_name = "NAME")]
    pub operators: Vec<String>,
    /// PEM CA certificate(s) that issue operator client certificates for the
    /// admin API over mutual TLS (without it, the admin API is served on the
    /// local --admin-socket only). Must not be the agents' CA.
    #[arg(long)]
    pub operator_ca: Option<PathBuf>,
    /// A certificate revocation list (PEM or DER) of the agents', operator
    /// or reader CA; repeatable; re-read on SIGHUP.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
    /// Local UNIX socket of the admin API, usable by root only (created 0600).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
}

/// Command line of `trustpool-server backup`.
#[derive(Debug, Parser)]
#[command(
    name = "trustpool-server backup",
    about = "Copy the database consistently (SQLite VACUUM INTO) while the server runs"
)]
pub struct BackupArgs {
    /// The server's database file.
    #[arg(long)]
    pub db: PathBuf,
    /// The copy to write (must not exist).
    #[arg(long)]
    pub to: PathBuf,
}

/// Command line of `trustpool-server migrate`.
#[derive(Debug, Parser)]
#[command(
    name = "trustpool-server migrate",
    about = "Copy a store into another database (e.g. SQLite into PostgreSQL or MariaDB); stop the servers first"
)]
pub struct MigrateArgs {
    /// The store to copy (`--db` syntax: a path, sqlite:, postgres:// or mysql://).
    #[arg(long)]
    pub from: DbLocation,
    /// The database to copy it into: empty, or a trustpool schema without rows.
    #[arg(long)]
    pub to: DbLocation,
}

/// The same options as [`ServerArgs`], read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    grpc_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    db: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    policy_dir: Option<PathBuf>,
    ek_roots: Option<PathBuf>,
    ek_allowlist: Option<PathBuf>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    report_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    down_time: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    keepalive_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    keepalive_timeout: Option<Duration>,
    max_attestations_in_flight: Option<usize>,
    max_enrolments_in_flight: Option<usize>,
    replica_name: Option<String>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    lease_period: Option<Duration>,
    reader_ca: Option<PathBuf>,
    #[serde(default)]
    feed_tokens: Vec<crate::publish::config::FeedTokenEntry>,
    oat_prefix: Option<String>,
    oat_pool: Option<String>,
    oat_auth_blob_sha256: Option<String>,
    oat_allow_anonymous: Option<bool>,
    http_max_connections: Option<usize>,
    metrics_auth: Option<bool>,
    #[serde(default)]
    placement_pools: Vec<String>,
    placement: Option<crate::publish::placement::PlacementFile>,
    #[serde(default)]
    operators: Vec<String>,
    operator_ca: Option<PathBuf>,
    #[serde(default)]
    crls: Vec<PathBuf>,
    admin_socket: Option<PathBuf>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC (agents) listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP (feed) listen address.
    pub http_listen: SocketAddr,
    /// The database (`--db`).
    pub db: DbLocation,
    /// `--init-db`: a new store may replace the one that existed.
    pub init_db: bool,
    /// CA bundle for agent client certificates.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// EK trust anchors directory.
    pub ek_roots: PathBuf,
    /// EK allowlist file, if enrolment is restricted to listed EKs.
    pub ek_allowlist: Option<PathBuf>,
    /// Interval between attestation rounds.
    pub report_interval: Duration,
    /// Age of the last good report after which a host is out of the pools.
    pub down_time: Duration,
    /// HTTP/2 keep-alive ping interval on agent connections.
    pub keepalive_interval: Duration,
    /// HTTP/2 keep-alive ping timeout on agent connections.
    pub keepalive_timeout: Duration,
    /// Attestation rounds in progress at once (`attest::pacing`).
    pub max_attestations_in_flight: usize,
    /// Enrolments in progress at once (`attest::pacing`).
    pub max_enrolments_in_flight: usize,
    /// This replica's name (`--replica-name`).
    pub replica_name: String,
    /// The maintenance lease's period (`--lease-period`).
    pub lease_period: Duration,
    /// HTTPS API readers, PollHosts and the Placement sync.
    pub publication: crate::publish::config::PublicationConfig,
    /// Operator certificate names for the admin API.
    pub operators: Vec<String>,
    /// CA of the operator certificates (admin API over mutual TLS).
    pub operator_ca: Option<PathBuf>,
    /// CRL files of the agents', operator and reader CAs.
    pub crls: Vec<PathBuf>,
    /// Local admin socket, if any.
    pub admin_socket: Option<PathBuf>,
}

/// Default report interval (the Neutron heartbeat convention).
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// Default down time.
pub const DEFAULT_DOWN_TIME: Duration = Duration::from_secs(75);
/// The default HTTP/2 keep-alive interval on agent connections is the
/// report interval plus this: hyper pings only after that long without a
/// frame from the agent, and an agent sends evidence every round, so a
/// healthy stream is never pinged and a silent one (partitioned, or its
/// round overdue) is within one round plus this plus the timeout.
pub const KEEPALIVE_SLACK: Duration = Duration::from_secs(10);
pub use crate::state::DEFAULT_KEEPALIVE_TIMEOUT;

/// The configuration file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/trustpool/server.toml";

impl ServerConfig {
    /// Merges flags over the `--config` file (or [`DEFAULT_CONFIG_FILE`] if
    /// it exists) and checks that nothing required is missing.
    pub fn resolve(args: ServerArgs) -> anyhow::Result<ServerConfig> {
        // Unit tests never pick up the machine's installed configuration.
        let default = (!cfg!(test)).then_some(Path::new(DEFAULT_CONFIG_FILE));
        Self::resolve_with_default(args, default)
    }

    /// [`ServerConfig::resolve`] with another default file (`None`: no default).
    pub fn resolve_with_default(
        args: ServerArgs,
        default: Option<&Path>,
    ) -> anyhow::Result<ServerConfig> {
        let file: ServerFile = trustpool_daemon::config::load(args.config.as_deref(), default)?;
        // A secret written in the file itself: the file must not be world-readable.
        if let (Some(key), Some(path)) = (
            file.placement.as_ref().and_then(|p| p.inline_secret()),
            trustpool_daemon::config::chosen_file(args.config.as_deref(), default),
        ) {
            trustpool_daemon::secrets::refuse_world_readable_secret(path, key)?;
        }
        let file_db = file
            .db
            .as_deref()
            .map(|s| {
                s.parse::<DbLocation>()
                    .context("db in the configuration file")
            })
            .transpose()?;
        if let (Some(DbLocation::Postgres(url) | DbLocation::MySql(url)), Some(path)) = (
            &file_db,
            trustpool_daemon::config::chosen_file(args.config.as_deref(), default),
        ) {
            if url.contains('@') && crate::store::engine::redact(url) != *url {
                trustpool_daemon::secrets::refuse_world_readable(
                    path,
                    "a database password in `db`",
                )?;
            }
        }
        use trustpool_daemon::config::need;
        let report_interval = args
            .report_interval
            .or(file.report_interval)
            .unwrap_or(DEFAULT_REPORT_INTERVAL);
        let grpc_listen = need(args.grpc_listen, file.grpc_listen, "grpc_listen")?;
        let cfg = ServerConfig {
            grpc_listen,
            replica_name: args
                .replica_name
                .or(file.replica_name)
                .unwrap_or_else(|| crate::replica::default_name(grpc_listen.port())),
            lease_period: args
                .lease_period
                .or(file.lease_period)
                .unwrap_or(crate::replica::DEFAULT_LEASE_PERIOD),
            http_listen: need(args.http_listen, file.http_listen, "http_listen")?,
            db: need(args.db, file_db, "db")?,
            init_db: args.init_db,
            ca: need(args.ca, file.ca, "ca")?,
            cert: need(args.cert, file.cert, "cert")?,
            key: need(args.key, file.key, "key")?,
            policy_dir: need(args.policy_dir, file.policy_dir, "policy_dir")?,
            ek_roots: need(args.ek_roots, file.ek_roots, "ek_roots")?,
            ek_allowlist: args.ek_allowlist.or(file.ek_allowlist),
            report_interval,
            down_time: args
                .down_time
                .or(file.down_time)
                .unwrap_or(DEFAULT_DOWN_TIME),
            keepalive_interval: args
                .keepalive_interval
                .or(file.keepalive_interval)
                .unwrap_or(report_interval + KEEPALIVE_SLACK),
            keepalive_timeout: args
                .keepalive_timeout
                .or(file.keepalive_timeout)
                .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            max_attestations_in_flight: args
                .max_attestations_in_flight
                .or(file.max_attestations_in_flight)
                .unwrap_or(crate::attest::pacing::DEFAULT_ATTESTATIONS_IN_FLIGHT),
            max_enrolments_in_flight: args
                .max_enrolments_in_flight
                .or(file.max_enrolments_in_flight)
                .unwrap_or(crate::attest::pacing::DEFAULT_ENROLMENTS_IN_FLIGHT),
            operators: if args.operators.is_empty() {
                file.operators
            } else {
                args.operators
            },
            operator_ca: args.operator_ca.or(file.operator_ca),
            crls: if args.crls.is_empty() {
                file.crls
            } else {
                args.crls
            },
            admin_socket: args.admin_socket.or(file.admin_socket),
            publication: crate::publish::config::PublicationOptions {
                reader_ca: args.reader_ca.or(file.reader_ca),
                feed_token_flags: args.feed_tokens,
                feed_tokens: file.feed_tokens,
                oat_prefix: args.oat_prefix.or(file.oat_prefix),
                oat_pool: args.oat_pool.or(file.oat_pool),
                oat_auth_blob_sha256: args.oat_auth_blob_sha256.or(file.oat_auth_blob_sha256),
                oat_allow_anonymous: args.oat_allow_anonymous
                    || file.oat_allow_anonymous.unwrap_or(false),
                http_max_connections: args.http_max_connections.or(file.http_max_connections),
                metrics_auth: args.metrics_auth || file.metrics_auth.unwrap_or(false),
                placement_pools: file.placement_pools,
                placement: file.placement,
            }
            .resolve()?,
        };
        if cfg.report_interval.is_zero() {
            bail!("--report-interval must be greater than zero");
        }
        if cfg.lease_period < Duration::from_secs(1) {
            bail!("--lease-period must be at least 1s (it is renewed every third of it)");
        }
        if cfg.replica_name.trim().is_empty() || cfg.replica_name.len() > 200 {
            bail!("--replica-name must be 1 to 200 characters");
        }
        if cfg.max_attestations_in_flight == 0 || cfg.max_enrolments_in_flight == 0 {
            bail!("--max-attestations-in-flight and --max-enrolments-in-flight must be at least 1 (0 would admit no host)");
        }
        if cfg.down_time <= cfg.report_interval {
            bail!(
                "--down-time ({:?}) must be longer than --report-interval ({:?}), or every host flaps out of the pool between reports",
                cfg.down_time,
                cfg.report_interval
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
fn parse_file(name: &str, text: &str) -> anyhow::Result<ServerFile> {
    trustpool_daemon::config::parse_toml(name, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> ServerArgs {
        ServerArgs::try_parse_from(std::iter::once("trustpool-server").chain(list.iter().copied()))
            .expect("valid args")
    }

    const FULL: &[&str] = &[
        "--grpc-listen",
        "127.0.0.1:1",
        "--http-listen",
        "127.0.0.1:2",
        "--db",
        "d",
        "--ca",
        "c",
        "--cert",
        "s",
        "--key",
        "k",
        "--policy-dir",
        "p",
        "--ek-roots",
        "e",
    ];

    #[test]
    fn flags_alone_with_defaults() {
        let cfg = ServerConfig::resolve(args(FULL)).expect("resolves");
        assert_eq!(cfg.report_interval, DEFAULT_REPORT_INTERVAL);
        assert_eq!(cfg.down_time, DEFAULT_DOWN_TIME);
        assert_eq!(cfg.db, DbLocation::Sqlite(PathBuf::from("d")));
        assert_eq!(
            cfg.keepalive_interval,
            DEFAULT_REPORT_INTERVAL + KEEPALIVE_SLACK
        );
    }

    #[test]
    fn keepalive_follows_the_report_interval_unless_set() {
        let mut list = FULL.to_vec();
        list.extend(["--report-interval", "5s", "--down-time", "15s"]);
        let cfg = ServerConfig::resolve(args(&list)).expect("resolves");
        assert_eq!(cfg.keepalive_interval, Duration::from_secs(15));
        list.extend(["--keepalive-interval", "2s"]);
        let cfg = ServerConfig::resolve(args(&list)).expect("resolves");
        assert_eq!(cfg.keepalive_interval, Duration::from_secs(2));
    }

    #[test]
    fn missing_option_is_named() {
        let err =
            ServerConfig::resolve(args(&FULL[..FULL.len() - 2])).expect_err("ek-roots missing");
        assert!(err.to_string().contains("--ek-roots"), "{err}");
    }

    #[test]
    fn file_fills_in_and_flags_override() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "db = \"from-file\"\nreport_interval = \"2s\"\ndown_time = \"5s\"\n",
        )
        .expect("write");
        let mut list: Vec<&str> = FULL
            .iter()
            .copied()
            .filter(|a| *a != "--db" && *a != "d")
            .collect();
        let p = path.display().to_string();
        list.extend(["--config", p.as_str(), "--down-time", "9s"]);
        let cfg = ServerConfig::resolve(args(&list)).expect("resolves");
        assert_eq!(cfg.db, DbLocation::Sqlite(PathBuf::from("from-file")));
        assert_eq!(cfg.report_interval, Duration::from_secs(2));
        assert_eq!(cfg.down_time, Duration::from_secs(9));
    }

    #[test]
    fn an_inline_secret_needs_a_file_others_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "placement_pools = [\"default\"]\n[placement]\nurl = \"https://x\"\ntoken = \"t\"\n",
        )
        .expect("write");
        let p = path.display().to_string();
        let mut list = FULL.to_vec();
        list.extend(["--config", p.as_str()]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ServerConfig::resolve(args(&list)).expect_err("world-readable secret");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&p) && msg.contains("`token`") && msg.contains("token_file"),
            "{msg}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        ServerConfig::resolve(args(&list)).expect("root:trustpool 0640 is fine");
    }

    #[test]
    fn a_database_url_with_a_password_needs_a_file_others_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "db = \"postgres://trustpool:secret@db:5432/trustpool\"\n",
        )
        .expect("write");
        let p = path.display().to_string();
        let mut list: Vec<&str> = FULL
            .iter()
            .copied()
            .filter(|a| *a != "--db" && *a != "d")
            .collect();
        list.extend(["--config", p.as_str()]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ServerConfig::resolve(args(&list)).expect_err("world-readable password");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&p) && msg.contains("database password") && !msg.contains("secret@"),
            "{msg}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let cfg = ServerConfig::resolve(args(&list)).expect("0640 is fine");
        assert_eq!(cfg.db.engine(), crate::store::Engine::Postgres);
        assert_eq!(
            cfg.db.to_string(),
            "postgres://trustpool:***@db:5432/trustpool"
        );
        // A URL without a password may be world-readable.
        std::fs::write(&path, "db = \"mysql://trustpool@db/trustpool\"\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let cfg = ServerConfig::resolve(args(&list)).expect("no password");
        assert_eq!(cfg.db.engine(), crate::store::Engine::MySql);
        // A bad URL names the file's key.
        std::fs::write(&path, "db = \"postgres://db\"\n").expect("write");
        let err = ServerConfig::resolve(args(&list)).expect_err("no database name");
        assert!(
            format!("{err:#}").contains("db in the configuration file"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = parse_file("server.toml", "db = \"x\"\n\nbogus = 1\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("server.toml:3:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn down_time_must_exceed_interval() {
        let mut list = FULL.to_vec();
        list.extend(["--report-interval", "10s", "--down-time", "10s"]);
        assert!(ServerConfig::resolve(args(&list)).is_err());
    }

    #[test]
    fn packaged_example_parses_with_every_commented_key() {
        const EXAMPLE: &str = include_str!("../../packaging/server.toml");
        let file = parse_file("packaging/server.toml", EXAMPLE).expect("the example parses");
        assert_eq!(file.db.as_deref(), Some("/var/lib/trustpool/trustpool.db"));
        assert_eq!(
            file.policy_dir,
            Some(PathBuf::from("/etc/trustpool/policy"))
        );
        // `# key = value` lines document optional keys: each must be valid too.
        let all: Vec<&str> = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty()
                            && k.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    }) =>
                {
                    rest
                }
                // Commented table headers such as `# [[feed_tokens]]`.
                Some(rest) if rest.starts_with('[') && rest.ends_with(']') => rest,
                _ => l,
            })
            .collect();
        parse_file("packaging/server.toml (uncommented)", &all.join("\n"))
            .expect("every commented key of the example is a valid key");
    }

    #[test]
    fn default_file_is_read_when_present_and_config_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("server.toml");
        let without_db: Vec<&str> = FULL[2..]
            .iter()
            .copied()
            .filter(|a| *a != "--db" && *a != "d")
            .chain(["--grpc-listen", "127.0.0.1:1"])
            .collect();
        // Absent default file: nothing is read, --db is missing.
        let err = ServerConfig::resolve_with_default(args(&without_db), Some(&default))
            .expect_err("db missing");
        assert!(err.to_string().contains("--db"), "{err}");
        // Present: it fills in.
        std::fs::write(&default, "db = \"/var/lib/trustpool/trustpool.db\"\n").expect("write");
        let cfg = ServerConfig::resolve_with_default(args(&without_db), Some(&default))
            .expect("default file fills in db");
        assert_eq!(
            cfg.db,
            DbLocation::Sqlite(PathBuf::from("/var/lib/trustpool/trustpool.db"))
        );
        // --config replaces the default file entirely.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "db = \"other.db\"\n").expect("write");
        let o = other.display().to_string();
        let mut list = without_db.clone();
        list.extend(["--config", o.as_str()]);
        let cfg =
            ServerConfig::resolve_with_default(args(&list), Some(&default)).expect("resolves");
        assert_eq!(cfg.db, DbLocation::Sqlite(PathBuf::from("other.db")));
        // An unknown key in the default file stops start-up with its file and line.
        std::fs::write(
            &default,
            "# comment\ndb = \"x\"\ngrpc_lisen = \"0.0.0.0:1\"\n",
        )
        .expect("write");
        let err = ServerConfig::resolve_with_default(args(&without_db), Some(&default))
            .expect_err("typo");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:3:", default.display())),
            "{msg}"
        );
        assert!(msg.contains("grpc_lisen"), "{msg}");
    }
}
