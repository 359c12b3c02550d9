//! Processes sharing one cache directory: a filler that stops (SIGSTOP, a
//! debugger, a frozen container) never fails another's load; a filler that
//! forked a child that does not exec and is then killed does not leave its
//! lock held by the child; processes with different block sizes do not wipe
//! each other's copies.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::{Fault, Gate, Proxy};
use blobcache_testing::{tempdir, Fixture, TempDir};

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

/// `peer-fork-filler`: reads its one blob on a thread; once that read's fill
/// has begun (a temporary block file exists), forks a child that does not
/// exec and only sleeps, prints `BC_CHILD <pid>`, and waits to be killed.
pub fn worker(mode: &str) {
    assert_eq!(mode, "peer-fork-filler");
    let dir = std::env::var("BLOBCACHE_DIR").unwrap();
    let blobs = worker::blobs_from_env_pub();
    let b = blobs[0].clone();
    std::thread::spawn(move || {
        let _ = worker::read_whole(&b, 8 << 20);
    });
    let t0 = Instant::now();
    while temporaries(Path::new(&dir)).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no fill began");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: the child only sleeps and exits; it touches nothing the
    // parent's other threads may hold.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::sleep(120);
            libc::_exit(0);
        }
    }
    println!("BC_CHILD {pid}");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    blobcache_testing::fixture::walk(dir, &mut |p| {
        if p.file_name().unwrap().to_string_lossy().starts_with("tmp.") {
            v.push(p.to_path_buf());
        }
    });
    v
}

fn lock_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    blobcache_testing::fixture::walk(dir, &mut |p| {
        if p.file_name().unwrap() == "lock" {
            v.push(p.to_path_buf());
        }
    });
    v
}

