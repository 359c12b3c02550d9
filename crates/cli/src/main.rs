//! The `blobcache` command: operator tooling built on the same cache, store
//! and origin code as the library.
//!
//! Exit status: 0 success, 1 the operation failed (or found a problem:
//! `verify` found bad blocks, `warm` could not fetch something, `doctor`
//! found a fault), 2 a usage error (bad option, bad URI). Data goes to
//! stdout, messages and progress to stderr.

mod doctor;
mod inspect;
mod output;
mod progress;
mod uri;
mod warm;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::{Cache, Config};
use clap::{Parser, Subcommand};

use output::{json_str, rate, size};

/// A node-local disk cache for Azure Blob Storage reads: warm it, inspect
/// it, check it, trim it.
///
/// Blobs are named az://<account>/<container>/<path>, or az://<container>/<path>
/// (as the streamer writes them) with --account NAME or AZURE_STORAGE_ACCOUNT_NAME
/// set. Configuration comes from the BLOBCACHE_* variables and Azure
/// credentials from the usual AZURE_* variables (see the README and
/// `blobcache doctor`).
///
/// Exit status: 0 success, 1 the operation failed or found a problem, 2 a usage error.
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
    Warm {
        /// az://<account>/<container>/<blob-or-folder>
        uri: String,
        /// Blobs fetched at the same time (each with its blocks in parallel,
        /// BLOBCACHE_FETCH_CONCURRENCY blocks in all)
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
        jobs: u32,
        /// Seconds between progress lines when stderr is not a terminal
        #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        progress_every: u64,
        /// No progress output
        #[arg(long, short)]
        quiet: bool,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the cached blobs: size, blocks present / total, origin version, last use
    Ls {
        /// Only blobs at or under this az:// URI
        uri: Option<String>,
        /// One JSON array
        #[arg(long)]
        json: bool,
    },
    /// Cache size against the cap, and the counters of every process that used the cache
    ///
    /// The counters (hits, misses, bytes served from the cache and from the
    /// origin, fetch errors, time spent waiting on the origin) are kept in the
    /// cache directory and survive the processes that counted them; each
    /// process adds its counts every few seconds and at shutdown.
    Stats {
        /// One JSON object
        #[arg(long)]
        json: bool,
        /// Start the counters again from zero (after printing them)
        #[arg(long)]
        reset: bool,
    },
    /// Re-check every cached block against its recorded SHA-256 and remove the bad ones
    ///
    /// Exit status 0 when every block is good, 1 when bad blocks were found
    /// (they are removed unless --dry-run; the next read fetches them again).
    Verify {
        /// Only blobs at or under this az:// URI
        uri: Option<String>,
        /// Report bad blocks without removing them
        #[arg(long)]
        dry_run: bool,
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove cached blocks: down to a size, of a blob or prefix, or all
    ///
    /// Safe while readers run: files are unlinked, never truncated, and a
    /// block being filled is left alone.
    Evict {
        /// A blob or folder (az:// URI) whose cached blocks to remove
        #[arg(required_unless_present_any = ["to", "all"], conflicts_with_all = ["to", "all"])]
        uri: Option<String>,
        /// Remove least recently used blocks until the cache holds at most SIZE (200G, 512M, 0)
        #[arg(long, value_name = "SIZE", conflicts_with = "all", value_parser = parse_size)]
        to: Option<u64>,
        /// Remove everything
        #[arg(long)]
        all: bool,
    },
    /// Check the configuration, credentials, endpoint, cache directory and streamer
    ///
    /// Prints every BLOBCACHE_* setting with its effective value, which Azure
    /// credentials are present (names only, never values), whether the
    /// endpoint answers, whether the cache directory is writable and how much
    /// room it has, and whether an installed Run:ai streamer will load the
    /// library. Exit status 1 if something is wrong.
    Doctor {
        /// Also list this az:// location (checks container and credential)
        uri: Option<String>,
        /// Seconds to wait for the endpoint
        #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
    },
    /// Read one blob through the cache (filling it on a miss), optionally to a file
    ///
    /// Prints the process's counters as JSON on stdout when done.
    Cat {
        /// az://<account>/<container>/<blob>
        uri: String,
        /// Write the blob's bytes to FILE (default: discard them)
        #[arg(long, value_name = "FILE")]
        out: Option<String>,
        /// Reader threads
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: u32,
        /// Bytes per read
        #[arg(long, default_value = "8M", value_parser = parse_size)]
        chunk: u64,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    blobcache_core::config::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size; use e.g. 200G, 512M, 8M or a byte count"))
}

/// How a command failed.
pub enum Failure {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// The operation failed or found a problem: exit status 1.
    Failed(String),
    /// Failed, and the command already said why.
    Quiet,
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Failed(s)
    }
}

impl From<blobcache_core::Error> for Failure {
    fn from(e: blobcache_core::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Register the credentials so no message can show them.
    blobcache_core::origin::azure::AzureEnv::from_process().register_secrets();
    let r = run(cli);
    let _ = std::io::stdout().flush();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet) => ExitCode::FAILURE,
        Err(Failure::Failed(m)) => {
            eprintln!("blobcache: {}", blobcache_core::redact::redact(&m));
            ExitCode::FAILURE
        }
        Err(Failure::Usage(m)) => {
            eprintln!(
                "blobcache: {}\n\nFor more information, try '--help'.",
                blobcache_core::redact::redact(&m)
            );
            ExitCode::from(2)
        }
    }
}

