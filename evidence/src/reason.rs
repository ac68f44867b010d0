//! Reasons: why a host is not trusted.
//!
//! Every check in this crate that can fail for an attestation reports a
//! [`Reason`]: a stable machine-readable [`code`](Reason::code) (one of the
//! constants in [`codes`]) and a human-readable message that names the
//! offending item (PCR index, check id, expected and actual values). Codes are
//! part of the external interface (metrics labels, verdict history, API), so
//! they never change once released; messages may be reworded.

use std::fmt;

/// One reason why a host is not trusted (or why a piece of evidence was
/// rejected).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Reason {
    /// Stable code, one of the constants in [`codes`] (e.g. `quote.nonce_mismatch`).
    pub code: String,
    /// Human-readable explanation naming the offending item.
    pub message: String,
}

impl Reason {
    /// Creates a reason from a code (normally a constant from [`codes`]) and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Reason {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Stable reason codes.
///
/// The string values are part of the external interface: they appear in
/// stored verdicts, metrics labels and API answers. [`ALL`](codes::ALL) lists
/// every code (e.g. to pre-register metrics series).
pub mod codes {
    /// The TPMS_ATTEST structure of a quote could not be parsed (truncated,
    /// trailing bytes, unsupported algorithm, ...).
    pub const QUOTE_MALFORMED: &str = "quote.malformed";
    /// The attestation structure is well-formed enough to read its header, but
    /// it is not a quote: wrong magic (not `TPM_GENERATED_VALUE` 0xff544347)
    /// or wrong type (not `TPM_ST_ATTEST_QUOTE` 0x8018).
    pub const QUOTE_NOT_A_QUOTE: &str = "quote.not_a_quote";
    /// The TPMT_SIGNATURE of a quote could not be parsed, or uses an
    /// unsupported signature algorithm.
    pub const SIGNATURE_MALFORMED: &str = "quote.signature_malformed";
    /// The quote signature does not verify with the enrolled AK.
    pub const SIGNATURE_INVALID: &str = "quote.signature_invalid";
    /// The quote's extraData (qualifying data) is not the expected value
    /// derived from our nonce and the hardening report.
    pub const NONCE_MISMATCH: &str = "quote.nonce_mismatch";
    /// The PCR selection in the quote is not the one the server asked for.
    pub const SELECTION_MISMATCH: &str = "quote.selection_mismatch";
    /// The PCR values reported by the agent do not hash to the quoted
    /// pcrDigest.
    pub const PCR_DIGEST_MISMATCH: &str = "quote.pcr_digest_mismatch";
    /// The PCR values reported by the agent are unusable: wrong length,
    /// duplicate or out-of-range index, or not exactly the selected PCRs.
    pub const PCR_VALUES_INVALID: &str = "quote.pcr_values_invalid";
    /// The quote's qualifiedSigner is not the enrolled AK's qualified name
    /// under the enrolled EK: the signing key is not (or no longer) the AK
    /// created under that EK in that TPM.
    pub const SIGNER_MISMATCH: &str = "quote.signer_mismatch";
    /// The AK is not what a TPM-resident restricted signing key looks like:
    /// attributes (fixedTPM, fixedParent, sensitiveDataOrigin, restricted,
    /// sign, no decrypt), a symmetric algorithm or authPolicy set, a nameAlg
    /// weaker than sha256, or a key weaker than RSA-2048 / P-256.
    pub const AK_ATTRIBUTES: &str = "ak.attributes";
    /// The TPM clock went backwards: resetCount or restartCount decreased, or
    /// the clock decreased within one boot.
    pub const CLOCK_ROLLBACK: &str = "tpm.clock_rollback";
    /// A PCR value is not allowed by any allow entry of the pool policy.
    pub const PCR_NOT_ALLOWED: &str = "pcr.not_allowed";
    /// A PCR the pool policy selects was not part of the verified evidence.
    pub const PCR_MISSING: &str = "pcr.missing";
    /// The pool requires a measured launch (Intel TXT) and PCR 17 or 18
    /// holds its reset value (all 0xFF: no dynamic launch), is all zeros
    /// (a locality-4 hash start with no SINIT/MLE measurement extended), or
    /// is missing.
    pub const LAUNCH_NOT_MEASURED: &str = "launch.not_measured";
    /// A hardening check required by the pool is not `pass` (or was not
    /// reported at all).
    pub const CHECK_REQUIRED_FAILED: &str = "check.required_failed";
    /// The hardening report sent with the quote could not be decoded.
    pub const REPORT_MALFORMED: &str = "report.malformed";
    /// The nonce was not issued by this server (or was already forgotten).
    pub const NONCE_UNKNOWN: &str = "nonce.unknown";
    /// The nonce was issued too long ago.
    pub const NONCE_EXPIRED: &str = "nonce.expired";
    /// The nonce was already used for another quote.
    pub const NONCE_REUSED: &str = "nonce.reused";
    /// The host has no (completed) enrolment.
    pub const NOT_ENROLLED: &str = "host.not_enrolled";
    /// The host's enrolment was revoked by the operator.
    pub const REVOKED: &str = "host.revoked";
    /// The transport identity (client certificate name) does not match the
    /// host the agent speaks for.
    pub const IDENTITY_MISMATCH: &str = "host.identity_mismatch";
    /// The latest verdict is older than the pool's down time.
    pub const STALE: &str = "freshness.stale";
    /// The pool policy could not be loaded or does not exist.
    pub const POLICY_UNAVAILABLE: &str = "policy.unavailable";
    /// The event log the host sent (UEFI, or TXT for PCRs 17-22) does not
    /// parse or replay, and the pool selects a PCR that log speaks for: a
    /// host whose log cannot be read is not trusted, whatever the pool
    /// judges.
    pub const EVENTLOG_INVALID: &str = "eventlog.invalid";
    /// The event log does not replay to a PCR of the pool's selection: the
    /// quote and the log contradict each other (the message names the PCR
    /// and the event from which they cannot agree). Applies to every pool.
    pub const EVENTLOG_REPLAY_MISMATCH: &str = "eventlog.replay_mismatch";
    /// The pool judges PCRs of the UEFI log (0-16, 23) by their events
    /// (`[events].pcrs`) and the host sent no event log, or the agent has
    /// none (the message says why). One reason per log, not per PCR.
    pub const EVENTS_NO_LOG: &str = "events.no_log";
    /// The same for PCRs 17-22 and the TXT (DRTM) event log.
    pub const EVENTS_NO_TXT_LOG: &str = "events.no_txt_log";
    /// An event on a PCR the pool judges by its events is matched by no
    /// `[[events.allow]]` rule (the message names PCR, event number, type,
    /// digest and what the event says).
    pub const EVENT_NOT_ALLOWED: &str = "event.not_allowed";
    /// An `[[events.require]]` rule is met by no data-proven variable event
    /// on a PCR that replayed: the variable is absent, not proven, or says
    /// something else (the message says what).
    pub const EVENT_REQUIRED_MISSING: &str = "event.required_missing";
    /// An event on a PCR that replayed has the digest of an
    /// `[[events.forbid]]` rule.
    pub const EVENT_FORBIDDEN: &str = "event.forbidden";

