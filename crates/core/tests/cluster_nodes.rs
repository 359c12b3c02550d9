//! The cluster tier across "nodes": separate `blobcache` processes, each in
//! a network namespace of its own (blobcache_testing::nodes) with a local
//! cache directory of its own, sharing one cluster directory, and reaching
//! Azurite only through a relay that counts the bytes each node gets; the
//! cluster directory on a plain local directory, and through one sshfs
//! mount per node (a real network filesystem whose locks do not exclude
//! across mounts). And a cluster directory on a FUSE mount that hangs on
//! command: reads go on from the origin within the bound, and shutdown
//! does not wait.
//!
//! The model is 64 MiB; `BC_CLUSTER_NODES_MIB=1024` is the long form.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::config::{Config, MaxSize};
use blobcache_core::origin::azure::AzureOrigin;
use blobcache_core::{BlobKey, Cache};
use blobcache_testing::azurite::{self, Azurite, ACCOUNT, KEY};
use blobcache_testing::hungfs::HungFs;
use blobcache_testing::nodes::{Node, Nodes};
use blobcache_testing::proxy::{Fault, Gate, Proxy};
use blobcache_testing::sshfs::Sshd;
use blobcache_testing::{bytes, tempdir};

const MIB: usize = 1 << 20;
const URI: &str = "az://devstoreaccount1/models/model.safetensors";

