//! A real Dragonfly node daemon (`dfdaemon`, from the `dragonfly-client`
//! crate) per test, on free loopback ports, for the long form of the
//! Dragonfly tests (`scripts/test-dragonfly`, which builds the daemon once
//! and caches it outside the clone).
//!
//! dfdaemon does not start without a scheduler, a Go program that cannot
//! be built here (no Go module proxy is reachable); `dfscheduler.py` (with
//! Python's `grpcio`) answers the two calls it needs to start and refuses
//! the rest, so every download fails to find peers and the daemon fetches
//! from the origin itself: one daemon is a node-local piece cache without
//! peers, which is what these tests can show.
//!
//! Every listener is on 127.0.0.1; every file (configuration, storage,
//! logs) is in a temporary directory of the daemon's own; both processes
//! are killed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::azurite::free_port;
use crate::{tempdir, TempDir};

/// The SAS query parameters, left out of the task's identity.
const SAS_PARAMS: &str =
    "[sv, ss, srt, sp, se, st, spr, sig, sr, sip, skoid, sktid, skt, ske, sks, skv, sdd]";

/// `$BC_DFDAEMON` (the built daemon); panics saying how to get one.
pub fn binary() -> PathBuf {
    let p = std::env::var_os("BC_DFDAEMON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("BC_DFDAEMON is not set: run these tests with scripts/test-dragonfly, which builds dfdaemon (dragonfly-client) and sets it")
        });
    assert!(p.exists(), "BC_DFDAEMON={} does not exist", p.display());
    p
}

/// `$BC_DFDAEMON_PYTHON` (a Python with `grpcio`), else `python3`.
fn python() -> PathBuf {
    std::env::var_os("BC_DFDAEMON_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

pub struct Dfdaemon {
    /// The proxy's port.
    pub port: u16,
    daemon: Option<Child>,
    scheduler: Option<Child>,
    dir: TempDir,
}

impl Dfdaemon {
    /// Starts a stand-in scheduler and a dfdaemon whose proxy rule sends
    /// `GET http://127.0.0.1:<origin_port>/…` through its download path
    /// (plain HTTP to the origin: `useTLS: false`), and waits (at most
    /// 60 s) until its proxy takes connections.
    pub fn start(origin_port: u16) -> Dfdaemon {
        let bin = binary();
        let dir = tempdir("dfdaemon");
        let d = dir.path();
        let scheduler_port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dfscheduler.py");
        let mut scheduler = Command::new(python())
            .arg(&script)
            .arg(scheduler_port.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("scheduler.log")).unwrap())
            .stderr(std::fs::File::create(d.join("scheduler.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the stand-in scheduler: {e}"));
        wait_for(scheduler_port, &mut scheduler, || {
            read(&d.join("scheduler.err"))
        });
        let port = free_port();
        std::fs::write(d.join("dfdaemon.yaml"), config(d, port, origin_port)).unwrap();
        std::fs::write(
            d.join("dynconfig.yaml"),
            format!("scheduler:\n  addr: 127.0.0.1:{scheduler_port}\n"),
        )
        .unwrap();
        let mut daemon = Command::new(&bin)
            .arg("--config")
            .arg(d.join("dfdaemon.yaml"))
            .arg("--dynconfig")
            .arg(d.join("dynconfig.yaml"))
            .arg("--log-dir")
            .arg(d.join("log"))
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        wait_for(port, &mut daemon, || {
            read(&d.join("stdout.log")) + &read(&d.join("stderr.log"))
        });
        Dfdaemon {
            port,
            daemon: Some(daemon),
            scheduler: Some(scheduler),
            dir,
        }
    }

    /// `http://127.0.0.1:<port>`: `BLOBCACHE_DRAGONFLY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the daemon (its port then refuses connections).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log so far (its files under `log/`).
    pub fn log(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                all.push_str(&read(&p));
            }
        }
        all
    }
}

impl Drop for Dfdaemon {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut c) = self.scheduler.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (at most 60 s) until `port` takes connections; panics with
/// `log()` if the process exits or time runs out.
fn wait_for(port: u16, child: &mut Child, log: impl Fn() -> String) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited before listening on {port} ({status}):\n{}", log());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("not listening on {port} after 60 s:\n{}", log());
}

/// The daemon's configuration: loopback listeners on free ports, storage
/// in `dir`, one proxy rule for the origin, and a storage budget of its own
/// (by default its garbage collector measures the whole filesystem's use,
/// and on a fuller disk than 80 % evicts every task at once).
fn config(dir: &Path, proxy_port: u16, origin_port: u16) -> String {
    let d = dir.display();
    let [upload, health, metrics, stats, tcp, quic] = [(); 6].map(|_| free_port());
    format!(
        "host:
  ip: 127.0.0.1
  hostname: blobcache-test-{proxy_port}
server:
  pluginDir: {d}/plugins
  cacheDir: {d}/cache
download:
  server:
    socketPath: {d}/dfdaemon.sock
upload:
  server:
    ip: 127.0.0.1
    port: {upload}
scheduler:
  announceInterval: 5m
  scheduleTimeout: 3s
storage:
  server:
    ip: 127.0.0.1
    tcpPort: {tcp}
    quicPort: {quic}
  dir: {d}/storage
  keep: false
health:
  server: {{ip: 127.0.0.1, port: {health}}}
metrics:
  server: {{ip: 127.0.0.1, port: {metrics}}}
stats:
  server: {{ip: 127.0.0.1, port: {stats}}}
proxy:
  server:
    ip: 127.0.0.1
    port: {proxy_port}
  rules:
    - regex: '^http://127\\.0\\.0\\.1:{origin_port}/'
      useTLS: false
      filteredQueryParams: {SAS_PARAMS}
gc:
  interval: 15m
  policy:
    taskTTL: 1h
    diskThreshold: 4GiB
    diskHighThresholdPercent: 90
    diskLowThresholdPercent: 70
"
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
