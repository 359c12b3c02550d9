//! Forward proxies between the cache and Azure: a real Squid on loopback
//! (blobcache_testing::squid) for HTTP origins (absolute-form requests) and
//! HTTPS origins (CONNECT tunnels), with basic authentication, `NO_PROXY`,
//! `BLOBCACHE_PROXY=off`, a dead or hung proxy, and Squid as a cluster
//! caching proxy shared by two "nodes" (processes with caches of their own).
//!
//! The in-process tests give the proxy variables through `AzureEnv`; the
//! `blobcache cat` children read them from their environment, as the
//! library does under the streamer.

use std::time::{Duration, Instant};

use blobcache_core::config::Config;
use blobcache_core::origin::azure::AzureEnv;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite, KEY};
use blobcache_testing::proxy::Proxy;
use blobcache_testing::squid::{Options, Squid};
use blobcache_testing::{blobcache_cmd, bytes, tempdir};

use crate::{cache, key, read_all};

/// The emulator's key plus `pairs` (proxy variables).
fn key_env_with(pairs: &[(&str, &str)]) -> AzureEnv {
    AzureEnv::from_pairs(
        [("AZURE_STORAGE_ACCOUNT_KEY", KEY)]
            .into_iter()
            .chain(pairs.iter().copied()),
    )
}

/// Lines of Squid's access log for requests to `port` (the origin).
fn logged_for(squid: &Squid, port: u16) -> Vec<String> {
    let needle = format!("127.0.0.1:{port}");
    squid
        .access_log()
        .into_iter()
        .filter(|l| l.contains(&needle))
        .collect()
}

/// Squid writes a request's line when it ends; give it a moment.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// `blobcache cat` of `az://devstoreaccount1/<container>/<blob>` into
/// `out`, with the emulator's key, `template`, the cache in `dir`, debug
/// logging and `env` on top.
fn cat(
    template: &str,
    dir: &std::path::Path,
    container_blob: &str,
    env: &[(&str, String)],
) -> (std::process::Output, Vec<u8>) {
    let out = dir.join("out.bin");
    let _ = std::fs::remove_file(&out);
    let mut all: Vec<(&str, String)> = vec![
        ("BLOBCACHE_DIR", dir.join("cache").display().to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", template.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "5s".to_string()),
        ("BLOBCACHE_LOG", "debug".to_string()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
    ];
    all.extend(env.iter().cloned());
    let uri = format!("az://devstoreaccount1/{container_blob}");
    let o = blobcache_cmd(&all, &["cat", &uri, "--out", out.to_str().unwrap()]);
    let got = std::fs::read(&out).unwrap_or_default();
    (o, got)
}

#[test]
fn an_http_origin_is_read_through_http_proxy_and_squid_sees_every_request() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(31, 3 << 20);
    az.put("models", "m.bin", &data);
    let squid = Squid::start();
    let dir = tempdir("via-squid");
    let cfg = azurite::config(&az.template(), dir.path());
    let c = cache(&cfg, key_env_with(&[("HTTP_PROXY", &squid.url())]));
    assert_eq!(
        read_all(&c, &key("models", "m.bin"), data.len()).unwrap(),
        data
    );
    settle();
    let lines = logged_for(&squid, az.port);
    let gets: Vec<_> = lines.iter().filter(|l| l.contains(" GET ")).collect();
    assert!(
        lines.iter().any(|l| l.contains(" HEAD ")),
        "no HEAD in Squid's log: {lines:#?}"
    );
    assert_eq!(gets.len(), 3, "one ranged GET per 1 MiB block: {lines:#?}");
    assert!(
        gets.iter().all(|l| l.contains("\"bytes=")),
        "the GETs went through with their ranges: {lines:#?}"
    );
}

#[test]
fn lower_case_http_proxy_is_used_and_no_proxy_naming_the_host_goes_direct() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(32, 1 << 20);
    az.put("models", "m.bin", &data);
    let squid = Squid::start();
    let url = squid.url();
    let k = key("models", "m.bin");
    // Lower case: through Squid.
    let dir = tempdir("lower");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        key_env_with(&[("http_proxy", &url)]),
    );
    assert_eq!(read_all(&c, &k, data.len()).unwrap(), data);
    settle();
    let before = logged_for(&squid, az.port).len();
    assert!(before >= 2, "http_proxy was not used");
    // NO_PROXY by address, by a list with the address, by `*`, and lower
    // case: direct, Squid sees nothing more.
    for (i, (var, value)) in [
        ("NO_PROXY", "127.0.0.1"),
        ("NO_PROXY", "example.com, 127.0.0.0/8"),
        ("NO_PROXY", "*"),
        ("no_proxy", "127.0.0.1"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempdir(&format!("direct-{i}"));
        let c = cache(
            &azurite::config(&az.template(), dir.path()),
            key_env_with(&[("HTTP_PROXY", &url), ("HTTPS_PROXY", &url), (var, value)]),
        );
        assert_eq!(read_all(&c, &k, data.len()).unwrap(), data, "{var}={value}");
    }
    // A NO_PROXY that does not name the host: through Squid again.
    let dir = tempdir("not-excluded");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        key_env_with(&[("HTTP_PROXY", &url), ("NO_PROXY", "127.0.0.2,example.com")]),
    );
    assert_eq!(read_all(&c, &k, data.len()).unwrap(), data);
    settle();
    let after = logged_for(&squid, az.port);
    assert_eq!(
        after.len(),
        2 * before,
        "only the first and last reads went through Squid: {after:#?}"
    );
}

