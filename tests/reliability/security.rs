//! Security: no credential in `error_buf` or a log line (known key, SAS,
//! bearer, connection string and client secret values, with a server that
//! echoes requests back); cache directories 0700 and files 0600 by default,
//! 0770/0660 with `BLOBCACHE_SHARED=1`, whatever the umask; a symlink
//! planted anywhere inside the cache is never followed; no name reaches
//! outside the cache directory (or the directory origin's root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blobcache_core::config::MaxSize;
use blobcache_core::{BlobKey, Cache};
use blobcache_testing::azurite::{self, Azurite, ACCOUNT, KEY};
use blobcache_testing::fixture::{walk, Fixture, ACCOUNT as DIR_ACCOUNT, CONTAINER};
use blobcache_testing::isolate::in_own_process;
use blobcache_testing::proxy::{Fault, Proxy, TokenServer};
use blobcache_testing::{bytes, tempdir, TempDir};

use crate::report::{self, Outcome};
use crate::worker::{self, Blob};

const BEARER: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.a25vd24tYmVhcmVyLXRva2VuLXZhbHVl.c2lnbmF0dXJlLXBhcnQ";
const CLIENT_SECRET: &str = "known~client~secret~value~0123456789";

#[test]
fn no_credential_reaches_error_buf_or_a_log_line() {
    let az = Azurite::start();
    az.create_container("sec");
    let blob = Blob::new(ACCOUNT, "sec", "m.bin", 70, 300_000);
    az.put("sec", &blob.name, &blob.data());
    let proxy = Proxy::start(az.port);
    let tokens = TokenServer::start();
    let sas = az.account_sas();
    let sig = azurite::sas_signature(&sas);
    let sig_encoded = sas.split("sig=").nth(1).unwrap().to_string();
    let wrong_key = format!("F{}", &KEY[1..]);
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{}/{ACCOUNT};",
        proxy.port
    );
    let credentials: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "shared key",
            vec![("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string())],
        ),
        (
            "wrong shared key",
            vec![("AZURE_STORAGE_ACCOUNT_KEY", wrong_key.clone())],
        ),
        ("SAS token", vec![("AZURE_STORAGE_SAS_TOKEN", sas.clone())]),
        (
            "bearer token",
            vec![("AZURE_STORAGE_TOKEN", BEARER.to_string())],
        ),
        (
            "connection string",
            vec![("AZURE_STORAGE_CONNECTION_STRING", conn.clone())],
        ),
        (
            "service principal secret",
            vec![
                (
                    "AZURE_CLIENT_ID",
                    "00000000-0000-0000-0000-000000000001".into(),
                ),
                ("AZURE_TENANT_ID", "tenant".into()),
                ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
                (
                    "AZURE_AUTHORITY_HOST",
                    format!("http://127.0.0.1:{}", tokens.port),
                ),
                ("AZURE_ALLOW_HTTP", "true".into()),
            ],
        ),
    ];
    let scenarios: Vec<(&str, Option<Fault>)> = vec![
        ("plain read", None),
        (
            "server echoes the request in a 403",
            Some(Fault::Reflect { code: 403 }),
        ),
        (
            "server echoes the request in 500s until the timeout",
            Some(Fault::Reflect { code: 500 }),
        ),
    ];
    let mut secrets: Vec<String> = vec![
        KEY.into(),
        wrong_key,
        sas.clone(),
        sig,
        sig_encoded,
        BEARER.into(),
        CLIENT_SECRET.into(),
        conn,
        common_token(),
    ];
    let mut o = Outcome::default();
    let mut texts = vec![];
    for (cred, cenv) in &credentials {
        for (scenario, fault) in &scenarios {
            match fault {
                Some(f) => {
                    proxy.rule("GET", vec![Some(f.clone())]);
                    proxy.rule("HEAD", vec![Some(f.clone())]);
                }
                None => {
                    proxy.rule("GET", vec![]);
                    proxy.rule("HEAD", vec![]);
                }
            }
            let dir = tempdir("sec");
            let mut env: Vec<(String, String)> = cenv
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            if !cenv
                .iter()
                .any(|(k, _)| *k == "AZURE_STORAGE_CONNECTION_STRING")
            {
                env.push(("BLOBCACHE_AZURE_ENDPOINT".into(), proxy.template()));
            }
            env.extend(
                [
                    ("BLOBCACHE_LOG", "debug".to_string()),
                    ("BLOBCACHE_FETCH_TIMEOUT", "1s".into()),
                    ("BLOBCACHE_BLOCK_SIZE", "64K".into()),
                    ("BC_W_TRIALS", "2".into()),
                    ("BC_W_DIR_BASE", dir.path().display().to_string()),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
            let (out, r) = worker::run(
                worker::command("trials", std::slice::from_ref(&blob), &env),
                Duration::from_secs(60),
            );
            assert!(
                r.reported,
                "{cred} / {scenario}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let got = r.outcome();
            o.tried += got.tried;
            o.correct += got.correct;
            o.clean_error += got.clean_error;
            if got.other > 0 {
                o.other(format!("{cred} / {scenario}: {:?}", got.notes));
            }
            texts.push((format!("{cred} / {scenario}"), text));
        }
    }
    // Every Authorization value the echoing server saw (SharedKey
    // signatures, bearer tokens), and its secret part alone.
    for a in proxy.reflected_authorizations() {
        if let Some((_, secret)) = a.split_once(' ') {
            let secret = secret.rsplit(':').next().unwrap().to_string();
            secrets.push(secret);
        }
        secrets.push(a);
    }
    secrets.retain(|s| s.len() >= 8);
    let mut leaks = 0;
    for (what, text) in &texts {
        assert!(
            text.contains("blobcache: debug:"),
            "{what}: the debug log was off"
        );
        for s in &secrets {
            if let Some(at) = text.find(s.as_str()) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(150)
                    .map_or(0, |(i, _)| i);
                let to = (at + s.len() + 60).min(text.len());
                let to = (to..=text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap();
                eprintln!(
                    "LEAK in {what}: …{}…",
                    text[from..to].replace(s.as_str(), "[SECRET]")
                );
                leaks += 1;
                o.other(format!("{what}: leaked {}…", &s[..6]));
            }
        }
    }
    o.note(format!(
        "{} credentials x {} server behaviours, BLOBCACHE_LOG=debug; {} distinct secret values searched for in every error_buf and log line; {leaks} found",
        credentials.len(),
        scenarios.len(),
        secrets.len()
    ));
    report::record(
        "security",
        "credentials in error_buf or logs (key, SAS, bearer, connection string, client secret; server echoing requests)",
        &o,
        "security::no_credential_reaches_error_buf_or_a_log_line",
    );
    report::assert_clean("credentials", &o);
}

fn common_token() -> String {
    blobcache_testing::proxy::TOKEN.to_string()
}

fn modes(dir: &Path) -> (Vec<u32>, Vec<u32>) {
    let (mut dirs, mut files) = (vec![], vec![]);
    fn go(p: &Path, dirs: &mut Vec<u32>, files: &mut Vec<u32>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let m = e.metadata().unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                dirs.push(mode);
                go(&e.path(), dirs, files);
            } else {
                files.push(mode);
            }
        }
    }
    dirs.push(std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777);
    go(dir, &mut dirs, &mut files);
    (dirs, files)
}

