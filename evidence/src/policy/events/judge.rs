//! The reasons a pool's event rules have against a host. Pure: the facts a
//! replayed log proved in, reasons out. One lookup per event (the rules are
//! indexed by PCR and digest), so a log of 60 events against a captured
//! policy of 60 rules costs 60 map lookups, not 3,600 comparisons.

use super::{EventAllow, EventRequire, EventRules};
use crate::eventlog::measured::{LogFacts, MeasuredEvent};
use crate::policy::evaluate::missing_reason;
use crate::policy::logs::{self, Log};
use crate::policy::{HostFacts, PoolPolicy};
use crate::reason::{codes, Reason};
use std::collections::BTreeSet;

/// Most reasons the event rules give per pool: a host whose whole boot
/// chain changed would otherwise carry a reason per event. The last one
/// says how many more there were.
pub const MAX_EVENT_REASONS: usize = 20;

/// Every reason the event rules of `policy` have against the host, in
/// this order: logs that cannot be judged, events not allowed, requires
/// not met, forbidden events, values that differ. Empty: the rules accept
/// it. Not capped ([`cap`]).
pub(in crate::policy) fn judge(
    policy: &PoolPolicy,
    rules: &EventRules,
    facts: &HostFacts,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let judgeable = judgeable_pcrs(policy, rules, facts, &mut reasons);

    for log in Log::BOTH {
        let Some(m) = log.facts(facts).and_then(LogFacts::replayed) else {
            continue;
        };
        for event in &m.events {
            if log.covers(event.pcr) && judgeable.contains(&event.pcr) {
                if let Some(r) = not_allowed(policy, rules, event) {
                    reasons.push(r);
                }
            }
        }
    }

    for rule in rules.require() {
        if let Some(r) = required_missing(policy, rule, facts) {
            reasons.push(r);
        }
    }

    for log in Log::BOTH {
        let Some(m) = log.facts(facts).and_then(LogFacts::replayed) else {
            continue;
        };
        for event in &m.events {
            let Some(digest) = digest_of(event) else {
                continue;
            };
            for &i in rules.forbid_candidates(&digest) {
                let Some(rule) = rules.forbid().get(i) else {
                    continue;
                };
                if rule.pcr.is_none_or(|p| p == event.pcr) {
                    reasons.push(Reason::new(
                        codes::EVENT_FORBIDDEN,
                        format!(
                            "{} is forbidden by pool '{}': {}",
                            name_event(event),
                            policy.name,
                            rule.describe()
                        ),
                    ));
                }
            }
        }
    }

    for (pcr, expected) in rules.values() {
        match facts.pcrs.get(pcr) {
            None => reasons.push(missing_reason(policy, *pcr)),
            Some(actual) if actual != expected => reasons.push(Reason::new(
                codes::PCR_NOT_ALLOWED,
                format!(
                    "PCR {pcr} is {}; pool '{}' [events].values expect {}",
                    hex::encode(actual),
                    policy.name,
                    hex::encode(expected)
                ),
            )),
            Some(_) => {}
        }
    }
    reasons
}

/// The PCRs of `[events].pcrs` whose events can be judged: those their log
/// replayed (or that hold their start value with no event, so there is
/// nothing to judge). For the others, the reason why not: no log (one
/// reason per log), an invalid log, a replay mismatch, a PCR not quoted,
/// or a quoted value the log has no event to explain.
fn judgeable_pcrs(
    policy: &PoolPolicy,
    rules: &EventRules,
    facts: &HostFacts,
    reasons: &mut Vec<Reason>,
) -> BTreeSet<u8> {
    let mut judgeable = BTreeSet::new();
    for log in Log::BOTH {
        let judged: Vec<u8> = rules
            .pcrs()
            .iter()
            .copied()
            .filter(|p| log.covers(*p))
            .collect();
        if judged.is_empty() {
            continue;
        }
        let m = match log.facts(facts) {
            None => {
                reasons.push(no_log(policy, log, &judged, None));
                continue;
            }
            Some(LogFacts::Unavailable { reason }) => {
                reasons.push(no_log(policy, log, &judged, Some(reason)));
                continue;
            }
            Some(LogFacts::Invalid { reason, .. }) => {
                reasons.push(logs::invalid_reason(log, reason));
                continue;
            }
            Some(LogFacts::Replayed(m)) => m,
        };
        for p in judged {
            if m.replayed.contains(&p) {
                judgeable.insert(p);
            } else if let Some(mismatch) = m.mismatches.iter().find(|x| x.pcr == p) {
                reasons.push(logs::mismatch_reason(log, mismatch));
            } else {
                match facts.pcrs.get(&p) {
                    None => reasons.push(missing_reason(policy, p)),
                    Some(v) if holds_start_value(log, v) => {}
                    Some(v) => reasons.push(Reason::new(
                        codes::EVENTLOG_REPLAY_MISMATCH,
                        format!(
                            "PCR {p} is {} in the quote, but the {} has no event on it: its value is unexplained, so pool '{}' cannot judge its events",
                            hex::encode(v),
                            log.name(),
                            policy.name
                        ),
                    )),
                }
            }
        }
    }
    judgeable
}

/// A PCR with no event in its log holds what the TPM started it at:
/// zero (PCRs 0-16, 23; and 17-22 after a dynamic launch), or all-FF for
/// 17-22 with no launch.
fn holds_start_value(log: Log, value: &[u8; 32]) -> bool {
    value == &[0u8; 32] || (log == Log::Txt && value == &[0xffu8; 32])
}

