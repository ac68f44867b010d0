//! The accept loop of the HTTPS API, built so that slow, silent or
//! unauthenticated clients cannot take the listener or its memory away from
//! real readers.
//!
//! Every TCP connection takes a slot in a table of at most
//! [`ListenerLimits::max_connections`] (`http_max_connections`). A slot is
//! in one of these phases:
//! - **handshake**: the TLS handshake runs, at most
//!   [`ListenerLimits::max_handshakes`] at once, each within
//!   [`HANDSHAKE_TIMEOUT`]. Until its first byte arrives the connection is
//!   *silent*;
//! - **idle**: handshaken and waiting for a request head, the first one or
//!   the next on a kept-alive connection. The head must be complete within
//!   [`HEADER_READ_TIMEOUT`] of hyper starting to read it, so this is also
//!   the keep-alive idle timeout;
//! - **busy**: a request is being served (its body read within the route's
//!   limit and [`crate::publish::feed::BODY_READ_TIMEOUT`], the handler running, a
//!   long poll waiting).
//!
//! When a connection arrives and the table is full, the oldest silent
//! connection is closed to make room, else the one that has been idle (or
//! in its handshake) the longest; when every slot is busy the new
//! connection is closed at once. Likewise a handshake beyond the handshake
//! cap closes the oldest silent connection, else the oldest handshake in
//! progress. Closing the oldest idle connection, rather than refusing the
//! new one, is what keeps a real reader served while thousands of silent
//! clients hold connections open: a reader sends its ClientHello as soon as
//! it is connected, its connection turns busy within milliseconds of its
//! handshake and is never closed to make room, whereas a silent client's
//! connection only ages and goes first. A reader between two requests on
//! a kept-alive connection may lose it under such a flood and reconnects,
//! as HTTP clients do. Every refused and evicted connection is counted in
//! `trustpool_http_connections_refused_total` and
//! `trustpool_http_connections_evicted_total`.
//!
//! A connection counts as idle again as soon as its handler has answered,
//! before the response is written: a client that stops reading its answer
//! is given no write deadline, but it cannot keep a newcomer out: being
//! idle, it is closed to make room like any other idle connection.

use crate::metrics::Metrics;
use crate::tls::certs::PeerInfo;
use anyhow::{bail, Context};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Deadline of a TLS handshake, from the TCP accept.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head must be complete within this time of hyper starting to
/// read it; between two requests of a kept-alive connection this is the
/// idle timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted (431 above).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default of `http_max_connections`. The HTTPS API serves a control plane:
/// the schedulers' long polls and PollHosts, Prometheus, operators — tens to
/// a few hundred connections even across several regions. 1024 leaves ample
/// headroom for them while bounding what the listener can cost (file
/// descriptors next to the agents' gRPC streams, and at most about 100 KiB
/// of TLS and HTTP buffers per connection, so around 100 MiB).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// TLS handshakes in progress at once. A handshake costs about a
/// millisecond of CPU; 128 in flight absorbs any legitimate reconnect burst
/// of the consumers above, while a flood of silent connections only ever
/// holds 128 slots of handshake state.
pub const MAX_HANDSHAKES: usize = 128;
/// How long in-flight requests may finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning per this period about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Caps of the HTTPS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once (`http_max_connections`).
    pub max_connections: usize,
    /// TLS handshakes in progress at once (never more than the connections).
    pub max_handshakes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: MAX_HANDSHAKES,
        }
    }
}

impl ListenerLimits {
    /// Limits for at most `max_connections` connections (the default when `None`).
    pub fn new(max_connections: Option<usize>) -> anyhow::Result<ListenerLimits> {
        let max_connections = max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            bail!("http_max_connections must be at least 1");
        }
        Ok(ListenerLimits {
            max_connections,
            max_handshakes: MAX_HANDSHAKES.min(max_connections),
        })
    }
}

/// The phase of a connection that was closed to make room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// It was still in its TLS handshake.
    Handshake,
    /// It was handshaken and waiting for a request.
    Idle,
}

impl Evicted {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Evicted::Handshake => "handshake",
            Evicted::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In its handshake, nothing received yet.
    Silent,
    /// In its handshake, the client has spoken.
    Handshake,
    Idle,
    /// Requests in progress (HTTP/1.1 serves one at a time; counted anyway).
    Busy(usize),
}

