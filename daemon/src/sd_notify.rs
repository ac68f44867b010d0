//! A tiny sd_notify(3): tells systemd (`Type=notify` units) that a daemon is
//! ready (the agent: its TPM is open; the server: database, policy, listeners) by sending `READY=1` as one datagram to the unix
//! socket named by `$NOTIFY_SOCKET` (a path, or an abstract-namespace name
//! when it starts with `@`). Without `$NOTIFY_SOCKET` (not started by systemd) it does
//! nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use tracing::{debug, warn};

/// Sends `READY=1` to systemd if it asked for notifications; a failure is
/// logged, never fatal (the unit's start-up timeout then reports it).
pub fn ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    match notify(&socket, "READY=1") {
        Ok(()) => debug!("told systemd READY=1"),
        Err(e) => warn!(
            "cannot notify systemd at NOTIFY_SOCKET={}: {e}",
            socket.to_string_lossy()
        ),
    }
}

/// Sends `state` (e.g. `READY=1`) to the notification socket `socket`.
pub fn notify(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let name = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match name.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name[1..])?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        Some(b'/') => sock.send_to(state.as_bytes(), socket)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only absolute paths and @abstract names are supported",
            ))
        }
    };
    if sent != state.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short datagram",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn received(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify(path.as_os_str(), "READY=1").expect("sent");
        assert_eq!(received(&listener), "READY=1");
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("trustpool-agent-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        notify(OsStr::new(&format!("@{name}")), "READY=1").expect("sent");
        assert_eq!(received(&listener), "READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(notify(OsStr::new("/nonexistent/notify"), "READY=1").is_err());
        assert!(notify(OsStr::new("relative"), "READY=1").is_err());
        assert!(notify(OsStr::new(""), "READY=1").is_err());
    }
}
