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

    /// The whole facts as one JSON document (event logs inline).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads [`Facts::to_json`]'s form.
    pub fn from_json(text: &str) -> Result<Facts, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The store's form of these facts. `previous` are the facts the store
    /// holds for this host: a log whose facts are the very value shared
    /// with them (an unchanged log, reused by the verifier) gets no row, so
    /// the store keeps the one it has.
    pub fn to_stored(&self, previous: Option<&Facts>) -> Result<StoredFacts, serde_json::Error> {
        let mut logs = Vec::new();
        let mut row_of = |log: &Option<Arc<LogFacts>>,
                          before: Option<&Arc<LogFacts>>,
                          domain: LogDomain|
         -> Result<Option<String>, serde_json::Error> {
            let Some(log) = log else { return Ok(None) };
            let LogFacts::Replayed(m) = &**log else {
                return Ok(None);
            };
            if !before.is_some_and(|b| Arc::ptr_eq(b, log)) {
                logs.push(LogRow {
                    domain,
                    log_sha256: m.log_sha256.clone(),
                    body: serde_json::to_string(&**log)?,
                });
            }
            Ok(Some(m.log_sha256.clone()))
        };
        let event_log_row = row_of(
            &self.event_log,
            previous.and_then(|p| p.event_log.as_ref()),
            LogDomain::Uefi,
        )?;
        let txt_log_row = row_of(
            &self.txt_log,
            previous.and_then(|p| p.txt_log.as_ref()),
            LogDomain::Txt,
        )?;
        let mut core = self.clone();
        if event_log_row.is_some() {
            core.event_log = None;
        }
        if txt_log_row.is_some() {
            core.txt_log = None;
        }
        let body = serde_json::to_string(&StoredBody {
            facts: &core,
            refs: LogRefs {
                event_log_row,
                txt_log_row,
            },
        })?;
        Ok(StoredFacts { body, logs })
    }

    /// Reads the store's form. A log the body refers to whose row is
    /// missing or holds another log (a row written by another replica in
    /// between) reads as an invalid log: untrusted in every pool until the
    /// host's next report, which judges its log afresh.
    pub fn from_stored(stored: &StoredFacts) -> Result<Facts, serde_json::Error> {
        // Two reads of the small body: serde's flatten cannot read the
        // integer keys of `pcrs` back.
        let mut facts: Facts = serde_json::from_str(&stored.body)?;
        let refs: LogRefs = serde_json::from_str(&stored.body)?;
        let attach = |reference: Option<String>,
                      domain: LogDomain|
         -> Result<Option<Arc<LogFacts>>, serde_json::Error> {
            let Some(sha) = reference else {
                return Ok(None);
            };
            let row = stored
                .logs
                .iter()
                .find(|r| r.domain == domain && r.log_sha256 == sha);
            Ok(Some(Arc::new(match row {
                Some(r) => serde_json::from_str(&r.body)?,
                None => LogFacts::Invalid {
                    log_sha256: String::new(),
                    reason: format!(
                        "the stored facts of the {} event log {sha} are missing",
                        domain.as_str()
                    ),
                },
            })))
        };
        if let Some(log) = attach(refs.event_log_row, LogDomain::Uefi)? {
            facts.event_log = Some(log);
        }
        if let Some(log) = attach(refs.txt_log_row, LogDomain::Txt)? {
            facts.txt_log = Some(log);
        }
        Ok(facts)
    }
}

/// A host's facts as the store keeps them. Every sound report rewrites
/// `body` (a few KB); the facts of a replayed event log (10-20 KB for a
/// UEFI boot) live in a row of their own, written only when that log's
/// facts change, and `body` names the row by the log's SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFacts {
    /// The facts JSON, a replayed log replaced by a reference to its row.
    pub body: String,
    /// Rows of replayed logs: on a write, those to (re)write; on a read,
    /// every row the store holds for the host.
    pub logs: Vec<LogRow>,
}

impl StoredFacts {
    /// Facts with no log rows (written whole as `body`).
    pub fn body_only(body: impl Into<String>) -> StoredFacts {
        StoredFacts {
            body: body.into(),
            logs: Vec::new(),
        }
    }
}

