//! Counters of what the library did, cheap enough for the hit path: each
//! counter is split over cache-line-padded shards picked per thread, so
//! threads reading at once do not fight over one cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SHARDS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

pub struct Counter {
    shards: [Padded; SHARDS],
}

impl Default for Counter {
    fn default() -> Counter {
        Counter {
            shards: std::array::from_fn(|_| Padded::default()),
        }
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(v);
        v
    })
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(Default)]
pub struct Stats {
    /// Reads served entirely from the cache.
    pub hits: Counter,
    /// Reads that needed at least one block from the origin.
    pub misses: Counter,
    pub bytes_from_cache: Counter,
    pub bytes_from_origin: Counter,
    /// Blocks fetched from the origin into the cache (demand and readahead).
    pub blocks_fetched: Counter,
    pub readahead_blocks: Counter,
    /// Reads served straight from the origin because the cache could not be used.
    pub passthrough_reads: Counter,
    pub origin_errors: Counter,
    pub read_errors: Counter,
    /// Time callers spent waiting for the origin, in nanoseconds.
    pub origin_wait_ns: Counter,
    pub blocks_evicted: Counter,
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub hits: u64,
    pub misses: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
    pub blocks_fetched: u64,
    pub readahead_blocks: u64,
    pub passthrough_reads: u64,
    pub origin_errors: u64,
    pub read_errors: u64,
    pub origin_wait_ns: u64,
    pub blocks_evicted: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            hits: self.hits.get(),
            misses: self.misses.get(),
            bytes_from_cache: self.bytes_from_cache.get(),
            bytes_from_origin: self.bytes_from_origin.get(),
            blocks_fetched: self.blocks_fetched.get(),
            readahead_blocks: self.readahead_blocks.get(),
            passthrough_reads: self.passthrough_reads.get(),
            origin_errors: self.origin_errors.get(),
            read_errors: self.read_errors.get(),
            origin_wait_ns: self.origin_wait_ns.get(),
            blocks_evicted: self.blocks_evicted.get(),
        }
    }
}

impl Snapshot {
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"hits\":{},\"misses\":{},\"bytes_from_cache\":{},\"bytes_from_origin\":{},",
                "\"blocks_fetched\":{},\"readahead_blocks\":{},\"passthrough_reads\":{},",
                "\"origin_errors\":{},\"read_errors\":{},\"origin_wait_ms\":{},\"blocks_evicted\":{}}}"
            ),
            self.hits,
            self.misses,
            self.bytes_from_cache,
            self.bytes_from_origin,
            self.blocks_fetched,
            self.readahead_blocks,
            self.passthrough_reads,
            self.origin_errors,
            self.read_errors,
            self.origin_wait_ns / 1_000_000,
            self.blocks_evicted
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "hits={} misses={} bytes_from_cache={} bytes_from_origin={} blocks_fetched={} passthrough_reads={} origin_errors={} origin_wait={:.3}s",
            self.hits,
            self.misses,
            self.bytes_from_cache,
            self.bytes_from_origin,
            self.blocks_fetched,
            self.passthrough_reads,
            self.origin_errors,
            self.origin_wait_ns as f64 / 1e9
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = std::sync::Arc::new(Counter::default());
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(2)))
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 16000);
    }
}
