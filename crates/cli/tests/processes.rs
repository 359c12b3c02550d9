//! Several processes sharing one cache directory, each with its own copy of
//! the library (as tensor-parallel ranks are): fill once, crash safety, and
//! what the library writes to stdout and stderr.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blobcache_testing::fixture::{bytes, Fixture, ACCOUNT, CONTAINER};

fn cat(fx: &Fixture, blob: &str, block: &str, out: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blobcache"));
    c.args([
        "cat",
        &format!("az://{ACCOUNT}/{CONTAINER}/{blob}"),
        "--threads",
        "4",
        "--chunk",
        "3M",
        "--out",
    ])
    .arg(out)
    .envs(fx.env(block))
    .env("BLOBCACHE_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn json_u64(json: &str, field: &str) -> u64 {
    let pat = format!("\"{field}\":");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{field} missing in {json}"))
        + pat.len();
    json[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn four_processes_reading_one_cold_blob_fetch_each_block_once() {
    let fx = Fixture::new("proc-once");
    let data = bytes(1, 48 << 20);
    fx.put("model.safetensors", &data);
    let outs: Vec<_> = (0..4)
        .map(|i| {
            fx.cache
                .path()
                .join(format!("../out-{}-{i}", std::process::id()))
        })
        .collect();
    let children: Vec<Child> = outs
        .iter()
        .map(|o| {
            cat(&fx, "model.safetensors", "1M", o)
                .arg("--stats")
                .spawn()
                .unwrap()
        })
        .collect();
    let mut fetched = 0;
    for (child, out) in children.into_iter().zip(&outs) {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The counters: --stats prints them on stderr.
        let json = String::from_utf8(o.stderr).unwrap();
        fetched += json_u64(&json, "blocks_fetched");
        assert!(
            std::fs::read(out).unwrap() == data,
            "process output differs from the blob"
        );
        std::fs::remove_file(out).unwrap();
    }
    assert_eq!(
        fetched, 48,
        "48 blocks of 1 MiB were fetched {fetched} times in total"
    );
}

#[test]
fn processes_killed_at_random_moments_never_leave_wrong_bytes_behind() {
    let fx = Fixture::new("proc-kill");
    let data = bytes(2, 64 << 20);
    fx.put("m", &data);
    let sink = fx
        .cache
        .path()
        .join(format!("../kill-out-{}", std::process::id()));
    let mut seed = 0x1234_5678u64;
    for round in 0..6 {
        let mut kids: Vec<Child> = (0..3)
            .map(|_| cat(&fx, "m", "256K", &sink).spawn().unwrap())
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(5 + (seed >> 33) % 60));
        for k in &mut kids {
            let _ = k.kill(); // SIGKILL
            let _ = k.wait();
        }
        eprintln!("round {round}: killed 3 readers");
    }
    // A fresh process reads every byte correctly, and the store is clean.
    let out = fx
        .cache
        .path()
        .join(format!("../verify-{}", std::process::id()));
    let o = cat(&fx, "m", "256K", &out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "wrong bytes after crashes"
    );
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&sink);
    let tmp: Vec<_> = fx
        .cache_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/tmp."))
        .collect();
    assert!(tmp.is_empty(), "temporary files left behind: {tmp:?}");
}

#[test]
fn the_library_never_writes_to_stdout_and_logs_one_prefixed_line_per_event() {
    let fx = Fixture::new("proc-log");
    fx.put("m", &bytes(3, 1 << 20));
    let out = fx.cache.path().join("out");
    // The cache directory set up with 64 KiB blocks, then read asking for
    // 256 KiB ones: the library warns (once) and follows the directory.
    let o = cat(&fx, "m", "64K", &out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cat(&fx, "m", "256K", &out)
        .env("BLOBCACHE_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        stdout, "",
        "the bytes went to --out; nothing else belongs on stdout"
    );
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("blobcache: warn: "), "{stderr}");
    assert!(stderr.contains("blobcache: debug: "), "{stderr}");
    for line in stderr.lines() {
        assert!(
            line.starts_with("blobcache: "),
            "unprefixed stderr line: {line}"
        );
    }
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("BLOBCACHE_BLOCK_SIZE asks for"))
        .count();
    assert_eq!(warnings, 1, "one warning, not one per read: {stderr}");
}
