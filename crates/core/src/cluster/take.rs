//! Taking one block from the cluster tier, or the right to fill it there.
//!
//! The work on the tier's filesystem runs on a thread of its own
//! ([`find_or_claim`]), which reports through a channel; the fill's thread
//! ([`Cluster::take`]) writes the bytes it sends into the local block and
//! gives up on it when an answer does not come within the bound.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::claims::{Claims, Watch};
use super::{Cluster, Tier};
use crate::error::{Error, Result};
use crate::log;
use crate::names::BlobKey;
use crate::origin::ObjectInfo;
use crate::store::block::{self, OpenError};
use crate::store::lock::BlockLock;
use crate::store::{BlockWriter, VersionDir};

/// Bytes sent from the tier's thread at a time.
const CHUNK: usize = 1 << 20;
/// How often a node waiting for another node's fill of a block looks again
/// (the longest pause; it starts at a tenth of it).
const WAIT_POLL: Duration = Duration::from_millis(250);

/// What the fill got from [`Cluster::take`].
pub(crate) enum Taken {
    /// The block's bytes were copied into the local block, and the writer
    /// told the checksum they must match.
    Copied,
    /// Not in the tier: this node fetches it from the origin and then
    /// publishes it ([`Cluster::publish`]) with the lock the claim holds.
    Claimed(Claim),
    /// Fetch it from the origin without publishing (the tier is down,
    /// another node holds the block too long, or shutdown).
    Origin,
    /// Some bytes from the tier went into the local block before the tier
    /// failed: the local block must be started afresh, without the tier.
    Restart(Error),
}

/// The right to publish a block in the tier: its lock and its claim,
/// held. Dropped (on a thread that may block on the mount), it removes the
/// claim and releases the lock.
pub(crate) struct Claim {
    pub(super) dir: VersionDir,
    pub(super) index: u64,
    _lock: BlockLock,
    pub(super) tier: Arc<Tier>,
    path: PathBuf,
    claims: Arc<Claims>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.forget(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the tier's thread reports.
enum Msg {
    /// The blob's version directory in the tier, open.
    Dir(VersionDir),
    /// Still waiting for another node's fill of the block.
    Waiting,
    /// A published block of the tier did not verify and was removed.
    Damaged(String),
    Bytes(Vec<u8>),
    /// Every byte was sent; they must match this checksum (XXH3-128, as
    /// the local block's trailer records it).
    End([u8; 32]),
    Claimed(Claim),
    /// Another node has held the block's lock past the fetch timeout.
    Busy,
    Failed(Error),
}

/// What [`find_or_claim`] works with.
struct Job {
    tier: Arc<Tier>,
    dir: Option<VersionDir>,
    key: BlobKey,
    info: ObjectInfo,
    index: u64,
    len: u64,
    wait: Duration,
    stopped: Arc<AtomicBool>,
    claims: Arc<Claims>,
}

impl Cluster {
    /// Fills the local block `w` (block `index` of `key` at version `info`,
    /// `len` bytes) from the tier if it has it; otherwise says how the fill
    /// should go on. `dir` keeps the blob's version directory in the tier
    /// between blocks. `Err` only for a failure of the local block.
    pub(crate) fn take(
        &self,
        dir: &OnceLock<VersionDir>,
        key: &BlobKey,
        info: &ObjectInfo,
        index: u64,
        len: u64,
        w: &mut BlockWriter,
    ) -> Result<Taken> {
        let Some(tier) = self.tier() else {
            self.stats.cluster_fallbacks.add(1);
            return Ok(Taken::Origin);
        };
        let job = Job {
            tier,
            dir: dir.get().cloned(),
            key: key.clone(),
            info: info.clone(),
            index,
            len,
            wait: self.fetch_timeout,
            stopped: self.io.stop_flag(),
            claims: self.claims.clone(),
        };
        let call = match self.io.start(move |tx| find_or_claim(job, &tx)) {
            Ok(c) => c,
            Err(u) => return Ok(self.fall_back(&u.describe(), false)),
        };
        let mut copied = 0u64;
        loop {
            let msg = match call.next(self.op_bound) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    let why = "could not be used: its I/O thread ended without an answer";
                    return Ok(self.fall_back(why, copied > 0));
                }
                Err(u) => return Ok(self.fall_back(&u.describe(), copied > 0)),
            };
            // Every message but these is the thread's last.
            if !matches!(
                msg,
                Msg::Dir(_) | Msg::Waiting | Msg::Damaged(_) | Msg::Bytes(_)
            ) {
                call.done();
            }
            match msg {
                Msg::Dir(d) => {
                    let _ = dir.set(d);
                }
                Msg::Waiting => {}
                Msg::Damaged(why) => {
                    self.stats.cluster_damaged.add(1);
                    log::warning!(
                        "block {index} of {key} in the cluster tier {} did not verify and was removed; filling it again: {why}",
                        self.describe()
                    );
                }
                Msg::Bytes(b) => {
                    w.write(&b)?;
                    copied += b.len() as u64;
                }
                Msg::End(sum) if copied == len => {
                    w.expect(sum);
                    return Ok(Taken::Copied);
                }
                Msg::End(_) => {
                    let why = format!("sent {copied} bytes of a block of {len}");
                    return Ok(self.fall_back(&why, copied > 0));
                }
                Msg::Claimed(c) => {
                    // Until published or released (see `Cluster::shutdown`).
                    self.publishing.fetch_add(1, Ordering::AcqRel);
                    return Ok(Taken::Claimed(c));
                }
                Msg::Busy => {
                    self.stats.cluster_fallbacks.add(1);
                    log::debug!(
                        "another node has held block {index} of {key} in the cluster tier for longer than BLOBCACHE_FETCH_TIMEOUT; fetching it from the origin"
                    );
                    return Ok(Taken::Origin);
                }
                Msg::Failed(e) => return Ok(self.fall_back(e.message(), copied > 0)),
            }
        }
    }

