//! The `blobcache` command on the cluster tier (`BLOBCACHE_CLUSTER_DIR`),
//! run as a process against the directory origin: `warm --cluster-only`,
//! `ls`/`stats`/`verify`/`evict --cluster`, the usage error without the
//! variable, and doctor's cluster tier section (not shared, read-only,
//! symlink, locks, block sizes, a hung mount).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use blobcache_testing::fixture::walk;
use blobcache_testing::{
    blobcache_cmd as run, bytes, output_ok as ok, output_text as text, tempdir, Fixture, TempDir,
};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A directory origin holding `m/a.bin` (three 256 KiB blocks), a local
/// cache, and a cluster tier not made yet (`<tmp>/tier`), with the
/// variables that select them.
struct Setup {
    f: Fixture,
    _cluster_parent: TempDir,
    cluster: PathBuf,
    env: Vec<(&'static str, String)>,
}

const A_LEN: usize = 700_000;

fn setup(tag: &str) -> Setup {
    let f = Fixture::new(tag);
    f.put("m/a.bin", &bytes(7, A_LEN));
    let parent = tempdir(&format!("{tag}-cluster"));
    let cluster = parent.path().join("tier");
    let env = vec![
        (
            "BLOBCACHE_ORIGIN",
            format!("file://{}", f.origin.path().display()),
        ),
        ("BLOBCACHE_DIR", f.cache.path().display().to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "256K".into()),
        ("BLOBCACHE_READAHEAD", "0".into()),
        ("BLOBCACHE_CLUSTER_DIR", cluster.display().to_string()),
    ];
    Setup {
        f,
        _cluster_parent: parent,
        cluster,
        env,
    }
}

/// Published blocks under `dir`, as (version dir, index).
fn blocks(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = vec![];
    if dir.exists() {
        walk(dir, &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(i) = name.strip_prefix("b.").and_then(|s| s.parse().ok()) {
                out.push((p.parent().unwrap().to_path_buf(), i));
            }
        });
    }
    out.sort();
    out
}

