//! What the FUSE mounts of [`crate::sshfs`] and [`crate::hungfs`] share:
//! whether a directory is a mount point now (`/proc/self/mountinfo`), the
//! `/dev/fuse` check, and unmounting and waiting for processes with a
//! bound, so that a test's clean-up never hangs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The filesystem type of the mount at `dir` (e.g. `fuse.sshfs`), if
/// `dir` is a mount point now. `dir` is compared after
/// `canonicalize`-ing its parent (the mount point itself may be dead).
pub fn mount_type(dir: &Path) -> Option<String> {
    let want = absolute(dir);
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mountpoint options... - type source super.
    // The last entry for a mount point is the one on top.
    info.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let mp = unescape(f.nth(4)?);
        let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
        (mp == want).then(|| fstype.to_string())
    })
}

/// `dir` with its parent canonicalized (not `dir` itself, whose `stat`
/// may hang or fail on a FUSE mount).
fn absolute(dir: &Path) -> PathBuf {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => p.canonicalize().unwrap_or_else(|_| p.into()).join(n),
        _ => dir.to_path_buf(),
    }
}

/// Mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Panics with what to do when this machine cannot mount FUSE filesystems
/// (no `/dev/fuse`): the tests that need one fail, never skip.
pub fn require_fuse(what: &str) {
    assert!(
        Path::new("/dev/fuse").exists(),
        "{what} needs FUSE and there is no /dev/fuse: load the fuse module \
         (modprobe fuse), or in a container run with --device /dev/fuse \
         --cap-add SYS_ADMIN"
    );
}

/// Waits at most `limit` for `child` to exit; kills it (SIGKILL) if it has
/// not, then reaps it. The exit status if it exited by itself.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if t0.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `cmd` (output discarded) for at most `limit`: whether it exited
/// with success.
fn run_bounded(cmd: &mut Command, limit: Duration) -> bool {
    match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(mut child) => wait_or_kill(&mut child, limit).is_some_and(|s| s.success()),
        Err(_) => false,
    }
}

/// Unmounts `dir` if it is a mount point, within a few seconds whatever the
/// state of its filesystem: `fusermount3 -u`, then lazily (`fusermount3 -u
/// -z`, `umount -l`), which detaches it even when it is busy or its daemon
/// is dead or hung. Whether `dir` is no longer a mount point.
pub fn unmount(dir: &Path) -> bool {
    let limit = Duration::from_secs(5);
    let attempts: [&[&str]; 3] = [
        &["fusermount3", "-u"],
        &["fusermount3", "-u", "-z"],
        &["umount", "-l"],
    ];
    for argv in attempts {
        if mount_type(dir).is_none() {
            return true;
        }
        run_bounded(Command::new(argv[0]).args(&argv[1..]).arg(dir), limit);
    }
    mount_type(dir).is_none()
}

/// Polls `cond` every 10 ms for at most `limit`: whether it became true.
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c"), PathBuf::from("/a b\tc"));
        assert_eq!(unescape(r"/plain\"), PathBuf::from(r"/plain\"));
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_directory_is_not() {
        assert!(mount_type(Path::new("/")).is_some());
        let d = crate::tempdir("mounts");
        assert_eq!(mount_type(d.path()), None);
    }
}
