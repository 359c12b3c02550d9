//! Items 5, 7 and 8: cold loads from Azurite (one emulator, in memory, on
//! loopback, started by the tests' harness).
//!
//! 5: a host process (`bench load`, our library dlopen'd, 8 threads of 8 MiB
//!    reads, a fresh cache directory) against the best plain download of the
//!    same blob from the same Azurite: parallel 8 MiB ranged GETs into
//!    memory at several concurrency levels, interleaved with it.
//! 7: 4 host processes sharing a fresh cache directory start together and
//!    each load the whole blob; the counting proxy in front of Azurite adds
//!    up the bytes of every answer.
//! 8: one host process loading a larger blob; its memory before and during.

use std::process::{Command, Stdio};
use std::time::Instant;

use blobcache_testing::azurite::{plain_ranged_download, Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::Proxy;
use blobcache_testing::{bytes, tempdir, TempDir};

use crate::{self_exe, Args, Json, Summary};

const CONTAINER: &str = "bench";
const MODEL_SEED: u64 = 16;
const BIG_SEED: u64 = 17;

pub fn run(args: &Args) -> String {
    let size = args.num("--mib", 1024) << 20;
    let big = args.num("--rss-mib", 2048) << 20;
    let reps = args.num("--reps", 5);
    let lib = args.req("--lib");
    let levels = levels(args);

    let az = Azurite::start();
    az.create_container(CONTAINER);
    let t0 = Instant::now();
    az.put(CONTAINER, "model.bin", &bytes(MODEL_SEED, size));
    az.put(CONTAINER, "big.bin", &bytes(BIG_SEED, big));
    let upload_s = t0.elapsed().as_secs_f64();
    let host = |blob: &str, len: usize, endpoint: &str, cache: &TempDir, extra: &[&str]| {
        let mut c = Command::new(self_exe());
        c.args(["load", "--lib", &lib, "--size", &len.to_string()])
            .arg("--blob")
            .arg(format!("{ACCOUNT}/{CONTAINER}/{blob}"))
            .args(extra);
        for (k, _) in std::env::vars() {
            if k.starts_with("BLOBCACHE_") || k.starts_with("AZURE_") {
                c.env_remove(k);
            }
        }
        c.env("BLOBCACHE_DIR", cache.path())
            .env("BLOBCACHE_ORIGIN", "azure")
            .env("BLOBCACHE_AZURE_ENDPOINT", endpoint)
            .env("BLOBCACHE_MAX_SIZE", "90%")
            .env("AZURE_STORAGE_ACCOUNT_KEY", KEY)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped());
        c
    };
    let finish = |c: std::process::Child| -> serde_like::Obj {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "bench load failed");
        serde_like::Obj::parse(&String::from_utf8_lossy(&o.stdout))
    };

    // Once, untimed: the library's bytes are the blob's.
    {
        let cache = tempdir("bench-verify");
        let seed = MODEL_SEED.to_string();
        let mut c = host(
            "model.bin",
            size,
            &az.template(),
            &cache,
            &["--verify-seed", &seed],
        );
        finish(c.spawn().unwrap());
    }

    // Item 5.
    let url = format!("{}/{CONTAINER}/model.bin", az.endpoint());
    let mut plain: Vec<Vec<f64>> = vec![vec![]; levels.len()];
    let (mut ours, mut ratio) = (vec![], vec![]);
    for _ in 0..reps {
        let mut best: f64 = 0.0;
        for (i, &c) in levels.iter().enumerate() {
            let gbs = size as f64 / plain_download(&url, None, size, c) / 1e9;
            plain[i].push(gbs);
            best = best.max(gbs);
        }
        let cache = tempdir("bench-cold");
        let r = finish(
            host("model.bin", size, &az.template(), &cache, &[])
                .spawn()
                .unwrap(),
        );
        let gbs = size as f64 / r.get("seconds") / 1e9;
        ours.push(gbs);
        ratio.push(gbs / best);
    }
    let mut plain_json = Json::default();
    let mut best_level = (0usize, 0.0f64);
    for (i, &c) in levels.iter().enumerate() {
        let s = Summary::of(&plain[i]);
        if s.median > best_level.1 {
            best_level = (c, s.median);
        }
        plain_json = plain_json.sum(&c.to_string(), s);
    }
    let item5 = Json::default()
        .raw("plain_gbs", plain_json.done())
        .num("best_plain_concurrency", best_level.0 as f64)
        .sum("library_gbs", Summary::of(&ours))
        .sum("library_vs_best_plain", Summary::of(&ratio))
        .done();

    // Item 7.
    let proxy = Proxy::start(az.port);
    let (mut amp, mut wall) = (vec![], vec![]);
    for rep in 0..reps.min(3) {
        let cache = tempdir("bench-shared");
        let barrier = cache.path().with_extension(format!("barrier{rep}"));
        let seen_before = proxy.seen().len();
        let t0 = Instant::now();
        let kids: Vec<_> = (0..4)
            .map(|_| {
                let b = barrier.display().to_string();
                host(
                    "model.bin",
                    size,
                    &proxy.template(),
                    &cache,
                    &["--barrier", &b, "--parties", "4"],
                )
                .spawn()
                .unwrap()
            })
            .collect();
        for k in kids {
            finish(k);
        }
        wall.push(t0.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&barrier);
        let sent: u64 = proxy.seen()[seen_before..]
            .iter()
            .filter(|s| s.method == "GET")
            .map(|s| match (s.status, s.range.as_deref()) {
                (206, Some(r)) => range_len(r, size as u64),
                (200, _) => size as u64,
                _ => 0,
            })
            .sum();
        amp.push(sent as f64 / size as f64);
    }
    let item7 = Json::default()
        .sum("bytes_sent_per_blob_size", Summary::of(&amp))
        .sum("wall_seconds", Summary::of(&wall))
        .done();

    // Item 8.
    let mut growth: [Vec<f64>; 4] = Default::default();
    let mut secs = vec![];
    for _ in 0..reps.min(3) {
        let cache = tempdir("bench-rss");
        let r = finish(
            host("big.bin", big, &az.template(), &cache, &[])
                .spawn()
                .unwrap(),
        );
        let mib = |k: &str| r.get(k) / 1024.0;
        growth[0].push(mib("rss_peak_kib") - mib("rss_before_kib"));
        growth[1].push(mib("anon_peak_kib") - mib("anon_before_kib"));
        growth[2].push(mib("file_peak_kib") - mib("file_before_kib"));
        growth[3].push(mib("hwm_kib") - mib("rss_before_kib"));
        secs.push(r.get("seconds"));
    }
    let item8 = Json::default()
        .num("mib", (big >> 20) as f64)
        .sum("rss_growth_mib", Summary::of(&growth[0]))
        .sum("anon_growth_mib", Summary::of(&growth[1]))
        .sum("file_growth_mib", Summary::of(&growth[2]))
        .sum("hwm_growth_mib", Summary::of(&growth[3]))
        .sum("seconds", Summary::of(&secs))
        .done();

    Json::default()
        .num("mib", (size >> 20) as f64)
        .num("reps", reps as f64)
        .num("upload_seconds", upload_s)
        .raw("item5", item5)
        .raw("item7", item7)
        .raw("item8", item8)
        .done()
}