/// Runs the command as [`run`] does, under umask 077 (the tier must be
/// group-shared whatever the umask).
fn run_umask_077(env: &[(&'static str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(blobcache_testing::built::command())
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn warm_cluster_only_fills_the_shared_tier_group_shared_and_nothing_on_the_node() {
    let s = setup("warm-cluster");
    let out = ok(&run_umask_077(
        &s.env,
        &["warm", "--cluster-only", "az://acct/models/m", "-q"],
    ));
    assert!(
        out.contains(&format!(
            "warmed 1 of 1 blobs (683.6 KiB) under az://acct/models/m into the cluster tier {} in",
            s.cluster.display()
        )),
        "{out}"
    );
    // Three blocks in the tier, none on the node.
    let b = blocks(&s.cluster);
    assert_eq!(
        b.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
        [0, 1, 2],
        "{b:?}"
    );
    assert!(s.f.cache_files().is_empty(), "{:?}", s.f.cache_files());
    // Group-shared whatever the umask: every directory 0770 (the tier's
    // own included, made by warm), every file 0660.
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&s.cluster), 0o770);
    let mut files = 0;
    walk(&s.cluster, &mut |p| {
        files += 1;
        assert_eq!(mode(p), 0o660, "{}", p.display());
        let mut d = p.parent().unwrap();
        while d != s.cluster {
            assert_eq!(mode(d), 0o770, "{}", d.display());
            d = d.parent().unwrap();
        }
    });
    assert!(files >= 6, "{files} files");

    // ls: the tier lists it, the node's cache does not.
    let ls = ok(&run(&s.env, &["ls", "--cluster"]));
    assert!(ls.contains("3/3 100%"), "{ls}");
    assert!(ls.contains("az://acct/models/m/a.bin"), "{ls}");
    let ls_json = json(&ok(&run(&s.env, &["ls", "--cluster", "--json"])));
    assert_eq!(ls_json[0]["complete"], true, "{ls_json}");
    assert_eq!(ls_json[0]["blob"], "m/a.bin", "{ls_json}");
    let local = ok(&run(&s.env, &["ls"]));
    assert!(
        local.contains(&format!("nothing cached in {}", s.f.cache.path().display())),
        "{local}"
    );

    // stats: the tier's directory, what it holds, the counters warm left there.
    let st = ok(&run(&s.env, &["stats", "--cluster"]));
    assert!(
        st.lines().next().unwrap() == format!("cluster tier     {}", s.cluster.display()),
        "{st}"
    );
    assert!(st.contains("1 blobs (1 complete), 3 blocks"), "{st}");
    assert!(st.contains("683.6 KiB fetched from the origin"), "{st}");
    let sj = json(&ok(&run(&s.env, &["stats", "--cluster", "--json"])));
    assert_eq!(sj["dir"], s.cluster.display().to_string(), "{sj}");
    assert_eq!(sj["blobs"], 1, "{sj}");
    assert_eq!(sj["counters"]["bytes_from_origin"], A_LEN, "{sj}");
    let prom = ok(&run(&s.env, &["stats", "--cluster", "--prometheus"]));
    assert!(
        prom.contains(&format!(
            "blobcache_cached_blocks{{cache_dir=\"{}\"}} 3",
            s.cluster.display()
        )),
        "{prom}"
    );
    let local = ok(&run(&s.env, &["stats"]));
    assert!(local.starts_with("cache            "), "{local}");
    assert!(local.contains("0 blobs"), "{local}");

    // Again: nothing fetched, all of it already in the tier.
    let again = json(&ok(&run(
        &s.env,
        &["warm", "--cluster-only", "az://acct/models/m", "--json"],
    )));
    assert_eq!(again["fetched"], 0, "{again}");
    assert_eq!(again["already_cached"], A_LEN, "{again}");
}

#[test]
fn verify_and_evict_with_cluster_work_on_the_tier_and_leave_the_node_alone() {
    let s = setup("verify-cluster");
    ok(&run(
        &s.env,
        &["warm", "--cluster-only", "az://acct/models/m", "-q"],
    ));
    // The node's own copy, warmed without the tier.
    let local_env: Vec<_> = s
        .env
        .iter()
        .filter(|(k, _)| *k != "BLOBCACHE_CLUSTER_DIR")
        .cloned()
        .collect();
    ok(&run(&local_env, &["warm", "az://acct/models/m", "-q"]));
    assert_eq!(s.f.cached_blocks().len(), 3);

    // One flipped byte in block 1 of the tier (a new file, as published
    // blocks are never modified in place).
    let (vdir, _) = blocks(&s.cluster)[1].clone();
    let p = vdir.join("b.1");
    let mut data = std::fs::read(&p).unwrap();
    data[4321] ^= 0x01;
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &data).unwrap();

    // The node's cache is fine; the tier's block is found, kept with
    // --dry-run, removed without.
    let v = ok(&run(&s.env, &["verify"]));
    assert!(
        v.contains("checked 3 blocks") && v.contains(": 0 bad"),
        "{v}"
    );
    let o = run(&s.env, &["verify", "--cluster", "--dry-run"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("bad block 1 of az://acct/models/m/a.bin"),
        "{out}"
    );
    assert!(err.contains("not removed: --dry-run"), "{err}");
    assert!(p.exists(), "--dry-run removed the block");
    let o = run(&s.env, &["verify", "--cluster"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("(removed)"), "{out}");
    assert!(err.contains("1 bad blocks removed"), "{err}");
    assert!(!p.exists(), "the bad block is still in the tier");
    let v = ok(&run(&s.env, &["verify", "--cluster"]));
    assert!(
        v.contains("checked 2 blocks") && v.contains(": 0 bad"),
        "{v}"
    );
    assert_eq!(
        s.f.cached_blocks().len(),
        3,
        "the node's blocks were touched"
    );

    // evict --cluster --all empties the tier, not the node.
    let e = ok(&run(&s.env, &["evict", "--cluster", "--all"]));
    assert!(
        e.contains(&format!(
            "removed 2 blocks from the cluster tier {}: the cluster tier holds",
            s.cluster.display()
        )),
        "{e}"
    );
    assert!(blocks(&s.cluster).is_empty(), "{:?}", blocks(&s.cluster));
    assert_eq!(
        s.f.cached_blocks().len(),
        3,
        "the node's blocks were evicted"
    );
    let ls = ok(&run(&s.env, &["ls", "--cluster"]));
    assert!(
        ls.contains(&format!(
            "nothing cached in the cluster tier {}",
            s.cluster.display()
        )),
        "{ls}"
    );
    // evict --cluster by URI, on a tier filled again.
    ok(&run(
        &s.env,
        &["warm", "--cluster-only", "az://acct/models/m", "-q"],
    ));
    let e = ok(&run(
        &s.env,
        &["evict", "--cluster", "az://acct/models/m/a.bin"],
    ));
    assert!(e.contains("removed 3 blocks"), "{e}");
    assert!(blocks(&s.cluster).is_empty());
}

#[test]
fn cluster_flags_without_blobcache_cluster_dir_are_usage_errors_naming_it() {
    let s = setup("no-cluster");
    let env: Vec<_> = s
        .env
        .iter()
        .filter(|(k, _)| *k != "BLOBCACHE_CLUSTER_DIR")
        .cloned()
        .collect();
    for (args, flag) in [
        (&["ls", "--cluster"][..], "--cluster"),
        (&["stats", "--cluster"], "--cluster"),
        (&["stats", "--cluster", "--prometheus"], "--cluster"),
        (&["verify", "--cluster"], "--cluster"),
        (&["evict", "--cluster", "--all"], "--cluster"),
        (
            &["warm", "--cluster-only", "az://acct/models/m"],
            "--cluster-only",
        ),
    ] {
        let o = run(&env, args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("{flag} needs BLOBCACHE_CLUSTER_DIR: set it")),
            "{args:?}: {err}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    assert!(s.f.cache_files().is_empty());
    // Every one of them documents its flag.
    for cmd in ["ls", "stats", "verify", "evict"] {
        let h = ok(&run(&env, &[cmd, "--help"]));
        assert!(
            h.contains("--cluster") && h.contains("BLOBCACHE_CLUSTER_DIR"),
            "{cmd}: {h}"
        );
    }
    let h = ok(&run(&env, &["warm", "--help"]));
    assert!(h.contains("--cluster-only"), "{h}");
    // A tier that cannot be made is the tier's failure, naming its variable.
    let file = s.f.cache.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut bad = env.clone();
    bad.push((
        "BLOBCACHE_CLUSTER_DIR",
        file.join("tier").display().to_string(),
    ));
    let o = run(&bad, &["ls", "--cluster"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("cannot use the cluster tier's directory")
            && err.contains("set BLOBCACHE_CLUSTER_DIR"),
        "{err}"
    );
}

/// doctor with no Python to ask, so its verdict is the directories'.
fn doctor(env: &[(&'static str, String)]) -> (Option<i32>, String) {
    let mut env = env.to_vec();
    env.push(("PATH", "/nonexistent".into()));
    let o = run(&env, &["doctor", "--timeout", "5"]);
    let (out, err) = text(&o);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code(), out)
}

/// The lines of doctor's cluster tier section.
fn section(out: &str) -> String {
    let from = out
        .find("\ncluster tier:\n")
        .unwrap_or_else(|| panic!("no cluster tier section:\n{out}"));
    let rest = &out[from + 1..];
    let to = rest.find("\n\n").unwrap_or(rest.len());
    rest[..to].to_string()
}

#[test]
fn doctor_warns_a_tier_on_the_nodes_own_disk_is_not_shared_and_checks_writes_and_locks() {
    let s = setup("doctor-cluster");
    std::fs::create_dir(&s.cluster).unwrap();
    let (code, out) = doctor(&s.env);
    let sec = section(&out);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "a directory: yes (not a symbolic link)",
        "WARNING: not shared: the cluster tier is on the node's own disk",
        "mount the shared volume at",
        "writable: yes (a probe file was created, written, synced and removed)",
        "the tier's cap is",
        "BLOBCACHE_CLUSTER_MAX_SIZE: 80% of the cluster filesystem",
        "block size: 256.0 KiB, the same as this node's cache",
        "locks: exclude within this node",
        "whether locks exclude across nodes cannot be seen from one node",
        "NFSv4, Lustre mounted with flock, CephFS: yes",
    ] {
        assert!(sec.contains(line), "{line:?} missing:\n{sec}");
    }
    assert!(sec.contains("filesystem: "), "{sec}");
    assert!(out.contains("no problems found, 1 warning"), "{out}");
    // No probe left behind.
    let left: Vec<_> = std::fs::read_dir(&s.cluster)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".doctor"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A tier recording another block size: a warning saying how to fix it.
    let other = tempdir("doctor-cluster-bs");
    let mut env512 = s.env.clone();
    env512.retain(|(k, _)| *k != "BLOBCACHE_CLUSTER_DIR" && *k != "BLOBCACHE_BLOCK_SIZE");
    env512.push(("BLOBCACHE_CLUSTER_DIR", other.path().display().to_string()));
    env512.push(("BLOBCACHE_BLOCK_SIZE", "512K".into()));
    ok(&run(
        &env512,
        &["warm", "--cluster-only", "az://acct/models/m", "-q"],
    ));
    let mut env = s.env.clone();
    env.retain(|(k, _)| *k != "BLOBCACHE_CLUSTER_DIR");
    env.push(("BLOBCACHE_CLUSTER_DIR", other.path().display().to_string()));
    let (code, out) = doctor(&env);
    let sec = section(&out);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        sec.contains("WARNING: the cluster tier records block size 512.0 KiB")
            && sec.contains("and this node's cache 256.0 KiB")
            && sec.contains("BLOBCACHE_BLOCK_SIZE=512K"),
        "{sec}"
    );
    assert!(out.contains("no problems found, 2 warnings"), "{out}");

    // No variable, no section.
    let mut env = s.env.clone();
    env.retain(|(k, _)| *k != "BLOBCACHE_CLUSTER_DIR");
    let (code, out) = doctor(&env);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("cluster tier:"), "{out}");
}

#[test]
fn doctor_refuses_a_symlink_or_a_missing_directory_as_the_cluster_tier() {
    let s = setup("doctor-cluster-link");
    let real = tempdir("doctor-cluster-real");
    std::os::unix::fs::symlink(real.path(), &s.cluster).unwrap();
    let (code, out) = doctor(&s.env);
    let sec = section(&out);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        sec.contains(&format!(
            "PROBLEM: {} is a symbolic link (to {}), which the cache does not follow",
            s.cluster.display(),
            real.path().display()
        )),
        "{sec}"
    );
    assert!(!sec.contains("writable"), "{sec}");
    assert!(std::fs::read_dir(real.path()).unwrap().next().is_none());

    std::fs::remove_file(&s.cluster).unwrap();
    let (code, out) = doctor(&s.env);
    let sec = section(&out);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        sec.contains("does not exist: is the shared volume mounted?"),
        "{sec}"
    );
    assert!(!s.cluster.exists(), "doctor created the tier's directory");
}

