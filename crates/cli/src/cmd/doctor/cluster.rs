//! `blobcache doctor`'s check of the cluster tier (`BLOBCACHE_CLUSTER_DIR`):
//! is the directory there and a real directory, on which filesystem (and
//! not the node's own disk), writable, with how much room, with the same
//! block size as this node's cache, and do locks work on it.
//!
//! Every look at the directory may block forever on a hung mount (an NFS
//! server gone, a stopped sshfs). A thread is not enough to bound that: a
//! FUSE request the server has taken is waited for uninterruptibly, and a
//! process with a thread stuck there cannot exit (nor close its stdout, so
//! `blobcache doctor | less` would never end). So the checks run in a
//! child process (this command again, as the hidden `doctor
//! --cluster-probe`), which writes what it finds as it goes, one JSON line
//! per finding, with stdin and stderr closed; [`check`] reads those lines on
//! a helper thread and gives up after the doctor's timeout: what was found
//! so far is shown, then why it stopped. A child stuck in the mount is
//! killed (the kill lands when the mount answers or is aborted) and never
//! waited for.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobcache_core::config::{Config, SETTINGS};
use blobcache_core::store::{probe, Store, LAYOUT};
use serde::{Deserialize, Serialize};

use crate::output::size;

/// One thing the check says, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Said {
    Line(String),
    /// Works, but not as it should (the tier is still used, or harmlessly not).
    Warning(String),
    /// The tier cannot be used as configured.
    Problem(String),
}

/// Where the checks say what they find, as they go: a list, or (in the
/// child process) stdout.
#[derive(Clone)]
enum Out {
    List(Arc<Mutex<Vec<Said>>>),
    Stdout,
}

impl Default for Out {
    fn default() -> Out {
        Out::List(Arc::default())
    }
}

impl Out {
    fn push(&self, s: Said) {
        match self {
            Out::List(l) => l.lock().unwrap_or_else(|e| e.into_inner()).push(s),
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                crate::cmd::json_line(&mut out, &s);
                let _ = out.flush();
            }
        }
    }
    fn line(&self, s: impl Into<String>) {
        self.push(Said::Line(format!("  {}", s.into())));
    }
    fn warning(&self, s: impl Into<String>) {
        self.push(Said::Warning(s.into()));
    }
    fn problem(&self, s: impl Into<String>) {
        self.push(Said::Problem(s.into()));
    }
    fn take(&self) -> Vec<Said> {
        match self {
            Out::List(l) => std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner())),
            Out::Stdout => vec![],
        }
    }
}

/// The child process's part (`doctor --cluster-probe`): the checks of the
/// cluster tier of `config`, said on stdout.
pub(super) fn serve(config: &Config) {
    if let Some(dir) = &config.cluster_dir {
        checks(dir, config, &Out::Stdout);
    }
}

/// Checks the cluster tier of `config` (none without one) in a child
/// process, waiting at most `timeout` for it.
pub(super) fn check(config: &Config, timeout: Duration) -> Vec<Said> {
    if config.cluster_dir.is_none() {
        return vec![];
    }
    let child = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .args(["doctor", "--cluster-probe"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return vec![Said::Problem(format!(
                "cannot run the check of the cluster tier: {e}"
            ))]
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return vec![Said::Problem(
            "the check of the cluster tier has no output".into(),
        )];
    };
    let (mut said, finished) = bounded(
        timeout,
        move |out| {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                out.push(serde_json::from_str(&line).unwrap_or_else(|e| {
                    Said::Problem(format!(
                        "the check of the cluster tier said something unreadable ({e}): {line}"
                    ))
                }));
            }
        },
        |secs| {
            format!(
                "the cluster directory did not answer within {secs} s (hung mount?): whatever filesystem is mounted there blocks; check the mount on this node (mount, dmesg) and its server"
            )
        },
    );
    if finished {
        // Its stdout closed: it has exited.
        match child.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => said.push(Said::Problem(format!(
                "the check of the cluster tier failed ({s})"
            ))),
            Err(e) => said.push(Said::Problem(format!(
                "the check of the cluster tier failed ({e})"
            ))),
        }
    } else {
        // Stuck in the mount: killed, not waited for.
        let _ = child.kill();
    }
    said
}

