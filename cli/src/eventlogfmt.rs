//! `trustpool eventlog show|replay FILE`: a TCG event log (the bytes of
//! `binary_bios_measurements`, or of the TXT log of a dynamic launch) as a
//! table or JSON. Pure: bytes in, text out (docs/eventlog.md).

use super::render::{short_digest, table, truncate};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use trustpool_evidence::eventlog::events::Decoder;
use trustpool_evidence::eventlog::proof::{self, EventProof};
use trustpool_evidence::eventlog::replay::{self, Replay};
use trustpool_evidence::eventlog::{alg::alg_id_name, parse, txt, EventLog, LogFormat};

/// Longest decoded summary in the `show` table.
const SUMMARY_WIDTH: usize = 100;

/// Parses the log, naming the file in the error.
pub fn read_log(name: &str, bytes: &[u8]) -> Result<EventLog, String> {
    parse(bytes).map_err(|e| format!("{name}: not a readable event log: {e}"))
}

/// Which log it is, hence where its replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The UEFI (static, SRTM) log: every PCR from its TPM2_Startup value
    /// (17-22 all-ones), PCR 0 from the StartupLocality event.
    Srtm,
    /// The TXT (dynamic, DRTM) log: PCRs 17-22 from zero, as after the
    /// locality-4 hash start; no event on another PCR.
    Drtm,
}

impl LogKind {
    /// What a log is when the operator does not say: DRTM if every extended
    /// event lies in PCRs 17-22 (and there is one), else SRTM.
    pub fn detect(log: &EventLog) -> LogKind {
        if txt::is_drtm(log) {
            LogKind::Drtm
        } else {
            LogKind::Srtm
        }
    }

    /// `srtm` or `drtm` (the JSON's `log`).
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Srtm => "srtm",
            LogKind::Drtm => "drtm",
        }
    }
}

/// Replays the log as `kind` (detected when None: [`LogKind::detect`]),
/// naming the file in the error.
pub fn replay_log(
    name: &str,
    log: &EventLog,
    kind: Option<LogKind>,
) -> Result<(LogKind, Replay), String> {
    let kind = kind.unwrap_or_else(|| LogKind::detect(log));
    let replayed = match kind {
        LogKind::Srtm => replay::replay(log),
        LogKind::Drtm => txt::replay_drtm(log),
    };
    replayed
        .map(|r| (kind, r))
        .map_err(|e| format!("{name}: the log does not replay: {e}"))
}

fn format_name(log: &EventLog) -> &'static str {
    match log.format {
        LogFormat::CryptoAgile => "crypto-agile",
        LogFormat::Sha1Legacy => "legacy SHA-1",
    }
}

fn header_line(name: &str, log: &EventLog) -> String {
    let banks: Vec<&str> = log.banks().iter().map(|a| a.name()).collect();
    let unknown: Vec<String> = log
        .unknown_algorithms()
        .into_iter()
        .map(alg_id_name)
        .collect();
    let skipped = if unknown.is_empty() {
        String::new()
    } else {
        format!(" (skipped, unknown: {})", unknown.join(","))
    };
    let drtm = if LogKind::detect(log) == LogKind::Drtm {
        ", DRTM (TXT): every extended event on PCR 17-22"
    } else {
        ""
    };
    format!(
        "{name}: {} log, {} events, banks {}{skipped}{drtm}\n",
        format_name(log),
        log.events.len(),
        banks.join(",")
    )
}

/// The data-proven marker of the `show` table.
pub fn proof_marker(p: EventProof) -> &'static str {
    match p {
        EventProof::Proven => "proven",
        EventProof::NotProven => "NOT PROVEN",
        EventProof::NotApplicable => "-",
    }
}

/// `eventlog show`: a header line, then one row per event: number, PCR,
/// type, each bank's digest (12 hex characters), the data-proven marker
/// and the decoded summary.
pub fn show_text(name: &str, log: &EventLog) -> String {
    let decoder = Decoder::for_log(log);
    let banks = log.banks();
    let mut headers: Vec<&str> = vec!["#", "PCR", "TYPE"];
    headers.extend(banks.iter().map(|a| a.name()));
    headers.extend(["PROVEN", "DATA"]);
    let rows: Vec<Vec<String>> = log
        .events
        .iter()
        .map(|e| {
            let mut row = vec![e.number.to_string(), e.pcr.to_string(), e.event_type.name()];
            row.extend(banks.iter().map(|a| {
                e.digest(*a)
                    .map(|d| short_digest(&hex::encode(d)))
                    .unwrap_or_else(|| "-".into())
            }));
            row.push(proof_marker(proof::event_proof(e)).to_string());
            let summary = super::one_line(&decoder.decode(e).summary());
            row.push(truncate(&summary, SUMMARY_WIDTH));
            row
        })
        .collect();
    let mut out = header_line(name, log);
    out.push_str(&table(&headers, &rows));
    let not_proven = log
        .events
        .iter()
        .filter(|e| proof::event_proof(e) == EventProof::NotProven)
        .count();
    if not_proven > 0 {
        let _ = writeln!(
            out,
            "{not_proven} event(s) NOT PROVEN: their data is not what their digest is the hash of; do not believe it"
        );
    }
    out
}

