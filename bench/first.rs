//! The first bytes of a cold blob (`bench cold` spawns these, each in a
//! fresh process): how long the first 8 MiB read takes, once the reader is
//! up and has a connection to the origin.
//!
//!   bench first --lib L --warm ACCOUNT/CONTAINER/SMALL --blob ACCOUNT/CONTAINER/BLOB
//!       the library, dlopen'd and configured from the environment the
//!       caller set, reads 4 KiB of SMALL first, so that it has started
//!       (its threads, its HTTP client and one connection); then one 8 MiB
//!       `blob_read` at offset 0 of BLOB is timed.
//!   bench first-get --warm-url URL --url URL
//!       the baseline: a reqwest client makes one small ranged GET of the
//!       first URL (so it has a connection too); then one GET of
//!       bytes=0-8388607 of the second is timed, its body read into memory.
//!
//! Each prints `{"ms": ...}`.

use std::time::Instant;

use blobcache_testing::azurite::ranged_get;
use blobcache_testing::cdylib::{Blob, Lib as Provider};

use crate::{Args, Json};

/// What is timed: one read of this many bytes at offset 0.
pub const READ: usize = 8 << 20;
/// What the reader reads first, untimed.
const WARM: usize = 4 << 10;

pub fn library(args: &Args) -> String {
    let p = Provider::open(std::path::Path::new(&args.req("--lib")));
    let mut buf = vec![1u8; READ];
    p.read(&Blob::parse(&args.req("--warm")), 0, &mut buf[..WARM])
        .unwrap();
    let blob = Blob::parse(&args.req("--blob"));
    let t0 = Instant::now();
    p.read(&blob, 0, &mut buf).unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    p.shutdown();
    Json::default().num("ms", ms).done()
}

pub fn get(args: &Args) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut buf = Vec::with_capacity(READ);
    let ms = rt.block_on(async {
        ranged_get(&client, &args.req("--warm-url"), 0, WARM - 1, &mut buf).await;
        let t0 = Instant::now();
        ranged_get(&client, &args.req("--url"), 0, READ - 1, &mut buf).await;
        t0.elapsed().as_secs_f64() * 1e3
    });
    Json::default().num("ms", ms).done()
}
