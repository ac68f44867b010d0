//! Prometheus metrics in the text exposition format (version 0.0.4), written
//! by hand: a few atomics, a few small maps, no registry crate.
//!
//! Counters and histograms are recorded by the tasks that see the events
//! (sessions, the feed, the Placement sync); the number of hosts per pool and
//! state is derived from the [`Registry`] at scrape time, so it can never
//! drift from what the feed publishes.
//!
//! Every label value comes from a bounded set (pool names of the policy,
//! stable reason codes, route templates, fixed outcome words): no host name
//! ever becomes a label.

use crate::fleet::registry::Registry;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Buckets (seconds) of the attestation round-trip histogram.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) of the admission wait histogram.
const ADMISSION_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// The stages of admission (`attest::pacing`), in the order of their slots here.
const ADMISSION_STAGES: [&str; 2] = ["attest", "enrol"];

/// Buckets (seconds) of the Placement sync lag histogram.
const SYNC_LAG_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(value.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// Counters keyed by a tuple of label values. The label sets are few (they
/// come from bounded sets, see above), so an increment scans them under a
/// shared lock and adds atomically: sessions counting their verdicts neither
/// wait for each other nor allocate. The write lock is taken once per new
/// label set.
#[derive(Debug, Default)]
struct LabeledCounter {
    /// Sorted by label values, the order of the exposition.
    values: RwLock<Vec<(Vec<String>, AtomicU64)>>,
}

fn same_labels(have: &[String], want: &[&str]) -> bool {
    have.len() == want.len() && have.iter().zip(want).all(|(a, b)| a == b)
}

impl LabeledCounter {
    fn add(&self, labels: &[&str], n: u64) {
        {
            let values = self.values.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, count)) = values.iter().find(|(k, _)| same_labels(k, labels)) {
                count.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        match values.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                values[i].1.fetch_add(n, Ordering::Relaxed);
            }
            Err(i) => values.insert(i, (key, AtomicU64::new(n))),
        }
    }

    fn get(&self, labels: &[&str]) -> u64 {
        self.values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(k, _)| same_labels(k, labels))
            .map_or(0, |(_, count)| count.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, names: &[&str]) {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        for (labels, n) in values.iter() {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                label_pairs(names, labels),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// Every metric the server exports. Shared through `AppState::metrics`.
#[derive(Debug)]
pub struct Metrics {
    open_streams: AtomicI64,
    enrolments: LabeledCounter,
    event_logs: LabeledCounter,
    verdicts: LabeledCounter,
    verdict_reasons: LabeledCounter,
    round_trip: Histogram,
    admission_wait: [Histogram; 2],
    admission_in_use: [AtomicI64; 2],
    policy_reloads: LabeledCounter,
    feed_requests: LabeledCounter,
    http_refused: LabeledCounter,
    http_evicted: LabeledCounter,
    http_timeouts: LabeledCounter,
    placement_ops: LabeledCounter,
    placement_conflicts: AtomicU64,
    placement_errors: LabeledCounter,
    placement_lag: Histogram,
    placement_pending: AtomicI64,
    placement_last_reconcile_ms: AtomicI64,
    placement_reconciles: LabeledCounter,
    tls_refused: LabeledCounter,
    crl_reloads: LabeledCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Metrics {
        Metrics {
            open_streams: AtomicI64::new(0),
            enrolments: LabeledCounter::default(),
            event_logs: LabeledCounter::default(),
            verdicts: LabeledCounter::default(),
            verdict_reasons: LabeledCounter::default(),
            round_trip: Histogram::new(ROUND_TRIP_BUCKETS),
            admission_wait: [
                Histogram::new(ADMISSION_WAIT_BUCKETS),
                Histogram::new(ADMISSION_WAIT_BUCKETS),
            ],
            admission_in_use: [AtomicI64::new(0), AtomicI64::new(0)],
            policy_reloads: LabeledCounter::default(),
            feed_requests: LabeledCounter::default(),
            http_refused: LabeledCounter::default(),
            http_evicted: LabeledCounter::default(),
            http_timeouts: LabeledCounter::default(),
            placement_ops: LabeledCounter::default(),
            placement_conflicts: AtomicU64::new(0),
            placement_errors: LabeledCounter::default(),
            placement_lag: Histogram::new(SYNC_LAG_BUCKETS),
            placement_pending: AtomicI64::new(0),
            placement_last_reconcile_ms: AtomicI64::new(0),
            placement_reconciles: LabeledCounter::default(),
            tls_refused: LabeledCounter::default(),
            crl_reloads: LabeledCounter::default(),
        }
    }

    // --- agent sessions (recorded in session.rs) ---

    /// An agent stream passed its identity check and is open.
    pub fn stream_opened(&self) {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// An agent stream counted by [`Metrics::stream_opened`] ended.
    pub fn stream_closed(&self) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open agent streams now.
    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// The outcome of an enrolment attempt: `"enrolled"` for a new enrolment,
    /// `"known"` for an agent whose keys match its stored enrolment, else the
    /// stable error code (`enrolment.conflict`, `enrolment.ek_untrusted`, …).
    pub fn enrolment(&self, outcome: &str) {
        self.enrolments.add(&[outcome], 1);
    }

    /// How the UEFI event log of a verified quote was judged: `replayed`
    /// (parsed and replayed), `reused` (unchanged: the previous outcome),
    /// `unavailable` (the agent has none), `invalid`, `absent` (no log field).
    pub fn event_log(&self, outcome: &str) {
        self.event_logs.add(&[outcome], 1);
    }

    /// Event logs judged with this outcome so far.
    pub fn event_logs(&self, outcome: &str) -> u64 {
        self.event_logs.get(&[outcome])
    }

    /// One verdict of one pool with the codes of its reasons (empty when trusted).
    pub fn verdict(&self, pool: &str, trusted: bool, reason_codes: &[&str]) {
        let result = if trusted { "trusted" } else { "untrusted" };
        self.verdicts.add(&[pool, result], 1);
        for code in reason_codes {
            self.verdict_reasons.add(&[pool, code], 1);
        }
    }

    /// The round trip of one attestation: from the challenge being sent to
    /// the verdict being sent (observe once per evidence, not per pool).
    pub fn attestation_round_trip(&self, round_trip: Duration) {
        self.round_trip.observe(round_trip);
    }

    /// A slot of admission `stage` ("attest", "enrol") was taken after
    /// waiting `waited` for it.
    pub fn admission_taken(&self, stage: &str, waited: Duration) {
        if let Some(i) = ADMISSION_STAGES.iter().position(|s| *s == stage) {
            self.admission_wait[i].observe(waited);
            self.admission_in_use[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slot of admission `stage` was given back.
    pub fn admission_released(&self, stage: &str) {
        if let Some(i) = ADMISSION_STAGES.iter().position(|s| *s == stage) {
            self.admission_in_use[i].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Slots of `stage` taken so far.
    pub fn admissions_waited(&self, stage: &str) -> u64 {
        ADMISSION_STAGES
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| self.admission_wait[i].count())
    }

    /// Slots of `stage` in use now.
    pub fn admissions_in_use(&self, stage: &str) -> i64 {
        ADMISSION_STAGES
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| self.admission_in_use[i].load(Ordering::Relaxed))
    }

    /// A policy (re)load: `ok` when the new policy was put in force.
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads
            .add(&[if ok { "ok" } else { "error" }], 1);
    }

    // --- the HTTPS API ---

    /// One answered HTTP request: `route` is the route template (never the raw path).
    pub fn feed_request(&self, route: &str, status: u16) {
        let status = status.to_string();
        self.feed_requests.add(&[route, &status], 1);
    }

    /// Answered requests so far for `route` with `status`.
    pub fn feed_requests(&self, route: &str, status: u16) -> u64 {
        self.feed_requests.get(&[route, &status.to_string()])
    }

    /// A TCP connection to the HTTPS listener closed at accept: `busy`
    /// (every slot of `http_max_connections` is serving a request) or
    /// `accept_error` (e.g. out of file descriptors).
    pub fn http_connection_refused(&self, reason: &str) {
        self.http_refused.add(&[reason], 1);
    }

    /// Connections refused so far for `reason`.
    pub fn http_connections_refused(&self, reason: &str) -> u64 {
        self.http_refused.get(&[reason])
    }

    /// A connection closed to make room for a new one, by the phase it was
    /// in (`handshake`, `idle`).
    pub fn http_connection_evicted(&self, phase: &str) {
        self.http_evicted.add(&[phase], 1);
    }

    /// Connections evicted so far in `phase`.
    pub fn http_connections_evicted(&self, phase: &str) -> u64 {
        self.http_evicted.get(&[phase])
    }

    /// A connection or request cut by a deadline: `handshake`, `headers`
    /// (also the keep-alive idle timeout) or `body`.
    pub fn http_timeout(&self, phase: &str) {
        self.http_timeouts.add(&[phase], 1);
    }

    // --- Placement trait sync ---

    /// One trait operation on a provider: `op` is `add` or `remove`,
    /// `outcome` is `ok`, `unchanged`, `provider_missing` or `error`.
    pub fn placement_op(&self, op: &str, outcome: &str) {
        self.placement_ops.add(&[op, outcome], 1);
    }

    /// A 409 `placement.concurrent_update` answered to one of our writes.
    pub fn placement_conflict(&self) {
        self.placement_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Conflicts seen so far.
    pub fn placement_conflicts(&self) -> u64 {
        self.placement_conflicts.load(Ordering::Relaxed)
    }

    /// A failed Placement or Keystone request, by kind (`connect`, `http_5xx`,
    /// `http_4xx`, `auth`, `decode`, `provider_missing`, `timeout`).
    pub fn placement_error(&self, kind: &str) {
        self.placement_errors.add(&[kind], 1);
    }

    /// Time from a membership change being seen to Placement reflecting it.
    pub fn placement_lag(&self, lag: Duration) {
        self.placement_lag.observe(lag);
    }

    /// Trait operations waiting to be applied (or retried).
    pub fn placement_pending(&self, pending: usize) {
        self.placement_pending.store(
            i64::try_from(pending).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A full reconcile finished (`ok`) or gave up (`error`).
    pub fn placement_reconcile(&self, ok: bool, now_ms: i64) {
        self.placement_reconciles
            .add(&[if ok { "ok" } else { "error" }], 1);
        if ok {
            self.placement_last_reconcile_ms
                .store(now_ms, Ordering::Relaxed);
        }
    }

    // --- client certificates (recorded in pki.rs) ---

    /// A client certificate refused: `listener` is `grpc` or `https` (TLS
    /// handshake), `admin`, `attestation` or `reader` (per request);
    /// `reason` a stable code of [`crate::tls::pki::reason_code`].
    pub fn tls_refused(&self, listener: &str, reason: &str) {
        self.tls_refused.add(&[listener, reason], 1);
    }

    /// Refused certificates so far for `listener` and `reason`.
    pub fn tls_refusals(&self, listener: &str, reason: &str) -> u64 {
        self.tls_refused.get(&[listener, reason])
    }

    /// A CRL reload (SIGHUP): `ok` when the new CRLs are in force.
    pub fn crl_reload(&self, ok: bool) {
        self.crl_reloads.add(&[if ok { "ok" } else { "error" }], 1);
    }

    /// Renders every metric, deriving host counts from `registry` at `now_ms`.
    pub fn render(&self, registry: &Registry, now_ms: i64, ready: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        family(
            &mut out,
            "trustpool_hosts",
            "gauge",
            "Hosts per pool and state (trusted, untrusted, stale, unattested, pending approval, revoked).",
        );
        for ((pool, state), n) in registry.state_counts(now_ms) {
            let _ = writeln!(
                out,
                "trustpool_hosts{{{}}} {n}",
                label_pairs(&["pool", "state"], &[pool, state.to_string()])
            );
        }
        family(
            &mut out,
            "trustpool_pool_members",
            "gauge",
            "Members of each pool as the feed publishes them.",
        );
        for (pool, members) in registry.pool_sizes(now_ms) {
            let _ = writeln!(
                out,
                "trustpool_pool_members{{{}}} {members}",
                label_pairs(&["pool"], &[pool])
            );
        }
        family(
            &mut out,
            "trustpool_ready",
            "gauge",
            "1 when the database answers and a usable policy is in force.",
        );
        let _ = writeln!(out, "trustpool_ready {}", u8::from(ready));
        family(
            &mut out,
            "trustpool_agent_streams_open",
            "gauge",
            "Agent streams open now.",
        );
        let _ = writeln!(out, "trustpool_agent_streams_open {}", self.open_streams());
        family(
            &mut out,
            "trustpool_enrolments_total",
            "counter",
            "Enrolment attempts by outcome.",
        );
        self.enrolments
            .render(&mut out, "trustpool_enrolments_total", &["outcome"]);
        family(
            &mut out,
            "trustpool_event_logs_total",
            "counter",
            "UEFI event logs of verified quotes by how they were judged (replayed, reused unchanged, unavailable, invalid, absent).",
        );
        self.event_logs
            .render(&mut out, "trustpool_event_logs_total", &["outcome"]);
        family(
            &mut out,
            "trustpool_verdicts_total",
            "counter",
            "Verdicts by pool and result.",
        );
        self.verdicts
            .render(&mut out, "trustpool_verdicts_total", &["pool", "result"]);
        family(
            &mut out,
            "trustpool_verdict_reasons_total",
            "counter",
            "Reasons against trust by pool and stable reason code.",
        );
        self.verdict_reasons.render(
            &mut out,
            "trustpool_verdict_reasons_total",
            &["pool", "code"],
        );
        family(
            &mut out,
            "trustpool_attestation_round_trip_seconds",
            "histogram",
            "From a challenge being sent to its verdict being sent.",
        );
        self.round_trip
            .render(&mut out, "trustpool_attestation_round_trip_seconds", "");
        family(
            &mut out,
            "trustpool_admission_wait_seconds",
            "histogram",
            "How long an attestation round (stage=attest) or an enrolment (stage=enrol) waited for a slot before it started: above zero, the server is stretching the report interval to what it can judge.",
        );
        for (i, stage) in ADMISSION_STAGES.iter().enumerate() {
            self.admission_wait[i].render(
                &mut out,
                "trustpool_admission_wait_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        family(
            &mut out,
            "trustpool_admission_in_use",
            "gauge",
            "Attestation rounds (stage=attest) and enrolments (stage=enrol) in progress now.",
        );
        for (i, stage) in ADMISSION_STAGES.iter().enumerate() {
            let _ = writeln!(
                out,
                "trustpool_admission_in_use{{stage=\"{stage}\"}} {}",
                self.admission_in_use[i].load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "trustpool_policy_reloads_total",
            "counter",
            "Policy loads and reloads by outcome.",
        );
        self.policy_reloads
            .render(&mut out, "trustpool_policy_reloads_total", &["outcome"]);
        family(
            &mut out,
            "trustpool_http_requests_total",
            "counter",
            "HTTPS API requests by route template and status code.",
        );
        self.feed_requests.render(
            &mut out,
            "trustpool_http_requests_total",
            &["route", "code"],
        );
        family(
            &mut out,
            "trustpool_http_connections_refused_total",
            "counter",
            "HTTPS connections closed at accept, by reason (busy: every slot serving a request; accept_error).",
        );
        self.http_refused.render(
            &mut out,
            "trustpool_http_connections_refused_total",
            &["reason"],
        );
        family(
            &mut out,
            "trustpool_http_connections_evicted_total",
            "counter",
            "HTTPS connections closed to make room for a new one, by the phase they were in (handshake, idle).",
        );
        self.http_evicted.render(
            &mut out,
            "trustpool_http_connections_evicted_total",
            &["phase"],
        );
        family(
            &mut out,
            "trustpool_http_timeouts_total",
            "counter",
            "HTTPS connections and requests cut by a deadline (handshake, headers, body).",
        );
        self.http_timeouts
            .render(&mut out, "trustpool_http_timeouts_total", &["phase"]);
        family(
            &mut out,
            "trustpool_placement_operations_total",
            "counter",
            "Placement trait operations by operation and outcome.",
        );
        self.placement_ops.render(
            &mut out,
            "trustpool_placement_operations_total",
            &["op", "outcome"],
        );
        family(
            &mut out,
            "trustpool_placement_conflicts_total",
            "counter",
            "409 placement.concurrent_update answers to trait writes (each retried).",
        );
        let _ = writeln!(
            out,
            "trustpool_placement_conflicts_total {}",
            self.placement_conflicts()
        );
        family(
            &mut out,
            "trustpool_placement_errors_total",
            "counter",
            "Failed Placement and Keystone requests by kind.",
        );
        self.placement_errors
            .render(&mut out, "trustpool_placement_errors_total", &["kind"]);
        family(
            &mut out,
            "trustpool_placement_sync_lag_seconds",
            "histogram",
            "From a pool membership change to Placement reflecting it.",
        );
        self.placement_lag
            .render(&mut out, "trustpool_placement_sync_lag_seconds", "");
        family(
            &mut out,
            "trustpool_placement_pending_operations",
            "gauge",
            "Trait operations waiting to be applied or retried.",
        );
        let _ = writeln!(
            out,
            "trustpool_placement_pending_operations {}",
            self.placement_pending.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "trustpool_placement_reconciles_total",
            "counter",
            "Full Placement reconciles by outcome.",
        );
        self.placement_reconciles.render(
            &mut out,
            "trustpool_placement_reconciles_total",
            &["outcome"],
        );
        family(
            &mut out,
            "trustpool_placement_last_reconcile_timestamp_seconds",
            "gauge",
            "Unix time of the last successful full reconcile (0: none yet).",
        );
        let _ = writeln!(
            out,
            "trustpool_placement_last_reconcile_timestamp_seconds {}",
            self.placement_last_reconcile_ms.load(Ordering::Relaxed) / 1000
        );
        family(
            &mut out,
            "trustpool_tls_refused_total",
            "counter",
            "Client certificates refused, by listener (handshake: grpc, https; request: admin, attestation, reader) and reason.",
        );
        self.tls_refused.render(
            &mut out,
            "trustpool_tls_refused_total",
            &["listener", "reason"],
        );
        family(
            &mut out,
            "trustpool_crl_reloads_total",
            "counter",
            "CRL reloads (SIGHUP) by outcome; on error the previous CRLs stay in force.",
        );
        self.crl_reloads
            .render(&mut out, "trustpool_crl_reloads_total", &["outcome"]);
        out
    }
}

/// Counts hosts per (pool, state) from the registry.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn label_pairs(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Escapes a label value for the text format (`\`, `"` and newlines).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredVerdict;
    use trustpool_evidence::reason::Reason;

    #[test]
    fn renders_counters_histograms_and_registry_states() {
        let m = Metrics::new();
        m.stream_opened();
        m.stream_opened();
        m.stream_closed();
        m.enrolment("enrolled");
        m.verdict(
            "default",
            false,
            &["pcr.not_allowed", "launch.not_measured"],
        );
        m.verdict("default", true, &[]);
        m.attestation_round_trip(Duration::from_millis(3));
        m.policy_reload(true);
        m.feed_request("/v1/pools/{pool}/hosts", 304);
        m.placement_conflict();
        m.placement_error("http_5xx");
        m.placement_lag(Duration::from_millis(40));
        m.http_connection_refused("busy");
        m.http_connection_evicted("idle");
        m.http_connection_evicted("idle");
        m.http_timeout("headers");

        let r = Registry::new(1);
        r.set_pools(&["default".into()], 0);
        for host in ["a", "b"] {
            r.add_enrolment(crate::store::Enrolment {
                hostname: host.into(),
                ek_public: vec![1],
                ek_certificate: None,
                ak_public: vec![2],
                ak_name: vec![3],
                cert_fingerprint: "f".into(),
                cert_subject: format!("CN={host}"),
                enrolled_at_ms: 0,
            });
        }
        r.record_verdicts(
            vec![
                StoredVerdict {
                    hostname: "a".into(),
                    pool: "default".into(),
                    trusted: true,
                    attested_at_ms: 0,
                    valid_until_ms: 10_000,
                    reasons: vec![],
                    policy_digest: "d".into(),
                },
                StoredVerdict {
                    hostname: "b".into(),
                    pool: "default".into(),
                    trusted: false,
                    attested_at_ms: 0,
                    valid_until_ms: 0,
                    reasons: vec![Reason::new("pcr.not_allowed", "x")],
                    policy_digest: "d".into(),
                },
            ],
            0,
        );
        let text = m.render(&r, 5, true);
        for line in [
            "trustpool_agent_streams_open 1",
            "trustpool_enrolments_total{outcome=\"enrolled\"} 1",
            "trustpool_verdicts_total{pool=\"default\",result=\"untrusted\"} 1",
            "trustpool_verdict_reasons_total{pool=\"default\",code=\"pcr.not_allowed\"} 1",
            "trustpool_attestation_round_trip_seconds_bucket{le=\"0.005\"} 1",
            "trustpool_attestation_round_trip_seconds_bucket{le=\"0.0025\"} 0",
            "trustpool_attestation_round_trip_seconds_count 1",
            "trustpool_http_requests_total{route=\"/v1/pools/{pool}/hosts\",code=\"304\"} 1",
            "trustpool_hosts{pool=\"default\",state=\"trusted\"} 1",
            "trustpool_hosts{pool=\"default\",state=\"untrusted\"} 1",
            "trustpool_hosts{pool=\"default\",state=\"pending\"} 0",
            "trustpool_hosts{pool=\"default\",state=\"unattested\"} 0",
            "trustpool_pool_members{pool=\"default\"} 1",
            "trustpool_placement_conflicts_total 1",
            "trustpool_http_connections_refused_total{reason=\"busy\"} 1",
            "trustpool_http_connections_evicted_total{phase=\"idle\"} 2",
            "trustpool_http_timeouts_total{phase=\"headers\"} 1",
            "trustpool_placement_errors_total{kind=\"http_5xx\"} 1",
            "trustpool_ready 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // Every sample line belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{l}"
            );
        }
        // Expiry is applied at scrape time.
        let later = m.render(&r, 10_000, true);
        assert!(later.contains("trustpool_hosts{pool=\"default\",state=\"stale\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn labelled_counters_add_up_across_threads_and_render_sorted() {
        let counter = std::sync::Arc::new(LabeledCounter::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let result = if (i + t) % 2 == 0 {
                            "trusted"
                        } else {
                            "untrusted"
                        };
                        counter.add(&["default", result], 1);
                        counter.add(&["b-pool", "trusted"], 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(counter.get(&["default", "trusted"]), 2000);
        assert_eq!(counter.get(&["default", "untrusted"]), 2000);
        assert_eq!(counter.get(&["b-pool", "trusted"]), 8000);
        assert_eq!(
            counter.get(&["default"]),
            0,
            "a shorter label set is another series"
        );
        let mut out = String::new();
        counter.render(&mut out, "x", &["pool", "result"]);
        assert_eq!(
            out,
            "x{pool=\"b-pool\",result=\"trusted\"} 8000\n\
             x{pool=\"default\",result=\"trusted\"} 2000\n\
             x{pool=\"default\",result=\"untrusted\"} 2000\n"
        );
    }
}
