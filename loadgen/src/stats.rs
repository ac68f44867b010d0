//! Counters of a run and the final JSON line; this process's CPU and RSS
//! from /proc/self.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A point of a measurement window: when, and the attestations counted then.
pub type Mark = (Instant, u64);

/// Shared counters of all simulated hosts.
pub struct Stats {
    /// When the run started.
    pub started: Instant,
    /// Streams open now.
    pub connected_now: AtomicU64,
    /// Most streams open at once.
    pub connected_peak: AtomicU64,
    /// Hosts that opened a stream at least once.
    pub hosts_connected: AtomicU64,
    /// Hosts that got `Enrolled` at least once.
    pub hosts_enrolled: AtomicU64,
    /// `Enrolled { new_enrolment: true }` received.
    pub new_enrolments: AtomicU64,
    /// Credential activations answered.
    pub activations: AtomicU64,
    /// Verdicts received for evidence sent.
    pub attestations: AtomicU64,
    /// Of those, trusted in every pool.
    pub trusted: AtomicU64,
    /// Sessions opened (reconnections included).
    pub sessions: AtomicU64,
    /// Streams opened by hosts that had one before (after a loss, a kick or
    /// a move to another server).
    pub reconnects: AtomicU64,
    /// ms since `started` at which the last host enrolled for the first time.
    pub last_first_enrolment_ms: AtomicU64,
    /// Round trips (challenge received -> verdict received), µs.
    rtts: Mutex<Vec<u32>>,
    /// Whether round trips are recorded (false after a measurement window ended).
    recording: std::sync::atomic::AtomicBool,
    /// A window marked by SIGUSR1: (start, attestations then), (end, attestations then).
    pub marked: Mutex<(Option<Mark>, Option<Mark>)>,
    /// Session errors by code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Reasons in untrusted verdicts, by code.
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Fresh counters.
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            connected_now: AtomicU64::new(0),
            connected_peak: AtomicU64::new(0),
            hosts_connected: AtomicU64::new(0),
            hosts_enrolled: AtomicU64::new(0),
            new_enrolments: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            attestations: AtomicU64::new(0),
            trusted: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_first_enrolment_ms: AtomicU64::new(0),
            rtts: Mutex::new(Vec::with_capacity(1 << 16)),
            recording: std::sync::atomic::AtomicBool::new(true),
            marked: Mutex::new((None, None)),
            errors: Mutex::new(BTreeMap::new()),
            reasons: Mutex::new(BTreeMap::new()),
        }
    }

    /// A stream opened.
    pub fn stream_open(&self) {
        let now = self.connected_now.fetch_add(1, Relaxed) + 1;
        self.connected_peak.fetch_max(now, Relaxed);
    }

    /// A stream closed.
    pub fn stream_closed(&self) {
        self.connected_now.fetch_sub(1, Relaxed);
    }

    /// A host enrolled (or found its enrolment) for the first time in this run.
    pub fn first_enrolment(&self) {
        self.hosts_enrolled.fetch_add(1, Relaxed);
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_first_enrolment_ms.fetch_max(ms, Relaxed);
    }

    /// A verdict for our evidence.
    pub fn verdict(&self, rtt: Duration, trusted: bool, reasons: &[String]) {
        self.attestations.fetch_add(1, Relaxed);
        if trusted {
            self.trusted.fetch_add(1, Relaxed);
        }
        if self.recording.load(Relaxed) {
            let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
            lock(&self.rtts).push(us);
        }
        if !reasons.is_empty() {
            let mut map = lock(&self.reasons);
            for r in reasons {
                *map.entry(r.clone()).or_default() += 1;
            }
        }
    }

    /// SIGUSR1: the first starts a measurement window (round trips recorded
    /// from now on only), the second ends it (no more recorded).
    pub fn mark(&self) {
        let now = (Instant::now(), self.attestations.load(Relaxed));
        let mut m = lock(&self.marked);
        if m.0.is_none() {
            m.0 = Some(now);
            lock(&self.rtts).clear();
        } else if m.1.is_none() {
            m.1 = Some(now);
            self.recording.store(false, Relaxed);
        }
    }

    /// A session error.
    pub fn error(&self, code: &str) {
        *lock(&self.errors).entry(code.to_string()).or_default() += 1;
    }

    /// The summary as one JSON object.
    pub fn summary(&self, hosts: u32, window: Duration, attestations_in_window: u64) -> Value {
        let mut rtts = lock(&self.rtts).clone();
        rtts.sort_unstable();
        let (cpu, rss, hwm) = self_usage();
        let enrolled = self.hosts_enrolled.load(Relaxed);
        let last_enrol_s = self.last_first_enrolment_ms.load(Relaxed) as f64 / 1000.0;
        json!({
            "hosts": hosts,
            "hosts_connected": self.hosts_connected.load(Relaxed),
            "connected_at_end": self.connected_now.load(Relaxed),
            "connected_peak": self.connected_peak.load(Relaxed),
            "hosts_enrolled": enrolled,
            "new_enrolments": self.new_enrolments.load(Relaxed),
            "activations": self.activations.load(Relaxed),
            "sessions": self.sessions.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "attestations": self.attestations.load(Relaxed),
            "trusted_verdicts": self.trusted.load(Relaxed),
            "elapsed_s": round3(self.started.elapsed().as_secs_f64()),
            "steady_window_s": round3(window.as_secs_f64()),
            "attestations_per_s": round3(attestations_in_window as f64 / window.as_secs_f64().max(0.001)),
            "all_enrolled_after_s": round3(last_enrol_s),
            "enrol_rate_per_s": round3(if last_enrol_s > 0.0 { enrolled as f64 / last_enrol_s } else { 0.0 }),
            "rtt_ms": {
                "samples": rtts.len(),
                "p50": pct_ms(&rtts, 0.50),
                "p99": pct_ms(&rtts, 0.99),
                "max": rtts.last().map(|&u| round3(f64::from(u) / 1000.0)).unwrap_or(0.0),
            },
            "errors": lock(&self.errors).clone(),
            "untrusted_reasons": lock(&self.reasons).clone(),
            "loadgen_cpu_s": round3(cpu),
            "loadgen_rss_mb": round3(rss),
            "loadgen_rss_peak_mb": round3(hwm),
        })
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rounds to 3 decimals.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Percentile `q` (0..1) of sorted µs samples, in ms.
pub fn pct_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).saturating_sub(1);
    let v = sorted_us
        .get(idx.min(sorted_us.len() - 1))
        .copied()
        .unwrap_or(0);
    round3(f64::from(v) / 1000.0)
}

/// Percentile of durations, in ms.
pub fn pct_durations_ms(samples: &[Duration], q: f64) -> f64 {
    let mut us: Vec<u32> = samples
        .iter()
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    us.sort_unstable();
    pct_ms(&us, q)
}

/// (CPU seconds user+system, RSS MB, peak RSS MB) of this process. The
/// clock tick of /proc/PID/stat is USER_HZ, 100 on Linux.
pub fn self_usage() -> (f64, f64, f64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the ")" of the command name: state is field 3;
            // utime and stime are fields 14 and 15.
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(pct_ms(&v, 0.5), 50.0);
        assert_eq!(pct_ms(&[1000, 2000], 0.5), 1.0);
        assert_eq!(pct_ms(&v, 0.99), 99.0);
        assert_eq!(pct_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn own_usage_is_readable() {
        let (_cpu, rss, _) = self_usage();
        assert!(rss > 0.0);
    }
}
