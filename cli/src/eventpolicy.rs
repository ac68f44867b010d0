//! Event rules made from a golden host's verified event log (`policy
//! capture --events`) and the event comparison of `policy diff`. Pure.
//!
//! Both read [`LogFacts`]: only the events of PCRs whose replay matched
//! the quote, which are the only events that are evidence.

use super::timefmt::rfc3339;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use trustpool_evidence::eventlog::measured::{LogFacts, MeasuredBoot, MeasuredEvent};
use trustpool_evidence::eventlog::EventType;

/// First PCR judged by value rather than by the UEFI log (the DRTM range).
const FIRST_DRTM_PCR: u8 = 17;

/// The replayed log of a host, or why there is none to capture from.
pub fn replayed<'a>(hostname: &str, log: Option<&'a LogFacts>) -> Result<&'a MeasuredBoot, String> {
    match log {
        None => Err(format!(
            "the evidence of {hostname} carries no event log (an agent older than event-log support?)"
        )),
        Some(LogFacts::Replayed(m)) => Ok(m),
        Some(other) => Err(format!("{hostname}: {}", other.describe())),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The `[events]` table (with its rules) for one host's latest verified
/// evidence: every PCR the UEFI log replayed is judged by its events, each
/// distinct event allowed by digest; the DRTM PCRs (17 and above) by the
/// events of the TXT log when it replayed every one of them, else by value
/// (`values`); Secure Boot, if on, is required. The text is a pool file's
/// body after its `pcrs`/`require_*` keys. Refuses a UEFI log that does
/// not replay to every quoted PCR of its domain: a golden host's log must
/// be whole.
pub fn capture_events_toml(
    hostname: &str,
    attested_at_ms: i64,
    now_ms: i64,
    log: &MeasuredBoot,
    txt: Option<&MeasuredBoot>,
    pcrs: &BTreeMap<u8, [u8; 32]>,
) -> Result<String, String> {
    if let Some(m) = log.mismatches.first() {
        return Err(format!(
            "the event log of {hostname} does not replay to its quote ({}); capture by value (without --events) or fix the host",
            m.message
        ));
    }
    if log.replayed.is_empty() {
        return Err(format!(
            "the event log of {hostname} replays no quoted PCR: nothing to judge by events"
        ));
    }
    let mut text = format!(
        "# Captured by `trustpool policy capture --events` from {}'s verified evidence of {} (captured {}).\n",
        comment_safe(hostname),
        rfc3339(attested_at_ms),
        rfc3339(now_ms)
    );
    let drtm_quoted: Vec<u8> = pcrs
        .keys()
        .copied()
        .filter(|i| *i >= FIRST_DRTM_PCR)
        .collect();
    // The TXT log judges the DRTM PCRs only if it replayed every quoted one.
    let txt = txt.filter(|t| {
        t.mismatches.is_empty()
            && !drtm_quoted.is_empty()
            && drtm_quoted.iter().all(|p| t.replayed.contains(p))
    });
    let mut judged_pcrs: Vec<u8> = log.replayed.clone();
    if let Some(t) = txt {
        judged_pcrs.extend(&t.replayed);
    }
    let judged: Vec<String> = judged_pcrs.iter().map(u8::to_string).collect();
    text.push_str("[events]\n");
    text.push_str(&format!("pcrs = [{}]\n", judged.join(", ")));
    let by_value: Vec<(u8, &[u8; 32])> = if txt.is_some() {
        Vec::new()
    } else {
        pcrs.iter()
            .filter(|(i, _)| **i >= FIRST_DRTM_PCR)
            .map(|(i, v)| (*i, v))
            .collect()
    };
    let unjudged: Vec<String> = pcrs
        .keys()
        .filter(|i| **i < FIRST_DRTM_PCR && !log.replayed.contains(i))
        .map(u8::to_string)
        .collect();
    if !unjudged.is_empty() {
        text.push_str(&format!(
            "# PCR {} quoted but outside the log's domain: not judged by events.\nignore_pcrs = [{}]\n",
            unjudged.join(", "),
            unjudged.join(", ")
        ));
    }
    if !by_value.is_empty() {
        text.push_str("# The DRTM PCRs by value: no TXT log replayed them.\n[events.values]\n");
        for (i, v) in &by_value {
            text.push_str(&format!("{i} = \"{}\"\n", hex::encode(v)));
        }
    }
    let mut seen = BTreeSet::new();
    let txt_events = txt.map(|t| t.events.as_slice()).unwrap_or_default();
    for e in log.events.iter().chain(txt_events) {
        if !seen.insert((e.pcr, e.event_type, e.digest.as_str())) {
            continue;
        }
        text.push_str(&format!(
            "\n[[events.allow]]\npcr = {}\ntype = {}\ndigest = \"{}\"\nlabel = {}\n",
            e.pcr,
            toml_str(&e.event_type.name()),
            e.digest,
            toml_str(&label(e))
        ));
    }
    if let Some(sb) = log.events.iter().find(|e| is_secure_boot_on(e)) {
        text.push_str(&format!(
            "\n# Secure Boot was on: require it.\n[[events.require]]\npcr = {}\nvariable = \"SecureBoot\"\ndata = \"01\"\nlabel = \"Secure Boot enabled\"\n",
            sb.pcr
        ));
    }
    Ok(text)
}

fn is_secure_boot_on(e: &MeasuredEvent) -> bool {
    e.data_proven
        && e.variable
            .as_ref()
            .is_some_and(|v| v.name == "SecureBoot" && v.data.as_deref() == Some("01"))
}

/// A short description of an event for a label or a diff line.
pub fn label(e: &MeasuredEvent) -> String {
    let mut s = e.summary.clone();
    if s.chars().count() > 120 {
        s = s.chars().take(120).collect::<String>() + "…";
    }
    comment_safe(&s)
}

/// The `[[events.allow]]` rules that admit host B's side of `diffs` (its
/// changed events and those only it has): what to append to a pool whose
/// rules came from host A so that B's build passes too (a firmware update
/// rolled out on B). Empty when B has nothing A lacks.
pub fn rules_for_b(host_b: &str, diffs: &[EventDifference]) -> String {
    let mut text = String::new();
    let mut seen = BTreeSet::new();
    for d in diffs {
        let Some(b) = &d.b else { continue };
        if !seen.insert((d.pcr, b.event_type, b.digest.as_str())) {
            continue;
        }
        if text.is_empty() {
            text.push_str(&format!(
                "# Events of {}'s verified log that the other host does not have.\n",
                comment_safe(host_b)
            ));
        }
        text.push_str(&format!(
            "\n[[events.allow]]\npcr = {}\ntype = {}\ndigest = \"{}\"\nlabel = {}\n",
            d.pcr,
            toml_str(&b.event_type.name()),
            b.digest,
            toml_str(&format!("{}: {}", comment_safe(host_b), b.summary))
        ));
    }
    text
}

/// One event that differs between two hosts' logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventDifference {
    /// The PCR.
    pub pcr: u8,
    /// `changed` (same place and type, another digest), `only_a`, `only_b`.
    pub change: &'static str,
    /// Host A's event, if it has one here.
    pub a: Option<EventSide>,
    /// Host B's event, if it has one here.
    pub b: Option<EventSide>,
}

