//! What the store holds, for the `blobcache` command: every blob version with
//! its meta, blocks present and last use ([`inventory`]); checking every
//! block's checksum again and removing bad ones ([`verify`]); removing the
//! versions of chosen blobs ([`remove`]).
//!
//! Removal takes the block's lock (the one fills hold), so a block being
//! written is never touched, and unlinks only: a process that has the block
//! mapped keeps reading valid bytes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::store::evict::{self, EvictReport};
use crate::store::lock;
use crate::store::{Meta, VersionDir};

/// One blob version in the store.
#[derive(Debug)]
pub struct Cached {
    pub dir: VersionDir,
    /// `Err` says why the meta file is unusable.
    pub meta: Result<Meta, String>,
    pub blocks_present: u64,
    /// Blocks of the whole blob (0 when the meta is unusable).
    pub blocks_total: u64,
    /// Bytes the version's files occupy on disk.
    pub bytes: u64,
    /// When a reader last used it (the mtime of `meta`, touched by readers
    /// at most every 30 s).
    pub last_use: Option<SystemTime>,
    blocks: Vec<(u64, u64)>,
}

/// Every blob version in the store at `root` (its `v1` directory), least
/// recently used first.
pub fn inventory(root: &Path, file_mode: u32) -> Vec<Cached> {
    let usage = evict::scan(root, file_mode);
    let mut out: Vec<Cached> = usage
        .versions
        .into_iter()
        .map(|v| {
            let meta = v.dir.read_meta();
            let blocks_total = meta
                .as_ref()
                .map(|m| m.size.div_ceil(m.block_size))
                .unwrap_or(0);
            Cached {
                meta,
                blocks_present: v.blocks.len() as u64,
                blocks_total,
                bytes: v.bytes,
                last_use: v.last_use,
                blocks: v.blocks,
                dir: v.dir,
            }
        })
        .collect();
    out.sort_by_key(|c| c.last_use);
    out
}

/// One block that failed its check.
#[derive(Debug)]
pub struct Bad {
    pub index: u64,
    pub why: String,
    /// Whether it was removed (false when `remove` was off, or when it was
    /// gone or held by a fill).
    pub removed: bool,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub bad: Vec<Bad>,
    /// Blocks skipped because a fill held their lock for longer than the
    /// wait (they are being written, so not yet published).
    pub busy: u64,
}

/// How long `verify` waits for a block's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Checks every block of `c` against the checksum in its trailer (and the
/// trailer against the meta); removes the bad ones when `remove` is set.
pub fn verify(c: &Cached, remove: bool) -> VerifyReport {
    let mut r = VerifyReport::default();
    for (index, _) in &c.blocks {
        let index = *index;
        let Ok(_l) = c
            .dir
            .lock_block(index, &mut lock::bounded(LOCK_WAIT, &|| false))
        else {
            r.busy += 1;
            continue;
        };
        let why = match &c.meta {
            Err(why) => Some(format!(
                "the version's meta file is unusable ({why}), so the block cannot be checked"
            )),
            Ok(m) if index >= m.size.div_ceil(m.block_size) => Some(format!(
                "block {index} lies past the end of the blob ({} bytes)",
                m.size
            )),
            Ok(m) => {
                let len = (m.size - index * m.block_size).min(m.block_size);
                match c.dir.map_block(index, len, false) {
                    Ok(None) => continue, // evicted meanwhile
                    Ok(Some(b)) => {
                        r.blocks_checked += 1;
                        r.bytes_checked += len;
                        (!b.verify()).then(|| {
                            format!(
                                "its bytes do not match the {} recorded when it was filled",
                                b.checksum_name()
                            )
                        })
                    }
                    Err(e) => Some(e.into_error().to_string()),
                }
            }
        };
        if let Some(why) = why {
            let removed = remove && c.dir.remove_block(index);
            r.bad.push(Bad {
                index,
                why,
                removed,
            });
        }
    }
    r
}

/// Removes every block of each version in `versions` (each under its lock,
/// by unlink), and the version directories left without blocks when no
/// fill is writing in them.
pub fn remove(versions: &[&Cached]) -> EvictReport {
    let mut report = EvictReport::default();
    for c in versions {
        report.before += c.bytes;
        let r = c.dir.remove_blocks(&c.blocks, |_| true, false);
        report.blocks_removed += r.blocks;
        report.after += if r.dir_removed {
            0
        } else {
            c.bytes.saturating_sub(r.bytes)
        };
    }
    report
}
