//! The blob changes at the origin: a file of the directory origin rewritten
//! in place with its size and modification time kept, as `cp -p`,
//! `rsync -t`, `touch -d` or a coarse-timestamp filesystem leave it (same
//! inode, same size, same mtime; only the inode change time moves). Read
//! through the loaded library (`blob_read`) after `shutdown`, in a fresh
//! process, between two reads of one session, and while a block is being
//! filled: never the old cached bytes once a new session starts, never a
//! mix of old and new, and a change during a load fails the read as changed
//! at the origin.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use blobcache_testing::bytes;
use blobcache_testing::fixture::{Fixture, Rewrite, ACCOUNT, CONTAINER};
use blobcache_testing::isolate::in_own_process;

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

const BLOCK: usize = 64 << 10;
const SIZE: usize = 4 * BLOCK;

/// Version `k` of blob `m`: its bytes are `bytes(700 + k, SIZE)`.
fn version(k: u64) -> Blob {
    Blob::new(ACCOUNT, CONTAINER, "m", 700 + k, SIZE)
}

/// Counts one whole-blob read through the library: correct when it
/// returned `want`; anything else (the `stale` old version, a mix, a
/// failure) is "other".
fn judge(
    o: &mut Outcome,
    what: &str,
    r: Result<(), String>,
    got: &[u8],
    want: &[u8],
    stale: &[u8],
) {
    o.tried += 1;
    match r {
        Ok(()) if got == want => o.correct += 1,
        Ok(()) if got == stale => o.other(format!("{what}: STALE BYTES (the old version)")),
        Ok(()) => o.other(format!("{what}: WRONG BYTES (old and new mixed)")),
        Err(m) => o.other(format!("{what}: {m}")),
    }
}

#[test]
fn files_rewritten_in_place_with_their_times_kept_are_never_served_stale_or_mixed() {
    let name =
        "origin::files_rewritten_in_place_with_their_times_kept_are_never_served_stale_or_mixed";
    let fx = Fixture::new("rewrite");
    fx.put("m", &version(0).data());
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_READAHEAD".into(), "0".into()));
    in_own_process(name, &env, || {
        // Between two reads of one session: block 0 read (and cached) at
        // the old version, the file rewritten, then block 1: the read fails
        // as changed at the origin; the next load reads the new version.
        let mut session = Outcome::default();
        let (v0, v1) = (version(0).data(), version(1).data());
        let mut buf = vec![0u8; BLOCK];
        worker::read(&version(0), 0, &mut buf).unwrap();
        assert!(buf == v0[..BLOCK], "the first read");
        fx.rewrite_in_place("m", &v1, Rewrite::CpP);
        session.tried += 1;
        match worker::read(&version(1), BLOCK, &mut buf) {
            Err(m) if m.contains("changed at the origin") && m.contains(": blobcache: ") => {
                session.clean_error += 1
            }
            Ok(()) if buf == v1[BLOCK..2 * BLOCK] => {
                session.other("block 1 of the new version after block 0 of the old, no error")
            }
            Ok(()) => session.other("block 1: wrong bytes"),
            Err(m) => session.other(format!("block 1: unclear failure {m}")),
        }
        let mut all = vec![0u8; SIZE];
        let r = worker::read(&version(1), 0, &mut all);
        judge(&mut session, "the next load", r, &all, &v1, &v0);
        session.note("blob of 4 blocks of 64 KiB; block 0 read, file rewritten with cp -p, block 1 read, then the whole blob");
        report::record(
            "origin",
            "file rewritten in place between two reads of one session (cp -p: same inode, size and mtime)",
            &session,
            name,
        );

        // After shutdown (the streamer's next session) and in a fresh
        // process: the new bytes, not the cached old ones.
        let mut later = Outcome::default();
        let mut k = 1;
        for how in [Rewrite::TouchD, Rewrite::CpP] {
            worker::shutdown();
            let (old, new) = (version(k).data(), version(k + 1).data());
            fx.rewrite_in_place("m", &new, how);
            let r = worker::read(&version(k + 1), 0, &mut all);
            judge(
                &mut later,
                &format!("after shutdown ({how:?})"),
                r,
                &all,
                &new,
                &old,
            );
            k += 1;
        }
        worker::shutdown();
        for how in [Rewrite::TouchD, Rewrite::CpP] {
            fx.rewrite_in_place("m", &version(k + 1).data(), how);
            // A fresh process on the same cache directory.
            let (out, r) = worker::run(
                worker::command("reads", &[version(k + 1)], &env),
                Duration::from_secs(60),
            );
            assert!(r.reported, "{}", String::from_utf8_lossy(&out.stderr));
            let got = r.outcome();
            later.tried += got.tried;
            later.correct += got.correct;
            if got.correct != got.tried {
                later.other(format!(
                    "fresh process after {how:?}: {:?} {:?}",
                    got.notes, r.errors
                ));
            }
            k += 1;
        }
        later.note("each: the whole blob cached, the file rewritten in place (touch -d, then cp -p), the whole blob read again: after shutdown in the same process, and in a fresh process");
        report::record(
            "origin",
            "file rewritten in place, read after shutdown and in a fresh process (touch -d, cp -p: same inode, size and mtime)",
            &later,
            name,
        );
        report::assert_clean("rewritten between two reads of one session", &session);
        assert_eq!(session.clean_error, 1, "{:?}", session.notes);
        report::assert_clean("rewritten between sessions", &later);
        worker::shutdown();
    });
}

