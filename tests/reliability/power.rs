//! Power loss: what a power cut during a fill can leave on disk, simulated
//! by damaging the cache's files directly (docs/RELIABILITY.md lists the
//! cases and why each is caught). After a cut, published blocks date from
//! before the boot: those are checked against their checksum, so a torn one
//! is refetched, never served.

use std::path::{Path, PathBuf};

use blobcache_core::{BlobKey, Cache};
use blobcache_testing::bytes;
use blobcache_testing::fixture::{Fixture, ACCOUNT, CONTAINER};

use crate::crashes::Rng;
use crate::report::{self, Outcome};

const BLOCK: u64 = 64 << 10;
const BLOCKS: u64 = 8;
const SIZE: usize = (BLOCKS * BLOCK) as usize - 1000;

/// Sets a file's mtime to 2001: before any boot of this machine.
pub fn date_before_boot(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    assert_eq!(
        // SAFETY: `c` is NUL-terminated; `[t, t]` is the two timespecs
        // utimensat reads; both outlive the call.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) },
        0,
        "utimensat {}",
        p.display()
    );
}

fn version_dir(fx: &Fixture) -> PathBuf {
    fx.cached_blocks()
        .first()
        .map(|(d, _)| d.clone())
        .expect("a filled block")
}

/// The ways a cut can leave block `i` (see docs/RELIABILITY.md).
fn damage(kind: &str, dir: &Path, i: u64, rng: &mut Rng) {
    let p = dir.join(format!("b.{i}"));
    let mut b = std::fs::read(&p).unwrap();
    let data_len = b.len() - 64;
    match kind {
        // Data pages that never reached the disk read back as zeros.
        "zeroed data pages, trailer intact" => {
            let page = rng.below((data_len as u64).div_ceil(4096)) as usize * 4096;
            let end = (page + 4096 * (1 + rng.below(4) as usize)).min(data_len);
            b[page..end].fill(0);
        }
        // Or as older contents of the disk blocks.
        "stale bytes in one data page, trailer intact" => {
            let pos = rng.below(data_len as u64) as usize;
            b[pos] ^= 1 + rng.below(255) as u8;
        }
        "trailer page never written (zeros)" => {
            let n = b.len();
            b[n - 64..].fill(0);
        }
        "file shorter than a block (size not updated)" => {
            b.truncate(rng.below(b.len() as u64) as usize);
        }
        "zero-length file (rename on disk, data not)" => b.clear(),
        "whole file zeros, right size" => b.fill(0),
        other => panic!("unknown damage {other}"),
    }
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &b).unwrap();
}

fn read_all(cache: &Cache, key: &BlobKey) -> blobcache_core::Result<Vec<u8>> {
    let mut buf = vec![0u8; SIZE];
    cache.read(key, 0, &mut buf)?;
    Ok(buf)
}

/// Fills the blob, damages one block as `kind`, dates every file before the
/// boot, and reads again: the damaged block must be refetched (and only
/// it), the bytes right.
fn trial(fx: &Fixture, kind: &str, rng: &mut Rng, o: &mut Outcome) {
    let key = BlobKey::new(ACCOUNT, CONTAINER, "m").unwrap();
    let truth = bytes(77, SIZE);
    let _ = std::fs::remove_dir_all(fx.cache.path().join("v1"));
    {
        let c = Cache::new(fx.config(BLOCK)).unwrap();
        assert_eq!(read_all(&c, &key).unwrap(), truth);
    }
    let dir = version_dir(fx);
    let i = rng.below(BLOCKS);
    damage(kind, &dir, i, rng);
    for j in 0..BLOCKS {
        date_before_boot(&dir.join(format!("b.{j}")));
    }
    date_before_boot(&dir.join("meta"));
    o.tried += 1;
    let c = Cache::new(fx.config(BLOCK)).unwrap();
    // The damaged block alone first: never served.
    let (s, e) = ((i * BLOCK) as usize, (((i + 1) * BLOCK) as usize).min(SIZE));
    let mut part = vec![0u8; e - s];
    match c.read(&key, s as u64, &mut part) {
        Ok(()) if part == truth[s..e] => {}
        Ok(()) => return o.other(format!("{kind}: block {i} served WRONG BYTES")),
        Err(err) => return o.other(format!("{kind}: {err}")),
    }
    match read_all(&c, &key) {
        Ok(v) if v == truth => {}
        Ok(_) => return o.other(format!("{kind}: WRONG BYTES")),
        Err(err) => return o.other(format!("{kind}: {err}")),
    }
    let fetched = c.stats().blocks_fetched;
    if fetched != 1 {
        return o.other(format!("{kind}: {fetched} blocks refetched, expected 1"));
    }
    o.correct += 1;
}

