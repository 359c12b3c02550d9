//! Disk trouble: the cache on a small filesystem that fills up, and a
//! read-only cache directory. Each case runs in a child process in a
//! private mount namespace (`unshare -m`) that mounts a small tmpfs itself,
//! so nothing outlives the child even if it dies. Reads must return the
//! right bytes (through the pass-through path where the disk cannot take a
//! block) and nothing partial may be left visible.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blobcache_core::config::{Config, MaxSize, OriginConfig};
use blobcache_core::{BlobKey, Cache};
use blobcache_testing::bytes;
use blobcache_testing::fixture::{walk, Fixture, ACCOUNT, CONTAINER};

use crate::crashes::Rng;
use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

const MIB: usize = 1 << 20;

fn blobs() -> Vec<Blob> {
    (0..3)
        .map(|i| {
            Blob::new(
                ACCOUNT,
                CONTAINER,
                &format!("m{i}"),
                300 + i,
                5 * MIB + 333 * i as usize,
            )
        })
        .collect()
}

fn sh(cmd: &str, args: &[&str]) {
    let s = Command::new(cmd).args(args).status().unwrap();
    assert!(s.success(), "{cmd} {args:?}: {s}");
}

fn mount_tmpfs(at: &Path, size: &str) {
    std::fs::create_dir_all(at).unwrap();
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
            at.to_str().unwrap(),
        ],
    );
}

fn remount_read_only(dir: &Path) {
    let d = dir.to_str().unwrap();
    sh("mount", &["--bind", d, d]);
    sh("mount", &["-o", "remount,ro,bind", d]);
}

fn config(cache: &Path, cap: MaxSize) -> Config {
    Config {
        dir: Some(cache.to_path_buf()),
        max_size: cap,
        block_size: MIB as u64,
        origin: OriginConfig::Directory(PathBuf::from(std::env::var("BC_W_ORIGIN").unwrap())),
        fetch_concurrency: 4,
        readahead_blocks: 2,
        ..Config::default()
    }
}

/// Reads every blob twice, whole and in random 700 KiB pieces from four
/// threads; counts correct reads and everything else.
fn read_everything(cache: &Arc<Cache>, blobs: &[Blob], o: &mut Outcome, rng: &mut Rng) {
    for b in blobs {
        let key = BlobKey::new(&b.account, &b.container, &b.name).unwrap();
        let truth = Arc::new(b.data());
        let mut buf = vec![0u8; b.size];
        o.tried += 1;
        match cache.read(&key, 0, &mut buf) {
            Ok(()) if buf == *truth => o.correct += 1,
            Ok(()) => o.other(format!("{}: WRONG BYTES", b.name)),
            Err(e) => o.other(format!("{}: {e}", b.name)),
        }
        let seeds: Vec<u64> = (0..4).map(|_| rng.next()).collect();
        let results: Vec<Outcome> = seeds
            .into_iter()
            .map(|seed| {
                let (cache, truth, key) = (cache.clone(), truth.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut o = Outcome::default();
                    let mut x = seed | 1;
                    for _ in 0..8 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let len = 700 << 10;
                        let off = (x as usize) % (truth.len() - len);
                        let mut buf = vec![0u8; len];
                        o.tried += 1;
                        match cache.read(&key, off as u64, &mut buf) {
                            Ok(()) if buf == truth[off..off + len] => o.correct += 1,
                            Ok(()) => o.other(format!("WRONG BYTES at {off}")),
                            Err(e) => o.other(e.to_string()),
                        }
                    }
                    o
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for r in &results {
            o.add(r);
        }
    }
}

/// Nothing partial visible: no block temporaries, every block whole.
fn check_nothing_partial(cache: &Path, blobs: &[Blob], o: &mut Outcome) -> usize {
    let mut blocks = 0;
    let mut problems = vec![];
    walk(cache, &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("tmp.") {
            problems.push(format!("temporary left: {}", p.display()));
        }
        if let Some(i) = name.strip_prefix("b.").and_then(|s| s.parse::<u64>().ok()) {
            // Which blob? Any whose size has such a block; check all sizes.
            let ok = blobs.iter().any(|b| {
                let start = i * MIB as u64;
                start < b.size as u64
                    && matches!(
                        blobcache_core::store::probe::open_block(
                            p.parent().unwrap(),
                            i,
                            (b.size as u64 - start).min(MIB as u64)
                        ),
                        Ok(Some(ref blk)) if blk.verify()
                    )
            });
            if ok {
                blocks += 1;
            } else {
                problems.push(format!("partial or damaged block visible: {}", p.display()));
            }
        }
    });
    for p in problems {
        o.other(p);
    }
    blocks
}

fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v = vec![];
    walk(dir, &mut |p| {
        v.push((
            p.to_path_buf(),
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        ))
    });
    v.sort();
    v
}