#[test]
fn cache_files_are_0600_in_0700_directories_and_0660_in_0770_when_shared() {
    let name = "security::cache_files_are_0600_in_0700_directories_and_0660_in_0770_when_shared";
    in_own_process(name, &[], || {
        let fx = Fixture::new("modes");
        fx.put("m", &bytes(71, 300_000));
        let key = BlobKey::new(DIR_ACCOUNT, CONTAINER, "m").unwrap();
        let mut o = Outcome::default();
        for umask in [0o022, 0o000, 0o077, 0o002] {
            for shared in [false, true] {
                // SAFETY: umask only sets the process's file mode mask.
                unsafe { libc::umask(umask) };
                let dir = fx.cache.path().join(format!("u{umask:o}-{shared}"));
                let mut cfg = fx.config(64 << 10);
                cfg.dir = Some(dir.clone());
                cfg.shared = shared;
                let c = Cache::new(cfg).unwrap();
                let mut buf = vec![0u8; 300_000];
                c.read(&key, 0, &mut buf).unwrap();
                c.evict_now();
                drop(c);
                let (want_d, want_f) = if shared {
                    (0o770, 0o660)
                } else {
                    (0o700, 0o600)
                };
                let (dirs, files) = modes(&dir);
                assert!(files.len() >= 5, "{files:?}");
                o.tried += 1;
                let octal = |v: &[u32], want: u32| -> Vec<String> {
                    v.iter()
                        .filter(|m| **m != want)
                        .map(|m| format!("{m:o}"))
                        .collect()
                };
                let (bad_d, bad_f) = (octal(&dirs, want_d), octal(&files, want_f));
                if bad_d.is_empty() && bad_f.is_empty() {
                    o.correct += 1;
                } else {
                    o.other(format!(
                        "umask {umask:03o} shared={shared}: directories {bad_d:?} (want {want_d:o}), files {bad_f:?} (want {want_f:o})"
                    ));
                }
            }
        }
        // SAFETY: umask has no memory effects; it restores the default.
        unsafe { libc::umask(0o022) };
        o.note("4 umasks (022, 000, 077, 002) x private/shared; every directory and file of the cache checked");
        report::record(
            "security",
            "modes: 0700/0600 by default, 0770/0660 with BLOBCACHE_SHARED=1, whatever the umask",
            &o,
            name,
        );
        report::assert_clean("modes", &o);
    });
}

