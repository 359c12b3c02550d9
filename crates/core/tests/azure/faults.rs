//! Network trouble between the cache and Azure, injected by the loopback
//! proxy or a port nobody listens on: retries, resumes, time bounds, and
//! the messages when they run out.

use std::time::{Duration, Instant};

use blobcache_core::config::Config;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Proxy};
use blobcache_testing::{bytes, tempdir};

use crate::{cache, key, read_all};

#[test]
fn an_unreachable_origin_with_nothing_cached_fails_quickly_with_a_clear_error() {
    let port = azurite::free_port(); // nothing listens there
    let dir = tempdir("unreachable");
    let cfg = Config {
        fetch_timeout: Duration::from_secs(2),
        ..azurite::config(&format!("http://127.0.0.1:{port}/{{account}}"), dir.path())
    };
    let c = cache(&cfg, azurite::key_env());
    let k = key("models", "m.bin");
    let t0 = Instant::now();
    let e = read_all(&c, &k, 10).unwrap_err();
    let first = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    let m = e.message();
    assert!(
        m.contains(&format!(
            "cannot connect to http://127.0.0.1:{port}/devstoreaccount1"
        )),
        "{m}"
    );
    assert!(m.contains("check the network and the endpoint"), "{m}");
    assert!(m.contains("attempts"), "{m}");
    assert!(first < Duration::from_secs(4), "took {first:?}");
    // Known unreachable now: the next call tries once, without retrying.
    let t1 = Instant::now();
    let e = read_all(&c, &k, 10).unwrap_err();
    assert!(
        t1.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t1.elapsed()
    );
    assert!(e.message().contains("unreachable earlier"), "{e}");
}

#[test]
fn bursts_of_500_503_and_429_with_retry_after_are_retried_and_the_read_succeeds() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(11, 1 << 20);
    az.put("models", "m.bin", &data);
    let proxy = Proxy::start(az.port);
    proxy.inject(
        "HEAD",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    for (code, retry_after) in [(500, None), (503, None), (429, Some(1))] {
        proxy.inject("GET", Fault::Status { code, retry_after });
    }
    let dir = tempdir("retry");
    let c = cache(
        &azurite::config(&proxy.template(), dir.path()),
        azurite::key_env(),
    );
    let t0 = Instant::now();
    assert_eq!(
        read_all(&c, &key("models", "m.bin"), data.len()).unwrap(),
        data
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    let statuses: Vec<_> = proxy
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.status))
        .collect();
    let expected: Vec<_> = [
        ("HEAD", 503),
        ("HEAD", 200),
        ("GET", 500),
        ("GET", 503),
        ("GET", 429),
        ("GET", 206),
    ]
    .iter()
    .map(|(m, s)| (m.to_string(), *s))
    .collect();
    assert_eq!(statuses, expected);
}

#[test]
fn retries_give_up_within_the_fetch_timeout_with_status_code_and_request_id() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m.bin", &bytes(12, 1000));
    let proxy = Proxy::start(az.port);
    for _ in 0..100 {
        proxy.inject(
            "GET",
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        );
    }
    let dir = tempdir("giveup");
    let cfg = Config {
        fetch_timeout: Duration::from_secs(2),
        ..azurite::config(&proxy.template(), dir.path())
    };
    let c = cache(&cfg, azurite::key_env());
    let t0 = Instant::now();
    let e = read_all(&c, &key("models", "m.bin"), 1000).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Origin, "{e}");
    let m = e.message();
    assert!(m.contains("HTTP 503 ServerBusy (request id proxy-"), "{m}");
    assert!(m.contains("BLOBCACHE_FETCH_TIMEOUT=2.0 s"), "{m}");
}

#[test]
fn a_body_that_breaks_mid_way_is_resumed_from_where_it_broke() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(13, 1 << 20);
    az.put("models", "m.bin", &data);
    let proxy = Proxy::start(az.port);
    proxy.inject("GET", Fault::CutBody { after: 300_000 });
    let dir = tempdir("resume");
    let c = cache(
        &azurite::config(&proxy.template(), dir.path()),
        azurite::key_env(),
    );
    assert_eq!(
        read_all(&c, &key("models", "m.bin"), data.len()).unwrap(),
        data
    );
    let ranges: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.range.unwrap())
        .collect();
    assert_eq!(ranges, ["bytes=0-1048575", "bytes=300000-1048575"]);
}

#[test]
fn a_stalled_answer_fails_within_the_fetch_timeout() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m.bin", &bytes(14, 1 << 20));
    let proxy = Proxy::start(az.port);
    let dir = tempdir("stall");
    let cfg = Config {
        fetch_timeout: Duration::from_secs(2),
        ..azurite::config(&proxy.template(), dir.path())
    };
    let k = key("models", "m.bin");
    for (fault, words) in [
        (
            Fault::StallBody {
                after: 1000,
                stall: Duration::from_secs(30),
            },
            "stalled: no bytes for",
        ),
        (
            Fault::StallHead {
                stall: Duration::from_secs(30),
            },
            "no answer within",
        ),
    ] {
        proxy.inject("GET", fault);
        let c = cache(&cfg, azurite::key_env());
        let t0 = Instant::now();
        let e = read_all(&c, &k, 1 << 20).unwrap_err();
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(3000), "took {took:?}: {e}");
        assert_eq!(e.kind(), ErrorKind::Origin, "{e}");
        assert!(e.message().contains(words), "{e}");
        assert!(e.message().contains("BLOBCACHE_FETCH_TIMEOUT=2.0 s"), "{e}");
    }
}