    /// Every code defined above, in declaration order.
    pub const ALL: &[&str] = &[
        QUOTE_MALFORMED,
        QUOTE_NOT_A_QUOTE,
        SIGNATURE_MALFORMED,
        SIGNATURE_INVALID,
        NONCE_MISMATCH,
        SELECTION_MISMATCH,
        PCR_DIGEST_MISMATCH,
        PCR_VALUES_INVALID,
        SIGNER_MISMATCH,
        AK_ATTRIBUTES,
        CLOCK_ROLLBACK,
        PCR_NOT_ALLOWED,
        PCR_MISSING,
        LAUNCH_NOT_MEASURED,
        CHECK_REQUIRED_FAILED,
        REPORT_MALFORMED,
        NONCE_UNKNOWN,
        NONCE_EXPIRED,
        NONCE_REUSED,
        NOT_ENROLLED,
        REVOKED,
        IDENTITY_MISMATCH,
        STALE,
        POLICY_UNAVAILABLE,
        EVENTLOG_INVALID,
        EVENTLOG_REPLAY_MISMATCH,
        EVENTS_NO_LOG,
        EVENTS_NO_TXT_LOG,
        EVENT_NOT_ALLOWED,
        EVENT_REQUIRED_MISSING,
        EVENT_FORBIDDEN,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let set: BTreeSet<&str> = codes::ALL.iter().copied().collect();
        assert_eq!(set.len(), codes::ALL.len(), "duplicate code");
        for c in codes::ALL {
            let (family, rest) = c.split_once('.').expect("family.name");
            assert!(!family.is_empty() && !rest.is_empty(), "{c}");
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '.' || ch == '_'),
                "{c}"
            );
        }
    }

    #[test]
    fn listed_values_are_stable() {
        // The values other crates and stored verdicts rely on.
        assert_eq!(codes::QUOTE_MALFORMED, "quote.malformed");
        assert_eq!(codes::QUOTE_NOT_A_QUOTE, "quote.not_a_quote");
        assert_eq!(codes::SIGNATURE_MALFORMED, "quote.signature_malformed");
        assert_eq!(codes::SIGNATURE_INVALID, "quote.signature_invalid");
        assert_eq!(codes::NONCE_MISMATCH, "quote.nonce_mismatch");
        assert_eq!(codes::SELECTION_MISMATCH, "quote.selection_mismatch");
        assert_eq!(codes::PCR_DIGEST_MISMATCH, "quote.pcr_digest_mismatch");
        assert_eq!(codes::PCR_VALUES_INVALID, "quote.pcr_values_invalid");
        assert_eq!(codes::SIGNER_MISMATCH, "quote.signer_mismatch");
        assert_eq!(codes::CLOCK_ROLLBACK, "tpm.clock_rollback");
        assert_eq!(codes::PCR_NOT_ALLOWED, "pcr.not_allowed");
        assert_eq!(codes::LAUNCH_NOT_MEASURED, "launch.not_measured");
        assert_eq!(codes::CHECK_REQUIRED_FAILED, "check.required_failed");
        assert_eq!(codes::REPORT_MALFORMED, "report.malformed");
        assert_eq!(codes::NONCE_UNKNOWN, "nonce.unknown");
        assert_eq!(codes::NONCE_EXPIRED, "nonce.expired");
        assert_eq!(codes::NONCE_REUSED, "nonce.reused");
        assert_eq!(codes::NOT_ENROLLED, "host.not_enrolled");
        assert_eq!(codes::REVOKED, "host.revoked");
        assert_eq!(codes::STALE, "freshness.stale");
        assert_eq!(codes::EVENTLOG_INVALID, "eventlog.invalid");
        assert_eq!(codes::EVENTLOG_REPLAY_MISMATCH, "eventlog.replay_mismatch");
        assert_eq!(codes::EVENTS_NO_LOG, "events.no_log");
        assert_eq!(codes::EVENTS_NO_TXT_LOG, "events.no_txt_log");
        assert_eq!(codes::EVENT_NOT_ALLOWED, "event.not_allowed");
        assert_eq!(codes::EVENT_REQUIRED_MISSING, "event.required_missing");
        assert_eq!(codes::EVENT_FORBIDDEN, "event.forbidden");
    }

    #[test]
    fn reason_display_and_serde() {
        let r = Reason::new(codes::NONCE_REUSED, "nonce 00ff was already used");
        assert_eq!(r.to_string(), "nonce.reused: nonce 00ff was already used");
        let json = serde_json_like(&r);
        assert!(json.contains("nonce.reused"));
    }

    // serde_json is not a dependency of this crate; TOML serialisation is
    // enough to check that the derive works.
    fn serde_json_like(r: &Reason) -> String {
        toml::to_string(r).unwrap()
    }
}