/// A tree of decoy files outside the cache that planted links point into;
/// its listing and contents must not change.
fn decoy(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dirs = ["", "ab", "ab/cd", "ab/cd/ef", "k", "k/v"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
        for f in [
            "b.0",
            "b.1",
            "meta",
            "lock",
            "tmp.0.1.1",
            ".meta.1.tmp.0.1.1",
            "precious",
        ] {
            std::fs::write(root.join(d).join(f), format!("decoy {d}/{f}")).unwrap();
        }
    }
    snapshot(root)
}

fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = vec![];
    walk(root, &mut |p| {
        v.push((p.to_path_buf(), std::fs::read(p).unwrap_or_default()))
    });
    v.sort();
    v
}

#[test]
fn symlinks_planted_inside_the_cache_are_never_followed() {
    let fx = Fixture::new("symlinks");
    let data = bytes(72, 6 * 65536 + 5);
    fx.put("m", &data);
    let key = BlobKey::new(DIR_ACCOUNT, CONTAINER, "m").unwrap();
    let victim = tempdir("victim");
    let before = decoy(victim.path());
    let mut o = Outcome::default();
    // Where to plant the link, relative to the filled cache's version
    // directory (`v`), its key directory (`k`), prefix (`p`) or v1 root.
    let plants = [
        "v1/blobs/<p>",
        "v1/blobs/<p>/<k>",
        "v1/blobs/<p>/<k>/<v>",
        "v1/blobs/<p>/<k>/<v>/b.2",
        "v1/blobs/<p>/<k>/<v>/meta",
        "v1/blobs/<p>/<k>/<v>/lock",
        "v1/evict.lock",
        "v1/blobs",
        "v1",
        "v1/blobs/zz",
        "v1/blobs/<p>/ffff",
        "v1/blobs/<p>/<k>/0123",
    ];
    for plant in plants {
        for target_kind in ["directory", "file"] {
            let _ = std::fs::remove_dir_all(fx.cache.path());
            std::fs::create_dir_all(fx.cache.path()).unwrap();
            let mut cfg = fx.config(65536);
            {
                let c = Cache::new(cfg.clone()).unwrap();
                let mut buf = vec![0u8; data.len()];
                c.read(&key, 0, &mut buf).unwrap();
            }
            let vdir = fx.cached_blocks()[0].0.clone();
            let rel = vdir.strip_prefix(fx.cache.path()).unwrap().to_path_buf();
            let parts: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let at = plant
                .replace("<p>", &parts[2])
                .replace("<k>", &parts[3])
                .replace("<v>", &parts[4]);
            let link = fx.cache.path().join(&at);
            if link.is_dir() {
                std::fs::remove_dir_all(&link).unwrap();
            } else {
                let _ = std::fs::remove_file(&link);
            }
            let target = match target_kind {
                "directory" => victim.path().join("ab"),
                _ => victim.path().join("precious"),
            };
            std::os::unix::fs::symlink(&target, &link).unwrap();
            // A small cap: every read evicts; the janitor and the
            // evictor walk the store.
            cfg.max_size = MaxSize::Bytes(3 * 65536 + 200);
            let c = Cache::new(cfg).unwrap();
            for round in 0..3 {
                let mut buf = vec![0u8; data.len()];
                o.tried += 1;
                match c.read(&key, 0, &mut buf) {
                    Ok(()) if buf == data => o.correct += 1,
                    Ok(()) => o.other(format!(
                        "{at} -> {target_kind}: WRONG BYTES (round {round})"
                    )),
                    Err(e) => o.other(format!("{at} -> {target_kind}: {e}")),
                }
                // A lock file that cannot be opened is nothing to wait for:
                // evict_now waits only while another evictor holds it (up to
                // the fetch timeout, 30 s here).
                let t = std::time::Instant::now();
                c.evict_now();
                if t.elapsed() > Duration::from_secs(10) {
                    o.other(format!(
                        "{at} -> {target_kind}: evict_now took {:?}",
                        t.elapsed()
                    ));
                }
            }
            drop(c);
            if snapshot(victim.path()) != before {
                o.other(format!(
                    "{at} -> {target_kind}: the link was followed: files outside the cache changed"
                ));
                // Restore for the next case.
                let _ = std::fs::remove_dir_all(victim.path());
                decoy(victim.path());
            }
        }
    }
    o.note(format!(
        "links at {} places (every level of the store, and each file kind) to a directory and to a file outside; 3 reads each with a cap that evicts on every read",
        plants.len()
    ));
    report::record(
        "security",
        "symlinks planted inside the cache directory",
        &o,
        "security::symlinks_planted_inside_the_cache_are_never_followed",
    );
    report::assert_clean("symlinks", &o);
}

