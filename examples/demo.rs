//! The main job, end to end: a cold load and then a warm load of a model
//! through the shared library, loaded the way the Run:ai streamer loads it
//! (`dlopen(RTLD_NOW | RTLD_LOCAL)`, `dlsym`, never `dlclose`).
//!
//! Run it with `scripts/demo`, which builds the library and writes the model.
//! Environment: `DEMO_LIB` (path to libblobcache.so), `DEMO_ACCOUNT`,
//! `DEMO_CONTAINER`, `DEMO_BLOBS` (comma-separated `name:size`),
//! `DEMO_SOURCE_DIR` (the model's files), plus the library's own
//! `BLOBCACHE_*` and Azure variables. With `DEMO_ORIGIN=azurite` the demo
//! starts Azurite on a free loopback port (the test suite's harness), uploads
//! the files to it and points the library at it.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use blobcache_testing::cdylib::Lib;

/// (offset, hash) of each chunk read from one blob.
type Digests = std::sync::Mutex<Vec<(usize, u64)>>;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/demo)"))
}

/// Bytes per read, the streamer's default chunk.
const CHUNK: usize = 8 << 20;

/// Reads every blob whole in [`CHUNK`]s on [`THREADS`] threads, as the
/// streamer does; returns (bytes, seconds, FNV-1a digest per blob).
fn load_model(
    lib: &Arc<Lib>,
    account: &str,
    container: &str,
    blobs: &[(String, usize)],
    hash: bool,
) -> (usize, f64, Vec<u64>) {
    let mut work = vec![];
    for (b, (_, size)) in blobs.iter().enumerate() {
        for off in (0..*size).step_by(CHUNK) {
            work.push((b, off, CHUNK.min(size - off)));
        }
    }
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let digests: Arc<Vec<Digests>> = Arc::new(
        blobs
            .iter()
            .map(|_| std::sync::Mutex::new(vec![]))
            .collect(),
    );
    let names: Arc<Vec<(CString, CString, CString)>> = Arc::new(
        blobs
            .iter()
            .map(|(n, _)| {
                (
                    CString::new(account).unwrap(),
                    CString::new(container).unwrap(),
                    CString::new(n.as_str()).unwrap(),
                )
            })
            .collect(),
    );
    let t0 = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lib, work, next, digests, names) = (
                lib.clone(),
                work.clone(),
                next.clone(),
                digests.clone(),
                names.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                let mut err = vec![0 as c_char; 512];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(b, off, len)) = work.get(i) else {
                        return;
                    };
                    let (a, c, n) = &names[b];
                    // SAFETY: valid strings, a buffer of `len` bytes, a 512-byte error buffer.
                    let r = unsafe {
                        (lib.blob_read)(
                            a.as_ptr(),
                            c.as_ptr(),
                            n.as_ptr(),
                            buf.as_mut_ptr().cast(),
                            off,
                            len,
                            err.as_mut_ptr(),
                            err.len(),
                        )
                    };
                    if r != len as isize {
                        // SAFETY: the library NUL-terminates its message.
                        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
                        panic!("read failed: {}", msg.to_string_lossy());
                    }
                    if !hash {
                        continue;
                    }
                    let mut h: u64 = 0xcbf29ce484222325;
                    for &x in &buf[..len] {
                        h = (h ^ x as u64).wrapping_mul(0x100000001b3);
                    }
                    digests[b].lock().unwrap().push((off, h));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let secs = t0.elapsed().as_secs_f64();
    let total = blobs.iter().map(|(_, s)| s).sum();
    let per_blob = digests
        .iter()
        .map(|d| {
            let mut v = d.lock().unwrap().clone();
            v.sort();
            v.iter().fold(0u64, |acc, (_, h)| acc.rotate_left(5) ^ h)
        })
        .collect();
    (total, secs, per_blob)
}

/// Reader threads, as the streamer runs them for one client.
const THREADS: usize = 8;

