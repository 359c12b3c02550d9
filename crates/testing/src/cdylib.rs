//! The one loader of a built cache provider library (libblobcache.so, or
//! the benchmarks' C `pread` provider), loaded as the Run:ai streamer loads
//! it: `dlopen` with RTLD_NOW | RTLD_LOCAL, functions found with `dlsym`,
//! never closed. Tests of the C boundary call the shipped library through
//! it, as a C caller sees it; every symbol they call is given its C type
//! here, once (the streamer's names, the prefixed ones, the counters).
//!
//! Nothing in a Rust program of this workspace exports `shutdown` (the
//! library's crate is a cdylib only, which no Rust program links), so the
//! loaded library's own sockets use libc's `shutdown(2)`, as in the
//! streamer's process.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

/// `blob_read`'s type (and `blobcache_read`'s), as include/blobcache.h
/// declares it.
pub type BlobRead = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_void,
    usize,
    usize,
    *mut c_char,
    usize,
) -> isize;
/// `shutdown`'s type (not `shutdown(2)`), and `blobcache_shutdown`'s.
pub type Shutdown = unsafe extern "C" fn();
/// `cache_abi_version`'s type (and `runai_cache_abi_version`'s and
/// `blobcache_abi_version`'s).
pub type AbiVersion = unsafe extern "C" fn() -> u32;
/// `blobcache_stats_json`'s type.
pub type StatsJson = unsafe extern "C" fn(*mut c_char, usize) -> isize;

/// A library opened with `dlopen(RTLD_NOW | RTLD_LOCAL)`, never closed.
#[derive(Clone, Copy, Debug)]
pub struct Handle(NonNull<c_void>);

// SAFETY: a dlopen handle may be used from any thread.
unsafe impl Send for Handle {}
// SAFETY: as above; dlsym is thread-safe.
unsafe impl Sync for Handle {}

