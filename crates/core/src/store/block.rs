//! One cached block: a file `b.<index>` holding the block's bytes followed by
//! a 64-byte trailer (magic, length, index, a checksum of the bytes, and a
//! check over the trailer itself). The magic says which checksum (see
//! [`checksum`]): XXH3-128 for the blocks written now, SHA-256 for blocks
//! written before issue 14, which are still read and checked.
//!
//! A block is written to a private temporary file and published by rename, so
//! a reader sees either no block or the whole block; a crash mid-write leaves
//! only a temporary file, which nobody reads. Published blocks are never
//! modified or truncated (a mapped file that shrinks would SIGBUS the host);
//! they are removed by unlink, which leaves existing mappings intact.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions, MmapRaw};
use sha2::{Digest, Sha256};

use super::checksum::{self, Hasher, Kind};
use crate::error::{io_error, Error, ErrorKind, Result};

pub(crate) const TRAILER_LEN: usize = 64;
/// The magic of a trailer recording an XXH3-128: what blocks are written
/// with.
const MAGIC_XXH3: &[u8; 8] = b"BCBLK\0\0\x02";
/// The magic of a trailer recording a SHA-256 (blocks written before
/// issue 14).
const MAGIC_SHA256: &[u8; 8] = b"BCBLK\0\0\x01";
/// The checksum blocks are written with.
const WRITTEN_WITH: Kind = Kind::Xxh3;

/// A published block, mapped read-only for the life of this value.
pub struct Block {
    map: Mmap,
    len: usize,
    kind: Kind,
}

impl Block {
    /// The block's bytes.
    pub fn data(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// The checksum recorded when the block was filled (its kind's bytes as
    /// the trailer holds them).
    fn recorded(&self) -> [u8; 32] {
        let t = &self.map[self.len..];
        t[24..56]
            .try_into()
            .expect("trailer holds 32 checksum bytes")
    }

    /// The name of the checksum the block's trailer records.
    pub fn checksum_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Recomputes the bytes' checksum and compares it with the recorded one.
    pub fn verify(&self) -> bool {
        checksum::matches(
            self.kind,
            &checksum::of(self.kind, self.data()),
            &self.recorded(),
        )
    }
}

fn trailer(len: u64, index: u64, kind: Kind, sum: &[u8; 32]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(match kind {
        Kind::Xxh3 => MAGIC_XXH3,
        Kind::Sha256 => MAGIC_SHA256,
    });
    t[8..16].copy_from_slice(&len.to_le_bytes());
    t[16..24].copy_from_slice(&index.to_le_bytes());
    t[24..56].copy_from_slice(sum);
    let check = Sha256::digest(&t[..56]);
    t[56..64].copy_from_slice(&check[..8]);
    t
}

/// Checks a trailer; returns the kind of checksum it records, or a reason
/// when it is not the trailer of block `index` with `len` bytes.
pub fn check_trailer(t: &[u8], len: u64, index: u64) -> std::result::Result<Kind, String> {
    if t.len() != TRAILER_LEN {
        return Err(format!(
            "trailer is {} bytes, expected {TRAILER_LEN}",
            t.len()
        ));
    }
    let magic: &[u8; 8] = t[0..8].try_into().expect("8 bytes");
    let kind = match magic {
        MAGIC_XXH3 => Kind::Xxh3,
        MAGIC_SHA256 => Kind::Sha256,
        _ => return Err("bad magic".into()),
    };
    let check = Sha256::digest(&t[..56]);
    if t[56..64] != check[..8] {
        return Err("trailer check mismatch".into());
    }
    let got_len = u64::from_le_bytes(t[8..16].try_into().unwrap());
    let got_index = u64::from_le_bytes(t[16..24].try_into().unwrap());
    if got_len != len || got_index != index {
        return Err(format!(
            "trailer says block {got_index} of {got_len} bytes, expected block {index} of {len} bytes"
        ));
    }
    Ok(kind)
}

pub fn block_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(super::layout::block(index))
}

/// Why a published block could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The file is not a valid block (wrong size, bad trailer, torn by a
    /// power cut): remove it and fill it again.
    Damaged(Error),
    /// The block is fine but could not be mapped (`ENOMEM`: the process is
    /// out of address space or memory maps): read it another way, never
    /// remove it.
    CannotMap(Error),
    /// Anything else (permissions, I/O errors).
    Io(Error),
}