#[derive(Debug)]
struct Slot {
    phase: Phase,
    /// Position in `handshakes` or `idle` (larger: more recent).
    key: u64,
    close: Option<oneshot::Sender<()>>,
}

/// The connection table; every operation is O(log n).
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    next_key: u64,
    slots: HashMap<u64, Slot>,
    /// Connections in their handshake that have sent nothing, oldest first (key → id).
    silent: BTreeMap<u64, u64>,
    /// Connections in their handshake that have spoken, oldest first.
    handshakes: BTreeMap<u64, u64>,
    /// Handshaken connections waiting for a request, idle longest first.
    idle: BTreeMap<u64, u64>,
}

impl Table {
    fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// The ordered set of connections in `phase`, if it is one that can
    /// be closed to make room.
    fn set_of(&mut self, phase: Phase) -> Option<&mut BTreeMap<u64, u64>> {
        match phase {
            Phase::Silent => Some(&mut self.silent),
            Phase::Handshake => Some(&mut self.handshakes),
            Phase::Idle => Some(&mut self.idle),
            Phase::Busy(_) => None,
        }
    }

    fn unlink(&mut self, id: u64) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        if let Some(set) = self.set_of(slot.phase) {
            set.remove(&slot.key);
        }
        Some(slot)
    }

    /// Closes connection `id` (its task ends when it sees the signal).
    fn evict(&mut self, id: u64) -> Option<Evicted> {
        let mut slot = self.unlink(id)?;
        if let Some(close) = slot.close.take() {
            let _ = close.send(());
        }
        match slot.phase {
            Phase::Silent | Phase::Handshake => Some(Evicted::Handshake),
            Phase::Idle => Some(Evicted::Idle),
            Phase::Busy(_) => None,
        }
    }

    /// The connection to close when the table is full: the oldest silent
    /// one, else the one idle or in its handshake for the longest time.
    fn connection_victim(&self) -> Option<u64> {
        if let Some((_, id)) = self.silent.first_key_value() {
            return Some(*id);
        }
        let handshake = self.handshakes.first_key_value();
        let idle = self.idle.first_key_value();
        match (handshake, idle) {
            (Some((hk, hid)), Some((ik, iid))) => Some(if hk < ik { *hid } else { *iid }),
            (Some((_, id)), None) | (None, Some((_, id))) => Some(*id),
            (None, None) => None,
        }
    }

    /// The handshake to close when too many run: the oldest silent one,
    /// else the oldest.
    fn handshake_victim(&self) -> Option<u64> {
        self.silent
            .first_key_value()
            .or_else(|| self.handshakes.first_key_value())
            .map(|(_, id)| *id)
    }

    fn handshakes_in_progress(&self) -> usize {
        self.silent.len() + self.handshakes.len()
    }

    /// Moves `id` to `phase`; `renew` makes it the most recent of its new
    /// phase, else it keeps its age.
    fn set_phase(&mut self, id: u64, phase: Phase, renew: bool) {
        let fresh = self.next_key();
        let Some(old) = self.slots.get(&id).map(|s| (s.phase, s.key)) else {
            return;
        };
        if let Some(set) = self.set_of(old.0) {
            set.remove(&old.1);
        }
        let key = if renew { fresh } else { old.1 };
        if let Some(set) = self.set_of(phase) {
            set.insert(key, id);
        }
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.phase = phase;
            slot.key = key;
        }
    }
}

/// The outcome of [`Connections::admit`].
#[derive(Debug)]
pub enum Admission {
    /// The connection has a slot.
    Admitted {
        /// Its slot; dropping the last clone frees it.
        ticket: Arc<Ticket>,
        /// Fires when the connection must close to make room for another.
        close: oneshot::Receiver<()>,
        /// The connections closed to make room for this one.
        evicted: Vec<Evicted>,
    },
    /// Every slot is busy: close this connection at once.
    Refused,
}

/// The connection table of one listener.
#[derive(Debug)]
pub struct Connections {
    limits: ListenerLimits,
    table: Mutex<Table>,
}

