//! The measured-boot event logs sent with every quote: the UEFI firmware log
//! (`--uefi-event-log`) and the TXT/DRTM log (`--txt-event-log`), read from
//! the host under `--root` into [`EventLog`] messages with the protocol's one
//! encoding ([`trustpool_proto::event_log`]: DEFLATE above 4 KiB, nothing
//! above [`MAX_EVENT_LOG_BYTES`]).
//!
//! Every Evidence carries one message per kind. A log that cannot be sent —
//! disabled, unreadable, empty, too large — travels as its reason
//! (`unavailable`), never as an empty log. The client reads the logs right
//! after the quote, so a log that grows (the kernel only appends) holds at
//! least the events the quoted PCRs include.

use crate::config::{AgentConfig, EventLogPath};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use tracing::{debug, info, warn};
use trustpool_proto::event_log::{
    encode, kind_name, unavailable, EventLogTransportError, MAX_EVENT_LOG_BYTES,
};
use trustpool_proto::v1::{EventLog, EventLogEncoding, EventLogKind};

/// How many distinct reasons per kind are remembered (and warned about);
/// bounds the memory a log whose reason changes every round could take.
const MAX_REMEMBERED_REASONS: usize = 16;

/// `path` as the agent sees it when the host's file system is at `root`:
/// `root` joined with `path` without its leading `/` (`/` and `/sys/x` give
/// `/sys/x`; `/host` and `/sys/x` give `/host/sys/x`). `..` stops at
/// `root`, as in the hardening checks' host view.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    let mut inside: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => inside.push(part),
            Component::ParentDir => {
                inside.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut out = root.to_path_buf();
    out.extend(inside);
    out
}

/// One kind of log and where it is configured.
#[derive(Debug, Clone)]
struct Source {
    kind: EventLogKind,
    /// The configuration key, for the reason of a disabled log.
    key: &'static str,
    path: EventLogPath,
}

/// What reading one log gave.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The message for the Evidence (the log, or why there is none).
    pub log: EventLog,
    /// The file read; `None` when the log is disabled or the reader failed.
    pub path: Option<PathBuf>,
    /// The configuration disables this log.
    pub disabled: bool,
}

/// Reads the configured event logs for every Evidence and logs what it
/// found: a debug line per log read, a warning once per kind and distinct
/// reason a log is unavailable (again after the log was read meanwhile).
#[derive(Debug)]
pub struct EventLogReader {
    root: PathBuf,
    sources: Vec<Source>,
    /// Reasons already reported, per kind.
    reported: Mutex<HashMap<i32, HashSet<String>>>,
}

impl EventLogReader {
    /// The logs of `cfg` (`uefi_event_log`, `txt_event_log`) under `cfg.root`.
    pub fn from_config(cfg: &AgentConfig) -> EventLogReader {
        EventLogReader::new(
            &cfg.root,
            cfg.uefi_event_log.clone(),
            cfg.txt_event_log.clone(),
        )
    }

