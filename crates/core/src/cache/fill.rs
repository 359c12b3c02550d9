//! Filling blocks: on demand (in parallel, through the worker pool) and
//! ahead of a stream of reads. Each fill runs the store's fill-once
//! protocol ([`VersionDir::fill_once`]); the cache supplies how long to
//! wait for another filler, how to open a block, room under the cap and the
//! bytes from the origin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::{Entry, Flight, Landed};
use super::mapped::Open;
use super::Inner;
use crate::cluster::{Claim, Taken};
use crate::error::{Error, ErrorKind, Result};
use crate::log;
use crate::origin;
use crate::store::block::OpenError;
use crate::store::{BlockWriter, Fill, Filled, VersionDir};
use crate::sync::MutexExt;
/// A missing block a reader waits for: its fill in this process, or why
/// there is none.
pub(super) enum Pending {
    Flight(Arc<Flight>),
    Refused(Error),
}

/// What a reader of a missing block got from [`Inner::take`].
pub(super) enum Took {
    /// The block, filled and open; nothing copied yet.
    Block(Arc<Open>),
    /// The bytes asked for, copied: some or all of them as the fill
    /// brought them in.
    Copied,
}

impl Inner {
    /// Starts filling `indices` (in parallel, through the pool; a block
    /// already being filled in this process is joined, not fetched again).
    /// Returns what to wait on per index.
    pub(super) fn start_fills(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        indices: &[u64],
    ) -> Vec<Pending> {
        indices
            .iter()
            .map(|&i| {
                if self.config.offline {
                    let (s, e) = entry.block_range(i);
                    return Pending::Refused(Error::new(
                        ErrorKind::Offline,
                        format!(
                            "bytes {s}..{e} (block {i}) are not in the cache and BLOBCACHE_OFFLINE=1 forbids contacting the origin"
                        ),
                    ));
                }
                if entry.dir.is_none() {
                    return Pending::Refused(Error::store(
                        self.store_problem
                            .clone()
                            .unwrap_or_else(|| "the blob's cache directory is unusable".into()),
                    ));
                }
                Pending::Flight(self.join_flight(entry, i, false))
            })
            .collect()
    }

    /// Waits for the fill of block `index` to end; if it was a readahead
    /// fill and failed, it is tried once more (as a demand fill). Returns
    /// the block, open.
    fn land(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        index: u64,
        pending: Pending,
    ) -> Result<Arc<Open>> {
        let flight = match pending {
            Pending::Refused(e) => return Err(e),
            Pending::Flight(f) => f,
        };
        let (r, ahead) = flight.wait_end();
        self.landed(entry, index, r, ahead)
    }

    /// The block after its fill ended with `r` (run by a readahead job if
    /// `ahead`): open, or the error; a failed readahead is tried once more.
    fn landed(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        index: u64,
        r: Result<()>,
        ahead: bool,
    ) -> Result<Arc<Open>> {
        match r {
            Err(e) if ahead && e.kind() != ErrorKind::Shutdown => {
                if self.block(entry, index).is_none() {
                    self.join_flight(entry, index, false).wait_end().0?;
                }
            }
            r => r?,
        }
        // The fill put it in its slot; the budget may have closed it since
        // (then it is opened again from disk).
        self.block(entry, index).ok_or_else(|| {
            Error::store(format!(
                "block {index} was filled but is not readable (removed by another process?); retry the read"
            ))
        })
    }

