//! Reading one pool file: the TOML shape (unknown keys are errors), then
//! every rule on its values, each error with its location.

use super::error::{Errors, PolicyError};
use super::events::parse::{parse_events, RawEvents};
use super::{not_launched, AllowEntry, PoolPolicy, LAUNCH_PCRS};
use crate::pcr::{DEFAULT_PCRS, MAX_PCR_INDEX};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    require_measured_launch: Option<Spanned<bool>>,
    pcrs: Option<Spanned<Vec<Spanned<i64>>>>,
    require_checks: Option<Spanned<Vec<Spanned<String>>>>,
    check_params: Option<Spanned<toml::Table>>,
    allow: Option<Spanned<Vec<Spanned<RawAllow>>>>,
    events: Option<Spanned<RawEvents>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    name: Spanned<String>,
    pcrs: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The pool name of a policy file: its stem (`gold.toml` → `gold`).
pub fn pool_name_of(file_name: &str) -> String {
    std::path::Path::new(file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string()
}

/// Parses one pool policy file. The pool name is the file stem and must
/// match `[A-Za-z0-9_.-]+`. Returns every error found (a TOML syntax or type
/// error stops the parse, so it comes alone).
pub fn parse_pool(file_name: &str, text: &str) -> Result<PoolPolicy, Vec<PolicyError>> {
    let mut errors = Errors {
        file: file_name,
        text,
        list: Vec::new(),
    };
    let name = pool_name_of(file_name);
    if !valid_name(&name) {
        errors.at(
            None,
            format!(
                "pool name '{name}' (the file name without extension) must match [A-Za-z0-9_.-]+"
            ),
        );
    }
    let raw: RawPool = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            // One error, one line: toml's message may span several.
            let message: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            errors.at(e.span(), message.join("; "));
            return Err(errors.list);
        }
    };

    let require_measured_launch = raw
        .require_measured_launch
        .as_ref()
        .map(|s| *s.get_ref())
        .unwrap_or(true);

    // Selection.
    let pcrs: Vec<u8> = match &raw.pcrs {
        None => DEFAULT_PCRS.to_vec(),
        Some(list) => {
            let mut seen = BTreeSet::new();
            if list.get_ref().is_empty() {
                errors.at(Some(list.span()), "pcrs must not be empty");
            }
            for item in list.get_ref() {
                let v = *item.get_ref();
                match u8::try_from(v) {
                    Ok(i) if i <= MAX_PCR_INDEX => {
                        if !seen.insert(i) {
                            errors.at(
                                Some(item.span()),
                                format!("PCR {i} is listed twice in pcrs"),
                            );
                        }
                    }
                    _ => errors.at(
                        Some(item.span()),
                        format!("PCR index {v} is out of range (0..={MAX_PCR_INDEX})"),
                    ),
                }
            }
            seen.into_iter().collect()
        }
    };
    let selected: BTreeSet<u8> = pcrs.iter().copied().collect();
    if require_measured_launch {
        let missing: Vec<String> = [17u8, 18]
            .iter()
            .filter(|p| !selected.contains(p))
            .map(|p| p.to_string())
            .collect();
        if !missing.is_empty() {
            let span = raw
                .pcrs
                .as_ref()
                .map(|s| s.span())
                .or_else(|| raw.require_measured_launch.as_ref().map(|s| s.span()));
            errors.at(
                span,
                format!(
                    "require_measured_launch needs PCRs 17 and 18 in pcrs (missing: {}); add them or set require_measured_launch = false",
                    missing.join(", ")
                ),
            );
        }
    }

    // Required checks.
    let mut require_checks = Vec::new();
    if let Some(list) = &raw.require_checks {
        let mut seen = BTreeSet::new();
        for item in list.get_ref() {
            let id = item.get_ref();
            if !valid_name(id) {
                errors.at(
                    Some(item.span()),
                    format!("check id '{id}' must match [A-Za-z0-9_.-]+"),
                );
            } else if !seen.insert(id.clone()) {
                errors.at(Some(item.span()), format!("check '{id}' is listed twice"));
            } else {
                require_checks.push(id.clone());
            }
        }
    }

    // Check parameters: validated by the server against the check catalogue;
    // here only kept in a canonical form.
    let check_params = match &raw.check_params {
        None => None,
        Some(table) => match serde_json::to_string(table.get_ref()) {
            Ok(json) => Some(json),
            Err(e) => {
                errors.at(
                    Some(table.span()),
                    format!("check_params cannot be represented: {e}"),
                );
                None
            }
        },
    };

    // Allow entries; none at all only with event rules.
    let mut allow = Vec::new();
    match &raw.allow {
        None if raw.events.is_none() => errors.at(
            None,
            "no [[allow]] entry and no [events] table: a pool needs at least one accepted measurement set or event rules",
        ),
        Some(list) if list.get_ref().is_empty() && raw.events.is_none() => errors.at(
            Some(list.span()),
            "allow is empty: a pool needs at least one accepted measurement set (or an [events] table)",
        ),
        None => {}
        Some(list) => {
            let mut names: BTreeMap<String, usize> = BTreeMap::new();
            for entry in list.get_ref() {
                if let Some(e) = parse_allow(
                    entry.get_ref(),
                    &selected,
                    require_measured_launch,
                    &mut names,
                    &mut errors,
                ) {
                    allow.push(e);
                }
            }
        }
    }

    // Event rules.
    let events = raw
        .events
        .as_ref()
        .and_then(|t| parse_events(t, &selected, require_measured_launch, &mut errors));

    if errors.list.is_empty() {
        Ok(PoolPolicy {
            name,
            require_measured_launch,
            pcrs,
            require_checks,
            check_params,
            allow,
            events,
        })
    } else {
        Err(errors.list)
    }
}

