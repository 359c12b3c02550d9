//! The Azure origin against a real Azurite (npm, in-memory, loopback only).
//!
//! Credentials are always explicit (an `AzureEnv` given to the origin, or a
//! cleared environment for child processes), so nothing here can reach the
//! instance metadata service or a real Azure host. Faults come from a
//! loopback proxy between the cache and Azurite (blobcache_testing::proxy).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::config::{AzureAuth, Config};
use blobcache_core::origin::azure::{AzureEnv, AzureOrigin};
use blobcache_core::origin::Origin;
use blobcache_core::{BlobKey, Cache, ErrorKind};

use blobcache_testing::azurite::{self, Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::{Fault, Gate, Proxy, TokenServer, TOKEN};
use blobcache_testing::{blobcache_cmd, bytes, tempdir};

fn key(container: &str, blob: &str) -> BlobKey {
    BlobKey::new(ACCOUNT, container, blob).unwrap()
}

fn cache(config: &Config, env: AzureEnv) -> Cache {
    let origin = Arc::new(AzureOrigin::with_env(config, env).unwrap());
    Cache::with_origin(config.clone(), origin).unwrap()
}

fn read_all(c: &Cache, k: &BlobKey, len: usize) -> blobcache_core::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    c.read(k, 0, &mut buf)?;
    Ok(buf)
}

/// A key that decodes but is not the account's.
fn wrong_key() -> String {
    format!("F{}", &KEY[1..])
}

