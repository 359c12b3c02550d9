//! The hanging filesystem (crates/testing/src/hungfs.rs): a plain mirror of
//! its backing directory until hung; then every call into it blocks until
//! released; and dropping it frees the callers still blocked (with an
//! error), so a test that fails while the mount hangs never hangs itself.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use blobcache_testing::hungfs::HungFs;
use blobcache_testing::mounts::mount_type;
use blobcache_testing::{bytes, tempdir, TempDir};

/// What no step of these tests comes near when things work.
const GENEROUS: Duration = Duration::from_secs(10);

/// A backing directory, a mount point and the mount (dropped first).
struct Mounted {
    fs: HungFs,
    backing: TempDir,
    _mnt: TempDir,
}

fn mounted() -> Mounted {
    let backing = tempdir("hungfs-backing");
    let mnt = tempdir("hungfs-mnt");
    let fs = HungFs::mount(backing.path(), mnt.path());
    Mounted {
        fs,
        backing,
        _mnt: mnt,
    }
}

/// Waits (bounded) until `n` operations are blocked at the gate.
fn until_waiting(fs: &HungFs, n: usize) {
    let t0 = Instant::now();
    while fs.waiting() < n {
        assert!(
            t0.elapsed() < GENEROUS,
            "no operation reached the closed gate; log:\n{}",
            fs.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn bytes_written_through_the_mount_land_in_the_backing_directory() {
    let m = mounted();
    let data = bytes(7, 3 << 20);
    let dir = m.fs.path().join("sub");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f.tmp"), &data).unwrap();
    std::fs::rename(dir.join("f.tmp"), dir.join("f")).unwrap();
    assert_eq!(std::fs::read(m.backing.path().join("sub/f")).unwrap(), data);
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), data);
    assert_eq!(
        std::fs::metadata(dir.join("f")).unwrap().len(),
        data.len() as u64
    );
    std::fs::hard_link(dir.join("f"), dir.join("g")).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::remove_file(dir.join("f")).unwrap();
    std::fs::remove_file(dir.join("g")).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    assert!(!m.backing.path().join("sub").exists());
}

#[test]
fn a_stat_blocks_while_hung_and_returns_once_released() {
    let m = mounted();
    std::fs::write(m.fs.path().join("f"), b"x").unwrap();
    m.fs.hang();
    let (tx, rx) = mpsc::channel();
    let p = m.fs.path().join("f");
    let t = std::thread::spawn(move || tx.send(std::fs::metadata(p).map(|md| md.len())).unwrap());
    until_waiting(&m.fs, 1);
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "a stat in a hung mount returned"
    );
    let t0 = Instant::now();
    m.fs.release();
    let len = rx
        .recv_timeout(GENEROUS)
        .expect("the stat did not return after release");
    assert_eq!(len.unwrap(), 1);
    eprintln!("the stat returned {:?} after release", t0.elapsed());
    t.join().unwrap();
    assert_eq!(m.fs.waiting(), 0);
    // And the mount works as before.
    assert_eq!(std::fs::read(m.fs.path().join("f")).unwrap(), b"x");
}

#[test]
fn dropping_a_hung_mount_frees_its_blocked_callers_with_an_error() {
    let m = mounted();
    std::fs::write(m.fs.path().join("f"), b"x").unwrap();
    let mountpoint = m.fs.path().to_path_buf();
    m.fs.hang();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for op in 0..3 {
        let (tx, p) = (tx.clone(), mountpoint.join("f"));
        threads.push(std::thread::spawn(move || {
            let r = match op {
                0 => std::fs::metadata(&p).map(drop),
                1 => std::fs::read(&p).map(drop),
                _ => std::fs::write(p.with_file_name("new"), b"y"),
            };
            tx.send(r).unwrap();
        }));
    }
    until_waiting(&m.fs, 3);
    let t0 = Instant::now();
    drop(m);
    for _ in 0..3 {
        let r = rx
            .recv_timeout(GENEROUS)
            .expect("a caller blocked in the hung mount did not come back after drop");
        let e = r.expect_err("a blocked call succeeded although the daemon was killed");
        eprintln!("blocked call came back after {:?}: {e}", t0.elapsed());
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(mount_type(&mountpoint), None, "still mounted after drop");
}

/// Set by [`a_test_process_killed_while_hung_leaves_no_mount`] for
/// [`killed_while_hung`]: the mount point to use.
const CHILD_MOUNTPOINT: &str = "BC_HUNGFS_KILLED_MOUNTPOINT";

/// Not a test of its own: the body that
/// [`a_test_process_killed_while_hung_leaves_no_mount`] runs in a child
/// process. Mounts, hangs, blocks a thread in the mount and kills its own
/// process (SIGKILL: no drop runs).
#[test]
#[ignore = "run by a_test_process_killed_while_hung_leaves_no_mount"]
fn killed_while_hung() {
    let Some(mnt) = std::env::var_os(CHILD_MOUNTPOINT) else {
        return;
    };
    let backing = tempdir("hungfs-killed");
    let fs = HungFs::mount(backing.path(), std::path::Path::new(&mnt));
    std::fs::write(fs.path().join("f"), b"x").unwrap();
    fs.hang();
    let p = fs.path().join("f");
    std::thread::spawn(move || std::fs::metadata(p));
    until_waiting(&fs, 1);
    // SAFETY: a plain system call; this process is meant to die here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[test]
fn a_test_process_killed_while_hung_leaves_no_mount() {
    use std::os::unix::process::ExitStatusExt;
    // The child's temporary directories (it cannot remove them) go in
    // this one; so does the mount point.
    let tmp = tempdir("hungfs-killed");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["killed_while_hung", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_MOUNTPOINT, &mnt)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A process killed with a thread waiting in a hung mount cannot finish
    // dying until the daemon answers; the daemon notices and lets it.
    let status = blobcache_testing::mounts::wait_or_kill(&mut child, GENEROUS)
        .expect("the killed test process did not finish dying");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let gone = blobcache_testing::mounts::poll(GENEROUS, || mount_type(&mnt).is_none());
    if !gone {
        // Not into a live mount when `tmp` is removed.
        blobcache_testing::mounts::unmount(&mnt);
        panic!("the mount outlived the killed test process");
    }
}
