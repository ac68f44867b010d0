//! Tables and JSON for every answer of the CLI. Pure: every function takes
//! the server's answer (and "now", for ages) and returns text or a
//! `serde_json::Value`.

use super::eventpolicy::{EventDifference, EventSide};
use super::policyfmt::PcrDifference;
use super::timefmt::{age, rfc3339, rfc3339_ms};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use trustpool_evidence::policy::PolicySet;
use trustpool_proto::v1::{
    ActionResponse, DryRunResponse, HistoryEvent, HistoryResponse, HostDetail, ListHostsResponse,
    PcrValue, PolicyInfoResponse, Reason, TrustedAtResponse,
};

/// Who revoked a host and when (unix ms), for the `hosts` table.
pub type Revocations = BTreeMap<String, (String, i64)>;

/// A table: a header row and aligned columns separated by two spaces; the
/// last column is not padded. Widths count characters.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// At most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The first 12 hex characters of a digest (`-` if empty).
pub fn short_digest(digest: &str) -> String {
    if digest.is_empty() {
        "-".into()
    } else {
        digest.chars().take(12).collect()
    }
}

/// `[code] message`.
pub fn reason_text(r: &Reason) -> String {
    format!("[{}] {}", r.code, super::one_line(&r.message))
}

fn reasons_json(reasons: &[Reason]) -> Value {
    Value::Array(
        reasons
            .iter()
            .map(|r| json!({"code": r.code, "message": r.message}))
            .collect(),
    )
}

fn pcrs_json(pcrs: &[PcrValue]) -> Value {
    Value::Array(
        pcrs.iter()
            .map(|p| json!({"index": p.index, "value": hex::encode(&p.digest)}))
            .collect(),
    )
}

fn time_json(ms: i64) -> Value {
    rfc3339_ms(ms).map(Value::String).unwrap_or(Value::Null)
}

/// `trustpool hosts`: HOST, STATE, POOLS, LAST GOOD, CONNECTED, REASON.
/// Revoked hosts show who revoked them and when (from `revoked`) instead of
/// their first reason.
pub fn hosts_table(resp: &ListHostsResponse, revoked: &Revocations, now_ms: i64) -> String {
    if resp.hosts.is_empty() {
        return format!(
            "No host known.\nPolicy in force: {}\n",
            if resp.policy_digest.is_empty() {
                "-"
            } else {
                &resp.policy_digest
            }
        );
    }
    let rows: Vec<Vec<String>> = resp
        .hosts
        .iter()
        .map(|h| {
            let reason = match revoked.get(&h.hostname) {
                Some((by, at)) if h.state == "revoked" => {
                    format!("revoked by {} {}", or_dash(by), age(now_ms, *at))
                }
                _ => h.first_reason.as_ref().map(reason_text).unwrap_or_default(),
            };
            vec![
                h.hostname.clone(),
                h.state.clone(),
                if h.trusted_pools.is_empty() {
                    "-".into()
                } else {
                    h.trusted_pools.join(",")
                },
                age(now_ms, h.last_good_ms),
                if h.connected { "yes" } else { "no" }.into(),
                truncate(&reason, 120),
            ]
        })
        .collect();
    let mut out = table(
        &["HOST", "STATE", "POOLS", "LAST GOOD", "CONNECTED", "REASON"],
        &rows,
    );
    let _ = writeln!(out, "Policy in force: {}", or_dash(&resp.policy_digest));
    out
}

