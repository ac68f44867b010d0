//! The result model (catalogue §1.1, §4): states, records, the report envelope,
//! its canonical bytes (hashed into the TPM quote) and its strict parser.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest report [`Report::from_slice`] accepts (1 MiB). [`crate::run_checks`]
/// shrinks evidence so that its reports stay well below this.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// Most bytes kept of one evidence value (longer values are cut and marked).
pub const MAX_EVIDENCE_VALUE: usize = 4096;

/// The node's declared role (catalogue §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Nova compute node: absent nova/libvirt files are `fail`.
    Compute,
    /// Any other node: absent nova/libvirt files are `notapplicable`.
    Other,
}

impl Role {
    /// `"compute"` or `"other"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Compute => "compute",
            Role::Other => "other",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of parsing a [`Role`], [`Status`] or [`Severity`] from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}; expected one of: {expected}")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for Role {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "compute" => Ok(Role::Compute),
            "other" => Ok(Role::Other),
            _ => Err(ParseEnumError {
                what: "role",
                value: s.to_owned(),
                expected: "compute, other",
            }),
        }
    }
}

/// Result state of one check (XCCDF 1.2 rule results without `fixed`/`notselected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The fact was seen and is good.
    Pass,
    /// Positive evidence of the bad state.
    Fail,
    /// The agent itself failed: parse error, unexpected format, or an I/O error
    /// other than ENOENT/EACCES/EPERM.
    Error,
    /// The fact is not visible from this view (absent interface, permission
    /// denied, container).
    Unknown,
    /// A precondition is proven false.
    NotApplicable,
    /// Not evaluated (never produced by the agent; used for ids a profile requires
    /// but the report lacks).
    NotChecked,
    /// A fact recorded without a verdict.
    Informational,
}

impl Status {
    /// All states, in declaration order.
    pub const ALL: [Status; 7] = [
        Status::Pass,
        Status::Fail,
        Status::Error,
        Status::Unknown,
        Status::NotApplicable,
        Status::NotChecked,
        Status::Informational,
    ];

    /// The wire name (`"pass"`, `"notapplicable"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Unknown => "unknown",
            Status::NotApplicable => "notapplicable",
            Status::NotChecked => "notchecked",
            Status::Informational => "informational",
        }
    }

    /// Whether this state blocks admission when the check is required by the
    /// default severity gate ([`Report::exit_code`]): fail, error, unknown, notchecked.
    pub fn blocks_admission(self) -> bool {
        matches!(
            self,
            Status::Fail | Status::Error | Status::Unknown | Status::NotChecked
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == l)
            .ok_or_else(|| ParseEnumError {
                what: "status",
                value: s.to_owned(),
                expected: "pass, fail, error, unknown, notapplicable, notchecked, informational",
            })
    }
}

/// Severity (catalogue §2): `high` = required for trusted-pool admission by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Required by default (catalogue "H").
    High,
    /// Required when the profile says so ("M").
    Medium,
    /// Informational or scoring only ("L").
    Low,
}

impl Severity {
    /// `"high"`, `"medium"` or `"low"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            _ => Err(ParseEnumError {
                what: "severity",
                value: s.to_owned(),
                expected: "high, medium, low",
            }),
        }
    }
}

/// One piece of evidence: a path read (or a derived fact) and its trimmed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Logical host path (e.g. `/proc/4242/attr/apparmor/current`), or a derived
    /// fact name such as `env.container`.
    pub path: String,
    /// The raw value, trimmed, at most about [`MAX_EVIDENCE_VALUE`] bytes; binary
    /// values are `hex:`-prefixed.
    pub value: String,
}

impl Evidence {
    /// Builds an evidence record, trimming and capping the value.
    pub fn new(path: impl Into<String>, value: impl AsRef<str>) -> Self {
        Evidence {
            path: path.into(),
            value: cap_value(value.as_ref().trim(), MAX_EVIDENCE_VALUE),
        }
    }

