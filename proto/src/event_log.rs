//! Event logs on the wire ([`EventLog`]): the one encoding both the agent
//! and the server use, with the size limit both enforce.
//!
//! A log larger than [`COMPRESS_ABOVE`] bytes travels DEFLATE-compressed
//! (a UEFI log of 40 KB compresses to about a quarter). Neither side
//! accepts a log larger than [`MAX_EVENT_LOG_BYTES`]: the agent sends the
//! reason instead of the log, the server refuses the log — decompressing
//! at most one byte more than the limit, so a compression bomb costs it
//! nothing.

use crate::v1::{EventLog, EventLogEncoding, EventLogKind};
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use thiserror::Error;

/// Largest event log carried (2 MiB, 20 times a large real UEFI log);
/// two of them compressed stay within gRPC's 4 MiB message limit.
pub const MAX_EVENT_LOG_BYTES: usize = 2 << 20;

/// Logs larger than this are compressed.
pub const COMPRESS_ABOVE: usize = 4 << 10;

/// A log that cannot be carried or read back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventLogTransportError {
    /// More bytes than [`MAX_EVENT_LOG_BYTES`].
    #[error("the {kind} event log is {size} bytes, more than the {max} the protocol carries")]
    TooLarge {
        /// Which log.
        kind: &'static str,
        /// Its size (for a compressed log: at least this).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The compressed bytes do not decompress.
    #[error("the {kind} event log does not decompress: {reason}")]
    Corrupt {
        /// Which log.
        kind: &'static str,
        /// The decoder's error.
        reason: String,
    },
    /// The decoded size differs from the size the agent stated.
    #[error("the {kind} event log is {actual} bytes, the agent stated {stated}")]
    SizeMismatch {
        /// Which log.
        kind: &'static str,
        /// Stated.
        stated: u32,
        /// Decoded.
        actual: usize,
    },
    /// An encoding this build does not know.
    #[error("the {kind} event log has unknown encoding {encoding}")]
    UnknownEncoding {
        /// Which log.
        kind: &'static str,
        /// The value.
        encoding: i32,
    },
    /// Neither data nor a reason for its absence.
    #[error(
        "the {kind} event log is empty and says no reason (an agent must state why it has no log)"
    )]
    EmptyWithoutReason {
        /// Which log.
        kind: &'static str,
    },
}

/// A kind's name for messages (`uefi`, `txt`).
pub fn kind_name(kind: i32) -> &'static str {
    match EventLogKind::try_from(kind) {
        Ok(EventLogKind::Uefi) => "uefi",
        Ok(EventLogKind::Txt) => "txt",
        _ => "unknown-kind",
    }
}

/// The message of a log read by the agent: compressed above
/// [`COMPRESS_ABOVE`], refused above [`MAX_EVENT_LOG_BYTES`].
pub fn encode(kind: EventLogKind, log: &[u8]) -> Result<EventLog, EventLogTransportError> {
    let name = kind_name(kind as i32);
    if log.len() > MAX_EVENT_LOG_BYTES {
        return Err(EventLogTransportError::TooLarge {
            kind: name,
            size: log.len(),
            max: MAX_EVENT_LOG_BYTES,
        });
    }
    if log.is_empty() {
        return Err(EventLogTransportError::EmptyWithoutReason { kind: name });
    }
    // Fits: checked above.
    let size = u32::try_from(log.len()).unwrap_or(u32::MAX);
    if log.len() <= COMPRESS_ABOVE {
        return Ok(EventLog {
            kind: kind as i32,
            encoding: EventLogEncoding::Raw as i32,
            data: log.to_vec(),
            size,
            unavailable: String::new(),
        });
    }
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(log.len() / 3), Compression::fast());
    // Writing into a Vec cannot fail.
    let data = encoder
        .write_all(log)
        .and_then(|()| encoder.finish())
        .map_err(|e| EventLogTransportError::Corrupt {
            kind: name,
            reason: e.to_string(),
        })?;
    Ok(EventLog {
        kind: kind as i32,
        encoding: EventLogEncoding::Deflate as i32,
        data,
        size,
        unavailable: String::new(),
    })
}

/// The message of a log the agent could not read, with why.
pub fn unavailable(kind: EventLogKind, reason: impl Into<String>) -> EventLog {
    let mut reason = reason.into();
    if reason.is_empty() {
        reason = "no reason given".into();
    }
    EventLog {
        kind: kind as i32,
        encoding: EventLogEncoding::Raw as i32,
        data: Vec::new(),
        size: 0,
        unavailable: reason,
    }
}

/// What a received log message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceivedLog {
    /// The log's bytes.
    Log(Vec<u8>),
    /// The agent's reason for having none.
    Unavailable(String),
}

