//! The host's address space is not the cache's to exhaust: a load of any
//! size leaves at most `BLOBCACHE_MAPPED_BLOCKS` blocks mapped and
//! `BLOBCACHE_MAPPED_BYTES` bytes of them (so file-backed RSS is bounded
//! too), and a block that cannot be mapped for lack of address space is
//! read with `pread`, never taken for a damaged block.
//!
//! Each case runs in a child process (`worker`) that loads the shared
//! library as the streamer does and counts its own mappings of cache files
//! in `/proc/self/maps`.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use blobcache_testing::Fixture;

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

const ACCOUNT: &str = "acct";
const CONTAINER: &str = "models";

/// Mappings of files under `dir` in this process now.
fn mappings_of(dir: &str) -> u64 {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(dir))
        .count() as u64
}

/// This process's file-backed resident memory, in KiB.
fn rss_file_kib() -> u64 {
    status_kib("RssFile:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `map-budget`: reads `BC_W_TINY` one-block blobs `tiny/<i>` (4 KiB each)
/// and then the blobs of `BC_W_BLOBS` whole, and reports the most mappings
/// of cache files and the most file-backed RSS growth seen after any read.
/// `map-enomem`: reads the blobs once (filling the cache), shuts down,
/// limits its address space so that no block can be mapped, and reads them
/// again.
pub fn worker(mode: &str) {
    let dir = std::env::var("BLOBCACHE_DIR").unwrap();
    let blobs = worker::blobs_from_env_pub();
    let mut o = Outcome::default();
    match mode {
        "map-budget" => {
            worker::lib();
            let rss0 = rss_file_kib();
            let (mut maps_peak, mut rss_peak) = (0, 0);
            let mut sample = || {
                maps_peak = maps_peak.max(mappings_of(&dir));
                rss_peak = rss_peak.max(rss_file_kib().saturating_sub(rss0));
            };
            let tiny = worker::env_num("BC_W_TINY", 0);
            for i in 0..tiny {
                let b = Blob::new(ACCOUNT, CONTAINER, &format!("tiny/{i}"), 5000 + i, 4096);
                o.tried += 1;
                match worker::read_whole(&b, 4096) {
                    Ok(true) => o.correct += 1,
                    Ok(false) => o.other(format!("{}: WRONG BYTES", b.name)),
                    Err(m) => o.other(format!("{}: {m}", b.name)),
                }
                sample();
            }
            for b in &blobs {
                // One read at a time, sampling after each.
                let truth = b.data();
                let mut buf = vec![0u8; 8 << 20];
                let mut off = 0;
                o.tried += 1;
                let mut ok = true;
                while off < b.size {
                    let n = buf.len().min(b.size - off);
                    if let Err(m) = worker::read(b, off, &mut buf[..n]) {
                        o.other(format!("{}: {m}", b.name));
                        ok = false;
                        break;
                    }
                    if buf[..n] != truth[off..off + n] {
                        o.other(format!("{}: WRONG BYTES at {off}", b.name));
                        ok = false;
                        break;
                    }
                    sample();
                    off += n;
                }
                if ok {
                    o.correct += 1;
                }
            }
            worker::print_result_with(
                &o,
                &[
                    ("maps_peak", maps_peak.to_string()),
                    ("rss_file_peak_kib", rss_peak.to_string()),
                ],
            );
        }
        "map-enomem" => {
            for b in &blobs {
                if worker::read_whole(b, 8 << 20) != Ok(true) {
                    panic!("the first, unconstrained read of {} failed", b.name);
                }
            }
            worker::shutdown();
            let before = block_inodes(&dir);
            // Room for the next lifecycle's threads and small allocations,
            // not for one more block mapping (16 MiB).
            let vm = status_kib("VmSize:") * 1024;
            let limit = vm + (10 << 20);
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit with a valid struct, on this process.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
            for b in &blobs {
                o.tried += 1;
                match worker::read_whole(b, 4 << 20) {
                    Ok(true) => o.correct += 1,
                    Ok(false) => o.other(format!("{}: WRONG BYTES", b.name)),
                    Err(m) => o.other(format!("{}: {m}", b.name)),
                }
            }
            let after = block_inodes(&dir);
            if after != before {
                o.other(format!(
                    "block files replaced (refetched): {before:?} -> {after:?}"
                ));
            }
            worker::print_result_with(&o, &[("blocks", after.len().to_string())]);
        }
        other => panic!("unknown mode {other}"),
    }
}

/// The published block files under `dir` and their inode numbers.
fn block_inodes(dir: &str) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    blobcache_testing::fixture::walk(std::path::Path::new(dir), &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("b.") {
            v.push((p.display().to_string(), std::fs::metadata(p).unwrap().ino()));
        }
    });
    v.sort();
    v
}

