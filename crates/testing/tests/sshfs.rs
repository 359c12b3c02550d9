//! Two sshfs mounts of one directory (crates/testing/src/sshfs.rs), as two
//! nodes see a cluster filesystem: what one does, the other sees at once;
//! `O_EXCL`, rename over a name and hard links hold across them; locks do
//! not (each mount's are its kernel's own). These are the facts the
//! cluster tier relies on, measured rather than assumed.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use blobcache_testing::sshfs::{Sshd, SshfsMount};
use blobcache_testing::{tempdir, TempDir};

/// Well above what a change takes to show through the other mount (a few
/// milliseconds), well below any cache timeout sshfs or FUSE defaults to
/// (1 s for the kernel's attributes, 20 s for sshfs's directory cache).
const PROMPTLY: Duration = Duration::from_millis(500);

/// A shared directory and two mounts of it (nodes A and B).
struct Two {
    shared: TempDir,
    a: SshfsMount,
    b: SshfsMount,
    // Dropped last: the mounts first, then the server, then the directories.
    _sshd: Sshd,
    _mountpoints: TempDir,
}

fn two() -> Two {
    let sshd = Sshd::start();
    let shared = tempdir("shared");
    let mountpoints = tempdir("mnt");
    let (ma, mb) = (mountpoints.path().join("a"), mountpoints.path().join("b"));
    std::fs::create_dir(&ma).unwrap();
    std::fs::create_dir(&mb).unwrap();
    let a = sshd.mount(shared.path(), &ma);
    let b = sshd.mount(shared.path(), &mb);
    Two {
        shared,
        a,
        b,
        _sshd: sshd,
        _mountpoints: mountpoints,
    }
}

/// Writes `data` to `dir/name` by a temporary file renamed into place.
fn publish(dir: &Path, name: &str, data: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Polls until `cond` holds: how long it took, or None after [`PROMPTLY`].
fn within_promptly(mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > PROMPTLY {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

/// `F_OFD_SETLK` write lock on byte 0, as crates/core/src/sys.rs takes it:
/// whether it was granted.
fn ofd_lock(f: &File) -> bool {
    // SAFETY: an all-zero flock is a valid value of a plain C struct;
    // l_pid must stay 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    // SAFETY: `fl` is valid and lives across the call; `f` is open.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    assert!(
        matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)),
        "F_OFD_SETLK failed otherwise than by conflict: {e}"
    );
    false
}

/// `flock(LOCK_EX|LOCK_NB)`: whether it was granted.
fn flock(f: &File) -> bool {
    // SAFETY: a plain system call on an open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[test]
fn a_file_published_through_one_mount_is_read_through_another_promptly() {
    let t = two();
    let (a, b) = (t.a.path(), t.b.path());
    // B has looked (and found nothing) first, as a node racing the writer.
    assert!(!b.join("blob").exists());
    publish(a, "blob", b"first");
    let seen = within_promptly(|| std::fs::read(b.join("blob")).ok().as_deref() == Some(b"first"))
        .expect("a file renamed into place through A was not readable through B within 500 ms");
    eprintln!("new file visible through the other mount after {seen:?}");

    // Replaced by rename over the existing name, with another size.
    publish(a, "blob", b"second, longer");
    let seen = within_promptly(|| {
        std::fs::read(b.join("blob")).ok().as_deref() == Some(b"second, longer")
            && std::fs::metadata(b.join("blob")).unwrap().len() == 14
    })
    .expect("a rename over an existing file through A did not show through B within 500 ms");
    eprintln!("replacement visible through the other mount after {seen:?}");
    assert_eq!(
        std::fs::read(t.shared.path().join("blob")).unwrap(),
        b"second, longer"
    );
    assert!(!t.shared.path().join("blob.tmp").exists());

    // Unlinked (sshfs's own directory cache would keep it 20 s).
    std::fs::remove_file(a.join("blob")).unwrap();
    let seen = within_promptly(|| !b.join("blob").exists())
        .expect("a file unlinked through A was still there through B after 500 ms");
    eprintln!("unlink visible through the other mount after {seen:?}");

    // Contents rewritten in place, read by a new open through B.
    std::fs::write(a.join("inplace"), b"one").unwrap();
    assert_eq!(std::fs::read(b.join("inplace")).unwrap(), b"one");
    std::fs::write(a.join("inplace"), b"two").unwrap();
    assert_eq!(std::fs::read(b.join("inplace")).unwrap(), b"two");
}

#[test]
fn locks_exclude_within_one_mount_but_not_across_mounts() {
    let t = two();
    std::fs::write(t.a.path().join("lock"), b"").unwrap();
    let a1 = open_rw(&t.a.path().join("lock"));
    let a2 = open_rw(&t.a.path().join("lock"));
    let b1 = open_rw(&t.b.path().join("lock"));
    assert!(ofd_lock(&a1), "the first OFD lock through A");
    assert!(
        !ofd_lock(&a2),
        "a second open through the same mount must be excluded"
    );
    assert!(
        ofd_lock(&b1),
        "locks lie: the same OFD lock through another mount is granted too"
    );
    let (a3, b2) = (
        open_rw(&t.a.path().join("lock")),
        open_rw(&t.b.path().join("lock")),
    );
    let a4 = open_rw(&t.a.path().join("lock"));
    assert!(flock(&a3), "the first flock through A");
    assert!(
        !flock(&a4),
        "flock: a second open through A must be excluded"
    );
    assert!(flock(&b2), "flock lies across mounts too");
}

#[test]
fn an_exclusive_create_through_a_second_mount_fails_with_eexist() {
    let t = two();
    let excl = |dir: &Path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dir.join("claim"))
    };
    excl(t.a.path()).expect("O_EXCL create through A");
    let e = excl(t.b.path()).expect_err("O_EXCL create of the same name through B");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // And the other way round, B having looked up the name first.
    assert!(!t.b.path().join("claim2").exists());
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(t.a.path().join("claim2"))
        .unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(t.b.path().join("claim2"))
        .expect_err("O_EXCL through B after A created the name");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
}

