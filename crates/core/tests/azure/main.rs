//! The Azure origin against a real Azurite (npm, in-memory, loopback only),
//! one module per behaviour:
//!
//! - `cluster`: the cluster tier: a node waits for another node's fill of
//!   a block and takes it from the tier; replaced blobs are not mixed;
//! - `credentials`: shared key, SAS, anonymous and Entra ID access, and no
//!   secret in a message or a log line;
//! - `dragonfly`: Dragonfly mode: what GETs through dfdaemon carry, shared
//!   keys refused, and going direct when the daemon fails;
//! - `versions`: a blob replaced at the origin between loads or during one;
//! - `identity`: every Entra ID credential kind against an Azurite that
//!   checks tokens, and tokens across lifecycles;
//! - `faults`: an unreachable origin, retried statuses, broken and stalled
//!   answers, and the time bounds on all of them;
//! - `names`: blob names that need encoding or have empty segments;
//! - `processes`: several processes sharing one cache directory;
//! - `proxies`: forward proxies (a real Squid): HTTP and HTTPS origins,
//!   credentials, `NO_PROXY`, `BLOBCACHE_PROXY=off`, dead and hung proxies,
//!   and a caching proxy shared by two nodes;
//! - `reads`: cold and warm reads, ranges at the end, missing blobs;
//! - `endpoints`: endpoints as the streamer writes them;
//! - `shutdown`: shutdown with a request in flight;
//! - `streaming`: readers served from a fill in flight.
//!
//! Credentials are always explicit (an `AzureEnv` given to the origin, or a
//! cleared environment for child processes), so nothing here can reach the
//! instance metadata service or a real Azure host. Faults come from a
//! loopback proxy between the cache and Azurite (blobcache_testing::proxy).
//! The measurements (throughput, CPU, memory, bytes fetched by several
//! processes) are in bench/ (`bench/run`).

mod cluster;
mod credentials;
mod dragonfly;
mod endpoints;
mod faults;
mod identity;
mod names;
mod processes;
mod proxies;
mod reads;
mod shutdown;
mod streaming;
mod versions;

use std::path::Path;
use std::sync::Arc;

use blobcache_core::config::Config;
use blobcache_core::origin::azure::{AzureEnv, AzureOrigin};
use blobcache_core::{BlobKey, Cache};

use blobcache_testing::azurite::ACCOUNT;

/// A blob of the emulator's account.
fn key(container: &str, blob: &str) -> BlobKey {
    BlobKey::new(ACCOUNT, container, blob).unwrap()
}

/// A cache whose origin is Azure, with `env`'s credentials only.
fn cache(config: &Config, env: AzureEnv) -> Cache {
    let origin = Arc::new(AzureOrigin::with_env(config, env).unwrap());
    Cache::with_origin(config.clone(), origin).unwrap()
}

/// The first `len` bytes of a blob, through the cache.
fn read_all(c: &Cache, k: &BlobKey, len: usize) -> blobcache_core::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    c.read(k, 0, &mut buf)?;
    Ok(buf)
}

/// The environment of a `blobcache cat` child: the cache directory, the
/// endpoint, 1 MiB blocks, a 2 s fetch timeout and one credential.
fn cat_env(template: &str, dir: &Path, credential: (&str, String)) -> Vec<(&'static str, String)> {
    vec![
        ("BLOBCACHE_DIR", dir.display().to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", template.to_string()),
        ("BLOBCACHE_BLOCK_SIZE", "1M".to_string()),
        ("BLOBCACHE_FETCH_TIMEOUT", "2s".to_string()),
        (
            match credential.0 {
                "AZURE_STORAGE_ACCOUNT_KEY" => "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_SAS_TOKEN" => "AZURE_STORAGE_SAS_TOKEN",
                other => panic!("unexpected credential variable {other}"),
            },
            credential.1,
        ),
    ]
}
