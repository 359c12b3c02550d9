//! Disk usage and least-recently-used eviction.
//!
//! Usage is what the files under `v1/blobs` occupy. Eviction removes blocks
//! of the least recently used blob versions (by the mtime of their `meta`,
//! which readers touch) until usage is under the target, by unlink only: a
//! process that has a removed block mapped keeps reading valid bytes, and the
//! space returns when it unmaps. One process evicts at a time (`evict.lock`).
//! The scan also removes temporary files whose writer is gone (their block
//! lock is free), and empty version directories.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::store::layout::Name;
use crate::store::VersionDir;

#[derive(Debug)]
pub struct VersionUsage {
    pub dir: VersionDir,
    pub last_use: Option<SystemTime>,
    pub bytes: u64,
    /// (block index, bytes on disk)
    pub blocks: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Usage {
    pub bytes: u64,
    pub versions: Vec<VersionUsage>,
}

fn disk_bytes(m: &std::fs::Metadata) -> u64 {
    // Allocated size, so sparse or short files count what they really use.
    (m.blocks() * 512).max(m.len().min(4096))
}

/// Walks the store, summing usage, and removes stale temporary files.
pub fn scan(root: &Path, file_mode: u32) -> Usage {
    let mut usage = Usage::default();
    let blobs = root.join(super::layout::BLOBS);
    if !real_dir(&blobs) {
        return usage;
    }
    let Ok(prefixes) = std::fs::read_dir(&blobs) else {
        return usage;
    };
    // Only real directories are entered: a symbolic link planted in the
    // store must never lead the scan (which removes files) elsewhere.
    for p in prefixes.flatten().filter(is_dir) {
        let Ok(keys) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for k in keys.flatten().filter(is_dir) {
            let Ok(versions) = std::fs::read_dir(k.path()) else {
                continue;
            };
            let mut any = false;
            for v in versions.flatten() {
                any = true;
                if !is_dir(&v) {
                    continue;
                }
                // Never written through (eviction only reads and removes).
                let dir = VersionDir::new(v.path(), file_mode, false);
                let vu = scan_version(dir);
                usage.bytes += vu.bytes;
                usage.versions.push(vu);
            }
            if !any {
                let _ = std::fs::remove_dir(k.path());
            }
        }
    }
    usage
}

/// A temporary `meta` file this old has no writer left (writing one takes
/// microseconds).
const STALE_META_TMP: std::time::Duration = std::time::Duration::from_secs(60);

/// A block copied aside this long ago has no writer left.
const STALE_BLOCK_ASIDE: std::time::Duration = std::time::Duration::from_secs(3600);

fn older_than(m: &std::fs::Metadata, age: std::time::Duration) -> bool {
    m.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age)
}

/// Whether a directory entry is a directory itself (not a link to one).
fn is_dir(e: &std::fs::DirEntry) -> bool {
    e.file_type().is_ok_and(|t| t.is_dir())
}

fn real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn scan_version(dir: VersionDir) -> VersionUsage {
    let mut vu = VersionUsage {
        last_use: None,
        bytes: 0,
        blocks: Vec::new(),
        dir,
    };
    for f in vu.dir.files() {
        let Some(meta) = f.meta().filter(|m| m.is_file()) else {
            continue;
        };
        let bytes = disk_bytes(&meta);
        match f.name {
            Name::Block(index) => {
                vu.blocks.push((index, bytes));
                vu.bytes += bytes;
            }
            Name::Tmp(index) => {
                // A temporary file whose block lock is free has no writer.
                let stale_tmp = match index {
                    Some(i) => matches!(vu.dir.try_lock_block(i), Ok(Some(_))),
                    None => true,
                };
                if !(stale_tmp && std::fs::remove_file(f.path()).is_ok()) {
                    vu.bytes += bytes;
                }
            }
            // A `meta` being written (write_atomic) by a process that died
            // between creating and renaming it.
            Name::MetaAside if older_than(&meta, STALE_META_TMP) => {
                let _ = std::fs::remove_file(f.path());
            }
            // A block copied aside into the cluster tier, or a claim, by a
            // node that died (or whose mount failed) before it was done
            // with them (claims are kept fresh while held). No lock tells
            // (they may not exclude across nodes), so only their age does:
            // a publication takes at most the fetch timeout.
            Name::BlockAside | Name::Claim if older_than(&meta, STALE_BLOCK_ASIDE) => {
                let _ = std::fs::remove_file(f.path());
            }
            Name::Meta => {
                vu.last_use = meta.modified().ok();
                vu.bytes += bytes;
            }
            Name::MetaAside | Name::BlockAside | Name::Claim | Name::Other => vu.bytes += bytes,
        }
    }
    vu.blocks.sort_unstable();
    vu
}

/// Holds `evict.lock` while alive.
pub struct EvictGuard {
    _file: super::lock::LockFile,
}

/// Takes the store-wide eviction lock without waiting.
pub fn try_evict_lock(root: &Path, file_mode: u32) -> Option<EvictGuard> {
    evict_lock_within(root, file_mode, Duration::ZERO, &|| false)
}

/// Takes the store-wide eviction lock, waiting while another thread or
/// process holds it, at most `patience` and only while `stop` says no
/// (polled: it is an `flock`). `None` at once when the lock file cannot be
/// opened (nothing to wait for).
pub(crate) fn evict_lock_within(
    root: &Path,
    file_mode: u32,
    patience: Duration,
    stop: &dyn Fn() -> bool,
) -> Option<EvictGuard> {
    let file =
        super::lock::open_lock_file(&root.join(super::layout::EVICT_LOCK), file_mode).ok()?;
    let deadline = Instant::now() + patience;
    loop {
        if crate::sys::try_flock(&file) {
            return Some(EvictGuard { _file: file });
        }
        if Instant::now() >= deadline || stop() {
            return None;
        }
        std::thread::sleep(EVICT_LOCK_POLL);
    }
}

/// How often a caller willing to wait looks at the eviction lock again.
const EVICT_LOCK_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvictReport {
    pub before: u64,
    pub after: u64,
    pub blocks_removed: u64,
}

/// Removes least-recently-used blocks until usage is at most `target`.
/// `skip` names a version directory not to touch unless nothing else is left
/// (the one being filled right now).
pub fn evict_to(root: &Path, file_mode: u32, target: u64, skip: Option<&Path>) -> EvictReport {
    let mut usage = scan(root, file_mode);
    let mut report = EvictReport {
        before: usage.bytes,
        after: usage.bytes,
        blocks_removed: 0,
    };
    if usage.bytes <= target {
        return report;
    }
    // Oldest first; the skipped directory last.
    usage
        .versions
        .sort_by_key(|v| (Some(v.dir.path()) == skip, v.last_use));
    let mut current = usage.bytes;
    for v in &usage.versions {
        if current <= target {
            break;
        }
        // Each block under its lock, so a block being written is never
        // removed; the directory too once empty (never the one skipped).
        let r = v.dir.remove_blocks(
            &v.blocks,
            |freed| current.saturating_sub(freed) > target,
            Some(v.dir.path()) == skip,
        );
        current = current.saturating_sub(r.bytes);
        report.blocks_removed += r.blocks;
    }
    report.after = current;
    report
}
