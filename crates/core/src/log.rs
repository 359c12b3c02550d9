//! Logging to stderr, one line per event, prefixed `blobcache:`.
//!
//! The host owns stdout, so nothing is ever written there. Each line goes out
//! in one `write(2)` so lines from many threads and processes do not
//! interleave, and without any lock (not the standard library's stderr
//! lock): a child forked while another thread was logging must be able to
//! log (see `fork.rs`). Every line passes through [`crate::redact::redact`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use crate::fork;
use crate::sync::MutexExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
// Touched only inside fork sections (see `fork.rs`).
static ONCE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static PROCESS_ONCE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line to stderr if `level` is enabled.
pub(crate) fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "blobcache: {}: {}\n",
        level.as_str(),
        crate::escape::controls(&crate::redact::redact(message))
    );
    write_stderr(line.as_bytes());
}

/// Writes `bytes` to descriptor 2 with `write(2)`, retrying on EINTR and
/// after a partial write. Errors are ignored: there is nowhere else to
/// report them.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match crate::sys::write_stderr(bytes) {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return,
        }
    }
}

/// Whether `key` is new to `set` (and remembers it).
fn first_time(set: &'static Mutex<Option<HashSet<String>>>, key: &str) -> bool {
    let key = key.to_string();
    fork::section(|| set.locked().get_or_insert_with(HashSet::new).insert(key))
}

/// Logs `message` only the first time `key` is seen in this lifecycle of the
/// library (see [`reset_once`]).
pub(crate) fn log_once(level: Level, key: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    if first_time(&ONCE, key) {
        log(level, message);
    }
}

/// Logs `message` only the first time `key` is seen in this process (not
/// reset at shutdown).
pub(crate) fn log_once_per_process(level: Level, key: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    if first_time(&PROCESS_ONCE, key) {
        log(level, message);
    }
}

/// Reports a misconfiguration that fails every read (an invalid setting,
/// an unset account name) on stderr: at error level, so it shows at every
/// `BLOBCACHE_LOG` level, the default `warn` included; and once per process
/// per distinct `message`, however many reads fail on it. Returns whether
/// it printed the line.
///
/// Once per process, not per lifecycle: the streamer calls `shutdown` at
/// the end of every session and reads again in the next, so a per-lifecycle
/// message would repeat with every session of a load. A different message
/// (another value, another variable: the environment changed and the next
/// lifecycle read it) is printed in its turn. A child forked after the line
/// was printed inherits this memory with its parent's stderr and does not
/// repeat it.
///
/// The message also goes, with the read's context, into the caller's error
/// buffer; this line is for hosts that do not show that buffer (the Run:ai
/// streamer shows only "File access error" unless
/// `RUNAI_STREAMER_LOG_TO_STDERR=1`).
pub(crate) fn misconfigured(message: &str) -> bool {
    if !first_time(&PROCESS_ONCE, &format!("misconfigured:{message}")) {
        return false;
    }
    log(
        Level::Error,
        &format!(
            "{message} (every read through blobcache fails until this is fixed; \
             the Run:ai streamer shows such a failure as \"File access error\")"
        ),
    );
    true
}

/// Forgets which one-time messages were logged (called at shutdown, so a new
/// session warns again).
pub(crate) fn reset_once() {
    let old = fork::section(|| ONCE.locked().take());
    drop(old);
}

macro_rules! warning { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($t)*)) } }
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($t)*)) } }
macro_rules! debug { ($($t:tt)*) => {
    if $crate::log::enabled($crate::log::Level::Debug) {
        $crate::log::log($crate::log::Level::Debug, &format!($($t)*))
    }
} }
#[allow(unused_imports)]
pub(crate) use {debug, info, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misconfiguration_is_printed_once_per_process_and_survives_shutdown() {
        // Messages unique to this test (the set is process-wide).
        let a = "BLOBCACHE_TEST_ONLY=x is not valid; use y (log.rs test)";
        let b = "BLOBCACHE_TEST_ONLY=z is not valid; use y (log.rs test)";
        assert!(misconfigured(a));
        for _ in 0..100 {
            assert!(!misconfigured(a));
        }
        // A shutdown forgets the per-lifecycle messages, not these.
        reset_once();
        assert!(!misconfigured(a));
        // Another value: the environment changed, so it is news.
        assert!(misconfigured(b));
        assert!(!misconfigured(b));
    }

    #[test]
    fn many_threads_failing_at_once_print_a_misconfiguration_once() {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..50)
                        .filter(|_| misconfigured("BLOBCACHE_TEST_RACE=1 (log.rs test)"))
                        .count()
                })
            })
            .collect();
        let printed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(printed, 1, "printed by {printed} of 400 concurrent calls");
    }
}
