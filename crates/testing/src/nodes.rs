//! Nodes: stand-ins for the machines of a cluster on one host. Each
//! [`Node`] is a network namespace of its own, joined to the host's by a
//! veth pair with a /30 of private addresses, with `lo` up inside. A program
//! runs in it with [`Node::command`]; its local cache directory and the
//! shared cluster directory are the caller's (every node sees the host's
//! file systems).
//!
//! From inside a node only two things can be reached: the node's own
//! loopback (not the host's: `127.0.0.1` in a node is the node) and the
//! host's end of its veth pair. There is no default route, the host does
//! not forward, and no IPv6 address is made on either end of the pair. So a
//! node reaches the origin only through the **origin relay**
//! ([`Nodes::relay_to`]): a TCP relay in the host's namespace listening on
//! each node's host-side address, forwarding to a loopback port (Azurite's),
//! and counting the bytes it passes per node. Those counts are the
//! independent measure of the bytes each node took from the origin.
//!
//! **Names and addresses.** A set of nodes holds a *slot* (0–255) for as
//! long as it lives: an exclusive `flock` on `/run/blobcache-testing/nodes/
//! slot-<slot>.lock` ([`LOCK_DIR`]), taken without waiting, trying the slots
//! in turn from the process id's. A `flock` belongs to an open file, so two
//! sets in one process take two slots just as two processes do, and the
//! kernel lets go of it when the process ends, however it ends. Everything
//! a set makes is named and addressed from its slot `s` and the node's index
//! `i` (below [`MAX_NODES`]):
//!
//! - the namespace `bcnode-<s>-<i>`;
//! - the veth pair `bcn<s>h<i>` (host side, at most 9 characters of the
//!   15 an interface name may have) and `bcn<s>n<i>` (made inside the
//!   namespace);
//! - the addresses `10.213.<s>.<4i+1>` (host side) and `10.213.<s>.<4i+2>`
//!   (node side), in `10.213.<s>.<4i>/30`.
//!
//! So nothing two live sets make can clash, on this machine's whole host
//! namespace (processes of other checkouts included, as the lock directory
//! is fixed). What a crashed run left behind is named from a slot nobody
//! holds: a new set removes what it finds of its own slot before it makes
//! anything, and also sweeps the leftovers of every other slot it can lock.
//! Before using a slot it checks that no interface of the host has an
//! address in `10.213.<s>.0/24` (a network of the machine's own there
//! would be a clash no lock can see).
//!
//! Needs root (as the tests run in CI) and `ip` (iproute2): `$IP_BIN`, else
//! the first of `/usr/sbin/ip`, `/sbin/ip`, `/usr/bin/ip`, `/bin/ip`.
//!
//! Dropping the [`Nodes`] stops the relay and removes the namespaces and
//! the veth pairs. Processes the caller started in a node should have ended
//! before that: they would be left in a namespace without a network.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the slots' lock files are (fixed, so every process on the machine
/// sees the same locks whatever its `TMPDIR`).
pub const LOCK_DIR: &str = "/run/blobcache-testing/nodes";
/// How many sets of nodes may live at once on a machine.
pub const SLOTS: u16 = 256;
/// The most nodes in one set (64 /30s make a slot's /24).
pub const MAX_NODES: usize = 64;
/// The first two octets of every address the nodes use.
const NET: [u8; 2] = [10, 213];
/// How long the veths may take to come up.
const UP_WITHIN: Duration = Duration::from_secs(10);
/// The most one read of the relay takes from a socket.
const CHUNK: usize = 64 << 10;

/// The `ip` command.
pub fn ip_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IP_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("`ip` (iproute2) is not installed (or set IP_BIN)")
}

/// Runs `ip args`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new(ip_binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip args`, for removing what may not be there: failures are fine.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new(ip_binary()).args(args).output();
}

fn netns_name(slot: u16, i: usize) -> String {
    format!("bcnode-{slot}-{i}")
}

fn host_if(slot: u16, i: usize) -> String {
    format!("bcn{slot}h{i}")
}

fn node_if(slot: u16, i: usize) -> String {
    format!("bcn{slot}n{i}")
}

/// (host side, node side) of node `i` of slot `slot`.
fn addresses(slot: u16, i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let [a, b] = NET;
    let c = u8::try_from(slot).expect("slot below 256");
    let d = u8::try_from(4 * i).expect("node index below 64");
    (Ipv4Addr::new(a, b, c, d + 1), Ipv4Addr::new(a, b, c, d + 2))
}

