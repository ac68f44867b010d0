//! The open agent streams: at most one per host. A new stream for a host
//! replaces the one before it (after a partition the agent's new stream is
//! the live one, while the old may linger half-open), and an operator's
//! action on a host (approve, revoke, readmit) ends its stream so that the
//! agent reconnects under the binding now in force.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// Why the server ended a stream from outside the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Stable code sent to the agent, e.g. `session.replaced`.
    pub code: &'static str,
    /// Human explanation.
    pub message: String,
}

/// Code: another stream for the same host replaced this one.
pub const REPLACED: &str = "session.replaced";
/// Code: the host's enrolment or standing changed; the agent must reconnect.
pub const ENROLMENT_CHANGED: &str = "enrolment.changed";

/// The registration of one open stream.
#[derive(Debug)]
pub struct Ticket {
    /// Identifies the stream among those of the same host.
    pub id: u64,
    ended: watch::Receiver<Option<Ended>>,
}

impl Ticket {
    /// Completes when the stream was ended from outside, with why.
    pub async fn ended(&mut self) -> Ended {
        loop {
            if let Some(e) = self.ended.borrow_and_update().clone() {
                return e;
            }
            if self.ended.changed().await.is_err() {
                // The table dropped the sender: the stream is no longer registered.
                return Ended {
                    code: REPLACED,
                    message: "the stream is no longer registered".into(),
                };
            }
        }
    }
}

/// The table of open streams.
#[derive(Debug, Default)]
pub struct Streams {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<String, (u64, watch::Sender<Option<Ended>>)>,
}

impl Streams {
    /// Registers a new stream for `host`, ending the one it replaces.
    pub fn open(&self, host: &str) -> Ticket {
        let (tx, rx) = watch::channel(None);
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.next_id += 1;
        let id = t.next_id;
        if let Some((_, old)) = t.open.insert(host.to_string(), (id, tx)) {
            old.send_replace(Some(Ended {
                code: REPLACED,
                message: "a newer stream for this host replaced this one".into(),
            }));
        }
        Ticket { id, ended: rx }
    }

    /// Ends the open stream of `host`, if any; returns whether there was one.
    pub fn end(&self, host: &str, code: &'static str, message: impl Into<String>) -> bool {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match t.open.remove(host) {
            Some((_, tx)) => {
                tx.send_replace(Some(Ended {
                    code,
                    message: message.into(),
                }));
                true
            }
            None => false,
        }
    }

    /// Unregisters stream `id` of `host` when it closes; returns whether it
    /// was still the host's current stream (false once replaced or ended).
    pub fn close(&self, host: &str, id: u64) -> bool {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match t.open.get(host) {
            Some((current, _)) if *current == id => {
                t.open.remove(host);
                true
            }
            _ => false,
        }
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attack_second_stream_replaces_the_first() {
        let s = Streams::default();
        let mut first = s.open("h");
        let second = s.open("h");
        assert_eq!(first.ended().await.code, REPLACED);
        assert!(!s.close("h", first.id), "a replaced stream is not current");
        assert!(s.close("h", second.id));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn an_operator_action_ends_the_hosts_stream_only() {
        let s = Streams::default();
        let mut a = s.open("a");
        let b = s.open("b");
        assert!(s.end("a", ENROLMENT_CHANGED, "approved"));
        assert_eq!(a.ended().await.code, ENROLMENT_CHANGED);
        assert!(!s.end("a", ENROLMENT_CHANGED, "again"));
        assert_eq!(s.len(), 1);
        assert!(s.close("b", b.id));
    }
}
