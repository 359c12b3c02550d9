//! Blob names that need encoding, or that an HTTP client could collapse,
//! read back byte for byte.

use blobcache_core::{BlobKey, ErrorKind};

use blobcache_testing::azurite::{self, Azurite, ACCOUNT};
use blobcache_testing::{bytes, tempdir};

use crate::{cache, key, read_all};

#[test]
fn blob_names_with_spaces_percent_plus_hash_question_mark_and_unicode_round_trip() {
    let az = Azurite::start();
    az.create_container("names");
    let names = [
        "dir/my model ü%+#?.safetensors",
        "plus+and space",
        "100%",
        "pct%2Fslash",
        "hash#frag?query=1&x=y",
        "日本語/ファイル.bin",
        "semi;colon=eq&amp'quote[br]{c}~t`^|!$*()@,",
    ];
    for (i, n) in names.iter().enumerate() {
        az.put("names", n, &bytes(100 + i as u64, 1000 + i));
    }
    let mut stored = az.list("names");
    stored.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected, "Azurite stored different names");
    let dir = tempdir("names");
    let c = cache(
        &azurite::config(&az.template(), dir.path()),
        azurite::key_env(),
    );
    for (i, n) in names.iter().enumerate() {
        let got = read_all(&c, &key("names", n), 1000 + i).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(got, bytes(100 + i as u64, 1000 + i), "{n}");
    }
}

/// `x/`, `a//b`, `trail/`, `/` are legal blob names (Azure and Azurite
/// store them); each is read byte for byte, and none is confused with the
/// name it would collapse to (`x`, `a/b`, `trail`).
#[test]
fn blob_names_with_empty_segments_are_read_byte_exact_and_never_collapsed() {
    let az = Azurite::start();
    az.create_container("slashes");
    let names = [
        "x/", "x", "a//b", "a/b", "trail/", "trail", "/", "//", "/lead", "lead", "e//", "e/",
    ];
    for (i, n) in names.iter().enumerate() {
        az.put_raw("slashes", n, &bytes(300 + i as u64, 70_000 + i));
    }
    let mut stored = az.list("slashes");
    stored.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected, "Azurite stored different names");
    let dir = tempdir("slashes");
    let mut cfg = azurite::config(&az.template(), dir.path());
    cfg.block_size = 64 << 10; // two blocks each: a HEAD and two ranged GETs
    let c = cache(&cfg, azurite::key_env());
    for (i, n) in names.iter().enumerate() {
        let k = BlobKey::new(ACCOUNT, "slashes", n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        let got = read_all(&c, &k, 70_000 + i).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        assert!(
            got == bytes(300 + i as u64, 70_000 + i),
            "{n:?}: wrong bytes"
        );
    }
    // Dot segments stay refused (an HTTP client resolves them away: `d/../e`
    // would read `e`), with a clear message and no request.
    for n in ["d/../e", "./e", "e/.", "d/.."] {
        let e = BlobKey::new(ACCOUNT, "slashes", n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{n:?}");
        assert!(e.message().contains("path segment"), "{n:?}: {e}");
    }
}