/// The slot a leftover's name says, for names this module makes: the
/// namespace `bcnode-<s>-<i>` or the host interface `bcn<s>h<i>`.
fn slot_of(name: &str) -> Option<u16> {
    let digits = |s: &str| -> Option<u16> {
        let end = s.find(|c: char| !c.is_ascii_digit())?;
        s[..end].parse().ok().filter(|s| *s < SLOTS)
    };
    if let Some(rest) = name.strip_prefix("bcnode-") {
        digits(rest).filter(|_| rest.contains('-'))
    } else if let Some(rest) = name.strip_prefix("bcn") {
        digits(rest).filter(|_| rest.contains('h') || rest.contains('n'))
    } else {
        None
    }
}

/// The names in a directory (empty when it is not there).
fn names_in(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The named namespaces and the host's interfaces this module made for
/// `slot`: (namespaces, interfaces).
fn leftovers(slot: u16) -> (Vec<String>, Vec<String>) {
    let mine = |names: Vec<String>, prefix: &str| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n.starts_with(prefix) && slot_of(n) == Some(slot))
            .collect()
    };
    (
        mine(names_in("/run/netns"), "bcnode-"),
        mine(names_in("/sys/class/net"), "bcn"),
    )
}

/// Removes whatever this module made for `slot` (its lock held).
fn clean(slot: u16) {
    let (namespaces, interfaces) = leftovers(slot);
    // Removing the host side removes the pair, even when a process still
    // keeps the namespace alive after its name is gone.
    for i in &interfaces {
        ip_quiet(&["link", "del", i]);
    }
    for n in &namespaces {
        ip_quiet(&["netns", "del", n]);
    }
}

/// An exclusive lock on a slot's file, for as long as it is open.
struct SlotLock {
    slot: u16,
    _file: File,
}

impl SlotLock {
    /// Locks `slot` if no one holds it.
    fn try_take(slot: u16) -> Option<SlotLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{LOCK_DIR}/slot-{slot}.lock"))
            .unwrap_or_else(|e| panic!("cannot open a slot's lock file in {LOCK_DIR}: {e}"));
        // SAFETY: flock on a file descriptor this function owns (open until
        // `file` is dropped); it touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(SlotLock { slot, _file: file })
    }
}

/// Removes the leftovers of every slot no one holds.
fn sweep() {
    let mut slots: Vec<u16> = names_in("/run/netns")
        .into_iter()
        .chain(names_in("/sys/class/net"))
        .filter_map(|n| slot_of(&n))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        if let Some(lock) = SlotLock::try_take(slot) {
            clean(lock.slot);
        }
    }
}

/// Panics if an interface of the host has an IPv4 network overlapping
/// `10.213.<slot>.0/24` (after this module's leftovers there are gone).
fn check_free(slot: u16) {
    let out = Command::new(ip_binary())
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    let [a, b] = NET;
    let c = u8::try_from(slot).expect("slot below 256");
    let ours = (u32::from(Ipv4Addr::new(a, b, c, 0)), 24u32);
    let overlap = |(x, p): (u32, u32), (y, q): (u32, u32)| {
        let bits = p.min(q);
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        x & mask == y & mask
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "4: eth0    inet 192.0.2.2/24 brd ... scope global eth0"
        let mut words = line.split_whitespace();
        let Some(dev) = words.nth(1) else { continue };
        let Some(cidr) = words.nth(1) else { continue };
        let Some((addr, prefix)) = cidr.split_once('/') else {
            continue;
        };
        let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
            continue;
        };
        assert!(
            !overlap(ours, (u32::from(addr), prefix.min(32))),
            "the host's interface {dev} has {cidr}, in the way of the nodes' \
             10.213.{slot}.0/24: the nodes of crates/testing/src/nodes.rs need \
             10.213.0.0/16 free"
        );
    }
}

/// A set of nodes: network namespaces joined to the host's, and the origin
/// relay once [`Nodes::relay_to`] starts it. See the module's doc.
pub struct Nodes {
    nodes: Vec<Node>,
    relay: Option<Relay>,
    lock: SlotLock,
}

/// One node of a [`Nodes`].
pub struct Node {
    index: usize,
    netns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    node_addr: Ipv4Addr,
    origin: Option<(u16, Arc<Counters>)>,
}