impl Connections {
    /// An empty table.
    pub fn new(limits: ListenerLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a newly accepted connection a slot in its handshake phase
    /// (`heard`: its first bytes are already there), closing another
    /// connection when a cap is reached (see the module documentation).
    pub fn admit(self: &Arc<Self>, heard: bool) -> Admission {
        let mut t = self.table();
        let mut evicted = Vec::new();
        if t.slots.len() >= self.limits.max_connections {
            match t.connection_victim() {
                Some(id) => evicted.extend(t.evict(id)),
                None => return Admission::Refused,
            }
        }
        if t.handshakes_in_progress() >= self.limits.max_handshakes {
            if let Some(id) = t.handshake_victim() {
                evicted.extend(t.evict(id));
            }
        }
        t.next_id += 1;
        let id = t.next_id;
        let key = t.next_key();
        let (tx, close) = oneshot::channel();
        let phase = if heard {
            Phase::Handshake
        } else {
            Phase::Silent
        };
        t.slots.insert(
            id,
            Slot {
                phase,
                key,
                close: Some(tx),
            },
        );
        if let Some(set) = t.set_of(phase) {
            set.insert(key, id);
        }
        Admission::Admitted {
            ticket: Arc::new(Ticket {
                connections: self.clone(),
                id,
            }),
            close,
            evicted,
        }
    }

    /// Closes every connection that is idle or in its handshake (the server
    /// stops; busy ones finish their request).
    pub fn close_idle(&self) {
        let mut t = self.table();
        let ids: Vec<u64> = t
            .silent
            .values()
            .chain(t.handshakes.values())
            .chain(t.idle.values())
            .copied()
            .collect();
        for id in ids {
            t.evict(id);
        }
    }

    /// Connections open now: (total, in handshake, idle).
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.table();
        (t.slots.len(), t.handshakes_in_progress(), t.idle.len())
    }
}

/// The slot of one connection.
#[derive(Debug)]
pub struct Ticket {
    connections: Arc<Connections>,
    id: u64,
}

impl Ticket {
    /// The client's first bytes arrived (it keeps its age).
    pub fn heard(&self) {
        let mut t = self.connections.table();
        if t.slots.get(&self.id).map(|s| s.phase) == Some(Phase::Silent) {
            t.set_phase(self.id, Phase::Handshake, false);
        }
    }

    /// The handshake finished: the connection waits for a request.
    pub fn handshaken(&self) {
        let mut t = self.connections.table();
        if matches!(
            t.slots.get(&self.id).map(|s| s.phase),
            Some(Phase::Silent | Phase::Handshake)
        ) {
            t.set_phase(self.id, Phase::Idle, true);
        }
    }

    /// A request began; the connection is idle again when the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut t = self.connections.table();
        let phase = match t.slots.get(&self.id).map(|s| s.phase) {
            Some(Phase::Busy(n)) => Some(Phase::Busy(n + 1)),
            Some(_) => Some(Phase::Busy(1)),
            None => None,
        };
        if let Some(phase) = phase {
            t.set_phase(self.id, phase, true);
        }
        Busy {
            ticket: self.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.table().unlink(self.id);
    }
}

/// A request in progress on a connection (see [`Ticket::busy`]).
#[derive(Debug)]
pub struct Busy {
    ticket: Arc<Ticket>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let id = self.ticket.id;
        let mut t = self.ticket.connections.table();
        let phase = match t.slots.get(&id).map(|s| s.phase) {
            Some(Phase::Busy(n)) if n > 1 => Some(Phase::Busy(n - 1)),
            Some(Phase::Busy(_)) => Some(Phase::Idle),
            _ => None,
        };
        if let Some(phase) = phase {
            t.set_phase(id, phase, true);
        }
    }
}

/// The TCP stream of a connection in the table: tells its ticket when the
/// first bytes arrive.
struct Heard {
    tcp: TcpStream,
    ticket: Option<Arc<Ticket>>,
}

impl AsyncRead for Heard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(ticket) = self.ticket.take() {
                ticket.heard();
            }
        }
        polled
    }
}

impl AsyncWrite for Heard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Whether bytes from the client are already waiting on `tcp` (without
/// reading them).
fn has_data(tcp: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(tcp).peek(&mut byte), Ok(n) if n > 0)
}

