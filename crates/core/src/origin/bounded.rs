//! A time bound around an origin whose calls block in the kernel.
//!
//! A directory origin on a network filesystem whose server is gone (a dead
//! NFS server, a frozen FUSE daemon) blocks `open`, `stat` and `pread`
//! forever, often uninterruptibly: no signal or timeout reaches a thread
//! stuck there. So each call runs on a thread of its own, and the caller
//! waits for it at most `BLOBCACHE_FETCH_TIMEOUT` (and not at all once the
//! library shuts down); a call that does not return in time fails with a
//! clear error and its thread is abandoned, to end whenever the kernel lets
//! it (`crate::offload`). While `MAX_STUCK` such threads are still stuck, further calls fail
//! at once instead of piling up more.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;
use crate::offload::{Call, Io, Unanswered};
use crate::origin::{Listed, ObjectInfo, Origin, Sink};

/// Bytes handed from the I/O thread to the caller at a time.
const CHUNK: usize = 1 << 20;

pub(crate) struct Bounded {
    inner: Arc<dyn Origin>,
    timeout: Duration,
    io: Io,
}

impl Bounded {
    pub(crate) fn new(inner: Arc<dyn Origin>, timeout: Duration) -> Bounded {
        Bounded {
            inner,
            timeout,
            io: Io::new("blobcache-origin-io"),
        }
    }

    /// The error for a call that gave no answer while doing `what`.
    fn unanswered(&self, u: Unanswered, what: &str) -> Error {
        match u {
            Unanswered::Hung(_) => Error::origin(format!(
                "{} did not answer within BLOBCACHE_FETCH_TIMEOUT ({:?}) while {what} (a hung network filesystem?)",
                self.inner.describe(),
                self.timeout
            )),
            Unanswered::TooManyStuck(n) => Error::origin(format!(
                "{} is not answering: {n} earlier calls are still stuck (a hung network filesystem?)",
                self.inner.describe()
            )),
            Unanswered::Stopped => Error::new(
                ErrorKind::Shutdown,
                "the library was shut down while waiting for the origin",
            ),
            Unanswered::NoThread(e) => {
                Error::internal(format!("cannot run an origin I/O thread: {e}"))
            }
        }
    }

    /// Runs `body` on a thread of its own with the wrapped origin.
    fn start<T: Send + 'static>(
        &self,
        body: impl FnOnce(&dyn Origin, mpsc::SyncSender<T>) + Send + 'static,
        what: &str,
    ) -> Result<Call<T>> {
        let inner = self.inner.clone();
        self.io
            .start(move |tx| body(&*inner, tx))
            .map_err(|u| self.unanswered(u, what))
    }

    /// The next message of `call`, waiting at most until `deadline`.
    fn next<T: Send + 'static>(&self, call: &Call<T>, deadline: Instant, what: &str) -> Result<T> {
        let left = deadline.saturating_duration_since(Instant::now());
        match call.next(left) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Error::internal(
                "an origin I/O thread ended without an answer",
            )),
            Err(u) => Err(self.unanswered(u, what)),
        }
    }

    fn call<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Origin) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        let call = self.start(move |o, tx| drop(tx.send(f(o))), what)?;
        let r = self.next(&call, deadline, what)?;
        call.done();
        r
    }
}

/// What a read's I/O thread sends: bytes, or how the read ended.
enum Piece {
    Bytes(Vec<u8>),
    Done(Result<()>),
}

impl Origin for Bounded {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn stat(&self, key: &BlobKey) -> Result<ObjectInfo> {
        let k = key.clone();
        self.call("looking up the blob", move |o| o.stat(&k))
    }

    fn stat_quick(&self, key: &BlobKey) -> Result<ObjectInfo> {
        let k = key.clone();
        self.call("looking up the blob", move |o| o.stat_quick(&k))
    }

    fn list(&self, account: &str, container: &str, prefix: &str) -> Result<Vec<Listed>> {
        let (a, c, p) = (
            account.to_string(),
            container.to_string(),
            prefix.to_string(),
        );
        self.call("listing", move |o| o.list(&a, &c, &p))
    }

    fn read(
        &self,
        key: &BlobKey,
        info: &ObjectInfo,
        offset: u64,
        len: u64,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let (k, i) = (key.clone(), info.clone());
        // Pieces flow through the call's small channel; buffers come back
        // through another for reuse, so a read allocates a few buffers, not
        // one per piece.
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let call = self.start(
            move |inner, tx: mpsc::SyncSender<Piece>| {
                let mut pending: Vec<u8> = Vec::new();
                let send = |pending: &mut Vec<u8>| -> Result<()> {
                    let full = std::mem::replace(
                        pending,
                        back_rx
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
                    );
                    tx.send(Piece::Bytes(full))
                        .map_err(|_| Error::new(ErrorKind::Shutdown, "the reader stopped waiting"))
                };
                let r = inner.read(&k, &i, offset, len, &mut |mut c: &[u8]| {
                    while !c.is_empty() {
                        if pending.capacity() == 0 {
                            pending.reserve(CHUNK);
                        }
                        let room = CHUNK.saturating_sub(pending.len()).max(1);
                        let n = room.min(c.len());
                        pending.extend_from_slice(&c[..n]);
                        c = &c[n..];
                        if pending.len() >= CHUNK {
                            send(&mut pending)?;
                            pending.clear();
                        }
                    }
                    Ok(())
                });
                let r = match r {
                    Ok(()) if !pending.is_empty() => send(&mut pending),
                    r => r,
                };
                let _ = tx.send(Piece::Done(r));
            },
            "reading",
        )?;
        loop {
            match self.next(&call, deadline, "reading")? {
                Piece::Bytes(mut b) => {
                    // On a failed sink the call is dropped: its thread's next
                    // send fails and it ends (counted as stuck until then).
                    sink(&b)?;
                    b.clear();
                    let _ = back_tx.send(b);
                }
                Piece::Done(r) => {
                    call.done();
                    return r;
                }
            }
        }
    }

    fn streams_final_bytes(&self) -> bool {
        self.inner.streams_final_bytes()
    }

    fn shutdown(&self) {
        self.io.stop();
        self.inner.shutdown();
    }
}
