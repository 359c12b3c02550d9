//! What the store holds, for the `blobcache` command: every blob version with
//! its meta, blocks present and last use ([`inventory`]); checking every
//! block's SHA-256 again and removing bad ones ([`verify`]); removing the
//! versions of chosen blobs ([`remove`]).
//!
//! Removal takes the block's lock (the one fills hold), so a block being
//! written is never touched, and unlinks only: a process that has the block
//! mapped keeps reading valid bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::store::block::{self, block_path};
use crate::store::evict::{self, EvictReport};
use crate::store::lock;
use crate::store::Meta;

/// One blob version in the store.
#[derive(Debug)]
pub struct Cached {
    pub path: PathBuf,
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

impl Cached {
    /// Block indices on disk.
    pub fn block_indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.iter().map(|(i, _)| *i)
    }
}

fn read_meta(dir: &Path) -> Result<Meta, String> {
    let bytes = crate::store::read_small(&dir.join("meta")).map_err(|e| e.to_string())?;
    Meta::decode(&bytes)
}

/// Every blob version in the store at `root` (its `v1` directory), least
/// recently used first.
pub fn inventory(root: &Path, file_mode: u32) -> Vec<Cached> {
    let usage = evict::scan(root, file_mode);
    let mut out: Vec<Cached> = usage
        .versions
        .into_iter()
        .map(|v| {
            let meta = read_meta(&v.path);
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
                path: v.path,
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

/// Checks every block of `c` against the SHA-256 in its trailer (and the
/// trailer against the meta); removes the bad ones when `remove` is set.
pub fn verify(c: &Cached, file_mode: u32, remove: bool) -> VerifyReport {
    let mut r = VerifyReport::default();
    let lock_path = c.path.join("lock");
    for (index, _) in &c.blocks {
        let index = *index;
        let Ok(_l) = lock::lock_block(
            &lock_path,
            file_mode,
            index,
            &mut lock::bounded(LOCK_WAIT, &|| false),
        ) else {
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
                match block::open_block(&c.path, index, len) {
                    Ok(None) => continue, // evicted meanwhile
                    Ok(Some(b)) => {
                        r.blocks_checked += 1;
                        r.bytes_checked += len;
                        (!b.verify()).then(|| {
                            "its bytes do not match the SHA-256 recorded when it was filled"
                                .to_string()
                        })
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        if let Some(why) = why {
            let removed = remove && std::fs::remove_file(block_path(&c.path, index)).is_ok();
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
pub fn remove(versions: &[&Cached], file_mode: u32) -> EvictReport {
    let mut report = EvictReport::default();
    for c in versions {
        report.before += c.bytes;
        let mut left = c.bytes;
        let lock_path = c.path.join("lock");
        for (index, bytes) in &c.blocks {
            let Ok(Some(_l)) = lock::try_lock_block(&lock_path, file_mode, *index) else {
                continue;
            };
            if std::fs::remove_file(block_path(&c.path, *index)).is_ok() {
                left = left.saturating_sub(*bytes);
                report.blocks_removed += 1;
            }
        }
        let busy = std::fs::read_dir(&c.path)
            .map(|es| {
                es.flatten().any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("tmp.") || n.starts_with("b.")
                })
            })
            .unwrap_or(true);
        if !busy && crate::store::remove_tree(&c.path).is_ok() {
            left = 0;
        }
        report.after += left;
    }
    report
}