    /// The UEFI log at `uefi` and the TXT log at `txt`, both under `root`.
    pub fn new(root: &Path, uefi: EventLogPath, txt: EventLogPath) -> EventLogReader {
        EventLogReader {
            root: root.to_path_buf(),
            sources: vec![
                Source {
                    kind: EventLogKind::Uefi,
                    key: "uefi_event_log",
                    path: uefi,
                },
                Source {
                    kind: EventLogKind::Txt,
                    key: "txt_event_log",
                    path: txt,
                },
            ],
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// Reads every log (blocking: file I/O), one [`Collected`] per kind, UEFI first.
    pub fn read_all(&self) -> Vec<Collected> {
        read_sources(&self.root, &self.sources)
    }

    /// Reads every log on a blocking thread and logs the outcome: the
    /// messages for the Evidence, one per kind. Never fails: a log that
    /// cannot be read is sent with its reason.
    pub async fn collect(&self) -> Vec<EventLog> {
        let root = self.root.clone();
        let sources = self.sources.clone();
        let collected =
            match tokio::task::spawn_blocking(move || read_sources(&root, &sources)).await {
                Ok(collected) => collected,
                Err(e) => self
                    .sources
                    .iter()
                    .map(|s| Collected {
                        log: unavailable(s.kind, format!("the event log reader failed: {e}")),
                        path: None,
                        disabled: false,
                    })
                    .collect(),
            };
        for c in &collected {
            self.note(c);
        }
        collected.into_iter().map(|c| c.log).collect()
    }

    /// Logs one outcome: debug for a log read, a warning (info for a
    /// disabled log) the first time a reason is seen for its kind.
    fn note(&self, c: &Collected) {
        let kind = kind_name(c.log.kind);
        let path = c.path.as_deref().map(Path::display);
        if c.log.unavailable.is_empty() {
            debug!(
                kind,
                path = %path.map(|p| p.to_string()).unwrap_or_default(),
                size = c.log.size,
                compressed_size = (c.log.encoding == EventLogEncoding::Deflate as i32)
                    .then_some(c.log.data.len()),
                "event log read"
            );
            if self.forget(c.log.kind) {
                info!(kind, "the event log is readable again");
            }
            return;
        }
        let reason = c.log.unavailable.as_str();
        if !self.first_report(c.log.kind, reason) {
            debug!(kind, reason, "event log unavailable (reported before)");
        } else if c.disabled {
            info!(
                kind,
                reason, "event log not collected: sending the reason instead"
            );
        } else {
            warn!(
                kind,
                reason, "event log unavailable: sending the reason instead (reported once)"
            );
        }
    }

    /// True the first time `reason` is seen for `kind` (up to
    /// [`MAX_REMEMBERED_REASONS`] reasons per kind; beyond them, false).
    fn first_report(&self, kind: i32, reason: &str) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = reported.entry(kind).or_default();
        if seen.contains(reason) || seen.len() >= MAX_REMEMBERED_REASONS {
            return false;
        }
        seen.insert(reason.to_string())
    }

    /// Forgets the reasons of `kind` (its log was read); true if there were any.
    fn forget(&self, kind: i32) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.remove(&kind).is_some_and(|seen| !seen.is_empty())
    }
}

fn read_sources(root: &Path, sources: &[Source]) -> Vec<Collected> {
    sources
        .iter()
        .map(|s| read_one(root, s.kind, s.key, &s.path))
        .collect()
}

/// Reads one log into its message (the log, or why there is none).
fn read_one(root: &Path, kind: EventLogKind, key: &str, path: &EventLogPath) -> Collected {
    let EventLogPath::At(path) = path else {
        return Collected {
            log: unavailable(
                kind,
                format!("not collected: {key} is disabled in the agent configuration"),
            ),
            path: None,
            disabled: true,
        };
    };
    let real = under_root(root, path);
    let shown = real.display();
    let log = match read_bounded(&real) {
        Err(e) => unavailable(kind, format!("{shown}: {e}")),
        Ok((data, _)) if data.is_empty() => unavailable(kind, format!("{shown} is empty")),
        Ok((data, stated)) => match encode(kind, &data) {
            Ok(log) => log,
            Err(EventLogTransportError::TooLarge {
                kind: name,
                size,
                max,
            }) => {
                // A regular file states its size; securityfs states 0, and
                // the read stopped one byte past the limit.
                let (size, at_least) = match usize::try_from(stated) {
                    Ok(stated) if stated >= size => (stated, ""),
                    _ => (size, " (at least: the agent reads no further)"),
                };
                let e = EventLogTransportError::TooLarge {
                    kind: name,
                    size,
                    max,
                };
                unavailable(kind, format!("{shown}: {e}{at_least}"))
            }
            Err(e) => unavailable(kind, format!("{shown}: {e}")),
        },
    };
    Collected {
        log,
        path: Some(real),
        disabled: false,
    }
}

