//! Running one command: the RPCs to the `Admin` service (or, for `policy
//! check` and `eventlog`, the local files), then the pure rendering.

use super::args::{Cli, Command, EventlogCommand, HostsArgs, HostsCommand, PolicyCommand};
use super::connect::{connect, describe_status, resolve_target, Target};
use super::eventlogfmt;
use super::eventpolicy;
use super::policyfmt::{capture_toml, checked_pcrs, default_entry_name, diff_pcrs};
use super::render;
use super::timefmt::{now_ms, parse_time};
use super::{CliError, Exit, Outcome};
use serde_json::Value;
use std::path::Path;
use tonic::transport::Channel;
use trustpool_evidence::eventlog::measured::LogFacts;
use trustpool_proto::v1::admin_client::AdminClient;
use trustpool_proto::v1::{
    CaptureResponse, DryRunRequest, HistoryRequest, HostRequest, ListHostsRequest, PolicyFile,
    PolicyInfoRequest, TrustedAtRequest,
};

/// An open admin connection and how to name it in errors.
struct Admin {
    client: AdminClient<Channel>,
    target: String,
}

impl Admin {
    async fn open(cli: &Cli) -> Result<Admin, CliError> {
        let target: Target = resolve_target(&cli.conn).map_err(CliError::error)?;
        let channel = connect(&target).await?;
        Ok(Admin {
            client: AdminClient::new(channel),
            target: target.describe(),
        })
    }

    fn fail(&self, status: tonic::Status) -> CliError {
        describe_status(&status, &self.target)
    }
}

fn json_out(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text.push('\n');
    text
}

fn host_request(hostname: &str, comment: &str) -> HostRequest {
    HostRequest {
        hostname: hostname.to_string(),
        comment: comment.to_string(),
    }
}

/// Runs the parsed command line.
pub async fn run(cli: &Cli) -> Result<Outcome, CliError> {
    match &cli.command {
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => policy_check(dir, cli.json),
        Command::Eventlog { command } => eventlog(command, cli.json),
        Command::Hosts(args) => hosts(cli, args).await,
        Command::Policy { command } => policy(cli, command).await,
    }
}

async fn hosts(cli: &Cli, args: &HostsArgs) -> Result<Outcome, CliError> {
    let now = now_ms();
    // Validate time arguments before connecting.
    let (since, at) = match &args.command {
        Some(HostsCommand::History { since, at, .. }) => (
            since
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()
                .map_err(CliError::error)?,
            at.as_deref()
                .map(|t| parse_time(t, now))
                .transpose()
                .map_err(CliError::error)?,
        ),
        _ => (None, None),
    };
    let mut admin = Admin::open(cli).await?;
    match &args.command {
        None => {
            let resp = admin
                .client
                .list_hosts(ListHostsRequest {
                    pool: args.pool.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| admin.fail(s))?
                .into_inner();
            // Who revoked a revoked host is in its detail; a failure here only
            // loses that column.
            let mut revoked = render::Revocations::new();
            for h in resp.hosts.iter().filter(|h| h.state == "revoked") {
                if let Ok(d) = admin.client.show_host(host_request(&h.hostname, "")).await {
                    let d = d.into_inner();
                    revoked.insert(h.hostname.clone(), (d.revoked_by, d.revoked_at_ms));
                }
            }
            Ok(Outcome::ok(if cli.json {
                json_out(&render::hosts_json(&resp, &revoked))
            } else {
                render::hosts_table(&resp, &revoked, now)
            }))
        }
        Some(HostsCommand::Show { host }) => {
            let d = admin
                .client
                .show_host(host_request(host, ""))
                .await
                .map_err(|s| admin.fail(s))?
                .into_inner();
            Ok(Outcome::ok(if cli.json {
                json_out(&render::host_detail_json(&d))
            } else {
                render::host_detail(&d, now)
            }))
        }
        Some(HostsCommand::History {
            host, pool, limit, ..
        }) => {
            if let Some(at_ms) = at {
                let resp = admin
                    .client
                    .trusted_at(TrustedAtRequest {
                        hostname: host.clone(),
                        at_ms,
                    })
                    .await
                    .map_err(|s| admin.fail(s))?
                    .into_inner();
                let pool = pool.as_deref();
                let code = if render::trusted_at_yes(&resp, pool) {
                    Exit::Ok
                } else {
                    Exit::No
                };
                let text = if cli.json {
                    json_out(&render::trusted_at_json(&resp, pool))
                } else {
                    render::trusted_at_text(&resp, pool)
                };
                return Ok(Outcome::with(text, code));
            }
            let resp = admin
                .client
                .history(HistoryRequest {
                    hostname: host.clone(),
                    since_ms: since.unwrap_or(0),
                    limit: *limit,
                })
                .await
                .map_err(|s| admin.fail(s))?
                .into_inner();
            Ok(Outcome::ok(if cli.json {
                json_out(&render::history_json(&resp))
            } else {
                render::history_table(host, &resp)
            }))
        }
        Some(HostsCommand::Approve { host, comment }) => {
            action(&mut admin, cli.json, "approved", host, comment).await
        }
        Some(HostsCommand::Revoke { host, comment }) => {
            action(&mut admin, cli.json, "revoked", host, comment).await
        }
        Some(HostsCommand::Readmit { host, comment }) => {
            action(&mut admin, cli.json, "readmitted", host, comment).await
        }
    }
}

async fn action(
    admin: &mut Admin,
    json: bool,
    verb: &str,
    host: &str,
    comment: &str,
) -> Result<Outcome, CliError> {
    let request = host_request(host, comment);
    let result = match verb {
        "approved" => admin.client.approve(request).await,
        "revoked" => admin.client.revoke(request).await,
        _ => admin.client.readmit(request).await,
    };
    let resp = result.map_err(|s| admin.fail(s))?.into_inner();
    Ok(Outcome::ok(if json {
        json_out(&render::action_json(verb, host, &resp))
    } else {
        render::action_text(verb, host, &resp)
    }))
}

async fn capture(admin: &mut Admin, host: &str) -> Result<CaptureResponse, CliError> {
    admin
        .client
        .capture(host_request(host, ""))
        .await
        .map_err(|s| admin.fail(s))
        .map(|r| r.into_inner())
}

/// The event log facts of a capture (None: the evidence had no log field).
fn log_facts(json: &str) -> Result<Option<LogFacts>, CliError> {
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| CliError::error(format!("the server sent unreadable event log facts: {e}")))
}

