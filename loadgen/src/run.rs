//! `trustpool-loadgen run`: N hosts, ramp, churn, the optional flip
//! measurement, and the JSON summary line.
//!
//! Every host quotes the banks and sends the event logs of the directory's
//! [`Firmware`]: the UEFI log `pki --event-log` left there (read, replayed
//! and encoded once, shared by all hosts) or, without one, the log's
//! absence; `uefi_event_log_bytes` in the summary says which (null: none).
//!
//! Timeline: host `i` starts at `ramp * i / N`; the steady window (for
//! attestations/s) starts at `ramp + interval_hint` (when every host has
//! had its first round and one regular round is under way) or at the end
//! of the ramp when the run is shorter, and lasts until `duration`. A
//! driver that knows better (scripts/bench) marks the window itself: the
//! first SIGUSR1 starts it (round trips are recorded from then on only),
//! the second ends it; SIGINT or SIGTERM end the run early, summary
//! printed all the same.
//!
//! Flip (`--flip HOST --feed URL`): once every host has enrolled (steady
//! state: detection is not measured under the cold-start enrolment storm,
//! which saturates the server's CPU) and the host is in the feed, its PCR
//! 17 changes to a rogue SINIT and it asks for a challenge (as the agent's
//! change watch does); detection is the time from the changed evidence
//! being sent to the host leaving `/v1/pools/{pool}/hosts` (long poll), and
//! from the restored evidence being sent to the host being back; with
//! `--placement URL` also until its trait is gone / back. Repeated
//! `--flips` times. With `--placement` the flips also wait until the
//! server's initial trait sync is over (every host that should be in the
//! pool carries the trait: polled every 10 s, `required=!TRAIT`), so that
//! they measure a removal in steady state, not one queued behind thousands
//! of initial additions; `flip.placement_ready_ms` says when that was
//! (from the start of the run). "flip rounds finished" on stderr marks the
//! end of the flips, for a driver that waits for them.

use crate::connector::{resolve_server, TlsShared};
use crate::feed::{watch_pool, FeedClient, Placement, Seen};
use crate::host::{run_host, Ctx, Firmware, HostEvent, Slot, LAST_TRUSTED, LAST_UNTRUSTED};
use crate::pki::{host_index, read_host_count, read_seed, VendorCa};
use crate::stats::{pct_durations_ms, round3};
use anyhow::{bail, Context};
use rand::Rng;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `pki` directory.
    pub dir: PathBuf,
    /// `https://HOST:PORT` of each server's gRPC listener (one or more).
    pub servers: Vec<String>,
    /// Number of hosts (lg-000001 .. lg-N).
    pub hosts: u32,
    /// The server's report interval (only used to place the steady window).
    pub interval_hint: Duration,
    /// Length of the run.
    pub duration: Duration,
    /// Time over which hosts start.
    pub ramp: Duration,
    /// Share of hosts that report a non-golden PCR 17.
    pub failing_fraction: f64,
    /// Disconnections (and reconnections) per second.
    pub churn_per_s: f64,
    /// Host whose PCR 17 is flipped.
    pub flip: Option<String>,
    /// Flip rounds.
    pub flips: u32,
    /// Time the flipped state is held (and between rounds).
    pub flip_hold: Duration,
    /// `https://HOST:PORT` of the HTTPS API (feed).
    pub feed: Option<String>,
    /// Pool watched.
    pub pool: String,
    /// Placement endpoint (lab, plain http).
    pub placement: Option<String>,
    /// Placement token.
    pub placement_token: String,
    /// HTTP/2 keep-alive interval of each host's connection.
    pub keepalive_interval: Duration,
}

/// Whether host `i` (1-based) of `n` is one of the failing ones: spread
/// evenly, `round(n * f)` of them.
pub fn is_failing(i: u32, fraction: f64) -> bool {
    let f = fraction.clamp(0.0, 1.0);
    (f64::from(i) * f).floor() != (f64::from(i - 1) * f).floor()
}

/// Raises RLIMIT_NOFILE to its hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(hard)
}

