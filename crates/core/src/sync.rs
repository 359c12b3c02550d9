//! Locks that survive `fork()`.
//!
//! The library uses the standard library's futex-based locks, whose whole
//! state lives in the lock itself, rather than parking_lot's, whose parked
//! threads live in a process-wide table: a child forked while a parent thread
//! held a slot of that table deadlocks the first time it waits on any
//! parking_lot lock (seen in the fork test). Every lock here belongs to one
//! cache instance, which a forked child abandons and replaces, so a lock held
//! by a parent thread at fork time is never touched in the child.
//!
//! A panic while holding a lock does not make the data unusable here (all
//! updates are single assignments), so poisoning is ignored.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

pub(crate) trait MutexExt<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) trait RwLockExt<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) trait CondvarExt {
    fn wait_on<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    fn wait_on_for<'a, T>(&self, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T>;
}

impl CondvarExt for Condvar {
    fn wait_on<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(g).unwrap_or_else(|e| e.into_inner())
    }
    fn wait_on_for<'a, T>(&self, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
        self.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner()).0
    }
}
