//! `blobcache stats`: the cache's size against its cap, and the counters
//! every process that used the cache left in it (`store::counters`), for
//! people, as JSON, or as Prometheus metrics (what `blobcache metrics`
//! serves, gathered here by [`gather`]).

use std::io::Write;

use blobcache_core::prometheus::Gauges;
use blobcache_core::stats::Snapshot;
use blobcache_core::store::{counters, inventory};
use blobcache_core::Config;
use serde::Serialize;

use super::{cache_dir, cap, existing, print_json, store, tier_config, ClusterArg, Tier};
use crate::output::{size, utc};
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// One JSON object
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// The Prometheus text exposition format (version 0.0.4), as `blobcache metrics` serves it
    #[arg(long)]
    prometheus: bool,
    /// Start the counters again from zero (after printing them)
    #[arg(long)]
    reset: bool,
    #[command(flatten)]
    tier: ClusterArg,
}

/// `stats --json`.
#[derive(Serialize)]
struct StatsJson {
    dir: String,
    /// Bytes the cache occupies on disk.
    bytes: u64,
    cap: Option<u64>,
    /// Free bytes on the cache's filesystem.
    free: Option<u64>,
    blobs: usize,
    complete_blobs: usize,
    blocks: u64,
    /// When counting started and last update (Unix seconds; 0 for never).
    since: u64,
    updated: u64,
    /// Under the counters' declared names (`origin_wait_ns` in nanoseconds).
    counters: Snapshot,
}

/// What `stats` shows of the configured cache directory: its size, what
/// it holds, and the counters on disk (also what `metrics` serves).
pub struct Gathered {
    pub dir: std::path::PathBuf,
    pub store: Option<blobcache_core::store::Store>,
    pub gauges: Gauges,
    pub persisted: counters::Persisted,
}

/// Reads the cache directory of `config` (the directory of `tier`)
/// afresh: its store (none when the cache is not made yet), a walk of what
/// it holds, and the counters.
pub fn gather(config: &Config, tier: Tier) -> Result<Gathered, Failure> {
    let dir = cache_dir(config);
    let store = store(config, tier)?;
    let versions = match &store {
        Some(s) => inventory::inventory(s.root(), s.file_mode()),
        None => vec![],
    };
    let usage = versions.iter().map(|c| c.bytes).sum::<u64>();
    let blocks: u64 = versions.iter().map(|c| c.blocks_present).sum();
    let complete = versions
        .iter()
        .filter(|c| c.meta.is_ok() && c.blocks_present == c.blocks_total)
        .count();
    // A cache not made yet would be on the filesystem of the nearest
    // directory above it.
    let fs = existing(&dir);
    let cap = cap(config, fs);
    let free = blobcache_core::store::filesystem_size(fs).map(|(_, free)| free);
    let persisted = match &store {
        Some(s) => counters::read(s.root())?,
        None => None,
    }
    .unwrap_or_default();
    let gauges = Gauges {
        size_bytes: usage,
        cap_bytes: cap,
        free_bytes: free,
        blobs: versions.len() as u64,
        complete_blobs: complete as u64,
        blocks,
        counting_since: persisted.since,
        updated: persisted.updated,
    };
    Ok(Gathered {
        dir,
        store,
        gauges,
        persisted,
    })
}

impl Gathered {
    /// The Prometheus exposition of this cache directory.
    pub fn prometheus(&self) -> String {
        blobcache_core::prometheus::render(
            &self.dir.display().to_string(),
            &self.persisted.counts,
            &self.gauges,
        )
    }
}

pub fn run(
    Args {
        json,
        prometheus,
        reset,
        tier,
    }: Args,
) -> Outcome {
    let tier = Tier::of(tier.cluster);
    let config = tier_config(tier, "--cluster")?;
    let g = gather(&config, tier)?;
    let Gauges {
        size_bytes: usage,
        cap_bytes: cap,
        free_bytes: free,
        blobs,
        complete_blobs: complete,
        blocks,
        ..
    } = g.gauges;
    let (dir, store, persisted) = (&g.dir, &g.store, &g.persisted);
    let c = persisted.counts;
    if prometheus {
        let _ = std::io::stdout()
            .lock()
            .write_all(g.prometheus().as_bytes());
    } else if json {
        print_json(&StatsJson {
            dir: dir.display().to_string(),
            bytes: usage,
            cap,
            free,
            blobs: blobs as usize,
            complete_blobs: complete as usize,
            blocks,
            since: persisted.since,
            updated: persisted.updated,
            counters: c,
        });
    } else {
        let mut out = std::io::stdout().lock();
        let reads = c.hits + c.misses;
        let hit_pct = if reads == 0 {
            0.0
        } else {
            c.hits as f64 * 100.0 / reads as f64
        };
        let cap_s = cap.map_or("?".into(), size);
        let used_pct = cap.filter(|c| *c > 0).map_or(String::new(), |cap| {
            format!(" ({:.0}%)", usage as f64 * 100.0 / cap as f64)
        });
        let _ = writeln!(out, "{:<17}{}", tier.name(), dir.display());
        let _ = writeln!(
            out,
            "size             {} of {cap_s} cap{used_pct}; {} blobs ({complete} complete), {blocks} blocks",
            size(usage),
            blobs
        );
        if let Some(f) = free {
            let _ = writeln!(out, "free space       {}", size(f));
        }
        if persisted.since == 0 {
            let _ = writeln!(
                out,
                "counters         none yet (no process has used this {})",
                tier.name()
            );
        } else {
            let _ = writeln!(
                out,
                "counting since   {} (last update {})",
                utc(persisted.since),
                utc(persisted.updated)
            );
            let _ = writeln!(
                out,
                "reads            {} hits, {} misses ({hit_pct:.1}% hits)",
                c.hits, c.misses
            );
            let _ = writeln!(
                out,
                "bytes            {} served from the cache ({} of them as fills brought them in), {} fetched from the origin",
                size(c.bytes_from_cache + c.bytes_from_fills),
                size(c.bytes_from_fills),
                size(c.bytes_from_origin)
            );
            let _ = writeln!(
                out,
                "blocks           {} fetched ({} by readahead), {} evicted",
                c.blocks_fetched, c.readahead_blocks, c.blocks_evicted
            );
            let _ = writeln!(
                out,
                "errors           {} fetch errors, {} failed reads, {} reads passed straight through",
                c.origin_errors, c.read_errors, c.passthrough_reads
            );
            let _ = writeln!(
                out,
                "origin wait      {:.1} s (readers waiting for fills and version checks)",
                c.origin_wait_ns as f64 / 1e9
            );
        }
    }
    if reset {
        if let Some(s) = store {
            counters::reset(s.root(), s.file_mode())?;
        }
    }
    Ok(())
}