/// Runs the load and returns the summary.
pub async fn run(opts: RunOptions) -> anyhow::Result<serde_json::Value> {
    let available = read_host_count(&opts.dir)?;
    if opts.hosts == 0 || opts.hosts > available {
        bail!(
            "--hosts {} but {} has certificates for {available} hosts (trustpool-loadgen pki --hosts N)",
            opts.hosts,
            opts.dir.display()
        );
    }
    let nofile = raise_nofile()?;
    if u64::from(opts.hosts) + 64 > nofile {
        bail!(
            "{} hosts need as many sockets but RLIMIT_NOFILE is {nofile} (raise the hard limit: ulimit -Hn)",
            opts.hosts
        );
    }
    let flip_index = opts.flip.as_deref().map(host_index).transpose()?;
    if let Some(i) = flip_index {
        if i > opts.hosts {
            bail!("--flip lg-{i:06} is not among the {} hosts", opts.hosts);
        }
        if opts.feed.is_none() {
            bail!("--flip needs --feed https://HOST:PORT (the server's HTTPS API)");
        }
    }
    let tls = TlsShared::new(&opts.dir.join("ca.pem"))?;
    let mut servers = Vec::with_capacity(opts.servers.len());
    for url in &opts.servers {
        servers.push(resolve_server(url).await?);
    }
    // Once for the run: every host quotes these banks and sends these logs.
    let firmware = Arc::new(Firmware::load(&opts.dir)?);
    let uefi_log_bytes = firmware.uefi_log_bytes;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ctx = Ctx::new(
        opts.dir.clone(),
        read_seed(&opts.dir)?,
        VendorCa::load(&opts.dir)?,
        tls.clone(),
        servers,
        firmware,
        stop_rx,
    );
    ctx.keepalive.0 = opts.keepalive_interval;
    let ctx = Arc::new(ctx);
    let slots: Vec<Arc<Slot>> = (0..opts.hosts).map(|_| Arc::new(Slot::default())).collect();
    for (i, slot) in slots.iter().enumerate() {
        let index = i as u32 + 1;
        if is_failing(index, opts.failing_fraction) && Some(index) != flip_index {
            slot.rogue.store(true, Relaxed);
        }
    }
    let mut events = None;
    if let Some(i) = flip_index {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = slots[(i - 1) as usize].observer.set(tx);
        events = Some(rx);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, slot) in slots.iter().enumerate() {
        let delay = opts.ramp.mul_f64(i as f64 / f64::from(opts.hosts));
        tasks.spawn(run_host(ctx.clone(), slot.clone(), i as u32 + 1, delay));
    }
    let started = ctx.stats.started;
    let end = started + opts.duration;

    // Churn.
    if opts.churn_per_s > 0.0 {
        let slots = slots.clone();
        let mut stop = ctx.stop.clone();
        let period = Duration::from_secs_f64(1.0 / opts.churn_per_s);
        let ramp_end = started + opts.ramp;
        tokio::spawn(async move {
            tokio::time::sleep_until(ramp_end.into()).await;
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = crate::host::stopped(&mut stop) => return,
                }
                let i = rand::thread_rng().gen_range(0..slots.len());
                if Some(i as u32 + 1) != flip_index {
                    slots[i].kick.notify_waiters();
                }
            }
        });
    }

    // Steady window.
    let window_start = if opts.ramp + opts.interval_hint < opts.duration {
        started + opts.ramp + opts.interval_hint
    } else {
        started + opts.ramp.min(opts.duration)
    };
    let stats_ctx = ctx.clone();
    let window_counter = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        (Instant::now(), stats_ctx.stats.attestations.load(Relaxed))
    });

    let flip_task = match (flip_index, events) {
        (Some(i), Some(events)) => {
            let slot = slots[(i - 1) as usize].clone();
            let feed_url = opts.feed.clone().unwrap_or_default();
            let token = std::fs::read_to_string(opts.dir.join("feed-token"))
                .context("reading the feed token")?
                .trim()
                .to_string();
            let client = FeedClient::new(&feed_url, &tls, token).await?;
            let placement = match &opts.placement {
                Some(url) => Some(Placement::new(url, opts.placement_token.clone())?),
                None => None,
            };
            let name = crate::pki::host_name(i);
            let data = Arc::new(Mutex::new(FlipData::default()));
            Some((
                tokio::spawn(flip_rounds(
                    FlipPlan {
                        slot,
                        events,
                        client,
                        pool: opts.pool.clone(),
                        host: name,
                        rounds: opts.flips,
                        hold: opts.flip_hold,
                        end,
                        placement,
                        ctx: ctx.clone(),
                        hosts: opts.hosts,
                        failing_fraction: opts.failing_fraction,
                    },
                    data.clone(),
                )),
                data,
            ))
        }
        _ => None,
    };

    // Until --duration, or SIGINT/SIGTERM (then the summary is printed all the same).
    // SIGUSR1 marks the start, then the end, of a measurement window.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => ctx.stats.mark(),
        }
    }
    let flip_summary = match flip_task {
        Some((task, data)) => {
            task.abort();
            let summary = lock(&data).summary(opts.flips, opts.placement.is_some());
            summary
        }
        None => serde_json::Value::Null,
    };
    let (w_start, w_count) = if window_counter.is_finished() {
        window_counter.await.unwrap_or((started, 0))
    } else {
        window_counter.abort();
        (started, 0)
    };
    let now = (Instant::now(), ctx.stats.attestations.load(Relaxed));
    let marked = *ctx.stats.marked.lock().unwrap_or_else(|p| p.into_inner());
    let ((w_start, w_count), (w_end, w_end_count)) = match marked {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, now),
        _ => ((w_start, w_count), now),
    };
    let window = w_end.saturating_duration_since(w_start);
    let in_window = w_end_count.saturating_sub(w_count);
    let _ = stop_tx.send(true);
    let drain = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        tasks.abort_all();
    }
    let mut summary = ctx.stats.summary(opts.hosts, window, in_window);
    let last_trusted = slots
        .iter()
        .filter(|s| s.last.load(Relaxed) == LAST_TRUSTED)
        .count();
    let last_untrusted = slots
        .iter()
        .filter(|s| s.last.load(Relaxed) == LAST_UNTRUSTED)
        .count();
    let failing = (1..=opts.hosts)
        .filter(|&i| is_failing(i, opts.failing_fraction) && Some(i) != flip_index)
        .count();
    if let Some(map) = summary.as_object_mut() {
        map.insert("hosts_failing_by_design".into(), json!(failing));
        map.insert("hosts_last_trusted".into(), json!(last_trusted));
        map.insert("hosts_last_untrusted".into(), json!(last_untrusted));
        map.insert("uefi_event_log_bytes".into(), json!(uefi_log_bytes));
        map.insert("flip".into(), flip_summary);
    }
    Ok(summary)
}