fn cat_env(template: &str, dir: &Path, credential: (&str, String)) -> Vec<(&'static str, String)> {
    vec![
        ("BLOBCACHE_DIR", dir.display().to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", template.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "2s".to_string()),
        (
            match credential.0 {
                "AZURE_STORAGE_ACCOUNT_KEY" => "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_SAS_TOKEN" => "AZURE_STORAGE_SAS_TOKEN",
                other => panic!("unexpected credential variable {other}"),
            },
            credential.1,
        ),
    ]
}

/// The streamer's own Azure client (curl) resolves `*.localhost` to
/// loopback, so `AZURE_STORAGE_ENDPOINT_SUFFIX=blob.localhost:<port>` reaches
/// an emulator on this machine; the library resolves those names the same
/// way (the system resolver here does not), with Azurite's host-style URLs.
#[test]
fn a_host_style_endpoint_under_localhost_reaches_azurite() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(21, (1 << 20) + 7);
    az.put("models", "m.bin", &data);
    let dir = tempdir("localhost");
    let out = dir.path().join("out.bin");
    let o = blobcache_cmd(
        &[
            (
                "BLOBCACHE_DIR",
                dir.path().join("cache").display().to_string(),
            ),
            (
                "BLOBCACHE_AZURE_ENDPOINT",
                format!("http://{{account}}.blob.localhost:{}", az.port),
            ),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ],
        &[
            "cat",
            "az://devstoreaccount1/models/m.bin",
            "--out",
            &out.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == data, "bytes differ");
}

#[test]
fn cold_read_fills_the_cache_and_a_warm_read_is_served_with_azurite_stopped() {
    let mut az = Azurite::start();
    az.create_container("models");
    let data = bytes(1, (3 << 20) + 12345);
    az.put("models", "dir/model.safetensors", &data);
    let dir = tempdir("warm");
    let k = key("models", "dir/model.safetensors");

    let cfg = azurite::config(&az.template(), dir.path());
    let c = cache(&cfg, azurite::key_env());
    assert_eq!(read_all(&c, &k, data.len()).unwrap(), data);
    let s = c.stats();
    assert_eq!(s.blocks_fetched, 4);
    assert_eq!(s.bytes_from_origin, data.len() as u64);
    // Warm, same lifecycle: no origin traffic at all.
    let mut part = vec![0u8; 100_000];
    c.read(&k, 2_000_000, &mut part).unwrap();
    assert_eq!(part, data[2_000_000..2_100_000]);
    assert_eq!(c.stats().blocks_fetched, 4);
    drop(c);

    az.stop();
    // A new process, Azurite gone: served from the cache, with one warning.
    let out = dir.path().join("out");
    let env = cat_env(
        &az.template(),
        dir.path(),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
    );
    let t0 = Instant::now();
    let o = blobcache_cmd(
        &env,
        &[
            "cat",
            "az://devstoreaccount1/models/dir/model.safetensors",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("warn")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("unreachable") && warnings[0].contains("from the cache"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"blocks_fetched\":0"));
}

#[test]
fn a_blob_overwritten_between_loads_is_fetched_again_and_the_old_copy_discarded() {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(2, (2 << 20) + 7);
    let new = bytes(3, (1 << 20) + 99);
    let etag1 = az.put("models", "m.bin", &old);
    let dir = tempdir("between");
    let k = key("models", "m.bin");
    let cfg = azurite::config(&az.template(), dir.path());

    let c = cache(&cfg, azurite::key_env());
    assert_eq!(read_all(&c, &k, old.len()).unwrap(), old);
    assert_eq!(c.entry(&k).unwrap().info.version, etag1);
    drop(c);

    let etag2 = az.put("models", "m.bin", &new);
    assert_ne!(etag1, etag2);
    let c = cache(&cfg, azurite::key_env());
    let e = c.entry(&k).unwrap();
    assert_eq!(
        (e.info.size, e.info.version.as_str()),
        (new.len() as u64, etag2.as_str())
    );
    assert_eq!(read_all(&c, &k, new.len()).unwrap(), new);
    assert_eq!(c.stats().blocks_fetched, 2);
    // Only the new version is left on disk.
    let versions = std::fs::read_dir(c.store().unwrap().key_dir(&k))
        .unwrap()
        .count();
    assert_eq!(versions, 1);
}

#[test]
fn a_blob_replaced_during_a_load_fails_the_read_as_changed_never_mixing_versions() {
    let az = Azurite::start();
    az.create_container("models");
    let old = bytes(4, 2 << 20);
    let new = bytes(5, 2 << 20);
    az.put("models", "m.bin", &old);
    let proxy = Proxy::start(az.port);
    let gate = Gate::default();
    // The first block's answer stops after 100 000 bytes until the blob has
    // been replaced; then the connection breaks and the read resumes.
    proxy.inject(
        "GET",
        Fault::PauseBody {
            after: 100_000,
            gate: gate.clone(),
        },
    );
    let dir = tempdir("during");
    let k = key("models", "m.bin");
    let cfg = Config {
        fetch_concurrency: 1,
        ..azurite::config(&proxy.template(), dir.path())
    };
    let c = Arc::new(cache(&cfg, azurite::key_env()));
    let reader = {
        let (c, k) = (c.clone(), k.clone());
        std::thread::spawn(move || read_all(&c, &k, 2 << 20))
    };
    assert!(
        gate.wait_paused(Duration::from_secs(20)),
        "the proxy never held the answer"
    );
    az.put("models", "m.bin", &new);
    gate.open();
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(
        e.message()
            .contains("replaced at the origin during the load"),
        "{e}"
    );
    assert!(e.message().contains("retried"), "{e}");
    let seen = proxy.seen();
    let resumed = seen.iter().find(|s| s.status == 412).expect("a 412 answer");
    assert_eq!(
        resumed.range.as_deref(),
        Some("bytes=100000-1048575"),
        "{seen:?}"
    );
    // The next read looks the blob up again and gets only the new bytes.
    assert_eq!(read_all(&c, &k, new.len()).unwrap(), new);
}

#[test]
fn shared_key_sas_and_anonymous_access_all_read_the_blob() {
    let az = Azurite::start();
    az.create_container("private");
    az.create_public_container("public");
    let data = bytes(6, 1_500_000);
    az.put("private", "p.bin", &data);
    az.put("public", "p.bin", &data);
    let sas = az.account_sas();
    for (tag, env, container, anonymous) in [
        ("key", azurite::key_env(), "private", false),
        ("sas", azurite::sas_env(&sas), "private", false),
        (
            "sas-with-?",
            azurite::sas_env(&format!("?{sas}")),
            "private",
            false,
        ),
        ("anonymous", AzureEnv::default(), "public", true),
    ] {
        let dir = tempdir(tag);
        let cfg = Config {
            azure_auth: if anonymous {
                AzureAuth::Anonymous
            } else {
                AzureAuth::Auto
            },
            ..azurite::config(&az.template(), dir.path())
        };
        let c = cache(&cfg, env);
        let got = read_all(&c, &key(container, "p.bin"), data.len());
        assert_eq!(
            got.map_err(|e| format!("{tag}: {e}")).unwrap(),
            data,
            "{tag}"
        );
    }
}

#[test]
fn an_entra_id_token_is_fetched_once_and_shared_by_all_requests() {
    let az = Azurite::start();
    az.create_container("models");
    for i in 0..4 {
        az.put("models", &format!("m{i}.bin"), &bytes(20 + i, 1000));
    }
    let proxy = Proxy::start(az.port);
    let tokens = TokenServer::start();
    let secret = "service-principal-secret-value";
    let env = |authority_port: u16| {
        AzureEnv::from_pairs([
            (
                "AZURE_CLIENT_ID",
                "00000000-0000-0000-0000-000000000001".to_string(),
            ),
            ("AZURE_TENANT_ID", "tenant".to_string()),
            ("AZURE_CLIENT_SECRET", secret.to_string()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://127.0.0.1:{authority_port}"),
            ),
            // The stand-in token endpoint speaks plain HTTP.
            ("AZURE_ALLOW_HTTP", "true".to_string()),
        ])
    };
    let dir = tempdir("entra");
    let c = Arc::new(cache(
        &azurite::config(&proxy.template(), dir.path()),
        env(tokens.port),
    ));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || read_all(&c, &key("models", &format!("m{i}.bin")), 1000))
        })
        .collect();
    for r in readers {
        // Azurite takes bearer tokens only over HTTPS, so the reads fail;
        // what matters is what was sent.
        if let Err(e) = r.join().unwrap() {
            assert!(
                !e.message().contains(secret) && !e.message().contains(TOKEN),
                "{e}"
            );
        }
    }
    assert_eq!(tokens.requests(), 1, "one token for all requests");
    let seen = proxy.seen();
    assert!(seen.len() >= 4);
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer test-acce")),
        "{seen:?}"
    );

    // No token endpoint at all: a clear error, quickly, then not asked again.
    let dir = tempdir("entra-down");
    let c = cache(
        &Config {
            fetch_timeout: Duration::from_secs(2),
            ..azurite::config(&proxy.template(), dir.path())
        },
        env(azurite::free_port()),
    );
    let t0 = Instant::now();
    let e = read_all(&c, &key("models", "m0.bin"), 1000).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Origin, "{e}");
    assert!(
        e.message()
            .contains("cannot get an Azure credential (Entra ID"),
        "{e}"
    );
    assert!(e.message().contains("AZURE_STORAGE_ACCOUNT_KEY"), "{e}");
    assert!(!e.message().contains(secret), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    let t1 = Instant::now();
    let e = read_all(&c, &key("models", "m1.bin"), 1000).unwrap_err();
    assert!(
        t1.elapsed() < Duration::from_millis(200),
        "took {:?}",
        t1.elapsed()
    );
    assert!(e.message().contains("not asked again"), "{e}");
}

