//! Change-driven re-attestation. Between rounds the agent re-reads the
//! quoted PCRs (TPM2_PCR_Read: cheap, no signature) and re-runs its hardening
//! checks; when either moved since the last evidence, the host's state
//! changed and it asks the server for a challenge at once instead of waiting
//! for the next round.

use crate::report::{Reporter, Statuses};
use crate::tpm::TpmWorker;
use std::collections::BTreeMap;
use tracing::warn;

/// PCR values by index (sha256 bank).
pub type PcrValues = BTreeMap<u32, Vec<u8>>;

/// What the last evidence showed, to compare the host against.
#[derive(Debug, Default)]
pub struct ChangeWatch {
    pcrs: Vec<u32>,
    last_pcrs: Option<PcrValues>,
    last_statuses: Option<Statuses>,
}

impl ChangeWatch {
    /// Records the state the last evidence showed.
    pub fn observed(&mut self, pcr_values: &[(u32, Vec<u8>)], statuses: Option<Statuses>) {
        self.pcrs = pcr_values.iter().map(|(i, _)| *i).collect();
        self.last_pcrs = Some(pcr_values.iter().cloned().collect());
        self.last_statuses = statuses;
    }

    /// Re-reads the PCRs and re-runs the checks; returns why the host should
    /// be judged again now, or `None` when nothing changed (or nothing was
    /// observed yet).
    pub async fn poll(
        &mut self,
        tpm: &TpmWorker,
        reporter: &Reporter,
        check_params: &str,
    ) -> Option<String> {
        let mut changes = Vec::new();
        if let Some(before) = &self.last_pcrs {
            match tpm.read_pcrs(self.pcrs.clone()).await {
                Ok(values) => {
                    let now: PcrValues = values.into_iter().collect();
                    changes.extend(pcr_changes(before, &now));
                }
                Err(e) => warn!(error = %e, "cannot re-read the PCRs between rounds"),
            }
        }
        if let Some(before) = &self.last_statuses {
            if let Some(now) = reporter.statuses(check_params).await {
                changes.extend(status_changes(before, &now));
            }
        }
        (!changes.is_empty()).then(|| changes.join("; "))
    }
}

/// The PCRs whose value differs, e.g. `PCR 18 changed`.
pub fn pcr_changes(before: &PcrValues, now: &PcrValues) -> Vec<String> {
    before
        .iter()
        .filter(|(i, v)| now.get(i) != Some(v))
        .map(|(i, _)| format!("PCR {i} changed"))
        .collect()
}

/// The checks whose status differs, e.g. `mac.enforcing_any: pass -> fail`.
pub fn status_changes(before: &Statuses, now: &Statuses) -> Vec<String> {
    let mut out = Vec::new();
    for (id, status) in now {
        match before.get(id) {
            Some(old) if old == status => {}
            Some(old) => out.push(format!("{id}: {old} -> {status}")),
            None => out.push(format!("{id}: new, {status}")),
        }
    }
    for id in before.keys().filter(|id| !now.contains_key(*id)) {
        out.push(format!("{id}: no longer reported"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_changes_name_the_pcr() {
        let before: PcrValues = [(17, vec![1]), (18, vec![2])].into();
        let mut now = before.clone();
        assert!(pcr_changes(&before, &now).is_empty());
        now.insert(18, vec![3]);
        assert_eq!(
            pcr_changes(&before, &now),
            vec!["PCR 18 changed".to_string()]
        );
        now.remove(&17);
        assert_eq!(pcr_changes(&before, &now).len(), 2);
    }

    #[test]
    fn status_changes_name_the_check() {
        let before: Statuses = [
            ("a".to_string(), "pass".to_string()),
            ("b".to_string(), "pass".to_string()),
        ]
        .into();
        let mut now = before.clone();
        assert!(status_changes(&before, &now).is_empty());
        now.insert("a".into(), "fail".into());
        now.remove("b");
        now.insert("c".into(), "unknown".into());
        assert_eq!(
            status_changes(&before, &now),
            vec![
                "a: pass -> fail".to_string(),
                "c: new, unknown".to_string(),
                "b: no longer reported".to_string()
            ]
        );
    }
}
