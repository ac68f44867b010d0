//! The command line of `trustpool` (clap derive).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Shown after every `--help`.
pub const EXIT_CODES_HELP: &str = "\
Connection: --server URL --ca FILE --cert FILE --key FILE (mutual TLS with an operator
certificate named in the server's `operators`), or --socket PATH (the server's local
admin socket; the default, /run/trustpool/admin.sock, when no --server is given).
Environment: TRUSTPOOL_SERVER, TRUSTPOOL_CA, TRUSTPOOL_CERT, TRUSTPOOL_KEY, TRUSTPOOL_SOCKET.

Times (--since, --at): RFC 3339 (2026-11-22T14:02:00Z), an age meaning that long ago
(90s, 10m, 2h, 3d), or unix milliseconds with an @ prefix (@1795356120000).

Exit codes:
  0  success, or a yes: trusted at --at, PCRs identical, policy valid, dry-run removes no host
  1  a no: not trusted at --at (or revoked), PCRs differ, policy check finds errors,
     dry-run candidate invalid or some host would leave a pool
  2  usage, connection, permission (not an operator) or server error
  3  not found: no such host or pool, or no enrolment pending approval";

/// `trustpool`: operate a trustpool attestation server.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "trustpool",
    version,
    about = "Operate a trustpool attestation server: hosts, history, approvals and revocations, policy capture, diff, check and dry-run; read TCG event logs offline.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection options (also from the environment).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionArgs {
    /// Server gRPC URL, e.g. https://attest.example.org:7443 (mutual TLS).
    #[arg(long, global = true, env = "TRUSTPOOL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// CA certificate (PEM) of the server's certificate.
    #[arg(long, global = true, env = "TRUSTPOOL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The operator's client certificate (PEM).
    #[arg(long, global = true, env = "TRUSTPOOL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The operator's private key (PEM, mode 0600).
    #[arg(long, global = true, env = "TRUSTPOOL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The server's local admin socket [default: /run/trustpool/admin.sock
    /// when no --server is given].
    #[arg(long, global = true, env = "TRUSTPOOL_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// The commands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Every known host with its state, pools, last good report and first
    /// reason; `hosts show|history|approve|revoke|readmit HOST` for one host.
    Hosts(HostsArgs),
    /// Policy tools: capture, diff, check (offline), dry-run, show.
    Policy {
        /// What to do.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// TCG event logs (binary_bios_measurements, the TXT log), offline:
    /// show, replay.
    Eventlog {
        /// What to do.
        #[command(subcommand)]
        command: EventlogCommand,
    },
}

/// Event log commands (offline: a file, no server). See docs/eventlog.md.
#[derive(Subcommand, Debug, Clone)]
pub enum EventlogCommand {
    /// One line per event: number, PCR, type, each bank's digest (first 12
    /// hex characters), whether the data is proven by the digest ("proven";
    /// "NOT PROVEN": the data is not what the digest is the hash of; "-":
    /// the digest is of something else, e.g. an image), and the decoded
    /// data. --json: every event with full digests, raw and decoded data
    /// and per-bank proofs.
    Show {
        /// The log, e.g. a copy of /sys/kernel/security/tpm0/binary_bios_measurements.
        file: PathBuf,
    },
    /// The PCR values the log replays to, per bank (the PCRs it extends).
    /// A log whose extended events all lie in PCRs 17-22 is a TXT (DRTM)
    /// log and replays them from zero, as after a dynamic launch; any other
    /// from the TPM2_Startup values (17-22 all-ones). --json: {"banks":
    /// {"sha256": {"0": "<hex>", ...}, "sha1": {...}}, "log": "srtm" or
    /// "drtm", "events": N, "extended": M, "startup_locality": L or null}.
    /// Exit 2 if the log does not parse or replay (with --drtm: an event
    /// outside PCRs 17-22).
    Replay {
        /// The log.
        file: PathBuf,
        /// Replay it as a TXT (DRTM) log whatever its events: PCRs 17-22
        /// from zero; an event on another PCR is an error.
        #[arg(long, conflicts_with = "srtm")]
        drtm: bool,
        /// Replay it as a UEFI (SRTM) log whatever its events: every PCR
        /// from its TPM2_Startup value.
        #[arg(long)]
        srtm: bool,
    },
}

/// `trustpool hosts [--pool P] [COMMAND]`.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostsArgs {
    /// Only hosts trusted in this pool or with a verdict in it.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// One host (without a command: list every host).
    #[command(subcommand)]
    pub command: Option<HostsCommand>,
}