#[test]
fn a_wrong_key_gives_a_clear_403_with_code_and_request_id_and_without_the_key() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m.bin", &bytes(7, 1000));
    let dir = tempdir("wrongkey");
    let bad = wrong_key();
    let cfg = azurite::config(&az.template(), dir.path());
    let c = cache(
        &cfg,
        AzureEnv::from_pairs([("AZURE_STORAGE_ACCOUNT_KEY", bad.as_str())]),
    );
    let t0 = Instant::now();
    let e = read_all(&c, &key("models", "m.bin"), 1000).unwrap_err();
    let m = e.message();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(m.contains("HTTP 403"), "{m}");
    assert!(m.contains("AuthorizationFailure"), "{m}");
    let rid = m
        .split("request id ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(rid.len() >= 8 && rid != "none", "{m}");
    assert!(
        m.contains(
            "check that AZURE_STORAGE_ACCOUNT_KEY is a current key of account devstoreaccount1"
        ),
        "{m}"
    );
    // Built without the key, not merely redacted afterwards.
    assert!(!m.contains(&bad) && !m.contains("<redacted>"), "{m}");
    // Not retried: refusals are final.
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn neither_key_nor_sas_appears_in_errors_or_debug_logs_of_a_child_process() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(8, 1 << 20);
    az.put("models", "m.bin", &data);
    let sas = az.account_sas();
    let sig = azurite::sas_signature(&sas);
    let sig_encoded = sas.split("sig=").nth(1).unwrap().to_string();
    let dir = tempdir("secrets");
    let uri = "az://devstoreaccount1/models/m.bin";
    let missing = "az://devstoreaccount1/models/missing.bin";
    let with_debug = |mut env: Vec<(&'static str, String)>| {
        env.push(("BLOBCACHE_LOG", "debug".into()));
        env
    };
    let mut outputs = Vec::new();
    // A SAS read that works, one of a missing blob, and a wrong key.
    let sas_env = with_debug(cat_env(
        &az.template(),
        dir.path(),
        ("AZURE_STORAGE_SAS_TOKEN", sas.clone()),
    ));
    let o = blobcache_cmd(&sas_env, &["cat", uri]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    outputs.push(o);
    let o = blobcache_cmd(&sas_env, &["cat", missing]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        stderr.contains("HTTP 404") && stderr.contains("check the container and blob name"),
        "{stderr}"
    );
    outputs.push(o);
    let bad = wrong_key();
    let dir2 = tempdir("secrets2");
    let key_env = with_debug(cat_env(
        &az.template(),
        dir2.path(),
        ("AZURE_STORAGE_ACCOUNT_KEY", bad.clone()),
    ));
    let o = blobcache_cmd(&key_env, &["cat", uri]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 403"));
    outputs.push(o);

    for o in &outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The debug log did log requests (so there was something to leak).
        assert!(text.contains("azure: HEAD http://127.0.0.1"), "{text}");
        for secret in [
            sig.as_str(),
            sig_encoded.as_str(),
            KEY,
            bad.as_str(),
            "sig=",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(
            !text.contains("<redacted>"),
            "a secret had to be redacted:\n{text}"
        );
    }
}

#[test]
fn blob_names_with_spaces_percent_plus_hash_question_mark_and_unicode_round_trip() {
    let az = Azurite::start();
    az.create_container("names");
    let names = [
        "dir/my model ü%+#?.safetensors",
        "plus+and space",
        "100%",
        "pct%2Fslash",
        "hash#frag?query=1&x=y",
        "日本語/ファイル.bin",
        "semi;colon=eq&amp'quote[br]{c}~t`^|!$*()@,",
    ];
    for (i, n) in names.iter().enumerate() {
        az.put("names", n, &bytes(100 + i as u64, 1000 + i));
    }
    let mut stored = az.list("names");
    stored.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected, "Azurite stored different names");
    let dir = tempdir("names");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        azurite::key_env(),
    );
    for (i, n) in names.iter().enumerate() {
        let got = read_all(&c, &key("names", n), 1000 + i).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(got, bytes(100 + i as u64, 1000 + i), "{n}");
    }
}

