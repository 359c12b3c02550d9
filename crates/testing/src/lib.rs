//! What blobcache's tests, benchmarks and demo share (not published):
//!
//! - [`azurite`]: an Azurite (the Azure Storage emulator) per test, on a
//!   free loopback port, with uploads and signed requests;
//! - [`proxy`]: a counting, fault-injecting loopback proxy, and a token
//!   server;
//! - [`squid`]: a real Squid forward proxy per test (plain, with basic
//!   authentication, or caching), on a free loopback port;
//! - [`tokens`]: a stand-in for Entra ID's identity endpoints (authority
//!   host, managed identity endpoint, `az`), issuing tokens Azurite's
//!   `--oauth basic` accepts;
//! - [`farlink`]: a loopback TCP proxy that delays and window-limits every
//!   connection as a long, fat network link would (a far origin);
//! - [`fixture`]: temporary directories, deterministic blob contents, and a
//!   directory origin;
//! - [`cdylib`]: the one loader of a built cache provider library, loaded
//!   as the Run:ai streamer loads it (`dlopen`, `dlsym`);
//! - [`built`]: where the workspace's build put the shared library and the
//!   `blobcache` command;
//! - [`isolate`]: a test body in a process of its own;
//! - [`nodes`]: stand-ins for a cluster's machines on one host: network
//!   namespaces joined to the host's by veth pairs, and an origin relay
//!   counting the bytes each node takes from the origin;
//! - [`sshfs`]: a private sshd on a free loopback port and `sshfs` mounts
//!   of one directory through it, one per simulated node: a shared,
//!   non-local filesystem whose locks are per mount;
//! - [`hungfs`]: a passthrough FUSE filesystem whose every operation
//!   blocks on command, as a dead cluster filesystem's;
//! - [`mounts`]: what those mounts share (is it mounted, `/dev/fuse`,
//!   bounded unmounts and waits);
//! - [`dragonfly`]: a real Dragonfly `dfdaemon` on loopback, with a
//!   stand-in for its scheduler (`scripts/test-dragonfly` builds it).

pub mod azurite;
pub mod built;
pub mod cdylib;
pub mod dragonfly;
pub mod farlink;
pub mod fixture;
pub mod hungfs;
pub mod isolate;
pub mod mounts;
pub mod nodes;
pub mod proxy;
pub mod squid;
pub mod sshfs;
pub mod tokens;

pub use fixture::{bytes, tempdir, Fixture, TempDir};

/// Runs the built `blobcache` command ([`built::command`]) with only `env`
/// (plus PATH): no credential or setting of the machine leaks in, and
/// nothing can reach a real Azure host.
pub fn blobcache_cmd(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(built::command());
    cmd.env_clear();
    if let Some(p) = std::env::var_os("PATH") {
        cmd.env("PATH", p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

/// A finished command's stdout and stderr, as text.
pub fn output_text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A finished command's stdout; fails the test, showing both outputs,
/// unless it exited 0.
pub fn output_ok(o: &std::process::Output) -> String {
    let (out, err) = output_text(o);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {err}",
        o.status
    );
    out
}

/// Hex SHA-256, to compare large contents without printing them.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
