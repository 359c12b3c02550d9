//! `blobcache warm`: fills every block of every blob under a location
//! through the library's own fill path ([`Cache::fill_all`]), several blobs
//! at once, each with its blocks fetched in parallel by the fill pool.
//!
//! With `--cluster-only` the same machinery runs on the cluster tier as a
//! cache directory of its own ([`Config::cluster_as_store`]): the blocks go
//! to the shared volume, none to this node's cache (a Kubernetes Job that
//! warms the tier once for every node).
//!
//! [`Config::cluster_as_store`]: blobcache_core::Config::cluster_as_store

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobcache_core::origin::Listed;
use blobcache_core::{BlobKey, Cache};
use serde::Serialize;

use super::{location, open_store, print_json, say_assumed_account, tier_config, Tier};
use crate::output::{rate, rounded, size};
use crate::progress::Progress;
use crate::uri;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// az://<account>/<container>/<blob-or-folder>
    uri: String,
    /// Blobs fetched at the same time (each with its blocks in parallel,
    /// BLOBCACHE_FETCH_CONCURRENCY blocks in all)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
    /// Seconds between progress lines when stderr is not a terminal
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    progress_every: u64,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Fill the cluster tier (BLOBCACHE_CLUSTER_DIR) only, not this node's cache: warms the shared volume once for every node
    #[arg(long)]
    cluster_only: bool,
}

/// `warm --json`.
#[derive(Serialize)]
struct WarmJson<'a> {
    uri: &'a str,
    blobs: usize,
    bytes: u64,
    already_cached: u64,
    /// Bytes fetched from the origin by this run.
    fetched: u64,
    blocks_fetched: u64,
    seconds: f64,
    failed: Vec<FailedBlob<'a>>,
}

#[derive(Serialize)]
struct FailedBlob<'a> {
    blob: &'a str,
    error: &'a str,
}

pub fn run(
    Args {
        uri,
        jobs,
        progress_every: every,
        quiet,
        json,
        cluster_only,
    }: Args,
    account: Option<&str>,
) -> Outcome {
    let (uri, jobs) = (uri.as_str(), jobs as usize);
    let loc = location(uri, account)?;
    let container = loc.container(uri).map_err(Failure::Usage)?.to_string();
    let tier = Tier::of(cluster_only);
    let config = tier_config(tier, "--cluster-only")?;
    // The library would read straight from the origin without a store;
    // warming needs one.
    open_store(&config, tier)?;
    let into = match (tier, &config.dir) {
        (Tier::Cluster, Some(d)) => format!(" into the cluster tier {}", d.display()),
        _ => String::new(),
    };
    say_assumed_account(&loc, uri);
    let cache = Arc::new(Cache::new(config)?);
    // The listing asks for the folder's prefix; `covers` then keeps the
    // exact blob and what is under it as a folder.
    let listed = cache
        .origin()
        .list(&loc.account, &container, &loc.path)
        .map_err(|e| format!("cannot list {uri}: {e}{}", loc.account_hint()))?;
    let blobs: Vec<_> = listed
        .into_iter()
        .filter(|b| uri::covers_name(&loc.path, &b.name))
        .collect();
    if blobs.is_empty() {
        cache.shutdown();
        return Err(Failure::Failed(format!(
            "nothing to warm: no blob at or under {uri}{}",
            loc.account_hint()
        )));
    }
    let r = warm(
        cache.clone(),
        &loc.account,
        &container,
        blobs,
        jobs,
        quiet,
        Duration::from_secs(every),
    );
    cache.shutdown();
    if json {
        print_json(&WarmJson {
            uri,
            blobs: r.blobs,
            bytes: r.bytes,
            already_cached: r.already,
            fetched: r.fetched,
            blocks_fetched: r.blocks_fetched,
            seconds: rounded(r.seconds, 3),
            failed: r
                .failed
                .iter()
                .map(|(blob, error)| FailedBlob { blob, error })
                .collect(),
        });
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "warmed {} of {} blobs ({}) under {uri}{into} in {:.1} s: {} fetched from the origin ({}), {} were already cached",
            r.blobs - r.failed.len(),
            r.blobs,
            size(r.bytes),
            r.seconds,
            size(r.fetched),
            rate(r.fetched, r.seconds),
            size(r.already)
        );
    }
    if r.failed.is_empty() {
        return Ok(());
    }
    for (name, e) in &r.failed {
        eprintln!(
            "blobcache: warm: {}: {}",
            name,
            blobcache_core::redact::redact(e)
        );
    }
    Err(Failure::Failed(format!(
        "{} of {} blobs could not be warmed",
        r.failed.len(),
        r.blobs
    )))
}

struct Report {
    blobs: usize,
    bytes: u64,
    /// Bytes that were already cached before this run.
    already: u64,
    fetched: u64,
    blocks_fetched: u64,
    seconds: f64,
    failed: Vec<(String, String)>,
}

/// Bytes of `key`'s blocks already on disk (at the version `cache` found).
fn cached_bytes(cache: &Cache, key: &BlobKey) -> blobcache_core::Result<u64> {
    cache.cached_bytes(key)
}

fn warm(
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