    /// Bytes `[at, at + dst.len())` of block `index`, from its fill
    /// (`pending`): copied into `dst` piece by piece as the fill brings them
    /// in, when it shows them ([`Flight::wait_for`]); otherwise the block,
    /// open, once filled.
    pub(super) fn take(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        index: u64,
        pending: Pending,
        at: u64,
        dst: &mut [u8],
    ) -> Result<Took> {
        let flight = match pending {
            Pending::Refused(e) => return Err(e),
            Pending::Flight(f) => f,
        };
        let need = at + dst.len() as u64;
        let mut copied = 0usize;
        loop {
            match flight.wait_for(Some(at + copied as u64 + 1)) {
                Landed::Partly(growing) => {
                    let upto = growing.written().min(need);
                    let end = (upto - at) as usize;
                    growing.copy_to(at + copied as u64, &mut dst[copied..end])?;
                    copied = end;
                    if copied == dst.len() {
                        return Ok(Took::Copied);
                    }
                }
                Landed::Done(r, ahead) => {
                    let block = self.landed(entry, index, r, ahead)?;
                    if copied == 0 {
                        return Ok(Took::Block(block));
                    }
                    block.copy_to((at as usize) + copied, &mut dst[copied..])?;
                    return Ok(Took::Copied);
                }
            }
        }
    }

