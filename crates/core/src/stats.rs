//! Counters of what the library did, cheap enough for the hit path: each
//! counter is split over cache-line-padded shards picked per thread, so
//! threads reading at once do not fight over one cache line.
//!
//! The counters are declared once, in the `counters!` table below (name,
//! unit, metric name, help text); the structs, the sums, the JSON of
//! `blobcache_stats_json`, the shutdown line, the file the store keeps in
//! the cache directory (`store::counters`) and the Prometheus metrics
//! ([`crate::prometheus`]) all come from it.

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

/// What a counter counts: its values' unit, for exporters (the C JSON
/// shows times in milliseconds; the Prometheus metrics, seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Events (reads, blocks, errors).
    Count,
    Bytes,
    /// Time; the counter's name ends in `_ns`.
    Nanoseconds,
}

/// One counter as declared in `counters!`: its name (the field, the
/// on-disk and JSON name), what it counts, and its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    /// Shown in the one line `shutdown` logs at `info` level.
    pub in_summary: bool,
    /// Its name in the Prometheus exposition ([`crate::prometheus`]):
    /// `blobcache_`, snake case, the base unit (`_bytes`, `_seconds`) and
    /// `_total` at the end (a test holds every name to that).
    pub metric: &'static str,
}

/// Declares the counters once: [`Stats`] (the live, sharded counters),
/// [`Snapshot`] (a copy of their values), [`COUNTERS`] (name, help, unit)
/// and the conversions between them. Everything else (sums, differences,
/// the C JSON, the shutdown line, the file in the cache directory, the
/// command's output) iterates [`COUNTERS`] or [`Snapshot::fields`].
macro_rules! counters {
    ($( $field:ident: $unit:ident, summary = $summary:literal, metric = $metric:literal, $help:literal; )*) => {
        /// The process's counters, one field per counter of [`COUNTERS`].
        #[derive(Default)]
        pub struct Stats {
            $( #[doc = $help] pub $field: Counter, )*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( #[doc = $help] pub $field: u64, )*
        }

        /// Every counter, in a fixed order (that of the file in the cache
        /// directory and of the JSON objects).
        pub const COUNTERS: &[CounterInfo] = &[
            $( CounterInfo {
                name: stringify!($field),
                help: $help,
                unit: Unit::$unit,
                in_summary: $summary,
                metric: $metric,
            }, )*
        ];

        const COUNT: usize = [$( stringify!($field) ),*].len();

        impl Stats {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $field: self.$field.get(), )* }
            }
        }

        impl Snapshot {
            /// The values, in the order of [`COUNTERS`].
            fn values(&self) -> [u64; COUNT] {
                [$( self.$field ),*]
            }

            fn values_mut(&mut self) -> [&mut u64; COUNT] {
                [$( &mut self.$field ),*]
            }
        }
    };
}

counters! {
    hits: Count, summary = true,
        metric = "blobcache_hits_total", "Reads served entirely from the cache.";
    misses: Count, summary = true,
        metric = "blobcache_misses_total", "Reads that needed at least one block from the origin.";
    bytes_from_cache: Bytes, summary = true,
        metric = "blobcache_served_from_cache_bytes_total", "Bytes served from cached blocks.";
    bytes_from_origin: Bytes, summary = true,
        metric = "blobcache_fetched_from_origin_bytes_total", "Bytes fetched from the origin (into the cache or straight to readers).";
    blocks_fetched: Count, summary = true,
        metric = "blobcache_blocks_fetched_total", "Blocks fetched from the origin into the cache (demand and readahead).";
    readahead_blocks: Count, summary = false,
        metric = "blobcache_readahead_blocks_total", "Blocks fetched ahead of a front-to-back reader.";
    passthrough_reads: Count, summary = true,
        metric = "blobcache_passthrough_reads_total", "Reads served straight from the origin because the cache could not be used.";
    origin_errors: Count, summary = true,
        metric = "blobcache_origin_errors_total", "Fetches from the origin that failed (after their retries).";
    read_errors: Count, summary = false,
        metric = "blobcache_read_errors_total", "Reads that failed.";
    origin_wait_ns: Nanoseconds, summary = true,
        metric = "blobcache_origin_wait_seconds_total", "Time readers spent waiting for the origin (fills and version checks).";
    blocks_evicted: Count, summary = false,
        metric = "blobcache_blocks_evicted_total", "Cached blocks removed to keep the cache under its cap.";
    bytes_from_fills: Bytes, summary = false,
        metric = "blobcache_served_from_fills_bytes_total", "Bytes served from blocks still being filled, as they arrived (before the whole block was in).";
    blocks_from_cluster: Count, summary = false,
        metric = "blobcache_cluster_blocks_taken_total", "Blocks copied from the cluster tier into the local cache (checked against their checksums).";
    bytes_from_cluster: Bytes, summary = false,
        metric = "blobcache_fetched_from_cluster_bytes_total", "Bytes copied from the cluster tier into the local cache.";
    blocks_to_cluster: Count, summary = false,
        metric = "blobcache_cluster_blocks_published_total", "Blocks this process fetched from the origin and published in the cluster tier.";
    cluster_duplicates: Count, summary = false,
        metric = "blobcache_cluster_duplicate_fetches_total", "Blocks fetched from the origin that another node published in the cluster tier meanwhile (its locks do not exclude, or the other node was slow): fetched twice.";
    cluster_damaged: Count, summary = false,
        metric = "blobcache_cluster_damaged_blocks_total", "Blocks of the cluster tier that did not verify (damaged or planted): removed, never served, filled again.";
    cluster_fallbacks: Count, summary = false,
        metric = "blobcache_cluster_fallbacks_total", "Fills that went to the origin without the cluster tier (down, hung, failing, or another node held the block too long).";
    bytes_via_dragonfly: Bytes, summary = false,
        metric = "blobcache_fetched_via_dragonfly_bytes_total", "Bytes of blob GETs answered through dfdaemon (Dragonfly mode): from its P2P network or its own fetch from Azure.";
    dragonfly_fallbacks: Count, summary = false,
        metric = "blobcache_dragonfly_fallbacks_total", "Blob GETs that went on directly to Azure because dfdaemon failed (unreachable, hung, failing, or no proxy rule).";
}

