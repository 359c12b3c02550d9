//! Every wait has a bound, for every origin, and offline means offline:
//! a directory origin on a hung filesystem (an `open` that never returns,
//! as on a dead NFS server) fails reads within `BLOBCACHE_FETCH_TIMEOUT`
//! and `shutdown()` still returns at once; with `BLOBCACHE_OFFLINE=1` a
//! range that is not cached fails at once, and the origin sees nothing.

use std::ffi::CString;
use std::time::{Duration, Instant};

use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::Proxy;
use blobcache_testing::{tempdir, Fixture};

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

/// `bound-hung`: reads block 0 of its blob (1 MiB blocks), then replaces
/// the origin file by a FIFO with no writer (opening it blocks in the
/// kernel, as a file on a dead network filesystem does), then reads
/// further blocks (each must fail within the bound), then calls
/// `shutdown` and times it. Reports `slowest_ms` and `shutdown_ms`.
pub fn worker(mode: &str) {
    assert_eq!(mode, "bound-hung");
    let blobs = worker::blobs_from_env_pub();
    let b = &blobs[0];
    let file = std::env::var("BC_W_FILE").unwrap();
    let bound = Duration::from_millis(worker::env_num("BC_W_BOUND_MS", 5000));
    let mut o = Outcome::default();
    let mut buf = vec![0u8; 1 << 20];
    o.tried += 1;
    match worker::read(b, 0, &mut buf) {
        Ok(()) if buf[..] == b.data()[..1 << 20] => o.correct += 1,
        r => o.other(format!("the first read: {r:?}")),
    }
    std::fs::remove_file(&file).unwrap();
    let c = CString::new(file.as_str()).unwrap();
    // SAFETY: a valid path; creates a FIFO.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut slowest = Duration::ZERO;
    for i in 1..4usize {
        o.tried += 1;
        let t0 = Instant::now();
        let r = worker::read(b, i << 20, &mut buf);
        let took = t0.elapsed();
        slowest = slowest.max(took);
        match r {
            Err(m)
                if took <= bound && (m.contains("did not answer") || m.contains("still stuck")) =>
            {
                println!("BC_ERR {m}");
                o.clean_error += 1;
            }
            Err(m) => o.other(format!("read {i}: after {took:?}: {m}")),
            Ok(()) => o.other(format!("read {i} succeeded from a FIFO")),
        }
    }
    let t0 = Instant::now();
    worker::shutdown();
    let shutdown_took = t0.elapsed();
    if shutdown_took > Duration::from_millis(1500) {
        o.other(format!("shutdown took {shutdown_took:?}"));
    }
    worker::print_result_with(
        &o,
        &[
            ("slowest_ms", slowest.as_millis().to_string()),
            ("shutdown_ms", shutdown_took.as_millis().to_string()),
        ],
    );
    // The stuck threads end with the process.
    std::process::exit(0);
}

#[test]
fn reads_from_a_hung_directory_origin_fail_in_time_and_shutdown_returns_at_once() {
    let fx = Fixture::new("bound-hung");
    let blob = Blob::new("acct", "models", "m.bin", 320, 4 << 20);
    fx.put(&blob.name, &blob.data());
    let mut env = fx.env("1M");
    env.push(("BLOBCACHE_FETCH_TIMEOUT".into(), "2s".into()));
    env.push(("BLOBCACHE_READAHEAD".into(), "0".into()));
    env.push(("BLOBCACHE_LOG".into(), "error".into()));
    env.push((
        "BC_W_FILE".into(),
        fx.blob_path(&blob.name).display().to_string(),
    ));
    // The fetch timeout, and a second for the rest.
    env.push(("BC_W_BOUND_MS".into(), "3000".into()));
    let (out, res) = worker::run(
        worker::command("bound-hung", std::slice::from_ref(&blob), &env),
        Duration::from_secs(60),
    );
    assert!(res.reported, "{}", String::from_utf8_lossy(&out.stderr));
    let mut o = res.outcome();
    o.note(format!(
        "origin file replaced by a FIFO with no writer (open blocks in the kernel); BLOBCACHE_FETCH_TIMEOUT=2s: slowest failed read {} ms, shutdown() returned in {} ms",
        res.u64("slowest_ms"),
        res.u64("shutdown_ms")
    ));
    report::record(
        "origin",
        "directory origin on a hung filesystem (open never returns)",
        &o,
        "bounds::reads_from_a_hung_directory_origin_fail_in_time_and_shutdown_returns_at_once",
    );
    report::assert_clean("hung origin", &o);
    assert_eq!((o.correct, o.clean_error), (1, 3), "{:?}", res.errors);
}

#[test]
fn offline_never_contacts_the_origin_and_fails_at_once() {
    let az = Azurite::start();
    az.create_container("off");
    let blob = Blob::new(ACCOUNT, "off", "part.bin", 321, 3 << 20);
    az.put("off", &blob.name, &blob.data());
    let proxy = Proxy::start(az.port);
    let cache = tempdir("offline");
    let mut env: Vec<(String, String)> = [
        ("BLOBCACHE_AZURE_ENDPOINT", proxy.template()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ("BLOBCACHE_DIR", cache.path().display().to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".into()),
        ("BLOBCACHE_READAHEAD", "0".into()),
        ("BLOBCACHE_LOG", "error".into()),
        ("BC_W_CHUNK", (1 << 20).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Fill the whole blob, then remove blocks 1 and 2: partly cached.
    let (_, res) = worker::run(
        worker::command("read", std::slice::from_ref(&blob), &env),
        Duration::from_secs(60),
    );
    assert_eq!(res.outcome().correct, 1, "{:?}", res.errors);
    // Remove blocks 1 and 2 from the cache: the blob is partly cached.
    let mut removed = 0;
    blobcache_testing::fixture::walk(cache.path(), &mut |p| {
        let n = p.file_name().unwrap().to_string_lossy();
        if n == "b.1" || n == "b.2" {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    });
    assert_eq!(removed, 2);
    let requests = proxy.requests();
    env.push(("BLOBCACHE_OFFLINE".into(), "1".into()));
    let t0 = Instant::now();
    let (out, res) = worker::run(
        worker::command("read", std::slice::from_ref(&blob), &env),
        Duration::from_secs(60),
    );
    let took = t0.elapsed();
    let mut o = Outcome {
        tried: 1,
        ..Default::default()
    };
    let err = res.errors.first().cloned().unwrap_or_default();
    let sent = proxy.requests() - requests;
    if sent != 0 {
        o.other(format!("{sent} requests reached the origin while offline"));
    } else if !(err.contains("not in the cache") && err.contains("BLOBCACHE_OFFLINE")) {
        o.other(format!(
            "unclear error: {err:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    } else if took > Duration::from_secs(2) {
        o.other(format!("the failure took {took:?}"));
    } else {
        o.clean_error += 1;
    }
    o.note(format!(
        "blob with block 0 of 3 cached, BLOBCACHE_OFFLINE=1: {sent} requests reached the origin, the read of block 1 failed after {} ms saying it is not cached",
        took.as_millis()
    ));
    report::record(
        "origin",
        "BLOBCACHE_OFFLINE=1 with a partly cached blob",
        &o,
        "bounds::offline_never_contacts_the_origin_and_fails_at_once",
    );
    report::assert_clean("offline", &o);
    assert_eq!(o.clean_error, 1, "{:?}", o.notes);
}
