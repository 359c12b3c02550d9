//! The cluster tier: a directory on a filesystem every node mounts
//! (`BLOBCACHE_CLUSTER_DIR`: NFS, Azure Files, Lustre, CephFS, JuiceFS),
//! between the node's own cache and the origin, so that a cluster pulls
//! each block from the origin about once.
//!
//! The directory is a store of its own with the local store's layout and
//! fill-once protocol (`store/`), always group-shared: a block is
//! published by rename, carries its checksum, and lives in a directory
//! named for the blob's origin version. On a local miss, the fill of
//! block *i* (holding the local lock of block *i*) asks the tier
//! ([`Cluster::take`]):
//!
//! - published there: its bytes are copied into the local block, which is
//!   published only if they match the checksum the tier recorded (another
//!   node wrote them; a shared filesystem is trusted less than local disk);
//!   a block that does not verify is removed and filled again;
//! - not there: the fill takes the tier's lock of block *i*, and its claim
//!   (`claims.rs`: an exclusive create, for filesystems whose locks do not
//!   exclude across nodes), and fetches from the origin; once the local block is published its file is copied
//!   into the tier and renamed into place ([`Cluster::publish`]), and the
//!   lock released. Other nodes wanting the block meanwhile wait for the
//!   lock (at most the fetch timeout) and then copy it from the tier.
//!
//! Correctness never rests on the shared filesystem's locks: where they do
//! not exclude (sshfs, some SMB and NFS setups) two nodes both fetch, the
//! second publication finds the first and is dropped (counted in
//! `cluster_duplicates`); bytes are never wrong or mixed, since publication
//! is by rename, blocks carry checksums and versions are tied to the ETag.
//!
//! Every touch of the tier is bounded (`crate::offload`): a mount that hangs, is
//! gone, read-only or full makes the fill go to the origin within a bound,
//! with one warning, and the tier is left alone for a while ([`DOWN_FOR`]).
//! `shutdown` never waits for it.

mod claims;
mod publish;
mod take;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, MaxSize};
use crate::log::{self, Level};
use crate::stats::Stats;
use crate::store::Store;
use crate::sync::MutexExt;

pub(crate) use take::{Claim, Taken};

/// How long the tier is left alone after it failed (hung, unmounted,
/// read-only, full) before it is tried again.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(60);

/// The cluster tier as one process uses it.
pub(crate) struct Cluster {
    dir: PathBuf,
    /// The local store's block size: the tier is used only with the same.
    block_size: u64,
    max_size: MaxSize,
    fsync: bool,
    /// Bound on each answer of the tier's filesystem.
    op_bound: Duration,
    /// Bound on waiting for another node's fill of a block, and on one
    /// publication.
    fetch_timeout: Duration,
    io: crate::offload::Io,
    state: Mutex<State>,
    stats: Arc<Stats>,
    claims: Arc<claims::Claims>,
    /// Blocks claimed and not yet published or released (see
    /// [`Cluster::shutdown`]).
    publishing: AtomicUsize,
}

enum State {
    /// Not opened yet, or to be opened again.
    Closed,
    Open(Arc<Tier>),
    /// Failed; not tried again before this instant.
    Down(Instant),
}

/// The tier, opened: its store and this process's view of its usage.
pub(crate) struct Tier {
    store: Store,
    cap: u64,
    /// The last scan's usage plus what this process published since.
    usage: AtomicU64,
    /// What this process published since its last scan (`u64::MAX`: no
    /// scan yet).
    since_scan: AtomicU64,
    /// A scan (and eviction) of the tier is running in this process.
    scanning: std::sync::atomic::AtomicBool,
    /// Publications since the running scan began: scan again after it.
    rescan: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// The tier `config` names, if any (nothing is touched yet: the first
    /// miss opens it, bounded).
    pub(crate) fn new(config: &Config, block_size: u64, stats: Arc<Stats>) -> Option<Cluster> {
        let dir = config.cluster_dir.clone()?;
        Some(Cluster {
            dir,
            block_size,
            max_size: config.cluster_max_size,
            fsync: config.fsync,
            op_bound: op_bound(config.fetch_timeout),
            fetch_timeout: config.fetch_timeout,
            io: crate::offload::Io::new("blobcache-cluster-io"),
            state: Mutex::new(State::Closed),
            stats,
            claims: Arc::default(),
            publishing: AtomicUsize::new(0),
        })
    }

    /// For log lines.
    pub(crate) fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    /// The tier, opening it if needed; `None` while it is down.
    fn tier(&self) -> Option<Arc<Tier>> {
        if self.io.stopped() {
            return None;
        }
        let mut state = self.state.locked();
        match &*state {
            State::Open(t) => return Some(t.clone()),
            State::Down(until) if Instant::now() < *until => return None,
            _ => {}
        }
        let (dir, bs, fsync) = (self.dir.clone(), self.block_size, self.fsync);
        let max_size = self.max_size;
        let opened = self.io.call(self.op_bound, move || {
            let store = Store::open(&dir, bs, true, fsync)?;
            let cap = crate::store::cap(max_size, store.root()).unwrap_or(u64::MAX);
            Ok::<_, crate::error::Error>((store, cap))
        });
        let why = match opened {
            Ok(Ok((store, cap))) if store.block_size() == self.block_size => {
                let t = Arc::new(Tier {
                    store,
                    cap,
                    usage: AtomicU64::new(0),
                    since_scan: AtomicU64::new(u64::MAX),
                    scanning: Default::default(),
                    rescan: Default::default(),
                });
                log::debug!("cluster tier {} open (cap {cap} bytes)", self.describe());
                *state = State::Open(t.clone());
                return Some(t);
            }
            Ok(Ok((store, _))) => format!(
                "records blocks of {} bytes and this cache uses {}: set BLOBCACHE_BLOCK_SIZE to the same on every node, or empty the tier (`blobcache evict --cluster --all`)",
                store.block_size(),
                self.block_size
            ),
            Ok(Err(e)) => format!("cannot be used: {e}"),
            Err(u) => u.describe(),
        };
        *state = State::Down(Instant::now() + DOWN_FOR);
        drop(state);
        self.warn_down(&why);
        None
    }

    /// Marks the tier down for [`DOWN_FOR`], with one warning per process.
    fn down(&self, why: &str) {
        if self.io.stopped() {
            return; // shutting down: nothing failed
        }
        {
            let mut state = self.state.locked();
            if matches!(&*state, State::Down(until) if Instant::now() < *until) {
                return;
            }
            *state = State::Down(Instant::now() + DOWN_FOR);
        }
        self.warn_down(why);
    }

    fn warn_down(&self, why: &str) {
        let msg = format!(
            "the cluster tier {} {why}; reading from the origin instead (tried again every {} s)",
            self.describe(),
            DOWN_FOR.as_secs()
        );
        log::log_once(Level::Warn, "cluster-down", &msg);
        log::debug!("{msg}");
    }

    /// Stops waiting on the tier: blocks claimed and not yet published get
    /// at most the bound on one answer to be (the blocks this process
    /// fetched are what the other nodes wait for), then calls in flight
    /// give up at once.
    pub(crate) fn shutdown(&self) {
        let t0 = Instant::now();
        while self.publishing.load(Ordering::Acquire) > 0 && t0.elapsed() < self.op_bound {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.io.stop();
    }
}

/// The bound on each answer of the tier's filesystem: a sixth of the fetch
/// timeout, from 1 s to 5 s (as long as a stalled local filler is waited
/// for).
fn op_bound(fetch_timeout: Duration) -> Duration {
    (fetch_timeout / 6).clamp(Duration::from_secs(1), Duration::from_secs(5))
}