    /// Evidence from raw bytes: UTF-8 text as is, anything else as `hex:...`.
    pub fn bytes(path: impl Into<String>, bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Evidence::new(path, s),
            _ => {
                let shown = &bytes[..bytes.len().min(MAX_EVIDENCE_VALUE / 2)];
                let mut v = format!("hex:{}", hex::encode(shown));
                if shown.len() < bytes.len() {
                    v.push_str(&format!("...[{} more bytes]", bytes.len() - shown.len()));
                }
                Evidence {
                    path: path.into(),
                    value: v,
                }
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn cap_value(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[truncated {} bytes]", &s[..end], s.len() - end)
}

/// The record of one check (kube-bench/docker-bench style, XCCDF states).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// Versioned check id, e.g. `svirt.guests_confined`, `sysctl.kernel.kptr_restrict`.
    pub id: String,
    /// Result state.
    pub status: Status,
    /// Severity.
    pub severity: Severity,
    /// Short title.
    pub title: String,
    /// Why this state, in one sentence.
    pub reason: String,
    /// What was read.
    pub evidence: Vec<Evidence>,
    /// Offending items (guests, profiles, files), empty when none.
    pub items: Vec<String>,
    /// How to fix a failure.
    pub remediation: String,
    /// Anchors in guides and tools (catalogue §0, §2).
    pub refs: Vec<String>,
}

/// The hardening report of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Declared role.
    pub role: Role,
    /// The root prefix the host was read through.
    pub root: String,
    /// Results, sorted by id, ids unique.
    pub results: Vec<CheckResult>,
    /// Count per state; always holds all seven states.
    pub summary: BTreeMap<String, usize>,
    /// SHA-256 (hex) of the check parameters the server asked for in the
    /// challenge (their canonical JSON), when the checks ran with them. Absent
    /// when the agent used its own defaults. Lets the server prove the
    /// statuses were judged with the pool's thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_digest: Option<String>,
}

/// Error of [`Report::from_slice`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The input exceeds [`MAX_REPORT_BYTES`].
    #[error("hardening report too large: {size} bytes (limit {max})")]
    TooLarge {
        /// Input size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid report JSON.
    #[error("hardening report is not valid JSON of the expected shape: {0}")]
    Json(String),
    /// Valid JSON, but internally inconsistent.
    #[error("hardening report is inconsistent: {0}")]
    Invalid(String),
}

/// One required check that does not pass, from [`Report::failed_required`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredFailure {
    /// Check id.
    pub id: String,
    /// Its status (`notchecked` when the report lacks the id).
    pub status: Status,
    /// Its reason (empty when the report lacks the id).
    pub reason: String,
}

impl Report {
    /// Builds a report: sorts the results by id and computes the summary.
    pub fn new(role: Role, root: impl Into<String>, mut results: Vec<CheckResult>) -> Self {
        results.sort_by(|a, b| a.id.cmp(&b.id));
        let summary = summarize(&results);
        Report {
            role,
            root: root.into(),
            results,
            summary,
            params_digest: None,
        }
    }

