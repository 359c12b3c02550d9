//! Entra ID tokens outlive the streamer's sessions: the built
//! libblobcache.so, loaded as the streamer loads it, reads through ten
//! sessions (each ended by `shutdown()`, as the streamer does) from an
//! Azurite that checks bearer tokens (HTTPS, `--oauth basic`), with its
//! identity from the environment (workload identity, as AKS injects it)
//! and a loopback stand-in for the identity endpoint, which is asked once.

use blobcache_testing::azurite::{Azurite, ACCOUNT};
use blobcache_testing::cdylib::{lib, Blob};
use blobcache_testing::isolate::in_own_process;
use blobcache_testing::tokens::{TokenService, TENANT};
use blobcache_testing::{bytes, tempdir};

#[test]
fn ten_streamer_sessions_through_the_c_abi_ask_the_identity_endpoint_once() {
    in_own_process(
        "ten_streamer_sessions_through_the_c_abi_ask_the_identity_endpoint_once",
        &[],
        || {
            let az = Azurite::start_oauth();
            az.create_container("models");
            let data = bytes(70, 1_200_000);
            for s in 0..10 {
                az.put("models", &format!("s{s}.safetensors"), &data);
            }
            let tokens = TokenService::start();
            let scratch = tempdir("c-abi-identity");
            let federated = scratch.path().join("token");
            std::fs::write(&federated, "kubelet-projected-token").unwrap();
            let dir = tempdir("c-abi-identity-cache");
            for (k, v) in [
                (
                    "SSL_CERT_FILE",
                    az.ca.as_deref().unwrap().display().to_string(),
                ),
                ("BLOBCACHE_DIR", dir.path().display().to_string()),
                ("BLOBCACHE_AZURE_ENDPOINT", az.template()),
                ("BLOBCACHE_BLOCK_SIZE", "1M".into()),
                (
                    "AZURE_CLIENT_ID",
                    "00000000-0000-0000-0000-0000000000c1".into(),
                ),
                ("AZURE_TENANT_ID", TENANT.into()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    federated.display().to_string(),
                ),
                ("AZURE_AUTHORITY_HOST", tokens.authority()),
            ] {
                std::env::set_var(k, v);
            }
            let l = lib();
            for s in 0..10 {
                let blob = Blob::new(ACCOUNT, "models", &format!("s{s}.safetensors"));
                let readers: Vec<_> = (0..4)
                    .map(|r| {
                        let blob = Blob::new(ACCOUNT, "models", &format!("s{s}.safetensors"));
                        std::thread::spawn(move || {
                            let off = r * 300_000;
                            let mut buf = vec![0u8; 300_000];
                            lib().read(&blob, off as u64, &mut buf).map(|()| (off, buf))
                        })
                    })
                    .collect();
                for r in readers {
                    let (off, buf) = r
                        .join()
                        .unwrap()
                        .unwrap_or_else(|e| panic!("session {s}: {e}"));
                    assert!(buf[..] == data[off..off + buf.len()], "session {s}");
                }
                let mut head = [0u8; 8];
                l.read(&blob, 0, &mut head).unwrap();
                l.shutdown();
            }
            assert_eq!(tokens.requests(), 1, "one token for ten sessions");
        },
    );
}
