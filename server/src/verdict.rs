//! The trust decision for one piece of evidence (DESIGN.md §3): quote,
//! nonce, TPM clock, measurements, measured launch, required hardening checks.
//! Every reason is collected; nothing here does I/O.

use crate::challenge::Outstanding;
use crate::facts::{evaluate_pool, Facts};
use crate::store::StoredClock;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use trustpool_evidence::binding::qualifying_data;
use trustpool_evidence::policy::PolicySet;
use trustpool_evidence::quote::{check_clock, verify_quote, ClockChange, QuoteCheck};
use trustpool_evidence::reason::{codes, Reason};
use trustpool_evidence::tpm::{ClockInfo, TpmPublic};
use trustpool_hardening::Report;

/// Reason code: the report was not produced with the parameters the policy asked for.
pub const REPORT_PARAMS_MISMATCH: &str = "report.params_mismatch";

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
    /// What the evidence proved, when it was sound (quote, nonce, clock).
    pub facts: Option<Facts>,
}

impl Evaluation {
    /// The outcome for evidence that answers no outstanding challenge: the
    /// nonce's reason in every pool, nothing proven.
    pub fn unanswered(reason: Reason, policy: &PolicySet) -> Evaluation {
        Evaluation {
            common: vec![reason.clone()],
            pools: policy
                .pools
                .keys()
                .map(|name| (name.clone(), vec![reason.clone()]))
                .collect(),
            clock: None,
            rebooted: false,
            facts: None,
        }
    }

    /// Whether the evidence was sound (quote, nonce, clock, report): only
    /// sound evidence replaces a host's facts; unsound evidence withdraws them.
    pub fn is_sound(&self) -> bool {
        self.facts.is_some()
    }
}

/// What the verdict needs from a hardening report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFacts {
    /// Status of each check id.
    pub statuses: BTreeMap<String, String>,
    /// The report's reason for each check's status.
    pub reasons: BTreeMap<String, String>,
    /// Digest of the check parameters the report says it was produced with.
    pub params_digest: Option<String>,
}

/// Parses a hardening report (strictly: schema, sorted unique ids, summary
/// consistent, size-capped). An empty report means "no report"; anything
/// unparsable is an error reason.
pub fn parse_report(report: &[u8]) -> Result<Option<ReportFacts>, Reason> {
    if report.is_empty() {
        return Ok(None);
    }
    let parsed = Report::from_slice(report)
        .map_err(|e| Reason::new(codes::REPORT_MALFORMED, e.to_string()))?;
    let reasons = parsed
        .results
        .iter()
        .map(|r| (r.id.clone(), r.reason.clone()))
        .collect();
    Ok(Some(ReportFacts {
        statuses: parsed.status_map(),
        reasons,
        params_digest: parsed.params_digest,
    }))
}

/// SHA-256 (hex) of the check parameters sent in challenges, as the report must echo it.
pub fn params_digest(check_params_json: &str) -> String {
    hex::encode(Sha256::digest(check_params_json.as_bytes()))
}

/// Evaluates evidence from an enrolled host whose EK is not at hand: like
/// [`evaluate_evidence_under_ek`] except that the quote's qualifiedSigner
/// is not compared with the AK's qualified name (the signature still binds
/// the enrolled AK). Prefer [`evaluate_evidence_under_ek`].
pub fn evaluate_evidence(
    ak: &TpmPublic,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous_clock: Option<StoredClock>,
    times: (i64, i64),
) -> Evaluation {
    evaluate(ak, None, challenge, evidence, policy, previous_clock, times)
}

/// Evaluates evidence from an enrolled host.
///
/// `ak` and `ek` are the enrolled keys (the quote's qualifiedSigner must be
/// the AK's qualified name under the EK: `quote.signer_mismatch`);
/// `challenge` is the outcome of looking up the nonce on the stream;
/// `previous_clock` the last accepted TPM clock of this host;
/// `attested_at_ms`/`valid_until_ms` the time of this evaluation and the
/// validity of a trusted verdict from it. The facts of a sound quote carry
/// its signed firmwareVersion and clockInfo.safe.
pub fn evaluate_evidence_under_ek(
    ak: &TpmPublic,
    ek: &TpmPublic,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous_clock: Option<StoredClock>,
    times: (i64, i64),
) -> Evaluation {
    evaluate(
        ak,
        Some(ek),
        challenge,
        evidence,
        policy,
        previous_clock,
        times,
    )
}