/// One side of an [`EventDifference`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSide {
    /// Event number in that host's log.
    pub number: u32,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Its sha256 digest.
    pub digest: String,
    /// What its data says.
    pub summary: String,
}

fn side(e: &MeasuredEvent) -> EventSide {
    EventSide {
        number: e.number,
        event_type: e.event_type,
        digest: e.digest.clone(),
        summary: label(e),
    }
}

/// The events that differ between two replayed logs, PCR by PCR (only the
/// PCRs both replayed): the longest common sequence of (type, digest) is
/// the same; of the rest, an event of A and one of B of the same type at
/// the same place are one `changed` event (a firmware update: one blob),
/// the others are only in A or only in B.
pub fn diff_events(a: &MeasuredBoot, b: &MeasuredBoot) -> Vec<EventDifference> {
    let both: Vec<u8> = a
        .replayed
        .iter()
        .copied()
        .filter(|p| b.replayed.contains(p))
        .collect();
    let mut out = Vec::new();
    for pcr in both {
        let ea: Vec<&MeasuredEvent> = a.events.iter().filter(|e| e.pcr == pcr).collect();
        let eb: Vec<&MeasuredEvent> = b.events.iter().filter(|e| e.pcr == pcr).collect();
        diff_pcr(pcr, &ea, &eb, &mut out);
    }
    out
}

fn same(x: &MeasuredEvent, y: &MeasuredEvent) -> bool {
    x.event_type == y.event_type && x.digest == y.digest
}

