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
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::lock;

#[derive(Debug, Default)]
pub struct VersionUsage {
    pub path: PathBuf,
    pub last_use: Option<SystemTime>,
    pub bytes: u64,
    /// (block index, bytes on disk)
    pub blocks: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Usage {
    pub bytes: u64,
    pub versions: Vec<VersionUsage>,
    pub stale_tmp_removed: u64,
}

fn disk_bytes(m: &std::fs::Metadata) -> u64 {
    // Allocated size, so sparse or short files count what they really use.
    (m.blocks() * 512).max(m.len().min(4096))
}

/// Walks the store, summing usage, and removes stale temporary files.
pub fn scan(root: &Path, file_mode: u32) -> Usage {
    let mut usage = Usage::default();
    let blobs = root.join("blobs");
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
                let vu = scan_version(&v.path(), file_mode, &mut usage.stale_tmp_removed);
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

fn scan_version(path: &Path, file_mode: u32, stale: &mut u64) -> VersionUsage {
    let mut vu = VersionUsage {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let Ok(entries) = std::fs::read_dir(path) else {
        return vu;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        let bytes = disk_bytes(&m);
        if let Some(idx) = name.strip_prefix("b.").and_then(|s| s.parse::<u64>().ok()) {
            vu.blocks.push((idx, bytes));
            vu.bytes += bytes;
        } else if let Some(rest) = name.strip_prefix("tmp.") {
            let idx = rest.split('.').next().and_then(|s| s.parse::<u64>().ok());
            // A temporary file whose block lock is free has no writer.
            let stale_tmp = match idx {
                Some(i) => matches!(
                    lock::try_lock_block(&path.join("lock"), file_mode, i),
                    Ok(Some(_))
                ),
                None => true,
            };
            if stale_tmp && std::fs::remove_file(e.path()).is_ok() {
                *stale += 1;
            } else {
                vu.bytes += bytes;
            }
        } else if name.starts_with(".meta.") && older_than(&m, STALE_META_TMP) {
            // A `meta` being written (write_atomic) by a process that died
            // between creating and renaming it.
            if std::fs::remove_file(e.path()).is_ok() {
                *stale += 1;
            }
        } else if name == "meta" {
            vu.last_use = m.modified().ok();
            vu.bytes += bytes;
        } else {
            vu.bytes += bytes;
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
    let file = super::lock::open_lock_file(&root.join("evict.lock"), file_mode).ok()?;
    crate::sys::try_flock(&file).then_some(EvictGuard { _file: file })
}

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
        .sort_by_key(|v| (Some(v.path.as_path()) == skip, v.last_use));
    let mut current = usage.bytes;
    for v in &usage.versions {
        if current <= target {
            break;
        }
        for (idx, bytes) in &v.blocks {
            if current <= target {
                break;
            }
            // Take the block's lock so we never remove a block being written
            // (its writer will publish it again otherwise harmlessly, but the
            // lock keeps the accounting honest).
            let Ok(Some(_l)) = lock::try_lock_block(&v.path.join("lock"), file_mode, *idx) else {
                continue;
            };
            if std::fs::remove_file(v.path.join(format!("b.{idx}"))).is_ok() {
                current = current.saturating_sub(*bytes);
                report.blocks_removed += 1;
            }
        }
        if v.blocks
            .iter()
            .all(|(i, _)| !v.path.join(format!("b.{i}")).exists())
        {
            // Nothing left but meta and lock: remove the directory when no
            // one is writing in it.
            let busy = std::fs::read_dir(&v.path)
                .map(|es| {
                    es.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("tmp."))
                })
                .unwrap_or(true);
            if !busy && Some(v.path.as_path()) != skip {
                let _ = crate::store::remove_tree(&v.path);
            }
        }
    }
    report.after = current;
    report
}
