//! The cache: serves reads of blob ranges from the store on disk, filling
//! missing blocks from the origin. Safe Rust; knows nothing of C.
//!
//! A read looks up the blob's entry (on first access in this lifecycle the
//! origin is asked for its size and version), makes sure every block the
//! range covers is present (filling missing ones through the worker pool, in
//! parallel), and copies the bytes out of the blocks' long-lived mappings.
//! If the store cannot take a block (unwritable directory, full disk, cap
//! with nothing to evict), or another process holds a block's fill and has
//! stopped making progress (stopped, frozen), the range is read straight
//! from the origin into the caller's buffer instead, with one warning.
//! Blocks are kept open within a budget (see [`mapped`]).
//!
//! By concern: `read.rs` the read path; `entry.rs` a blob's entry and
//! single-flight (one fill per block in this process); `fill.rs` filling
//! blocks on demand and ahead, through the store's fill-once protocol;
//! `capacity.rs` the cap, eviction and the janitor; `mapped.rs` the blocks
//! kept open.

mod capacity;
mod entry;
mod fill;
mod mapped;
mod read;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::names::BlobKey;
use crate::origin::Origin;
use crate::pool::Pool;
use crate::stats::{Snapshot, Stats};
use crate::store::{counters, evict, Store};
use crate::sync::{MutexExt, RwLockExt};

pub use entry::Entry;
use mapped::Budget;

const SHARDS: usize = 64;
/// How often an entry's last-use time is written to disk, at most.
const TOUCH_EVERY_SECS: u64 = 30;
/// How long `shutdown` waits for fill workers to finish the job they are
/// running before it leaves them (stuck in the kernel) to end on their own.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// How often the janitor rescans the store's usage.
const JANITOR_PERIOD: Duration = Duration::from_secs(5);

type Shard = RwLock<HashMap<BlobKey, Arc<Entry>>>;
/// Where one lookup of a blob at the origin puts its answer.
type Opening = Arc<Mutex<Option<Result<Arc<Entry>>>>>;

struct Inner {
    config: Config,
    store: Option<Store>,
    store_problem: Option<String>,
    origin: Arc<dyn Origin>,
    entries: Box<[Shard]>,
    /// Lookups of blobs at the origin in progress, each with the slot its
    /// answer goes to (see `Inner::entry`).
    opening: Mutex<HashMap<BlobKey, Opening>>,
    hasher: std::collections::hash_map::RandomState,
    pool: Pool,
    stats: Arc<Stats>,
    /// The cluster tier (`BLOBCACHE_CLUSTER_DIR`), between the store and
    /// the origin.
    cluster: Option<Cluster>,
    /// What of `stats` was already added to the store's counters file.
    persisted: counters::Flusher,
    stopped: AtomicBool,
    cap: u64,
    /// This process's view of the store's size: the last scan plus what
    /// this process added since.
    usage: AtomicU64,
    /// What this process added since its last scan. Other processes' blocks
    /// show only in a scan, so a process rescans after adding a tenth of
    /// the cap: the store then stays under the cap plus, per process, a
    /// tenth of it and the fills in flight.
    added_since_scan: AtomicU64,
    janitor_wake: (Mutex<bool>, Condvar),
    /// The blocks this process keeps open.
    budget: Budget,
}

/// The cache, ready to serve reads. Dropping it shuts it down.
pub struct Cache {
    inner: Arc<Inner>,
    janitor: Mutex<Option<JoinHandle<()>>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// Builds a cache from `config` with the origin it names.
    pub fn new(config: Config) -> Result<Cache> {
        let origin = crate::origin::from_config(&config)?;
        Cache::with_origin(config, origin)
    }

