//! Every Entra ID credential kind end to end, against an Azurite started
//! with HTTPS and `--oauth basic` (it checks each bearer token's form,
//! issuer, audience and lifetime), with a loopback stand-in for the
//! identity endpoints (blobcache_testing::tokens): cold and warm loads,
//! tokens Azurite refuses, tokens kept across lifecycles and refreshed
//! before they expire, and processes starting while the endpoint throttles.
//!
//! Each test runs in a process of its own (`in_own_process`): it points
//! `SSL_CERT_FILE` at the test CA and `PATH` at the `az` stand-in, and the
//! token table it checks is process-wide.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::config::Config;
use blobcache_core::origin::azure::AzureEnv;
use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::farlink::FarLink;
use blobcache_testing::isolate::in_own_process;
use blobcache_testing::squid::Squid;
use blobcache_testing::tokens::{TokenService, TENANT};
use blobcache_testing::{blobcache_cmd, bytes, sha256, tempdir};

use crate::{cache, key, read_all};

/// An Azurite that checks tokens, trusted by this process.
fn oauth_azurite() -> Azurite {
    let az = Azurite::start_oauth();
    std::env::set_var("SSL_CERT_FILE", az.ca.as_deref().unwrap());
    az
}

/// The variables of each credential kind, pointing at `tokens`; `id`
/// makes the identity distinct (its own tokens in the process's table).
fn kind_env(kind: &str, tokens: &TokenService, id: &str, scratch: &Path) -> Vec<(String, String)> {
    let client_id = format!("00000000-0000-0000-0000-{id:0>12}");
    let v = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    match kind {
        "workload" => {
            let file = scratch.join(format!("federated-{id}"));
            std::fs::write(&file, format!("kubelet-projected-token-{id}")).unwrap();
            v(&[
                ("AZURE_CLIENT_ID", client_id),
                ("AZURE_TENANT_ID", TENANT.into()),
                ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
                ("AZURE_AUTHORITY_HOST", tokens.authority()),
            ])
        }
        "service-principal" => v(&[
            ("AZURE_CLIENT_ID", client_id),
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_SECRET", format!("client-secret-value-{id}")),
            ("AZURE_AUTHORITY_HOST", tokens.authority()),
        ]),
        "managed-identity" => v(&[
            ("IDENTITY_ENDPOINT", tokens.msi_endpoint()),
            ("AZURE_CLIENT_ID", client_id),
        ]),
        "managed-identity-app-service" => v(&[
            ("IDENTITY_ENDPOINT", tokens.msi_endpoint()),
            ("IDENTITY_HEADER", format!("identity-header-secret-{id}")),
        ]),
        "azure-cli" => v(&[("AZURE_USE_AZURE_CLI", "true".into())]),
        "bearer" => v(&[("AZURE_STORAGE_TOKEN", tokens.new_token())]),
        other => panic!("unknown kind {other}"),
    }
}

const KINDS: &[&str] = &[
    "workload",
    "service-principal",
    "managed-identity",
    "managed-identity-app-service",
    "azure-cli",
    "bearer",
];

/// How each kind names itself in messages.
fn source_of(kind: &str) -> &'static str {
    match kind {
        "workload" => "workload identity (AZURE_FEDERATED_TOKEN_FILE",
        "service-principal" => "service principal (AZURE_CLIENT_SECRET",
        "managed-identity" | "managed-identity-app-service" => {
            "managed identity (http://127.0.0.1:"
        }
        "azure-cli" => "Azure CLI (az account get-access-token)",
        "bearer" => "bearer token from AZURE_STORAGE_TOKEN",
        _ => unreachable!(),
    }
}

fn env_of(pairs: &[(String, String)]) -> AzureEnv {
    AzureEnv::from_pairs(pairs.iter().cloned())
}

/// Puts the `az` stand-in first on this process's PATH.
fn az_on_path(tokens: &TokenService, dir: &Path) {
    let bin = tokens.write_az(dir);
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));
}

