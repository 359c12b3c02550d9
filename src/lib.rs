//! blobcache: a node-local disk cache for Azure Blob Storage reads, loaded by
//! the Run:ai model streamer as its cache provider.
//!
//! The C boundary is in [`ffi`]; everything else is safe Rust that knows
//! nothing of C: [`cache`] serves reads, [`store`] keeps blocks on disk,
//! [`origin`] fetches misses, [`config`] reads the environment, [`state`]
//! holds the process-wide instance and its lifecycle.

pub mod cache;
pub mod config;
pub mod error;
pub mod escape;
pub mod ffi;
mod fork;
pub mod log;
pub mod names;
pub mod origin;
pub mod pool;
pub mod redact;
pub mod state;
pub mod stats;
pub mod store;
pub mod sync;

pub use cache::Cache;
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use names::BlobKey;
