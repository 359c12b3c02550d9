//! One host process loading one blob through a dlopen'd provider, as the
//! streamer does: `--threads` threads taking 8 MiB chunks front to back.
//! The library's configuration comes from the environment the caller set.
//!
//! Reports the load's time and this process's memory (from
//! /proc/self/status, sampled every few milliseconds during the load):
//! VmRSS, and its parts RssAnon (heap, stacks, buffers) and RssFile (file
//! pages mapped, which includes the cache's mmapped block files while they
//! are mapped), before the first read and at their peaks; VmHWM, RssAnon and
//! RssFile at the end of the load; RssAnon and RssFile after the library's
//! `shutdown()`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_testing::bytes;
use blobcache_testing::cdylib::{Blob, Lib as Provider};

use crate::{Args, Json};

/// Memory figures of this process, in KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    hwm: u64,
}

fn mem() -> Mem {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        hwm: field("VmHWM:"),
    }
}

fn wait_at_barrier(dir: &str, parties: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/{}", std::process::id()), b"").unwrap();
    let t0 = Instant::now();
    while std::fs::read_dir(dir).unwrap().count() < parties {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "barrier: the others never came"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn run(args: &Args) -> String {
    const CHUNK: usize = 8 << 20;
    let blob = Blob::parse(&args.req("--blob"));
    let size = args.num("--size", 0);
    let threads = args.num("--threads", 8);
    let verify = args.str("--verify-seed").map(|s| s.parse::<u64>().unwrap());
    let p = Arc::new(Provider::open(std::path::Path::new(&args.req("--lib"))));
    // The destination: per-thread buffers that are reused (as the streamer
    // reuses its own), or the whole blob when the bytes are to be checked.
    let whole = verify.map(|_| Arc::new(SharedBuf::new(size)));
    let before = mem();
    if let Some(dir) = args.str("--barrier") {
        wait_at_barrier(&dir, args.num("--parties", 1));
    }
    let peak = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = mem();
                peak[0].fetch_max(m.rss, Ordering::Relaxed);
                peak[1].fetch_max(m.anon, Ordering::Relaxed);
                peak[2].fetch_max(m.file, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (p, blob, next, whole) = (p.clone(), blob.clone(), next.clone(), whole.clone());
            std::thread::spawn(move || {
                let mut own = if whole.is_none() {
                    vec![1u8; CHUNK]
                } else {
                    vec![]
                };
                loop {
                    let off = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if off >= size {
                        return;
                    }
                    let n = CHUNK.min(size - off);
                    let buf = match &whole {
                        // SAFETY: each chunk [off, off+n) is handed to one
                        // thread only (the atomic counter), so no two threads
                        // touch the same bytes.
                        Some(w) => unsafe { w.slice(off, n) },
                        None => &mut own[..n],
                    };
                    p.read(&blob, off as u64, buf).unwrap();
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let after = mem();
    if let (Some(seed), Some(w)) = (verify, &whole) {
        // SAFETY: every writer has been joined.
        let got = unsafe { w.slice(0, size) };
        assert!(
            *got == bytes(seed, size)[..],
            "the loaded bytes differ from the blob's"
        );
    }
    p.shutdown();
    let down = mem();
    let kib = |k: &str, v: u64| (k.to_string(), v as f64);
    let mut j = Json::default()
        .num("seconds", seconds)
        .num("bytes", size as f64)
        .num("threads", threads as f64)
        .raw("verified", if verify.is_some() { "true" } else { "false" });
    for (k, v) in [
        kib("rss_before_kib", before.rss),
        kib("anon_before_kib", before.anon),
        kib("file_before_kib", before.file),
        kib(
            "rss_peak_kib",
            peak[0].load(Ordering::Relaxed).max(after.rss),
        ),
        kib(
            "anon_peak_kib",
            peak[1].load(Ordering::Relaxed).max(after.anon),
        ),
        kib(
            "file_peak_kib",
            peak[2].load(Ordering::Relaxed).max(after.file),
        ),
        kib("hwm_kib", after.hwm),
        kib("rss_after_kib", after.rss),
        kib("anon_end_kib", after.anon),
        kib("file_end_kib", after.file),
        kib("anon_after_shutdown_kib", down.anon),
        kib("file_after_shutdown_kib", down.file),
    ] {
        j = j.num(&k, v);
    }
    j.done()
}

/// A buffer that threads write disjoint parts of.
struct SharedBuf(std::cell::UnsafeCell<Vec<u8>>);

// SAFETY: writers only touch disjoint ranges (see `slice`).
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    fn new(len: usize) -> SharedBuf {
        SharedBuf(std::cell::UnsafeCell::new(vec![0u8; len]))
    }

    /// # Safety
    /// No two live slices may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [u8] {
        // SAFETY: in bounds (callers pass ranges inside the blob); disjoint
        // per the function's contract.
        unsafe { std::slice::from_raw_parts_mut((*self.0.get()).as_mut_ptr().add(off), len) }
    }
}