/// `events.no_log` / `events.no_txt_log`.
fn no_log(policy: &PoolPolicy, log: Log, judged: &[u8], why: Option<&String>) -> Reason {
    let code = match log {
        Log::Uefi => codes::EVENTS_NO_LOG,
        Log::Txt => codes::EVENTS_NO_TXT_LOG,
    };
    let list: Vec<String> = judged.iter().map(u8::to_string).collect();
    let sent = match why {
        Some(reason) => format!("the agent sent no {}: {reason}", log.name()),
        None => format!("the agent sent no {}", log.name()),
    };
    Reason::new(
        code,
        format!(
            "pool '{}' judges PCR {} by their events, but {sent}",
            policy.name,
            list.join(", ")
        ),
    )
}

/// The event's digest as bytes; None if it is not a sha256 digest (stored
/// facts that were tampered with), which no rule matches.
fn digest_of(event: &MeasuredEvent) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(&event.digest, &mut out).ok()?;
    Some(out)
}

/// `PCR 4 event 23 EV_EFI_BOOT_SERVICES_APPLICATION sha256 <hex>`.
fn name_event(event: &MeasuredEvent) -> String {
    format!(
        "PCR {} event {} {} sha256 {}",
        event.pcr, event.number, event.event_type, event.digest
    )
}

/// `event.not_allowed` unless an allow rule accepts the event.
fn not_allowed(policy: &PoolPolicy, rules: &EventRules, event: &MeasuredEvent) -> Option<Reason> {
    let candidates: Vec<&EventAllow> = match digest_of(event) {
        Some(d) => rules
            .allow_candidates(event.pcr, &d)
            .iter()
            .filter_map(|i| rules.allow().get(*i))
            .collect(),
        None => Vec::new(),
    };
    if candidates.iter().any(|r| r.accepts(event)) {
        return None;
    }
    let mut text = format!(
        "{} is not allowed by pool '{}'",
        name_event(event),
        policy.name
    );
    if !event.summary.is_empty() {
        text.push_str(": ");
        text.push_str(&event.summary);
    }
    if let Some(rule) = candidates.first() {
        let which = match &rule.label {
            Some(l) => format!("rule '{l}'"),
            None => "an allow rule".to_string(),
        };
        text.push_str(&format!(
            " ({which} has this PCR and digest but asks {})",
            rule.narrowing()
        ));
    }
    Some(Reason::new(codes::EVENT_NOT_ALLOWED, text))
}

/// `event.required_missing` unless a data-proven variable event on a
/// replayed PCR meets the rule.
fn required_missing(policy: &PoolPolicy, rule: &EventRequire, facts: &HostFacts) -> Option<Reason> {
    let candidates: Vec<&MeasuredEvent> = Log::BOTH
        .iter()
        .filter_map(|log| log.facts(facts).and_then(LogFacts::replayed))
        .flat_map(|m| m.events.iter())
        .filter(|e| rule.pcr.is_none_or(|p| p == e.pcr))
        .filter(|e| e.variable.as_ref().is_some_and(|v| rule.names(v)))
        .collect();
    let proven: Vec<(&MeasuredEvent, Vec<String>)> = candidates
        .iter()
        .filter(|e| e.data_proven)
        .filter_map(|e| e.variable.as_ref().map(|v| (*e, rule.problems(v))))
        .collect();
    if proven.iter().any(|(_, problems)| problems.is_empty()) {
        return None;
    }
    let problem = if let Some((e, problems)) = proven.first() {
        format!(
            "{} (event {} on PCR {})",
            problems.join("; "),
            e.number,
            e.pcr
        )
    } else if let Some(e) = candidates.first() {
        format!(
            "{} is present (event {} on PCR {}) but not data-proven: its data is not what its digest is the hash of, so what it says is no evidence",
            rule.variable, e.number, e.pcr
        )
    } else {
        let log = match rule.pcr {
            Some(p) if Log::Txt.covers(p) => Log::Txt,
            _ => Log::Uefi,
        };
        let state = match log.facts(facts) {
            Some(f) => f.describe(),
            None => format!("the agent sent no {}", log.name()),
        };
        format!(
            "{} is absent: no event of that variable on {} that replayed ({state})",
            rule.variable,
            match rule.pcr {
                Some(p) => format!("PCR {p}"),
                None => "a PCR".to_string(),
            }
        )
    };
    Some(Reason::new(
        codes::EVENT_REQUIRED_MISSING,
        format!(
            "pool '{}' requires {}: {problem}",
            policy.name,
            rule.describe()
        ),
    ))
}

/// At most [`MAX_EVENT_REASONS`]: the first ones, then one that counts the
/// rest by code (with the code of the first left out).
pub(in crate::policy) fn cap(mut reasons: Vec<Reason>) -> Vec<Reason> {
    if reasons.len() <= MAX_EVENT_REASONS {
        return reasons;
    }
    let rest = reasons.split_off(MAX_EVENT_REASONS - 1);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &rest {
        match counts.iter_mut().find(|(c, _)| *c == r.code) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.code.as_str(), 1)),
        }
    }
    let by_code: Vec<String> = counts.iter().map(|(c, n)| format!("{n} {c}")).collect();
    let code = rest
        .first()
        .map(|r| r.code.clone())
        .unwrap_or_else(|| codes::EVENT_NOT_ALLOWED.to_string());
    reasons.push(Reason::new(
        &code,
        format!(
            "and {} more reasons of the event rules ({}), not listed",
            rest.len(),
            by_code.join(", ")
        ),
    ));
    reasons
}
