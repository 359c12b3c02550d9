//! A directory shared the way a cluster filesystem shares it: a private
//! OpenSSH server ([`Sshd`], Debian's `openssh-server`) on a free loopback
//! port, and any number of `sshfs` mounts of one of this machine's
//! directories through it ([`Sshd::mount`], Debian's `sshfs`), one per
//! simulated node. Each mount is a FUSE filesystem of its own talking SFTP
//! to the server, as each node's NFS client talks to the NFS server.
//!
//! What `tests/sshfs.rs` measured and pins down (sshfs 3.7, OpenSSH 9.2,
//! the options of [`MOUNT_OPTIONS`]):
//!
//! - a file written and renamed into place through one mount is read back
//!   through another at once (within a few milliseconds: no caching of
//!   names, attributes or contents), and so are a rename over it and an
//!   unlink;
//! - `rename` over an existing file replaces it (sshfs uses OpenSSH's
//!   `posix-rename@openssh.com`);
//! - `O_CREAT|O_EXCL` through a second mount fails with `EEXIST` (SFTP's
//!   open with `SSH_FXF_EXCL` reaches the server's `open(2)`);
//! - `link(2)` works (`hardlink@openssh.com`), and fails with `EEXIST` on
//!   an existing name; the link count sshfs reports is not the server's;
//! - times are whole seconds, read or set (SFTP version 3 carries no
//!   fractions);
//! - locks lie: OFD (`F_OFD_SETLK`) and `flock` locks are the local
//!   kernel's, per mount (sshfs implements no lock operation). Two opens
//!   through one mount exclude each other; through two mounts both get the
//!   lock.
//!
//! Dropping the [`Sshd`] before its mounts (it kills its sessions too)
//! makes sshfs exit: calls through the mounts fail at once
//! (`ECONNABORTED`, then `ENOTCONN`), as on a cluster filesystem whose
//! server went away; the mounts still unmount on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::azurite::free_port;
use crate::mounts::{mount_type, poll, require_fuse, unmount, wait_or_kill};
use crate::{tempdir, TempDir};

/// The OpenSSH server binary (Debian's `openssh-server`).
const SSHD: &str = "/usr/sbin/sshd";

/// The options of every [`Sshd::mount`], besides the ssh client's (key,
/// no host-key check, no prompts). They make each mount behave like an NFS
/// mount with `lookupcache=none,actimeo=0`: what one node does, another
/// sees at its next call.
///
/// - `dir_cache=no`: sshfs keeps no cache of names, attributes and link
///   targets of its own (by default it does, for 20 s: a file unlinked
///   through one mount stayed visible through another for 21 s);
/// - `attr_timeout=0`, `entry_timeout=0`, `negative_timeout=0`: nor does
///   the kernel (attributes and positive names default to 1 s; negative
///   names are not kept by default, said here to be sure);
/// - no `kernel_cache`/`auto_cache` (FUSE's default): the kernel drops a
///   file's cached pages at each `open`, so an open reads what the server
///   has now;
/// - `reconnect` is left off: a dead server shows as errors, not as a
///   silent new session.
///
/// Rename over an existing name needs no option: sshfs 3.7 uses the
/// server's `posix-rename@openssh.com` when offered (OpenSSH offers it);
/// `workaround=rename` would instead unlink-then-rename, not atomically.
pub const MOUNT_OPTIONS: &[&str] = &[
    "dir_cache=no",
    "attr_timeout=0",
    "entry_timeout=0",
    "negative_timeout=0",
];

