//! The read path: a hit copies out of blocks kept open; a miss fills the
//! missing blocks (fill.rs) or, when the store cannot take them, reads the
//! range straight from the origin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::entry::Entry;
use super::mapped::Open;
use super::{now_secs, Inner, TOUCH_EVERY_SECS};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::names::BlobKey;
use crate::origin;
use crate::store::block::OpenError;
use crate::store::VersionDir;
impl Inner {
    /// Block `index` of `entry`, open: from its slot, or opened from disk
    /// (published by another process or an earlier lifecycle) within the
    /// budget. `None` when it is not on disk or is damaged (a fill replaces
    /// it).
    pub(super) fn block(&self, entry: &Entry, index: u64) -> Option<Arc<Open>> {
        let slot = &entry.slots[index as usize];
        if let Some(b) = slot.get() {
            return Some(b);
        }
        let dir = entry.dir.as_ref()?;
        let (start, end) = entry.block_range(index);
        match self.open_block(dir, index, end - start, false) {
            Ok(Some(b)) => Some(self.budget.insert(&entry.slots, index as usize, b)),
            Ok(None) => {
                slot.set_on_disk(false);
                None
            }
            Err(_) => None,
        }
    }

    /// Opens published block `index` of `dir`: mapped if it can be; when
    /// the process is out of address space or memory maps, after closing
    /// half of this cache's blocks, and failing that with `pread` (never
    /// taken for damage).
    pub(super) fn open_block(
        &self,
        dir: &VersionDir,
        index: u64,
        len: u64,
        populate: bool,
    ) -> std::result::Result<Option<Open>, OpenError> {
        match dir.map_block(index, len, populate) {
            Err(OpenError::CannotMap(e)) => {
                self.budget.halve();
                match dir.map_block(index, len, populate) {
                    Err(OpenError::CannotMap(_)) => {
                        log::log_once(
                            Level::Warn,
                            "cannot-map",
                            &format!(
                                "{e}; reading cached blocks with pread instead (the process is out of address space or memory maps: check `ulimit -v` and vm.max_map_count; BLOBCACHE_MAPPED_BLOCKS and BLOBCACHE_MAPPED_BYTES bound the cache's own)"
                            ),
                        );
                        Ok(dir.file_block(index, len)?.map(Open::File))
                    }
                    r => Ok(r?.map(Open::Mapped)),
                }
            }
            r => Ok(r?.map(Open::Mapped)),
        }
    }

    pub(super) fn read(self: &Arc<Self>, key: &BlobKey, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Shutdown, "the library was shut down"));
        }
        let len = buf.len() as u64;
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::new(
                ErrorKind::OutOfRange,
                "offset + length overflows a 64-bit byte count",
            )
        })?;
        let entry = self.entry(key)?;
        if end > entry.info.size {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "the range ends past the end of the blob, which has {} bytes",
                    entry.info.size
                ),
            ));
        }
        let bs = entry.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;

        // The blocks, open; `None` for those still missing.
        let mut blocks: Vec<Option<Arc<Open>>> =
            (first..=last).map(|i| self.block(&entry, i)).collect();
        let missing: Vec<u64> = (first..=last)
            .zip(&blocks)
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut passthrough = Vec::new();
        if !missing.is_empty() {
            self.stats.misses.add(1);
            let t0 = Instant::now();
            let results = self.fill_each(&entry, &missing);
            self.stats
                .origin_wait_ns
                .add(t0.elapsed().as_nanos() as u64);
            for (i, r) in missing.iter().zip(results) {
                match r {
                    Ok(b) => blocks[(i - first) as usize] = Some(b),
                    Err(e) if e.kind() == ErrorKind::Store => {
                        self.warn_store(&e);
                        passthrough.push(*i);
                    }
                    Err(e) if e.kind() == ErrorKind::PeerStalled => {
                        log::log_once(
                            Level::Warn,
                            &format!("stalled:{}:{i}", entry.key),
                            &format!("block {i} of {}: {e}", entry.key),
                        );
                        passthrough.push(*i);
                    }
                    Err(e) => {
                        if e.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        return Err(e);
                    }
                }
            }
        } else {
            self.stats.hits.add(1);
        }

        // Copy out.
        let mut from_cache = 0u64;
        for (i, block) in (first..=last).zip(&blocks) {
            let (bstart, bend) = entry.block_range(i);
            let s = offset.max(bstart);
            let e = end.min(bend);
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match block {
                Some(b) => {
                    b.copy_to((s - bstart) as usize, dst)?;
                    from_cache += e - s;
                }
                None if passthrough.contains(&i) => {
                    self.stats.passthrough_reads.add(1);
                    let mut pos = 0usize;
                    let r = origin::read_exact(
                        &*self.origin,
                        key,
                        &entry.info,
                        s,
                        e - s,
                        &mut |c: &[u8]| {
                            dst[pos..pos + c.len()].copy_from_slice(c);
                            pos += c.len();
                            Ok(())
                        },
                    );
                    if let Err(err) = r {
                        self.stats.origin_errors.add(1);
                        if err.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        return Err(err);
                    }
                    self.stats.bytes_from_origin.add(e - s);
                }
                None => {
                    return Err(Error::internal(format!(
                        "block {i} was neither filled nor read from the origin"
                    )))
                }
            }
        }
        drop(blocks);
        self.stats.bytes_from_cache.add(from_cache);
        self.readahead(&entry, first, last);
        let now = now_secs();
        if now.saturating_sub(entry.last_touch.load(Ordering::Relaxed)) >= TOUCH_EVERY_SECS {
            entry.last_touch.store(now, Ordering::Relaxed);
            if let Some(d) = &entry.dir {
                d.touch();
            }
        }
        Ok(())
    }
}