/// What the relay passed for one node.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    to_node: AtomicU64,
    to_origin: AtomicU64,
}

impl Nodes {
    /// Makes `n` nodes (1 to [`MAX_NODES`]), without an origin relay.
    pub fn new(n: usize) -> Nodes {
        assert!(
            (1..=MAX_NODES).contains(&n),
            "a set has 1 to {MAX_NODES} nodes, not {n}"
        );
        std::fs::create_dir_all(LOCK_DIR)
            .unwrap_or_else(|e| panic!("cannot create {LOCK_DIR} (the nodes need root): {e}"));
        sweep();
        let first = (std::process::id() % u32::from(SLOTS)) as u16;
        let lock = (0..SLOTS)
            .map(|k| (first + k) % SLOTS)
            .find_map(SlotLock::try_take)
            .unwrap_or_else(|| panic!("all {SLOTS} slots of nodes are taken"));
        Nodes::in_slot(lock, n)
    }

    /// Makes `n` nodes in the slot `lock` holds.
    fn in_slot(lock: SlotLock, n: usize) -> Nodes {
        // A crash may have left this slot's things behind.
        clean(lock.slot);
        check_free(lock.slot);
        let mut nodes = Nodes {
            nodes: Vec::with_capacity(n),
            relay: None,
            lock,
        };
        // Each node joins the set before it is made, so that a panic half
        // way (the set is dropped) removes it too.
        for i in 0..n {
            let slot = nodes.lock.slot;
            let (host_addr, node_addr) = addresses(slot, i);
            let node = Node {
                index: i,
                netns: netns_name(slot, i),
                host_if: host_if(slot, i),
                host_addr,
                node_addr,
                origin: None,
            };
            nodes.nodes.push(node);
            nodes.nodes[i].make(&node_if(slot, i));
        }
        let deadline = Instant::now() + UP_WITHIN;
        for node in &nodes.nodes {
            node.wait_up(deadline);
        }
        nodes
    }

    /// Makes `n` nodes with an origin relay to `127.0.0.1:<upstream>`.
    pub fn with_origin(n: usize, upstream: u16) -> Nodes {
        let mut nodes = Nodes::new(n);
        nodes.relay_to(upstream);
        nodes
    }

    /// Starts the origin relay: a listener on each node's host-side
    /// address (a port of its own per node), forwarding to
    /// `127.0.0.1:<upstream>` and counting per node. Once per set.
    pub fn relay_to(&mut self, upstream: u16) {
        assert!(self.relay.is_none(), "the nodes already have a relay");
        let relay = Relay::start(upstream, &self.nodes);
        for (node, (port, counters)) in self.nodes.iter_mut().zip(relay.ports()) {
            node.origin = Some((port, counters));
        }
        self.relay = Some(relay);
    }

    /// The slot this set holds (0 to [`SLOTS`] − 1).
    pub fn slot(&self) -> u16 {
        self.lock.slot
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Node> {
        self.nodes.iter()
    }

    /// Bytes the relay passed from the origin to all the nodes so far.
    pub fn bytes_from_origin(&self) -> u64 {
        self.nodes.iter().map(Node::bytes_from_origin).sum()
    }
}

impl std::ops::Index<usize> for Nodes {
    type Output = Node;

    fn index(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl<'a> IntoIterator for &'a Nodes {
    type Item = &'a Node;
    type IntoIter = std::slice::Iter<'a, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.nodes.iter()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // The relay first: its listeners are on the veths' addresses.
        drop(self.relay.take());
        for node in &self.nodes {
            ip_quiet(&["link", "del", &node.host_if]);
            ip_quiet(&["netns", "del", &node.netns]);
        }
        // Anything else of the slot (the lock is still held: it goes after).
        clean(self.lock.slot);
    }
}

impl Node {
    /// Makes the namespace and the veth pair, and brings them up.
    fn make(&self, node_if: &str) {
        let (ns, host) = (self.netns.as_str(), self.host_if.as_str());
        let host_cidr = format!("{}/30", self.host_addr);
        let node_cidr = format!("{}/30", self.node_addr);
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", node_if, "netns", ns,
        ]);
        // No IPv6 link-local addresses: IPv4 to the relay is the only way out.
        ip(&["link", "set", host, "addrgenmode", "none"]);
        ip(&["-n", ns, "link", "set", node_if, "addrgenmode", "none"]);
        ip(&["addr", "add", &host_cidr, "dev", host]);
        ip(&["-n", ns, "addr", "add", &node_cidr, "dev", node_if]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", node_if, "up"]);
        ip(&["link", "set", host, "up"]);
    }

