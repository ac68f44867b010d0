//! The publication part of the server's configuration: reader credentials,
//! PollHosts, `/metrics` access, the Placement sync and the HTTPS listener's
//! caps, validated into a [`PublicationConfig`].

use super::listener::ListenerLimits;
use super::oat::OatConfig;
use super::placement::{PlacementConfig, PlacementFile};
use super::readers::{parse_sha256_hex, FeedToken};
use anyhow::Context;
use serde::Deserialize;
use std::path::PathBuf;

/// A `[[feed_tokens]]` entry of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedTokenEntry {
    /// Name of the consumer for the audit log.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// Publication options as given (flags merged over the file), before validation.
#[derive(Debug, Default)]
pub struct PublicationOptions {
    /// `--reader-ca` / `reader_ca`.
    pub reader_ca: Option<PathBuf>,
    /// `--feed-token NAME=SHA256HEX` (repeatable).
    pub feed_token_flags: Vec<String>,
    /// `[[feed_tokens]]`.
    pub feed_tokens: Vec<FeedTokenEntry>,
    /// `--oat-prefix` / `oat_prefix`.
    pub oat_prefix: Option<String>,
    /// `--oat-pool` / `oat_pool`.
    pub oat_pool: Option<String>,
    /// `--oat-auth-blob-sha256` / `oat_auth_blob_sha256`.
    pub oat_auth_blob_sha256: Option<String>,
    /// `--oat-allow-anonymous` / `oat_allow_anonymous`.
    pub oat_allow_anonymous: bool,
    /// `--http-max-connections` / `http_max_connections`.
    pub http_max_connections: Option<usize>,
    /// `--metrics-auth` / `metrics_auth`.
    pub metrics_auth: bool,
    /// `placement_pools`.
    pub placement_pools: Vec<String>,
    /// `[placement]`.
    pub placement: Option<PlacementFile>,
}

/// The validated publication configuration.
#[derive(Debug, Clone, Default)]
pub struct PublicationConfig {
    /// CA whose client certificates may read the feed.
    pub reader_ca: Option<PathBuf>,
    /// Reader tokens (hashes).
    pub feed_tokens: Vec<FeedToken>,
    /// PollHosts, when served.
    pub oat: Option<OatConfig>,
    /// Whether `/metrics` needs a reader credential.
    pub metrics_auth: bool,
    /// Placement sync, when configured.
    pub placement: Option<PlacementConfig>,
    /// Caps of the HTTPS listener.
    pub limits: ListenerLimits,
}

impl PublicationOptions {
    /// Validates the options; every error names the option.
    pub fn resolve(self) -> anyhow::Result<PublicationConfig> {
        let mut feed_tokens = Vec::new();
        for flag in &self.feed_token_flags {
            feed_tokens.push(FeedToken::parse_flag(flag).context("--feed-token")?);
        }
        for entry in &self.feed_tokens {
            feed_tokens
                .push(FeedToken::new(&entry.name, &entry.sha256).context("[[feed_tokens]]")?);
        }
        let mut names: Vec<&str> = feed_tokens.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!(
                "two feed tokens are named '{}': names identify readers in the audit log",
                w[0]
            );
        }
        let blob = self
            .oat_auth_blob_sha256
            .as_deref()
            .map(parse_sha256_hex)
            .transpose()
            .context("--oat-auth-blob-sha256")?;
        let oat = OatConfig::resolve(
            self.oat_prefix.as_deref(),
            self.oat_pool.as_deref(),
            blob,
            self.oat_allow_anonymous,
        )?;
        let placement = PlacementConfig::resolve(self.placement.as_ref(), &self.placement_pools)?;
        Ok(PublicationConfig {
            reader_ca: self.reader_ca,
            feed_tokens,
            oat,
            metrics_auth: self.metrics_auth,
            placement,
            limits: ListenerLimits::new(self.http_max_connections)?,
        })
    }
}
