//! libblobcache.so: blobcache's C boundary, and only it.
//!
//! Every exported function validates and translates its arguments
//! (`ffi.rs`: pointers in, messages out), calls the safe API of
//! `blobcache_core::provider`, and turns the outcome into the C convention,
//! inside the panic boundary (`panic.rs`): a panic becomes the function's
//! failure value and never unwinds into the host.
//!
//! Two sets of names (include/blobcache.h describes both):
//!
//! - the `blobcache_*` functions, for programs that link the library;
//! - the names the Run:ai streamer looks up with `dlsym` (`blob_read`,
//!   `shutdown`, `cache_abi_version`, `runai_cache_abi_version`, in
//!   `streamer.rs`; feature `streamer-names`), the same functions under the
//!   streamer's names. Those are exported by libblobcache.so only, never by
//!   libblobcache_link.so (crates/link builds this source without the
//!   feature): an exported `shutdown` takes the place of libc's
//!   `shutdown(2)` in any program that links it, the library's own sockets
//!   included. The header describes them as function-pointer types, for
//!   `dlsym`.
//!
//! This is a `cdylib` only: no Rust program can link it, so no Rust program
//! inherits the exported `shutdown` (the command, the tests, the benchmarks
//! and the fuzz targets use `blobcache_core`; the tests load this library
//! with `dlopen`, as the streamer does).

mod ffi;
mod panic;
// Not in this crate's unit-test binary either: it would export `shutdown`.
#[cfg(all(feature = "streamer-names", not(test)))]
mod streamer;

use std::ffi::{c_char, c_void};

use blobcache_core::provider::{self, ReadRequest};
use blobcache_core::ErrorKind;
use libc::ssize_t;

// What a failed `blobcache_read` returns: the negative of the failure's
// kind, stable across releases (blobcache_core::ErrorKind's values; a test
// below checks that they match). The streamer's `blob_read` returns -1 for
// every failure, as its contract says.

/// `blobcache_read` failed: a name or the buffer is NULL, a name is not
/// UTF-8 or not acceptable.
pub const BLOBCACHE_ERR_INVALID_ARGUMENT: ssize_t = -1;
/// `blobcache_read` failed: the range does not lie inside the blob.
pub const BLOBCACHE_ERR_OUT_OF_RANGE: ssize_t = -2;
/// `blobcache_read` failed: a `BLOBCACHE_*` (or Azure) setting is invalid.
pub const BLOBCACHE_ERR_CONFIG: ssize_t = -3;
/// `blobcache_read` failed: the blob does not exist at the origin.
pub const BLOBCACHE_ERR_NOT_FOUND: ssize_t = -4;
/// `blobcache_read` failed: the origin refused or failed the request.
pub const BLOBCACHE_ERR_ORIGIN: ssize_t = -5;
/// `blobcache_read` failed: the blob changed at the origin while it was
/// read (the next read sees the new version).
pub const BLOBCACHE_ERR_CHANGED: ssize_t = -6;
/// `blobcache_read` failed: the range is not cached and the origin may not
/// be contacted (`BLOBCACHE_OFFLINE=1`).
pub const BLOBCACHE_ERR_OFFLINE: ssize_t = -7;
/// `blobcache_read` failed: the cache directory could not be used.
pub const BLOBCACHE_ERR_STORE: ssize_t = -8;
/// `blobcache_read` failed: the library was shut down during the read.
pub const BLOBCACHE_ERR_SHUTDOWN: ssize_t = -9;
/// `blobcache_read` failed: a bug in blobcache (please report it).
pub const BLOBCACHE_ERR_INTERNAL: ssize_t = -10;
/// `blobcache_read` failed: the origin could not be reached at all
/// (connection refused, name lookup failed, connect timeout).
pub const BLOBCACHE_ERR_UNREACHABLE: ssize_t = -11;

/// The type of `cache_abi_version` and `runai_cache_abi_version`, which
/// libblobcache.so exports for the Run:ai streamer's `dlsym`: the same
/// function as `blobcache_abi_version`.
pub type AbiVersionFn = extern "C" fn() -> u32;