fn evaluate(
    ak: &TpmPublic,
    ek: Option<&TpmPublic>,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous_clock: Option<StoredClock>,
    (attested_at_ms, valid_until_ms): (i64, i64),
) -> Evaluation {
    // Evidence that answers no outstanding challenge costs nothing more:
    // no parsing, no signature check (a misbehaving host must not cost the
    // server more than an honest one).
    let challenge = match challenge {
        Ok(c) => c,
        Err(reason) => return Evaluation::unanswered(reason, policy),
    };
    let mut common = Vec::new();
    let expected_pcrs = challenge.pcrs.clone();
    let report = match parse_report(evidence.report) {
        Ok(r) => r,
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
        ek,
        expected_extra_data: &expected,
        expected_pcrs: &expected_pcrs,
        pcr_values: evidence.pcr_values,
    };
    let mut clock = None;
    let mut rebooted = false;
    let mut facts = None;
    match verify_quote(&check) {
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
                    rebooted = change != ClockChange::Same;
                    clock = Some(StoredClock {
                        reset_count: current.reset_count,
                        restart_count: current.restart_count,
                        clock: current.clock,
                    });
                }
                Err(reason) => common.push(reason),
            }
            facts = Some(Facts {
                attested_at_ms,
                valid_until_ms,
                pcrs: verified
                    .pcrs
                    .iter()
                    .map(|(i, v)| (*i, hex::encode(v)))
                    .collect(),
                statuses: report.as_ref().map(|r| r.statuses.clone()),
                check_reasons: report.as_ref().map(|r| r.reasons.clone()),
                params_digest: report.and_then(|r| r.params_digest),
                reset_count: current.reset_count,
                restart_count: current.restart_count,
                clock: current.clock,
                firmware_version: verified.firmware_version(),
                clock_safe: verified.clock_safe(),
            });
        }
        Err(reasons) => common.extend(reasons),
    }
    let pools = policy
        .pools
        .iter()
        .map(|(name, pool)| {
            let mut reasons = common.clone();
            if let Some(facts) = &facts {
                reasons.extend(evaluate_pool(facts, pool, policy));
            }
            (name.clone(), reasons)
        })
        .collect();
    // Facts are only worth keeping when the evidence as a whole was sound.
    let facts = facts.filter(|_| common.is_empty());
    Evaluation {
        common,
        pools,
        clock,
        rebooted,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_hardening::{CheckResult, Role, Severity, Status};

    fn report(status: Status) -> Report {
        Report::new(
            Role::Compute,
            "/",
            vec![CheckResult {
                id: "mac.enforcing_any".into(),
                status,
                severity: Severity::High,
                title: "t".into(),
                reason: "r".into(),
                evidence: vec![],
                items: vec![],
                remediation: String::new(),
                refs: vec![],
            }],
        )
    }

    #[test]
    fn report_parsing() {
        assert_eq!(parse_report(b""), Ok(None));
        let mut r = report(Status::Pass);
        r.params_digest = Some(params_digest("{}"));
        let facts = parse_report(&r.canonical_bytes())
            .expect("parses")
            .expect("some");
        assert_eq!(
            facts.statuses.get("mac.enforcing_any").map(String::as_str),
            Some("pass")
        );
        assert_eq!(facts.params_digest, Some(params_digest("{}")));
        for bad in [
            &b"{not json"[..],
            br#"{"results":[{"id":1}]}"#,
            br#"{"role":"compute","root":"/","results":[],"summary":{},"extra":1}"#,
        ] {
            assert_eq!(
                parse_report(bad).expect_err("bad").code,
                codes::REPORT_MALFORMED
            );
        }
        let huge = vec![b' '; (1 << 20) + 1];
        assert_eq!(
            parse_report(&huge).expect_err("big").code,
            codes::REPORT_MALFORMED
        );
    }

    #[test]
    fn attack_unchallenged_evidence_is_refused_before_any_parsing_or_signature_check() {
        let text = "require_measured_launch = false\n[[allow]]\nname = \"b\"\npcrs = {}\n";
        let policy =
            trustpool_evidence::policy::parse_policy_set(&[("p.toml".into(), text.into())])
                .expect("policy");
        let ak = trustpool_evidence::tpm::parse_public_2b(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/swtpm/ak_rsa.pub"
        )))
        .expect("a real swtpm AK");
        let e = evaluate_evidence(
            &ak,
            Err(Reason::new(codes::NONCE_UNKNOWN, "never issued")),
            EvidenceRef {
                nonce: &[7; 32],
                attest: b"garbage that would not parse",
                signature: b"x",
                pcr_values: &[],
                report: b"{not json",
            },
            &policy,
            None,
            (0, 1),
        );
        // Only the nonce's reason: the quote and report were never looked at.
        assert_eq!(e.common.len(), 1, "{:?}", e.common);
        assert_eq!(e.common[0].code, codes::NONCE_UNKNOWN);
        assert_eq!(e.pools[0].1.len(), 1);
        assert!(!e.is_sound());
    }
}
