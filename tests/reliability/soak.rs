//! Concurrency soak: 4 processes × 32 threads reading random ranges of
//! several blobs for a bounded time, with a cap far below the working set so
//! eviction runs all the time. Every byte must be right, disk usage must
//! stay near the cap, and no process may die of a signal (SIGBUS from a
//! truncated mapping, for one).
//!
//! `BC_SOAK_SECS` sets the length (CI: 20 s; `scripts/reliability
//! --long`: 600 s).

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_testing::bytes;
use blobcache_testing::fixture::{du, Fixture, ACCOUNT, CONTAINER};

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

const MIB: usize = 1 << 20;
const PROCESSES: usize = 4;
const THREADS: usize = 32;
const FETCH_CONCURRENCY: usize = 4;
const CAP_MIB: usize = 16;

/// Child side: `BC_W_THREADS` threads reading random ranges for
/// `BC_W_SECS` seconds through the exported `blob_read`.
pub fn worker() {
    let blobs = Arc::new(worker::blobs_from_env_pub());
    let truths: Arc<Vec<Vec<u8>>> = Arc::new(blobs.iter().map(Blob::data).collect());
    let threads: usize = std::env::var("BC_W_THREADS").unwrap().parse().unwrap();
    let secs: u64 = std::env::var("BC_W_SECS").unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let seed = std::process::id() as u64 * 0x9E37_79B9;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (blobs, truths) = (blobs.clone(), truths.clone());
            std::thread::spawn(move || {
                let mut o = Outcome::default();
                let mut bytes_read = 0u64;
                let mut x = (seed + t as u64 * 7919) | 1;
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut buf = vec![0u8; 2 * MIB];
                while Instant::now() < deadline {
                    let i = next() as usize % blobs.len();
                    let b = &blobs[i];
                    let len = 1 + next() as usize % (2 * MIB);
                    let off = next() as usize % (b.size - len);
                    o.tried += 1;
                    match worker::read(b, off, &mut buf[..len]) {
                        Ok(()) if buf[..len] == truths[i][off..off + len] => {
                            o.correct += 1;
                            bytes_read += len as u64;
                        }
                        Ok(()) => o.other(format!("WRONG BYTES: {} {off}+{len}", b.name)),
                        Err(e) => o.other(e),
                    }
                }
                (o, bytes_read)
            })
        })
        .collect();
    let mut o = Outcome::default();
    let mut total = 0;
    for h in handles {
        let (r, n) = h.join().unwrap();
        o.add(&r);
        total += n;
    }
    worker::shutdown();
    println!("BC_RESULT bytes={total}");
    worker::print_result(&o);
}

#[test]
fn four_processes_of_32_threads_with_eviction_all_the_time_read_only_right_bytes() {
    let secs: u64 = std::env::var("BC_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let fx = Fixture::new("soak");
    let blobs: Vec<Blob> = (0..4)
        .map(|i| {
            Blob::new(
                ACCOUNT,
                CONTAINER,
                &format!("w{i}.safetensors"),
                900 + i,
                12 * MIB + 4321 * i as usize,
            )
        })
        .collect();
    for b in &blobs {
        fx.put(&b.name, &bytes(b.seed, b.size));
    }
    let working_set: usize = blobs.iter().map(|b| b.size).sum();
    let mut env = fx.env("1M");
    env.extend(
        [
            ("BLOBCACHE_MAX_SIZE", format!("{CAP_MIB}M")),
            ("BLOBCACHE_FETCH_CONCURRENCY", FETCH_CONCURRENCY.to_string()),
            ("BLOBCACHE_LOG", "error".into()),
            ("BC_W_THREADS", THREADS.to_string()),
            ("BC_W_SECS", secs.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    // Disk usage, sampled while the soak runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
        let dir = fx.cache.path().join("v1/blobs");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(du(&dir), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let kids: Vec<_> = (0..PROCESSES)
        .map(|_| worker::command("soak", &blobs, &env).spawn().unwrap())
        .collect();
    let mut o = Outcome::default();
    let mut total = 0u64;
    for k in kids {
        let out = k.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(sig) = out.status.signal() {
            o.other(format!("a soak process died of signal {sig}"));
            continue;
        }
        let r = worker::parse_results(&stdout);
        if !r.reported || !out.status.success() {
            o.other(format!(
                "a soak process failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        o.add(&r.outcome());
        total += r.u64("bytes");
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let cap = (CAP_MIB * MIB) as u64;
    // Each process checks room against its own count of the usage, which
    // learns of the others' fills only when it scans the store (at an
    // eviction, and every 5 s): after an eviction to 90 % of the cap, every
    // process may fill the last 10 % itself, plus a block per fill worker
    // in flight (docs/RELIABILITY.md, known limits).
    let allowance = (PROCESSES * (CAP_MIB * MIB / 10 + FETCH_CONCURRENCY * MIB)) as u64;
    if peak > cap + allowance {
        o.other(format!(
            "disk usage peaked at {} MiB, cap {CAP_MIB} MiB",
            peak >> 20
        ));
    }
    o.note(format!(
        "{secs} s, {PROCESSES} processes x {THREADS} threads, working set {} MiB, cap {CAP_MIB} MiB: {} MiB read and checked, peak usage {:.1} MiB ({} samples; bound: cap + {:.1} MiB, i.e. per process 10 % of the cap and a block per fill worker)",
        working_set >> 20,
        total >> 20,
        peak as f64 / MIB as f64,
        samples.load(Ordering::Relaxed),
        allowance as f64 / MIB as f64
    ));
    report::record(
        "soak",
        "4 processes x 32 threads, random ranges, cap below the working set",
        &o,
        "soak::four_processes_of_32_threads_with_eviction_all_the_time_read_only_right_bytes",
    );
    report::assert_clean("soak", &o);
    assert_eq!(o.clean_error, 0);
    assert!(o.correct > 1000, "too few reads: {o:?}");
}
