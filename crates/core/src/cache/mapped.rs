//! The blocks this process keeps open, and the budget that bounds them.
//!
//! A hit copies out of a mapping that stays open between reads, so it costs
//! no system call. But every mapping is a memory map of the host process
//! (`vm.max_map_count`, 65,530 by default, counts the host's own `malloc`
//! arenas, thread stacks and libraries too) and its resident pages count in
//! the host's RSS. So the cache keeps at most `BLOBCACHE_MAPPED_BLOCKS`
//! blocks open and at most `BLOBCACHE_MAPPED_BYTES` bytes mapped; past
//! either, the least recently used block is closed (CLOCK: a block used
//! since the hand last passed gets a second chance). Reads in flight keep
//! the block they copy from (an `Arc`), so the mappings of a process are at
//! most the budget plus one block per read in flight.
//!
//! A block that cannot be mapped (`ENOMEM`: out of address space or memory
//! maps) is not damaged: it is read with `pread` instead (see
//! [`crate::store::block::FileBlock`]), after this process's own mappings
//! are halved.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::error::Result;
use crate::store::block::{Block, FileBlock, Published};
use crate::sync::{MutexExt, RwLockExt};

/// A block open for copying out: mapped, or read with `pread`.
pub(crate) enum Open {
    Mapped(Block),
    File(FileBlock),
}

impl Open {
    /// Copies bytes `[offset, offset + dst.len())` of the block into `dst`.
    pub(crate) fn copy_to(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        match self {
            Open::Mapped(b) => {
                dst.copy_from_slice(&b.data()[offset..offset + dst.len()]);
                Ok(())
            }
            Open::File(f) => f.read_at(offset as u64, dst),
        }
    }

    /// Bytes of address space this block holds.
    fn mapped_bytes(&self) -> u64 {
        match self {
            Open::Mapped(b) => b.data().len() as u64,
            Open::File(_) => 0,
        }
    }
}

impl From<Published> for Open {
    fn from(p: Published) -> Open {
        match p {
            Published::Mapped(b) => Open::Mapped(b),
            Published::File(f) => Open::File(f),
        }
    }
}

/// One block of one entry: open or not, and what this process knows of it.
#[derive(Default)]
pub(crate) struct Slot {
    open: RwLock<Option<Arc<Open>>>,
    /// Used since the clock hand last passed (a second chance).
    used: AtomicBool,
    /// Published on disk as far as this process knows (set when filled or
    /// opened; a hint: another process may have evicted it since).
    on_disk: AtomicBool,
}

impl Slot {
    /// The open block, if it is open.
    pub(crate) fn get(&self) -> Option<Arc<Open>> {
        let b = self.open.read_locked().clone();
        if b.is_some() && !self.used.load(Relaxed) {
            self.used.store(true, Relaxed);
        }
        b
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.read_locked().is_some()
    }

    pub(crate) fn known_on_disk(&self) -> bool {
        self.on_disk.load(Relaxed) || self.is_open()
    }

    pub(crate) fn set_on_disk(&self, v: bool) {
        self.on_disk.store(v, Relaxed);
    }

    fn take(&self) -> Option<Arc<Open>> {
        self.open.write_locked().take()
    }
}

/// A block counted against the budget.
struct Counted {
    slots: Weak<[Slot]>,
    index: usize,
    bytes: u64,
}

#[derive(Default)]
struct Clock {
    ring: VecDeque<Counted>,
    bytes: u64,
}

/// The budget of open blocks of one cache instance.
pub(crate) struct Budget {
    max_blocks: usize,
    max_bytes: u64,
    clock: Mutex<Clock>,
}

impl Budget {
    pub(crate) fn new(max_blocks: usize, max_bytes: u64) -> Budget {
        Budget {
            max_blocks: max_blocks.max(1),
            max_bytes,
            clock: Mutex::new(Clock::default()),
        }
    }

