//! The subcommands, one file each, and what they share: the configuration,
//! URI arguments, and the store of the configured cache directory (which
//! `ls`, `stats`, `verify`, `evict` and `doctor` read without the origin,
//! through the library's own store code).
//!
//! Every command that cannot use the cache directory fails (exit status 1)
//! saying why: `warm` and `cat` open the store as the library does
//! ([`open_store`]); the others, which create nothing, accept a directory
//! not made yet only if the library could make it ([`store`]).
//!
//! The cluster tier (`BLOBCACHE_CLUSTER_DIR`) has the local store's layout
//! and protocol, so `ls`, `stats`, `verify` and `evict` (`--cluster`) and
//! `warm` (`--cluster-only`) work on it as on a cache directory of its own:
//! the same code, on [`Config::cluster_as_store`] ([`Tier`]).

pub mod cat;
pub mod doctor;
pub mod evict;
pub mod ls;
pub mod metrics;
pub mod stats;
pub mod verify;
pub mod warm;

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Says on stderr which account `uri` was read with, when neither
/// `--account` nor `AZURE_STORAGE_ACCOUNT_NAME` named one (for the commands
/// that go to the origin, where a wrong account fails with a 404 or 403).
fn say_assumed_account(loc: &Location, uri: &str) {
    if let Some(s) = loc.assumed_account(uri) {
        let _ = writeln!(std::io::stderr(), "blobcache: {s}");
    }
}

/// `nothing cached at or under <uri>`, with how the URI was read when its
/// account was assumed.
fn say_nothing_cached_under(uri: &str, loc: &Location) {
    let _ = writeln!(
        std::io::stdout(),
        "nothing cached at or under {uri}{}",
        loc.account_hint()
    );
}

/// The configuration from the environment (an invalid value fails the command).
pub fn config() -> Result<Config, Failure> {
    let c = Config::from_env().map_err(|e| Failure::Failed(e.to_string()))?;
    blobcache_core::log::set_level(c.log_level);
    Ok(c)
}

/// Which directory a command works on: this node's cache, or the cluster
/// tier seen as a cache directory of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// `BLOBCACHE_DIR`.
    Local,
    /// `BLOBCACHE_CLUSTER_DIR`, through [`Config::cluster_as_store`].
    Cluster,
}

impl Tier {
    pub fn of(cluster: bool) -> Tier {
        if cluster {
            Tier::Cluster
        } else {
            Tier::Local
        }
    }

    /// The variable that names the tier's directory.
    pub fn variable(self) -> &'static str {
        match self {
            Tier::Local => "BLOBCACHE_DIR",
            Tier::Cluster => "BLOBCACHE_CLUSTER_DIR",
        }
    }

    /// What the outputs call it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Local => "cache",
            Tier::Cluster => "cluster tier",
        }
    }

    /// "the cache directory" or "the cluster tier's directory", in messages.
    fn directory(self) -> &'static str {
        match self {
            Tier::Local => "the cache directory",
            Tier::Cluster => "the cluster tier's directory",
        }
    }
}

/// `--cluster`, of the commands that can work on the cluster tier.
#[derive(clap::Args)]
pub struct ClusterArg {
    /// Work on the cluster tier (BLOBCACHE_CLUSTER_DIR, the directory every node mounts) instead of this node's cache
    #[arg(long)]
    pub cluster: bool,
}

/// The configuration of `tier`: the environment's, or for the cluster tier
/// the one that makes its directory the cache directory. `flag` is the
/// option that asked for the cluster tier; without `BLOBCACHE_CLUSTER_DIR`
/// it is a usage error naming the variable.
pub fn tier_config(tier: Tier, flag: &str) -> Result<Config, Failure> {
    let c = config()?;
    match tier {
        Tier::Local => Ok(c),
        Tier::Cluster => c.cluster_as_store().ok_or_else(|| {
            Failure::Usage(format!(
                "{flag} needs BLOBCACHE_CLUSTER_DIR: set it to the cluster tier's directory, on the shared filesystem every node mounts (e.g. /mnt/models/blobcache)"
            ))
        }),
    }
}

