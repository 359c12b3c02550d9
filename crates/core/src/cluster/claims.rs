//! Claims: which node fills a block of the cluster tier, whatever the
//! filesystem's locks do.
//!
//! Byte-range locks on a shared filesystem may not exclude across nodes
//! (sshfs, NFS mounted `nolock`, FUSE filesystems without lock support),
//! while an exclusive create (`O_EXCL`) is atomic on all of them. So the
//! node that takes a block's lock also creates `claim.<i>` exclusively; a
//! node that finds the claim there waits for the block as if the lock were
//! held. A claim is kept fresh (its mtime touched every [`REFRESH`]) by a
//! thread of its holder's process while the holder fills; one that does
//! not change for [`STALE`], by the waiter's own clock (node clocks need
//! not agree), is taken over: its holder died, or its mount hung.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::MutexExt;

/// How often a held claim is touched.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);
/// A claim whose mtime has not changed this long has no live holder.
pub(crate) const STALE: Duration = Duration::from_secs(5);

/// This process's claims, kept fresh by one thread.
#[derive(Default)]
pub(crate) struct Claims {
    live: Arc<Mutex<HashSet<PathBuf>>>,
    keeper: AtomicBool,
}

impl Claims {
    /// Creates claim `path` if nobody holds it: true when this call did.
    pub(crate) fn create(&self, path: &Path, mode: u32) -> std::io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => {
                crate::store::set_file_mode(&f, mode);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // Some network filesystems answer an exclusive create that lost
            // a race with another generic failure (sshfs: EPERM, from
            // SFTP's SSH_FX_FAILURE): the claim is there all the same.
            Err(_) if std::fs::symlink_metadata(path).is_ok() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps claim `path` fresh until [`Claims::forget`] (starting the
    /// keeper thread the first time); it stops with `stop`.
    pub(crate) fn hold(&self, path: PathBuf, stop: &Arc<AtomicBool>) {
        self.live.locked().insert(path);
        if !self.keeper.swap(true, Ordering::AcqRel) {
            let (live, stop) = (self.live.clone(), stop.clone());
            let builder = std::thread::Builder::new()
                .name("blobcache-cluster-claims".into())
                .stack_size(256 << 10);
            // Its own thread: on a hung mount it hangs alone, and the
            // claims it could not touch go stale for the other nodes,
            // which is right.
            if let Err(e) = crate::fork::spawn(builder, move || keep(&live, &stop)) {
                crate::log::debug!("cannot start the cluster claims thread: {e}");
            }
        }
    }

    /// Stops keeping claim `path` fresh.
    pub(crate) fn forget(&self, path: &Path) {
        self.live.locked().remove(path);
    }
}

fn keep(live: &Mutex<HashSet<PathBuf>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(REFRESH);
        let now: Vec<PathBuf> = live.locked().iter().cloned().collect();
        for p in now {
            crate::sys::touch(&p);
        }
    }
}

/// A waiter's view of another node's claim: stale once its mtime has not
/// changed for [`STALE`] of the waiter's time.
#[derive(Default)]
pub(crate) struct Watch {
    seen: Option<(std::time::SystemTime, std::time::Instant)>,
}

impl Watch {
    /// Looks at claim `path` again; true when it is stale (or gone).
    pub(crate) fn stale(&mut self, path: &Path) -> bool {
        let Ok(mtime) = std::fs::symlink_metadata(path).and_then(|m| m.modified()) else {
            return true;
        };
        match self.seen {
            Some((m, since)) if m == mtime => since.elapsed() > STALE,
            _ => {
                self.seen = Some((mtime, std::time::Instant::now()));
                false
            }
        }
    }
}