/// Runs `work` on a helper thread and returns what it said, and whether it
/// finished, once it is done or `timeout` has passed (then `late(seconds)`
/// is the last problem).
fn bounded(
    timeout: Duration,
    work: impl FnOnce(&Out) + Send + 'static,
    late: impl FnOnce(u64) -> String,
) -> (Vec<Said>, bool) {
    let out = Out::default();
    let (done, finished) = mpsc::channel::<()>();
    let theirs = out.clone();
    let spawned = std::thread::Builder::new()
        .name("doctor-cluster".into())
        .spawn(move || {
            work(&theirs);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        return (
            vec![Said::Problem(format!("cannot start a thread: {e}"))],
            false,
        );
    }
    match finished.recv_timeout(timeout) {
        Ok(()) => (out.take(), true),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut said = out.take();
            // Rounded up: a timeout of 1.5 s is shown as 2 s.
            let secs = (timeout.as_millis() as u64).div_ceil(1000);
            said.push(Said::Problem(late(secs)));
            (said, false)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let mut said = out.take();
            said.push(Said::Problem(
                "the check of the cluster tier failed (its thread panicked)".into(),
            ));
            (said, true)
        }
    }
}

/// What kind of filesystem a `statfs` type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A network or cluster filesystem other nodes can mount.
    Shared,
    /// A FUSE filesystem: shared or not, depending on what serves it.
    Fuse,
    /// On this node only.
    Local,
    Unknown,
}

/// The name and kind of the filesystem whose `statfs` type is `magic`
/// (the constants of linux/magic.h and of the filesystems' own sources).
fn filesystem(magic: u64) -> (&'static str, Kind) {
    match magic {
        0x6969 => ("nfs", Kind::Shared),
        0x6573_5546 => ("fuse (sshfs, JuiceFS, blobfuse, ...)", Kind::Fuse),
        0xFF53_4D42 => ("cifs (SMB, e.g. Azure Files)", Kind::Shared),
        0xFE53_4D42 => ("smb2 (SMB, e.g. Azure Files)", Kind::Shared),
        0x517B => ("smb", Kind::Shared),
        0x0BD0_0BD0 => ("lustre", Kind::Shared),
        0x00C3_6400 => ("ceph", Kind::Shared),
        0x4750_4653 => ("gpfs", Kind::Shared),
        0x1983_0326 => ("beegfs", Kind::Shared),
        0x0102_1997 => ("9p", Kind::Shared),
        0x0102_1994 => ("tmpfs", Kind::Local),
        0x8584_58F6 => ("ramfs", Kind::Local),
        0xEF53 => ("ext2/ext3/ext4", Kind::Local),
        0x5846_5342 => ("xfs", Kind::Local),
        0x9123_683E => ("btrfs", Kind::Local),
        0x2FC1_2FC1 => ("zfs", Kind::Local),
        0x794C_7630 => ("overlay", Kind::Local),
        0xF2F5_2010 => ("f2fs", Kind::Local),
        _ => ("unknown", Kind::Unknown),
    }
}

/// `statfs(2)`'s filesystem type of `path`.
fn filesystem_type(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `statfs` is plain data (integers), for which all zeroes is a
    // valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string that outlives the call, and
    // `st` a valid, writable `statfs` for the kernel to fill. The standard
    // library has no statfs; the core's wrappers ask statvfs, which has no
    // filesystem type.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // f_type is a signed word on some targets; the magic numbers are 32 bits.
    Ok(st.f_type as u64 & 0xFFFF_FFFF)
}

/// Whether locks exclude across nodes on this filesystem, as far as is
/// known of it.
fn across_nodes(name: &str, kind: Kind) -> &'static str {
    match (name, kind) {
        ("nfs", _) => "NFS: yes with NFSv4 (locks go through the server); NFSv3 only with lockd running, not with the nolock or local_lock mount options",
        ("lustre", _) => "Lustre: yes when mounted with the flock option; not with localflock or without either",
        ("ceph", _) => "CephFS: yes",
        (n, _) if n.starts_with("cifs") || n.starts_with("smb") => "SMB: usually yes, through the server (Azure Files: yes); not with the nobrl mount option",
        (_, Kind::Fuse) => "FUSE: as the filesystem serves them: JuiceFS: yes; sshfs and blobfuse: no (each node's locks are its own)",
        (_, Kind::Local) => "a node-local filesystem: no other node sees it",
        _ => "unknown for this filesystem",
    }
}

fn unique(stem: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(".doctor-{stem}.{}.{nanos}", std::process::id())
}

