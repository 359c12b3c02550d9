//! Publishing a block in the cluster tier, and keeping the tier under its
//! cap.
//!
//! The node that claimed a block ([`super::Took::Claimed`]) fetched it from
//! the origin into its local cache; then its local block file (bytes and
//! trailer, checksum included) is copied into the tier under a name of its
//! own and renamed into place, and the claim's lock released. If the block
//! is there already (another node fetched it too: the filesystem's locks do
//! not exclude, or the other node waited past the bound) the copy is
//! dropped and counted as a duplicate.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Claim, Cluster, Tier};
use crate::error::{io_error, Error, Result};
use crate::log;
use crate::store::{evict, VersionDir};

/// What a publication's thread reports.
enum Copy {
    /// Another piece was copied.
    Piece,
    Done(Result<Outcome>),
}

/// Bytes copied at a time.
const PIECE: usize = 1 << 20;

/// What one publication did.
enum Outcome {
    Published(u64),
    /// The block was there already.
    Duplicate,
    /// The local block was gone (evicted) before it could be copied.
    Gone,
}

impl Cluster {
    /// Copies published local block `index` (of `len` bytes, in `local`)
    /// into the tier under `claim`, then releases the claim. Each piece of
    /// the copy must land within the bound on the tier's answers: a tier
    /// that stops answering is marked down and left to its thread.
    pub(crate) fn publish(&self, claim: Claim, local: &VersionDir, len: u64) {
        self.publish_counted(claim, local, len);
        self.publishing.fetch_sub(1, Ordering::AcqRel);
    }

    fn publish_counted(&self, claim: Claim, local: &VersionDir, len: u64) {
        let from = local.block_path(claim.index);
        let tier = claim.tier.clone();
        let index = claim.index;
        let call = self.io.start(move |tx| {
            let r = copy_in(&claim, &from, len, &mut || tx.send(Copy::Piece).is_ok());
            drop(claim); // releases the lock once the block is in place
            let _ = tx.send(Copy::Done(r));
        });
        let r = call.and_then(|call| loop {
            match call.next(self.op_bound) {
                Ok(Some(Copy::Piece)) => continue,
                Ok(Some(Copy::Done(r))) => {
                    call.done();
                    break Ok(r);
                }
                Ok(None) => {
                    break Ok(Err(Error::internal(
                        "its I/O thread ended without an answer",
                    )))
                }
                Err(u) => break Err(u),
            }
        });
        match r {
            Ok(Ok(Outcome::Published(bytes))) => {
                self.stats.blocks_to_cluster.add(1);
                self.after_publish(&tier, bytes);
            }
            Ok(Ok(Outcome::Duplicate)) => {
                self.stats.cluster_duplicates.add(1);
                log::log_once(
                    log::Level::Warn,
                    "cluster-duplicate",
                    &format!(
                        "block {index} was fetched from the origin by this node and by another one at the same time: the locks of the cluster tier {} do not seem to exclude across nodes (sshfs, NFS without lock support, some SMB setups), or the other node was slow; bytes stay right, but blocks may be downloaded more than once (counter cluster_duplicates; `blobcache doctor` checks the locks)",
                        self.describe()
                    ),
                );
            }
            Ok(Ok(Outcome::Gone)) => {}
            Ok(Err(e)) => self.down(&format!("cannot take a block: {e}")),
            Err(u) => self.down(&u.describe()),
        }
    }

