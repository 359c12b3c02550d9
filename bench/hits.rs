//! Items 1, 2 and 3: warm hits through the dlopen'd library.
//!
//! A blob is filled into a fresh cache from a directory origin; then 8 MiB
//! reads of it (each thread reading its share front to back into its own
//! buffer) are timed through our library, through the C `pread` provider
//! serving the same block files, and as memcpy from a RAM buffer holding the
//! same bytes, interleaved in every repetition. Small hits (8 B and 4 KiB)
//! go to 8 blobs of 4 MiB, one per thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use blobcache_core::store::Store;
use blobcache_core::BlobKey;
use blobcache_testing::cdylib::{Blob, Lib as Provider};
use blobcache_testing::{bytes, tempdir};

use crate::{Args, Json, Summary};

const ACCOUNT: &str = "acct";
const CONTAINER: &str = "models";
const CHUNK: usize = 8 << 20;
const BLOCK: u64 = 16 << 20;
const SMALL_BLOB: usize = 4 << 20;

pub fn run(args: &Args) -> String {
    let size = args.num("--mib", 1024) << 20;
    let reps = args.num("--reps", 5);
    let small_calls = args.num("--small-calls", 1_000_000);
    let tmp = tempdir("bench-hits");
    let origin = tmp.path().join("origin");
    let dir = origin.join(ACCOUNT).join(CONTAINER);
    std::fs::create_dir_all(&dir).unwrap();
    let data = Arc::new(bytes(1, size));
    std::fs::write(dir.join("model.bin"), &*data).unwrap();
    for i in 0..8 {
        std::fs::write(dir.join(format!("small{i}")), bytes(100 + i, SMALL_BLOB)).unwrap();
    }
    let cache_dir = tmp.path().join("cache");
    let map = tmp.path().join("pread.map");
    // The library reads its configuration at the first blob_read; only
    // ours, none from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("BLOBCACHE_") {
            std::env::remove_var(k);
        }
    }
    for (k, v) in [
        ("BLOBCACHE_DIR", cache_dir.display().to_string()),
        ("BLOBCACHE_ORIGIN", format!("file://{}", origin.display())),
        ("BLOBCACHE_BLOCK_SIZE", "16M".into()),
        ("BLOBCACHE_MAX_SIZE", "90%".into()),
        ("BENCH_PREAD_MAP", map.display().to_string()),
    ] {
        std::env::set_var(k, v);
    }
    let lib = Arc::new(Provider::open(std::path::Path::new(&args.req("--lib"))));
    let big = Blob::new(ACCOUNT, CONTAINER, "model.bin");
    let smalls: Vec<Blob> = (0..8)
        .map(|i| Blob::new(ACCOUNT, CONTAINER, &format!("small{i}")))
        .collect();

    // Fill the cache (and check every byte once), then hand the block files
    // to the pread provider.
    let t0 = Instant::now();
    check_whole(&lib, &big, &data);
    for (i, b) in smalls.iter().enumerate() {
        check_whole(&lib, b, &bytes(100 + i as u64, SMALL_BLOB));
    }
    let fill_s = t0.elapsed().as_secs_f64();
    let mut lines = String::new();
    lines += &map_line(&cache_dir, "model.bin", size);
    for i in 0..8 {
        lines += &map_line(&cache_dir, &format!("small{i}"), SMALL_BLOB);
    }
    std::fs::write(&map, lines).unwrap();
    let pread = Arc::new(Provider::open(std::path::Path::new(&args.req("--pread"))));
    check_whole(&pread, &big, &data);

    // The same bytes in anonymous memory advised to use huge pages: the
    // page cache may hold the block files in large folios, which a default
    // (4 KiB-page) heap buffer does not get, so memcpy is measured from both.
    let huge = Arc::new(HugeBuf::copy_of(&data));
    let maps = Arc::new(map_blocks(&cache_dir, "model.bin", size));
    let raw_mmap = {
        let maps = maps.clone();
        move |off: usize, buf: &mut [u8]| {
            let (b, i) = (off / BLOCK as usize, off % BLOCK as usize);
            buf.copy_from_slice(&maps[b][i..i + buf.len()])
        }
    };
    let mut large = Json::default();
    for threads in [1usize, 2] {
        let (mut mem, mut huge_mem, mut ours, mut theirs) = (vec![], vec![], vec![], vec![]);
        let mut mapped = vec![];
        // One untimed pass each: page tables and mappings in place.
        sweep(threads, size, reader(&lib, &big));
        sweep(threads, size, reader(&pread, &big));
        sweep(threads, size, raw_mmap.clone());
        for _ in 0..reps {
            mem.push(sweep(threads, size, {
                let data = data.clone();
                move |off, buf: &mut [u8]| buf.copy_from_slice(&data[off..off + buf.len()])
            }));
            huge_mem.push(sweep(threads, size, {
                let huge = huge.clone();
                move |off, buf: &mut [u8]| buf.copy_from_slice(&huge.bytes()[off..off + buf.len()])
            }));
            ours.push(sweep(threads, size, reader(&lib, &big)));
            theirs.push(sweep(threads, size, reader(&pread, &big)));
            mapped.push(sweep(threads, size, raw_mmap.clone()));
        }
        let ratio =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        large = large.raw(
            &threads.to_string(),
            Json::default()
                .sum("memcpy_gbs", Summary::of(&mem))
                .sum("memcpy_huge_gbs", Summary::of(&huge_mem))
                .sum(
                    "library_vs_memcpy_huge",
                    Summary::of(&ratio(&ours, &huge_mem)),
                )
                .sum("library_gbs", Summary::of(&ours))
                .sum("pread_gbs", Summary::of(&theirs))
                .sum("library_vs_memcpy", Summary::of(&ratio(&ours, &mem)))
                .sum("library_vs_pread", Summary::of(&ratio(&ours, &theirs)))
                .sum("mmap_gbs", Summary::of(&mapped))
                .sum("mmap_vs_pread", Summary::of(&ratio(&mapped, &theirs)))
                .sum("library_vs_mmap", Summary::of(&ratio(&ours, &mapped)))
                .done(),
        );
    }

    let mut small = Json::default();
    for len in [8usize, 4096] {
        let (mut ours, mut theirs) = (vec![], vec![]);
        // rates[p][i]: provider p (ours, pread) with 1, 2 and 8 threads.
        let mut rates: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; 3]; 2];
        for _ in 0..reps {
            ours.push(1e6 / small_rate(&lib, &smalls, 1, len, small_calls));
            theirs.push(1e6 / small_rate(&pread, &smalls, 1, len, small_calls));
            for (i, t) in [1usize, 2, 8].into_iter().enumerate() {
                rates[0][i].push(small_rate(&lib, &smalls, t, len, small_calls));
                rates[1][i].push(small_rate(&pread, &smalls, t, len, small_calls));
            }
        }
        let scale = |p: usize, i: usize| -> Vec<f64> {
            rates[p][i]
                .iter()
                .zip(&rates[p][0])
                .map(|(x, y)| x / y)
                .collect()
        };
        small = small.raw(
            &len.to_string(),
            Json::default()
                .sum("library_us", Summary::of(&ours))
                .sum("pread_us", Summary::of(&theirs))
                .sum("calls_per_s_1t", Summary::of(&rates[0][0]))
                .sum("calls_per_s_2t", Summary::of(&rates[0][1]))
                .sum("calls_per_s_8t", Summary::of(&rates[0][2]))
                .sum("scaling_2t", Summary::of(&scale(0, 1)))
                .sum("scaling_8t", Summary::of(&scale(0, 2)))
                .sum("pread_scaling_2t", Summary::of(&scale(1, 1)))
                .sum("pread_scaling_8t", Summary::of(&scale(1, 2)))
                .done(),
        );
    }
    lib.shutdown();
    Json::default()
        .num("mib", (size >> 20) as f64)
        .num("reps", reps as f64)
        .num("small_calls", small_calls as f64)
        .num("fill_seconds", fill_s)
        .raw("large", large.done())
        .raw("small", small.done())
        .done()
}

