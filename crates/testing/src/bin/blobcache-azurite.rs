//! Serves files from an Azurite for programs that are not Rust tests (the C
//! programs of scripts/test-c.sh): starts the emulator on a free loopback
//! port (the tests' harness, `blobcache_testing::azurite`), creates a
//! container, uploads each file as a blob, prints the settings that point
//! the library at it, and keeps it running until its standard input closes.
//!
//!   blobcache-azurite CONTAINER FILE=BLOB...
//!
//! Prints, then flushes, one `NAME=VALUE` line per setting
//! (`BLOBCACHE_ORIGIN`, `BLOBCACHE_AZURE_ENDPOINT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`: the emulator's
//! public development key), then a line `ready`. Exit status 2 on a usage
//! error.

use std::io::{Read, Write};

use blobcache_testing::azurite::{Azurite, ACCOUNT, KEY};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: blobcache-azurite CONTAINER FILE=BLOB...");
        std::process::exit(2)
    };
    let Some((container, files)) = args.split_first() else {
        usage()
    };
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|a| a.split_once('=').unwrap_or_else(|| usage()))
        .collect();
    let az = Azurite::start();
    az.create_container(container);
    for (file, blob) in files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        az.put_raw(container, blob, &data);
    }
    let mut out = std::io::stdout().lock();
    for (k, v) in [
        ("BLOBCACHE_ORIGIN", "azure".to_string()),
        ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
        ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_string()),
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
    ] {
        writeln!(out, "{k}={v}").unwrap();
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    drop(out);
    // Until the caller closes our standard input (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(az);
}