    /// Puts `block` into slot `index` of `slots` (unless another thread
    /// got there first: then that one is returned) and closes the least
    /// recently used blocks past the budget.
    pub(crate) fn insert(&self, slots: &Arc<[Slot]>, index: usize, block: Open) -> Arc<Open> {
        let slot = &slots[index];
        let bytes = block.mapped_bytes();
        let block = Arc::new(block);
        {
            let mut open = slot.open.write_locked();
            if let Some(existing) = &*open {
                return existing.clone();
            }
            *open = Some(block.clone());
        }
        slot.used.store(true, Relaxed);
        slot.on_disk.store(true, Relaxed);
        let closed = {
            let mut c = self.clock.locked();
            c.ring.push_back(Counted {
                slots: Arc::downgrade(slots),
                index,
                bytes,
            });
            c.bytes += bytes;
            self.sweep(&mut c, self.max_blocks, self.max_bytes)
        };
        // Unmapped here, outside the lock (munmap takes time).
        drop(closed);
        block
    }

    /// Closes blocks until at most `max_blocks` and `max_bytes` are open;
    /// returns them (drop them outside the lock).
    fn sweep(&self, c: &mut Clock, max_blocks: usize, max_bytes: u64) -> Vec<Arc<Open>> {
        let mut closed = Vec::new();
        // Every block gets at most one second chance per sweep.
        let mut chances = c.ring.len();
        while c.ring.len() > max_blocks || c.bytes > max_bytes {
            let Some(victim) = c.ring.pop_front() else {
                break;
            };
            let Some(slots) = victim.slots.upgrade() else {
                // Its entry is gone, and the block with it.
                c.bytes -= victim.bytes;
                continue;
            };
            let slot = &slots[victim.index];
            if chances > 0 && slot.used.swap(false, Relaxed) {
                chances -= 1;
                c.ring.push_back(victim);
                continue;
            }
            c.bytes -= victim.bytes;
            if let Some(b) = slot.take() {
                closed.push(b);
            }
        }
        closed
    }

    /// Closes half of the open blocks (after a mapping failed for lack of
    /// address space).
    pub(crate) fn halve(&self) {
        let closed = {
            let mut c = self.clock.locked();
            let (n, b) = (c.ring.len() / 2, c.bytes / 2);
            self.sweep(&mut c, n, b)
        };
        drop(closed);
    }

    /// Open blocks and mapped bytes counted now.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, u64) {
        let c = self.clock.locked();
        (c.ring.len(), c.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::block::BlockWriter;

    fn block(dir: &std::path::Path, index: u64, len: usize) -> Open {
        let mut w = BlockWriter::create(dir, index, len as u64, 0o600, false).unwrap();
        w.write(&vec![index as u8; len]).unwrap();
        w.publish().unwrap().into()
    }

    #[test]
    fn the_budget_closes_the_least_recently_used_blocks_first() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let slots: Arc<[Slot]> = (0..8).map(|_| Slot::default()).collect();
        let budget = Budget::new(3, u64::MAX);
        for i in 0..3 {
            budget.insert(&slots, i, block(&d, i as u64, 100));
        }
        // Blocks 0 and 2 used again; the hand passes, then block 3 comes.
        for s in slots.iter() {
            s.used.store(false, Relaxed);
        }
        slots[0].get();
        slots[2].get();
        budget.insert(&slots, 3, block(&d, 3, 100));
        let open: Vec<bool> = slots.iter().map(|s| s.is_open()).collect();
        assert_eq!(
            open,
            [true, false, true, true, false, false, false, false],
            "block 1, the one not used since, is closed"
        );
        assert_eq!(budget.usage().0, 3);
        // A closed block is still known to be on disk.
        assert!(slots[1].known_on_disk());
    }

    #[test]
    fn the_byte_budget_bounds_mapped_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let slots: Arc<[Slot]> = (0..10).map(|_| Slot::default()).collect();
        let budget = Budget::new(1000, 250);
        for i in 0..10 {
            budget.insert(&slots, i, block(&d, i as u64, 100));
            let (_, bytes) = budget.usage();
            assert!(bytes <= 250, "{bytes} bytes mapped");
        }
        assert_eq!(slots.iter().filter(|s| s.is_open()).count(), 2);
        budget.halve();
        assert_eq!(slots.iter().filter(|s| s.is_open()).count(), 1);
    }
}