    /// Waits until the host side's operational state is up (which needs
    /// the node's side up too).
    fn wait_up(&self, deadline: Instant) {
        let path = format!("/sys/class/net/{}/operstate", self.host_if);
        loop {
            let state = std::fs::read_to_string(&path).unwrap_or_default();
            if state.trim() == "up" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the veth {} is not up within {UP_WITHIN:?} (operstate {:?})",
                self.host_if,
                state.trim()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node's index in its set.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The network namespace's name (for `ip netns exec`, `ip -n`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host side's veth (`bcn<slot>h<index>`).
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The host side's address: where the node reaches the host (the
    /// relay).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The node's own address (what the host and the relay see it as).
    pub fn addr(&self) -> Ipv4Addr {
        self.node_addr
    }

    /// A command running `program` inside the node's namespace (through
    /// `ip netns exec`; the process is `program` itself, as `ip` execs
    /// it). Arguments, environment and the rest are the caller's; `program`
    /// is looked up in the command's PATH, so give a full path when the
    /// environment is cleared.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(ip_binary());
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    fn origin(&self) -> &(u16, Arc<Counters>) {
        self.origin
            .as_ref()
            .expect("the nodes have no origin relay (Nodes::relay_to)")
    }

    /// Where the node reaches the origin through the relay.
    pub fn origin_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host_addr, self.origin().0)
    }

    /// `http://10.213.S.H:PORT`: the origin as the node reaches it.
    pub fn origin_endpoint(&self) -> String {
        format!("http://{}", self.origin_addr())
    }

    /// A `BLOBCACHE_AZURE_ENDPOINT` template for this node, through the
    /// relay (for an upstream that speaks plain HTTP, as
    /// [`crate::azurite::Azurite::start`]'s does), as
    /// [`crate::azurite::Azurite::template`] makes it on loopback.
    pub fn origin_template(&self) -> String {
        format!("{}/{{account}}", self.origin_endpoint())
    }

    /// Bytes the relay passed from the origin to this node so far.
    pub fn bytes_from_origin(&self) -> u64 {
        self.origin
            .as_ref()
            .map_or(0, |(_, c)| c.to_node.load(Ordering::Relaxed))
    }

    /// Bytes the relay passed from this node to the origin so far.
    pub fn bytes_to_origin(&self) -> u64 {
        self.origin
            .as_ref()
            .map_or(0, |(_, c)| c.to_origin.load(Ordering::Relaxed))
    }

    /// Connections this node opened to the origin so far.
    pub fn origin_connections(&self) -> u64 {
        self.origin
            .as_ref()
            .map_or(0, |(_, c)| c.connections.load(Ordering::Relaxed))
    }
}

/// The origin relay: one listener per node, in the host's namespace.
struct Relay {
    stop: Arc<AtomicBool>,
    listeners: Vec<(SocketAddrV4, Arc<Counters>, JoinHandle<()>)>,
    live: Arc<Mutex<Vec<Conn>>>,
}

/// A relayed connection's threads, and its sockets while they run.
struct Conn {
    pair: std::sync::Weak<Pair>,
    threads: [JoinHandle<()>; 2],
}

struct Pair {
    node: TcpStream,
    origin: TcpStream,
}

impl Pair {
    fn close(&self) {
        let _ = self.node.shutdown(Shutdown::Both);
        let _ = self.origin.shutdown(Shutdown::Both);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    fn start(upstream: u16, nodes: &[Node]) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let listeners = nodes
            .iter()
            .map(|node| {
                let listener = TcpListener::bind((node.host_addr, 0)).unwrap_or_else(|e| {
                    panic!("cannot listen on {} for the relay: {e}", node.host_addr)
                });
                let addr = SocketAddrV4::new(node.host_addr, listener.local_addr().unwrap().port());
                let counters = Arc::new(Counters::default());
                let (stop, live, c) = (stop.clone(), live.clone(), counters.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("relay-{}", node.index))
                    .spawn(move || accept(&listener, upstream, &stop, &live, &c))
                    .unwrap();
                (addr, counters, thread)
            })
            .collect();
        Relay {
            stop,
            listeners,
            live,
        }
    }

