//! Reading a daemon's TOML configuration file: the `--config` file, or the
//! packaged default when it exists; every parse error names the file and the
//! line; flags always override the file.

use anyhow::Context;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parses TOML text; an error reads `NAME:LINE: problem`.
pub fn parse_toml<T: DeserializeOwned>(name: &str, text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map(|s| {
                format!(
                    ":{}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("{name}{place}: {}", e.message())
    })
}

/// Reads and parses a TOML file.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse_toml(&path.display().to_string(), &text)
}

/// The file [`load`] reads: the one given with `--config`, else `default`
/// if it exists.
pub fn chosen_file<'a>(explicit: Option<&'a Path>, default: Option<&'a Path>) -> Option<&'a Path> {
    match (explicit, default) {
        (Some(path), _) => Some(path),
        (None, Some(path)) if path.exists() => Some(path),
        (None, _) => None,
    }
}

/// The file given with `--config`, else `default` if it exists, else empty
/// (all keys absent).
pub fn load<T: DeserializeOwned + Default>(
    explicit: Option<&Path>,
    default: Option<&Path>,
) -> anyhow::Result<T> {
    match chosen_file(explicit, default) {
        Some(path) => read_toml(path),
        None => Ok(T::default()),
    }
}

/// A required option: the flag, else the file's key, else an error naming both.
pub fn need<T>(flag: Option<T>, file: Option<T>, name: &str) -> anyhow::Result<T> {
    flag.or(file).with_context(|| {
        format!(
            "missing required option --{} (or `{}` in --config)",
            name.replace('_', "-"),
            name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct File {
        a: Option<u32>,
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse_toml::<File>("x.toml", "a = 1\n\nb = 2\n").expect_err("unknown key");
        assert!(err.to_string().starts_with("x.toml:3:"), "{err}");
        assert_eq!(
            parse_toml::<File>("x.toml", "a = 1\n").expect("parses"),
            File { a: Some(1) }
        );
    }

    #[test]
    fn explicit_then_default_then_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let given = dir.path().join("given.toml");
        let default = dir.path().join("default.toml");
        std::fs::write(&given, "a = 1\n").expect("write");
        std::fs::write(&default, "a = 2\n").expect("write");
        assert_eq!(
            load::<File>(Some(&given), Some(&default)).expect("load").a,
            Some(1)
        );
        assert_eq!(load::<File>(None, Some(&default)).expect("load").a, Some(2));
        assert_eq!(
            load::<File>(None, Some(&dir.path().join("none.toml")))
                .expect("load")
                .a,
            None
        );
        assert!(load::<File>(Some(&dir.path().join("none.toml")), None).is_err());
    }

    #[test]
    fn need_names_flag_and_key() {
        assert_eq!(need(None, Some(3), "state_dir").expect("file"), 3);
        assert_eq!(need(Some(1), Some(3), "state_dir").expect("flag wins"), 1);
        let err = need::<u8>(None, None, "state_dir").expect_err("missing");
        assert!(
            err.to_string().contains("--state-dir") && err.to_string().contains("`state_dir`"),
            "{err}"
        );
    }
}