impl Snapshot {
    /// Every counter with its declared name, in the order of [`COUNTERS`]
    /// (the names of the file in the cache directory and of `blobcache stats
    /// --json`; `origin_wait_ns` in nanoseconds).
    pub fn fields(&self) -> [(&'static str, u64); COUNT] {
        let values = self.values();
        std::array::from_fn(|i| (COUNTERS[i].name, values[i]))
    }

    /// The counter called `name` (as in [`Snapshot::fields`]), if any.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        let i = COUNTERS.iter().position(|c| c.name == name)?;
        self.values_mut().into_iter().nth(i)
    }

    /// Counter by counter: `self + other` (saturating).
    pub fn plus(&self, other: &Snapshot) -> Snapshot {
        self.combine(other, u64::saturating_add)
    }

    /// Counter by counter: `self - other` (saturating at zero).
    pub fn minus(&self, other: &Snapshot) -> Snapshot {
        self.combine(other, u64::saturating_sub)
    }

    fn combine(&self, other: &Snapshot, f: fn(u64, u64) -> u64) -> Snapshot {
        let mut out = *self;
        for (v, o) in out.values_mut().into_iter().zip(other.values()) {
            *v = f(*v, o);
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.values().iter().all(|v| *v == 0)
    }

    /// The members of `blobcache_stats_json`'s object: every counter, times
    /// in whole milliseconds with `_ms` for `_ns` in the name.
    pub fn reported(&self) -> Reported {
        Reported(
            COUNTERS
                .iter()
                .zip(self.values())
                .map(|(c, v)| match c.unit {
                    Unit::Nanoseconds => (ms_name(c.name), v / 1_000_000),
                    Unit::Count | Unit::Bytes => (c.name.to_string(), v),
                })
                .collect(),
        )
    }

    /// `blobcache_stats_json`'s object (see [`Snapshot::reported`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.reported()).expect("a map of numbers serialises")
    }

