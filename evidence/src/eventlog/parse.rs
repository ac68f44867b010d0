//! Framing of an event log: the records, their digests and the Spec ID
//! Event03 header. What an event's data means is [`super::events`]' job.

use super::alg::Alg;
use super::types::EventType;
use super::{
    Event, EventDigest, EventLog, EventLogError, LogFormat, SpecId, SpecIdAlgorithm, MAX_EVENTS,
    MAX_LOG_SIZE,
};
use crate::wire::{Reader, WireError, WireResultExt};

/// `Spec ID Event03\0`: the signature of the crypto-agile log header.
pub const SPEC_ID_EVENT03: &[u8; 16] = b"Spec ID Event03\0";

/// Most algorithms a Spec ID header may list (the TCG registry has fewer
/// hash algorithms than this).
pub const MAX_SPEC_ID_ALGORITHMS: u32 = 16;

/// Largest digest size accepted in a Spec ID header (SHA-512: 64 bytes;
/// room for an unknown algorithm's larger digest).
pub const MAX_DIGEST_SIZE: u16 = 128;

/// Size of a legacy `TCG_PCClientPCREvent` header (pcrIndex, eventType,
/// SHA-1 digest, eventSize).
const LEGACY_HEADER: usize = 4 + 4 + 20 + 4;

/// Parses a whole event log: crypto-agile (a Spec ID Event03 header, then
/// `TCG_PCR_EVENT2` records) or legacy SHA-1 (`TCG_PCClientPCREvent`
/// records only). The header is event 0, as tpm2_eventlog numbers it.
///
/// A record that is truncated, overlong, names an algorithm the header
/// does not list or repeats one is an error naming the event number and
/// the byte offset of its record; what an event's data contains is not
/// checked here (see [`super::events::decode`]).
pub fn parse(log: &[u8]) -> Result<EventLog, EventLogError> {
    if log.is_empty() {
        return Err(EventLogError::Empty);
    }
    if log.len() > MAX_LOG_SIZE {
        return Err(EventLogError::TooLarge {
            size: log.len(),
            max: MAX_LOG_SIZE,
        });
    }
    let mut r = Reader::new(log);
    let first = legacy_record(&mut r, 0).map_err(|source| EventLogError::Record {
        event: 0,
        offset: 0,
        source,
    })?;
    let is_agile = first.event_type == EventType::EV_NO_ACTION
        && first.pcr == 0
        && first.data.starts_with(SPEC_ID_EVENT03);
    if !is_agile {
        let mut events = vec![first];
        read_all(&mut r, &mut events, legacy_record)?;
        return Ok(EventLog {
            format: LogFormat::Sha1Legacy,
            spec_id: None,
            events,
        });
    }
    let spec_id =
        parse_spec_id(&first.data, LEGACY_HEADER).map_err(|source| EventLogError::Record {
            event: 0,
            offset: 0,
            source,
        })?;
    let mut events = vec![first];
    read_all(&mut r, &mut events, |r, n| agile_record(r, n, &spec_id))?;
    Ok(EventLog {
        format: LogFormat::CryptoAgile,
        spec_id: Some(spec_id),
        events,
    })
}

fn read_all(
    r: &mut Reader<'_>,
    events: &mut Vec<Event>,
    mut record: impl FnMut(&mut Reader<'_>, usize) -> Result<Event, WireError>,
) -> Result<(), EventLogError> {
    while r.remaining() > 0 {
        let number = events.len();
        if number >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents { max: MAX_EVENTS });
        }
        let offset = r.position();
        let event = record(r, number).map_err(|source| EventLogError::Record {
            event: number,
            offset,
            source,
        })?;
        events.push(event);
    }
    Ok(())
}

/// One `TCG_PCClientPCREvent` (legacy SHA-1 format, and the first record of
/// a crypto-agile log).
fn legacy_record(r: &mut Reader<'_>, number: usize) -> Result<Event, WireError> {
    let offset = r.position();
    let pcr = r.u32_le().ctx("TCG_PCClientPCREvent.pcrIndex")?;
    let event_type = EventType(r.u32_le().ctx("TCG_PCClientPCREvent.eventType")?);
    let digest = r.bytes(20).ctx("TCG_PCClientPCREvent.digest")?;
    let data = event_data(
        r,
        "TCG_PCClientPCREvent.eventSize",
        "TCG_PCClientPCREvent.event",
    )?;
    Ok(Event {
        number,
        offset,
        pcr,
        event_type,
        digests: vec![EventDigest {
            alg_id: Alg::Sha1.id(),
            digest: digest.to_vec(),
        }],
        data: data.to_vec(),
    })
}

/// One `TCG_PCR_EVENT2`, digest sizes from the Spec ID header.
fn agile_record(r: &mut Reader<'_>, number: usize, spec: &SpecId) -> Result<Event, WireError> {
    let offset = r.position();
    let pcr = r.u32_le().ctx("TCG_PCR_EVENT2.pcrIndex")?;
    let event_type = EventType(r.u32_le().ctx("TCG_PCR_EVENT2.eventType")?);
    let count_at = r.position();
    let count = r.u32_le().ctx("TPML_DIGEST_VALUES.count")?;
    if count as usize > spec.algorithms.len() {
        return Err(WireError::Invalid {
            field: "TPML_DIGEST_VALUES.count",
            offset: count_at,
            reason: format!(
                "{count} digests but the Spec ID header lists {} algorithms",
                spec.algorithms.len()
            ),
        });
    }
    let mut digests: Vec<EventDigest> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = r.position();
        let alg_id = r.u16_le().ctx("TPMT_HA.hashAlg")?;
        let Some(size) = spec.digest_size(alg_id) else {
            return Err(WireError::Invalid {
                field: "TPMT_HA.hashAlg",
                offset: at,
                reason: format!(
                    "algorithm 0x{alg_id:04x} is not in the Spec ID header, its digest size is unknown"
                ),
            });
        };
        if digests.iter().any(|d| d.alg_id == alg_id) {
            return Err(WireError::Invalid {
                field: "TPMT_HA.hashAlg",
                offset: at,
                reason: format!("a second digest of algorithm 0x{alg_id:04x}"),
            });
        }
        let digest = r.bytes(usize::from(size)).ctx("TPMT_HA.digest")?;
        digests.push(EventDigest {
            alg_id,
            digest: digest.to_vec(),
        });
    }
    let data = event_data(r, "TCG_PCR_EVENT2.eventSize", "TCG_PCR_EVENT2.event")?;
    Ok(Event {
        number,
        offset,
        pcr,
        event_type,
        digests,
        data: data.to_vec(),
    })
}