impl OpenError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            OpenError::Damaged(e) | OpenError::CannotMap(e) | OpenError::Io(e) => e,
        }
    }
}

/// Opens and maps published block `index` of `len` bytes in `dir`. Returns
/// `Ok(None)` when it is not there, and an error of kind `Store` when a file
/// is there but is not a valid block or cannot be mapped.
pub fn open_block(dir: &Path, index: u64, len: u64) -> Result<Option<Block>> {
    map_block(dir, index, len, false).map_err(OpenError::into_error)
}

/// [`open_block`], telling a damaged block from one that could not be
/// mapped, and optionally mapping every page up front (one system call
/// instead of a page fault per 64 KiB when the whole block is read next,
/// as after a fill).
pub(crate) fn map_block(
    dir: &Path,
    index: u64,
    len: u64,
    populate: bool,
) -> std::result::Result<Option<Block>, OpenError> {
    let Some((file, meta, path)) = open_checked(dir, index, len)? else {
        return Ok(None);
    };
    let map = map_file(&file, &path, len, populate)?;
    let kind = check_trailer(&map[len as usize..], len, index).map_err(|why| {
        OpenError::Damaged(Error::store(format!(
            "cached block {} is damaged: {why}",
            path.display()
        )))
    })?;
    let block = Block {
        map,
        len: len as usize,
        kind,
    };
    if written_before_boot(&meta) {
        if !block.verify() {
            return Err(torn(&path, kind));
        }
        mark_checked(&file);
    }
    Ok(Some(block))
}

/// Maps the `len` bytes and the trailer of published block file `file`
/// (at `path`, for messages), read-only.
#[allow(unsafe_code)]
fn map_file(file: &File, path: &Path, len: u64, populate: bool) -> Result<Mmap, OpenError> {
    let mut options = MmapOptions::new();
    options.len((len + TRAILER_LEN as u64) as usize);
    if populate {
        options.populate();
    }
    // SAFETY: published block files are never written, truncated or
    // extended after the rename that publishes them (they are only unlinked,
    // which keeps this mapping valid), and their size is `len` plus the
    // trailer (checked by `open_checked`, or written so by `publish`), so
    // every byte of the mapping stays backed by the file.
    unsafe { options.map(file) }
        .map_err(|e| OpenError::CannotMap(io_error("cannot map cached block", path, &e)))
}

fn torn(path: &Path, kind: Kind) -> OpenError {
    OpenError::Damaged(Error::store(format!(
        "cached block {} is damaged: its bytes do not match the {} recorded when it was filled (torn by a power cut?)",
        path.display(),
        kind.name()
    )))
}

/// Marks a block checked in this boot: later opens may trust it.
/// (futimens needs only ownership or write access, not a writable
/// descriptor.)
fn mark_checked(file: &File) {
    crate::sys::touch_file(file);
}

