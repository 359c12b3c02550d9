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
    /// Every counter with its name, in a fixed order (the on-disk and JSON
    /// names; `origin_wait_ns` in nanoseconds).
    pub fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("hits", self.hits),
            ("misses", self.misses),
            ("bytes_from_cache", self.bytes_from_cache),
            ("bytes_from_origin", self.bytes_from_origin),
            ("blocks_fetched", self.blocks_fetched),
            ("readahead_blocks", self.readahead_blocks),
            ("passthrough_reads", self.passthrough_reads),
            ("origin_errors", self.origin_errors),
            ("read_errors", self.read_errors),
            ("origin_wait_ns", self.origin_wait_ns),
            ("blocks_evicted", self.blocks_evicted),
        ]
    }

    /// The counter called `name` (as in [`Snapshot::fields`]), if any.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "hits" => &mut self.hits,
            "misses" => &mut self.misses,
            "bytes_from_cache" => &mut self.bytes_from_cache,
            "bytes_from_origin" => &mut self.bytes_from_origin,
            "blocks_fetched" => &mut self.blocks_fetched,
            "readahead_blocks" => &mut self.readahead_blocks,
            "passthrough_reads" => &mut self.passthrough_reads,
            "origin_errors" => &mut self.origin_errors,
            "read_errors" => &mut self.read_errors,
            "origin_wait_ns" => &mut self.origin_wait_ns,
            "blocks_evicted" => &mut self.blocks_evicted,
            _ => return None,
        })
    }

    /// Counter by counter: `self + other` (saturating).
    pub fn plus(&self, other: &Snapshot) -> Snapshot {
        let mut out = *self;
        for (name, v) in other.fields() {
            let f = out.field_mut(name).expect("every field has a name");
            *f = f.saturating_add(v);
        }
        out
    }

    /// Counter by counter: `self - other` (saturating at zero).
    pub fn minus(&self, other: &Snapshot) -> Snapshot {
        let mut out = *self;
        for (name, v) in other.fields() {
            let f = out.field_mut(name).expect("every field has a name");
            *f = f.saturating_sub(v);
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|(_, v)| *v == 0)
    }

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
    fn snapshots_add_and_subtract_field_by_field() {
        let a = Snapshot {
            hits: 5,
            origin_wait_ns: 7,
            ..Default::default()
        };
        let b = Snapshot {
            hits: 2,
            blocks_evicted: 1,
            ..Default::default()
        };
        let sum = a.plus(&b);
        assert_eq!(
            (sum.hits, sum.origin_wait_ns, sum.blocks_evicted),
            (7, 7, 1)
        );
        assert_eq!(sum.minus(&b), a);
        assert!(b.minus(&sum).is_zero());
        let mut names: Vec<_> = a.fields().iter().map(|(n, _)| *n).collect();
        names.dedup();
        assert_eq!(names.len(), 11);
    }

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
