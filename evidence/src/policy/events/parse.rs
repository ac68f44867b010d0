//! Reading a pool's `[events]` table: every rule checked against the pool
//! (its selection, `require_measured_launch`), each error with the file,
//! line and column of the item. Unknown keys are errors.

use super::{EventAllow, EventForbid, EventRequire, EventRules, ForbidMatch};
use crate::eventlog::EventType;
use crate::pcr::MAX_PCR_INDEX;
use crate::policy::error::Errors;
use crate::policy::{not_launched, LAUNCH_PCRS};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use toml::Spanned;

/// `[events]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct RawEvents {
    pcrs: Option<Spanned<Vec<Spanned<i64>>>>,
    ignore_pcrs: Option<Spanned<Vec<Spanned<i64>>>>,
    values: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    allow: Option<Spanned<Vec<Spanned<RawEventAllow>>>>,
    require: Option<Spanned<Vec<Spanned<RawRequire>>>>,
    forbid: Option<Spanned<Vec<Spanned<RawForbid>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventAllow {
    pcr: Option<Spanned<i64>>,
    digest: Option<Spanned<String>>,
    #[serde(rename = "type")]
    event_type: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequire {
    pcr: Option<Spanned<i64>>,
    variable: Option<Spanned<String>>,
    guid: Option<Spanned<String>>,
    data: Option<Spanned<String>>,
    data_sha256: Option<Spanned<String>>,
    contains: Option<Spanned<Vec<Spanned<String>>>>,
    subject: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForbid {
    text: Option<Spanned<String>>,
    digest: Option<Spanned<String>>,
    pcr: Option<Spanned<i64>>,
    label: Option<Spanned<String>>,
}

/// What every rule is checked against.
struct Pool<'s> {
    /// The pool's `pcrs` selection.
    selected: &'s BTreeSet<u8>,
    /// `[events].pcrs`.
    judged: BTreeSet<u8>,
}

/// Parses `[events]`; None when it has an error (each one is in `errors`).
pub(in crate::policy) fn parse_events(
    raw: &Spanned<RawEvents>,
    selected: &BTreeSet<u8>,
    require_measured_launch: bool,
    errors: &mut Errors<'_>,
) -> Option<EventRules> {
    let before = errors.list.len();
    let table = raw.get_ref();

    let pcrs = pcr_list(table.pcrs.as_ref(), "[events].pcrs", selected, errors);
    let ignore = pcr_list(
        table.ignore_pcrs.as_ref(),
        "[events].ignore_pcrs",
        selected,
        errors,
    );
    let judged: BTreeSet<u8> = pcrs.iter().map(|(p, _)| *p).collect();
    for (p, span) in &ignore {
        if judged.contains(p) {
            errors.at(
                Some(span.clone()),
                format!("PCR {p} is in both [events].pcrs and ignore_pcrs"),
            );
        }
    }
    let ignored: BTreeSet<u8> = ignore.iter().map(|(p, _)| *p).collect();
    let values = parse_values(
        table.values.as_ref(),
        selected,
        &judged,
        &ignored,
        require_measured_launch,
        errors,
    );

    if require_measured_launch {
        let unjudged: Vec<String> = LAUNCH_PCRS
            .iter()
            .filter(|p| selected.contains(p) && !judged.contains(p) && !values.contains_key(p))
            .map(|p| p.to_string())
            .collect();
        if !unjudged.is_empty() {
            errors.at(
                Some(raw.span()),
                format!(
                    "[events] does not judge PCR {}: with require_measured_launch (the default) the event rules must judge PCR 17 (SINIT) and PCR 18 (MLE), in [events].pcrs (by the TXT log) or in [events].values, or they accept any SINIT and MLE; add them or set require_measured_launch = false",
                    unjudged.join(" and ")
                ),
            );
        }
    }

    let pool = Pool { selected, judged };
    let mut allow = Vec::new();
    let mut seen: BTreeMap<AllowKey, usize> = BTreeMap::new();
    for entry in table.allow.iter().flat_map(|l| l.get_ref()) {
        if let Some(rule) = parse_allow(entry, &pool, &mut seen, errors) {
            allow.push(rule);
        }
    }
    let mut require = Vec::new();
    for entry in table.require.iter().flat_map(|l| l.get_ref()) {
        if let Some(rule) = parse_require(entry, &pool, errors) {
            require.push(rule);
        }
    }
    let mut forbid = Vec::new();
    for entry in table.forbid.iter().flat_map(|l| l.get_ref()) {
        if let Some(rule) = parse_forbid(entry, &pool, errors) {
            forbid.push(rule);
        }
    }

    let judges_nothing = pcrs.is_empty()
        && values.is_empty()
        && table
            .require
            .as_ref()
            .is_none_or(|l| l.get_ref().is_empty())
        && table.forbid.as_ref().is_none_or(|l| l.get_ref().is_empty());
    if judges_nothing {
        errors.at(
            Some(raw.span()),
            "[events] judges nothing: give it pcrs judged by their events, values, or require or forbid rules",
        );
    }

    (errors.list.len() == before).then(|| {
        EventRules::new(
            pool.judged.into_iter().collect(),
            ignored.into_iter().collect(),
            values,
            allow,
            require,
            forbid,
        )
    })
}

/// A list of PCR indices: in range, in the selection, no duplicates.
fn pcr_list(
    list: Option<&Spanned<Vec<Spanned<i64>>>>,
    key: &str,
    selected: &BTreeSet<u8>,
    errors: &mut Errors<'_>,
) -> Vec<(u8, Range<usize>)> {
    let mut out: Vec<(u8, Range<usize>)> = Vec::new();
    for item in list.iter().flat_map(|l| l.get_ref()) {
        let Some(p) = pcr_index(item, key, selected, errors) else {
            continue;
        };
        if out.iter().any(|(q, _)| *q == p) {
            errors.at(
                Some(item.span()),
                format!("PCR {p} is listed twice in {key}"),
            );
            continue;
        }
        out.push((p, item.span()));
    }
    out
}

/// A PCR index in range and in the pool's selection.
fn pcr_index(
    item: &Spanned<i64>,
    what: &str,
    selected: &BTreeSet<u8>,
    errors: &mut Errors<'_>,
) -> Option<u8> {
    let v = *item.get_ref();
    match u8::try_from(v) {
        Ok(p) if p <= MAX_PCR_INDEX => {
            if selected.contains(&p) {
                Some(p)
            } else {
                errors.at(
                    Some(item.span()),
                    format!(
                        "PCR {p} ({what}) is not in the pool's pcrs selection, so it is never quoted"
                    ),
                );
                None
            }
        }
        _ => {
            errors.at(
                Some(item.span()),
                format!("PCR index {v} is out of range (0..={MAX_PCR_INDEX})"),
            );
            None
        }
    }
}

/// A sha256 digest: exactly 64 hex characters.
fn digest(value: &Spanned<String>, what: &str, errors: &mut Errors<'_>) -> Option<[u8; 32]> {
    let text = value.get_ref();
    let parsed = if text.len() == 64 {
        hex::decode(text)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
    } else {
        None
    };
    if parsed.is_none() {
        errors.at(
            Some(value.span()),
            format!(
                "{what} must be 64 hex characters (a sha256 digest), got {}",
                if text.len() == 64 {
                    "characters that are not hex".to_string()
                } else {
                    format!("{} characters", text.chars().count())
                }
            ),
        );
    }
    parsed
}

fn parse_values(
    table: Option<&Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    selected: &BTreeSet<u8>,
    judged: &BTreeSet<u8>,
    ignored: &BTreeSet<u8>,
    require_measured_launch: bool,
    errors: &mut Errors<'_>,
) -> BTreeMap<u8, [u8; 32]> {
    let mut values = BTreeMap::new();
    for (key, value) in table.iter().flat_map(|t| t.get_ref()) {
        let k = key.get_ref();
        let index = match k.parse::<u8>() {
            Ok(i) if k.chars().all(|c| c.is_ascii_digit()) => i,
            _ => {
                errors.at(
                    Some(key.span()),
                    format!("'{k}' is not a PCR index (keys of [events].values are PCR numbers, e.g. 17 = \"…\")"),
                );
                continue;
            }
        };
        if !selected.contains(&index) {
            errors.at(
                Some(key.span()),
                format!("PCR {index} ([events].values) is not in the pool's pcrs selection, so it is never quoted"),
            );
            continue;
        }
        if judged.contains(&index) {
            errors.at(
                Some(key.span()),
                format!("PCR {index} is in both [events].pcrs and values: judge it by its events or by its value"),
            );
        }
        if ignored.contains(&index) {
            errors.at(
                Some(key.span()),
                format!("PCR {index} is in both [events].ignore_pcrs and values"),
            );
        }
        let Some(v) = digest(value, &format!("PCR {index} value"), errors) else {
            continue;
        };
        if require_measured_launch && LAUNCH_PCRS.contains(&index) {
            if let Some(what) = not_launched(&v) {
                errors.at(
                    Some(value.span()),
                    format!(
                        "[events].values pins PCR {index} to {what}, which shows no measured launch: with require_measured_launch no host can match it; pin the value of the launched SINIT/MLE"
                    ),
                );
            }
        }
        if values.insert(index, v).is_some() {
            errors.at(
                Some(key.span()),
                format!("PCR {index} is listed twice in [events].values"),
            );
        }
    }
    values
}

/// What makes two allow rules the same rule (the label aside).
type AllowKey = (u8, [u8; 32], Option<u32>, Option<String>, Option<String>);

fn parse_allow(
    entry: &Spanned<RawEventAllow>,
    pool: &Pool<'_>,
    seen: &mut BTreeMap<AllowKey, usize>,
    errors: &mut Errors<'_>,
) -> Option<EventAllow> {
    let raw = entry.get_ref();
    let before = errors.list.len();
    let pcr = match &raw.pcr {
        None => {
            errors.at(
                Some(entry.span()),
                "[[events.allow]] rule has no pcr (the PCR its event is extended into)",
            );
            None
        }
        Some(item) => pcr_index(item, "[[events.allow]]", pool.selected, errors).and_then(|p| {
            if pool.judged.contains(&p) {
                Some(p)
            } else {
                errors.at(
                    Some(item.span()),
                    format!(
                        "PCR {p} is not in [events].pcrs, so this allow rule can never apply: add PCR {p} to [events].pcrs or remove the rule"
                    ),
                );
                None
            }
        }),
    };
    let digest = match &raw.digest {
        None => {
            errors.at(
                Some(entry.span()),
                "[[events.allow]] rule has no digest (the event's sha256 digest, 64 hex characters)",
            );
            None
        }
        Some(d) => digest(d, "digest", errors),
    };
    let event_type = raw.event_type.as_ref().and_then(|t| {
        let found = EventType::from_name(t.get_ref());
        if found.is_none() {
            errors.at(
                Some(t.span()),
                format!(
                    "unknown event type '{}' (a name of the TCG PC Client spec such as EV_EFI_BOOT_SERVICES_APPLICATION, or 0x followed by up to 8 hex digits)",
                    t.get_ref()
                ),
            );
        }
        found
    });
    let file = raw.file.as_ref().and_then(|f| {
        let text = f.get_ref();
        if text.is_empty() || text.contains(['/', '\\']) {
            errors.at(
                Some(f.span()),
                format!("file '{text}' must be one non-empty component of a device path (no '/' or '\\'); use path for a whole path"),
            );
            None
        } else {
            Some(text.clone())
        }
    });
    let path = raw.path.as_ref().map(|p| p.get_ref().clone());
    let label = raw.label.as_ref().map(|l| l.get_ref().clone());
    if errors.list.len() != before {
        return None;
    }
    let (pcr, digest) = (pcr?, digest?);
    let key: AllowKey = (
        pcr,
        digest,
        event_type.map(|t| t.0),
        path.clone(),
        file.as_ref().map(|f| f.to_ascii_lowercase()),
    );
    if let Some(first) = seen.get(&key) {
        errors.at(
            Some(entry.span()),
            format!("duplicate allow rule: the rule on line {first} accepts the same events (same pcr, digest, type, path and file)"),
        );
        return None;
    }
    seen.insert(key, errors.line_of(&entry.span()));
    Some(EventAllow {
        pcr,
        digest,
        event_type,
        path,
        file,
        label,
    })
}

/// A GUID as `8be4df61-93ca-11d2-aa0d-00e098032b8c`, returned lower-case.
fn guid(value: &Spanned<String>, errors: &mut Errors<'_>) -> Option<String> {
    let text = value.get_ref();
    let groups: Vec<&str> = text.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if shape_ok {
        Some(text.to_ascii_lowercase())
    } else {
        errors.at(
            Some(value.span()),
            format!("guid '{text}' is not a GUID (8-4-4-4-12 hex digits, e.g. 8be4df61-93ca-11d2-aa0d-00e098032b8c)"),
        );
        None
    }
}

fn parse_require(
    entry: &Spanned<RawRequire>,
    pool: &Pool<'_>,
    errors: &mut Errors<'_>,
) -> Option<EventRequire> {
    let raw = entry.get_ref();
    let before = errors.list.len();
    let variable = match &raw.variable {
        None => {
            errors.at(
                Some(entry.span()),
                "[[events.require]] rule has no variable (the name of the UEFI variable whose event must be present, e.g. variable = \"SecureBoot\")",
            );
            None
        }
        Some(v) if v.get_ref().is_empty() => {
            errors.at(Some(v.span()), "variable must not be empty");
            None
        }
        Some(v) => Some(v.get_ref().clone()),
    };
    let pcr = raw
        .pcr
        .as_ref()
        .and_then(|p| pcr_index(p, "[[events.require]]", pool.selected, errors));
    let guid = raw.guid.as_ref().and_then(|g| guid(g, errors));
    let data = raw.data.as_ref().and_then(|d| {
        let text = d.get_ref();
        let parsed = hex::decode(text).ok();
        if parsed.is_none() {
            errors.at(
                Some(d.span()),
                format!("data '{text}' must be hex (the bytes of VariableData, e.g. \"01\")"),
            );
        }
        parsed
    });
    let data_sha256 = raw
        .data_sha256
        .as_ref()
        .and_then(|d| digest(d, "data_sha256", errors));
    let mut contains = Vec::new();
    for item in raw.contains.iter().flat_map(|l| l.get_ref()) {
        if let Some(d) = digest(item, "each entry of contains", errors) {
            contains.push(d);
        }
    }
    let subject = raw.subject.as_ref().and_then(|s| {
        if s.get_ref().is_empty() {
            errors.at(Some(s.span()), "subject must not be empty");
            None
        } else {
            Some(s.get_ref().clone())
        }
    });
    let label = raw.label.as_ref().map(|l| l.get_ref().clone());
    if errors.list.len() != before {
        return None;
    }
    Some(EventRequire {
        pcr,
        variable: variable?,
        guid,
        data,
        data_sha256,
        contains,
        subject,
        label,
    })
}

fn parse_forbid(
    entry: &Spanned<RawForbid>,
    pool: &Pool<'_>,
    errors: &mut Errors<'_>,
) -> Option<EventForbid> {
    let raw = entry.get_ref();
    let before = errors.list.len();
    let what = match (&raw.text, &raw.digest) {
        (Some(t), None) if t.get_ref().is_empty() => {
            errors.at(Some(t.span()), "text must not be empty");
            None
        }
        (Some(t), None) => Some(ForbidMatch::Text(t.get_ref().clone())),
        (None, Some(d)) => digest(d, "digest", errors).map(ForbidMatch::Digest),
        (Some(_), Some(d)) => {
            errors.at(
                Some(d.span()),
                "[[events.forbid]] rule has both text and digest: give exactly one",
            );
            None
        }
        (None, None) => {
            errors.at(
                Some(entry.span()),
                "[[events.forbid]] rule has neither text nor digest: give exactly one",
            );
            None
        }
    };
    let pcr = raw
        .pcr
        .as_ref()
        .and_then(|p| pcr_index(p, "[[events.forbid]]", pool.selected, errors));
    let label = raw.label.as_ref().map(|l| l.get_ref().clone());
    if errors.list.len() != before {
        return None;
    }
    Some(EventForbid {
        what: what?,
        pcr,
        label,
    })
}
