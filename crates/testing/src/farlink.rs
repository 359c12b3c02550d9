//! A far link: a loopback TCP proxy that makes every connection through it
//! behave as if it crossed a long, fat network link. The kernel the
//! benchmarks run on has no netem qdisc, so the delay and the window are
//! made here, in user space. It forwards bytes untouched (TLS included), so
//! it stands in front of an HTTP or an HTTPS Azurite alike.
//!
//! The model, per connection, with d = rtt / 2 the one-way delay:
//!
//! - **Setup costs one round trip.** Nothing crosses the link before the
//!   accept time + rtt (the TCP handshake). A byte read from one side at
//!   time t is *sent* at max(t, accept + rtt) and written to the other side
//!   no earlier than sent + d. So the first answer on a fresh connection
//!   comes after about 2 rtt, on a reused one after about 1 rtt.
//! - **The answer direction (upstream → client) has a congestion window**,
//!   as TCP's slow start: a byte is in flight from when it is sent until
//!   sent + rtt (when its ack would come back), and the proxy reads from
//!   upstream only while fewer than cwnd bytes are in flight, and never
//!   more than would take them past cwnd. cwnd starts at 10 segments
//!   (10 × 1460 bytes) and grows by every byte acknowledged (it doubles per
//!   round trip) up to the maximum window ([`DEFAULT_MAX_WINDOW`] unless
//!   set), so one connection moves at most max_window / rtt, and a fresh one
//!   needs several round trips to get there. Kept simple on purpose: no
//!   loss, no congestion-avoidance phase, no reset of the window when the
//!   connection is idle (it only grows).
//! - **The request direction (client → upstream) is delayed only.**
//! - In both directions at most max_window bytes wait to be written (a
//!   receive window): a side that does not read holds the sender up instead
//!   of filling memory. A side that reads promptly never meets this limit.
//! - **Closing.** An EOF crosses like data: once the bytes read before it
//!   are written, the other side's write half is shut down. An error or a
//!   reset on either side closes both sockets at once.
//!
//! Each connection has four threads, a reader and a writer per direction,
//! with a queue of timed chunks between them (so that the reader's clock is
//! the time bytes arrive, whatever the writer is waiting for). Every wait
//! is on the queue's condition variable and every blocking call is on a
//! socket, so shutting the sockets down stops them all: dropping the
//! [`FarLink`] does that, and joins every thread.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The maximum window unless [`FarLink::with_max_window`] sets another.
pub const DEFAULT_MAX_WINDOW: usize = 4 << 20;
/// TCP's initial window: 10 segments of 1460 bytes.
const INITIAL_WINDOW: usize = 10 * 1460;
/// The most one read takes from a socket.
const CHUNK: usize = 256 << 10;

/// A far link on 127.0.0.1 in front of `127.0.0.1:<upstream>`.
pub struct FarLink {
    port: u16,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: u16,
    rtt: Duration,
    max_window: usize,
    stop: AtomicBool,
    /// Connections whose threads may still run.
    live: Mutex<Vec<Conn>>,
    connections: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

/// A connection's threads, and its sockets while they run.
struct Conn {
    link: Weak<Link>,
    threads: Vec<JoinHandle<()>>,
}

impl FarLink {
    /// Starts a far link with round-trip time `rtt` and the default maximum
    /// window.
    pub fn start(upstream: u16, rtt: Duration) -> FarLink {
        FarLink::with_max_window(upstream, rtt, DEFAULT_MAX_WINDOW)
    }