#[test]
fn every_entra_id_kind_loads_cold_then_warm_from_an_azurite_that_checks_tokens() {
    in_own_process(
        "identity::every_entra_id_kind_loads_cold_then_warm_from_an_azurite_that_checks_tokens",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let data = bytes(61, 3_500_000);
            az.put("models", "m.bin", &data);
            let tokens = TokenService::start();
            let scratch = tempdir("identity-scratch");
            az_on_path(&tokens, scratch.path());

            // Azurite does check: a request without a credential is refused.
            let dir = tempdir("anon");
            let anon = Config {
                azure_auth: blobcache_core::config::AzureAuth::Anonymous,
                ..azurite::config(&az.template(), dir.path())
            };
            let e = read_all(
                &cache(&anon, AzureEnv::default()),
                &key("models", "m.bin"),
                10,
            )
            .unwrap_err();
            assert!(e.message().contains("HTTP 40"), "{e}");

            for (i, kind) in KINDS.iter().enumerate() {
                let pairs = kind_env(kind, &tokens, &format!("{}", i + 1), scratch.path());
                let dir = tempdir(kind);
                let cfg = azurite::config(&az.template(), dir.path());
                let before = tokens.requests();
                let t0 = Instant::now();
                let cold = cache(&cfg, env_of(&pairs));
                let got = read_all(&cold, &key("models", "m.bin"), data.len())
                    .unwrap_or_else(|e| panic!("{kind}: cold load: {e}"));
                assert!(got == data, "{kind}: cold load bytes differ");
                let from_origin = cold.stats().bytes_from_origin;
                assert!(from_origin >= data.len() as u64, "{kind}: {from_origin}");
                cold.shutdown();
                let cold_time = t0.elapsed();
                // The warm load: a new lifecycle on the same directory.
                let warm = cache(&cfg, env_of(&pairs));
                let got = read_all(&warm, &key("models", "m.bin"), data.len())
                    .unwrap_or_else(|e| panic!("{kind}: warm load: {e}"));
                assert!(got == data, "{kind}: warm load bytes differ");
                assert_eq!(
                    warm.stats().bytes_from_origin,
                    0,
                    "{kind}: warm load hit the origin"
                );
                warm.shutdown();
                let asked = tokens.requests() - before;
                let want = if *kind == "bearer" { 0 } else { 1 };
                assert_eq!(asked, want, "{kind}: identity endpoint asked {asked} times");
                eprintln!("{kind}: cold+warm in {cold_time:?}, identity endpoint asked {asked}");
                if *kind == "bearer" {
                    continue;
                }
                let seen = tokens.seen().pop().unwrap();
                match *kind {
                    "workload" => {
                        assert_eq!(seen.method, "POST");
                        assert_eq!(seen.target, format!("/{TENANT}/oauth2/v2.0/token"));
                        assert_eq!(
                            seen.param("client_assertion").as_deref(),
                            Some(format!("kubelet-projected-token-{}", i + 1).as_str())
                        );
                        assert_eq!(
                            seen.param("client_assertion_type").as_deref(),
                            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                        );
                        assert_eq!(
                            seen.param("grant_type").as_deref(),
                            Some("client_credentials")
                        );
                        assert_eq!(
                            seen.param("scope").as_deref(),
                            Some("https://storage.azure.com/.default")
                        );
                        assert_eq!(
                            seen.param("client_id").as_deref(),
                            Some(format!("00000000-0000-0000-0000-{:0>12}", i + 1).as_str())
                        );
                    }
                    "service-principal" => {
                        assert_eq!(seen.method, "POST");
                        assert_eq!(
                            seen.param("client_secret").as_deref(),
                            Some(format!("client-secret-value-{}", i + 1).as_str())
                        );
                        assert_eq!(
                            seen.param("grant_type").as_deref(),
                            Some("client_credentials")
                        );
                    }
                    "managed-identity" => {
                        assert_eq!(seen.method, "GET");
                        assert_eq!(seen.header("metadata").as_deref(), Some("true"));
                        assert_eq!(
                            seen.param("resource").as_deref(),
                            Some("https://storage.azure.com")
                        );
                        assert!(seen.param("api-version").is_some());
                        assert_eq!(
                            seen.param("client_id").as_deref(),
                            Some(format!("00000000-0000-0000-0000-{:0>12}", i + 1).as_str())
                        );
                    }
                    "managed-identity-app-service" => {
                        assert_eq!(
                            seen.header("x-identity-header").as_deref(),
                            Some(format!("identity-header-secret-{}", i + 1).as_str())
                        );
                    }
                    "azure-cli" => assert_eq!(seen.target, "/cli"),
                    _ => unreachable!(),
                }
            }
        },
    );
}

