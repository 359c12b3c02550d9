//! What the exported C functions do, in safe Rust: the streamer's read with
//! its argument checks and its one-line failure message, `shutdown`, the
//! counters as JSON, and the interface version.
//!
//! The C-ABI crate (the repository's root package, which builds
//! `libblobcache.so`) turns pointers into the values taken here (a NULL name
//! into `None`, the destination into a [`Destination`]), runs each call
//! inside its panic boundary, and turns the outcome into the C convention.
//! This module knows nothing of C; the fuzz target `blob_read_args` drives
//! it with the argument space of the C function.

use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;

/// The interface version the Run:ai streamer checks (`cache_abi_version`).
pub const ABI_VERSION: u32 = 1;

/// Where a read's bytes go, as the caller gave it.
#[derive(Debug)]
pub enum Destination<'a> {
    /// The caller's buffer, exactly as long as the requested range.
    Buffer(&'a mut [u8]),
    /// A NULL pointer.
    Null,
    /// A length no buffer can have (more than `isize::MAX` bytes).
    TooLong,
}

/// One read as a C caller asks for it: each name as the bytes before its
/// NUL (`None` for a NULL pointer), and the range.
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest<'a> {
    pub account: Option<&'a [u8]>,
    pub container: Option<&'a [u8]>,
    pub blob: Option<&'a [u8]>,
    pub offset: usize,
    pub length: usize,
}

/// A failed read: the message for the caller's error buffer, on one line,
/// prefixed `blobcache: `, naming the blob and the range, without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    kind: ErrorKind,
    message: String,
}

impl ReadFailure {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl ReadRequest<'_> {
    /// Reads bytes `[offset, offset + length)` of the blob into `dst`
    /// through the process-wide cache, which the first read after load or
    /// after [`shutdown`] starts. A zero length succeeds once the names are
    /// valid, whatever `dst` is.
    pub fn read(&self, dst: Destination<'_>) -> Result<(), ReadFailure> {
        self.run(dst).map_err(|e| self.failure(e))
    }

    fn run(&self, dst: Destination<'_>) -> Result<()> {
        if self.account == Some(b"") {
            // The streamer passes AZURE_STORAGE_ACCOUNT_NAME's value.
            let message = crate::config::account_not_set();
            crate::log::misconfigured(&message);
            return Err(Error::config(message));
        }
        let key = BlobKey::new(
            name(self.account, "account")?,
            name(self.container, "container")?,
            name(self.blob, "blob")?,
        )?;
        if self.length == 0 {
            return Ok(());
        }
        let dst = match dst {
            Destination::Buffer(b) => b,
            Destination::Null => return Err(Error::invalid("the destination buffer is NULL")),
            Destination::TooLong => {
                return Err(Error::new(
                    ErrorKind::OutOfRange,
                    "length is larger than SSIZE_MAX",
                ))
            }
        };
        debug_assert_eq!(dst.len(), self.length);
        crate::state::current()?
            .cache
            .read(&key, self.offset as u64, dst)
    }

    /// This read failing with `e` (also a panic the caller caught): the
    /// message names the blob (as the caller gave it) and the range, passes
    /// through [`crate::redact`], has its control characters escaped, and
    /// is logged at debug level.
    pub fn failure(&self, e: Error) -> ReadFailure {
        let context = describe(
            shown(self.account),
            shown(self.container),
            shown(self.blob),
            self.offset,
            self.length,
        );
        // Redacted, then on one line (names, settings and text from the
        // network may hold control characters).
        let message = crate::redact::redact(&format!("blobcache: {e} {context}"));
        let message = crate::escape::controls(&message).into_owned();
        crate::log::debug!("read failed: {message}");
        ReadFailure {
            kind: e.kind(),
            message,
        }
    }
}

/// A name argument as UTF-8.
fn name<'a>(bytes: Option<&'a [u8]>, what: &str) -> Result<&'a str> {
    let bytes = bytes.ok_or_else(|| Error::invalid(format!("the {what} name is NULL")))?;
    std::str::from_utf8(bytes)
        .map_err(|_| Error::invalid(format!("the {what} name is not valid UTF-8")))
}

/// A name as a failure message shows it: `?` when it is NULL or not UTF-8.
fn shown(bytes: Option<&[u8]>) -> &str {
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("?")
}