#[test]
fn no_name_reaches_outside_the_cache_or_the_origin_root() {
    let name = "security::no_name_reaches_outside_the_cache_or_the_origin_root";
    // Everything in one scratch directory, watched as a whole.
    let scratch_dir = tempdir("names");
    let scratch = scratch_dir.path().to_path_buf();
    let origin = scratch.join("origin");
    let data = bytes(73, 100_000);
    let blob_path = origin.join(DIR_ACCOUNT).join(CONTAINER).join("m");
    std::fs::create_dir_all(blob_path.parent().unwrap()).unwrap();
    std::fs::write(&blob_path, &data).unwrap();
    // Files a traversal would reach: next to the origin root, in the
    // account directory.
    std::fs::write(
        scratch.join(format!("secret-{}", std::process::id())),
        b"SECRET",
    )
    .unwrap();
    std::fs::write(origin.join(DIR_ACCOUNT).join("secret"), b"SECRET").unwrap();
    let env: Vec<(String, String)> = vec![
        (
            "BLOBCACHE_ORIGIN".into(),
            format!("file://{}", origin.display()),
        ),
        (
            "BLOBCACHE_DIR".into(),
            scratch.join("cache").display().to_string(),
        ),
        ("BLOBCACHE_BLOCK_SIZE".into(), "64K".into()),
    ];
    in_own_process(name, &env, || {
        let before: Vec<PathBuf> = {
            let mut v = vec![];
            walk(&scratch, &mut |p| v.push(p.to_path_buf()));
            v
        };
        let names: Vec<(&str, &str, String)> = vec![
            (DIR_ACCOUNT, CONTAINER, "../secret".into()),
            (DIR_ACCOUNT, "..", "secret".into()),
            ("..", "..", format!("secret-{}", std::process::id())),
            (
                DIR_ACCOUNT,
                CONTAINER,
                format!("../../../secret-{}", std::process::id()),
            ),
            (DIR_ACCOUNT, CONTAINER, "/etc/passwd".into()),
            (DIR_ACCOUNT, CONTAINER, "m/../../secret".into()),
            (DIR_ACCOUNT, CONTAINER, "./m".into()),
            (DIR_ACCOUNT, CONTAINER, "m/.".into()),
            (DIR_ACCOUNT, CONTAINER, "x//m".into()),
            (DIR_ACCOUNT, CONTAINER, "..\\secret".into()),
            (DIR_ACCOUNT, CONTAINER, "%2e%2e/secret".into()),
            (DIR_ACCOUNT, CONTAINER, "\u{2024}\u{2024}/secret".into()),
            (DIR_ACCOUNT, CONTAINER, "m\u{0}x".replace('\u{0}', "\u{1}")),
            (DIR_ACCOUNT, CONTAINER, "m\n".into()),
            (DIR_ACCOUNT, CONTAINER, "x".repeat(5000)),
            (DIR_ACCOUNT, CONTAINER, "a/".repeat(600)),
            (".", CONTAINER, "m".into()),
            ("acct/..", CONTAINER, "m".into()),
            (DIR_ACCOUNT, "models/../models", "m".into()),
            (DIR_ACCOUNT, CONTAINER, "m".into()),
        ];
        let mut o = Outcome::default();
        for (a, c, b) in &names {
            let blob = Blob::new(a, c, b, 73, 100_000);
            let mut buf = vec![0u8; 100_000];
            o.tried += 1;
            match worker::read(&blob, 0, &mut buf) {
                // Only the real blob, by its one true name.
                Ok(()) if *b == "m" && *c == CONTAINER && *a == DIR_ACCOUNT && buf == data => {
                    o.correct += 1
                }
                Ok(()) => o.other(format!("{a}/{c}/{b}: read something")),
                Err(m) if m.contains("SECRET") => o.other(format!("{a}/{c}/{b}: {m}")),
                Err(m) if m.contains("blobcache:") => o.clean_error += 1,
                Err(m) => o.other(m),
            }
            if buf.starts_with(b"SECRET") {
                o.other(format!("{a}/{c}/{b}: the secret was read"));
            }
        }
        worker::shutdown();
        // Nothing new anywhere but under the cache's v1/blobs.
        let cache_root = std::path::PathBuf::from(std::env::var("BLOBCACHE_DIR").unwrap());
        let mut created = vec![];
        walk(&scratch, &mut |p| {
            if !before.contains(&p.to_path_buf()) && !p.starts_with(cache_root.join("v1")) {
                created.push(p.to_path_buf());
            }
        });
        if !created.is_empty() {
            o.other(format!("files created outside the cache: {created:?}"));
        }
        o.note(format!(
            "{} hostile names (traversal, absolute, encoded, look-alike, control characters, overlong) through blob_read with a directory origin; files created outside cache/v1: {}",
            names.len(),
            created.len()
        ));
        report::record(
            "security",
            "names that try to leave the cache or origin directory",
            &o,
            name,
        );
        report::assert_clean("names", &o);
        assert_eq!(o.correct, 1, "{:?}", o.notes);
    });
}

