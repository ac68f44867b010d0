//! The agent's TPM state directory: the AK blobs (`ak.pub` = marshalled
//! TPMT_PUBLIC, `ak.priv` = the TPM2B_PRIVATE buffer, i.e. the AK's private
//! area encrypted by its parent, the EK). They are useless without this TPM.

use super::error::TpmError;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(crate) const AK_PUB: &str = "ak.pub";
pub(crate) const AK_PRIV: &str = "ak.priv";
/// Larger files are not AK blobs (TPM2B_PRIVATE/TPMT_PUBLIC are < 1 KiB).
const MAX_BLOB: u64 = 4096;

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> TpmError + '_ {
    move |source| TpmError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the state directory (mode 0700) if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), TpmError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(TpmError::State {
            path: dir.to_path_buf(),
            source: std::io::Error::new(ErrorKind::AlreadyExists, "exists and is not a directory"),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(state_err(dir)),
        Err(e) => Err(state_err(dir)(e)),
    }
}

/// The raw contents of `ak.pub` and `ak.priv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAk {
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

/// Reads `ak.pub` and `ak.priv`. `Ok(None)` if either is missing (a crash
/// between the two renames leaves at most one of them: treated as absent).
pub(crate) fn load_ak_blobs(dir: &Path) -> Result<Option<StoredAk>, TpmError> {
    let pub_path = dir.join(AK_PUB);
    let priv_path = dir.join(AK_PRIV);
    let public = match read_small(&pub_path)? {
        Some(b) => b,
        None => return Ok(None),
    };
    let private = match read_small(&priv_path)? {
        Some(b) => b,
        None => return Ok(None),
    };
    Ok(Some(StoredAk { public, private }))
}

fn read_small(path: &Path) -> Result<Option<Vec<u8>>, TpmError> {
    match fs::metadata(path) {
        Ok(m) if m.len() > MAX_BLOB => Err(TpmError::State {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{} bytes, too large for an AK blob", m.len()),
            ),
        }),
        Ok(_) => fs::read(path).map(Some).map_err(state_err(path)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(path)(e)),
    }
}

/// Writes both AK blobs, each atomically (temp file, fsync, rename, fsync dir),
/// mode 0600. The private blob is written first, so that a present `ak.pub`
/// always has its `ak.priv` (unless an old pair is being replaced, in which
/// case a mismatched pair fails to load and is replaced again).
pub(crate) fn store_ak_blobs(dir: &Path, public: &[u8], private: &[u8]) -> Result<(), TpmError> {
    write_atomic(&dir.join(AK_PRIV), private)?;
    write_atomic(&dir.join(AK_PUB), public)?;
    Ok(())
}

/// Atomically replaces `path` with `data` (mode 0600).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), TpmError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        // a stale temp file of a crashed run with the same pid: replace it
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // make the rename durable
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(state_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn blobs_roundtrip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("sub/state");
        ensure_dir(&state).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(load_ak_blobs(&state).unwrap().is_none());
        store_ak_blobs(&state, b"pub", b"priv").unwrap();
        assert_eq!(
            load_ak_blobs(&state).unwrap(),
            Some(StoredAk {
                public: b"pub".to_vec(),
                private: b"priv".to_vec()
            })
        );
        for f in [AK_PUB, AK_PRIV] {
            let mode = fs::metadata(state.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // replace
        store_ak_blobs(&state, b"pub2", b"priv2").unwrap();
        assert_eq!(
            load_ak_blobs(&state).unwrap(),
            Some(StoredAk {
                public: b"pub2".to_vec(),
                private: b"priv2".to_vec()
            })
        );
        // no temp files left behind
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn half_written_pair_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join(AK_PRIV), b"x").unwrap();
        assert!(load_ak_blobs(dir.path()).unwrap().is_none());
    }

    #[test]
    fn oversized_blob_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(AK_PUB), vec![0u8; 10_000]).unwrap();
        fs::write(dir.path().join(AK_PRIV), b"x").unwrap();
        let e = load_ak_blobs(dir.path()).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn state_path_that_is_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(ensure_dir(&f).is_err());
    }
}