/// The context a failure message ends with. Names are the caller's, raw:
/// control characters in them are escaped (see [`crate::escape`]), so the
/// message stays on one line.
fn describe(account: &str, container: &str, blob: &str, offset: usize, length: usize) -> String {
    use crate::escape::controls;
    format!(
        "[blob {}/{}/{} bytes {offset}..{}]",
        controls(account),
        controls(container),
        controls(blob),
        offset as u128 + length as u128
    )
}

/// Every reason reads would fail with this process's environment (see
/// [`crate::config::check`]), each message on one line, without secrets.
/// Starts nothing and prints nothing.
pub fn check_config() -> Vec<String> {
    crate::state::register_secrets();
    crate::config::check_env()
        .iter()
        .map(|m| crate::escape::controls(&crate::redact::redact(m)).into_owned())
        .collect()
}

/// Releases the process-wide cache: stops its threads and drops its
/// mappings. Idempotent and quick; never waits on the network. The next
/// read starts the cache again.
pub fn shutdown() {
    crate::state::shutdown();
}

/// This process's counters as a JSON object, zero before the first read and
/// after [`shutdown`] (the members are listed at `blobcache_stats_json` in
/// include/blobcache.h).
pub fn stats_json() -> String {
    crate::state::stats().to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(names: [Option<&[u8]>; 3], offset: usize, length: usize) -> ReadRequest<'_> {
        ReadRequest {
            account: names[0],
            container: names[1],
            blob: names[2],
            offset,
            length,
        }
    }

    // None of these reaches the cache: the arguments are checked first.

    #[test]
    fn a_null_or_non_utf8_name_fails_naming_which() {
        let m: Option<&[u8]> = Some(b"m");
        for (names, want) in [
            ([None, m, m], "the account name is NULL"),
            ([m, None, m], "the container name is NULL"),
            ([m, m, None], "the blob name is NULL"),
            (
                [m, Some(b"\xff".as_slice()), m],
                "the container name is not valid UTF-8",
            ),
        ] {
            let f = request(names, 0, 4).read(Destination::Null).unwrap_err();
            assert_eq!(f.kind(), ErrorKind::InvalidArgument);
            assert!(f.message().starts_with("blobcache: "), "{}", f.message());
            assert!(f.message().contains(want), "{}", f.message());
        }
    }

    #[test]
    fn the_destination_is_checked_after_the_names_and_only_for_a_nonzero_length() {
        let names: [Option<&[u8]>; 3] = [Some(b"acct"), Some(b"models"), Some(b"m")];
        let f = request(names, 0, 4).read(Destination::Null).unwrap_err();
        assert!(f.message().contains("buffer is NULL"), "{}", f.message());
        assert!(
            f.message().ends_with("[blob acct/models/m bytes 0..4]"),
            "{}",
            f.message()
        );
        let f = request(names, 0, usize::MAX)
            .read(Destination::TooLong)
            .unwrap_err();
        assert_eq!(f.kind(), ErrorKind::OutOfRange);
        assert_eq!(request(names, 7, 0).read(Destination::Null), Ok(()));
    }

    #[test]
    fn an_empty_account_name_says_which_variable_is_not_set() {
        let names: [Option<&[u8]>; 3] = [Some(b""), Some(b"models"), Some(b"m")];
        for length in [8, 0] {
            let f = request(names, 0, length)
                .read(Destination::Null)
                .unwrap_err();
            assert_eq!(f.kind(), ErrorKind::Config);
            assert!(
                f.message().starts_with(
                    "blobcache: AZURE_STORAGE_ACCOUNT_NAME is not set: the Run:ai streamer passes its value"
                ),
                "{}",
                f.message()
            );
            let context = format!("[blob /models/m bytes 0..{length}]");
            assert!(f.message().ends_with(&context), "{}", f.message());
        }
    }

    #[test]
    fn failure_messages_are_one_line() {
        let names: [Option<&[u8]>; 3] = [Some(b"acct\n"), Some(b"models"), Some(b"m")];
        let f = request(names, 0, 4).read(Destination::Null).unwrap_err();
        assert!(!f.message().contains('\n'), "{:?}", f.message());
        assert!(f.message().contains("acct\\n"), "{:?}", f.message());
    }
}
