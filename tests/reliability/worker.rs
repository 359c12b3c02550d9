//! Child processes: this test binary run again with `BC_WORKER` naming what
//! to do. Results come back as `BC_RESULT key=value ...` lines on stdout,
//! error messages as `BC_ERR ...` lines (the security tests scan them).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use blobcache_testing::bytes;

use crate::report::Outcome;

/// A blob the worker reads and checks: names, and the fixture seed and size
/// that make its bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub account: String,
    pub container: String,
    pub name: String,
    pub seed: u64,
    pub size: usize,
}

impl Blob {
    pub fn new(account: &str, container: &str, name: &str, seed: u64, size: usize) -> Blob {
        Blob {
            account: account.into(),
            container: container.into(),
            name: name.into(),
            seed,
            size,
        }
    }

    pub fn data(&self) -> Vec<u8> {
        bytes(self.seed, self.size)
    }
}

fn encode_blobs(blobs: &[Blob]) -> String {
    blobs
        .iter()
        .map(|b| {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                b.account, b.container, b.name, b.seed, b.size
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_blobs(s: &str) -> Vec<Blob> {
    s.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Blob::new(
                f[0],
                f[1],
                f[2],
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

/// A command running worker `mode` over `blobs`, with `env` (and nothing
/// of ours from the parent's environment).
pub fn command(mode: &str, blobs: &[Blob], env: &[(String, String)]) -> Command {
    command_with(None, mode, blobs, env)
}

/// The same, started through `wrapper` (e.g. `unshare -m`).
pub fn command_with(
    wrapper: Option<&[&str]>,
    mode: &str,
    blobs: &[Blob],
    env: &[(String, String)],
) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(["worker::entry", "--exact", "--ignored", "--nocapture"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BC_WORKER", mode)
        .env("BC_W_BLOBS", encode_blobs(blobs))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs a worker and returns its output; panics if it did not finish in
/// `limit` (a hang) or did not report.
pub fn run(mut cmd: Command, limit: Duration) -> (Output, Results) {
    let child = cmd.spawn().expect("start worker");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("worker did not finish within {limit:?} (hang or deadlock)");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let results = Results::parse(&stdout);
    (out, results)
}

/// Reads the `BC_RESULT` and `BC_ERR` lines of a worker's stdout.
pub fn parse_results(stdout: &str) -> Results {
    Results::parse(stdout)
}

pub fn blobs_from_env_pub() -> Vec<Blob> {
    blobs_from_env()
}

/// `BC_RESULT` values and `BC_ERR` messages of a worker.
#[derive(Debug, Default)]
pub struct Results {
    pub values: std::collections::HashMap<String, String>,
    pub errors: Vec<String>,
    pub reported: bool,
}

impl Results {
    fn parse(stdout: &str) -> Results {
        let mut r = Results::default();
        for l in stdout.lines() {
            if let Some(rest) = l.strip_prefix("BC_RESULT ") {
                r.reported = true;
                for kv in rest.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        r.values.insert(k.into(), v.into());
                    }
                }
            } else if let Some(m) = l.strip_prefix("BC_ERR ") {
                r.errors.push(m.to_string());
            }
        }
        r
    }

    pub fn u64(&self, k: &str) -> u64 {
        self.values
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("worker reported no {k}: {:?}", self.values))
    }

    pub fn outcome(&self) -> Outcome {
        let mut o = Outcome {
            tried: self.u64("tried"),
            correct: self.u64("correct"),
            clean_error: self.u64("clean"),
            other: self.u64("other"),
            notes: vec![],
        };
        if let Some(n) = self.values.get("notes") {
            if !n.is_empty() {
                o.notes.push(n.replace('_', " "));
            }
        }
        o
    }
}

pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Thread names, for a message when the count is off.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect()
}

// The shared library, loaded as the streamer loads it.
pub use blobcache_testing::cdylib::lib;

/// The loaded library's `shutdown`.
pub fn shutdown() {
    lib().shutdown();
}

/// One call of the loaded library's `blob_read` with the streamer's
/// 512-byte error buffer.
pub fn read(b: &Blob, offset: usize, buf: &mut [u8]) -> Result<(), String> {
    let names = blobcache_testing::cdylib::Blob::new(&b.account, &b.container, &b.name);
    lib().read(&names, offset as u64, buf)
}

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn blobs_from_env() -> Vec<Blob> {
    decode_blobs(&std::env::var("BC_W_BLOBS").unwrap_or_default())
}

/// Prints an outcome as the `BC_RESULT` line the parent reads.
pub fn print_result(o: &Outcome) {
    result_line(o, &[]);
}

fn result_line(o: &Outcome, extra: &[(&str, String)]) {
    let mut line = format!(
        "BC_RESULT tried={} correct={} clean={} other={}",
        o.tried, o.correct, o.clean_error, o.other
    );
    for (k, v) in extra {
        line.push_str(&format!(" {k}={v}"));
    }
    line.push_str(&format!(
        " notes={}",
        o.notes.join("; ").replace(char::is_whitespace, "_")
    ));
    println!("{line}");
}

#[test]
#[ignore = "the entry point of child processes that other tests start"]
fn entry() {
    let Ok(mode) = std::env::var("BC_WORKER") else {
        return;
    };
    match mode.as_str() {
        "trials" => trials(),
        "reads" => reads(),
        "soak" => crate::soak::worker(),
        "read" => read_all(),
        m if m.starts_with("map-") => crate::mappings::worker(m),
        m if m.starts_with("peer-") => crate::peers::worker(m),
        m if m.starts_with("bound-") => crate::bounds::worker(m),
        m if m.starts_with("disk-") => crate::disk::worker(m),
        other => panic!("unknown worker mode {other}"),
    }
}

/// Each blob read whole once, in one lifecycle, with the environment as
/// given (a cache directory of the parent's choosing). A failure is clean
/// when it carries a message; the parent judges its text (`BC_ERR`).
fn reads() {
    let mut o = Outcome::default();
    for b in blobs_from_env() {
        let mut buf = vec![0x5Au8; b.size];
        o.tried += 1;
        match read(&b, 0, &mut buf) {
            Ok(()) if buf == b.data() => o.correct += 1,
            Ok(()) => o.other(format!("{}: WRONG BYTES", b.name)),
            Err(m) => {
                println!("BC_ERR {m}");
                if m.contains(": blobcache: ") {
                    o.clean_error += 1;
                } else {
                    o.other(format!("{}: unclear message {m}", b.name));
                }
            }
        }
    }
    shutdown();
    print_result(&o);
}

/// `BC_W_TRIALS` cold reads, each of a whole blob (in turn) into a fresh
/// cache directory (`BC_W_DIR_BASE/trial-<i>`), each in a lifecycle of its
/// own (`shutdown` after it). A failure is clean when its message is there
/// and it came within `BC_W_BOUND_MS`. After the last `shutdown` the
/// thread and descriptor counts must be back where they were before the
/// first read.
fn trials() {
    let blobs = blobs_from_env();
    let n = env_u64("BC_W_TRIALS", 1);
    let bound = Duration::from_millis(env_u64("BC_W_BOUND_MS", 60_000));
    let base = std::env::var("BC_W_DIR_BASE").unwrap();
    let truths: Vec<Vec<u8>> = blobs.iter().map(Blob::data).collect();
    lib();
    let (threads0, fds0) = (thread_count(), fd_count());
    let mut o = Outcome::default();
    let (mut slowest_ok, mut slowest_err) = (Duration::ZERO, Duration::ZERO);
    for i in 0..n as usize {
        // No library thread runs between lifecycles: the environment is
        // ours to change, and the next read reads it.
        std::env::set_var("BLOBCACHE_DIR", format!("{base}/trial-{i}"));
        let b = &blobs[i % blobs.len()];
        let mut buf = vec![0x5Au8; b.size];
        let t0 = Instant::now();
        let r = read(b, 0, &mut buf);
        let took = t0.elapsed();
        o.tried += 1;
        match r {
            Ok(()) if buf == truths[i % blobs.len()] => {
                o.correct += 1;
                slowest_ok = slowest_ok.max(took);
            }
            Ok(()) => o.other(format!("trial {i}: WRONG BYTES")),
            Err(m) => {
                println!("BC_ERR {m}");
                slowest_err = slowest_err.max(took);
                if !m.contains(": blobcache: ") {
                    o.other(format!("trial {i}: unclear message {m}"));
                } else if took > bound {
                    o.other(format!("trial {i}: failed after {took:?}, bound {bound:?}"));
                } else {
                    o.clean_error += 1;
                }
            }
        }
        shutdown();
    }
    let (threads1, fds1) = (thread_count(), fd_count());
    if threads1 != threads0 {
        o.other(format!(
            "{} threads after shutdown, {threads0} before: {:?}",
            threads1,
            thread_names()
        ));
    }
    if fds1 != fds0 {
        o.other(format!("{fds1} descriptors after shutdown, {fds0} before"));
    }
    result_line(
        &o,
        &[
            ("slowest_ok_ms", slowest_ok.as_millis().to_string()),
            ("slowest_err_ms", slowest_err.as_millis().to_string()),
            ("threads", format!("{threads0}->{threads1}")),
            ("fds", format!("{fds0}->{fds1}")),
        ],
    );
}

/// Reads every blob of `BC_W_BLOBS` whole, front to back in pieces of
/// `BC_W_CHUNK` bytes (default 8 MiB, the streamer's chunk), and checks the
/// bytes. Reports the outcome and `ms`, the time the reads took.
fn read_all() {
    let blobs = blobs_from_env();
    let chunk = env_u64("BC_W_CHUNK", 8 << 20) as usize;
    let t0 = Instant::now();
    let mut o = Outcome::default();
    for b in &blobs {
        o.tried += 1;
        match read_whole(b, chunk) {
            Ok(true) => o.correct += 1,
            Ok(false) => o.other(format!("{}: WRONG BYTES", b.name)),
            Err(m) => {
                println!("BC_ERR {m}");
                o.clean_error += 1;
            }
        }
    }
    result_line(&o, &[("ms", t0.elapsed().as_millis().to_string())]);
}

/// Reads blob `b` whole in pieces of `chunk` bytes through the library;
/// whether the bytes were right, or the first failure's message.
pub fn read_whole(b: &Blob, chunk: usize) -> Result<bool, String> {
    let truth = b.data();
    let mut buf = vec![0u8; chunk.min(b.size).max(1)];
    let mut off = 0;
    while off < b.size {
        let n = chunk.min(b.size - off);
        buf[..n].fill(0x5A);
        read(b, off, &mut buf[..n])?;
        if buf[..n] != truth[off..off + n] {
            return Ok(false);
        }
        off += n;
    }
    Ok(true)
}

/// The environment value `k` as a number (or `default`).
pub fn env_num(k: &str, default: u64) -> u64 {
    env_u64(k, default)
}

/// Prints the `BC_RESULT` line with extra values.
pub fn print_result_with(o: &Outcome, extra: &[(&str, String)]) {
    result_line(o, extra);
}
