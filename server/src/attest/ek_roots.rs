//! The TPM vendors' certificates trusted for EK certificate chains, read
//! from the EK roots directory at start-up.

use anyhow::{bail, Context};
use std::path::Path;
use trustpool_daemon::policy_dir::files_with_extension;
use trustpool_evidence::ekcert::{pem_to_der_certs, EkTrust};

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
