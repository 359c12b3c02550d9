//! The cache over a directory origin: miss → fill → hit, block granularity,
//! versions, fill-once across threads, the size cap, and disk trouble.

use std::sync::Arc;

use blobcache_core::config::MaxSize;
use blobcache_core::{BlobKey, Cache, ErrorKind};
use blobcache_testing::fixture::{bytes, Fixture, Rewrite, ACCOUNT, CONTAINER};

const MIB: usize = 1 << 20;

fn key(blob: &str) -> BlobKey {
    BlobKey::new(ACCOUNT, CONTAINER, blob).unwrap()
}

fn read(cache: &Cache, blob: &str, off: usize, len: usize) -> blobcache_core::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    cache.read(&key(blob), off as u64, &mut buf)?;
    Ok(buf)
}

#[test]
fn a_miss_fills_only_the_blocks_it_covers_and_a_second_read_is_a_hit() {
    let fx = Fixture::new("fill");
    let data = bytes(1, 10 * MIB + 123);
    fx.put("m.safetensors", &data);
    let cache = Cache::new(fx.config(MIB as u64)).unwrap();

    // Crosses the boundary between blocks 2 and 3.
    let got = read(&cache, "m.safetensors", 3 * MIB - 10, 20).unwrap();
    assert_eq!(got, &data[3 * MIB - 10..3 * MIB + 10]);
    let blocks: Vec<u64> = fx.cached_blocks().iter().map(|(_, i)| *i).collect();
    // Readahead may add later blocks, never earlier ones.
    assert!(blocks.contains(&2) && blocks.contains(&3), "{blocks:?}");
    assert!(!blocks.contains(&0) && !blocks.contains(&1), "{blocks:?}");
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (0, 1));

    let again = read(&cache, "m.safetensors", 3 * MIB - 10, 20).unwrap();
    assert_eq!(again, got);
    assert_eq!(cache.stats().hits, 1);
}

#[test]
fn every_range_of_a_blob_reads_back_exactly_including_the_short_last_block() {
    let fx = Fixture::new("ranges");
    let data = bytes(2, 3 * 65536 + 17);
    fx.put("x", &data);
    let mut cfg = fx.config(65536);
    cfg.readahead_blocks = 0;
    let cache = Cache::new(cfg).unwrap();
    let n = data.len();
    for (off, len) in [
        (0, 8),
        (0, n),
        (n - 1, 1),
        (65535, 2),
        (65536 * 3, 17),
        (100, 65536 * 2 + 5),
    ] {
        assert_eq!(
            read(&cache, "x", off, len).unwrap(),
            &data[off..off + len],
            "{off}+{len}"
        );
    }
    // A fresh cache on the same directory serves the same bytes from disk.
    drop(cache);
    let cache = Cache::new(fx.config(65536)).unwrap();
    assert_eq!(read(&cache, "x", 0, n).unwrap(), data);
    let s = cache.stats();
    assert_eq!(s.blocks_fetched, 0, "everything was already on disk: {s:?}");
}