/// `bytes=a-b` → b - a + 1 (b clipped to the blob).
fn range_len(r: &str, size: u64) -> u64 {
    let Some((a, b)) = r.trim_start_matches("bytes=").split_once('-') else {
        return 0;
    };
    let a: u64 = a.trim().parse().unwrap_or(0);
    let b: u64 = b.trim().parse().map_or(size - 1, |b: u64| b.min(size - 1));
    (b + 1).saturating_sub(a)
}

fn levels(args: &Args) -> Vec<usize> {
    args.str("--concurrency")
        .unwrap_or_else(|| "4,8,16".into())
        .split(',')
        .map(|s| s.parse().expect("--concurrency takes numbers"))
        .collect()
}

/// `bench plain`: one plain download of a blob of the emulator's account at
/// each concurrency level, from `--url` (http or https; `--ca` a PEM file to
/// trust for https). For the streamer measurements' TLS comparison.
pub fn plain(args: &Args) -> String {
    let size = args.num("--size", 0);
    let ca = args
        .str("--ca")
        .map(|p| std::fs::read(p).expect("the CA file"));
    let mut j = Json::default();
    let mut best: f64 = 0.0;
    for c in levels(args) {
        let gbs = size as f64 / plain_download(&args.req("--url"), ca.as_deref(), size, c) / 1e9;
        best = best.max(gbs);
        j = j.num(&c.to_string(), gbs);
    }
    Json::default()
        .raw("gbs", j.done())
        .num("best_gbs", best)
        .done()
}

/// Downloads the blob at `url` with `concurrency` parallel 8 MiB ranged GETs
/// into memory (each task reusing one buffer), signed with the emulator's
/// key; returns seconds.
fn plain_download(url: &str, ca: Option<&[u8]>, size: usize, concurrency: usize) -> f64 {
    const CHUNK: usize = 8 << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut builder = reqwest::Client::builder().http1_only();
    if let Some(pem) = ca {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    let client = builder.build().unwrap();
    rt.block_on(plain_ranged_download(
        &client,
        url,
        size,
        concurrency,
        CHUNK,
    ))
}

/// Reading the flat JSON objects `bench load` prints (numbers only).
mod serde_like {
    pub struct Obj(Vec<(String, f64)>);

    impl Obj {
        pub fn parse(s: &str) -> Obj {
            let body = s.trim().trim_start_matches('{').trim_end_matches('}');
            Obj(body
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once(':')?;
                    Some((
                        k.trim().trim_matches('"').to_string(),
                        v.trim().parse().ok()?,
                    ))
                })
                .collect())
        }

        pub fn get(&self, key: &str) -> f64 {
            self.0
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no {key} in the host's report"))
                .1
        }
    }
}