/// `blobcache cat URI --out OUT --stats` in `node`, its local cache in
/// `local`, the tier in `cluster`.
fn cat_in(node: &Node, local: &Path, cluster: &Path, out: &Path) -> Child {
    let mut cmd: Command = node.command(blobcache_testing::built::command());
    cmd.env_clear()
        .env("BLOBCACHE_DIR", local)
        .env("BLOBCACHE_CLUSTER_DIR", cluster)
        .env("BLOBCACHE_AZURE_ENDPOINT", node.origin_template())
        .env("BLOBCACHE_BLOCK_SIZE", "1M")
        .env("BLOBCACHE_FETCH_TIMEOUT", "60s")
        .env("AZURE_STORAGE_ACCOUNT_KEY", KEY)
        .args(["cat", URI, "--threads", "4", "--stats", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// A counter of the `--stats` JSON line on a `cat`'s stderr.
fn counter(stderr: &str, name: &str) -> u64 {
    stderr
        .split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stderr}"))
}

/// What 4 nodes loading one model together did.
struct Loaded {
    /// Bytes the relay sent the nodes (answers' headers included).
    relayed: u64,
    from_origin: u64,
    from_cluster: u64,
    duplicates: u64,
    stderr: String,
}

/// The model's size in MiB: 64, or `BC_CLUSTER_NODES_MIB` (the long form,
/// e.g. 1024).
fn model_mib() -> usize {
    std::env::var("BC_CLUSTER_NODES_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// 4 nodes load a model cold together, node `i`'s cluster directory being
/// `cluster(i)`; every node's bytes are checked.
fn four_nodes_load(tag: &str, cluster: &dyn Fn(usize) -> std::path::PathBuf) -> Loaded {
    let az = Azurite::start();
    az.create_container("models");
    let size = model_mib() * MIB;
    let data = bytes(151, size);
    az.put("models", "model.safetensors", &data);
    let nodes = Nodes::with_origin(4, az.port);
    let work = tempdir(tag);
    let kids: Vec<_> = nodes
        .iter()
        .map(|n| {
            let local = work.path().join(format!("local{}", n.index()));
            let out = work.path().join(format!("out{}", n.index()));
            (out.clone(), cat_in(n, &local, &cluster(n.index()), &out))
        })
        .collect();
    let mut l = Loaded {
        relayed: 0,
        from_origin: 0,
        from_cluster: 0,
        duplicates: 0,
        stderr: String::new(),
    };
    for (out, kid) in kids {
        let o = kid.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "{} differs",
            out.display()
        );
        l.from_origin += counter(&stderr, "bytes_from_origin");
        l.from_cluster += counter(&stderr, "bytes_from_cluster");
        l.duplicates += counter(&stderr, "cluster_duplicates");
        l.stderr.push_str(&stderr);
    }
    l.relayed = nodes.bytes_from_origin();
    for line in l.stderr.lines().filter(|l| l.contains("warn")) {
        eprintln!("{tag}: {line}");
    }
    eprintln!(
        "{tag}: the relay sent {} bytes ({:.3} × the model), the nodes fetched {} from the origin and took {} from the tier; {} duplicate blocks",
        l.relayed,
        l.relayed as f64 / size as f64,
        l.from_origin,
        l.from_cluster,
        l.duplicates
    );
    assert_eq!(l.from_origin + l.from_cluster, 4 * size as u64);
    // What the nodes counted is what the relay carried (plus headers).
    assert!(l.relayed >= l.from_origin && l.relayed <= l.from_origin + l.from_origin / 50);
    l
}

#[test]
fn four_nodes_loading_one_model_cold_together_pull_it_from_the_origin_about_once() {
    let work = tempdir("cl-nodes-tier");
    let l = four_nodes_load("cl-nodes", &|_| work.path().join("cluster"));
    // Headers and lookups included: at most 5% over the model's size.
    let size = (model_mib() * MIB) as f64;
    assert!(l.relayed as f64 <= 1.05 * size, "{}", l.relayed);
    assert_eq!(l.duplicates, 0);
}

#[test]
fn through_sshfs_mounts_whose_locks_do_not_exclude_claims_still_keep_it_to_one_download() {
    let sshd = Sshd::start();
    let work = tempdir("cl-sshfs");
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let mounts: Vec<_> = (0..4)
        .map(|i| {
            let mp = work.path().join(format!("mnt{i}"));
            std::fs::create_dir(&mp).unwrap();
            sshd.mount(&shared, &mp)
        })
        .collect();
    let l = four_nodes_load("cl-sshfs", &|i| mounts[i].path().join("tier"));
    // One block in the tier per block of the model, whoever fetched it.
    assert_eq!(blocks_in(&shared.join("tier")), model_mib());
    // The locks did not exclude (tests of blobcache_testing::sshfs); the
    // claims (exclusive creates) did.
    let size = (model_mib() * MIB) as f64;
    assert!(l.relayed as f64 <= 1.05 * size, "{}", l.relayed);
    // Any block fetched twice anyway is counted and reported.
    let extra = l.from_origin - (model_mib() * MIB) as u64;
    assert!(
        l.duplicates * MIB as u64 <= extra,
        "{} duplicates",
        l.duplicates
    );
    if l.duplicates > 0 {
        assert!(l.stderr.contains("do not seem to exclude across nodes"));
    }
}

#[test]
fn a_block_two_nodes_fetched_is_counted_as_a_duplicate_and_reported_once() {
    // The body runs in a child process, whose warnings are read here.
    const CHILD: &str = "BC_CLUSTER_DUPLICATE_CHILD";
    let name = "a_block_two_nodes_fetched_is_counted_as_a_duplicate_and_reported_once";
    if std::env::var_os(CHILD).is_none() {
        let o = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success() && text.contains("1 passed"), "{text}");
        assert_eq!(
            text.matches("do not seem to exclude across nodes").count(),
            1,
            "{text}"
        );
        return;
    }
    // Two nodes in this process, each through its own sshfs mount (locks
    // that do not exclude). Node A's GET of block 0 is held; its claim is
    // removed behind its back (a filesystem whose exclusive creates do not
    // exclude either), so node B fetches the block too.
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(171, MIB);
    az.put("models", "m.bin", &data);
    let k = BlobKey::new(ACCOUNT, "models", "m.bin").unwrap();
    let sshd = Sshd::start();
    let work = tempdir("cl-dup");
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let mount = |n: &str| {
        let mp = work.path().join(n);
        std::fs::create_dir(&mp).unwrap();
        sshd.mount(&shared, &mp)
    };
    let (ma, mb) = (mount("a"), mount("b"));
    let (pa, pb) = (Proxy::start(az.port), Proxy::start(az.port));
    let a = node_cache(
        &pa.template(),
        &work.path().join("la"),
        &ma.path().join("tier"),
    );
    let b = node_cache(
        &pb.template(),
        &work.path().join("lb"),
        &mb.path().join("tier"),
    );
    let gate = Gate::default();
    pa.inject_for_range(
        "GET",
        &format!("bytes=0-{}", MIB - 1),
        Fault::PauseBody {
            after: 0,
            gate: gate.clone(),
        },
    );
    let ra = {
        let (a, k) = (a.clone(), k.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MIB];
            a.read(&k, 0, &mut buf).map(|()| buf)
        })
    };
    assert!(gate.wait_paused(Duration::from_secs(20)));
    let mut claims = vec![];
    blobcache_testing::fixture::walk(&shared, &mut |p| {
        if p.file_name().unwrap() == "claim.0" {
            claims.push(p.to_path_buf());
        }
    });
    assert_eq!(claims.len(), 1, "node A's claim of block 0");
    std::fs::remove_file(&claims[0]).unwrap();
    let mut got = vec![0u8; MIB];
    b.read(&k, 0, &mut got).unwrap();
    assert!(got == data[..MIB]);
    gate.open();
    assert!(ra.join().unwrap().unwrap() == data[..MIB]);
    a.shutdown();
    b.shutdown();
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sb.blocks_to_cluster, 1, "{sb:?}");
    assert_eq!(
        (sa.cluster_duplicates, sa.blocks_to_cluster),
        (1, 0),
        "{sa:?}"
    );
    assert_eq!(sa.bytes_from_origin + sb.bytes_from_origin, 2 * MIB as u64);
}