/// `eventlog show --json`: the header and every event with its digests,
/// raw data, decoded data and data-proven flags.
pub fn show_json(log: &EventLog) -> Value {
    let decoder = Decoder::for_log(log);
    let events: Vec<Value> = log
        .events
        .iter()
        .map(|e| {
            let proofs = proof::check(e);
            json!({
                "number": e.number,
                "offset": e.offset,
                "pcr": e.pcr,
                "type": e.event_type,
                "digests": e.digests,
                "data": hex::encode(&e.data),
                "decoded": decoder.decode(e),
                "data_proven": proof::summarize(&proofs),
                "proofs": proofs,
            })
        })
        .collect();
    json!({
        "format": log.format,
        "spec_id": log.spec_id,
        "banks": log.banks().iter().map(|a| a.name()).collect::<Vec<_>>(),
        "events": events,
    })
}

/// `eventlog replay`: per bank, the PCRs the log extends and their values.
pub fn replay_text(name: &str, log: &EventLog, kind: LogKind, replay: &Replay) -> String {
    let mut out = header_line(name, log);
    let _ = writeln!(
        out,
        "{} events, {} extended{}{}",
        replay.events,
        replay.extended,
        match replay.startup_locality {
            Some(l) => format!("; StartupLocality {l}: PCR 0 started at 00…0{l}"),
            None => String::new(),
        },
        match kind {
            LogKind::Drtm => "; replayed as a DRTM log: PCRs 17-22 started at zero",
            LogKind::Srtm => "",
        }
    );
    for bank in &replay.banks {
        let _ = writeln!(out, "{}:", bank.alg);
        for (pcr, value) in bank.extended_values() {
            let _ = writeln!(out, "  {pcr:>2}  {}", hex::encode(value));
        }
    }
    out
}