/// What one load's counters say (`blobcache_stats_json`, whose members
/// src/lib.rs documents; the library's counters restart at zero after each
/// `shutdown`, so these are one session's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counters {
    /// Reads served entirely from blocks already cached.
    hits: u64,
    /// Reads that waited for at least one block from the origin.
    misses: u64,
    /// Bytes copied to readers out of cached blocks, those filled during
    /// this very read included.
    bytes_from_cache: u64,
    /// Bytes copied to readers out of blocks still being filled, as they
    /// arrived.
    bytes_from_fills: u64,
    /// Bytes fetched from the origin, into the cache or straight to readers.
    bytes_from_origin: u64,
    blocks_fetched: u64,
    readahead_blocks: u64,
    passthrough_reads: u64,
    origin_errors: u64,
    /// Time readers spent waiting on the origin, summed over the threads.
    origin_wait_ms: u64,
}

impl Counters {
    fn of(lib: &Lib) -> Counters {
        let json = lib
            .stats_json()
            .expect("the library exports blobcache_stats_json");
        Counters::parse(&json)
    }

    fn parse(json: &str) -> Counters {
        let v: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("blobcache_stats_json returned {json:?}: {e}"));
        let n = |name: &str| {
            v[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name} in blobcache_stats_json's {json}"))
        };
        Counters {
            hits: n("hits"),
            misses: n("misses"),
            bytes_from_cache: n("bytes_from_cache"),
            bytes_from_fills: n("bytes_from_fills"),
            bytes_from_origin: n("bytes_from_origin"),
            blocks_fetched: n("blocks_fetched"),
            readahead_blocks: n("readahead_blocks"),
            passthrough_reads: n("passthrough_reads"),
            origin_errors: n("origin_errors"),
            origin_wait_ms: n("origin_wait_ms"),
        }
    }
}

/// One timed load and what the library counted during it.
#[derive(Clone, Copy, Debug)]
struct Load {
    bytes: usize,
    secs: f64,
    counters: Counters,
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "0 bytes".into()
    } else {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    }
}

/// The lines that describe one load: time and rate, then the counters in
/// words (bytes from the origin, bytes to the readers, and the wait on the
/// origin named as the sum over the reader threads it is).
fn describe(title: &str, load: &Load) -> String {
    let c = &load.counters;
    let reads = c.hits + c.misses;
    let mut out = format!(
        "{title:<26}{:>9} in {:.2} s = {:.2} GB/s\n",
        mib(load.bytes as u64),
        load.secs,
        load.bytes as f64 / load.secs / 1e9
    );
    let mut origin = mib(c.bytes_from_origin);
    if c.blocks_fetched > 0 {
        origin += &format!(
            ": {} blocks fetched into the cache ({} of them by readahead)",
            c.blocks_fetched, c.readahead_blocks
        );
    }
    if c.passthrough_reads > 0 {
        origin += &format!(
            "; {} reads went straight to the origin (the cache could not take them)",
            c.passthrough_reads
        );
    }
    if c.origin_errors > 0 {
        origin += &format!("; {} fetches failed", c.origin_errors);
    }
    out += &format!("  {:<24}{origin}\n", "from the origin");
    let served = if c.misses == 0 {
        format!(
            "{} from the cache: all {reads} reads were hits",
            mib(c.bytes_from_cache)
        )
    } else {
        let mut s = format!(
            "{} copied out of the cache as its blocks arrived: {} of {reads} reads waited for a fetch",
            mib(c.bytes_from_cache + c.bytes_from_fills),
            c.misses
        );
        if c.bytes_from_fills > 0 {
            s += &format!(
                "; {} of it taken from blocks still being filled, as the bytes came in",
                mib(c.bytes_from_fills)
            );
        }
        s
    };
    out += &format!("  {:<24}{served}\n", "to the readers");
    let wait = c.origin_wait_ms as f64 / 1000.0;
    let mut waited = format!(
        "{wait:.2} s summed over the {THREADS} reader threads, {:.2} s per thread on average, in a {:.2} s load",
        wait / THREADS as f64,
        load.secs
    );
    if c.misses == 0 && c.origin_wait_ms > 0 {
        waited += &format!(
            "\n  {:<24}(no read waited for data: this is the version check at each blob's first reads in the session,\n  {:<24}one request per blob that every reader thread arriving meanwhile waits for, and, for Azure, starting the session's client)",
            "", ""
        );
    }
    out += &format!("  {:<24}{waited}\n", "waiting on the origin");
    out
}