/// The type of `blob_read`, which libblobcache.so exports for the Run:ai
/// streamer's `dlsym`: the same read as `blobcache_read`, except that every
/// failure returns -1 (the streamer's contract).
pub type BlobReadFn = unsafe extern "C" fn(
    account: *const c_char,
    container: *const c_char,
    blob: *const c_char,
    buf: *mut c_void,
    offset: usize,
    length: usize,
    error_buf: *mut c_char,
    error_buf_size: usize,
) -> ssize_t;

/// The type of `shutdown`, which libblobcache.so exports for the Run:ai
/// streamer's `dlsym`: the same function as `blobcache_shutdown`. Not
/// `shutdown(2)`: never declare it under that name in a program that uses
/// sockets.
pub type ShutdownFn = extern "C" fn();

/// Returns the interface version of this cache provider: 1, the version the
/// Run:ai streamer's `cache_abi_version` check expects.
#[no_mangle]
pub extern "C" fn blobcache_abi_version() -> u32 {
    provider::ABI_VERSION
}

/// Reads bytes `[offset, offset + length)` of blob `container/blob` in storage
/// account `account` into `buf`.
///
/// Returns `length` on success (0 when `length` is 0). On failure returns a
/// negative `BLOBCACHE_ERR_*` code saying what kind of failure it is, and
/// writes a NUL-terminated message into `error_buf` (truncated to
/// `error_buf_size` bytes; nothing is written when `error_buf` is NULL or
/// `error_buf_size` is 0). The message is one line: control characters
/// (from names, settings or the network) are written as escapes such as
/// `\n` and `\u{1b}`. A failed read may have written to `buf`.
///
/// Thread-safe: may be called from any number of threads at once.
///
/// # Safety
/// `account`, `container` and `blob` must be NULL or NUL-terminated strings;
/// `buf` must point to `length` writable bytes; `error_buf` must be NULL or
/// point to `error_buf_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn blobcache_read(
    account: *const c_char,
    container: *const c_char,
    blob: *const c_char,
    buf: *mut c_void,
    offset: usize,
    length: usize,
    error_buf: *mut c_char,
    error_buf_size: usize,
) -> ssize_t {
    // SAFETY: this function's contract is `read`'s.
    let r = unsafe {
        read(
            account,
            container,
            blob,
            buf,
            offset,
            length,
            error_buf,
            error_buf_size,
        )
    };
    r.unwrap_or_else(|kind| -(kind as ssize_t))
}

/// The read behind `blobcache_read` and the streamer's `blob_read`:
/// `length`, or the failure's kind, its message written into `error_buf`.
///
/// # Safety
/// As for `blobcache_read`.
#[allow(clippy::too_many_arguments)]
unsafe fn read(
    account: *const c_char,
    container: *const c_char,
    blob: *const c_char,
    buf: *mut c_void,
    offset: usize,
    length: usize,
    error_buf: *mut c_char,
    error_buf_size: usize,
) -> Result<ssize_t, ErrorKind> {
    // SAFETY: per this function's contract, each name is NULL or a
    // NUL-terminated string that outlives the call.
    let request = unsafe {
        ReadRequest {
            account: ffi::name(account),
            container: ffi::name(container),
            blob: ffi::name(blob),
            offset,
            length,
        }
    };
    let (kind, message) = match panic::guard(|| {
        // SAFETY: per this function's contract, `buf` is NULL or points to
        // `length` writable bytes that nothing else uses during the call.
        let dst = unsafe { ffi::destination(buf, length) };
        request.read(dst)
    }) {
        Ok(Ok(())) => return Ok(length as ssize_t),
        Ok(Err(failure)) => (failure.kind(), failure.message().to_owned()),
        // A panic's message names the blob and the range too.
        Err(e) => (
            ErrorKind::Internal,
            panic::guard(|| request.failure(e).message().to_owned())
                .unwrap_or_else(|e| format!("blobcache: {e}")),
        ),
    };
    // SAFETY: per this function's contract, `error_buf` is NULL or points to
    // `error_buf_size` writable bytes.
    unsafe { ffi::write_message(error_buf, error_buf_size, &message) };
    Err(kind)
}