/// Raises the soft limit of open files to the hard limit, so that
/// `http_max_connections` and the agents' streams, not EMFILE, decide which
/// connections are served. Returns the limit now in force.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("reading the open-files limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising the open-files limit from {soft} to {hard}"))?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Serves `app` (HTTP/1.1 over TLS with `tls`) on `listener` within
/// `limits` until `stop` becomes true, then lets in-flight requests finish
/// for a few seconds. Each request carries the connection's [`PeerInfo`]
/// as `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ListenerLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Connections::new(limits);
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(100);
    let builder = Arc::new(builder);
    let mut last_warning: Option<Instant> = None;
    info!(
        max_connections = limits.max_connections,
        max_handshakes = limits.max_handshakes,
        "HTTPS listener limits"
    );
    while !*stop.borrow() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                metrics.http_connection_refused("accept_error");
                warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match connections.admit(has_data(&tcp)) {
            Admission::Refused => {
                metrics.http_connection_refused("busy");
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    last_warning = Some(Instant::now());
                    warn!(peer = %remote, max_connections = limits.max_connections, "every HTTPS connection is busy: new connections are refused (trustpool_http_connections_refused_total)");
                }
                drop(tcp);
            }
            Admission::Admitted {
                ticket,
                close,
                evicted,
            } => {
                for e in evicted {
                    metrics.http_connection_evicted(e.label());
                }
                tokio::spawn(connection(Connection {
                    tcp,
                    remote,
                    acceptor: acceptor.clone(),
                    ticket,
                    close,
                    builder: builder.clone(),
                    app: app.clone(),
                    watcher: graceful.watcher(),
                    metrics: metrics.clone(),
                }));
            }
        }
    }
    drop(listener);
    connections.close_idle();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("in-flight HTTPS requests did not finish in time");
    }
    Ok(())
}

/// Everything one connection's task needs.
struct Connection {
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    ticket: Arc<Ticket>,
    close: oneshot::Receiver<()>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    app: Router,
    watcher: Watcher,
    metrics: Arc<Metrics>,
}

