//! Shutdown while the origin is busy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blobcache_core::ErrorKind;

use blobcache_testing::azurite::{self, Azurite};
use blobcache_testing::proxy::{Fault, Proxy};
use blobcache_testing::{bytes, tempdir};

use crate::{cache, key, read_all};

#[test]
fn shutdown_cancels_a_request_in_flight_without_waiting_for_the_network() {
    let az = Azurite::start();
    az.create_container("models");
    az.put("models", "m.bin", &bytes(15, 1 << 20));
    let proxy = Proxy::start(az.port);
    proxy.inject(
        "GET",
        Fault::StallBody {
            after: 1000,
            stall: Duration::from_secs(30),
        },
    );
    let dir = tempdir("shutdown");
    let c = Arc::new(cache(
        &azurite::config(&proxy.template(), dir.path()),
        azurite::key_env(),
    ));
    let reader = {
        let c = c.clone();
        std::thread::spawn(move || read_all(&c, &key("models", "m.bin"), 1 << 20))
    };
    while proxy.ranged_gets() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    c.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shutdown, "{e}");
}