#[test]
fn ranges_past_the_end_and_missing_blobs_fail_cleanly() {
    let fx = Fixture::new("bounds");
    fx.put("x", &bytes(3, 1000));
    let cache = Cache::new(fx.config(65536)).unwrap();
    let e = read(&cache, "x", 990, 11).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    assert!(e.message().contains("1000 bytes"), "{e}");
    assert_eq!(
        read(&cache, "x", 1000, 1).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let mut buf = [0u8; 4];
    let e = cache.read(&key("x"), u64::MAX - 1, &mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    let e = read(&cache, "nope", 0, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(read(&cache, "x", 0, 0).unwrap().is_empty());
}

#[test]
fn many_threads_reading_one_cold_blob_fetch_each_block_once() {
    let fx = Fixture::new("once");
    let data = Arc::new(bytes(4, 16 * MIB));
    fx.put("big", &data);
    let mut cfg = fx.config(MIB as u64);
    cfg.readahead_blocks = 0;
    let cache = Arc::new(Cache::new(cfg).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (cache, data) = (cache.clone(), data.clone());
            std::thread::spawn(move || {
                // Every thread reads the whole blob, starting at a different place.
                for i in 0..16 {
                    let b = (i + t) % 16;
                    let got = read(&cache, "big", b * MIB, MIB).unwrap();
                    assert!(got == data[b * MIB..(b + 1) * MIB], "block {b}");
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(cache.stats().blocks_fetched, 16);
}

#[test]
fn a_blob_replaced_at_the_origin_is_served_at_its_new_version_and_the_old_copy_is_dropped() {
    let fx = Fixture::new("version");
    let old = bytes(5, 3 * 65536);
    fx.put("m", &old);
    let cache = Cache::new(fx.config(65536)).unwrap();
    assert_eq!(read(&cache, "m", 0, old.len()).unwrap(), old);
    let old_dirs: Vec<_> = fx.cached_blocks().into_iter().map(|(d, _)| d).collect();
    drop(cache);

    let new = bytes(6, 3 * 65536);
    fx.put("m", &new);
    let cache = Cache::new(fx.config(65536)).unwrap();
    assert_eq!(read(&cache, "m", 0, new.len()).unwrap(), new);
    for d in old_dirs {
        assert!(!d.exists(), "old version {} was not removed", d.display());
    }
}

#[test]
fn a_blob_replaced_during_a_load_fails_the_read_instead_of_mixing_versions() {
    let fx = Fixture::new("midload");
    let old = bytes(7, 4 * 65536);
    fx.put("m", &old);
    let mut cfg = fx.config(65536);
    cfg.readahead_blocks = 0;
    let cache = Cache::new(cfg).unwrap();
    assert_eq!(read(&cache, "m", 0, 65536).unwrap(), &old[..65536]);
    fx.put("m", &bytes(8, 4 * 65536));
    // Block 0 is cached at the old version; block 1 is not.
    assert_eq!(read(&cache, "m", 0, 10).unwrap(), &old[..10]);
    let e = read(&cache, "m", 65536, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(e.message().contains("changed"), "{e}");
    // The next read picks up the new version, whole.
    assert_eq!(
        read(&cache, "m", 0, 4 * 65536).unwrap(),
        bytes(8, 4 * 65536)
    );
}

#[test]
fn a_file_rewritten_in_place_with_its_size_and_mtime_kept_is_never_served_stale_or_mixed() {
    let fx = Fixture::new("inplace");
    let v: Vec<Vec<u8>> = (0..4).map(|i| bytes(40 + i, 4 * 65536)).collect();
    fx.put("m", &v[0]);
    let mut cfg = fx.config(65536);
    cfg.readahead_blocks = 0;

    // Rewritten between two reads of one session: the second read fails as
    // changed at the origin (not block 1 of the new version after block 0
    // of the old), and the next load reads the new version whole.
    let cache = Cache::new(cfg.clone()).unwrap();
    assert_eq!(read(&cache, "m", 0, 65536).unwrap(), &v[0][..65536]);
    fx.rewrite_in_place("m", &v[1], Rewrite::CpP);
    let e = read(&cache, "m", 65536, 65536)
        .map(|b| b == v[1][65536..2 * 65536])
        .expect_err("block 1 was served after the file changed (true: from the new version)");
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(e.message().contains("changed at the origin"), "{e}");
    assert_eq!(read(&cache, "m", 0, v[1].len()).unwrap(), v[1]);

    // Rewritten between sessions (a new cache on the same directory, as
    // after shutdown or in a new process): the new bytes, not the cached
    // old ones, and the old copy is dropped.
    let mut cache = cache;
    for (i, how) in [(2, Rewrite::TouchD), (3, Rewrite::CpP)] {
        drop(cache);
        let old_dirs: Vec<_> = fx.cached_blocks().into_iter().map(|(d, _)| d).collect();
        fx.rewrite_in_place("m", &v[i], how);
        cache = Cache::new(cfg.clone()).unwrap();
        assert!(
            read(&cache, "m", 0, v[i].len()).unwrap() == v[i],
            "after {how:?}: stale bytes from the cache"
        );
        for d in old_dirs {
            assert!(!d.exists(), "old version {} was not removed", d.display());
        }
    }
}

#[test]
fn usage_returns_under_the_cap_while_reads_stay_correct() {
    let fx = Fixture::new("cap");
    let blobs: Vec<Vec<u8>> = (0..6).map(|i| bytes(100 + i, 2 * MIB)).collect();
    for (i, b) in blobs.iter().enumerate() {
        fx.put(&format!("b{i}"), b);
    }
    let mut cfg = fx.config(256 << 10);
    cfg.max_size = MaxSize::Bytes(5 * MIB as u64);
    let cache = Cache::new(cfg).unwrap();
    for round in 0..3 {
        for (i, b) in blobs.iter().enumerate() {
            assert!(
                read(&cache, &format!("b{i}"), 0, b.len()).unwrap() == *b,
                "round {round} blob {i}"
            );
        }
    }
    cache.evict_now();
    let used = blobcache_testing::fixture::du(fx.cache.path());
    assert!(
        used <= 5 * MIB as u64,
        "cache uses {used} bytes, cap is {}",
        5 * MIB
    );
    assert!(cache.stats().blocks_evicted > 0);
}

#[test]
fn an_unwritable_cache_directory_still_serves_correct_bytes_from_the_origin() {
    let fx = Fixture::new("unwritable");
    let data = bytes(9, 3 * 65536 + 5);
    fx.put("m", &data);
    let mut cfg = fx.config(65536);
    // A cache "directory" below a regular file can never be created (chmod
    // would not stop root, which these tests may run as).
    let file = fx.cache.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    cfg.dir = Some(file.join("cache"));
    let cache = Cache::new(cfg).unwrap();
    assert_eq!(read(&cache, "m", 10, data.len() - 10).unwrap(), &data[10..]);
    assert!(cache.stats().passthrough_reads > 0);
}

#[test]
fn a_cap_smaller_than_a_block_passes_reads_through_and_leaves_no_files() {
    let fx = Fixture::new("tinycap");
    let data = bytes(10, 200_000);
    fx.put("m", &data);
    let mut cfg = fx.config(65536);
    cfg.max_size = MaxSize::Bytes(1000);
    let cache = Cache::new(cfg).unwrap();
    assert_eq!(read(&cache, "m", 0, data.len()).unwrap(), data);
    assert!(fx.cached_blocks().is_empty());
    assert!(!fx
        .cache_files()
        .iter()
        .any(|p| p.to_string_lossy().contains("tmp.")));
}

#[test]
fn damaged_cached_blocks_are_refetched_not_served() {
    let fx = Fixture::new("damaged");
    let data = bytes(11, 2 * 65536);
    fx.put("m", &data);
    let cache = Cache::new(fx.config(65536)).unwrap();
    assert_eq!(read(&cache, "m", 0, data.len()).unwrap(), data);
    drop(cache);
    // Truncate block 1 behind the cache's back (as a torn write would).
    let (dir, _) = fx
        .cached_blocks()
        .into_iter()
        .find(|(_, i)| *i == 1)
        .unwrap();
    let p = dir.join("b.1");
    let mut b = std::fs::read(&p).unwrap();
    b.truncate(100);
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &b).unwrap();
    let cache = Cache::new(fx.config(65536)).unwrap();
    assert_eq!(read(&cache, "m", 0, data.len()).unwrap(), data);
    assert_eq!(cache.stats().blocks_fetched, 1);
}

#[test]
fn cache_files_are_private_to_the_user_by_default() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new("perms");
    fx.put("m", &bytes(12, 1000));
    let cache = Cache::new(fx.config(65536)).unwrap();
    read(&cache, "m", 0, 1000).unwrap();
    for p in fx.cache_files() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
    }
}

#[test]
fn shutdown_fails_waiting_reads_cleanly_and_reads_after_it_fail_cleanly() {
    let fx = Fixture::new("shutdown");
    fx.put("m", &bytes(13, 4 * MIB));
    let cache = Arc::new(Cache::new(fx.config(65536)).unwrap());
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..200 {
                    let off = (i * 7919 + t * 104729) % (4 * MIB - 4096);
                    match read(&cache, "m", off, 4096) {
                        Ok(v) => {
                            assert_eq!(v, &bytes(13, 4 * MIB)[off..off + 4096]);
                            ok += 1;
                        }
                        Err(e) => assert!(
                            matches!(e.kind(), ErrorKind::Shutdown),
                            "unexpected error {e}"
                        ),
                    }
                }
                ok
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    cache.shutdown();
    cache.shutdown();
    for r in readers {
        r.join().unwrap();
    }
}
