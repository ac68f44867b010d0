//! Event-level rules of a pool (`[events]`): instead of, or besides, exact
//! PCR values, a pool accepts a host by the events of its event logs that
//! replayed against its quote ([`crate::eventlog::measured::LogFacts`]).
//!
//! ```toml
//! [events]
//! pcrs = [0, 2, 4, 7]          # judged by their events; each in the pool's `pcrs`
//! ignore_pcrs = [1, 3, 5, 6]   # optional: PCRs of the selection the event rules do not judge
//! values = { 17 = "<64 hex>", 18 = "<64 hex>" }   # optional: judged by exact value
//!
//! [[events.allow]]             # one accepted event
//! pcr = 4                      # one of [events].pcrs
//! digest = "<64 hex>"          # its sha256 digest, as extended
//! type = "EV_EFI_BOOT_SERVICES_APPLICATION"   # optional: spec name or 0x…
//! path = "PciRoot(0x0)/…/\\EFI\\BOOT\\BOOTX64.EFI"  # optional: the device path, exactly
//! file = "bootx64.efi"         # optional: its last component, ASCII case-insensitive
//! label = "shim 15.7"          # optional: named in reasons
//!
//! [[events.require]]           # a data-proven UEFI variable event that must be there
//! pcr = 7                      # optional
//! variable = "SecureBoot"      # its name (required)
//! guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c"   # optional
//! data = "01"                  # optional: VariableData, hex
//! data_sha256 = "<64 hex>"     # optional: SHA-256 of VariableData
//! contains = ["<64 hex>"]      # optional: signature-database entries (hash, or a certificate's SHA-256)
//! subject = "CN=Debian"        # optional: text some X.509 entry's subject contains
//! label = "Secure Boot on"
//!
//! [[events.forbid]]            # an event that must not be there
//! text = "Entering ROM based setup"   # SHA-256 of the text, with or without a NUL…
//! digest = "<64 hex>"          # …or a digest: exactly one of the two
//! pcr = 1                      # optional
//! label = "firmware setup entered"
//! ```
//!
//! # What the rules accept
//! The event rules accept a host when, with no reason against it:
//! * every PCR of `[events].pcrs` replayed from its log (the UEFI log for
//!   PCRs 0-16 and 23, the TXT log for 17-22), so that its events are
//!   evidence; and every one of its events is matched by an `allow` rule:
//!   same PCR and digest, and the type, path and file when the rule gives
//!   them;
//! * every `require` rule is met by one **data-proven** variable event (its
//!   digest is the hash of its data, so its name and contents are evidence)
//!   on a PCR that replayed;
//! * no event on a PCR that replayed has the digest of a `forbid` rule;
//! * every PCR of `values` has that value.
//!
//! A pool accepts a host when its `[[allow]]` entries *or* its event rules
//! do ([`super::evaluate`]).
//!
//! # Why digests, and why no `type` on forbid
//! A log is not signed: its types and data are whatever the host wrote,
//! and only the digests that replayed are what the TPM extended. `allow`
//! and `require` can only narrow with the type, path, file or data
//! (a lie there makes an event *less* acceptable), and `require` demands
//! data-proven events. A forbidden event, though, must not escape by lying:
//! `forbid` matches the digest alone, against every event whatever type it
//! claims, so it takes no `type`.
//!
//! # Modules
//! * `parse`: reading `[events]`, every error located;
//! * `judge`: the reasons against a host.

pub(super) mod judge;
pub use judge::MAX_EVENT_REASONS;
pub(super) mod parse;
#[cfg(test)]
mod tests;

use crate::eventlog::measured::{MeasuredEvent, VariableFacts};
use crate::eventlog::EventType;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The `[events]` table of a pool, with its allow and forbid rules indexed
/// by digest (a lookup per event, not a scan of the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRules {
    pcrs: Vec<u8>,
    ignore_pcrs: Vec<u8>,
    values: BTreeMap<u8, [u8; 32]>,
    allow: Vec<EventAllow>,
    require: Vec<EventRequire>,
    forbid: Vec<EventForbid>,
    /// (PCR, digest) → indices into `allow`.
    allow_index: BTreeMap<(u8, [u8; 32]), Vec<usize>>,
    /// digest → indices into `forbid`.
    forbid_index: BTreeMap<[u8; 32], Vec<usize>>,
}

