//! The process-wide cache and its lifecycle.
//!
//! Created lazily by the first read, released by `shutdown`, created again by
//! the next read (the streamer calls `shutdown` after every session and then
//! reads again). Readers get the current instance through an `ArcSwap`
//! without taking any lock. A read that overlaps `shutdown` keeps the
//! instance it started with alive until it returns.
//!
//! After `fork()`, the child inherits the parent's instance but not its
//! threads; a `pthread_atfork` child handler bumps a generation counter, and
//! an instance from an older generation is abandoned (leaked on purpose: its
//! locks and threads belong to the parent) and replaced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};

use arc_swap::ArcSwapOption;

use crate::cache::Cache;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::log;

pub struct Instance {
    generation: u64,
    pub cache: Cache,
}

static CURRENT: ArcSwapOption<Instance> = ArcSwapOption::const_empty();
static LIFECYCLE: LifecycleLock = LifecycleLock::new();
static GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    // The lifecycle lock may have been held by a parent thread that does not
    // exist here; only the forking thread exists in the child, so it is free.
    LIFECYCLE.reset();
}

/// Serialises start and shutdown. A plain flag rather than a mutex so the
/// fork handler can release it in the child (waiters only ever wait for a
/// start or shutdown, so sleeping briefly while it is taken is cheap).
struct LifecycleLock(AtomicBool);

struct LifecycleGuard<'a>(&'a LifecycleLock);

impl LifecycleLock {
    const fn new() -> LifecycleLock {
        LifecycleLock(AtomicBool::new(false))
    }

    fn lock(&self) -> LifecycleGuard<'_> {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        LifecycleGuard(self)
    }

    fn reset(&self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Drop for LifecycleGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::Release);
    }
}

/// Returns the current instance, creating it if there is none.
pub fn current() -> Result<arc_swap::Guard<Option<Arc<Instance>>>> {
    let gen = GENERATION.load(Ordering::Relaxed);
    let g = CURRENT.load();
    if let Some(inst) = &*g {
        if inst.generation == gen {
            return Ok(g);
        }
    }
    drop(g);
    start()?;
    let g = CURRENT.load();
    if g.is_none() {
        // A `shutdown()` on another thread took the instance just started.
        return Err(Error::new(
            ErrorKind::Shutdown,
            "the library was shut down as this read started",
        ));
    }
    Ok(g)
}

fn start() -> Result<()> {
    ATFORK.call_once(|| {
        // SAFETY: registering a plain extern "C" handler; the library is
        // never unloaded (the streamer does not dlclose it).
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    let _l = LIFECYCLE.lock();
    let gen = GENERATION.load(Ordering::SeqCst);
    if let Some(inst) = &*CURRENT.load() {
        if inst.generation == gen {
            return Ok(());
        }
    }
    if let Some(old) = CURRENT.swap(None) {
        // Inherited across fork: its threads are gone; do not run its Drop.
        std::mem::forget(old);
    }
    let config = Config::from_env()?;
    log::set_level(config.log_level);
    register_secrets();
    warn_unknown_variables();
    let cache = Cache::new(config)?;
    CURRENT.store(Some(Arc::new(Instance {
        generation: gen,
        cache,
    })));
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

fn register_secrets() {
    for var in [
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_CLIENT_SECRET",
        "AZURE_STORAGE_TOKEN",
    ] {
        if let Ok(v) = std::env::var(var) {
            crate::redact::register_secret(&v);
            // Connection strings hold the key as one of their fields.
            crate::redact::register_connection_string_secrets(&v);
        }
    }
}

/// Releases the current instance: stops its threads and drops its mappings
/// (those of reads still running are dropped when they return). Idempotent;
/// never waits on the network.
pub fn shutdown() {
    let _l = LIFECYCLE.lock();
    let gen = GENERATION.load(Ordering::SeqCst);
    if let Some(old) = CURRENT.swap(None) {
        if old.generation != gen {
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
pub fn stats() -> crate::stats::Snapshot {
    match &*CURRENT.load() {
        Some(inst) => inst.cache.stats(),
        None => Default::default(),
    }
}
