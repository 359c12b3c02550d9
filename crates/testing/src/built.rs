//! Where the workspace's build put its artifacts, for tests of another
//! package than the one that builds them: `target/<profile>/`, the parent
//! of the `deps/` directory holding the test binary. Build them first
//! (`cargo build --profile ci --workspace`, as scripts/test does): a test
//! build alone does not build another package's library or command.

use std::path::PathBuf;

/// `target/<profile>/<name>` next to this test binary's directory, or the
/// path in the environment variable `var` when set.
fn artifact(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>, or target/<profile>/examples/<x>.
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --profile <profile> --workspace` first (or set {var})",
        p.display()
    );
    p
}

/// The shared library the streamer loads, `libblobcache.so` (or
/// `BLOBCACHE_LIB`).
pub fn library() -> PathBuf {
    artifact("BLOBCACHE_LIB", "libblobcache.so")
}

/// The library for programs that link it, `libblobcache_link.so`.
pub fn link_library() -> PathBuf {
    artifact("BLOBCACHE_LINK_LIB", "libblobcache_link.so")
}

/// The `blobcache` command (or `BLOBCACHE_CMD`).
pub fn command() -> PathBuf {
    artifact("BLOBCACHE_CMD", "blobcache")
}
