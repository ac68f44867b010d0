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
    /// Attestation server URL, e.g. https://attest.example.org:7443; repeat
    /// it for replicas: the agent holds one stream to one of them and fails
    /// over to the next in the list (starting at a place chosen by its host name).
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<String>,
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
    /// The UEFI firmware's measured-boot event log, sent with every quote and
    /// read under --root; `none` (or "") when this host has none
    /// (default /sys/kernel/security/tpm0/binary_bios_measurements).
    #[arg(long, value_name = "PATH", value_parser = parse_event_log_path)]
    pub uefi_event_log: Option<EventLogPath>,
    /// The TXT/DRTM event log of a TrenchBoot Secure Launch kernel, sent with
    /// every quote and read under --root; `none` (or "") when this host has
    /// none (default /sys/kernel/security/slaunch/eventlog).
    #[arg(long, value_name = "PATH", value_parser = parse_event_log_path)]
    pub txt_event_log: Option<EventLogPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    server: Option<OneOrMany>,
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
    uefi_event_log: Option<String>,
    txt_event_log: Option<String>,
}

/// Where the agent reads one kind of measured-boot event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventLogPath {
    /// This host has no such log: the agent sends that reason instead of a log.
    Disabled,
    /// The log's path as the host sees it (e.g. under /sys), read under `--root`.
    At(PathBuf),
}

impl EventLogPath {
    /// `""` and `none` (any case, surrounding blanks ignored) disable the log;
    /// anything else is its path.
    pub fn parse(value: &str) -> EventLogPath {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("none") {
            EventLogPath::Disabled
        } else {
            EventLogPath::At(PathBuf::from(value))
        }
    }
}

/// Clap's parser of `--uefi-event-log` and `--txt-event-log` (never fails:
/// an empty value means disabled).
fn parse_event_log_path(value: &str) -> Result<EventLogPath, std::convert::Infallible> {
    Ok(EventLogPath::parse(value))
}

/// The flag, else the file's key, else `default`.
fn event_log_path(flag: Option<EventLogPath>, file: Option<String>, default: &str) -> EventLogPath {
    flag.or_else(|| file.as_deref().map(EventLogPath::parse))
        .unwrap_or_else(|| EventLogPath::At(PathBuf::from(default)))
}

/// The file's `server`: one URL, or an array of them (replicas).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a URL string or an array of URL strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        }
    }
}

/// The server list: the flags if any `--server` is given, else the file's
/// `server`; at least one, each an `https://HOST[:PORT]` URL, none twice
/// (the same host and port in other spellings counts as twice).
fn resolve_servers(flags: Vec<String>, file: Option<OneOrMany>) -> anyhow::Result<Vec<String>> {
    const WHERE: &str = "--server (or `server` in --config)";
    let servers = if flags.is_empty() {
        file.map(OneOrMany::into_vec).unwrap_or_default()
    } else {
        flags
    };
    if servers.is_empty() {
        anyhow::bail!(
            "missing required option --server (or `server` in --config): give at least one server URL"
        );
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for url in &servers {
        let key = server_key(url).map_err(|why| anyhow::anyhow!("{WHERE}: {url:?} {why}"))?;
        if let Some((first, _)) = seen.iter().find(|(_, k)| *k == key) {
            anyhow::bail!(
                "{WHERE}: {url:?} is given twice (also as {first:?}); list each server once"
            );
        }
        seen.push((url.clone(), key));
    }
    Ok(servers)
}

/// What makes two server URLs the same server: lower-case host and the port
/// (443 when absent). An error says why the URL is not usable.
fn server_key(url: &str) -> Result<String, String> {
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| format!("is not a valid URL ({e}); expected https://HOST[:PORT]"))?;
    if uri.scheme_str() != Some("https") {
        return Err("is not an https URL; expected https://HOST[:PORT]".into());
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err("names no host; expected https://HOST[:PORT]".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry user information".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query; expected https://HOST[:PORT]".into());
    }
    Ok(format!(
        "{}:{}",
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(443)
    ))
}

/// The resolved configuration of the attesting agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server URLs in the order given (at least one, no duplicates): replicas
    /// of one service; the agent talks to one at a time and fails over.
    pub servers: Vec<String>,
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
    /// The UEFI event log sent with every quote (under `root`).
    pub uefi_event_log: EventLogPath,
    /// The TXT/DRTM event log sent with every quote (under `root`).
    pub txt_event_log: EventLogPath,
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

