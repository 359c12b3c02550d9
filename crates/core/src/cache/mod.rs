//! The cache: serves reads of blob ranges from the store on disk, filling
//! missing blocks from the origin. Plain safe Rust; knows nothing of C.
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

mod mapped;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::{Condvar, Mutex, RwLock};

use crate::sync::{CondvarExt, MutexExt, RwLockExt};

use crate::config::{Config, MaxSize, OriginConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::names::BlobKey;
use crate::origin::{self, directory::DirectoryOrigin, ObjectInfo, Origin};
use crate::pool::Pool;
use crate::stats::{Snapshot, Stats};
use crate::store::block::OpenError;
use crate::store::{counters, evict, Store, VersionDir};

pub use mapped::Open;
use mapped::{Budget, Slot};

const SHARDS: usize = 64;
/// How often an entry's last-use time is written to disk, at most.
const TOUCH_EVERY_SECS: u64 = 30;
/// How long `shutdown` waits for fill workers to finish the job they are
/// running before it leaves them (stuck in the kernel) to end on their own.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// How often the janitor rescans the store's usage.
const JANITOR_PERIOD: Duration = Duration::from_secs(5);

/// One blob at one version, as this process knows it.
pub struct Entry {
    pub key: BlobKey,
    pub info: ObjectInfo,
    dir: Option<VersionDir>,
    slots: Arc<[Slot]>,
    /// Fills of this entry's blocks running or queued in this process, by
    /// block index: a second reader of a block waits for the first one's
    /// fill instead of occupying a worker with a fill of its own.
    flights: Mutex<HashMap<u64, Arc<Flight>>>,
    /// Blocks whose fill another process holds without progress, and when
    /// that was found: reads of them go straight to the origin for a while
    /// without waiting again.
    stalled: Mutex<HashMap<u64, Instant>>,
    last_touch: AtomicU64,
    block_size: u64,
}

impl Entry {
    pub fn block_count(&self) -> u64 {
        self.slots.len() as u64
    }

    fn block_range(&self, index: u64) -> (u64, u64) {
        let start = index * self.block_size;
        (start, (start + self.block_size).min(self.info.size))
    }

    /// Whether block `index` is open or known to be on disk (cheap).
    fn known_present(&self, index: u64) -> bool {
        self.slots[index as usize].known_on_disk()
    }
}

/// One fill of one block in this process, waited for by every reader of
/// the block. Jobs of two kinds may be queued for it (a readahead job, then a
/// demand job when a reader needs the block before readahead got to it); the
/// first to start runs the fill, the other finds it started and returns.
#[derive(Default)]
struct Flight {
    started: AtomicBool,
    /// The fill's result, and whether a readahead job ran it.
    result: Mutex<Option<(Result<()>, bool)>>,
    cv: Condvar,
}

impl Flight {
    fn wait(&self) -> (Result<()>, bool) {
        let mut g = self.result.locked();
        while g.is_none() {
            g = self.cv.wait_on(g);
        }
        g.clone().expect("checked above")
    }
}

/// A queued job for a flight. Dropped without finishing it (the pool
/// stopped before running it, or the fill panicked), it fails the flight
/// unless another job started it, so no reader waits forever.
struct FlightJob {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    index: u64,
    flight: Arc<Flight>,
    ahead: bool,
    /// This job won the flight and is running its fill.
    running: bool,
    finished: bool,
}

impl FlightJob {
    fn run(mut self) -> Result<()> {
        if self.flight.started.swap(true, Ordering::AcqRel) {
            self.finished = true; // run (or running) by another job
            return Ok(());
        }
        self.running = true;
        let r = self.inner.fill_block(&self.entry, self.index);
        match &r {
            Ok(true) if self.ahead => self.inner.stats.readahead_blocks.add(1),
            Err(e) if self.ahead => log::debug!(
                "readahead of block {} of {} failed: {e}",
                self.index,
                self.entry.key
            ),
            _ => {}
        }
        let r = r.map(|_| ());
        self.finish(r.clone());
        r
    }

    fn finish(&mut self, r: Result<()>) {
        self.finished = true;
        {
            let mut flights = self.entry.flights.locked();
            if flights
                .get(&self.index)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.index);
            }
        }
        *self.flight.result.locked() = Some((r, self.ahead));
        self.flight.cv.notify_all();
    }
}

