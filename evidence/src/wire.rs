//! Bounds-checked reader for TPM wire structures (big-endian) and TCG event
//! logs (little-endian).
//!
//! TPM 2.0 structures (TPM 2.0 Part 2) are big-endian, with `TPM2B_*` buffers
//! encoded as a `u16` size followed by that many bytes. TCG PC Client event
//! logs and the UEFI structures inside them are little-endian: they use the
//! `*_le` readers. [`Reader`] never
//! panics: every read checks the remaining length and returns a
//! [`WireError`] naming the offset. Parsers attach the structure field being
//! read with [`WireResultExt::ctx`], so errors read like
//! `truncated at offset 10 reading TPMS_ATTEST.extraData: need 32 bytes, 3 available`.

use thiserror::Error;

/// An error while decoding a TPM wire structure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ended before a field was complete.
    #[error(
        "truncated at offset {offset} reading {field}: need {needed} bytes, {available} available"
    )]
    Truncated {
        /// The field being read (e.g. `TPMS_ATTEST.extraData`).
        field: &'static str,
        /// Byte offset of the field in the input.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes were left after the structure ended.
    #[error("{count} trailing bytes after {structure} (at offset {offset})")]
    TrailingBytes {
        /// The structure that was parsed.
        structure: &'static str,
        /// Offset where the structure ended.
        offset: usize,
        /// Number of unexpected bytes.
        count: usize,
    },
    /// A field has a value that is invalid or unsupported.
    #[error("invalid {field} at offset {offset}: {reason}")]
    Invalid {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The attestation structure is not a quote (wrong magic or type). Only
    /// returned by [`crate::tpm::parse_attest`].
    #[error("not a TPM quote: {reason}")]
    NotAQuote {
        /// What was found instead.
        reason: String,
    },
}

impl WireError {
    /// True for [`WireError::NotAQuote`]: the bytes are not a
    /// TPM-generated quote at all (as opposed to a malformed one).
    pub fn is_not_a_quote(&self) -> bool {
        matches!(self, WireError::NotAQuote { .. })
    }

    /// Replaces a generic field name set by [`Reader`] with a specific one.
    fn with_field(self, name: &'static str) -> Self {
        match self {
            WireError::Truncated {
                offset,
                needed,
                available,
                ..
            } => WireError::Truncated {
                field: name,
                offset,
                needed,
                available,
            },
            WireError::Invalid { offset, reason, .. } => WireError::Invalid {
                field: name,
                offset,
                reason,
            },
            other => other,
        }
    }
}

/// Adds field context to reader results.
pub trait WireResultExt<T> {
    /// Names the field being read in a [`WireError::Truncated`] or
    /// [`WireError::Invalid`] error.
    fn ctx(self, field: &'static str) -> Result<T, WireError>;
}

impl<T> WireResultExt<T> for Result<T, WireError> {
    fn ctx(self, field: &'static str) -> Result<T, WireError> {
        self.map_err(|e| e.with_field(field))
    }
}

/// A bounds-checked big-endian cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Number of unread bytes.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The bytes consumed so far (from the start of the input).
    pub fn consumed(&self) -> &'a [u8] {
        self.buf.get(..self.pos).unwrap_or(&[])
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end))) {
            Some((slice, end)) => {
                self.pos = end;
                Ok(slice)
            }
            None => Err(WireError::Truncated {
                field: "bytes",
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|a| a[0]).ctx("u8")
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.array::<2>().map(u16::from_be_bytes).ctx("u16")
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.array::<4>().map(u32::from_be_bytes).ctx("u32")
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.array::<8>().map(u64::from_be_bytes).ctx("u64")
    }

    /// Reads a little-endian `u16` (event logs, UEFI structures).
    pub fn u16_le(&mut self) -> Result<u16, WireError> {
        self.array::<2>().map(u16::from_le_bytes).ctx("u16")
    }

    /// Reads a little-endian `u32` (event logs, UEFI structures).
    pub fn u32_le(&mut self) -> Result<u32, WireError> {
        self.array::<4>().map(u32::from_le_bytes).ctx("u32")
    }

    /// Reads a little-endian `u64` (event logs, UEFI structures).
    pub fn u64_le(&mut self) -> Result<u64, WireError> {
        self.array::<8>().map(u64::from_le_bytes).ctx("u64")
    }

    /// Reads the rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        rest
    }

    /// Reads a `TPM2B_*` buffer: a big-endian `u16` size, then that many
    /// bytes. Returns the contents (without the size).
    pub fn tpm2b(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let size = self.u16().ctx("TPM2B size")?;
        match self.bytes(usize::from(size)) {
            Ok(b) => Ok(b),
            Err(_) => {
                let available = self.remaining();
                self.pos = start;
                Err(WireError::Truncated {
                    field: "TPM2B buffer",
                    offset: start,
                    needed: usize::from(size) + 2,
                    available: available + 2,
                })
            }
        }
    }

    /// Reads a `TPM2B_*` buffer whose size must not exceed `max` bytes.
    pub fn tpm2b_max(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let b = self.tpm2b()?;
        if b.len() > max {
            return Err(WireError::Invalid {
                field: "TPM2B buffer",
                offset: start,
                reason: format!("size {} exceeds the maximum {}", b.len(), max),
            });
        }
        Ok(b)
    }

    /// Builds an [`WireError::Invalid`] at the current offset (helper for parsers).
    pub fn invalid(&self, field: &'static str, reason: impl Into<String>) -> WireError {
        WireError::Invalid {
            field,
            offset: self.pos,
            reason: reason.into(),
        }
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(&self) -> Result<(), WireError> {
        self.finish_as("structure")
    }

    /// Like [`Reader::finish`], naming the structure in the error message.
    pub fn finish_as(&self, structure: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes {
                structure,
                offset: self.pos,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian() {
        let data = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f,
        ];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 0x01);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.u64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.position(), 15);
        assert_eq!(r.consumed(), &data[..]);
        r.finish().unwrap();
        r.finish_as("x").unwrap();
    }

    #[test]
    fn reads_little_endian() {
        let data = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f,
        ];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 0x01);
        assert_eq!(r.u16_le().unwrap(), 0x0302);
        assert_eq!(r.u32_le().unwrap(), 0x0706_0504);
        assert_eq!(r.u64_le().unwrap(), 0x0f0e_0d0c_0b0a_0908);
        assert!(r.u16_le().is_err() && r.u32_le().is_err() && r.u64_le().is_err());
        let mut r = Reader::new(&data);
        r.bytes(13).unwrap();
        assert_eq!(r.rest(), &[0x0e, 0x0f]);
        assert_eq!(r.rest(), &[] as &[u8]);
        r.finish().unwrap();
    }

    #[test]
    fn truncation_reports_offset_and_field() {
        let mut r = Reader::new(&[0xff, 0x54, 0x43]);
        let e = r.u32().ctx("TPMS_ATTEST.magic").unwrap_err();
        assert_eq!(
            e,
            WireError::Truncated {
                field: "TPMS_ATTEST.magic",
                offset: 0,
                needed: 4,
                available: 3
            }
        );
        assert!(e.to_string().contains("TPMS_ATTEST.magic"), "{e}");
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 3);
    }

    #[test]
    fn tpm2b() {
        let mut r = Reader::new(&[0x00, 0x02, 0xaa, 0xbb, 0x00, 0x00, 0x00, 0x05, 0x01]);
        assert_eq!(r.tpm2b().unwrap(), &[0xaa, 0xbb]);
        assert_eq!(r.tpm2b().unwrap(), &[] as &[u8]);
        let e = r.tpm2b().unwrap_err();
        assert!(matches!(
            e,
            WireError::Truncated {
                offset: 6,
                needed: 7,
                available: 3,
                ..
            }
        ));
        // Position restored to the start of the failed buffer.
        assert_eq!(r.position(), 6);
    }

    #[test]
    fn tpm2b_max() {
        let mut r = Reader::new(&[0x00, 0x03, 1, 2, 3]);
        assert!(matches!(
            r.clone().tpm2b_max(2),
            Err(WireError::Invalid { .. })
        ));
        assert_eq!(r.tpm2b_max(3).unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3]);
        r.u8().unwrap();
        assert!(r.finish().is_err());
        let e = r.finish_as("TPMT_PUBLIC").unwrap_err();
        assert_eq!(
            e,
            WireError::TrailingBytes {
                structure: "TPMT_PUBLIC",
                offset: 1,
                count: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "2 trailing bytes after TPMT_PUBLIC (at offset 1)"
        );
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let mut r = Reader::new(&[1, 2, 3]);
        r.u8().unwrap();
        assert!(r.bytes(usize::MAX).is_err());
        assert_eq!(r.remaining(), 2);
        assert!(r.bytes(2).is_ok());
        assert!(r.u8().is_err());
        assert!(r.u16().is_err());
        assert!(r.u32().is_err());
        assert!(r.u64().is_err());
        assert!(r.tpm2b().is_err());
    }

    #[test]
    fn not_a_quote_flag() {
        assert!(WireError::NotAQuote { reason: "x".into() }.is_not_a_quote());
        assert!(!Reader::new(&[]).invalid("f", "r").is_not_a_quote());
    }
}