#[test]
fn an_https_origin_is_tunnelled_through_https_proxy_with_connect() {
    let az = Azurite::start_tls();
    az.create_container("models");
    let data = bytes(33, (2 << 20) + 12345);
    az.put("models", "m.bin", &data);
    let squid = Squid::start();
    let dir = tempdir("tunnel");
    let ca = az.ca.as_ref().unwrap().display().to_string();
    let (o, got) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[("HTTPS_PROXY", squid.url()), ("SSL_CERT_FILE", ca)],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(got == data, "the bytes read through the tunnel differ");
    assert!(
        stderr.contains(&format!(
            "requests to https://127.0.0.1:{}/devstoreaccount1 go through proxy http://127.0.0.1:{} (from HTTPS_PROXY)",
            az.port, squid.port
        )),
        "{stderr}"
    );
    settle();
    let lines = logged_for(&squid, az.port);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(" CONNECT ")),
        "Squid saw only CONNECT tunnels to the origin: {lines:#?}"
    );
}

#[test]
fn proxy_credentials_in_the_url_are_sent_and_never_shown() {
    const PASSWORD: &str = "pr0xy-s3cret-passw0rd";
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(34, 1 << 20);
    az.put("models", "m.bin", &data);
    let squid = Squid::with(Options {
        auth: Some(("alice".into(), PASSWORD.into())),
        ..Options::default()
    });
    let dir = tempdir("auth");
    let (o, got) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[("HTTP_PROXY", squid.url_with("alice", PASSWORD))],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(got == data);
    assert!(
        stderr.contains(&format!(
            "go through proxy http://alice@127.0.0.1:{} (from HTTP_PROXY)",
            squid.port
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    // Without credentials, or with a wrong password: a clear error that
    // names the variable, and still no password.
    for (tag, url) in [
        ("none", squid.url()),
        ("wrong", squid.url_with("alice", "wrong-passw0rd-123")),
    ] {
        let dir = tempdir(tag);
        let (o, _) = cat(
            &az.template(),
            dir.path(),
            "models/m.bin",
            &[("HTTP_PROXY", url)],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tag}: {stderr}");
        assert!(stderr.contains("HTTP 407"), "{tag}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the proxy 127.0.0.1:{} refused its credentials; check the user and password in HTTP_PROXY",
                squid.port
            )),
            "{tag}: {stderr}"
        );
        assert!(
            !stderr.contains(PASSWORD) && !stderr.contains("wrong-passw0rd-123"),
            "{tag}: {stderr}"
        );
    }
}

#[test]
fn proxy_credentials_work_for_https_tunnels_too() {
    const PASSWORD: &str = "tunnel-s3cret-passw0rd";
    let az = Azurite::start_tls();
    az.create_container("models");
    let data = bytes(35, 1 << 20);
    az.put("models", "m.bin", &data);
    let squid = Squid::with(Options {
        auth: Some(("bob".into(), PASSWORD.into())),
        ..Options::default()
    });
    let dir = tempdir("auth-tls");
    let ca = az.ca.as_ref().unwrap().display().to_string();
    let (o, got) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[
            ("https_proxy", squid.url_with("bob", PASSWORD)),
            ("SSL_CERT_FILE", ca.clone()),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(got == data);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let dir = tempdir("auth-tls-wrong");
    let (o, _) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[
            ("https_proxy", squid.url_with("bob", "not-the-passw0rd")),
            ("SSL_CERT_FILE", ca),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "through the proxy 127.0.0.1:{} (tunnel error: proxy authorization required); the proxy 127.0.0.1:{} refused its credentials; check the user and password in https_proxy",
            squid.port, squid.port
        )),
        "{stderr}"
    );
    assert!(stderr.contains("1 attempt"), "not retried: {stderr}");
    assert!(!stderr.contains("not-the-passw0rd"), "{stderr}");
}

