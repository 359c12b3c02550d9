//! Shared pieces of the Azure tests: an Azurite process per test, a counting
//! and fault-injecting loopback proxy, temporary directories, and
//! deterministic blob contents.
#![allow(dead_code)]

pub mod azurite;
pub mod proxy;

// Temporary directories and deterministic contents are the fixture's, shared
// with the other integration tests.
#[path = "../fixture/mod.rs"]
pub mod fixture;
#[allow(unused_imports)]
pub use fixture::Fixture;
pub use fixture::{bytes, TempDir};

/// Runs the `blobcache` command with only `env` (plus PATH): no credential
/// or setting of the machine leaks in, and nothing can reach a real Azure
/// host. (Integration tests only: examples that share this module have no
/// `CARGO_BIN_EXE_blobcache`.)
#[cfg(test)]
pub fn blobcache_cmd(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_blobcache"));
    cmd.env_clear();
    if let Some(p) = std::env::var_os("PATH") {
        cmd.env("PATH", p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

/// Hex SHA-256, to compare large contents without printing them.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    blobcache::names::hex(&Sha256::digest(data))
}
