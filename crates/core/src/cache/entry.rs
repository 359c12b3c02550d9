//! A blob's entry (its size, version, blocks and version directory, as this
//! process knows them) and single-flight: one fill per block in this
//! process, waited for by every reader of the block.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use super::mapped::Slot;
use super::{now_secs, Inner};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use crate::names::BlobKey;
use crate::origin::ObjectInfo;
use crate::store::block::Growing;
use crate::store::VersionDir;
use crate::sync::{CondvarExt, MutexExt, RwLockExt};

/// One blob at one version, as this process knows it.
pub struct Entry {
    pub key: BlobKey,
    pub info: ObjectInfo,
    pub(super) dir: Option<VersionDir>,
    /// The blob's version directory in the cluster tier, once opened.
    pub(super) cluster_dir: OnceLock<VersionDir>,
    pub(super) slots: Arc<[Slot]>,
    /// Fills of this entry's blocks running or queued in this process, by
    /// block index: a second reader of a block waits for the first one's
    /// fill instead of occupying a worker with a fill of its own.
    pub(super) flights: Mutex<HashMap<u64, Arc<Flight>>>,
    /// Blocks whose fill another process holds without progress, and when
    /// that was found: reads of them go straight to the origin for a while
    /// without waiting again.
    pub(super) stalled: Mutex<HashMap<u64, Instant>>,
    pub(super) last_touch: AtomicU64,
    /// Blocks this process's fills of this entry have landed (fetched or
    /// found published): how far readahead started with a miss may reach
    /// ([`Inner::readahead`]).
    pub(super) landed: AtomicU64,
    pub(super) block_size: u64,
}

impl Entry {
    pub fn block_count(&self) -> u64 {
        self.slots.len() as u64
    }

    pub(super) fn block_range(&self, index: u64) -> (u64, u64) {
        let start = index * self.block_size;
        (start, (start + self.block_size).min(self.info.size))
    }

    /// Whether block `index` is open or known to be on disk (cheap).
    pub(super) fn known_present(&self, index: u64) -> bool {
        self.slots[index as usize].known_on_disk()
    }
}

/// One fill of one block in this process, waited for by every reader of
/// the block. Jobs of two kinds may be queued for it (a readahead job, then a
/// demand job when a reader needs the block before readahead got to it); the
/// first to start runs the fill, the other finds it started and returns.
///
/// While the fill writes the block, readers need not wait for all of it: the
/// fill shows the block as it is written ([`Growing`]: mapped, with the
/// count of bytes written), and readers copy the bytes they need out of it
/// as they come in ([`Flight::wait_for`]). Only fills from an origin whose
/// bytes are final as they arrive
/// ([`crate::origin::Origin::streams_final_bytes`]) show them.
#[derive(Default)]
pub(super) struct Flight {
    pub(super) started: AtomicBool,
    state: Mutex<FlightState>,
    cv: Condvar,
}

#[derive(Default)]
struct FlightState {
    /// The fill's result, and whether a readahead job ran it.
    result: Option<(Result<()>, bool)>,
    /// The block while the fill writes it.
    growing: Option<Arc<Growing>>,
    /// Readers waiting for bytes of `growing`.
    waiting: usize,
}

/// What a reader waiting on a flight got.
pub(super) enum Landed {
    /// The fill ended: its result, and whether a readahead job ran it.
    Done(Result<()>, bool),
    /// The fill is still writing the block, and the first bytes asked for
    /// are in.
    Partly(Arc<Growing>),
}

impl Flight {
    /// Waits until the fill ended, or (with `Some(n)`) until the first `n`
    /// bytes of the block are written, whichever comes first. Once every
    /// byte is written the fill is about to end (publishing the block), and
    /// that end is waited for: a reader returns early only while the block
    /// is still coming in.
    pub(super) fn wait_for(&self, first: Option<u64>) -> Landed {
        let mut g = self.state.locked();
        loop {
            if let Some((r, ahead)) = &g.result {
                return Landed::Done(r.clone(), *ahead);
            }
            if let (Some(n), Some(growing)) = (first, &g.growing) {
                let written = growing.written();
                if written >= n && written < growing.len() {
                    return Landed::Partly(growing.clone());
                }
            }
            g.waiting += 1;
            g = self.cv.wait_on(g);
            g.waiting -= 1;
        }
    }

    /// Waits until the fill ended: its result, and whether a readahead job
    /// ran it.
    pub(super) fn wait_end(&self) -> (Result<()>, bool) {
        match self.wait_for(None) {
            Landed::Done(r, ahead) => (r, ahead),
            Landed::Partly(_) => unreachable!("wait_for(None) waits for the end"),
        }
    }