#[test]
fn blobcache_proxy_off_ignores_the_proxy_variables() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(36, 1 << 20);
    az.put("models", "m.bin", &data);
    let dead = format!("http://127.0.0.1:{}", azurite::free_port());
    let dir = tempdir("off");
    let (o, got) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[
            ("HTTP_PROXY", dead.clone()),
            ("HTTPS_PROXY", dead.clone()),
            ("ALL_PROXY", dead),
            ("BLOBCACHE_PROXY", "off".into()),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(got == data);
    assert!(
        stderr.contains("go direct (BLOBCACHE_PROXY=off)"),
        "{stderr}"
    );
    // A proxy of a kind not supported fails the read, naming the variable
    // and not the password.
    let (o, _) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[(
            "HTTPS_PROXY",
            "socks5://u:socks-passw0rd-1@127.0.0.1:1080".into(),
        )],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("HTTPS_PROXY=socks5://***@127.0.0.1:1080 is not valid (only http:// and https:// proxies are supported)"),
        "{stderr}"
    );
    assert!(!stderr.contains("socks-passw0rd-1"), "{stderr}");
    // An invalid value is refused, naming the variable and the form.
    let (o, _) = cat(
        &az.template(),
        dir.path(),
        "models/m.bin",
        &[("BLOBCACHE_PROXY", "none".into())],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("BLOBCACHE_PROXY=none is not valid; use env"),
        "{stderr}"
    );
}

