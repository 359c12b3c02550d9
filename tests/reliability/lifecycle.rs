//! Lifecycle: 200 `shutdown`s while reader threads keep reading, a `fork()`
//! in the middle whose child reads at once, and afterwards the thread and
//! descriptor counts back at their baseline. A watchdog turns a deadlock
//! into a failure instead of a hung run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_testing::azurite::{Azurite, ACCOUNT as AZ_ACCOUNT, KEY};
use blobcache_testing::fixture::{Fixture, ACCOUNT, CONTAINER};
use blobcache_testing::isolate::in_own_process;

use crate::crashes::Rng;
use crate::report::{self, Outcome};
use crate::worker::{self, fd_count, shutdown, thread_count, thread_names, Blob};

/// Aborts the process if `done` is not set within `limit`.
fn watchdog(done: Arc<AtomicBool>, limit: Duration, what: &'static str) {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{what}: DEADLOCK: not done within {limit:?}");
        std::process::abort();
    });
}

/// Readers hammering `blobs` until `stop`; a failure must say "shut down".
fn readers(
    blobs: &[Blob],
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Outcome>> {
    (0..n)
        .map(|t| {
            let (blobs, stop) = (blobs.to_vec(), stop.clone());
            std::thread::spawn(move || {
                let truths: Vec<Vec<u8>> = blobs.iter().map(Blob::data).collect();
                let mut o = Outcome::default();
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ ((t as u64 + 1) * 0x9E37);
                let mut buf = vec![0u8; 300_000];
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = x as usize % blobs.len();
                    let len = 1 + (x >> 20) as usize % 300_000;
                    let off = (x >> 40) as usize % (blobs[i].size - len);
                    o.tried += 1;
                    match worker::read(&blobs[i], off, &mut buf[..len]) {
                        Ok(()) if buf[..len] == truths[i][off..off + len] => o.correct += 1,
                        Ok(()) => o.other(format!("WRONG BYTES {off}+{len}")),
                        Err(m) if m.contains("shut down") => o.clean_error += 1,
                        Err(m) => o.other(m),
                    }
                }
                o
            })
        })
        .collect()
}

/// In a forked child: reads every blob's first 200 000 bytes, shuts down,
/// and checks it is down to its one thread. Exit status 0 when all is well.
fn child(blobs: &[Blob]) -> i32 {
    for b in blobs {
        let mut buf = vec![0u8; 200_000];
        if worker::read(b, 1000, &mut buf).is_err() || buf != b.data()[1000..201_000] {
            return 2;
        }
    }
    shutdown();
    if thread_count() != 1 {
        return 3;
    }
    0
}

fn cycles(blobs: &[Blob], n: usize, fork_at: usize, test: &str, fault: &str) {
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), Duration::from_secs(240), "lifecycle");
    worker::lib();
    let (threads0, fds0) = (thread_count(), fd_count());
    let stop = Arc::new(AtomicBool::new(false));
    let hs = readers(blobs, 8, &stop);
    let mut rng = Rng::from_env("lifecycle");
    let mut o = Outcome::default();
    let mut fork_note = String::new();
    for cycle in 0..n {
        std::thread::sleep(Duration::from_micros(500 + rng.below(4000)));
        if cycle == fork_at {
            // SAFETY: the child calls blob_read and shutdown (the subject of
            // the test), reads /proc, and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = child(blobs);
                // SAFETY: ends this forked child at once, as a child of a threaded process must.
                unsafe { libc::_exit(code) };
            }
            let t0 = Instant::now();
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    // SAFETY: system calls on our own child, with a valid status pointer.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    // SAFETY: system calls on our own child, with a valid status pointer.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    o.other("the forked child hung (killed after 60 s)");
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if !ok {
                o.other(format!("forked child ended with status {status:#x}"));
            }
            fork_note = format!(
                "forked child at cycle {fork_at}: read, shut down to 1 thread in {:?}: {}",
                t0.elapsed(),
                if ok { "ok" } else { "FAILED" }
            );
        }
        shutdown();
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = Outcome::default();
    for h in hs {
        reads.add(&h.join().unwrap());
    }
    shutdown();
    let (threads1, fds1) = (thread_count(), fd_count());
    done.store(true, Ordering::Relaxed);
    if threads1 != threads0 {
        o.other(format!(
            "{threads1} threads after the last shutdown, {threads0} before: {:?}",
            thread_names()
        ));
    }
    if fds1 != fds0 {
        o.other(format!(
            "{fds1} descriptors after the last shutdown, {fds0} before"
        ));
    }
    if reads.correct == 0 {
        o.other("no read succeeded");
    }
    o.tried = n as u64;
    o.correct = if o.other == 0 { n as u64 } else { 0 };
    let reads_other = reads.other;
    o.notes.extend(reads.notes.iter().cloned());
    o.other += reads_other;
    o.note(format!(
        "{} reads by 8 threads across the cycles: {} correct, {} failed saying shut down, {} other; {fork_note}; threads {threads0}->{threads1}, descriptors {fds0}->{fds1}",
        reads.tried, reads.correct, reads.clean_error, reads_other
    ));
    report::record("lifecycle", fault, &o, test);
    report::assert_clean(fault, &o);
}

#[test]
fn two_hundred_shutdowns_with_readers_running_and_a_fork_in_the_middle() {
    let fx = Fixture::new("lifecycle");
    let blobs: Vec<Blob> = (0..2)
        .map(|i| {
            Blob::new(
                ACCOUNT,
                CONTAINER,
                &format!("m{i}"),
                40 + i,
                (3 << 20) + 17 * i as usize,
            )
        })
        .collect();
    for b in &blobs {
        fx.put(&b.name, &b.data());
    }
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_LOG".into(), "error".into()));
    let name = "lifecycle::two_hundred_shutdowns_with_readers_running_and_a_fork_in_the_middle";
    in_own_process(name, &env, || {
        cycles(&blobs, 200, 100, name, "200 shutdown/re-init cycles with 8 readers running, fork at cycle 100 (directory origin)");
    });
}

#[test]
fn shutdown_cycles_with_the_azure_origin_leave_no_thread_or_descriptor_behind() {
    let name =
        "lifecycle::shutdown_cycles_with_the_azure_origin_leave_no_thread_or_descriptor_behind";
    in_own_process(name, &[], || {
        let az = Azurite::start();
        az.create_container("life");
        let blobs: Vec<Blob> = (0..2)
            .map(|i| {
                Blob::new(
                    AZ_ACCOUNT,
                    "life",
                    &format!("m{i}"),
                    60 + i,
                    (2 << 20) + 5 * i as usize,
                )
            })
            .collect();
        for b in &blobs {
            az.put("life", &b.name, &b.data());
        }
        let dir = blobcache_testing::tempdir("lifecycle-az");
        for (k, v) in [
            ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
            ("BLOBCACHE_DIR", dir.path().display().to_string()),
            ("BLOBCACHE_BLOCK_SIZE", "256K".to_string()),
            ("BLOBCACHE_LOG", "error".to_string()),
        ] {
            std::env::set_var(k, v);
        }
        cycles(&blobs, 100, 50, name, "100 shutdown/re-init cycles with 8 readers running, fork at cycle 50 (Azure origin, Azurite)");
    });
}
