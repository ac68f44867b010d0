//! Agent configuration: command-line flags, optionally backed by a TOML file
//! given with `--config`; a flag always overrides the file, unknown keys are
//! refused with their line.

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trustpool_evidence::duration::{parse_duration, serde_human};

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
    /// TOML file with any of these options (keys in snake_case, e.g. state_dir);
    /// without --config, /etc/trustpool/agent.toml is read if it exists.
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
    /// How often the running agent re-reads its PCRs and re-runs its checks
    /// between rounds, asking for a challenge at once when one changes (default 5s).
    #[arg(long, value_parser = parse_duration)]
    pub watch_interval: Option<Duration>,
    /// HTTP/2 keep-alive: ping the server after this much silence (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_interval: Option<Duration>,
    /// HTTP/2 keep-alive: the connection is dead when a ping is not answered
    /// within this time, and the agent reconnects (default 5s).
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// How long the running agent tolerates a TPM it cannot reach (connection
    /// lost, reopening fails, or a TPM command that does not return) before it
    /// exits with code 3, so that its service manager restarts it (default 5m).
    #[arg(long, value_parser = parse_duration)]
    pub tpm_lost_exit_after: Option<Duration>,
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
    once: Option<bool>,
    pool: Option<String>,
    root: Option<PathBuf>,
    role: Option<String>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    watch_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    keepalive_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    keepalive_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_human::deserialize_opt")]
    tpm_lost_exit_after: Option<Duration>,
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
    /// Period of the change watch between rounds.
    pub watch_interval: Duration,
    /// HTTP/2 keep-alive ping interval.
    pub keepalive_interval: Duration,
    /// HTTP/2 keep-alive ping timeout.
    pub keepalive_timeout: Duration,
    /// How long the running agent goes on without a working TPM before it
    /// exits with [`crate::EXIT_TPM_LOST`].
    pub tpm_lost_exit_after: Duration,
}

/// Default period of the change watch.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Default HTTP/2 keep-alive interval: longer than the default 30 s report
/// interval, because hyper pings only after this long without a frame from
/// the server and the server speaks every round (challenge, verdict). A
/// healthy stream is never pinged; a server that is gone without a TCP reset
/// (partition) is noticed within this plus the timeout. A server closed or
/// killed resets the connection, which is noticed at once.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(40);
/// Default HTTP/2 keep-alive timeout (both daemons).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of `--tpm-lost-exit-after`: long enough for a resource manager or
/// vTPM back end to restart, short enough that a host does not stay out of
/// its pools for long because of a wedged agent.
pub const DEFAULT_TPM_LOST_EXIT_AFTER: Duration = Duration::from_secs(300);

/// The configuration file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/trustpool/agent.toml";

impl AgentConfig {
    /// Merges flags over the `--config` file (or [`DEFAULT_CONFIG_FILE`] if it
    /// exists); names any missing option.
    pub fn resolve(args: RunArgs) -> anyhow::Result<AgentConfig> {
        // Unit tests never pick up the machine's installed configuration.
        let default = (!cfg!(test)).then_some(Path::new(DEFAULT_CONFIG_FILE));
        Self::resolve_with_default(args, default)
    }

    /// [`AgentConfig::resolve`] with another default file (`None`: no default).
    pub fn resolve_with_default(
        args: RunArgs,
        default: Option<&Path>,
    ) -> anyhow::Result<AgentConfig> {
        let file: AgentFile = trustpool_daemon::config::load(args.config.as_deref(), default)?;
        use trustpool_daemon::config::need;
        Ok(AgentConfig {
            server: need(args.server, file.server, "server")?,
            ca: need(args.ca, file.ca, "ca")?,
            cert: need(args.cert, file.cert, "cert")?,
            key: need(args.key, file.key, "key")?,
            tcti: need(args.tcti, file.tcti, "tcti")?,
            hostname: need(args.hostname, file.hostname, "hostname")?.to_ascii_lowercase(),
            state_dir: need(args.state_dir, file.state_dir, "state_dir")?,
            once: args.once || file.once.unwrap_or(false),
            pool: args.pool.or(file.pool),
            root: args
                .root
                .or(file.root)
                .unwrap_or_else(|| PathBuf::from("/")),
            role: args.role.or(file.role).unwrap_or_else(|| "compute".into()),
            watch_interval: args
                .watch_interval
                .or(file.watch_interval)
                .unwrap_or(DEFAULT_WATCH_INTERVAL),
            keepalive_interval: args
                .keepalive_interval
                .or(file.keepalive_interval)
                .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: args
                .keepalive_timeout
                .or(file.keepalive_timeout)
                .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            tpm_lost_exit_after: args
                .tpm_lost_exit_after
                .or(file.tpm_lost_exit_after)
                .unwrap_or(DEFAULT_TPM_LOST_EXIT_AFTER),
        })
    }
}

