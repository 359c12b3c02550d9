//! The C boundary, and nothing else: every exported function validates and
//! translates its arguments, calls into safe Rust, and turns the outcome into
//! the C convention. Each runs inside [`guard`], so a panic becomes a failure
//! value and never unwinds into the host.

use std::any::Any;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;

/// The interface version the Run:ai streamer checks.
pub const ABI_VERSION: u32 = 1;

/// Describes a caught panic payload.
pub fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`, turning a panic into an `Internal` error.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(Error::internal(format!(
            "internal error (a bug in blobcache, please report it): {}",
            panic_message(&p)
        ))),
    }
}

/// Copies `msg` into the caller's buffer as a NUL-terminated string,
/// truncated at a UTF-8 character boundary to fit. Writes nothing when the
/// buffer is NULL or has size 0.
///
/// # Safety
/// `buf` must be NULL or point to `size` writable bytes.
unsafe fn write_message(buf: *mut c_char, size: usize, msg: &str) {
    if buf.is_null() || size == 0 {
        return;
    }
    let mut n = msg.len().min(size - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the caller guarantees `size` writable bytes at `buf`; we write
    // n + 1 <= size bytes, from a source that does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// Reads a C string argument as UTF-8.
///
/// # Safety
/// `p` must be NULL or a valid NUL-terminated string.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("the {what} name is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| Error::invalid(format!("the {what} name is not valid UTF-8")))
}

/// Returns the interface version of this cache provider (always 1).
#[no_mangle]
pub extern "C" fn cache_abi_version() -> u32 {
    ABI_VERSION
}

/// The same as `cache_abi_version`, under the name of the first versioned
/// revision of the streamer's interface.
#[no_mangle]
pub extern "C" fn runai_cache_abi_version() -> u32 {
    ABI_VERSION
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

/// Reads bytes `[offset, offset + length)` of blob `container/blob` in storage
/// account `account` into `buf`.
///
/// Returns `length` on success (0 when `length` is 0). On failure returns -1
/// and writes a NUL-terminated message into `error_buf` (truncated to
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
pub unsafe extern "C" fn blob_read(
    account: *const c_char,
    container: *const c_char,
    blob: *const c_char,
    buf: *mut c_void,
    offset: usize,
    length: usize,
    error_buf: *mut c_char,
    error_buf_size: usize,
) -> libc::ssize_t {
    let result = guard(|| {
        // SAFETY: per this function's contract.
        let (a, c, b) = unsafe {
            (
                str_arg(account, "account"),
                str_arg(container, "container"),
                str_arg(blob, "blob"),
            )
        };
        let names = (
            a.as_ref().copied().unwrap_or("?"),
            c.as_ref().copied().unwrap_or("?"),
            b.as_ref().copied().unwrap_or("?"),
        );
        let ctx = || describe(names.0, names.1, names.2, offset, length);
        let run = || -> Result<()> {
            let key = BlobKey::new(a?, c?, b?)?;
            if length == 0 {
                return Ok(());
            }
            if buf.is_null() {
                return Err(Error::invalid("the destination buffer is NULL"));
            }
            if length > isize::MAX as usize {
                return Err(Error::new(
                    ErrorKind::OutOfRange,
                    "length is larger than SSIZE_MAX",
                ));
            }
            // SAFETY: the caller guarantees `length` writable bytes at `buf`,
            // not aliased by anything else during this call.
            let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), length) };
            crate::state::current()?
                .cache
                .read(&key, offset as u64, dst)
        };
        run().map_err(|e| Error::new(e.kind(), format!("{e} {}", ctx())))
    });
    match result {
        Ok(()) => length as libc::ssize_t,
        Err(e) => {
            // Redacted, then on one line (names, settings and text from the
            // network may hold control characters).
            let msg = crate::redact::redact(&format!("blobcache: {e}"));
            let msg = crate::escape::controls(&msg);
            crate::log::debug!("read failed: {msg}");
            // SAFETY: per this function's contract.
            unsafe { write_message(error_buf, error_buf_size, &msg) };
            -1
        }
    }
}

/// Releases the process-wide cache: stops background threads and drops
/// mappings. Idempotent and quick; never waits on the network. The next
/// `blob_read` starts the cache again.
#[no_mangle]
pub extern "C" fn shutdown() {
    let _ = guard(|| {
        crate::state::shutdown();
        Ok(())
    });
}

/// Writes this process's counters as a JSON object into `buf` (NUL-terminated,
/// at most `len` bytes). Returns the length of the JSON text (without the
/// NUL), or -1 if `buf` is NULL or too small, in which case nothing is
/// written. Counters are zero before the first read and after `shutdown`.
///
/// The object's members, all whole numbers: `hits` and `misses` (reads served
/// entirely from the cache, and reads that needed the origin),
/// `bytes_from_cache`, `bytes_from_origin`, `blocks_fetched`,
/// `readahead_blocks`, `passthrough_reads` (reads served straight from the
/// origin because the cache could not be used), `origin_errors`,
/// `read_errors`, `origin_wait_ms` (time readers spent waiting on the
/// origin) and `blocks_evicted`. Members may be added; none are removed.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn blobcache_stats_json(buf: *mut c_char, len: usize) -> libc::ssize_t {
    let json = guard(|| Ok(crate::state::stats().to_json())).unwrap_or_default();
    if buf.is_null() || json.is_empty() || json.len() + 1 > len {
        return -1;
    }
    // SAFETY: the JSON fits in `len` bytes, checked above.
    unsafe { write_message(buf, len, &json) };
    json.len() as libc::ssize_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_truncated_on_character_boundaries_and_terminated() {
        let msg = "ab€cd"; // € is 3 bytes
        for size in 1..10 {
            let mut buf = vec![0x55 as c_char; size + 4];
            unsafe { write_message(buf.as_mut_ptr(), size, msg) };
            let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
            assert!(s.len() < size);
            assert!(msg.starts_with(s));
            assert!(buf[size..].iter().all(|&b| b == 0x55), "wrote past {size}");
        }
    }

    #[test]
    fn panics_become_internal_errors() {
        let e = guard::<()>(|| panic!("kaboom")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("kaboom"));
    }
}