#[test]
fn a_dead_proxy_fails_the_read_within_the_fetch_timeout_naming_the_proxy() {
    let port = azurite::free_port(); // nothing listens there
    let az_port = azurite::free_port();
    let dir = tempdir("dead-proxy");
    let cfg = Config {
        fetch_timeout: Duration::from_secs(2),
        ..azurite::config(
            &format!("http://127.0.0.1:{az_port}/{{account}}"),
            dir.path(),
        )
    };
    let proxy = format!("http://carol:dead-proxy-passw0rd@127.0.0.1:{port}");
    let c = cache(&cfg, key_env_with(&[("HTTP_PROXY", &proxy)]));
    let t0 = Instant::now();
    let e = read_all(&c, &key("models", "m.bin"), 10).unwrap_err();
    let took = t0.elapsed();
    let m = e.message();
    eprintln!("{m}");
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{m}");
    assert!(
        m.contains(&format!("through the proxy 127.0.0.1:{port}")),
        "{m}"
    );
    assert!(m.contains("(HTTP_PROXY) runs and is reachable"), "{m}");
    assert!(!m.contains("dead-proxy-passw0rd"), "{m}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn a_hung_proxy_fails_the_read_within_the_fetch_timeout_naming_the_proxy() {
    // Connections complete (the kernel's backlog) but nothing ever answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    for scheme in ["http", "https"] {
        let dir = tempdir(&format!("hung-{scheme}"));
        let cfg = Config {
            fetch_timeout: Duration::from_secs(2),
            ..azurite::config(&format!("{scheme}://127.0.0.1:9/{{account}}"), dir.path())
        };
        let proxy = format!("http://127.0.0.1:{port}");
        let c = cache(
            &cfg,
            key_env_with(&[("HTTP_PROXY", &proxy), ("HTTPS_PROXY", &proxy)]),
        );
        let t0 = Instant::now();
        let e = read_all(&c, &key("models", "m.bin"), 10).unwrap_err();
        let took = t0.elapsed();
        let m = e.message();
        eprintln!("{scheme} after {took:?}: {m}");
        assert!(
            m.contains(&format!("proxy 127.0.0.1:{port}"))
                || m.contains(&format!("proxy http://127.0.0.1:{port}")),
            "{scheme}: {m}"
        );
        assert!(took < Duration::from_secs(4), "{scheme}: took {took:?}");
    }
    drop(hung);
}

/// Two "nodes" (processes with caches of their own) load one blob cold
/// through a caching Squid in front of Azurite.
mod caching {
    use super::*;

    /// A caching Squid in front of a counting proxy in front of Azurite.
    struct Cluster {
        az: Azurite,
        counter: Proxy,
        squid: Squid,
        sas: String,
    }

    impl Cluster {
        fn start() -> Cluster {
            Cluster::with(Vec::new())
        }

        /// Without these directives of the caching configuration.
        fn with(omit: Vec<String>) -> Cluster {
            let az = Azurite::start();
            az.create_container("models");
            let counter = Proxy::start(az.port);
            let squid = Squid::with(Options {
                cache: true,
                omit,
                ..Options::default()
            });
            let sas = az.account_sas();
            Cluster {
                az,
                counter,
                squid,
                sas,
            }
        }

        /// One node: `blobcache cat` with a SAS (a request with a shared
        /// key's Authorization header is not cacheable), its own cache.
        fn node(&self, tag: &str) -> (std::process::Output, Vec<u8>) {
            self.node_with(tag, ("AZURE_STORAGE_SAS_TOKEN", self.sas.clone()))
        }

        /// One node with this credential variable.
        fn node_with(
            &self,
            tag: &str,
            credential: (&'static str, String),
        ) -> (std::process::Output, Vec<u8>) {
            let dir = tempdir(tag);
            let out = dir.path().join("out.bin");
            let env: Vec<(&str, String)> = vec![
                (
                    "BLOBCACHE_DIR",
                    dir.path().join("cache").display().to_string(),
                ),
                ("BLOBCACHE_AZURE_ENDPOINT", self.counter.template()),
                ("BLOBCACHE_BLOCK_SIZE", "4M".to_string()),
                ("BLOBCACHE_FETCH_TIMEOUT", "20s".to_string()),
                ("BLOBCACHE_LOG", "info".to_string()),
                credential,
                ("HTTP_PROXY", self.squid.url()),
            ];
            let o = blobcache_cmd(
                &env,
                &[
                    "cat",
                    "az://devstoreaccount1/models/m.bin",
                    "--out",
                    out.to_str().unwrap(),
                ],
            );
            let got = std::fs::read(&out).unwrap_or_default();
            (o, got)
        }
    }

