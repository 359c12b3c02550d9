//! The names the Run:ai streamer looks up with `dlsym`: each is the
//! prefixed function under the streamer's name. Compiled into
//! libblobcache.so only (feature `streamer-names`): a program that links a
//! library exporting `shutdown` gets it in place of libc's `shutdown(2)`
//! (see the README's "The C interface" for why no symbol version can keep
//! the export from such programs and still let `dlsym` find it).

use std::ffi::{c_char, c_void};

use libc::ssize_t;

use crate::{AbiVersionFn, BlobReadFn, ShutdownFn};

/// `blobcache_abi_version`, as the streamer looks it up.
#[no_mangle]
pub extern "C" fn cache_abi_version() -> u32 {
    crate::blobcache_abi_version()
}

/// `blobcache_abi_version`, under the name of the first versioned revision
/// of the streamer's interface.
#[no_mangle]
pub extern "C" fn runai_cache_abi_version() -> u32 {
    crate::blobcache_abi_version()
}

/// `blobcache_read`, as the streamer looks it up, except that every failure
/// returns -1, as the streamer's contract says (the message in `error_buf`
/// is the same).
///
/// # Safety
/// As for `blobcache_read`.
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
) -> ssize_t {
    // SAFETY: the caller keeps `blobcache_read`'s contract (this function's).
    let r = unsafe {
        crate::read(
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
    r.unwrap_or(-1)
}

/// `blobcache_shutdown`, as the streamer looks it up. Always exported: a
/// library without it would have the streamer's `dlsym` find libc's
/// `shutdown(2)` through the library's dependencies and call it with
/// garbage arguments.
#[no_mangle]
pub extern "C" fn shutdown() {
    crate::blobcache_shutdown()
}

// The header's function-pointer types are these functions' types.
const _: AbiVersionFn = cache_abi_version;
const _: AbiVersionFn = runai_cache_abi_version;
const _: BlobReadFn = blob_read;
const _: ShutdownFn = shutdown;