#[cfg(test)]
fn read_file(path: &Path) -> anyhow::Result<AgentFile> {
    trustpool_daemon::config::read_toml(path)
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
        assert_eq!(cfg.tpm_lost_exit_after, DEFAULT_TPM_LOST_EXIT_AFTER);
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
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:2:", path.display())), "{msg}");
        assert!(msg.contains("sevrer"), "{msg}");
    }

    #[test]
    fn every_option_is_a_key_and_flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "server = \"https://file:1\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             tcti = \"device:/dev/tpmrm0\"\nhostname = \"From-File\"\nstate_dir = \"/s\"\n\
             once = true\npool = \"gold\"\nroot = \"/host\"\nrole = \"other\"\n\
             tpm_lost_exit_after = \"90s\"\n",
        )
        .expect("write");
        let p = path.display().to_string();
        let cfg = AgentConfig::resolve(cli(&["--config", &p]).run).expect("file alone");
        assert_eq!(cfg.server, "https://file:1");
        assert_eq!(cfg.hostname, "from-file");
        assert_eq!(cfg.tcti, "device:/dev/tpmrm0");
        assert!(cfg.once);
        assert_eq!(cfg.pool.as_deref(), Some("gold"));
        assert_eq!(cfg.root, PathBuf::from("/host"));
        assert_eq!(cfg.role, "other");
        assert_eq!(cfg.tpm_lost_exit_after, Duration::from_secs(90));
        let cfg = AgentConfig::resolve(
            cli(&[
                "--config",
                &p,
                "--server",
                "https://flag:2",
                "--role",
                "compute",
                "--tpm-lost-exit-after",
                "3s",
            ])
            .run,
        )
        .expect("flags over file");
        assert_eq!(cfg.server, "https://flag:2");
        assert_eq!(cfg.tpm_lost_exit_after, Duration::from_secs(3));
        assert_eq!(cfg.role, "compute");
        assert_eq!(cfg.state_dir, PathBuf::from("/s"));
    }

    /// Lines of the packaged example with every `# key = value` line uncommented.
    fn uncommented(example: &str) -> String {
        example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn packaged_example_parses_and_documents_every_option() {
        use clap::CommandFactory;
        const EXAMPLE: &str = include_str!("../../packaging/agent.toml");
        let file: AgentFile = toml::from_str(EXAMPLE).expect("packaging/agent.toml parses");
        assert_eq!(file.tcti.as_deref(), Some("device:/dev/tpmrm0"));
        assert_eq!(
            file.state_dir.as_deref(),
            Some(Path::new("/var/lib/trustpool-agent"))
        );
        let all = uncommented(EXAMPLE);
        toml::from_str::<AgentFile>(&all)
            .unwrap_or_else(|e| panic!("packaging/agent.toml uncommented: {e}"));
        for arg in AgentCli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help", "version"].contains(&long) {
                continue;
            }
            let key = format!("{} = ", long.replace('-', "_"));
            assert!(
                all.lines().any(|l| l.starts_with(&key)),
                "--{long} is not documented as a key in packaging/agent.toml"
            );
        }
    }

    /// `--tpm-lost-exit-after` relies on the service manager to start the
    /// agent again: the packaged unit must restart it on a non-zero exit.
    #[test]
    fn packaged_unit_restarts_an_agent_that_gave_up_on_its_tpm() {
        const UNIT: &str = include_str!("../../packaging/systemd/trustpool-agent.service");
        let service: Vec<&str> = UNIT
            .lines()
            .skip_while(|l| l.trim() != "[Service]")
            .take_while(|l| !l.starts_with("[Install]"))
            .map(str::trim)
            .collect();
        assert!(service.contains(&"Restart=on-failure"), "{UNIT}");
        assert!(
            !service
                .iter()
                .any(|l| l.starts_with("RestartPreventExitStatus=")),
            "{UNIT}"
        );
    }

    #[test]
    fn default_file_is_read_only_when_present_and_config_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("agent.toml");
        let flags = [
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
            "--hostname",
            "h",
            "--state-dir",
            "s",
        ];
        let err = AgentConfig::resolve_with_default(cli(&flags).run, Some(&default))
            .expect_err("no default file: server missing");
        assert!(err.to_string().contains("--server"), "{err}");
        std::fs::write(&default, "server = \"https://default:1\"\n").expect("write");
        let cfg = AgentConfig::resolve_with_default(cli(&flags).run, Some(&default))
            .expect("default file fills in");
        assert_eq!(cfg.server, "https://default:1");
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "server = \"https://other:1\"\n").expect("write");
        let o = other.display().to_string();
        let mut list = flags.to_vec();
        list.extend(["--config", o.as_str()]);
        let cfg = AgentConfig::resolve_with_default(cli(&list).run, Some(&default))
            .expect("--config instead of the default");
        assert_eq!(cfg.server, "https://other:1");
        std::fs::write(&default, "\n\nbogus = 1\n").expect("write");
        let err = AgentConfig::resolve_with_default(cli(&flags).run, Some(&default))
            .expect_err("unknown key in the default file");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", default.display())),
            "{err}"
        );
    }
}
