//! A blob replaced at the origin: between loads (fetched again, the old
//! copy dropped) and during one (the read fails as changed, never mixing).

use std::sync::Arc;
use std::time::Duration;

use blobcache_core::config::Config;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Gate, Proxy};
use blobcache_testing::{bytes, tempdir};

use crate::{cache, key, read_all};

#[test]
fn a_blob_overwritten_between_loads_is_fetched_again_and_the_old_copy_discarded() {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(2, (2 << 20) + 7);
    let new = bytes(3, (1 << 20) + 99);
    let etag1 = az.put("models", "m.bin", &old);
    let dir = tempdir("between");
    let k = key("models", "m.bin");
    let cfg = azurite::config(&az.template(), dir.path());

    let c = cache(&cfg, azurite::key_env());
    assert_eq!(read_all(&c, &k, old.len()).unwrap(), old);
    assert_eq!(c.entry(&k).unwrap().info.version, etag1);
    drop(c);

    let etag2 = az.put("models", "m.bin", &new);
    assert_ne!(etag1, etag2);
    let c = cache(&cfg, azurite::key_env());
    let e = c.entry(&k).unwrap();
    assert_eq!(
        (e.info.size, e.info.version.as_str()),
        (new.len() as u64, etag2.as_str())
    );
    assert_eq!(read_all(&c, &k, new.len()).unwrap(), new);
    assert_eq!(c.stats().blocks_fetched, 2);
    // Only the new version is left on disk.
    let versions = std::fs::read_dir(c.store().unwrap().key_dir(&k))
        .unwrap()
        .count();
    assert_eq!(versions, 1);
}

#[test]
fn a_blob_replaced_during_a_load_fails_the_read_as_changed_never_mixing_versions() {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(4, 2 << 20);
    let new = bytes(5, 2 << 20);
    az.put("models", "m.bin", &old);
    let proxy = Proxy::start(az.port);
    let gate = Gate::default();
    // The first block's answer stops after 100 000 bytes until the blob has
    // been replaced; then the connection breaks and the read resumes.
    proxy.inject(
        "GET",
        Fault::PauseBody {
            after: 100_000,
            gate: gate.clone(),
        },
    );
    let dir = tempdir("during");
    let k = key("models", "m.bin");
    let cfg = Config {
        fetch_concurrency: 1,
        ..azurite::config(&proxy.template(), dir.path())
    };
    let c = Arc::new(cache(&cfg, azurite::key_env()));
    let reader = {
        let (c, k) = (c.clone(), k.clone());
        std::thread::spawn(move || read_all(&c, &k, 2 << 20))
    };
    assert!(
        gate.wait_paused(Duration::from_secs(20)),
        "the proxy never held the answer"
    );
    az.put("models", "m.bin", &new);
    gate.open();
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(
        e.message()
            .contains("replaced at the origin during the load"),
        "{e}"
    );
    assert!(e.message().contains("retried"), "{e}");
    let seen = proxy.seen();
    let resumed = seen.iter().find(|s| s.status == 412).expect("a 412 answer");
    assert_eq!(
        resumed.range.as_deref(),
        Some("bytes=100000-1048575"),
        "{seen:?}"
    );
    // The next read looks the blob up again and gets only the new bytes.
    assert_eq!(read_all(&c, &k, new.len()).unwrap(), new);
}