    /// Deterministic JSON: struct fields in declaration order, maps sorted, no
    /// whitespace, no timestamps. The agent hashes exactly these bytes into the TPM
    /// quote; `Report::from_slice(&r.canonical_bytes()) == Ok(r)`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and string-keyed maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of [`Report::canonical_bytes`].
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Parses untrusted report bytes: at most [`MAX_REPORT_BYTES`], exact schema
    /// (unknown fields rejected), results sorted by unique non-empty ids, and a
    /// summary that matches the results.
    pub fn from_slice(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                size: bytes.len(),
                max: MAX_REPORT_BYTES,
            });
        }
        let r: Report =
            serde_json::from_slice(bytes).map_err(|e| ReportError::Json(e.to_string()))?;
        for (i, res) in r.results.iter().enumerate() {
            if res.id.is_empty() || res.id.len() > 200 {
                return Err(ReportError::Invalid(format!(
                    "result {i} has an empty or overlong id"
                )));
            }
            if i > 0 && r.results[i - 1].id >= res.id {
                return Err(ReportError::Invalid(format!(
                    "results not sorted by unique id at {:?} after {:?}",
                    res.id,
                    r.results[i - 1].id
                )));
            }
        }
        let expect = summarize(&r.results);
        if expect != r.summary {
            return Err(ReportError::Invalid(
                "summary does not match the results".to_owned(),
            ));
        }
        Ok(r)
    }

    /// The result with this id.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.results
            .binary_search_by(|r| r.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.results.get(i))
    }

    /// id -> status name. Comparing two maps shows which checks changed state
    /// (the agent asks for an immediate challenge when one does).
    pub fn status_map(&self) -> BTreeMap<String, String> {
        self.results
            .iter()
            .map(|r| (r.id.clone(), r.status.as_str().to_owned()))
            .collect()
    }

    /// The ids whose status differs between two status maps (added and removed ids
    /// included), sorted.
    pub fn changed_ids(
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut ids: Vec<String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| old.get(*k) != new.get(*k))
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The required ids that do not `pass` (DESIGN §3, item 6: unknown, error and
    /// notchecked fail a required check, and so does anything but `pass`). An id
    /// the report lacks is reported as `notchecked`.
    pub fn failed_required(&self, required: &[&str]) -> Vec<RequiredFailure> {
        let mut out = Vec::new();
        for id in required {
            match self.get(id) {
                Some(r) if r.status == Status::Pass => {}
                Some(r) => out.push(RequiredFailure {
                    id: r.id.clone(),
                    status: r.status,
                    reason: r.reason.clone(),
                }),
                None => out.push(RequiredFailure {
                    id: (*id).to_owned(),
                    status: Status::NotChecked,
                    reason: String::new(),
                }),
            }
        }
        out
    }

    /// The `env.container` fact: `Some(true)` when the agent or the view is in a
    /// container, `None` when the report lacks it.
    pub fn container(&self) -> Option<bool> {
        let r = self.get("env.container")?;
        r.evidence
            .iter()
            .find(|e| e.path == "env.container")
            .map(|e| e.value == "true")
    }

    /// Process exit code of `trustpool-agent check`: `0` when no *required* check
    /// blocks admission, `1` otherwise. "Required" is the default gate: severity
    /// `high` (catalogue "H = required for trusted-pool admission by default").
    /// A high check blocks when its status is `fail`, `error`, `unknown` or
    /// `notchecked` (fail closed, as the server does); `pass`, `notapplicable`
    /// (precondition proven false, e.g. `selinux.enforcing` on an AppArmor host)
    /// and `informational` do not.
    pub fn exit_code(&self) -> i32 {
        let blocked = self
            .results
            .iter()
            .any(|r| r.severity == Severity::High && r.status.blocks_admission());
        i32::from(blocked)
    }

    /// A readable table grouped by family (env, mac/svirt, kvm, iommu, cgroup,
    /// boot/tpm/txt, nova/libvirt, sysctl, other), with the counts per state at
    /// the end.
    pub fn render_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trustpool hardening report  role={}  root={}",
            self.role, self.root
        );
        let id_w = self
            .results
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(2)
            .clamp(2, 48);
        for fam in FAMILIES {
            let rows: Vec<&CheckResult> = self
                .results
                .iter()
                .filter(|r| family_of(&r.id) == *fam)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n== {fam} ==");
            let _ = writeln!(
                out,
                "{:<13}  {:<6}  {:<id_w$}  REASON",
                "STATUS", "SEV", "ID"
            );
            for r in rows {
                let reason = one_line(&r.reason, 110);
                let _ = writeln!(
                    out,
                    "{:<13}  {:<6}  {:<id_w$}  {reason}",
                    r.status.as_str(),
                    r.severity.as_str(),
                    r.id
                );
                if !r.items.is_empty()
                    && matches!(r.status, Status::Fail | Status::Error | Status::Unknown)
                {
                    let items = one_line(&r.items.join(", "), 110);
                    let _ = writeln!(
                        out,
                        "{:<13}  {:<6}  {:<id_w$}    items: {items}",
                        "", "", ""
                    );
                }
            }
        }
        let _ = writeln!(out, "\n== summary ==");
        let parts: Vec<String> = Status::ALL
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.as_str(),
                    self.summary.get(s.as_str()).copied().unwrap_or(0)
                )
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  "));
        let _ = writeln!(
            out,
            "admission (high-severity gate): {}",
            if self.exit_code() == 0 {
                "ok"
            } else {
                "BLOCKED"
            }
        );
        out
    }
}

