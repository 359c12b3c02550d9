//! Cross-process, cross-thread locks on one block of one blob version.
//!
//! Each blob version directory has a `lock` file; the lock for block `i` is an
//! open-file-description (OFD) byte-range lock on byte `i` of it. OFD locks
//! belong to an open file description, so two threads of one process that each
//! open the file exclude each other exactly as two processes do, and the kernel
//! drops the lock when its holder dies (kill -9 included): there are no stale
//! locks to clean up. A forked child shares the open file description through
//! its copy of the descriptor, so every lock file descriptor is registered
//! with `fork.rs` and closed in the child: a parent killed while filling does
//! not leave its lock held by a child that lives on.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{io_error, Error, ErrorKind, Result};

/// A held lock on one block. Dropping it releases the lock explicitly, not
/// only by closing the descriptor: a child forked while the lock was held
/// keeps a copy of the descriptor (and so of the open file description) that
/// it never closes, and closing ours alone would leave the lock held.
pub struct BlockLock {
    file: LockFile,
    index: u64,
}

/// An open lock file of the store, registered so a forked child closes its
/// copy (see `fork.rs`).
pub(crate) struct LockFile {
    file: File,
}

impl std::ops::Deref for LockFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Before the descriptor closes, so its number is never closed twice.
        crate::fork::unregister(self.file.as_raw_fd());
    }
}

impl Drop for BlockLock {
    fn drop(&mut self) {
        crate::sys::unlock_byte(&self.file, self.index);
    }
}

/// Opens (creating it if needed) a lock file of the store, never through a
/// symlink, with exactly the cache's file mode whatever the umask (members
/// of a group-shared cache must be able to open it for writing).
pub(crate) fn open_lock_file(path: &Path, mode: u32) -> Result<LockFile> {
    let f = crate::fork::open_registered(|| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    })
    .map_err(|e| io_error("cannot open lock file", path, &e))?;
    crate::store::set_file_mode(&f, mode);
    Ok(LockFile { file: f })
}

/// Takes the lock on block `index`, waiting for a holder in another thread or
/// process. Polls in short sleeps (at most 5 ms apart); before each sleep it
/// asks `give_up` (with the time waited so far) whether to stop waiting,
/// and returns the error it gives.
pub(crate) fn lock_block(
    path: &Path,
    mode: u32,
    index: u64,
    give_up: &mut dyn FnMut(Duration) -> Option<Error>,
) -> Result<BlockLock> {
    let file = open_lock_file(path, mode)?;
    let start = Instant::now();
    let mut sleep = Duration::from_micros(200);
    loop {
        match crate::sys::try_lock_byte(&file, index) {
            Ok(true) => return Ok(BlockLock { file, index }),
            Ok(false) => {}
            Err(e) => return Err(io_error("cannot lock", path, &e)),
        }
        if let Some(e) = give_up(start.elapsed()) {
            return Err(e);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(5));
    }
}

/// A `give_up` for [`lock_block`]: fails after `timeout`, or at once when
/// `cancelled` says the library is shutting down.
pub(crate) fn bounded<'a>(
    timeout: Duration,
    cancelled: &'a dyn Fn() -> bool,
) -> impl FnMut(Duration) -> Option<Error> + 'a {
    move |waited| {
        if cancelled() {
            return Some(Error::new(
                ErrorKind::Shutdown,
                "the library was shut down while waiting for another reader to fill the block",
            ));
        }
        (waited > timeout).then(|| {
            Error::new(
                ErrorKind::Origin,
                format!(
                    "timed out after {timeout:?} waiting for another reader to fill this block"
                ),
            )
        })
    }
}

/// Tries the lock on block `index` without waiting.
pub fn try_lock_block(path: &Path, mode: u32, index: u64) -> Result<Option<BlockLock>> {
    let file = open_lock_file(path, mode)?;
    match crate::sys::try_lock_byte(&file, index) {
        Ok(true) => Ok(Some(BlockLock { file, index })),
        Ok(false) => Ok(None),
        Err(e) => Err(io_error("cannot lock", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_opens_in_one_process_exclude_each_other_on_the_same_block_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let p = dir.join("lock");
        let a = lock_block(
            &p,
            0o600,
            3,
            &mut bounded(Duration::from_secs(1), &|| false),
        )
        .unwrap();
        assert!(try_lock_block(&p, 0o600, 3).unwrap().is_none());
        assert!(try_lock_block(&p, 0o600, 4).unwrap().is_some());
        drop(a);
        assert!(try_lock_block(&p, 0o600, 3).unwrap().is_some());
    }

    #[test]
    fn waiting_gives_up_when_cancelled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let p = dir.join("lock");
        let _a = lock_block(
            &p,
            0o600,
            0,
            &mut bounded(Duration::from_secs(1), &|| false),
        )
        .unwrap();
        let e = lock_block(
            &p,
            0o600,
            0,
            &mut bounded(Duration::from_secs(10), &|| true),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::Shutdown);
    }
}