    /// Each node's (port, counters), in the nodes' order.
    fn ports(&self) -> impl Iterator<Item = (u16, Arc<Counters>)> + '_ {
        self.listeners
            .iter()
            .map(|(addr, c, _)| (addr.port(), c.clone()))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (addr, _, thread) in std::mem::take(&mut self.listeners) {
            // Wakes the accepting thread, which then sees `stop`.
            let _ = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5));
            let _ = thread.join();
        }
        let live = std::mem::take(&mut *lock(&self.live));
        for c in &live {
            if let Some(pair) = c.pair.upgrade() {
                pair.close();
            }
        }
        for t in live.into_iter().flat_map(|c| c.threads) {
            let _ = t.join();
        }
    }
}

fn accept(
    listener: &TcpListener,
    upstream: u16,
    stop: &AtomicBool,
    live: &Mutex<Vec<Conn>>,
    counters: &Arc<Counters>,
) {
    for node in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(node) = node else { continue };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        // Dropping the node's socket closes it when upstream is not there.
        let Ok(origin) = TcpStream::connect(("127.0.0.1", upstream)) else {
            continue;
        };
        let _ = node.set_nodelay(true);
        let _ = origin.set_nodelay(true);
        let pair = Arc::new(Pair { node, origin });
        let spawn = |down: bool| {
            let (p, c) = (pair.clone(), counters.clone());
            std::thread::Builder::new()
                .name(if down { "relay-down" } else { "relay-up" }.into())
                .spawn(move || {
                    let (from, to, count) = if down {
                        (&p.origin, &p.node, &c.to_node)
                    } else {
                        (&p.node, &p.origin, &c.to_origin)
                    };
                    copy(from, to, count, &p);
                })
                .unwrap()
        };
        let threads = [spawn(true), spawn(false)];
        let mut live = lock(live);
        live.retain(|c| !c.threads.iter().all(JoinHandle::is_finished));
        live.push(Conn {
            pair: Arc::downgrade(&pair),
            threads,
        });
    }
}

/// Copies `from` to `to` until EOF (then shuts `to`'s write half down),
/// counting what it writes; an error closes both sockets.
fn copy(mut from: &TcpStream, mut to: &TcpStream, count: &AtomicU64, pair: &Pair) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return pair.close(),
        };
        if to.write_all(&buf[..n]).is_err() {
            return pair.close();
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_parse_back() {
        for slot in [0, 7, 255] {
            for i in [0, 9, MAX_NODES - 1] {
                for name in [host_if(slot, i), node_if(slot, i)] {
                    assert!(name.len() <= 15, "{name}");
                }
                assert_eq!(slot_of(&host_if(slot, i)), Some(slot));
                assert_eq!(slot_of(&netns_name(slot, i)), Some(slot));
            }
        }
        for other in ["bcn", "bcnode-", "bcnode-3", "bcn300h1", "eth0", "bcnx"] {
            assert_eq!(slot_of(other), None, "{other}");
        }
        assert_eq!(
            addresses(3, 63),
            (
                Ipv4Addr::new(10, 213, 3, 253),
                Ipv4Addr::new(10, 213, 3, 254)
            )
        );
    }

    /// What a crashed run left in a slot (a namespace and a veth pair of
    /// the same names, with the same address) does not stop a new set in
    /// that slot.
    #[test]
    fn a_slot_s_leftovers_make_way() {
        std::fs::create_dir_all(LOCK_DIR).unwrap();
        let lock = (0..SLOTS).rev().find_map(SlotLock::try_take).unwrap();
        let s = lock.slot;
        let (host, node) = (host_if(s, 0), netns_name(s, 0));
        ip(&["netns", "add", &node]);
        ip(&["netns", "add", &netns_name(s, 5)]);
        ip(&[
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            &node_if(s, 0),
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", addresses(s, 0).0),
            "dev",
            &host,
        ]);
        let nodes = Nodes::in_slot(lock, 1);
        assert_eq!(nodes.slot(), s);
        assert!(!std::path::Path::new(&format!("/run/netns/{}", netns_name(s, 5))).exists());
        assert!(std::path::Path::new(&format!("/run/netns/{node}")).exists());
        drop(nodes);
        assert_eq!(leftovers(s), (vec![], vec![]));
    }
}