#[test]
fn hard_links_work_and_refuse_an_existing_name() {
    let t = two();
    std::fs::write(t.a.path().join("f"), b"data").unwrap();
    std::fs::hard_link(t.a.path().join("f"), t.a.path().join("g")).expect("link(2) through sshfs");
    assert_eq!(std::fs::read(t.b.path().join("g")).unwrap(), b"data");
    let on_server = std::fs::metadata(t.shared.path().join("g")).unwrap();
    assert_eq!(on_server.nlink(), 2, "a real hard link on the server");
    assert_eq!(
        on_server.ino(),
        std::fs::metadata(t.shared.path().join("f")).unwrap().ino()
    );
    let e = std::fs::hard_link(t.a.path().join("f"), t.b.path().join("g"))
        .expect_err("link onto an existing name");
    // Across two mounts link(2) is EXDEV before sshfs is asked; through one:
    assert!(
        matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EEXIST)),
        "{e}"
    );
    let e = std::fs::hard_link(t.b.path().join("f"), t.b.path().join("g"))
        .expect_err("link onto an existing name");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    eprintln!(
        "st_nlink through sshfs: {} (the server's: 2)",
        std::fs::metadata(t.b.path().join("g")).unwrap().nlink()
    );
}

#[test]
fn a_mount_whose_server_is_gone_fails_and_still_unmounts() {
    let sshd = Sshd::start();
    let shared = tempdir("shared");
    let mnt = tempdir("mnt");
    let a = sshd.mount(shared.path(), mnt.path());
    std::fs::write(a.path().join("f"), b"x").unwrap();
    let open = File::open(a.path().join("f")).unwrap();
    drop(sshd);
    let p = a.path().join("f");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::fs::read(p).map(drop)).unwrap());
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a read through a mount whose server is gone did not return within 10 s");
    let e = r.expect_err("a read through a mount whose server is gone succeeded");
    eprintln!("through a mount whose server is gone: {e}");
    let mountpoint = a.path().to_path_buf();
    drop(a); // with `open` still open: unmounted lazily
    assert_eq!(blobcache_testing::mounts::mount_type(&mountpoint), None);
    drop(open);
}

#[test]
fn times_through_sshfs_are_whole_seconds() {
    let t = two();
    let f = t.shared.path().join("t");
    std::fs::write(&f, b"x").unwrap();
    let when = std::time::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(when)
        .unwrap();
    // SFTP version 3 carries seconds only, both ways.
    assert_eq!(
        std::fs::metadata(t.a.path().join("t"))
            .unwrap()
            .mtime_nsec(),
        0
    );
    File::options()
        .write(true)
        .open(t.a.path().join("t"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let on_server = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (on_server.mtime(), on_server.mtime_nsec()),
        (1_600_000_000, 0)
    );
}