    /// The tier failed: down it goes, and the fill goes to the origin
    /// (afresh, if the local block got some of the tier's bytes).
    fn fall_back(&self, why: &str, restart: bool) -> Taken {
        self.stats.cluster_fallbacks.add(1);
        if self.io.stopped() {
            return Taken::Origin;
        }
        self.down(why);
        if restart {
            Taken::Restart(Error::store(format!(
                "the cluster tier {} failed while a block was copied from it: {why}",
                self.describe()
            )))
        } else {
            Taken::Origin
        }
    }

    /// The local copy of block `index` did not match the checksum the
    /// tier recorded (`why`): removes the tier's block (bounded), so the
    /// next fill fetches it from the origin and publishes it again.
    pub(crate) fn discard(
        &self,
        dir: &OnceLock<VersionDir>,
        key: &BlobKey,
        index: u64,
        why: &Error,
    ) {
        self.stats.cluster_damaged.add(1);
        log::warning!(
            "block {index} of {key} in the cluster tier {} did not verify; removing it and filling it again: {why}",
            self.describe()
        );
        if let Some(d) = dir.get().cloned() {
            if let Err(u) = self.io.call(self.op_bound, move || d.remove_block(index)) {
                self.down(&u.describe());
            }
        }
    }

    /// Releases a claim without publishing (the fill failed), on a thread
    /// of its own: unlocking on a hung mount may block.
    pub(crate) fn release(&self, claim: Claim) {
        self.io.detach(move || drop(claim));
        self.publishing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// On the tier's thread: finds block `index` published in the tier and
/// sends its bytes, or claims it, or waits for another node that holds it.
fn find_or_claim(job: Job, tx: &SyncSender<Msg>) {
    if let Err(e) = find_or_claim_in(job, tx) {
        let _ = tx.send(Msg::Failed(e));
    }
}

fn find_or_claim_in(job: Job, tx: &SyncSender<Msg>) -> Result<()> {
    // The directory this process opened may have been evicted since by
    // another node: then it is made again.
    let dir = match job.dir.clone().filter(|d| d.path().is_dir()) {
        Some(d) => d,
        None => {
            let d = job.tier.store.open_version(&job.key, &job.info, false)?;
            // Used now: the tier's eviction goes by this time.
            d.touch();
            let _ = tx.send(Msg::Dir(d.clone()));
            d
        }
    };
    let start = Instant::now();
    let mut pause = WAIT_POLL / 25;
    let claim = dir.claim_path(job.index);
    // Another node's claim being waited for (its lock did not exclude us).
    let mut watch: Option<Watch> = None;
    loop {
        if job.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        if send_if_published(&dir, &job, tx)? {
            return Ok(());
        }
        // While a claim is fresh, only the block and the claim are looked
        // at (two cheap lookups a poll, however many nodes wait).
        let fresh = match watch.as_mut().map(|w| w.stale(&claim)) {
            Some(false) => true,
            Some(true) => {
                if claim.exists() {
                    log::debug!(
                        "taking over the stale claim {} (its node stopped keeping it fresh)",
                        claim.display()
                    );
                    let _ = std::fs::remove_file(&claim);
                }
                watch = None;
                false
            }
            None => false,
        };
        if !fresh {
            if let Some(lock) = dir.try_lock_block(job.index)? {
                match claim_it(&dir, &job, &claim, lock, tx)? {
                    Claimed::Ours(held) => {
                        let _ = tx.send(Msg::Claimed(held));
                        return Ok(());
                    }
                    Claimed::Published => return Ok(()),
                    // Another node's claim, though its lock did not
                    // exclude us: waited for as a lock is, unless it goes
                    // stale.
                    Claimed::Theirs => watch = Some(Watch::default()),
                }
            }
        }
        if start.elapsed() > job.wait {
            let _ = tx.send(Msg::Busy);
            return Ok(());
        }
        if tx.send(Msg::Waiting).is_err() {
            return Ok(()); // the fill gave up
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(WAIT_POLL);
    }
}

/// What [`claim_it`] did.
enum Claimed {
    Ours(Claim),
    /// The block was published meanwhile, and sent.
    Published,
    /// Another node holds the claim.
    Theirs,
}

/// With the block's lock held: claims the block unless it was published
/// meanwhile or another node holds its claim.
fn claim_it(
    dir: &VersionDir,
    job: &Job,
    claim: &std::path::Path,
    lock: BlockLock,
    tx: &SyncSender<Msg>,
) -> Result<Claimed> {
    // Published between the look and the lock?
    if send_if_published(dir, job, tx)? {
        return Ok(Claimed::Published);
    }
    let created = job
        .claims
        .create(claim, job.tier.store.file_mode())
        .map_err(|e| crate::error::io_error("cannot create", claim, &e))?;
    if !created {
        return Ok(Claimed::Theirs);
    }
    job.claims.hold(claim.to_path_buf(), &job.stopped);
    let held = Claim {
        dir: dir.clone(),
        index: job.index,
        _lock: lock,
        tier: job.tier.clone(),
        path: claim.to_path_buf(),
        claims: job.claims.clone(),
    };
    // A node that published the block renamed it into place before it
    // removed its claim: once ours is created, a look shows whether that
    // happened since our last look.
    if send_if_published(dir, job, tx)? {
        return Ok(Claimed::Published); // dropping `held` removes our claim
    }
    Ok(Claimed::Ours(held))
}

/// Sends block `index` if the tier has it published and sound: true when
/// it did (or the fill stopped listening). A block that is not sound is
/// removed (reported as damaged), and false returned.
fn send_if_published(dir: &VersionDir, job: &Job, tx: &SyncSender<Msg>) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let (file, sum) = match block::open_for_copy(dir.path(), job.index, job.len) {
        Ok(None) => return Ok(false),
        Ok(Some(found)) => found,
        Err(OpenError::Damaged(e)) => {
            dir.remove_block(job.index);
            let _ = tx.send(Msg::Damaged(e.message().to_string()));
            return Ok(false);
        }
        Err(e) => return Err(e.into_error()),
    };
    let path = dir.block_path(job.index);
    let mut pos = 0u64;
    while pos < job.len {
        let n = (CHUNK as u64).min(job.len - pos) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| crate::error::io_error("cannot read", &path, &e))?;
        if tx.send(Msg::Bytes(buf)).is_err() {
            return Ok(true);
        }
        pos += n as u64;
    }
    let _ = tx.send(Msg::End(sum));
    Ok(true)
}
