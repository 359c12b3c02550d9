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

/// Reads every blob whole in 8 MiB chunks on 8 threads, as the streamer
/// does; returns (bytes, seconds, FNV-1a digest per blob).
fn load_model(
    lib: &Arc<Lib>,
    account: &str,
    container: &str,
    blobs: &[(String, usize)],
    hash: bool,
) -> (usize, f64, Vec<u64>) {
    const CHUNK: usize = 8 << 20;
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
    let threads: Vec<_> = (0..8)
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

fn stats(lib: &Lib) -> String {
    lib.stats_json().unwrap_or_else(|| "{}".into())
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
    let gb = |bytes: usize, secs: f64| bytes as f64 / secs / 1e9;
    // Kept alive (running) until the end of main.
    let _azurite = (std::env::var("DEMO_ORIGIN").as_deref() == Ok("azurite"))
        .then(|| start_azurite(&account, &container, &blobs));

    let (n, cold, _) = load_model(&lib, &account, &container, &blobs, false);
    let cold_stats = stats(&lib);
    lib.shutdown();
    println!(
        "cold load: {:>7.1} MiB in {cold:6.2} s = {:.2} GB/s   {cold_stats}",
        n as f64 / 1048576.0,
        gb(n, cold)
    );

    let (n, warm, _) = load_model(&lib, &account, &container, &blobs, false);
    let warm_stats = stats(&lib);
    lib.shutdown();
    // Verification, not timed: read everything again and hash it.
    let (_, _, d1) = load_model(&lib, &account, &container, &blobs, true);
    lib.shutdown();
    println!(
        "warm load: {:>7.1} MiB in {warm:6.2} s = {:.2} GB/s   {warm_stats}",
        n as f64 / 1048576.0,
        gb(n, warm)
    );
    if let Ok(dir) = std::env::var("DEMO_SOURCE_DIR") {
        let want: Vec<u64> = blobs
            .iter()
            .map(|(name, _)| file_digest(&std::path::Path::new(&dir).join(name)))
            .collect();
        assert_eq!(d1, want, "loaded bytes differ from the source files");
        println!("every byte matches the source files");
    }
    println!("warm/cold speed-up: {:.1}x", cold / warm);
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
        "origin: Azurite on 127.0.0.1:{} (uploaded {:.1} MiB in {:.1} s)",
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
