"""A passthrough FUSE filesystem whose every operation can be made to hang.

Run by crates/testing/src/hungfs.rs with Debian's /usr/bin/python3 and its
python3-fusepy (module `fusepy`):

    hungfs.py BACKING MOUNTPOINT CONTROL_SOCKET

It mounts MOUNTPOINT as a mirror of the directory BACKING (multithreaded,
in the foreground) and serves a line protocol on the Unix socket
CONTROL_SOCKET, which lives outside the mount so it keeps answering while
the mount hangs:

    hang      close the gate: every operation that arrives from now on
              blocks, as on a dead NFS server, until `release`
    release   open the gate: the blocked operations go on
    waiting   how many operations are blocked at the gate now
    ping      nothing (is the daemon up?)

Each command is answered with one line, `ok <number>` (`waiting`'s count,
else 0), once it has taken effect. When its standard input reaches end of
file or its parent is a zombie (the test process that started it is gone
or dying, however it died), the daemon opens the gate, unmounts lazily and
exits, so no hung mount outlives the tests.

Locks are left to the kernel (no `lock` operation): they are local to this
mount, as with any FUSE filesystem that does not implement them.
"""

import errno
import os
import select
import socket
import subprocess
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations


class Gate:
    def __init__(self):
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.waiting = 0

    def wait(self):
        if self.open.is_set():
            return
        with self.lock:
            self.waiting += 1
        try:
            self.open.wait()
        finally:
            with self.lock:
                self.waiting -= 1


class Passthrough(Operations):
    use_ns = True

    def __init__(self, root, gate):
        self.root = os.path.realpath(root)
        self.gate = gate

    def __call__(self, op, *args):
        if op not in ("init", "destroy"):
            self.gate.wait()
        if not hasattr(self, op):
            raise FuseOSError(errno.ENOSYS)
        return getattr(self, op)(*args)

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    # Metadata.
    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks",
                "st_ino")
        d = {k: getattr(st, k) for k in keys}
        # fusepy wants the times as st_atime etc. (in ns with use_ns).
        for t in ("atime", "mtime", "ctime"):
            d["st_" + t] = d.pop("st_" + t + "_ns")
        return d

    def access(self, path, amode):
        if not os.access(self._p(path), amode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.lchown(self._p(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times, follow_symlinks=False)

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(sv, k) for k in keys}

    # Directories and names.
    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        os.rmdir(self._p(path))

    def unlink(self, path):
        os.unlink(self._p(path))

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))

    def link(self, target, source):
        # fusepy's order: link(new name, existing file).
        os.link(self._p(source), self._p(target))

    def symlink(self, target, source):
        # fusepy's order: symlink(new name, what it points to).
        os.symlink(source, self._p(target))

    def readlink(self, path):
        return os.readlink(self._p(path))

    # Files.
    def open(self, path, flags):
        return os.open(self._p(path), flags)

    def create(self, path, mode, fi=None):
        # The kernel asks only after its lookup found no such name (and
        # checks O_EXCL itself); read-write, for the handle serves both.
        return os.open(self._p(path), os.O_RDWR | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._p(path), length)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def release(self, path, fh):
        os.close(fh)


def serve_control(sock_path, gate):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(16)

    def handle(conn):
        with conn, conn.makefile("rw") as f:
            for line in f:
                cmd = line.strip()
                n = 0
                if cmd == "hang":
                    gate.open.clear()
                elif cmd == "release":
                    gate.open.set()
                elif cmd == "waiting":
                    with gate.lock:
                        n = gate.waiting
                elif cmd != "ping":
                    f.write("error unknown command %r\n" % cmd)
                    f.flush()
                    continue
                f.write("ok %d\n" % n)
                f.flush()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def parent_gone(parent):
    """Whether the process that started this one is dead or dying.

    A process killed while one of its threads waits in this mount cannot
    finish dying: a request the daemon has read is waited for
    uninterruptibly, and the dying process keeps its files (so the end of
    file on stdin never comes) until then. Its main thread is a zombie
    meanwhile."""
    if os.getppid() != parent:
        return True
    try:
        with open("/proc/%d/stat" % parent) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def watch_parent(mountpoint, gate):
    # Standard input is a pipe from the test process: end of file, or the
    # test process dead or dying, means no one will unmount. Open the gate
    # (the dying process's blocked threads can then finish), detach the
    # mount and leave.
    parent = os.getppid()
    while not parent_gone(parent):
        ready, _, _ = select.select([0], [], [], 0.1)
        if ready and not os.read(0, 4096):
            break
    gate.open.set()
    subprocess.run(["umount", "-l", mountpoint], stderr=subprocess.DEVNULL)
    os._exit(0)


def main():
    backing, mountpoint, control = sys.argv[1:4]
    gate = Gate()
    threading.Thread(target=serve_control, args=(control, gate), daemon=True).start()
    threading.Thread(target=watch_parent, args=(mountpoint, gate), daemon=True).start()
    FUSE(
        Passthrough(backing, gate),
        mountpoint,
        foreground=True,
        nothreads=False,
        fsname="hungfs",
        subtype="hungfs",
        # Every operation reaches the daemon (and so the gate): the kernel
        # keeps no names or attributes (file contents are dropped at each
        # open, libfuse's default without kernel_cache).
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    main()