impl EventRules {
    /// Builds the rules and their indexes. `pcrs` and `ignore_pcrs` are
    /// sorted and deduplicated; nothing else is checked (the parser checks
    /// every rule against the pool, with locations).
    pub fn new(
        pcrs: Vec<u8>,
        ignore_pcrs: Vec<u8>,
        values: BTreeMap<u8, [u8; 32]>,
        allow: Vec<EventAllow>,
        require: Vec<EventRequire>,
        forbid: Vec<EventForbid>,
    ) -> EventRules {
        let mut allow_index: BTreeMap<(u8, [u8; 32]), Vec<usize>> = BTreeMap::new();
        for (i, rule) in allow.iter().enumerate() {
            allow_index
                .entry((rule.pcr, rule.digest))
                .or_default()
                .push(i);
        }
        let mut forbid_index: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        for (i, rule) in forbid.iter().enumerate() {
            for d in rule.what.digests() {
                forbid_index.entry(d).or_default().push(i);
            }
        }
        EventRules {
            pcrs: sorted(pcrs),
            ignore_pcrs: sorted(ignore_pcrs),
            values,
            allow,
            require,
            forbid,
            allow_index,
            forbid_index,
        }
    }

    /// The PCRs judged by their events, ascending.
    pub fn pcrs(&self) -> &[u8] {
        &self.pcrs
    }

    /// The PCRs of the selection the event rules explicitly do not judge.
    pub fn ignore_pcrs(&self) -> &[u8] {
        &self.ignore_pcrs
    }

    /// The PCRs judged by exact value, and their values.
    pub fn values(&self) -> &BTreeMap<u8, [u8; 32]> {
        &self.values
    }

    /// The accepted events, in file order.
    pub fn allow(&self) -> &[EventAllow] {
        &self.allow
    }

    /// The required variable events, in file order.
    pub fn require(&self) -> &[EventRequire] {
        &self.require
    }

    /// The forbidden events, in file order.
    pub fn forbid(&self) -> &[EventForbid] {
        &self.forbid
    }

    /// The allow rules with this PCR and digest (whatever else they ask).
    pub(super) fn allow_candidates(&self, pcr: u8, digest: &[u8; 32]) -> &[usize] {
        self.allow_index
            .get(&(pcr, *digest))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The forbid rules with this digest (whatever PCR they narrow to).
    pub(super) fn forbid_candidates(&self, digest: &[u8; 32]) -> &[usize] {
        self.forbid_index
            .get(digest)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn sorted(mut v: Vec<u8>) -> Vec<u8> {
    v.sort_unstable();
    v.dedup();
    v
}

/// An accepted event (`[[events.allow]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAllow {
    /// Its PCR (one of `[events].pcrs`).
    pub pcr: u8,
    /// Its sha256 digest: what the TPM extended.
    pub digest: [u8; 32],
    /// The type the log must state, if given.
    pub event_type: Option<EventType>,
    /// The device path text the event must carry, if given.
    pub path: Option<String>,
    /// The last component of the device path (after the last `/` or `\`),
    /// compared ASCII case-insensitively, if given.
    pub file: Option<String>,
    /// Named in reasons.
    pub label: Option<String>,
}

impl EventAllow {
    /// Whether this rule's type, path and file accept `event` (its PCR and
    /// digest are matched by the index).
    pub fn accepts(&self, event: &MeasuredEvent) -> bool {
        self.event_type.is_none_or(|t| t == event.event_type)
            && self
                .path
                .as_ref()
                .is_none_or(|p| event.device_path.as_deref() == Some(p.as_str()))
            && self.file.as_ref().is_none_or(|f| {
                event
                    .device_path
                    .as_deref()
                    .is_some_and(|path| last_component(path).eq_ignore_ascii_case(f))
            })
    }

    /// What the rule asks beyond PCR and digest, for a reason: `type
    /// EV_…, file shimx64.efi`.
    pub(super) fn narrowing(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.event_type {
            parts.push(format!("type {t}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path {p}"));
        }
        if let Some(f) = &self.file {
            parts.push(format!("file {f}"));
        }
        parts.join(", ")
    }
}

/// The last component of a device path's text: after the last `/` or `\`
/// (`PciRoot(0x0)/…/\EFI\debian\shimx64.efi` → `shimx64.efi`).
pub fn last_component(path: &str) -> &str {
    match path.rfind(['/', '\\']) {
        Some(i) => path.get(i + 1..).unwrap_or(""),
        None => path,
    }
}

/// A required variable event (`[[events.require]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRequire {
    /// The PCR it must be on, if given.
    pub pcr: Option<u8>,
    /// The variable's name (`SecureBoot`, `dbx`…), exactly.
    pub variable: String,
    /// Its vendor GUID, lower-case, if given.
    pub guid: Option<String>,
    /// `VariableData` must be these bytes, if given.
    pub data: Option<Vec<u8>>,
    /// SHA-256 of `VariableData` must be this, if given.
    pub data_sha256: Option<[u8; 32]>,
    /// Entries the signature database must contain
    /// ([`VariableFacts::entries`]: a 32-byte hash as itself, a certificate
    /// as its SHA-256).
    pub contains: Vec<[u8; 32]>,
    /// Text the subject of one of its X.509 entries must contain, if given.
    pub subject: Option<String>,
    /// Named in reasons.
    pub label: Option<String>,
}

impl EventRequire {
    /// Whether `v` is the variable this rule is about (name and GUID).
    pub fn names(&self, v: &VariableFacts) -> bool {
        v.name == self.variable
            && self
                .guid
                .as_ref()
                .is_none_or(|g| v.guid.eq_ignore_ascii_case(g))
    }

