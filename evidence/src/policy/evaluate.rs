//! Judging a host's verified facts against one pool: every reason, never
//! only the first. Pure.

use super::events::judge::{cap, judge};
use super::logs;
use super::{not_launched, PoolPolicy, LAUNCH_PCRS};
use crate::eventlog::measured::LogFacts;
use crate::reason::{codes, Reason};
use std::collections::BTreeMap;

/// What the server knows about a host after verifying its evidence.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// Verified sha256 PCR values.
    pub pcrs: &'a BTreeMap<u8, [u8; 32]>,
    /// Check id → status from the hardening report; None = no report.
    pub check_status: Option<&'a BTreeMap<String, String>>,
    /// Check id → the report's own reason for that status, quoted in the
    /// verdict so an operator sees why a required check failed.
    pub check_reason: Option<&'a BTreeMap<String, String>>,
    /// What the host's UEFI event log proved against the quote (PCRs 0-16
    /// and 23); None = the evidence had no log field at all (an older
    /// agent), which policy treats as an unavailable log.
    pub event_log: Option<&'a LogFacts>,
    /// The same for the TXT (DRTM) log of PCRs 17-22.
    pub txt_log: Option<&'a LogFacts>,
}

/// Every reason why the host is not trusted in this pool (empty = trusted).
/// Never stops at the first.
///
/// * `pcr.missing`: a PCR of the pool's selection is not in the facts.
/// * `eventlog.invalid`, `eventlog.replay_mismatch`: for every pool, a log
///   the host sent that cannot be read while the pool selects a PCR it
///   speaks for, or that does not replay to a PCR of the selection: the
///   log contradicts the quote (fail closed). An unavailable log fails
///   nothing here.
/// * acceptance: the host must match an `[[allow]]` entry **or** be
///   accepted by the pool's event rules (`[events]`, [`super::events`]).
///   When neither accepts, the event rules' reasons come first
///   (`events.no_log`, `events.no_txt_log`, `event.not_allowed`,
///   `event.required_missing`, `event.forbidden`, `pcr.not_allowed` for
///   `[events].values`; at most [`super::events::MAX_EVENT_REASONS`],
///   the last counting the rest), then the closest allow entry's.
/// * `pcr.not_allowed`: no allow entry matches; each mismatching PCR is named
///   against the closest entry (fewest mismatches, first on ties) with the
///   actual and expected values.
/// * `launch.not_measured`: `require_measured_launch` and PCR 17 or 18 is
///   all-FF (no dynamic launch), all-zero (hash start without any
///   SINIT/MLE measurement) or missing.
/// * `check.required_failed`: each required check whose status is not
///   `pass` (including a missing report or check).
pub fn evaluate(policy: &PoolPolicy, facts: &HostFacts) -> Vec<Reason> {
    let mut reasons = Vec::new();

    for p in &policy.pcrs {
        if !facts.pcrs.contains_key(p) {
            reasons.push(missing_reason(policy, *p));
        }
    }

    reasons.extend(logs::integrity(&policy.pcrs, facts));

    // Accepted by an allow entry or by the event rules.
    if let Some(allow) = evaluate_allow(policy, facts) {
        match policy
            .events
            .as_ref()
            .map(|rules| judge(policy, rules, facts))
        {
            // The event rules accept the host.
            Some(events) if events.is_empty() => {}
            Some(mut events) => {
                // A reason both the events and the checks above give
                // (a replay mismatch, a PCR not quoted) is told once.
                events.retain(|r| !reasons.contains(r));
                reasons.extend(cap(events));
                if !policy.allow.is_empty() {
                    reasons.extend(allow);
                }
            }
            None => reasons.extend(allow),
        }
    }

    if policy.require_measured_launch {
        for p in LAUNCH_PCRS {
            match facts.pcrs.get(&p) {
                None => reasons.push(Reason::new(
                    codes::LAUNCH_NOT_MEASURED,
                    format!("no TXT measured launch can be shown: PCR {p} was not quoted"),
                )),
                Some(v) => {
                    if let Some(what) = not_launched(v) {
                        reasons.push(Reason::new(
                            codes::LAUNCH_NOT_MEASURED,
                            format!("no TXT measured launch: PCR {p} is {what}"),
                        ));
                    }
                }
            }
        }
    }

    for check in &policy.require_checks {
        let problem = match facts.check_status {
            None => Some("cannot be evaluated: no hardening report".to_string()),
            Some(statuses) => match statuses.get(check) {
                None => Some("is missing from the hardening report".to_string()),
                Some(s) if s == "pass" => None,
                Some(s) => Some(format!("is {s}")),
            },
        };
        if let Some(p) = problem {
            let why = facts
                .check_reason
                .and_then(|r| r.get(check))
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            reasons.push(Reason::new(
                codes::CHECK_REQUIRED_FAILED,
                format!("required check '{check}' {p} (must be pass){why}"),
            ));
        }
    }
    reasons
}

