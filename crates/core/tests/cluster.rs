//! The cluster tier (`BLOBCACHE_CLUSTER_DIR`) over a directory origin:
//! "nodes" are caches with local directories of their own sharing one
//! cluster directory. What is checked: a block fetched by one node is
//! taken from the tier by the next; bytes are always right; damaged,
//! planted and linked files in the tier are never served; a tier that
//! cannot be used never fails a read; the tier's cap; its files' modes.
//! (Azurite, separate processes in network namespaces, sshfs and a hung
//! FUSE mount: tests/azure/cluster.rs.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use blobcache_core::config::{Config, MaxSize};
use blobcache_core::{BlobKey, Cache};
use blobcache_testing::fixture::{bytes, tempdir, walk, Fixture, TempDir, ACCOUNT, CONTAINER};

const MIB: usize = 1 << 20;
const BS: u64 = MIB as u64;

fn key(blob: &str) -> BlobKey {
    BlobKey::new(ACCOUNT, CONTAINER, blob).unwrap()
}

fn read_all(cache: &Cache, blob: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    cache.read(&key(blob), 0, &mut buf).unwrap();
    buf
}

/// The configuration of one node: the fixture's origin, a local cache
/// directory of its own, and the shared cluster directory.
fn node(fx: &Fixture, local: &Path, cluster: &Path) -> Config {
    Config {
        dir: Some(local.to_path_buf()),
        cluster_dir: Some(cluster.to_path_buf()),
        cluster_max_size: MaxSize::Bytes(u64::MAX / 2),
        readahead_blocks: 2,
        ..fx.config(BS)
    }
}

/// Published blocks under `dir`: (path, index).
fn blocks_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = vec![];
    walk(dir, &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if let Some(i) = name.strip_prefix("b.").and_then(|s| s.parse().ok()) {
            out.push((p.to_path_buf(), i));
        }
    });
    out.sort_by_key(|(_, i)| *i);
    out
}

struct Nodes {
    fx: Fixture,
    cluster: TempDir,
    locals: Vec<TempDir>,
}

fn nodes(tag: &str, n: usize) -> Nodes {
    Nodes {
        fx: Fixture::new(tag),
        cluster: tempdir(&format!("{tag}-cluster")),
        locals: (0..n).map(|i| tempdir(&format!("{tag}-node{i}"))).collect(),
    }
}

impl Nodes {
    fn cache(&self, i: usize) -> Cache {
        Cache::new(node(&self.fx, self.locals[i].path(), self.cluster.path())).unwrap()
    }
}

#[test]
fn a_block_one_node_fetched_is_taken_from_the_tier_by_the_next_and_never_fetched_again() {
    let n = nodes("cl-two", 2);
    let data = bytes(1, 5 * MIB + 321);
    n.fx.put("m.safetensors", &data);

    let a = n.cache(0);
    assert_eq!(read_all(&a, "m.safetensors", data.len()), data);
    a.shutdown();
    let sa = a.stats();
    assert_eq!(sa.bytes_from_origin, data.len() as u64, "{sa:?}");
    assert_eq!(sa.blocks_to_cluster, 6, "{sa:?}");
    assert_eq!(sa.bytes_from_cluster, 0);
    assert_eq!(blocks_under(n.cluster.path()).len(), 6);

    let b = n.cache(1);
    assert_eq!(read_all(&b, "m.safetensors", data.len()), data);
    b.shutdown();
    let sb = b.stats();
    assert_eq!(sb.bytes_from_origin, 0, "{sb:?}");
    assert_eq!(sb.bytes_from_cluster, data.len() as u64, "{sb:?}");
    assert_eq!(sb.blocks_from_cluster, 6);
    assert_eq!((sb.blocks_to_cluster, sb.cluster_damaged), (0, 0));
    // The second node keeps its own copy: its next load is local.
    assert_eq!(blocks_under(n.locals[1].path()).len(), 6);
    let b2 = n.cache(1);
    assert_eq!(read_all(&b2, "m.safetensors", data.len()), data);
    let s = b2.stats();
    assert_eq!((s.bytes_from_origin, s.bytes_from_cluster), (0, 0), "{s:?}");
}

