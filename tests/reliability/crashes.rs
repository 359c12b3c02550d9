//! Crashes: reader processes sharing one cache directory (each its own copy
//! of the library, as tensor-parallel ranks are) killed with SIGKILL at
//! random moments of cold fills. Afterwards no partial block is visible, no
//! lock is held, temporary files are removed by the next process that
//! starts, and a verification pass reads every byte correctly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blobcache_core::store::probe::{open_block, try_lock_block};
use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};
use blobcache_testing::fixture::{walk, Fixture, ACCOUNT as DIR_ACCOUNT, CONTAINER};
use blobcache_testing::{bytes, tempdir};

use crate::report::{self, Outcome};

/// A small random number generator with a printed seed, so a run can be
/// repeated (`BC_RELIABILITY_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("BC_RELIABILITY_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (BC_RELIABILITY_SEED={seed} repeats it)");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `blobcache cat` of `uri` with `env`, output to `out`.
fn cat(uri: &str, env: &[(&str, String)], out: &Path) -> Command {
    let mut c = Command::new(blobcache_testing::built::command());
    c.env_clear()
        .env("BLOBCACHE_LOG", "error")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["cat", uri, "--threads", "3", "--chunk", "1M", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn files_named(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v = vec![];
    walk(dir, &mut |p| {
        if pred(&p.file_name().unwrap().to_string_lossy()) {
            v.push(p.to_path_buf());
        }
    });
    v
}

/// Every published block under `cache` is whole (size, trailer, checksum)
/// and no block lock is held. Returns the number of blocks checked.
fn check_store(cache: &Path, block: u64, size: u64) -> Result<usize, String> {
    let mut n = 0;
    for p in files_named(cache, |f| f.starts_with("b.")) {
        let dir = p.parent().unwrap();
        let i: u64 = p.file_name().unwrap().to_string_lossy()[2..]
            .parse()
            .map_err(|_| format!("odd block name {}", p.display()))?;
        let len = (size - i * block).min(block);
        match open_block(dir, i, len) {
            Ok(Some(b)) if b.verify() => n += 1,
            Ok(Some(_)) => return Err(format!("{} does not match its checksum", p.display())),
            Ok(None) => {}
            Err(e) => return Err(format!("partial or damaged block visible: {e}")),
        }
        match try_lock_block(&dir.join("lock"), 0o600, i) {
            Ok(Some(_)) => {}
            other => {
                return Err(format!(
                    "lock of {} held or broken: {:?}",
                    p.display(),
                    other.is_ok()
                ))
            }
        }
    }
    Ok(n)
}

struct Origin<'a> {
    name: &'a str,
    uri: String,
    env: Vec<(&'static str, String)>,
    block: u64,
}

/// Rounds of `procs` readers of one cold blob each, every reader killed
/// when the fill has published a random number of the blob's blocks; then a
/// verification pass over every blob.
fn kill_rounds(
    origin: &[Origin<'_>],
    size: usize,
    procs: usize,
    cache: &Path,
    tmp: &Path,
    test: &str,
) {
    let mut rng = Rng::from_env("crashes");
    for o in origin {
        // How long an uninterrupted cold fill takes (its own cache).
        let cal_dir = tmp.join(format!("calibrate-{}", o.name));
        let mut env = o.env.clone();
        env.push(("BLOBCACHE_DIR", cal_dir.display().to_string()));
        let t0 = Instant::now();
        let out = tmp.join("cal.out");
        let r = cat(&o.uri.replace("{round}", "0"), &env, &out)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let fill = t0.elapsed();
        let _ = std::fs::remove_dir_all(&cal_dir);
        eprintln!("{}: a cold fill takes {fill:?}", o.name);
        let mut env = o.env.clone();
        env.push(("BLOBCACHE_DIR", cache.display().to_string()));
        let rounds = o.uri_rounds();
        let mut outcome = Outcome::default();
        let (mut mid_fill, mut tmp_seen, mut blocks_seen) = (0u64, 0usize, 0usize);
        for round in 1..=rounds {
            let uri = o.uri.replace("{round}", &round.to_string());
            // Each reader is killed when the fill has published a random
            // fraction of the blob's blocks (or at a random moment within
            // a cold fill's time, if the fill is slower to show progress).
            let blocks = (size as u64).div_ceil(o.block);
            let base = files_named(cache, |f| f.starts_with("b.")).len() as u64;
            let mut kids: Vec<(Child, u64, Duration)> = (0..procs)
                .map(|p| {
                    let out = tmp.join(format!("out-{p}"));
                    let at = Duration::from_micros(rng.below(fill.as_micros() as u64));
                    (
                        cat(&uri, &env, &out).spawn().unwrap(),
                        rng.below(blocks),
                        at,
                    )
                })
                .collect();
            kids.sort_by_key(|(_, target, _)| *target);
            let t0 = Instant::now();
            for (kid, target, at) in &mut kids {
                loop {
                    let published = files_named(cache, |f| f.starts_with("b.")).len() as u64 - base;
                    if published >= *target
                        || t0.elapsed() >= 4 * *at + fill
                        || kid.try_wait().unwrap().is_some()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                if kid.try_wait().unwrap().is_none() {
                    mid_fill += 1;
                }
                kid.kill().unwrap(); // SIGKILL
                let status = kid.wait().unwrap();
                outcome.tried += 1;
                use std::os::unix::process::ExitStatusExt;
                if status.signal().is_none() && !status.success() {
                    outcome.other(format!(
                        "round {round}: a reader failed before the kill: {status}"
                    ));
                }
            }
            // Right after the kills: what is visible is whole.
            tmp_seen += files_named(cache, |f| f.starts_with("tmp.")).len();
            match check_store(cache, o.block, size as u64) {
                Ok(n) => blocks_seen = n,
                Err(e) => outcome.other(format!("round {round}: {e}")),
            }
        }
        // Verification: every blob, every byte, by a fresh process each.
        let mut verified = 0;
        for round in 1..=rounds {
            let uri = o.uri.replace("{round}", &round.to_string());
            let out = tmp.join("verify.out");
            let t0 = Instant::now();
            let r = cat(&uri, &env, &out).output().unwrap();
            if !r.status.success() {
                outcome.other(format!(
                    "verification of round {round} failed: {}",
                    String::from_utf8_lossy(&r.stderr)
                ));
            } else if std::fs::read(&out).unwrap() != bytes(round * 1000 + o.seed_base(), size) {
                outcome.other(format!("verification of round {round}: WRONG BYTES"));
            } else {
                verified += 1;
            }
            // A stale lock would make it wait for the lock timeout.
            if t0.elapsed() > Duration::from_secs(8) {
                outcome.other(format!(
                    "verification of round {round} took {:?} (stale lock?)",
                    t0.elapsed()
                ));
            }
        }
        let tmp_left = files_named(cache, |f| f.starts_with("tmp.")).len();
        let meta_tmp_left = files_named(cache, |f| f.starts_with(".meta.")).len();
        if tmp_left > 0 {
            outcome.other(format!(
                "{tmp_left} block temporaries left after the verification pass"
            ));
        }
        if let Err(e) = check_store(cache, o.block, size as u64) {
            outcome.other(format!("after verification: {e}"));
        }
        // Every kill ended in correct bytes for the blob it was filling.
        outcome.correct = if outcome.other == 0 { outcome.tried } else { 0 };
        outcome.note(format!(
            "{mid_fill} of {} kills hit a running fill; {tmp_seen} block temporaries seen right after kills, {tmp_left} left after the next start; {meta_tmp_left} meta temporaries (removed after a minute); {blocks_seen} whole blocks visible after the last round; {verified} of {rounds} blobs verified byte for byte",
            outcome.tried
        ));
        report::record(
            "crash",
            &format!(
                "kill -9 at a random moment of a cold fill ({} origin, {procs} processes sharing the cache)",
                o.name
            ),
            &outcome,
            test,
        );
        report::assert_clean(o.name, &outcome);
        assert!(
            mid_fill * 2 >= outcome.tried,
            "most kills should hit a running fill ({mid_fill} of {})",
            outcome.tried
        );
    }
}

impl Origin<'_> {
    fn uri_rounds(&self) -> u64 {
        if self.name == "directory" {
            16
        } else {
            8
        }
    }

    fn seed_base(&self) -> u64 {
        if self.name == "directory" {
            0
        } else {
            500
        }
    }
}

#[test]
fn readers_killed_at_random_moments_of_cold_fills_leave_nothing_wrong() {
    let size = 24 << 20;
    let tmp = tempdir("crashes");
    // Directory origin: a new cold blob per round.
    let fx = Fixture::new("crashes");
    for round in 0..=16u64 {
        fx.put(&format!("m{round}"), &bytes(round * 1000, size));
    }
    let dir_env = vec![
        (
            "BLOBCACHE_ORIGIN",
            format!("file://{}", fx.origin.path().display()),
        ),
        ("BLOBCACHE_BLOCK_SIZE", "256K".to_string()),
        ("BLOBCACHE_FETCH_CONCURRENCY", "2".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "3s".to_string()),
    ];
    // Azure origin (Azurite): kills land in HTTP transfers too.
    let az = Azurite::start();
    az.create_container("crash");
    for round in 0..=8u64 {
        az.put(
            "crash",
            &format!("m{round}"),
            &bytes(round * 1000 + 500, size),
        );
    }
    let az_env = vec![
        ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".to_string()),
        ("BLOBCACHE_FETCH_CONCURRENCY", "4".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "3s".to_string()),
    ];
    let origins = [
        Origin {
            name: "directory",
            uri: format!("az://{DIR_ACCOUNT}/{CONTAINER}/m{{round}}"),
            env: dir_env,
            block: 256 << 10,
        },
        Origin {
            name: "Azure",
            uri: format!("az://{ACCOUNT}/crash/m{{round}}"),
            env: az_env,
            block: 1 << 20,
        },
    ];
    for o in &origins {
        let cache = tmp.path().join(format!("cache-{}", o.name));
        kill_rounds(
            std::slice::from_ref(o),
            size,
            3,
            &cache,
            tmp.path(),
            "crashes::readers_killed_at_random_moments_of_cold_fills_leave_nothing_wrong",
        );
    }
}