/// Reads the whole blob through `p` and checks it against `want`.
fn check_whole(p: &Provider, blob: &Blob, want: &[u8]) {
    let mut buf = vec![0u8; CHUNK];
    for off in (0..want.len()).step_by(CHUNK) {
        let n = CHUNK.min(want.len() - off);
        p.read(blob, off as u64, &mut buf[..n]).unwrap();
        assert!(buf[..n] == want[off..off + n], "wrong bytes at {off}");
    }
}

/// The pread provider's map line for one blob of the cache in `cache_dir`:
/// its version directory is the one holding the published blocks.
fn map_line(cache_dir: &Path, blob: &str, size: usize) -> String {
    format!(
        "{ACCOUNT}\t{CONTAINER}\t{blob}\t{size}\t{BLOCK}\t{}\n",
        version_dir(cache_dir, blob).display()
    )
}

/// The directory of a blob's published blocks in the cache.
fn version_dir(cache_dir: &Path, blob: &str) -> PathBuf {
    let store = Store::open(cache_dir, BLOCK, false, false).unwrap();
    let key = BlobKey::new(ACCOUNT, CONTAINER, blob).unwrap();
    let versions: Vec<_> = std::fs::read_dir(store.key_dir(&key))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("b.0").exists())
        .collect();
    assert_eq!(versions.len(), 1, "one cached version of {blob}");
    versions[0].clone()
}

