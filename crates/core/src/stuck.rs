//! Calls left to threads stuck in the kernel (a hung filesystem), counted
//! so that no more are piled on them: the origin's bounded calls
//! (`origin/bounded.rs`) and the cluster tier's (`cluster/io.rs`).
//!
//! A call's thread holds a [`StuckGuard`]; its caller, when it stops
//! waiting, calls [`abandon`]. Both swap the call's `abandoned` flag: the
//! caller counts the call as stuck only if the thread is still running,
//! and the thread, ending, uncounts it only if the caller had counted it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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
pub(crate) fn abandon(stuck: &AtomicUsize, abandoned: &AtomicBool) {
    if !abandoned.swap(true, Ordering::AcqRel) {
        stuck.fetch_add(1, Ordering::AcqRel);
    }
}
