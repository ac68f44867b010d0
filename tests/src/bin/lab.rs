//! `trustpool-lab`: the local lab of the README's first command.
//!
//! Makes a CA and certificates, provisions swtpm hosts with EK certificates
//! from a local swtpm CA, boots a real OVMF firmware's event log into each
//! (one with another boot order), simulates a TXT measured launch of the
//! golden SINIT/MLE on all but one, writes the pool policy by events from
//! the golden firmware's log, starts the server and the agents, and
//! prints the trusted pool and why each excluded host is excluded. Ctrl-C
//! stops everything and leaves no process behind.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use trustpool_tests::lab::{
    measured_boot_policy, Hardening, Lab, LabHost, Launch, LAB_REQUIRED_CHECKS,
};

/// The firmware of the golden build: a real OVMF boot (Secure Boot off)
/// captured by scripts/ovmf-eventlog.
const GOLDEN_FIRMWARE: &str = "ovmf-default";
use trustpool_tests::procs::{wait_until, AgentProcess, ServerProcess};

#[derive(Parser)]
#[command(name = "trustpool-lab", about = "Local trustpool lab on swtpm")]
struct Args {
    /// Directory for the lab's files (recreated at every start).
    #[arg(long, default_value = "lab-state")]
    dir: PathBuf,
    /// Print the pool once every host has a verdict, then stop everything and exit.
    #[arg(long)]
    report_once: bool,
    /// Interval between attestation rounds.
    #[arg(long, default_value = "5s")]
    report_interval: String,
    /// Down time after which a silent host leaves the pool.
    #[arg(long, default_value = "15s")]
    down_time: String,
}

struct Running {
    lab: Lab,
    hosts: Vec<(LabHost, Launch)>,
    server: ServerProcess,
    agents: Vec<AgentProcess>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("trustpool-lab: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<u8> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cleaning {}", args.dir.display()))?;
    }
    println!("trustpool lab in {}", args.dir.display());
    println!(
        "- making the agents' CA, the server certificate, the operator CA and the swtpm EK CA"
    );
    let lab = Lab::create(&args.dir)?;
    let plan = [
        (
            "host-a",
            Launch::Golden,
            Hardening::GoodCompute,
            GOLDEN_FIRMWARE,
        ),
        (
            "host-b",
            Launch::Golden,
            Hardening::GoodCompute,
            GOLDEN_FIRMWARE,
        ),
        (
            "host-c",
            Launch::None,
            Hardening::GoodCompute,
            GOLDEN_FIRMWARE,
        ),
        (
            "host-d",
            Launch::Golden,
            Hardening::AppArmorDisabled,
            GOLDEN_FIRMWARE,
        ),
        (
            "host-e",
            Launch::Golden,
            Hardening::GoodCompute,
            "ovmf-bootorder",
        ),
    ];
    let mut hosts = Vec::new();
    for (name, launch, hardening, firmware) in plan {
        println!(
            "- provisioning {name}: swtpm with EK certificates, the OVMF boot {firmware} and its event log, {}, {}",
            describe(launch),
            match hardening {
                Hardening::Live => "hardening checks of this machine",
                Hardening::GoodCompute => "the file tree of a hardened compute node",
                Hardening::AppArmorDisabled =>
                    "the file tree of a compute node with AppArmor disabled",
            }
        );
        let host = lab.add_host_booted(name, launch, hardening, firmware)?;
        if let Some(log) = &host.txt_log {
            println!(
                "  its TXT event log: {} (`trustpool eventlog show` reads it)",
                log.display()
            );
        }
        hosts.push((host, launch));
    }
    println!(
        "- writing the pool policy {} by events: every event of {GOLDEN_FIRMWARE}'s log (PCRs 0-7) and of the golden launch's TXT log (PCRs 17-19) by digest, requiring {}",
        lab.policy_dir.join("default.toml").display(),
        LAB_REQUIRED_CHECKS.join(", ")
    );
    lab.write_policy(
        "default",
        &measured_boot_policy(GOLDEN_FIRMWARE, LAB_REQUIRED_CHECKS)?,
    )?;
    let mut server_options = lab.server_options(&args.report_interval, &args.down_time);
    server_options.operators = vec!["lab-operator".into()];
    // An operator certificate (from the lab's operator CA) for the
    // `trustpool` CLI hint printed below.
    lab.issue_operator("lab-operator")?;
    let server = ServerProcess::start(server_options)?;
    println!(
        "- server up: gRPC {} (mutual TLS), feed https://127.0.0.1:{}",
        server.url(),
        server.http_port
    );
    let mut agents = Vec::new();
    for (host, _) in &hosts {
        let log = lab.dir.join("hosts").join(&host.name).join("agent.log");
        agents.push(lab.agent_options(host, &server).spawn(&log)?);
    }
    println!("- agents started; waiting for the first verdicts…");
    let mut running = Running {
        lab,
        hosts,
        server,
        agents,
    };
    let all_judged = wait_until(Duration::from_secs(90), || {
        running
            .hosts
            .iter()
            .all(|(h, _)| judged(&running.server, &h.name))
    });
    if !all_judged {
        eprintln!(
            "not every host has a verdict after 90s; server log:\n{}",
            running.server.log_text()
        );
        return Ok(2);
    }
    print_pool(&running)?;
    if args.report_once {
        shutdown(&mut running);
        return Ok(0);
    }
    println!(
        "\nThe lab keeps running (reports every {}); try:",
        args.report_interval
    );
    let curl = format!(
        "curl -s --cacert {} -H \"Authorization: Bearer $(cat {})\" https://127.0.0.1:{}",
        running.lab.ca_pem.display(),
        running.server.options.dir.join("reader.token").display(),
        running.server.http_port
    );
    println!("  {curl}/v1/pools/default/hosts");
    println!("  {curl}/v1/hosts/host-c");
    println!("  {curl}/metrics");
    println!(
        "  target/debug/trustpool --server {} --ca {} --cert {} --key {} hosts",
        running.server.url(),
        running.lab.ca_pem.display(),
        running.lab.dir.join("operator/lab-operator.pem").display(),
        running.lab.dir.join("operator/lab-operator.key").display()
    );
    println!("Ctrl-C stops everything.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut last = generation(&running.server);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let now = generation(&running.server);
                    if now != last {
                        last = now;
                        println!("\n-- the pool changed --");
                        let _ = print_pool(&running);
                    }
                }
            }
        }
    });
    println!("\nstopping agents, server and swtpm…");
    shutdown(&mut running);
    let _ = &running.lab;
    Ok(0)
}