/// The account from `AZURE_STORAGE_ACCOUNT_NAME`, if set.
pub fn env_account() -> Option<String> {
    std::env::var("AZURE_STORAGE_ACCOUNT_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Parses a URI argument; a bad one is a usage error.
pub fn location(uri: &str, account: Option<&str>) -> Result<uri::Location, Failure> {
    uri::parse(uri, account, env_account().as_deref()).map_err(Failure::Usage)
}

/// The configuration from the environment (an invalid value fails the command).
pub fn config() -> Result<Config, Failure> {
    let c = Config::from_env().map_err(|e| Failure::Failed(e.to_string()))?;
    blobcache_core::log::set_level(c.log_level);
    Ok(c)
}

fn run(cli: Cli) -> Outcome {
    let account = cli.account.as_deref();
    match cli.command {
        Command::Warm {
            uri,
            jobs,
            progress_every,
            quiet,
            json,
        } => warm(&uri, account, jobs as usize, progress_every, quiet, json),
        Command::Ls { uri, json } => inspect::ls(uri.as_deref(), account, json),
        Command::Stats { json, reset } => inspect::stats(json, reset),
        Command::Verify { uri, dry_run, json } => {
            inspect::verify(uri.as_deref(), account, dry_run, json)
        }
        Command::Evict { uri, to, all } => inspect::evict(uri.as_deref(), account, to, all),
        Command::Doctor { uri, timeout } => {
            doctor::doctor(uri.as_deref(), account, Duration::from_secs(timeout))
        }
        Command::Cat {
            uri,
            out,
            threads,
            chunk,
        } => cat(&uri, account, out.as_deref(), threads as usize, chunk),
    }
}

fn warm(
    uri: &str,
    account: Option<&str>,
    jobs: usize,
    every: u64,
    quiet: bool,
    json: bool,
) -> Outcome {
    let loc = location(uri, account)?;
    let Some(container) = loc.container.clone() else {
        return Err(Failure::Usage(format!(
            "{uri:?} names no container; {}",
            uri::FORMS
        )));
    };
    let config = config()?;
    let cache = Arc::new(Cache::new(config)?);
    // The listing asks for the folder's prefix; `covers` then keeps the
    // exact blob and what is under it as a folder.
    let listed = cache
        .origin()
        .list(&loc.account, &container, &loc.path)
        .map_err(|e| format!("cannot list {uri}: {e}"))?;
    let blobs: Vec<_> = listed
        .into_iter()
        .filter(|b| uri::covers_name(&loc.path, &b.name))
        .collect();
    if blobs.is_empty() {
        cache.shutdown();
        return Err(Failure::Failed(format!(
            "nothing to warm: no blob at or under {uri}"
        )));
    }
    let r = warm::warm(
        cache.clone(),
        &loc.account,
        &container,
        blobs,
        jobs,
        quiet,
        Duration::from_secs(every),
    );
    cache.shutdown();
    let mut out = std::io::stdout().lock();
    if json {
        let failed: Vec<String> = r
            .failed
            .iter()
            .map(|(n, e)| format!("{{\"blob\":{},\"error\":{}}}", json_str(n), json_str(e)))
            .collect();
        let _ = writeln!(
            out,
            "{{\"uri\":{},\"blobs\":{},\"bytes\":{},\"already_cached\":{},\"fetched\":{},\"blocks_fetched\":{},\"seconds\":{:.3},\"failed\":[{}]}}",
            json_str(uri),
            r.blobs,
            r.bytes,
            r.already,
            r.fetched,
            r.blocks_fetched,
            r.seconds,
            failed.join(",")
        );
    } else {
        let _ = writeln!(
            out,
            "warmed {} of {} blobs ({}) under {uri} in {:.1} s: {} fetched from the origin ({}), {} were already cached",
            r.blobs - r.failed.len(),
            r.blobs,
            size(r.bytes),
            r.seconds,
            size(r.fetched),
            rate(r.fetched, r.seconds),
            size(r.already)
        );
    }
    drop(out);
    if r.failed.is_empty() {
        return Ok(());
    }
    for (name, e) in &r.failed {
        eprintln!(
            "blobcache: warm: {}: {}",
            name,
            blobcache_core::redact::redact(e)
        );
    }
    Err(Failure::Failed(format!(
        "{} of {} blobs could not be warmed",
        r.failed.len(),
        r.blobs
    )))
}

fn cat(uri: &str, account: Option<&str>, out: Option<&str>, threads: usize, chunk: u64) -> Outcome {
    if chunk == 0 {
        return Err(Failure::Usage("--chunk must be at least 1 byte".into()));
    }
    let key = location(uri, account)?.blob(uri).map_err(Failure::Usage)?;
    let cache = Arc::new(Cache::new(config()?)?);
    let size = cache
        .entry(&key)
        .map_err(|e| format!("{key}: {e}"))?
        .info
        .size;
    let out = match out {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?;
            f.set_len(size).map_err(|e| format!("{p}: {e}"))?;
            Some(Arc::new(f))
        }
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, key, next, out) = (cache.clone(), key.clone(), next.clone(), out.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut buf = vec![0u8; chunk as usize];
                loop {
                    let off = next.fetch_add(chunk, Ordering::Relaxed);
                    if off >= size {
                        return Ok(());
                    }
                    let n = chunk.min(size - off) as usize;
                    cache
                        .read(&key, off, &mut buf[..n])
                        .map_err(|e| format!("{key} bytes {off}..{}: {e}", off + n as u64))?;
                    if let Some(f) = &out {
                        use std::os::unix::fs::FileExt;
                        f.write_all_at(&buf[..n], off).map_err(|e| e.to_string())?;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "a reader thread panicked".to_string())??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = cache.stats();
    cache.shutdown();
    let _ = writeln!(
        std::io::stdout().lock(),
        "{{\"bytes\":{size},\"seconds\":{secs:.6},\"stats\":{}}}",
        s.to_json()
    );
    Ok(())
}
