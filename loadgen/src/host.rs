//! One simulated host: the conversation of agent/src/client.rs, with the
//! software TPM of [`crate::softtpm`] in place of the real one.
//!
//! Hello (EK public, EK certificate, AK public) → on `CredentialChallenge`
//! the activated secret → `Enrolled` → for every `AttestChallenge` the
//! hardening report, `qualifying_data = H(nonce || H(report))`, a quote
//! over the asked PCRs and the PCR values → `Verdict`. A change of the
//! simulated PCRs (`--flip`) sends a `ChallengeRequest` at once, as the
//! agent's change watch does. Reconnects with jittered exponential
//! back-off; counts every failure by code.
//!
//! Every Evidence carries the run's event logs ([`Firmware`]): the UEFI
//! log `pki --event-log` copied into the directory, or, without one, the
//! reason a real agent gives when it has no log; a TXT entry saying the
//! simulated host has no TXT log.

use crate::connector::{BoundTlsConnector, TlsShared};
use crate::pki::{host_file, host_name, read_event_log, VendorCa};
use crate::softtpm::{hardening_report, Banks, Quote, SoftTpm};
use crate::stats::Stats;
use anyhow::{anyhow, Context};
use rand::Rng;
use rustls_pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use trustpool_daemon::failover::{start_index, Failover, Outcome};
use trustpool_evidence::binding::qualifying_data;
use trustpool_proto::event_log::{encode, unavailable};
use trustpool_proto::v1::agent_message::Msg as AgentMsg;
use trustpool_proto::v1::attestation_client::AttestationClient;
use trustpool_proto::v1::server_message::Msg as ServerMsg;
use trustpool_proto::v1::{
    ActivationProof, AgentMessage, ChallengeRequest, EventLog, EventLogKind, Evidence, Hello,
    PcrValue,
};

/// Number of loopback source addresses hosts are spread over (127.0.0.1-16).
pub const SOURCE_ADDRESSES: u32 = 16;

/// Why a host of a run without `pki --event-log` sends no UEFI log.
pub const NO_UEFI_LOG: &str = "trustpool-loadgen: no event log (pki without --event-log)";

/// Why no simulated host sends a TXT log.
pub const NO_TXT_LOG: &str = "trustpool-loadgen: simulated hosts have no TXT event log";

/// What every host of a run booted: the banks it quotes and the event logs
/// it sends with each Evidence. Built once per run (the log read, checked,
/// replayed and encoded — compressed above 4 KiB — a single time) and
/// shared by every host through [`Ctx`]: a send clones the messages, which
/// is what goes on the wire, and never encodes again.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// Golden and rogue banks: the UEFI log's replay, or the synthetic ones.
    pub banks: Banks,
    /// The `event_logs` of every Evidence: one UEFI and one TXT message.
    pub event_logs: Vec<EventLog>,
    /// Size of the UEFI log sent (None: its absence is sent instead).
    pub uefi_log_bytes: Option<usize>,
}

impl Firmware {
    /// Hosts without an event log: the synthetic banks, and the reasons
    /// for having no log a real agent would send.
    pub fn without_log() -> Firmware {
        Firmware {
            banks: Banks::synthetic(),
            event_logs: vec![
                unavailable(EventLogKind::Uefi, NO_UEFI_LOG),
                unavailable(EventLogKind::Txt, NO_TXT_LOG),
            ],
            uefi_log_bytes: None,
        }
    }

    /// Hosts that booted what the UEFI event log `log` records
    /// ([`Banks::from_uefi_log`]) and send it.
    pub fn with_uefi_log(log: &[u8]) -> anyhow::Result<Firmware> {
        let banks = Banks::from_uefi_log(log)?;
        let uefi = encode(EventLogKind::Uefi, log).context("encoding the UEFI event log")?;
        Ok(Firmware {
            banks,
            event_logs: vec![uefi, unavailable(EventLogKind::Txt, NO_TXT_LOG)],
            uefi_log_bytes: Some(log.len()),
        })
    }

    /// The firmware of the hosts of `pki` directory `dir`: its UEFI log if
    /// `pki --event-log` put one there, else none. The same banks as the
    /// policy `pki` wrote.
    pub fn load(dir: &Path) -> anyhow::Result<Firmware> {
        match read_event_log(dir)? {
            Some((path, log)) => Firmware::with_uefi_log(&log)
                .with_context(|| format!("the event log {}", path.display())),
            None => Ok(Firmware::without_log()),
        }
    }
}

