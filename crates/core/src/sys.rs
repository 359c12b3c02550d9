//! The system calls the standard library does not offer, each behind a safe
//! function: the only `unsafe` of the core outside the mappings of
//! `store/block.rs`.
//!
//! Each wrapper takes Rust values (a `File`, a `Path`, a slice) and passes
//! the kernel only what those values keep valid for the call. Errors come
//! back as `std::io::Error` (or, where the callers never look at them, are
//! dropped here and said so).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `path` as a C string (`None` when it holds a NUL byte, which no file
/// name can).
fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).ok()
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `fchmod(2)`: gives `file` exactly `mode`, whatever the umask. Best
/// effort: a file another user created in a shared cache stays as it is.
pub(crate) fn set_mode(file: &File, mode: u32) {
    // SAFETY: a plain system call on the open descriptor `file` owns; no
    // memory is passed.
    unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) };
}

/// `utimensat(2)` with both times "now", never through a symlink. Best
/// effort (a file removed meanwhile is not an error worth reporting).
pub(crate) fn touch(path: &Path) {
    let Some(c) = c_path(path) else { return };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; a NULL
    // `times` means "now" for both timestamps.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            std::ptr::null(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// `futimens(2)` with both times "now" (needs ownership or write access,
/// not a writable descriptor). Best effort.
pub(crate) fn touch_file(file: &File) {
    // SAFETY: the open descriptor `file` owns; a NULL `times` means "now".
    unsafe { libc::futimens(file.as_raw_fd(), std::ptr::null()) };
}

/// `fallocate(2)` of bytes `[0, len)` of `file` (mode 0: allocate, and
/// extend the file to `len`).
pub(crate) fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: a plain system call on the open descriptor `file` owns; no
    // memory is passed.
    check(unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) })
}

/// `statvfs(3)`: the size of the filesystem holding `path` and the bytes
/// available to unprivileged users, or `None` when it cannot be asked.
pub(crate) fn filesystem_size(path: &Path) -> Option<(u64, u64)> {
    let c = c_path(path)?;
    // SAFETY: `statvfs` is plain data (integers), for which all zeroes is
    // a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string that outlives the call, and
    // `st` is a valid, writable `statvfs` for the kernel to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| {
        let f = st.f_frsize as u64;
        (st.f_blocks as u64 * f, st.f_bavail as u64 * f)
    })
}

/// `flock(2)`, exclusive, without waiting: whether it was taken. Held until
/// the open file description closes.
pub(crate) fn try_flock(file: &File) -> bool {
    // SAFETY: a plain system call on the open descriptor `file` owns; no
    // memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// An open-file-description lock (`F_OFD_SETLK`) of type `kind` on byte
/// `index` of `file`.
fn ofd(file: &File, kind: libc::c_int, index: u64) -> std::io::Result<()> {
    // SAFETY: an all-zero `flock` is a valid value of a plain C struct; the
    // fields that matter are set below (`l_pid` must stay 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = index as libc::off_t;
    fl.l_len = 1;
    // SAFETY: `fl` is a valid, initialised flock struct that lives across
    // the call; the descriptor is owned by `file` and open.
    check(unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_OFD_SETLK,
            &mut fl as *mut libc::flock,
        )
    })
}

/// Takes the write lock on byte `index` of `file` without waiting:
/// `Ok(false)` when another open file description holds it.
pub(crate) fn try_lock_byte(file: &File, index: u64) -> std::io::Result<bool> {
    match ofd(file, libc::F_WRLCK, index) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases the lock on byte `index` of `file` taken by [`try_lock_byte`].
pub(crate) fn unlock_byte(file: &File, index: u64) {
    let _ = ofd(file, libc::F_UNLCK, index);
}

/// One `write(2)` to descriptor 2: the bytes written, or the error.
/// Descriptor 2 may be closed or anything else, which the kernel reports.
pub(crate) fn write_stderr(bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: the kernel reads `bytes.len()` bytes from a valid slice.
    let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `pthread_atfork(3)` with three handlers. The handlers live as long as
/// the process: call it once (the library is never unloaded).
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: plain `extern "C"` functions with static lifetime; libc only
    // stores their addresses.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Closes descriptor `fd`, which no live value owns: in a forked child,
/// whose owner (a thread of the parent) does not exist, so the owner's
/// destructor never runs here.
pub(crate) fn close_orphan(fd: RawFd) {
    // SAFETY: per this function's contract nothing else owns or closes
    // `fd` in this process, so the `OwnedFd` is its only owner.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// A local date and time (year, month 1–12, day, hour, minute, second) as
/// Unix time, in the process's time zone (`mktime`); `None` if it cannot be
/// represented.
pub(crate) fn local_time_to_unix(fields: [i32; 6]) -> Option<u64> {
    let [year, month, day, hour, minute, second] = fields;
    // SAFETY: `tm` is plain data, zeroed (a valid value of every field) and
    // then filled in; mktime reads and normalises only it.
    let secs = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = year - 1900;
        tm.tm_mon = month - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = minute;
        tm.tm_sec = second;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    u64::try_from(secs).ok()
}