    /// Starts a far link whose answer direction's window grows to at most
    /// `max_window` bytes.
    pub fn with_max_window(upstream: u16, rtt: Duration, max_window: usize) -> FarLink {
        assert!(max_window > 0, "a far link needs a window");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            rtt,
            max_window,
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let listener = std::thread::Builder::new()
            .name("farlink-accept".into())
            .spawn(move || accept(&listener, &sh))
            .unwrap();
        FarLink {
            port,
            shared,
            listener: Some(listener),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn rtt(&self) -> Duration {
        self.shared.rtt
    }

    pub fn max_window(&self) -> usize {
        self.shared.max_window
    }

    /// A `BLOBCACHE_AZURE_ENDPOINT` template through this link (for an
    /// upstream that speaks plain HTTP).
    pub fn template(&self) -> String {
        format!("http://127.0.0.1:{}/{{account}}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Bytes written to upstream so far.
    pub fn bytes_to_upstream(&self) -> u64 {
        self.shared.to_upstream.load(Ordering::Relaxed)
    }

    /// Bytes written to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::Relaxed)
    }
}

impl Drop for FarLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        let live = std::mem::take(&mut *lock(&self.shared.live));
        for c in &live {
            if let Some(link) = c.link.upgrade() {
                link.close();
            }
        }
        for t in live.into_iter().flat_map(|c| c.threads) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept(listener: &TcpListener, sh: &Arc<Shared>) {
    for client in listener.incoming() {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let opened = Instant::now();
        sh.connections.fetch_add(1, Ordering::Relaxed);
        // Dropping the client closes it when upstream is not there.
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", sh.upstream)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let limit = sh.max_window;
        let link = Arc::new(Link {
            client,
            upstream,
            opened,
            rtt: sh.rtt,
            up: Pipe::new(limit),
            down: Pipe::new(limit),
        });
        let threads = [Dir::Up, Dir::Down]
            .into_iter()
            .flat_map(|dir| {
                let (l1, l2, s1, s2) = (link.clone(), link.clone(), sh.clone(), sh.clone());
                let name = |what: &str| format!("farlink-{dir:?}-{what}").to_lowercase();
                [
                    std::thread::Builder::new()
                        .name(name("read"))
                        .spawn(move || read_side(&l1, dir, s1.max_window))
                        .unwrap(),
                    std::thread::Builder::new()
                        .name(name("write"))
                        .spawn(move || write_side(&l2, dir, &s2))
                        .unwrap(),
                ]
            })
            .collect();
        let mut live = lock(&sh.live);
        live.retain(|c| !c.threads.iter().all(JoinHandle::is_finished));
        live.push(Conn {
            link: Arc::downgrade(&link),
            threads,
        });
    }
}

/// A direction across the link: `Up` client → upstream, `Down` upstream →
/// client.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    Up,
    Down,
}

/// One connection: its two sockets and a queue per direction.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    opened: Instant,
    rtt: Duration,
    up: Pipe,
    down: Pipe,
}

impl Link {
    /// (the socket read, the queue, the socket written) of a direction.
    fn ends(&self, dir: Dir) -> (&TcpStream, &Pipe, &TcpStream) {
        match dir {
            Dir::Up => (&self.client, &self.up, &self.upstream),
            Dir::Down => (&self.upstream, &self.down, &self.client),
        }
    }

    /// Closes both sockets and both queues: every thread of the connection
    /// returns from what it waits for.
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
        self.up.close();
        self.down.close();
    }
}

/// Reads one side and queues what it reads, each chunk due one-way delay
/// after it is sent; on the way down only as the window allows.
fn read_side(link: &Link, dir: Dir, max_window: usize) {
    let (from, pipe, _) = link.ends(dir);
    let mut window = (dir == Dir::Down).then(|| Window::new(max_window, link.rtt));
    let handshake_done = link.opened + link.rtt;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut room = CHUNK;
        if let Some(w) = &mut window {
            loop {
                let open = w.open(Instant::now());
                if open > 0 {
                    room = room.min(open);
                    break;
                }
                // Nothing may be sent: bytes are in flight, so acks will come.
                let ack = w.next_ack().expect("bytes in flight");
                if !pipe.sleep_until(ack) {
                    return;
                }
            }
        }
        let n = match (&*from).read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return link.close(),
        };
        let sent = Instant::now().max(handshake_done);
        if n == 0 {
            pipe.push(sent + link.rtt / 2, Item::Eof);
            return;
        }
        if let Some(w) = &mut window {
            w.sent(sent, n);
        }
        match pipe.push(sent + link.rtt / 2, Item::Bytes(buf, n)) {
            Some(next) => buf = next,
            None => return,
        }
    }
}