    #[test]
    fn a_second_node_is_served_by_the_caching_proxy_and_azure_sends_the_blob_once() {
        let cl = Cluster::start();
        let size = 64 << 20;
        let data = bytes(37, size);
        cl.az.put("models", "m.bin", &data);
        let t0 = Instant::now();
        for node in ["node1", "node2"] {
            let (o, got) = cl.node(node);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{node}: {stderr}");
            assert!(got == data, "{node}: the bytes differ");
            eprintln!(
                "{node} done after {:?}: {} body bytes from Azurite so far",
                t0.elapsed(),
                cl.counter.body_bytes()
            );
        }
        settle();
        let log = logged_for(&cl.squid, cl.counter.port);
        eprintln!("Squid's access log:\n{}", log.join("\n"));
        let from_azurite = cl.counter.body_bytes();
        assert!(
            from_azurite as f64 <= 1.05 * size as f64,
            "{from_azurite} bytes from Azurite for a {size}-byte blob read by two nodes"
        );
        let blocks = size >> 22;
        let hits = log
            .iter()
            .filter(|l| l.starts_with("TCP_MEM_HIT/206 ") && l.contains(" GET "))
            .count();
        assert_eq!(hits, blocks, "the second node's GETs were all memory hits");
    }

    /// Without `range_offset_limit none` Squid does not cache ranged
    /// answers: each node fetches the whole blob from Azurite.
    #[test]
    fn without_range_offset_limit_squid_caches_no_ranged_answer() {
        let size = 8 << 20;
        let data = bytes(40, size);
        let cl = Cluster::with(vec!["range_offset_limit".to_string()]);
        cl.az.put("models", "m.bin", &data);
        for node in ["node1", "node2"] {
            let (o, got) = cl.node(node);
            assert!(
                o.status.success(),
                "{node}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(got == data, "{node}");
        }
        settle();
        let log = logged_for(&cl.squid, cl.counter.port);
        eprintln!("Squid's log:\n{}", log.join("\n"));
        assert_eq!(cl.counter.body_bytes(), 2 * size as u64);
        assert!(!log.iter().any(|l| l.contains("HIT/")), "{log:#?}");
    }

    /// A shared key signs the Range header, which a caching Squid drops
    /// when it fetches the whole blob: Azure refuses the request (403), and
    /// the read fails saying so, naming the credential.
    #[test]
    fn a_shared_key_fails_through_a_caching_squid_with_a_clear_error() {
        let cl = Cluster::start();
        cl.az.put("models", "m.bin", &bytes(41, 1 << 20));
        let (o, _) = cl.node_with("shared-key", ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{stderr}");
        assert!(stderr.contains("HTTP 403 AuthorizationFailure"), "{stderr}");
        assert!(
            stderr.contains("check that AZURE_STORAGE_ACCOUNT_KEY is a current key"),
            "{stderr}"
        );
        assert!(!stderr.contains(KEY), "{stderr}");
    }

    #[test]
    fn a_blob_overwritten_between_two_nodes_is_never_served_stale_or_mixed() {
        let cl = Cluster::start();
        let size = 16 << 20;
        let old = bytes(38, size);
        let new = bytes(39, size);
        cl.az.put("models", "m.bin", &old);
        let (o, got) = cl.node("node1");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(got == old);
        cl.az.put("models", "m.bin", &new);
        let (o, got) = cl.node("node2");
        let stderr = String::from_utf8_lossy(&o.stderr);
        settle();
        eprintln!(
            "node2: {}\nSquid's access log:\n{}",
            stderr,
            logged_for(&cl.squid, cl.counter.port).join("\n")
        );
        if o.status.success() {
            assert!(got == new, "node 2 read bytes that are not the new version");
        } else {
            assert!(
                stderr.contains("replaced at the origin"),
                "node 2 failed without saying the blob changed: {stderr}"
            );
        }
        // A third node, after that: the new version.
        let (o, got) = cl.node("node3");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(got == new, "node 3 read bytes that are not the new version");
        // Node 2's readers refreshed the cache once between them, not once
        // each: each version came from Azurite about once.
        let from_azurite = cl.counter.body_bytes();
        eprintln!("{from_azurite} body bytes from Azurite for two versions of {size} bytes");
        assert!(
            from_azurite as f64 <= 2.0 * 1.05 * size as f64,
            "{from_azurite} bytes from Azurite for two versions of {size} bytes"
        );
    }
}