#[test]
fn a_damaged_block_in_the_tier_is_never_served_and_is_fetched_and_published_again() {
    let n = nodes("cl-damaged", 2);
    let data = bytes(2, 4 * MIB);
    n.fx.put("m", &data);
    let a = n.cache(0);
    assert_eq!(read_all(&a, "m", data.len()), data);
    a.shutdown();

    // One bit of block 1's bytes flipped (the trailer still parses), and
    // block 2 cut short.
    let blocks = blocks_under(n.cluster.path());
    let flip = &blocks[1].0;
    let mut b1 = std::fs::read(flip).unwrap();
    b1[12345] ^= 0x10;
    std::fs::write(flip, &b1).unwrap();
    let cut = &blocks[2].0;
    let b2 = std::fs::read(cut).unwrap();
    std::fs::write(cut, &b2[..b2.len() - 100]).unwrap();

    let b = n.cache(1);
    assert_eq!(read_all(&b, "m", data.len()), data);
    b.shutdown();
    let s = b.stats();
    assert_eq!(s.cluster_damaged, 2, "{s:?}");
    assert_eq!(s.bytes_from_origin, 2 * BS, "{s:?}");
    assert_eq!(s.bytes_from_cluster, 2 * BS, "{s:?}");
    assert_eq!(s.blocks_to_cluster, 2, "published again: {s:?}");

    // The tier is whole again: a third node takes everything from it.
    let third = tempdir("cl-damaged-3");
    let c = Cache::new(node(&n.fx, third.path(), n.cluster.path())).unwrap();
    assert_eq!(read_all(&c, "m", data.len()), data);
    let s = c.stats();
    assert_eq!((s.bytes_from_origin, s.cluster_damaged), (0, 0), "{s:?}");
}