    /// Fills `indices` in parallel and waits for all of them.
    pub(super) fn fill(self: &Arc<Self>, entry: &Arc<Entry>, indices: &[u64]) -> Result<()> {
        let pending = self.start_fills(entry, indices);
        let mut first_error = None;
        for (&i, p) in indices.iter().zip(pending) {
            if let Err(e) = self.land(entry, i, p) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts fills of the blocks after `last` (up to `BLOBCACHE_READAHEAD`
    /// of them) when reads of `entry` move front to back. Called when a
    /// read is served, and (`at_miss`) as soon as a read misses: then the
    /// reach ramps up with the blocks landed so far (0, 1, 3, 7, 15, ...),
    /// so that a cold blob's first read does not share the origin's
    /// bandwidth with a full window of readahead.
    pub(super) fn readahead(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        first: u64,
        last: u64,
        at_miss: bool,
    ) {
        let mut n = self.config.readahead_blocks;
        if at_miss {
            let landed = entry.landed.load(Ordering::Relaxed).min(16);
            n = n.min((1u64 << landed) - 1);
        }
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

    /// Makes block `index` of `entry` present through the store's fill-once
    /// protocol (from the cluster tier if it has it, else from the origin),
    /// and puts it in its slot; shows its bytes as they are written to the
    /// readers of `flight`. Returns whether it fetched the block from the
    /// origin, and the claim to publish it in the cluster tier with (see
    /// [`Inner::publish`]).
    pub(super) fn fill_block(
        &self,
        entry: &Entry,
        index: u64,
        flight: Option<&Flight>,
    ) -> Result<(bool, Option<Claim>)> {
        // Open already (filled by another flight meanwhile): no disk lookup.
        if entry.slots[index as usize].get().is_some() {
            return Ok((false, None));
        }
        let dir = entry
            .dir
            .as_ref()
            .ok_or_else(|| Error::store("no cache directory"))?;
        let (start, end) = entry.block_range(index);
        let len = end - start;
        let t0 = Instant::now();
        let mut cluster = self.cluster.is_some();
        let mut tries = 0;
        let (r, fill) = loop {
            tries += 1;
            let mut fill = BlockFill::new(self, entry, index);
            fill.flight = flight.filter(|_| self.origin.streams_final_bytes());
            fill.cluster = cluster;
            let r = dir.fill_once(&entry.key, index, len, &mut fill);
            match (&r, fill.source) {
                // The tier failed while its bytes were copied: once more,
                // from the origin.
                (Err(_), Source::ClusterFailed) => cluster = false,
                // The copy did not match the tier's checksum: the tier's
                // block is removed, and the next try fetches it from the
                // origin and publishes it again (once; then the origin
                // alone, should a bad block be planted again).
                (Err(e), Source::Cluster) => {
                    let tier = self.cluster.as_ref().expect("copied from the tier");
                    tier.discard(&entry.cluster_dir, &entry.key, index, e);
                    cluster = tries < 2;
                }
                _ => break (r, fill),
            }
        };
        let mut fill = fill;
        let claim = fill.claim.take();
        let block = match r {
            Err(e) => {
                if let (Some(c), Some(tier)) = (claim, &self.cluster) {
                    tier.release(c);
                }
                if e.kind() == ErrorKind::PeerStalled {
                    entry.stalled.locked().insert(index, Instant::now());
                }
                return Err(e);
            }
            Ok(Filled::Found(b)) => {
                if let (Some(c), Some(tier)) = (claim, &self.cluster) {
                    tier.release(c);
                }
                self.budget.insert(&entry.slots, index as usize, b);
                entry.landed.fetch_add(1, Ordering::Relaxed);
                return Ok((false, None));
            }
            Ok(Filled::Written(block)) => block,
        };
        entry.landed.fetch_add(1, Ordering::Relaxed);
        if fill.source == Source::Cluster {
            self.stats.blocks_from_cluster.add(1);
            self.stats.bytes_from_cluster.add(len);
            log::debug!(
                "took block {index} of {} ({len} bytes) from the cluster tier in {:.1} ms",
                entry.key,
                t0.elapsed().as_secs_f64() * 1000.0
            );
            self.budget
                .insert(&entry.slots, index as usize, Open::from(block));
            self.account_added(len);
            return Ok((false, None));
        }
        log::debug!(
            "filled block {index} of {} ({len} bytes) in {:.1} ms",
            entry.key,
            t0.elapsed().as_secs_f64() * 1000.0
        );
        self.stats.blocks_fetched.add(1);
        self.stats.bytes_from_origin.add(len);
        self.budget
            .insert(&entry.slots, index as usize, Open::from(block));
        self.account_added(len);
        Ok((true, claim))
    }

    /// Counts `len` bytes added to the store, waking the janitor past the
    /// cap.
    fn account_added(&self, len: u64) {
        self.added_since_scan.fetch_add(len, Ordering::Relaxed);
        let usage = self.usage.fetch_add(len, Ordering::Relaxed) + len;
        if usage > self.cap {
            self.wake_janitor();
        }
    }

    /// Publishes block `index` of `entry`, just fetched from the origin,
    /// in the cluster tier (bounded; see [`Cluster::publish`]).
    pub(super) fn publish(&self, entry: &Entry, index: u64, claim: Claim) {
        let tier = self.cluster.as_ref().expect("a claim comes from the tier");
        match &entry.dir {
            Some(dir) => {
                let (start, end) = entry.block_range(index);
                tier.publish(claim, dir, end - start);
            }
            None => tier.release(claim),
        }
    }
}

/// Where a fill's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Origin,
    /// Copied from the cluster tier.
    Cluster,
    /// The cluster tier failed while its bytes were copied: the local
    /// block must be filled again from the origin.
    ClusterFailed,
}

/// How long a reader that found a block's fill stalled skips waiting for
/// it again.
const STALLED_FOR: Duration = Duration::from_secs(30);

/// The cache's part of one fill of one block (see [`Fill`]).
struct BlockFill<'a> {
    inner: &'a Inner,
    entry: &'a Entry,
    index: u64,
    /// The readers to show the bytes to as they are written.
    flight: Option<&'a Flight>,
    /// Another process's fill of this block stalled recently: do not wait
    /// for it again.
    recently_stalled: bool,
    stall: Duration,
    /// The sign of life of other fills of the block when waiting began
    /// (read at the first wait: an uncontended fill lists no directory).
    progress: Option<u128>,
    last_change: Duration,
    last_check: Duration,
    /// Whether to look in the cluster tier before the origin.
    cluster: bool,
    /// Where the bytes came from.
    source: Source,
    /// The right to publish the block in the cluster tier, once filled.
    claim: Option<Claim>,
}

impl<'a> BlockFill<'a> {
    fn new(inner: &'a Inner, entry: &'a Entry, index: u64) -> BlockFill<'a> {
        BlockFill {
            recently_stalled: entry
                .stalled
                .locked()
                .get(&index)
                .is_some_and(|t| t.elapsed() < STALLED_FOR),
            stall: inner.stall_bound(),
            progress: None,
            last_change: Duration::ZERO,
            last_check: Duration::ZERO,
            inner,
            entry,
            index,
            flight: None,
            cluster: false,
            source: Source::Origin,
            claim: None,
        }
    }
}

impl Fill for BlockFill<'_> {
    type Open = Open;

