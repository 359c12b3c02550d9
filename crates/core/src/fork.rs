//! What a forked child inherits, made safe at any fork point.
//!
//! A child of `fork()` gets a copy of the parent's memory but only the
//! forking thread. Whatever another thread was doing at that instant is
//! frozen half-done in the child: a lock it held stays held, a structure it
//! was changing stays half-changed. Hosts fork at any moment (pre-fork
//! servers, Python's `multiprocessing` with the fork start method), often
//! while our threads are busy, and the child may call `blob_read` at once.
//!
//! Three rules make that safe:
//!
//! 1. **Process-wide state is touched only inside [`section`]s.** A
//!    `pthread_atfork` prepare handler closes the gate and waits until no
//!    thread is inside a section, so at the instant of the fork no thread is
//!    half-way through changing the current instance, the one-time log keys,
//!    the registered secrets or the descriptor registry, and no lock guarding
//!    them is held. Sections are short and never block on I/O (they only
//!    clone, insert and remove in memory), so a fork waits for microseconds.
//!    Sections never nest.
//! 2. **Everything an instance owns is abandoned in the child** (see
//!    `state.rs`): its threads do not exist there, so its locks, queues and
//!    condition variables are never touched again.
//! 3. **Descriptors that carry cross-process locks are closed in the child.**
//!    An open-file-description lock belongs to the open file description,
//!    which a child shares through its copy of the descriptor; if the parent
//!    were killed, the child (which never runs the parent's code that would
//!    release it) would hold the lock for as long as it lives. Every lock
//!    file descriptor is opened and registered inside a section
//!    ([`open_registered`]) and closed in the child handler.
//!
//! Logging writes with one `write(2)` and takes no lock (see `log.rs`).
//!
//! And one rule for glibc's sake: **threads are started inside a section**
//! ([`spawn`]). glibc's `pthread_create` reuses the stack of a finished
//! thread; it takes the stack out of its cache under a lock, then, with the
//! lock released, frees the old thread's dynamic TLS blocks (every thread of
//! a `dlopen`ed library has some) and clears their pointers. A fork between
//! the two leaves the child a cached stack whose pointers the parent has
//! already freed, and the child's first `pthread_create` frees them again:
//! "double free or corruption (out)" (glibc 2.36, `get_cached_stack` in
//! `nptl/allocatestack.c`; seen about once in a thousand forks by
//! `examples-c/streamer_like` phase d). Holding forks off while our threads
//! start closes that window for every thread the library starts: its own
//! (through [`spawn`]), and the Azure origin's tokio workers, which start
//! when its runtime is built (inside a section); name lookups run on threads
//! of ours rather than in tokio's blocking pool, which would start threads
//! at any moment. The host's own threads are the host's affair.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, Once};

use crate::sync::MutexExt;

/// Threads inside a section now.
static INSIDE: AtomicU32 = AtomicU32::new(0);
/// Forks in progress (prepare handler run, parent handler not yet).
static FORKING: AtomicU32 = AtomicU32::new(0);
/// How many times this process's lineage forked since the library loaded
/// (bumped in each child): state of an older generation belongs to a parent.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Descriptors that must not outlive a fork in the child.
static REGISTERED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Registers the fork handlers (once per process; the library is never
/// unloaded: the streamer does not `dlclose` it).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        crate::sys::at_fork(prepare, parent, child);
    });
}

/// The fork generation of this process (0 in a process that never forked
/// since the library was loaded; each child adds one).
pub(crate) fn generation() -> u64 {
    GENERATION.load(SeqCst)
}

/// Runs `f` with forks held off. `f` must be short, must not block on I/O,
/// must not log and must not enter another section.
pub(crate) fn section<R>(f: impl FnOnce() -> R) -> R {
    loop {
        while FORKING.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        INSIDE.fetch_add(1, SeqCst);
        if FORKING.load(SeqCst) == 0 {
            break;
        }
        // A fork started between the check and the increment: let it go first.
        INSIDE.fetch_sub(1, SeqCst);
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            INSIDE.fetch_sub(1, SeqCst);
        }
    }
    let _leave = Leave;
    f()
}

/// Starts a thread with forks held off (see the module doc: a fork while
/// glibc prepares a reused stack corrupts the child's stack cache).
pub(crate) fn spawn<F, T>(
    builder: std::thread::Builder,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    section(|| builder.spawn(f))
}

/// Opens a descriptor with `open` and registers it, as one step with
/// respect to fork, so a child never holds an unregistered copy.
/// [`unregister`] it before closing it.
pub(crate) fn open_registered<F, E>(open: impl FnOnce() -> Result<F, E>) -> Result<F, E>
where
    F: AsRawFd,
{
    section(|| {
        let f = open()?;
        REGISTERED.locked().push(f.as_raw_fd());
        Ok(f)
    })
}

/// Forgets a descriptor registered by [`open_registered`] (call before it
/// is closed, so the child handler never closes a number reused since).
pub(crate) fn unregister(fd: RawFd) {
    section(|| {
        let mut r = REGISTERED.locked();
        if let Some(i) = r.iter().position(|&x| x == fd) {
            r.swap_remove(i);
        }
    })
}

extern "C" fn prepare() {
    FORKING.fetch_add(1, SeqCst);
    while INSIDE.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
}

extern "C" fn parent() {
    FORKING.fetch_sub(1, SeqCst);
}

extern "C" fn child() {
    // Only this thread exists; it is not inside a section (fork is not
    // called from library code), so nobody holds REGISTERED's lock.
    GENERATION.fetch_add(1, SeqCst);
    {
        let mut r = REGISTERED.locked();
        for fd in r.drain(..) {
            // Registered by a thread that does not exist in this process:
            // its owner's destructor never runs here, so this is the only
            // close it gets.
            crate::sys::close_orphan(fd);
        }
    }
    INSIDE.store(0, SeqCst);
    FORKING.store(0, SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_run_their_closure_and_leave_the_gate_open() {
        assert_eq!(section(|| 41 + 1), 42);
        assert_eq!(INSIDE.load(SeqCst), 0);
    }
}
