//! What a read returns: a cold read fills the cache and a warm one needs no
//! origin; ranges at the end of a blob and missing blobs are errors with
//! hints.

use std::time::{Duration, Instant};

use blobcache_core::origin::azure::AzureOrigin;
use blobcache_core::origin::Origin;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite, KEY};
use blobcache_testing::proxy::{Fault, Proxy};
use blobcache_testing::{blobcache_cmd, bytes, tempdir};

use crate::{cache, cat_env, key, read_all};

#[test]
fn cold_read_fills_the_cache_and_a_warm_read_is_served_with_azurite_stopped() {
    let mut az = Azurite::start();
    az.create_container("models");
    let data = bytes(1, (3 << 20) + 12345);
    az.put("models", "dir/model.safetensors", &data);
    let dir = tempdir("warm");
    let k = key("models", "dir/model.safetensors");

    let cfg = azurite::config(&az.template(), dir.path());
    let c = cache(&cfg, azurite::key_env());
    assert_eq!(read_all(&c, &k, data.len()).unwrap(), data);
    let s = c.stats();
    assert_eq!(s.blocks_fetched, 4);
    assert_eq!(s.bytes_from_origin, data.len() as u64);
    // Warm, same lifecycle: no origin traffic at all.
    let mut part = vec![0u8; 100_000];
    c.read(&k, 2_000_000, &mut part).unwrap();
    assert_eq!(part, data[2_000_000..2_100_000]);
    assert_eq!(c.stats().blocks_fetched, 4);
    drop(c);

    az.stop();
    // A new process, Azurite gone: served from the cache, with one warning.
    let out = dir.path().join("out");
    let env = cat_env(
        &az.template(),
        dir.path(),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
    );
    let t0 = Instant::now();
    let o = blobcache_cmd(
        &env,
        &[
            "cat",
            "az://devstoreaccount1/models/dir/model.safetensors",
            "--out",
            out.to_str().unwrap(),
            "--stats",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("warn")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("unreachable") && warnings[0].contains("from the cache"),
        "{stderr}"
    );
    // The counters (--stats): one JSON line on stderr.
    assert!(stderr.contains("\"blocks_fetched\":0"), "{stderr}");
}

#[test]
fn a_range_starting_at_the_end_of_the_blob_is_an_error_not_an_empty_success() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(10, 100);
    az.put("models", "small.bin", &data);
    let proxy = Proxy::start(az.port);
    let dir = tempdir("edge");
    let cfg = azurite::config(&proxy.template(), dir.path());
    let origin = AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap();
    let k = key("models", "small.bin");
    let info = origin.stat(&k).unwrap();
    assert_eq!(info.size, 100);
    for (offset, len) in [(100u64, 10u64), (100, 1), (90, 20)] {
        let mut got = Vec::new();
        let e = origin
            .read(&k, &info, offset, len, &mut |c: &[u8]| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange, "{e}");
        assert!(e.message().contains("the blob has 100 bytes"), "{e}");
        assert!(got.is_empty(), "bytes delivered for {offset}+{len}");
    }
    // Azurite did answer 206 (with no bytes) to the first: the quirk was hit.
    let first_get = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == "GET")
        .unwrap();
    assert_eq!(
        (first_get.status, first_get.range.as_deref()),
        (206, Some("bytes=100-109"))
    );
    // A zero-length read asks nothing.
    let before = proxy.requests();
    origin
        .read(&k, &info, 100, 0, &mut |_: &[u8]| Ok(()))
        .unwrap();
    assert_eq!(proxy.requests(), before);
    // The whole blob still reads.
    let mut all = Vec::new();
    origin
        .read(&k, &info, 0, 100, &mut |c: &[u8]| {
            all.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(all, data);
}

#[test]
fn a_missing_blob_is_not_found_with_a_hint() {
    let az = Azurite::start();
    az.create_container("models");
    let dir = tempdir("missing");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        azurite::key_env(),
    );
    let e = read_all(&c, &key("models", "nope.bin"), 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("HTTP 404"), "{e}");
    assert!(
        e.message().contains("check the container and blob name"),
        "{e}"
    );
    let e = read_all(&c, &key("nocontainer", "x.bin"), 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn readers_starting_on_a_blob_together_share_one_lookup_at_the_origin() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(41, (2 << 20) + 5);
    az.put("models", "m.bin", &data);
    let proxy = Proxy::start(az.port);
    let dir = tempdir("one-lookup");
    let cfg = azurite::config(&proxy.template(), dir.path());
    let c = std::sync::Arc::new(cache(&cfg, azurite::key_env()));
    let heads = |blob: &str| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "HEAD" && s.target.contains(blob))
            .count()
    };
    // Eight readers released together on a blob: each gets its bytes; the
    // blob is looked up once (a reader that comes after the lookup finds
    // the entry).
    let together = |blob: &'static str| -> Vec<blobcache_core::Result<Vec<u8>>> {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let readers: Vec<_> = (0..8u64)
            .map(|i| {
                let (c, barrier) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let k = key("models", blob);
                    barrier.wait();
                    let mut buf = vec![0u8; 4096];
                    c.read(&k, i * 100_000, &mut buf).map(|()| buf)
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    };
    for (i, r) in together("m.bin").into_iter().enumerate() {
        let at = i * 100_000;
        assert_eq!(r.unwrap(), data[at..at + 4096], "reader {i}");
    }
    assert_eq!(heads("m.bin"), 1, "{:?}", proxy.seen());
    // A lookup that fails is shared too: its answer is held for 3 s (then
    // the connection breaks and the lookup is retried), long enough for all
    // eight readers to come; every one gets the same not-found error.
    proxy.inject(
        "HEAD",
        Fault::StallHead {
            stall: Duration::from_secs(3),
        },
    );
    for (i, r) in together("gone.bin").into_iter().enumerate() {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "reader {i}: {e}");
    }
    assert_eq!(
        heads("gone.bin"),
        2,
        "one lookup, its request tried twice: {:?}",
        proxy.seen()
    );
}