/// Releases the process-wide cache: stops background threads and drops
/// mappings. Idempotent and quick; never waits on the network. The next
/// `blobcache_read` starts the cache again.
#[no_mangle]
pub extern "C" fn blobcache_shutdown() {
    let _ = panic::guard(provider::shutdown);
}

/// Writes this process's counters as a JSON object into `buf` (NUL-terminated,
/// at most `len` bytes). Returns the length of the JSON text (without the
/// NUL), or -1 if `buf` is NULL or too small, in which case nothing is
/// written. Counters are zero before the first read and after a shutdown.
///
/// The object's members, all whole numbers: `hits` and `misses` (reads served
/// entirely from the cache, and reads that needed the origin),
/// `bytes_from_cache`, `bytes_from_origin`, `blocks_fetched`,
/// `readahead_blocks`, `passthrough_reads` (reads served straight from the
/// origin because the cache could not be used), `origin_errors`,
/// `read_errors`, `origin_wait_ms` (time readers spent waiting on the
/// origin), `blocks_evicted`, `bytes_from_fills` (bytes served from
/// blocks still being filled, as they arrived), and the cluster tier's
/// `blocks_from_cluster`, `bytes_from_cluster`, `blocks_to_cluster`,
/// `cluster_duplicates`, `cluster_damaged` and `cluster_fallbacks`, and
/// Dragonfly mode's `bytes_via_dragonfly` and `dragonfly_fallbacks`. Members
/// may be added; none are removed.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn blobcache_stats_json(buf: *mut c_char, len: usize) -> ssize_t {
    let json = panic::guard(provider::stats_json).unwrap_or_default();
    if buf.is_null() || json.is_empty() || json.len() + 1 > len {
        return -1;
    }
    // SAFETY: `buf` points to `len` writable bytes (this function's
    // contract), and the JSON and its NUL fit in them (checked above).
    unsafe { ffi::write_message(buf, len, &json) };
    json.len() as ssize_t
}

/// Checks the settings this process's environment gives the library,
/// without starting anything or printing anything: every `BLOBCACHE_*`
/// setting (an invalid one fails every read), and, for the Azure origin,
/// `AZURE_STORAGE_ACCOUNT_NAME` (the streamer passes its value as the
/// account of every read). Returns the number of problems, 0 when reads can
/// start; -1 on an internal error.
///
/// Writes the problems' messages into `buf`, one per line (each names the
/// variable and the fix, never a credential), NUL-terminated and truncated
/// to `len` bytes; nothing when `buf` is NULL or `len` is 0. An empty
/// string when there is none.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn blobcache_check_config(buf: *mut c_char, len: usize) -> ssize_t {
    let Ok(problems) = panic::guard(provider::check_config) else {
        return -1;
    };
    // SAFETY: `buf` is NULL or points to `len` writable bytes (this
    // function's contract).
    unsafe { ffi::write_message(buf, len, &problems.join("\n")) };
    problems.len() as ssize_t
}

#[cfg(test)]
mod tests {
    //! The checks this layer makes before anything reaches the cache (no
    //! call here starts it). tests/ffi.rs calls the built library.

    use std::ffi::{CStr, CString};

    use super::*;

    const CANARY: c_char = 0x55;