/// The Evidence answering a challenge: the quote, the report it binds and
/// the run's event logs.
fn evidence(nonce: Vec<u8>, quote: Quote, report: &[u8], firmware: &Firmware) -> Evidence {
    Evidence {
        nonce,
        attest: quote.attest,
        signature: quote.signature,
        pcr_values: quote
            .pcr_values
            .into_iter()
            .map(|(index, digest)| PcrValue { index, digest })
            .collect(),
        hardening_report: report.to_vec(),
        event_logs: firmware.event_logs.clone(),
    }
}

/// What every host shares.
pub struct Ctx {
    /// The `pki` directory.
    pub dir: PathBuf,
    /// Seed of the EK/AK keys.
    pub seed: [u8; 32],
    /// Issues EK certificates.
    pub vendor: VendorCa,
    /// TLS shared parts.
    pub tls: TlsShared,
    /// The servers' gRPC addresses and TLS names (replicas of one service).
    pub servers: Vec<(SocketAddr, ServerName<'static>)>,
    /// Bind each host to 127.0.0.(1 + i % 16) (loopback servers only).
    pub bind_sources: bool,
    /// Counters.
    pub stats: Stats,
    /// True once the run is over.
    pub stop: watch::Receiver<bool>,
    /// HTTP/2 keep-alive interval (`run --keepalive-interval`, the agent's
    /// default) and timeout.
    pub keepalive: (Duration, Duration),
    /// The banks quoted and the event logs sent, the same for every host.
    pub firmware: Arc<Firmware>,
    /// Hardening report bytes for the last check parameters seen.
    report: Mutex<Option<(String, Arc<Vec<u8>>)>>,
}

impl Ctx {
    /// A context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        seed: [u8; 32],
        vendor: VendorCa,
        tls: TlsShared,
        servers: Vec<(SocketAddr, ServerName<'static>)>,
        firmware: Arc<Firmware>,
        stop: watch::Receiver<bool>,
    ) -> Ctx {
        Ctx {
            dir,
            seed,
            vendor,
            tls,
            bind_sources: servers
                .iter()
                .all(|(a, _)| a.ip().is_loopback() && a.is_ipv4()),
            servers,
            stats: Stats::new(),
            stop,
            keepalive: (Duration::from_secs(40), Duration::from_secs(5)),
            firmware,
            report: Mutex::new(None),
        }
    }

    fn report(&self, params: &str) -> Arc<Vec<u8>> {
        let mut guard = self.report.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, r)) = guard.as_ref() {
            if p == params {
                return r.clone();
            }
        }
        let r = Arc::new(hardening_report(params));
        *guard = Some((params.to_string(), r.clone()));
        r
    }
}

/// What the flip controller hears from its host.
#[derive(Debug, Clone, Copy)]
pub enum HostEvent {
    /// Evidence was sent, quoting the rogue (true) or golden bank.
    EvidenceSent {
        /// Which bank.
        rogue: bool,
        /// When.
        at: Instant,
    },
    /// A verdict came back.
    Verdict {
        /// Trusted in every pool.
        trusted: bool,
        /// When.
        at: Instant,
    },
}

/// Last verdict trusted (0: no verdict yet).
pub const LAST_TRUSTED: u8 = 1;
/// Last verdict untrusted.
pub const LAST_UNTRUSTED: u8 = 2;

/// Per-host control, kept small (100,000 of them).
#[derive(Default)]
pub struct Slot {
    /// Churn: end the session now (`notify_waiters`).
    pub kick: Notify,
    /// The bank changed: ask for a challenge (`notify_one`).
    pub change: Notify,
    /// Quote the rogue bank.
    pub rogue: AtomicBool,
    /// 0 (no verdict yet), [`LAST_TRUSTED`] or [`LAST_UNTRUSTED`].
    pub last: AtomicU8,
    /// Set for the flipped host only.
    pub observer: OnceLock<mpsc::UnboundedSender<HostEvent>>,
}

enum End {
    Stopped,
    Kicked,
    Closed,
}

/// A failure with its code for the error table.
struct Failure {
    code: String,
    error: anyhow::Error,
}

fn fail(code: &str) -> impl FnOnce(anyhow::Error) -> Failure + '_ {
    move |error| Failure {
        code: code.to_string(),
        error,
    }
}

