//! The counters as Prometheus metrics: `blobcache stats --prometheus`
//! checked by Prometheus's own parser (`promtool check metrics`), the
//! `blobcache metrics` endpoint as an HTTP client sees it, and a real
//! Prometheus (Debian's package, `scripts/install-test-deps.sh`) scraping
//! the endpoint on loopback while the library loads a blob from Azurite,
//! its HTTP API giving back what `blobcache stats --json` says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use blobcache_core::stats::{Unit, COUNTERS};
use blobcache_testing::azurite::{free_port, Azurite, ACCOUNT, KEY};
use blobcache_testing::cdylib::{lib, Blob};
use blobcache_testing::fixture::{self, Fixture};
use blobcache_testing::isolate::in_own_process;
use blobcache_testing::{blobcache_cmd, bytes, tempdir};
use serde_json::Value;

/// Free space moves with everything else on the machine: present, but not
/// compared.
const FREE: &str = "blobcache_filesystem_free_bytes";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn installed(tool: &str) -> &str {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: run scripts/install-test-deps.sh (Debian's prometheus package)"
    );
    tool
}

/// `(String, String)` pairs with `&'static str` keys, as `blobcache_cmd`
/// takes them.
fn static_keys(env: Vec<(String, String)>) -> Vec<(&'static str, String)> {
    env.into_iter().map(|(k, v)| (&*k.leak(), v)).collect()
}

fn ok(o: &std::process::Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `blobcache stats --json`.
fn stats_json(env: &[(&str, String)]) -> Value {
    serde_json::from_str(&ok(&blobcache_cmd(env, &["stats", "--json"]))).unwrap()
}

/// The samples of an exposition: (metric name, `cache_dir` as written, value).
fn samples(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, rest) = l.split_once("{cache_dir=\"").expect(l);
            let (label, value) = rest.rsplit_once("\"} ").expect(l);
            (name.into(), label.into(), value.into())
        })
        .collect()
}

/// Every counter's value in the exposition's unit, by metric name, from
/// `stats --json`'s `counters`.
fn expected_counters(stats: &Value) -> Vec<(&'static str, f64)> {
    COUNTERS
        .iter()
        .map(|c| {
            let v = stats["counters"][c.name].as_u64().expect(c.name);
            let v = match c.unit {
                Unit::Nanoseconds => v as f64 / 1e9,
                Unit::Count | Unit::Bytes => v as f64,
            };
            (c.metric, v)
        })
        .collect()
}

/// The gauges `stats --json` shows too, by metric name.
fn expected_gauges(stats: &Value) -> Vec<(&'static str, f64)> {
    [
        ("blobcache_cache_size_bytes", "bytes"),
        ("blobcache_cache_cap_bytes", "cap"),
        ("blobcache_filesystem_free_bytes", "free"),
        ("blobcache_cached_blobs", "blobs"),
        ("blobcache_complete_blobs", "complete_blobs"),
        ("blobcache_cached_blocks", "blocks"),
        ("blobcache_counters_start_time_seconds", "since"),
        ("blobcache_counters_update_time_seconds", "updated"),
    ]
    .into_iter()
    .map(|(m, j)| (m, stats[j].as_u64().expect(j) as f64))
    .collect()
}