/// What a user should take from the two loads.
fn conclusion(cold: &Load, warm: &Load) -> String {
    let speedup = cold.secs / warm.secs;
    let from_origin = warm.counters.bytes_from_origin;
    if from_origin == 0 {
        format!(
            "conclusion: the warm load was {speedup:.1}× faster than the cold one and fetched nothing from the origin.\n\
             The first load on a node fills its cache; the next pod, tensor-parallel rank or restart on that node\n\
             reads the model from local disk, as the warm load did."
        )
    } else {
        format!(
            "conclusion: the warm load was {speedup:.1}× faster than the cold one but still fetched {} from the origin:\n\
             the cache did not keep the whole model (see `blobcache stats`: the cap, evicted blocks, reads passed straight through).",
            mib(from_origin)
        )
    }
}

fn main() {
    let lib = Arc::new(Lib::open(std::path::Path::new(&env("DEMO_LIB"))));
    let account = env("DEMO_ACCOUNT");
    let container = env("DEMO_CONTAINER");
    let blobs: Vec<(String, usize)> = env("DEMO_BLOBS")
        .split(',')
        .map(|s| {
            let (name, size) = s.rsplit_once(':').expect("name:size");
            (name.to_string(), size.parse().unwrap())
        })
        .collect();
    // Kept alive (running) until the end of main.
    let _azurite = (std::env::var("DEMO_ORIGIN").as_deref() == Ok("azurite"))
        .then(|| start_azurite(&account, &container, &blobs));
    println!(
        "[4/4] loading the model through libblobcache.so as the Run:ai streamer does ({THREADS} threads, reads of {} MiB),\n      \
         first with an empty cache, then again from the cache",
        CHUNK >> 20
    );

    let (bytes, secs, _) = load_model(&lib, &account, &container, &blobs, false);
    let cold = Load {
        bytes,
        secs,
        counters: Counters::of(&lib),
    };
    lib.shutdown();
    print!("\n{}", describe("cold load (empty cache):", &cold));

    let (bytes, secs, _) = load_model(&lib, &account, &container, &blobs, false);
    let warm = Load {
        bytes,
        secs,
        counters: Counters::of(&lib),
    };
    lib.shutdown();
    print!("{}", describe("warm load (cache filled):", &warm));
    // Verification, not timed: read everything again and hash it.
    let (_, _, d1) = load_model(&lib, &account, &container, &blobs, true);
    lib.shutdown();
    if let Ok(dir) = std::env::var("DEMO_SOURCE_DIR") {
        let want: Vec<u64> = blobs
            .iter()
            .map(|(name, _)| file_digest(&std::path::Path::new(&dir).join(name)))
            .collect();
        assert_eq!(d1, want, "loaded bytes differ from the source files");
        println!("every byte read matches the source files");
    }
    println!("\n{}", conclusion(&cold, &warm));
}

/// Starts Azurite, uploads the model's files to it, and points the library
/// (configured from the environment at its first read) at it.
fn start_azurite(
    account: &str,
    container: &str,
    blobs: &[(String, usize)],
) -> blobcache_testing::azurite::Azurite {
    use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};
    assert_eq!(
        account, ACCOUNT,
        "Azurite serves only its development account"
    );
    let dir = env("DEMO_SOURCE_DIR");
    let az = Azurite::start();
    az.create_container(container);
    let t0 = Instant::now();
    let mut total = 0;
    for (name, size) in blobs {
        let data = std::fs::read(std::path::Path::new(&dir).join(name)).unwrap();
        assert_eq!(data.len(), *size, "{name}: size differs from DEMO_BLOBS");
        az.put(container, name, &data);
        total += size;
    }
    println!(
        "      Azurite on 127.0.0.1:{}: uploaded {:.1} MiB in {:.1} s",
        az.port,
        total as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    // Still single-threaded here: nothing reads the environment concurrently.
    std::env::set_var("BLOBCACHE_ORIGIN", "azure");
    std::env::set_var("BLOBCACHE_AZURE_ENDPOINT", az.template());
    std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT);
    std::env::set_var("AZURE_STORAGE_ACCOUNT_KEY", KEY);
    az
}