/// Opens published block `index` and checks its size; `None` when absent.
fn open_checked(
    dir: &Path,
    index: u64,
    len: u64,
) -> std::result::Result<Option<(File, std::fs::Metadata, PathBuf)>, OpenError> {
    let path = block_path(dir, index);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A symbolic link where a block belongs was planted: not a block
        // (it is removed, never followed).
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::Damaged(io_error(
                "a symbolic link is not a cached block:",
                &path,
                &e,
            )))
        }
        Err(e) => {
            return Err(OpenError::Io(io_error(
                "cannot open cached block",
                &path,
                &e,
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Io(io_error("cannot stat cached block", &path, &e)))?;
    let total = len + TRAILER_LEN as u64;
    if !meta.is_file() || meta.len() != total {
        return Err(OpenError::Damaged(Error::store(format!(
            "cached block {} has {} bytes, expected {total}",
            path.display(),
            meta.len()
        ))));
    }
    Ok(Some((file, meta, path)))
}

/// Opens published block `index` of `len` bytes to copy it elsewhere (the
/// cluster tier's blocks, into the local cache): the file, and the
/// checksum its trailer records, which the copy's own must match. Only
/// blocks checksummed as blocks are written now (XXH3-128) are taken; any
/// other is reported damaged.
pub(crate) fn open_for_copy(
    dir: &Path,
    index: u64,
    len: u64,
) -> std::result::Result<Option<(File, [u8; 32])>, OpenError> {
    use std::os::unix::fs::FileExt;
    let Some((file, _, path)) = open_checked(dir, index, len)? else {
        return Ok(None);
    };
    let mut t = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut t, len)
        .map_err(|e| OpenError::Io(io_error("cannot read block", &path, &e)))?;
    let damaged = |why: String| {
        OpenError::Damaged(Error::store(format!(
            "block {} is damaged: {why}",
            path.display()
        )))
    };
    match check_trailer(&t, len, index).map_err(damaged)? {
        k if k == WRITTEN_WITH => {}
        k => return Err(damaged(format!("it records a {} checksum", k.name()))),
    }
    if t[40..56] != owner_tag(dir) {
        return Err(damaged(
            "it belongs to another blob or version (its owner tag differs)".into(),
        ));
    }
    Ok(Some((
        file,
        t[24..56].try_into().expect("32 checksum bytes"),
    )))
}

/// The tag a block's trailer carries (after its XXH3-128) naming the blob
/// version it belongs to: a hash of the names of its key and version
/// directories, which are the same in every store. A block copied into the
/// version directory of another blob or version does not carry its tag:
/// the cluster tier, whose files other nodes write, takes no block without
/// it. (Local blocks are not checked for it: blocks written before it
/// carry zeros.)
pub(crate) fn owner_tag(dir: &Path) -> [u8; 16] {
    let name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut h = Sha256::new();
    h.update(b"blobcache block of ");
    h.update(name(dir.parent()).as_bytes());
    h.update(b"/");
    h.update(name(Some(dir)).as_bytes());
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// A published block read with `pread` instead of a mapping: what a reader
/// gets when the block cannot be mapped (the process is out of address
/// space or memory maps). Holds no descriptor: each read opens the file.
pub(crate) struct FileBlock {
    path: PathBuf,
    dir: PathBuf,
    index: u64,
    len: u64,
}

impl FileBlock {
    /// Opens published block `index` of `len` bytes for reading with
    /// `pread`, checking it as [`map_block`] does.
    pub(crate) fn open(
        dir: &Path,
        index: u64,
        len: u64,
    ) -> std::result::Result<Option<FileBlock>, OpenError> {
        use std::os::unix::fs::FileExt;
        let Some((file, meta, path)) = open_checked(dir, index, len)? else {
            return Ok(None);
        };
        let mut t = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut t, len)
            .map_err(|e| OpenError::Io(io_error("cannot read cached block", &path, &e)))?;
        let kind = check_trailer(&t, len, index).map_err(|why| {
            OpenError::Damaged(Error::store(format!(
                "cached block {} is damaged: {why}",
                path.display()
            )))
        })?;
        if written_before_boot(&meta) {
            let mut h = Hasher::new(kind);
            let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
            let mut pos = 0u64;
            while pos < len {
                let n = buf.len().min((len - pos) as usize);
                file.read_exact_at(&mut buf[..n], pos)
                    .map_err(|e| OpenError::Io(io_error("cannot read cached block", &path, &e)))?;
                h.update(&buf[..n]);
                pos += n as u64;
            }
            let recorded = t[24..56].try_into().expect("32 checksum bytes");
            if !checksum::matches(kind, &h.finish(), &recorded) {
                return Err(torn(&path, kind));
            }
            mark_checked(&file);
        }
        Ok(Some(FileBlock {
            path,
            dir: dir.to_path_buf(),
            index,
            len,
        }))
    }

    /// Copies bytes `[offset, offset + dst.len())` of the block into `dst`.
    pub(crate) fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + dst.len() as u64 > self.len {
            return Err(Error::internal("read past the end of a cached block"));
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| {
                Error::store(format!(
                    "block {} of {} was removed (evicted by another process?) as it was read: {e}; retry the read",
                    self.index,
                    self.dir.display()
                ))
            })?;
        let total = self.len + TRAILER_LEN as u64;
        match file.metadata() {
            Ok(m) if m.len() == total => {}
            _ => {
                return Err(Error::store(format!(
                    "cached block {} changed as it was read; retry the read",
                    self.path.display()
                )))
            }
        }
        file.read_exact_at(dst, offset)
            .map_err(|e| io_error("cannot read cached block", &self.path, &e))
    }
}