#[test]
fn a_token_azurite_refuses_fails_naming_the_credential_source_never_the_token_and_is_not_kept() {
    in_own_process(
        "identity::a_token_azurite_refuses_fails_naming_the_credential_source_never_the_token_and_is_not_kept",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            az.put("models", "m.bin", &bytes(62, 100_000));
            let tokens = TokenService::start();
            let scratch = tempdir("identity-scratch");
            az_on_path(&tokens, scratch.path());
            tokens.issue_rejected(true);
            for (i, kind) in KINDS.iter().enumerate() {
                let pairs = kind_env(kind, &tokens, &format!("{}", 100 + i), scratch.path());
                let dir = tempdir(kind);
                let c = cache(&azurite::config(&az.template(), dir.path()), env_of(&pairs));
                let e = read_all(&c, &key("models", "m.bin"), 100_000).unwrap_err();
                let m = e.message().to_string();
                eprintln!("{kind}: {m}");
                assert_eq!(e.kind(), ErrorKind::Config, "{kind}: {m}");
                assert!(m.contains("HTTP 403 AuthenticationFailed"), "{kind}: {m}");
                assert!(m.contains(source_of(kind)), "{kind}: {m}");
                assert!(m.contains("was refused"), "{kind}: {m}");
                assert!(
                    !m.contains("<redacted>"),
                    "{kind}: built with a secret: {m}"
                );
                for t in tokens.issued() {
                    assert!(!m.contains(&t), "{kind}: token in the message: {m}");
                    // Not even its signature-less head and claims.
                    assert!(!m.contains(t.split('.').nth(1).unwrap()), "{kind}: {m}");
                }
                for (_, v) in &pairs {
                    if v.contains("secret") {
                        assert!(
                            !m.contains(v.as_str()),
                            "{kind}: secret in the message: {m}"
                        );
                    }
                }
                c.shutdown();
            }
            // A refused token is not kept for the rest of its life: once
            // the identity endpoint issues good tokens again, the next
            // session reads (each identity asked once more).
            tokens.issue_rejected(false);
            for (i, kind) in KINDS.iter().enumerate() {
                if *kind == "bearer" {
                    continue; // used as given, never refreshed
                }
                let before = tokens.requests();
                let pairs = kind_env(kind, &tokens, &format!("{}", 100 + i), scratch.path());
                let dir = tempdir(kind);
                let c = cache(&azurite::config(&az.template(), dir.path()), env_of(&pairs));
                read_all(&c, &key("models", "m.bin"), 100_000)
                    .unwrap_or_else(|e| panic!("{kind}, after the refusal: {e}"));
                assert_eq!(tokens.requests() - before, 1, "{kind}");
                c.shutdown();
            }
        },
    );
}

