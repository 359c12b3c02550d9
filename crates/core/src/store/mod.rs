//! The cache on local disk.
//!
//! Layout under the cache directory (`BLOBCACHE_DIR`):
//!
//! ```text
//! v1/
//!   settings                          the store's block size (see `Store::open`)
//!   evict.lock                        one evictor at a time, across processes
//!   stats, stats.lock                 counters of every process (see counters.rs)
//!   blobs/<kk>/<key sha256>/          one directory per blob (kk = first 2 hex)
//!     <version hash>/                 one per origin version and block size
//!       meta                          which blob and version (see meta.rs)
//!       lock                          byte i locks block i (see lock.rs)
//!       b.<i>                         published block i (see block.rs)
//!       tmp.<i>.<pid>.<n>             block i being written
//!       .b.<i>.<pid>.<n>              a copy of block i being published
//!                                     (cluster tier only, see cluster/)
//!       claim.<i>                     a node fills block i (cluster tier only)
//! ```
//!
//! The names of a version directory's files are spelled in `layout.rs`
//! only. [`VersionDir`] (`version.rs`) is the one view of a version
//! directory: the read path, eviction (`evict.rs`) and the inventory
//! (`inventory.rs`) all go through it, and it owns the fill-once protocol
//! (`VersionDir::fill_once`: lock, look, write, publish) and the one
//! lock-and-unlink loop. [`probe`] is a read-only look at the format for
//! tests and fuzzing.
//!
//! Names never appear in paths (only their hash), so no name can reach
//! outside the directory. Directories are created 0700 and files 0600 (0770
//! and 0660 with `BLOBCACHE_SHARED=1`); nothing here follows a symlink it did
//! not expect.

pub(crate) mod block;
pub(crate) mod checksum;
mod checksummed;
pub mod counters;
pub mod evict;
pub mod inventory;
mod layout;
pub(crate) mod lock;
mod meta;
pub mod probe;
mod version;

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io_error, Error, Result};
use crate::names::{hex, BlobKey};
use crate::origin::ObjectInfo;

pub(crate) use block::BlockWriter;
pub use meta::Meta;
pub use version::VersionDir;
pub(crate) use version::{Fill, Filled};

pub use layout::LAYOUT;

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    block_size: u64,
    /// The block size asked for when the store records another one.
    asked_block_size: Option<u64>,
    dir_mode: u32,
    file_mode: u32,
    fsync: bool,
}

/// The size of the filesystem holding `path` and the bytes available on it
/// (`statvfs`), or `None` when it cannot be asked.
pub fn filesystem_size(path: &Path) -> Option<(u64, u64)> {
    crate::sys::filesystem_size(path)
}

/// The cap on a store at `path` that `max_size` sets: the size itself, or
/// the share of the filesystem holding `path`; `None` when that filesystem
/// cannot be asked. The cache and the command both compute it here.
pub fn cap(max_size: crate::config::MaxSize, path: &Path) -> Option<u64> {
    match max_size {
        crate::config::MaxSize::Bytes(b) => Some(b),
        crate::config::MaxSize::PercentOfFilesystem(p) => {
            filesystem_size(path).map(|(total, _)| total / 100 * p as u64)
        }
    }
}

/// Creates `path` and any missing parents with `mode`; refuses a symlink in
/// place of the final directory.
pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::store(format!(
                "{} is a symbolic link; the cache does not follow links it did not create",
                path.display()
            )))
        }
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::store(format!(
                "{} exists and is not a directory",
                path.display()
            )))
        }
        Err(_) => {}
    }
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| io_error("cannot create cache directory", path, &e))?;
    set_dir_mode(path, mode);
    Ok(())
}

/// Gives a directory we created exactly `mode`: the umask (typically 022)
/// would otherwise take the group's write bit from a shared cache.
fn set_dir_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Gives a file we opened exactly `mode`, whatever the umask (best effort:
/// a lock file created by another user of a shared cache stays as it is).
pub(crate) fn set_file_mode(file: &std::fs::File, mode: u32) {
    crate::sys::set_mode(file, mode);
}

/// Creates the directories from `root` (which must exist) down to `path`,
/// one level at a time, refusing a symlink at any level: a link planted
/// inside the cache must not lead it to read or write elsewhere.
pub(crate) fn create_dirs_below(root: &Path, path: &Path, mode: u32) -> Result<()> {
    let rel = path.strip_prefix(root).map_err(|_| {
        Error::internal(format!(
            "{} is not below {}",
            path.display(),
            root.display()
        ))
    })?;
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match DirBuilder::new().mode(mode).create(&p) {
            Ok(()) => set_dir_mode(&p, mode),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("cannot create cache directory", &p, &e)),
        }
        // Whether just created or already there, it must be a directory.
        create_dir(&p, mode)?;
    }
    Ok(())
}

const SETTINGS_HEADER: &str = "blobcache store settings 1";

impl Store {
    /// Opens (creating if needed) the store under `dir`.
    ///
    /// The store records its block size in `v1/settings` when first used,
    /// and every process follows the record: blocks of two sizes cannot
    /// share a version directory, so processes with different
    /// `BLOBCACHE_BLOCK_SIZE` settings would otherwise remove each other's
    /// copies on every load. A process asking for another size gets the
    /// recorded one ([`Store::asked_block_size`] tells, for a warning).
    pub fn open(dir: &Path, block_size: u64, shared: bool, fsync: bool) -> Result<Store> {
        let (dir_mode, file_mode) = if shared {
            (0o770, 0o660)
        } else {
            (0o700, 0o600)
        };
        let root = dir.join(LAYOUT);
        create_dir(dir, dir_mode)?;
        create_dir(&root, dir_mode)?;
        create_dir(&root.join(layout::BLOBS), dir_mode)?;
        let recorded = recorded_block_size(&root, block_size, file_mode);
        Ok(Store {
            root,
            block_size: recorded,
            asked_block_size: (recorded != block_size).then_some(block_size),
            dir_mode,
            file_mode,
            fsync,
        })
    }