/// At most [`MAX_EVENT_LOG_BYTES`] + 1 bytes of `path` (one more than the
/// limit, to tell a log at the limit from a larger one), read to the end
/// without trusting the size the file states (securityfs files state 0);
/// and that stated size.
fn read_bounded(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    let file = File::open(path)?;
    let stated = file.metadata().map(|m| m.len()).unwrap_or(0);
    let limit = MAX_EVENT_LOG_BYTES as u64 + 1;
    // A capacity from the stated size, never more than the limit.
    let capacity = usize::try_from(stated.min(limit)).unwrap_or(0);
    let mut data = Vec::with_capacity(capacity);
    file.take(limit).read_to_end(&mut data)?;
    Ok((data, stated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TXT_EVENT_LOG, DEFAULT_UEFI_EVENT_LOG};
    use trustpool_proto::event_log::{decode, ReceivedLog};

    /// Bytes that compress like a real log (repeated structure, varying digests).
    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| if i % 64 < 32 { (i / 64) as u8 } else { 0 })
            .collect()
    }

    /// A host root holding `log` as its UEFI log at the default path.
    fn host_with_uefi_log(log: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let path = under_root(root.path(), Path::new(DEFAULT_UEFI_EVENT_LOG));
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, log).expect("write the log");
        root
    }

    fn defaults(root: &Path) -> EventLogReader {
        EventLogReader::new(
            root,
            EventLogPath::At(DEFAULT_UEFI_EVENT_LOG.into()),
            EventLogPath::At(DEFAULT_TXT_EVENT_LOG.into()),
        )
    }

    fn uefi(root: &Path) -> Collected {
        defaults(root).read_all().remove(0)
    }

    #[test]
    fn under_root_joins_without_the_leading_slash_and_stays_inside() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(under_root(&p("/"), &p("/sys/x")), p("/sys/x"));
        assert_eq!(under_root(&p("/host"), &p("/sys/x")), p("/host/sys/x"));
        assert_eq!(under_root(&p("/host"), &p("sys/./x")), p("/host/sys/x"));
        assert_eq!(
            under_root(&p("/host"), &p("/sys/../../../etc/x")),
            p("/host/etc/x")
        );
    }

    #[test]
    fn a_present_log_is_sent_and_decodes_to_the_same_bytes() {
        let log = sample(1000);
        let root = host_with_uefi_log(&log);
        let got = uefi(root.path());
        assert_eq!(got.log.kind, EventLogKind::Uefi as i32);
        assert_eq!(got.log.unavailable, "");
        assert_eq!(got.log.encoding, EventLogEncoding::Raw as i32);
        assert_eq!(got.log.size, 1000);
        assert_eq!(decode(&got.log).expect("decodes"), ReceivedLog::Log(log));
        assert_eq!(
            got.path,
            Some(under_root(root.path(), Path::new(DEFAULT_UEFI_EVENT_LOG)))
        );
    }

    #[test]
    fn a_40_kb_log_travels_compressed() {
        let log = sample(40_000);
        let root = host_with_uefi_log(&log);
        let got = uefi(root.path()).log;
        assert_eq!(got.encoding, EventLogEncoding::Deflate as i32);
        assert!(got.data.len() < 40_000 / 2, "{} bytes", got.data.len());
        assert_eq!(got.size, 40_000);
        assert_eq!(decode(&got).expect("decodes"), ReceivedLog::Log(log));
    }

    #[test]
    fn a_missing_log_is_unavailable_with_its_path_and_the_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let logs = defaults(root.path()).read_all();
        assert_eq!(logs.len(), 2);
        for (got, kind, default) in [
            (&logs[0], EventLogKind::Uefi, DEFAULT_UEFI_EVENT_LOG),
            (&logs[1], EventLogKind::Txt, DEFAULT_TXT_EVENT_LOG),
        ] {
            let path = under_root(root.path(), Path::new(default));
            assert_eq!(got.log.kind, kind as i32);
            assert!(got.log.data.is_empty());
            let reason = &got.log.unavailable;
            assert!(
                reason.starts_with(&format!("{}: ", path.display())),
                "{reason}"
            );
            assert!(reason.contains("No such file or directory"), "{reason}");
            assert_eq!(
                decode(&got.log).expect("decodes"),
                ReceivedLog::Unavailable(reason.clone())
            );
        }
    }

    #[test]
    fn a_directory_instead_of_a_log_is_unavailable_with_the_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = under_root(root.path(), Path::new(DEFAULT_UEFI_EVENT_LOG));
        std::fs::create_dir_all(&path).expect("mkdir");
        let reason = uefi(root.path()).log.unavailable;
        assert!(
            reason.starts_with(&format!("{}: ", path.display())),
            "{reason}"
        );
        assert!(reason.contains("directory"), "{reason}");
    }

    #[test]
    fn a_log_over_the_limit_is_unavailable_with_its_size_and_the_limit() {
        let root = host_with_uefi_log(&vec![7u8; MAX_EVENT_LOG_BYTES + 1]);
        let got = uefi(root.path());
        assert!(got.log.data.is_empty());
        let reason = &got.log.unavailable;
        let path = under_root(root.path(), Path::new(DEFAULT_UEFI_EVENT_LOG));
        assert!(
            reason.starts_with(&format!("{}: ", path.display())),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("{} bytes", MAX_EVENT_LOG_BYTES + 1))
                && reason.contains(&format!("more than the {MAX_EVENT_LOG_BYTES}")),
            "{reason}"
        );
        // A regular file states its real size, beyond what is read.
        let root = host_with_uefi_log(&vec![7u8; MAX_EVENT_LOG_BYTES + 5000]);
        let reason = uefi(root.path()).log.unavailable;
        assert!(
            reason.contains(&format!("{} bytes", MAX_EVENT_LOG_BYTES + 5000)),
            "{reason}"
        );
    }

    #[test]
    fn a_file_stating_size_zero_is_read_to_its_end() {
        // Like securityfs, /proc states size 0 for files that have content.
        let stated = std::fs::metadata("/proc/self/status").map(|m| m.len());
        assert_eq!(stated.ok(), Some(0));
        let got = read_one(
            Path::new("/"),
            EventLogKind::Uefi,
            "uefi_event_log",
            &EventLogPath::At("/proc/self/status".into()),
        );
        assert_eq!(got.log.unavailable, "");
        assert!(got.log.size > 0);
    }

    #[test]
    fn a_disabled_log_says_so_and_is_not_read() {
        let root = host_with_uefi_log(&sample(100));
        let logs = EventLogReader::new(root.path(), EventLogPath::Disabled, EventLogPath::Disabled)
            .read_all();
        assert_eq!(
            logs[0].log.unavailable,
            "not collected: uefi_event_log is disabled in the agent configuration"
        );
        assert_eq!(
            logs[1].log.unavailable,
            "not collected: txt_event_log is disabled in the agent configuration"
        );
        assert!(logs
            .iter()
            .all(|c| c.path.is_none() && c.log.data.is_empty()));
    }

    #[test]
    fn an_empty_log_says_it_is_empty() {
        let root = host_with_uefi_log(b"");
        let got = uefi(root.path());
        let path = under_root(root.path(), Path::new(DEFAULT_UEFI_EVENT_LOG));
        assert_eq!(got.log.unavailable, format!("{} is empty", path.display()));
        assert!(decode(&got.log).is_ok());
    }

    #[tokio::test]
    async fn collect_sends_one_message_per_kind_with_the_txt_log_from_its_own_path() {
        let root = host_with_uefi_log(&sample(50));
        let txt = under_root(root.path(), Path::new("/copy/txt.bin"));
        std::fs::create_dir_all(txt.parent().expect("parent")).expect("mkdir");
        std::fs::write(&txt, sample(60)).expect("write");
        let reader = EventLogReader::new(
            root.path(),
            EventLogPath::At(DEFAULT_UEFI_EVENT_LOG.into()),
            EventLogPath::At("/copy/txt.bin".into()),
        );
        let logs = reader.collect().await;
        assert_eq!(
            logs.iter().map(|l| l.kind).collect::<Vec<_>>(),
            [EventLogKind::Uefi as i32, EventLogKind::Txt as i32]
        );
        assert_eq!(
            decode(&logs[0]).expect("uefi"),
            ReceivedLog::Log(sample(50))
        );
        assert_eq!(decode(&logs[1]).expect("txt"), ReceivedLog::Log(sample(60)));
    }

    #[test]
    fn a_reason_is_reported_once_per_kind_until_the_log_is_read_again() {
        let reader = defaults(Path::new("/nonexistent"));
        let uefi = EventLogKind::Uefi as i32;
        let txt = EventLogKind::Txt as i32;
        assert!(reader.first_report(uefi, "gone"));
        assert!(!reader.first_report(uefi, "gone"));
        assert!(reader.first_report(txt, "gone"));
        assert!(reader.first_report(uefi, "denied"));
        assert!(reader.forget(uefi));
        assert!(!reader.forget(uefi));
        assert!(reader.first_report(uefi, "gone"));
        for i in 0..2 * MAX_REMEMBERED_REASONS {
            reader.first_report(txt, &format!("reason {i}"));
        }
        let remembered = reader
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&txt)
            .map(HashSet::len);
        assert_eq!(remembered, Some(MAX_REMEMBERED_REASONS));
    }
}