/// Handshake, then HTTP/1.1 until the client or a timeout ends the
/// connection, or the table closes it to make room.
async fn connection(c: Connection) {
    let Connection {
        tcp,
        remote,
        acceptor,
        ticket,
        close,
        builder,
        app,
        watcher,
        metrics,
    } = c;
    let _ = tcp.set_nodelay(true);
    let tcp = Heard {
        tcp,
        ticket: Some(ticket.clone()),
    };
    let served = async {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(peer = %remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.http_timeout("handshake");
                debug!(peer = %remote, "TLS handshake timed out");
                return;
            }
        };
        ticket.handshaken();
        let chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .filter(|c| !c.is_empty())
            .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect()));
        let peer = PeerInfo { remote, chain };
        let slot = ticket.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = slot.busy();
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let app = app.clone();
            async move {
                let resp = tower::ServiceExt::oneshot(app, req).await;
                drop(busy);
                resp
            }
        });
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        if let Err(e) = watcher.watch(conn).await {
            if e.is_timeout() {
                metrics.http_timeout("headers");
            }
            debug!(peer = %remote, error = %e, "HTTPS connection ended with an error");
        }
    };
    tokio::select! {
        () = served => {}
        _ = close => debug!(peer = %remote, "HTTPS connection closed to make room for a new one"),
    }
    drop(ticket);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_handshakes: usize) -> ListenerLimits {
        ListenerLimits {
            max_connections,
            max_handshakes,
        }
    }

    type Admitted = (Arc<Ticket>, oneshot::Receiver<()>, Vec<Evicted>);

    fn admit(c: &Arc<Connections>) -> Option<Admitted> {
        admit_heard(c, false)
    }

    fn admit_heard(c: &Arc<Connections>, heard: bool) -> Option<Admitted> {
        match c.admit(heard) {
            Admission::Admitted {
                ticket,
                close,
                evicted,
            } => Some((ticket, close, evicted)),
            Admission::Refused => None,
        }
    }

    fn closed(rx: &mut oneshot::Receiver<()>) -> bool {
        rx.try_recv().is_ok()
    }

    #[test]
    fn the_default_and_configured_limits() {
        assert_eq!(
            ListenerLimits::new(None).expect("default"),
            ListenerLimits::default()
        );
        assert_eq!(
            ListenerLimits::new(Some(10)).expect("10").max_handshakes,
            10
        );
        assert!(ListenerLimits::new(Some(0)).is_err());
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let c = Connections::new(limits(3, 3));
        let (a, mut a_close, _) = admit(&c).expect("a");
        let (b, mut b_close, _) = admit(&c).expect("b");
        let (r, mut r_close, _) = admit(&c).expect("reader");
        for t in [&a, &b, &r] {
            t.handshaken();
        }
        // The reader's request is in progress: it is never closed for room.
        let busy = r.busy();
        let (_d, _, evicted) = admit(&c).expect("d");
        assert_eq!(evicted, vec![Evicted::Idle]);
        assert!(closed(&mut a_close), "the oldest idle connection is closed");
        assert!(!closed(&mut b_close) && !closed(&mut r_close));
        assert_eq!(c.counts().0, 3);
        // b turns busy too; d (in its handshake) is the only candidate left.
        let _b_busy = b.busy();
        let (_e, _, evicted) = admit(&c).expect("e");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        // Now b, r and e: e is the only one not busy.
        let (_f, _, evicted) = admit(&c).expect("f");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        assert!(!closed(&mut r_close));
        drop(busy);
        // The reader is idle again, but the newest idle one: f goes first.
        let (_g, _, evicted) = admit(&c).expect("g");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        assert!(!closed(&mut r_close));
        drop(a);
    }

    #[test]
    fn every_slot_busy_refuses_the_newcomer() {
        let c = Connections::new(limits(2, 2));
        let (a, _ac, _) = admit(&c).expect("a");
        let (b, _bc, _) = admit(&c).expect("b");
        a.handshaken();
        b.handshaken();
        let _ab = a.busy();
        let _bb = b.busy();
        assert!(matches!(c.admit(false), Admission::Refused));
        assert_eq!(c.counts().0, 2);
        drop(_ab);
        assert!(admit(&c).is_some(), "a is idle again and makes room");
    }

    #[test]
    fn the_handshake_cap_closes_the_oldest_handshake() {
        let c = Connections::new(limits(100, 2));
        let (_a, mut a_close, _) = admit(&c).expect("a");
        let (b, mut b_close, _) = admit(&c).expect("b");
        let (_c2, _, evicted) = admit(&c).expect("c");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        assert!(closed(&mut a_close));
        assert!(!closed(&mut b_close));
        assert_eq!(c.counts(), (2, 2, 0));
        // A finished handshake frees its handshake slot.
        b.handshaken();
        assert_eq!(c.counts(), (2, 1, 1));
        let (_d, _, evicted) = admit(&c).expect("d");
        assert!(evicted.is_empty());
    }

    #[test]
    fn silent_connections_go_first() {
        // The handshake cap: a reader that has spoken outlives younger silent ones.
        let c = Connections::new(limits(100, 3));
        let (_reader, mut reader_close, _) = admit_heard(&c, true).expect("reader");
        let (_s1, mut s1_close, _) = admit(&c).expect("s1");
        let (s2, mut s2_close, _) = admit(&c).expect("s2");
        let (_s3, _, evicted) = admit(&c).expect("s3");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        assert!(closed(&mut s1_close));
        assert!(!closed(&mut reader_close));
        // A silent connection that speaks keeps its age among those that did.
        s2.heard();
        let (_s4, _, _) = admit(&c).expect("s4");
        assert!(!closed(&mut reader_close) && !closed(&mut s2_close));
        // The connection cap: a silent one goes before an older idle one.
        let c = Connections::new(limits(2, 2));
        let (idle, mut idle_close, _) = admit_heard(&c, true).expect("idle");
        idle.handshaken();
        let (_silent, mut silent_close, _) = admit(&c).expect("silent");
        let (_new, _, evicted) = admit(&c).expect("new");
        assert_eq!(evicted, vec![Evicted::Handshake]);
        assert!(closed(&mut silent_close));
        assert!(!closed(&mut idle_close));
    }

    #[test]
    fn a_dropped_ticket_frees_its_slot_and_close_idle_spares_busy_ones() {
        let c = Connections::new(limits(4, 4));
        let (a, mut a_close, _) = admit(&c).expect("a");
        let (b, mut b_close, _) = admit(&c).expect("b");
        let (d, _, _) = admit(&c).expect("d");
        drop(d);
        assert_eq!(c.counts().0, 2);
        a.handshaken();
        b.handshaken();
        let busy = b.busy();
        c.close_idle();
        assert!(closed(&mut a_close));
        assert!(!closed(&mut b_close));
        assert_eq!(c.counts().0, 1);
        // An evicted ticket's later calls are harmless.
        a.handshaken();
        let _ = a.busy();
        drop(busy);
        assert_eq!(c.counts(), (1, 0, 1));
    }
}
