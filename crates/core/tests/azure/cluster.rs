//! The cluster tier with the Azure origin: a node that wants a block
//! another node is fetching waits for it and takes it from the tier (no
//! second GET), and a blob replaced at the origin is never mixed with the
//! tier's copy of the old version. (Separate processes in network
//! namespaces, sshfs and a hung mount: tests/cluster_nodes.rs.)

use std::sync::Arc;
use std::time::Duration;

use blobcache_core::config::Config;
use blobcache_core::{BlobKey, Cache};

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Gate, Proxy};
use blobcache_testing::{bytes, tempdir, TempDir};

use crate::{cache, key, read_all};

const MIB: usize = 1 << 20;

/// One node: a local cache directory of its own, the shared cluster
/// directory, Azurite through a proxy of its own (to see its GETs).
struct Node {
    proxy: Proxy,
    _local: TempDir,
    cache: Arc<Cache>,
}

fn node(az: &Azurite, cluster: &std::path::Path, tag: &str) -> Node {
    let proxy = Proxy::start(az.port);
    let local = tempdir(tag);
    let cfg = Config {
        cluster_dir: Some(cluster.to_path_buf()),
        cluster_max_size: blobcache_core::config::MaxSize::Bytes(1 << 40),
        fetch_timeout: Duration::from_secs(30),
        ..azurite::config(&proxy.template(), local.path())
    };
    let cache = Arc::new(cache(&cfg, azurite::key_env()));
    Node {
        proxy,
        _local: local,
        cache,
    }
}

fn gets(p: &Proxy) -> usize {
    p.seen().iter().filter(|s| s.method == "GET").count()
}

fn read_in_thread(
    c: &Arc<Cache>,
    k: &BlobKey,
    len: usize,
) -> std::thread::JoinHandle<blobcache_core::Result<Vec<u8>>> {
    let (c, k) = (c.clone(), k.clone());
    std::thread::spawn(move || read_all(&c, &k, len))
}

#[test]
fn a_node_waits_for_the_node_fetching_a_block_and_takes_it_from_the_tier() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(81, 2 * MIB);
    az.put("models", "m.bin", &data);
    let k = key("models", "m.bin");
    let cluster = tempdir("cl-az-wait");
    let a = node(&az, cluster.path(), "cl-az-wait-a");
    let b = node(&az, cluster.path(), "cl-az-wait-b");

    // Node A's GET of block 0 is held: A holds the block's lock in the
    // tier while it fetches.
    let gate = Gate::default();
    a.proxy.inject_for_range(
        "GET",
        &format!("bytes=0-{}", MIB - 1),
        Fault::PauseBody {
            after: 0,
            gate: gate.clone(),
        },
    );
    let ra = read_in_thread(&a.cache, &k, MIB);
    assert!(gate.wait_paused(Duration::from_secs(20)));
    let rb = read_in_thread(&b.cache, &k, MIB);
    // B looks the blob up (HEAD) and then waits for A: no GET.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!rb.is_finished(), "B did not wait for A's fill");
    assert_eq!(gets(&b.proxy), 0, "B fetched a block A is fetching");
    gate.open();
    assert!(ra.join().unwrap().unwrap() == data[..MIB]);
    assert!(rb.join().unwrap().unwrap() == data[..MIB]);
    let sb = b.cache.stats();
    assert_eq!(gets(&b.proxy), 0);
    assert_eq!(
        (sb.bytes_from_origin, sb.bytes_from_cluster),
        (0, MIB as u64),
        "{sb:?}"
    );
    a.cache.shutdown();
    assert_eq!(a.cache.stats().blocks_to_cluster, 1);

    // The rest of the blob: B fetches block 1 and publishes it; A takes it.
    assert!(read_all(&b.cache, &k, 2 * MIB).unwrap() == data);
    b.cache.shutdown();
    let c = node(&az, cluster.path(), "cl-az-wait-c");
    assert!(read_all(&c.cache, &k, 2 * MIB).unwrap() == data);
    assert_eq!(gets(&c.proxy), 0);
    assert_eq!(c.cache.stats().bytes_from_cluster, 2 * MIB as u64);
}

#[test]
fn a_blob_replaced_at_the_origin_is_never_mixed_with_the_tiers_old_copy() {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(82, 3 * MIB);
    az.put("models", "m.bin", &old);
    let k = key("models", "m.bin");
    let cluster = tempdir("cl-az-versions");
    let a = node(&az, cluster.path(), "cl-az-versions-a");
    assert!(read_all(&a.cache, &k, old.len()).unwrap() == old);
    a.cache.shutdown();

    let new = bytes(83, 3 * MIB);
    az.put("models", "m.bin", &new);
    let b = node(&az, cluster.path(), "cl-az-versions-b");
    assert!(read_all(&b.cache, &k, new.len()).unwrap() == new);
    let s = b.cache.stats();
    assert_eq!(s.bytes_from_cluster, 0, "{s:?}");
    assert_eq!(s.bytes_from_origin, new.len() as u64);
    b.cache.shutdown();
    // A third node takes the new version from the tier.
    let c = node(&az, cluster.path(), "cl-az-versions-c");
    assert!(read_all(&c.cache, &k, new.len()).unwrap() == new);
    assert_eq!(gets(&c.proxy), 0);
}
