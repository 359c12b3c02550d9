//! The `blobcache` command, run as a process (the built binary), against
//! Azurite (loopback) and the directory origin: listing, warm, ls, stats,
//! verify, evict, doctor, usage errors, and the library serving what `warm`
//! cached with the origin unreachable.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::config::Config;
use blobcache_core::origin::azure::AzureOrigin;
use blobcache_core::origin::directory::DirectoryOrigin;
use blobcache_core::origin::{Listed, Origin};
use blobcache_core::{BlobKey, Cache, ErrorKind};

use blobcache_testing::azurite::{self, Azurite, ACCOUNT, KEY};
use blobcache_testing::proxy::Proxy;
use blobcache_testing::{
    blobcache_cmd as run, bytes, output_ok as ok, output_text as text, tempdir, Fixture,
};

/// A directory origin (`acct/models/...`) and a cache, with the variables
/// that select them.
fn dir_fixture(tag: &str) -> (Fixture, Vec<(&'static str, String)>) {
    let f = Fixture::new(tag);
    let env = vec![
        (
            "BLOBCACHE_ORIGIN",
            format!("file://{}", f.origin.path().display()),
        ),
        ("BLOBCACHE_DIR", f.cache.path().display().to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "256K".into()),
        ("BLOBCACHE_READAHEAD", "0".into()),
    ];
    (f, env)
}

fn azure_env(template: &str, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("BLOBCACHE_DIR", dir.display().to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", template.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "256K".into()),
        ("BLOBCACHE_FETCH_TIMEOUT", "5s".into()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
    ]
}

/// `"name":<number>` out of a JSON text.
fn json_num(json: &str, name: &str) -> u64 {
    let pat = format!("\"{name}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + pat.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

const ODD_NAMES: [&str; 4] = [
    "llama/a b.bin",
    "llama/ü+%#?;=.bin",
    "llama/x&y<z>'\".bin",
    "llama/sub/deep.bin",
];

#[test]
fn listing_pages_through_next_marker_and_returns_names_that_need_encoding() {
    let az = Azurite::start();
    az.create_container("models");
    let mut want: Vec<Listed> = Vec::new();
    for (i, name) in ODD_NAMES.iter().enumerate() {
        az.put("models", name, &bytes(i as u64, 1000 + i));
        want.push(Listed {
            name: name.to_string(),
            size: 1000 + i as u64,
        });
    }
    az.put("models", "llama-2/other.bin", b"x");
    az.put("models", "zzz.bin", b"yy");
    want.sort_by(|a, b| a.name.cmp(&b.name));

    let dir = tempdir("list");
    let cfg = azurite::config(&az.template(), dir.path());
    let mut origin = AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap();
    origin.set_list_page_size(2); // 4 names under the prefix: 2 pages and a marker
    assert_eq!(origin.list(ACCOUNT, "models", "llama/").unwrap(), want);
    let all = origin.list(ACCOUNT, "models", "").unwrap();
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(origin
        .list(ACCOUNT, "models", "nothing-here/")
        .unwrap()
        .is_empty());
    let e = origin.list(ACCOUNT, "nocontainer", "").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("container does not exist"), "{e}");
    // A SAS with list permission works too (its query joins the listing's).
    let sas = AzureOrigin::with_env(&cfg, azurite::sas_env(&az.account_sas())).unwrap();
    assert_eq!(sas.list(ACCOUNT, "models", "llama/").unwrap(), want);

    // The directory origin lists the same way.
    let root = tempdir("list-dir");
    for l in &want {
        let p = root.path().join("acct/models").join(&l.name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![7u8; l.size as usize]).unwrap();
    }
    std::fs::create_dir_all(root.path().join("acct/models/llama-2")).unwrap();
    std::fs::write(root.path().join("acct/models/llama-2/x"), b"x").unwrap();
    let d = DirectoryOrigin::new(root.path().to_path_buf());
    assert_eq!(d.list("acct", "models", "llama/").unwrap(), want);
    assert_eq!(d.list("acct", "models", "").unwrap().len(), 5);
    assert_eq!(
        d.list("acct", "nope", "").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn warm_fills_a_folder_a_second_run_downloads_nothing_and_the_library_reads_it_offline() {
    let az = Azurite::start();
    az.create_container("models");
    let blobs: Vec<(String, Vec<u8>)> = ODD_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), bytes(100 + i as u64, (600 << 10) + i * 777)))
        .collect();
    for (n, d) in &blobs {
        az.put("models", n, d);
    }
    az.put("models", "llama-2/not-this.bin", &bytes(9, 5000));
    let proxy = Proxy::start(az.port);
    let dir = tempdir("warm");
    let env = azure_env(&proxy.template(), dir.path());

    // The streamer's URI form, with --account.
    let o = run(
        &env,
        &[
            "warm",
            "--account",
            ACCOUNT,
            "az://models/llama",
            "--json",
            "--progress-every",
            "1",
        ],
    );
    let out = ok(&o);
    let total: u64 = blobs.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(json_num(&out, "blobs"), 4, "{out}");
    assert_eq!(json_num(&out, "fetched"), total, "{out}");
    assert_eq!(json_num(&out, "already_cached"), 0, "{out}");
    assert!(out.contains("\"failed\":[]"), "{out}");
    // stderr is not a terminal here: plain progress lines.
    assert!(text(&o).1.contains("blobcache: warm: "), "{}", text(&o).1);
    let gets = proxy.ranged_gets();
    assert_eq!(gets, 4 * 3, "three 256 KiB blocks per blob");

    // ls: the four blobs, complete; not llama-2.
    let ls = ok(&run(&env, &["ls", "--json"]));
    assert_eq!(ls.matches("\"complete\":true").count(), 4, "{ls}");
    assert!(!ls.contains("not-this"), "{ls}");
    assert!(ls.contains(r#""blob":"llama/x&y<z>'\".bin""#), "{ls}");
    let human = ok(&run(&env, &["ls"]));
    assert!(human.contains("3/3 100%"), "{human}");
    assert!(
        human.contains("az://devstoreaccount1/models/llama/a b.bin"),
        "{human}"
    );

    // Again: no blob bytes cross the proxy.
    let o = run(
        &env,
        &["warm", "az://devstoreaccount1/models/llama/", "--json"],
    );
    let out = ok(&o);
    assert_eq!(
        proxy.ranged_gets(),
        gets,
        "a warm cache was downloaded again"
    );
    assert_eq!(json_num(&out, "fetched"), 0, "{out}");
    assert_eq!(json_num(&out, "already_cached"), total, "{out}");

    // The origin gone (nothing listens on the port any more): the library
    // serves every cached blob, quickly, with one warning.
    drop(proxy);
    let dead = format!("http://127.0.0.1:{}/{{account}}", azurite::free_port());
    let cfg = Config {
        fetch_timeout: Duration::from_secs(10),
        ..azurite::config(&dead, dir.path())
    };
    let cfg = Config {
        block_size: 256 << 10,
        ..cfg
    };
    let origin = Arc::new(AzureOrigin::with_env(&cfg, azurite::key_env()).unwrap());
    let cache = Cache::with_origin(cfg.clone(), origin).unwrap();
    let t0 = Instant::now();
    for (n, d) in &blobs {
        let mut buf = vec![0u8; d.len()];
        cache
            .read(&BlobKey::new(ACCOUNT, "models", n).unwrap(), 0, &mut buf)
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(buf == *d, "{n}: wrong bytes");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "offline reads took {:?}",
        t0.elapsed()
    );
    assert_eq!(cache.stats().bytes_from_origin, 0);
    // Not cached: fails, naming the endpoint that cannot be reached.
    let e = cache
        .read(
            &BlobKey::new(ACCOUNT, "models", "llama-2/not-this.bin").unwrap(),
            0,
            &mut [0u8; 10],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(
        e.message().contains("cannot connect to http://127.0.0.1:"),
        "{e}"
    );
    drop(cache);

    // And warm against the dead endpoint fails with a clear message, exit 1.
    let o = run(
        &azure_env(&dead, dir.path()),
        &["warm", "az://devstoreaccount1/models/llama"],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(
        text(&o)
            .1
            .contains("cannot list az://devstoreaccount1/models/llama"),
        "{:?}",
        text(&o)
    );
    assert!(text(&o).1.contains("cannot connect to"), "{:?}", text(&o));
}

#[test]
fn warm_reports_blobs_it_cannot_fetch_and_exits_1() {
    let (f, env) = dir_fixture("warm-fail");
    f.put("m/a.bin", &bytes(1, 1000));
    f.put("m/b.bin", &bytes(2, 1000));
    f.put("m/c.bin", &bytes(3, 1000));
    // A store in which a.bin's and b.bin's directories cannot be made (a
    // file stands where each one's parent goes); c.bin's can.
    let store =
        blobcache_core::store::Store::open(f.cache.path(), 256 << 10, false, false).unwrap();
    for blob in ["m/a.bin", "m/b.bin"] {
        let hex = BlobKey::new("acct", "models", blob).unwrap().digest_hex();
        let parent = store.root().join("blobs").join(&hex[..2]);
        std::fs::write(parent, b"x").unwrap();
    }
    let o = run(&env, &["warm", "az://acct/models/m"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("2 of 3 blobs could not be warmed"), "{err}");
    assert!(err.contains("m/a.bin") && err.contains("m/b.bin"), "{err}");
    assert!(out.contains("warmed 1 of 3 blobs"), "{out}");
    // Nothing under the location: exit 1, saying so.
    let o = run(&env, &["warm", "az://acct/models/nothing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no blob at or under"), "{:?}", text(&o));
}

#[test]
fn stats_survive_processes_verify_drops_corrupt_blocks_and_evict_trims() {
    let (f, env) = dir_fixture("stats");
    let a = bytes(3, (1 << 20) + 5);
    let b = bytes(4, 300_000);
    f.put("m/a.bin", &a);
    f.put("m/b.bin", &b);

    // Nothing yet.
    let s = ok(&run(&env, &["stats"]));
    assert!(s.contains("none yet"), "{s}");
    ok(&run(&env, &["warm", "az://acct/models/m", "-q"]));
    // Two reads of a, each a different process.
    for _ in 0..2 {
        ok(&run(
            &env,
            &[
                "cat",
                "az://acct/models/m/a.bin",
                "--threads",
                "1",
                "--chunk",
                "1M",
            ],
        ));
    }
    let s = ok(&run(&env, &["stats", "--json"]));
    let size = (a.len() + b.len()) as u64;
    assert_eq!(json_num(&s, "bytes_from_origin"), size, "{s}");
    assert_eq!(json_num(&s, "bytes_from_cache"), 2 * a.len() as u64, "{s}");
    assert_eq!(json_num(&s, "hits"), 4, "{s}");
    assert_eq!(json_num(&s, "misses"), 0, "{s}");
    assert_eq!(json_num(&s, "blobs"), 2, "{s}");
    assert_eq!(json_num(&s, "complete_blobs"), 2, "{s}");
    let human = ok(&run(&env, &["stats"]));
    assert!(human.contains("4 hits, 0 misses (100.0% hits)"), "{human}");
    assert!(human.contains("from the origin"), "{human}");

    // verify: all good.
    let v = ok(&run(&env, &["verify"]));
    assert!(v.contains("checked 7 blocks"), "{v}");
    assert!(v.contains(": 0 bad"), "{v}");
    // Corrupt one byte of block 1 of a (a new file: published blocks are
    // never modified in place).
    let blocks = f.cached_blocks();
    let (vdir, _) = blocks
        .iter()
        .find(|(d, i)| {
            *i == 1
                && std::fs::read_to_string(d.join("meta"))
                    .unwrap()
                    .contains("blob=m/a.bin")
        })
        .unwrap()
        .clone();
    let p = vdir.join("b.1");
    let mut data = std::fs::read(&p).unwrap();
    data[1234] ^= 0x40;
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &data).unwrap();
    let o = run(&env, &["verify", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(p.exists(), "--dry-run removed the block");
    let o = run(&env, &["verify", "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("\"block\":1,"), "{out}");
    assert!(out.contains("do not match the XXH3-128"), "{out}");
    assert!(err.contains("1 bad blocks removed"), "{err}");
    assert!(!p.exists(), "the bad block is still there");
    ok(&run(&env, &["verify"]));
    // The next read fetches it again, right.
    let out_file = f.cache.path().join("a.out");
    ok(&run(
        &env,
        &[
            "cat",
            "az://acct/models/m/a.bin",
            "--out",
            out_file.to_str().unwrap(),
        ],
    ));
    assert!(std::fs::read(&out_file).unwrap() == a);
    std::fs::remove_file(&out_file).unwrap();

    // evict one blob, by URI.
    let before = f.cached_blocks().len();
    let e = ok(&run(&env, &["evict", "az://acct/models/m/b.bin"]));
    assert!(e.contains("removed 2 blocks"), "{e}");
    assert_eq!(f.cached_blocks().len(), before - 2);
    let ls = ok(&run(&env, &["ls", "--json"]));
    assert!(!ls.contains("b.bin"), "{ls}");
    // evict down to a size: least recently used first, nothing left at 0.
    ok(&run(&env, &["warm", "az://acct/models/m", "-q"]));
    let e = ok(&run(&env, &["evict", "--to", "600K"]));
    assert!(e.contains("removed"), "{e}");
    let left: u64 = f
        .cached_blocks()
        .iter()
        .map(|(d, i)| std::fs::metadata(d.join(format!("b.{i}"))).unwrap().len())
        .sum();
    assert!(left <= 600 << 10, "{left} bytes left");
    ok(&run(&env, &["evict", "--all"]));
    assert!(f.cached_blocks().is_empty());
    // Prefix with nothing cached: fine, says so.
    let e = ok(&run(&env, &["evict", "az://acct/models/zzz/"]));
    assert!(e.contains("nothing cached"), "{e}");
    // stats --reset starts the counters again.
    ok(&run(&env, &["stats", "--reset"]));
    let s = ok(&run(&env, &["stats", "--json"]));
    assert_eq!(json_num(&s, "hits"), 0, "{s}");
}

/// Asserts that the JSON object `v` has exactly the members `names` (in any
/// order: the command's order is pinned by the core's tests).
fn assert_members<S: AsRef<str>>(v: &serde_json::Value, names: &[S]) {
    let have: std::collections::BTreeSet<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: std::collections::BTreeSet<&str> = names.iter().map(AsRef::as_ref).collect();
    assert_eq!(have, want, "{v}");
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn every_json_output_keeps_its_members_and_the_counters_their_names() {
    let (f, env) = dir_fixture("json");
    f.put("m/a.bin", &bytes(41, 300_000));
    let warm = json(&ok(&run(
        &env,
        &["warm", "az://acct/models/m", "--json", "-q"],
    )));
    assert_members(
        &warm,
        &[
            "uri",
            "blobs",
            "bytes",
            "already_cached",
            "fetched",
            "blocks_fetched",
            "seconds",
            "failed",
        ],
    );
    assert_eq!(warm["failed"], serde_json::json!([]));
    assert_eq!(warm["fetched"], 300_000);

    let counters = [
        "hits",
        "misses",
        "bytes_from_cache",
        "bytes_from_origin",
        "blocks_fetched",
        "readahead_blocks",
        "passthrough_reads",
        "origin_errors",
        "read_errors",
        "origin_wait_ns",
        "blocks_evicted",
        "bytes_from_fills",
        "blocks_from_cluster",
        "bytes_from_cluster",
        "blocks_to_cluster",
        "cluster_duplicates",
        "cluster_damaged",
        "cluster_fallbacks",
        "bytes_via_dragonfly",
        "dragonfly_fallbacks",
    ];
    // cat --stats: the counters as blobcache_stats_json reports them (ms),
    // one JSON line on stderr after the bytes.
    let o = run(&env, &["cat", "az://acct/models/m/a.bin", "--stats"]);
    ok(&o);
    let cat = json(text(&o).1.lines().last().unwrap_or(""));
    assert_members(&cat, &["bytes", "seconds", "stats"]);
    let reported: Vec<String> = counters.iter().map(|c| c.replace("_ns", "_ms")).collect();
    assert_members(&cat["stats"], &reported);
    assert_eq!(cat["stats"]["bytes_from_cache"], 300_000);

    let ls = json(&ok(&run(&env, &["ls", "--json"])));
    assert_members(
        &ls[0],
        &[
            "uri",
            "account",
            "container",
            "blob",
            "size",
            "version",
            "block_size",
            "blocks_present",
            "blocks_total",
            "complete",
            "bytes_on_disk",
            "last_use",
            "last_use_utc",
        ],
    );
    assert_eq!(ls[0]["uri"], "az://acct/models/m/a.bin");

    let stats = json(&ok(&run(&env, &["stats", "--json"])));
    assert_members(
        &stats,
        &[
            "dir",
            "bytes",
            "cap",
            "free",
            "blobs",
            "complete_blobs",
            "blocks",
            "since",
            "updated",
            "counters",
        ],
    );
    assert_members(&stats["counters"], &counters);
    assert_eq!(stats["counters"]["bytes_from_origin"], 300_000);

    // A damaged block, kept (--dry-run), and a damaged meta.
    let (vdir, i) = f.cached_blocks()[0].clone();
    let p = vdir.join(format!("b.{i}"));
    let mut data = std::fs::read(&p).unwrap();
    data[7] ^= 1;
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &data).unwrap();
    let o = run(&env, &["verify", "--json", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    let verify = json(&text(&o).0);
    assert_members(
        &verify,
        &["blobs", "blocks_checked", "bytes_checked", "busy", "bad"],
    );
    assert_members(&verify["bad"][0], &["blob", "block", "why", "removed"]);
    assert_eq!(verify["bad"][0]["removed"], false);
    std::fs::write(vdir.join("meta"), b"damaged").unwrap();
    let ls = json(&ok(&run(&env, &["ls", "--json"])));
    assert_eq!(ls[0]["uri"], serde_json::Value::Null);
    assert_members(
        &ls[0],
        &[
            "uri",
            "damaged",
            "size",
            "version",
            "block_size",
            "blocks_present",
            "blocks_total",
            "complete",
            "bytes_on_disk",
            "last_use",
            "last_use_utc",
        ],
    );
}

#[test]
fn usage_errors_exit_2_and_every_subcommand_has_help() {
    for sub in [
        "warm", "ls", "stats", "metrics", "verify", "evict", "doctor", "cat",
    ] {
        let o = run(&[], &[sub, "--help"]);
        let out = ok(&o);
        assert!(out.contains("Usage: blobcache"), "{sub}: {out}");
    }
    let out = ok(&run(&[], &["--help"]));
    for sub in [
        "warm", "ls", "stats", "metrics", "verify", "evict", "doctor", "cat",
    ] {
        assert!(out.contains(sub), "{out}");
    }
    assert!(ok(&run(&[], &["--version"])).contains(env!("CARGO_PKG_VERSION")));
    for (args, words) in [
        (vec!["warm", "s3://x/y"], "is not an az:// URI"),
        (vec!["warm", "az://acct"], "names no container"),
        (vec!["cat", "az://acct/c/"], "names no blob"),
        (vec!["ls", "az://acct/c/../x"], "az://"),
        (vec!["evict"], "required"),
        (vec!["evict", "--all", "--to", "1G"], "cannot be used with"),
        (vec!["evict", "--to", "lots"], "is not a size"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["warm", "az://a/c/x", "--jobs", "0"], "--jobs"),
        (
            vec!["metrics", "--listen", "nonsense"],
            "is not an address and port",
        ),
        (
            vec!["stats", "--json", "--prometheus"],
            "cannot be used with",
        ),
    ] {
        let o = run(&[], &args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // An invalid setting is not a usage error: exit 1, naming the variable.
    let o = run(&[("BLOBCACHE_BLOCK_SIZE", "3".into())], &["ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("BLOBCACHE_BLOCK_SIZE"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn doctor_names_credentials_but_never_their_values_and_checks_the_endpoint() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m/x.bin", b"hello");
    let dir = tempdir("doctor");
    let secret = "TopSecretClientValue-42";
    let sas = az.account_sas();
    let mut env = azure_env(&az.template(), dir.path());
    env.push(("AZURE_CLIENT_SECRET", secret.into()));
    env.push(("AZURE_STORAGE_SAS_TOKEN", sas.clone()));
    env.push(("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()));
    env.push(("BLOBCACHE_MISSPELT", "1".into()));
    // No Python to ask (tested below): the verdict here is the origin's
    // and the cache directory's alone.
    env.push(("PATH", "/nonexistent".into()));
    let o = run(&env, &["doctor", "az://models/m/"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for line in [
        "BLOBCACHE_BLOCK_SIZE",
        "256.0 KiB  (set)",
        "BLOBCACHE_READAHEAD",
        "BLOBCACHE_MISSPELT: unknown setting",
        "AZURE_CLIENT_SECRET",
        "endpoint answers",
        "credential: shared key from AZURE_STORAGE_ACCOUNT_KEY",
        "requests go direct (no proxy set for this scheme)",
        "listing works, 1 blobs",
        "writable: yes",
        "no problems found",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    for name in [
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_CLIENT_SECRET",
        "AZURE_STORAGE_SAS_TOKEN",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(name) && l.trim_end().ends_with("present")),
            "{name}:\n{out}"
        );
    }
    let all = format!("{out}{err}");
    for value in [KEY, secret, &sas, &azurite::sas_signature(&sas)] {
        assert!(!all.contains(value), "a credential value leaked:\n{all}");
    }
    for name in blobcache_core::config::VARIABLES {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    // Every variable of the one list of secrets, by name and state only.
    for name in blobcache_core::origin::azure::auth::SECRET_VARS {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(name)
                && (l.trim_end().ends_with("present") || l.trim_end().ends_with("absent"))),
            "{name}:\n{out}"
        );
    }

    // A dead endpoint and a cache directory that cannot be created: exit 1.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let dead = format!("http://127.0.0.1:{}/{{account}}", azurite::free_port());
    let mut env = azure_env(&dead, &file.join("cache"));
    env.push(("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()));
    let t0 = Instant::now();
    let o = run(&env, &["doctor", "--timeout", "2"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("PROBLEM: the endpoint does not answer"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM: cannot use the cache directory"),
        "{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn doctor_checks_dfdaemon_and_refuses_a_shared_key_in_dragonfly_mode() {
    let az = Azurite::start();
    az.create_container("models");
    let dir = tempdir("doctor-dragonfly");
    let dead = format!("127.0.0.1:{}", azurite::free_port());
    let base = |credential: (&'static str, String)| {
        let mut env: Vec<(&'static str, String)> = azure_env(&az.template(), dir.path())
            .into_iter()
            .filter(|(k, _)| *k != "AZURE_STORAGE_ACCOUNT_KEY")
            .collect();
        env.push(credential);
        env.push(("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()));
        env.push(("BLOBCACHE_DRAGONFLY", dead.clone()));
        env.push(("PATH", "/nonexistent".into()));
        env
    };
    // A SAS: the route is shown; a dead daemon and 256 KiB blocks are
    // warnings (GETs fall back to Azure), not problems.
    let o = run(
        &base(("AZURE_STORAGE_SAS_TOKEN", az.account_sas())),
        &["doctor", "--timeout", "2"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for line in [
        &format!("requests go blob GETs through dfdaemon at http://{dead}"),
        "HEAD and listing direct",
        &format!("WARNING: dfdaemon at {dead} cannot be reached"),
        "WARNING: BLOBCACHE_BLOCK_SIZE=256.0 KiB is not larger than 4 MiB",
        "no problems found, 2 warnings",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    // Without fallback the dead daemon is a problem.
    let mut env = base(("AZURE_STORAGE_SAS_TOKEN", az.account_sas()));
    env.push(("BLOBCACHE_DRAGONFLY_FALLBACK", "0".into()));
    let o = run(&env, &["doctor", "--timeout", "2"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("reads will fail"), "{out}");
    // A shared key: a problem that says why and what to use.
    let o = run(
        &base(("AZURE_STORAGE_ACCOUNT_KEY", KEY.into())),
        &["doctor", "--timeout", "2"],
    );
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("PROBLEM: BLOBCACHE_DRAGONFLY is set, but account devstoreaccount1 would use a shared key"),
        "{out}"
    );
    assert!(!out.contains(KEY), "the key leaked:\n{out}");
}

/// Runs `doctor` from a copy of the command in a directory of its own,
/// beside a `python3` that is the shell script `python` (none when `None`),
/// with no other Python on the PATH.
fn doctor_beside(python: Option<&str>, env: &[(&'static str, String)]) -> (Option<i32>, String) {
    let dir = tempdir("doctor-python");
    let cmd = dir.path().join("blobcache");
    std::fs::copy(blobcache_testing::built::command(), &cmd).unwrap();
    if let Some(script) = python {
        use std::os::unix::fs::PermissionsExt;
        let py = dir.path().join("python3");
        std::fs::write(&py, format!("#!/bin/sh\nPATH=/usr/bin:/bin\n{script}\n")).unwrap();
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = Command::new(&cmd)
        .env_clear()
        .env("PATH", dir.path().join("nothing-here"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("doctor")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code(), format!("{out}{err}"))
}

/// A `python3` script printing a `python -m blobcache --json` report whose
/// streamer part says `will_load` with `reasons` (JSON strings, comma
/// separated), with `streamer` as the installed version (JSON), `extra`
/// members of its `configuration` (e.g. `"problems": [...]`), and exit status `exit`.
fn python_report(will_load: bool, reasons: &str, streamer: &str, extra: &str, exit: u8) -> String {
    format!(
        r#"[ "$*" = "-m blobcache --json" ] || exit 3
cat <<'END'
{{"version": "9.9.9", "library": {{"path": "/x/libblobcache.so", "loads": true, "abi_version": 1}},
 "configuration": {{{extra}}}, "streamer": {{"runai-model-streamer": {streamer}, "runai-model-streamer-azure": {streamer},
 "libstreamerazure": "/x/libstreamerazure.so", "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED": null,
 "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB": "/x/libblobcache.so", "set_by_startup_hook": true,
 "startup_hook_ran": true, "reasons": [{reasons}], "notes": ["a note"], "will_load": {will_load}}}}}
END
exit {exit}"#
    )
}

#[test]
fn doctor_reads_the_wheels_json_report_and_copes_without_python_module_or_json() {
    let (_f, env) = dir_fixture("doctor-python");
    let report = |will_load: bool, reasons: &str| {
        python_report(will_load, reasons, "\"0.17.0\"", "", u8::from(!will_load))
    };

    let (code, out) = doctor_beside(Some(&report(true, "")), &env);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "-m blobcache, blobcache 9.9.9)",
        "runai-model-streamer       0.17.0",
        "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED = (not set: auto)",
        "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB = /x/libblobcache.so (set by blobcache's start-up hook)",
        "note: a note",
        "will load blobcache: yes",
        "no problems found",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }

    let (code, out) = doctor_beside(Some(&report(false, r#""the hook is off""#)), &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("will load blobcache: no\n  PROBLEM: the hook is off"),
        "{out}"
    );
    assert!(out.contains("1 problem(s) found"), "{out}");

    for (script, says, problem) in [
        (None, "not checked: no Python (python3) to ask", false),
        (
            Some("echo '/usr/bin/python3: No module named blobcache' >&2; exit 1"),
            "not checked: the blobcache wheel is not installed for ",
            false,
        ),
        (
            Some("echo 'blobcache 0.1.0'; echo '{\"version\": '; exit 0"),
            "-m blobcache --json failed: it printed no report doctor can read (",
            true,
        ),
        (
            Some("echo '{\"version\": \"1\"}'; exit 1"),
            "it printed no report doctor can read (missing field",
            true,
        ),
        (
            Some("echo 'python -m blobcache: unknown argument --json' >&2; exit 2"),
            "older than this command: python -m blobcache: unknown argument --json",
            true,
        ),
        (
            Some("echo 'Traceback: boom' >&2; exit 7"),
            "failed: exit status 7: Traceback: boom",
            true,
        ),
    ] {
        let (code, out) = doctor_beside(script, &env);
        assert!(out.contains(says), "{says:?} missing:\n{out}");
        assert_eq!(code, Some(i32::from(problem)), "{out}");
    }
}

#[test]
fn doctor_agrees_with_python_m_blobcache_and_makes_every_reason_a_problem() {
    let (_f, env) = dir_fixture("doctor-agrees");
    let not_installed = r#""runai-model-streamer is not installed", "runai-model-streamer-azure is not installed (it carries the streamer's Azure backend, which loads cache providers)""#;
    // (script, the reasons doctor must show as problems). Each report's
    // exit status is python -m blobcache's verdict; doctor's must match (the
    // fixture's configuration, origin and cache directory are fine).
    for (script, problems) in [
        // No streamer installed: python -m blobcache exits 1, so does doctor.
        (
            python_report(false, not_installed, "null", "", 1),
            vec![
                "runai-model-streamer is not installed",
                "runai-model-streamer-azure is not installed (it carries",
            ],
        ),
        // The library's check of the settings beside the streamer's
        // verdict: its problems count too.
        (
            python_report(
                true,
                "",
                "\"0.17.0\"",
                r#""problems": ["BLOBCACHE_MAX_SIZE=lots is not a size"]"#,
                1,
            ),
            vec!["BLOBCACHE_MAX_SIZE=lots is not a size"],
        ),
        // The same reason in both places is one problem.
        (
            python_report(
                false,
                r#""BLOBCACHE_MAX_SIZE=lots is not a size""#,
                "\"0.17.0\"",
                r#""problems": ["BLOBCACHE_MAX_SIZE=lots is not a size"]"#,
                1,
            ),
            vec!["BLOBCACHE_MAX_SIZE=lots is not a size"],
        ),
        // An exit status that says no although the report says yes: no.
        (
            python_report(true, "", "\"0.17.0\"", "", 1),
            vec![
                "-m blobcache exited with status 1 although its report says the library will load",
            ],
        ),
        // No with no reason given: still no.
        (
            python_report(false, "", "\"0.17.0\"", "", 1),
            vec!["says the streamer will not load the library, and gives no reason"],
        ),
    ] {
        let (code, out) = doctor_beside(Some(&script), &env);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("will load blobcache: no"), "{out}");
        assert!(!out.contains("no problems found"), "{out}");
        for p in &problems {
            assert!(
                out.lines()
                    .any(|l| l.contains("PROBLEM: ") && l.contains(p)),
                "{p:?} is not a problem:\n{out}"
            );
        }
        assert!(
            out.contains(&format!("{} problem(s) found", problems.len())),
            "{out}"
        );
    }
}

#[test]
fn counters_of_a_process_killed_with_sigkill_are_on_disk_up_to_its_last_periodic_flush() {
    use blobcache_testing::proxy::{Fault, Gate};
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "k/a.bin", &bytes(21, 256 << 10));
    az.put("models", "k/b.bin", &bytes(22, 256 << 10));
    let proxy = Proxy::start(az.port);
    // The listing and a.bin's block pass; b.bin's block stops mid-way.
    for _ in 0..2 {
        proxy.inject("GET", Fault::CutBody { after: usize::MAX });
    }
    let gate = Gate::default();
    proxy.inject(
        "GET",
        Fault::PauseBody {
            after: 1000,
            gate: gate.clone(),
        },
    );
    let dir = tempdir("sigkill");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blobcache"));
    cmd.env_clear().args([
        "warm",
        "az://devstoreaccount1/models/k",
        "--jobs",
        "1",
        "-q",
    ]);
    for (k, v) in azure_env(&proxy.template(), dir.path()) {
        cmd.env(k, v);
    }
    cmd.env("BLOBCACHE_FETCH_TIMEOUT", "60s");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        gate.wait_paused(Duration::from_secs(30)),
        "b.bin was never fetched"
    );
    // Past the janitor's period (5 s): a.bin's block has been counted on disk.
    std::thread::sleep(Duration::from_millis(6500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    gate.open();
    let s = ok(&run(
        &azure_env(&proxy.template(), dir.path()),
        &["stats", "--json"],
    ));
    assert_eq!(json_num(&s, "bytes_from_origin"), 256 << 10, "{s}");
    assert_eq!(json_num(&s, "blocks_fetched"), 1, "{s}");
}

#[test]
fn evict_and_verify_while_a_reader_holds_blocks_mapped_never_disturb_its_reads() {
    let (f, env) = dir_fixture("evict-reader");
    let data = bytes(31, (1 << 20) + 99);
    f.put("m/a.bin", &data);
    // A reader process's cache (here: in this test process) with every
    // block mapped.
    let cache = Cache::new(Config {
        readahead_blocks: 0,
        ..f.config(256 << 10)
    })
    .unwrap();
    let key = BlobKey::new("acct", "models", "m/a.bin").unwrap();
    let mut buf = vec![0u8; 512 << 10];
    cache.read(&key, 0, &mut buf).unwrap();
    assert!(buf == data[..512 << 10]);
    ok(&run(&env, &["warm", "az://acct/models/m", "-q"]));
    ok(&run(&env, &["verify"]));
    let e = ok(&run(&env, &["evict", "--all"]));
    assert!(e.contains("removed 5 blocks"), "{e}");
    assert!(f.cached_blocks().is_empty());
    // The reader still gets the right bytes: its mappings outlive the
    // unlinked files, and the blocks it had not mapped come from the origin.
    for _ in 0..2 {
        let mut again = vec![0u8; data.len()];
        cache.read(&key, 0, &mut again).unwrap();
        assert!(again == data, "wrong bytes after evict");
    }
}

#[test]
fn evict_says_what_it_freed_and_the_caches_real_size_before_and_after() {
    let (f, env) = dir_fixture("evict-numbers");
    f.put("m/a.bin", &bytes(55, (1 << 20) + 5));
    f.put("m/b.bin", &bytes(56, 300_000));
    f.put("m/config.json", b"{}\n");
    ok(&run(&env, &["warm", "az://acct/models/m", "-q"]));
    let usage = || json_num(&ok(&run(&env, &["stats", "--json"])), "bytes");
    let size = blobcache_core::config::format_size;
    for (args, blocks) in [
        // A 3-byte blob: the change hides in "1.3 MiB -> 1.3 MiB"; the
        // difference says it.
        (vec!["evict", "az://acct/models/m/config.json"], 1),
        (vec!["evict", "az://acct/models/m/b.bin"], 2),
        (vec!["evict", "--to", "600K"], 2),
        (vec!["evict", "--to", "10G"], 0),
        (vec!["evict", "--all"], 3),
    ] {
        let before = usage();
        let said = ok(&run(&env, &args));
        let after = usage();
        assert!(
            after < before || blocks == 0,
            "{args:?}: {before} -> {after}"
        );
        let want = format!(
            "removed {blocks} block{} from {}: the cache holds {}, was {} ({})",
            if blocks == 1 { "" } else { "s" },
            f.cache.path().display(),
            size(after),
            size(before),
            if blocks == 0 {
                "unchanged".to_string()
            } else {
                format!("{} less", size(before - after))
            }
        );
        assert_eq!(said.trim_end(), want, "{args:?}");
    }
}

/// `cat`'s stdout, exactly, with its stderr.
fn cat(env: &[(&'static str, String)], args: &[&str]) -> (Vec<u8>, String) {
    let mut all = vec!["cat"];
    all.extend_from_slice(args);
    let o = run(env, &all);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "cat {args:?}: {:?}\n{err}", o.status);
    (o.stdout, err)
}

#[test]
fn cat_writes_the_blobs_bytes_to_stdout_and_its_counters_only_with_stats() {
    let (f, env) = dir_fixture("cat");
    let tiny = b"{}\n".to_vec();
    // Five 256 KiB blocks and a bit; read in 100 KB chunks by 3 threads, so
    // rounds of chunks straddle blocks and must come out in order.
    let big = bytes(51, (5 << 18) + 4321);
    f.put("m/config.json", &tiny);
    f.put("m/big.bin", &big);

    let (out, err) = cat(&env, &["az://acct/models/m/config.json"]);
    assert!(out == tiny, "{out:?}");
    assert!(!err.contains('{'), "counters without --stats: {err}");
    for args in [
        vec!["az://acct/models/m/big.bin"],
        vec![
            "az://acct/models/m/big.bin",
            "--threads",
            "3",
            "--chunk",
            "100000",
        ],
        vec![
            "az://acct/models/m/big.bin",
            "--threads",
            "1",
            "--chunk",
            "1",
        ],
    ] {
        if args.contains(&"1") {
            // One byte per read: only the first 2000 bytes.
            let (out, _) = cat(&env, &[&args[..], &["--length", "2000"]].concat());
            assert!(out == big[..2000], "{args:?}");
            continue;
        }
        let (out, _) = cat(&env, &args);
        assert_eq!(out.len(), big.len(), "{args:?}");
        assert!(out == big, "{args:?}: wrong bytes");
    }

    // --stats: the same bytes on stdout, the counters as one JSON line on stderr.
    let (out, err) = cat(&env, &["az://acct/models/m/big.bin", "--stats"]);
    assert!(out == big);
    let stats = json(err.lines().last().unwrap_or(""));
    assert_eq!(stats["bytes"], big.len() as u64, "{stats}");
    assert_eq!(
        stats["stats"]["bytes_from_cache"],
        big.len() as u64,
        "{stats}"
    );

    // A range: --offset and --length, as byte counts or sizes.
    let (out, _) = cat(
        &env,
        &[
            "az://acct/models/m/big.bin",
            "--offset",
            "300000",
            "--length",
            "500000",
            "--chunk",
            "64K",
        ],
    );
    assert!(out == big[300_000..800_000]);
    let (out, _) = cat(&env, &["az://acct/models/m/big.bin", "--offset", "1M"]);
    assert!(out == big[1 << 20..]);
    let (out, _) = cat(
        &env,
        &[
            "az://acct/models/m/big.bin",
            "--offset",
            "1M",
            "--length",
            "1G",
        ],
    );
    assert!(
        out == big[1 << 20..],
        "a length past the end stops at the end"
    );
    let size = big.len().to_string();
    let (out, _) = cat(&env, &["az://acct/models/m/big.bin", "--offset", &size]);
    assert!(out.is_empty());
    let past = (big.len() + 1).to_string();
    let o = run(
        &env,
        &["cat", "az://acct/models/m/big.bin", "--offset", &past],
    );
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{err}");
    assert!(
        err.contains("is past the end of") && err.contains(&size),
        "{err}"
    );

    // --out FILE: the bytes there, nothing on stdout.
    let file = f.cache.path().join("big.out");
    let (out, _) = cat(
        &env,
        &[
            "az://acct/models/m/big.bin",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.is_empty());
    assert!(std::fs::read(&file).unwrap() == big);
}

#[test]
fn cat_into_a_pipe_closed_early_exits_quietly() {
    use std::io::Read;
    let (f, mut env) = dir_fixture("cat-pipe");
    // The account named: nothing to say on stderr about an assumed one.
    env.push(("AZURE_STORAGE_ACCOUNT_NAME", "acct".into()));
    // Far more than a pipe holds (64 KiB).
    let big = bytes(52, 4 << 20);
    f.put("m/big.bin", &big);
    for args in [vec![], vec!["--threads", "1", "--chunk", "4K"]] {
        let mut child = Command::new(blobcache_testing::built::command())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["cat", "az://acct/models/m/big.bin"])
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -c 10`: ten bytes, then the pipe is closed.
        let mut head = [0u8; 10];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        assert!(head == big[..10]);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {:?}\n{err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn every_command_that_cannot_use_the_cache_directory_exits_1_saying_why() {
    let (f, env) = dir_fixture("bad-dir");
    f.put("m/a.bin", &bytes(54, 1000));
    let scratch = tempdir("bad-dir-scratch");
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let link = scratch.path().join("a-link");
    std::os::unix::fs::symlink(scratch.path(), &link).unwrap();
    let mut dirs = vec![
        file.clone(),       // a file, not a directory
        file.join("cache"), // under a file
        link,               // a link, which the store refuses
    ];
    if Path::new("/proc/self").exists() {
        dirs.push("/proc/nope".into()); // nothing can be made there
    }
    let commands: Vec<Vec<&str>> = vec![
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["stats", "--reset"],
        vec!["stats", "--prometheus"],
        // Fails before it listens.
        vec!["metrics", "--listen", "127.0.0.1:0"],
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["ls", "az://acct/models/m"],
        vec!["verify"],
        vec!["verify", "--json"],
        vec!["evict", "--all"],
        vec!["evict", "--to", "0"],
        vec!["evict", "az://acct/models/m"],
        vec!["warm", "az://acct/models/m"],
        vec!["cat", "az://acct/models/m/a.bin"],
        vec!["doctor"],
    ];
    for dir in &dirs {
        let mut env = env.clone();
        env.retain(|(k, _)| *k != "BLOBCACHE_DIR");
        env.push(("BLOBCACHE_DIR", dir.display().to_string()));
        env.push(("PATH", "/nonexistent".into()));
        for args in &commands {
            let o = run(&env, args);
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(1), "{dir:?} {args:?}:\n{out}{err}");
            let said = if args[0] == "doctor" { &out } else { &err };
            assert!(
                said.contains("cannot use the cache directory"),
                "{dir:?} {args:?}:\n{out}{err}"
            );
            assert!(!out.contains("free space"), "{dir:?} {args:?}: {out}");
            assert!(!out.contains("nothing cached"), "{dir:?} {args:?}: {out}");
        }
    }

    // A directory not made yet where it can be made is fine, and the
    // commands that only look make nothing (nor leave their probe behind).
    let fresh = scratch.path().join("new/cache");
    let mut env = env.clone();
    env.retain(|(k, _)| *k != "BLOBCACHE_DIR");
    env.push(("BLOBCACHE_DIR", fresh.display().to_string()));
    let prom = ok(&run(&env, &["stats", "--prometheus"]));
    assert!(prom.contains("\nblobcache_hits_total{cache_dir="), "{prom}");
    for args in [
        vec!["stats"],
        vec!["ls"],
        vec!["verify"],
        vec!["evict", "--all"],
    ] {
        let out = ok(&run(&env, &args));
        assert!(
            out.contains("nothing cached") || out.contains("none yet"),
            "{args:?}: {out}"
        );
    }
    let s = json(&ok(&run(&env, &["stats", "--json"])));
    assert!(s["free"].as_u64().is_some_and(|f| f > 0), "{s}");
    assert!(!scratch.path().join("new").exists());
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}"); // a-file and a-link
}

#[test]
fn a_uri_without_an_account_says_which_account_it_assumed_and_how_to_name_one() {
    let (f, env) = dir_fixture("account");
    let data = bytes(53, 1000);
    f.put("m/a.bin", &data);
    // The streamer's form with no account named: "models" is taken as the
    // account, which has no container "m"; every message says so.
    let o = run(&env, &["cat", "az://models/m/a.bin"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    for part in [
        r#"az://models/m/a.bin is read as account "models", container "m""#,
        "neither --account nor AZURE_STORAGE_ACCOUNT_NAME names one",
        r#"the account "models" was assumed from the URI"#,
        "set AZURE_STORAGE_ACCOUNT_NAME or pass --account NAME",
        "az://<account>/models/...",
    ] {
        assert!(err.contains(part), "{part:?} missing:\n{err}");
    }
    assert!(out.is_empty(), "{out}");
    let o = run(&env, &["warm", "az://models/m"]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#"az://models/m is read as account "models", container "m""#),
        "{err}"
    );
    assert!(err.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{err}");
    // A URI too short to name a container under that reading: a usage error
    // that says how it was read.
    let o = run(&env, &["warm", "az://models"]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(r#"names no container (read as account "models""#)
            && err.contains("AZURE_STORAGE_ACCOUNT_NAME"),
        "{err}"
    );
    // The cache, too, says how it read an account it found nothing under.
    let ls = ok(&run(&env, &["ls", "az://models/m"]));
    assert!(
        ls.contains("nothing cached at or under az://models/m")
            && ls.contains(r#"the account "models" was assumed"#),
        "{ls}"
    );

    // Named by the variable or by --account: read as the streamer's form,
    // and nothing said about an account.
    let mut named = env.clone();
    named.push(("AZURE_STORAGE_ACCOUNT_NAME", "acct".into()));
    for (env, args) in [
        (&named, vec!["cat", "az://models/m/a.bin"]),
        (
            &env,
            vec!["cat", "--account", "acct", "az://models/m/a.bin"],
        ),
        (
            &env,
            vec!["cat", "az://acct/models/m/a.bin", "--account", "acct"],
        ),
    ] {
        let o = run(env, &args);
        let err = text(&o).1;
        if args.contains(&"az://acct/models/m/a.bin") {
            // --account makes every URI the streamer's form: container "acct".
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert!(!err.contains("was assumed"), "{err}");
            continue;
        }
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(o.stdout == data, "{args:?}");
        assert!(!err.contains("is read as account"), "{args:?}: {err}");
    }
    // The full form with the variable naming that account: the full form.
    let o = run(&named, &["cat", "az://acct/models/m/a.bin"]);
    assert!(o.status.success() && o.stdout == data, "{:?}", text(&o));
}