fn parse_allow(
    raw: &RawAllow,
    selected: &BTreeSet<u8>,
    require_measured_launch: bool,
    names: &mut BTreeMap<String, usize>,
    errors: &mut Errors<'_>,
) -> Option<AllowEntry> {
    let name = raw.name.get_ref().clone();
    let mut ok = true;
    if name.trim().is_empty() {
        errors.at(Some(raw.name.span()), "allow entry name must not be empty");
        ok = false;
    } else if let Some(first_line) = names.get(&name) {
        errors.at(
            Some(raw.name.span()),
            format!("duplicate allow entry name '{name}' (first defined on line {first_line})"),
        );
        ok = false;
    } else {
        let line = errors.line_of(&raw.name.span());
        names.insert(name.clone(), line);
    }
    let Some(table) = &raw.pcrs else {
        errors.at(
            Some(raw.name.span()),
            format!(
                "allow entry '{name}' has no pcrs table (write pcrs = {{}} to accept any values)"
            ),
        );
        return None;
    };
    let mut pcrs = BTreeMap::new();
    // PCR indices named by a key, even with a bad value (reported on its own).
    let mut named = BTreeSet::new();
    for (key, value) in table.get_ref() {
        let k = key.get_ref();
        let index = match k.parse::<u8>() {
            Ok(i) if k.chars().all(|c| c.is_ascii_digit()) => i,
            _ => {
                errors.at(
                    Some(key.span()),
                    format!("'{k}' is not a PCR index (keys are PCR numbers, e.g. 17 = \"…\")"),
                );
                ok = false;
                continue;
            }
        };
        named.insert(index);
        if !selected.contains(&index) {
            errors.at(
                Some(key.span()),
                format!("PCR {index} is not in the pool's pcrs selection, so it is never quoted"),
            );
            ok = false;
            continue;
        }
        let hex_text = value.get_ref();
        let parsed = if hex_text.len() == 64 {
            hex::decode(hex_text)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
        } else {
            None
        };
        match parsed {
            Some(v) => {
                if require_measured_launch && LAUNCH_PCRS.contains(&index) {
                    if let Some(what) = not_launched(&v) {
                        errors.at(
                            Some(value.span()),
                            format!(
                                "allow entry '{name}' pins PCR {index} to {what}, which shows no measured launch: with require_measured_launch no host can match it; pin the value of the launched SINIT/MLE"
                            ),
                        );
                        ok = false;
                    }
                }
                if pcrs.insert(index, v).is_some() {
                    errors.at(Some(key.span()), format!("PCR {index} is listed twice"));
                    ok = false;
                }
            }
            None => {
                errors.at(
                    Some(value.span()),
                    format!(
                        "PCR {index} value must be 64 hex characters (a sha256 digest), got {} characters",
                        hex_text.chars().count()
                    ),
                );
                ok = false;
            }
        }
    }
    if require_measured_launch {
        // A launch PCR missing from the selection is reported by parse_pool.
        let unpinned: Vec<String> = LAUNCH_PCRS
            .iter()
            .filter(|p| selected.contains(p) && !named.contains(p))
            .map(|p| p.to_string())
            .collect();
        if !unpinned.is_empty() {
            errors.at(
                Some(table.span()),
                format!(
                    "allow entry '{name}' does not pin PCR {}: with require_measured_launch (the default) every entry must pin PCR 17 (SINIT) and PCR 18 (MLE), or it accepts any SINIT and MLE; pin them or set require_measured_launch = false",
                    unpinned.join(" and ")
                ),
            );
            ok = false;
        }
    }
    ok.then_some(AllowEntry { name, pcrs })
}
