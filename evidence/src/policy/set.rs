//! Every pool of a policy directory, loaded together, and the digest that
//! names this exact version of the policy.

use super::error::PolicyError;
use super::parse::{parse_pool, pool_name_of};
use super::PoolPolicy;
use crate::pcr::DEFAULT_PCRS;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// All pool policies, with a digest identifying this exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySet {
    /// Pools by name.
    pub pools: BTreeMap<String, PoolPolicy>,
    /// SHA-256 over the files sorted by name, each as
    /// `u32be(name len) || name || u64be(text len) || text`.
    pub digest: [u8; 32],
}

/// Parses every policy file and collects the errors of all of them.
/// Two files with the same stem are an error.
pub fn parse_policy_set(files: &[(String, String)]) -> Result<PolicySet, Vec<PolicyError>> {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut errors = Vec::new();
    let mut pools = BTreeMap::new();
    let mut files_of: BTreeMap<String, &str> = BTreeMap::new();
    for (file, text) in &sorted {
        let name = pool_name_of(file);
        if let Some(first) = files_of.get(&name) {
            errors.push(PolicyError {
                file: file.clone(),
                line: None,
                column: None,
                message: format!("pool '{name}' is also defined by {first}"),
            });
            continue;
        }
        files_of.insert(name.clone(), file.as_str());
        match parse_pool(file, text) {
            Ok(p) => {
                pools.insert(name, p);
            }
            Err(e) => errors.extend(e),
        }
    }
    let mut params_of: Option<(&str, &str)> = None;
    for pool in pools.values() {
        let Some(params) = pool.check_params.as_deref() else {
            continue;
        };
        match params_of {
            None => params_of = Some((pool.name.as_str(), params)),
            Some((first, theirs)) if theirs != params => errors.push(PolicyError {
                file: files_of.get(&pool.name).map(|f| f.to_string()).unwrap_or_default(),
                line: None,
                column: None,
                message: format!(
                    "[check_params] differ from those of pool '{first}': the agent runs one set of checks per round, so pools must agree on them"
                ),
            }),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(PolicySet {
            pools,
            digest: policy_digest(files),
        })
    } else {
        Err(errors)
    }
}

/// The policy digest of a set of files: SHA-256 over the files sorted by
/// name, each as `u32be(name len) || name || u64be(text len) || text`.
pub fn policy_digest(files: &[(String, String)]) -> [u8; 32] {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (file, text) in sorted {
        // File names are far below 4 GiB.
        hasher.update((file.len() as u32).to_be_bytes());
        hasher.update(file.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

impl PolicySet {
    /// The hardening check parameters (canonical JSON) that the pools set, if any.
    pub fn check_params(&self) -> Option<&str> {
        self.pools.values().find_map(|p| p.check_params.as_deref())
    }

    /// Sorted union of every pool's PCR selection (what to quote so that every
    /// pool can be evaluated), or [`DEFAULT_PCRS`] when there is no pool.
    pub fn union_pcrs(&self) -> Vec<u8> {
        if self.pools.is_empty() {
            return DEFAULT_PCRS.to_vec();
        }
        let all: BTreeSet<u8> = self
            .pools
            .values()
            .flat_map(|p| p.pcrs.iter().copied())
            .collect();
        all.into_iter().collect()
    }

    /// The digest as lowercase hex (recorded in every verdict).
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}
