//! The nodes (crates/testing/src/nodes.rs): a node reaches the origin only
//! through its relay, which counts its bytes; two sets never clash; nothing
//! is left behind. The client inside a node is bash's `/dev/tcp` (nothing
//! to install), under `timeout`.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use blobcache_testing::azurite::Azurite;
use blobcache_testing::bytes;
use blobcache_testing::nodes::{ip_binary, Node, Nodes};

/// What no step of these tests comes near, however loaded the machine.
const GENEROUS: Duration = Duration::from_secs(20);

/// A loopback HTTP server answering `GET /<n>` with `n` bytes
/// ([`bytes`]`(1, n)`), then closing; its port.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || answer(s));
        }
    });
    port
}

fn head(n: usize) -> String {
    format!("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
}

fn answer(mut s: TcpStream) {
    s.set_read_timeout(Some(GENEROUS)).unwrap();
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    let n: usize = req
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.trim_start_matches('/').parse().ok())
        .unwrap_or(0);
    let _ = s.write_all(head(n).as_bytes());
    let _ = s.write_all(&bytes(1, n));
}

/// From inside `node`: `GET <path>` (HTTP/1.0) to `addr` with bash's
/// `/dev/tcp`; the whole answer (head and body), or bash's error.
fn get(node: &Node, addr: SocketAddrV4, path: &str) -> Result<Vec<u8>, String> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} || exit 7; printf 'GET {path} HTTP/1.0\\r\\nHost: {addr}\\r\\n\\r\\n' >&3; cat <&3",
        addr.ip(),
        addr.port()
    );
    let out = node
        .command("timeout")
        .args([&GENEROUS.as_secs().to_string(), "bash", "-c", &script])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn body(answer: &[u8]) -> &[u8] {
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    &answer[at + 4..]
}

/// Polls `cond` until it holds; panics with `what` after [`GENEROUS`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {GENEROUS:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ip_netns_list() -> String {
    let out = Command::new(ip_binary())
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_link() -> String {
    let out = Command::new(ip_binary())
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each node reaches the upstream at its origin endpoint, and the relay
/// counts what each one took, exactly, apart from the others.
#[test]
fn each_node_reaches_the_origin_through_its_relay_and_is_counted_apart() {
    let upstream = serve();
    let nodes = Nodes::with_origin(3, upstream);
    let sizes = [1_000, 70_000, 300_001];
    for (node, &n) in nodes.iter().zip(&sizes) {
        let answer = get(node, node.origin_addr(), &format!("/{n}")).unwrap();
        assert_eq!(
            body(&answer),
            bytes(1, n).as_slice(),
            "node {}",
            node.index()
        );
        assert!(node.origin_endpoint().starts_with("http://10.213."));
        assert_eq!(
            node.origin_template(),
            format!("{}/{{account}}", node.origin_endpoint())
        );
    }
    for (node, &n) in nodes.iter().zip(&sizes) {
        let expected = (head(n).len() + n) as u64;
        wait_until(&format!("node {} counted {expected}", node.index()), || {
            node.bytes_from_origin() == expected
        });
        assert_eq!(node.origin_connections(), 1);
        assert!(node.bytes_to_origin() > 0);
    }
    let total: usize = sizes.iter().map(|&n| head(n).len() + n).sum();
    assert_eq!(nodes.bytes_from_origin(), total as u64);
}

/// The relay in front of Azurite: a node reads a blob at its template's
/// address, as the library would.
#[test]
fn a_node_reads_a_blob_from_azurite_through_the_relay() {
    let azurite = Azurite::start();
    azurite.create_public_container("models");
    let data = bytes(7, 1 << 20);
    azurite.put("models", "weights.bin", &data);
    let nodes = Nodes::with_origin(2, azurite.port);
    let node = &nodes[1];
    let path = format!(
        "/{}/models/weights.bin",
        blobcache_testing::azurite::ACCOUNT
    );
    let answer = get(node, node.origin_addr(), &path).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", &answer[..40]);
    assert_eq!(body(&answer), data.as_slice());
    assert_eq!(
        azurite.template().replace(
            &format!("127.0.0.1:{}", azurite.port),
            &node.origin_addr().to_string()
        ),
        node.origin_template()
    );
    wait_until("node 1 counted the answer", || {
        node.bytes_from_origin() == answer.len() as u64
    });
    assert_eq!(nodes[0].bytes_from_origin(), 0);
}

/// From inside a node, the host's loopback is not there (127.0.0.1 is the
/// node's own), nor is another node's relay: only its own relay is.
#[test]
fn a_node_reaches_nothing_but_its_own_relay() {
    let upstream = serve();
    let nodes = Nodes::with_origin(2, upstream);
    let (a, b) = (&nodes[0], &nodes[1]);
    let loopback = SocketAddrV4::new([127, 0, 0, 1].into(), upstream);
    let err = get(a, loopback, "/10").unwrap_err();
    assert!(err.contains("refused"), "{err}");
    let err = get(a, b.origin_addr(), "/10").unwrap_err();
    assert!(err.contains("unreachable"), "{err}");
    // The same client does reach its own relay.
    assert_eq!(
        body(&get(a, a.origin_addr(), "/10").unwrap()),
        bytes(1, 10).as_slice()
    );
    assert_eq!(b.bytes_from_origin(), 0);
    assert_eq!(b.origin_connections(), 0);
}

/// Two sets made at once in one process take two slots: different names,
/// different addresses, and each relay counts only its own nodes.
#[test]
fn two_sets_made_at_once_do_not_clash() {
    let upstream = serve();
    let start = Arc::new(Barrier::new(2));
    let makers: Vec<_> = (0..2)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                Nodes::with_origin(2, upstream)
            })
        })
        .collect();
    let sets: Vec<Nodes> = makers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(sets[0].slot(), sets[1].slot());
    let all: Vec<&Node> = sets.iter().flat_map(|s| s.iter()).collect();
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            assert_ne!(x.netns(), y.netns());
            assert_ne!(x.addr(), y.addr());
            assert_ne!(x.host_addr(), y.host_addr());
        }
    }
    for (k, node) in all.iter().enumerate() {
        let n = 100 * (k + 1);
        assert_eq!(
            body(&get(node, node.origin_addr(), &format!("/{n}")).unwrap()),
            bytes(1, n).as_slice()
        );
    }
    for (k, node) in all.iter().enumerate() {
        let expected = (head(100 * (k + 1)).len() + 100 * (k + 1)) as u64;
        wait_until("each node counted its own answer", || {
            node.bytes_from_origin() == expected
        });
    }
}

