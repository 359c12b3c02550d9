//! A time bound around an origin whose calls block in the kernel.
//!
//! A directory origin on a network filesystem whose server is gone (a dead
//! NFS server, a frozen FUSE daemon) blocks `open`, `stat` and `pread`
//! forever, often uninterruptibly: no signal or timeout reaches a thread
//! stuck there. So each call runs on a thread of its own, and the caller
//! waits for it at most `BLOBCACHE_FETCH_TIMEOUT` (and not at all once the
//! library shuts down); a call that does not return in time fails with a
//! clear error and its thread is abandoned, to end whenever the kernel lets
//! it. While [`MAX_STUCK`] such threads are still stuck, further calls fail
//! at once instead of piling up more.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;
use crate::origin::{Listed, ObjectInfo, Origin, Sink};
use crate::stuck::StuckGuard;

/// Abandoned calls still running, past which calls fail at once.
pub(crate) const MAX_STUCK: usize = 4;
/// Bytes handed from the I/O thread to the caller at a time.
const CHUNK: usize = 1 << 20;
/// How often a waiting caller looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct Bounded {
    inner: Arc<dyn Origin>,
    timeout: Duration,
    stopped: Arc<AtomicBool>,
    stuck: Arc<AtomicUsize>,
}

impl Bounded {
    pub(crate) fn new(inner: Arc<dyn Origin>, timeout: Duration) -> Bounded {
        Bounded {
            inner,
            timeout,
            stopped: Arc::new(AtomicBool::new(false)),
            stuck: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn too_many_stuck(&self) -> Result<()> {
        let n = self.stuck.load(Ordering::Acquire);
        if n >= MAX_STUCK {
            return Err(Error::origin(format!(
                "{} is not answering: {n} earlier calls are still stuck (a hung network filesystem?)",
                self.inner.describe()
            )));
        }
        Ok(())
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::origin(format!(
            "{} did not answer within BLOBCACHE_FETCH_TIMEOUT ({:?}) while {what} (a hung network filesystem?)",
            self.inner.describe(),
            self.timeout
        ))
    }

    fn shut_down() -> Error {
        Error::new(
            ErrorKind::Shutdown,
            "the library was shut down while waiting for the origin",
        )
    }

    /// Runs `body` on a thread of its own (with the wrapped origin); the
    /// returned flag marks the call abandoned (and counted as stuck) once
    /// the caller stops waiting for it.
    fn spawn(
        &self,
        body: impl FnOnce(&dyn Origin) + Send + 'static,
    ) -> Result<(Arc<AtomicBool>, JoinHandle<()>)> {
        // Calls abandoned at shutdown count as stuck too; a call made after
        // it must say the library shut down, not blame the directory.
        if self.stopped.load(Ordering::Acquire) {
            return Err(Self::shut_down());
        }
        if let Err(e) = self.too_many_stuck() {
            // (Shutdown may have come, and counted its calls, meanwhile.)
            if self.stopped.load(Ordering::Acquire) {
                return Err(Self::shut_down());
            }
            return Err(e);
        }
        let inner = self.inner.clone();
        let (guard, abandoned) = StuckGuard::new(&self.stuck);
        let builder = std::thread::Builder::new()
            .name("blobcache-origin-io".into())
            .stack_size(256 << 10);
        let handle = crate::fork::spawn(builder, move || {
            let _guard = guard;
            body(&*inner);
        })
        .map_err(|e| Error::internal(format!("cannot start an origin I/O thread: {e}")))?;
        Ok((abandoned, handle))
    }

    /// Gives up on a call: counts it as stuck unless it already ended.
    fn abandon(&self, abandoned: &AtomicBool) {
        crate::stuck::abandon(&self.stuck, abandoned);
    }

    /// Waits for one message from a call's thread until `deadline`.
    fn wait<T>(
        &self,
        rx: &mpsc::Receiver<T>,
        abandoned: &AtomicBool,
        deadline: Instant,
        what: &str,
    ) -> Result<Option<T>> {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                self.abandon(abandoned);
                return Err(Self::shut_down());
            }
            let now = Instant::now();
            if now >= deadline {
                self.abandon(abandoned);
                return Err(self.timed_out(what));
            }
            match rx.recv_timeout((deadline - now).min(POLL)) {
                Ok(v) => return Ok(Some(v)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    fn call<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Origin) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let (abandoned, handle) = self.spawn(move |o| {
            let _ = tx.send(f(o));
        })?;
        let r = match self.wait(&rx, &abandoned, deadline, what)? {
            Some(r) => r,
            None => Err(Error::internal(
                "an origin I/O thread ended without an answer",
            )),
        };
        // It answered: it is ending now. (Abandoned ones are never joined.)
        let _ = handle.join();
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
        // Pieces flow through a small channel; buffers come back through
        // another for reuse, so a read allocates a few buffers, not one per
        // piece.
        let (tx, rx) = mpsc::sync_channel::<Piece>(2);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let (abandoned, handle) = self.spawn(move |inner| {
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
        })?;
        loop {
            match self.wait(&rx, &abandoned, deadline, "reading")? {
                Some(Piece::Bytes(mut b)) => {
                    if let Err(e) = sink(&b) {
                        // The thread's next send fails and it ends; give it
                        // a moment to, without waiting on a hung read.
                        drop(rx);
                        let t0 = Instant::now();
                        while !handle.is_finished() && t0.elapsed() < Duration::from_millis(100) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        if handle.is_finished() {
                            let _ = handle.join();
                        }
                        return Err(e);
                    }
                    b.clear();
                    let _ = back_tx.send(b);
                }
                Some(Piece::Done(r)) => {
                    let _ = handle.join();
                    return r;
                }
                None => {
                    let _ = handle.join();
                    return Err(Error::internal(
                        "an origin I/O thread ended without an answer",
                    ));
                }
            }
        }
    }

    fn streams_final_bytes(&self) -> bool {
        self.inner.streams_final_bytes()
    }

    fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        self.inner.shutdown();
    }
}