/// Published blocks under `dir`.
fn blocks_in(dir: &Path) -> usize {
    let mut n = 0;
    blobcache_testing::fixture::walk(dir, &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy();
        n += usize::from(name.starts_with("b.") && name[2..].parse::<u64>().is_ok());
    });
    n
}

/// A cache of one node (in this process) with the Azure origin at
/// `template` and the tier in `cluster`; answers from the tier are waited
/// for at most 1 s (a sixth of the 6 s fetch timeout, at least 1 s).
fn node_cache(template: &str, local: &Path, cluster: &Path) -> Arc<Cache> {
    let cfg = Config {
        cluster_dir: Some(cluster.to_path_buf()),
        cluster_max_size: MaxSize::Bytes(1 << 40),
        fetch_timeout: Duration::from_secs(6),
        readahead_blocks: 4,
        ..azurite::config(template, local)
    };
    let origin = Arc::new(AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap());
    Arc::new(Cache::with_origin(cfg, origin).unwrap())
}

fn timed_read(c: &Cache, k: &BlobKey, len: usize) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut buf = vec![0u8; len];
    c.read(k, 0, &mut buf).unwrap();
    (buf, t0.elapsed())
}

#[test]
fn a_hung_cluster_mount_never_hangs_a_read_or_shutdown() {
    let az = Azurite::start();
    az.create_container("models");
    let (one, two) = (bytes(161, 8 * MIB), bytes(162, 8 * MIB));
    az.put("models", "one.bin", &one);
    az.put("models", "two.bin", &two);
    let k1 = BlobKey::new(ACCOUNT, "models", "one.bin").unwrap();
    let k2 = BlobKey::new(ACCOUNT, "models", "two.bin").unwrap();
    let work = tempdir("cl-hung");
    let (backing, mp) = (work.path().join("backing"), work.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mp).unwrap();
    let fs = HungFs::mount(&backing, &mp);
    let tier = mp.join("tier");

    // Node A fills the tier with blob one, then the mount hangs while A
    // still uses it: its next blob comes from the origin.
    let a = node_cache(&az.template(), &work.path().join("a"), &tier);
    assert!(timed_read(&a, &k1, one.len()).0 == one);
    a.shutdown(); // lets its publications finish
    assert_eq!(a.stats().blocks_to_cluster, 8);
    let a = node_cache(&az.template(), &work.path().join("a"), &tier);
    let mut b0 = vec![0u8; 1];
    a.read(&k1, 0, &mut b0).unwrap(); // the tier is open
    fs.hang();
    let (got, took) = timed_read(&a, &k2, two.len());
    assert!(got == two);
    assert!(
        took < Duration::from_secs(5),
        "a read took {took:?} with the tier hung"
    );
    let s = a.stats();
    assert!(s.cluster_fallbacks >= 1, "{s:?}");
    assert_eq!(s.bytes_from_origin, two.len() as u64);

    // Node B starts with the mount hung: it cannot even open the tier.
    let b = node_cache(&az.template(), &work.path().join("b"), &tier);
    let (got, took) = timed_read(&b, &k1, one.len());
    assert!(got == one);
    assert!(
        took < Duration::from_secs(5),
        "a read took {took:?} with the tier hung"
    );
    assert_eq!(b.stats().bytes_from_origin, one.len() as u64);
    assert!(fs.waiting() >= 1, "nothing waited on the hung mount");

    // Shutdown leaves the stuck calls to the kernel.
    for c in [&a, &b] {
        let t0 = Instant::now();
        c.shutdown();
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            t0.elapsed()
        );
    }
    fs.release();
    // Once the mount answers again a new node uses the tier.
    let c = node_cache(&az.template(), &work.path().join("c"), &tier);
    assert!(timed_read(&c, &k1, one.len()).0 == one);
    let s = c.stats();
    assert_eq!(
        (s.bytes_from_cluster, s.bytes_from_origin),
        (8 * MIB as u64, 0),
        "{s:?}"
    );
}
