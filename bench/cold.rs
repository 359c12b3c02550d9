//! Items 5, 7 and 8: cold loads from Azurite (one emulator, in memory, on
//! loopback, started by the tests' harness).
//!
//! 5: a host process (`bench load`, our library dlopen'd, 8 threads of 8 MiB
//!    reads, a fresh cache directory) against the best plain download of the
//!    same blob from the same Azurite: parallel 8 MiB ranged GETs into
//!    memory at several concurrency levels, interleaved with it. With each,
//!    the CPU time per GiB of the reader and of Azurite, and the ratio of
//!    the readers'; and the Azure fetch path alone (`AzureOrigin::read` into
//!    a counting sink: no cache, no hashing, no disk), to tell the origin's
//!    cost from the cache's.
//!    First bytes: the first 8 MiB read of a cold blob in a fresh host
//!    process whose library has started (`bench first`), against one 8 MiB
//!    ranged GET from a fresh process that has a connection (`bench
//!    first-get`).
//!    Far: the same comparison as the first, both through a far link
//!    (crates/testing/src/farlink.rs) in front of the same Azurite; then
//!    through a thin far link (a window of `--thin-window-kib` per
//!    connection, 512 KiB: about 26 MB/s per connection at 20 ms), where
//!    the link, not the CPU, bounds both sides.
//! 7: 4 host processes sharing a fresh cache directory start together and
//!    each load the whole blob; the counting proxy in front of Azurite adds
//!    up the bytes of every answer.
//! Cluster tier (issue 15): 4 host processes with local cache directories
//!    of their own and one cluster directory (`BLOBCACHE_CLUSTER_DIR`, on
//!    this machine's disk) start together; the proxy adds up the bytes sent.
//!    Then a first node loads the blob from the origin (filling the tier)
//!    and a second node loads it from the tier.
//! 8: one host process loading a larger blob; its memory before, during, at
//!    the end of the load and after the library's `shutdown()`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::origin::azure::AzureOrigin;
use blobcache_core::origin::Origin;
use blobcache_core::BlobKey;
use blobcache_testing::azurite::{self, plain_ranged_download, Azurite, ACCOUNT, KEY};
use blobcache_testing::farlink::FarLink;
use blobcache_testing::proxy::Proxy;
use blobcache_testing::{bytes, tempdir, TempDir};

use crate::{self_exe, Args, Json, Summary};

const CONTAINER: &str = "bench";
const MODEL_SEED: u64 = 16;
const BIG_SEED: u64 = 17;
const GET_SEED: u64 = 18;
const SMALL_SEED: u64 = 19;