#[test]
fn a_token_outlives_the_lifecycle_ten_sessions_ask_the_identity_endpoint_once() {
    in_own_process(
        "identity::a_token_outlives_the_lifecycle_ten_sessions_ask_the_identity_endpoint_once",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let data = bytes(63, 300_000);
            for s in 0..10 {
                az.put("models", &format!("s{s}.bin"), &data);
            }
            let tokens = TokenService::start();
            let scratch = tempdir("identity-scratch");
            let pairs = kind_env("workload", &tokens, "10", scratch.path());
            let dir = tempdir("sessions");
            let cfg = azurite::config(&az.template(), dir.path());
            for s in 0..10 {
                // A session: a new origin and cache (read the environment
                // again), four readers, then shutdown.
                let c = Arc::new(cache(&cfg, env_of(&pairs)));
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        let c = c.clone();
                        let k = key("models", &format!("s{s}.bin"));
                        std::thread::spawn(move || read_all(&c, &k, 300_000))
                    })
                    .collect();
                for r in readers {
                    assert!(r.join().unwrap().unwrap() == data, "session {s}");
                }
                c.shutdown();
            }
            assert_eq!(tokens.requests(), 1, "one token for ten sessions");
            // Kept in memory only: no file of the cache holds it.
            let claims = tokens.issued()[0].split('.').nth(1).unwrap().to_string();
            let mut files = vec![dir.path().to_path_buf()];
            while let Some(p) = files.pop() {
                if p.is_dir() {
                    files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                } else {
                    let bytes = std::fs::read(&p).unwrap();
                    let text = String::from_utf8_lossy(&bytes);
                    assert!(!text.contains(&claims), "the token is in {}", p.display());
                }
            }
        },
    );
}

#[test]
fn the_federated_token_file_is_read_again_at_every_exchange() {
    in_own_process(
        "identity::the_federated_token_file_is_read_again_at_every_exchange",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let data = bytes(66, 100_000);
            az.put("models", "a.bin", &data);
            az.put("models", "b.bin", &data);
            let tokens = TokenService::start();
            tokens.set_lifetime(2);
            let scratch = tempdir("identity-scratch");
            let pairs = kind_env("workload", &tokens, "13", scratch.path());
            let file = &pairs
                .iter()
                .find(|(k, _)| k == "AZURE_FEDERATED_TOKEN_FILE")
                .unwrap()
                .1;
            let dir = tempdir("rotate");
            let cfg = azurite::config(&az.template(), dir.path());
            let c = cache(&cfg, env_of(&pairs));
            assert!(read_all(&c, &key("models", "a.bin"), 100_000).unwrap() == data);
            c.shutdown();
            // The kubelet rotates the projected token; the next exchange
            // (this token has expired) sends the new one.
            std::fs::write(file, "kubelet-projected-token-rotated").unwrap();
            std::thread::sleep(Duration::from_millis(2100));
            let c = cache(&cfg, env_of(&pairs));
            assert!(read_all(&c, &key("models", "b.bin"), 100_000).unwrap() == data);
            c.shutdown();
            let seen = tokens.seen();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert_eq!(
                seen[0].param("client_assertion").as_deref(),
                Some("kubelet-projected-token-13")
            );
            assert_eq!(
                seen[1].param("client_assertion").as_deref(),
                Some("kubelet-projected-token-rotated")
            );
        },
    );
}

#[test]
fn an_identity_endpoint_throttling_past_the_fetch_timeout_fails_in_time_naming_it() {
    in_own_process(
        "identity::an_identity_endpoint_throttling_past_the_fetch_timeout_fails_in_time_naming_it",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            az.put("models", "m.bin", &bytes(67, 1000));
            let tokens = TokenService::start();
            tokens.throttle_for(Duration::from_secs(60));
            let scratch = tempdir("identity-scratch");
            let pairs = kind_env("workload", &tokens, "14", scratch.path());
            let dir = tempdir("throttled");
            let c = cache(
                &Config {
                    fetch_timeout: Duration::from_secs(3),
                    ..azurite::config(&az.template(), dir.path())
                },
                env_of(&pairs),
            );
            let t0 = Instant::now();
            let e = read_all(&c, &key("models", "m.bin"), 1000).unwrap_err();
            let took = t0.elapsed();
            let m = e.message();
            eprintln!("{took:?}: {m}");
            assert!(took < Duration::from_secs(5), "{took:?}");
            assert!(
                m.contains("workload identity (AZURE_FEDERATED_TOKEN_FILE"),
                "{m}"
            );
            assert!(m.contains("HTTP 429 temporarily_unavailable"), "{m}");
            assert!(m.contains("/oauth2/v2.0/token"), "{m}");
            // After the Retry-After it asked for (1 s), not faster.
            assert!(
                (2..=4).contains(&tokens.throttled()),
                "{}",
                tokens.throttled()
            );
            c.shutdown();
        },
    );
}

