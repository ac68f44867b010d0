//! The hardening report as the verdict reads it: strict decoding of the
//! agent's canonical report and the digest of the check parameters it must
//! echo. Pure.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use trustpool_evidence::reason::{codes, Reason};
use trustpool_hardening::Report;

/// Reason code: the report was not produced with the parameters the policy asked for.
pub const REPORT_PARAMS_MISMATCH: &str = "report.params_mismatch";

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
}
