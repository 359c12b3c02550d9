//! Calls offloaded to threads of their own, for what may block in the
//! kernel forever: the origin's calls into a directory on a network
//! filesystem (`origin/bounded.rs`) and every touch of the cluster tier
//! (`cluster/`).
//!
//! A dead NFS server or a frozen FUSE daemon blocks `stat`, `open`, `read`
//! and even `fcntl` forever, often uninterruptibly: no signal or timeout
//! reaches a thread stuck there. So each call runs on a thread of its own
//! that reports through a channel, and the caller waits for each message
//! at most a bound; a thread that stops answering is abandoned, to end
//! whenever the kernel lets it. While [`MAX_STUCK`] of them are still
//! stuck, new calls are refused at once instead of piling up more threads
//! on a dead mount.
//!
//! A call's thread holds a [`StuckGuard`]; its caller, when it stops
//! waiting, abandons it. Both swap the call's `abandoned` flag: the caller
//! counts the call as stuck only if the thread is still running, and the
//! thread, ending, uncounts it only if the caller had counted it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Abandoned calls still running, past which calls are refused.
pub(crate) const MAX_STUCK: usize = 4;
/// How often a waiting caller looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(20);

/// Why a bounded call gave no answer.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// No message within the bound: the filesystem hangs (or is very slow).
    Hung(Duration),
    /// Too many earlier calls are still stuck.
    TooManyStuck(usize),
    /// The library is shutting down.
    Stopped,
    /// The thread could not be started.
    NoThread(String),
}

impl Unanswered {
    /// For log lines: what happened, completing "the cluster directory ...".
    pub(crate) fn describe(&self) -> String {
        match self {
            Unanswered::Hung(d) => format!(
                "did not answer within {:.1} s (a hung or unreachable mount?)",
                d.as_secs_f64()
            ),
            Unanswered::TooManyStuck(n) => {
                format!("is not answering: {n} earlier calls into it are still stuck")
            }
            Unanswered::Stopped => "was not used: the library is shutting down".into(),
            Unanswered::NoThread(e) => format!("could not be used: cannot start a thread: {e}"),
        }
    }
}

/// Held by a call's thread: counts the call as stuck while alive, once its
/// caller gave up on it.
pub(crate) struct StuckGuard {
    stuck: Arc<AtomicUsize>,
    abandoned: Arc<AtomicBool>,
}

impl StuckGuard {
    /// A guard for a new call counted in `stuck`, and the call's flag for
    /// its caller (see [`abandon`]).
    pub(crate) fn new(stuck: &Arc<AtomicUsize>) -> (StuckGuard, Arc<AtomicBool>) {
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = StuckGuard {
            stuck: stuck.clone(),
            abandoned: abandoned.clone(),
        };
        (guard, abandoned)
    }
}

