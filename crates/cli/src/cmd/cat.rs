//! `blobcache cat`: writes one blob's bytes (or a range of them) to stdout,
//! or to a file, read through the cache (filling it on a miss) by several
//! reader threads; with `--stats`, the process's counters on stderr after.
//!
//! The readers take consecutive chunks, a round of `--threads` chunks at a
//! time, and the chunks are written in order, so stdout is the blob. A
//! reader that closes the pipe early (`| head -c 10`) ends the command
//! quietly with status 0, as it asked for no more.

use std::io::Write;
use std::time::Instant;

use blobcache_core::stats::Reported;
use blobcache_core::{BlobKey, Cache};
use serde::Serialize;

use super::{config, json_line, location, open_store, say_assumed_account, Tier};
use crate::output::rounded;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// az://<account>/<container>/<blob>, or az://<container>/<blob> with --account or AZURE_STORAGE_ACCOUNT_NAME
    uri: String,
    /// Write the bytes to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    out: Option<String>,
    /// Start at this byte of the blob (a byte count or a size: 4096, 1M)
    #[arg(long, default_value = "0", value_parser = crate::parse_size)]
    offset: u64,
    /// At most this many bytes [default: to the end of the blob]
    #[arg(long, value_parser = crate::parse_size)]
    length: Option<u64>,
    /// When done, print the process's counters as one JSON line on stderr
    #[arg(long)]
    stats: bool,
    /// Reader threads
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Bytes per read
    #[arg(long, default_value = "8M", value_parser = crate::parse_size)]
    chunk: u64,
}

/// What `cat --stats` prints on stderr when done.
#[derive(Serialize)]
struct CatJson {
    /// Bytes written.
    bytes: u64,
    seconds: f64,
    /// The process's counters as `blobcache_stats_json` reports them.
    stats: Reported,
}

pub fn run(
    Args {
        uri,
        out,
        offset,
        length,
        stats,
        threads,
        chunk,
    }: Args,
    account: Option<&str>,
) -> Outcome {
    let uri = uri.as_str();
    if chunk == 0 {
        return Err(Failure::Usage("--chunk must be at least 1 byte".into()));
    }
    let loc = location(uri, account)?;
    let key = loc.blob(uri).map_err(Failure::Usage)?;
    let config = config()?;
    // The library would read straight from the origin without a store;
    // `cat` reads through the cache or not at all.
    open_store(&config, Tier::Local)?;
    say_assumed_account(&loc, uri);
    let cache = Cache::new(config)?;
    let size = cache
        .entry(&key)
        .map_err(|e| format!("{key}: {e}{}", loc.account_hint()))?
        .info
        .size;
    if offset > size {
        cache.shutdown();
        return Err(Failure::Failed(format!(
            "--offset {offset} is past the end of {key} ({size} bytes)"
        )));
    }
    let end = length.map_or(size, |l| offset.saturating_add(l).min(size));
    let mut sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let t0 = Instant::now();
    let copied = copy(
        &cache,
        &key,
        offset..end,
        threads as usize,
        chunk,
        &mut *sink,
    );
    let copied = copied.and_then(|n| {
        sink.flush().map_err(|e| Stop::Write(n, e))?;
        Ok(n)
    });
    drop(sink);
    let secs = t0.elapsed().as_secs_f64();
    let counters = cache.stats();
    cache.shutdown();
    let written = match &copied {
        Ok(n) | Err(Stop::Write(n, _) | Stop::Read(n, _)) => *n,
    };
    if stats {
        json_line(
            &mut std::io::stderr().lock(),
            &CatJson {
                bytes: written,
                seconds: rounded(secs, 6),
                stats: counters.reported(),
            },
        );
    }
    match copied {
        Ok(_) => Ok(()),
        // The reader of stdout wanted no more.
        Err(Stop::Write(_, e)) if out.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        Err(Stop::Write(_, e)) => Err(Failure::Failed(format!(
            "{}: {e}",
            out.as_deref().unwrap_or("stdout")
        ))),
        Err(Stop::Read(_, e)) => Err(Failure::Failed(e)),
    }
}

/// Why [`copy`] stopped early.
enum Stop {
    /// A read from the cache failed after this many bytes were written:
    /// the message.
    Read(u64, String),
    /// Writing failed after this many bytes were written.
    Write(u64, std::io::Error),
}

/// Reads `range` of `key` through `cache` with up to `threads` readers of
/// `chunk` bytes each, and writes it to `sink` in order. Returns the bytes
/// written.
fn copy(
    cache: &Cache,
    key: &BlobKey,
    range: std::ops::Range<u64>,
    threads: usize,
    chunk: u64,
    sink: &mut dyn Write,
) -> Result<u64, Stop> {
    let len = range.end - range.start;
    let chunk = chunk.min(len.max(1));
    let readers = threads.min(len.div_ceil(chunk).max(1) as usize);
    let mut bufs: Vec<Vec<u8>> = (0..readers).map(|_| vec![0u8; chunk as usize]).collect();
    let mut pos = range.start;
    let mut written = 0;
    while pos < range.end {
        // One round: each reader its own chunk, in parallel.
        let round: Vec<Result<usize, String>> = std::thread::scope(|s| {
            let readers: Vec<_> = bufs
                .iter_mut()
                .enumerate()
                .map_while(|(i, buf)| {
                    let off = pos + i as u64 * chunk;
                    (off < range.end).then(|| {
                        let n = chunk.min(range.end - off) as usize;
                        s.spawn(move || {
                            cache
                                .read(key, off, &mut buf[..n])
                                .map(|()| n)
                                .map_err(|e| format!("{key} bytes {off}..{}: {e}", off + n as u64))
                        })
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err("a reader thread panicked".into()))
                })
                .collect()
        });
        for (buf, r) in bufs.iter().zip(round) {
            let n = r.map_err(|e| Stop::Read(written, e))?;
            sink.write_all(&buf[..n])
                .map_err(|e| Stop::Write(written, e))?;
            written += n as u64;
            pos += n as u64;
        }
    }
    Ok(written)
}