/// A private `sshd`: its own configuration, host key, client key, pid file
/// and log in a temporary directory, on 127.0.0.1 and a free port, key
/// authentication only, SFTP served in-process (`internal-sftp`). Killed
/// on drop.
pub struct Sshd {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Sshd {
    /// Starts the server and waits (at most 10 s) until it accepts
    /// connections.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/install-test-deps.sh, or apt-get install openssh-server"
        );
        let dir = tempdir("sshd");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            keygen(&d.join(key));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| {
            panic!("sshd needs /run/sshd (its privilege-separation directory): {e}")
        });
        let log = d.join("sshd.log");
        for _ in 0..3 {
            let port = free_port();
            let conf = d.join("sshd_config");
            std::fs::write(&conf, config(d, port)).unwrap();
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&conf)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
            let mut exited = None;
            let up = poll(Duration::from_secs(10), || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up && exited.is_none() {
                return Sshd {
                    port,
                    child: Some(child),
                    dir,
                };
            }
            if let Some(status) = exited {
                eprintln!(
                    "sshd exited early ({status}); port {port} taken? retrying\n{}",
                    read(&log)
                );
                continue;
            }
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        panic!(
            "sshd did not start within 10 s; its log ({}):\n{}",
            log.display(),
            read(&log)
        );
    }

    /// Mounts this machine's directory `remote` at `mountpoint` (an empty
    /// directory) through the server, with [`MOUNT_OPTIONS`], and waits (at
    /// most 10 s) until the mount is live.
    pub fn mount(&self, remote: &Path, mountpoint: &Path) -> SshfsMount {
        self.mount_with(remote, mountpoint, &[])
    }

    /// [`Sshd::mount`] with more `-o` options after [`MOUNT_OPTIONS`]
    /// (later ones win, e.g. `attr_timeout=1` for the kernel's default
    /// attribute cache, or `dir_cache=yes`).
    pub fn mount_with(&self, remote: &Path, mountpoint: &Path, extra: &[&str]) -> SshfsMount {
        require_fuse("sshfs");
        assert!(
            Path::new("/usr/bin/sshfs").exists(),
            "sshfs is missing: run scripts/install-test-deps.sh, or apt-get install sshfs"
        );
        let d = self.dir.path();
        let mut opts = vec![
            format!("IdentityFile={}", d.join("client_key").display()),
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "BatchMode=yes".into(),
            "LogLevel=ERROR".into(),
        ];
        opts.extend(MOUNT_OPTIONS.iter().chain(extra).map(|s| s.to_string()));
        static MOUNTS: AtomicU64 = AtomicU64::new(0);
        let log = d.join(format!(
            "sshfs-{}.log",
            MOUNTS.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        // -f: in the foreground, a child of this process, its errors in
        // the log; -F /dev/null: none of the machine's ssh configuration.
        let mut child = Command::new("/usr/bin/sshfs")
            .arg("-f")
            .args(["-F", "/dev/null"])
            .args(["-p", &self.port.to_string()])
            .args(["-o", &opts.join(",")])
            .arg(format!("{}@127.0.0.1:{}", user(), remote.display()))
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshfs: {e}"));
        let mut exited = None;
        let live = poll(Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            mount_type(mountpoint).as_deref() == Some("fuse.sshfs")
        });
        if !live || exited.is_some() {
            wait_or_kill(&mut child, Duration::ZERO);
            unmount(mountpoint);
            panic!(
                "sshfs did not mount {} at {} within 10 s ({}); its log:\n{}\nsshd's log:\n{}",
                remote.display(),
                mountpoint.display(),
                exited.map_or("still running".into(), |s| s.to_string()),
                read(&log),
                self.log()
            );
        }
        SshfsMount {
            mountpoint: mountpoint.to_path_buf(),
            child: Some(child),
            log,
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("sshd.log"))
    }
}

impl Drop for Sshd {
    /// Kills the server and its sessions (one per mount, each a process of
    /// its own that outlives the listener otherwise), so that its mounts
    /// lose their server at once.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Found before the kill: then they are orphans, not children.
            let sessions = descendants(c.id());
            let _ = c.kill();
            for pid in sessions {
                // SAFETY: a plain system call; `pid` is a process this
                // server started (it may have exited since: ESRCH).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = c.wait();
        }
    }
}

/// The processes descended from `pid` (children, theirs…), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // stat: "pid (comm) state ppid ..."; comm may hold spaces and ')'.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(pp) = ppid {
            parent_of.push((p, pp));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// One node's mount of the shared directory; unmounted on drop.
pub struct SshfsMount {
    mountpoint: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl SshfsMount {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// sshfs's log so far (its errors; kept in the server's directory,
    /// gone with the [`Sshd`]).
    pub fn log(&self) -> String {
        read(&self.log)
    }
}

impl Drop for SshfsMount {
    /// Unmounts (lazily if busy; at most a few seconds per step), then
    /// waits at most 5 s for sshfs to exit, killing it otherwise.
    fn drop(&mut self) {
        let unmounted = unmount(&self.mountpoint);
        if let Some(mut c) = self.child.take() {
            wait_or_kill(&mut c, Duration::from_secs(5));
        }
        if !unmounted && !unmount(&self.mountpoint) && !std::thread::panicking() {
            panic!("{} is still mounted", self.mountpoint.display());
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `ssh-keygen` of an ed25519 key without passphrase at `path` (and
/// `path.pub`).
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "blobcache-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The name of the user this process runs as (the user sshfs logs in as).
fn user() -> String {
    // SAFETY: geteuid has no preconditions; getpwuid's result (static
    // storage) is read at once, before any other getpw* call of this thread.
    let pw = unsafe { libc::getpwuid(libc::geteuid()) };
    assert!(!pw.is_null(), "this process's user has no passwd entry");
    // SAFETY: checked non-null; pw_name is a valid C string.
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    [
        format!("ListenAddress 127.0.0.1:{port}"),
        format!("HostKey {d}/host_key"),
        format!("PidFile {d}/sshd.pid"),
        format!("AuthorizedKeysFile {d}/authorized_keys"),
        "AuthenticationMethods publickey".into(),
        "PubkeyAuthentication yes".into(),
        "PasswordAuthentication no".into(),
        "KbdInteractiveAuthentication no".into(),
        "PermitRootLogin prohibit-password".into(),
        "UsePAM no".into(),
        // The key files live in a temporary directory whose modes sshd
        // would otherwise check.
        "StrictModes no".into(),
        "UseDNS no".into(),
        "PrintMotd no".into(),
        // Many mounts may log in at once.
        "MaxStartups 100".into(),
        "Subsystem sftp internal-sftp".into(),
    ]
    .join("\n")
        + "\n"
}