    /// What the contents of `v` fail of this rule (empty: it is met).
    pub fn problems(&self, v: &VariableFacts) -> Vec<String> {
        let name = &v.name;
        let mut problems = Vec::new();
        if let Some(want) = &self.data {
            let want_sha = hex::encode(Sha256::digest(want));
            if !v.data_sha256.eq_ignore_ascii_case(&want_sha) {
                let is = match &v.data {
                    Some(d) if d.is_empty() => "empty".to_string(),
                    Some(d) => d.clone(),
                    None => format!("longer than 64 bytes (sha256 {})", v.data_sha256),
                };
                problems.push(format!(
                    "{name} is {is}, the pool requires {}",
                    hex_or_empty(want)
                ));
            }
        }
        if let Some(want) = &self.data_sha256 {
            let want = hex::encode(want);
            if !v.data_sha256.eq_ignore_ascii_case(&want) {
                problems.push(format!(
                    "{name}'s data has sha256 {}, the pool requires {want}",
                    v.data_sha256
                ));
            }
        }
        let lacking: Vec<String> = self
            .contains
            .iter()
            .map(hex::encode)
            .filter(|want| !v.entries.iter().any(|e| e.eq_ignore_ascii_case(want)))
            .collect();
        if !lacking.is_empty() {
            problems.push(format!(
                "{name} lacks {} (it has {} entr{})",
                lacking.join(", "),
                v.entries.len(),
                if v.entries.len() == 1 { "y" } else { "ies" }
            ));
        }
        if let Some(want) = &self.subject {
            if !v.subjects.iter().any(|s| s.contains(want.as_str())) {
                problems.push(if v.subjects.is_empty() {
                    format!("{name} has no X.509 entry, the pool requires a subject containing '{want}'")
                } else {
                    format!(
                        "no X.509 subject of {name} contains '{want}' (its subjects: {})",
                        v.subjects.join("; ")
                    )
                });
            }
        }
        problems
    }

    /// The rule in one phrase: `SecureBoot = 01 on PCR 7 ('Secure Boot on')`.
    pub fn describe(&self) -> String {
        let mut text = self.variable.clone();
        if let Some(g) = &self.guid {
            text.push_str(&format!(" ({g})"));
        }
        let mut conditions = Vec::new();
        if let Some(d) = &self.data {
            conditions.push(format!("= {}", hex_or_empty(d)));
        }
        if let Some(d) = &self.data_sha256 {
            conditions.push(format!("with data sha256 {}", hex::encode(d)));
        }
        if !self.contains.is_empty() {
            let list: Vec<String> = self.contains.iter().map(hex::encode).collect();
            conditions.push(format!("containing {}", list.join(", ")));
        }
        if let Some(s) = &self.subject {
            conditions.push(format!("with an X.509 subject containing '{s}'"));
        }
        if !conditions.is_empty() {
            text.push(' ');
            text.push_str(&conditions.join(" and "));
        }
        if let Some(p) = self.pcr {
            text.push_str(&format!(" on PCR {p}"));
        }
        if let Some(l) = &self.label {
            text.push_str(&format!(" ('{l}')"));
        }
        text
    }
}

fn hex_or_empty(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "empty".into()
    } else {
        hex::encode(bytes)
    }
}

/// A forbidden event (`[[events.forbid]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventForbid {
    /// What its digest is.
    pub what: ForbidMatch,
    /// The PCR it is forbidden on, if only one.
    pub pcr: Option<u8>,
    /// Named in reasons.
    pub label: Option<String>,
}

/// How a forbidden event is recognised: always by its digest, which the
/// host cannot choose (its type and data it can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForbidMatch {
    /// A string event: SHA-256 of the text, and of the text with a NUL
    /// (firmware logs both forms).
    Text(String),
    /// An exact sha256 digest.
    Digest([u8; 32]),
}

impl ForbidMatch {
    /// The digests that match.
    pub fn digests(&self) -> Vec<[u8; 32]> {
        match self {
            ForbidMatch::Text(t) => {
                let mut with_nul = t.as_bytes().to_vec();
                with_nul.push(0);
                vec![
                    Sha256::digest(t.as_bytes()).into(),
                    Sha256::digest(&with_nul).into(),
                ]
            }
            ForbidMatch::Digest(d) => vec![*d],
        }
    }
}

impl EventForbid {
    /// The rule in one phrase: `'setup' (text "Entering ROM based setup")`.
    pub fn describe(&self) -> String {
        let what = match &self.what {
            ForbidMatch::Text(t) => format!("text \"{t}\""),
            ForbidMatch::Digest(d) => format!("digest {}", hex::encode(d)),
        };
        match &self.label {
            Some(l) => format!("'{l}' ({what})"),
            None => what,
        }
    }
}