/// Every block file of a blob, mapped read-only: what a copy out of the
/// cache costs with no library around it.
fn map_blocks(cache_dir: &Path, blob: &str, size: usize) -> Vec<memmap2::Mmap> {
    let dir = version_dir(cache_dir, blob);
    (0..size.div_ceil(BLOCK as usize))
        .map(|i| {
            let f = std::fs::File::open(dir.join(format!("b.{i}"))).unwrap();
            // SAFETY: published blocks are never modified or truncated
            // (src/store/block.rs), so the mapping's bytes cannot change.
            unsafe { memmap2::Mmap::map(&f) }.unwrap()
        })
        .collect()
}

fn reader(p: &Arc<Provider>, blob: &Blob) -> impl Fn(usize, &mut [u8]) + Send + Sync + Clone {
    let (p, blob) = (p.clone(), blob.clone());
    move |off, buf: &mut [u8]| p.read(&blob, off as u64, buf).unwrap()
}

/// Reads `size` bytes in CHUNK pieces split over `threads` (each its own
/// contiguous share, front to back); returns GB/s.
fn sweep(
    threads: usize,
    size: usize,
    f: impl Fn(usize, &mut [u8]) + Send + Sync + Clone + 'static,
) -> f64 {
    let per = size / threads;
    let bufs: Vec<Vec<u8>> = (0..threads).map(|_| vec![1u8; CHUNK]).collect();
    let t0 = Instant::now();
    let hs: Vec<_> = bufs
        .into_iter()
        .enumerate()
        .map(|(t, mut buf)| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut off = t * per;
                while off + CHUNK <= (t + 1) * per {
                    f(off, &mut buf);
                    off += CHUNK;
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    size as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// `calls` reads of `len` bytes split over `threads`, thread t reading blob
/// t at offsets spread over it; returns calls per second.
fn small_rate(p: &Arc<Provider>, blobs: &[Blob], threads: usize, len: usize, calls: usize) -> f64 {
    let per = calls / threads;
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (p, blob) = (p.clone(), blobs[t].clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; len];
                let mut off = 0u64;
                for _ in 0..per {
                    p.read(&blob, off, &mut buf).unwrap();
                    off = (off + 65536 + 8) % (SMALL_BLOB - 4096) as u64;
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    (per * threads) as f64 / t0.elapsed().as_secs_f64()
}

/// Anonymous memory with MADV_HUGEPAGE (transparent huge pages are often
/// "madvise" only), holding a copy of some bytes.
struct HugeBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is written once in `copy_of` and only read afterwards.
unsafe impl Send for HugeBuf {}
// SAFETY: as above: shared read-only after construction.
unsafe impl Sync for HugeBuf {}

impl HugeBuf {
    fn copy_of(data: &[u8]) -> HugeBuf {
        let len = data.len();
        // SAFETY: a fresh private anonymous mapping; no other memory is touched.
        let ptr = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), len);
            p.cast::<u8>()
        };
        HugeBuf { ptr, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr`, mapped until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for HugeBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, no longer borrowed.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