/// Runs host `index` until the run stops: waits `start_delay`, then
/// sessions with reconnection.
pub async fn run_host(ctx: Arc<Ctx>, slot: Arc<Slot>, index: u32, start_delay: Duration) {
    let mut stop = ctx.stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(start_delay) => {}
        _ = stopped(&mut stop) => return,
    }
    let tpm = match SoftTpm::derive(&ctx.seed, index) {
        Ok(t) => t,
        Err(e) => {
            ctx.stats.error("loadgen.tpm");
            tracing::error!(host = index, error = %format!("{e:#}"), "cannot build the software TPM");
            return;
        }
    };
    let mut host = HostState {
        index,
        name: host_name(index),
        tpm,
        boot: Instant::now(),
        connected_once: false,
        enrolled_once: false,
        server: 0,
    };
    let mut failover = Failover::with_limits(
        ctx.servers.len(),
        start_index(&host.name, ctx.servers.len()),
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    loop {
        if *stop.borrow() {
            return;
        }
        host.server = failover.current();
        let began = Instant::now();
        let outcome = session(&ctx, &slot, &mut host).await;
        // A stream that stayed up for a while was healthy: the back-off
        // starts again from its base, as the agent's does after a round.
        let healthy = began.elapsed() >= HEALTHY_SESSION;
        let delay = match outcome {
            Ok(End::Stopped) => return,
            Ok(End::Kicked) => Duration::from_millis(rand::thread_rng().gen_range(10..500)),
            Ok(End::Closed) => {
                ctx.stats.error("stream.closed_by_server");
                next(&mut failover, healthy)
            }
            Err(f) => {
                ctx.stats.error(&f.code);
                tracing::debug!(host = %host.name, code = %f.code, error = %format!("{:#}", f.error), "session failed");
                next(&mut failover, healthy)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// A session that lasted this long counts as healthy for the back-off.
const HEALTHY_SESSION: Duration = Duration::from_secs(5);

/// The wait before the next server of the list after a lost session.
fn next(failover: &mut Failover, healthy: bool) -> Duration {
    let outcome = if healthy {
        Outcome::Healthy
    } else {
        Outcome::Failed
    };
    failover.next_delay(outcome, &mut rand::thread_rng()).delay
}

struct HostState {
    index: u32,
    name: String,
    tpm: SoftTpm,
    boot: Instant,
    connected_once: bool,
    enrolled_once: bool,
    /// Index in `Ctx::servers` of the server of the current session.
    server: usize,
}

/// Completes when the run stops (the guard of `wait_for` is not `Send`).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn msg(m: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

async fn session(ctx: &Ctx, slot: &Slot, host: &mut HostState) -> Result<End, Failure> {
    let pem = tokio::fs::read(host_file(&ctx.dir, host.index))
        .await
        .with_context(|| format!("reading {}", host_file(&ctx.dir, host.index).display()))
        .map_err(fail("loadgen.host_file"))?;
    let tls = ctx
        .tls
        .client_config(&pem)
        .map_err(fail("loadgen.host_file"))?;
    drop(pem);
    let source = ctx.bind_sources.then(|| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (host.index % SOURCE_ADDRESSES) as u8,
        ))
    });
    let connector = BoundTlsConnector {
        source,
        server: ctx.servers[host.server].0,
        server_name: ctx.servers[host.server].1.clone(),
        tls,
    };
    // The URI only names the authority: the connector does TCP and TLS.
    let server = ctx.servers[host.server].0;
    let endpoint = Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| anyhow!("endpoint: {e}"))
        .map_err(fail("loadgen.endpoint"))?
        .connect_timeout(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(ctx.keepalive.0)
        .keep_alive_timeout(ctx.keepalive.1);
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow!("connecting to {server}: {e:?}"))
        .map_err(fail("connect"))?;
    let ek_certificate = ctx
        .vendor
        .ek_certificate(&host.name, &host.tpm.ek_sec1())
        .map_err(fail("loadgen.ek_certificate"))?;
    let mut client = AttestationClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(4);
    let _ = tx
        .send(msg(AgentMsg::Hello(Hello {
            hostname: host.name.clone(),
            agent_version: concat!("trustpool-loadgen ", env!("CARGO_PKG_VERSION")).into(),
            ek_public: host.tpm.ek_public.clone(),
            ek_certificate,
            ak_public: host.tpm.ak_public.clone(),
            ek_chain: Vec::new(),
        })))
        .await;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow!("opening the stream: {s}"))
        .map_err(fail("stream.open"))?
        .into_inner();
    ctx.stats.sessions.fetch_add(1, Relaxed);
    ctx.stats.stream_open();
    if host.connected_once {
        ctx.stats.reconnects.fetch_add(1, Relaxed);
    }
    if !host.connected_once {
        host.connected_once = true;
        ctx.stats.hosts_connected.fetch_add(1, Relaxed);
    }
    let outcome = converse(ctx, slot, host, &tx, &mut inbound).await;
    if matches!(outcome, Ok(End::Stopped | End::Kicked)) {
        // Close like an agent that stops: end our half of the stream and
        // let the server end its own (it records "agent closed its
        // session", not a lost link).
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
    ctx.stats.stream_closed();
    outcome
}

