//! Agent configuration: command-line flags, optionally backed by a TOML file
//! given with `--config`; a flag always overrides the file, unknown keys are
//! refused with their line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Command line of `trustpool-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "trustpool-agent",
    version,
    about = "trustpool agent: TPM attestation and hardening checks of a compute node"
)]
pub struct AgentCli {
    /// What to do; without a subcommand the agent attests (see the options below).
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hardening checks on this node (or a fixture tree) and print a report.
    Check(CheckArgs),
}

/// Options of `trustpool-agent check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Root of the host to check (a directory laid out like a host stands for one).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Role of the node: `compute` (nova/libvirt must be present) or `other`.
    #[arg(long, default_value = "compute")]
    pub role: String,
    /// Output format: `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// TOML file with check parameters (thresholds, allowed exceptions).
    #[arg(long)]
    pub params: Option<PathBuf>,
}

/// Options of the attesting agent.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML file with any of these options (keys in snake_case, e.g. state_dir).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Attestation server URL, e.g. https://attest.example.org:7443.
    #[arg(long)]
    pub server: Option<String>,
    /// PEM CA certificate that issued the server's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate of this host (its SAN is the host name).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// TCTI of the TPM: `device:/dev/tpmrm0` on a node, `swtpm:host=127.0.0.1,port=2321` in the lab.
    #[arg(long)]
    pub tcti: Option<String>,
    /// Host name as Nova knows it (the hypervisor hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Directory for the agent's state (AK blobs).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Enrol if needed, do one attestation round, print the verdict and exit (0 only if trusted).
    #[arg(long)]
    pub once: bool,
    /// With --once: the pool that must trust this host (default: any pool).
    #[arg(long)]
    pub pool: Option<String>,
    /// Root of the host for the hardening checks sent with each quote (default /).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Role of the node for the hardening checks: compute or other (default compute).
    #[arg(long)]
    pub role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    server: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    tcti: Option<String>,
    hostname: Option<String>,
    state_dir: Option<PathBuf>,
    root: Option<PathBuf>,
    role: Option<String>,
}

/// The resolved configuration of the attesting agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server URL.
    pub server: String,
    /// CA of the server certificate.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
    /// TPM TCTI string.
    pub tcti: String,
    /// Host name.
    pub hostname: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// One round and exit.
    pub once: bool,
    /// Pool required by --once.
    pub pool: Option<String>,
    /// Root for hardening checks.
    pub root: PathBuf,
    /// Role for hardening checks.
    pub role: String,
}

impl AgentConfig {
    /// Merges flags over the optional file; names any missing option.
    pub fn resolve(args: RunArgs) -> anyhow::Result<AgentConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => AgentFile::default(),
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
        Ok(AgentConfig {
            server: need(args.server, file.server, "server")?,
            ca: need(args.ca, file.ca, "ca")?,
            cert: need(args.cert, file.cert, "cert")?,
            key: need(args.key, file.key, "key")?,
            tcti: need(args.tcti, file.tcti, "tcti")?,
            hostname: need(args.hostname, file.hostname, "hostname")?.to_ascii_lowercase(),
            state_dir: need(args.state_dir, file.state_dir, "state_dir")?,
            once: args.once,
            pool: args.pool,
            root: args
                .root
                .or(file.root)
                .unwrap_or_else(|| PathBuf::from("/")),
            role: args.role.or(file.role).unwrap_or_else(|| "compute".into()),
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<AgentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                format!(
                    ":{}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("{}{line}: {}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(list: &[&str]) -> AgentCli {
        AgentCli::try_parse_from(std::iter::once("trustpool-agent").chain(list.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn run_options_resolve_and_name_what_is_missing() {
        let full = [
            "--server",
            "https://127.0.0.1:1",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
            "--hostname",
            "Host-A",
            "--state-dir",
            "s",
            "--once",
        ];
        let cfg = AgentConfig::resolve(cli(&full).run).expect("resolves");
        assert_eq!(cfg.hostname, "host-a");
        assert!(cfg.once);
        let err = AgentConfig::resolve(cli(&full[2..]).run).expect_err("server missing");
        assert!(err.to_string().contains("--server"), "{err}");
    }

    #[test]
    fn check_needs_no_server_options() {
        let c = cli(&["check", "--root", "/tmp/x", "--format", "json"]);
        match c.command {
            Some(Command::Check(args)) => {
                assert_eq!(args.root, PathBuf::from("/tmp/x"));
                assert_eq!(args.format, "json");
            }
            other => panic!("expected check, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_in_file_is_refused_with_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "hostname = \"a\"\nsevrer = \"x\"\n").expect("write");
        let err = read_file(&path).expect_err("typo");
        assert!(err.to_string().contains(":2:"), "{err}");
    }
}
