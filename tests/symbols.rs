//! The shared library's dynamic symbol table holds exactly the documented
//! exports: the streamer's four names and the documented `blobcache_*` extras.

use std::process::Command;

use blobcache_testing::built::library;

#[test]
fn exports_are_exactly_the_streamer_interface_and_documented_extras() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(library())
        .output()
        .expect("nm (binutils) is installed");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut exported: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let kind = parts.next()?;
            (kind == "T").then_some(name)
        })
        .collect();
    exported.sort_unstable();
    assert_eq!(
        exported,
        [
            "blob_read",
            "blobcache_stats_json",
            "cache_abi_version",
            "runai_cache_abi_version",
            "shutdown"
        ]
    );
}

#[test]
fn the_header_declares_every_export() {
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/blobcache.h"))
            .unwrap();
    for f in [
        "uint32_t cache_abi_version(void);",
        "uint32_t runai_cache_abi_version(void);",
        "ssize_t blob_read(const char *account,",
        "void shutdown(void);",
        "ssize_t blobcache_stats_json(char *buf, size_t len);",
    ] {
        assert!(header.contains(f), "header lacks {f}");
    }
}

#[test]
fn the_library_depends_only_on_the_c_runtime() {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(library())
        .output()
        .expect("readelf");
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines().filter(|l| l.contains("(NEEDED)")) {
        let ok = [
            "libc.so",
            "libm.so",
            "libgcc_s.so",
            "ld-linux",
            "libpthread.so",
            "libdl.so",
        ]
        .iter()
        .any(|n| line.contains(n));
        assert!(ok, "unexpected dependency: {line}");
    }
    assert!(
        !text.contains("SYMBOLIC"),
        "linked with -Bsymbolic: our `shutdown` would capture the std's"
    );
}
