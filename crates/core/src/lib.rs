//! blobcache's core: a node-local disk cache for Azure Blob Storage reads,
//! as a safe Rust library. The shared library the Run:ai model streamer
//! loads (the C-ABI crate at the repository's root) and the `blobcache`
//! command (crates/cli) are built on it.
//!
//! [`cache`] serves reads, [`store`] keeps blocks on disk, [`origin`]
//! fetches misses, [`config`] reads the environment, [`state`] holds the
//! process-wide instance and its lifecycle, and [`provider`] is what the
//! exported C functions call. Nothing here exports a symbol (no
//! `#[no_mangle]`; the only `extern "C"` functions are fork.rs's
//! `pthread_atfork` handlers, whose addresses are handed to libc, not
//! exported) or knows of C pointers. `unsafe` is denied but in two places,
//! each block with a `// SAFETY:` comment: `sys.rs`, the thin module of
//! system calls the standard library lacks, and the mapping of a published
//! block in `store/block.rs`.

#![deny(unsafe_code)]

pub mod cache;
pub mod config;
pub mod error;
pub mod escape;
mod fork;
pub mod log;
pub mod names;
pub mod origin;
pub mod pool;
pub mod provider;
pub mod redact;
pub mod state;
pub mod stats;
pub mod store;
pub mod sync;
#[allow(unsafe_code)]
mod sys;

pub use cache::Cache;
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use names::BlobKey;
