//! The subcommands, one file each, and what they share: the configuration,
//! URI arguments, and the store of the configured cache directory (which
//! `ls`, `stats`, `verify`, `evict` and `doctor` read without the origin,
//! through the library's own store code).

pub mod cat;
pub mod doctor;
pub mod evict;
pub mod ls;
pub mod stats;
pub mod verify;
pub mod warm;

use std::io::Write;
use std::path::PathBuf;

use blobcache_core::config::MaxSize;
use blobcache_core::store::{inventory, Store};
use blobcache_core::Config;

use crate::uri::{self, Location};
use crate::Failure;

/// The account from `AZURE_STORAGE_ACCOUNT_NAME`, if set.
pub fn env_account() -> Option<String> {
    std::env::var("AZURE_STORAGE_ACCOUNT_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Parses a URI argument; a bad one is a usage error.
pub fn location(uri: &str, account: Option<&str>) -> Result<Location, Failure> {
    uri::parse(uri, account, env_account().as_deref()).map_err(Failure::Usage)
}

/// An optional URI argument that selects blobs.
fn filter(uri: Option<&str>, account: Option<&str>) -> Result<Option<Location>, Failure> {
    uri.map(|u| location(u, account)).transpose()
}

/// Prints `value` as one line of JSON on stdout (the `--json` outputs).
fn print_json(value: &impl serde::Serialize) {
    json_line(&mut std::io::stdout().lock(), value);
}

/// Writes `value` as one line of JSON to `out` (errors ignored: a closed
/// pipe is the reader's choice).
fn json_line(out: &mut impl Write, value: &impl serde::Serialize) {
    let _ = serde_json::to_writer(&mut *out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
}

/// The configuration from the environment (an invalid value fails the command).
pub fn config() -> Result<Config, Failure> {
    let c = Config::from_env().map_err(|e| Failure::Failed(e.to_string()))?;
    blobcache_core::log::set_level(c.log_level);
    Ok(c)
}

/// [`store`], saying "nothing cached" on stdout when there is none.
fn store_or_say_empty(config: &Config) -> Result<Option<Store>, Failure> {
    let store = store(config)?;
    if store.is_none() {
        let _ = writeln!(
            std::io::stdout(),
            "nothing cached in {}",
            cache_dir(config).display()
        );
    }
    Ok(store)
}

/// The store of the configured cache directory, or `None` when there is no
/// cache there yet (nothing is created).
fn store(config: &Config) -> Result<Option<Store>, Failure> {
    let dir = config.dir.clone().ok_or_else(|| {
        Failure::Failed(
            "no cache directory: set BLOBCACHE_DIR (HOME and XDG_CACHE_HOME are unset)".into(),
        )
    })?;
    if !dir.join(blobcache_core::store::LAYOUT).is_dir() {
        return Ok(None);
    }
    Ok(Some(Store::open(
        &dir,
        config.block_size,
        config.shared,
        config.fsync,
    )?))
}

fn cache_dir(config: &Config) -> PathBuf {
    config.dir.clone().unwrap_or_default()
}

/// The cap as the library computes it.
pub fn cap(config: &Config, dir: &std::path::Path) -> Option<u64> {
    match config.max_size {
        MaxSize::Bytes(b) => Some(b),
        MaxSize::PercentOfFilesystem(p) => {
            blobcache_core::store::filesystem_size(dir).map(|(total, _)| total / 100 * p as u64)
        }
    }
}

/// The cached versions at or under `only` (all of them without it).
fn selected<'a>(
    all: &'a [inventory::Cached],
    only: Option<&Location>,
) -> Vec<&'a inventory::Cached> {
    all.iter()
        .filter(|c| match (only, &c.meta) {
            (None, _) => true,
            (Some(l), Ok(m)) => l.covers(&m.key),
            (Some(_), Err(_)) => false,
        })
        .collect()
}

/// The blob's az:// URI, or what is known of a version whose `meta` is damaged.
fn name_of(c: &inventory::Cached) -> String {
    match &c.meta {
        Ok(m) => uri::uri_of(&m.key),
        Err(why) => format!("(unknown blob in {}: {why})", c.dir.path().display()),
    }
}
