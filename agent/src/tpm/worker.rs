//! [`TpmWorker`]: a [`Tpm`] on its own OS thread, with async methods.

use super::{Identity, LoadedHandles, Quote, Tpm, TpmError};
use tokio::sync::{mpsc, oneshot};
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

/// Runs a [`Tpm`] on a dedicated OS thread (TPM calls block for 5-200 ms,
/// longer on discrete TPMs) and offers async methods; requests are served one
/// at a time in arrival order. Cheap to clone; the thread ends (and the TPM
/// context is closed) when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct TpmWorker {
    tx: mpsc::Sender<Request>,
}

impl TpmWorker {
    /// Moves `tpm` to a new thread named `tpm`. Never panics: if the thread
    /// cannot be created, every call returns [`TpmError::WorkerGone`].
    pub fn spawn(tpm: Tpm) -> TpmWorker {
        let (tx, rx) = mpsc::channel(32);
        let spawned = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || serve(tpm, rx));
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the TPM worker thread");
        }
        TpmWorker { tx }
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

fn serve(mut tpm: Tpm, mut rx: mpsc::Receiver<Request>) {
    debug!(tcti = %tpm.tcti(), "TPM worker started");
    while let Some(req) = rx.blocking_recv() {
        // A caller that gave up (dropped its future) is not an error.
        match req {
            Request::Identity(reply) => {
                let _ = reply.send(tpm.identity());
            }
            Request::Activate {
                blob,
                secret,
                reply,
            } => {
                let _ = reply.send(tpm.activate_credential(&blob, &secret));
            }
            Request::Quote {
                qualifying_data,
                pcrs,
                reply,
            } => {
                let _ = reply.send(tpm.quote(&qualifying_data, &pcrs));
            }
            Request::ReadPcrs { pcrs, reply } => {
                let _ = reply.send(tpm.read_pcrs(&pcrs));
            }
            Request::LoadedHandles(reply) => {
                let _ = reply.send(tpm.loaded_handles());
            }
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
