//! The server's handling of an agent's stream without the network: bytes
//! in, decoded as a sequence of length-delimited protobuf `AgentMessage`s
//! (one stream), handled as `session.rs` does, a verdict or an error out.
//!
//! * `Hello`: host name check against the client certificate (`compute-01`),
//!   `parse_public` of EK and AK, `check_ak_attributes`; a host already
//!   enrolled with these keys (the swtpm EK and AKs of fuzz/testdata) goes on
//!   at once, any other keys go through enrolment: MakeCredential, the
//!   activation proof (this harness's TPM "activates" to 32 × 0x5a), and EK
//!   certificate verification against the swtpm-localca trust.
//! * `Evidence`: the nonce looked up in the stream's `ChallengeBook`, then
//!   `verdict::evaluate_evidence` with the enrolled AK, the policy of
//!   fuzz/testdata (PCRs of the swtpm host, measured launch, a required
//!   hardening check) and the host's last TPM clock.
//! * `ChallengeRequest`: a new challenge when none is pending.
//!
//! The seeds are real streams (the swtpm quotes bound to a report), so the
//! fuzzer starts at a trusted verdict. No panic on any input, and a trusted
//! verdict is only ever given for the TPM's own quote of that report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::sync::OnceLock;
use std::time::Instant;
use trustpool_evidence::credential::make_credential;
use trustpool_evidence::ekcert::verify_ek_certificate;
use trustpool_evidence::policy::{parse_policy_set, PolicySet};
use trustpool_evidence::tpm::{parse_attest, parse_public, TpmPublic};
use trustpool_fuzz::{bound, swtpm, swtpm_trust};
use trustpool_proto::v1::agent_message::Msg;
use trustpool_proto::v1::AgentMessage;
use trustpool_server::verify::challenge::ChallengeBook;
use trustpool_server::tls::identity::{valid_hostname, PeerIdentity};
use trustpool_server::verify::verdict::StoredClock;
use trustpool_server::verify::facts::Facts;
use trustpool_server::verify::verdict::{evaluate_evidence, EvidenceRef, Previous};

/// What this harness's TPM recovers with ActivateCredential.
const ACTIVATED: [u8; 32] = [0x5a; 32];
const ATTESTED_AT_MS: i64 = 1_800_000_000_000;
const DOWN_TIME_MS: i64 = 75_000;

/// Nonces: the first is the one the bound quotes answer, then fresh ones.
struct Nonces(u8);

impl RngCore for Nonces {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (d, s) in dest.iter_mut().zip(bound::NONCE) {
            *d = s;
        }
        if let Some(last) = dest.last_mut() {
            *last = last.wrapping_add(self.0);
        }
        self.0 = self.0.wrapping_add(1);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

struct World {
    policy: PolicySet,
    peer: PeerIdentity,
    /// TPMT_PUBLIC of the enrolled EK and AKs.
    enrolled_ek: Vec<u8>,
    enrolled_aks: Vec<Vec<u8>>,
    /// The clock of the bound quotes: the host's last accepted clock.
    clock: StoredClock,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let policy = std::str::from_utf8(include_bytes!("../testdata/policy.toml"))
            .expect("policy is text")
            .to_string();
        let policy = parse_policy_set(&[("compute.toml".to_string(), policy)]).expect("policy");
        let tpmt = |b: &[u8]| b.get(2..).expect("TPM2B_PUBLIC").to_vec();
        let c = parse_attest(bound::QUOTE_RSA)
            .expect("bound quote")
            .clock_info;
        World {
            policy,
            peer: PeerIdentity {
                dns_names: vec!["compute-01".into()],
                common_name: Some("compute-01".into()),
                fingerprint: "00".repeat(32),
                subject: "CN=compute-01".into(),
            },
            enrolled_ek: tpmt(bound::EK_RSA),
            enrolled_aks: vec![tpmt(bound::AK_RSA), tpmt(bound::AK_ECC)],
            clock: StoredClock {
                reset_count: c.reset_count,
                restart_count: c.restart_count,
                clock: c.clock,
            },
        }
    })
}

/// `TRUSTPOOL_FUZZ_DEBUG=1` prints every verdict (to check the seeds).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("TRUSTPOOL_FUZZ_DEBUG").is_some())
}

/// The stream's state after the handshake.
struct Session {
    ak: TpmPublic,
    book: ChallengeBook,
    nonces: Nonces,
    clock: Option<StoredClock>,
    /// The facts of the last sound evidence (an unchanged event log is
    /// reused from them).
    facts: Option<Facts>,
    now: Instant,
}