/// Runs `script` (sh) in a private mount namespace, so whatever it mounts
/// goes away with it, whatever happens to the test, and a PID namespace
/// of its own, so every process it leaves (sshfs's server) is reaped when
/// it ends; `$1` is the command and `$2`… are `args`. Bounded to 60 s.
fn in_mount_namespace(env: &[(&'static str, String)], script: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args([
            "-k", "5", "60", "unshare", "-m", "-p", "-f", "sh", "-c", script, "sh",
        ])
        .arg(blobcache_testing::built::command())
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn doctor_says_a_read_only_cluster_directory_is_not_writable() {
    let s = setup("doctor-cluster-ro");
    std::fs::create_dir(&s.cluster).unwrap();
    let dir = s.cluster.display().to_string();
    let o = in_mount_namespace(
        &s.env,
        r#"mount -t tmpfs -o ro,size=1m tmpfs "$2" || exit 90
PATH=/nonexistent "$1" doctor --timeout 5"#,
        &[&dir],
    );
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(90), "cannot mount a tmpfs: {err}");
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let sec = section(&out);
    assert!(sec.contains("filesystem: tmpfs"), "{sec}");
    assert!(
        sec.contains(&format!(
            "PROBLEM: {dir} is not writable: the filesystem is mounted read-only"
        )),
        "{sec}"
    );
    assert!(
        sec.contains("WARNING: not shared: tmpfs is a node-local filesystem"),
        "{sec}"
    );
    assert!(
        sec.contains("block size: none recorded yet") && sec.contains("locks: not checked"),
        "{sec}"
    );
}

