//! The shared libraries' dynamic symbol tables hold exactly the documented
//! exports, and they depend only on the C runtime:
//!
//! - libblobcache.so (the streamer's): the streamer's four names and the
//!   prefixed functions of include/blobcache.h;
//! - libblobcache_link.so (for programs that link the library): the
//!   prefixed functions only, and in particular no `shutdown`, which would
//!   take the place of libc's shutdown(2) in such a program.
//!
//! And no Rust program of the workspace defines `shutdown`.

use std::path::Path;
use std::process::Command;

use blobcache_testing::built::{command, library, link_library};

/// The names of the functions `file` defines and exports.
fn exported_functions(file: &Path) -> Vec<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(file)
        .output()
        .expect("nm (binutils) is installed");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut exported: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let kind = parts.next()?;
            (kind == "T").then(|| name.to_string())
        })
        .collect();
    exported.sort_unstable();
    exported
}

const PREFIXED: [&str; 5] = [
    "blobcache_abi_version",
    "blobcache_check_config",
    "blobcache_read",
    "blobcache_shutdown",
    "blobcache_stats_json",
];

#[test]
fn exports_are_exactly_the_streamer_interface_and_documented_extras() {
    assert_eq!(
        exported_functions(&library()),
        [
            "blob_read",
            "blobcache_abi_version",
            "blobcache_check_config",
            "blobcache_read",
            "blobcache_shutdown",
            "blobcache_stats_json",
            "cache_abi_version",
            "runai_cache_abi_version",
            "shutdown"
        ]
    );
}

#[test]
fn the_library_for_linking_exports_only_the_prefixed_functions() {
    assert_eq!(exported_functions(&link_library()), PREFIXED);
}

#[test]
fn no_rust_program_of_the_workspace_defines_shutdown() {
    // The command, and this test binary (which links blobcache-core and the
    // test support): their symbol tables, not only the dynamic ones.
    for exe in [command(), std::env::current_exe().unwrap()] {
        let out = Command::new("nm")
            .args(["--defined-only", "--format=posix"])
            .arg(&exe)
            .output()
            .expect("nm (binutils) is installed");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("shutdown ")),
            "{} defines shutdown",
            exe.display()
        );
    }
}

#[test]
fn the_header_declares_the_prefixed_functions_and_types_for_the_streamers_names() {
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/blobcache.h"))
            .unwrap();
    for f in [
        "uint32_t blobcache_abi_version(void);",
        "ssize_t blobcache_read(const char *account,",
        "void blobcache_shutdown(void);",
        "ssize_t blobcache_stats_json(char *buf, size_t len);",
        "ssize_t blobcache_check_config(char *buf, size_t len);",
        "typedef uint32_t (*blobcache_abi_version_fn)(void);",
        "typedef ssize_t (*blobcache_blob_read_fn)(const char *account,",
        "typedef void (*blobcache_shutdown_fn)(void);",
    ] {
        assert!(header.contains(f), "header lacks {f}");
    }
    // The streamer's names are types, never prototypes (`shutdown` would
    // clash with <sys/socket.h>'s). Comment lines may name them.
    let code: Vec<&str> = header
        .lines()
        .filter(|l| !l.starts_with(" *") && !l.starts_with("/*"))
        .collect();
    for f in [
        " shutdown(",
        " blob_read(",
        " cache_abi_version(",
        " runai_cache_abi_version(",
    ] {
        assert!(
            !code.iter().any(|l| l.contains(f)),
            "header declares{f}...)"
        );
    }
}

#[test]
fn the_libraries_depend_only_on_the_c_runtime() {
    for lib in [library(), link_library()] {
        let out = Command::new("readelf")
            .arg("-d")
            .arg(&lib)
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
            assert!(ok, "{}: unexpected dependency: {line}", lib.display());
        }
        assert!(
            !text.contains("SYMBOLIC"),
            "{} linked with -Bsymbolic: our `shutdown` would capture the std's",
            lib.display()
        );
    }
}
