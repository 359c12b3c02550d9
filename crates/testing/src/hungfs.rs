//! A filesystem that hangs on command, as a cluster filesystem does when
//! its server stops answering: a passthrough FUSE filesystem over a backing
//! directory (`hungfs.py`, written with Debian's `python3-fusepy` and run
//! by `/usr/bin/python3`), whose every operation first passes a gate.
//! [`HungFs::hang`] closes the gate: from then on `stat`, `open`, `read`,
//! `rename`… of anything in the mount block in the kernel, uninterruptibly
//! as far as the caller can tell, until [`HungFs::release`] opens it.
//!
//! The gate is switched through a Unix socket outside the mount, which the
//! daemon answers only once the switch is done. The kernel keeps no names
//! or attributes of the mount (all its timeouts are 0), so every
//! metadata call reaches the gate; file contents already mapped or read
//! into the page cache of an open file may still be served without asking
//! (as on NFS). Locks are the kernel's, local to the mount.
//!
//! Dropping a [`HungFs`] kills the daemon, which makes every call blocked
//! in the mount return at once with an error (`ENOTCONN`), then unmounts.
//! Should the test process die without dropping it (a panic that aborts, a
//! kill), the daemon sees its standard input close or the process turn
//! zombie (a process killed while a thread of it waits in the mount cannot
//! finish dying until the daemon answers), opens the gate, unmounts and
//! exits.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::mounts::{mount_type, poll, require_fuse, unmount, wait_or_kill};
use crate::{tempdir, TempDir};

/// The daemon, written to a temporary directory at run time.
const SCRIPT: &str = include_str!("hungfs.py");

/// Debian's Python, which has `python3-fusepy` (the `python3` first on
/// PATH may be another without it).
const PYTHON: &str = "/usr/bin/python3";

/// How long a control command or the mount may take before the test
/// fails.
const LIMIT: Duration = Duration::from_secs(10);

/// A mounted hungfs; unmounted and its daemon killed on drop.
pub struct HungFs {
    mountpoint: PathBuf,
    child: Option<Child>,
    // Held open: the daemon leaves when it closes (see the module doc).
    _stdin: Option<ChildStdin>,
    dir: TempDir,
}

impl HungFs {
    /// Mounts a mirror of `backing` at `mountpoint` (an empty directory)
    /// and waits (at most 10 s) until it is live, the gate open.
    pub fn mount(backing: &Path, mountpoint: &Path) -> HungFs {
        require_fuse("hungfs");
        let fusepy = Command::new(PYTHON)
            .args(["-c", "import fusepy"])
            .stdin(Stdio::null())
            .output();
        assert!(
            fusepy.as_ref().is_ok_and(|o| o.status.success()),
            "{PYTHON} cannot import fusepy: run scripts/install-test-deps.sh, or apt-get install python3-fusepy ({:?})",
            fusepy.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
        let dir = tempdir("hungfs");
        let script = dir.path().join("hungfs.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let control = dir.path().join("control.sock");
        let log = dir.path().join("hungfs.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .arg(backing)
            .arg(mountpoint)
            .arg(&control)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let mut fs = HungFs {
            mountpoint: mountpoint.to_path_buf(),
            child: Some(child),
            _stdin: stdin,
            dir,
        };
        let mut exited = None;
        let live = poll(LIMIT, || {
            if let Some(Ok(Some(status))) = fs.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            control.exists() && mount_type(mountpoint).as_deref() == Some("fuse.hungfs")
        });
        if !live || exited.is_some() {
            let log = fs.log();
            drop(fs);
            panic!(
                "hungfs did not mount {} at {} within {LIMIT:?} ({}); its log:\n{log}",
                backing.display(),
                mountpoint.display(),
                exited.map_or("still running".into(), |s| s.to_string()),
            );
        }
        fs.command("ping");
        fs
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Closes the gate: returns once every operation that arrives from now
    /// on blocks (those already past the gate finish).
    pub fn hang(&self) {
        self.command("hang");
    }

    /// Opens the gate: the blocked operations go on.
    pub fn release(&self) {
        self.command("release");
    }

    /// How many operations are blocked at the gate now: a test knows a
    /// caller is stuck in the mount (not merely slow) when this counts it.
    pub fn waiting(&self) -> usize {
        self.command("waiting")
    }

    /// The daemon's log so far (its errors and tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hungfs.log")).unwrap_or_default()
    }

    /// Sends one control line and reads its answer, `ok N`: N. Panics with
    /// the daemon's log if it does not answer within 10 s.
    fn command(&self, cmd: &str) -> usize {
        let answer = (|| -> std::io::Result<String> {
            let mut s = UnixStream::connect(self.dir.path().join("control.sock"))?;
            s.set_read_timeout(Some(LIMIT))?;
            s.set_write_timeout(Some(LIMIT))?;
            s.write_all(format!("{cmd}\n").as_bytes())?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        })();
        match answer.as_deref().map(|l| l.trim().strip_prefix("ok ")) {
            Ok(Some(n)) => n.parse().unwrap(),
            _ => panic!(
                "hungfs did not answer {cmd:?}: {answer:?}; its log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for HungFs {
    /// Kills the daemon (every call blocked in the mount returns with an
    /// error), unmounts (lazily: callers may still hold files open), all
    /// within a few seconds.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            wait_or_kill(&mut c, Duration::from_secs(5));
        }
        if !unmount(&self.mountpoint) && !std::thread::panicking() {
            panic!("{} is still mounted", self.mountpoint.display());
        }
    }
}
