//! Network faults between the library and Azurite, injected by the loopback
//! proxy (crates/testing/src/proxy.rs): resets and truncated bodies mid-way,
//! bursts of 500, 503 and 429 with Retry-After, stalls longer than the
//! timeout, slow trickles. Under each, cold reads of whole blobs through the
//! exported `blob_read` (in a child process, one lifecycle per read) return
//! the right bytes, or fail with a clear message within the bound that
//! `BLOBCACHE_FETCH_TIMEOUT` sets; and after `shutdown` the child has the
//! threads and descriptors it had before its first read.

use std::time::Duration;

use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::{Fault, Proxy};
use blobcache_testing::tempdir;

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

/// Three blobs of one and a half blocks (1 MiB blocks): each read is a HEAD
/// and two ranged GETs in parallel.
fn setup() -> (Azurite, Proxy, Vec<Blob>) {
    let az = Azurite::start();
    az.create_container("faults");
    let blobs: Vec<Blob> = (0..3)
        .map(|i| Blob::new(ACCOUNT, "faults", &format!("m{i}.bin"), 600 + i, 1_500_000))
        .collect();
    for b in &blobs {
        az.put("faults", &b.name, &b.data());
    }
    let proxy = Proxy::start(az.port);
    (az, proxy, blobs)
}

struct Case {
    name: &'static str,
    get: Vec<Option<Fault>>,
    head: Vec<Option<Fault>>,
    timeout_ms: u64,
    trials: u64,
    /// Whether reads must succeed (else they must fail cleanly).
    succeed: bool,
}