#[test]
fn stats_prometheus_shows_every_counter_as_stats_json_does_and_promtool_accepts_it() {
    let fx = Fixture::new("prom-format");
    // A cache directory whose name needs every escape of a label value.
    let cache = fx.cache.path().join("we\"ird\\cache\ndir");
    let mut env = static_keys(fx.env("64K"));
    env.retain(|(k, _)| *k != "BLOBCACHE_DIR");
    env.push(("BLOBCACHE_DIR", cache.display().to_string()));
    let data = bytes(3, 200_000);
    fx.put("m.bin", &data);

    // Nothing cached yet: every counter at zero, no cap or times left out
    // but the times, and no directory made.
    let text = ok(&blobcache_cmd(&env, &["stats", "--prometheus"]));
    let s = samples(&text);
    for c in COUNTERS {
        assert!(
            s.iter()
                .any(|(n, _, v)| n == c.metric && v.parse::<f64>() == Ok(0.0)),
            "{} missing or not 0:\n{text}",
            c.metric
        );
    }
    assert!(
        !text.contains("blobcache_counters_start_time_seconds"),
        "{text}"
    );
    assert!(!cache.exists());

    let uri = format!("az://{}/{}/m.bin", fixture::ACCOUNT, fixture::CONTAINER);
    for _ in 0..2 {
        let got = blobcache_cmd(&env, &["cat", &uri]);
        assert!(got.status.success() && got.stdout == data, "{got:?}");
    }

    let text = ok(&blobcache_cmd(&env, &["stats", "--prometheus"]));
    let stats = stats_json(&env);
    assert!(stats["counters"]["hits"].as_u64().unwrap() > 0, "{stats}");
    let s = samples(&text);
    let want: Vec<_> = expected_counters(&stats)
        .into_iter()
        .chain(expected_gauges(&stats))
        .collect();
    assert_eq!(s.len(), want.len(), "{text}");
    for ((name, label, value), (metric, v)) in s.iter().zip(&want) {
        assert_eq!(name, metric, "{text}");
        assert!(label.ends_with("/we\\\"ird\\\\cache\\ndir"), "{label}");
        if *metric != FREE {
            assert_eq!(value.parse::<f64>().unwrap(), *v, "{metric}: {text}");
        }
    }
    // Each family: HELP, then TYPE, then its one sample.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * want.len());
    for (chunk, (metric, _)) in lines.chunks(3).zip(&want) {
        assert!(
            chunk[0].starts_with(&format!("# HELP {metric} ")),
            "{chunk:?}"
        );
        let kind = if metric.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(chunk[1], format!("# TYPE {metric} {kind}"));
        assert!(chunk[2].starts_with(&format!("{metric}{{")), "{chunk:?}");
    }

    // Prometheus's own parser and linter.
    let mut check = Command::new(installed(PROMTOOL))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // --json and --prometheus are one output or the other.
    let both = blobcache_cmd(&env, &["stats", "--json", "--prometheus"]);
    assert_eq!(both.status.code(), Some(2));
}