pub fn run(args: &Args) -> String {
    let size = args.num("--mib", 1024) << 20;
    let big = args.num("--rss-mib", 2048) << 20;
    let reps = args.num("--reps", 5);
    let first_reps = args.num("--first-reps", 11);
    let far_reps = args.num("--far-reps", reps);
    let far_rtt = Duration::from_millis(args.num("--far-rtt-ms", 20) as u64);
    let far_window = args.num("--far-window-kib", 4096) << 10;
    let thin_window = args.num("--thin-window-kib", 512) << 10;
    let lib = args.req("--lib");
    let levels = levels(args);

    let az = Azurite::start();
    let az_pid = az.pid().expect("Azurite is running");
    az.create_container(CONTAINER);
    let t0 = Instant::now();
    az.put(CONTAINER, "model.bin", &bytes(MODEL_SEED, size));
    az.put(CONTAINER, "big.bin", &bytes(BIG_SEED, big));
    az.put(CONTAINER, "get.bin", &bytes(GET_SEED, size));
    az.put(CONTAINER, "small.bin", &bytes(SMALL_SEED, 64 << 10));
    let upload_s = t0.elapsed().as_secs_f64();
    // A host process (`bench <sub> --lib L ...`) reading through the library
    // from `endpoint` into `cache`.
    // Two aids for work on the cold path (bench/run sets neither): with
    // BENCH_PERF_DIR set, each host process runs under `perf record` (a
    // profile per process in that directory); BENCH_EXTRA_ENV=K=V,K=V adds
    // settings to every host process's environment.
    let perf_dir = std::env::var_os("BENCH_PERF_DIR").map(std::path::PathBuf::from);
    let perf_runs = AtomicUsize::new(0);
    let host_of = |sub: &str, endpoint: &str, cache: &TempDir| {
        let mut c = match &perf_dir {
            Some(d) => {
                let n = perf_runs.fetch_add(1, Ordering::Relaxed);
                let mut c = Command::new("perf");
                c.args(["record", "-q", "-F", "1999", "-o"])
                    .arg(d.join(format!("{sub}-{n}.data")))
                    .arg("--")
                    .arg(self_exe());
                c
            }
            None => Command::new(self_exe()),
        };
        c.args([sub, "--lib", &lib]);
        for (k, _) in std::env::vars() {
            if k.starts_with("BLOBCACHE_") || k.starts_with("AZURE_") {
                c.env_remove(k);
            }
        }
        c.env("BLOBCACHE_DIR", cache.path())
            .env("BLOBCACHE_ORIGIN", "azure")
            .env("BLOBCACHE_AZURE_ENDPOINT", endpoint)
            .env("BLOBCACHE_MAX_SIZE", "90%")
            .envs(std::env::var("BENCH_EXTRA_ENV").ok().iter().flat_map(|v| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            }))
            .env("AZURE_STORAGE_ACCOUNT_KEY", KEY)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped());
        c
    };
    let host = |blob: &str, len: usize, endpoint: &str, cache: &TempDir, extra: &[&str]| {
        let mut c = host_of("load", endpoint, cache);
        c.args(["--size", &len.to_string()])
            .arg("--blob")
            .arg(format!("{ACCOUNT}/{CONTAINER}/{blob}"))
            .args(extra);
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
    let gib = size as f64 / (1u64 << 30) as f64;
    let mut plain: Vec<Vec<f64>> = vec![vec![]; levels.len()];
    let (mut ours, mut ratio) = (vec![], vec![]);
    // CPU seconds per GiB, (reader, Azurite): the library's host process;
    // this process for the best plain download of the repetition; this
    // process for the fetch path alone.
    let (mut ours_cpu, mut plain_cpu, mut alone_cpu) =
        (Pairs::default(), Pairs::default(), Pairs::default());
    // The host process's CPU per GiB over the best plain download's.
    let mut cpu_ratio = vec![];
    let (mut alone, mut alone_ratio) = (vec![], vec![]);
    for _ in 0..reps {
        let mut best = (0.0f64, (0.0, 0.0));
        for (i, &c) in levels.iter().enumerate() {
            let cpu = Cpu::start(libc::RUSAGE_SELF, az_pid);
            let gbs = size as f64 / plain_download(&url, None, size, c) / 1e9;
            let spent = cpu.per_gib(gib);
            plain[i].push(gbs);
            if gbs > best.0 {
                best = (gbs, spent);
            }
        }
        plain_cpu.push(best.1);
        let cache = tempdir("bench-cold");
        let cpu = Cpu::start(libc::RUSAGE_CHILDREN, az_pid);
        let r = finish(
            host("model.bin", size, &az.template(), &cache, &[])
                .spawn()
                .unwrap(),
        );
        ours_cpu.push(cpu.per_gib(gib));
        cpu_ratio.push(ours_cpu.reader.last().unwrap() / plain_cpu.reader.last().unwrap());
        let gbs = size as f64 / r.get("seconds") / 1e9;
        ours.push(gbs);
        ratio.push(gbs / best.0);
        let cpu = Cpu::start(libc::RUSAGE_SELF, az_pid);
        let gbs = size as f64 / origin_alone(&az.template(), size, 8) / 1e9;
        alone_cpu.push(cpu.per_gib(gib));
        alone.push(gbs);
        alone_ratio.push(gbs / best.0);
    }
    let item5 = plain_levels(&levels, &plain)
        .sum("library_gbs", Summary::of(&ours))
        .sum("library_vs_best_plain", Summary::of(&ratio))
        .sum("library_cpu_vs_best_plain", Summary::of(&cpu_ratio))
        .sum("library_cpu_s_per_gib", Summary::of(&ours_cpu.reader))
        .sum(
            "library_azurite_cpu_s_per_gib",
            Summary::of(&ours_cpu.azurite),
        )
        .sum("plain_cpu_s_per_gib", Summary::of(&plain_cpu.reader))
        .sum(
            "plain_azurite_cpu_s_per_gib",
            Summary::of(&plain_cpu.azurite),
        )
        .sum("origin_alone_gbs", Summary::of(&alone))
        .sum("origin_alone_vs_best_plain", Summary::of(&alone_ratio))
        .sum("origin_alone_cpu_s_per_gib", Summary::of(&alone_cpu.reader))
        .sum(
            "origin_alone_azurite_cpu_s_per_gib",
            Summary::of(&alone_cpu.azurite),
        )
        .done();

    // Item 5, first bytes: baseline and subject each in a fresh process,
    // the library with a fresh cache directory (so the blob is cold to it).
    let (mut get_ms, mut first_ms, mut first_ratio) = (vec![], vec![], vec![]);
    for _ in 0..first_reps {
        let url = |blob: &str| format!("{}/{CONTAINER}/{blob}", az.endpoint());
        let mut c = Command::new(self_exe());
        c.args(["first-get", "--warm-url", &url("small.bin")])
            .args(["--url", &url("get.bin")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let get = finish(c.spawn().unwrap()).get("ms");
        let cache = tempdir("bench-first");
        let mut c = host_of("first", &az.template(), &cache);
        c.args(["--warm", &format!("{ACCOUNT}/{CONTAINER}/small.bin")])
            .args(["--blob", &format!("{ACCOUNT}/{CONTAINER}/model.bin")]);
        let ours = finish(c.spawn().unwrap()).get("ms");
        get_ms.push(get);
        first_ms.push(ours);
        first_ratio.push(ours / get);
    }
    let first = Json::default()
        .num("read_mib", (crate::first::READ >> 20) as f64)
        .sum("library_ms", Summary::of(&first_ms))
        .sum("get_ms", Summary::of(&get_ms))
        .sum("library_vs_get", Summary::of(&first_ratio))
        .done();

    // Item 5, far: the same comparison through a far link; then through a
    // thin one, whose per-connection window (not the CPU) bounds both
    // sides, so that it shows how many requests each keeps in flight.
    let far_run = |window: usize| -> String {
        let far = FarLink::with_max_window(az.port, far_rtt, window);
        let far_url = format!(
            "http://127.0.0.1:{}/{ACCOUNT}/{CONTAINER}/model.bin",
            far.port()
        );
        let mut far_plain: Vec<Vec<f64>> = vec![vec![]; levels.len()];
        let (mut far_ours, mut far_ratio) = (vec![], vec![]);
        for _ in 0..far_reps {
            let mut best = 0.0f64;
            for (i, &c) in levels.iter().enumerate() {
                let gbs = size as f64 / plain_download(&far_url, None, size, c) / 1e9;
                far_plain[i].push(gbs);
                best = best.max(gbs);
            }
            let cache = tempdir("bench-far");
            let r = finish(
                host("model.bin", size, &far.template(), &cache, &[])
                    .spawn()
                    .unwrap(),
            );
            let gbs = size as f64 / r.get("seconds") / 1e9;
            far_ours.push(gbs);
            far_ratio.push(gbs / best);
        }
        plain_levels(&levels, &far_plain)
            .num("rtt_ms", far_rtt.as_secs_f64() * 1e3)
            .num("max_window_kib", (window >> 10) as f64)
            .num("connections", far.connections() as f64)
            .sum("library_gbs", Summary::of(&far_ours))
            .sum("library_vs_best_plain", Summary::of(&far_ratio))
            .done()
    };
    let item5_far = far_run(far_window);
    let item5_far_thin = far_run(thin_window);

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
        amp.push(sent_since(&proxy, seen_before, size) as f64 / size as f64);
    }
    let item7 = Json::default()
        .sum("bytes_sent_per_blob_size", Summary::of(&amp))
        .sum("wall_seconds", Summary::of(&wall))
        .done();

    // Issue 15: the cluster tier. 4 "nodes" (host processes with local
    // cache directories of their own, one cluster directory) start together;
    // then, interleaved, a first node loading from the origin (filling the
    // tier) and a second node loading the same blob from the tier.
    let (mut amp4, mut wall4, mut first_s, mut second_s, mut speedup) =
        (vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..reps.min(3) {
        let cluster = tempdir("bench-cluster");
        let nodes: Vec<TempDir> = (0..4)
            .map(|i| tempdir(&format!("bench-cluster-node{i}")))
            .collect();
        let barrier = cluster.path().with_extension(format!("barrier{rep}"));
        let seen_before = proxy.seen().len();
        let t0 = Instant::now();
        let kids: Vec<_> = nodes
            .iter()
            .map(|node| {
                let b = barrier.display().to_string();
                host(
                    "model.bin",
                    size,
                    &proxy.template(),
                    node,
                    &["--barrier", &b, "--parties", "4"],
                )
                .env("BLOBCACHE_CLUSTER_DIR", cluster.path())
                .spawn()
                .unwrap()
            })
            .collect();
        for k in kids {
            finish(k);
        }
        wall4.push(t0.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&barrier);
        amp4.push(sent_since(&proxy, seen_before, size) as f64 / size as f64);

        let cluster = tempdir("bench-cluster-2");
        let (one, two) = (tempdir("bench-cluster-1st"), tempdir("bench-cluster-2nd"));
        let load = |node: &TempDir| {
            finish(
                host("model.bin", size, &az.template(), node, &[])
                    .env("BLOBCACHE_CLUSTER_DIR", cluster.path())
                    .spawn()
                    .unwrap(),
            )
            .get("seconds")
        };
        let (a, b) = (load(&one), load(&two));
        first_s.push(a);
        second_s.push(b);
        speedup.push(a / b);
    }
    let cluster_tier = Json::default()
        .sum("four_nodes_bytes_sent_per_blob_size", Summary::of(&amp4))
        .sum("four_nodes_wall_seconds", Summary::of(&wall4))
        .sum("first_node_seconds", Summary::of(&first_s))
        .sum("second_node_seconds", Summary::of(&second_s))
        .sum("second_node_speedup", Summary::of(&speedup))
        .done();

    // Item 8.
    let mut growth: [Vec<f64>; 4] = Default::default();
    // Anonymous and file-backed, at the end of the load and after shutdown().
    let mut after: [Vec<f64>; 4] = Default::default();
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
        after[0].push(mib("anon_end_kib") - mib("anon_before_kib"));
        after[1].push(mib("file_end_kib") - mib("file_before_kib"));
        after[2].push(mib("anon_after_shutdown_kib") - mib("anon_before_kib"));
        after[3].push(mib("file_after_shutdown_kib") - mib("file_before_kib"));
        secs.push(r.get("seconds"));
    }
    let item8 = Json::default()
        .num("mib", (big >> 20) as f64)
        .sum("rss_growth_mib", Summary::of(&growth[0]))
        .sum("anon_growth_mib", Summary::of(&growth[1]))
        .sum("file_growth_mib", Summary::of(&growth[2]))
        .sum("hwm_growth_mib", Summary::of(&growth[3]))
        .sum("anon_end_growth_mib", Summary::of(&after[0]))
        .sum("file_end_growth_mib", Summary::of(&after[1]))
        .sum("anon_after_shutdown_growth_mib", Summary::of(&after[2]))
        .sum("file_after_shutdown_growth_mib", Summary::of(&after[3]))
        .sum("seconds", Summary::of(&secs))
        .done();

    Json::default()
        .num("mib", (size >> 20) as f64)
        .num("reps", reps as f64)
        .num("upload_seconds", upload_s)
        .raw("item5", item5)
        .raw("first_read", first)
        .raw("item5_far", item5_far)
        .raw("item5_far_thin", item5_far_thin)
        .raw("item7", item7)
        .raw("cluster_tier", cluster_tier)
        .raw("item8", item8)
        .done()
}

/// The plain downloads' rates per concurrency level (`plain_gbs`) and the
/// level with the best median (`best_plain_concurrency`).
fn plain_levels(levels: &[usize], plain: &[Vec<f64>]) -> Json {
    let mut plain_json = Json::default();
    let mut best_level = (0usize, 0.0f64);
    for (i, &c) in levels.iter().enumerate() {
        let s = Summary::of(&plain[i]);
        if s.median > best_level.1 {
            best_level = (c, s.median);
        }
        plain_json = plain_json.sum(&c.to_string(), s);
    }
    Json::default()
        .raw("plain_gbs", plain_json.done())
        .num("best_plain_concurrency", best_level.0 as f64)
}

/// Item 5's fetch path alone, in this process: `AzureOrigin::read` of
/// 8 MiB ranges of `model.bin` from `threads` threads into a sink that only
/// counts (no cache, no hashing, no disk); returns seconds.
fn origin_alone(template: &str, size: usize, threads: usize) -> f64 {
    const CHUNK: usize = 8 << 20;
    let dir = tempdir("bench-origin");
    let cfg = azurite::config(template, dir.path());
    let origin = Arc::new(AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap());
    let k = BlobKey::new(ACCOUNT, CONTAINER, "model.bin").unwrap();
    let info = origin.stat(&k).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (origin, k, info, next) = (origin.clone(), k.clone(), info.clone(), next.clone());
            std::thread::spawn(move || loop {
                let off = next.fetch_add(CHUNK, Ordering::Relaxed);
                if off >= size {
                    return;
                }
                let len = CHUNK.min(size - off) as u64;
                let mut got = 0u64;
                origin
                    .read(&k, &info, off as u64, len, &mut |c: &[u8]| {
                        got += c.len() as u64;
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(got, len);
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    let seconds = t0.elapsed().as_secs_f64();
    origin.shutdown();
    seconds
}

/// CPU seconds (user + system) spent since [`Cpu::start`] by a reader
/// (this process, `RUSAGE_SELF`, or its waited-for children,
/// `RUSAGE_CHILDREN`) and by Azurite.
struct Cpu {
    who: libc::c_int,
    reader: f64,
    az_pid: u32,
    azurite: f64,
}

impl Cpu {
    fn start(who: libc::c_int, az_pid: u32) -> Cpu {
        Cpu {
            who,
            reader: rusage_seconds(who),
            az_pid,
            azurite: process_cpu_seconds(az_pid),
        }
    }

    /// (reader, Azurite) seconds per GiB of `gib` GiB moved since the start.
    fn per_gib(&self, gib: f64) -> (f64, f64) {
        (
            (rusage_seconds(self.who) - self.reader) / gib,
            (process_cpu_seconds(self.az_pid) - self.azurite) / gib,
        )
    }
}

/// Repetitions of (reader, Azurite) figures.
#[derive(Default)]
struct Pairs {
    reader: Vec<f64>,
    azurite: Vec<f64>,
}

impl Pairs {
    fn push(&mut self, (reader, azurite): (f64, f64)) {
        self.reader.push(reader);
        self.azurite.push(azurite);
    }
}

/// CPU seconds (user + system) of this process, or of its waited-for
/// children.
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `rusage` is plain data, for which all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the kernel to fill.
    assert_eq!(unsafe { libc::getrusage(who, &mut ru) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system, all threads) of another process.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// `bytes=a-b` → b - a + 1 (b clipped to the blob).
/// Body bytes of the GETs the counting proxy answered since its
/// `seen_before`th request.
fn sent_since(proxy: &Proxy, seen_before: usize, size: usize) -> u64 {
    proxy.seen()[seen_before..]
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| match (s.status, s.range.as_deref()) {
            (206, Some(r)) => range_len(r, size as u64),
            (200, _) => size as u64,
            _ => 0,
        })
        .sum()
}

fn range_len(r: &str, size: u64) -> u64 {
    let Some((a, b)) = r.trim_start_matches("bytes=").split_once('-') else {
        return 0;
    };
    let a: u64 = a.trim().parse().unwrap_or(0);
    let b: u64 = b.trim().parse().map_or(size - 1, |b: u64| b.min(size - 1));
    (b + 1).saturating_sub(a)
}

/// `bench farlink`: a far link (crates/testing/src/farlink.rs) in front of
/// `127.0.0.1:--upstream`, for bench/streamer.py. Prints `{"port":P}` at
/// once, runs until stdin closes, then answers its counters.
pub fn farlink(args: &Args) -> String {
    use std::io::Write as _;
    let upstream: u16 = args
        .req("--upstream")
        .parse()
        .expect("--upstream takes a port");
    let rtt = Duration::from_millis(args.num("--rtt-ms", 20) as u64);
    let window = args.num("--max-window-kib", 4096) << 10;
    let link = FarLink::with_max_window(upstream, rtt, window);
    println!(
        "{}",
        Json::default().raw("port", link.port().to_string()).done()
    );
    std::io::stdout().flush().unwrap();
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    Json::default()
        .num("connections", link.connections() as f64)
        .num("bytes_to_client", link.bytes_to_client() as f64)
        .num("bytes_to_upstream", link.bytes_to_upstream() as f64)
        .done()
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