fn run_case(proxy: &Proxy, blobs: &[Blob], c: &Case, test: &str) -> Outcome {
    proxy.rule("GET", c.get.clone());
    proxy.rule("HEAD", c.head.clone());
    let dir = tempdir("faults");
    // A read is a HEAD then GETs in parallel, each bounded by the timeout;
    // one more second for everything else.
    let bound = 2 * c.timeout_ms + 1000;
    let env: Vec<(String, String)> = [
        ("BLOBCACHE_AZURE_ENDPOINT", proxy.template()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".into()),
        ("BLOBCACHE_READAHEAD", "0".into()),
        ("BLOBCACHE_FETCH_TIMEOUT", format!("{}ms", c.timeout_ms)),
        (
            "BLOBCACHE_LOG",
            std::env::var("BC_FAULTS_LOG").unwrap_or_else(|_| "error".into()),
        ),
        ("BC_W_TRIALS", c.trials.to_string()),
        ("BC_W_BOUND_MS", bound.to_string()),
        ("BC_W_DIR_BASE", dir.path().display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let limit = Duration::from_millis(c.trials * bound + 30_000);
    let (out, r) = worker::run(worker::command("trials", blobs, &env), limit);
    assert!(
        r.reported,
        "{}: the worker did not report ({}):\n{}",
        c.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut o = r.outcome();
    if o.other > 0 {
        eprintln!(
            "{}: the worker's stderr:\n{}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if c.succeed && o.clean_error > 0 {
        // These faults are all recoverable: a failure is not clean here.
        o.other += o.clean_error;
        o.clean_error = 0;
        o.note(format!("reads failed: {:?}", r.errors.first()));
    }
    if !c.succeed && o.correct > 0 {
        o.note("some reads succeeded although every request was faulted");
    }
    let slowest = if c.succeed {
        format!("slowest read {} ms", r.values["slowest_ok_ms"])
    } else {
        format!(
            "slowest failure {} ms (bound {bound} ms)",
            r.values["slowest_err_ms"]
        )
    };
    o.note(format!(
        "BLOBCACHE_FETCH_TIMEOUT={} ms; {slowest}; threads before first read -> after shutdown {}, descriptors {}",
        c.timeout_ms, r.values["threads"], r.values["fds"]
    ));
    report::record("network", c.name, &o, test);
    o
}

fn check(cases: &[Case], test: &str) {
    let (_az, proxy, blobs) = setup();
    for c in cases {
        let o = run_case(&proxy, &blobs, c, test);
        report::assert_clean(c.name, &o);
        if !c.succeed {
            assert_eq!(o.correct, 0, "{}: {:?}", c.name, o.notes);
        }
    }
}

fn status(code: u16, retry_after: Option<u64>) -> Option<Fault> {
    Some(Fault::Status { code, retry_after })
}

#[test]
fn recoverable_faults_give_the_right_bytes() {
    check(
        &[
            Case {
                name: "connection reset mid-body (every 2nd GET)",
                get: vec![Some(Fault::Reset { after: 200_000 }), None],
                head: vec![],
                timeout_ms: 10_000,
                trials: 12,
                succeed: true,
            },
            Case {
                name: "connection reset every 100 000 body bytes, on every GET (resumed each time)",
                get: vec![Some(Fault::Reset { after: 100_000 })],
                head: vec![],
                timeout_ms: 10_000,
                trials: 4,
                succeed: true,
            },
            Case {
                name: "body cut short under a correct Content-Length (every 2nd GET)",
                get: vec![Some(Fault::CutBody { after: 300_000 }), None],
                head: vec![],
                timeout_ms: 10_000,
                trials: 12,
                succeed: true,
            },
            Case {
                name: "burst of three 500s (GET), 503 on HEAD",
                get: vec![
                    status(500, None),
                    status(500, None),
                    status(500, None),
                    None,
                ],
                head: vec![status(503, None), None],
                timeout_ms: 10_000,
                trials: 12,
                succeed: true,
            },
            Case {
                name: "503 with Retry-After: 1 (every 2nd GET)",
                get: vec![status(503, Some(1)), None],
                head: vec![],
                timeout_ms: 10_000,
                trials: 4,
                succeed: true,
            },
            Case {
                name: "429 with Retry-After: 1 (every 2nd GET)",
                get: vec![status(429, Some(1)), None],
                head: vec![],
                timeout_ms: 10_000,
                trials: 4,
                succeed: true,
            },
            Case {
                name: "slow trickle: 64 KiB every 20 ms (3 MB/s)",
                get: vec![Some(Fault::Trickle {
                    chunk: 64 << 10,
                    every: Duration::from_millis(20),
                })],
                head: vec![],
                timeout_ms: 10_000,
                trials: 6,
                succeed: true,
            },
        ],
        "faults::recoverable_faults_give_the_right_bytes",
    );
}

#[test]
fn unrecoverable_faults_fail_cleanly_within_the_fetch_timeout() {
    let stall = Duration::from_secs(30);
    check(
        &[
            Case {
                name: "connection reset right after the answer's head, on every GET",
                get: vec![Some(Fault::Reset { after: 0 })],
                head: vec![],
                timeout_ms: 1000,
                trials: 4,
                succeed: false,
            },
            Case {
                name: "500 on every request",
                get: vec![status(500, None)],
                head: vec![status(500, None)],
                timeout_ms: 1000,
                trials: 4,
                succeed: false,
            },
            Case {
                name: "503 with Retry-After (30 s) beyond the fetch timeout",
                get: vec![status(503, Some(30))],
                head: vec![],
                timeout_ms: 2000,
                trials: 4,
                succeed: false,
            },
            Case {
                name: "stall before the answer, longer than the fetch timeout",
                get: vec![Some(Fault::StallHead { stall })],
                head: vec![],
                timeout_ms: 1000,
                trials: 4,
                succeed: false,
            },
            Case {
                name: "stall mid-body, longer than the fetch timeout",
                get: vec![Some(Fault::StallBody {
                    after: 100_000,
                    stall,
                })],
                head: vec![],
                timeout_ms: 1000,
                trials: 4,
                succeed: false,
            },
            Case {
                name: "trickle too slow for the fetch timeout (1 KiB every 50 ms)",
                get: vec![Some(Fault::Trickle {
                    chunk: 1024,
                    every: Duration::from_millis(50),
                })],
                head: vec![],
                timeout_ms: 1000,
                trials: 3,
                succeed: false,
            },
        ],
        "faults::unrecoverable_faults_fail_cleanly_within_the_fetch_timeout",
    );
}