/// A running `blobcache metrics`, stopped (SIGTERM) on drop if still running.
struct Endpoint {
    child: Child,
    addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Endpoint {
    fn start(env: &[(&str, String)], listen: &str) -> Endpoint {
        let mut cmd = Command::new(blobcache_testing::built::command());
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["metrics", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // "serving the metrics of <dir> at http://<addr>/metrics"
        let addr = line
            .trim_end()
            .rsplit_once(" at http://")
            .and_then(|(_, a)| a.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no address in {line:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        Endpoint {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// Sends `signal` and waits (at most 10 s) for the exit: (status, stderr).
    fn stop(mut self, signal: libc::c_int) -> (std::process::ExitStatus, String) {
        // SAFETY: kill has no memory effects; the child is ours and not yet
        // waited for, so its pid names it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "blobcache metrics did not exit on signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.0 request: (status code, headers, body).
fn http(addr: SocketAddr, method: &str, target: &str) -> (u16, String, String) {
    try_http(addr, method, target)
        .unwrap_or_else(|| panic!("no answer to {method} {target} from {addr}"))
}

/// [`http`], `None` when the connection closes without an answer.
fn try_http(addr: SocketAddr, method: &str, target: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

#[test]
fn the_metrics_endpoint_serves_get_metrics_fresh_per_scrape_and_stops_on_sigint() {
    let fx = Fixture::new("prom-endpoint");
    let env = static_keys(fx.env("64K"));
    fx.put("m.bin", &bytes(4, 100_000));
    let ep = Endpoint::start(&env, "127.0.0.1:0");
    assert!(ep.addr.ip().is_loopback() && ep.addr.port() != 0);

    let (code, head, body) = http(ep.addr, "GET", "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE blobcache_hits_total counter\n"),
        "{body}"
    );
    assert!(body.contains("blobcache_misses_total{"), "{body}");
    for (method, target, want) in [
        ("GET", "/", 404),
        ("GET", "/metricsx", 404),
        ("POST", "/metrics", 405),
    ] {
        assert_eq!(http(ep.addr, method, target).0, want, "{method} {target}");
    }
    // A query string is allowed (Prometheus sends none, others do).
    assert_eq!(http(ep.addr, "GET", "/metrics?x=1").0, 200);

    // A client that connects and sends nothing does not hold up a scrape.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(ep.addr).unwrap())
        .collect();
    let t0 = Instant::now();
    let uri = format!("az://{}/{}/m.bin", fixture::ACCOUNT, fixture::CONTAINER);
    ok(&blobcache_cmd(&env, &["cat", &uri, "--out", "/dev/null"]));
    // Read afresh: the counts the command just left in the directory.
    let (code, _, body) = http(ep.addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let stats = stats_json(&env);
    let misses = stats["counters"]["misses"].as_u64().unwrap();
    assert!(misses > 0, "{stats}");
    assert!(
        body.contains(&format!(
            "\nblobcache_misses_total{{cache_dir=\"{}\"}} {misses}\n",
            fx.cache.path().display()
        )),
        "{body}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // At most 16 connections at once: the 17th is closed without an answer.
    let mut idle = idle;
    idle.extend((0..12).map(|_| TcpStream::connect(ep.addr).unwrap()));
    std::thread::sleep(Duration::from_millis(200)); // the 16 are taken
    let mut extra = TcpStream::connect(ep.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Their threads end when they go, and scrapes are served again.
    drop(idle);
    let t0 = Instant::now();
    while try_http(ep.addr, "GET", "/metrics").map(|r| r.0) != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no scrape served after the idle clients left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (status, err) = ep.stop(libc::SIGINT);
    assert!(status.success(), "{status:?} {err}");
    assert!(err.contains("stopping on SIGINT"), "{err}");
}

#[test]
fn the_metrics_command_fails_clearly_on_a_bad_address_or_one_in_use() {
    let fx = Fixture::new("prom-addr");
    let env = static_keys(fx.env("64K"));
    for bad in ["nonsense", "127.0.0.1", "localhost:9477", "127.0.0.1:99999"] {
        let o = blobcache_cmd(&env, &["metrics", "--listen", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("is not an address and port; use e.g. 127.0.0.1:9477"),
            "{err}"
        );
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = blobcache_cmd(&env, &["metrics", "--listen", &addr]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}: ")), "{err}");
}

/// A Prometheus server of our own: loopback only, its data in a temporary
/// directory, scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: blobcache\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
            let mut child = Command::new(installed(PROMETHEUS))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("prometheus exited early ({status}); port {addr} taken? retrying");
                    break;
                }
                // Ready: listening, and its storage open (503 before).
                if try_http(addr, "GET", "/-/ready").map(|r| r.0) == Some(200) {
                    return Prometheus {
                        child,
                        addr,
                        dir: dir.to_path_buf(),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    /// Every `blobcache_*` sample of the last scrape: name → (cache_dir, value).
    fn query(&self) -> Vec<(String, String, f64)> {
        let (code, _, body) = http(
            self.addr,
            "GET",
            "/api/v1/query?query=%7B__name__%3D~%22blobcache_.%2A%22%7D",
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["__name__"].as_str().unwrap().to_string(),
                    r["metric"]["cache_dir"].as_str().unwrap_or("").to_string(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Waits (at most 30 s) until the scraped samples are `want`, every one
    /// labelled `cache_dir`; panics with what was scraped otherwise.
    fn wait_for(&self, cache_dir: &str, want: &[(&'static str, f64)]) -> Duration {
        let t0 = Instant::now();
        loop {
            let got = self.query();
            let matches = want.iter().all(|(name, v)| {
                got.iter().any(|(n, dir, g)| {
                    n == name && dir == cache_dir && (g - v).abs() <= 1e-9 * v.max(1.0)
                })
            });
            if matches {
                return t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                panic!(
                    "Prometheus did not scrape the values of `blobcache stats --json` within 30 s:\n\
                     want {want:?}\ngot {got:?}\nlog: {}",
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BLOB: &str = "llama/model.safetensors";
const BLOB_LEN: usize = (3 << 20) + 12_345;

/// Reads the whole blob through the built libblobcache.so (as the streamer
/// does, 1 MiB at a time), then shuts the library down, which adds its
/// counts to the cache directory's.
fn load_through_the_library() {
    let blob = Blob::new(ACCOUNT, "models", BLOB);
    let want = bytes(17, BLOB_LEN);
    let mut got = vec![0u8; BLOB_LEN];
    for (i, chunk) in got.chunks_mut(1 << 20).enumerate() {
        lib()
            .read(&blob, (i << 20) as u64, chunk)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(got == want, "the bytes read differ from the blob's");
    lib().shutdown();
}

#[test]
fn prometheus_scrapes_the_endpoint_and_sees_what_stats_json_says_after_a_cold_and_a_warm_load() {
    let name =
        "prometheus_scrapes_the_endpoint_and_sees_what_stats_json_says_after_a_cold_and_a_warm_load";
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", BLOB, &bytes(17, BLOB_LEN));
    let work = tempdir("prom-e2e");
    let cache = work.path().join("cache");
    let env: Vec<(&str, String)> = vec![
        ("BLOBCACHE_DIR", cache.display().to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
        ("BLOBCACHE_BLOCK_SIZE", "256K".into()),
        ("BLOBCACHE_FETCH_TIMEOUT", "5s".into()),
        ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
    ];
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cache_dir = cache.display().to_string();
    in_own_process(name, &owned, || {
        let t0 = Instant::now();
        // Cold: every byte from Azurite.
        load_through_the_library();
        let cold = stats_json(&env);
        let c = &cold["counters"];
        assert_eq!(c["bytes_from_origin"], BLOB_LEN as u64, "{cold}");
        assert!(c["misses"].as_u64().unwrap() > 0, "{cold}");
        assert_eq!(cold["complete_blobs"], 1, "{cold}");

        let ep = Endpoint::start(&env, "127.0.0.1:0");
        let prom_dir = work.path().join("prometheus");
        std::fs::create_dir(&prom_dir).unwrap();
        let prom = Prometheus::start(&prom_dir, ep.addr);
        let want: Vec<_> = expected_counters(&cold)
            .into_iter()
            .chain(expected_gauges(&cold))
            .filter(|(m, _)| *m != FREE)
            .collect();
        let first = prom.wait_for(&cache_dir, &want);

        // Warm: every read a hit, nothing more from the origin.
        load_through_the_library();
        let warm = stats_json(&env);
        let w = &warm["counters"];
        assert_eq!(w["bytes_from_origin"], BLOB_LEN as u64, "{warm}");
        assert_eq!(w["misses"], c["misses"], "{warm}");
        assert!(w["hits"].as_u64().unwrap() >= 4, "{warm}");
        assert_eq!(
            w["bytes_from_cache"].as_u64().unwrap() + w["bytes_from_fills"].as_u64().unwrap(),
            c["bytes_from_cache"].as_u64().unwrap()
                + c["bytes_from_fills"].as_u64().unwrap()
                + BLOB_LEN as u64,
            "{warm}"
        );
        let want: Vec<_> = expected_counters(&warm)
            .into_iter()
            .chain(expected_gauges(&warm))
            .filter(|(m, _)| *m != FREE)
            .collect();
        let second = prom.wait_for(&cache_dir, &want);
        eprintln!(
            "Prometheus scraped the cold load's counters after {first:?}, the warm load's after \
             {second:?}; {:?} in all",
            t0.elapsed()
        );
        let scraped = prom.query();
        let hits = scraped
            .iter()
            .find(|(n, _, _)| n == "blobcache_hits_total")
            .unwrap();
        eprintln!("scraped: {scraped:?}");
        assert_eq!(hits.2, w["hits"].as_u64().unwrap() as f64);
        drop(prom);

        let (status, err) = ep.stop(libc::SIGTERM);
        assert!(status.success(), "{status:?} {err}");
        assert!(err.contains("stopping on SIGTERM"), "{err}");
    });
}
