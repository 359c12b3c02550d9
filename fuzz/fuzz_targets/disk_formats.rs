//! Fuzzes every file format the cache reads back from disk: the `meta`
//! file, block files (bytes plus trailer), the lock files, and the names of
//! files in a blob's directory.
//!
//! Each input first goes to the parsers alone (`Meta::decode`,
//! `check_trailer`: no panic; a meta that decodes re-encodes to the same
//! value). Then it damages one file of a filled cache of a three-and-a-bit
//! block blob (replaced, truncated, bit-flipped, or a new file with a fuzzed
//! name), dates the blocks before the boot (as a power cut leaves them), and
//! reads the whole blob through the cache: the read must return exactly the
//! blob's bytes (damaged files are discarded, never trusted), and every block
//! left on disk afterwards must be intact.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use blobcache_core::config::{Config, MaxSize, OriginConfig};
use blobcache_core::store::probe::{check_trailer, open_block};
use blobcache_core::store::Meta;
use blobcache_core::{BlobKey, Cache};
use libfuzzer_sys::fuzz_target;

const BLOCK: u64 = 64 << 10;
const SIZE: usize = 3 * BLOCK as usize + 100;

struct Template {
    root: PathBuf,
    truth: Vec<u8>,
    /// The version directory, relative to the cache directory.
    version_rel: PathBuf,
    key: BlobKey,
}

fn config(root: &Path, cache: &Path) -> Config {
    Config {
        dir: Some(cache.to_path_buf()),
        max_size: MaxSize::Bytes(1 << 30),
        block_size: BLOCK,
        origin: OriginConfig::Directory(root.join("origin")),
        fetch_concurrency: 1,
        readahead_blocks: 0,
        ..Config::default()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn find_version(dir: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.join("meta").exists() {
            return Some(p);
        }
        if e.file_type().ok()?.is_dir() {
            if let Some(v) = find_version(&p) {
                return Some(v);
            }
        }
    }
    None
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("blobcache-fuzz-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut x = 7u64;
        let truth: Vec<u8> = (0..SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = root.join("origin/acct/models/m.bin");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &truth).unwrap();
        let key = BlobKey::new("acct", "models", "m.bin").unwrap();
        let cache_dir = root.join("template");
        let c = Cache::new(config(&root, &cache_dir)).unwrap();
        let mut buf = vec![0u8; SIZE];
        c.read(&key, 0, &mut buf).unwrap();
        assert_eq!(buf, truth);
        drop(c);
        let version = find_version(&cache_dir).expect("a version directory");
        let version_rel = version.strip_prefix(&cache_dir).unwrap().to_path_buf();
        Template {
            root,
            truth,
            version_rel,
            key,
        }
    })
}

fn set_old_mtime(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    // SAFETY: a valid path and two timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
}

fuzz_target!(|data: &[u8]| {
    // The parsers alone.
    if let Ok(m) = Meta::decode(data) {
        assert_eq!(Meta::decode(m.encode().as_bytes()).as_ref(), Ok(&m));
    }
    if data.len() >= 16 {
        let len = u64::from_le_bytes(data[..8].try_into().unwrap());
        let index = u64::from_le_bytes(data[8..16].try_into().unwrap());
        let _ = check_trailer(&data[16..], len, index);
    }
    let Some((&what, rest)) = data.split_first() else {
        return;
    };
    let Some((&how, rest)) = rest.split_first() else {
        return;
    };

    // A damaged copy of the filled cache.
    let t = template();
    let work = t.root.join(format!("work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    copy_tree(&t.root.join("template"), &work);
    let vdir = work.join(&t.version_rel);
    let target = match what % 8 {
        0 => vdir.join("meta"),
        i @ 1..=4 => vdir.join(format!("b.{}", i - 1)),
        5 => vdir.join("lock"),
        6 => work.join("v1/evict.lock"),
        _ => {
            // A file with a fuzzed name (evict.rs parses b.<i> and tmp.<i>.*).
            let name =
                String::from_utf8_lossy(&rest[..rest.len().min(40)]).replace(['/', '\0'], "_");
            if name.is_empty() || name == "." || name == ".." {
                return;
            }
            vdir.join(name)
        }
    };
    let old = std::fs::read(&target).unwrap_or_default();
    let new = match how % 4 {
        0 => rest.to_vec(),
        1 => {
            let cut = u16::from_le_bytes([
                rest.first().copied().unwrap_or(0),
                rest.get(1).copied().unwrap_or(0),
            ]);
            old[..old.len().min(cut as usize)].to_vec()
        }
        2 => {
            // Flip bytes: (u32 position, xor) pairs, positions modulo the
            // file (blocks: often in the trailer or just before it).
            let mut v = old.clone();
            for pair in rest.chunks_exact(5) {
                if v.is_empty() {
                    break;
                }
                let pos = u32::from_le_bytes(pair[..4].try_into().unwrap()) as usize % v.len();
                v[pos] ^= pair[4].max(1);
            }
            v
        }
        _ => {
            // Zero a run, as unwritten pages read back.
            let mut v = old.clone();
            if !v.is_empty() {
                let start = u16::from_le_bytes([
                    rest.first().copied().unwrap_or(0),
                    rest.get(1).copied().unwrap_or(0),
                ]) as usize
                    * 4
                    % v.len();
                let n = (rest.get(2).copied().unwrap_or(1) as usize * 64).min(v.len() - start);
                v[start..start + n].fill(0);
            }
            v
        }
    };
    let _ = std::fs::remove_file(&target);
    std::fs::write(&target, &new).unwrap();
    for i in 0..4 {
        set_old_mtime(&vdir.join(format!("b.{i}")));
    }

    let c = Cache::new(config(&t.root, &work)).unwrap();
    let mut buf = vec![0u8; SIZE];
    let r = c.read(&t.key, 0, &mut buf);
    drop(c);
    r.unwrap_or_else(|e| panic!("the read failed: {e}"));
    assert!(buf == t.truth, "wrong bytes served");
    // Whatever is on disk now is intact.
    for i in 0..4u64 {
        let len = (SIZE as u64 - i * BLOCK).min(BLOCK);
        if let Ok(Some(b)) = open_block(&vdir, i, len) {
            assert!(b.verify(), "block {i} left damaged");
            assert!(b.data() == &t.truth[(i * BLOCK) as usize..(i * BLOCK + len) as usize]);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
});