/// Families of [`Report::render_table`], in display order.
pub const FAMILIES: &[&str] = &[
    "env",
    "mac/svirt",
    "kvm",
    "iommu",
    "cgroup",
    "boot/tpm/txt",
    "nova/libvirt",
    "sysctl",
    "other",
];

/// The display family of a check id.
pub fn family_of(id: &str) -> &'static str {
    let head = id.split('.').next().unwrap_or("");
    match head {
        "env" => "env",
        "lsm" | "apparmor" | "selinux" | "mac" | "svirt" => "mac/svirt",
        "libvirt" if id == "libvirt.qemu_nonroot" => "mac/svirt",
        "kvm" | "mem" | "cpu" => "kvm",
        "iommu" => "iommu",
        "cgroup" => "cgroup",
        "boot" | "tpm" | "txt" | "ima" => "boot/tpm/txt",
        "kernel" if id == "kernel.lockdown" => "boot/tpm/txt",
        "nova" | "libvirt" => "nova/libvirt",
        "sysctl" | "kmod" => "sysctl",
        _ => "other",
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

/// Counts per state, all seven states present.
pub fn summarize(results: &[CheckResult]) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for r in results {
        *m.entry(r.status.as_str().to_owned()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(id: &str, status: Status, sev: Severity) -> CheckResult {
        CheckResult {
            id: id.into(),
            status,
            severity: sev,
            title: "t".into(),
            reason: "r".into(),
            evidence: vec![Evidence::new("/p", "v")],
            items: vec![],
            remediation: "fix".into(),
            refs: vec!["x".into()],
        }
    }

    #[test]
    fn enums_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).expect("ser"), format!("\"{s}\""));
        }
        assert_eq!("Compute".parse::<Role>(), Ok(Role::Compute));
        assert!("hypervisor".parse::<Role>().is_err());
        assert_eq!(
            serde_json::to_string(&Role::Other).expect("ser"),
            "\"other\""
        );
        assert_eq!("LOW".parse::<Severity>(), Ok(Severity::Low));
        assert_eq!(
            serde_json::to_string(&Status::NotApplicable).expect("ser"),
            "\"notapplicable\""
        );
    }

    #[test]
    fn canonical_round_trip_and_shape() {
        let r = Report::new(
            Role::Compute,
            "/",
            vec![
                res("b", Status::Fail, Severity::High),
                res("a", Status::Pass, Severity::Low),
            ],
        );
        assert_eq!(r.results[0].id, "a");
        let bytes = r.canonical_bytes();
        assert_eq!(Report::from_slice(&bytes), Ok(r.clone()));
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with("{\"role\":\"compute\",\"root\":\"/\",\"results\":[{\"id\":\"a\",\"status\":\"pass\",\"severity\":\"low\",\"title\""));
        assert!(text.ends_with("\"summary\":{\"error\":0,\"fail\":1,\"informational\":0,\"notapplicable\":0,\"notchecked\":0,\"pass\":1,\"unknown\":0}}"));
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.status_map().get("b").map(String::as_str), Some("fail"));
        let f = r.failed_required(&["a", "b", "zz"]);
        assert_eq!(
            f.iter()
                .map(|x| (x.id.as_str(), x.status))
                .collect::<Vec<_>>(),
            vec![("b", Status::Fail), ("zz", Status::NotChecked)]
        );
        assert_eq!(
            r.digest(),
            <[u8; 32]>::from(Sha256::digest(r.canonical_bytes()))
        );
    }

    #[test]
    fn from_slice_rejects_bad_input() {
        let r = Report::new(
            Role::Other,
            "/",
            vec![res("a", Status::Pass, Severity::High)],
        );
        let mut v: serde_json::Value = serde_json::from_slice(&r.canonical_bytes()).expect("json");
        v["summary"]["pass"] = serde_json::json!(2);
        assert!(matches!(
            Report::from_slice(v.to_string().as_bytes()),
            Err(ReportError::Invalid(_))
        ));
        let mut v2: serde_json::Value = serde_json::from_slice(&r.canonical_bytes()).expect("json");
        v2["extra"] = serde_json::json!(1);
        assert!(matches!(
            Report::from_slice(v2.to_string().as_bytes()),
            Err(ReportError::Json(_))
        ));
        let dup = Report {
            role: Role::Other,
            root: "/".into(),
            results: vec![
                res("a", Status::Pass, Severity::High),
                res("a", Status::Pass, Severity::High),
            ],
            summary: summarize(&[
                res("a", Status::Pass, Severity::High),
                res("a", Status::Pass, Severity::High),
            ]),
            params_digest: None,
        };
        assert!(matches!(
            Report::from_slice(&dup.canonical_bytes()),
            Err(ReportError::Invalid(_))
        ));
        assert!(matches!(
            Report::from_slice(&vec![b' '; MAX_REPORT_BYTES + 1]),
            Err(ReportError::TooLarge { .. })
        ));
        assert!(matches!(
            Report::from_slice(b"[[[[[[[["),
            Err(ReportError::Json(_))
        ));
        let deep = "[".repeat(100_000);
        assert!(Report::from_slice(deep.as_bytes()).is_err());
        assert!(Report::from_slice(
            b"{\"role\":\"compute\",\"root\":\"/\",\"results\":[],\"summary\":{}}"
        )
        .is_err());
        for cut in 0..r.canonical_bytes().len() {
            assert!(Report::from_slice(&r.canonical_bytes()[..cut]).is_err());
        }
    }

    #[test]
    fn exit_code_gate() {
        let ok = Report::new(
            Role::Compute,
            "/",
            vec![
                res("a", Status::Pass, Severity::High),
                res("b", Status::NotApplicable, Severity::High),
                res("c", Status::Fail, Severity::Medium),
                res("d", Status::Informational, Severity::High),
            ],
        );
        assert_eq!(ok.exit_code(), 0);
        for st in [
            Status::Fail,
            Status::Error,
            Status::Unknown,
            Status::NotChecked,
        ] {
            let r = Report::new(Role::Compute, "/", vec![res("a", st, Severity::High)]);
            assert_eq!(r.exit_code(), 1, "{st}");
        }
    }

    #[test]
    fn evidence_capping() {
        let long = "é".repeat(5000);
        let e = Evidence::new("/x", &long);
        assert!(e.value.len() < MAX_EVIDENCE_VALUE + 64);
        assert!(e.value.contains("truncated"));
        assert_eq!(
            Evidence::bytes("/b", &[6, 0, 0, 0, 1]).value,
            "hex:0600000001"
        );
        assert_eq!(Evidence::bytes("/t", b" 2\n").value, "2");
    }

    #[test]
    fn table_groups_families() {
        let r = Report::new(
            Role::Compute,
            "/",
            vec![
                res(
                    "sysctl.kernel.kptr_restrict",
                    Status::Fail,
                    Severity::Medium,
                ),
                res("env.container", Status::Informational, Severity::Low),
                res("kernel.lockdown", Status::Pass, Severity::Medium),
            ],
        );
        let t = r.render_table();
        let env = t.find("== env ==").expect("env");
        let boot = t.find("== boot/tpm/txt ==").expect("boot");
        let sys = t.find("== sysctl ==").expect("sysctl");
        assert!(env < boot && boot < sys);
        assert!(t.contains(
            "pass 1  fail 1  error 0  unknown 0  notapplicable 0  notchecked 0  informational 1"
        ));
        assert_eq!(family_of("libvirt.qemu_nonroot"), "mac/svirt");
        assert_eq!(family_of("libvirt.remote_access"), "nova/libvirt");
    }
}
