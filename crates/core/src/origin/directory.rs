//! The directory origin: blobs are files at `<root>/<account>/<container>/<blob>`.
//!
//! A pre-staged or network-mounted model store in front of local NVMe.
//!
//! **Versions.** The version of a file is its device, inode, size,
//! modification time and inode change time (ctime), both to the nanosecond.
//! The modification time alone is not enough: `cp -p`, `rsync -t`,
//! `touch -d` and filesystems with coarse timestamps leave a file rewritten
//! in place with its old size and modification time. The change time cannot
//! be set by users: the kernel sets it to the current time at every write,
//! truncation, `utimes`, `chmod`, `chown` or new link. A read checks the
//! version before and after copying, so a file replaced or rewritten since
//! its version was taken (by the load's first access, or during the copy)
//! fails the read as changed at the origin, never mixing old and new bytes;
//! the next load reads the new version. A new process, or a session after
//! `shutdown`, sees the new version and fetches it again. (A `chmod`,
//! `chown` or new hard link counts as a change too: the blob is fetched
//! again, which costs time, never correctness.)
//!
//! **What cannot be caught.** A rewrite that leaves the change time as it was:
//! on a filesystem whose timestamps are coarser than the time between two
//! changes, a rewrite within the same tick as the file's previous change.
//! Linux since 6.13 gives a change that follows a `stat` of the file a fresh
//! fine-grained time on ext4, XFS, Btrfs and tmpfs, so a rewrite after the
//! version was taken is caught there; on other filesystems (or older
//! kernels) the tick is the kernel's clock tick (a few milliseconds) or the
//! filesystem's own granularity (1 s on ext3, 2 s on FAT, whatever the
//! server keeps on a network filesystem). And the kernel stamps the change
//! time when a `write` starts, before its bytes land: a load that takes the
//! version, or reads the file, in the middle of one `write` and finishes
//! before the file's next change can keep part of that write (the next load
//! reads the file again). Replace files by writing a new one and renaming it
//! over the old (a new inode is always caught).
//!
//! **Names.** Every name a caller passes maps to one path below the root:
//! [`BlobKey::new`] refuses `.` and `..` segments, backslashes and control
//! characters for every origin. Names that are legal blob names but cannot
//! be file paths (an empty segment: a leading or trailing `/`, or `//`) fail
//! here as not found, with a message saying why.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;
use crate::origin::{Listed, ObjectInfo, Origin, Sink};

pub struct DirectoryOrigin {
    root: PathBuf,
}

const CHUNK: usize = 1 << 20;

impl DirectoryOrigin {
    pub fn new(root: PathBuf) -> DirectoryOrigin {
        DirectoryOrigin { root }
    }

    /// The file of `key`. BlobKey::new has refused '..', '.', backslashes
    /// and the account and container names that are not one segment; a blob
    /// name with an empty segment (which includes a leading '/', so nothing
    /// absolute reaches `join`) is refused here, so the path stays under root.
    fn path(&self, key: &BlobKey) -> Result<PathBuf> {
        if key.blob.split('/').any(str::is_empty) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the directory origin cannot hold a blob named {:?}: a name with an empty path segment (a leading or trailing '/', or '//') is a legal Azure blob name but not a file path",
                    key.blob
                ),
            ));
        }
        Ok(self
            .root
            .join(&key.account)
            .join(&key.container)
            .join(&key.blob))
    }

    /// Device, inode, size, modification and change times (see the module
    /// docs).
    fn version_of(meta: &std::fs::Metadata) -> String {
        format!(
            "dev={};ino={};size={};mtime={}.{:09};ctime={}.{:09}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
    }

    fn open(&self, key: &BlobKey) -> Result<(File, std::fs::Metadata)> {
        let path = self.path(key)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::new(
                ErrorKind::NotFound,
                format!(
                    "no such blob at the directory origin ({} does not exist)",
                    path.display()
                ),
            ),
            _ => Error::origin(format!("cannot open {}: {e}", path.display())),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::origin(format!("cannot stat {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Ok((file, meta))
    }
}

impl Origin for DirectoryOrigin {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn stat(&self, key: &BlobKey) -> Result<ObjectInfo> {
        let (_, meta) = self.open(key)?;
        Ok(ObjectInfo {
            size: meta.size(),
            version: Self::version_of(&meta),
        })
    }

    fn list(&self, account: &str, container: &str, prefix: &str) -> Result<Vec<Listed>> {
        // The same rules as for a read: no name may climb out of the root.
        BlobKey::new(account, container, "x")?;
        let base = self.root.join(account).join(container);
        if !base.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no such container at the directory origin ({} is not a directory)",
                    base.display()
                ),
            ));
        }
        let mut out = Vec::new();
        let mut pending = vec![(base, String::new())];
        while let Some((dir, rel)) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| Error::origin(format!("cannot list {}: {e}", dir.display())))?;
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue; // not UTF-8: no blob name can address it
                };
                let full = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let Ok(meta) = std::fs::metadata(e.path()) else {
                    continue;
                };
                if meta.is_dir() {
                    // Descend only where a name under the prefix can be.
                    let dir_prefix = format!("{full}/");
                    if dir_prefix.starts_with(prefix) || prefix.starts_with(&dir_prefix) {
                        pending.push((e.path(), full));
                    }
                } else if meta.is_file()
                    && full.starts_with(prefix)
                    && BlobKey::new(account, container, &full).is_ok()
                {
                    out.push(Listed {
                        name: full,
                        size: meta.size(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(
        &self,
        key: &BlobKey,
        info: &ObjectInfo,
        offset: u64,
        len: u64,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let (file, meta) = self.open(key)?;
        let path = self.path(key)?;
        let changed = |what: String| {
            Error::new(
                ErrorKind::Changed,
                format!(
                    "the file changed at the origin since this load began ({}: {what}); the read fails rather than mix old and new bytes, and the next load reads the new version",
                    path.display()
                ),
            )
        };
        let before = Self::version_of(&meta);
        if before != info.version {
            return Err(changed(differences(&info.version, &before)));
        }
        let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = file
                .read_at(&mut buf[..want], pos)
                .map_err(|e| Error::origin(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                return Err(changed(format!("it ends at byte {pos}, before byte {end}")));
            }
            sink(&buf[..n])?;
            pos += n as u64;
        }
        let after = file
            .metadata()
            .map(|m| Self::version_of(&m))
            .map_err(|e| Error::origin(format!("cannot stat {}: {e}", path.display())))?;
        if after != info.version {
            return Err(changed(differences(&info.version, &after)));
        }
        Ok(())
    }
}

/// The fields of two versions (`name=value;...`) that differ, as
/// `name was -> now`, e.g. `ctime 1764489600.100000000 -> 1764489600.300000000`.
fn differences(was: &str, now: &str) -> String {
    let fields = |v: &str| -> Vec<(String, String)> {
        v.split(';')
            .map(|f| match f.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (f.to_string(), String::new()),
            })
            .collect()
    };
    let (was, now) = (fields(was), fields(now));
    let mut out: Vec<String> = was
        .iter()
        .filter_map(|(k, v)| match now.iter().find(|(k2, _)| k2 == k) {
            Some((_, v2)) if v2 == v => None,
            Some((_, v2)) => Some(format!("{k} {v} -> {v2}")),
            None => Some(format!("{k} {v} -> (none)")),
        })
        .collect();
    out.extend(
        now.iter()
            .filter(|(k, _)| !was.iter().any(|(k2, _)| k2 == k))
            .map(|(k, v)| format!("{k} (none) -> {v}")),
    );
    out.join(", ")
}