/// Bytes read by this process so far (`rchar` of /proc/self/io).
fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The file is rewritten in place while the library fills a block of it
/// (one 64 MiB block, read from the origin in 1 MiB pieces): when the
/// process has read a few MiB of it, its first and last MiB are rewritten
/// and the modification time put back, so a fill that does not notice
/// returns the old first MiB with the new last one. The fill must fail as changed at the origin
/// (or, if it won the race, return the old bytes whole), and the next load
/// must read the new bytes.
#[test]
fn a_file_rewritten_in_place_while_a_block_is_filled_fails_the_read_as_changed() {
    let name =
        "origin::a_file_rewritten_in_place_while_a_block_is_filled_fails_the_read_as_changed";
    const BIG: usize = 64 << 20;
    const TAIL: usize = 1 << 20;
    let fx = Fixture::new("rewrite-fill");
    let mut env = fx.env("64M");
    env.push(("BLOBCACHE_READAHEAD".into(), "0".into()));
    in_own_process(name, &env, || {
        let trials = 6u64;
        let mut o = Outcome::default();
        let (mut overlapped, mut won, mut next_ok) = (0, 0, 0);
        for t in 0..trials {
            worker::shutdown();
            let old = bytes(800 + t, BIG);
            fx.put("big", &old);
            let mut new = old.clone();
            new[..TAIL].copy_from_slice(&bytes(900 + t, TAIL));
            new[BIG - TAIL..].copy_from_slice(&bytes(950 + t, TAIL));
            let path = fx.blob_path("big");
            let writer = {
                let (path, head, tail) = (
                    path.clone(),
                    new[..TAIL].to_vec(),
                    new[BIG - TAIL..].to_vec(),
                );
                std::thread::spawn(move || {
                    let start = rchar();
                    let t0 = Instant::now();
                    while rchar() < start + (4 << 20) {
                        if t0.elapsed() > Duration::from_secs(20) {
                            panic!("the fill never started reading");
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    let meta = std::fs::metadata(&path).unwrap();
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(&head, 0).unwrap();
                    f.write_all_at(&tail, (BIG - TAIL) as u64).unwrap();
                    // Put the modification time back, to the nanosecond.
                    let times = [
                        libc::timespec {
                            tv_sec: meta.atime(),
                            tv_nsec: meta.atime_nsec(),
                        },
                        libc::timespec {
                            tv_sec: meta.mtime(),
                            tv_nsec: meta.mtime_nsec(),
                        },
                    ];
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid descriptor and two timespecs.
                    let rc = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
                    assert_eq!(rc, 0);
                    let after = std::fs::metadata(&path).unwrap();
                    assert_eq!(
                        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
                        (meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec())
                    );
                })
            };
            let blob = Blob::new(ACCOUNT, CONTAINER, "big", 0, BIG);
            let mut buf = vec![0u8; BIG];
            let r = worker::read(&blob, 0, &mut buf);
            writer.join().unwrap();
            o.tried += 1;
            match r {
                Err(m) if m.contains("changed at the origin") && m.contains(": blobcache: ") => {
                    o.clean_error += 1;
                    overlapped += 1;
                }
                Ok(()) if buf == old => {
                    o.correct += 1;
                    won += 1;
                }
                Ok(()) if buf == new => o.other(format!(
                    "trial {t}: the new bytes under the old version (the change was not seen)"
                )),
                Ok(()) => o.other(format!("trial {t}: WRONG BYTES (old and new mixed)")),
                Err(m) => o.other(format!("trial {t}: unclear failure {m}")),
            }
            // The next load: the new bytes, whole.
            let r = worker::read(&blob, 0, &mut buf);
            let before = o.correct;
            judge(
                &mut o,
                &format!("trial {t}, next load"),
                r,
                &buf,
                &new,
                &old,
            );
            next_ok += o.correct - before;
        }
        worker::shutdown();
        o.note(format!(
            "{trials} trials: one 64 MiB block filled while its first and last MiB are rewritten in place and the mtime put back; {overlapped} fills failed as changed, {won} finished before the rewrite (old bytes, whole); {next_ok} next loads read the new bytes whole"
        ));
        report::record(
            "origin",
            "file rewritten in place while a block of it is filled (same inode, size and mtime)",
            &o,
            name,
        );
        report::assert_clean("rewritten during a fill", &o);
        assert!(
            overlapped > 0,
            "no trial overlapped the fill: {:?}",
            o.notes
        );
    });
}
