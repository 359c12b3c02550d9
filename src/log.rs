//! Logging to stderr, one line per event, prefixed `blobcache:`.
//!
//! The host owns stdout, so nothing is ever written there. Each line goes out
//! in one `write(2)` so lines from many threads and processes do not
//! interleave. Every line passes through [`crate::redact::redact`].

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

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
// Lock-free (copy on write), so a fork at any moment cannot leave it locked.
static ONCE: ArcSwapOption<HashSet<String>> = ArcSwapOption::const_empty();
static PROCESS_ONCE: ArcSwapOption<HashSet<String>> = ArcSwapOption::const_empty();

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line to stderr if `level` is enabled.
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "blobcache: {}: {}\n",
        level.as_str(),
        crate::redact::redact(message).replace('\n', " ")
    );
    // One write call per line; errors writing to stderr are ignored, there is
    // nowhere else to report them.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs `message` only the first time `key` is seen in this lifecycle of the
/// library (see [`reset_once`]).
pub fn log_once(level: Level, key: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut first = false;
    ONCE.rcu(|seen| {
        let mut set = seen.as_deref().cloned().unwrap_or_default();
        first = set.insert(key.to_string());
        Some(Arc::new(set))
    });
    if first {
        log(level, message);
    }
}

/// Logs `message` only the first time `key` is seen in this process (not
/// reset at shutdown).
pub fn log_once_per_process(level: Level, key: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut first = false;
    PROCESS_ONCE.rcu(|seen| {
        let mut set = seen.as_deref().cloned().unwrap_or_default();
        first = set.insert(key.to_string());
        Some(Arc::new(set))
    });
    if first {
        log(level, message);
    }
}

/// Forgets which one-time messages were logged (called at shutdown, so a new
/// session warns again).
pub fn reset_once() {
    ONCE.store(None);
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