#[test]
fn doctor_gives_up_on_a_hung_cluster_mount_and_exits() {
    let sftp = Path::new("/usr/lib/openssh/sftp-server");
    let has_sshfs = Command::new("sshfs").arg("--version").output().is_ok();
    // scripts/install-test-deps.sh installs them: a missing one fails the
    // test rather than skipping it.
    assert!(
        sftp.exists() && has_sshfs && Path::new("/dev/fuse").exists(),
        "needs sshfs, {} (openssh-server) and /dev/fuse",
        sftp.display()
    );
    let s = setup("doctor-cluster-hung");
    let work = tempdir("doctor-cluster-sshfs");
    let (src, pid) = (work.path().join("src"), work.path().join("sftp.pid"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&s.cluster).unwrap();
    // sshfs served by a local sftp-server through a pipe instead of ssh;
    // stopping the server hangs every look at the mount.
    let ssh = work.path().join("fake-ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec {}\n",
            pid.display(),
            sftp.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = r#"
sshfs -f -o ssh_command="$3",cache=no "x:$4" "$2" & fs=$!
i=0; until mountpoint -q "$2" && [ -s "$5" ]; do i=$((i+1)); [ $i -gt 100 ] && { kill $fs; exit 90; }; sleep 0.1; done
kill -STOP "$(cat "$5")"
start=$(date +%s%N)
PATH=/nonexistent "$1" doctor --timeout 2; rc=$?
echo "elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
kill -CONT "$(cat "$5")"
fusermount -uz "$2"; wait $fs
exit $rc"#;
    let t0 = Instant::now();
    let o = in_mount_namespace(
        &s.env,
        script,
        &[
            &s.cluster.display().to_string(),
            &ssh.display().to_string(),
            &src.display().to_string(),
            &pid.display().to_string(),
        ],
    );
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(90), "cannot mount sshfs: {err}");
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let ms: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ms="))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert!(ms < 10_000, "doctor took {ms} ms on a hung mount");
    let sec = section(&out);
    assert!(
        sec.contains("PROBLEM: the cluster directory did not answer within 2 s (hung mount?)"),
        "{sec}"
    );
    // The rest of the report follows.
    assert!(out.contains("Run:ai streamer:"), "{out}");
    assert!(out.contains("1 problem(s) found"), "{out}");
}
