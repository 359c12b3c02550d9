//! The cluster tier across "nodes": separate `blobcache` processes, each in
//! a network namespace of its own (blobcache_testing::nodes) with a local
//! cache directory of its own, sharing one cluster directory, and reaching
//! Azurite only through a relay that counts the bytes each node gets.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use blobcache_testing::azurite::{Azurite, KEY};
use blobcache_testing::nodes::{Node, Nodes};
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
        .env("BLOBCACHE_FETCH_TIMEOUT", "20s")
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

#[test]
fn four_nodes_loading_one_model_cold_together_pull_it_from_the_origin_about_once() {
    let az = Azurite::start();
    az.create_container("models");
    let size = 64 * MIB;
    let data = bytes(151, size);
    az.put("models", "model.safetensors", &data);
    let nodes = Nodes::with_origin(4, az.port);
    let work = tempdir("cl-nodes");
    let cluster = work.path().join("cluster");
    let kids: Vec<_> = nodes
        .iter()
        .map(|n| {
            let local = work.path().join(format!("local{}", n.index()));
            let out = work.path().join(format!("out{}", n.index()));
            (out.clone(), cat_in(n, &local, &cluster, &out))
        })
        .collect();
    let (mut from_origin, mut from_cluster, mut duplicates) = (0, 0, 0);
    for (out, kid) in kids {
        let o = kid.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "{} differs",
            out.display()
        );
        from_origin += counter(&stderr, "bytes_from_origin");
        from_cluster += counter(&stderr, "bytes_from_cluster");
        duplicates += counter(&stderr, "cluster_duplicates");
    }
    let relayed = nodes.bytes_from_origin();
    eprintln!(
        "4 nodes: the relay sent {relayed} bytes ({:.3} × the model), the nodes fetched {from_origin} from the origin and took {from_cluster} from the tier; {duplicates} duplicate blocks",
        relayed as f64 / size as f64
    );
    // Headers and lookups included: at most 5% over the model's size.
    assert!(
        relayed as f64 <= 1.05 * size as f64,
        "the relay sent {relayed} bytes for a model of {size}"
    );
    assert!(from_origin as f64 <= 1.05 * size as f64, "{from_origin}");
    assert_eq!(from_origin + from_cluster, 4 * size as u64);
    for n in nodes.iter() {
        assert!(n.bytes_from_origin() > 0, "node {} never asked", n.index());
    }
}
