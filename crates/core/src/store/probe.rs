//! Read-only looks at the store's on-disk format, for the tests and the
//! fuzz targets that check what processes killed, cut off or starved of
//! disk left behind. Not used by the cache; nothing here writes a block.

pub use super::block::{block_path, check_trailer, open_block, Block};
pub use super::checksum::Kind as ChecksumKind;
pub use super::lock::{try_lock_block, BlockLock};
