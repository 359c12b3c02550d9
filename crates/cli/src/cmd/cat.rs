//! `blobcache cat`: reads one blob through the cache (filling it on a miss)
//! with several reader threads, optionally into a file, then prints the
//! process's counters as JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use blobcache_core::stats::Reported;
use blobcache_core::Cache;
use serde::Serialize;

use super::{config, location, print_json};
use crate::output::rounded;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// az://<account>/<container>/<blob>
    uri: String,
    /// Write the blob's bytes to FILE (default: discard them)
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
    /// Reader threads
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Bytes per read
    #[arg(long, default_value = "8M", value_parser = crate::parse_size)]
    chunk: u64,
}

/// What `cat` prints when done.
#[derive(Serialize)]
struct CatJson {
    bytes: u64,
    seconds: f64,
    /// The process's counters as `blobcache_stats_json` reports them.
    stats: Reported,
}

pub fn run(
    Args {
        uri,
        out,
        threads,
        chunk,
    }: Args,
    account: Option<&str>,
) -> Outcome {
    let (uri, out, threads) = (uri.as_str(), out.as_deref(), threads as usize);
    if chunk == 0 {
        return Err(Failure::Usage("--chunk must be at least 1 byte".into()));
    }
    let key = location(uri, account)?.blob(uri).map_err(Failure::Usage)?;
    let cache = Arc::new(Cache::new(config()?)?);
    let size = cache
        .entry(&key)
        .map_err(|e| format!("{key}: {e}"))?
        .info
        .size;
    let out = match out {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?;
            f.set_len(size).map_err(|e| format!("{p}: {e}"))?;
            Some(Arc::new(f))
        }
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, key, next, out) = (cache.clone(), key.clone(), next.clone(), out.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut buf = vec![0u8; chunk as usize];
                loop {
                    let off = next.fetch_add(chunk, Ordering::Relaxed);
                    if off >= size {
                        return Ok(());
                    }
                    let n = chunk.min(size - off) as usize;
                    cache
                        .read(&key, off, &mut buf[..n])
                        .map_err(|e| format!("{key} bytes {off}..{}: {e}", off + n as u64))?;
                    if let Some(f) = &out {
                        use std::os::unix::fs::FileExt;
                        f.write_all_at(&buf[..n], off).map_err(|e| e.to_string())?;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "a reader thread panicked".to_string())??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = cache.stats();
    cache.shutdown();
    print_json(&CatJson {
        bytes: size,
        seconds: rounded(secs, 6),
        stats: s.reported(),
    });
    Ok(())
}