fn event_data<'a>(
    r: &mut Reader<'a>,
    size_field: &'static str,
    data_field: &'static str,
) -> Result<&'a [u8], WireError> {
    let size = r.u32_le().ctx(size_field)?;
    let size = usize::try_from(size).map_err(|_| r.invalid(size_field, "does not fit"))?;
    r.bytes(size).ctx(data_field)
}

/// Parses a `TCG_EfiSpecIDEvent` (the data of the header event, or of a
/// later EV_NO_ACTION event carrying one). `base` is the data's offset in
/// the log, so errors name offsets in the log.
pub fn parse_spec_id(data: &[u8], base: usize) -> Result<SpecId, WireError> {
    spec_id(data).map_err(|e| shift(e, base))
}

fn spec_id(data: &[u8]) -> Result<SpecId, WireError> {
    let mut r = Reader::new(data);
    let signature = r.bytes(16).ctx("TCG_EfiSpecIDEvent.signature")?;
    if signature != SPEC_ID_EVENT03 {
        return Err(WireError::Invalid {
            field: "TCG_EfiSpecIDEvent.signature",
            offset: 0,
            reason: "not \"Spec ID Event03\"".into(),
        });
    }
    let platform_class = r.u32_le().ctx("TCG_EfiSpecIDEvent.platformClass")?;
    let spec_version_minor = r.u8().ctx("TCG_EfiSpecIDEvent.specVersionMinor")?;
    let spec_version_major = r.u8().ctx("TCG_EfiSpecIDEvent.specVersionMajor")?;
    let spec_errata = r.u8().ctx("TCG_EfiSpecIDEvent.specErrata")?;
    let uintn_size = r.u8().ctx("TCG_EfiSpecIDEvent.uintnSize")?;
    let n_at = r.position();
    let n = r.u32_le().ctx("TCG_EfiSpecIDEvent.numberOfAlgorithms")?;
    if n == 0 || n > MAX_SPEC_ID_ALGORITHMS {
        return Err(WireError::Invalid {
            field: "TCG_EfiSpecIDEvent.numberOfAlgorithms",
            offset: n_at,
            reason: format!("{n} algorithms (1 to {MAX_SPEC_ID_ALGORITHMS} accepted)"),
        });
    }
    let mut algorithms: Vec<SpecIdAlgorithm> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = r.position();
        let alg_id = r
            .u16_le()
            .ctx("TCG_EfiSpecIdEventAlgorithmSize.algorithmId")?;
        let size_at = r.position();
        let digest_size = r
            .u16_le()
            .ctx("TCG_EfiSpecIdEventAlgorithmSize.digestSize")?;
        if algorithms.iter().any(|a| a.alg_id == alg_id) {
            return Err(WireError::Invalid {
                field: "TCG_EfiSpecIdEventAlgorithmSize.algorithmId",
                offset: at,
                reason: format!("algorithm 0x{alg_id:04x} listed twice"),
            });
        }
        let wrong_size = Alg::from_id(alg_id).is_some_and(|a| a.size() != usize::from(digest_size));
        if digest_size == 0 || digest_size > MAX_DIGEST_SIZE || wrong_size {
            return Err(WireError::Invalid {
                field: "TCG_EfiSpecIdEventAlgorithmSize.digestSize",
                offset: size_at,
                reason: format!("{digest_size} bytes for algorithm 0x{alg_id:04x}"),
            });
        }
        algorithms.push(SpecIdAlgorithm {
            alg_id,
            digest_size,
        });
    }
    let vendor_size = r.u8().ctx("TCG_EfiSpecIDEvent.vendorInfoSize")?;
    let vendor_info = r
        .bytes(usize::from(vendor_size))
        .ctx("TCG_EfiSpecIDEvent.vendorInfo")?
        .to_vec();
    r.finish_as("TCG_EfiSpecIDEvent")?;
    Ok(SpecId {
        platform_class,
        spec_version_major,
        spec_version_minor,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// Moves the offsets of an error in a sub-structure by `base`.
pub(crate) fn shift(e: WireError, base: usize) -> WireError {
    match e {
        WireError::Truncated {
            field,
            offset,
            needed,
            available,
        } => WireError::Truncated {
            field,
            offset: offset.saturating_add(base),
            needed,
            available,
        },
        WireError::TrailingBytes {
            structure,
            offset,
            count,
        } => WireError::TrailingBytes {
            structure,
            offset: offset.saturating_add(base),
            count,
        },
        WireError::Invalid {
            field,
            offset,
            reason,
        } => WireError::Invalid {
            field,
            offset: offset.saturating_add(base),
            reason,
        },
        other => other,
    }
}
