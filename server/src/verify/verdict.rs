//! The trust decision for one piece of evidence (DESIGN.md §3): quote,
//! nonce, TPM clock, measurements, measured launch, required hardening checks.
//! Every reason is collected; nothing here does I/O.

use super::challenge::Outstanding;
use super::eventlog::{judge_txt_log, judge_uefi_log, LogWork};
use super::facts::{evaluate_pool, Facts};
use super::report::parse_report;
use trustpool_evidence::binding::qualifying_data;
use trustpool_evidence::policy::PolicySet;
use trustpool_evidence::quote::{check_clock, verify_quote, ClockChange, QuoteCheck};
use trustpool_evidence::reason::Reason;
use trustpool_evidence::tpm::{ClockInfo, TpmPublic};
use trustpool_proto::v1::EventLog;

/// The last TPM clock information accepted for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredClock {
    /// TPM resetCount.
    pub reset_count: u32,
    /// TPM restartCount.
    pub restart_count: u32,
    /// TPM clock (ms).
    pub clock: u64,
}

/// What the server holds of a host from its earlier evidence.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    /// The last accepted TPM clock.
    pub clock: Option<StoredClock>,
    /// The facts of the last sound evidence (an unchanged event log is not
    /// parsed again).
    pub facts: Option<&'a Facts>,
}

/// The evidence an agent sent for one challenge.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceRef<'a> {
    /// The nonce the agent says it answers.
    pub nonce: &'a [u8],
    /// TPMS_ATTEST.
    pub attest: &'a [u8],
    /// TPMT_SIGNATURE.
    pub signature: &'a [u8],
    /// PCR values as reported.
    pub pcr_values: &'a [(u32, Vec<u8>)],
    /// Canonical hardening report bytes (may be empty).
    pub report: &'a [u8],
    /// The event logs sent with the quote.
    pub event_logs: &'a [EventLog],
}

/// The outcome of evaluating one piece of evidence.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Reasons that concern the evidence as a whole (and thus every pool).
    pub common: Vec<Reason>,
    /// Per pool: every reason against trust (empty = trusted).
    pub pools: Vec<(String, Vec<Reason>)>,
    /// The quote's clock, when the quote verified.
    pub clock: Option<StoredClock>,
    /// True when the clock shows a reboot (resetCount grew) or TPM restart.
    pub rebooted: bool,
    /// What the evidence proved, when it was sound (quote, nonce, clock).
    pub facts: Option<Facts>,
    /// How the UEFI event log was judged (None: the quote did not verify,
    /// so no log was looked at).
    pub log_work: Option<LogWork>,
}

impl Evaluation {
    /// The outcome for evidence that answers no outstanding challenge: the
    /// nonce's reason in every pool, nothing proven.
    pub fn unanswered(reason: Reason, policy: &PolicySet) -> Evaluation {
        Evaluation {
            common: vec![reason.clone()],
            pools: policy
                .pools
                .keys()
                .map(|name| (name.clone(), vec![reason.clone()]))
                .collect(),
            clock: None,
            rebooted: false,
            facts: None,
            log_work: None,
        }
    }

    /// Whether the evidence was sound (quote, nonce, clock, report): only
    /// sound evidence replaces a host's facts; unsound evidence withdraws them.
    pub fn is_sound(&self) -> bool {
        self.facts.is_some()
    }
}

/// Evaluates evidence from an enrolled host whose EK is not at hand: like
/// [`evaluate_evidence_under_ek`] except that the quote's qualifiedSigner
/// is not compared with the AK's qualified name (the signature still binds
/// the enrolled AK). Prefer [`evaluate_evidence_under_ek`].
pub fn evaluate_evidence(
    ak: &TpmPublic,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous: Previous<'_>,
    times: (i64, i64),
) -> Evaluation {
    evaluate(ak, None, challenge, evidence, policy, previous, times)
}

/// Evaluates evidence from an enrolled host.
///
/// `ak` and `ek` are the enrolled keys (the quote's qualifiedSigner must be
/// the AK's qualified name under the EK: `quote.signer_mismatch`);
/// `challenge` is the outcome of looking up the nonce on the stream;
/// `previous` the host's last accepted TPM clock and last sound facts;
/// `attested_at_ms`/`valid_until_ms` the time of this evaluation and the
/// validity of a trusted verdict from it. The facts of a sound quote carry
/// its signed firmwareVersion and clockInfo.safe.
pub fn evaluate_evidence_under_ek(
    ak: &TpmPublic,
    ek: &TpmPublic,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous: Previous<'_>,
    times: (i64, i64),
) -> Evaluation {
    evaluate(ak, Some(ek), challenge, evidence, policy, previous, times)
}

