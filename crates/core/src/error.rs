//! The error type every layer returns, and the stable numeric codes of its
//! kinds, which the C boundary returns from `blobcache_read`.
//!
//! A message names what failed and why, and what to do about it where that is
//! known. It never holds a credential: every message that can carry text from
//! the network passes through [`crate::redact`] before it is stored here.

use std::fmt;

/// What kind of failure this is. The numeric values are stable: the C
/// function `blobcache_read` returns the negated value of a failure's kind
/// (`BLOBCACHE_ERR_*` in include/blobcache.h; the root crate's tests check
/// that the two agree). `PeerStalled` never reaches a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// An argument is NULL, not UTF-8, empty, or a name is not acceptable.
    InvalidArgument = 1,
    /// The requested range does not lie inside the blob.
    OutOfRange = 2,
    /// A `BLOBCACHE_*` (or Azure) setting has an invalid value.
    Config = 3,
    /// The blob does not exist at the origin.
    NotFound = 4,
    /// The origin refused, failed, or could not be reached.
    Origin = 5,
    /// The blob changed at the origin while it was being read.
    Changed = 6,
    /// The range is not cached and the origin may not or cannot be contacted.
    Offline = 7,
    /// The local cache directory could not be used (permissions, disk full).
    Store = 8,
    /// The library was shut down while the read was waiting.
    Shutdown = 9,
    /// A bug: a panic caught at the boundary, or an impossible state.
    Internal = 10,
    /// The origin could not be reached at all (connection refused, DNS
    /// failure, connect timeout): no answer, as opposed to an error answer.
    Unreachable = 11,
    /// Another process holds the fill of a block and has made no progress
    /// for a while (stopped, frozen); the range is read straight from the
    /// origin instead (never returned to callers as a failure).
    PeerStalled = 12,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::OutOfRange => "range out of bounds",
            ErrorKind::Config => "configuration error",
            ErrorKind::NotFound => "not found",
            ErrorKind::Origin => "origin error",
            ErrorKind::Changed => "blob changed at origin",
            ErrorKind::Offline => "not cached and origin unavailable",
            ErrorKind::Store => "cache store error",
            ErrorKind::Shutdown => "shut down",
            ErrorKind::Internal => "internal error",
            ErrorKind::Unreachable => "origin unreachable",
            ErrorKind::PeerStalled => "another process's fill is stalled",
        }
    }
}

/// An error with a kind and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub fn store(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Store, message)
    }

    pub fn origin(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Origin, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with more context, keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Describes a caught panic's payload (its message, when it has one).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Describes an I/O error with the path it concerns.
pub(crate) fn io_error(what: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
    Error::store(format!("{what} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_message_and_keeps_kind() {
        let e = Error::origin("timed out").context("fetching block 3");
        assert_eq!(e.kind(), ErrorKind::Origin);
        assert_eq!(e.message(), "fetching block 3: timed out");
    }
}
