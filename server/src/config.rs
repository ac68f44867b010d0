//! Server configuration: command-line flags, optionally backed by a TOML file
//! given with `--config`. A flag always overrides the file; unknown keys in the
//! file are refused with their line.

use crate::duration::{parse_duration, serde_human};
use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Command line of `trustpool-server`.
#[derive(Debug, Parser)]
#[command(
    name = "trustpool-server",
    version,
    about = "trustpool attestation server"
)]
pub struct ServerArgs {
    /// TOML file with any of the options below (keys in snake_case, e.g. grpc_listen).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the mutual-TLS gRPC listener for agents, e.g. 0.0.0.0:7443.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the HTTP feed listener, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// SQLite database file (created if missing).
    #[arg(long)]
    pub db: Option<PathBuf>,
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
    /// Time between two attestation rounds of an agent (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub report_interval: Option<Duration>,
    /// A host whose last good report is older than this is out of every pool (default 75s).
    #[arg(long, value_parser = parse_duration)]
    pub down_time: Option<Duration>,
}

/// The same options as [`ServerArgs`], read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    grpc_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    db: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    policy_dir: Option<PathBuf>,
    ek_roots: Option<PathBuf>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    report_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    down_time: Option<Duration>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC (agents) listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP (feed) listen address.
    pub http_listen: SocketAddr,
    /// SQLite database path.
    pub db: PathBuf,
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
    /// Interval between attestation rounds.
    pub report_interval: Duration,
    /// Age of the last good report after which a host is out of the pools.
    pub down_time: Duration,
}

/// Default report interval (the Neutron heartbeat convention).
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// Default down time.
pub const DEFAULT_DOWN_TIME: Duration = Duration::from_secs(75);

impl ServerConfig {
    /// Merges flags over the optional file and checks that nothing required is missing.
    pub fn resolve(args: ServerArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServerFile::default(),
        };
        fn need<T>(flag: Option<T>, file: Option<T>, name: &str) -> anyhow::Result<T> {
            flag.or(file).with_context(|| {
                format!(
                    "missing required option --{} (or `{}` in --config)",
                    name.replace('_', "-"),
                    name
                )
            })
        }
        let cfg = ServerConfig {
            grpc_listen: need(args.grpc_listen, file.grpc_listen, "grpc_listen")?,
            http_listen: need(args.http_listen, file.http_listen, "http_listen")?,
            db: need(args.db, file.db, "db")?,
            ca: need(args.ca, file.ca, "ca")?,
            cert: need(args.cert, file.cert, "cert")?,
            key: need(args.key, file.key, "key")?,
            policy_dir: need(args.policy_dir, file.policy_dir, "policy_dir")?,
            ek_roots: need(args.ek_roots, file.ek_roots, "ek_roots")?,
            report_interval: args
                .report_interval
                .or(file.report_interval)
                .unwrap_or(DEFAULT_REPORT_INTERVAL),
            down_time: args
                .down_time
                .or(file.down_time)
                .unwrap_or(DEFAULT_DOWN_TIME),
        };
        if cfg.report_interval.is_zero() {
            bail!("--report-interval must be greater than zero");
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

fn read_file(path: &Path) -> anyhow::Result<ServerFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse_file(&path.display().to_string(), &text)
}

fn parse_file(name: &str, text: &str) -> anyhow::Result<ServerFile> {
    toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        anyhow::anyhow!("{name}{place}: {}", e.message())
    })
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
        assert_eq!(cfg.db, PathBuf::from("d"));
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
        assert_eq!(cfg.db, PathBuf::from("from-file"));
        assert_eq!(cfg.report_interval, Duration::from_secs(2));
        assert_eq!(cfg.down_time, Duration::from_secs(9));
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
}
