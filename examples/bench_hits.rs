//! Warm-hit throughput of the cache against memcpy, measured in one run.
//!
//!   cargo run --release --example bench_hits [-- --size-mib 1024 --reps 5]
//!
//! Fills a cache from a directory origin, then times 8 MiB reads of the
//! cached blob (1 and 2 threads) against memcpy of the same sizes from a RAM
//! buffer, reporting medians (min–max) over repetitions and the ratio.

use std::sync::Arc;
use std::time::Instant;

use blobcache::config::{Config, MaxSize, OriginConfig};
use blobcache::{BlobKey, Cache};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let size = arg("--size-mib", 1024) << 20;
    let reps = arg("--reps", 5);
    let chunk = 8 << 20;
    let tmp = std::env::temp_dir().join(format!("blobcache-bench-{}", std::process::id()));
    let origin = tmp.join("origin");
    std::fs::create_dir_all(origin.join("acct/c")).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(origin.join("acct/c/blob"), &data).unwrap();
    let config = Config {
        dir: Some(tmp.join("cache")),
        max_size: MaxSize::Bytes(u64::MAX / 2),
        origin: OriginConfig::Directory(origin),
        ..Config::default()
    };
    let cache = Arc::new(Cache::new(config).unwrap());
    let key = BlobKey::new("acct", "c", "blob").unwrap();
    cache.fill_all(&key).unwrap();
    let data = Arc::new(data);

    println!(
        "warm 8 MiB reads over a {} MiB blob, {reps} repetitions, GB/s median (min-max)",
        size >> 20
    );
    for threads in [1usize, 2] {
        let mut lib = vec![];
        let mut mem = vec![];
        for _ in 0..reps {
            lib.push(run(threads, size, chunk, {
                let (cache, key) = (cache.clone(), key.clone());
                move |off, buf: &mut [u8]| cache.read(&key, off as u64, buf).unwrap()
            }));
            mem.push(run(threads, size, chunk, {
                let data = data.clone();
                move |off, buf: &mut [u8]| buf.copy_from_slice(&data[off..off + buf.len()])
            }));
        }
        let (l, lmin, lmax) = median(lib);
        let (m, mmin, mmax) = median(mem);
        println!(
            "  {threads} thread(s): library {l:.2} ({lmin:.2}-{lmax:.2})  memcpy {m:.2} ({mmin:.2}-{mmax:.2})  ratio {:.2}",
            l / m
        );
    }
    small_reads(&cache, &tmp, reps);
    cache.shutdown();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Small hits (8 B and 4 KiB) on 8 blobs: median time per call with one
/// thread, and calls/s with 1, 2 and 8 threads (each thread its own blob).
fn small_reads(cache: &Arc<Cache>, tmp: &std::path::Path, reps: usize) {
    let origin = tmp.join("origin/acct/c");
    let keys: Vec<BlobKey> = (0..8)
        .map(|i| {
            let name = format!("small{i}");
            std::fs::write(origin.join(&name), vec![i as u8; 4 << 20]).unwrap();
            let k = BlobKey::new("acct", "c", &name).unwrap();
            cache.fill_all(&k).unwrap();
            k
        })
        .collect();
    const CALLS: usize = 200_000;
    for len in [8usize, 4096] {
        let mut line = format!("small hits of {len} B:");
        let mut single = 0.0;
        for threads in [1usize, 2, 8] {
            let mut rates = vec![];
            for _ in 0..reps {
                let t0 = Instant::now();
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (cache, key) = (cache.clone(), keys[t].clone());
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; len];
                            let mut off = 0u64;
                            for _ in 0..CALLS / threads {
                                cache.read(&key, off, &mut buf).unwrap();
                                off = (off + 65536 + 8) % ((4 << 20) - 4096);
                            }
                        })
                    })
                    .collect();
                hs.into_iter().for_each(|h| h.join().unwrap());
                rates.push(CALLS as f64 / t0.elapsed().as_secs_f64());
            }
            let (r, _, _) = median(rates);
            if threads == 1 {
                single = r;
                line += &format!(" {:.2} us/call;", 1e6 / r);
            }
            line += &format!(" {threads}T {:.2} Mcalls/s ({:.2}x)", r / 1e6, r / single);
        }
        println!("{line}");
    }
}

/// Reads the whole blob in `chunk`-sized pieces split over `threads`;
/// returns GB/s.
fn run(
    threads: usize,
    size: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [u8]) + Send + Sync + Clone + 'static,
) -> f64 {
    let per = size / threads;
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; chunk];
                buf.iter_mut().step_by(4096).for_each(|b| *b = 1); // fault it in
                let mut off = t * per;
                while off + chunk <= (t + 1) * per {
                    f(off, &mut buf);
                    off += chunk;
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    size as f64 / t0.elapsed().as_secs_f64() / 1e9
}