/// Slack for clocks set late in boot: blocks written in the first minutes
/// after boot are checked once more, which costs one hash and is harmless.
const BOOT_SLACK_SECS: i64 = 300;

/// Whether a published block was last written before the machine booted.
///
/// A block is written to a temporary file and published by rename; without
/// `BLOBCACHE_FSYNC=1` its pages reach the disk when the kernel writes them
/// back, in no particular order. A power cut can therefore leave a published
/// block whose trailer is on disk but some of whose bytes are not (zeros or
/// old contents). Such a block can only exist if it was written before the
/// current boot: those are checked against their SHA-256 on first open
/// (and then marked, by setting their mtime to now, as checked). Blocks
/// written since boot are read through the page cache that holds exactly
/// what was written. When the boot time is unknown every block is checked.
fn written_before_boot(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    match boot_time() {
        Some(boot) => meta.mtime() < boot + BOOT_SLACK_SECS,
        None => true,
    }
}

/// The boot time in seconds since the epoch (`btime` of /proc/stat).
fn boot_time() -> Option<i64> {
    static BOOT: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

/// Writes a block into a temporary file; [`BlockWriter::publish`] makes it
/// visible. Dropped unpublished, it removes its temporary file.
pub(crate) struct BlockWriter {
    file: Option<File>,
    tmp: PathBuf,
    dir: PathBuf,
    index: u64,
    len: u64,
    written: u64,
    hasher: Hasher,
    fsync: bool,
    growing: Option<Arc<Growing>>,
    /// The checksum the bytes must have (copied from a less trusted copy):
    /// otherwise the block is not published.
    expected: Option<[u8; 32]>,
}

/// A block being written, mapped for its readers: the bytes written so far
/// can be copied out while the rest is still coming in.
pub(crate) struct Growing {
    map: MmapRaw,
    len: u64,
    /// Bytes written, all of them through `write` calls that returned.
    written: AtomicU64,
}

impl Growing {
    /// The block's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Copies bytes `[at, at + dst.len())` into `dst`; fails unless all of
    /// them are written.
    #[allow(unsafe_code)]
    pub(crate) fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<()> {
        let end = at.checked_add(dst.len() as u64);
        if !end.is_some_and(|e| e <= self.written()) {
            return Err(Error::internal(
                "read past the bytes written of a block being filled",
            ));
        }
        // SAFETY: `[at, at + dst.len())` lies inside the mapping (it is
        // within `written` <= `len`, the mapping's length) and every byte
        // of it was written by a `write` that returned before `written`
        // was stored (Release, read above with Acquire): the file's bytes
        // there no longer change (a block file is written once, front to
        // back, and never truncated: it is removed by unlink only, which
        // keeps the mapping valid). Within the file's size, so backed. Only
        // that range is read, through a raw pointer: no reference covers
        // the bytes still being written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(at as usize),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        Ok(())
    }
}

impl BlockWriter {
    pub(crate) fn create(
        dir: &Path,
        index: u64,
        len: u64,
        mode: u32,
        fsync: bool,
    ) -> Result<BlockWriter> {
        let tmp = dir.join(super::layout::tmp(index));
        // Readable too: `publish` maps the block through this descriptor.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io_error("cannot create block file", &tmp, &e))?;
        crate::store::set_file_mode(&file, mode);
        // Reserve the whole file up front: a full disk shows before any
        // byte is fetched, and writing into allocated space costs the
        // filesystem less than allocating page by page (ext4: about a
        // quarter less system time). Filesystems without fallocate just
        // allocate as the bytes arrive.
        if let Err(e) = crate::sys::allocate(&file, len + TRAILER_LEN as u64) {
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_error("cannot reserve space for block file", &tmp, &e));
            }
        }
        Ok(BlockWriter {
            file: Some(file),
            tmp,
            dir: dir.to_path_buf(),
            index,
            len,
            written: 0,
            hasher: Hasher::new(WRITTEN_WITH),
            fsync,
            growing: None,
            expected: None,
        })
    }

    /// The block as it is being written, for readers of the bytes written
    /// so far (mapped on the first call; `None` when it cannot be mapped).
    /// It stays readable after the file is published or removed.
    pub(crate) fn growing(&mut self) -> Option<Arc<Growing>> {
        if self.growing.is_none() {
            let file = self.file.as_ref().expect("file present until publish");
            let map = MmapOptions::new()
                .len(self.len as usize)
                .map_raw_read_only(file)
                .ok()?;
            self.growing = Some(Arc::new(Growing {
                map,
                len: self.len,
                written: AtomicU64::new(self.written),
            }));
        }
        self.growing.clone()
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.written + data.len() as u64 > self.len {
            return Err(Error::internal(
                "block writer got more bytes than the block holds",
            ));
        }
        self.hasher.update(data);
        self.file
            .as_mut()
            .expect("file present until publish")
            .write_all(data)
            .map_err(|e| io_error("cannot write block file", &self.tmp, &e))?;
        self.written += data.len() as u64;
        if let Some(g) = &self.growing {
            g.written.store(self.written, Ordering::Release);
        }
        Ok(())
    }

    /// Appends the trailer, optionally fsyncs, renames into place, and maps
    /// the published block through the descriptor it was written with (no
    /// second lookup of the file).
    /// Makes [`BlockWriter::publish`] refuse the block unless its bytes
    /// have checksum `sum` (as recorded by `open_for_copy`).
    pub(crate) fn expect(&mut self, sum: [u8; 32]) {
        self.expected = Some(sum);
    }

    pub(crate) fn publish(mut self) -> Result<Published> {
        if self.written != self.len {
            return Err(Error::internal(format!(
                "block {} got {} bytes, expected {}",
                self.index, self.written, self.len
            )));
        }
        let mut sum = std::mem::replace(&mut self.hasher, Hasher::new(WRITTEN_WITH)).finish();
        if self
            .expected
            .is_some_and(|e| !checksum::matches(WRITTEN_WITH, &sum, &e))
        {
            return Err(Error::new(
                ErrorKind::Store,
                format!(
                    "block {} does not match the checksum recorded with the copy it came from",
                    self.index
                ),
            ));
        }
        // An XXH3-128 leaves the field's second half for the owner tag.
        if WRITTEN_WITH == Kind::Xxh3 {
            sum[16..].copy_from_slice(&owner_tag(&self.dir));
        }
        let mut file = self.file.take().expect("file present until publish");
        file.write_all(&trailer(self.len, self.index, WRITTEN_WITH, &sum))
            .map_err(|e| io_error("cannot write block file", &self.tmp, &e))?;
        if self.fsync {
            file.sync_data()
                .map_err(|e| io_error("cannot fsync block file", &self.tmp, &e))?;
        }
        let dest = block_path(&self.dir, self.index);
        std::fs::rename(&self.tmp, &dest)
            .map_err(|e| io_error("cannot publish block file", &dest, &e))?;
        self.tmp = PathBuf::new(); // published: nothing to remove on drop
        match map_file(&file, &dest, self.len, true) {
            Ok(map) => Ok(Published::Mapped(Block {
                map,
                len: self.len as usize,
                kind: WRITTEN_WITH,
            })),
            Err(OpenError::CannotMap(_)) => {
                drop(file);
                match FileBlock::open(&self.dir, self.index, self.len)
                    .map_err(OpenError::into_error)?
                {
                    Some(b) => Ok(Published::File(b)),
                    None => Err(vanished(&dest)),
                }
            }
            Err(e) => Err(e.into_error()),
        }
    }
}

