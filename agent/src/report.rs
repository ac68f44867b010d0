//! Hardening reports: the checks of `trustpool-hardening` run through the
//! host view at `--root`, bound into every quote (the canonical report bytes
//! are hashed into the qualifying data), watched for status changes, and the
//! standalone `trustpool-agent check` command.

use crate::config::CheckArgs;
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tracing::warn;
use trustpool_hardening::{run_checks, CheckParams, Report, Role};

/// Check statuses by id.
pub type Statuses = BTreeMap<String, String>;

/// Produces the hardening report sent with each quote.
#[derive(Debug, Clone)]
pub struct Reporter {
    root: PathBuf,
    role: Role,
    params: CheckParams,
}

impl Reporter {
    /// A reporter for the host at `root` in `role`.
    pub fn new(root: &Path, role: &str) -> anyhow::Result<Reporter> {
        let role: Role = role
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid --role '{role}': {e}"))?;
        Ok(Reporter {
            root: root.to_path_buf(),
            role,
            params: CheckParams::default(),
        })
    }

    fn run(&self, requested: &str) -> anyhow::Result<Report> {
        let (params, digest) = if requested.is_empty() {
            (self.params.clone(), None)
        } else {
            let params: CheckParams = serde_json::from_str(requested)
                .context("the server's check parameters do not parse")?;
            params
                .validate()
                .context("the server's check parameters are invalid")?;
            (
                params,
                Some(hex::encode(Sha256::digest(requested.as_bytes()))),
            )
        };
        let host = trustpool_hardening::host::open(&self.root).map_err(|e| {
            anyhow::anyhow!("cannot open the host view at {}: {e}", self.root.display())
        })?;
        let mut report = run_checks(host.as_ref(), self.role, &params);
        report.params_digest = digest;
        Ok(report)
    }

    async fn run_blocking(&self, requested: &str) -> anyhow::Result<Report> {
        let me = self.clone();
        let requested = requested.to_string();
        tokio::task::spawn_blocking(move || me.run(&requested))
            .await
            .context("the checks thread failed")?
    }

    /// Runs the checks with the check parameters of the challenge (canonical
    /// JSON; empty = the defaults): the canonical report bytes and the
    /// statuses. When the checks cannot run at all, the report is empty, which
    /// fails every required check on the server (fail closed).
    pub async fn collect(&self, check_params_json: &str) -> (Vec<u8>, Option<Statuses>) {
        match self.run_blocking(check_params_json).await {
            Ok(report) => (report.canonical_bytes(), Some(report.status_map())),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "hardening checks could not run; sending no report");
                (Vec::new(), None)
            }
        }
    }

    /// Only the statuses (for the change watch).
    pub async fn statuses(&self, check_params_json: &str) -> Option<Statuses> {
        self.run_blocking(check_params_json)
            .await
            .ok()
            .map(|r| r.status_map())
    }
}

/// `trustpool-agent check`: prints the report; exit 0 when no required check fails.
pub fn check_command(args: &CheckArgs) -> anyhow::Result<u8> {
    let role: Role = args
        .role
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --role '{}': {e}", args.role))?;
    let params = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<CheckParams>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => CheckParams::default(),
    };
    let host = trustpool_hardening::host::open(&args.root).map_err(|e| {
        anyhow::anyhow!("cannot open the host view at {}: {e}", args.root.display())
    })?;
    let report = run_checks(host.as_ref(), role, &params);
    match args.format.as_str() {
        "json" => {
            let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
            println!("{text}");
        }
        "table" => print!("{}", report.render_table()),
        other => bail!("unknown --format '{other}' (table or json)"),
    }
    Ok(u8::try_from(report.exit_code()).unwrap_or(1))
}
