//! Dragonfly mode (`BLOBCACHE_DRAGONFLY`) as the library speaks it, through
//! a recording forward proxy on loopback standing where dfdaemon's proxy
//! would (blobcache_testing::proxy): what each GET looks like (absolute
//! form, the ETag as the task's tag, the fixed piece length, the SAS
//! parameters filtered, block ranges, no Authorization), that HEAD goes
//! direct, that a shared key is refused, and the fallback to Azure when the
//! daemon is dead, hung, cuts an answer short, or does not answer through
//! P2P. The proxy adds `X-Dragonfly-Task-ID` to its answers, as dfdaemon
//! does to those it serves through P2P.

use std::time::{Duration, Instant};

use blobcache_core::config::Config;
use blobcache_core::{Cache, ErrorKind};

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Proxy};
use blobcache_testing::{blobcache_cmd, bytes, tempdir, TempDir};

use crate::{cache, cat_env, key, read_all};

const BLOCK: usize = 8 << 20;

/// Azurite with container `models`, and a recording proxy before it that
/// answers as dfdaemon does through P2P.
fn setup() -> (Azurite, Proxy) {
    let az = Azurite::start();
    az.create_container("models");
    let daemon = Proxy::start(az.port);
    daemon.add_answer_header("X-Dragonfly-Task-ID: test-task");
    (az, daemon)
}

/// Dragonfly mode through `daemon` (`http://host:port`), 8 MiB blocks.
fn config(az: &Azurite, dir: &std::path::Path, daemon: &str) -> Config {
    Config {
        block_size: BLOCK as u64,
        dragonfly: Some(daemon.to_string()),
        fetch_timeout: Duration::from_secs(4),
        ..azurite::config(&az.template(), dir)
    }
}

/// A header's value in a recorded request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn gets_go_to_dfdaemon_in_absolute_form_tagged_with_the_etag_and_heads_go_direct() {
    let (az, daemon) = setup();
    let data = bytes(61, 2 * BLOCK + (3 << 20));
    let etag = az.put("models", "m.bin", &data);
    let sas = az.account_sas();
    let dir = tempdir("df-shape");
    let c = cache(
        &config(&az, dir.path(), &daemon.url()),
        azurite::sas_env(&sas),
    );
    let k = key("models", "m.bin");
    assert!(
        read_all(&c, &k, data.len()).unwrap() == data,
        "bytes differ"
    );
    let seen = daemon.seen();
    assert_eq!(seen.len(), 3, "one GET per block, nothing else: {seen:#?}");
    let mut ranges: Vec<_> = seen.iter().map(|s| s.range.clone().unwrap()).collect();
    ranges.sort_by_key(|r| r[6..].split('-').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(
        ranges,
        [
            format!("bytes=0-{}", BLOCK - 1),
            format!("bytes={}-{}", BLOCK, 2 * BLOCK - 1),
            format!("bytes={}-{}", 2 * BLOCK, data.len() - 1),
        ]
    );
    let want_target = format!(
        "http://127.0.0.1:{}/devstoreaccount1/models/m.bin?",
        az.port
    );
    for s in &seen {
        assert_eq!(s.method, "GET");
        assert!(s.target.starts_with(&want_target), "{}", s.target);
        assert!(
            s.target.contains("&sig="),
            "the SAS rides along: {}",
            s.target
        );
        let h = &s.head;
        assert_eq!(header(h, "x-dragonfly-tag"), Some(etag.trim_matches('"')));
        assert_eq!(header(h, "x-dragonfly-piece-length"), Some("16mib"));
        let filtered: Vec<_> = header(h, "x-dragonfly-filtered-query-params")
            .unwrap()
            .split(',')
            .collect();
        for p in [
            "sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "skoid", "sdd",
        ] {
            assert!(filtered.contains(&p), "{p} not filtered: {filtered:?}");
        }
        assert_eq!(header(h, "if-match"), Some(etag.as_str()));
        assert_eq!(header(h, "authorization"), None, "{h}");
        assert_eq!(s.status, 206);
    }
    let st = c.stats();
    assert_eq!(st.bytes_via_dragonfly, data.len() as u64);
    assert_eq!(st.dragonfly_fallbacks, 0);
    // A warm read asks nothing.
    assert!(read_all(&c, &k, data.len()).unwrap() == data);
    assert_eq!(daemon.seen().len(), 3);
}

