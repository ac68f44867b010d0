//! [`TpmWorker`]: a [`Tpm`] on its own OS thread, with async methods.

use super::{Identity, LoadedHandles, Quote, Tpm, TpmError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error};

type Reply<T> = oneshot::Sender<Result<T, TpmError>>;

enum Request {
    Identity(Reply<Identity>),
    Activate {
        blob: Vec<u8>,
        secret: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Quote {
        qualifying_data: Vec<u8>,
        pcrs: Vec<u32>,
        reply: Reply<Quote>,
    },
    ReadPcrs {
        pcrs: Vec<u32>,
        reply: Reply<Vec<(u32, Vec<u8>)>>,
    },
    LoadedHandles(Reply<LoadedHandles>),
    /// Ends the thread after the requests queued before it; answered once
    /// the TPM context is closed.
    Stop(oneshot::Sender<()>),
}

/// Whether the worker has a working TPM, as its last request showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmHealth {
    /// Since when there is no TPM connection: the failure that discarded the
    /// context, kept through every failed reopen after it; `None` while a
    /// context is open.
    pub lost_since: Option<Instant>,
    /// The error that discarded the context or failed to reopen it, last.
    pub last_error: Option<String>,
    /// Since when the request in flight runs (`None` between requests).
    pub busy_since: Option<Instant>,
}

impl TpmHealth {
    /// Since when the TPM has not been working: lost, or stuck in a request
    /// that does not return; `None` if it works.
    pub fn unusable_since(&self) -> Option<Instant> {
        match (self.lost_since, self.busy_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the agent gives up on a TPM unusable for `bound`, if it is
    /// unusable (and that instant is representable: a bound of centuries
    /// means never).
    pub fn give_up_at(&self, bound: Duration) -> Option<Instant> {
        self.unusable_since()
            .and_then(|since| since.checked_add(bound))
    }

    fn record<T>(&mut self, open: bool, result: &Result<T, TpmError>) {
        self.busy_since = None;
        if open {
            self.lost_since = None;
            self.last_error = None;
            return;
        }
        self.lost_since.get_or_insert_with(Instant::now);
        if let Err(e) = result {
            self.last_error = Some(e.to_string());
        }
    }
}

/// Why the agent gave up on its TPM (see [`TpmWorker::unusable_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmUnusable {
    /// How long the TPM had been unusable.
    pub lasted: Duration,
    /// The last error, or what the worker was doing.
    pub reason: String,
}

/// Runs a [`Tpm`] on a dedicated OS thread (TPM calls block for 5-200 ms,
/// longer on discrete TPMs) and offers async methods; requests are served one
/// at a time in arrival order. Cheap to clone; the thread ends (and the TPM
/// context is closed) when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct TpmWorker {
    tx: mpsc::Sender<Request>,
    health: watch::Receiver<TpmHealth>,
}