#[test]
fn planted_files_and_links_in_the_tier_are_never_served() {
    let n = nodes("cl-planted", 2);
    let data = bytes(3, 3 * MIB);
    let other = bytes(4, 3 * MIB);
    n.fx.put("m", &data);
    n.fx.put("other", &other);
    let a = n.cache(0);
    assert_eq!(read_all(&a, "m", data.len()), data);
    assert_eq!(read_all(&a, "other", other.len()), other);
    a.shutdown();

    let blocks = blocks_under(n.cluster.path());
    let dir_of = |i: u64, want: &[u8]| -> PathBuf {
        // The version directory of blob `want` holds its block i.
        blocks
            .iter()
            .filter(|(_, j)| *j == i)
            .map(|(p, _)| p.clone())
            .find(|p| {
                let b = std::fs::read(p).unwrap();
                b[..MIB] == want[i as usize * MIB..(i as usize + 1) * MIB]
            })
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf()
    };
    let m_dir = dir_of(0, &data);
    let other_dir = dir_of(0, &other);
    // Block 0 of "m": replaced by another blob's valid block 0 (its
    // trailer verifies against its own bytes: not this blob's version).
    // Block 1: a symlink to another blob's block 1. Block 2: garbage.
    std::fs::remove_file(m_dir.join("b.0")).unwrap();
    std::fs::copy(other_dir.join("b.0"), m_dir.join("b.0")).unwrap();
    std::fs::remove_file(m_dir.join("b.1")).unwrap();
    std::os::unix::fs::symlink(other_dir.join("b.1"), m_dir.join("b.1")).unwrap();
    std::fs::write(m_dir.join("b.2"), vec![0x5au8; MIB + 64]).unwrap();

    let b = n.cache(1);
    let got = read_all(&b, "m", data.len());
    assert!(got == data, "wrong bytes served from planted files");
    b.shutdown();
    let s = b.stats();
    assert_eq!(s.cluster_damaged, 3, "{s:?}");
    assert_eq!(s.bytes_from_origin, 3 * BS, "{s:?}");
    // The link was removed, not followed: the other blob's block is intact.
    assert!(std::fs::symlink_metadata(other_dir.join("b.1"))
        .unwrap()
        .is_file());
    assert!(!std::fs::symlink_metadata(m_dir.join("b.1"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_tier_that_cannot_be_used_never_fails_a_read() {
    let fx = Fixture::new("cl-unusable");
    let data = bytes(5, 3 * MIB + 7);
    fx.put("m", &data);
    // A path under a regular file: it can never be a directory.
    let file = tempdir("cl-unusable-f");
    let not_a_dir = file.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let local = tempdir("cl-unusable-local");
    let cache = Cache::new(node(&fx, local.path(), &not_a_dir.join("cluster"))).unwrap();
    assert_eq!(read_all(&cache, "m", data.len()), data);
    let s = cache.stats();
    assert_eq!(s.bytes_from_origin, data.len() as u64);
    assert!(s.cluster_fallbacks >= 1, "{s:?}");
    assert_eq!(s.blocks_to_cluster, 0);
}

#[test]
fn a_tier_with_another_block_size_is_not_used() {
    let n = nodes("cl-bs", 2);
    let data = bytes(6, 2 * MIB);
    n.fx.put("m", &data);
    let mut big = node(&n.fx, n.locals[0].path(), n.cluster.path());
    big.block_size = 2 * BS;
    let a = Cache::new(big).unwrap();
    assert_eq!(read_all(&a, "m", data.len()), data);
    a.shutdown();
    let b = n.cache(1);
    assert_eq!(read_all(&b, "m", data.len()), data);
    let s = b.stats();
    assert_eq!(s.bytes_from_cluster, 0, "{s:?}");
    assert_eq!(s.bytes_from_origin, data.len() as u64);
    assert!(s.cluster_fallbacks >= 1);
}

#[test]
fn the_tier_stays_under_its_cap_by_unlinking_the_least_recently_used() {
    let n = nodes("cl-cap", 1);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        n.fx.put(name, &bytes(10 + i as u64, 4 * MIB));
    }
    let mut cfg = node(&n.fx, n.locals[0].path(), n.cluster.path());
    // Room for about 6 blocks (each 1 MiB plus its trailer).
    cfg.cluster_max_size = MaxSize::Bytes(6 * BS + 6 * 4096 + 64 * 1024);
    let cache = Cache::new(cfg).unwrap();
    for name in ["a", "b", "c"] {
        assert_eq!(read_all(&cache, name, 4 * MIB).len(), 4 * MIB);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cache.shutdown();
    // Eviction runs on a thread of its own, which nothing waits for.
    let t0 = std::time::Instant::now();
    while blobcache_testing::fixture::du(n.cluster.path()) > 6 * BS + 6 * 4096 + 64 * 1024
        && t0.elapsed() < std::time::Duration::from_secs(20)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let usage = blobcache_testing::fixture::du(n.cluster.path());
    assert!(
        usage <= 6 * BS + 6 * 4096 + 64 * 1024,
        "tier holds {usage} bytes"
    );
    let left = blocks_under(n.cluster.path());
    assert!(!left.is_empty() && left.len() <= 6, "{left:?}");
    // The last blob loaded is the one kept.
    let c = bytes(12, 4 * MIB);
    let kept: Vec<_> = left
        .iter()
        .filter(|(p, i)| std::fs::read(p).unwrap()[..MIB] == c[*i as usize * MIB..][..MIB])
        .collect();
    assert_eq!(kept.len(), 4, "{left:?}");
}

#[test]
fn the_tier_is_group_shared_whatever_the_umask() {
    let n = nodes("cl-modes", 1);
    let data = bytes(7, 2 * MIB);
    n.fx.put("m", &data);
    let cache = n.cache(0);
    assert_eq!(read_all(&cache, "m", data.len()), data);
    cache.shutdown();
    let mut seen = 0;
    walk(n.cluster.path(), &mut |p| {
        let m = std::fs::symlink_metadata(p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o770, "{}", p.display());
        } else {
            assert_eq!(mode, 0o660, "{}", p.display());
            seen += 1;
        }
    });
    assert!(seen >= 3, "{seen} files");
}

#[test]
fn a_claim_left_by_a_node_that_died_is_taken_over_once_it_goes_stale() {
    let n = nodes("cl-stale-claim", 2);
    let data = bytes(8, 2 * MIB);
    n.fx.put("m", &data);
    let a = n.cache(0);
    assert_eq!(read_all(&a, "m", data.len()), data);
    a.shutdown();
    // A node died while filling block 0 again: its claim stays, no longer
    // kept fresh (its lock went with it).
    let (b0, _) = blocks_under(n.cluster.path()).remove(0);
    std::fs::remove_file(&b0).unwrap();
    let claim = b0.with_file_name("claim.0");
    std::fs::write(&claim, b"").unwrap();

    let b = n.cache(1);
    let t0 = std::time::Instant::now();
    let mut got = vec![0u8; MIB];
    b.read(&key("m"), 0, &mut got).unwrap();
    let took = t0.elapsed();
    assert!(got[..] == data[..MIB]);
    // Waited for the claim while it might have been alive, then took over.
    assert!(
        took >= std::time::Duration::from_secs(4) && took < std::time::Duration::from_secs(25),
        "{took:?}"
    );
    b.shutdown();
    let s = b.stats();
    assert_eq!((s.bytes_from_origin, s.blocks_to_cluster), (BS, 1), "{s:?}");
    assert!(b0.exists() && !claim.exists());
}