/// `pcr.missing` for a PCR the pool needs that the quote does not have.
pub(super) fn missing_reason(policy: &PoolPolicy, pcr: u8) -> Reason {
    Reason::new(
        codes::PCR_MISSING,
        format!(
            "PCR {pcr} is selected by pool '{}' but is not in the verified quote",
            policy.name
        ),
    )
}

/// None when an allow entry matches; else the reasons against the closest
/// entry (possibly none: its mismatches are PCRs already reported missing).
fn evaluate_allow(policy: &PoolPolicy, facts: &HostFacts) -> Option<Vec<Reason>> {
    let mut reasons = Vec::new();
    // (entry index, mismatches: (pcr, actual or None if missing, expected))
    type Mismatch<'e> = (u8, Option<&'e [u8; 32]>, &'e [u8; 32]);
    let mut best: Option<(usize, Vec<Mismatch<'_>>)> = None;
    for (i, entry) in policy.allow.iter().enumerate() {
        let mismatches: Vec<Mismatch<'_>> = entry
            .pcrs
            .iter()
            .filter_map(|(pcr, expected)| match facts.pcrs.get(pcr) {
                Some(actual) if actual == expected => None,
                actual => Some((*pcr, actual, expected)),
            })
            .collect();
        if mismatches.is_empty() {
            return None;
        }
        if best
            .as_ref()
            .is_none_or(|(_, b)| mismatches.len() < b.len())
        {
            best = Some((i, mismatches));
        }
    }
    let Some((i, mismatches)) = best else {
        // No allow entries at all (cannot come from parse_pool): fail closed.
        reasons.push(Reason::new(
            codes::PCR_NOT_ALLOWED,
            format!("pool '{}' allows no measurement set", policy.name),
        ));
        return Some(reasons);
    };
    let entry_name = policy.allow.get(i).map(|e| e.name.as_str()).unwrap_or("");
    let suffix = if policy.allow.len() > 1 {
        format!(" (closest of {} allowed builds)", policy.allow.len())
    } else {
        String::new()
    };
    for (pcr, actual, expected) in mismatches {
        match actual {
            Some(actual) => reasons.push(Reason::new(
                codes::PCR_NOT_ALLOWED,
                format!(
                    "PCR {pcr} is {}; build '{entry_name}' expects {}{suffix}",
                    hex::encode(actual),
                    hex::encode(expected)
                ),
            )),
            // Missing PCRs of the selection are already reported as
            // pcr.missing; one outside it (hand-built policy) is reported here.
            None if !policy.pcrs.contains(&pcr) => reasons.push(Reason::new(
                codes::PCR_NOT_ALLOWED,
                format!(
                    "PCR {pcr} was not quoted; build '{entry_name}' expects {}{suffix}",
                    hex::encode(expected)
                ),
            )),
            None => {}
        }
    }
    Some(reasons)
}