impl TpmWorker {
    /// Moves `tpm` to a new thread named `tpm`. Never panics: if the thread
    /// cannot be created, every call returns [`TpmError::WorkerGone`].
    pub fn spawn(tpm: Tpm) -> TpmWorker {
        let (tx, rx) = mpsc::channel(32);
        let mut initial = TpmHealth::default();
        initial.record(tpm.is_open(), &Ok::<(), TpmError>(()));
        let (health_tx, health) = watch::channel(initial);
        let spawned = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || serve(tpm, rx, health_tx));
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the TPM worker thread");
        }
        TpmWorker { tx, health }
    }

    /// Resolves once the TPM has been unusable (no connection, see
    /// [`Tpm::is_open`], a request that does not return, or the worker
    /// thread gone) for `bound` without a break; a request that finds a
    /// working TPM restarts the count. Never resolves while the TPM works.
    pub async fn unusable_for(&self, bound: Duration) -> TpmUnusable {
        let mut health = self.health.clone();
        let worker_gone = || async {
            tokio::time::sleep(bound).await;
            TpmUnusable {
                lasted: bound,
                reason: TpmError::WorkerGone.to_string(),
            }
        };
        loop {
            let now = health.borrow_and_update().clone();
            match now.give_up_at(bound) {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            let since = now.unusable_since().unwrap_or_else(Instant::now);
                            let reason = match (&now.last_error, now.lost_since) {
                                (Some(e), Some(_)) => e.clone(),
                                _ => "a TPM request did not return".to_string(),
                            };
                            return TpmUnusable { lasted: since.elapsed(), reason };
                        }
                        changed = health.changed() => {
                            if changed.is_err() {
                                return worker_gone().await;
                            }
                        }
                    }
                }
                None => {
                    if health.changed().await.is_err() {
                        return worker_gone().await;
                    }
                }
            }
        }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, TpmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| TpmError::WorkerGone)?;
        rx.await.map_err(|_| TpmError::WorkerGone)?
    }

    /// See [`Tpm::identity`].
    pub async fn identity(&self) -> Result<Identity, TpmError> {
        self.call(Request::Identity).await
    }

    /// See [`Tpm::activate_credential`].
    pub async fn activate_credential(
        &self,
        blob: Vec<u8>,
        secret: Vec<u8>,
    ) -> Result<Vec<u8>, TpmError> {
        self.call(|reply| Request::Activate {
            blob,
            secret,
            reply,
        })
        .await
    }

    /// See [`Tpm::quote`].
    pub async fn quote(&self, qualifying_data: Vec<u8>, pcrs: Vec<u32>) -> Result<Quote, TpmError> {
        self.call(|reply| Request::Quote {
            qualifying_data,
            pcrs,
            reply,
        })
        .await
    }

    /// See [`Tpm::read_pcrs`].
    pub async fn read_pcrs(&self, pcrs: Vec<u32>) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        self.call(|reply| Request::ReadPcrs { pcrs, reply }).await
    }

    /// See [`Tpm::loaded_handles`].
    pub async fn loaded_handles(&self) -> Result<LoadedHandles, TpmError> {
        self.call(Request::LoadedHandles).await
    }

    /// Stops the worker for good: the TPM operation in flight and those
    /// queued before finish (each flushes what it loaded), then the TPM
    /// context is closed. Returns once that is done (at once if the thread
    /// is already gone); later calls fail with [`TpmError::WorkerGone`].
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Runs one request on `tpm`, keeping `health` up to date, and answers it.
/// A caller that gave up (dropped its future) is not an error.
fn handle<T>(
    tpm: &mut Tpm,
    health: &watch::Sender<TpmHealth>,
    reply: Reply<T>,
    op: impl FnOnce(&mut Tpm) -> Result<T, TpmError>,
) {
    health.send_modify(|h| h.busy_since = Some(Instant::now()));
    let result = op(tpm);
    let open = tpm.is_open();
    health.send_modify(|h| h.record(open, &result));
    let _ = reply.send(result);
}

fn serve(mut tpm: Tpm, mut rx: mpsc::Receiver<Request>, health: watch::Sender<TpmHealth>) {
    debug!(tcti = %tpm.tcti(), "TPM worker started");
    let health = &health;
    while let Some(req) = rx.blocking_recv() {
        match req {
            Request::Identity(reply) => handle(&mut tpm, health, reply, Tpm::identity),
            Request::Activate {
                blob,
                secret,
                reply,
            } => handle(&mut tpm, health, reply, |t| {
                t.activate_credential(&blob, &secret)
            }),
            Request::Quote {
                qualifying_data,
                pcrs,
                reply,
            } => handle(&mut tpm, health, reply, |t| {
                t.quote(&qualifying_data, &pcrs)
            }),
            Request::ReadPcrs { pcrs, reply } => {
                handle(&mut tpm, health, reply, |t| t.read_pcrs(&pcrs))
            }
            Request::LoadedHandles(reply) => handle(&mut tpm, health, reply, Tpm::loaded_handles),
            Request::Stop(done) => {
                rx.close();
                drop(tpm);
                debug!("TPM worker stopped");
                let _ = done.send(());
                return;
            }
        }
    }
    debug!("TPM worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_from_the_first_failure_until_a_working_request() {
        let bound = Duration::from_secs(3);
        let mut h = TpmHealth::default();
        assert_eq!(h.give_up_at(bound), None);
        let lost: Result<(), TpmError> = Err(TpmError::invalid("t", "gone"));
        h.busy_since = Some(Instant::now());
        h.record(false, &lost);
        let since = h.lost_since.expect("lost");
        assert_eq!(h.busy_since, None);
        assert_eq!(h.give_up_at(bound), Some(since + bound));
        // further failed reopens do not move the start
        h.record(false, &Err::<(), _>(TpmError::invalid("t", "still gone")));
        assert_eq!(h.lost_since, Some(since));
        assert_eq!(
            h.last_error.as_deref(),
            Some("invalid input for t: still gone")
        );
        // a request that finds a working TPM ends it
        h.record(true, &Ok(()));
        assert_eq!(h, TpmHealth::default());
        // a request that does not return counts from its start
        let started = Instant::now();
        h.busy_since = Some(started);
        assert_eq!(h.unusable_since(), Some(started));
        // an absurd bound is "never", not an overflow
        assert_eq!(h.give_up_at(Duration::MAX), None);
    }
}
