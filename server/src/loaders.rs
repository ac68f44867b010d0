//! Reading the operator's files at start-up: the policy directory and the EK
//! trust anchors. Parsing itself is pure and lives in `trustpool-evidence`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use trustpool_evidence::ekcert::{pem_to_der_certs, EkTrust};
use trustpool_evidence::policy::{parse_policy_set, PolicySet};

fn files_with_extension(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
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
    parse_policy_set(&texts).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| format!("  {}/{e}", dir.display()))
            .collect();
        anyhow::anyhow!("invalid policy in {}:\n{}", dir.display(), list.join("\n"))
    })
}

/// Reads every PEM certificate (`*.pem`, `*.crt`) of the EK roots directory.
pub fn load_ek_roots(dir: &Path) -> anyhow::Result<EkTrust> {
    let mut ders = Vec::new();
    for path in files_with_extension(dir, &["pem", "crt"])? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let certs =
            pem_to_der_certs(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        ders.extend(certs);
    }
    if ders.is_empty() {
        bail!(
            "{} holds no PEM certificate: every enrolment would be refused",
            dir.display()
        );
    }
    EkTrust::from_der_certs(ders).map_err(|e| anyhow::anyhow!("EK roots in {}: {e}", dir.display()))
}