#[test]
fn a_short_lived_token_is_refreshed_during_a_long_throttled_load_and_no_reader_sees_a_refusal() {
    in_own_process(
        "identity::a_short_lived_token_is_refreshed_during_a_long_throttled_load_and_no_reader_sees_a_refusal",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let blocks = 24usize;
            let data = Arc::new(bytes(64, blocks << 20));
            az.put("models", "long.bin", &data);
            // A slow link (32 KiB window over 50 ms: about 650 KB/s per
            // connection, TLS passed through): the load takes about 10 s,
            // each 1 MiB block over a second, while tokens live 4 s.
            let link = FarLink::with_max_window(az.port, Duration::from_millis(50), 32 << 10);
            let tokens = TokenService::start();
            tokens.set_lifetime(4);
            let scratch = tempdir("identity-scratch");
            let pairs = kind_env("workload", &tokens, "11", scratch.path());
            let dir = tempdir("long");
            let template = format!("https://127.0.0.1:{}/{{account}}", link.port());
            let c = Arc::new(cache(
                &Config {
                    fetch_timeout: Duration::from_secs(30),
                    ..azurite::config(&template, dir.path())
                },
                env_of(&pairs),
            ));
            let t0 = Instant::now();
            // Four readers, a quarter of the blob each, front to back.
            let readers: Vec<_> = (0..4)
                .map(|r| {
                    let (c, data) = (c.clone(), data.clone());
                    std::thread::spawn(move || {
                        let k = key("models", "long.bin");
                        for b in (r * blocks / 4)..((r + 1) * blocks / 4) {
                            let mut buf = vec![0u8; 1 << 20];
                            c.read(&k, (b << 20) as u64, &mut buf)
                                .unwrap_or_else(|e| panic!("block {b}: {e}"));
                            assert!(buf[..] == data[b << 20..(b + 1) << 20], "block {b}");
                        }
                    })
                })
                .collect();
            for r in readers {
                r.join().unwrap();
            }
            let took = t0.elapsed();
            let asked = tokens.requests();
            eprintln!("throttled load of {took:?} with 4 s tokens: {asked} tokens fetched");
            assert!(took > Duration::from_secs(6), "not a long load: {took:?}");
            // Refreshed before each expiry (half-way through a short life),
            // not per request.
            let lifetimes = took.as_secs_f64() / 2.0;
            assert!(
                asked >= 3 && (asked as f64) <= lifetimes + 3.0,
                "{asked} tokens for a {took:?} load"
            );
            c.shutdown();
        },
    );
}