fn diff_pcr(pcr: u8, a: &[&MeasuredEvent], b: &[&MeasuredEvent], out: &mut Vec<EventDifference>) {
    // LCS table; logs have at most a few hundred events per PCR.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(a[i], b[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut only_a: Vec<&MeasuredEvent> = Vec::new();
    let mut only_b: Vec<&MeasuredEvent> = Vec::new();
    let flush = |only_a: &mut Vec<&MeasuredEvent>,
                 only_b: &mut Vec<&MeasuredEvent>,
                 out: &mut Vec<EventDifference>| {
        let mut bs: Vec<Option<&MeasuredEvent>> = only_b.iter().map(|e| Some(*e)).collect();
        for ea in only_a.drain(..) {
            let partner = bs
                .iter_mut()
                .find(|s| s.is_some_and(|eb| eb.event_type == ea.event_type))
                .and_then(Option::take);
            out.push(match partner {
                Some(eb) => EventDifference {
                    pcr,
                    change: "changed",
                    a: Some(side(ea)),
                    b: Some(side(eb)),
                },
                None => EventDifference {
                    pcr,
                    change: "only_a",
                    a: Some(side(ea)),
                    b: None,
                },
            });
        }
        for eb in bs.into_iter().flatten() {
            out.push(EventDifference {
                pcr,
                change: "only_b",
                a: None,
                b: Some(side(eb)),
            });
        }
        only_b.clear();
    };
    while i < n || j < m {
        if i < n && j < m && same(a[i], b[j]) {
            flush(&mut only_a, &mut only_b, out);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            only_b.push(b[j]);
            j += 1;
        } else {
            only_a.push(a[i]);
            i += 1;
        }
    }
    flush(&mut only_a, &mut only_b, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::eventlog::measured::measure;

    const OVMF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../evidence/testdata/eventlog/ovmf/"
    );

    /// The log facts of an OVMF capture against its own vTPM's PCRs 0-7,
    /// with PCRs 17-19 as a launched host would quote them.
    fn host(stem: &str) -> (MeasuredBoot, BTreeMap<u8, [u8; 32]>) {
        let log = std::fs::read(format!("{OVMF}{stem}.bin")).expect("log");
        let all: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_slice(
            &std::fs::read(format!("{OVMF}{stem}.pcrs.json")).expect("pcrs"),
        )
        .expect("json");
        let mut quoted: BTreeMap<u8, [u8; 32]> = all["sha256"]
            .iter()
            .filter_map(|(k, v)| {
                let i: u8 = k.parse().ok()?;
                (i <= 7).then(|| (i, hex::decode(v).expect("hex").try_into().expect("32")))
            })
            .collect();
        for (i, b) in [(17u8, 0x17u8), (18, 0x18), (19, 0x19)] {
            quoted.insert(i, [b; 32]);
        }
        match measure(&log, &quoted) {
            LogFacts::Replayed(m) => (m, quoted),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_captured_event_policy_names_every_event_once_and_secure_boot() {
        let (m, quoted) = host("ovmf-secboot");
        let text = capture_events_toml("host-a", 1, 2, &m, None, &quoted).expect("capture");
        let doc: toml::Table = text.parse().expect("TOML");
        let events = doc["events"].as_table().expect("[events]");
        assert_eq!(events["pcrs"].as_array().expect("pcrs").len(), 8, "{text}");
        assert_eq!(events["values"].as_table().expect("values").len(), 3);
        let allow = events["allow"].as_array().expect("allow");
        let distinct: BTreeSet<(u8, EventType, &str)> = m
            .events
            .iter()
            .map(|e| (e.pcr, e.event_type, e.digest.as_str()))
            .collect();
        assert_eq!(allow.len(), distinct.len());
        let require = events["require"].as_array().expect("require");
        assert_eq!(require[0]["variable"].as_str(), Some("SecureBoot"));
        // Secure Boot off: nothing required.
        let (m, quoted) = host("ovmf-default");
        let text = capture_events_toml("host-a", 1, 2, &m, None, &quoted).expect("capture");
        assert!(!text.contains("[[events.require]]"), "{text}");
    }

    #[test]
    fn a_replayed_txt_log_judges_the_drtm_pcrs_by_events_instead_of_values() {
        let (m, mut quoted) = host("ovmf-default");
        let txt =
            std::fs::read(format!("{OVMF}../txt/legacy-mapping-sha256.bin")).expect("txt log");
        let parsed = trustpool_evidence::eventlog::parse(&txt).expect("parse");
        let r = trustpool_evidence::eventlog::txt::replay_drtm(&parsed).expect("replay");
        let bank = r
            .bank(trustpool_evidence::eventlog::Alg::Sha256)
            .expect("sha256");
        for i in 17..=19u8 {
            quoted.insert(i, bank.value(i).expect("v").try_into().expect("32"));
        }
        let LogFacts::Replayed(t) = trustpool_evidence::eventlog::txt::measure_txt(&txt, &quoted)
        else {
            panic!("txt replayed")
        };
        let text = capture_events_toml("h", 1, 2, &m, Some(&t), &quoted).expect("capture");
        let doc: toml::Table = text.parse().expect("TOML");
        let events = doc["events"].as_table().expect("events");
        let pcrs: Vec<i64> = events["pcrs"]
            .as_array()
            .expect("pcrs")
            .iter()
            .filter_map(|v| v.as_integer())
            .collect();
        assert_eq!(pcrs, vec![0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19], "{text}");
        assert!(events.get("values").is_none(), "{text}");
        let allow = events["allow"].as_array().expect("allow");
        assert!(allow.iter().any(|r| r["pcr"].as_integer() == Some(18)));
        // A TXT log that misses a quoted DRTM PCR: back to values.
        quoted.insert(20, [0; 32]);
        quoted.insert(18, [1; 32]);
        let LogFacts::Replayed(t) = trustpool_evidence::eventlog::txt::measure_txt(&txt, &quoted)
        else {
            panic!("txt replayed")
        };
        let text = capture_events_toml("h", 1, 2, &m, Some(&t), &quoted).expect("capture");
        assert!(text.contains("[events.values]"), "{text}");
    }

    #[test]
    fn a_log_that_does_not_replay_is_not_captured() {
        let (_, mut quoted) = host("ovmf-default");
        quoted.insert(1, [1; 32]);
        let log = std::fs::read(format!("{OVMF}ovmf-default.bin")).expect("log");
        let LogFacts::Replayed(m) = measure(&log, &quoted) else {
            panic!("replayed")
        };
        let e = capture_events_toml("h", 1, 2, &m, None, &quoted).expect_err("refused");
        assert!(e.contains("PCR 1") && e.contains("without --events"), "{e}");
        assert!(replayed("h", None).is_err());
        let un = LogFacts::Unavailable {
            reason: "no file".into(),
        };
        assert!(replayed("h", Some(&un))
            .expect_err("none")
            .contains("no file"));
    }

    #[test]
    fn a_different_boot_order_is_one_changed_event_not_a_changed_pcr_list() {
        let (a, _) = host("ovmf-default");
        let (b, _) = host("ovmf-bootorder");
        let d = diff_events(&a, &b);
        assert!(!d.is_empty());
        assert!(d.iter().all(|x| x.pcr == 1), "{d:?}");
        let changed: Vec<&EventDifference> = d.iter().filter(|x| x.change == "changed").collect();
        assert!(!changed.is_empty(), "{d:?}");
        let ab = changed[0];
        assert_eq!(
            ab.a.as_ref().map(|s| s.event_type),
            ab.b.as_ref().map(|s| s.event_type)
        );
        assert_ne!(
            ab.a.as_ref().map(|s| &s.digest),
            ab.b.as_ref().map(|s| &s.digest)
        );
        assert!(diff_events(&a, &a.clone()).is_empty());
        // The rules admitting B's side: one per distinct event of B, and
        // they parse as TOML allow rules.
        let rules = rules_for_b("host-b", &d);
        let doc: toml::Table = rules.parse().expect("TOML");
        let allow = doc["events"]["allow"].as_array().expect("allow");
        let b_side: BTreeSet<&str> = d
            .iter()
            .filter_map(|x| x.b.as_ref())
            .map(|s| s.digest.as_str())
            .collect();
        assert_eq!(allow.len(), b_side.len());
        assert!(allow.iter().all(|r| r["pcr"].as_integer() == Some(1)));
        assert_eq!(rules_for_b("host-b", &[]), "");
        // Secure Boot on against off: PCR 7 differs, PCR 0 does not.
        let (sb, _) = host("ovmf-secboot");
        let d = diff_events(&a, &sb);
        assert!(d.iter().any(|x| x.pcr == 7));
    }
}
