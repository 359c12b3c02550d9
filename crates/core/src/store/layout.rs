//! The names of the store's files, spelled here and nowhere else in the
//! core (see the layout diagram in `store/mod.rs`; the counters' `stats`
//! and `stats.lock` are counters.rs's own). At the top, under the layout's
//! directory `v1`: `settings`, `evict.lock` and `blobs`. In a version
//! directory:
//!
//! ```text
//! meta                  which blob and version (meta.rs)
//! lock                  byte i locks block i (lock.rs)
//! b.<i>                 published block i (block.rs)
//! tmp.<i>.<pid>.<n>     block i being written
//! .<name>.<pid>.<n>     a small file (`meta`) being written aside, then renamed
//! .b.<i>.<pid>.<n>      a copy of block i being written aside, then renamed
//!                       (the cluster tier's publications)
//! claim.<i>             a node of the cluster tier fills block i
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// The directory of this layout of the store, under the cache directory.
pub const LAYOUT: &str = "v1";
pub(crate) const SETTINGS: &str = "settings";
pub(crate) const EVICT_LOCK: &str = "evict.lock";
pub(crate) const BLOBS: &str = "blobs";
pub(crate) const META: &str = "meta";
pub(crate) const LOCK: &str = "lock";
const BLOCK_PREFIX: &str = "b.";
const TMP_PREFIX: &str = "tmp.";
const CLAIM_PREFIX: &str = "claim.";

/// What a file of a version directory is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// `b.<i>`: published block `i`.
    Block(u64),
    /// `tmp.<i>.…`: block `i` being written (`None`: an index that does not
    /// parse, which no writer makes).
    Tmp(Option<u64>),
    /// `.meta.…`: a `meta` being written aside.
    MetaAside,
    /// `.b.<i>.…`: a copy of block `i` being written aside before it is
    /// renamed into place (the cluster tier's publications).
    BlockAside,
    /// `claim.<i>`: a node of the cluster tier fills block `i`.
    Claim,
    /// `meta`.
    Meta,
    /// Anything else (`lock` included).
    Other,
}

impl Name {
    pub(crate) fn parse(name: &str) -> Name {
        if let Some(i) = name.strip_prefix(BLOCK_PREFIX).and_then(|s| s.parse().ok()) {
            Name::Block(i)
        } else if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
            Name::Tmp(rest.split('.').next().and_then(|s| s.parse().ok()))
        } else if name
            .strip_prefix('.')
            .and_then(|r| r.strip_prefix(META))
            .is_some_and(|r| r.starts_with('.'))
        {
            Name::MetaAside
        } else if name
            .strip_prefix('.')
            .and_then(|r| r.strip_prefix(BLOCK_PREFIX))
            .and_then(|r| r.split('.').next())
            .is_some_and(|i| i.parse::<u64>().is_ok())
        {
            Name::BlockAside
        } else if name
            .strip_prefix(CLAIM_PREFIX)
            .is_some_and(|i| i.parse::<u64>().is_ok())
        {
            Name::Claim
        } else if name == META {
            Name::Meta
        } else {
            Name::Other
        }
    }

    /// A block being published or written: the directory is in use.
    pub(crate) fn holds_a_block(self) -> bool {
        matches!(self, Name::Block(_) | Name::Tmp(_) | Name::Claim)
    }
}

/// `b.<index>`.
pub(crate) fn block(index: u64) -> String {
    format!("{BLOCK_PREFIX}{index}")
}

/// The prefix of every temporary file of block `index`.
pub(crate) fn tmp_prefix(index: u64) -> String {
    format!("{TMP_PREFIX}{index}.")
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    format!(
        "{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new temporary file name for block `index`: `tmp.<index>.<pid>.<n>`;
/// the janitor removes those whose block lock is free (their writer is
/// gone).
pub(crate) fn tmp(index: u64) -> String {
    format!("{}{}", tmp_prefix(index), unique())
}

/// `claim.<index>`: created (exclusively) by the node of the cluster tier
/// that fills block `index`, and kept fresh while it does.
pub(crate) fn claim(index: u64) -> String {
    format!("{CLAIM_PREFIX}{index}")
}

/// A new name for writing `name` aside before it is renamed or linked into
/// place: `.<name>.<pid>.<n>`.
pub(crate) fn aside(name: &str) -> String {
    format!(".{name}.{}", unique())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_made_here_parses_back_as_what_it_is() {
        assert_eq!(Name::parse(&block(7)), Name::Block(7));
        assert_eq!(Name::parse(&tmp(7)), Name::Tmp(Some(7)));
        assert!(Name::parse(&tmp(7)).holds_a_block());
        assert_eq!(Name::parse(&aside(META)), Name::MetaAside);
        assert_eq!(Name::parse(&aside(&block(12))), Name::BlockAside);
        assert!(!Name::parse(&aside(&block(12))).holds_a_block());
        assert_eq!(Name::parse(".b.x.1.2"), Name::Other);
        assert_eq!(Name::parse(&claim(3)), Name::Claim);
        assert!(Name::parse(&claim(3)).holds_a_block());
        assert_eq!(Name::parse(META), Name::Meta);
        assert_eq!(Name::parse(LOCK), Name::Other);
        assert_eq!(Name::parse(&aside("settings")), Name::Other);
        assert_eq!(Name::parse("b.x"), Name::Other);
        assert_eq!(Name::parse("tmp.x.1.2"), Name::Tmp(None));
    }
}
