//! Pool policies: one TOML file per pool (file stem = pool name), and their
//! evaluation against verified host facts.
//!
//! ```toml
//! require_measured_launch = true            # default true (fail closed): PCR 17 and 18 show a TXT launch
//! pcrs = [0,1,2,3,4,5,6,7,17,18,19]         # sha256 PCRs quoted; default DEFAULT_PCRS; 0..=23, no duplicates
//! require_checks = ["mac.enforcing_any"]    # hardening checks that must be "pass"
//!
//! [[allow]]                                 # accepted values; names unique
//! name = "golden-2026-11"
//! pcrs = { 17 = "9851…78", 18 = "…", 0 = "…" } # 64 hex chars; keys inside `pcrs`; unlisted PCRs unconstrained
//!
//! [events]                                  # event rules over the replayed event logs (module `events`)
//! pcrs = [0, 2, 4, 7]                       # judged by their events; each in `pcrs`
//! ignore_pcrs = [1, 3, 5, 6]                # optional: not judged by the event rules
//! values = { 17 = "…", 18 = "…" }           # optional: judged by exact value
//! [[events.allow]]                          # pcr, digest; optional type, path, file, label
//! [[events.require]]                        # variable; optional pcr, guid, data, data_sha256, contains, subject, label
//! [[events.forbid]]                         # text or digest; optional pcr, label
//! ```
//!
//! A pool has at least one `[[allow]]` entry or an `[events]` table. A host
//! passes when an allow entry matches **or** the event rules accept it
//! (and, either way, its launch is measured where required and its
//! required checks pass). The event rules' syntax and meaning are in
//! [`events`]; how the two logs are told apart, and why a log that
//! contradicts the quote fails every pool, in the `logs` module.
//!
//! With `require_measured_launch` (the default) every `[[allow]]` entry must
//! pin PCR 17 (SINIT / launch details) and PCR 18 (MLE / authorities), to
//! values other than all-FF (no dynamic launch) and all-zero (hash start
//! with nothing extended): an entry that leaves them open would accept any
//! SINIT and MLE. `pcrs = {}` (accept any values) is only valid with
//! `require_measured_launch = false`. Likewise the event rules must judge
//! PCR 17 and 18: in `[events].pcrs` (by the TXT log) or in
//! `[events].values` (to such values).
//!
//! Errors carry the file, line and column of the offending item, collected
//! across all files ([`parse_policy_set`]). Unknown keys are errors.
//!
//! # Modules, one job each
//! * `parse`: one pool file; `set`: every pool, and the policy digest;
//! * `evaluate`: [`HostFacts`] and [`evaluate()`];
//! * [`events`]: `[events]` (its types here, `parse` and `judge` inside);
//! * `logs`: the UEFI and TXT logs, and the rule every pool applies to them;
//! * `error`: [`PolicyError`] and locations.

mod error;
mod evaluate;
pub mod events;
mod logs;
mod parse;
mod set;
#[cfg(test)]
mod tests;

pub use error::PolicyError;
pub use evaluate::{evaluate, HostFacts};
pub use events::{EventAllow, EventForbid, EventRequire, EventRules, ForbidMatch};
pub use parse::{parse_pool, pool_name_of};
pub use set::{parse_policy_set, policy_digest, PolicySet};

use crate::pcr::{is_reset_drtm, is_zero};
use std::collections::BTreeMap;

/// The policy of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPolicy {
    /// Pool name (the file stem).
    pub name: String,
    /// PCR 17 and 18 must show a dynamic (TXT) launch: neither all 0xFF
    /// nor all zero, and (checked at load) pinned by every allow entry.
    pub require_measured_launch: bool,
    /// sha256 PCR indices to quote, ascending.
    pub pcrs: Vec<u8>,
    /// Hardening check ids that must have status `pass`.
    pub require_checks: Vec<String>,
    /// Parameters of the hardening checks (`[check_params]`), as canonical
    /// JSON, if the pool sets them. The agent runs one set of checks per
    /// round, so every pool that sets them must set the same ones.
    pub check_params: Option<String>,
    /// Accepted measurement sets (golden builds). A host passes when one
    /// matches, or when the event rules accept it.
    pub allow: Vec<AllowEntry>,
    /// Event-level rules (`[events]`), if the pool has them: a host the
    /// allow entries refuse passes when these accept it.
    pub events: Option<EventRules>,
}

/// One accepted measurement set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// Unique name within the pool (e.g. the build it describes).
    pub name: String,
    /// Required values; PCRs not listed are unconstrained.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
}

/// The PCRs a measured-launch pool's allow entries must pin: 17 (SINIT,
/// launch details) and 18 (MLE, authorities).
const LAUNCH_PCRS: [u8; 2] = [17, 18];

/// How `value` of PCR 17 or 18 shows that no measured launch happened:
/// the reset value all-FF (no dynamic launch since TPM startup) or all
/// zeros (the locality-4 hash start reset the PCR but no SINIT/MLE
/// measurement was extended). None for any other value.
fn not_launched(value: &[u8; 32]) -> Option<&'static str> {
    if is_reset_drtm(value) {
        Some("the reset value ff…ff")
    } else if is_zero(value) {
        Some("all zeros 00…00")
    } else {
        None
    }
}
