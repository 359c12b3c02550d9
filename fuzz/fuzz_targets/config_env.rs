//! Fuzzes the configuration parser: any set of BLOBCACHE_* values either
//! gives a configuration inside the documented ranges or an error naming
//! the variable; never a panic. (A BTreeMap, not a HashMap: randomly seeded
//! hashing would make the coverage of the same input differ from run to
//! run, and a fixed-seed run explore different inputs each time.)
#![no_main]

use std::collections::BTreeMap;

use blobcache_core::config::{Config, MaxSize, OriginConfig, VARIABLES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Input: records "<variable index byte><value bytes>" separated by 0xff.
    let mut env = BTreeMap::new();
    for rec in data.split(|b| *b == 0xff) {
        let Some((&i, value)) = rec.split_first() else {
            continue;
        };
        let name = VARIABLES[i as usize % VARIABLES.len()];
        env.insert(name, String::from_utf8_lossy(value).into_owned());
    }
    match Config::from_lookup(|k| env.get(k).cloned()) {
        Ok(c) => {
            assert!(c.block_size >= 64 << 10 && c.block_size <= 1 << 30);
            assert_eq!(c.block_size % (64 << 10), 0);
            assert!((1..=256).contains(&c.fetch_concurrency));
            assert!(c.readahead_blocks <= 64);
            assert!(c.fetch_timeout.as_millis() >= 100 && c.fetch_timeout.as_secs() <= 3600);
            if let Some(d) = &c.dir {
                assert!(d.is_absolute());
            }
            if let MaxSize::PercentOfFilesystem(p) = c.max_size {
                assert!(p <= 100);
            }
            if let OriginConfig::Directory(root) = &c.origin {
                assert!(root.is_absolute());
            }
        }
        Err(e) => {
            assert!(
                VARIABLES.iter().any(|v| e.message().contains(v)) || e.message().contains("AZURE"),
                "an error that names no variable: {e}"
            );
        }
    }
});
