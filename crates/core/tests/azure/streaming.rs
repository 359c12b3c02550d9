//! Readers served from a fill in flight: a reader whose bytes of a block
//! have arrived gets them before the rest of the block is in; readers still
//! waiting when the fill fails get its error; the early bytes are always
//! those of the version the read is tied to.

use std::sync::Arc;
use std::time::Duration;

use blobcache_core::config::Config;
use blobcache_core::{BlobKey, Cache, ErrorKind};

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Gate, Proxy};
use blobcache_testing::{bytes, tempdir, TempDir};

use crate::{cache, key};

const MIB: usize = 1 << 20;
/// Where the proxy holds the first block's answer.
const HELD_AT: usize = 600_000;

/// A 2 MiB blob behind a proxy that holds the first GET's answer after
/// [`HELD_AT`] body bytes until the gate opens (then breaks the connection,
/// and the fill resumes from there).
struct Held {
    az: Azurite,
    _proxy: Proxy,
    gate: Gate,
    _dir: TempDir,
    cache: Arc<Cache>,
    key: BlobKey,
    old: Vec<u8>,
}

fn held(name: &str) -> Held {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(61, 2 * MIB);
    az.put("models", "m.bin", &old);
    let proxy = Proxy::start(az.port);
    let gate = Gate::default();
    proxy.inject(
        "GET",
        Fault::PauseBody {
            after: HELD_AT,
            gate: gate.clone(),
        },
    );
    let dir = tempdir(name);
    let cfg = Config {
        fetch_concurrency: 2,
        // Long enough that the held answer is not given up as stalled
        // (10 s without bytes) before the test opens the gate.
        fetch_timeout: Duration::from_secs(60),
        ..azurite::config(&proxy.template(), dir.path())
    };
    let cache = Arc::new(cache(&cfg, azurite::key_env()));
    Held {
        az,
        _proxy: proxy,
        gate,
        _dir: dir,
        cache,
        key: key("models", "m.bin"),
        old,
    }
}

fn read_in_thread(
    c: &Arc<Cache>,
    k: &BlobKey,
    offset: usize,
    len: usize,
) -> std::thread::JoinHandle<blobcache_core::Result<Vec<u8>>> {
    let (c, k) = (c.clone(), k.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        c.read(&k, offset as u64, &mut buf)?;
        Ok(buf)
    })
}

#[test]
fn a_reader_gets_bytes_that_have_arrived_before_the_rest_of_the_block() {
    let h = held("in-flight");
    // The first reader needs bytes the held answer has delivered.
    let early = read_in_thread(&h.cache, &h.key, 1000, 300_000);
    assert!(
        h.gate.wait_paused(Duration::from_secs(20)),
        "the proxy never held the answer"
    );
    let got = early.join().unwrap().unwrap();
    assert_eq!(got, h.old[1000..301_000]);
    // It returned with the answer still held: the block is not in yet.
    assert_eq!(h.cache.cached_bytes(&h.key).unwrap(), 0);
    let s = h.cache.stats();
    assert_eq!(s.bytes_from_fills, 300_000, "{s:?}");
    assert_eq!(s.blocks_fetched, 0, "{s:?}");

    // A reader that needs bytes past the held point waits for them.
    let late = read_in_thread(&h.cache, &h.key, 0, MIB + 10);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!late.is_finished(), "a reader got bytes that never arrived");
    h.gate.open();
    assert_eq!(late.join().unwrap().unwrap(), h.old[..MIB + 10]);
    // A read of whole blocks waits for their fills to end.
    let mut all = vec![0u8; 2 * MIB];
    h.cache.read(&h.key, 0, &mut all).unwrap();
    assert!(all == h.old);
    assert_eq!(h.cache.cached_bytes(&h.key).unwrap(), 2 * MIB as u64);
    let s = h.cache.stats();
    assert_eq!(s.blocks_fetched, 2, "{s:?}");
    assert_eq!(s.read_errors, 0, "{s:?}");
}