/// Writes each queued chunk to the other side once it is due; shuts that
/// side's write half down at the EOF.
fn write_side(link: &Link, dir: Dir, sh: &Shared) {
    let (_, pipe, to) = link.ends(dir);
    let count = match dir {
        Dir::Up => &sh.to_upstream,
        Dir::Down => &sh.to_client,
    };
    while let Some(item) = pipe.pop_due() {
        match item {
            Item::Eof => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Item::Bytes(buf, n) => {
                if (&*to).write_all(&buf[..n]).is_err() {
                    return link.close();
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
                pipe.written(buf, n);
            }
        }
    }
}

/// The answer direction's congestion window (see the module's doc).
struct Window {
    cwnd: usize,
    max: usize,
    in_flight: usize,
    /// (when the ack comes back, bytes), oldest first.
    acks: VecDeque<(Instant, usize)>,
    rtt: Duration,
}

impl Window {
    fn new(max: usize, rtt: Duration) -> Window {
        Window {
            cwnd: INITIAL_WINDOW.min(max),
            max,
            in_flight: 0,
            acks: VecDeque::new(),
            rtt,
        }
    }

    /// Takes in the acks due by `now`; the bytes that may be sent now.
    fn open(&mut self, now: Instant) -> usize {
        while let Some(&(at, n)) = self.acks.front() {
            if at > now {
                break;
            }
            self.acks.pop_front();
            self.in_flight -= n;
            self.cwnd = (self.cwnd + n).min(self.max);
        }
        self.cwnd.saturating_sub(self.in_flight)
    }

    fn next_ack(&self) -> Option<Instant> {
        self.acks.front().map(|&(at, _)| at)
    }

    fn sent(&mut self, at: Instant, n: usize) {
        self.in_flight += n;
        self.acks.push_back((at + self.rtt, n));
    }
}

enum Item {
    /// A buffer and how many of its first bytes to write.
    Bytes(Vec<u8>, usize),
    Eof,
}

/// The chunks one direction has read and not yet written, each with the
/// time it is due. Due times only grow, so the front is due first.
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
    /// The most bytes queued before the reader waits.
    limit: usize,
}

struct PipeState {
    chunks: VecDeque<(Instant, Item)>,
    /// Bytes read and not yet written.
    queued: usize,
    /// Written buffers, for the reader to read into again.
    spare: Vec<Vec<u8>>,
    closed: bool,
}

impl Pipe {
    fn new(limit: usize) -> Pipe {
        Pipe {
            state: Mutex::new(PipeState {
                chunks: VecDeque::new(),
                queued: 0,
                spare: Vec::new(),
                closed: false,
            }),
            changed: Condvar::new(),
            limit,
        }
    }

    /// Queues `item`, due at `due`, once fewer than `limit` bytes are
    /// queued; returns a buffer to read into next (None when closed).
    fn push(&self, due: Instant, item: Item) -> Option<Vec<u8>> {
        let mut s = lock(&self.state);
        while s.queued >= self.limit && !s.closed {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.closed {
            return None;
        }
        if let Item::Bytes(_, n) = item {
            s.queued += n;
        }
        s.chunks.push_back((due, item));
        let spare = s.spare.pop();
        drop(s);
        self.changed.notify_all();
        Some(spare.unwrap_or_else(|| vec![0u8; CHUNK]))
    }

    /// The front chunk once it is due; None when closed.
    fn pop_due(&self) -> Option<Item> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return None;
            }
            let now = Instant::now();
            s = match s.chunks.front() {
                Some(&(due, _)) if due <= now => return s.chunks.pop_front().map(|(_, i)| i),
                Some(&(due, _)) => {
                    self.changed
                        .wait_timeout(s, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// `n` bytes of `buf` are written: they leave the queue, and the buffer
    /// is kept for reading into again.
    fn written(&self, buf: Vec<u8>, n: usize) {
        let mut s = lock(&self.state);
        s.queued -= n;
        s.spare.push(buf);
        drop(s);
        self.changed.notify_all();
    }

    /// Waits until `at` (or any change of the queue); false when closed.
    fn sleep_until(&self, at: Instant) -> bool {
        let s = lock(&self.state);
        let wait = at.saturating_duration_since(Instant::now());
        let s = if s.closed || wait.is_zero() {
            s
        } else {
            self.changed
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
        !s.closed
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }
}