#[test]
fn a_shared_key_is_refused_saying_why_and_nothing_is_sent() {
    let (az, daemon) = setup();
    let data = bytes(62, 1 << 20);
    az.put("models", "m.bin", &data);
    let dir = tempdir("df-key");
    let c = cache(&config(&az, dir.path(), &daemon.url()), azurite::key_env());
    let e = read_all(&c, &key("models", "m.bin"), data.len()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    for w in ["shared key", "Range", "AZURE_STORAGE_SAS_TOKEN", "Entra ID"] {
        assert!(e.message().contains(w), "{w}: {e}");
    }
    assert_eq!(daemon.requests(), 0);
    assert_eq!(c.stats().bytes_from_origin, 0);
}

#[test]
fn a_dead_dfdaemon_sends_gets_directly_to_azure_and_warns_once() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(63, 3 * BLOCK);
    az.put("models", "m.bin", &data);
    let dir = tempdir("df-dead");
    let out = dir.path().join("out.bin");
    let daemon = format!("http://127.0.0.1:{}", dead_port());
    let mut env = cat_env(
        &az.template(),
        &dir.path().join("cache"),
        ("AZURE_STORAGE_SAS_TOKEN", az.account_sas()),
    );
    env.extend([
        ("BLOBCACHE_BLOCK_SIZE", "8M".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "4s".to_string()),
        ("BLOBCACHE_LOG", "info".to_string()),
        ("BLOBCACHE_DRAGONFLY", daemon.clone()),
    ]);
    let t0 = Instant::now();
    let o = blobcache_cmd(
        &env,
        &[
            "cat",
            "az://devstoreaccount1/models/m.bin",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(std::fs::read(&out).unwrap() == data, "bytes differ");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("warn:") && l.contains("dragonfly"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let port = daemon.trim_start_matches("http://");
    assert!(
        warnings[0].contains(port) && warnings[0].contains("directly to Azure"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_hung_dfdaemon_costs_at_most_half_the_fetch_timeout() {
    let (az, daemon) = setup();
    daemon.rule(
        "GET",
        vec![Some(Fault::StallHead {
            stall: Duration::from_secs(30),
        })],
    );
    let data = bytes(64, 2 * BLOCK);
    az.put("models", "m.bin", &data);
    let dir = tempdir("df-hung");
    let cfg = config(&az, dir.path(), &daemon.url());
    let c = cache(&cfg, azurite::sas_env(&az.account_sas()));
    let t0 = Instant::now();
    assert!(read_all(&c, &key("models", "m.bin"), data.len()).unwrap() == data);
    let took = t0.elapsed();
    assert!(
        took >= cfg.fetch_timeout / 2 && took < cfg.fetch_timeout,
        "{took:?} with a {:?} fetch timeout",
        cfg.fetch_timeout
    );
    assert!(c.stats().dragonfly_fallbacks >= 1);
    assert_eq!(c.stats().bytes_via_dragonfly, 0);
}

#[test]
fn without_fallback_a_dead_dfdaemon_fails_the_read_in_time_saying_what_to_check() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(65, 1 << 20);
    az.put("models", "m.bin", &data);
    let dir = tempdir("df-nofallback");
    let daemon = format!("http://127.0.0.1:{}", dead_port());
    let cfg = Config {
        dragonfly_fallback: false,
        ..config(&az, dir.path(), &daemon)
    };
    let c = cache(&cfg, azurite::sas_env(&az.account_sas()));
    let t0 = Instant::now();
    let e = read_all(&c, &key("models", "m.bin"), data.len()).unwrap_err();
    assert!(t0.elapsed() < cfg.fetch_timeout + Duration::from_secs(1));
    let m = e.message();
    for w in [
        "dfdaemon",
        daemon.trim_start_matches("http://"),
        "BLOBCACHE_DRAGONFLY_FALLBACK=1",
    ] {
        assert!(m.contains(w), "{w}: {m}");
    }
    assert_eq!(c.stats().bytes_from_origin, 0);
}

#[test]
fn an_answer_not_served_through_p2p_sends_gets_direct_for_good_saying_to_add_the_rule() {
    let az = Azurite::start();
    az.create_container("models");
    // A plain forward proxy: no X-Dragonfly-Task-ID.
    let plain = Proxy::start(az.port);
    let a = bytes(66, BLOCK);
    let b = bytes(67, BLOCK);
    az.put("models", "a.bin", &a);
    az.put("models", "b.bin", &b);
    let dir = tempdir("df-norule");
    let c = cache(
        &config(&az, dir.path(), &plain.url()),
        azurite::sas_env(&az.account_sas()),
    );
    assert!(read_all(&c, &key("models", "a.bin"), a.len()).unwrap() == a);
    assert_eq!(plain.seen().len(), 1, "{:#?}", plain.seen());
    assert!(read_all(&c, &key("models", "b.bin"), b.len()).unwrap() == b);
    assert_eq!(plain.seen().len(), 1, "b.bin went through the proxy again");
    assert_eq!(c.stats().dragonfly_fallbacks, 1);
    assert_eq!(c.stats().bytes_via_dragonfly, 0);
    // Without fallback, that is a configuration error naming the rule.
    let dir = tempdir("df-norule-strict");
    let cfg = Config {
        dragonfly_fallback: false,
        ..config(&az, dir.path(), &plain.url())
    };
    let c = cache(&cfg, azurite::sas_env(&az.account_sas()));
    let e = read_all(&c, &key("models", "a.bin"), a.len()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.message().contains("useTLS"), "{e}");
}

#[test]
fn an_answer_cut_short_by_dfdaemon_is_resumed_directly_from_where_it_broke() {
    let (az, daemon) = setup();
    daemon.inject("GET", Fault::CutBody { after: 3 << 20 });
    let data = bytes(68, BLOCK);
    az.put("models", "m.bin", &data);
    let dir = tempdir("df-cut");
    let c = cache(
        &config(&az, dir.path(), &daemon.url()),
        azurite::sas_env(&az.account_sas()),
    );
    assert!(read_all(&c, &key("models", "m.bin"), data.len()).unwrap() == data);
    assert_eq!(daemon.seen().len(), 1);
    let st = c.stats();
    assert_eq!(st.dragonfly_fallbacks, 1);
    assert_eq!(st.bytes_via_dragonfly, 3 << 20, "the rest came direct");
    assert_eq!(st.bytes_from_origin, BLOCK as u64);
}

#[test]
fn a_replaced_blob_is_asked_for_under_its_new_tag_and_never_mixed() {
    let (az, daemon) = setup();
    let v1 = bytes(69, BLOCK + (1 << 20));
    let e1 = az.put("models", "m.bin", &v1);
    let sas = az.account_sas();
    let k = key("models", "m.bin");
    let dir = tempdir("df-replaced");
    {
        let c = cache(
            &config(&az, dir.path(), &daemon.url()),
            azurite::sas_env(&sas),
        );
        assert!(read_all(&c, &k, v1.len()).unwrap() == v1);
    }
    let v2 = bytes(70, BLOCK + (2 << 20));
    let e2 = az.put("models", "m.bin", &v2);
    assert_ne!(e1, e2);
    let c = cache(
        &config(&az, dir.path(), &daemon.url()),
        azurite::sas_env(&sas),
    );
    assert!(read_all(&c, &k, v2.len()).unwrap() == v2, "the new version");
    let tags: Vec<_> = daemon
        .seen()
        .iter()
        .map(|s| header(&s.head, "x-dragonfly-tag").unwrap().to_string())
        .collect();
    let (t1, t2) = (e1.trim_matches('"'), e2.trim_matches('"'));
    assert_eq!(tags, [t1, t1, t2, t2], "two blocks per version");
}

/// Through a real dfdaemon (the long form: `scripts/test-dragonfly` builds
/// it and sets `BC_DFDAEMON`). The daemon's scheduler is a stand-in, so it
/// has no peers: one daemon is a node-local piece cache in front of the
/// origin, and these tests show what the library and dfdaemon do together
/// there. Between the daemon and Azurite, a counting proxy.
mod daemon {
    use super::*;
    use blobcache_testing::dragonfly::Dfdaemon;

    /// Azurite, the counting proxy before it (the endpoint), and a
    /// dfdaemon whose rule sends the counting proxy's URLs through P2P.
    fn stack() -> (Azurite, Proxy, Dfdaemon) {
        let az = Azurite::start();
        az.create_container("models");
        let counting = Proxy::start(az.port);
        let daemon = Dfdaemon::start(counting.port);
        (az, counting, daemon)
    }

    /// A node: a cache of its own (in the returned directory) in
    /// Dragonfly mode through `daemon`, with 16 MiB blocks (the piece
    /// length), the counting proxy as its endpoint, and the SAS `sas`.
    fn node(counting: &Proxy, daemon: &Dfdaemon, tag: &str, sas: &str) -> (TempDir, Cache) {
        let dir = tempdir(tag);
        let config = Config {
            block_size: 16 << 20,
            dragonfly: Some(daemon.url()),
            fetch_timeout: Duration::from_secs(20),
            ..azurite::config(&counting.template(), dir.path())
        };
        let c = cache(&config, azurite::sas_env(sas));
        (dir, c)
    }

    /// GETs the counting proxy passed to Azurite.
    fn gets(counting: &Proxy) -> usize {
        counting.seen().iter().filter(|s| s.method == "GET").count()
    }

    #[test]
    #[ignore = "long form: scripts/test-dragonfly (a real dfdaemon)"]
    fn two_nodes_through_one_dfdaemon_take_the_blob_from_azure_once() {
        let (az, counting, daemon) = stack();
        let size = 64 << 20;
        let data = bytes(71, size);
        az.put("models", "m.bin", &data);
        let sas = az.account_sas();
        let k = key("models", "m.bin");
        for name in ["node1", "node2"] {
            let (_dir, c) = node(&counting, &daemon, name, &sas);
            let got = read_all(&c, &k, size).unwrap();
            assert!(got == data, "{name}: the bytes differ");
            let st = c.stats();
            assert_eq!(st.bytes_via_dragonfly, size as u64, "{name}: {st:?}");
            assert_eq!(st.dragonfly_fallbacks, 0, "{name}: {st:?}");
            eprintln!(
                "{name}: {} body bytes and {} GETs from Azurite so far",
                counting.body_bytes(),
                gets(&counting)
            );
        }
        let from_azurite = counting.body_bytes();
        assert!(
            from_azurite as f64 <= 1.01 * size as f64,
            "{from_azurite} bytes from Azurite for a {size}-byte blob read by two nodes\n{}",
            daemon.log()
        );
    }

    #[test]
    #[ignore = "long form: scripts/test-dragonfly (a real dfdaemon)"]
    fn a_replaced_blob_through_dfdaemon_is_a_new_task_and_never_mixed() {
        let (az, counting, daemon) = stack();
        let size = 32 << 20;
        let v1 = bytes(72, size);
        az.put("models", "m.bin", &v1);
        let sas = az.account_sas();
        let k = key("models", "m.bin");
        let (_dir1, c1) = node(&counting, &daemon, "node1", &sas);
        assert!(read_all(&c1, &k, size).unwrap() == v1);
        // Replaced: a new node reads the new version through dfdaemon,
        // whose task for the old ETag still holds the old bytes.
        let v2 = bytes(73, size);
        az.put("models", "m.bin", &v2);
        let (_dir2, c2) = node(&counting, &daemon, "node2", &sas);
        assert!(
            read_all(&c2, &k, size).unwrap() == v2,
            "node2 read old bytes"
        );
        let st = c2.stats();
        assert_eq!(
            (st.bytes_via_dragonfly, st.dragonfly_fallbacks),
            (size as u64, 0)
        );
    }

    #[test]
    #[ignore = "long form: scripts/test-dragonfly (a real dfdaemon)"]
    fn a_blob_replaced_during_a_load_through_dfdaemon_fails_it_and_never_mixes() {
        let (az, counting, daemon) = stack();
        let size = 48 << 20;
        let v1 = bytes(74, size);
        az.put("models", "m.bin", &v1);
        let sas = az.account_sas();
        let k = key("models", "m.bin");
        let (_dir, c) = node(&counting, &daemon, "node", &sas);
        // The first block of v1, then the blob is replaced.
        let mut first = vec![0u8; 16 << 20];
        c.read(&k, 0, &mut first).unwrap();
        assert!(first[..] == v1[..16 << 20]);
        az.put("models", "m.bin", &bytes(75, size));
        // The rest under v1's ETag: dfdaemon's fetch is If-Match v1's ETag,
        // so Azure refuses it, and the read fails as changed.
        let mut rest = vec![0u8; 16 << 20];
        let e = c.read(&k, 16 << 20, &mut rest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    }

    #[test]
    #[ignore = "long form: scripts/test-dragonfly (a real dfdaemon)"]
    fn a_dfdaemon_killed_between_loads_sends_the_next_to_azure() {
        let (az, counting, mut daemon) = stack();
        let size = 32 << 20;
        let a = bytes(76, size);
        let b = bytes(77, size);
        az.put("models", "a.bin", &a);
        az.put("models", "b.bin", &b);
        let (_dir, c) = node(&counting, &daemon, "node", &az.account_sas());
        assert!(read_all(&c, &key("models", "a.bin"), size).unwrap() == a);
        assert_eq!(c.stats().bytes_via_dragonfly, size as u64);
        daemon.kill();
        let t0 = Instant::now();
        assert!(read_all(&c, &key("models", "b.bin"), size).unwrap() == b);
        assert!(t0.elapsed() < Duration::from_secs(20));
        let st = c.stats();
        assert_eq!(st.bytes_via_dragonfly, size as u64, "b.bin went direct");
        assert!(st.dragonfly_fallbacks >= 1);
    }
}