/// The checks, in order; each says what it found through `out` before
/// the next one starts (so a hang shows where).
fn checks(dir: &Path, config: &Config, out: &Out) {
    out.line(dir.display().to_string());
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return out.problem(format!(
                "{} does not exist: is the shared volume mounted? Mount it, and create the directory on it, group-writable (mkdir -m 2770); the first process to use the tier would otherwise create it on whatever filesystem holds {}",
                dir.display(),
                dir.parent().unwrap_or(Path::new("/")).display()
            ))
        }
        Err(e) => return out.problem(format!("cannot look at {}: {e}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir).map_or("?".into(), |t| t.display().to_string());
        return out.problem(format!(
            "{} is a symbolic link (to {target}), which the cache does not follow: set BLOBCACHE_CLUSTER_DIR to the directory itself",
            dir.display()
        ));
    }
    if !meta.is_dir() {
        return out.problem(format!("{} is not a directory", dir.display()));
    }
    out.line("a directory: yes (not a symbolic link)");

    // The filesystem, and whether it is the node's own.
    let (fs_name, kind) = match filesystem_type(dir) {
        Ok(magic) => {
            let (name, kind) = filesystem(magic);
            if kind == Kind::Unknown {
                out.line(format!("filesystem: type {magic:#x}"));
            } else {
                out.line(format!("filesystem: {name}"));
            }
            (name, kind)
        }
        Err(e) => {
            out.line(format!("filesystem: cannot be asked ({e})"));
            ("unknown", Kind::Unknown)
        }
    };
    let local = config.dir.as_deref().map(crate::cmd::existing);
    let same = local.and_then(|l| std::fs::metadata(l).ok().map(|m| (l, m.dev())));
    match same {
        Some((l, dev)) if dev == meta.dev() => out.warning(format!(
            "not shared: the cluster tier is on the node's own disk (the filesystem of the cache directory {}); mount the shared volume at {}",
            l.display(),
            dir.display()
        )),
        _ if kind == Kind::Local => out.warning(format!(
            "not shared: {fs_name} is a node-local filesystem, which other nodes do not see; mount the shared volume at {}",
            dir.display()
        )),
        _ => {}
    }

    // Writable: a probe file created (never through a link), written,
    // synced and removed.
    let writable = probe_write(dir, out);

    // Room, and the cap it implies.
    if let Some((total, free)) = blobcache_core::store::filesystem_size(dir) {
        let cap = blobcache_core::store::cap(config.cluster_max_size, dir).map_or("?".into(), size);
        let shown = SETTINGS
            .iter()
            .find(|s| s.name == "BLOBCACHE_CLUSTER_MAX_SIZE")
            .map_or(String::new(), |s| s.effective(config, None));
        out.line(format!(
            "filesystem {} with {} free; the tier's cap is {cap} (BLOBCACHE_CLUSTER_MAX_SIZE: {shown})",
            size(total),
            size(free),
        ));
        if free < config.block_size {
            out.problem("the cluster filesystem has less room than one block: the tier cannot take anything (blobcache evict --cluster --to SIZE makes room)");
        }
    } else {
        out.line("free space: cannot be asked");
    }

    block_sizes(dir, config, writable, out);

    if writable {
        locks(dir, fs_name, kind, out);
    } else {
        out.line("locks: not checked (a lock file cannot be created here)");
    }
}

/// Creates, writes, syncs and removes a probe file in `dir`; whether it could.
fn probe_write(dir: &Path, out: &Out) -> bool {
    let path = dir.join(unique("probe"));
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .and_then(|mut f| {
            let r = f
                .write_all(b"blobcache doctor probe\n")
                .and_then(|()| f.sync_all());
            drop(f);
            let removed = std::fs::remove_file(&path);
            r.and(removed)
        });
    match r {
        Ok(()) => {
            out.line("writable: yes (a probe file was created, written, synced and removed)");
            true
        }
        Err(e) => {
            let d = dir.display();
            out.problem(match e.raw_os_error() {
                Some(libc::EROFS) => format!(
                    "{d} is not writable: the filesystem is mounted read-only, so the tier cannot be filled (mount it read-write on the nodes that fill it)"
                ),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!(
                    "{d} is not writable: the filesystem (or this user's quota) is full ({e})"
                ),
                Some(libc::EACCES) | Some(libc::EPERM) => format!(
                    "{d} is not writable by this user ({e}): the tier is group-shared, so give the nodes' group write access (chgrp GROUP {d} && chmod 2770 {d})"
                ),
                _ => format!("{d} is not writable: {e}"),
            });
            false
        }
    }
}

/// The block size the tier records against this node's cache's: blocks of
/// two sizes cannot be shared.
fn block_sizes(dir: &Path, config: &Config, writable: bool, out: &Out) {
    let local = config
        .dir
        .as_deref()
        .and_then(|d| Store::open(d, config.block_size, config.shared, config.fsync).ok())
        .map_or(config.block_size, |s| s.block_size());
    let settings = dir.join(LAYOUT).join("settings");
    if !writable && !settings.exists() {
        return out.line(format!(
            "block size: none recorded yet (the first node to fill the tier records its own; this node's is {})",
            size(local)
        ));
    }
    // As the tier opens it: the record wins, and this node's size is the
    // one recorded when there is none yet.
    match Store::open(dir, local, true, config.fsync) {
        Ok(s) if s.block_size() == local => out.line(format!(
            "block size: {}, the same as this node's cache",
            size(local)
        )),
        Ok(s) => out.warning(format!(
            "the cluster tier records block size {} ({}) and this node's cache {}: the tier is not used until they agree. Use the tier's: empty this node's cache (blobcache evict --all), remove its v1/settings and set BLOBCACHE_BLOCK_SIZE={}; or start the tier afresh with this node's (blobcache evict --cluster --all, then remove {})",
            size(s.block_size()),
            settings.display(),
            size(local),
            setting(s.block_size()),
            settings.display(),
        )),
        Err(e) => out.problem(format!("cannot use the cluster tier's store: {e}")),
    }
}