    /// Builds a cache with an explicit origin.
    pub fn with_origin(config: Config, origin: Arc<dyn Origin>) -> Result<Cache> {
        let (store, store_problem) = match &config.dir {
            None => (
                None,
                Some(
                    "no cache directory: set BLOBCACHE_DIR (HOME and XDG_CACHE_HOME are unset)"
                        .to_string(),
                ),
            ),
            Some(dir) => match Store::open(dir, config.block_size, config.shared, config.fsync) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let cap = capacity::cap(store.as_ref(), config.max_size);
        let usage = store
            .as_ref()
            .map(|s| evict::scan(s.root(), s.file_mode()).bytes)
            .unwrap_or(0);
        let pool = Pool::new(config.fetch_concurrency, "blobcache-fill")?;
        let stats = Arc::new(Stats::default());
        origin.attach_stats(&stats);
        // Without a store of its own a node has nothing to copy the tier's
        // blocks into (and reads straight from the origin).
        let cluster = store
            .as_ref()
            .and_then(|s| Cluster::new(&config, s.block_size(), stats.clone()));
        let inner = Arc::new(Inner {
            store,
            store_problem,
            origin,
            entries: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            opening: Mutex::new(HashMap::new()),
            hasher: Default::default(),
            pool,
            stats,
            cluster,
            persisted: counters::Flusher::default(),
            stopped: AtomicBool::new(false),
            cap,
            usage: AtomicU64::new(usage),
            added_since_scan: AtomicU64::new(0),
            janitor_wake: (Mutex::new(false), Condvar::new()),
            budget: Budget::new(config.mapped_blocks, config.mapped_bytes),
            config,
        });
        if let (Some(store), Some(asked)) = (
            &inner.store,
            inner.store.as_ref().and_then(|s| s.asked_block_size()),
        ) {
            log::log_once(
                Level::Warn,
                "block-size",
                &format!(
                    "BLOBCACHE_BLOCK_SIZE asks for {asked} bytes but the cache directory {} was set up with blocks of {} bytes; using {} (one size per directory, so processes share their blocks; to change it, empty the directory with `blobcache evict --all`)",
                    store.root().display(),
                    store.block_size(),
                    store.block_size()
                ),
            );
        }
        if let Some(p) = &inner.store_problem {
            log::log_once(
                Level::Warn,
                "store-unavailable",
                &format!(
                    "the cache directory cannot be used, reads go straight to the origin: {p}"
                ),
            );
        }
        log::debug!(
            "started: origin={} dir={:?} cap={} block_size={} cluster={:?}",
            inner.origin.describe(),
            inner.store.as_ref().map(|s| s.root().to_path_buf()),
            inner.cap,
            inner.config.block_size,
            inner.cluster.as_ref().map(|c| c.describe())
        );
        let janitor = if inner.store.is_some() {
            let i = inner.clone();
            Some(
                crate::fork::spawn(
                    std::thread::Builder::new()
                        .name("blobcache-janitor".into())
                        .stack_size(256 << 10),
                    move || i.janitor(),
                )
                .map_err(|e| Error::internal(format!("cannot start janitor thread: {e}")))?,
            )
        } else {
            None
        };
        Ok(Cache {
            inner,
            janitor: Mutex::new(janitor),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn cap(&self) -> u64 {
        self.inner.cap
    }

    pub fn stats(&self) -> Snapshot {
        self.inner.stats.snapshot()
    }

    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    pub fn origin(&self) -> &Arc<dyn Origin> {
        &self.inner.origin
    }

    /// Reads bytes `[offset, offset + buf.len())` of `key` into `buf`.
    pub fn read(&self, key: &BlobKey, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.inner.read(key, offset, buf);
        if r.is_err() {
            self.inner.stats.read_errors.add(1);
        }
        r
    }

    /// Returns the entry of `key` (looking it up at the origin on first use).
    pub fn entry(&self, key: &BlobKey) -> Result<Arc<Entry>> {
        self.inner.entry(key)
    }

    /// Fills every block of `key` (for warming), in parallel.
    pub fn fill_all(&self, key: &BlobKey) -> Result<u64> {
        let e = self.inner.entry(key)?;
        let missing: Vec<u64> = (0..e.block_count())
            .filter(|i| self.inner.block(&e, *i).is_none())
            .collect();
        let n = missing.len() as u64;
        self.inner.fill(&e, &missing)?;
        Ok(n)
    }

    /// Bytes of `key`'s blocks already on disk, at the version this cache
    /// found (looking the blob up at the origin on first use).
    pub fn cached_bytes(&self, key: &BlobKey) -> Result<u64> {
        let e = self.inner.entry(key)?;
        let Some(dir) = &e.dir else { return Ok(0) };
        Ok((0..e.block_count())
            .filter(|&i| dir.has_block(i))
            .map(|i| {
                let (start, end) = e.block_range(i);
                end - start
            })
            .sum())
    }

    /// Runs one eviction pass now, down to the cap. If another thread or
    /// process is evicting, waits for it (at most the fetch timeout) and
    /// then makes its own pass, so that what the report says is this
    /// call's doing; after the wait it only counts.
    pub fn evict_now(&self) -> evict::EvictReport {
        self.inner.evict(None, self.inner.config.fetch_timeout)
    }

    /// Stops the worker threads and the janitor and drops every mapping this
    /// cache holds. Reads still running finish or fail cleanly.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        inner.origin.shutdown();
        // Blocks being published in the cluster tier get a moment to land
        // (bounded); then waits on the tier give up.
        if let Some(c) = &inner.cluster {
            c.shutdown();
        }
        inner.pool.stop(SHUTDOWN_WAIT);
        {
            let (m, cv) = &inner.janitor_wake;
            *m.locked() = true;
            cv.notify_all();
        }
        if let Some(h) = self.janitor.locked().take() {
            let _ = h.join();
        }
        inner.flush_stats();
        for shard in inner.entries.iter() {
            shard.write_locked().clear();
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn shard(&self, key: &BlobKey) -> &Shard {
        &self.entries[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn warn_store(&self, e: &Error) {
        log::log_once(
            Level::Warn,
            "store-write",
            &format!(
                "cannot store blocks in the cache, reading straight from the origin instead: {e}"
            ),
        );
    }
}
