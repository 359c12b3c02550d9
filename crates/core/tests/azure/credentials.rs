//! Which credentials read a blob (shared key, SAS, anonymous, Entra ID),
//! and that none reaches a message or a log line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::config::{AzureAuth, Config};
use blobcache_core::origin::azure::AzureEnv;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite, KEY};
use blobcache_testing::proxy::{Proxy, TokenServer, TOKEN};
use blobcache_testing::{blobcache_cmd, bytes, tempdir};

use crate::{cache, cat_env, key, read_all};

/// A key that decodes but is not the account's.
fn wrong_key() -> String {
    format!("F{}", &KEY[1..])
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