/// Reads a received log back, enforcing [`MAX_EVENT_LOG_BYTES`].
pub fn decode(msg: &EventLog) -> Result<ReceivedLog, EventLogTransportError> {
    let kind = kind_name(msg.kind);
    if !msg.unavailable.is_empty() {
        return Ok(ReceivedLog::Unavailable(msg.unavailable.clone()));
    }
    if msg.data.is_empty() {
        return Err(EventLogTransportError::EmptyWithoutReason { kind });
    }
    let too_large = |size| EventLogTransportError::TooLarge {
        kind,
        size,
        max: MAX_EVENT_LOG_BYTES,
    };
    let bytes = match EventLogEncoding::try_from(msg.encoding) {
        Ok(EventLogEncoding::Raw) => {
            if msg.data.len() > MAX_EVENT_LOG_BYTES {
                return Err(too_large(msg.data.len()));
            }
            msg.data.clone()
        }
        Ok(EventLogEncoding::Deflate) => {
            if msg.size as usize > MAX_EVENT_LOG_BYTES {
                return Err(too_large(msg.size as usize));
            }
            let mut out = Vec::with_capacity(msg.size as usize);
            DeflateDecoder::new(msg.data.as_slice())
                .take(MAX_EVENT_LOG_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| EventLogTransportError::Corrupt {
                    kind,
                    reason: e.to_string(),
                })?;
            if out.len() > MAX_EVENT_LOG_BYTES {
                return Err(too_large(out.len()));
            }
            out
        }
        Err(_) => {
            return Err(EventLogTransportError::UnknownEncoding {
                kind,
                encoding: msg.encoding,
            })
        }
    };
    if bytes.len() != msg.size as usize {
        return Err(EventLogTransportError::SizeMismatch {
            kind,
            stated: msg.size,
            actual: bytes.len(),
        });
    }
    Ok(ReceivedLog::Log(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 997) as u8).collect()
    }

    #[test]
    fn small_logs_go_raw_and_large_ones_compressed_and_both_come_back() {
        for n in [
            1,
            COMPRESS_ABOVE,
            COMPRESS_ABOVE + 1,
            60_000,
            MAX_EVENT_LOG_BYTES,
        ] {
            let log = sample(n);
            let msg = encode(EventLogKind::Uefi, &log).unwrap();
            let compressed = msg.encoding == EventLogEncoding::Deflate as i32;
            assert_eq!(compressed, n > COMPRESS_ABOVE, "{n}");
            if compressed {
                assert!(msg.data.len() < n, "{n}: {}", msg.data.len());
            }
            assert_eq!(decode(&msg).unwrap(), ReceivedLog::Log(log));
        }
    }

    #[test]
    fn an_unreadable_log_says_why_and_an_empty_one_must() {
        let msg = unavailable(EventLogKind::Txt, "no such file");
        assert_eq!(
            decode(&msg).unwrap(),
            ReceivedLog::Unavailable("no such file".into())
        );
        assert!(!unavailable(EventLogKind::Txt, "").unavailable.is_empty());
        assert!(matches!(
            encode(EventLogKind::Uefi, &[]),
            Err(EventLogTransportError::EmptyWithoutReason { .. })
        ));
        let empty = EventLog {
            kind: EventLogKind::Uefi as i32,
            ..Default::default()
        };
        assert!(matches!(
            decode(&empty),
            Err(EventLogTransportError::EmptyWithoutReason { kind: "uefi" })
        ));
    }

    #[test]
    fn attack_oversized_bombs_lies_and_garbage_are_refused_with_a_reason() {
        assert!(matches!(
            encode(EventLogKind::Uefi, &sample(MAX_EVENT_LOG_BYTES + 1)),
            Err(EventLogTransportError::TooLarge { .. })
        ));
        // A bomb: 64 MiB of zeros compress to a few KB; the stated size lies.
        let zeros = vec![0u8; 64 << 20];
        let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
        e.write_all(&zeros).unwrap();
        let bomb = EventLog {
            kind: EventLogKind::Uefi as i32,
            encoding: EventLogEncoding::Deflate as i32,
            data: e.finish().unwrap(),
            size: 1000,
            unavailable: String::new(),
        };
        let err = decode(&bomb).unwrap_err();
        assert!(
            matches!(err, EventLogTransportError::TooLarge { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("more than"), "{err}");
        // A stated size over the limit is refused before decompressing.
        let mut big = bomb.clone();
        big.size = u32::MAX;
        assert!(matches!(
            decode(&big),
            Err(EventLogTransportError::TooLarge { .. })
        ));
        // A size that does not match.
        let mut msg = encode(EventLogKind::Uefi, &sample(10_000)).unwrap();
        msg.size = 9_999;
        assert!(matches!(
            decode(&msg),
            Err(EventLogTransportError::SizeMismatch { .. })
        ));
        // Garbage instead of DEFLATE, and an unknown encoding.
        let garbage = EventLog {
            kind: EventLogKind::Uefi as i32,
            encoding: EventLogEncoding::Deflate as i32,
            data: vec![0xff; 100],
            size: 100,
            unavailable: String::new(),
        };
        assert!(matches!(
            decode(&garbage),
            Err(EventLogTransportError::Corrupt { .. })
        ));
        let mut unknown = garbage;
        unknown.encoding = 7;
        assert!(matches!(
            decode(&unknown),
            Err(EventLogTransportError::UnknownEncoding { encoding: 7, .. })
        ));
    }
}