impl Drop for StuckGuard {
    fn drop(&mut self) {
        // The caller marks the call abandoned (and counts it) when it gives
        // up; whoever comes second undoes the count.
        if self.abandoned.swap(true, Ordering::AcqRel) {
            self.stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The caller gives up on a call: counts it as stuck unless it already
/// ended.
fn abandon(stuck: &AtomicUsize, abandoned: &AtomicBool) {
    if !abandoned.swap(true, Ordering::AcqRel) {
        stuck.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs calls on threads of their own, named `name`.
pub(crate) struct Io {
    name: &'static str,
    stuck: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
}

/// A call running on its thread: the messages it sends, each waited for
/// within a bound. Dropped before the thread ended, the call is abandoned.
pub(crate) struct Call<T: Send + 'static> {
    /// `None` once dropped.
    rx: Option<mpsc::Receiver<T>>,
    abandoned: Arc<AtomicBool>,
    stuck: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    /// The thread sent its last message (it is ending): not stuck.
    done: AtomicBool,
    name: &'static str,
}

impl<T: Send + 'static> Call<T> {
    /// Marks the call answered for good: its thread sent its last message
    /// and is ending, so dropping the call does not count it as stuck.
    /// (Counting every call that ends this way as stuck for the moment its
    /// thread takes to exit made a busy node take a healthy tier for a
    /// hung one.)
    pub(crate) fn done(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    /// The next message, waiting at most `bound`; `Ok(None)` once the
    /// thread ended without another. Gives up (abandoning the call) when
    /// the bound passes or the library shuts down.
    pub(crate) fn next(&self, bound: Duration) -> Result<Option<T>, Unanswered> {
        let deadline = Instant::now() + bound;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                self.abandon();
                return Err(Unanswered::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                self.abandon();
                return Err(Unanswered::Hung(bound));
            }
            let rx = self.rx.as_ref().expect("present until dropped");
            match rx.recv_timeout((deadline - now).min(POLL)) {
                Ok(v) => return Ok(Some(v)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.done();
                    return Ok(None);
                }
            }
        }
    }

    fn abandon(&self) {
        abandon(&self.stuck, &self.abandoned);
    }
}

impl<T: Send + 'static> Drop for Call<T> {
    fn drop(&mut self) {
        // A thread still running when its caller leaves is stuck until it
        // ends (its next send fails, and it returns).
        if !self.done.load(Ordering::Relaxed) {
            self.abandon();
            // A message it sent meanwhile may hold something whose drop
            // touches the mount (a lock to release): dropped elsewhere.
            if let Some(rx) = self.rx.take() {
                detach(self.name, move || drop(rx));
            }
        }
    }
}

impl Io {
    /// Calls on threads named `name`.
    pub(crate) fn new(name: &'static str) -> Io {
        Io {
            name,
            stuck: Arc::default(),
            stopped: Arc::default(),
        }
    }

    /// Calls abandoned and still running.
    pub(crate) fn stuck(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// Refuses new calls from now on and makes waiting callers give up.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The shutdown flag, for bodies that wait themselves.
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopped.clone()
    }

    /// Runs `body` on a thread of its own; it sends its messages through
    /// the sender it is given (a send fails once the caller gave up: the
    /// body should then return).
    pub(crate) fn start<T: Send + 'static>(
        &self,
        body: impl FnOnce(mpsc::SyncSender<T>) + Send + 'static,
    ) -> Result<Call<T>, Unanswered> {
        if self.stopped() {
            return Err(Unanswered::Stopped);
        }
        let n = self.stuck();
        if n >= MAX_STUCK {
            return Err(Unanswered::TooManyStuck(n));
        }
        let (tx, rx) = mpsc::sync_channel(2);
        let (guard, abandoned) = StuckGuard::new(&self.stuck);
        crate::fork::spawn(thread(self.name), move || {
            let _guard = guard;
            body(tx);
        })
        .map_err(|e| Unanswered::NoThread(e.to_string()))?;
        Ok(Call {
            rx: Some(rx),
            abandoned,
            stuck: self.stuck.clone(),
            stopped: self.stopped.clone(),
            done: AtomicBool::new(false),
            name: self.name,
        })
    }

    /// Runs `f` on a thread of its own and waits at most `bound` for its
    /// answer.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        bound: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unanswered> {
        let call = self.start(move |tx| {
            let _ = tx.send(f());
        })?;
        match call.next(bound)? {
            Some(v) => {
                call.done();
                Ok(v)
            }
            None => Err(Unanswered::NoThread(format!(
                "a {} thread ended without an answer",
                self.name
            ))),
        }
    }

    /// Runs `f` on a thread of its own without waiting for it (releasing a
    /// lock on a filesystem, which may block when it hangs).
    pub(crate) fn detach(&self, f: impl FnOnce() + Send + 'static) {
        detach(self.name, f);
    }
}

fn thread(name: &'static str) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 << 10)
}

fn detach(name: &'static str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = crate::fork::spawn(thread(name), f) {
        crate::log::debug!("cannot start a {name} thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_blocks_is_abandoned_after_its_bound_and_counted_until_it_ends() {
        let io = Io::new("test-io");
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let t0 = Instant::now();
        let r = io.call(Duration::from_millis(100), move || {
            let _ = release_rx.recv();
            7
        });
        assert!(matches!(r, Err(Unanswered::Hung(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(io.stuck(), 1);
        release_tx.send(()).unwrap();
        let t0 = Instant::now();
        while io.stuck() != 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(io.stuck(), 0);
        assert_eq!(io.call(Duration::from_secs(5), || 7).unwrap(), 7);
        assert_eq!(io.stuck(), 0);
    }

    #[test]
    fn a_call_whose_thread_sent_its_last_message_is_not_stuck_while_it_exits() {
        let io = Io::new("test-io");
        for _ in 0..2 * MAX_STUCK {
            let call = io
                .start(|tx| {
                    let _ = tx.send(1);
                    // Still alive when the caller leaves.
                    std::thread::sleep(Duration::from_millis(300));
                })
                .unwrap();
            assert_eq!(call.next(Duration::from_secs(5)).unwrap(), Some(1));
            call.done();
        }
        assert_eq!(io.stuck(), 0);
        assert!(io.call(Duration::from_secs(5), || ()).is_ok());
    }

    #[test]
    fn calls_are_refused_at_once_while_too_many_are_stuck_and_after_stop() {
        let io = Io::new("test-io");
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        for _ in 0..MAX_STUCK {
            let rx = release_rx.clone();
            let r = io.call(Duration::from_millis(10), move || {
                let _ = rx.lock().unwrap().recv();
            });
            assert!(matches!(r, Err(Unanswered::Hung(_))));
        }
        let t0 = Instant::now();
        let r = io.call(Duration::from_secs(10), || ());
        assert!(matches!(r, Err(Unanswered::TooManyStuck(n)) if n == MAX_STUCK));
        assert!(t0.elapsed() < Duration::from_secs(1));
        for _ in 0..MAX_STUCK {
            release_tx.send(()).unwrap();
        }
        io.stop();
        assert!(matches!(
            io.call(Duration::from_secs(1), || ()),
            Err(Unanswered::Stopped)
        ));
    }
}