/// [`store`], saying "nothing cached" on stdout when there is none.
fn store_or_say_empty(config: &Config, tier: Tier) -> Result<Option<Store>, Failure> {
    let store = store(config, tier)?;
    if store.is_none() {
        say_nothing_cached(config, tier);
    }
    Ok(store)
}

/// `nothing cached in <dir>` on stdout (naming the cluster tier as such).
fn say_nothing_cached(config: &Config, tier: Tier) {
    let _ = writeln!(
        std::io::stdout(),
        "nothing cached in {}{}",
        if tier == Tier::Cluster {
            "the cluster tier "
        } else {
            ""
        },
        cache_dir(config).display()
    );
}

/// The configured directory of `tier`.
fn dir(config: &Config, tier: Tier) -> Result<PathBuf, Failure> {
    config.dir.clone().ok_or_else(|| {
        Failure::Failed(match tier {
            Tier::Local => {
                "no cache directory: set BLOBCACHE_DIR (HOME and XDG_CACHE_HOME are unset)".into()
            }
            Tier::Cluster => "no cluster tier: set BLOBCACHE_CLUSTER_DIR".into(),
        })
    })
}

/// The failure of a command that cannot use the directory of `tier`.
fn unusable(dir: &Path, tier: Tier, why: impl std::fmt::Display) -> Failure {
    Failure::Failed(format!(
        "cannot use {} {}: {why}; set {} to a directory this user can create and write",
        tier.directory(),
        dir.display(),
        tier.variable(),
    ))
}

/// The store of the configured directory of `tier`, or `None` when there
/// is no cache there yet but the library could make one (nothing is
/// created); an error when the directory cannot be used.
fn store(config: &Config, tier: Tier) -> Result<Option<Store>, Failure> {
    let dir = dir(config, tier)?;
    if !dir.join(blobcache_core::store::LAYOUT).is_dir() {
        creatable(&dir).map_err(|why| unusable(&dir, tier, why))?;
        return Ok(None);
    }
    Store::open(&dir, config.block_size, config.shared, config.fsync)
        .map(Some)
        .map_err(|e| unusable(&dir, tier, e))
}

/// The store of the configured directory of `tier`, opened (created if
/// need be) as the library opens it: for the commands that fill it. The
/// library would read straight from the origin without it; a command fails.
pub fn open_store(config: &Config, tier: Tier) -> Result<Store, Failure> {
    let dir = dir(config, tier)?;
    Store::open(&dir, config.block_size, config.shared, config.fsync)
        .map_err(|e| unusable(&dir, tier, e))
}

/// Whether the library could set up its store in `dir`, which has none
/// yet, found out without leaving anything behind: `dir`, or the nearest
/// directory above it that exists, must be a directory (not a link, for
/// `dir` itself, as the store refuses one) in which a directory can be made
/// (one is made and removed at once).
fn creatable(dir: &Path) -> Result<(), String> {
    let at = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!(
                "{} is a symbolic link, which the cache does not follow",
                dir.display()
            ))
        }
        Ok(m) if !m.is_dir() => return Err(format!("{} is not a directory", dir.display())),
        Ok(_) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut at = dir;
            loop {
                at = at.parent().unwrap_or(Path::new("/"));
                match std::fs::metadata(at) {
                    Ok(m) if m.is_dir() => break at,
                    Ok(_) => return Err(format!("{} is not a directory", at.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && at != Path::new("/") => {}
                    Err(e) => return Err(format!("{}: {e}", at.display())),
                }
            }
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let probe = at.join(format!(".blobcache-probe.{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a directory in {}: {e}", at.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// `dir`, or the nearest directory above it that exists (where a cache not
/// made yet would be, for its filesystem's size).
fn existing(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
}

fn cache_dir(config: &Config) -> PathBuf {
    config.dir.clone().unwrap_or_default()
}

/// The cap as the library computes it.
pub fn cap(config: &Config, dir: &std::path::Path) -> Option<u64> {
    blobcache_core::store::cap(config.max_size, dir)
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