/// A block size as `BLOBCACHE_BLOCK_SIZE` takes it (block sizes are
/// multiples of 64 KiB).
fn setting(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}M", bytes >> 20)
    } else {
        format!("{}K", bytes >> 10)
    }
}

/// Two opens of one lock file: an OFD byte lock (the store's block lock)
/// through one, then the same byte through the other.
fn locks(dir: &Path, fs_name: &str, kind: Kind, out: &Out) {
    let path = dir.join(unique("lock"));
    let duplicate =
        "the tier still works, with duplicate fetches of a block two processes miss at once";
    let first = probe::try_lock_block(&path, 0o660, 0);
    let second = match &first {
        Ok(Some(_)) => Some(probe::try_lock_block(&path, 0o660, 0)),
        _ => None,
    };
    match (&first, &second) {
        (Ok(Some(_)), Some(Ok(None))) => out.line("locks: exclude within this node (a byte lock taken through one open of a file is refused through another)"),
        (Ok(Some(_)), Some(Ok(Some(_)))) => out.warning(format!(
            "locks do not exclude (this filesystem's locks are not usable; {duplicate})"
        )),
        (Err(e), _) | (_, Some(Err(e))) => out.warning(format!(
            "locks do not work on this filesystem ({e}; {duplicate})"
        )),
        (Ok(None), _) => out.warning(format!(
            "locks: a new lock file was found locked already: this filesystem's locks are not usable ({duplicate})"
        )),
        (Ok(Some(_)), None) => unreachable!("the second lock is tried after a first"),
    }
    drop(second);
    drop(first);
    let _ = std::fs::remove_file(&path);
    out.line(format!(
        "whether locks exclude across nodes cannot be seen from one node: {}",
        across_nodes(fs_name, kind)
    ));
    out.line("  (in general: NFSv4, Lustre mounted with flock, CephFS: yes; sshfs and other FUSE filesystems without lock support, some SMB setups: no)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_check_that_hangs_is_given_up_on_keeping_what_it_said() {
        let t0 = Instant::now();
        let said = bounded(
            Duration::from_millis(300),
            |out| {
                out.line("before");
                std::thread::sleep(Duration::from_secs(60));
                out.line("after");
            },
            |secs| format!("no answer within {secs} s"),
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(
            said,
            (
                vec![
                    Said::Line("  before".into()),
                    Said::Problem("no answer within 1 s".into())
                ],
                false
            )
        );
    }

    #[test]
    fn a_check_that_finishes_says_all_and_a_panic_is_a_problem() {
        let said = bounded(
            Duration::from_secs(5),
            |out| out.warning("w"),
            |_| unreachable!(),
        );
        assert_eq!(said, (vec![Said::Warning("w".into())], true));
        let said = bounded(
            Duration::from_secs(5),
            |out| {
                out.line("x");
                panic!("boom")
            },
            |_| unreachable!(),
        );
        assert_eq!(said.0.len(), 2, "{said:?}");
        assert!(matches!(&said.0[1], Said::Problem(p) if p.contains("panicked")));
    }

    #[test]
    fn findings_cross_the_pipe_as_json_lines() {
        for s in [
            Said::Line("  a \"b\"\n".into()),
            Said::Warning("w".into()),
            Said::Problem("p".into()),
        ] {
            let mut v = Vec::new();
            crate::cmd::json_line(&mut v, &s);
            let line = String::from_utf8(v).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(serde_json::from_str::<Said>(&line).unwrap(), s);
        }
    }

    #[test]
    fn filesystem_types_are_named_and_the_temp_dir_is_one() {
        assert_eq!(filesystem(0x6969), ("nfs", Kind::Shared));
        assert_eq!(filesystem(0xEF53).1, Kind::Local);
        assert_eq!(filesystem(0x6573_5546).1, Kind::Fuse);
        assert_eq!(filesystem(1).1, Kind::Unknown);
        assert!(filesystem_type(&std::env::temp_dir()).is_ok());
        assert!(filesystem_type(Path::new("/nonexistent/x")).is_err());
    }
}
