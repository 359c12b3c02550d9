//! One version of one blob in the store: the one view of a version
//! directory that the read path, eviction and the inventory share, and the
//! fill-once protocol ([`VersionDir::fill_once`]).

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::BlobKey;
use crate::store::block::{self, Block, BlockWriter, FileBlock, OpenError, Published};
use crate::store::layout::{self, Name};
use crate::store::lock::{self, BlockLock};
use crate::store::meta::Meta;

/// A version directory: `blobs/<kk>/<key>/<version>/` under the store.
#[derive(Clone, Debug)]
pub struct VersionDir {
    path: PathBuf,
    file_mode: u32,
    fsync: bool,
}

/// One file of a version directory, as [`VersionDir::files`] lists it.
pub(crate) struct File {
    pub(crate) name: Name,
    entry: std::fs::DirEntry,
}

impl File {
    pub(crate) fn path(&self) -> PathBuf {
        self.entry.path()
    }

    /// Its metadata, not following a link (one `stat`, asked only by
    /// those who need it).
    pub(crate) fn meta(&self) -> Option<Metadata> {
        self.entry.metadata().ok()
    }
}

/// What [`VersionDir::fill_once`] found or made.
pub(crate) enum Filled<T> {
    /// The block was published already (by another thread or process, or
    /// an earlier lifecycle) and is now open.
    Found(T),
    /// This call fetched and published it.
    Written(Published),
}

/// The caller's part of a fill: how to wait, open, make room and fetch.
/// The store keeps the order and the lock (see [`VersionDir::fill_once`]).
pub(crate) trait Fill {
    /// A block opened for reading, as the caller keeps it.
    type Open;
    /// Asked while the block's lock is held elsewhere, with the time waited
    /// so far: `Some` gives up with that error.
    fn give_up(&mut self, dir: &VersionDir, waited: Duration) -> Option<Error>;
    /// The lock was taken.
    fn locked(&mut self) {}
    /// Opens the block if it is published; `Ok(None)` when it is not.
    fn open(&mut self, dir: &VersionDir) -> Result<Option<Self::Open>, OpenError>;
    /// Makes room for a block of `len` bytes before it is written.
    fn reserve(&mut self, len: u64) -> Result<()>;
    /// Writes the block's bytes (from the origin) into `w`.
    fn write(&mut self, w: &mut BlockWriter) -> Result<()>;
}

