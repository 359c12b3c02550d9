//! blobcache's core: a node-local disk cache for Azure Blob Storage reads,
//! as a safe Rust library. The shared library the Run:ai model streamer
//! loads (the C-ABI crate at the repository's root) and the `blobcache`
//! command (crates/cli) are built on it.
//!
//! `cache` serves reads, [`store`] keeps blocks on disk, [`origin`]
//! fetches misses, [`config`] reads the environment, `state` holds the
//! process-wide instance and its lifecycle, and [`provider`] is what the
//! exported C functions call. Nothing here exports a symbol (no
//! `#[no_mangle]`; the only `extern "C"` functions are fork.rs's
//! `pthread_atfork` handlers, whose addresses are handed to libc, not
//! exported) or knows of C pointers. `unsafe` is denied but in two places,
//! each block with a `// SAFETY:` comment: `sys.rs`, the thin module of
//! system calls the standard library lacks, and the mapping of a published
//! block in `store/block.rs`.
//!
//! # The public API
//!
//! Everything is crate-private unless listed here; each public item is a
//! promise to the crates of this workspace:
//!
//! - [`provider`]: what the C-ABI crate calls (the read, shutdown, the
//!   counters as JSON, the interface version);
//! - [`Cache`] and its [`Entry`], [`Config`] and [`config`], the [`origin`]s,
//!   [`BlobKey`], [`Error`]/[`ErrorKind`]/[`Result`]: the cache as a Rust
//!   library, for the command, the tests and the benchmarks;
//! - [`store`]: the store on disk as the command inspects it (inventory,
//!   eviction, counters), and [`store::probe`], read-only looks at the
//!   on-disk format for tests and fuzzing;
//! - [`stats`], [`redact::redact`], [`log::set_level`]: counters, scrubbing
//!   and the log level, for the command;
//! - [`prometheus`]: a cache directory's counters and size as Prometheus
//!   metrics, for the command (`stats --prometheus`, `metrics`).

#![deny(unsafe_code)]

mod cache;
mod cluster;
pub mod config;
pub mod error;
mod escape;
mod fork;
pub mod log;
mod names;
mod offload;
pub mod origin;
mod pool;
pub mod prometheus;
pub mod provider;
pub mod redact;
mod state;
pub mod stats;
pub mod store;
mod sync;
#[allow(unsafe_code)]
mod sys;

pub use cache::{Cache, Entry};
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use names::BlobKey;