fn vanished(dest: &Path) -> Error {
    Error::new(
        ErrorKind::Store,
        format!(
            "block {} vanished right after it was published (evicted?)",
            dest.display()
        ),
    )
}

/// A block just published: mapped, or (when it cannot be mapped) read with
/// `pread`.
pub(crate) enum Published {
    Mapped(Block),
    File(FileBlock),
}

impl Published {
    /// The mapped block (tests).
    #[cfg(test)]
    pub(crate) fn mapped(self) -> Option<Block> {
        match self {
            Published::Mapped(b) => Some(b),
            Published::File(_) => None,
        }
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(p: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    #[test]
    fn a_block_from_before_the_boot_is_checked_once_and_then_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let mut w = BlockWriter::create(&d, 0, 6, 0o600, false).unwrap();
        w.write(b"intact").unwrap();
        w.publish().unwrap();
        let p = block_path(&d, 0);
        set_mtime(&p, 1_000_000_000);
        assert_eq!(open_block(&d, 0, 6).unwrap().unwrap().data(), b"intact");
        // Checked: its mtime is now this boot's.
        assert!(!written_before_boot(&std::fs::metadata(&p).unwrap()));
    }

    #[test]
    fn published_block_reads_back_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let mut w = BlockWriter::create(&d, 7, 10, 0o600, true).unwrap();
        w.write(b"hello").unwrap();
        w.write(b"world").unwrap();
        let b = w.publish().unwrap().mapped().unwrap();
        assert_eq!(b.data(), b"helloworld");
        assert!(b.verify());
        let again = open_block(&d, 7, 10).unwrap().unwrap();
        assert_eq!(again.data(), b"helloworld");
        assert!(open_block(&d, 8, 10).unwrap().is_none());
        // No temporary files remain.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![block_path(&d, 7).file_name().unwrap().to_owned()]
        );
    }

    /// A block as a version before issue 14 wrote it: SHA-256 trailer.
    fn write_sha256_block(dir: &Path, index: u64, data: &[u8]) -> PathBuf {
        let p = block_path(dir, index);
        let sum = checksum::of(Kind::Sha256, data);
        let mut bytes = data.to_vec();
        bytes.extend_from_slice(&trailer(data.len() as u64, index, Kind::Sha256, &sum));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn blocks_written_with_sha256_before_are_still_read_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let p = write_sha256_block(&d, 3, b"older format");
        let b = open_block(&d, 3, 12).unwrap().unwrap();
        assert_eq!(b.data(), b"older format");
        assert_eq!(b.checksum_name(), "SHA-256");
        assert!(b.verify());
        drop(b);
        // Damaged and from before the boot: its SHA-256 catches it, through
        // a mapping and through pread alike.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[5] ^= 0x40;
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        assert!(!open_block(&d, 3, 12).unwrap().unwrap().verify());
        set_mtime(&p, 1_000_000_000);
        let e = open_block(&d, 3, 12)
            .err()
            .expect("a torn block is refused");
        assert!(e.message().contains("do not match the SHA-256"), "{e}");
        assert!(matches!(
            FileBlock::open(&d, 3, 12),
            Err(OpenError::Damaged(_))
        ));
        // New blocks are written with XXH3-128, whose trailer says so.
        let mut w = BlockWriter::create(&d, 4, 3, 0o600, false).unwrap();
        w.write(b"new").unwrap();
        let b = w.publish().unwrap().mapped().unwrap();
        assert_eq!(b.checksum_name(), "XXH3-128");
        let raw = std::fs::read(block_path(&d, 4)).unwrap();
        assert_eq!(check_trailer(&raw[3..], 3, 4), Ok(Kind::Xxh3));
        assert_eq!(&raw[3..11], MAGIC_XXH3);
    }

    #[test]
    fn unpublished_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let mut w = BlockWriter::create(&d, 0, 10, 0o600, false).unwrap();
        w.write(b"part").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }

    #[test]
    fn damaged_blocks_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let mut w = BlockWriter::create(&d, 1, 4, 0o600, false).unwrap();
        w.write(b"abcd").unwrap();
        w.publish().unwrap();
        let p = block_path(&d, 1);
        // Wrong expected length → size mismatch.
        assert!(open_block(&d, 1, 5).is_err());
        // Wrong index in the trailer.
        std::fs::copy(&p, block_path(&d, 2)).unwrap();
        assert!(open_block(&d, 2, 4).is_err());
        // Flipped data byte: trailer still valid, verify() catches it.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[0] ^= 1;
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        assert!(!open_block(&d, 1, 4).unwrap().unwrap().verify());
        // The same block as a power cut would leave it, written before the
        // boot: open_block checks its hash and refuses it.
        set_mtime(&p, 1_000_000_000);
        let e = open_block(&d, 1, 4).err().expect("a torn block is refused");
        assert!(e.message().contains("do not match the XXH3-128"), "{e}");
        // Flipped trailer byte → check mismatch.
        bytes[0] ^= 1;
        bytes[4 + 9] ^= 1;
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        assert!(open_block(&d, 1, 4).is_err());
    }
}
