//! The `blobcache` command: operator tooling built on the same cache, store
//! and origin code as the library.
//!
//! This file holds the arguments and the dispatch; each subcommand lives in
//! `cmd/<name>.rs` with its own arguments, and what they share (the
//! configuration, URIs, the store on disk) in `cmd/mod.rs`.
//!
//! Exit status: 0 success, 1 the operation failed (or found a problem:
//! `verify` found bad blocks, `warm` could not fetch something, `doctor`
//! found a fault, the cache directory cannot be used), 2 a usage error (bad
//! option, bad URI). Data goes to stdout, messages and progress to stderr.

mod cmd;
mod failure;
mod output;
mod progress;
mod signals;
mod uri;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use failure::{Failure, Outcome};

/// A node-local disk cache for Azure Blob Storage reads: warm it, inspect
/// it, check it, trim it.
///
/// Blobs are named az://<account>/<container>/<path>, or az://<container>/<path>
/// (as the streamer writes them) with --account NAME or AZURE_STORAGE_ACCOUNT_NAME
/// set. With neither set, the first segment is the account (and the commands
/// say so). Configuration comes from the BLOBCACHE_* variables and Azure
/// credentials from the usual AZURE_* variables (see the README and
/// `blobcache doctor`).
///
/// Exit status: 0 success, 1 the operation failed or found a problem (a cache
/// directory that cannot be used is one, for every command), 2 a usage error.
#[derive(Parser)]
#[command(name = "blobcache", version, max_term_width = 100)]
struct Cli {
    /// Storage account for az://<container>/<path> URIs [default: $AZURE_STORAGE_ACCOUNT_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    account: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch every block of the blobs under a URI into the cache
    ///
    /// Lists the blobs at or under the URI (a blob, a folder such as
    /// az://acct/models/llama-3-8b, or a whole container), fetches the blocks
    /// not yet cached in parallel, and shows progress on stderr. Exits 1 if any
    /// blob could not be fetched. Re-running it on a warm cache downloads
    /// nothing.
    Warm(cmd::warm::Args),
    /// List the cached blobs: size, blocks present / total, origin version, last use
    Ls(cmd::ls::Args),
    /// Cache size against the cap, and the counters of every process that used the cache
    ///
    /// The counters (hits, misses, bytes served from the cache and from the
    /// origin, fetch errors, time spent waiting on the origin) are kept in the
    /// cache directory and survive the processes that counted them; each
    /// process adds its counts every few seconds and at shutdown.
    ///
    /// With --prometheus, the same in the Prometheus text exposition format, as
    /// `blobcache metrics` serves it.
    Stats(cmd::stats::Args),
    /// Serve the cache's counters and size as Prometheus metrics over HTTP (GET /metrics)
    ///
    /// Runs until SIGTERM or SIGINT (then exits with status 0), for a DaemonSet or a
    /// sidecar beside the pods that load models; prints the address it listens on.
    /// Every scrape reads the counters the processes left in the cache directory, as
    /// `blobcache stats --prometheus` prints them.
    Metrics(cmd::metrics::Args),
    /// Re-check every cached block against the checksum in its trailer and remove the bad ones
    ///
    /// Exit status 0 when every block is good, 1 when bad blocks were found
    /// (they are removed unless --dry-run; the next read fetches them again).
    Verify(cmd::verify::Args),
    /// Remove cached blocks: down to a size, of a blob or prefix, or all
    ///
    /// Safe while readers run: files are unlinked, never truncated, and a
    /// block being filled is left alone.
    Evict(cmd::evict::Args),
    /// Check the configuration, credentials, endpoint, cache directory, cluster tier and streamer
    ///
    /// Prints every BLOBCACHE_* setting with its effective value, which Azure
    /// credentials are present (names only, never values), whether the
    /// endpoint answers, whether the cache directory is writable and how much
    /// room it has, the cluster tier when BLOBCACHE_CLUSTER_DIR is set (a real
    /// directory, on a shared filesystem, writable, room, block size, locks;
    /// given up on after --timeout if the mount hangs), and whether an
    /// installed Run:ai streamer will load the library. Exit status 1 if
    /// something is wrong.
    Doctor(cmd::doctor::Args),
    /// Write one blob's bytes to stdout (or a file), read through the cache
    ///
    /// Reads the blob (or --offset/--length of it) through the cache, filling
    /// it from the origin on a miss, so `blobcache cat az://.../config.json > f`
    /// gives the file. With --stats, the process's counters follow on stderr
    /// as one JSON line.
    Cat(cmd::cat::Args),
}

/// A size argument (`200G`, `512M`, `8M`, a byte count), as the settings
/// read sizes.
fn parse_size(s: &str) -> Result<u64, String> {
    blobcache_core::config::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size; use e.g. 200G, 512M, 8M or a byte count"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Register the credentials so no message can show them.
    blobcache_core::origin::azure::AzureEnv::from_process().register_secrets();
    let account = cli.account.as_deref();
    let outcome = match cli.command {
        Command::Warm(a) => cmd::warm::run(a, account),
        Command::Ls(a) => cmd::ls::run(a, account),
        Command::Stats(a) => cmd::stats::run(a),
        Command::Metrics(a) => cmd::metrics::run(a),
        Command::Verify(a) => cmd::verify::run(a, account),
        Command::Evict(a) => cmd::evict::run(a, account),
        Command::Doctor(a) => cmd::doctor::run(a, account),
        Command::Cat(a) => cmd::cat::run(a, account),
    };
    failure::exit(outcome)
}