/// `eventlog replay --json`: `{"banks": {"sha256": {"0": "hex", …}, …},
/// "log": "srtm" or "drtm", "events": N, "extended": M,
/// "startup_locality": L or null}`.
pub fn replay_json(kind: LogKind, replay: &Replay) -> Value {
    let banks: Map<String, Value> = replay
        .banks
        .iter()
        .map(|b| {
            let pcrs: Map<String, Value> = b
                .extended_values()
                .into_iter()
                .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                .collect();
            (b.alg.name().to_string(), Value::Object(pcrs))
        })
        .collect();
    json!({
        "banks": banks,
        "log": kind.name(),
        "events": replay.events,
        "extended": replay.extended,
        "startup_locality": replay.startup_locality,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::eventlog::encode::{utf16z, variable_data, LogBuilder};
    use trustpool_evidence::eventlog::guid::Guid;
    use trustpool_evidence::eventlog::{Alg, EventType};

    fn log() -> Vec<u8> {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha1, Alg::Sha256]);
        b.startup_locality(3);
        b.event(0, EventType::EV_S_CRTM_VERSION, &utf16z("1.0"));
        b.event(
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data(Guid::EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]),
        );
        b.event_hashing(7, EventType::EV_SEPARATOR, b"other", &[0; 4]);
        b.finish()
    }

    #[test]
    fn show_lists_every_event_with_digests_and_proof() {
        let log = read_log("bios.bin", &log()).expect("parses");
        let text = show_text("bios.bin", &log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "bios.bin: crypto-agile log, 5 events, banks sha1,sha256"
        );
        assert!(lines[1].starts_with("#  PCR  TYPE"), "{text}");
        assert!(
            lines[1].contains("sha1") && lines[1].contains("sha256"),
            "{text}"
        );
        assert!(lines[3].contains("StartupLocality 3"), "{text}");
        let sha256 = hex::encode(Alg::Sha256.digest(&utf16z("1.0")));
        assert!(
            lines[4].contains(&sha256[..12]) && !lines[4].contains(&sha256[..13]),
            "{text}"
        );
        assert!(
            lines[4].contains("proven") && lines[4].contains("\"1.0\""),
            "{text}"
        );
        assert!(lines[5].contains("SecureBoot = 1"), "{text}");
        assert!(lines[6].contains("NOT PROVEN"), "{text}");
        assert!(lines[7].starts_with("1 event(s) NOT PROVEN"), "{text}");
        let json = show_json(&log);
        assert_eq!(json["events"].as_array().map(Vec::len), Some(5));
        assert_eq!(json["events"][3]["decoded"]["name"], "SecureBoot");
        assert_eq!(json["events"][3]["data_proven"], "proven");
        assert_eq!(json["events"][4]["data_proven"], "not_proven");
        assert_eq!(json["events"][4]["proofs"][0]["status"], "not_proven");
        assert_eq!(json["banks"], json!(["sha1", "sha256"]));
        assert_eq!(json["format"], "crypto_agile");
    }

    #[test]
    fn replay_prints_extended_pcrs_per_bank() {
        let log = read_log("bios.bin", &log()).expect("parses");
        let (kind, r) = replay_log("bios.bin", &log, None).expect("replays");
        assert_eq!(kind, LogKind::Srtm);
        let text = replay_text("bios.bin", &log, kind, &r);
        assert!(
            text.contains("5 events, 3 extended; StartupLocality 3"),
            "{text}"
        );
        let sha256 = r.bank(Alg::Sha256).expect("bank");
        let want = format!(
            "sha256:\n   0  {}\n   7  {}\n",
            hex::encode(sha256.value(0).expect("0")),
            hex::encode(sha256.value(7).expect("7"))
        );
        assert!(text.contains(&want), "{text}");
        let json = replay_json(kind, &r);
        assert_eq!(json["events"], 5);
        assert_eq!(json["log"], "srtm");
        assert_eq!(json["startup_locality"], 3);
        assert_eq!(
            json["banks"]["sha256"]["7"],
            hex::encode(sha256.value(7).expect("7"))
        );
        assert_eq!(json["banks"]["sha1"].as_object().map(Map::len), Some(2));
    }

    /// A TXT log as tboot writes it: hash start, MLE, a module.
    fn txt_log() -> Vec<u8> {
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event_hashing(17, EventType::EVTYPE_HASH_START, b"SINIT", &[]);
        b.event_hashing(18, EventType::EVTYPE_MLE_HASH, b"tboot", &[]);
        b.event_hashing(19, EventType::EVTTYPE_TB_MEASUREMENT, b"vmlinuz", &[]);
        b.finish()
    }

    #[test]
    fn a_txt_log_is_named_and_replays_from_the_drtm_start() {
        let txt = read_log("txt.bin", &txt_log()).expect("parses");
        let text = show_text("txt.bin", &txt);
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.ends_with("DRTM (TXT): every extended event on PCR 17-22")),
            "{text}"
        );
        for name in [
            "EVTYPE_HASH_START",
            "EVTYPE_MLE_HASH",
            "EVTTYPE_TB_MEASUREMENT",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
        assert_eq!(show_json(&txt)["events"][1]["type"], "EVTYPE_HASH_START");
        let (kind, r) = replay_log("txt.bin", &txt, None).expect("replays");
        assert_eq!(kind, LogKind::Drtm);
        let pcr17 = hex::encode(trustpool_evidence::pcr::drtm_hash_start(b"SINIT"));
        let text = replay_text("txt.bin", &txt, kind, &r);
        assert!(text.contains(&format!("  17  {pcr17}\n")), "{text}");
        assert!(text.contains("replayed as a DRTM log"), "{text}");
        let json = replay_json(kind, &r);
        assert_eq!(json["log"], "drtm");
        assert_eq!(json["banks"]["sha256"]["17"], pcr17);
        // --srtm: from the all-ones of TPM2_Startup, not what the TPM has.
        let (kind, r) = replay_log("txt.bin", &txt, Some(LogKind::Srtm)).expect("replays");
        assert_eq!(replay_json(kind, &r)["log"], "srtm");
        assert_ne!(replay_json(kind, &r)["banks"]["sha256"]["17"], pcr17);
        // --drtm on a UEFI log: its events lie outside 17-22.
        let uefi = read_log("bios.bin", &log()).expect("parses");
        let e = replay_log("bios.bin", &uefi, Some(LogKind::Drtm)).expect_err("not DRTM");
        assert!(e.contains("PCR 0") && e.contains("17-22"), "{e}");
    }

    #[test]
    fn unreadable_logs_name_the_file_and_event() {
        let bytes = log();
        let e = read_log("x.bin", &bytes[..bytes.len() - 1]).expect_err("truncated");
        assert!(
            e.starts_with("x.bin: not a readable event log: event 4 (record at offset"),
            "{e}"
        );
        let mut b = LogBuilder::crypto_agile(&[Alg::Sha256]);
        b.event(24, EventType::EV_SEPARATOR, &[0; 4]);
        let log = read_log("y.bin", &b.finish()).expect("parses");
        let e = replay_log("y.bin", &log, None).expect_err("PCR 24");
        assert!(
            e.contains("y.bin: the log does not replay: event 1") && e.contains("PCR 24"),
            "{e}"
        );
        // show still lists it.
        assert!(show_text("y.bin", &log).contains("EV_SEPARATOR"));
    }
}