/// `trustpool hosts --json`.
pub fn hosts_json(resp: &ListHostsResponse, revoked: &Revocations) -> Value {
    json!({
        "policy_digest": resp.policy_digest,
        "hosts": resp.hosts.iter().map(|h| {
            let mut v = json!({
                "hostname": h.hostname,
                "state": h.state,
                "trusted_pools": h.trusted_pools,
                "last_good": time_json(h.last_good_ms),
                "last_good_ms": h.last_good_ms,
                "connected": h.connected,
                "first_reason": h.first_reason.as_ref().map(|r| json!({"code": r.code, "message": r.message})),
            });
            if let Some((by, at)) = revoked.get(&h.hostname) {
                v["revoked_by"] = json!(by);
                v["revoked_at"] = time_json(*at);
            }
            v
        }).collect::<Vec<_>>(),
    })
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `trustpool hosts show HOST`.
pub fn host_detail(d: &HostDetail, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Host:        {}", d.hostname);
    let _ = writeln!(
        out,
        "State:       {} ({})",
        d.state,
        if d.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    if d.enrolled_at_ms != 0 {
        let _ = writeln!(
            out,
            "Enrolled:    {} ({})",
            rfc3339(d.enrolled_at_ms),
            age(now_ms, d.enrolled_at_ms)
        );
    }
    if !d.pending_reason.is_empty() {
        let _ = writeln!(
            out,
            "Pending:     {} (admit with `trustpool hosts approve {}`)",
            super::one_line(&d.pending_reason),
            d.hostname
        );
    }
    if !d.revoked_by.is_empty() || d.revoked_at_ms != 0 {
        let _ = writeln!(
            out,
            "Revoked:     by {} at {} ({})",
            or_dash(&d.revoked_by),
            rfc3339(d.revoked_at_ms),
            age(now_ms, d.revoked_at_ms)
        );
    }
    out.push_str("\nPools:\n");
    if d.pools.is_empty() {
        out.push_str("  (no verdict yet)\n");
    }
    for p in &d.pools {
        let _ = writeln!(
            out,
            "  {}: {}, attested {} ({}), valid until {} ({}), policy {}",
            p.pool,
            if p.trusted { "TRUSTED" } else { "NOT trusted" },
            rfc3339(p.attested_at_ms),
            age(now_ms, p.attested_at_ms),
            rfc3339(p.valid_until_ms),
            age(now_ms, p.valid_until_ms),
            or_dash(&p.policy_digest)
        );
        for r in &p.reasons {
            let _ = writeln!(out, "    - {}", reason_text(r));
        }
    }
    if d.evidence_at_ms == 0 && d.pcrs.is_empty() {
        out.push_str("\nEvidence: none verified yet\n");
    } else {
        let _ = writeln!(
            out,
            "\nEvidence of {} ({}):",
            rfc3339(d.evidence_at_ms),
            age(now_ms, d.evidence_at_ms)
        );
        for p in &d.pcrs {
            let _ = writeln!(out, "  PCR {:>2}  {}", p.index, hex::encode(&p.digest));
        }
        let _ = writeln!(
            out,
            "  TPM      reset count {}, restart count {}, clock {} ms",
            d.reset_count, d.restart_count, d.clock
        );
    }
    let _ = writeln!(out, "  AK       sha256 {}", or_dash(&d.ak_fingerprint));
    let _ = writeln!(out, "  EK       sha256 {}", or_dash(&d.ek_fingerprint));
    let _ = writeln!(
        out,
        "  Cert     {} (sha256 {})",
        or_dash(&d.cert_subject),
        or_dash(&d.cert_fingerprint)
    );
    out.push_str("\nRecent history:\n");
    if d.recent.is_empty() {
        out.push_str("  (none)\n");
    } else {
        for line in history_rows_table(&d.recent).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn event_json(e: &HistoryEvent) -> Value {
    json!({
        "at": time_json(e.at_ms),
        "at_ms": e.at_ms,
        "hostname": e.hostname,
        "pool": e.pool,
        "event": e.event,
        "trusted": e.trusted,
        "policy_digest": e.policy_digest,
        "reasons": reasons_json(&e.reasons),
        "actor": e.actor,
    })
}

/// `trustpool hosts show HOST --json`.
pub fn host_detail_json(d: &HostDetail) -> Value {
    json!({
        "hostname": d.hostname,
        "state": d.state,
        "connected": d.connected,
        "enrolled_at": time_json(d.enrolled_at_ms),
        "pending_reason": d.pending_reason,
        "revoked_by": d.revoked_by,
        "revoked_at": time_json(d.revoked_at_ms),
        "pools": d.pools.iter().map(|p| json!({
            "pool": p.pool,
            "trusted": p.trusted,
            "attested_at": time_json(p.attested_at_ms),
            "valid_until": time_json(p.valid_until_ms),
            "policy_digest": p.policy_digest,
            "reasons": reasons_json(&p.reasons),
        })).collect::<Vec<_>>(),
        "evidence": {
            "at": time_json(d.evidence_at_ms),
            "pcrs": pcrs_json(&d.pcrs),
            "reset_count": d.reset_count,
            "restart_count": d.restart_count,
            "clock": d.clock,
            "ak_fingerprint": d.ak_fingerprint,
            "ek_fingerprint": d.ek_fingerprint,
            "cert_subject": d.cert_subject,
            "cert_fingerprint": d.cert_fingerprint,
        },
        "recent": d.recent.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn history_rows_table(events: &[HistoryEvent]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let reason = match e.reasons.split_first() {
                None => String::new(),
                Some((first, [])) => reason_text(first),
                Some((first, rest)) => format!("{} (+{} more)", reason_text(first), rest.len()),
            };
            vec![
                rfc3339(e.at_ms),
                e.event.clone(),
                or_dash(&e.pool).to_string(),
                if e.event == "verdict" || e.event == "reasons" {
                    if e.trusted { "yes" } else { "no" }.into()
                } else {
                    "-".into()
                },
                or_dash(&e.actor).to_string(),
                short_digest(&e.policy_digest),
                truncate(&reason, 120),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "EVENT", "POOL", "TRUSTED", "ACTOR", "POLICY", "REASON",
        ],
        &rows,
    )
}

/// `trustpool hosts history HOST` (oldest first).
pub fn history_table(host: &str, resp: &HistoryResponse) -> String {
    if resp.events.is_empty() {
        return format!("No event recorded for {host} in that period.\n");
    }
    history_rows_table(&resp.events)
}

/// `trustpool hosts history HOST --json`.
pub fn history_json(resp: &HistoryResponse) -> Value {
    json!({"events": resp.events.iter().map(event_json).collect::<Vec<_>>()})
}

/// The answer of `--at`: trusted (in `pool`, or in any pool) and not revoked.
pub fn trusted_at_yes(resp: &TrustedAtResponse, pool: Option<&str>) -> bool {
    !resp.revoked
        && resp
            .pools
            .iter()
            .filter(|p| pool.is_none_or(|want| p.pool == want))
            .any(|p| p.known && p.trusted)
}

/// `trustpool hosts history HOST --at T [--pool P]`.
pub fn trusted_at_text(resp: &TrustedAtResponse, pool: Option<&str>) -> String {
    let yes = trusted_at_yes(resp, pool);
    let pools: Vec<_> = resp
        .pools
        .iter()
        .filter(|p| pool.is_none_or(|want| p.pool == want))
        .collect();
    let trusted_in: Vec<&str> = pools
        .iter()
        .filter(|p| p.known && p.trusted)
        .map(|p| p.pool.as_str())
        .collect();
    let mut out = format!("{} at {}: ", resp.hostname, rfc3339(resp.at_ms));
    if resp.revoked {
        out.push_str("NOT trusted: the host was revoked at that time\n");
    } else if yes {
        let _ = writeln!(out, "TRUSTED in {}", trusted_in.join(", "));
    } else {
        match pool {
            Some(p) => {
                let _ = writeln!(out, "NOT trusted in {p}");
            }
            None => out.push_str("NOT trusted in any pool\n"),
        }
    }
    if pools.is_empty() {
        match pool {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  {p}: nothing recorded for this pool before that time"
                );
            }
            None => out.push_str("  nothing recorded for this host before that time\n"),
        }
    }
    for p in pools {
        if !p.known {
            let _ = writeln!(out, "  {}: nothing recorded before that time", p.pool);
            continue;
        }
        let _ = writeln!(
            out,
            "  {}: {} since {}, policy {}",
            p.pool,
            if p.trusted { "trusted" } else { "NOT trusted" },
            rfc3339(p.since_ms),
            or_dash(&p.policy_digest)
        );
        for r in &p.reasons {
            let _ = writeln!(out, "    - {}", reason_text(r));
        }
    }
    out
}

/// `trustpool hosts history HOST --at T --json`.
pub fn trusted_at_json(resp: &TrustedAtResponse, pool: Option<&str>) -> Value {
    json!({
        "hostname": resp.hostname,
        "at": time_json(resp.at_ms),
        "at_ms": resp.at_ms,
        "trusted": trusted_at_yes(resp, pool),
        "revoked": resp.revoked,
        "pools": resp.pools.iter().filter(|p| pool.is_none_or(|want| p.pool == want)).map(|p| json!({
            "pool": p.pool,
            "known": p.known,
            "trusted": p.trusted,
            "policy_digest": p.policy_digest,
            "since": time_json(p.since_ms),
            "reasons": reasons_json(&p.reasons),
        })).collect::<Vec<_>>(),
    })
}

/// `trustpool hosts approve|revoke|readmit HOST`.
pub fn action_text(verb: &str, host: &str, resp: &ActionResponse) -> String {
    if resp.message.is_empty() {
        format!("{host}: {verb}\n")
    } else {
        format!("{host}: {}\n", super::one_line(&resp.message))
    }
}

/// `trustpool hosts approve|revoke|readmit HOST --json`.
pub fn action_json(verb: &str, host: &str, resp: &ActionResponse) -> Value {
    json!({"hostname": host, "action": verb, "message": resp.message})
}

/// `trustpool policy diff A B`.
pub fn diff_text(
    a: &str,
    b: &str,
    diffs: &[PcrDifference],
    events: &Result<Vec<EventDifference>, String>,
) -> String {
    let mut out = if diffs.is_empty() {
        format!("{a} and {b} have identical PCR values.\n")
    } else {
        let rows: Vec<Vec<String>> = diffs
            .iter()
            .map(|d| {
                vec![
                    d.index.to_string(),
                    d.a.clone().unwrap_or_else(|| "(not quoted)".into()),
                    d.b.clone().unwrap_or_else(|| "(not quoted)".into()),
                ]
            })
            .collect();
        let mut out = if diffs.len() == 1 {
            format!("1 PCR differs between {a} and {b}:\n")
        } else {
            format!("{} PCRs differ between {a} and {b}:\n", diffs.len())
        };
        out.push_str(&table(&["PCR", a, b], &rows));
        out
    };
    match events {
        Err(why) => out.push_str(&format!("Events not compared: {why}\n")),
        Ok(list) if list.is_empty() => {
            out.push_str("The events of the PCRs both logs replay are identical.\n")
        }
        Ok(list) => {
            out.push_str(&format!(
                "{} event{} differ{} (PCRs whose logs replay on both hosts):\n",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                if list.len() == 1 { "s" } else { "" }
            ));
            let one = |host: &str, s: &EventSide| {
                format!(
                    "{host} event {} {} sha256 {} ({})",
                    s.number, s.event_type, s.digest, s.summary
                )
            };
            for d in list {
                let line = match (&d.a, &d.b) {
                    (Some(x), Some(y)) => format!(
                        "  PCR {} changed: {}\n           now: {}\n",
                        d.pcr,
                        one(a, x),
                        one(b, y)
                    ),
                    (Some(x), None) => format!("  PCR {} only on {a}: {}\n", d.pcr, one(a, x)),
                    (None, Some(y)) => format!("  PCR {} only on {b}: {}\n", d.pcr, one(b, y)),
                    (None, None) => String::new(),
                };
                out.push_str(&line);
            }
        }
    }
    out
}

/// `trustpool policy diff A B --json`.
pub fn diff_json(
    a: &str,
    b: &str,
    diffs: &[PcrDifference],
    events: &Result<Vec<EventDifference>, String>,
) -> Value {
    let (event_list, not_compared) = match events {
        Ok(l) => (json!(l), Value::Null),
        Err(e) => (Value::Null, json!(e)),
    };
    let identical = diffs.is_empty() && events.as_ref().map_or(true, Vec::is_empty);
    json!({"host_a": a, "host_b": b, "identical": identical, "differences": diffs,
           "event_differences": event_list, "events_not_compared": not_compared})
}

/// The error lines of a failed `load_policy_dir`: its message is a header
/// line (`invalid policy in DIR:`) and one indented `file:line:col: problem`
/// per error; any other error is one line.
pub fn policy_errors(error_text: &str) -> Vec<String> {
    let mut lines: Vec<&str> = error_text.lines().collect();
    if lines.len() > 1 && lines[0].starts_with("invalid policy in ") {
        lines.remove(0);
    }
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn pool_summary(p: &trustpool_evidence::policy::PoolPolicy) -> String {
    let pcrs: Vec<String> = p.pcrs.iter().map(|i| i.to_string()).collect();
    let names: Vec<&str> = p.allow.iter().map(|a| a.name.as_str()).collect();
    format!(
        "{}: PCRs {}; measured launch {}; required checks: {}; {} allowed build{} ({})",
        p.name,
        pcrs.join(","),
        if p.require_measured_launch {
            "required"
        } else {
            "not required"
        },
        if p.require_checks.is_empty() {
            "none".into()
        } else {
            p.require_checks.join(", ")
        },
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    ) + &events_summary(p)
}

/// `; event rules: PCRs 0,2,4,7 by events (24 allowed, 3 required, 1 forbidden), PCR 17,18 by value`.
fn events_summary(p: &trustpool_evidence::policy::PoolPolicy) -> String {
    let Some(rules) = &p.events else {
        return String::new();
    };
    let list = |pcrs: &mut dyn Iterator<Item = u8>| -> String {
        let v: Vec<String> = pcrs.map(|i| i.to_string()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    };
    let mut out = format!(
        "; event rules: PCRs {} by events ({} allowed, {} required, {} forbidden)",
        list(&mut rules.pcrs().iter().copied()),
        rules.allow().len(),
        rules.require().len(),
        rules.forbid().len()
    );
    if !rules.values().is_empty() {
        let _ = write!(
            out,
            ", PCRs {} by value",
            list(&mut rules.values().keys().copied())
        );
    }
    out
}

/// `trustpool policy check DIR` on a valid directory.
pub fn policy_valid_text(dir: &str, set: &PolicySet) -> String {
    let mut out = format!(
        "{dir}: valid, {} pool{}, digest {}\n",
        set.pools.len(),
        if set.pools.len() == 1 { "" } else { "s" },
        set.digest_hex()
    );
    if set.pools.is_empty() {
        out.push_str("  (no <pool>.toml file: no host would be trusted)\n");
    }
    for p in set.pools.values() {
        let _ = writeln!(out, "  {}", pool_summary(p));
    }
    out
}

/// `trustpool policy check DIR --json` on a valid directory.
pub fn policy_valid_json(set: &PolicySet) -> Value {
    json!({
        "valid": true,
        "digest": set.digest_hex(),
        "pools": set.pools.values().map(|p| json!({
            "pool": p.name,
            "pcrs": p.pcrs,
            "require_measured_launch": p.require_measured_launch,
            "require_checks": p.require_checks,
            "allow": p.allow.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            "events": p.events.as_ref().map(|e| json!({
                "pcrs": e.pcrs(),
                "ignore_pcrs": e.ignore_pcrs(),
                "values": e.values().keys().collect::<Vec<_>>(),
                "allow": e.allow().len(),
                "require": e.require().len(),
                "forbid": e.forbid().len(),
            })),
        })).collect::<Vec<_>>(),
        "errors": [],
    })
}

/// `trustpool policy check DIR` (or `dry-run`) on an invalid directory.
pub fn policy_errors_text(dir: &str, errors: &[String]) -> String {
    let mut out = format!(
        "{dir}: {} error{}\n",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        let _ = writeln!(out, "{e}");
    }
    out
}

/// Whether a dry-run answer is a "no" (exit 1): an invalid candidate, or a
/// host that would leave a pool.
pub fn dry_run_is_no(resp: &DryRunResponse) -> bool {
    !resp.errors.is_empty() || resp.pools.iter().any(|p| !p.leave.is_empty())
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

/// `trustpool policy dry-run DIR`.
pub fn dry_run_text(dir: &str, resp: &DryRunResponse) -> String {
    if !resp.errors.is_empty() {
        let mut out = format!("Candidate {dir} is invalid; nothing was evaluated.\n");
        out.push_str(&policy_errors_text(dir, &resp.errors));
        return out;
    }
    let mut out = format!(
        "Candidate policy {} (in force: {}), not enforced:\n",
        or_dash(&resp.candidate_digest),
        or_dash(&resp.current_digest)
    );
    if resp.pools.is_empty() {
        out.push_str("  (no pool)\n");
    }
    for p in &resp.pools {
        let _ = writeln!(out, "Pool {}:", p.pool);
        let _ = writeln!(out, "  join:  {}", names(&p.join));
        let _ = writeln!(out, "  leave: {}", names(&p.leave));
        let _ = writeln!(out, "  stay:  {}", names(&p.stay));
    }
    let leaving: usize = resp.pools.iter().map(|p| p.leave.len()).sum();
    if leaving == 0 {
        out.push_str("No host would leave a pool.\n");
    } else {
        let _ = writeln!(
            out,
            "{leaving} host{} would leave {}.",
            if leaving == 1 { "" } else { "s" },
            if resp.pools.iter().filter(|p| !p.leave.is_empty()).count() == 1 {
                "a pool"
            } else {
                "pools"
            }
        );
    }
    out
}

/// `trustpool policy dry-run DIR --json`.
pub fn dry_run_json(resp: &DryRunResponse) -> Value {
    json!({
        "valid": resp.errors.is_empty(),
        "candidate_digest": resp.candidate_digest,
        "current_digest": resp.current_digest,
        "errors": resp.errors,
        "pools": resp.pools.iter().map(|p| json!({
            "pool": p.pool, "join": p.join, "leave": p.leave, "stay": p.stay,
        })).collect::<Vec<_>>(),
    })
}

/// `trustpool policy show`.
pub fn policy_info_text(resp: &PolicyInfoResponse, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Policy in force: {}", or_dash(&resp.digest));
    let _ = writeln!(
        out,
        "Loaded:          {} ({})",
        rfc3339(resp.loaded_at_ms),
        age(now_ms, resp.loaded_at_ms)
    );
    let _ = writeln!(out, "Pools:           {}", names(&resp.pools));
    if resp.last_error.is_empty() {
        out.push_str("Last refused reload: none since the policy in force was loaded\n");
    } else {
        out.push_str("Last refused reload (the policy above stays in force):\n");
        for line in resp.last_error.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(out, "  {}", line.trim());
        }
    }
    out
}

/// `trustpool policy show --json`.
pub fn policy_info_json(resp: &PolicyInfoResponse) -> Value {
    json!({
        "digest": resp.digest,
        "pools": resp.pools,
        "loaded_at": time_json(resp.loaded_at_ms),
        "last_error": resp.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_proto::v1::{HostSummary, PolicyFile, PoolAt, PoolChange, PoolState};

    const NOW: i64 = 1_795_356_120_000; // 2026-11-22T14:02:00Z

    fn reason(code: &str, message: &str) -> Reason {
        Reason {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "é".into(), "end".into()],
                vec!["y".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB  C\nxxx  é   end\ny\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(short_digest(&"ab".repeat(32)), "abababababab");
    }

    fn summary(
        host: &str,
        state: &str,
        pools: &[&str],
        last_good: i64,
        reason: Option<Reason>,
    ) -> HostSummary {
        HostSummary {
            hostname: host.into(),
            state: state.into(),
            trusted_pools: pools.iter().map(|p| p.to_string()).collect(),
            last_good_ms: last_good,
            first_reason: reason,
            connected: state == "trusted",
        }
    }

    #[test]
    fn hosts_table_shows_state_pools_age_and_reason() {
        let resp = ListHostsResponse {
            hosts: vec![
                summary(
                    "host-a",
                    "trusted",
                    &["default", "gold"],
                    NOW - 12_000,
                    None,
                ),
                summary(
                    "host-c",
                    "untrusted",
                    &[],
                    0,
                    Some(reason("pcr.not_allowed", "PCR 17 is ffff\nfff")),
                ),
                summary(
                    "host-r",
                    "revoked",
                    &[],
                    NOW - 600_000,
                    Some(reason("host.revoked", "revoked")),
                ),
            ],
            policy_digest: "d1".into(),
        };
        let mut revoked = Revocations::new();
        revoked.insert("host-r".into(), ("operator-alice".into(), NOW - 120_000));
        let t = hosts_table(&resp, &revoked, NOW);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "HOST    STATE      POOLS         LAST GOOD  CONNECTED  REASON"
        );
        assert_eq!(lines[1], "host-a  trusted    default,gold  12s ago    yes");
        assert_eq!(lines[2], "host-c  untrusted  -             never      no         [pcr.not_allowed] PCR 17 is ffff fff");
        assert_eq!(lines[3], "host-r  revoked    -             10m ago    no         revoked by operator-alice 2m ago");
        assert_eq!(lines[4], "Policy in force: d1");
        let j = hosts_json(&resp, &revoked);
        assert_eq!(j["hosts"][0]["trusted_pools"], json!(["default", "gold"]));
        assert_eq!(j["hosts"][1]["last_good"], Value::Null);
        assert_eq!(j["hosts"][1]["first_reason"]["code"], "pcr.not_allowed");
        assert_eq!(j["hosts"][2]["revoked_by"], "operator-alice");
        assert_eq!(j["hosts"][0]["last_good"], "2026-11-22T14:01:48.000Z");
        assert!(
            hosts_table(&ListHostsResponse::default(), &revoked, NOW).starts_with("No host known.")
        );
    }

    fn event(at: i64, ev: &str, trusted: bool, reasons: Vec<Reason>, actor: &str) -> HistoryEvent {
        HistoryEvent {
            at_ms: at,
            hostname: "host-a".into(),
            pool: if ev == "verdict" {
                "default".into()
            } else {
                String::new()
            },
            event: ev.into(),
            trusted,
            policy_digest: if ev == "verdict" {
                "0123456789abcdef".into()
            } else {
                String::new()
            },
            reasons,
            actor: actor.into(),
        }
    }

    #[test]
    fn host_detail_lists_every_reason_evidence_and_history() {
        let d = HostDetail {
            hostname: "host-a".into(),
            state: "untrusted".into(),
            connected: true,
            pools: vec![PoolState {
                pool: "default".into(),
                trusted: false,
                attested_at_ms: NOW - 5_000,
                valid_until_ms: NOW + 70_000,
                policy_digest: "feed".into(),
                reasons: vec![
                    reason("pcr.not_allowed", "PCR 17 differs"),
                    reason("launch.not_measured", "no TXT"),
                ],
            }],
            pcrs: vec![
                PcrValue {
                    index: 0,
                    digest: vec![0; 32],
                },
                PcrValue {
                    index: 17,
                    digest: vec![0xab; 32],
                },
            ],
            evidence_at_ms: NOW - 5_000,
            reset_count: 3,
            restart_count: 1,
            clock: 99,
            ak_fingerprint: "akfp".into(),
            ek_fingerprint: "ekfp".into(),
            cert_subject: "CN=host-a".into(),
            cert_fingerprint: "certfp".into(),
            enrolled_at_ms: NOW - 3_600_000,
            pending_reason: String::new(),
            revoked_by: "operator-alice".into(),
            revoked_at_ms: NOW - 60_000,
            recent: vec![event(
                NOW - 60_000,
                "revoked",
                false,
                vec![],
                "operator-alice",
            )],
        };
        let t = host_detail(&d, NOW);
        for needle in [
            "State:       untrusted (connected)",
            "Revoked:     by operator-alice at 2026-11-22T14:01:00Z (1m ago)",
            "  default: NOT trusted, attested 2026-11-22T14:01:55Z (5s ago), valid until 2026-11-22T14:03:10Z (in 1m), policy feed",
            "    - [pcr.not_allowed] PCR 17 differs",
            "    - [launch.not_measured] no TXT",
            &format!("  PCR 17  {}", "ab".repeat(32)),
            "  PCR  0  ",
            "reset count 3, restart count 1",
            "AK       sha256 akfp",
            "EK       sha256 ekfp",
            "Cert     CN=host-a (sha256 certfp)",
            "2026-11-22T14:01:00Z  revoked  -     -        operator-alice",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
        }
        let j = host_detail_json(&d);
        assert_eq!(j["pools"][0]["reasons"][1]["code"], "launch.not_measured");
        assert_eq!(j["evidence"]["pcrs"][1]["value"], "ab".repeat(32));
        assert_eq!(j["evidence"]["reset_count"], 3);
        assert_eq!(j["recent"][0]["actor"], "operator-alice");
    }

    #[test]
    fn history_table_marks_verdicts_and_counts_more_reasons() {
        let resp = HistoryResponse {
            events: vec![
                event(NOW - 60_000, "enrolled", false, vec![], "agent"),
                event(
                    NOW,
                    "verdict",
                    false,
                    vec![reason("a.b", "one"), reason("c.d", "two")],
                    "agent",
                ),
            ],
        };
        let t = history_table("host-a", &resp);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "TIME                  EVENT     POOL     TRUSTED  ACTOR  POLICY        REASON"
        );
        assert_eq!(
            lines[1],
            "2026-11-22T14:01:00Z  enrolled  -        -        agent  -"
        );
        assert_eq!(lines[2], "2026-11-22T14:02:00Z  verdict   default  no       agent  0123456789ab  [a.b] one (+1 more)");
        assert!(history_table("h", &HistoryResponse::default()).contains("No event"));
        assert_eq!(
            history_json(&resp)["events"][1]["reasons"][1]["message"],
            "two"
        );
    }

    fn at(pools: Vec<PoolAt>, revoked: bool) -> TrustedAtResponse {
        TrustedAtResponse {
            hostname: "host-a".into(),
            at_ms: NOW,
            pools,
            revoked,
        }
    }

    fn pool_at(pool: &str, known: bool, trusted: bool, reasons: Vec<Reason>) -> PoolAt {
        PoolAt {
            pool: pool.into(),
            known,
            trusted,
            policy_digest: "cafe".into(),
            reasons,
            since_ms: NOW - 3_600_000,
        }
    }

    #[test]
    fn trusted_at_answers_yes_or_no_with_policy_and_reasons() {
        let r = at(
            vec![
                pool_at("default", true, true, vec![]),
                pool_at(
                    "gold",
                    true,
                    false,
                    vec![reason("pcr.not_allowed", "PCR 17")],
                ),
            ],
            false,
        );
        assert!(trusted_at_yes(&r, None));
        assert!(trusted_at_yes(&r, Some("default")));
        assert!(!trusted_at_yes(&r, Some("gold")));
        assert!(!trusted_at_yes(&r, Some("other")));
        let t = trusted_at_text(&r, None);
        assert!(
            t.starts_with("host-a at 2026-11-22T14:02:00Z: TRUSTED in default\n"),
            "{t}"
        );
        assert!(
            t.contains("  default: trusted since 2026-11-22T13:02:00Z, policy cafe\n"),
            "{t}"
        );
        assert!(t.contains("  gold: NOT trusted since 2026-11-22T13:02:00Z, policy cafe\n    - [pcr.not_allowed] PCR 17\n"), "{t}");
        let t = trusted_at_text(&r, Some("gold"));
        assert!(
            t.starts_with("host-a at 2026-11-22T14:02:00Z: NOT trusted in gold\n")
                && !t.contains("default"),
            "{t}"
        );
        assert!(trusted_at_text(&r, Some("other")).contains("other: nothing recorded"));

        let revoked = at(vec![pool_at("default", true, true, vec![])], true);
        assert!(!trusted_at_yes(&revoked, None));
        assert!(trusted_at_text(&revoked, None).contains("revoked at that time"));
        let unknown = at(vec![pool_at("default", false, false, vec![])], false);
        assert!(!trusted_at_yes(&unknown, None));
        assert!(
            trusted_at_text(&unknown, None).contains("default: nothing recorded before that time")
        );
        let empty = at(vec![], false);
        assert!(
            trusted_at_text(&empty, None).contains("NOT trusted in any pool\n  nothing recorded")
        );
        let j = trusted_at_json(&r, Some("gold"));
        assert_eq!(j["trusted"], false);
        assert_eq!(j["pools"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn diff_output() {
        let d = vec![
            PcrDifference {
                index: 17,
                a: Some("aa".into()),
                b: Some("ff".into()),
            },
            PcrDifference {
                index: 8,
                a: None,
                b: Some("08".into()),
            },
        ];
        let none: Result<Vec<EventDifference>, String> = Err("host-r: no log".into());
        let t = diff_text("host-a", "host-r", &d, &none);
        assert_eq!(t, "2 PCRs differ between host-a and host-r:\nPCR  host-a        host-r\n17   aa            ff\n8    (not quoted)  08\nEvents not compared: host-r: no log\n");
        let same = Ok(Vec::new());
        assert!(diff_text("a", "b", &[], &same).contains("identical"));
        assert_eq!(
            diff_json("a", "b", &d, &none)["differences"][0]["index"],
            17
        );
        assert_eq!(diff_json("a", "b", &[], &same)["identical"], true);
        // One changed event: both sides, named.
        let side = |n: u32, digest: &str| EventSide {
            number: n,
            event_type: trustpool_evidence::eventlog::EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            digest: digest.into(),
            summary: "\"DXEFV\"".into(),
        };
        let changed = Ok(vec![EventDifference {
            pcr: 0,
            change: "changed",
            a: Some(side(3, "aa")),
            b: Some(side(3, "bb")),
        }]);
        let t = diff_text("a", "b", &[], &changed);
        assert!(t.contains("1 event differs"), "{t}");
        assert!(
            t.contains("PCR 0 changed: a event 3 EV_EFI_PLATFORM_FIRMWARE_BLOB2 sha256 aa"),
            "{t}"
        );
        assert!(t.contains("now: b event 3"), "{t}");
        assert_eq!(diff_json("a", "b", &[], &changed)["identical"], false);
    }

    #[test]
    fn policy_errors_are_one_per_line() {
        let text = "invalid policy in /p:\n  /p/default.toml:3:8: PCR 17 value must be 64 hex characters\n  /p/gold.toml:1:1: unknown field `pcr`";
        assert_eq!(
            policy_errors(text),
            vec![
                "/p/default.toml:3:8: PCR 17 value must be 64 hex characters",
                "/p/gold.toml:1:1: unknown field `pcr`"
            ]
        );
        assert_eq!(
            policy_errors("cannot read policy /p/a.toml: denied"),
            vec!["cannot read policy /p/a.toml: denied"]
        );
        assert_eq!(
            policy_errors_text("/p", &policy_errors(text))
                .lines()
                .next(),
            Some("/p: 2 errors")
        );
    }

    #[test]
    fn policy_check_valid_lists_pools_and_digest() {
        let files = vec![(
            "default.toml".to_string(),
            "require_checks = [\"mac.enforcing_any\"]\n[[allow]]\nname = \"g\"\npcrs = { 17 = \"1111111111111111111111111111111111111111111111111111111111111111\", 18 = \"1212121212121212121212121212121212121212121212121212121212121212\" }\n"
                .to_string(),
        )];
        let set = trustpool_evidence::policy::parse_policy_set(&files).expect("valid");
        let t = policy_valid_text("/p", &set);
        assert!(
            t.starts_with(&format!("/p: valid, 1 pool, digest {}\n", set.digest_hex())),
            "{t}"
        );
        assert!(t.contains("default: PCRs 0,1,2,3,4,5,6,7,17,18,19; measured launch required; required checks: mac.enforcing_any; 1 allowed build (g)"), "{t}");
        let j = policy_valid_json(&set);
        assert_eq!(j["pools"][0]["allow"], json!(["g"]));
        assert_eq!(j["pools"][0]["events"], Value::Null);
        assert_eq!(j["valid"], true);
        // A pool of event rules.
        let files = vec![(
            "ev.toml".to_string(),
            format!(
                "pcrs = [0, 4, 17, 18]\n[events]\npcrs = [0, 4]\nvalues = {{ 17 = \"{}\", 18 = \"{}\" }}\n[[events.allow]]\npcr = 4\ndigest = \"{}\"\n[[events.forbid]]\ntext = \"Entering ROM based setup\"\n",
                "11".repeat(32),
                "12".repeat(32),
                "44".repeat(32)
            ),
        )];
        let set = trustpool_evidence::policy::parse_policy_set(&files).expect("valid");
        let t = policy_valid_text("/p", &set);
        assert!(t.contains("ev: PCRs 0,4,17,18; measured launch required; required checks: none; 0 allowed builds (); event rules: PCRs 0,4 by events (1 allowed, 0 required, 1 forbidden), PCRs 17,18 by value"), "{t}");
        let j = policy_valid_json(&set);
        assert_eq!(j["pools"][0]["events"]["pcrs"], json!([0, 4]));
        assert_eq!(j["pools"][0]["events"]["values"], json!([17, 18]));
        assert_eq!(j["pools"][0]["events"]["forbid"], json!(1));
    }

    #[test]
    fn dry_run_shows_join_leave_stay_and_says_no_when_hosts_leave() {
        let _ = PolicyFile::default();
        let mut resp = DryRunResponse {
            candidate_digest: "cand".into(),
            current_digest: "cur".into(),
            pools: vec![PoolChange {
                pool: "default".into(),
                join: vec![],
                leave: vec!["host-b".into()],
                stay: vec!["host-a".into()],
            }],
            errors: vec![],
        };
        assert!(dry_run_is_no(&resp));
        let t = dry_run_text("/c", &resp);
        assert!(t.contains("Candidate policy cand (in force: cur), not enforced:\nPool default:\n  join:  -\n  leave: host-b\n  stay:  host-a\n1 host would leave a pool.\n"), "{t}");
        resp.pools[0].leave.clear();
        assert!(!dry_run_is_no(&resp));
        assert!(dry_run_text("/c", &resp).ends_with("No host would leave a pool.\n"));
        resp.errors = vec!["default.toml:2:1: unknown field `x`".into()];
        assert!(dry_run_is_no(&resp));
        let t = dry_run_text("/c", &resp);
        assert!(
            t.contains("invalid") && t.contains("default.toml:2:1: unknown field `x`\n"),
            "{t}"
        );
        assert_eq!(dry_run_json(&resp)["valid"], false);
    }

    #[test]
    fn policy_info_output() {
        let mut r = PolicyInfoResponse {
            digest: "dd".into(),
            pools: vec!["default".into(), "gold".into()],
            loaded_at_ms: NOW - 180_000,
            last_error: String::new(),
        };
        let t = policy_info_text(&r, NOW);
        assert!(t.contains("Policy in force: dd\nLoaded:          2026-11-22T13:59:00Z (3m ago)\nPools:           default, gold\nLast refused reload: none"), "{t}");
        r.last_error = "invalid policy in /p:\n  /p/default.toml:1:1: bad".into();
        assert!(policy_info_text(&r, NOW).contains("  /p/default.toml:1:1: bad\n"));
        assert_eq!(policy_info_json(&r)["pools"][1], "gold");
    }

    #[test]
    fn actions() {
        let r = ActionResponse {
            message: String::new(),
        };
        assert_eq!(action_text("revoked", "host-a", &r), "host-a: revoked\n");
        let r = ActionResponse {
            message: "revoked by operator-alice".into(),
        };
        assert_eq!(
            action_text("revoked", "host-a", &r),
            "host-a: revoked by operator-alice\n"
        );
        assert_eq!(
            action_json("revoked", "host-a", &r)["message"],
            "revoked by operator-alice"
        );
    }
}
