//! Shared pieces of the Azure tests: an Azurite process per test, a counting
//! and fault-injecting loopback proxy, temporary directories, and
//! deterministic blob contents.
#![allow(dead_code)]

pub mod azurite;
pub mod proxy;

// Temporary directories and deterministic contents are the fixture's, shared
// with the other integration tests.
#[path = "../fixture/mod.rs"]
mod fixture;
#[allow(unused_imports)]
pub use fixture::Fixture;
pub use fixture::{bytes, TempDir};

/// Hex SHA-256, to compare large contents without printing them.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    blobcache::names::hex(&Sha256::digest(data))
}