impl Handle {
    /// Loads the library at `path` (its constructors run, as in the
    /// streamer's process); `dlerror`'s message on failure.
    pub fn open(path: &Path) -> Result<Handle, String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("a path without NUL");
        // SAFETY: a NUL-terminated path; a provider library's initialisers
        // have no preconditions. The handle is never closed.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        NonNull::new(h)
            .map(Handle)
            .ok_or_else(|| format!("cannot dlopen {}: {}", path.display(), dlerror()))
    }

    /// The address of `name` in the library (or in its dependencies, as
    /// `dlsym` searches them), if it is there.
    pub fn symbol(&self, name: &str) -> Option<NonNull<c_void>> {
        let n = CString::new(name).unwrap();
        // SAFETY: a live handle (never closed) and a NUL-terminated name.
        NonNull::new(unsafe { libc::dlsym(self.0.as_ptr(), n.as_ptr()) })
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by libc.
    unsafe {
        let p = libc::dlerror();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// A blob's names as the C strings `blob_read` takes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub account: CString,
    pub container: CString,
    pub name: CString,
}

impl Blob {
    pub fn new(account: &str, container: &str, name: &str) -> Blob {
        let c = |s: &str| CString::new(s).expect("a name without NUL");
        Blob {
            account: c(account),
            container: c(container),
            name: c(name),
        }
    }

    /// `account/container/blob`.
    pub fn parse(s: &str) -> Blob {
        let p: Vec<&str> = s.splitn(3, '/').collect();
        assert_eq!(p.len(), 3, "{s}: expected ACCOUNT/CONTAINER/BLOB");
        Blob::new(p[0], p[1], p[2])
    }
}

/// A cache provider library's functions, found as the streamer finds them.
#[derive(Clone, Copy)]
pub struct Lib {
    pub handle: Handle,
    pub cache_abi_version: AbiVersion,
    pub blob_read: BlobRead,
    pub shutdown: Shutdown,
    /// The older streamers' name for `cache_abi_version`, if exported.
    pub runai_cache_abi_version: Option<AbiVersion>,
    /// Ours only (the benchmarks' C provider has none).
    pub stats_json: Option<StatsJson>,
    /// Ours only: the prefixed functions of include/blobcache.h.
    pub prefixed: Option<Prefixed>,
}

/// The prefixed functions include/blobcache.h declares (what C programs
/// that link the library call), found with `dlsym`.
#[derive(Clone, Copy)]
pub struct Prefixed {
    pub read: BlobRead,
    pub shutdown: Shutdown,
    pub abi_version: AbiVersion,
}

impl Lib {
    /// Loads the provider at `path` as the streamer does; panics unless it
    /// exports `cache_abi_version` returning 1, `blob_read` and `shutdown`.
    pub fn open(path: &Path) -> Lib {
        let handle = Handle::open(path).unwrap_or_else(|e| panic!("{e}"));
        let sym = |name: &str| {
            handle
                .symbol(name)
                .unwrap_or_else(|| panic!("{}: {name} is not exported", path.display()))
                .as_ptr()
        };
        // SAFETY: the provider interface (include/blobcache.h, the
        // streamer's contract) gives these symbols these signatures; the
        // handle is never closed, so the pointers stay valid for the life
        // of the process.
        let lib = unsafe {
            Lib {
                handle,
                cache_abi_version: std::mem::transmute::<*mut c_void, AbiVersion>(sym(
                    "cache_abi_version",
                )),
                blob_read: std::mem::transmute::<*mut c_void, BlobRead>(sym("blob_read")),
                shutdown: std::mem::transmute::<*mut c_void, Shutdown>(sym("shutdown")),
                runai_cache_abi_version: handle
                    .symbol("runai_cache_abi_version")
                    .map(|p| std::mem::transmute::<*mut c_void, AbiVersion>(p.as_ptr())),
                stats_json: handle
                    .symbol("blobcache_stats_json")
                    .map(|p| std::mem::transmute::<*mut c_void, StatsJson>(p.as_ptr())),
                prefixed: match (
                    handle.symbol("blobcache_read"),
                    handle.symbol("blobcache_shutdown"),
                    handle.symbol("blobcache_abi_version"),
                ) {
                    (Some(read), Some(shutdown), Some(abi_version)) => Some(Prefixed {
                        read: std::mem::transmute::<*mut c_void, BlobRead>(read.as_ptr()),
                        shutdown: std::mem::transmute::<*mut c_void, Shutdown>(shutdown.as_ptr()),
                        abi_version: std::mem::transmute::<*mut c_void, AbiVersion>(
                            abi_version.as_ptr(),
                        ),
                    }),
                    _ => None,
                },
            }
        };
        // SAFETY: takes no arguments.
        let version = unsafe { (lib.cache_abi_version)() };
        assert_eq!(version, 1, "{}: cache_abi_version is not 1", path.display());
        lib
    }

    /// Reads `buf.len()` bytes at `offset` with the streamer's 512-byte
    /// error buffer; the library's message on failure.
    pub fn read(&self, blob: &Blob, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut err = [0 as c_char; 512];
        // SAFETY: the names are NUL-terminated, `buf` is writable for its
        // length, and `err` for its 512 bytes, as blob_read requires.
        let n = unsafe {
            (self.blob_read)(
                blob.account.as_ptr(),
                blob.container.as_ptr(),
                blob.name.as_ptr(),
                buf.as_mut_ptr().cast(),
                offset as usize,
                buf.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if n == buf.len() as isize {
            return Ok(());
        }
        // SAFETY: on failure the provider wrote a NUL-terminated message
        // into `err` (zero-initialised, so a NUL is there in any case).
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        Err(format!("blob_read returned {n}: {}", msg.to_string_lossy()))
    }

    /// Calls the library's `shutdown`.
    pub fn shutdown(&self) {
        // SAFETY: `shutdown` takes no arguments and may be called at any time.
        unsafe { (self.shutdown)() }
    }

    /// The library's counters (`blobcache_stats_json`), if it has them.
    pub fn stats_json(&self) -> Option<String> {
        let f = self.stats_json?;
        let mut buf = vec![0 as c_char; 4096];
        // SAFETY: a buffer of buf.len() bytes.
        let n = unsafe { f(buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return None;
        }
        // SAFETY: NUL-terminated by the library on success.
        Some(
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The built libblobcache.so ([`crate::built::library`]), loaded once.
pub fn lib() -> &'static Lib {
    static LIB: std::sync::OnceLock<Lib> = std::sync::OnceLock::new();
    LIB.get_or_init(|| Lib::open(&crate::built::library()))
}