/// The stored facts of one replayed event log of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// Which log.
    pub domain: LogDomain,
    /// SHA-256 of the log bytes (hex): what the facts body refers to.
    pub log_sha256: String,
    /// The log's facts ([`LogFacts`] JSON).
    pub body: String,
}

/// Which of a host's event logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogDomain {
    /// The UEFI (SRTM) log, PCRs 0-16.
    Uefi,
    /// The TXT/DRTM log, PCRs 17-22.
    Txt,
}

impl LogDomain {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDomain::Uefi => "uefi",
            LogDomain::Txt => "txt",
        }
    }

    /// The domain named `name` in the store.
    pub fn from_name(name: &str) -> Option<LogDomain> {
        match name {
            "uefi" => Some(LogDomain::Uefi),
            "txt" => Some(LogDomain::Txt),
            _ => None,
        }
    }
}

/// [`StoredFacts::body`]'s JSON: the facts and the references to their
/// log rows, side by side.
#[derive(Serialize)]
struct StoredBody<'a> {
    #[serde(flatten)]
    facts: &'a Facts,
    #[serde(flatten)]
    refs: LogRefs,
}

/// The log rows a facts body refers to.
#[derive(Serialize, Deserialize)]
struct LogRefs {
    /// The UEFI log's row (its SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_log_row: Option<String>,
    /// The TXT log's row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    txt_log_row: Option<String>,
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

    fn replayed(sha: &str) -> Arc<LogFacts> {
        Arc::new(LogFacts::Replayed(
            trustpool_evidence::eventlog::measured::MeasuredBoot {
                log_sha256: sha.to_string(),
                replayed: vec![0, 1, 2, 3, 4, 5, 6, 7],
                mismatches: vec![],
                events: vec![],
            },
        ))
    }

    #[test]
    fn replayed_logs_are_stored_in_rows_written_only_when_they_change() {
        let mut f = facts(0x11);
        f.event_log = Some(replayed("aa"));
        f.txt_log = Some(Arc::new(LogFacts::Unavailable {
            reason: "no TXT".into(),
        }));
        // First facts of the host: the replayed log gets its row; the small
        // outcome stays in the body.
        let first = f.to_stored(None).expect("stored");
        assert_eq!(first.logs.len(), 1);
        assert_eq!(first.logs[0].domain, LogDomain::Uefi);
        assert_eq!(first.logs[0].log_sha256, "aa");
        assert!(!first.body.contains("replayed"), "{}", first.body);
        assert!(first.body.contains("no TXT"), "{}", first.body);
        assert_eq!(Facts::from_stored(&first).expect("read"), f);
        // The next report reuses the log (the same shared value): a body
        // alone, and with the row the store holds it reads back whole.
        let mut next = f.clone();
        next.attested_at_ms = 99;
        let second = next.to_stored(Some(&f)).expect("stored");
        assert!(second.logs.is_empty());
        let read = Facts::from_stored(&StoredFacts {
            body: second.body.clone(),
            logs: first.logs.clone(),
        })
        .expect("read");
        assert_eq!(read, next);
        // An equal log judged afresh is another value: written again.
        let mut rejudged = next.clone();
        rejudged.event_log = Some(replayed("aa"));
        assert_eq!(
            rejudged.to_stored(Some(&next)).expect("stored").logs.len(),
            1
        );
    }

    #[test]
    fn a_missing_or_foreign_log_row_reads_as_an_invalid_log() {
        let mut f = facts(0x11);
        f.event_log = Some(replayed("aa"));
        let stored = f.to_stored(None).expect("stored");
        let foreign = StoredFacts {
            body: stored.body.clone(),
            logs: vec![LogRow {
                log_sha256: "bb".into(),
                ..stored.logs[0].clone()
            }],
        };
        for s in [StoredFacts::body_only(stored.body.clone()), foreign] {
            let read = Facts::from_stored(&s).expect("read");
            match read.event_log.as_deref() {
                Some(LogFacts::Invalid { log_sha256, reason }) => {
                    // Never reused: the next report judges its log afresh.
                    assert!(log_sha256.is_empty());
                    assert!(reason.contains("aa are missing"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A row that does not parse is an error, not a panic.
        let broken = StoredFacts {
            body: stored.body,
            logs: vec![LogRow {
                body: "{".into(),
                ..stored.logs[0].clone()
            }],
        };
        assert!(Facts::from_stored(&broken).is_err());
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