async fn converse(
    ctx: &Ctx,
    slot: &Slot,
    host: &mut HostState,
    tx: &mpsc::Sender<AgentMessage>,
    inbound: &mut tonic::Streaming<trustpool_proto::v1::ServerMessage>,
) -> Result<End, Failure> {
    let mut stop = ctx.stop.clone();
    let mut challenged_at: Option<Instant> = None;
    let send = |m: AgentMsg| async move {
        tx.send(msg(m))
            .await
            .map_err(|_| anyhow!("the stream closed"))
            .map_err(fail("stream.send"))
    };
    loop {
        let message = tokio::select! {
            m = inbound.message() => m.map_err(|s| anyhow!("reading from the server: {s}")).map_err(fail("stream.lost"))?,
            _ = stopped(&mut stop) => return Ok(End::Stopped),
            _ = slot.kick.notified() => return Ok(End::Kicked),
            _ = slot.change.notified() => {
                let rogue = slot.rogue.load(Relaxed);
                host.tpm.bank = ctx.firmware.banks.pick(rogue);
                send(AgentMsg::ChallengeRequest(ChallengeRequest {
                    reason: "pcr 17 changed".into(),
                }))
                .await?;
                continue;
            }
        };
        let Some(message) = message else {
            return Ok(End::Closed);
        };
        match message.msg {
            Some(ServerMsg::CredentialChallenge(c)) => {
                let secret = host
                    .tpm
                    .activate_credential(&c.credential_blob, &c.encrypted_secret)
                    .map_err(fail("loadgen.activation"))?;
                ctx.stats.activations.fetch_add(1, Relaxed);
                send(AgentMsg::Activation(ActivationProof { secret })).await?;
            }
            Some(ServerMsg::Enrolled(e)) => {
                if e.new_enrolment {
                    ctx.stats.new_enrolments.fetch_add(1, Relaxed);
                }
                if !host.enrolled_once {
                    host.enrolled_once = true;
                    ctx.stats.first_enrolment();
                }
            }
            Some(ServerMsg::Challenge(c)) => {
                let t0 = Instant::now();
                let rogue = slot.rogue.load(Relaxed);
                host.tpm.bank = ctx.firmware.banks.pick(rogue);
                let report = ctx.report(&c.check_params_json);
                let qd = qualifying_data(&c.nonce, &report);
                let clock_ms = 1_000_000 + host.boot.elapsed().as_millis() as u64;
                let quote = host
                    .tpm
                    .quote(&qd, &c.pcrs, clock_ms)
                    .map_err(fail("loadgen.quote"))?;
                send(AgentMsg::Evidence(evidence(
                    c.nonce,
                    quote,
                    &report,
                    &ctx.firmware,
                )))
                .await?;
                if let Some(o) = slot.observer.get() {
                    let _ = o.send(HostEvent::EvidenceSent {
                        rogue,
                        at: Instant::now(),
                    });
                }
                challenged_at = Some(t0);
            }
            Some(ServerMsg::Verdict(v)) => {
                let trusted = !v.pools.is_empty() && v.pools.iter().all(|p| p.trusted);
                let reasons: Vec<String> = v
                    .pools
                    .iter()
                    .flat_map(|p| p.reasons.iter())
                    .chain(v.reasons.iter())
                    .map(|r| r.code.clone())
                    .collect();
                slot.last.store(
                    if trusted {
                        LAST_TRUSTED
                    } else {
                        LAST_UNTRUSTED
                    },
                    Relaxed,
                );
                if let Some(t0) = challenged_at.take() {
                    ctx.stats.verdict(t0.elapsed(), trusted, &reasons);
                }
                if let Some(o) = slot.observer.get() {
                    let _ = o.send(HostEvent::Verdict {
                        trusted,
                        at: Instant::now(),
                    });
                }
            }
            Some(ServerMsg::Error(e)) => {
                return Err(Failure {
                    code: e.code.clone(),
                    error: anyhow!("server refused: {}: {}", e.code, e.message),
                })
            }
            None => {
                return Err(Failure {
                    code: "protocol.empty".into(),
                    error: anyhow!("empty message from the server"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustpool_proto::event_log::{decode, ReceivedLog};

    const OVMF_DEFAULT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../evidence/testdata/eventlog/ovmf/ovmf-default.bin"
    );

    fn a_quote(firmware: &Firmware) -> (Quote, Vec<u8>) {
        let mut tpm = SoftTpm::derive(&[3u8; 32], 1).expect("derive");
        tpm.bank = firmware.banks.golden;
        let report = hardening_report("");
        let quote = tpm
            .quote(&qualifying_data(&[1; 32], &report), &[0, 7, 17], 5)
            .expect("quote");
        (quote, report)
    }

    fn logs_of(e: &Evidence, kind: EventLogKind) -> Vec<ReceivedLog> {
        e.event_logs
            .iter()
            .filter(|l| l.kind == kind as i32)
            .map(|l| decode(l).expect("decodes"))
            .collect()
    }

    #[test]
    fn evidence_with_a_log_carries_exactly_that_uefi_log() {
        let log = std::fs::read(OVMF_DEFAULT).expect("the OVMF log");
        let firmware = Firmware::with_uefi_log(&log).expect("firmware");
        let (quote, report) = a_quote(&firmware);
        let e = evidence(vec![1; 32], quote.clone(), &report, &firmware);
        assert_eq!(
            logs_of(&e, EventLogKind::Uefi),
            vec![ReceivedLog::Log(log.clone())]
        );
        assert_eq!(
            logs_of(&e, EventLogKind::Txt),
            vec![ReceivedLog::Unavailable(NO_TXT_LOG.into())]
        );
        assert_eq!(e.event_logs.len(), 2);
        assert_eq!(firmware.uefi_log_bytes, Some(log.len()));
        // The quote and the report are the ones given.
        assert_eq!(e.attest, quote.attest);
        assert_eq!(e.hardening_report, report);
        assert_eq!(e.pcr_values.len(), 3);
        // The PCRs quoted are the log's replay.
        assert_eq!(e.pcr_values[0].digest, firmware.banks.golden.0[0].to_vec());
        assert_ne!(firmware.banks.golden, Banks::synthetic().golden);
    }

    #[test]
    fn the_servers_replay_of_the_sent_log_matches_every_quoted_pcr_golden_or_rogue() {
        use trustpool_evidence::eventlog::measured::{measure, LogFacts};
        let log = std::fs::read(OVMF_DEFAULT).expect("the OVMF log");
        let firmware = Firmware::with_uefi_log(&log).expect("firmware");
        for bank in [firmware.banks.golden, firmware.banks.rogue] {
            // What the server quotes: PCRs 0-7 and 17-19.
            let quoted: std::collections::BTreeMap<u8, [u8; 32]> = crate::softtpm::POLICY_PCRS
                .iter()
                .map(|&i| (i, bank.0[usize::from(i)]))
                .collect();
            match measure(&log, &quoted) {
                LogFacts::Replayed(m) => {
                    assert!(m.mismatches.is_empty(), "{:?}", m.mismatches);
                    assert_eq!(m.replayed, (0..8).collect::<Vec<u8>>());
                }
                other => panic!("not replayed: {other:?}"),
            }
        }
    }

    #[test]
    fn a_large_log_is_encoded_once_compressed_and_comes_back_byte_identical() {
        let log = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../evidence/testdata/eventlog/ovmf/ovmf-secboot.bin"
        ))
        .expect("the OVMF log");
        let firmware = Firmware::with_uefi_log(&log).expect("firmware");
        let uefi = &firmware.event_logs[0];
        assert_eq!(
            uefi.encoding,
            trustpool_proto::v1::EventLogEncoding::Deflate as i32
        );
        let (quote, report) = a_quote(&firmware);
        let e = evidence(vec![1; 32], quote, &report, &firmware);
        assert_eq!(logs_of(&e, EventLogKind::Uefi), vec![ReceivedLog::Log(log)]);
    }

    #[test]
    fn evidence_without_a_log_says_why_like_an_agent_without_one() {
        let firmware = Firmware::without_log();
        let (quote, report) = a_quote(&firmware);
        let e = evidence(vec![1; 32], quote, &report, &firmware);
        assert_eq!(
            logs_of(&e, EventLogKind::Uefi),
            vec![ReceivedLog::Unavailable(NO_UEFI_LOG.into())]
        );
        assert_eq!(
            logs_of(&e, EventLogKind::Txt),
            vec![ReceivedLog::Unavailable(NO_TXT_LOG.into())]
        );
        assert_eq!(firmware.banks, Banks::synthetic());
        assert_eq!(firmware.uefi_log_bytes, None);
    }

    #[test]
    fn a_pki_directory_without_a_log_file_loads_the_synthetic_firmware() {
        let dir = tempdir_for("no-log");
        let firmware = Firmware::load(&dir).expect("load");
        assert_eq!(firmware.banks, Banks::synthetic());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir_for(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lg-host-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