    /// Counts `bytes` published and, past the cap, evicts the tier's least
    /// recently used blocks (one node at a time, under the tier's eviction
    /// lock). The scan walks the whole tier, which on a large shared
    /// filesystem takes a while: it runs on a thread of its own, one at a
    /// time in a process, and nothing waits for it.
    fn after_publish(&self, tier: &Arc<Tier>, bytes: u64) {
        let usage = tier.usage.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let since = tier.since_scan.load(Ordering::Relaxed);
        let since = since.saturating_add(bytes);
        tier.since_scan.store(since, Ordering::Relaxed);
        // Others publish too: look again after a tenth of the cap (and at
        // the first publication).
        if usage <= tier.cap && since <= tier.cap / 10 {
            return;
        }
        // A scan running now looks again when it is done.
        tier.rescan.store(true, Ordering::Release);
        if tier.scanning.swap(true, Ordering::AcqRel) {
            return;
        }
        let (t, dir) = (tier.clone(), self.describe());
        self.io.detach(move || loop {
            t.rescan.store(false, Ordering::Release);
            t.since_scan.store(0, Ordering::Relaxed);
            let (root, mode) = (t.store.root(), t.store.file_mode());
            let scanned = evict::scan(root, mode).bytes;
            let (after, removed) = match evict::try_evict_lock(root, mode) {
                Some(_guard) if scanned > t.cap => {
                    let r = evict::evict_to(root, mode, t.cap / 10 * 9, None);
                    (r.after, r.blocks_removed)
                }
                // Under the cap, or another node is evicting.
                _ => (scanned, 0),
            };
            t.usage.store(after, Ordering::Relaxed);
            if removed > 0 {
                log::info!(
                    "evicted {removed} blocks from the cluster tier {dir} (cap {} bytes)",
                    t.cap
                );
            }
            t.scanning.store(false, Ordering::Release);
            // Publications during the scan asked for another.
            if !t.rescan.load(Ordering::Acquire) || t.scanning.swap(true, Ordering::AcqRel) {
                break;
            }
        });
    }
}

/// Copies the local block file `from` into the claim's directory and
/// renames it into place unless the block is there already; calls
/// `piece` after each piece (false: the caller gave up).
fn copy_in(
    claim: &Claim,
    from: &std::path::Path,
    len: u64,
    piece: &mut dyn FnMut() -> bool,
) -> Result<Outcome> {
    let mut src = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(from)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Gone),
        Err(e) => return Err(io_error("cannot open", from, &e)),
    };
    let dest = claim.dir.block_path(claim.index);
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Ok(Outcome::Duplicate);
    }
    let total = src
        .metadata()
        .map_err(|e| io_error("cannot stat", from, &e))?
        .len();
    if total != len + crate::store::block::TRAILER_LEN as u64 {
        return Err(Error::internal(format!(
            "{} has {total} bytes, not a block of {len}",
            from.display()
        )));
    }
    let mode = claim.tier.store.file_mode();
    let aside = claim.dir.aside_block_path(claim.index);
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&aside)
        .map_err(|e| io_error("cannot create", &aside, &e))?;
    crate::store::set_file_mode(&dst, mode);
    let copied = copy_pieces(&mut src, &mut dst, piece)
        .and_then(|n| {
            if claim.tier.store.fsync() {
                dst.sync_data()?;
            }
            Ok(n)
        })
        .map_err(|e| io_error("cannot write", &aside, &e));
    let r = match copied {
        Ok(n) if n != total => Err(Error::store(format!(
            "copied {n} bytes of {total} into {}",
            aside.display()
        ))),
        Err(e) => Err(e),
        // Another node may have published it meanwhile; its copy stays.
        Ok(_) if std::fs::symlink_metadata(&dest).is_ok() => Ok(Outcome::Duplicate),
        Ok(_) => std::fs::rename(&aside, &dest)
            .map(|()| Outcome::Published(total))
            .map_err(|e| io_error("cannot publish", &dest, &e)),
    };
    if !matches!(r, Ok(Outcome::Published(_))) {
        let _ = std::fs::remove_file(&aside);
    }
    r
}

/// Copies `src` to `dst` in pieces of [`PIECE`] bytes, calling `piece`
/// after each; returns the bytes copied.
fn copy_pieces(
    src: &mut std::fs::File,
    dst: &mut std::fs::File,
    piece: &mut dyn FnMut() -> bool,
) -> std::io::Result<u64> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; PIECE];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        dst.write_all(&buf[..n])?;
        total += n as u64;
        if !piece() {
            return Err(std::io::Error::other("the fill stopped waiting"));
        }
    }
}
