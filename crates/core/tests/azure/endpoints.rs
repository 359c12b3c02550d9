//! Where the origin is found: endpoints as the streamer writes them.

use blobcache_testing::azurite::{Azurite, KEY};
use blobcache_testing::{blobcache_cmd, bytes, tempdir};

/// The streamer's own Azure client (curl) resolves `*.localhost` to
/// loopback, so `AZURE_STORAGE_ENDPOINT_SUFFIX=blob.localhost:<port>` reaches
/// an emulator on this machine; the library resolves those names the same
/// way (the system resolver here does not), with Azurite's host-style URLs.
#[test]
fn a_host_style_endpoint_under_localhost_reaches_azurite() {
    let az = Azurite::start();
    az.create_container("models");
    let data = bytes(21, (1 << 20) + 7);
    az.put("models", "m.bin", &data);
    let dir = tempdir("localhost");
    let out = dir.path().join("out.bin");
    let o = blobcache_cmd(
        &[
            (
                "BLOBCACHE_DIR",
                dir.path().join("cache").display().to_string(),
            ),
            (
                "BLOBCACHE_AZURE_ENDPOINT",
                format!("http://{{account}}.blob.localhost:{}", az.port),
            ),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_string()),
        ],
        &[
            "cat",
            "az://devstoreaccount1/models/m.bin",
            "--out",
            &out.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == data, "bytes differ");
}
