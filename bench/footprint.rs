//! Item 9: the library's footprint. Size before and after `strip`, the
//! shared libraries it needs (`readelf -d`), and the time of
//! `dlopen(RTLD_NOW | RTLD_LOCAL)` of the stripped copy in fresh processes,
//! interleaved with the same for the C pread provider (a library with no
//! dependencies but libc, for scale).

use std::process::Command;

use blobcache_testing::tempdir;

use crate::{self_exe, Args, Json, Summary};

pub fn run(args: &Args) -> String {
    let lib = args.req("--lib");
    let pread = args.req("--pread");
    let reps = args.num("--reps", 51);
    let tmp = tempdir("bench-footprint");
    let stripped = tmp.path().join("libblobcache.so");
    let st = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(&lib)
        .status()
        .expect("strip (binutils) is installed");
    assert!(st.success(), "strip failed");
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
    let out = Command::new("readelf")
        .args(["-d", "-W"])
        .arg(&stripped)
        .output()
        .expect("readelf (binutils) is installed");
    assert!(out.status.success(), "readelf failed");
    let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect();
    let once = |path: &str| -> f64 {
        let o = Command::new(self_exe())
            .args(["dlopen-once", path])
            .output()
            .unwrap();
        assert!(o.status.success(), "dlopen of {path} failed");
        let s = String::from_utf8_lossy(&o.stdout);
        s.split("\"ms\":")
            .nth(1)
            .and_then(|v| v.trim().trim_end_matches('}').parse().ok())
            .expect("dlopen-once prints its time")
    };
    let stripped_s = stripped.display().to_string();
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..reps {
        ours.push(once(&stripped_s));
        theirs.push(once(&pread));
    }
    let list = needed
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(",");
    Json::default()
        .num("unstripped_bytes", size(std::path::Path::new(&lib)))
        .num("stripped_bytes", size(&stripped))
        .raw("needed", format!("[{list}]"))
        .sum("dlopen_ms", Summary::of(&ours))
        .sum("pread_provider_dlopen_ms", Summary::of(&theirs))
        .done()
}

/// Times one dlopen in this (fresh) process; prints `{"ms": ...}`.
pub fn dlopen_once(path: &str) -> String {
    let t0 = std::time::Instant::now();
    let h = blobcache_testing::cdylib::Handle::open(std::path::Path::new(path));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    h.unwrap_or_else(|e| panic!("{e}"));
    Json::default().num("ms", ms).done()
}