/// Dropping a set removes its namespaces and veths, and stops its relay.
#[test]
fn a_dropped_set_leaves_nothing() {
    let upstream = serve();
    let nodes = Nodes::with_origin(2, upstream);
    let names: Vec<String> = nodes.iter().map(|n| n.netns().to_string()).collect();
    let relays: Vec<SocketAddrV4> = nodes.iter().map(Node::origin_addr).collect();
    let veth = format!("bcn{}h", nodes.slot());
    let listed = ip_netns_list();
    for name in &names {
        assert!(listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name)));
    }
    assert!(ip_link().contains(&format!("{veth}0@")));
    drop(nodes);
    let listed = ip_netns_list();
    for name in &names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} is still listed:\n{listed}"
        );
        assert!(!Path::new(&format!("/run/netns/{name}")).exists());
    }
    let links = ip_link();
    assert!(!links.contains(&format!(": {veth}")), "{links}");
    for addr in relays {
        assert!(TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).is_err());
    }
}

/// What a process that died without dropping its set left behind goes at
/// the next set made: the child below makes 2 nodes, marks what it made (an
/// alias on each host-side veth and on each node's `lo`) and exits at once.
/// The marks tell its leftovers from a set another test made since in the
/// same slot, with the same names.
#[test]
fn a_crashed_run_s_leftovers_are_swept() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "crashing_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BC_NODES_CRASHING_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let said = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.split(key).nth(1))
            .unwrap_or_else(|| panic!("the child said no {key}:\n{text}"))
            .to_string()
    };
    let (slot, mark) = (said("SLOT="), said("MARK="));
    // Whether the leftovers are still there now is not asserted: a set made
    // at the same time by another test (a thread, or a process under
    // nextest) may have swept them already. Once a set is made they are
    // gone, whoever swept them.
    let _nodes = Nodes::new(1);
    for i in 0..2 {
        let ns = format!("bcnode-{slot}-{i}");
        if Path::new(&format!("/run/netns/{ns}")).exists() {
            let out = Command::new(ip_binary())
                .args(["-n", &ns, "-o", "link", "show", "lo"])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(
                !shown.split_whitespace().any(|w| w == mark),
                "{ns} is the child's: {shown}"
            );
        }
    }
    for dev in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let alias = std::fs::read_to_string(dev.path().join("ifalias")).unwrap_or_default();
        assert!(alias.trim() != mark, "{:?} is the child's", dev.file_name());
    }
}

/// The child of [`a_crashed_run_s_leftovers_are_swept`]; passes at once in
/// any other run.
#[test]
fn crashing_child() {
    if std::env::var_os("BC_NODES_CRASHING_CHILD").is_none() {
        return;
    }
    let nodes = Nodes::new(2);
    let mark = format!("bc-crashed-{}", std::process::id());
    for node in &nodes {
        for args in [
            vec!["link", "set", node.host_if(), "alias", &mark],
            vec!["-n", node.netns(), "link", "set", "lo", "alias", &mark],
        ] {
            let ok = Command::new(ip_binary()).args(&args).status().unwrap();
            assert!(ok.success(), "ip {args:?}");
        }
    }
    println!("\nSLOT={}\nMARK={mark}", nodes.slot());
    std::io::stdout().flush().unwrap();
    // No destructor runs: the namespaces and the veths stay, and the
    // slot's lock goes with the process.
    std::process::exit(0);
}