    /// The counters `shutdown` logs: `hits=… misses=… … origin_wait=…s`.
    pub fn summary(&self) -> String {
        COUNTERS
            .iter()
            .zip(self.values())
            .filter(|(c, _)| c.in_summary)
            .map(|(c, v)| match c.unit {
                Unit::Nanoseconds => format!(
                    "{}={:.3}s",
                    c.name.strip_suffix("_ns").unwrap_or(c.name),
                    v as f64 / 1e9
                ),
                Unit::Count | Unit::Bytes => format!("{}={v}", c.name),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn ms_name(ns_name: &str) -> String {
    format!("{}_ms", ns_name.strip_suffix("_ns").unwrap_or(ns_name))
}

/// The counters as `blobcache_stats_json` reports them
/// ([`Snapshot::reported`]): a JSON object of whole numbers, in the order of
/// [`COUNTERS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported(Vec<(String, u64)>);

impl Reported {
    pub fn members(&self) -> &[(String, u64)] {
        &self.0
    }
}

impl serde::Serialize for Reported {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The counters under their declared names ([`Snapshot::fields`]), as
/// `blobcache stats --json` shows them.
impl serde::Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.fields())
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
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len());
    }

    /// Every counter a distinct value, to see each one land in its member.
    fn distinct() -> Snapshot {
        let mut s = Snapshot::default();
        for (i, c) in COUNTERS.iter().enumerate() {
            *s.field_mut(c.name).unwrap() = (i as u64 + 1) * 1_000_000_007;
        }
        s
    }

    #[test]
    fn the_names_on_disk_and_in_the_commands_json_stay_as_they_were() {
        let names: Vec<_> = distinct().fields().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "hits",
                "misses",
                "bytes_from_cache",
                "bytes_from_origin",
                "blocks_fetched",
                "readahead_blocks",
                "passthrough_reads",
                "origin_errors",
                "read_errors",
                "origin_wait_ns",
                "blocks_evicted",
                "bytes_from_fills",
                "blocks_from_cluster",
                "bytes_from_cluster",
                "blocks_to_cluster",
                "cluster_duplicates",
                "cluster_damaged",
                "cluster_fallbacks",
                "bytes_via_dragonfly",
                "dragonfly_fallbacks",
            ]
        );
        assert_eq!(
            serde_json::to_string(&distinct()).unwrap(),
            concat!(
                r#"{"hits":1000000007,"misses":2000000014,"bytes_from_cache":3000000021,"#,
                r#""bytes_from_origin":4000000028,"blocks_fetched":5000000035,"#,
                r#""readahead_blocks":6000000042,"passthrough_reads":7000000049,"#,
                r#""origin_errors":8000000056,"read_errors":9000000063,"#,
                r#""origin_wait_ns":10000000070,"blocks_evicted":11000000077,"#,
                r#""bytes_from_fills":12000000084,"blocks_from_cluster":13000000091,"#,
                r#""bytes_from_cluster":14000000098,"blocks_to_cluster":15000000105,"#,
                r#""cluster_duplicates":16000000112,"cluster_damaged":17000000119,"#,
                r#""cluster_fallbacks":18000000126,"bytes_via_dragonfly":19000000133,"#,
                r#""dragonfly_fallbacks":20000000140}"#
            )
        );
    }

    #[test]
    fn the_c_json_and_the_shutdown_line_stay_as_they_were() {
        let s = distinct();
        // blobcache_stats_json: the time in whole milliseconds.
        assert_eq!(
            s.to_json(),
            concat!(
                r#"{"hits":1000000007,"misses":2000000014,"bytes_from_cache":3000000021,"#,
                r#""bytes_from_origin":4000000028,"blocks_fetched":5000000035,"#,
                r#""readahead_blocks":6000000042,"passthrough_reads":7000000049,"#,
                r#""origin_errors":8000000056,"read_errors":9000000063,"#,
                r#""origin_wait_ms":10000,"blocks_evicted":11000000077,"#,
                r#""bytes_from_fills":12000000084,"blocks_from_cluster":13000000091,"#,
                r#""bytes_from_cluster":14000000098,"blocks_to_cluster":15000000105,"#,
                r#""cluster_duplicates":16000000112,"cluster_damaged":17000000119,"#,
                r#""cluster_fallbacks":18000000126,"bytes_via_dragonfly":19000000133,"#,
                r#""dragonfly_fallbacks":20000000140}"#
            )
        );
        assert_eq!(
            Snapshot::default().to_json(),
            concat!(
                r#"{"hits":0,"misses":0,"bytes_from_cache":0,"bytes_from_origin":0,"#,
                r#""blocks_fetched":0,"readahead_blocks":0,"passthrough_reads":0,"#,
                r#""origin_errors":0,"read_errors":0,"origin_wait_ms":0,"blocks_evicted":0,"#,
                r#""bytes_from_fills":0,"blocks_from_cluster":0,"bytes_from_cluster":0,"#,
                r#""blocks_to_cluster":0,"cluster_duplicates":0,"cluster_damaged":0,"#,
                r#""cluster_fallbacks":0,"bytes_via_dragonfly":0,"dragonfly_fallbacks":0}"#
            )
        );
        assert_eq!(
            s.summary(),
            "hits=1000000007 misses=2000000014 bytes_from_cache=3000000021 \
             bytes_from_origin=4000000028 blocks_fetched=5000000035 \
             passthrough_reads=7000000049 origin_errors=8000000056 origin_wait=10.000s"
        );
    }

    #[test]
    fn every_counter_is_declared_with_help_and_times_are_named_for_their_unit() {
        for c in COUNTERS {
            assert!(c.help.ends_with('.') && c.help.len() > 10, "{c:?}");
            assert_eq!(
                c.unit == Unit::Nanoseconds,
                c.name.ends_with("_ns"),
                "{c:?}"
            );
        }
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
