//! A cache provider loaded the way the Run:ai streamer loads one
//! (`dlopen(RTLD_NOW | RTLD_LOCAL)`, `dlsym`, never `dlclose`), so that our
//! library and the C `pread` provider are driven by the same caller.

use std::ffi::{c_char, c_void, CString};

type BlobRead = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_void,
    usize,
    usize,
    *mut c_char,
    usize,
) -> isize;
type Shutdown = unsafe extern "C" fn();

pub struct Provider {
    read: BlobRead,
    shutdown: Option<Shutdown>,
}

/// A blob's names as the C strings `blob_read` takes.
#[derive(Clone)]
pub struct Blob {
    account: CString,
    container: CString,
    blob: CString,
}

impl Blob {
    pub fn new(account: &str, container: &str, blob: &str) -> Blob {
        let c = |s: &str| CString::new(s).expect("a name without NUL");
        Blob {
            account: c(account),
            container: c(container),
            blob: c(blob),
        }
    }

    /// `account/container/blob`.
    pub fn parse(s: &str) -> Blob {
        let p: Vec<&str> = s.splitn(3, '/').collect();
        assert_eq!(p.len(), 3, "{s}: expected ACCOUNT/CONTAINER/BLOB");
        Blob::new(p[0], p[1], p[2])
    }
}

impl Provider {
    pub fn open(path: &str) -> Provider {
        let c = CString::new(path).expect("a path without NUL");
        // SAFETY: loading a provider library built for this benchmark; its
        // initialisers have no preconditions.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "cannot dlopen {path}: {}", dlerror());
        let sym = |name: &str| {
            let n = CString::new(name).unwrap();
            // SAFETY: `h` is a live handle (never closed); `n` is NUL-terminated.
            let p = unsafe { libc::dlsym(h, n.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        let version = sym("cache_abi_version").expect("cache_abi_version not exported");
        // SAFETY: the provider interface (STREAMER_CONTRACT.md) gives these
        // symbols these signatures; the handle is never closed, so the
        // pointers stay valid for the life of the process.
        unsafe {
            let version: extern "C" fn() -> u32 = std::mem::transmute(version);
            assert_eq!(version(), 1, "{path}: cache_abi_version is not 1");
            Provider {
                read: std::mem::transmute::<*mut c_void, BlobRead>(
                    sym("blob_read").expect("blob_read not exported"),
                ),
                shutdown: sym("shutdown").map(|p| std::mem::transmute::<*mut c_void, Shutdown>(p)),
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset`; the provider's message on failure.
    pub fn read(&self, blob: &Blob, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut err = [0 as c_char; 512];
        // SAFETY: the names are NUL-terminated, `buf` is writable for its
        // length, and `err` for its 512 bytes, as blob_read requires.
        let n = unsafe {
            (self.read)(
                blob.account.as_ptr(),
                blob.container.as_ptr(),
                blob.blob.as_ptr(),
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
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        Err(format!("blob_read returned {n}: {}", msg.to_string_lossy()))
    }

    pub fn shutdown(&self) {
        if let Some(f) = self.shutdown {
            // SAFETY: `shutdown` takes no arguments and may be called at any time.
            unsafe { f() }
        }
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by libc.
    unsafe {
        let p = libc::dlerror();
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