impl Session {
    fn challenge_if_idle(&mut self, w: &World) {
        if !self.book.has_pending(self.now) {
            self.book
                .issue(w.policy.union_pcrs(), self.now, &mut self.nonces);
        }
    }
}

/// Hello (and the enrolment it may need). `None` = the session ends.
fn handshake(
    w: &World,
    hello: &trustpool_proto::v1::Hello,
    next: &mut dyn FnMut() -> Option<Msg>,
) -> Option<TpmPublic> {
    let hostname = hello.hostname.to_ascii_lowercase();
    if !valid_hostname(&hostname) || !w.peer.speaks_for(&hostname) {
        return None;
    }
    let ek = parse_public(&hello.ek_public).ok()?;
    let ak = parse_public(&hello.ak_public).ok()?;
    ak.check_ak_attributes().ok()?;
    let known = hello.ek_public == w.enrolled_ek && w.enrolled_aks.contains(&hello.ak_public);
    if !known {
        let mut rng = StdRng::seed_from_u64(7);
        make_credential(&ek, &ak.name(), &ACTIVATED, &mut rng).ok()?;
        let Some(Msg::Activation(proof)) = next() else {
            return None;
        };
        if proof.secret != ACTIVATED {
            return None;
        }
        if !hello.ek_certificate.is_empty() {
            // Refused chains hold the enrolment for approval; either way
            // the stream goes on.
            let _ = verify_ek_certificate(
                &swtpm_trust().0,
                &hello.ek_certificate,
                &hello.ek_chain,
                &ek,
                swtpm::NOW,
            );
        }
    }
    Some(ak)
}

fn judge(w: &World, s: &mut Session, evidence: &trustpool_proto::v1::Evidence) {
    let challenge = s.book.take(&evidence.nonce, s.now);
    let pcr_values: Vec<(u32, Vec<u8>)> = evidence
        .pcr_values
        .iter()
        .map(|p| (p.index, p.digest.clone()))
        .collect();
    let evaluation = evaluate_evidence(
        &s.ak,
        challenge.as_ref().map_err(Clone::clone),
        EvidenceRef {
            nonce: &evidence.nonce,
            attest: &evidence.attest,
            signature: &evidence.signature,
            pcr_values: &pcr_values,
            report: &evidence.hardening_report,
            event_logs: &evidence.event_logs,
        },
        &w.policy,
        Previous {
            clock: s.clock,
            facts: s.facts.as_ref(),
        },
        (ATTESTED_AT_MS, ATTESTED_AT_MS + DOWN_TIME_MS),
    );
    if debug() {
        eprintln!(
            "verdict: common {:?}, pools {:?}",
            evaluation.common, evaluation.pools
        );
    }
    for (pool, reasons) in &evaluation.pools {
        if reasons.is_empty() {
            assert!(challenge.is_ok(), "pool {pool} trusted without a challenge");
            assert!(evaluation.common.is_empty() && evaluation.facts.is_some());
            assert_eq!(evidence.nonce, bound::NONCE, "trusted on another nonce");
            assert_eq!(
                evidence.hardening_report,
                bound::REPORT,
                "trusted with a report the TPM did not quote"
            );
        }
    }
    if let Some(clock) = evaluation.clock {
        s.clock = Some(clock);
    }
    if let Some(facts) = evaluation.facts {
        s.facts = Some(facts);
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut buf = data;
    let mut next = || -> Option<Msg> {
        if buf.is_empty() {
            return None;
        }
        // Unreadable or empty message: "protocol.malformed", the stream ends.
        AgentMessage::decode_length_delimited(&mut buf).ok()?.msg
    };
    let Some(Msg::Hello(hello)) = next() else {
        return;
    };
    let Some(ak) = handshake(w, &hello, &mut next) else {
        return;
    };
    let mut s = Session {
        ak,
        book: ChallengeBook::default(),
        nonces: Nonces(0),
        clock: Some(w.clock),
        facts: None,
        now: Instant::now(),
    };
    s.challenge_if_idle(w);
    while let Some(msg) = next() {
        match msg {
            Msg::Evidence(e) => {
                judge(w, &mut s, &e);
                s.challenge_if_idle(w);
            }
            Msg::ChallengeRequest(_) => s.challenge_if_idle(w),
            // "protocol.unexpected": the stream ends.
            Msg::Hello(_) | Msg::Activation(_) => return,
        }
    }
});