    /// The block size this process asked for, when the store follows
    /// another one it recorded earlier.
    pub fn asked_block_size(&self) -> Option<u64> {
        self.asked_block_size
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    pub fn file_mode(&self) -> u32 {
        self.file_mode
    }

    /// Whether blocks are fsynced before they are published.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    pub fn key_dir(&self, key: &BlobKey) -> PathBuf {
        let h = key.digest_hex();
        self.root.join(layout::BLOBS).join(&h[..2]).join(h)
    }

    fn version_name(info: &ObjectInfo, block_size: u64) -> String {
        let mut h = Sha256::new();
        h.update(info.size.to_le_bytes());
        h.update(block_size.to_le_bytes());
        h.update(info.version.as_bytes());
        hex(&h.finalize()[..16])
    }

    /// Opens the directory of `key` at version `info`, creating it and its
    /// `meta` file if needed. When `current` is true (the origin has just
    /// confirmed `info` is the blob's current version), directories of other
    /// versions of the blob are removed.
    pub(crate) fn open_version(
        &self,
        key: &BlobKey,
        info: &ObjectInfo,
        current: bool,
    ) -> Result<VersionDir> {
        let key_dir = self.key_dir(key);
        let name = Self::version_name(info, self.block_size);
        let path = key_dir.join(&name);
        create_dirs_below(&self.root, &path, self.dir_mode)?;
        let meta = Meta {
            key: key.clone(),
            size: info.size,
            version: info.version.clone(),
            block_size: self.block_size,
        };
        let dir = VersionDir::new(path, self.file_mode, self.fsync);
        dir.write_meta(&meta)?;
        if current {
            if let Ok(entries) = std::fs::read_dir(&key_dir) {
                for e in entries.flatten() {
                    if e.file_name() != name.as_str() {
                        crate::log::debug!("removing old version {} of {key}", e.path().display());
                        let _ = remove_tree(&e.path());
                    }
                }
            }
        }
        Ok(dir)
    }

    /// Finds a cached version of `key` (for offline use): the most recently
    /// used version directory whose meta is valid and has this block size.
    pub(crate) fn find_cached(&self, key: &BlobKey) -> Option<ObjectInfo> {
        let mut best: Option<(std::time::SystemTime, ObjectInfo)> = None;
        for e in std::fs::read_dir(self.key_dir(key)).ok()?.flatten() {
            let dir = VersionDir::new(e.path(), self.file_mode, self.fsync);
            let Ok(meta) = dir.read_meta() else {
                continue;
            };
            if meta.key != *key || meta.block_size != self.block_size {
                continue;
            }
            let mtime = dir.last_use()?;
            if best.as_ref().map_or(true, |(t, _)| mtime > *t) {
                best = Some((
                    mtime,
                    ObjectInfo {
                        size: meta.size,
                        version: meta.version,
                    },
                ));
            }
        }
        best.map(|(_, info)| info)
    }
}

fn parse_settings(bytes: &[u8]) -> Option<u64> {
    let mut lines = checksummed::open(bytes, SETTINGS_HEADER).ok()?;
    let bs: u64 = lines
        .find_map(|l| l.strip_prefix("block_size="))?
        .parse()
        .ok()?;
    (crate::config::MIN_BLOCK_SIZE..=crate::config::MAX_BLOCK_SIZE)
        .contains(&bs)
        .then_some(bs)
        .filter(|b| b % crate::config::MIN_BLOCK_SIZE == 0)
}

/// The store's recorded block size, recording `wanted` if there is no
/// valid record yet (the first process to record wins: a record is
/// created by linking a complete file into place, which fails if one is
/// there). A store that cannot be written uses `wanted`.
fn recorded_block_size(root: &Path, wanted: u64, file_mode: u32) -> u64 {
    let path = root.join(layout::SETTINGS);
    for _ in 0..3 {
        match read_small(&path) {
            Ok(b) => match parse_settings(&b) {
                Some(bs) => return bs,
                None => {
                    // Damaged or from an unknown future: replace it.
                    crate::log::warning!(
                        "{} is not a valid settings record; recording block size {wanted}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return wanted,
        }
        let body = checksummed::seal(&format!("{SETTINGS_HEADER}\nblock_size={wanted}\n"));
        match create_exclusive(&path, body.as_bytes(), file_mode) {
            Ok(true) => return wanted,
            Ok(false) => continue, // another process recorded one first
            Err(_) => return wanted,
        }
    }
    wanted
}

/// Reads a file of at most 64 KiB without following a symlink.
pub(crate) fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut v = Vec::new();
    f.take(64 << 10).read_to_end(&mut v)?;
    Ok(v)
}

/// Writes `dir/name` atomically (temporary file, then rename).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(layout::aside(name));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| io_error("cannot create", &tmp, &e))?;
    set_file_mode(&f, mode);
    let res = f
        .write_all(bytes)
        .and_then(|_| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("cannot write", &dir.join(name), &e));
    }
    Ok(())
}

/// Creates `path` holding `bytes` only if it does not exist, never visible
/// half-written (written aside, then hard-linked into place). Returns
/// whether this call created it.
pub(crate) fn create_exclusive(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(layout::aside(&name));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| {
            set_file_mode(&f, mode);
            f.write_all(bytes)
        });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree by unlinking (never truncating) its files.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(path)
}