impl Drop for FlightJob {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.running {
            self.finish(Err(Error::internal("the fill of this block panicked")));
        } else if !self.flight.started.swap(true, Ordering::AcqRel) {
            self.finish(Err(Error::new(
                ErrorKind::Shutdown,
                "the library was shut down before this read could be filled",
            )));
        }
    }
}

type Shard = RwLock<HashMap<BlobKey, Arc<Entry>>>;

struct Inner {
    config: Config,
    store: Option<Store>,
    store_problem: Option<String>,
    origin: Arc<dyn Origin>,
    entries: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    pool: Pool,
    stats: Stats,
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

/// Size of the filesystem holding `path`, in bytes.
pub fn filesystem_size(path: &std::path::Path) -> Option<(u64, u64)> {
    crate::sys::filesystem_size(path)
}

pub fn make_origin(config: &Config) -> Result<Arc<dyn Origin>> {
    Ok(match &config.origin {
        // Files block in the kernel when their filesystem hangs: bounded.
        OriginConfig::Directory(root) => Arc::new(origin::bounded::Bounded::new(
            Arc::new(DirectoryOrigin::new(root.clone())),
            config.fetch_timeout,
        )),
        OriginConfig::Azure => Arc::new(crate::origin::azure::AzureOrigin::new(config)?),
    })
}

impl Cache {
    /// Builds a cache from `config` with the origin it names.
    pub fn new(config: Config) -> Result<Cache> {
        let origin = make_origin(&config)?;
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
        let cap = match (&store, config.max_size) {
            (_, MaxSize::Bytes(b)) => b,
            (Some(s), MaxSize::PercentOfFilesystem(p)) => filesystem_size(s.root())
                .map(|(total, _)| total / 100 * p as u64)
                .unwrap_or(u64::MAX),
            (None, _) => 0,
        };
        let usage = store
            .as_ref()
            .map(|s| evict::scan(s.root(), s.file_mode()).bytes)
            .unwrap_or(0);
        let pool = Pool::new(config.fetch_concurrency, "blobcache-fill")?;
        let inner = Arc::new(Inner {
            store,
            store_problem,
            origin,
            entries: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            pool,
            stats: Stats::default(),
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
            "started: origin={} dir={:?} cap={} block_size={}",
            inner.origin.describe(),
            inner.store.as_ref().map(|s| s.root().to_path_buf()),
            inner.cap,
            inner.config.block_size
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

    /// Runs one eviction pass now, down to the cap.
    pub fn evict_now(&self) -> evict::EvictReport {
        self.inner.evict(None)
    }

    /// Stops the worker threads and the janitor and drops every mapping this
    /// cache holds. Reads still running finish or fail cleanly.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        inner.origin.shutdown();
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

    fn entry(&self, key: &BlobKey) -> Result<Arc<Entry>> {
        if let Some(e) = self.shard(key).read_locked().get(key) {
            return Ok(e.clone());
        }
        // The version check of a first access waits on the origin too.
        let t0 = Instant::now();
        let entry = self.open_entry(key);
        self.stats
            .origin_wait_ns
            .add(t0.elapsed().as_nanos() as u64);
        let entry = Arc::new(entry?);
        let mut shard = self.shard(key).write_locked();
        Ok(shard.entry(key.clone()).or_insert(entry).clone())
    }

    fn open_entry(&self, key: &BlobKey) -> Result<Entry> {
        let (info, current) = if self.config.offline {
            match self.store.as_ref().and_then(|s| s.find_cached(key)) {
                Some(info) => (info, false),
                None => {
                    return Err(Error::new(
                        ErrorKind::Offline,
                        "the blob is not in the cache and BLOBCACHE_OFFLINE=1 forbids contacting the origin",
                    ))
                }
            }
        } else {
            // With a cached version at hand, an origin that cannot be reached
            // is not waited for: one connection attempt, then the cache.
            let cached = self.store.as_ref().and_then(|s| s.find_cached(key));
            let stat = match cached {
                Some(_) => self.origin.stat_quick(key),
                None => self.origin.stat(key),
            };
            match (stat, cached) {
                (Ok(info), _) => (info, true),
                (Err(e), Some(info)) if e.kind() == ErrorKind::Unreachable => {
                    log::log_once_per_process(
                        Level::Warn,
                        &format!("unreachable:{}", key.account),
                        &format!(
                            "the origin is unreachable ({e}); serving account {}'s blobs from the cache without checking their versions",
                            key.account
                        ),
                    );
                    (info, false)
                }
                (Err(e), _) => return Err(e),
            }
        };
        let dir = match &self.store {
            Some(s) => match s.open_version(key, &info, current) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.warn_store(&e);
                    None
                }
            },
            None => None,
        };
        // The store's recorded block size, which may differ from ours.
        let block_size = self
            .store
            .as_ref()
            .map_or(self.config.block_size, |s| s.block_size());
        let n = info.size.div_ceil(block_size) as usize;
        if let Some(d) = &dir {
            d.touch();
        }
        Ok(Entry {
            key: key.clone(),
            info,
            dir,
            slots: (0..n).map(|_| Slot::default()).collect(),
            flights: Mutex::new(HashMap::new()),
            stalled: Mutex::new(HashMap::new()),
            last_touch: AtomicU64::new(now_secs()),
            block_size,
        })
    }

    /// Forgets `entry` so the next read asks the origin again.
    fn invalidate(&self, entry: &Arc<Entry>) {
        let mut shard = self.shard(&entry.key).write_locked();
        if shard.get(&entry.key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            shard.remove(&entry.key);
        }
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

    /// Block `index` of `entry`, open: from its slot, or opened from disk
    /// (published by another process or an earlier lifecycle) within the
    /// budget. `None` when it is not on disk or is damaged (a fill replaces
    /// it).
    fn block(&self, entry: &Entry, index: u64) -> Option<Arc<Open>> {
        let slot = &entry.slots[index as usize];
        if let Some(b) = slot.get() {
            return Some(b);
        }
        let dir = entry.dir.as_ref()?;
        match self.open_block(dir, index, false) {
            Ok(Some(b)) => Some(self.budget.insert(&entry.slots, index as usize, b)),
            Ok(None) => {
                slot.set_on_disk(false);
                None
            }
            Err(_) => None,
        }
    }

    /// Opens published block `index` of `dir`: mapped if it can be; when
    /// the process is out of address space or memory maps, after closing
    /// half of this cache's blocks, and failing that with `pread` (never
    /// taken for damage).
    fn open_block(
        &self,
        dir: &VersionDir,
        index: u64,
        populate: bool,
    ) -> std::result::Result<Option<Open>, OpenError> {
        match dir.map_block(index, populate) {
            Err(OpenError::CannotMap(e)) => {
                self.budget.halve();
                match dir.map_block(index, populate) {
                    Err(OpenError::CannotMap(_)) => {
                        log::log_once(
                            Level::Warn,
                            "cannot-map",
                            &format!(
                                "{e}; reading cached blocks with pread instead (the process is out of address space or memory maps: check `ulimit -v` and vm.max_map_count; BLOBCACHE_MAPPED_BLOCKS and BLOBCACHE_MAPPED_BYTES bound the cache's own)"
                            ),
                        );
                        Ok(dir.file_block(index)?.map(Open::File))
                    }
                    r => Ok(r?.map(Open::Mapped)),
                }
            }
            r => Ok(r?.map(Open::Mapped)),
        }
    }

    fn read(self: &Arc<Self>, key: &BlobKey, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Shutdown, "the library was shut down"));
        }
        let len = buf.len() as u64;
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::new(
                ErrorKind::OutOfRange,
                "offset + length overflows a 64-bit byte count",
            )
        })?;
        let entry = self.entry(key)?;
        if end > entry.info.size {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "the range ends past the end of the blob, which has {} bytes",
                    entry.info.size
                ),
            ));
        }
        let bs = entry.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;

        // The blocks, open; `None` for those still missing.
        let mut blocks: Vec<Option<Arc<Open>>> =
            (first..=last).map(|i| self.block(&entry, i)).collect();
        let missing: Vec<u64> = (first..=last)
            .zip(&blocks)
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut passthrough = Vec::new();
        if !missing.is_empty() {
            self.stats.misses.add(1);
            let t0 = Instant::now();
            let results = self.fill_each(&entry, &missing);
            self.stats
                .origin_wait_ns
                .add(t0.elapsed().as_nanos() as u64);
            for (i, r) in missing.iter().zip(results) {
                match r {
                    Ok(b) => blocks[(i - first) as usize] = Some(b),
                    Err(e) if e.kind() == ErrorKind::Store => {
                        self.warn_store(&e);
                        passthrough.push(*i);
                    }
                    Err(e) if e.kind() == ErrorKind::PeerStalled => {
                        log::log_once(
                            Level::Warn,
                            &format!("stalled:{}:{i}", entry.key),
                            &format!("block {i} of {}: {e}", entry.key),
                        );
                        passthrough.push(*i);
                    }
                    Err(e) => {
                        if e.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        return Err(e);
                    }
                }
            }
        } else {
            self.stats.hits.add(1);
        }

        // Copy out.
        let mut from_cache = 0u64;
        for (i, block) in (first..=last).zip(&blocks) {
            let (bstart, bend) = entry.block_range(i);
            let s = offset.max(bstart);
            let e = end.min(bend);
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match block {
                Some(b) => {
                    b.copy_to((s - bstart) as usize, dst)?;
                    from_cache += e - s;
                }
                None if passthrough.contains(&i) => {
                    self.stats.passthrough_reads.add(1);
                    let mut pos = 0usize;
                    let r = origin::read_exact(
                        &*self.origin,
                        key,
                        &entry.info,
                        s,
                        e - s,
                        &mut |c: &[u8]| {
                            dst[pos..pos + c.len()].copy_from_slice(c);
                            pos += c.len();
                            Ok(())
                        },
                    );
                    if let Err(err) = r {
                        self.stats.origin_errors.add(1);
                        if err.kind() == ErrorKind::Changed {
                            self.invalidate(&entry);
                        }
                        return Err(err);
                    }
                    self.stats.bytes_from_origin.add(e - s);
                }
                None => {
                    return Err(Error::internal(format!(
                        "block {i} was neither filled nor read from the origin"
                    )))
                }
            }
        }
        drop(blocks);
        self.stats.bytes_from_cache.add(from_cache);
        self.readahead(&entry, first, last);
        let now = now_secs();
        if now.saturating_sub(entry.last_touch.load(Ordering::Relaxed)) >= TOUCH_EVERY_SECS {
            entry.last_touch.store(now, Ordering::Relaxed);
            if let Some(d) = &entry.dir {
                d.touch();
            }
        }
        Ok(())
    }

    /// Fills `indices` in parallel; returns one result per index: the block,
    /// open. A block already being filled in this process is waited for,
    /// not fetched again; if a readahead fill of it failed, it is tried once
    /// more here.
    fn fill_each(self: &Arc<Self>, entry: &Arc<Entry>, indices: &[u64]) -> Vec<Result<Arc<Open>>> {
        if self.config.offline {
            return indices
                .iter()
                .map(|&i| {
                    let (s, e) = entry.block_range(i);
                    Err(Error::new(
                        ErrorKind::Offline,
                        format!(
                            "bytes {s}..{e} (block {i}) are not in the cache and BLOBCACHE_OFFLINE=1 forbids contacting the origin"
                        ),
                    ))
                })
                .collect();
        }
        if entry.dir.is_none() {
            let why = self
                .store_problem
                .clone()
                .unwrap_or_else(|| "the blob's cache directory is unusable".into());
            return indices
                .iter()
                .map(|_| Err(Error::store(why.clone())))
                .collect();
        }
        let flights: Vec<Arc<Flight>> = indices
            .iter()
            .map(|&i| self.join_flight(entry, i, false))
            .collect();
        flights
            .iter()
            .zip(indices)
            .map(|(f, &i)| {
                let r = match f.wait() {
                    (Err(e), true) if e.kind() != ErrorKind::Shutdown => {
                        if self.block(entry, i).is_some() {
                            Ok(())
                        } else {
                            self.join_flight(entry, i, false).wait().0
                        }
                    }
                    (r, _) => r,
                };
                r?;
                // The fill put it in its slot; the budget may have closed it
                // since (then it is opened again from disk).
                self.block(entry, i).ok_or_else(|| {
                    Error::store(format!(
                        "block {i} was filled but is not readable (removed by another process?); retry the read"
                    ))
                })
            })
            .collect()
    }

    /// The flight filling block `index` of `entry`, queueing one (with a
    /// job on the demand or readahead queue) when there is none. A demand
    /// for a block whose readahead job has not started yet queues a demand
    /// job for the same flight, so it does not wait behind readahead.
    fn join_flight(self: &Arc<Self>, entry: &Arc<Entry>, index: u64, ahead: bool) -> Arc<Flight> {
        let (flight, queue) = {
            let mut flights = entry.flights.locked();
            match flights.get(&index) {
                Some(f) => (f.clone(), !ahead && !f.started.load(Ordering::Acquire)),
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(index, f.clone());
                    (f, true)
                }
            }
        };
        if queue {
            let job = FlightJob {
                inner: self.clone(),
                entry: entry.clone(),
                index,
                flight: flight.clone(),
                ahead,
                running: false,
                finished: false,
            };
            if ahead {
                self.pool.ahead(Box::new(move || job.run()));
            } else {
                // The flight carries the result; the pool's ticket is not needed.
                let _ = self.pool.demand(Box::new(move || job.run()));
            }
        }
        flight
    }

    fn fill(self: &Arc<Self>, entry: &Arc<Entry>, indices: &[u64]) -> Result<()> {
        for r in self.fill_each(entry, indices) {
            r?;
        }
        Ok(())
    }

    fn readahead(self: &Arc<Self>, entry: &Arc<Entry>, first: u64, last: u64) {
        let n = self.config.readahead_blocks;
        if n == 0 || entry.dir.is_none() || self.config.offline {
            return;
        }
        // Sequential if the block before this read is already here or being
        // filled: a stream moving forward (several streams may interleave,
        // as the streamer's readers of one file do).
        let sequential = first > 0
            && (entry.known_present(first - 1)
                || entry.flights.locked().contains_key(&(first - 1)));
        if !sequential && first != 0 {
            return;
        }
        let count = entry.block_count();
        for i in (last + 1)..(last + 1 + n).min(count) {
            // Already here or being filled?
            if entry.known_present(i) || entry.flights.locked().contains_key(&i) {
                continue;
            }
            self.join_flight(entry, i, true);
        }
    }

    /// How long a fill held by another process may go without progress
    /// before readers stop waiting for it and read the range straight from
    /// the origin: a sixth of the fetch timeout, from 1 s to 5 s.
    fn stall_bound(&self) -> Duration {
        (self.config.fetch_timeout / 6).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// How long a reader that found a block's fill stalled skips waiting for
    /// it again.
    const STALLED_FOR: Duration = Duration::from_secs(30);

    /// Takes the fill lock of block `index`, waiting for another thread or
    /// process that holds it. Gives up with a `PeerStalled` error when the
    /// holder's fill makes no progress for [`Inner::stall_bound`] or takes
    /// longer than the fetch timeout in all (the caller then reads the
    /// range straight from the origin), and with `Shutdown` at shutdown.
    fn lock_fill(
        &self,
        entry: &Entry,
        dir: &VersionDir,
        index: u64,
    ) -> Result<crate::store::BlockLock> {
        let recently_stalled = entry
            .stalled
            .locked()
            .get(&index)
            .is_some_and(|t| t.elapsed() < Self::STALLED_FOR);
        let stall = self.stall_bound();
        let total = self.config.fetch_timeout;
        let mut progress = dir.fill_progress(index);
        let mut last_change = Duration::ZERO;
        let mut last_check = Duration::ZERO;
        let stalled = |why: String| Error::new(ErrorKind::PeerStalled, why);
        let r = dir.lock_block(index, &mut |waited| {
            if self.stopped.load(Ordering::Relaxed) {
                return Some(Error::new(
                    ErrorKind::Shutdown,
                    "the library was shut down while waiting for another reader to fill the block",
                ));
            }
            if recently_stalled {
                return Some(stalled(
                    "another process holds its fill and made no progress recently; reading the range straight from the origin".into(),
                ));
            }
            if waited - last_check >= Duration::from_millis(200) {
                last_check = waited;
                let now = dir.fill_progress(index);
                if now != progress {
                    progress = now;
                    last_change = waited;
                }
            }
            if waited - last_change > stall {
                return Some(stalled(format!(
                    "another process has held its fill for {:.1} s without progress (stopped or frozen?); reading the range straight from the origin until it finishes",
                    waited.as_secs_f64()
                )));
            }
            (waited > total).then(|| {
                stalled(format!(
                    "another process has been filling it for {:.1} s, longer than BLOBCACHE_FETCH_TIMEOUT; reading the range straight from the origin",
                    waited.as_secs_f64()
                ))
            })
        });
        match r {
            Err(e) if e.kind() == ErrorKind::PeerStalled => {
                entry.stalled.locked().insert(index, Instant::now());
                Err(e)
            }
            r => {
                if r.is_ok() {
                    entry.stalled.locked().remove(&index);
                }
                r
            }
        }
    }

    /// Makes block `index` of `entry` present: opens it if published,
    /// otherwise takes its lock and fills it from the origin. Returns whether
    /// it fetched the block from the origin.
    fn fill_block(&self, entry: &Entry, index: u64) -> Result<bool> {
        if self.block(entry, index).is_some() {
            return Ok(false);
        }
        let dir = entry
            .dir
            .as_ref()
            .ok_or_else(|| Error::store("no cache directory"))?;
        let _lock = self.lock_fill(entry, dir, index)?;
        match self.open_block(dir, index, false) {
            Ok(Some(b)) => {
                self.budget.insert(&entry.slots, index as usize, b);
                return Ok(false);
            }
            Ok(None) => {}
            Err(OpenError::Damaged(e)) => {
                log::warning!("discarding a damaged cached block of {}: {e}", entry.key);
                dir.remove_block(index);
            }
            Err(e) => return Err(e.into_error()),
        }
        let len = dir.block_len(index);
        self.make_room(len, dir)?;
        let mut w = dir.writer(index)?;
        let (start, _) = entry.block_range(index);
        let t0 = Instant::now();
        let r = origin::read_exact(
            &*self.origin,
            &entry.key,
            &entry.info,
            start,
            len,
            &mut |c: &[u8]| w.write(c),
        );
        if let Err(e) = r {
            if e.kind() != ErrorKind::Store {
                self.stats.origin_errors.add(1);
            }
            return Err(e);
        }
        let block = w.publish()?;
        log::debug!(
            "filled block {index} of {} ({len} bytes) in {:.1} ms",
            entry.key,
            t0.elapsed().as_secs_f64() * 1000.0
        );
        self.stats.blocks_fetched.add(1);
        self.stats.bytes_from_origin.add(len);
        self.budget
            .insert(&entry.slots, index as usize, Open::from(block));
        self.added_since_scan.fetch_add(len, Ordering::Relaxed);
        let usage = self.usage.fetch_add(len, Ordering::Relaxed) + len;
        if usage > self.cap {
            self.wake_janitor();
        }
        Ok(true)
    }

    /// Makes sure `len` more bytes fit under the cap, evicting if needed.
    fn make_room(&self, len: u64, dir: &VersionDir) -> Result<()> {
        if len > self.cap {
            return Err(Error::store(format!(
                "BLOBCACHE_MAX_SIZE ({} bytes) is smaller than one block ({len} bytes)",
                self.cap
            )));
        }
        let fits = |usage: u64| usage + len <= self.cap;
        let recent = self.added_since_scan.load(Ordering::Relaxed) + len <= self.cap / 10;
        if fits(self.usage.load(Ordering::Relaxed)) && recent {
            return Ok(());
        }
        if let Some(store) = self.store.as_ref().filter(|_| !recent) {
            // Added a tenth of the cap since the last look: look again
            // (other processes fill the same store).
            self.note_scan(evict::scan(store.root(), store.file_mode()).bytes);
            if fits(self.usage.load(Ordering::Relaxed)) {
                return Ok(());
            }
        }
        let report = self.evict(Some(&dir.path));
        if report.after + len > self.cap {
            return Err(Error::store(format!(
                "the cache is full ({} of {} bytes in use) and nothing more can be evicted",
                report.after, self.cap
            )));
        }
        Ok(())
    }

    fn evict(&self, skip: Option<&std::path::Path>) -> evict::EvictReport {
        let Some(store) = &self.store else {
            return Default::default();
        };
        let target = self.cap / 10 * 9;
        let report = match evict::try_evict_lock(store.root(), store.file_mode()) {
            Some(_guard) => evict::evict_to(store.root(), store.file_mode(), target, skip),
            None => {
                // Someone else is evicting; count what is there now.
                let u = evict::scan(store.root(), store.file_mode()).bytes;
                evict::EvictReport {
                    before: u,
                    after: u,
                    blocks_removed: 0,
                }
            }
        };
        self.note_scan(report.after);
        if report.blocks_removed > 0 {
            self.stats.blocks_evicted.add(report.blocks_removed);
            log::debug!(
                "evicted {} blocks: {} -> {} bytes (cap {})",
                report.blocks_removed,
                report.before,
                report.after,
                self.cap
            );
            self.forget_removed_blocks();
        }
        report
    }

    /// Records the store's size as a scan just found it.
    fn note_scan(&self, usage: u64) {
        self.usage.store(usage, Ordering::Relaxed);
        self.added_since_scan.store(0, Ordering::Relaxed);
    }

    /// Drops entries that hold mappings of blocks no longer on disk, so
    /// their space returns once readers finish with them.
    fn forget_removed_blocks(&self) {
        for shard in self.entries.iter() {
            shard.write_locked().retain(|_, e| {
                let Some(dir) = &e.dir else { return true };
                e.slots.iter().enumerate().all(|(i, slot)| {
                    !slot.is_open() || crate::store::block::block_path(&dir.path, i as u64).exists()
                })
            });
        }
    }

    /// Adds this cache's counts since the last flush to the store's
    /// counters file (the janitor's period, and at shutdown).
    fn flush_stats(&self) {
        if let Some(store) = &self.store {
            self.persisted
                .flush(store.root(), store.file_mode(), self.stats.snapshot());
        }
    }

    fn wake_janitor(&self) {
        let (m, cv) = &self.janitor_wake;
        *m.locked() = true;
        cv.notify_one();
    }

    fn janitor(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        loop {
            {
                let (m, cv) = &self.janitor_wake;
                let mut woken = m.locked();
                if !*woken {
                    woken = cv.wait_on_for(woken, JANITOR_PERIOD);
                }
                *woken = false;
            }
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            self.flush_stats();
            let usage = evict::scan(store.root(), store.file_mode()).bytes;
            self.note_scan(usage);
            if usage > self.cap {
                self.evict(None);
            }
        }
    }
}