/// `x/`, `a//b`, `trail/`, `/` are legal blob names (Azure and Azurite
/// store them); each is read byte for byte, and none is confused with the
/// name it would collapse to (`x`, `a/b`, `trail`).
#[test]
fn blob_names_with_empty_segments_are_read_byte_exact_and_never_collapsed() {
    let az = Azurite::start();
    az.create_container("slashes");
    let names = [
        "x/", "x", "a//b", "a/b", "trail/", "trail", "/", "//", "/lead", "lead", "e//", "e/",
    ];
    for (i, n) in names.iter().enumerate() {
        az.put_raw("slashes", n, &bytes(300 + i as u64, 70_000 + i));
    }
    let mut stored = az.list("slashes");
    stored.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected, "Azurite stored different names");
    let dir = tempdir("slashes");
    let mut cfg = azurite::config(&az.template(), dir.path());
    cfg.block_size = 64 << 10; // two blocks each: a HEAD and two ranged GETs
    let c = cache(&cfg, azurite::key_env());
    for (i, n) in names.iter().enumerate() {
        let k = BlobKey::new(ACCOUNT, "slashes", n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        let got = read_all(&c, &k, 70_000 + i).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        assert!(
            got == bytes(300 + i as u64, 70_000 + i),
            "{n:?}: wrong bytes"
        );
    }
    // Dot segments stay refused (an HTTP client resolves them away: `d/../e`
    // would read `e`), with a clear message and no request.
    for n in ["d/../e", "./e", "e/.", "d/.."] {
        let e = BlobKey::new(ACCOUNT, "slashes", n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{n:?}");
        assert!(e.message().contains("path segment"), "{n:?}: {e}");
    }
}

#[test]
fn four_processes_cold_reading_256_mib_fetch_each_block_from_azure_once() {
    let az = Azurite::start();
    az.create_container("big");
    let t0 = Instant::now();
    let data = bytes(9, 256 << 20);
    az.put("big", "model.safetensors", &data);
    eprintln!("256 MiB generated and uploaded in {:?}", t0.elapsed());
    let proxy = Proxy::start(az.port);
    let dir = tempdir("four");
    let cache_dir = dir.path().join("cache");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("out.{i}"));
            let mut cmd = Command::new(blobcache_testing::built::command());
            cmd.env_clear()
                .env("BLOBCACHE_DIR", &cache_dir)
                .env("BLOBCACHE_AZURE_ENDPOINT", proxy.template())
                .env("BLOBCACHE_BLOCK_SIZE", "8M")
                .env("AZURE_STORAGE_ACCOUNT_KEY", KEY)
                .args([
                    "cat",
                    "az://devstoreaccount1/big/model.safetensors",
                    "--threads",
                    "4",
                ])
                .arg("--out")
                .arg(&out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            (out, cmd.spawn().unwrap())
        })
        .collect();
    let t0 = Instant::now();
    let mut fetched = 0;
    for (out, child) in children {
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fetched += stdout
            .split("\"blocks_fetched\":")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no blocks_fetched in {stdout}"));
        eprintln!("a process finished after {:?}", t0.elapsed());
        assert!(
            std::fs::read(&out).unwrap() == data,
            "output {} differs",
            out.display()
        );
        std::fs::remove_file(&out).unwrap();
    }
    let blocks = 32;
    assert_eq!(
        fetched, blocks,
        "blocks fetched by the four processes together"
    );
    assert!(
        proxy.ranged_gets() <= blocks as usize,
        "{} ranged GETs for {blocks} blocks",
        proxy.ranged_gets()
    );
}

