//! The trust decision for one piece of evidence (DESIGN.md §3): quote,
//! nonce, TPM clock, measurements, measured launch, required hardening checks.
//! Every reason is collected; nothing here does I/O.

use crate::challenge::Outstanding;
use crate::store::StoredClock;
use serde::Deserialize;
use std::collections::BTreeMap;
use trustpool_evidence::binding::qualifying_data;
use trustpool_evidence::policy::{evaluate, HostFacts, PolicySet};
use trustpool_evidence::quote::{check_clock, verify_quote, QuoteCheck};
use trustpool_evidence::reason::{codes, Reason};
use trustpool_evidence::tpm::{ClockInfo, TpmPublic};

/// Largest hardening report accepted.
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// The evidence an agent sent for one challenge.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceRef<'a> {
    /// The nonce the agent says it answers.
    pub nonce: &'a [u8],
    /// TPMS_ATTEST.
    pub attest: &'a [u8],
    /// TPMT_SIGNATURE.
    pub signature: &'a [u8],
    /// PCR values as reported.
    pub pcr_values: &'a [(u32, Vec<u8>)],
    /// Canonical hardening report bytes (may be empty).
    pub report: &'a [u8],
}

/// The outcome of evaluating one piece of evidence.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Reasons that concern the evidence as a whole (and thus every pool).
    pub common: Vec<Reason>,
    /// Per pool: every reason against trust (empty = trusted).
    pub pools: Vec<(String, Vec<Reason>)>,
    /// The quote's clock, when the quote verified.
    pub clock: Option<StoredClock>,
    /// True when the clock shows a reboot (resetCount grew) or TPM restart.
    pub rebooted: bool,
    /// The verified PCR values.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
}

/// Minimal view of a hardening report: only the status of each check id.
#[derive(Deserialize)]
struct ReportView {
    results: Vec<ResultView>,
}

#[derive(Deserialize)]
struct ResultView {
    id: String,
    status: String,
}

/// Parses the check statuses out of a hardening report. An empty report means
/// "no report"; anything unparsable is an error reason.
pub fn report_statuses(report: &[u8]) -> Result<Option<BTreeMap<String, String>>, Reason> {
    if report.is_empty() {
        return Ok(None);
    }
    if report.len() > MAX_REPORT_BYTES {
        return Err(Reason::new(
            codes::REPORT_MALFORMED,
            format!(
                "hardening report of {} bytes exceeds the {MAX_REPORT_BYTES}-byte limit",
                report.len()
            ),
        ));
    }
    let view: ReportView = serde_json::from_slice(report).map_err(|e| {
        Reason::new(
            codes::REPORT_MALFORMED,
            format!("hardening report does not parse: {e}"),
        )
    })?;
    Ok(Some(
        view.results.into_iter().map(|r| (r.id, r.status)).collect(),
    ))
}

/// Evaluates evidence from an enrolled host.
///
/// `challenge` is the outcome of looking up the nonce on the stream;
/// `previous_clock` the last accepted TPM clock of this host.
pub fn evaluate_evidence(
    ak: &TpmPublic,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous_clock: Option<StoredClock>,
) -> Evaluation {
    let mut common = Vec::new();
    let expected_pcrs = match &challenge {
        Ok(c) => c.pcrs.clone(),
        Err(reason) => {
            common.push(reason.clone());
            policy.union_pcrs()
        }
    };
    let statuses = match report_statuses(evidence.report) {
        Ok(s) => s,
        Err(reason) => {
            common.push(reason);
            None
        }
    };
    // The report is bound to the quote: a report changed after the quote
    // changes the expected qualifying data and fails the nonce check.
    let expected = qualifying_data(evidence.nonce, evidence.report);
    let check = QuoteCheck {
        attest: evidence.attest,
        signature: evidence.signature,
        ak,
        expected_extra_data: &expected,
        expected_pcrs: &expected_pcrs,
        pcr_values: evidence.pcr_values,
    };
    let mut clock = None;
    let mut rebooted = false;
    let pcrs = match verify_quote(&check) {
        Ok(verified) => {
            let current = verified.attest.clock_info;
            let previous = previous_clock.map(|c| ClockInfo {
                clock: c.clock,
                reset_count: c.reset_count,
                restart_count: c.restart_count,
                safe: true,
            });
            match check_clock(previous.as_ref(), &current) {
                Ok(change) => {
                    rebooted = change != trustpool_evidence::quote::ClockChange::Same;
                    clock = Some(StoredClock {
                        reset_count: current.reset_count,
                        restart_count: current.restart_count,
                        clock: current.clock,
                    });
                }
                Err(reason) => common.push(reason),
            }
            Some(verified.pcrs)
        }
        Err(reasons) => {
            common.extend(reasons);
            None
        }
    };
    let pools = policy
        .pools
        .iter()
        .map(|(name, pool)| {
            let mut reasons = common.clone();
            if let Some(pcrs) = &pcrs {
                let facts = HostFacts {
                    pcrs,
                    check_status: statuses.as_ref(),
                };
                reasons.extend(evaluate(pool, &facts));
            }
            (name.clone(), reasons)
        })
        .collect();
    Evaluation {
        common,
        pools,
        clock,
        rebooted,
        pcrs: pcrs.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing() {
        assert_eq!(report_statuses(b""), Ok(None));
        let map = report_statuses(br#"{"role":"compute","results":[{"id":"mac.enforcing_any","status":"pass","extra":1}]}"#)
            .expect("parses")
            .expect("some");
        assert_eq!(
            map.get("mac.enforcing_any").map(String::as_str),
            Some("pass")
        );
        assert_eq!(
            report_statuses(b"{not json").expect_err("bad").code,
            codes::REPORT_MALFORMED
        );
        assert_eq!(
            report_statuses(br#"{"results":[{"id":1}]}"#)
                .expect_err("bad")
                .code,
            codes::REPORT_MALFORMED
        );
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        assert_eq!(
            report_statuses(&huge).expect_err("big").code,
            codes::REPORT_MALFORMED
        );
    }
}