/// Default of `--uefi-event-log`: the firmware log the kernel's TPM driver
/// exposes in securityfs.
pub const DEFAULT_UEFI_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// Default of `--txt-event-log`: the TXT/DRTM log of a TrenchBoot Secure
/// Launch kernel (tboot exposes its log in no file the agent could read).
pub const DEFAULT_TXT_EVENT_LOG: &str = "/sys/kernel/security/slaunch/eventlog";

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
            servers: resolve_servers(args.servers, file.server)?,
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
            uefi_event_log: event_log_path(
                args.uefi_event_log,
                file.uefi_event_log,
                DEFAULT_UEFI_EVENT_LOG,
            ),
            txt_event_log: event_log_path(
                args.txt_event_log,
                file.txt_event_log,
                DEFAULT_TXT_EVENT_LOG,
            ),
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
        assert_eq!(cfg.servers, ["https://file:1"]);
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
        assert_eq!(cfg.servers, ["https://flag:2"]);
        assert_eq!(cfg.tpm_lost_exit_after, Duration::from_secs(3));
        assert_eq!(cfg.role, "compute");
        assert_eq!(cfg.state_dir, PathBuf::from("/s"));
    }

    const REST: [&str; 12] = [
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

    fn with_servers(servers: &[&str]) -> anyhow::Result<AgentConfig> {
        let mut list: Vec<&str> = servers.iter().flat_map(|s| ["--server", s]).collect();
        list.extend(REST);
        AgentConfig::resolve(cli(&list).run)
    }

    #[test]
    fn server_repeats_in_order_and_the_file_takes_a_string_or_an_array() {
        let cfg = with_servers(&["https://b.example:7443", "https://a.example:7443"])
            .expect("two servers");
        assert_eq!(
            cfg.servers,
            ["https://b.example:7443", "https://a.example:7443"]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let p = path.display().to_string();
        let mut list = REST.to_vec();
        list.extend(["--config", p.as_str()]);
        std::fs::write(&path, "server = [\"https://x:1\", \"https://y:1\"]\n").expect("write");
        let cfg = AgentConfig::resolve(cli(&list).run).expect("array in the file");
        assert_eq!(cfg.servers, ["https://x:1", "https://y:1"]);
        std::fs::write(&path, "server = \"https://x:1\"\n").expect("write");
        let cfg = AgentConfig::resolve(cli(&list).run).expect("string in the file");
        assert_eq!(cfg.servers, ["https://x:1"]);
        // Flags replace the file's list as a whole.
        let mut flagged = list.clone();
        flagged.extend(["--server", "https://z:1"]);
        std::fs::write(&path, "server = [\"https://x:1\", \"https://y:1\"]\n").expect("write");
        let cfg = AgentConfig::resolve(cli(&flagged).run).expect("flag over file");
        assert_eq!(cfg.servers, ["https://z:1"]);
        std::fs::write(&path, "server = []\n").expect("write");
        let err = AgentConfig::resolve(cli(&list).run).expect_err("empty array");
        assert!(err.to_string().contains("--server"), "{err}");
        std::fs::write(&path, "server = 7\n").expect("write");
        let err = AgentConfig::resolve(cli(&list).run).expect_err("a number");
        assert!(
            err.to_string()
                .contains("a URL string or an array of URL strings"),
            "{err}"
        );
    }

    #[test]
    fn servers_must_be_https_urls_given_once() {
        for (servers, says) in [
            (&["http://a:1"][..], "not an https URL"),
            (&["a.example:7443"][..], "not an https URL"),
            (&["https://"][..], "not a valid URL"),
            (&["https://a:1/x"][..], "path"),
            (&["not a url"][..], "not a valid URL"),
            (&["https://a:1", "https://a:1"][..], "given twice"),
            (
                &["https://A.example", "https://a.example:443/"][..],
                "given twice",
            ),
        ] {
            let err = with_servers(servers).expect_err(&format!("{servers:?} refused"));
            let msg = err.to_string();
            assert!(
                msg.starts_with("--server") && msg.contains(says),
                "{servers:?}: {msg}"
            );
        }
        let cfg = with_servers(&["https://a:1", "https://a:2", "https://b:1"])
            .expect("other ports are other servers");
        assert_eq!(cfg.servers.len(), 3);
    }

    #[test]
    fn event_logs_default_to_securityfs_the_file_overrides_and_flags_win() {
        let at = |p: &str| EventLogPath::At(PathBuf::from(p));
        let cfg = with_servers(&["https://a:1"]).expect("defaults");
        assert_eq!(cfg.uefi_event_log, at(DEFAULT_UEFI_EVENT_LOG));
        assert_eq!(cfg.txt_event_log, at(DEFAULT_TXT_EVENT_LOG));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "server = \"https://file:1\"\nuefi_event_log = \"/copy/uefi.bin\"\n\
             txt_event_log = \"none\"\n",
        )
        .expect("write");
        let p = path.display().to_string();
        let mut list = REST.to_vec();
        list.extend(["--config", p.as_str()]);
        let cfg = AgentConfig::resolve(cli(&list).run).expect("file");
        assert_eq!(cfg.uefi_event_log, at("/copy/uefi.bin"));
        assert_eq!(cfg.txt_event_log, EventLogPath::Disabled);

        let mut flagged = list.clone();
        flagged.extend([
            "--uefi-event-log",
            "",
            "--txt-event-log",
            "/sys/kernel/security/slaunch/eventlog",
        ]);
        let cfg = AgentConfig::resolve(cli(&flagged).run).expect("flags over file");
        assert_eq!(cfg.uefi_event_log, EventLogPath::Disabled);
        assert_eq!(cfg.txt_event_log, at(DEFAULT_TXT_EVENT_LOG));

        std::fs::write(&path, "uefi_event_log = \"\"\ntxt_event_log = \" NONE \"\n")
            .expect("write");
        let mut list = list.clone();
        list.extend(["--server", "https://flag:1", "--txt-event-log", "/x/log"]);
        let cfg = AgentConfig::resolve(cli(&list).run).expect("empty key");
        assert_eq!(cfg.uefi_event_log, EventLogPath::Disabled);
        assert_eq!(cfg.txt_event_log, at("/x/log"));
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
        assert_eq!(cfg.servers, ["https://default:1"]);
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "server = \"https://other:1\"\n").expect("write");
        let o = other.display().to_string();
        let mut list = flags.to_vec();
        list.extend(["--config", o.as_str()]);
        let cfg = AgentConfig::resolve_with_default(cli(&list).run, Some(&default))
            .expect("--config instead of the default");
        assert_eq!(cfg.servers, ["https://other:1"]);
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