struct FlipPlan {
    slot: Arc<Slot>,
    events: mpsc::UnboundedReceiver<HostEvent>,
    client: FeedClient,
    pool: String,
    host: String,
    rounds: u32,
    hold: Duration,
    end: Instant,
    placement: Option<Placement>,
    /// The run's counters (whether every host has enrolled).
    ctx: Arc<Ctx>,
    hosts: u32,
    /// Which hosts are failing by design (never in the pool).
    failing_fraction: f64,
}

/// Waits until the feed shows `member` at or after `since`.
async fn feed_shows(
    seen: &mut watch::Receiver<Result<Seen, String>>,
    member: bool,
    since: Instant,
) -> Result<Instant, String> {
    let mut last_err = String::new();
    loop {
        let current = seen.borrow_and_update().clone();
        match current {
            Ok(s) if s.member == member && s.at >= since => return Ok(s.at),
            Ok(_) => {}
            Err(e) => last_err = e,
        }
        if seen.changed().await.is_err() {
            return Err(format!("the feed watcher stopped: {last_err}"));
        }
    }
}

/// Waits for the next evidence the host sends with the `rogue` bank,
/// asking again every 2 s (a request too soon after another is ignored
/// by the server).
async fn evidence_sent(
    events: &mut mpsc::UnboundedReceiver<HostEvent>,
    slot: &Slot,
    rogue: bool,
) -> Option<Instant> {
    loop {
        match tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
            Ok(Some(HostEvent::EvidenceSent { rogue: r, at })) if r == rogue => return Some(at),
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(_) => slot.change.notify_one(),
        }
    }
}

