//! Reading the policy directory (`<pool>.toml` files) as the server and the
//! operator's `trustpool policy check` both do: every file parsed by
//! `trustpool-evidence`, then checked against the agents' hardening
//! catalogue. Parsing itself is pure; this module only reads the files.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use trustpool_evidence::policy::{parse_policy_set, PolicySet};
use trustpool_hardening::{check_catalogue, CheckParams};

/// The files of `dir` whose extension is one of `extensions`, sorted by path.
pub fn files_with_extension(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and validates every `<pool>.toml` of the policy directory. Any error
/// in any file refuses the whole set, each error with file, line and problem.
pub fn load_policy_dir(dir: &Path) -> anyhow::Result<PolicySet> {
    let mut texts = Vec::new();
    for path in files_with_extension(dir, &["toml"])? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read policy {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        texts.push((name, text));
    }
    let set = parse_policy_set(&texts).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| format!("  {}/{e}", dir.display()))
            .collect();
        anyhow::anyhow!("invalid policy in {}:\n{}", dir.display(), list.join("\n"))
    })?;
    let problems = check_against_catalogue(&set);
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}/{p}", dir.display()))
            .collect();
        bail!("invalid policy in {}:\n{}", dir.display(), list.join("\n"));
    }
    Ok(set)
}

/// Checks what the evidence crate cannot know: that the `[check_params]`
/// are valid check parameters and that every required check exists in the
/// agents' catalogue (a typo would otherwise exclude every host).
pub fn check_against_catalogue(set: &PolicySet) -> Vec<String> {
    let mut problems = Vec::new();
    let params = match set.check_params() {
        None => CheckParams::default(),
        Some(json) => match serde_json::from_str::<CheckParams>(json) {
            Ok(p) => match p.validate() {
                Ok(()) => p,
                Err(e) => {
                    problems.push(format!("[check_params]: {e}"));
                    CheckParams::default()
                }
            },
            Err(e) => {
                problems.push(format!("[check_params]: {e}"));
                CheckParams::default()
            }
        },
    };
    let known: Vec<String> = check_catalogue(&params).into_iter().map(|c| c.id).collect();
    for (name, pool) in &set.pools {
        for id in &pool.require_checks {
            if !known.iter().any(|k| k == id) {
                problems.push(format!("{name}.toml: require_checks names '{id}', which is not a hardening check of the agent"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> PolicySet {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        parse_policy_set(&files).expect("parses")
    }

    const BASE: &str = "require_measured_launch = false\n";
    const ALLOW: &str = "[[allow]]\nname = \"any\"\npcrs = {}\n";

    #[test]
    fn known_checks_and_valid_params_pass() {
        let text = format!("{BASE}require_checks = [\"mac.enforcing_any\", \"sysctl.kernel.randomize_va_space\"]\n[check_params]\ninstances_free_pass_percent = 20.0\n{ALLOW}");
        assert!(check_against_catalogue(&set(&[("p.toml", &text)])).is_empty());
    }

    #[test]
    fn unknown_checks_and_bad_params_are_named() {
        let text = format!("{BASE}require_checks = [\"mac.enforcing_anyy\"]\n{ALLOW}");
        let problems = check_against_catalogue(&set(&[("p.toml", &text)]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("p.toml") && problems[0].contains("mac.enforcing_anyy"),
            "{problems:?}"
        );
        let text = format!("{BASE}[check_params]\nbogus_threshold = 1\n{ALLOW}");
        let problems = check_against_catalogue(&set(&[("p.toml", &text)]));
        assert!(problems[0].contains("bogus_threshold"), "{problems:?}");
        let text = format!("{BASE}[check_params]\ninstances_free_pass_percent = 200.0\n{ALLOW}");
        let problems = check_against_catalogue(&set(&[("p.toml", &text)]));
        assert!(
            problems[0].contains("instances_free_pass_percent"),
            "{problems:?}"
        );
    }
}