    /// The fill began writing the block.
    pub(super) fn growing(&self, growing: Arc<Growing>) {
        self.state.locked().growing = Some(growing);
    }

    /// The fill has written more bytes: wakes the readers waiting for some.
    pub(super) fn wrote(&self) {
        let g = self.state.locked();
        if g.waiting > 0 {
            drop(g);
            self.cv.notify_all();
        }
    }

    fn end(&self, r: Result<()>, ahead: bool) {
        let mut g = self.state.locked();
        g.result = Some((r, ahead));
        g.growing = None;
        drop(g);
        self.cv.notify_all();
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
    fn run(mut self) {
        if self.flight.started.swap(true, Ordering::AcqRel) {
            self.finished = true; // run (or running) by another job
            return;
        }
        self.running = true;
        let r = self
            .inner
            .fill_block(&self.entry, self.index, Some(&self.flight));
        let (r, claim) = match r {
            Ok((fetched, claim)) => (Ok(fetched), claim),
            Err(e) => (Err(e), None),
        };
        match &r {
            Ok(true) if self.ahead => self.inner.stats.readahead_blocks.add(1),
            Err(e) if self.ahead => log::debug!(
                "readahead of block {} of {} failed: {e}",
                self.index,
                self.entry.key
            ),
            _ => {}
        }
        self.finish(r.map(|_| ()));
        // The readers have the block: now the other nodes get it too.
        if let Some(claim) = claim {
            self.inner.publish(&self.entry, self.index, claim);
        }
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
        self.flight.end(r, self.ahead);
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

impl Inner {
    /// The entry of `key`, looked up at the origin on first use. One
    /// lookup per blob at a time: readers that come meanwhile (the
    /// streamer's threads start on a file together) wait for it and share
    /// its answer, entry or error, instead of each asking the origin.
    pub(super) fn entry(&self, key: &BlobKey) -> Result<Arc<Entry>> {
        if let Some(e) = self.shard(key).read_locked().get(key) {
            return Ok(e.clone());
        }
        // The version check of a first access waits on the origin too.
        let t0 = Instant::now();
        let r = self.entry_once(key);
        self.stats
            .origin_wait_ns
            .add(t0.elapsed().as_nanos() as u64);
        r
    }

    fn entry_once(&self, key: &BlobKey) -> Result<Arc<Entry>> {
        let slot = Arc::new(Mutex::new(None));
        let mut answer = slot.locked();
        let joined = {
            let mut opening = self.opening.locked();
            match opening.get(key) {
                Some(other) => Some(other.clone()),
                None => {
                    opening.insert(key.clone(), slot.clone());
                    None
                }
            }
        };
        if let Some(other) = joined {
            drop(answer);
            // Its opener holds it until the answer is in (`None` only if
            // the opener panicked: then look it up here).
            if let Some(r) = other.locked().clone() {
                return r;
            }
            return self.open_and_share(key);
        }
        let r = self.open_and_share(key);
        *answer = Some(r.clone());
        self.opening.locked().remove(key);
        r
    }

    /// Looks `key` up at the origin and puts its entry in the shard.
    fn open_and_share(&self, key: &BlobKey) -> Result<Arc<Entry>> {
        if let Some(e) = self.shard(key).read_locked().get(key) {
            return Ok(e.clone());
        }
        let entry = Arc::new(self.open_entry(key)?);
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
            cluster_dir: OnceLock::new(),
            slots: (0..n).map(|_| Slot::default()).collect(),
            flights: Mutex::new(HashMap::new()),
            stalled: Mutex::new(HashMap::new()),
            last_touch: AtomicU64::new(now_secs()),
            landed: AtomicU64::new(0),
            block_size,
        })
    }

    /// Forgets `entry` so the next read asks the origin again.
    pub(super) fn invalidate(&self, entry: &Arc<Entry>) {
        let mut shard = self.shard(&entry.key).write_locked();
        if shard.get(&entry.key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            shard.remove(&entry.key);
        }
    }

    /// The flight filling block `index` of `entry`, queueing one (with a
    /// job on the demand or readahead queue) when there is none. A demand
    /// for a block whose readahead job has not started yet queues a demand
    /// job for the same flight, so it does not wait behind readahead.
    pub(super) fn join_flight(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        index: u64,
        ahead: bool,
    ) -> Arc<Flight> {
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
            // The flight carries the result to its readers.
            if ahead {
                self.pool.ahead(Box::new(move || job.run()));
            } else {
                self.pool.demand(Box::new(move || job.run()));
            }
        }
        flight
    }
}
