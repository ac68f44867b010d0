//! Secrets on disk: a private key or a secret file (a password, a token) is
//! read only if neither its group nor others may read it (mode & 0o077 ==
//! 0), so a file left readable by a careless `cp` or `chmod 644` stops the
//! daemon with a clear error instead of being used. A configuration file
//! that holds a secret inline may not be readable by every user.

use anyhow::Context;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Reads the private key at `path` (`what` names it in errors, e.g.
/// "client key"), refusing a key that its group or others may read or
/// write. The mode is taken from the opened file, so the file checked is the
/// file read.
pub fn read_private_key(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat the {what} {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("the {what} {} is not a regular file", path.display());
    }
    check_mode(path, what, meta.permissions().mode())?;
    let mut key = Vec::new();
    file.read_to_end(&mut key)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    Ok(key)
}

/// Reads a secret (a password, a token) from `path` with the same mode
/// check as [`read_private_key`]: the file's text without its trailing
/// newline; an empty secret or one that is not UTF-8 is an error.
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let bytes = read_private_key(path, what)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the {what} {} is not UTF-8 text", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        anyhow::bail!("the {what} {} is empty", path.display());
    }
    Ok(secret.to_string())
}

/// Refuses a configuration file at `path` that every user may read when it
/// holds the secret `key` inline (its group may read it: `root:trustpool
/// 0640` is how a service reads a root-owned file).
pub fn refuse_world_readable_secret(path: &Path, key: &str) -> anyhow::Result<()> {
    if let Some(mode) = world_readable_mode(path)? {
        anyhow::bail!(
            "refusing the configuration file {}: it holds the secret `{key}` but its mode \
             {mode:04o} lets every user read it; move the secret to `{key}_file` (a file of mode \
             0600 owned by the service user) or chmod o-r {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Refuses a configuration file at `path` that every user may read when it
/// holds `what` (e.g. "a database password in `db`"), a secret that has no
/// `_file` variant.
pub fn refuse_world_readable(path: &Path, what: &str) -> anyhow::Result<()> {
    if let Some(mode) = world_readable_mode(path)? {
        anyhow::bail!(
            "refusing the configuration file {}: it holds {what} but its mode {mode:04o} lets \
             every user read it; chmod o-r {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// The mode of the configuration file at `path` when every user may read it.
fn world_readable_mode(path: &Path) -> anyhow::Result<Option<u32>> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot stat the configuration file {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    Ok((mode & 0o004 != 0).then_some(mode))
}

/// Refuses a mode that gives the group or others any access.
pub fn check_mode(path: &Path, what: &str, mode: u32) -> anyhow::Result<()> {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "refusing the {what} {}: its mode {mode:04o} gives {} access to it; \
             it must be readable by its owner only (chmod 600 {})",
            path.display(),
            if mode & 0o007 != 0 {
                "every user"
            } else {
                "its group"
            },
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn key_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join(format!("k{mode:o}.key"));
        fs::write(&path, "-----BEGIN PRIVATE KEY-----\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn owner_only_keys_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o600, 0o400] {
            let key = read_private_key(&key_with_mode(dir.path(), mode), "client key")
                .expect("owner-only key");
            assert!(key.starts_with(b"-----BEGIN"));
        }
    }

    #[test]
    fn group_or_world_readable_keys_are_refused_naming_file_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (mode, who) in [
            (0o640, "its group"),
            (0o660, "its group"),
            (0o604, "every user"),
            (0o644, "every user"),
            (0o610, "its group"),
        ] {
            let path = key_with_mode(dir.path(), mode);
            let err = read_private_key(&path, "client key")
                .expect_err("must be refused")
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
            assert!(err.contains(who), "{err}");
            assert!(err.contains("client key"), "{err}");
        }
    }

    #[test]
    fn secret_files_are_read_without_their_newline_and_mode_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        fs::write(&path, "s3cret\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_secret_file(&path, "Keystone password file").expect("read"),
            "s3cret"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_secret_file(&path, "Keystone password file")
            .expect_err("group-readable")
            .to_string();
        assert!(
            err.contains("refusing the Keystone password file") && err.contains("0640"),
            "{err}"
        );
        fs::write(&path, "\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = read_secret_file(&path, "token file")
            .expect_err("empty")
            .to_string();
        assert!(err.contains("is empty"), "{err}");
        fs::write(&path, [0xff, 0xfe]).expect("write");
        let err = read_secret_file(&path, "token file")
            .expect_err("binary")
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn inline_secrets_need_a_file_others_cannot_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        fs::write(&path, "x = 1\n").expect("write");
        for mode in [0o600, 0o640] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            refuse_world_readable_secret(&path, "password").expect("not world-readable");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = refuse_world_readable_secret(&path, "password")
            .expect_err("world-readable")
            .to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("`password`")
                && err.contains("0644")
                && err.contains("password_file"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_names_the_file() {
        let err = read_private_key(Path::new("/nonexistent/k.key"), "client key")
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/k.key"), "{err}");
    }

    #[test]
    fn a_directory_is_not_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = read_private_key(dir.path(), "client key")
            .expect_err("directory")
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