fn env_of(fx: &Fixture, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_READAHEAD".into(), "0".into()));
    env.push(("BLOBCACHE_LOG".into(), "warn".into()));
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

#[test]
fn a_load_of_many_blocks_keeps_mappings_and_rss_within_the_budget() {
    let fx = Fixture::new("map-budget");
    const TINY: u64 = 1500;
    for i in 0..TINY {
        fx.put(
            &format!("tiny/{i}"),
            &blobcache_testing::bytes(5000 + i, 4096),
        );
    }
    let big = Blob::new(ACCOUNT, CONTAINER, "big.bin", 77, 96 << 20);
    fx.put(&big.name, &big.data());

    // Count: 1500 one-block blobs and 1536 blocks of 64 KiB, at most 256
    // open (the budget's unit test pins the order of closing).
    let blocks = 256u64;
    let env = env_of(
        &fx,
        &[
            ("BLOBCACHE_MAPPED_BLOCKS", "256"),
            ("BC_W_TINY", &TINY.to_string()),
        ],
    );
    let (out, res) = worker::run(
        worker::command("map-budget", std::slice::from_ref(&big), &env),
        Duration::from_secs(300),
    );
    assert!(res.reported, "{}", String::from_utf8_lossy(&out.stderr));
    let mut o = res.outcome();
    let maps = res.u64("maps_peak");
    // Reads in flight hold the block they copy from: one here, and one
    // 8 MiB read spans up to 129 blocks of 64 KiB.
    if maps > blocks + 129 {
        o.other(format!("{maps} mappings of cache files, budget {blocks}"));
    }
    o.note(format!(
        "{} reads of 1500 one-block blobs and a 96 MiB blob of 1536 blocks (64 KiB); BLOBCACHE_MAPPED_BLOCKS=256: at most {maps} mappings of cache files seen (without the budget: 3036)",
        o.tried
    ));
    report::record(
        "host resources",
        "tens of thousands of mappings: 1500 tiny blobs and 1536 blocks read in one process",
        &o,
        "mappings::a_load_of_many_blocks_keeps_mappings_and_rss_within_the_budget",
    );
    report::assert_clean("mapping count", &o);
    assert_eq!(o.correct, o.tried, "{:?}", o.notes);

    // Bytes: a 96 MiB blob in 1 MiB blocks with 16 MiB mapped at most:
    // file-backed RSS grows by the budget plus what reads in flight hold,
    // not by the blob's size.
    let env = env_of(
        &fx,
        &[
            ("BLOBCACHE_BLOCK_SIZE", "1M"),
            ("BLOBCACHE_MAPPED_BYTES", "16M"),
            (
                "BLOBCACHE_DIR",
                &format!("{}/bytes", fx.cache.path().display()),
            ),
        ],
    );
    let (out, res) = worker::run(
        worker::command("map-budget", std::slice::from_ref(&big), &env),
        Duration::from_secs(300),
    );
    assert!(res.reported, "{}", String::from_utf8_lossy(&out.stderr));
    let mut o = res.outcome();
    let rss = res.u64("rss_file_peak_kib");
    let maps = res.u64("maps_peak");
    // 16 MiB of budget, 9 MiB that one 8 MiB read holds, 8 MiB of slack
    // for the library's own code pages.
    if rss > (16 + 9 + 8) << 10 {
        o.other(format!("file-backed RSS grew by {rss} KiB"));
    }
    if maps > 16 + 9 {
        o.other(format!("{maps} mappings of 1 MiB blocks, budget 16 MiB"));
    }
    o.note(format!(
        "96 MiB blob in 1 MiB blocks, BLOBCACHE_MAPPED_BYTES=16M: file-backed RSS grew by at most {:.1} MiB (without the budget: 96 MiB), at most {maps} blocks mapped",
        rss as f64 / 1024.0
    ));
    report::record(
        "host resources",
        "file-backed RSS of a long load",
        &o,
        "mappings::a_load_of_many_blocks_keeps_mappings_and_rss_within_the_budget",
    );
    report::assert_clean("mapped bytes", &o);
    assert_eq!(o.correct, o.tried, "{:?}", o.notes);
}

#[test]
fn a_block_that_cannot_be_mapped_is_read_with_pread_and_never_discarded() {
    let fx = Fixture::new("map-enomem");
    let blobs: Vec<Blob> = (0..2)
        .map(|i| Blob::new(ACCOUNT, CONTAINER, &format!("m{i}.bin"), 90 + i, 40 << 20))
        .collect();
    for b in &blobs {
        fx.put(&b.name, &b.data());
    }
    let env = env_of(&fx, &[("BLOBCACHE_BLOCK_SIZE", "16M")]);
    let (out, res) = worker::run(
        worker::command("map-enomem", &blobs, &env),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(res.reported, "{stderr}");
    let mut o = res.outcome();
    if stderr.contains("discarding") {
        o.other("a block that could not be mapped was discarded as damaged");
    }
    if !stderr.contains("pread instead") {
        o.other(format!("no warning about reading with pread: {stderr}"));
    }
    if res.u64("blocks") != 6 {
        o.other(format!(
            "{} blocks in the cache, expected 6",
            res.u64("blocks")
        ));
    }
    o.note(
        "second lifecycle with RLIMIT_AS 10 MiB above its size: every 16 MiB block read with pread, none refetched",
    );
    report::record(
        "host resources",
        "mmap fails with ENOMEM (address space exhausted)",
        &o,
        "mappings::a_block_that_cannot_be_mapped_is_read_with_pread_and_never_discarded",
    );
    report::assert_clean("ENOMEM", &o);
    assert_eq!(o.correct, o.tried, "{:?} {stderr}", o.notes);
}