#[test]
fn blocks_torn_by_a_power_cut_are_refetched_never_served() {
    let fx = Fixture::new("power");
    fx.put("m", &bytes(77, SIZE));
    let mut rng = Rng::from_env("power");
    for kind in [
        "zeroed data pages, trailer intact",
        "stale bytes in one data page, trailer intact",
        "trailer page never written (zeros)",
        "file shorter than a block (size not updated)",
        "zero-length file (rename on disk, data not)",
        "whole file zeros, right size",
    ] {
        let mut o = Outcome::default();
        for _ in 0..12 {
            trial(&fx, kind, &mut rng, &mut o);
        }
        report::record(
            "power loss",
            &format!("torn block: {kind}"),
            &o,
            "power::blocks_torn_by_a_power_cut_are_refetched_never_served",
        );
        report::assert_clean(kind, &o);
    }
}

#[test]
fn torn_metadata_and_leftover_temporaries_are_discarded() {
    let fx = Fixture::new("power-meta");
    let truth = bytes(78, SIZE);
    fx.put("m", &truth);
    let key = BlobKey::new(ACCOUNT, CONTAINER, "m").unwrap();
    let mut rng = Rng::from_env("power-meta");
    let mut o = Outcome::default();
    let mut temps = Outcome::default();
    for t in 0..24 {
        let _ = std::fs::remove_dir_all(fx.cache.path().join("v1"));
        {
            let c = Cache::new(fx.config(BLOCK)).unwrap();
            assert_eq!(read_all(&c, &key).unwrap(), truth);
        }
        let dir = version_dir(&fx);
        // A torn meta: cut, zeroed or with a flipped byte.
        let meta = dir.join("meta");
        let mut m = std::fs::read(&meta).unwrap();
        match t % 3 {
            0 => m.truncate(rng.below(m.len() as u64) as usize),
            1 => m.fill(0),
            _ => {
                let i = rng.below(m.len() as u64) as usize;
                m[i] ^= 0x04;
            }
        }
        std::fs::write(&meta, &m).unwrap();
        // And the temporaries a cut mid-fill leaves: a partial block under
        // a dead writer's name, and a partial meta.
        std::fs::write(dir.join(format!("tmp.3.999999.{t}")), &truth[..1000]).unwrap();
        std::fs::write(
            dir.join(".meta.999999.tmp.0.999999.0"),
            b"blobcache-meta 1\nacc",
        )
        .unwrap();
        date_before_boot(&dir.join(".meta.999999.tmp.0.999999.0"));
        std::fs::remove_file(dir.join("b.3")).unwrap();
        for j in [0, 1, 2, 4, 5, 6, 7] {
            date_before_boot(&dir.join(format!("b.{j}")));
        }
        o.tried += 1;
        temps.tried += 1;
        let c = Cache::new(fx.config(BLOCK)).unwrap();
        match read_all(&c, &key) {
            Ok(v) if v == truth => o.correct += 1,
            Ok(_) => o.other("WRONG BYTES"),
            Err(e) => o.other(e.to_string()),
        }
        drop(c);
        // The meta is valid again, and the temporaries are gone (the scan
        // at start removed them).
        let now = std::fs::read(&meta).unwrap();
        if blobcache_core::store::Meta::decode(&now).is_err() {
            o.other("meta still torn after a read");
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp.") || n.starts_with(".meta."))
            .collect();
        if left.is_empty() {
            temps.correct += 1;
        } else {
            temps.other(format!("left: {left:?}"));
        }
    }
    let test = "power::torn_metadata_and_leftover_temporaries_are_discarded";
    report::record(
        "power loss",
        "torn meta file (cut, zeroed, flipped byte)",
        &o,
        test,
    );
    report::record(
        "power loss",
        "partial block and meta temporaries left by a cut",
        &temps,
        test,
    );
    report::assert_clean("torn meta", &o);
    report::assert_clean("temporaries", &temps);
}