/// Commands on one host.
#[derive(Subcommand, Debug, Clone)]
pub enum HostsCommand {
    /// The latest verdict per pool with every reason, the evidence summary
    /// (PCRs, TPM counters, AK/EK fingerprints, certificate) and recent history.
    Show {
        /// Host name.
        host: String,
    },
    /// Verdict changes and other events over time; with --at, whether the
    /// host was trusted at that time, under which policy digest, and why.
    History {
        /// Host name.
        host: String,
        /// Only events since this time.
        #[arg(long, value_name = "TIME", conflicts_with = "at")]
        since: Option<String>,
        /// Was the host trusted at this time? (exit 0 yes, 1 no)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// With --at: answer for this pool only (default: any pool).
        #[arg(long, value_name = "POOL", requires = "at")]
        pool: Option<String>,
        /// At most this many of the newest events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Admit a pending enrolment (EK without chain, or a new EK/AK).
    Approve {
        /// Host name.
        host: String,
        /// Recorded in the history with the action.
        #[arg(long, value_name = "TEXT", default_value = "")]
        comment: String,
    },
    /// Take a host out of every pool at once, whatever its evidence says.
    Revoke {
        /// Host name.
        host: String,
        /// Recorded in the history with the action.
        #[arg(long, value_name = "TEXT", default_value = "")]
        comment: String,
    },
    /// Undo a revocation (the host returns after its next good report).
    Readmit {
        /// Host name.
        host: String,
        /// Recorded in the history with the action.
        #[arg(long, value_name = "TEXT", default_value = "")]
        comment: String,
    },
}

/// Policy commands.
#[derive(Subcommand, Debug, Clone)]
pub enum PolicyCommand {
    /// Print a pool `[[allow]]` entry (TOML) from a host's latest verified
    /// evidence, ready to append to a pool file; with --events, the
    /// `[events]` rules of its verified event log instead.
    Capture {
        /// The known-good host.
        #[arg(long, value_name = "HOST")]
        host: String,
        /// Name of the entry [default: HOST-<time of the evidence>].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Only these PCRs, e.g. 17,18,19 [default: every captured PCR].
        #[arg(
            long,
            value_name = "LIST",
            value_delimiter = ',',
            conflicts_with = "events"
        )]
        pcrs: Vec<u8>,
        /// Write event rules: every event of the PCRs the host's UEFI log
        /// replayed is allowed by digest, the DRTM PCRs by value, Secure
        /// Boot required if on.
        #[arg(long)]
        events: bool,
    },
    /// Which PCRs, and which events of their logs, differ between two
    /// hosts' latest evidence (exit 0 identical, 1 different).
    Diff {
        /// First host.
        host_a: String,
        /// Second host.
        host_b: String,
        /// Print instead the `[[events.allow]]` rules that admit the events
        /// HOST_B has and HOST_A lacks (to add a canary's new firmware to a
        /// pool captured from HOST_A).
        #[arg(long)]
        rules: bool,
    },
    /// Validate a policy directory offline (no server): every error with
    /// file and line (exit 1), or the pools and digest.
    Check {
        /// Policy directory (one <pool>.toml per pool).
        dir: PathBuf,
    },
    /// Evaluate a candidate policy directory against every host's latest
    /// evidence without enforcing it: who would join and leave each pool.
    DryRun {
        /// Candidate policy directory.
        dir: PathBuf,
    },
    /// The policy in force: digest, pools, last refused reload.
    Show,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("trustpool").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hosts_list_and_subcommands() {
        let cli = parse(&["hosts", "--pool", "gold", "--json"]).expect("parses");
        assert!(cli.json);
        match cli.command {
            Command::Hosts(HostsArgs {
                pool,
                command: None,
            }) => assert_eq!(pool.as_deref(), Some("gold")),
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "--socket", "/tmp/s", "hosts", "history", "h1", "--at", "10m", "--pool", "p",
        ])
        .expect("parses");
        assert_eq!(
            cli.conn.socket.as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        match cli.command {
            Command::Hosts(HostsArgs {
                command:
                    Some(HostsCommand::History {
                        host,
                        at,
                        pool,
                        since,
                        limit,
                    }),
                ..
            }) => {
                assert_eq!(
                    (host.as_str(), at.as_deref(), pool.as_deref(), since, limit),
                    ("h1", Some("10m"), Some("p"), None, 100)
                );
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "hosts",
            "revoke",
            "h1",
            "--comment",
            "disk swap",
            "--server",
            "https://x:1",
        ])
        .expect("parses");
        assert_eq!(cli.conn.server.as_deref(), Some("https://x:1"));
        assert!(
            matches!(cli.command, Command::Hosts(HostsArgs { command: Some(HostsCommand::Revoke { ref comment, .. }), .. }) if comment == "disk swap")
        );
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["hosts", "history", "h1", "--at", "1m", "--since", "2m"]).is_err());
        assert!(parse(&["hosts", "history", "h1", "--pool", "p"]).is_err());
        assert!(parse(&["hosts", "show"]).is_err());
        assert!(parse(&["policy", "capture"]).is_err());
        assert!(parse(&["policy", "diff", "a"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        let e = parse(&["hosts", "bogus"]).expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn policy_commands() {
        let cli = parse(&["policy", "capture", "--host", "h1", "--pcrs", "17,18"]).expect("parses");
        match cli.command {
            Command::Policy {
                command:
                    PolicyCommand::Capture {
                        host, name, pcrs, ..
                    },
            } => {
                assert_eq!((host.as_str(), name, pcrs), ("h1", None, vec![17, 18]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["policy", "dry-run", "/d"]).expect("p").command,
            Command::Policy {
                command: PolicyCommand::DryRun { .. }
            }
        ));
        assert!(matches!(
            parse(&["policy", "show"]).expect("p").command,
            Command::Policy {
                command: PolicyCommand::Show
            }
        ));
    }

    #[test]
    fn eventlog_commands() {
        let cli = parse(&["eventlog", "show", "/tmp/log.bin"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Eventlog { command: EventlogCommand::Show { ref file } } if file == std::path::Path::new("/tmp/log.bin")
        ));
        let cli = parse(&["eventlog", "replay", "log.bin", "--json"]).expect("parses");
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Eventlog {
                command: EventlogCommand::Replay { .. }
            }
        ));
        assert!(parse(&["eventlog", "replay"]).is_err());
        let cli = parse(&["eventlog", "replay", "txt.bin", "--drtm"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Eventlog {
                command: EventlogCommand::Replay {
                    drtm: true,
                    srtm: false,
                    ..
                }
            }
        ));
        assert!(parse(&["eventlog", "replay", "x", "--drtm", "--srtm"]).is_err());
        assert!(parse(&["eventlog", "show", "x", "--drtm"]).is_err());
        assert!(parse(&["eventlog"]).is_err());
    }

    #[test]
    fn help_documents_exit_codes_and_environment() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "Exit codes:",
            "TRUSTPOOL_SOCKET",
            "not an operator",
            "3  not found",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
