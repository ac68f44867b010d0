//! The server's two clocks: a monotonic one that decides every expiry, and
//! the wall clock that stamps what consumers and the history read.

/// The server's monotonic clock in milliseconds: the wall clock when the
/// process first asked, advanced by `CLOCK_MONOTONIC` since. It never goes
/// back and a step of the system clock does not move it; it decides every
/// expiry (the registry's `now_ms`). Wall time ([`now_ms`]) only stamps what
/// consumers and the history read.
pub fn mono_ms() -> i64 {
    static ANCHOR: std::sync::OnceLock<(i64, std::time::Instant)> = std::sync::OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| (now_ms(), std::time::Instant::now()));
    wall.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// Unix time in microseconds (the wall clock): the stamp of a change in
/// the change table, from which the replicas' generations follow.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix time in milliseconds (the wall clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
