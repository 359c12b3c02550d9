//! Several `blobcache` processes sharing one cache directory.

use std::process::Command;
use std::time::Instant;

use blobcache_testing::azurite::{Azurite, KEY};
use blobcache_testing::proxy::Proxy;
use blobcache_testing::{bytes, tempdir};

#[test]
fn four_processes_cold_reading_256_mib_fetch_each_block_from_azure_once() {
    let az = Azurite::start();
    az.create_container("big");
    let t0 = Instant::now();
    let data = bytes(9, 256 << 20);
    az.put("big", "model.safetensors", &data);
    eprintln!("256 MiB generated and uploaded in {:?}", t0.elapsed());
    let proxy = Proxy::start(az.port);
    let dir = tempdir("four");
    let cache_dir = dir.path().join("cache");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("out.{i}"));
            let mut cmd = Command::new(blobcache_testing::built::command());
            cmd.env_clear()
                .env("BLOBCACHE_DIR", &cache_dir)
                .env("BLOBCACHE_AZURE_ENDPOINT", proxy.template())
                .env("BLOBCACHE_BLOCK_SIZE", "8M")
                .env("AZURE_STORAGE_ACCOUNT_KEY", KEY)
                .args([
                    "cat",
                    "az://devstoreaccount1/big/model.safetensors",
                    "--threads",
                    "4",
                    "--stats",
                ])
                .arg("--out")
                .arg(&out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            (out, cmd.spawn().unwrap())
        })
        .collect();
    let t0 = Instant::now();
    let mut fetched = 0;
    for (out, child) in children {
        let o = child.wait_with_output().unwrap();
        // The counters (--stats): one JSON line on stderr.
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        fetched += stderr
            .split("\"blocks_fetched\":")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no blocks_fetched in {stderr}"));
        eprintln!("a process finished after {:?}", t0.elapsed());
        assert!(
            std::fs::read(&out).unwrap() == data,
            "output {} differs",
            out.display()
        );
        std::fs::remove_file(&out).unwrap();
    }
    let blocks = 32;
    assert_eq!(
        fetched, blocks,
        "blocks fetched by the four processes together"
    );
    assert!(
        proxy.ranged_gets() <= blocks as usize,
        "{} ranged GETs for {blocks} blocks",
        proxy.ranged_gets()
    );
}
