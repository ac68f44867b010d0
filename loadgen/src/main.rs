//! trustpool-loadgen: simulated compute hosts against a real trustpool-server.
//!
//! Every simulated host has a software TPM identity ([`softtpm`]: EK and
//! EK certificate from a test TPM vendor CA, restricted signing AK,
//! ActivateCredential, signed quotes over simulated PCR banks) and its own
//! mutual-TLS gRPC stream with its own client certificate ([`host`],
//! [`connector`]), so the server does for it exactly what it does for a
//! real agent: identity check, enrolment with credential activation,
//! challenges, verdicts. Nothing in the server knows it is being load
//! tested.
//!
//! * `pki` ([`pki`]): CA, server certificate, host certificates, TPM
//!   vendor CA, pool policy, feed token and a server.toml in one directory;
//!   with `--event-log` the UEFI log the hosts boot with and send.
//! * `run` ([`run`]): N hosts with ramp, churn, failing hosts and the
//!   flip detection measurement; one JSON line at the end ([`stats`]).
//!
//! `scripts/bench` drives both against a release server and measures the
//! server from /proc.

#![forbid(unsafe_code)]

mod connector;
mod feed;
mod host;
mod pki;
mod run;
mod softtpm;
mod stats;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use trustpool_evidence::duration::parse_duration;

#[derive(Parser)]
#[command(
    name = "trustpool-loadgen",
    version,
    about = "Load generator for trustpool-server: simulated hosts with software TPMs, each on its own mutual-TLS stream",
    after_help = "Typical use:\n  trustpool-loadgen pki --dir D --hosts 1000\n  trustpool-server --config D/server.toml --db D/run.db --grpc-listen 127.0.0.1:7443 --http-listen 127.0.0.1:8443\n  trustpool-loadgen run --dir D --server https://127.0.0.1:7443 --hosts 1000 --duration 60s --ramp 10s \\\n      --flip lg-000042 --feed https://127.0.0.1:8443\nA new --db file needs no --init-db (the server creates the store on first start; --init-db is only\nfor replacing a store that existed at that path before)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write CA, server and host certificates, TPM vendor CA, policy, feed token and server.toml.
    Pki {
        /// Output directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// Number of host certificates (lg-000001 ...).
        #[arg(long)]
        hosts: u32,
        /// report_interval of the server configuration.
        #[arg(long, default_value = "30s")]
        report_interval: String,
        /// down_time of the server configuration.
        #[arg(long, default_value = "75s")]
        down_time: String,
        /// Configure the Placement trait sync of pool "default" against this
        /// (lab) Placement endpoint, e.g. http://127.0.0.1:8778.
        #[arg(long)]
        placement: Option<String>,
        /// Static Placement token (noauth2) written to DIR/placement-token.
        #[arg(long, default_value = "admin")]
        placement_token: String,
        /// A UEFI event log (binary_bios_measurements, crypto-agile with a
        /// sha256 bank) the simulated hosts booted with: copied to
        /// DIR/uefi-event-log.bin, its replay pinned in the policy's PCRs
        /// 0-7, and sent by `run` with every quote, so that the server
        /// replays it. Without it hosts send the log's absence.
        #[arg(long, value_name = "FILE")]
        event_log: Option<PathBuf>,
    },
    /// Connect N simulated hosts and attest until --duration; print one JSON line.
    Run {
        /// The directory written by `pki`.
        #[arg(long)]
        dir: PathBuf,
        /// A server's gRPC listener, https://HOST:PORT; repeatable (replicas
        /// of one service): each host starts on the one its name hashes to
        /// and moves to the next when its stream is lost, as the agent does.
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Number of hosts (lg-000001 .. lg-N).
        #[arg(long)]
        hosts: u32,
        /// The server's report interval (places the steady window for attestations/s).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        interval_hint: Duration,
        /// Length of the run.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        duration: Duration,
        /// Hosts start evenly over this time (0 = all at once).
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        ramp: Duration,
        /// Share of hosts (0..1) that report a non-golden PCR 17.
        #[arg(long, default_value_t = 0.0)]
        failing_fraction: f64,
        /// Disconnect (and reconnect) this many random hosts per second after the ramp.
        #[arg(long, default_value_t = 0.0)]
        churn_per_s: f64,
        /// Measure detection: flip this host's PCR 17 and back (needs --feed).
        #[arg(long)]
        flip: Option<String>,
        /// Flip rounds (out and back each).
        #[arg(long, default_value_t = 1)]
        flips: u32,
        /// How long each flipped state is held.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        flip_hold: Duration,
        /// The server's HTTPS API, https://HOST:PORT (feed long poll for --flip).
        #[arg(long)]
        feed: Option<String>,
        /// Pool watched by --flip.
        #[arg(long, default_value = "default")]
        pool: String,
        /// Also measure the Placement trait (lab Placement, http://HOST:PORT).
        #[arg(long)]
        placement: Option<String>,
        /// Placement token.
        #[arg(long, default_value = "admin")]
        placement_token: String,
        /// HTTP/2 keep-alive interval of every host's connection (the
        /// agent's default).
        #[arg(long, value_parser = parse_duration, default_value = "40s")]
        keepalive_interval: Duration,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUSTPOOL_LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trustpool-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pki {
            dir,
            hosts,
            report_interval,
            down_time,
            placement,
            placement_token,
            event_log,
        } => {
            parse_duration(&report_interval)
                .map_err(|e| anyhow::anyhow!("--report-interval: {e}"))?;
            parse_duration(&down_time).map_err(|e| anyhow::anyhow!("--down-time: {e}"))?;
            let line = pki::write_all(&pki::PkiOptions {
                dir,
                hosts,
                report_interval,
                down_time,
                placement,
                placement_token,
                event_log,
            })?;
            eprintln!("{line}");
            Ok(())
        }
        Command::Run {
            dir,
            servers,
            hosts,
            interval_hint,
            duration,
            ramp,
            failing_fraction,
            churn_per_s,
            flip,
            flips,
            flip_hold,
            feed,
            pool,
            placement,
            placement_token,
            keepalive_interval,
        } => {
            if !(0.0..=1.0).contains(&failing_fraction) {
                anyhow::bail!("--failing-fraction must be between 0 and 1");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let summary = runtime.block_on(run::run(run::RunOptions {
                dir,
                servers,
                hosts,
                interval_hint,
                duration,
                ramp,
                failing_fraction,
                churn_per_s,
                flip,
                flips,
                flip_hold,
                feed,
                pool,
                placement,
                placement_token,
                keepalive_interval,
            }))?;
            println!("{summary}");
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        }
    }
}
