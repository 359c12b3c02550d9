//! Capacity: the cap on the store's size, this process's view of its usage,
//! eviction, and the janitor thread that rescans, evicts and flushes the
//! counters.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, JANITOR_PERIOD};
use crate::config::MaxSize;
use crate::error::{Error, Result};
use crate::log;
use crate::store::{evict, Store, VersionDir};
use crate::sync::{CondvarExt, MutexExt, RwLockExt};
/// The cap on the store's size that `max_size` sets (0 without a store:
/// nothing can be kept).
pub(super) fn cap(store: Option<&Store>, max_size: MaxSize) -> u64 {
    match (store, max_size) {
        (_, MaxSize::Bytes(b)) => b,
        (Some(s), _) => crate::store::cap(max_size, s.root()).unwrap_or(u64::MAX),
        (None, _) => 0,
    }
}

impl Inner {
    /// Makes sure `len` more bytes fit under the cap, evicting if needed.
    pub(super) fn make_room(&self, len: u64, dir: &VersionDir) -> Result<()> {
        if len > self.cap {
            return Err(Error::store(format!(
                "BLOBCACHE_MAX_SIZE ({} bytes) is smaller than one block ({len} bytes)",
                self.cap
            )));
        }
        let fits = |usage: u64| usage + len <= self.cap;
        let recent = self.added_since_scan.load(Ordering::Relaxed) + len <= self.cap / 10;
        if fits(self.usage.load(Ordering::Relaxed)) && recent {
            return Ok(());
        }
        if let Some(store) = self.store.as_ref().filter(|_| !recent) {
            // Added a tenth of the cap since the last look: look again
            // (other processes fill the same store).
            self.note_scan(evict::scan(store.root(), store.file_mode()).bytes);
            if fits(self.usage.load(Ordering::Relaxed)) {
                return Ok(());
            }
        }
        let report = self.evict(Some(dir.path()), Duration::ZERO);
        if report.after + len > self.cap {
            return Err(Error::store(format!(
                "the cache is full ({} of {} bytes in use) and nothing more can be evicted",
                report.after, self.cap
            )));
        }
        Ok(())
    }

    /// One eviction pass down to nine tenths of the cap, if the store-wide
    /// eviction lock is free within `patience`; otherwise only counts what
    /// is there.
    pub(super) fn evict(&self, skip: Option<&Path>, patience: Duration) -> evict::EvictReport {
        let Some(store) = &self.store else {
            return Default::default();
        };
        let target = self.cap / 10 * 9;
        let stopped = || self.stopped.load(Ordering::Relaxed);
        let guard = evict::evict_lock_within(store.root(), store.file_mode(), patience, &stopped);
        let report = match guard {
            Some(_guard) => evict::evict_to(store.root(), store.file_mode(), target, skip),
            None => {
                // Someone else is evicting; count what is there now.
                let u = evict::scan(store.root(), store.file_mode()).bytes;
                evict::EvictReport {
                    before: u,
                    after: u,
                    blocks_removed: 0,
                }
            }
        };
        self.note_scan(report.after);
        if report.blocks_removed > 0 {
            self.stats.blocks_evicted.add(report.blocks_removed);
            log::debug!(
                "evicted {} blocks: {} -> {} bytes (cap {})",
                report.blocks_removed,
                report.before,
                report.after,
                self.cap
            );
            self.forget_removed_blocks();
        }
        report
    }

    /// Records the store's size as a scan just found it.
    fn note_scan(&self, usage: u64) {
        self.usage.store(usage, Ordering::Relaxed);
        self.added_since_scan.store(0, Ordering::Relaxed);
    }

    /// Drops entries that hold mappings of blocks no longer on disk, so
    /// their space returns once readers finish with them.
    fn forget_removed_blocks(&self) {
        for shard in self.entries.iter() {
            shard.write_locked().retain(|_, e| {
                let Some(dir) = &e.dir else { return true };
                e.slots
                    .iter()
                    .enumerate()
                    .all(|(i, slot)| !slot.is_open() || dir.has_block(i as u64))
            });
        }
    }

    /// Adds this cache's counts since the last flush to the store's
    /// counters file (the janitor's period, and at shutdown).
    pub(super) fn flush_stats(&self) {
        if let Some(store) = &self.store {
            self.persisted
                .flush(store.root(), store.file_mode(), self.stats.snapshot());
        }
    }

    pub(super) fn wake_janitor(&self) {
        let (m, cv) = &self.janitor_wake;
        *m.locked() = true;
        cv.notify_one();
    }

    pub(super) fn janitor(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        loop {
            {
                let (m, cv) = &self.janitor_wake;
                let mut woken = m.locked();
                if !*woken {
                    woken = cv.wait_on_for(woken, JANITOR_PERIOD);
                }
                *woken = false;
            }
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            self.flush_stats();
            let usage = evict::scan(store.root(), store.file_mode()).bytes;
            self.note_scan(usage);
            if usage > self.cap {
                self.evict(None, Duration::ZERO);
            }
        }
    }
}