fn evaluate(
    ak: &TpmPublic,
    ek: Option<&TpmPublic>,
    challenge: Result<&Outstanding, Reason>,
    evidence: EvidenceRef<'_>,
    policy: &PolicySet,
    previous: Previous<'_>,
    (attested_at_ms, valid_until_ms): (i64, i64),
) -> Evaluation {
    let (previous_clock, previous_facts) = (previous.clock, previous.facts);
    // Evidence that answers no outstanding challenge costs nothing more:
    // no parsing, no signature check (a misbehaving host must not cost the
    // server more than an honest one).
    let challenge = match challenge {
        Ok(c) => c,
        Err(reason) => return Evaluation::unanswered(reason, policy),
    };
    let mut common = Vec::new();
    let expected_pcrs = challenge.pcrs.clone();
    let report = match parse_report(evidence.report) {
        Ok(r) => r,
        Err(reason) => {
            common.push(reason);
            None
        }
    };
    // The report is bound to the quote: a report changed after the quote
    // changes the expected qualifying data and fails the nonce check.
    let expected = qualifying_data(evidence.nonce, evidence.report);
    let check = QuoteCheck {
        attest: evidence.attest,
        signature: evidence.signature,
        ak,
        ek,
        expected_extra_data: &expected,
        expected_pcrs: &expected_pcrs,
        pcr_values: evidence.pcr_values,
    };
    let mut clock = None;
    let mut rebooted = false;
    let mut facts = None;
    let mut log_work = None;
    match verify_quote(&check) {
        Ok(verified) => {
            let current = verified.attest.clock_info;
            let previous = previous_clock.map(|c| ClockInfo {
                clock: c.clock,
                reset_count: c.reset_count,
                restart_count: c.restart_count,
                safe: true,
            });
            match check_clock(previous.as_ref(), &current) {
                Ok(change) => {
                    rebooted = change != ClockChange::Same;
                    clock = Some(StoredClock {
                        reset_count: current.reset_count,
                        restart_count: current.restart_count,
                        clock: current.clock,
                    });
                }
                Err(reason) => common.push(reason),
            }
            let (event_log, work) =
                judge_uefi_log(evidence.event_logs, &verified.pcrs, previous_facts);
            let (txt_log, _) = judge_txt_log(evidence.event_logs, &verified.pcrs, previous_facts);
            log_work = Some(work);
            facts = Some(Facts {
                attested_at_ms,
                valid_until_ms,
                pcrs: verified
                    .pcrs
                    .iter()
                    .map(|(i, v)| (*i, hex::encode(v)))
                    .collect(),
                statuses: report.as_ref().map(|r| r.statuses.clone()),
                check_reasons: report.as_ref().map(|r| r.reasons.clone()),
                params_digest: report.and_then(|r| r.params_digest),
                reset_count: current.reset_count,
                restart_count: current.restart_count,
                clock: current.clock,
                firmware_version: verified.firmware_version(),
                clock_safe: verified.clock_safe(),
                event_log,
                txt_log,
            });
        }
        Err(reasons) => common.extend(reasons),
    }
    let pools = policy
        .pools
        .iter()
        .map(|(name, pool)| {
            let mut reasons = common.clone();
            if let Some(facts) = &facts {
                reasons.extend(evaluate_pool(facts, pool, policy));
            }
            (name.clone(), reasons)
        })
        .collect();
    // Facts are only worth keeping when the evidence as a whole was sound.
    let facts = facts.filter(|_| common.is_empty());
    Evaluation {
        common,
        pools,
        clock,
        rebooted,
        facts,
        log_work,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_evidence::reason::codes;

    #[test]
    fn attack_unchallenged_evidence_is_refused_before_any_parsing_or_signature_check() {
        let text = "require_measured_launch = false\n[[allow]]\nname = \"b\"\npcrs = {}\n";
        let policy =
            trustpool_evidence::policy::parse_policy_set(&[("p.toml".into(), text.into())])
                .expect("policy");
        let ak = trustpool_evidence::tpm::parse_public_2b(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/swtpm/ak_rsa.pub"
        )))
        .expect("a real swtpm AK");
        let e = evaluate_evidence(
            &ak,
            Err(Reason::new(codes::NONCE_UNKNOWN, "never issued")),
            EvidenceRef {
                nonce: &[7; 32],
                attest: b"garbage that would not parse",
                signature: b"x",
                pcr_values: &[],
                report: b"{not json",
                event_logs: &[],
            },
            &policy,
            Previous::default(),
            (0, 1),
        );
        // Only the nonce's reason: the quote and report were never looked at.
        assert_eq!(e.common.len(), 1, "{:?}", e.common);
        assert_eq!(e.common[0].code, codes::NONCE_UNKNOWN);
        assert_eq!(e.pools[0].1.len(), 1);
        assert!(!e.is_sound());
    }

    /// (attest, signature, reported PCR values).
    type SignedQuote = (Vec<u8>, Vec<u8>, Vec<(u32, Vec<u8>)>);

    /// A software P-256 AK (ring through rcgen) under the swtpm RSA EK of
    /// the evidence test data, and a quote it signed for `outstanding`.
    struct SoftHost {
        ak: TpmPublic,
        ek: TpmPublic,
        key: rcgen::KeyPair,
    }

    impl SoftHost {
        fn new() -> SoftHost {
            use trustpool_evidence::tpm::{
                parse_public, parse_public_2b, HashAlg, PublicKey, Scheme,
            };
            let key = rcgen::KeyPair::generate().expect("P-256 key");
            let point = key.public_key_raw().to_vec();
            assert_eq!((point.len(), point[0]), (65, 4));
            let ak = parse_public(
                &trustpool_evidence::marshal::encode_public(
                    HashAlg::Sha256,
                    0x0005_0072,
                    &[],
                    &PublicKey::Ecc {
                        curve: trustpool_evidence::tpm::EccCurve::NistP256,
                        x: point[1..33].to_vec(),
                        y: point[33..].to_vec(),
                    },
                    None,
                    &Scheme::EcDsa(HashAlg::Sha256),
                )
                .expect("encode"),
            )
            .expect("AK");
            let ek = parse_public_2b(include_bytes!(
                "../../../evidence/testdata/swtpm/ek_rsa.pub"
            ))
            .expect("EK");
            SoftHost { ak, ek, key }
        }

        /// (attest, signature, pcr values) answering `c` with an empty report.
        fn quote(&self, c: &Outstanding, signer: &[u8]) -> SignedQuote {
            let values: Vec<(u32, Vec<u8>)> = c
                .pcrs
                .iter()
                .map(|i| (u32::from(*i), vec![*i; 32]))
                .collect();
            self.quote_values(c, signer, values)
        }

        /// Like [`SoftHost::quote`] over the given PCR values.
        fn quote_values(
            &self,
            c: &Outstanding,
            signer: &[u8],
            values: Vec<(u32, Vec<u8>)>,
        ) -> SignedQuote {
            use rcgen::SigningKey;
            use trustpool_evidence::tpm::{HashAlg, TpmSignature};
            let parts: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
            let attest = trustpool_evidence::marshal::encode_quote_attest(
                signer,
                &qualifying_data(&c.nonce, b""),
                &ClockInfo {
                    clock: 1000,
                    reset_count: 2,
                    restart_count: 0,
                    safe: false,
                },
                0x2019_1023_0016_3636,
                &[(HashAlg::Sha256, c.pcrs.clone())],
                &HashAlg::Sha256.digest_parts(&parts),
            )
            .expect("attest");
            // DER Ecdsa-Sig-Value → r, s.
            let der = self.key.sign(&attest).expect("sign");
            assert_eq!(der[0], 0x30);
            let (r_len, r_at) = (usize::from(der[3]), 4);
            let s_at = r_at + r_len + 2;
            let s_len = usize::from(der[s_at - 1]);
            let sig = TpmSignature::EcDsa {
                hash: HashAlg::Sha256,
                r: der[r_at..r_at + r_len].to_vec(),
                s: der[s_at..s_at + s_len].to_vec(),
            };
            let sig = trustpool_evidence::marshal::encode_signature(&sig).expect("sig");
            (attest, sig, values)
        }
    }

    fn open_policy() -> PolicySet {
        trustpool_evidence::policy::parse_policy_set(&[(
            "p.toml".into(),
            "require_measured_launch = false\npcrs = [0, 7]\n[[allow]]\nname = \"any\"\npcrs = {}\n"
                .into(),
        )])
        .expect("policy")
    }

    #[test]
    fn facts_carry_firmware_version_and_clock_safe() {
        let host = SoftHost::new();
        let c = Outstanding {
            nonce: [7; 32],
            pcrs: vec![0, 7],
            issued: std::time::Instant::now(),
        };
        let signer = host.ak.qualified_name_under_ek(&host.ek);
        let (attest, signature, values) = host.quote(&c, &signer);
        let evidence = EvidenceRef {
            nonce: &c.nonce,
            attest: &attest,
            signature: &signature,
            pcr_values: &values,
            report: b"",
            event_logs: &[],
        };
        let e = evaluate_evidence_under_ek(
            &host.ak,
            &host.ek,
            Ok(&c),
            evidence,
            &open_policy(),
            Previous::default(),
            (1, 2),
        );
        assert!(e.common.is_empty(), "{:?}", e.common);
        assert_eq!(e.pools, vec![("p".to_string(), vec![])]);
        let facts = e.facts.expect("facts");
        assert_eq!(facts.firmware_version, 0x2019_1023_0016_3636);
        assert!(!facts.clock_safe);
    }

    #[test]
    fn attack_quote_signed_by_the_ak_under_another_parent() {
        let host = SoftHost::new();
        let c = Outstanding {
            nonce: [9; 32],
            pcrs: vec![0, 7],
            issued: std::time::Instant::now(),
        };
        // The AK's plain name instead of its qualified name under the EK.
        let (attest, signature, values) = host.quote(&c, &host.ak.name());
        let evidence = EvidenceRef {
            nonce: &c.nonce,
            attest: &attest,
            signature: &signature,
            pcr_values: &values,
            report: b"",
            event_logs: &[],
        };
        let e = evaluate_evidence_under_ek(
            &host.ak,
            &host.ek,
            Ok(&c),
            evidence,
            &open_policy(),
            Previous::default(),
            (1, 2),
        );
        let codes: Vec<&str> = e.common.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, vec![codes::SIGNER_MISMATCH]);
        assert!(e.facts.is_none());
        assert_eq!(e.pools[0].1[0].code, codes::SIGNER_MISMATCH);
        // The variant without an EK (for callers that have none) does not compare.
        let e = evaluate_evidence(
            &host.ak,
            Ok(&c),
            evidence,
            &open_policy(),
            Previous::default(),
            (1, 2),
        );
        assert!(e.common.is_empty(), "{:?}", e.common);
    }

    #[test]
    fn an_event_log_is_replayed_against_the_verified_quote_and_reused_when_unchanged() {
        use trustpool_proto::event_log::encode;
        use trustpool_proto::v1::EventLogKind;
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/eventlog/ovmf/"
        );
        let log = std::fs::read(format!("{dir}ovmf-default.bin")).expect("log");
        let tpm: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
            serde_json::from_slice(
                &std::fs::read(format!("{dir}ovmf-default.pcrs.json")).expect("pcrs"),
            )
            .expect("json");
        let host = SoftHost::new();
        let c = Outstanding {
            nonce: [5; 32],
            pcrs: (0..=7).collect(),
            issued: std::time::Instant::now(),
        };
        let values: Vec<(u32, Vec<u8>)> = (0u32..=7)
            .map(|i| (i, hex::decode(&tpm["sha256"][&i.to_string()]).expect("hex")))
            .collect();
        let signer = host.ak.qualified_name_under_ek(&host.ek);
        let (attest, signature, values) = host.quote_values(&c, &signer, values);
        let logs = vec![encode(EventLogKind::Uefi, &log).expect("encode")];
        let evidence = EvidenceRef {
            nonce: &c.nonce,
            attest: &attest,
            signature: &signature,
            pcr_values: &values,
            report: b"",
            event_logs: &logs,
        };
        let judge = |previous| {
            evaluate_evidence_under_ek(
                &host.ak,
                &host.ek,
                Ok(&c),
                evidence,
                &open_policy(),
                previous,
                (1, 2),
            )
        };
        let first = judge(Previous::default());
        assert_eq!(first.log_work, Some(LogWork::Replayed));
        let facts = first.facts.expect("sound");
        let replayed = facts
            .event_log
            .as_ref()
            .and_then(|l| l.replayed())
            .expect("replayed");
        assert_eq!(replayed.replayed, (0..=7).collect::<Vec<u8>>());
        let again = judge(Previous {
            clock: None,
            facts: Some(&facts),
        });
        assert_eq!(again.log_work, Some(LogWork::Reused));
        assert_eq!(again.facts.expect("sound").event_log, facts.event_log);
    }
}
