//! Store health: whether the database takes writes and is still the one that was opened.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{error, info};

/// Whether the store accepts writes and is still the store that was opened.
/// Read by the feed, `PollHosts`, `/readyz` and the metrics; written by every
/// store write and by [`Store::probe`].
#[derive(Debug)]
pub struct StoreHealth {
    /// Set by any failed write, cleared only by a successful probe (so a
    /// full disk that lets a small write through now and then does not flap).
    write_failed: AtomicBool,
    /// Set once the database file is gone or replaced: never cleared (a
    /// restart decides, see docs/database.md).
    identity_lost: AtomicBool,
    last_error: Mutex<String>,
    /// Failed writes since start (metric).
    write_errors: AtomicU64,
    /// Writes that succeeded since start: a probe that is slow while this
    /// moves is waiting behind a busy database, not a dead one.
    writes_done: AtomicU64,
    /// Bumped each time writes work again after a failure.
    recovered: tokio::sync::watch::Sender<u64>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            write_failed: AtomicBool::new(false),
            identity_lost: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            write_errors: AtomicU64::new(0),
            writes_done: AtomicU64::new(0),
            recovered: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Readiness problem: writes fail.
pub const STORE_NOT_WRITABLE: &str = "the database refuses writes";
/// Readiness problem: the database file was removed or replaced.
pub const STORE_IDENTITY_LOST: &str =
    "the database file was removed or replaced under the running server";

impl StoreHealth {
    /// True when writes work and the database is the one opened.
    pub fn ok(&self) -> bool {
        !self.write_failed.load(Ordering::Acquire) && !self.identity_lost.load(Ordering::Acquire)
    }

    /// True while writes fail (until a probe succeeds).
    pub fn write_failed(&self) -> bool {
        self.write_failed.load(Ordering::Acquire)
    }

    /// True once the database file was removed or replaced.
    pub fn identity_lost(&self) -> bool {
        self.identity_lost.load(Ordering::Acquire)
    }

    /// Successful writes since start.
    pub fn writes_done(&self) -> u64 {
        self.writes_done.load(Ordering::Acquire)
    }

    pub(super) fn write_done(&self) {
        self.writes_done.fetch_add(1, Ordering::AcqRel);
    }

    /// Failed writes since start.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// The last write or identity error ("" when none).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every readiness problem of the store (empty when healthy).
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.identity_lost() {
            out.push(STORE_IDENTITY_LOST);
        }
        if self.write_failed() {
            out.push(STORE_NOT_WRITABLE);
        }
        out
    }

    /// Changes each time writes work again after a failure: sessions watch it
    /// to attest their hosts again at once.
    pub fn recovered(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    pub(super) fn write_error(&self, e: &anyhow::Error) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = format!("{e:#}");
        if !self.write_failed.swap(true, Ordering::AcqRel) {
            error!(error = %format!("{e:#}"), "a database write failed: the feed and PollHosts answer 503 and no new verdict is trusted until writes work again");
        }
    }

    pub(super) fn probe_ok(&self) {
        if self.write_failed.swap(false, Ordering::AcqRel) {
            info!("database writes work again: the feed is served and the hosts attest again");
            self.recovered.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub(super) fn lose_identity(&self, why: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = why.to_string();
        if !self.identity_lost.swap(true, Ordering::AcqRel) {
            error!(problem = %why, "THE DATABASE WAS REMOVED OR REPLACED: failing closed (feed and PollHosts 503, nothing trusted) until the operator restores it and restarts the server (docs/database.md)");
        }
    }
}
