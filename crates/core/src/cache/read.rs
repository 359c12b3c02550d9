//! The read path: a hit copies out of blocks kept open; a miss fills the
//! missing blocks (fill.rs) or, when the store cannot take them, reads the
//! range straight from the origin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::Entry;
use super::fill::{Pending, Took};
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

        // The blocks, open; `None` for those still missing, whose fills
        // start now, all at once (they run in parallel).
        let mut blocks: Vec<Option<Arc<Open>>> =
            (first..=last).map(|i| self.block(&entry, i)).collect();
        let missing: Vec<u64> = (first..=last)
            .zip(&blocks)
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut pending: Vec<Option<Pending>> = blocks.iter().map(|_| None).collect();
        if missing.is_empty() {
            self.stats.hits.add(1);
        } else {
            self.stats.misses.add(1);
            for (&i, p) in missing.iter().zip(self.start_fills(&entry, &missing)) {
                pending[(i - first) as usize] = Some(p);
            }
            // Readahead starts with the miss too, not only when it is
            // served: on a far origin a fill takes many round trips, and a
            // stream whose window moved only as reads finished kept too few
            // requests in flight (the pool runs demand fills first, so
            // these wait behind the blocks just asked for).
            self.readahead(&entry, first, last, true);
        }

        // Copy out, block by block: a missing block's bytes as its fill
        // brings them in, or once it is filled; straight from the origin
        // when it cannot be cached.
        let (mut from_cache, mut from_fills) = (0u64, 0u64);
        let mut waited = Duration::ZERO;
        let mut outcome = Ok(());
        for i in first..=last {
            let slot = (i - first) as usize;
            let (bstart, bend) = entry.block_range(i);
            let s = offset.max(bstart);
            let e = end.min(bend);
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            if let Some(p) = pending[slot].take() {
                let t0 = Instant::now();
                // The bytes are copied as the fill brings them in; a reader
                // that needs the block to its end returns once the fill
                // has ended.
                let took = self.take(&entry, i, p, s - bstart, &mut *dst);
                waited += t0.elapsed();
                let got = match took {
                    Ok(Took::Copied) => {
                        from_fills += e - s;
                        continue;
                    }
                    Ok(Took::Block(b)) => {
                        blocks[slot] = Some(b);
                        Ok(())
                    }
                    Err(err) => Err(err),
                };
                match got {
                    Ok(()) => {}
                    Err(err) if err.kind() == ErrorKind::Store => {
                        self.warn_store(&err);
                    }
                    Err(err) if err.kind() == ErrorKind::PeerStalled => {
                        log::log_once(
                            Level::Warn,
                            &format!("stalled:{}:{i}", entry.key),
                            &format!("block {i} of {}: {err}", entry.key),
                        );
                    }
                    Err(err) => {
                        if err.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        outcome = Err(err);
                        break;
                    }
                }
            }
            match &blocks[slot] {
                // Present, or (from here on) cannot be cached.
                Some(b) => {
                    if let Err(err) = b.copy_to((s - bstart) as usize, dst) {
                        outcome = Err(err);
                        break;
                    }
                    from_cache += e - s;
                }
                None => {
                    self.stats.passthrough_reads.add(1);
                    let mut pos = 0usize;
                    let t0 = Instant::now();
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
                    waited += t0.elapsed();
                    if let Err(err) = r {
                        self.stats.origin_errors.add(1);
                        if err.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        outcome = Err(err);
                        break;
                    }
                    self.stats.bytes_from_origin.add(e - s);
                }
            }
        }
        if !waited.is_zero() {
            self.stats.origin_wait_ns.add(waited.as_nanos() as u64);
        }
        self.stats.bytes_from_cache.add(from_cache);
        if from_fills > 0 {
            self.stats.bytes_from_fills.add(from_fills);
        }
        outcome?;
        drop(blocks);
        self.readahead(&entry, first, last, false);
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