async fn policy(cli: &Cli, command: &PolicyCommand) -> Result<Outcome, CliError> {
    let now = now_ms();
    // Read the candidate before connecting: a bad directory is a usage error.
    let candidate = match command {
        PolicyCommand::DryRun { dir } => Some(read_policy_files(dir)?),
        _ => None,
    };
    let mut admin = Admin::open(cli).await?;
    match command {
        PolicyCommand::Capture {
            host, events: true, ..
        } => {
            let resp = capture(&mut admin, host).await?;
            let values = checked_pcrs(&resp.pcrs).map_err(CliError::error)?;
            let hostname = if resp.hostname.is_empty() {
                host.as_str()
            } else {
                resp.hostname.as_str()
            };
            let log = log_facts(&resp.event_log_json)?;
            let txt = log_facts(&resp.txt_log_json)?;
            let replayed =
                eventpolicy::replayed(hostname, log.as_ref()).map_err(CliError::error)?;
            let rules = eventpolicy::capture_events_toml(
                hostname,
                resp.attested_at_ms,
                now,
                replayed,
                txt.as_ref().and_then(LogFacts::replayed),
                &values,
            )
            .map_err(CliError::error)?;
            Ok(Outcome::ok(if cli.json {
                json_out(&serde_json::json!({
                    "hostname": hostname,
                    "attested_at": super::timefmt::rfc3339_ms(resp.attested_at_ms),
                    "events": replayed.events.len(),
                    "toml": rules,
                }))
            } else {
                rules
            }))
        }
        PolicyCommand::Capture {
            host, name, pcrs, ..
        } => {
            let resp = capture(&mut admin, host).await?;
            let values = checked_pcrs(&resp.pcrs).map_err(CliError::error)?;
            let hostname = if resp.hostname.is_empty() {
                host.as_str()
            } else {
                resp.hostname.as_str()
            };
            let name = name
                .clone()
                .unwrap_or_else(|| default_entry_name(hostname, resp.attested_at_ms));
            let entry = capture_toml(hostname, resp.attested_at_ms, now, &name, &values, pcrs)
                .map_err(CliError::error)?;
            Ok(Outcome::ok(if cli.json {
                let pcrs: serde_json::Map<String, Value> = values
                    .iter()
                    .filter(|(i, _)| pcrs.is_empty() || pcrs.contains(i))
                    .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                    .collect();
                json_out(&serde_json::json!({
                    "hostname": hostname,
                    "attested_at": super::timefmt::rfc3339_ms(resp.attested_at_ms),
                    "name": name,
                    "pcrs": pcrs,
                    "toml": entry,
                }))
            } else {
                entry
            }))
        }
        PolicyCommand::Diff {
            host_a,
            host_b,
            rules,
        } => {
            let ra = capture(&mut admin, host_a).await?;
            let rb = capture(&mut admin, host_b).await?;
            let a = checked_pcrs(&ra.pcrs).map_err(CliError::error)?;
            let b = checked_pcrs(&rb.pcrs).map_err(CliError::error)?;
            let diffs = diff_pcrs(&a, &b);
            let (la, lb) = (
                log_facts(&ra.event_log_json)?,
                log_facts(&rb.event_log_json)?,
            );
            let events = match (
                eventpolicy::replayed(host_a, la.as_ref()),
                eventpolicy::replayed(host_b, lb.as_ref()),
            ) {
                (Ok(a), Ok(b)) => Ok(eventpolicy::diff_events(a, b)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if *rules {
                let events = events.map_err(CliError::error)?;
                let text = eventpolicy::rules_for_b(host_b, &events);
                let code = if text.is_empty() { Exit::Ok } else { Exit::No };
                return Ok(Outcome::with(
                    if cli.json {
                        json_out(
                            &serde_json::json!({ "host_a": host_a, "host_b": host_b, "toml": text }),
                        )
                    } else {
                        text
                    },
                    code,
                ));
            }
            let identical = diffs.is_empty() && events.as_ref().map_or(true, Vec::is_empty);
            let code = if identical { Exit::Ok } else { Exit::No };
            let text = if cli.json {
                json_out(&render::diff_json(host_a, host_b, &diffs, &events))
            } else {
                render::diff_text(host_a, host_b, &diffs, &events)
            };
            Ok(Outcome::with(text, code))
        }
        PolicyCommand::DryRun { dir } => {
            let files = candidate.unwrap_or_default();
            let resp = admin
                .client
                .dry_run(DryRunRequest { files })
                .await
                .map_err(|s| admin.fail(s))?
                .into_inner();
            let code = if render::dry_run_is_no(&resp) {
                Exit::No
            } else {
                Exit::Ok
            };
            let text = if cli.json {
                json_out(&render::dry_run_json(&resp))
            } else {
                render::dry_run_text(&dir.display().to_string(), &resp)
            };
            Ok(Outcome::with(text, code))
        }
        PolicyCommand::Show => {
            let resp = admin
                .client
                .policy_info(PolicyInfoRequest {})
                .await
                .map_err(|s| admin.fail(s))?
                .into_inner();
            Ok(Outcome::ok(if cli.json {
                json_out(&render::policy_info_json(&resp))
            } else {
                render::policy_info_text(&resp, now)
            }))
        }
        PolicyCommand::Check { dir } => policy_check(dir, cli.json),
    }
}

/// The `*.toml` files of a candidate directory, sorted by name (the files
/// the server would load from its `--policy-dir`).
pub fn read_policy_files(dir: &Path) -> Result<Vec<PolicyFile>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CliError::error(format!(
            "cannot read the policy directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| CliError::error(format!("cannot list {}: {e}", dir.display())))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::error(format!("cannot read {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(PolicyFile { name, text });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// `trustpool eventlog show|replay FILE`: offline.
pub fn eventlog(command: &EventlogCommand, json: bool) -> Result<Outcome, CliError> {
    let file = match command {
        EventlogCommand::Show { file } | EventlogCommand::Replay { file, .. } => file,
    };
    let name = file.display().to_string();
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::error(format!("cannot read the event log {name}: {e}")))?;
    let log = eventlogfmt::read_log(&name, &bytes).map_err(CliError::error)?;
    Ok(Outcome::ok(match command {
        EventlogCommand::Show { .. } if json => json_out(&eventlogfmt::show_json(&log)),
        EventlogCommand::Show { .. } => eventlogfmt::show_text(&name, &log),
        EventlogCommand::Replay { drtm, srtm, .. } => {
            let kind = match (drtm, srtm) {
                (true, _) => Some(eventlogfmt::LogKind::Drtm),
                (_, true) => Some(eventlogfmt::LogKind::Srtm),
                _ => None,
            };
            let (kind, replay) =
                eventlogfmt::replay_log(&name, &log, kind).map_err(CliError::error)?;
            if json {
                json_out(&eventlogfmt::replay_json(kind, &replay))
            } else {
                eventlogfmt::replay_text(&name, &log, kind, &replay)
            }
        }
    }))
}

/// `trustpool policy check DIR`: offline, with the server's own loader.
pub fn policy_check(dir: &Path, json: bool) -> Result<Outcome, CliError> {
    if !dir.is_dir() {
        return Err(CliError::error(format!(
            "{} is not a directory (give the policy directory, one <pool>.toml per pool)",
            dir.display()
        )));
    }
    let shown = dir.display().to_string();
    match trustpool_daemon::policy_dir::load_policy_dir(dir) {
        Ok(set) => Ok(Outcome::ok(if json {
            json_out(&render::policy_valid_json(&set))
        } else {
            render::policy_valid_text(&shown, &set)
        })),
        Err(e) => {
            let errors = render::policy_errors(&format!("{e:#}"));
            let text = if json {
                json_out(&serde_json::json!({"valid": false, "errors": errors}))
            } else {
                render::policy_errors_text(&shown, &errors)
            };
            Ok(Outcome::with(text, Exit::No))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventlog_reads_the_file_offline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.bin");
        let mut b = trustpool_evidence::eventlog::encode::LogBuilder::crypto_agile(&[
            trustpool_evidence::eventlog::Alg::Sha256,
        ]);
        b.event(
            4,
            trustpool_evidence::eventlog::EventType::EV_SEPARATOR,
            &[0; 4],
        );
        std::fs::write(&path, b.finish()).expect("write");
        let replay = EventlogCommand::Replay {
            file: path.clone(),
            drtm: false,
            srtm: false,
        };
        let out = eventlog(&replay, true).expect("runs");
        assert_eq!(out.code, Exit::Ok);
        let json: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(json["events"], 2);
        // extend(0, sha256(00000000)): PCR 2, 3 and 6 of every UEFI boot.
        assert_eq!(
            json["banks"]["sha256"]["4"],
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
        let show = eventlog(&EventlogCommand::Show { file: path.clone() }, false).expect("runs");
        assert!(show.stdout.contains("EV_SEPARATOR"), "{}", show.stdout);
        std::fs::write(&path, [1, 2, 3]).expect("write");
        let e = eventlog(&replay, false).expect_err("garbage");
        assert_eq!(e.code, Exit::Error);
        assert!(
            e.message.contains("event 0 (record at offset 0)"),
            "{}",
            e.message
        );
        let e = eventlog(
            &EventlogCommand::Show {
                file: dir.path().join("none"),
            },
            false,
        )
        .expect_err("missing");
        assert!(
            e.message.starts_with("cannot read the event log"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_txt_log_replays_as_drtm_unless_told_otherwise() {
        use trustpool_evidence::eventlog::{encode::LogBuilder, Alg, EventType};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("slaunch-eventlog");
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event_hashing(17, EventType::EVTYPE_HASH_START, b"SINIT", &[]);
        std::fs::write(&path, b.finish()).expect("write");
        let run = |drtm, srtm| {
            eventlog(
                &EventlogCommand::Replay {
                    file: path.clone(),
                    drtm,
                    srtm,
                },
                true,
            )
        };
        let pcr17 = hex::encode(trustpool_evidence::pcr::drtm_hash_start(b"SINIT"));
        for (drtm, srtm, kind) in [
            (false, false, "drtm"),
            (true, false, "drtm"),
            (false, true, "srtm"),
        ] {
            let out = run(drtm, srtm).expect("runs");
            let json: Value = serde_json::from_str(&out.stdout).expect("json");
            assert_eq!(json["log"], kind);
            assert_eq!(
                json["banks"]["sha256"]["17"] == pcr17.as_str(),
                kind == "drtm"
            );
        }
        // --drtm on a UEFI log: exit 2, naming the event.
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event(4, EventType::EV_SEPARATOR, &[0; 4]);
        std::fs::write(&path, b.finish()).expect("write");
        let e = run(true, false).expect_err("not a DRTM log");
        assert_eq!(e.code, Exit::Error);
        assert!(
            e.message.contains("event 1") && e.message.contains("PCR 4"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_toml_syntax_error_is_one_error_on_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.toml"), "require_measured_launch = \n").expect("write");
        let out = policy_check(dir.path(), false).expect("runs");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].ends_with(": 1 error"), "{}", out.stdout);
        assert_eq!(lines.len(), 2, "{}", out.stdout);
        assert!(lines[1].contains("a.toml:1:"), "{}", out.stdout);
        let json: Value =
            serde_json::from_str(&policy_check(dir.path(), true).expect("runs").stdout)
                .expect("json");
        assert_eq!(json["errors"].as_array().map(Vec::len), Some(1), "{json}");
    }

    #[test]
    fn policy_check_offline_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("default.toml"),
            "require_measured_launch = false\n[[allow]]\nname = \"g\"\npcrs = { 0 = \"abc\" }\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("gold.toml"), "bogus = 1\n").expect("write");
        std::fs::write(dir.path().join("README.md"), "not a policy").expect("write");
        let out = policy_check(dir.path(), false).expect("runs");
        assert_eq!(out.code, Exit::No);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].ends_with(": 2 errors"), "{}", out.stdout);
        assert!(
            lines[1].contains("default.toml:4:") && lines[1].contains("64 hex"),
            "{}",
            out.stdout
        );
        assert!(
            lines[2].contains("gold.toml:1:") && lines[2].contains("bogus"),
            "{}",
            out.stdout
        );
        let json: Value =
            serde_json::from_str(&policy_check(dir.path(), true).expect("runs").stdout)
                .expect("json");
        assert_eq!(json["valid"], false);
        assert_eq!(json["errors"].as_array().map(Vec::len), Some(2));

        std::fs::write(
            dir.path().join("gold.toml"),
            "require_measured_launch = false\n[[allow]]\nname = \"any\"\npcrs = {}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("default.toml"),
            "require_checks = [\"mac.enforcing_anyy\"]\n[[allow]]\nname = \"g\"\npcrs = { 17 = \"1111111111111111111111111111111111111111111111111111111111111111\", 18 = \"1212121212121212121212121212121212121212121212121212121212121212\" }\n",
        )
        .expect("write");
        let out = policy_check(dir.path(), false).expect("runs");
        assert_eq!(out.code, Exit::No);
        assert!(
            out.stdout
                .contains("default.toml: require_checks names 'mac.enforcing_anyy'"),
            "{}",
            out.stdout
        );

        std::fs::write(
            dir.path().join("default.toml"),
            "require_checks = [\"mac.enforcing_any\"]\n[[allow]]\nname = \"g\"\npcrs = { 17 = \"1111111111111111111111111111111111111111111111111111111111111111\", 18 = \"1212121212121212121212121212121212121212121212121212121212121212\" }\n",
        )
        .expect("write");
        let out = policy_check(dir.path(), false).expect("runs");
        assert_eq!(out.code, Exit::Ok, "{}", out.stdout);
        assert!(
            out.stdout.contains("valid, 2 pools, digest "),
            "{}",
            out.stdout
        );
        let files = read_policy_files(dir.path()).expect("files");
        assert_eq!(
            files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["default.toml", "gold.toml"]
        );

        // Errors of the event rules, each with file and line.
        std::fs::write(
            dir.path().join("gold.toml"),
            format!(
                "require_measured_launch = false\npcrs = [0, 4, 7]\n\n[events]\npcrs = [4]\n\n[[events.allow]]\npcr = 7\ndigest = \"{d}\"\n\n[[events.allow]]\npcr = 4\ndigest = \"{d}\"\ntype = \"EV_BOGUS\"\n\n[[events.forbid]]\ntext = \"x\"\ndigest = \"{d}\"\n",
                d = "ab".repeat(32)
            ),
        )
        .expect("write");
        let out = policy_check(dir.path(), false).expect("runs");
        assert_eq!(out.code, Exit::No, "{}", out.stdout);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].ends_with(": 3 errors"), "{}", out.stdout);
        assert!(
            lines[1].contains("gold.toml:8:7: PCR 7 is not in [events].pcrs"),
            "{}",
            out.stdout
        );
        assert!(
            lines[2].contains("gold.toml:14:8: unknown event type 'EV_BOGUS'"),
            "{}",
            out.stdout
        );
        assert!(
            lines[3].contains("gold.toml:18:10: [[events.forbid]] rule has both text and digest"),
            "{}",
            out.stdout
        );
        std::fs::remove_file(dir.path().join("gold.toml")).expect("rm");

        let missing = policy_check(&dir.path().join("nope"), false).expect_err("no dir");
        assert_eq!(missing.code, Exit::Error);
        assert!(read_policy_files(&dir.path().join("nope")).is_err());
    }
}