fn describe(launch: Launch) -> &'static str {
    match launch {
        Launch::Golden => "TXT measured launch of the golden SINIT/MLE",
        Launch::Rogue => "TXT measured launch of an unknown SINIT",
        Launch::None => "no measured launch (PCR 17-19 stay all-FF)",
        Launch::HashStartOnly => "TXT hash start of the golden SINIT, no MLE (PCR 18-19 all zeros)",
    }
}

fn judged(server: &ServerProcess, host: &str) -> bool {
    server
        .get(&format!("/v1/hosts/{host}"))
        .and_then(|r| r.json())
        .map(|v| {
            v["pools"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| !p["attested_at"].is_null()))
        })
        .unwrap_or(false)
}

fn generation(server: &ServerProcess) -> Option<u64> {
    server.get("/v1/pools/default/hosts").ok()?.json().ok()?["generation"].as_u64()
}

fn print_pool(running: &Running) -> anyhow::Result<()> {
    let members = running.server.pool_members("default")?;
    println!(
        "\nTrusted pool 'default': {}",
        if members.is_empty() {
            "(empty)".into()
        } else {
            members.join(", ")
        }
    );
    for (host, _) in &running.hosts {
        if members.contains(&host.name) {
            continue;
        }
        let detail = running
            .server
            .get(&format!("/v1/hosts/{}", host.name))?
            .json()?;
        println!("Excluded {}:", host.name);
        for pool in detail["pools"].as_array().into_iter().flatten() {
            for r in pool["reasons"].as_array().into_iter().flatten() {
                println!(
                    "  - [{}] {}",
                    r["code"].as_str().unwrap_or("?"),
                    r["message"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

fn shutdown(running: &mut Running) {
    for agent in &mut running.agents {
        let _ = agent.stop();
    }
    let _ = running.server.stop();
    for (host, _) in &mut running.hosts {
        host.swtpm.stop();
    }
}