/// The digest `load_model` computes, over a local file.
fn file_digest(path: &std::path::Path) -> u64 {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data.chunks(8 << 20).fold(0u64, |acc, chunk| {
        let mut h: u64 = 0xcbf29ce484222325;
        for &x in chunk {
            h = (h ^ x as u64).wrapping_mul(0x100000001b3);
        }
        acc.rotate_left(5) ^ h
    })
}

#[cfg(test)]
mod tests {
    //! The report's wording: each counter under a plain label, with what it
    //! does and does not mean (`cargo test --example demo`).

    use super::*;

    const MIB: u64 = 1 << 20;

    fn cold() -> Load {
        Load {
            bytes: 256 << 20,
            secs: 1.23,
            counters: Counters {
                hits: 4,
                misses: 28,
                bytes_from_cache: 192 * MIB,
                bytes_from_fills: 64 * MIB,
                bytes_from_origin: 256 * MIB,
                blocks_fetched: 16,
                readahead_blocks: 4,
                origin_wait_ms: 9_610,
                ..Counters::default()
            },
        }
    }

    fn warm() -> Load {
        Load {
            bytes: 256 << 20,
            secs: 0.08,
            counters: Counters {
                hits: 32,
                bytes_from_cache: 256 * MIB,
                origin_wait_ms: 900,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn the_counters_are_read_from_the_librarys_json() {
        let json = concat!(
            r#"{"hits":1,"misses":2,"bytes_from_cache":3,"bytes_from_origin":4,"#,
            r#""blocks_fetched":5,"readahead_blocks":6,"passthrough_reads":7,"#,
            r#""origin_errors":8,"read_errors":9,"origin_wait_ms":10,"blocks_evicted":11,"#,
            r#""bytes_from_fills":12}"#
        );
        assert_eq!(
            Counters::parse(json),
            Counters {
                hits: 1,
                misses: 2,
                bytes_from_cache: 3,
                bytes_from_fills: 12,
                bytes_from_origin: 4,
                blocks_fetched: 5,
                readahead_blocks: 6,
                passthrough_reads: 7,
                origin_errors: 8,
                origin_wait_ms: 10,
            }
        );
    }

    #[test]
    fn a_cold_load_shows_the_bytes_from_the_origin_and_the_wait_as_a_sum_over_threads() {
        let text = describe("cold load (empty cache):", &cold());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "cold load (empty cache):  256.0 MiB in 1.23 s = 0.22 GB/s",
                "  from the origin         256.0 MiB: 16 blocks fetched into the cache (4 of them by readahead)",
                "  to the readers          256.0 MiB copied out of the cache as its blocks arrived: 28 of 32 reads waited for a fetch; 64.0 MiB of it taken from blocks still being filled, as the bytes came in",
                "  waiting on the origin   9.61 s summed over the 8 reader threads, 1.20 s per thread on average, in a 1.23 s load",
            ]
        );
    }

    #[test]
    fn a_warm_load_shows_nothing_from_the_origin_and_says_what_its_wait_is() {
        let text = describe("warm load (cache filled):", &warm());
        assert!(
            text.contains("  from the origin         0 bytes\n"),
            "{text}"
        );
        assert!(
            text.contains("256.0 MiB from the cache: all 32 reads were hits"),
            "{text}"
        );
        assert!(
            text.contains("0.90 s summed over the 8 reader threads"),
            "{text}"
        );
        assert!(
            text.contains("the version check at each blob's first reads"),
            "{text}"
        );
    }

    #[test]
    fn the_conclusion_gives_the_speed_up_and_what_it_means_for_the_next_pod() {
        let text = conclusion(&cold(), &warm());
        assert!(
            text.starts_with(
                "conclusion: the warm load was 15.4× faster than the cold one and fetched nothing from the origin."
            ),
            "{text}"
        );
        assert!(text.contains("the next pod"), "{text}");
        let mut partial = warm();
        partial.counters.bytes_from_origin = 64 * MIB;
        let text = conclusion(&cold(), &partial);
        assert!(
            text.contains("but still fetched 64.0 MiB from the origin"),
            "{text}"
        );
    }
}
