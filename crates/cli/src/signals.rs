//! Waiting for SIGTERM or SIGINT (what Kubernetes and a terminal send to
//! stop a long-running command), without a signal handler: the two signals
//! are blocked in the main thread before any other thread starts (every
//! thread inherits the mask, so none of them takes the signal), and the
//! main thread takes them with `sigwait`. Nothing runs in signal context.

/// SIGTERM and SIGINT, blocked in this thread and the threads it starts
/// from now on.
pub struct Termination {
    set: libc::sigset_t,
}

impl Termination {
    /// Blocks SIGTERM and SIGINT. Call it before starting any thread.
    pub fn block() -> Termination {
        // SAFETY: sigset_t is plain data that sigemptyset initialises.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned here; the pointers live
        // for the calls; a NULL old-set pointer is allowed.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        Termination { set }
    }

    /// Waits until SIGTERM or SIGINT arrives, and names it.
    pub fn wait(&self) -> &'static str {
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `self.set` was initialised by `block`, `sig` is a
            // valid place for the answer; sigwait only waits.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return if sig == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
            }
        }
    }
}