    /// Gives up with a `PeerStalled` error when the holder's fill makes no
    /// progress for [`Inner::stall_bound`] or takes longer than the fetch
    /// timeout in all (the caller then reads the range straight from the
    /// origin), and with `Shutdown` at shutdown.
    fn give_up(&mut self, dir: &VersionDir, waited: Duration) -> Option<Error> {
        let stalled = |why: String| Error::new(ErrorKind::PeerStalled, why);
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Some(Error::new(
                ErrorKind::Shutdown,
                "the library was shut down while waiting for another reader to fill the block",
            ));
        }
        if self.recently_stalled {
            return Some(stalled(
                "another process holds its fill and made no progress recently; reading the range straight from the origin".into(),
            ));
        }
        let progress = *self
            .progress
            .get_or_insert_with(|| dir.fill_progress(self.index));
        if waited - self.last_check >= Duration::from_millis(200) {
            self.last_check = waited;
            let now = dir.fill_progress(self.index);
            if now != progress {
                self.progress = Some(now);
                self.last_change = waited;
            }
        }
        if waited - self.last_change > self.stall {
            return Some(stalled(format!(
                "another process has held its fill for {:.1} s without progress (stopped or frozen?); reading the range straight from the origin until it finishes",
                waited.as_secs_f64()
            )));
        }
        (waited > self.inner.config.fetch_timeout).then(|| {
            stalled(format!(
                "another process has been filling it for {:.1} s, longer than BLOBCACHE_FETCH_TIMEOUT; reading the range straight from the origin",
                waited.as_secs_f64()
            ))
        })
    }

    fn locked(&mut self) {
        self.entry.stalled.locked().remove(&self.index);
    }

    fn open(&mut self, dir: &VersionDir) -> std::result::Result<Option<Open>, OpenError> {
        let (start, end) = self.entry.block_range(self.index);
        self.inner.open_block(dir, self.index, end - start, false)
    }

    fn reserve(&mut self, len: u64) -> Result<()> {
        self.inner.make_room(
            len,
            self.entry.dir.as_ref().expect("filling in a directory"),
        )
    }

    fn write(&mut self, w: &mut BlockWriter) -> Result<()> {
        let (start, end) = self.entry.block_range(self.index);
        if let Some(tier) = self.inner.cluster.as_ref().filter(|_| self.cluster) {
            let e = self.entry;
            match tier.take(&e.cluster_dir, &e.key, &e.info, self.index, end - start, w)? {
                Taken::Copied => {
                    self.source = Source::Cluster;
                    return Ok(());
                }
                Taken::Claimed(c) => self.claim = Some(c),
                Taken::Origin => {}
                Taken::Restart(e) => {
                    self.source = Source::ClusterFailed;
                    return Err(e);
                }
            }
        }
        // Readers may take the bytes as they are written. (When the block
        // cannot be mapped for them, they wait for all of it.)
        let flight = self
            .flight
            .filter(|f| w.growing().map(|g| f.growing(g)).is_some());
        let r = origin::read_exact(
            &*self.inner.origin,
            &self.entry.key,
            &self.entry.info,
            start,
            end - start,
            &mut |c: &[u8]| {
                w.write(c)?;
                if let Some(f) = flight {
                    f.wrote();
                }
                Ok(())
            },
        );
        if let Err(e) = &r {
            if e.kind() != ErrorKind::Store {
                self.inner.stats.origin_errors.add(1);
            }
        }
        r
    }
}