/// Names Azure accepts that are not file paths: an empty segment (a
/// leading or trailing `/`, or `//`). Through `blob_read` (the loaded
/// library, in a child process) they are read byte for byte from Azurite,
/// each distinct from the name it would collapse to; at the directory
/// origin they fail as not found, saying why, and never read the file they
/// would collapse to (`a//b` is `a/b` to the kernel).
#[test]
fn names_azure_accepts_with_empty_segments_are_read_and_never_collapsed() {
    let name = "security::names_azure_accepts_with_empty_segments_are_read_and_never_collapsed";
    let names = ["x/", "a//b", "trail/", "/", "//", "/lead", "a/b/"];
    // What they would collapse to, with other contents: a read of one of
    // these is wrong bytes.
    let collapsed = ["x", "a/b", "trail", "lead"];
    let size = 100_000;
    let blobs = |account: &str, container: &str| -> Vec<Blob> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Blob::new(account, container, n, 80 + i as u64, size))
            .collect()
    };
    let run = |blobs: &[Blob], env: Vec<(&str, String)>, dir: &TempDir| {
        let mut env: Vec<(String, String)> =
            env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        env.extend(
            [
                ("BLOBCACHE_BLOCK_SIZE", "64K".to_string()),
                ("BC_W_TRIALS", blobs.len().to_string()),
                ("BC_W_DIR_BASE", dir.path().display().to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        let (out, r) = worker::run(
            worker::command("trials", blobs, &env),
            Duration::from_secs(60),
        );
        assert!(r.reported, "{}", String::from_utf8_lossy(&out.stderr));
        r
    };

    // Azure (Azurite): every name read, byte for byte.
    let az = Azurite::start();
    az.create_container("slashes");
    let az_blobs = blobs(ACCOUNT, "slashes");
    for b in &az_blobs {
        az.put_raw("slashes", &b.name, &b.data());
    }
    for (i, n) in collapsed.iter().enumerate() {
        az.put_raw("slashes", n, &bytes(90 + i as u64, size));
    }
    let dir = tempdir("slashes-az");
    let r = run(
        &az_blobs,
        vec![
            ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ],
        &dir,
    );
    let mut o = r.outcome();
    if o.clean_error > 0 {
        // Every one of these is a blob that exists: a failure is not clean.
        o.other += o.clean_error;
        o.clean_error = 0;
        o.note(format!("reads failed: {:?}", r.errors));
    }
    o.note(format!(
        "{} names ({}) through blob_read from Azurite, beside blobs named as they would collapse ({}) with other contents",
        names.len(),
        names.join(" "),
        collapsed.join(" ")
    ));
    report::record(
        "security",
        "names Azure accepts that are not file paths (empty segments: x/, a//b, /): Azure origin",
        &o,
        name,
    );
    report::assert_clean("empty segments at Azure", &o);
    assert_eq!(o.correct, names.len() as u64, "{:?}", o.notes);

    // The directory origin: a clean "not found" naming the reason, and the
    // file the name would collapse to is never read.
    let fx = Fixture::new("slashes-dir");
    for (i, n) in collapsed.iter().enumerate() {
        fx.put(n, &bytes(90 + i as u64, size));
    }
    let dir_blobs = blobs(DIR_ACCOUNT, CONTAINER);
    let r = run(
        &dir_blobs,
        vec![(
            "BLOBCACHE_ORIGIN",
            format!("file://{}", fx.origin.path().display()),
        )],
        &fx.cache,
    );
    let mut o = r.outcome();
    for m in &r.errors {
        if m.contains(": blobcache: ") && !m.contains("not a file path") {
            o.clean_error = o.clean_error.saturating_sub(1);
            o.other(format!("unclear message: {m}"));
        }
    }
    if o.correct > 0 {
        o.other += o.correct;
        o.notes.push(format!("{} names were read", o.correct));
        o.correct = 0;
    }
    o.note(format!(
        "the same {} names with a directory origin holding {}: each fails as not found (not a file path)",
        names.len(),
        collapsed.join(" ")
    ));
    report::record(
        "security",
        "names Azure accepts that are not file paths (empty segments: x/, a//b, /): directory origin",
        &o,
        name,
    );
    report::assert_clean("empty segments at a directory", &o);
    assert_eq!(o.clean_error, names.len() as u64, "{:?}", o.notes);
}

/// Control characters (and line separators, bidirectional controls) in a
/// caller's names or in a setting come back in `error_buf` escaped: one
/// line, never a forged second one.
#[test]
fn control_characters_in_names_and_settings_reach_error_buf_escaped_on_one_line() {
    let name =
        "security::control_characters_in_names_and_settings_reach_error_buf_escaped_on_one_line";
    let fx = Fixture::new("controls");
    fx.put("m", &bytes(74, 1000));
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_LOG".into(), "error".into()));
    in_own_process(name, &env, || {
        let chars: Vec<char> = (1u32..0x20)
            .chain(0x7f..0xa0)
            .chain([0x2028, 0x2029, 0x200e, 0x202e, 0x2066])
            .filter_map(char::from_u32)
            .collect();
        let clean_line = |m: &str| {
            m.contains(": blobcache: ")
                && !m.chars().any(|c| {
                    c.is_control()
                        || matches!(
                            c,
                            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{202e}' | '\u{2066}'
                        )
                })
        };
        let mut o = Outcome::default();
        for c in &chars {
            let bad = format!("m{c}blobcache: error: forged");
            for (a, cont, b) in [
                (bad.as_str(), CONTAINER, "m"),
                (DIR_ACCOUNT, bad.as_str(), "m"),
                (DIR_ACCOUNT, CONTAINER, bad.as_str()),
            ] {
                let blob = Blob::new(a, cont, b, 74, 1000);
                let mut buf = vec![0u8; 1000];
                o.tried += 1;
                match worker::read(&blob, 0, &mut buf) {
                    Ok(()) => o.other(format!("U+{:04X}: read something", *c as u32)),
                    Err(m) if clean_line(&m) => o.clean_error += 1,
                    Err(m) => o.other(format!("U+{:04X}: {m:?}", *c as u32)),
                }
            }
        }
        // A setting's value, echoed in the message that names it.
        worker::shutdown();
        std::env::set_var(
            "BLOBCACHE_MAX_SIZE",
            "1G\nblobcache: error: forged\t\u{1b}[2K",
        );
        let blob = Blob::new(DIR_ACCOUNT, CONTAINER, "m", 74, 1000);
        let mut buf = vec![0u8; 1000];
        o.tried += 1;
        match worker::read(&blob, 0, &mut buf) {
            Ok(()) => o.other("an invalid BLOBCACHE_MAX_SIZE was accepted"),
            Err(m) if clean_line(&m) && m.contains("BLOBCACHE_MAX_SIZE") => o.clean_error += 1,
            Err(m) => o.other(format!("BLOBCACHE_MAX_SIZE: {m:?}")),
        }
        worker::shutdown();
        o.note(format!(
            "{} characters (C0, DEL, C1, U+2028, U+2029, bidirectional controls) in each of account, container and blob name, and in BLOBCACHE_MAX_SIZE; every message checked for a raw one",
            chars.len()
        ));
        report::record(
            "security",
            "control characters in names and settings reach error_buf (one line, no forged line)",
            &o,
            name,
        );
        report::assert_clean("control characters", &o);
        assert_eq!(o.correct, 0);
    });
}