async fn placement_shows(
    p: &Placement,
    uuid: &str,
    trait_name: &str,
    present: bool,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    loop {
        if p.has_trait(uuid, trait_name).await? == present {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the trait did not change within the deadline");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every host of the run that should be in the pool (all
/// but the failing ones; the flipped host is never failing) carries the
/// trait; polled every 10 s (a listing of up to every provider costs a
/// single-threaded lab Placement most of a second at 10,000 providers).
async fn placement_synced(p: &Placement, plan: &FlipPlan, trait_name: &str) -> anyhow::Result<()> {
    let flip = host_index(&plan.host)?;
    loop {
        let lacking = p.providers_lacking(trait_name).await?;
        let waiting = lacking
            .iter()
            .filter_map(|n| host_index(n).ok())
            .filter(|&i| i <= plan.hosts && (i == flip || !is_failing(i, plan.failing_fraction)))
            .count();
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() + Duration::from_secs(10) >= plan.end {
            bail!("the run ended before the initial trait sync ({waiting} hosts still lacked {trait_name})");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// What the flip rounds measured so far (kept when the run is cut short).
#[derive(Default)]
pub struct FlipData {
    host: String,
    rounds_done: u32,
    out: Vec<Duration>,
    back: Vec<Duration>,
    verdict_out: Vec<Duration>,
    placement_out: Vec<Duration>,
    placement_back: Vec<Duration>,
    /// When every pool member carried the trait (ms from the run's start).
    placement_ready_ms: Option<f64>,
    failures: Vec<String>,
}

fn dist(v: &[Duration]) -> serde_json::Value {
    json!({
        "samples": v.len(),
        "p50": pct_durations_ms(v, 0.5),
        "p99": pct_durations_ms(v, 0.99),
        "max": v.iter().max().map(|d| round3(d.as_secs_f64() * 1000.0)).unwrap_or(0.0),
    })
}

impl FlipData {
    fn summary(&self, rounds: u32, placement: bool) -> serde_json::Value {
        json!({
            "host": self.host,
            "rounds": rounds,
            "rounds_done": self.rounds_done,
            "feed_out_ms": dist(&self.out),
            "feed_back_ms": dist(&self.back),
            "verdict_out_ms": dist(&self.verdict_out),
            "placement_out_ms": if placement { dist(&self.placement_out) } else { serde_json::Value::Null },
            "placement_back_ms": if placement { dist(&self.placement_back) } else { serde_json::Value::Null },
            "placement_ready_ms": self.placement_ready_ms,
            "failures": self.failures,
        })
    }
}

fn lock(d: &Mutex<FlipData>) -> std::sync::MutexGuard<'_, FlipData> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

async fn flip_rounds(plan: FlipPlan, data: Arc<Mutex<FlipData>>) {
    flip_rounds_inner(plan, data).await;
    eprintln!("trustpool-loadgen: flip rounds finished");
}

async fn flip_rounds_inner(mut plan: FlipPlan, data: Arc<Mutex<FlipData>>) {
    lock(&data).host.clone_from(&plan.host);
    let mut seen = watch_pool(plan.client.clone(), plan.pool.clone(), plan.host.clone());
    // Wait until every host has enrolled, then until the host is in the pool.
    while plan.ctx.stats.hosts_enrolled.load(Relaxed) < u64::from(plan.hosts) {
        if Instant::now() >= plan.end {
            lock(&data)
                .failures
                .push("the run ended before every host had enrolled".into());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) = feed_shows(&mut seen, true, Instant::now() - Duration::from_secs(3600)).await {
        lock(&data).failures.push(e);
        return;
    }
    let trait_name = format!("CUSTOM_TRUSTPOOL_{}", plan.pool.to_ascii_uppercase());
    let mut provider = None;
    if let Some(p) = &plan.placement {
        match p.provider(&plan.host).await {
            Ok(u) => provider = Some(u),
            Err(e) => {
                lock(&data).failures.push(format!("{e:#}"));
                return;
            }
        }
        if let Err(e) = placement_synced(p, &plan, &trait_name).await {
            lock(&data).failures.push(format!("placement: {e:#}"));
            return;
        }
        lock(&data).placement_ready_ms = Some(round3(
            plan.ctx.stats.started.elapsed().as_secs_f64() * 1000.0,
        ));
    }
    for round in 0..plan.rounds {
        for rogue in [true, false] {
            plan.slot.rogue.store(rogue, Relaxed);
            plan.slot.change.notify_one();
            let Some(sent) = evidence_sent(&mut plan.events, &plan.slot, rogue).await else {
                lock(&data)
                    .failures
                    .push(format!("round {round}: the host task ended"));
                return;
            };
            let deadline = (sent + Duration::from_secs(30)).min(plan.end);
            let shown =
                tokio::time::timeout_at(deadline.into(), feed_shows(&mut seen, !rogue, sent)).await;
            {
                let mut d = lock(&data);
                match shown {
                    Ok(Ok(at)) if rogue => d.out.push(at - sent),
                    Ok(Ok(at)) => d.back.push(at - sent),
                    Ok(Err(e)) => d.failures.push(format!("round {round}: {e}")),
                    Err(_) => d.failures.push(format!(
                        "round {round}: the feed did not show the host {} within 30 s",
                        if rogue { "gone" } else { "back" }
                    )),
                }
            }
            // The host's own verdict of that evidence.
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(1), plan.events.recv()).await
            {
                if let (HostEvent::Verdict { trusted: false, at }, true) = (ev, rogue) {
                    lock(&data).verdict_out.push(at - sent);
                }
            }
            if let (Some(p), Some(uuid)) = (&plan.placement, &provider) {
                let shown =
                    placement_shows(p, uuid, &trait_name, !rogue, sent + Duration::from_secs(60))
                        .await;
                let mut d = lock(&data);
                match shown {
                    Ok(at) if rogue => d.placement_out.push(at - sent),
                    Ok(at) => d.placement_back.push(at - sent),
                    Err(e) => d.failures.push(format!("round {round}: placement: {e:#}")),
                }
            }
            tokio::time::sleep(plan.hold).await;
        }
        lock(&data).rounds_done = round + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_hosts_are_spread_and_counted() {
        let n = (1..=1000).filter(|&i| is_failing(i, 0.1)).count();
        assert_eq!(n, 100);
        assert_eq!((1..=1000).filter(|&i| is_failing(i, 0.0)).count(), 0);
        assert_eq!((1..=10).filter(|&i| is_failing(i, 1.0)).count(), 10);
    }
}