impl VersionDir {
    pub(crate) fn new(path: PathBuf, file_mode: u32, fsync: bool) -> VersionDir {
        VersionDir {
            path,
            file_mode,
            fsync,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of published block `index`.
    pub fn block_path(&self, index: u64) -> PathBuf {
        self.path.join(layout::block(index))
    }

    /// The claim file of block `index` (the cluster tier's).
    pub(crate) fn claim_path(&self, index: u64) -> PathBuf {
        self.path.join(layout::claim(index))
    }

    /// A new name for a copy of block `index` written aside before it is
    /// renamed into place (the cluster tier's publications).
    pub(crate) fn aside_block_path(&self, index: u64) -> PathBuf {
        self.path.join(layout::aside(&layout::block(index)))
    }

    /// Whether block `index` is published (one `stat`).
    pub fn has_block(&self, index: u64) -> bool {
        self.block_path(index).exists()
    }

    fn lock_path(&self) -> PathBuf {
        self.path.join(layout::LOCK)
    }

    fn meta_path(&self) -> PathBuf {
        self.path.join(layout::META)
    }

    /// The files of the directory, by name, in no order; none when it
    /// cannot be read.
    pub(crate) fn files(&self) -> impl Iterator<Item = File> {
        std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| File {
                name: Name::parse(&entry.file_name().to_string_lossy()),
                entry,
            })
    }

    /// The `meta` file, parsed; `Err` says why it is unusable.
    pub(crate) fn read_meta(&self) -> Result<Meta, String> {
        let bytes = super::read_small(&self.meta_path()).map_err(|e| e.to_string())?;
        Meta::decode(&bytes)
    }

    /// Writes the `meta` file unless it already says `meta`.
    pub(crate) fn write_meta(&self, meta: &Meta) -> Result<()> {
        if self.read_meta().as_ref() != Ok(meta) {
            super::write_atomic(
                &self.path,
                layout::META,
                meta.encode().as_bytes(),
                self.file_mode,
            )?;
        }
        Ok(())
    }

    /// When the version was last used (the mtime of `meta`).
    pub(crate) fn last_use(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.meta_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Maps published block `index` of `len` bytes (see [`block::map_block`]).
    pub(crate) fn map_block(
        &self,
        index: u64,
        len: u64,
        populate: bool,
    ) -> Result<Option<Block>, OpenError> {
        block::map_block(&self.path, index, len, populate)
    }

    /// Opens published block `index` of `len` bytes for reading with `pread`.
    pub(crate) fn file_block(&self, index: u64, len: u64) -> Result<Option<FileBlock>, OpenError> {
        FileBlock::open(&self.path, index, len)
    }

    /// Takes the fill lock of block `index`; see [`lock::lock_block`].
    pub(crate) fn lock_block(
        &self,
        index: u64,
        give_up: &mut dyn FnMut(Duration) -> Option<Error>,
    ) -> Result<BlockLock> {
        lock::lock_block(&self.lock_path(), self.file_mode, index, give_up)
    }

    /// Takes the fill lock of block `index` without waiting.
    pub(crate) fn try_lock_block(&self, index: u64) -> Result<Option<BlockLock>> {
        lock::try_lock_block(&self.lock_path(), self.file_mode, index)
    }

    /// A sign of life of the fills of block `index` in progress, by any
    /// process: the newest modification time and the total size of its
    /// temporary files (0 when there are none). A writer's file changes as
    /// bytes arrive; one that stays the same is stalled.
    pub(crate) fn fill_progress(&self, index: u64) -> u128 {
        use std::os::unix::fs::MetadataExt;
        let mut sig: u128 = 0;
        for f in self.files().filter(|f| f.name == Name::Tmp(Some(index))) {
            if let Some(m) = f.meta() {
                let t = m.mtime() as u128 * 1_000_000_000 + m.mtime_nsec() as u128;
                sig = sig.max(t) + m.size() as u128 + m.blocks() as u128;
            }
        }
        sig
    }

    /// Removes block `index` (hold its lock). Mappings of it stay valid.
    pub(crate) fn remove_block(&self, index: u64) -> bool {
        std::fs::remove_file(self.block_path(index)).is_ok()
    }

    /// Marks the version as used now (the evictor removes the least recently
    /// used first).
    pub(crate) fn touch(&self) {
        crate::sys::touch(&self.meta_path());
    }

    /// Makes block `index` (of `len` bytes, of blob `key`) present, filling
    /// it at most once across threads and processes: takes the block's lock
    /// (waiting for whoever holds it, as `fill` says), looks on disk once
    /// (another filler may have published it meanwhile: then it is opened;
    /// a damaged one is removed), and otherwise makes room, writes the
    /// block from `fill` into a temporary file and publishes it by rename,
    /// all under the lock. The published block is mapped from the
    /// descriptor it was written through, without another lookup.
    pub(crate) fn fill_once<F: Fill>(
        &self,
        key: &BlobKey,
        index: u64,
        len: u64,
        fill: &mut F,
    ) -> Result<Filled<F::Open>> {
        let _lock = self.lock_block(index, &mut |waited| fill.give_up(self, waited))?;
        fill.locked();
        match fill.open(self) {
            Ok(Some(b)) => return Ok(Filled::Found(b)),
            Ok(None) => {}
            Err(OpenError::Damaged(e)) => {
                crate::log::warning!("discarding a damaged cached block of {key}: {e}");
                self.remove_block(index);
            }
            Err(e) => return Err(e.into_error()),
        }
        fill.reserve(len)?;
        let mut w = BlockWriter::create(&self.path, index, len, self.file_mode, self.fsync)?;
        fill.write(&mut w)?;
        Ok(Filled::Written(w.publish()?))
    }

    /// Removes blocks of `blocks` (index and bytes on disk), each under its
    /// lock (a block being filled is skipped) and by unlink only, while
    /// `more(freed so far)` says so; then the directory itself if that left
    /// it without blocks and no fill is writing in it, unless `keep_dir`.
    /// Returns the blocks removed and the bytes freed (the directory's other
    /// files counted when it went).
    pub(crate) fn remove_blocks(
        &self,
        blocks: &[(u64, u64)],
        mut more: impl FnMut(u64) -> bool,
        keep_dir: bool,
    ) -> Removed {
        let mut r = Removed::default();
        for &(index, bytes) in blocks {
            if !more(r.bytes) {
                break;
            }
            let Ok(Some(_l)) = self.try_lock_block(index) else {
                continue;
            };
            if self.remove_block(index) {
                r.bytes += bytes;
                r.blocks += 1;
            }
        }
        if !keep_dir && !self.files().any(|f| f.name.holds_a_block()) {
            r.dir_removed = super::remove_tree(&self.path).is_ok();
        }
        r
    }
}

/// What [`VersionDir::remove_blocks`] removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub(crate) blocks: u64,
    pub(crate) bytes: u64,
    pub(crate) dir_removed: bool,
}
