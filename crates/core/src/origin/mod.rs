//! Origins: where cache misses are filled from. Each implements [`Origin`];
//! the cache knows nothing else about them.

use std::sync::Arc;

use crate::config::{Config, OriginConfig};
use crate::error::Result;
use crate::names::BlobKey;
use crate::stats::Stats;

pub mod azure;
pub(crate) mod bounded;
pub mod directory;

/// What the origin says about a blob: its size and a version string that
/// changes whenever its content may have changed (an ETag for Azure; device,
/// inode, size and modification time for a directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub version: String,
}

/// One blob found by [`Origin::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The blob's name inside its container.
    pub name: String,
    pub size: u64,
}

/// Receives the bytes of a range in order, in pieces of any size.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

pub trait Origin: Send + Sync {
    /// Gives the origin the cache's counters, for what only it sees (GETs
    /// through dfdaemon, say). Called once, when the cache is built.
    fn attach_stats(&self, _stats: &Arc<Stats>) {}

    /// A short description for log lines and `doctor` (never a credential).
    fn describe(&self) -> String;

    /// Looks up the blob's current size and version.
    fn stat(&self, key: &BlobKey) -> Result<ObjectInfo>;

    /// Like [`Origin::stat`], but gives up after the first failed attempt to
    /// connect (an [`crate::error::ErrorKind::Unreachable`] error) instead of
    /// retrying: the caller has a cached copy to fall back on. Other
    /// failures are retried as usual.
    fn stat_quick(&self, key: &BlobKey) -> Result<ObjectInfo> {
        self.stat(key)
    }

    /// The blobs of `container` in `account` whose names start with
    /// `prefix` (every blob when it is empty), in name order.
    fn list(&self, account: &str, container: &str, prefix: &str) -> Result<Vec<Listed>>;

    /// Delivers bytes `[offset, offset + len)` of the blob, *as of version
    /// `info.version`*, to `sink`. If the blob no longer has that version the
    /// call fails with [`crate::error::ErrorKind::Changed`]. It must deliver
    /// exactly `len` bytes or fail; callers check this again.
    fn read(
        &self,
        key: &BlobKey,
        info: &ObjectInfo,
        offset: u64,
        len: u64,
        sink: &mut Sink<'_>,
    ) -> Result<()>;

    /// Whether the bytes [`Origin::read`] delivers are final as they
    /// arrive: all of the version asked for, even when the read fails later
    /// (Azure: every answer is conditional on the ETag). Then readers may be
    /// served from a fill before it ends. A directory's file can change
    /// under a read, which is found only at its end: not final.
    fn streams_final_bytes(&self) -> bool {
        false
    }

    /// Cancels work in flight and stops background threads (called at
    /// shutdown; must not block on the network).
    fn shutdown(&self) {}
}

/// The origin `config` names, ready for the cache.
pub fn from_config(config: &Config) -> Result<Arc<dyn Origin>> {
    Ok(match &config.origin {
        // Files block in the kernel when their filesystem hangs: bounded.
        OriginConfig::Directory(root) => Arc::new(bounded::Bounded::new(
            Arc::new(directory::DirectoryOrigin::new(root.clone())),
            config.fetch_timeout,
        )),
        OriginConfig::Azure => Arc::new(azure::AzureOrigin::new(config)?),
    })
}

/// Runs `origin.read` and checks that exactly `len` bytes arrived.
pub fn read_exact(
    origin: &dyn Origin,
    key: &BlobKey,
    info: &ObjectInfo,
    offset: u64,
    len: u64,
    sink: &mut Sink<'_>,
) -> Result<()> {
    let mut got: u64 = 0;
    origin.read(key, info, offset, len, &mut |chunk: &[u8]| {
        got += chunk.len() as u64;
        if got > len {
            return Err(crate::error::Error::origin(format!(
                "the origin sent more bytes than requested ({got} > {len})"
            )));
        }
        sink(chunk)
    })?;
    if got != len {
        return Err(crate::error::Error::origin(format!(
            "the origin sent {got} bytes where {len} were requested (short read)"
        )));
    }
    Ok(())
}