/// Child side: `disk-full` or `disk-read-only`.
pub fn worker(mode: &str) {
    let blobs = worker_blobs();
    let mnt = PathBuf::from(std::env::var("BC_W_MNT").unwrap());
    let mut rng = Rng::from_env(mode);
    let mut out = Outcome::default();
    match mode {
        "disk-full" => {
            // (a) The cap is larger than the filesystem: the disk fills.
            let fs = mnt.join("a");
            mount_tmpfs(&fs, "6m");
            let cache = fs.join("cache");
            let c = Arc::new(Cache::new(config(&cache, MaxSize::Bytes(1 << 30))).unwrap());
            read_everything(&c, &blobs, &mut out, &mut rng);
            let s = c.stats();
            drop(c);
            let blocks = check_nothing_partial(&cache, &blobs, &mut out);
            let (_, avail) = blobcache_core::store::filesystem_size(&fs).unwrap();
            if s.passthrough_reads == 0 {
                out.other("the disk never filled: no pass-through read");
            }
            out.note(format!(
                "6 MiB tmpfs, cap 1 GiB, 15 MiB of blobs: {} pass-through reads, {blocks} whole blocks kept, {} KiB left free",
                s.passthrough_reads,
                avail >> 10
            ));
            // (b) Another tenant filled the filesystem; the default cap.
            let fs = mnt.join("b");
            mount_tmpfs(&fs, "6m");
            std::fs::write(fs.join("ballast"), vec![1u8; 4 * MIB + 512 * 1024]).unwrap();
            let cache = fs.join("cache");
            let c = Arc::new(Cache::new(config(&cache, MaxSize::PercentOfFilesystem(50))).unwrap());
            read_everything(&c, &blobs, &mut out, &mut rng);
            let s = c.stats();
            drop(c);
            let blocks = check_nothing_partial(&cache, &blobs, &mut out);
            if s.passthrough_reads == 0 {
                out.other("(b) no pass-through read");
            }
            out.note(format!(
                "6 MiB tmpfs 4.5 MiB full of another file, cap 50%: {} pass-through reads, {blocks} whole blocks kept",
                s.passthrough_reads
            ));
        }
        "disk-read-only" => {
            mount_tmpfs(&mnt, "64m");
            // (a) An empty, read-only cache directory.
            let empty = mnt.join("empty");
            std::fs::create_dir_all(&empty).unwrap();
            remount_read_only(&empty);
            let c = Arc::new(Cache::new(config(&empty, MaxSize::Bytes(1 << 30))).unwrap());
            read_everything(&c, &blobs, &mut out, &mut rng);
            let s = c.stats();
            drop(c);
            if !listing(&empty).is_empty() || s.passthrough_reads == 0 {
                out.other("(a) files appeared or no pass-through read");
            }
            out.note(format!(
                "empty read-only directory: {} pass-through reads",
                s.passthrough_reads
            ));
            // (b) A warm cache made read-only: hits served, misses passed
            // through, nothing changed.
            let warm = mnt.join("warm");
            {
                let c = Cache::new(config(&warm, MaxSize::Bytes(1 << 30))).unwrap();
                for b in &blobs {
                    let key = BlobKey::new(&b.account, &b.container, &b.name).unwrap();
                    let mut buf = vec![0u8; b.size / 2];
                    c.read(&key, 0, &mut buf).unwrap();
                }
            }
            remount_read_only(&warm);
            let before = listing(&warm);
            let c = Arc::new(Cache::new(config(&warm, MaxSize::Bytes(1 << 30))).unwrap());
            read_everything(&c, &blobs, &mut out, &mut rng);
            let s = c.stats();
            drop(c);
            if listing(&warm) != before {
                out.other("(b) the read-only cache changed");
            }
            if s.bytes_from_cache == 0 || s.passthrough_reads == 0 {
                out.other(format!("(b) expected hits and pass-through reads: {s:?}"));
            }
            check_nothing_partial(&warm, &blobs, &mut out);
            out.note(format!(
                "warm cache made read-only: {} MiB served from it, {} pass-through reads",
                s.bytes_from_cache >> 20,
                s.passthrough_reads
            ));
        }
        other => panic!("unknown disk mode {other}"),
    }
    worker::print_result(&out);
}

fn worker_blobs() -> Vec<Blob> {
    blobs()
}

fn run(mode: &str, test: &str, fault: &str) {
    let fx = Fixture::new(mode);
    for b in blobs() {
        fx.put(&b.name, &bytes(b.seed, b.size));
    }
    // An empty directory the worker mounts its tmpfs on, inside its own
    // mount namespace (the mount ends with the worker; the directory stays
    // ordinary here, so dropping it removes only an empty directory).
    let mnt = blobcache_testing::tempdir("disk-mnt");
    let env = vec![
        (
            "BC_W_ORIGIN".to_string(),
            fx.origin.path().display().to_string(),
        ),
        ("BC_W_MNT".to_string(), mnt.path().display().to_string()),
    ];
    let cmd = worker::command_with(
        Some(&["unshare", "-m", "--propagation", "private"]),
        mode,
        &blobs(),
        &env,
    );
    let (out, r) = worker::run(cmd, Duration::from_secs(240));
    assert!(
        r.reported && out.status.success(),
        "{mode} worker failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let o = r.outcome();
    report::record("disk", fault, &o, test);
    report::assert_clean(fault, &o);
    // The mounts were the child's: nothing is mounted here.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(mnt.path().to_str().unwrap()),
        "a mount leaked"
    );
}

#[test]
fn a_full_filesystem_passes_reads_through_and_leaves_nothing_partial() {
    run(
        "disk-full",
        "disk::a_full_filesystem_passes_reads_through_and_leaves_nothing_partial",
        "cache on a 6 MiB filesystem that fills up (cap above it; another tenant's file)",
    );
}

#[test]
fn a_read_only_cache_directory_serves_hits_and_passes_misses_through() {
    run(
        "disk-read-only",
        "disk::a_read_only_cache_directory_serves_hits_and_passes_misses_through",
        "read-only cache directory (empty; warm)",
    );
}