fn azure_env(proxy: &Proxy, cache: &Path, timeout: &str) -> Vec<(String, String)> {
    [
        ("BLOBCACHE_AZURE_ENDPOINT", proxy.template()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ("BLOBCACHE_DIR", cache.display().to_string()),
        ("BLOBCACHE_READAHEAD", "0".into()),
        ("BLOBCACHE_FETCH_TIMEOUT", timeout.into()),
        ("BLOBCACHE_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Azurite holding `blob` behind a proxy whose next GET pauses after
/// 100 000 bytes (until the gate opens), a cache directory, and the
/// library's environment for both with `timeout` as the fetch timeout.
fn with_paused_get(
    blob: Blob,
    timeout: &str,
) -> (Azurite, Proxy, Blob, TempDir, Vec<(String, String)>, Gate) {
    let az = Azurite::start();
    az.create_container(&blob.container);
    az.put(&blob.container, &blob.name, &blob.data());
    let proxy = Proxy::start(az.port);
    let cache = tempdir("peers");
    let env = azure_env(&proxy, cache.path(), timeout);
    let gate = Gate::default();
    proxy.inject(
        "GET",
        Fault::PauseBody {
            after: 100_000,
            gate: gate.clone(),
        },
    );
    (az, proxy, blob, cache, env, gate)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn a_stopped_filler_never_fails_another_process_load() {
    // 6 s: readers fall back after a sixth of it without progress (1 s).
    // The filler's GET is held by the proxy; then the filler is stopped,
    // holding the block's lock.
    let (_az, _proxy, blob, _cache, env, gate) =
        with_paused_get(Blob::new(ACCOUNT, "peers", "stuck.bin", 310, 6 << 20), "6s");
    let filler = worker::command("read", std::slice::from_ref(&blob), &env)
        .spawn()
        .unwrap();
    assert!(
        gate.wait_paused(Duration::from_secs(30)),
        "the fill never began"
    );
    signal(filler.id() as i32, libc::SIGSTOP);

    let t0 = Instant::now();
    let (out, res) = worker::run(
        worker::command("read", std::slice::from_ref(&blob), &env),
        Duration::from_secs(60),
    );
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    signal(filler.id() as i32, libc::SIGCONT);
    gate.open();
    let filler_out = filler.wait_with_output().unwrap();
    let filler_res = worker::parse_results(&String::from_utf8_lossy(&filler_out.stdout));

    let mut o = res.outcome();
    if o.correct != 1 {
        o.other(format!(
            "the reader did not get the bytes: {:?}",
            res.errors
        ));
    }
    if !stderr.contains("block 0") || !stderr.contains("straight from the origin") {
        o.other(format!("no warning naming the block: {stderr}"));
    }
    if took > Duration::from_secs(6) {
        o.other(format!(
            "the reader took {took:?}, more than the fetch timeout"
        ));
    }
    if filler_res.outcome().correct != 1 {
        o.other("the filler, resumed, did not get its bytes");
    }
    o.note(format!(
        "another process's fill stopped with SIGSTOP holding the block's lock; the reader read the range straight from the origin and returned after {:.2} s (BLOBCACHE_FETCH_TIMEOUT=6s: stall bound 1 s; before: failed after 12 s)",
        took.as_secs_f64()
    ));
    report::record(
        "processes",
        "the process filling a block is stopped (SIGSTOP) holding its lock",
        &o,
        "peers::a_stopped_filler_never_fails_another_process_load",
    );
    report::assert_clean("stopped filler", &o);
    assert_eq!(o.correct, 1, "{:?}", o.notes);
}

#[test]
fn a_killed_filler_forked_child_does_not_keep_its_lock() {
    let (_az, _proxy, blob, cache, env, gate) = with_paused_get(
        Blob::new(ACCOUNT, "peers", "forked.bin", 311, 3 << 20),
        "30s",
    );
    let mut cmd = worker::command("peer-fork-filler", std::slice::from_ref(&blob), &env);
    cmd.stderr(Stdio::null());
    let mut filler = cmd.spawn().unwrap();
    let stdout = filler.stdout.take().unwrap();
    let mut child_pid = 0i32;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("BC_CHILD ") {
            child_pid = p.trim().parse().unwrap();
            break;
        }
    }
    assert!(child_pid > 0, "the filler did not fork");
    // The parent dies holding the lock; its child lives on.
    signal(filler.id() as i32, libc::SIGKILL);
    let _ = filler.wait();
    let locks = lock_files(cache.path());
    assert_eq!(locks.len(), 1, "{locks:?}");
    let t0 = Instant::now();
    let mut freed = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_l)) = blobcache_core::store::probe::try_lock_block(&locks[0], 0o600, 0) {
            freed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // And another process fills the block itself, at once.
    let t1 = Instant::now();
    let (out, res) = worker::run(
        worker::command("read", std::slice::from_ref(&blob), &env),
        Duration::from_secs(120),
    );
    let took = t1.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    signal(child_pid, libc::SIGKILL);
    gate.open();

    let mut o = res.outcome();
    match freed {
        Some(_) => {}
        None => o.other(
            "the block's lock was still held 3 s after its filler was killed (by the forked child)",
        ),
    }
    if stderr.contains("straight from the origin") {
        o.other(format!("the reader fell back instead of filling: {stderr}"));
    }
    if o.correct != 1 {
        o.other(format!(
            "the reader did not get the bytes: {:?}",
            res.errors
        ));
    }
    o.note(format!(
        "filler forked a child that did not exec, then was killed mid-fill; the lock was free {} ms later, the next reader filled the block in {:.2} s",
        freed.map_or(-1, |d| d.as_millis() as i64),
        took.as_secs_f64()
    ));
    report::record(
        "processes",
        "filler killed mid-fill after forking a child that does not exec",
        &o,
        "peers::a_killed_filler_forked_child_does_not_keep_its_lock",
    );
    report::assert_clean("forked child", &o);
    assert_eq!(o.correct, 1, "{:?}", o.notes);
}

#[test]
fn processes_with_different_block_sizes_share_one_copy() {
    let fx = Fixture::new("peers-bs");
    let blob = Blob::new("acct", "models", "m.bin", 312, 9 << 20);
    fx.put(&blob.name, &blob.data());
    let blocks = |fx: &Fixture| -> Vec<(PathBuf, u64, u64)> {
        let mut v: Vec<_> = fx
            .cached_blocks()
            .into_iter()
            .map(|(d, i)| {
                let ino = std::fs::metadata(d.join(format!("b.{i}"))).unwrap().ino();
                (d, i, ino)
            })
            .collect();
        v.sort();
        v
    };
    let mut o = Outcome::default();
    let mut before = Vec::new();
    let mut warned = 0;
    for (n, bs) in ["1M", "4M", "1M", "64K"].iter().enumerate() {
        let (out, res) = worker::run(
            worker::command("read", std::slice::from_ref(&blob), &fx.env(bs)),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        o.add(&res.outcome());
        let now = blocks(&fx);
        if n == 0 {
            before = now;
            if before.len() != 9 {
                o.other(format!("{} blocks after the first load", before.len()));
            }
        } else {
            if now != before {
                o.other(format!(
                    "load {n} with BLOBCACHE_BLOCK_SIZE={bs} changed the cached blocks"
                ));
            }
            if *bs != "1M" {
                if stderr.contains("BLOBCACHE_BLOCK_SIZE asks for")
                    && stderr.contains("using 1048576")
                {
                    warned += 1;
                } else {
                    o.other(format!(
                        "no warning for BLOBCACHE_BLOCK_SIZE={bs}: {stderr}"
                    ));
                }
            }
        }
    }
    o.note(format!(
        "loads with BLOBCACHE_BLOCK_SIZE 1M, 4M, 1M, 64K on one directory: every load after the first served by the first's 9 blocks, {warned} warnings naming both sizes"
    ));
    report::record(
        "processes",
        "processes sharing a directory with different BLOBCACHE_BLOCK_SIZE",
        &o,
        "peers::processes_with_different_block_sizes_share_one_copy",
    );
    report::assert_clean("block sizes", &o);
    assert_eq!(o.correct, 4, "{:?}", o.notes);
}
