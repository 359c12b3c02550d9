//! The far link (crates/testing/src/farlink.rs): bytes pass untouched, and
//! the delays and the window of its model hold. Timings are asserted only as
//! the lower bounds the model enforces, and as upper bounds so generous
//! that a loaded machine cannot miss them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use blobcache_testing::farlink::FarLink;
use blobcache_testing::{bytes, sha256};

const RTT: Duration = Duration::from_millis(50);
const MIB: usize = 1 << 20;
/// What no step of these tests comes near, however loaded the machine.
const GENEROUS: Duration = Duration::from_secs(30);

/// A loopback server running `handle` on each connection; its port.
fn serve(handle: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || handle(s));
        }
    });
    port
}

/// Sends back what it reads; closes after the client's EOF.
fn echo(s: TcpStream) {
    let _ = std::io::copy(&mut &s, &mut &s);
    let _ = s.shutdown(Shutdown::Write);
}

/// Answers every byte it reads with 8 MiB.
fn eight_mib_per_byte(mut s: TcpStream) {
    let answer = vec![7u8; 8 * MIB];
    let mut b = [0u8; 1];
    while matches!(s.read(&mut b), Ok(1)) {
        if s.write_all(&answer).is_err() {
            return;
        }
    }
}

/// Resets the connection (RST, not FIN) once it has read a byte.
fn reset_after_a_byte(mut s: TcpStream) {
    let _ = s.read(&mut [0u8; 1]);
    blobcache_testing::proxy::reset_on_close(&s);
}

fn connect(link: &FarLink) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", link.port())).unwrap();
    c.set_read_timeout(Some(GENEROUS)).unwrap();
    c
}

fn ping(c: &mut TcpStream) {
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

/// Reads `len` bytes; returns when the first `mark` of them had come.
fn read_counting(c: &mut TcpStream, len: usize, mark: usize) -> Instant {
    let mut buf = vec![0u8; 256 << 10];
    let (mut got, mut at_mark) = (0, None);
    while got < len {
        let n = c.read(&mut buf[..(len - got).min(256 << 10)]).unwrap();
        assert!(n > 0, "the answer ended after {got} of {len} bytes");
        got += n;
        if got >= mark && at_mark.is_none() {
            at_mark = Some(Instant::now());
        }
    }
    at_mark.unwrap()
}

#[test]
fn sixty_four_mib_echo_through_the_link_unchanged_both_ways() {
    let link = FarLink::start(serve(echo), Duration::from_millis(2));
    let mut c = connect(&link);
    let data = bytes(14, 64 * MIB);
    let want = sha256(&data);
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        // The EOF crosses too: the echo server closes, and so the link.
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), 64 * MIB);
    assert_eq!(sha256(&back), want);
    assert_eq!(link.bytes_to_upstream(), 64 * MIB as u64);
    assert_eq!(link.bytes_to_client(), 64 * MIB as u64);
    assert_eq!(link.connections(), 1);
}

#[test]
fn a_fresh_connection_answers_after_two_round_trips_and_a_reused_one_after_one() {
    let link = FarLink::start(serve(echo), RTT);
    let t0 = Instant::now();
    let mut c = connect(&link);
    ping(&mut c);
    let fresh = t0.elapsed();
    let t1 = Instant::now();
    ping(&mut c);
    let reused = t1.elapsed();
    assert!(fresh >= 2 * RTT, "fresh connection: {fresh:?}");
    assert!(reused >= RTT, "reused connection: {reused:?}");
    assert!(fresh < GENEROUS && reused < GENEROUS);
    assert_eq!(link.connections(), 1);
}

#[test]
fn one_connection_moves_at_most_a_window_per_round_trip_after_a_slow_start() {
    let link = FarLink::with_max_window(serve(eight_mib_per_byte), RTT, MIB);
    let t0 = Instant::now();
    let mut c = connect(&link);
    c.write_all(b"?").unwrap();
    let first_mib = read_counting(&mut c, 8 * MIB, MIB) - t0;
    let whole = t0.elapsed();
    // The handshake (1 rtt) and the request (1/2) come first; from 10
    // segments, doubling per round trip, 14600 × (2^k − 1) ≥ 1 MiB needs
    // k = 7 rounds, the last sent 6 rtt after the first; then 1/2 back.
    assert!(
        first_mib >= 8 * RTT,
        "the first MiB came after {first_mib:?}"
    );
    assert!(whole >= 8 * RTT, "8 MiB came after {whole:?}");
    assert!(whole < GENEROUS);
    // Again on the same connection, its window now at the maximum: still
    // no more than 1 MiB per round trip.
    let t1 = Instant::now();
    c.write_all(b"?").unwrap();
    read_counting(&mut c, 8 * MIB, 8 * MIB);
    let again = t1.elapsed();
    assert!(
        again >= 8 * RTT,
        "8 MiB came after {again:?} on a warm connection"
    );
    assert!(again < GENEROUS);
}

#[test]
fn dropping_the_link_with_an_idle_connection_open_returns_promptly() {
    let link = FarLink::start(serve(echo), RTT);
    let mut c = connect(&link);
    ping(&mut c);
    let t = Instant::now();
    drop(link);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The client sees its connection closed.
    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn dropping_the_link_while_a_client_is_not_reading_returns_promptly() {
    let link = FarLink::start(serve(eight_mib_per_byte), RTT);
    let mut c = connect(&link);
    c.write_all(b"?").unwrap();
    // The answer fills the client's socket and the link's queue.
    std::thread::sleep(10 * RTT);
    let t = Instant::now();
    drop(link);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn a_reset_from_upstream_closes_the_client_side() {
    let link = FarLink::start(serve(reset_after_a_byte), RTT);
    let mut c = connect(&link);
    c.write_all(b"x").unwrap();
    let t = Instant::now();
    match c.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes from a server that sent none"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the client's side stayed open"
        ),
    }
    assert!(t.elapsed() < GENEROUS);
}