#[test]
fn a_range_starting_at_the_end_of_the_blob_is_an_error_not_an_empty_success() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(10, 100);
    az.put("models", "small.bin", &data);
    let proxy = Proxy::start(az.port);
    let dir = tempdir("edge");
    let cfg = azurite::config(&proxy.template(), dir.path());
    let origin = AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap();
    let k = key("models", "small.bin");
    let info = origin.stat(&k).unwrap();
    assert_eq!(info.size, 100);
    for (offset, len) in [(100u64, 10u64), (100, 1), (90, 20)] {
        let mut got = Vec::new();
        let e = origin
            .read(&k, &info, offset, len, &mut |c: &[u8]| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange, "{e}");
        assert!(e.message().contains("the blob has 100 bytes"), "{e}");
        assert!(got.is_empty(), "bytes delivered for {offset}+{len}");
    }
    // Azurite did answer 206 (with no bytes) to the first: the quirk was hit.
    let first_get = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == "GET")
        .unwrap();
    assert_eq!(
        (first_get.status, first_get.range.as_deref()),
        (206, Some("bytes=100-109"))
    );
    // A zero-length read asks nothing.
    let before = proxy.requests();
    origin
        .read(&k, &info, 100, 0, &mut |_: &[u8]| Ok(()))
        .unwrap();
    assert_eq!(proxy.requests(), before);
    // The whole blob still reads.
    let mut all = Vec::new();
    origin
        .read(&k, &info, 0, 100, &mut |c: &[u8]| {
            all.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(all, data);
}

#[test]
fn a_missing_blob_is_not_found_with_a_hint() {
    let az = Azurite::start();
    az.create_container("models");
    let dir = tempdir("missing");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        azurite::key_env(),
    );
    let e = read_all(&c, &key("models", "nope.bin"), 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("HTTP 404"), "{e}");
    assert!(
        e.message().contains("check the container and blob name"),
        "{e}"
    );
    let e = read_all(&c, &key("nocontainer", "x.bin"), 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

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

#[test]
fn shutdown_cancels_a_request_in_flight_without_waiting_for_the_network() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m.bin", &bytes(15, 1 << 20));
    let proxy = Proxy::start(az.port);
    proxy.inject(
        "GET",
        Fault::StallBody {
            after: 1000,
            stall: Duration::from_secs(30),
        },
    );
    let dir = tempdir("shutdown");
    let c = Arc::new(cache(
        &azurite::config(&proxy.template(), dir.path()),
        azurite::key_env(),
    ));
    let reader = {
        let c = c.clone();
        std::thread::spawn(move || read_all(&c, &key("models", "m.bin"), 1 << 20))
    };
    while proxy.ranged_gets() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    c.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shutdown, "{e}");
}