#[test]
fn eight_processes_starting_while_the_identity_endpoint_throttles_all_load() {
    in_own_process(
        "identity::eight_processes_starting_while_the_identity_endpoint_throttles_all_load",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let data = bytes(65, 2_000_000);
            az.put("models", "m.bin", &data);
            let want = sha256(&data);
            let tokens = TokenService::start();
            tokens.throttle_for(Duration::from_secs(3));
            let scratch = tempdir("identity-scratch");
            let pairs = kind_env("workload", &tokens, "12", scratch.path());
            let dir = tempdir("eight");
            let mut env: Vec<(&str, String)> = vec![
                ("BLOBCACHE_DIR", dir.path().display().to_string()),
                ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
                ("BLOBCACHE_FETCH_TIMEOUT", "15s".into()),
                // Every request logged: none may show a token.
                ("BLOBCACHE_LOG", "debug".into()),
                (
                    "SSL_CERT_FILE",
                    az.ca.as_deref().unwrap().display().to_string(),
                ),
            ];
            for (k, v) in &pairs {
                env.push((k.as_str(), v.clone()));
            }
            let t0 = Instant::now();
            let env = Arc::new(
                env.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>(),
            );
            let children: Vec<_> = (0..8)
                .map(|_| {
                    let env = env.clone();
                    std::thread::spawn(move || {
                        let e: Vec<(&str, String)> =
                            env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                        blobcache_cmd(&e, &["cat", "az://devstoreaccount1/models/m.bin"])
                    })
                })
                .collect();
            let mut logs = String::new();
            for (i, c) in children.into_iter().enumerate() {
                let o = c.join().unwrap();
                logs.push_str(&String::from_utf8_lossy(&o.stderr));
                assert!(
                    o.status.success(),
                    "process {i}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert_eq!(sha256(&o.stdout), want, "process {i}");
            }
            eprintln!(
                "8 processes in {:?}: {} throttled answers, {} tokens",
                t0.elapsed(),
                tokens.throttled(),
                tokens.issued().len()
            );
            // Each process retried after the Retry-After asked for (1 s), not
            // faster: about three refusals each over the 3 s.
            assert!(
                (8..=8 * 5).contains(&tokens.throttled()),
                "{}",
                tokens.throttled()
            );
            assert!(
                logs.contains("azure: new Entra ID token from workload identity"),
                "{logs}"
            );
            for t in tokens.issued() {
                assert!(
                    !logs.contains(t.split('.').nth(1).unwrap()),
                    "a token in:\n{logs}"
                );
            }
            assert!(!logs.contains("kubelet-projected-token"), "{logs}");
            assert!(!logs.contains("<redacted>"), "{logs}");
            assert_eq!(tokens.issued().len(), 8, "one token per process");
            // And doctor names the credential a read uses.
            let mut e: Vec<(&str, String)> =
                env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            e.push(("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".into()));
            let o = blobcache_cmd(&e, &["doctor"]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("credential: Entra ID, workload identity (AZURE_FEDERATED_TOKEN_FILE"),
                "{out}"
            );
        },
    );
}

#[test]
fn the_authority_host_is_reached_through_the_proxy_and_a_managed_identity_endpoint_directly() {
    in_own_process(
        "identity::the_authority_host_is_reached_through_the_proxy_and_a_managed_identity_endpoint_directly",
        &[],
        || {
            let az = oauth_azurite();
            az.create_container("models");
            let data = bytes(68, 100_000);
            az.put("models", "m.bin", &data);
            let squid = Squid::start();
            let tokens = TokenService::start();
            let scratch = tempdir("identity-scratch");
            // The token service speaks plain HTTP: http_proxy is its proxy
            // (Azurite, over HTTPS, goes direct: no https_proxy).
            for (i, kind) in ["workload", "managed-identity"].iter().enumerate() {
                let mut pairs = kind_env(kind, &tokens, &format!("{}", 20 + i), scratch.path());
                pairs.push(("http_proxy".into(), squid.url()));
                let dir = tempdir(kind);
                let c = cache(&azurite::config(&az.template(), dir.path()), env_of(&pairs));
                let got = read_all(&c, &key("models", "m.bin"), 100_000)
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                assert!(got == data, "{kind}");
                c.shutdown();
            }
            assert_eq!(tokens.requests(), 2);
            let log = squid.access_log().join("\n");
            assert!(log.contains("/oauth2/v2.0/token"), "{log}");
            assert!(!log.contains("/metadata/identity"), "{log}");
        },
    );
}
