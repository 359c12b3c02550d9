//! `blobcache metrics --listen ADDR`: a small HTTP endpoint that serves the
//! cache directory's counters and size as Prometheus metrics (`GET
//! /metrics`, what `stats --prometheus` prints), read afresh for every
//! scrape, for a DaemonSet or a sidecar to expose.
//!
//! Plain `std::net`: a thread accepts, and each connection gets a thread of
//! its own, so a slow client never holds up another scrape; at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed at once), and
//! every wait on a client is bounded by [`CLIENT_TIMEOUT`]. One request per
//! connection (`Connection: close`). The main thread waits for SIGTERM or
//! SIGINT (`signals`) and returns, which ends the process with status 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::prometheus::CONTENT_TYPE;
use blobcache_core::Config;

use super::{config, stats, Tier};
use crate::{signals, Failure, Outcome};

/// Connections served at once; more are closed without an answer.
const MAX_CONNECTIONS: usize = 16;
/// Longest wait for a client to send its request, or to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Address and port to listen on (0.0.0.0:9477 for every interface of a pod; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9477", value_parser = parse_addr)]
    listen: SocketAddr,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address and port; use e.g. 127.0.0.1:9477, 0.0.0.0:9477 or [::]:9477"
        )
    })
}

pub fn run(Args { listen }: Args) -> Outcome {
    let config = Arc::new(config()?);
    // Before any thread starts, so every thread inherits it.
    let signals = signals::Termination::block();
    // Fails now, not at the first scrape, when the cache directory cannot
    // be used.
    stats::gather(&config, Tier::Local)?;
    let listener = TcpListener::bind(listen)
        .map_err(|e| Failure::Failed(format!("cannot listen on {listen}: {e}")))?;
    let at = listener
        .local_addr()
        .map_err(|e| Failure::Failed(format!("cannot listen on {listen}: {e}")))?;
    println!(
        "serving the metrics of {} at http://{at}/metrics",
        config
            .dir
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display()
    );
    let _ = std::io::stdout().flush();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, config))
        .map_err(|e| Failure::Failed(format!("cannot start a thread: {e}")))?;
    let signal = signals.wait();
    eprintln!("blobcache: metrics: stopping on {signal}");
    Ok(())
}

fn accept(listener: TcpListener, config: Arc<Config>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or a connection reset before it was
                // taken: wait a little rather than spin.
                eprintln!("blobcache: metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed without an answer
        }
        let (config, slot) = (config.clone(), Slot(busy.clone()));
        // A thread that cannot start drops its slot, and the connection.
        let _ = std::thread::Builder::new()
            .name("scrape".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &config);
            });
    }
}

/// One of the [`MAX_CONNECTIONS`], given back when dropped (also by a
/// thread that panics).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers one request on `stream`.
fn serve(mut stream: TcpStream, config: &Config) {
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (status, content_type, body) = answer(&head, config);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(response.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The request's head (up to the blank line), or `None` when the client
/// sent none within [`CLIENT_TIMEOUT`] or [`MAX_HEAD`] bytes.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let start = Instant::now();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        // The whole head within CLIENT_TIMEOUT, however it trickles in.
        let left = CLIENT_TIMEOUT.checked_sub(start.elapsed())?;
        if head.len() > MAX_HEAD || left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Status line, content type and body for the request whose head is `head`.
fn answer(head: &str, config: &Config) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return (
            "404 Not Found",
            TEXT,
            "not found; the metrics are at /metrics\n".into(),
        );
    }
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "use GET\n".into());
    }
    match stats::gather(config, Tier::Local) {
        Ok(g) => ("200 OK", CONTENT_TYPE, g.prometheus()),
        Err(f) => {
            let why = match f {
                Failure::Failed(m) | Failure::Usage(m) => m,
                Failure::Quiet => "cannot read the cache directory".into(),
            };
            let why = blobcache_core::redact::redact(&why);
            eprintln!("blobcache: metrics: {why}");
            ("500 Internal Server Error", TEXT, format!("{why}\n"))
        }
    }
}
