//! The verified facts of a host's latest evidence — proven PCR values and
//! the bound hardening report's statuses — kept so that a new policy can be
//! applied at once (reload) or tried (dry-run) without a new quote. Pure.

use super::report::{params_digest, REPORT_PARAMS_MISMATCH};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use trustpool_evidence::eventlog::measured::LogFacts;
use trustpool_evidence::policy::{evaluate, HostFacts, PolicySet, PoolPolicy};
use trustpool_evidence::reason::Reason;

/// What the latest verified evidence of a host proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Unix ms of the evaluation of that evidence.
    pub attested_at_ms: i64,
    /// Until when a trusted verdict from it is valid.
    pub valid_until_ms: i64,
    /// sha256 PCR values proven by the quote (hex).
    pub pcrs: BTreeMap<u8, String>,
    /// Check statuses of the bound report (None = no report).
    pub statuses: Option<BTreeMap<String, String>>,
    /// The report's reason for each status.
    pub check_reasons: Option<BTreeMap<String, String>>,
    /// Digest of the check parameters the report was produced with.
    pub params_digest: Option<String>,
    /// TPM resetCount of the quote.
    pub reset_count: u32,
    /// TPM restartCount of the quote.
    pub restart_count: u32,
    /// TPM clock of the quote (ms).
    pub clock: u64,
    /// The TPM's firmwareVersion, as signed in the quote (vendor specific;
    /// a different value for the same TPM means its firmware changed).
    /// 0 in facts stored by releases that did not record it.
    #[serde(default)]
    pub firmware_version: u64,
    /// clockInfo.safe of the quote: false if the TPM clock may have been
    /// reported higher before (state lost since). False in facts stored by
    /// releases that did not record it.
    #[serde(default)]
    pub clock_safe: bool,
    /// What the UEFI event log sent with the quote proved against it
    /// (None: facts from an agent or release that sent no log field).
    /// Shared: an unchanged log's facts pass from one evidence to the next
    /// without a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Arc<LogFacts>>,
    /// What the TXT/DRTM event log (PCRs 17-22) proved, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_log: Option<Arc<LogFacts>>,
}

impl Facts {
    /// The PCR values as bytes (entries that are not 32-byte hex are skipped,
    /// which fails the PCRs of any policy that constrains them).
    pub fn pcr_map(&self) -> BTreeMap<u8, [u8; 32]> {
        self.pcrs
            .iter()
            .filter_map(|(i, v)| {
                let bytes = hex::decode(v).ok()?;
                Some((*i, <[u8; 32]>::try_from(bytes.as_slice()).ok()?))
            })
            .collect()
    }

    /// JSON for the store.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads stored JSON.
    pub fn from_json(text: &str) -> Result<Facts, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Every reason against trust in `pool` for these facts under `policy`.
pub fn evaluate_pool(facts: &Facts, pool: &PoolPolicy, policy: &PolicySet) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if facts.statuses.is_some() {
        let expected = policy.check_params().map(params_digest);
        if facts.params_digest != expected {
            reasons.push(Reason::new(
                REPORT_PARAMS_MISMATCH,
                format!(
                    "the hardening report was produced with check parameters {} instead of the policy's {}",
                    facts.params_digest.as_deref().unwrap_or("(agent defaults)"),
                    expected.as_deref().unwrap_or("(agent defaults)")
                ),
            ));
        }
    }
    let pcrs = facts.pcr_map();
    reasons.extend(evaluate(
        pool,
        &HostFacts {
            pcrs: &pcrs,
            check_status: facts.statuses.as_ref(),
            check_reason: facts.check_reasons.as_ref(),
            event_log: facts.event_log.as_deref(),
            txt_log: facts.txt_log.as_deref(),
        },
    ));
    reasons
}

/// Reasons per pool of `policy` (empty = trusted).
pub fn evaluate_all(facts: &Facts, policy: &PolicySet) -> Vec<(String, Vec<Reason>)> {
    policy
        .pools
        .iter()
        .map(|(name, pool)| (name.clone(), evaluate_pool(facts, pool, policy)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::policy::parse_policy_set;

    fn facts(pcr17: u8) -> Facts {
        Facts {
            attested_at_ms: 1,
            valid_until_ms: 2,
            pcrs: [0u8, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19]
                .iter()
                .map(|i| (*i, hex::encode([if *i == 17 { pcr17 } else { 0 }; 32])))
                .collect(),
            statuses: None,
            check_reasons: None,
            params_digest: None,
            reset_count: 0,
            restart_count: 0,
            clock: 0,
            firmware_version: 0x2019_1023_0016_3636,
            clock_safe: true,
            event_log: None,
            txt_log: None,
        }
    }

    #[test]
    fn facts_stored_before_firmware_and_clock_safe_still_load() {
        // JSON as an older release stored it: no firmware_version, no clock_safe.
        let mut old = serde_json::to_value(facts(0x11)).expect("json");
        let map = old.as_object_mut().expect("object");
        map.remove("firmware_version");
        map.remove("clock_safe");
        let loaded = Facts::from_json(&old.to_string()).expect("old facts load");
        assert_eq!(loaded.firmware_version, 0);
        assert!(!loaded.clock_safe);
        assert_eq!(loaded.pcrs, facts(0x11).pcrs);
        // And the new fields round-trip.
        let f = facts(0x11);
        let back = Facts::from_json(&f.to_json().expect("json")).expect("parse");
        assert_eq!(back.firmware_version, 0x2019_1023_0016_3636);
        assert!(back.clock_safe);
    }

    #[test]
    fn facts_round_trip_and_evaluate_under_any_policy() {
        let f = facts(0x11);
        assert_eq!(
            Facts::from_json(&f.to_json().expect("json")).expect("parse"),
            f
        );
        let allow = |v: &str| {
            format!("require_measured_launch = false\n[[allow]]\nname = \"b\"\npcrs = {{ 17 = \"{}\" }}\n", v.repeat(32))
        };
        let ok = parse_policy_set(&[("p.toml".into(), allow("11"))]).expect("policy");
        assert_eq!(evaluate_all(&f, &ok), vec![("p".to_string(), vec![])]);
        let other = parse_policy_set(&[("p.toml".into(), allow("22"))]).expect("policy");
        let reasons = &evaluate_all(&f, &other)[0].1;
        assert_eq!(reasons[0].code, "pcr.not_allowed");
        assert!(reasons[0].message.contains("PCR 17"));
    }

    #[test]
    fn a_report_judged_with_other_parameters_is_named() {
        let mut f = facts(0x11);
        f.statuses = Some(BTreeMap::new());
        let text = "require_measured_launch = false\n[check_params]\nmac = \"apparmor\"\n[[allow]]\nname = \"b\"\npcrs = {}\n";
        let policy = parse_policy_set(&[("p.toml".into(), text.into())]).expect("policy");
        assert_eq!(
            evaluate_all(&f, &policy)[0].1[0].code,
            REPORT_PARAMS_MISMATCH
        );
        f.params_digest = policy.check_params().map(params_digest);
        assert!(evaluate_all(&f, &policy)[0].1.is_empty());
    }
}