#[test]
fn readers_still_waiting_when_a_fill_fails_get_its_error_and_early_bytes_were_the_old_version() {
    let h = held("in-flight-fails");
    let early = read_in_thread(&h.cache, &h.key, 0, 200_000);
    assert!(
        h.gate.wait_paused(Duration::from_secs(20)),
        "the proxy never held the answer"
    );
    assert_eq!(early.join().unwrap().unwrap(), h.old[..200_000]);
    let late = read_in_thread(&h.cache, &h.key, 500_000, 200_000);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!late.is_finished(), "a reader got bytes that never arrived");
    // The blob is replaced while the answer is held: the resumed request
    // (If-Match the old ETag) fails, and so does the fill.
    let new = bytes(62, 2 * MIB);
    h.az.put("models", "m.bin", &new);
    h.gate.open();
    let e = late.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert_eq!(h.cache.stats().blocks_fetched, 0);
    // Nothing of the old version was published; the next read is the new
    // version's, whole.
    let mut buf = vec![0u8; 2 * MIB];
    h.cache.read(&h.key, 0, &mut buf).unwrap();
    assert!(buf == new, "the next read must be the new version's bytes");
}

#[test]
fn readahead_starts_with_the_miss_once_the_stream_is_under_way() {
    // On a far origin a fill takes many round trips: a stream that asked for
    // the next blocks only once its read was served kept too few requests in
    // flight. Once a few blocks of a stream have landed, a miss starts the
    // readahead at once: here block 8's answer is held, and the GETs of
    // blocks 9 and 10 must go out while its reader still waits. A cold
    // blob's first read starts none (it would share the origin's bandwidth).
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(62, 12 * MIB);
    az.put("models", "m.bin", &data);
    let proxy = Proxy::start(az.port);
    let dir = tempdir("readahead-early");
    let cfg = Config {
        readahead_blocks: 2,
        fetch_timeout: Duration::from_secs(60),
        ..azurite::config(&proxy.template(), dir.path())
    };
    let c = Arc::new(cache(&cfg, azurite::key_env()));
    let k = key("models", "m.bin");
    let range = |b: usize| format!("bytes={}-{}", b * MIB, (b + 1) * MIB - 1);
    let ranges = || -> Vec<String> {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "GET")
            .filter_map(|s| s.range.clone())
            .collect()
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !done() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what}: {:?}",
                ranges()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The first read of the cold blob: no readahead until it is served.
    let gate0 = Gate::default();
    proxy.inject_for_range(
        "GET",
        &range(0),
        Fault::PauseBody {
            after: 0,
            gate: gate0.clone(),
        },
    );
    let first = read_in_thread(&c, &k, 0, MIB);
    assert!(gate0.wait_paused(Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ranges(),
        [range(0)],
        "readahead with a cold blob's first read"
    );
    gate0.open();
    assert_eq!(first.join().unwrap().unwrap(), data[..MIB]);
    // Served: blocks 1 and 2 are read ahead. Then block 7 (not in
    // sequence: no readahead); 4 blocks have landed.
    wait_until("readahead after the first read", &|| {
        c.cached_bytes(&k).unwrap() == 3 * MIB as u64
    });
    let mut b7 = vec![0u8; MIB];
    c.read(&k, 7 * MIB as u64, &mut b7).unwrap();
    assert!(b7 == data[7 * MIB..8 * MIB]);

    let gate = Gate::default();
    proxy.inject_for_range(
        "GET",
        &range(8),
        Fault::PauseBody {
            after: 0,
            gate: gate.clone(),
        },
    );
    let reader = read_in_thread(&c, &k, 8 * MIB, MIB);
    assert!(
        gate.wait_paused(Duration::from_secs(20)),
        "the proxy never held the answer"
    );
    wait_until("no readahead while the read waits", &|| {
        ranges().contains(&range(9)) && ranges().contains(&range(10))
    });
    assert!(!reader.is_finished(), "block 8's answer is held");
    // Two blocks ahead, not three.
    assert!(!ranges().contains(&range(11)), "{:?}", ranges());
    gate.open();
    assert_eq!(reader.join().unwrap().unwrap(), data[8 * MIB..9 * MIB]);
    let mut all = vec![0u8; 12 * MIB];
    c.read(&k, 0, &mut all).unwrap();
    assert!(all == data);
}