    /// `blobcache_read` of 4 bytes at 0 with the given names (`None`: NULL)
    /// and buffer (`false`: NULL), and an error buffer of `err_size` bytes
    /// followed by canaries: the result and the message.
    fn read(names: [Option<&str>; 3], with_buf: bool, err_size: usize) -> (ssize_t, String) {
        let c: Vec<Option<CString>> = names
            .iter()
            .map(|n| n.map(|s| CString::new(s).unwrap()))
            .collect();
        let ptr = |i: usize| c[i].as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut buf = [0u8; 4];
        let buf_ptr = if with_buf {
            buf.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        let mut err = vec![CANARY; err_size + 16];
        // SAFETY: names are NULL or NUL-terminated; `buf` holds 4 bytes;
        // `err` holds more than `err_size` bytes.
        let r = unsafe {
            blobcache_read(
                ptr(0),
                ptr(1),
                ptr(2),
                buf_ptr,
                0,
                4,
                err.as_mut_ptr(),
                err_size,
            )
        };
        assert!(
            err[err_size..].iter().all(|&b| b == CANARY),
            "wrote past {err_size} bytes"
        );
        if err_size == 0 {
            return (r, String::new());
        }
        // SAFETY: NUL-terminated within `err_size` bytes (checked by the
        // callers that need the text) or the canaries stop it.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        (r, msg.to_str().expect("UTF-8").to_owned())
    }

    #[test]
    fn the_error_codes_are_the_negated_error_kinds() {
        for (code, kind) in [
            (BLOBCACHE_ERR_INVALID_ARGUMENT, ErrorKind::InvalidArgument),
            (BLOBCACHE_ERR_OUT_OF_RANGE, ErrorKind::OutOfRange),
            (BLOBCACHE_ERR_CONFIG, ErrorKind::Config),
            (BLOBCACHE_ERR_NOT_FOUND, ErrorKind::NotFound),
            (BLOBCACHE_ERR_ORIGIN, ErrorKind::Origin),
            (BLOBCACHE_ERR_CHANGED, ErrorKind::Changed),
            (BLOBCACHE_ERR_OFFLINE, ErrorKind::Offline),
            (BLOBCACHE_ERR_STORE, ErrorKind::Store),
            (BLOBCACHE_ERR_SHUTDOWN, ErrorKind::Shutdown),
            (BLOBCACHE_ERR_INTERNAL, ErrorKind::Internal),
            (BLOBCACHE_ERR_UNREACHABLE, ErrorKind::Unreachable),
        ] {
            assert_eq!(code, -(kind as ssize_t), "{kind:?}");
        }
    }

    #[test]
    fn the_abi_version_is_1() {
        assert_eq!(blobcache_abi_version(), 1);
    }

    #[test]
    fn null_names_and_a_null_buffer_fail_with_a_message_naming_them() {
        let (a, c, b) = (Some("acct"), Some("models"), Some("m"));
        for (names, with_buf, want) in [
            ([None, c, b], true, "the account name is NULL"),
            ([a, None, b], true, "the container name is NULL"),
            ([a, c, None], true, "the blob name is NULL"),
            ([a, c, b], false, "the destination buffer is NULL"),
        ] {
            let (r, msg) = read(names, with_buf, 512);
            assert_eq!(r, -1);
            assert!(
                msg.starts_with("blobcache: ") && msg.contains(want),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_null_error_buffer_or_one_of_any_size_is_never_overrun() {
        for size in 0..100 {
            let (r, msg) = read([None, None, None], true, size);
            assert_eq!(r, -1);
            assert!(msg.len() < size.max(1), "{size}: {msg:?}");
        }
        let mut buf = [0u8; 4];
        // SAFETY: a NULL error buffer with size 0 is allowed; `buf` holds 4
        // bytes.
        let r = unsafe {
            blobcache_read(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                buf.as_mut_ptr().cast(),
                0,
                4,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(r, -1);
    }

    #[test]
    fn a_zero_length_read_of_valid_names_returns_0_without_a_buffer() {
        let names = ["acct", "models", "m"].map(|s| CString::new(s).unwrap());
        // SAFETY: NUL-terminated names; length 0 needs no buffer.
        let r = unsafe {
            blobcache_read(
                names[0].as_ptr(),
                names[1].as_ptr(),
                names[2].as_ptr(),
                std::ptr::null_mut(),
                5,
                0,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(r, 0);
    }

    #[test]
    fn stats_json_writes_only_into_a_buffer_it_fits() {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { blobcache_stats_json(std::ptr::null_mut(), 0) }, -1);
        let mut tiny = [CANARY; 8];
        // SAFETY: `tiny` holds 8 bytes, of which 2 are offered.
        assert_eq!(unsafe { blobcache_stats_json(tiny.as_mut_ptr(), 2) }, -1);
        assert!(tiny.iter().all(|&b| b == CANARY));
        let mut buf = [CANARY; 1024];
        // SAFETY: `buf` holds 1024 bytes.
        let n = unsafe { blobcache_stats_json(buf.as_mut_ptr(), buf.len()) };
        assert!(n > 0);
        // SAFETY: NUL-terminated by the call.
        let json = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(json.len(), n as usize);
        assert!(json.starts_with("{\"hits\":0,"), "{json}");
    }
}
