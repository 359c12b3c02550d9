//! The process-wide cache and its lifecycle.
//!
//! Created lazily by the first read, released by `shutdown`, created again by
//! the next read (the streamer calls `shutdown` after every session and then
//! reads again). Readers clone the current instance's `Arc` under a lock
//! held for that clone only. A read that overlaps `shutdown` keeps the
//! instance it started with alive until it returns.
//!
//! After `fork()`, the child inherits the parent's instance but not its
//! threads; the instance is tagged with the fork generation it was made in
//! (see `fork.rs`), and one from an older generation is abandoned (leaked on
//! purpose: its locks and threads belong to the parent) and replaced.
//! `CURRENT` is touched only inside fork sections, so a child never finds it
//! half-written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::cache::Cache;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fork;
use crate::log;
use crate::sync::MutexExt;

pub(crate) struct Instance {
    generation: u64,
    pub(crate) cache: Cache,
}

static CURRENT: Mutex<Option<Arc<Instance>>> = Mutex::new(None);
static LIFECYCLE: LifecycleLock = LifecycleLock::new();

/// Serialises start and shutdown. Holds the fork generation of its holder
/// plus one (0: free), so a child treats a lock taken by a parent thread
/// (which does not exist in the child) as free, with no fork handler.
struct LifecycleLock(AtomicU64);

struct LifecycleGuard<'a>(&'a LifecycleLock);

impl LifecycleLock {
    const fn new() -> LifecycleLock {
        LifecycleLock(AtomicU64::new(0))
    }

    fn lock(&self) -> LifecycleGuard<'_> {
        let mine = fork::generation() + 1;
        let mut spins = 0u32;
        loop {
            let held = self.0.load(Ordering::Acquire);
            // Free, or held by a thread of an older generation (a parent's).
            if (held == 0 || held < mine)
                && self
                    .0
                    .compare_exchange(held, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return LifecycleGuard(self);
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}

impl Drop for LifecycleGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(0, Ordering::Release);
    }
}

/// The current instance of this process, if any (of any generation).
fn load() -> Option<Arc<Instance>> {
    fork::section(|| CURRENT.locked().clone())
}

/// Replaces the current instance; returns the old one (to drop or leak
/// outside the section).
fn replace(new: Option<Arc<Instance>>) -> Option<Arc<Instance>> {
    fork::section(|| std::mem::replace(&mut *CURRENT.locked(), new))
}

/// Returns the current instance, creating it if there is none.
pub(crate) fn current() -> Result<Arc<Instance>> {
    if let Some(inst) = load() {
        if inst.generation == fork::generation() {
            return Ok(inst);
        }
        // A parent's: never dropped here (see `start`).
        std::mem::forget(inst);
    }
    start()?;
    match load() {
        Some(inst) if inst.generation == fork::generation() => Ok(inst),
        Some(inst) => {
            std::mem::forget(inst);
            Err(Error::new(
                ErrorKind::Shutdown,
                "the process forked as this read started; retry the read",
            ))
        }
        // A `shutdown()` on another thread took the instance just started.
        None => Err(Error::new(
            ErrorKind::Shutdown,
            "the library was shut down as this read started",
        )),
    }
}

fn start() -> Result<()> {
    fork::install();
    let _l = LIFECYCLE.lock();
    let gen = fork::generation();
    if let Some(inst) = load() {
        if inst.generation == gen {
            return Ok(());
        }
        std::mem::forget(inst);
    }
    if let Some(old) = replace(None) {
        // Inherited across fork: its threads are gone; do not run its Drop.
        std::mem::forget(old);
    }
    // Before the settings are read: a secret pasted into the wrong variable
    // must not reach the message that names it.
    register_secrets();
    let config = Config::from_env().inspect_err(|_| {
        // Every invalid setting at once, so one restart can fix them all.
        for message in crate::config::invalid_settings_env() {
            log::misconfigured(&message);
        }
    })?;
    log::set_level(config.log_level);
    warn_unknown_variables();
    let cache = Cache::new(config)?;
    let old = replace(Some(Arc::new(Instance {
        generation: gen,
        cache,
    })));
    debug_assert!(old.is_none());
    Ok(())
}

/// A misspelt setting would otherwise be ignored without a word.
fn warn_unknown_variables() {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BLOBCACHE_") && !crate::config::VARIABLES.contains(&name.as_ref()) {
            log::log_once(
                log::Level::Warn,
                &format!("unknown:{name}"),
                &format!(
                    "ignoring unknown setting {name} (known: {})",
                    crate::config::VARIABLES.join(", ")
                ),
            );
        }
    }
}

/// Registers the secrets of the process environment (see
/// [`register_secrets_from`]).
pub(crate) fn register_secrets() {
    register_secrets_from(|name| std::env::var(name).ok());
}

/// Registers the value of every variable in the one list of secret
/// variables (`auth::SECRET_VARS`, which `blobcache doctor` also uses).
fn register_secrets_from(lookup: impl Fn(&str) -> Option<String>) {
    for var in crate::origin::azure::auth::SECRET_VARS {
        if let Some(v) = lookup(var) {
            crate::redact::register_secret(&v);
            // Connection strings hold the key as one of their fields.
            crate::redact::register_connection_string_secrets(&v);
        }
    }
}

/// Releases the current instance: stops its threads and drops its mappings
/// (those of reads still running are dropped when they return). Idempotent;
/// never waits on the network.
pub(crate) fn shutdown() {
    let _l = LIFECYCLE.lock();
    if let Some(old) = replace(None) {
        if old.generation != fork::generation() {
            std::mem::forget(old);
            return;
        }
        let summary = old.cache.stats().summary();
        old.cache.shutdown();
        log::info!("shutdown: {summary}");
        drop(old);
    }
    log::reset_once();
}

/// Counters of the current instance (zero when there is none).
pub(crate) fn stats() -> crate::stats::Snapshot {
    match load() {
        Some(inst) if inst.generation == fork::generation() => inst.cache.stats(),
        Some(inst) => {
            std::mem::forget(inst);
            Default::default()
        }
        None => Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_of_every_secret_variable_is_kept_out_of_messages() {
        // Values unique to this test, so other tests' messages are unaffected.
        let value = |name: &str| format!("s3cr3t-value-of-{name}-7f2c");
        register_secrets_from(|name| Some(value(name)));
        for name in crate::origin::azure::auth::SECRET_VARS {
            let v = value(name);
            let out = crate::redact::redact(&format!("the server said: {v}"));
            assert!(!out.contains(&v), "{name}'s value is not redacted: {out}");
        }
    }
}
