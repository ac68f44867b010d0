//! Free TCP ports on 127.0.0.1 for the processes the tests start.
//!
//! Ports come from 20000-32699, below Linux's default ephemeral range
//! (32768-60999): the kernel gives the many short-lived client sockets of a
//! test run (agents, HTTP clients, Placement's database) ports from that range,
//! so a port picked there with `bind(0)` and closed again is often taken by a
//! client before the server binds it. Below it, only another process that
//! picks ports on purpose can collide, and the starters retry on
//! "Address already in use" ([`ADDRESS_IN_USE`]).
//!
//! Ports handed out are remembered for the life of this process, so two
//! concurrently starting tests never get the same one.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Mutex;

/// First port handed out.
const LOW: u16 = 20000;
/// One past the last port handed out (an even number, below 32768).
const HIGH: u16 = 32700;

/// How often a starter retries with new ports after losing a port race.
pub const START_ATTEMPTS: usize = 10;

/// What a process that lost a port race writes (Rust's and Python's
/// `EADDRINUSE` message): the starters retry on new ports when its log says so.
const ADDRESS_IN_USE: &str = "Address already in use";

/// Ports handed out by this process and not released.
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Reserves all of `ports` at once, or none if one is already reserved.
fn reserve(ports: &[u16]) -> bool {
    let mut guard = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if ports.iter().any(|p| set.contains(p)) {
        return false;
    }
    set.extend(ports.iter().copied());
    true
}

/// True when a listener can bind `port` on 127.0.0.1 right now.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn random_even_port() -> u16 {
    use rand::Rng;
    rand::thread_rng().gen_range(LOW..HIGH) & !1
}

/// A port that is free on 127.0.0.1 right now and was not handed out before
/// by this process; it stays reserved until [`release`].
pub fn free_port() -> u16 {
    loop {
        let port = random_even_port() + rand::random::<bool>() as u16;
        if bindable(port) && reserve(&[port]) {
            return port;
        }
    }
}

/// A port P such that P and P+1 are both free (swtpm's data and control
/// ports), reserved until [`release_pair`].
pub fn free_port_pair() -> u16 {
    loop {
        let port = random_even_port();
        if bindable(port) && bindable(port + 1) && reserve(&[port, port + 1]) {
            return port;
        }
    }
}

/// Reserves the pair P, P+1 if both are free now (restarting swtpm on its
/// old ports); false if not.
pub fn reserve_pair(port: u16) -> bool {
    port < u16::MAX && bindable(port) && bindable(port + 1) && reserve(&[port, port + 1])
}

/// Gives back a port from [`free_port`].
pub fn release(port: u16) {
    let mut guard = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(&port);
    }
}

/// Gives back a pair from [`free_port_pair`] or [`reserve_pair`].
pub fn release_pair(port: u16) {
    release(port);
    release(port.saturating_add(1));
}

/// Starts a process on `count` free ports with `start`, which writes its log
/// to `log` (appending to earlier runs). When an attempt fails and what *it*
/// wrote to the log says a port was taken meanwhile ("Address already in
/// use"), its ports are given back and `start` runs again on new ones, up to
/// [`START_ATTEMPTS`] times. Other failures are returned at once.
pub fn start_on_free_ports<T>(
    what: &str,
    log: &Path,
    count: usize,
    mut start: impl FnMut(&[u16]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let offset = log_len(log);
        match start(&ports) {
            Ok(started) => return Ok(started),
            Err(_)
                if attempt < START_ATTEMPTS && log_since(log, offset).contains(ADDRESS_IN_USE) =>
            {
                eprintln!(
                    "{what} lost one of the ports {ports:?} to another process; retrying on others"
                );
                ports.iter().for_each(|&p| release(p));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Current length of a log file (0 if it does not exist yet).
fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The part of a log file written after `offset` bytes.
fn log_since(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let singles: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let pairs: Vec<u16> = (0..50).map(|_| free_port_pair()).collect();
        let mut all: Vec<u16> = singles.clone();
        all.extend(pairs.iter().flat_map(|&p| [p, p + 1]));
        assert!(all.iter().all(|&p| (LOW..HIGH).contains(&p)), "{all:?}");
        let distinct: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a port was handed out twice");
        assert!(pairs.iter().all(|p| p % 2 == 0));
        singles.iter().for_each(|&p| release(p));
        pairs.iter().for_each(|&p| release_pair(p));
    }

    #[test]
    fn a_reserved_pair_is_not_reserved_again_until_released() {
        let port = free_port_pair();
        assert!(!reserve(&[port + 1]));
        release_pair(port);
        assert!(reserve(&[port + 1]));
        release(port + 1);
    }

    #[test]
    fn a_lost_port_race_is_retried_on_new_ports_and_other_failures_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "an earlier run: Address already in use\n").expect("write");
        let mut tried = Vec::new();
        let started = start_on_free_ports("x", &log, 2, |ports| {
            tried.push(ports.to_vec());
            if tried.len() < 3 {
                let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
                std::io::Write::write_all(&mut f, b"cannot listen: Address already in use\n")?;
                anyhow::bail!("exited early");
            }
            Ok(ports.to_vec())
        })
        .expect("started on the third attempt");
        assert_eq!(tried.len(), 3);
        assert_eq!(started, tried[2]);
        assert_ne!(tried[0], tried[1]);
        // A failure whose own log part says nothing about ports is final,
        // even though the log says so from an earlier run.
        let mut calls = 0;
        let err = start_on_free_ports("x", &log, 1, |_| -> anyhow::Result<()> {
            calls += 1;
            anyhow::bail!("bad certificate")
        })
        .expect_err("not retried");
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("bad certificate"));
    }

    #[test]
    fn a_port_in_use_is_not_handed_out() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let busy = listener.local_addr().expect("addr").port();
        assert!(!bindable(busy));
    }
}
