//! `blobcache warm`: fills every block of every blob under a location
//! through the library's own fill path ([`Cache::fill_all`]), several blobs
//! at once, each with its blocks fetched in parallel by the fill pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobcache_core::origin::Listed;
use blobcache_core::{BlobKey, Cache};

use crate::progress::Progress;

pub struct Report {
    pub blobs: usize,
    pub bytes: u64,
    /// Bytes that were already cached before this run.
    pub already: u64,
    pub fetched: u64,
    pub blocks_fetched: u64,
    pub seconds: f64,
    pub failed: Vec<(String, String)>,
}

/// Bytes of `key`'s blocks already on disk (at the version `cache` found).
fn cached_bytes(cache: &Cache, key: &BlobKey) -> blobcache_core::Result<u64> {
    cache.cached_bytes(key)
}

pub fn warm(
    cache: Arc<Cache>,
    account: &str,
    container: &str,
    blobs: Vec<Listed>,
    jobs: usize,
    quiet: bool,
    every: Duration,
) -> Report {
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let count = blobs.len();
    let queue = Arc::new(Mutex::new(blobs.into_iter().rev().collect::<Vec<_>>()));
    let already = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let before = cache.stats();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..jobs.max(1).min(count.max(1)))
        .map(|_| {
            let (cache, queue, already, finished, failed) = (
                cache.clone(),
                queue.clone(),
                already.clone(),
                finished.clone(),
                failed.clone(),
            );
            let (account, container) = (account.to_string(), container.to_string());
            std::thread::spawn(move || loop {
                let Some(b) = queue.lock().unwrap().pop() else {
                    return;
                };
                let r = BlobKey::new(&account, &container, &b.name).and_then(|key| {
                    already.fetch_add(cached_bytes(&cache, &key)?, Ordering::Relaxed);
                    cache.fill_all(&key)
                });
                if let Err(e) = r {
                    failed.lock().unwrap().push((b.name.clone(), e.to_string()));
                }
                finished.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    let mut progress = Progress::new(total, quiet, every);
    let fetched_now = |c: &Cache| c.stats().bytes_from_origin - before.bytes_from_origin;
    while workers.iter().any(|w| !w.is_finished()) {
        let fetched = fetched_now(&cache);
        let done = (already.load(Ordering::Relaxed) + fetched).min(total);
        progress.update(done, fetched, finished.load(Ordering::Relaxed), count);
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in workers {
        if w.join().is_err() {
            failed
                .lock()
                .unwrap()
                .push(("(worker)".into(), "a warm-up thread panicked".into()));
        }
    }
    let after = cache.stats();
    let fetched = after.bytes_from_origin - before.bytes_from_origin;
    let done = (already.load(Ordering::Relaxed) + fetched).min(total);
    progress.finish(done, fetched, finished.load(Ordering::Relaxed), count);
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    Report {
        blobs: count,
        bytes: total,
        already: already.load(Ordering::Relaxed),
        fetched: after.bytes_from_origin - before.bytes_from_origin,
        blocks_fetched: after.blocks_fetched - before.blocks_fetched,
        seconds: t0.elapsed().as_secs_f64(),
        failed,
    }
}
