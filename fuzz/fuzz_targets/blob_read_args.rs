//! Fuzzes `blob_read`'s arguments: names (any bytes, NULL), offsets,
//! lengths, destination and error buffers (NULL, every size), with
//! `shutdown` between two reads. Reads go to a directory origin holding two
//! blobs.
//!
//! Checked on every call: the result is `length` or -1 and nothing else; a
//! success returns exactly the blob's bytes (and only for a blob that
//! exists, for a range inside it); nothing is written past either buffer;
//! an error message is NUL-terminated inside `error_buf_size` bytes, valid
//! UTF-8 and not empty. A read repeated after `shutdown` (flag bit 5) gives
//! the same result.
//!
//! Every input stands alone: it starts with an empty cache directory and no
//! library instance, and ends with `shutdown`, so no library thread is
//! running and no state is carried into the next input. An input found in a
//! long run therefore does the same thing when replayed alone, and
//! libFuzzer's leak check after each input sees only what the input left
//! behind. (It used to leave the instance running: its fill workers and
//! janitor were alive at every leak check, and once kernel thread ids
//! wrapped round, LeakSanitizer could not find a new thread under its
//! recycled id and reported what only that thread's stack held as leaked,
//! a false positive; see docs/RELIABILITY.md.)
//!
//! Readahead is off: it runs on the pool after `blob_read` returns, so
//! whether it got to a block before the shutdown would depend on scheduling
//! and the same input would take different paths. tests/reliability
//! covers readahead.
#![no_main]

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use blobcache::ffi::{blob_read, shutdown};
use libfuzzer_sys::fuzz_target;

const CANARY: u8 = 0xA5;

struct Origin {
    blobs: Vec<((&'static str, &'static str, &'static str), Vec<u8>)>,
    cache: std::path::PathBuf,
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn origin() -> &'static Origin {
    static O: OnceLock<Origin> = OnceLock::new();
    O.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("blobcache-fuzz-args-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let blobs = vec![
            (
                ("acct", "models", "m.safetensors"),
                pseudo_random(1, 200_000),
            ),
            (
                ("acct", "models", "dir/ü x%+.bin"),
                pseudo_random(2, 70_001),
            ),
        ];
        for ((a, c, b), data) in &blobs {
            let p = root.join("origin").join(a).join(c).join(b);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
        // Read once per lifecycle, so before the first call.
        std::env::set_var(
            "BLOBCACHE_ORIGIN",
            format!("file://{}", root.join("origin").display()),
        );
        std::env::set_var("BLOBCACHE_DIR", root.join("cache"));
        std::env::set_var("BLOBCACHE_BLOCK_SIZE", "64K");
        std::env::set_var("BLOBCACHE_FETCH_CONCURRENCY", "2");
        std::env::set_var("BLOBCACHE_READAHEAD", "0");
        std::env::set_var("BLOBCACHE_LOG", "error");
        Origin {
            blobs,
            cache: root.join("cache"),
        }
    })
}

/// Splits the input into fixed fields and three names.
struct Input<'a> {
    flags: u8,
    offset: u64,
    length: u64,
    err_size: usize,
    names: [&'a [u8]; 3],
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    if data.len() < 19 {
        return None;
    }
    let (head, rest) = data.split_at(19);
    let mut parts = rest.splitn(3, |b| *b == 0xff);
    let names = [
        parts.next().unwrap_or(b""),
        parts.next().unwrap_or(b""),
        parts.next().unwrap_or(b""),
    ];
    Some(Input {
        flags: head[0],
        offset: u64::from_le_bytes(head[1..9].try_into().unwrap()),
        length: u64::from_le_bytes(head[9..17].try_into().unwrap()),
        err_size: u16::from_le_bytes(head[17..19].try_into().unwrap()) as usize % 700,
        names,
    })
}

/// A C string from fuzz bytes: cut at the first NUL, as C would see it.
fn c_name(b: &[u8]) -> CString {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    CString::new(&b[..end]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let origin = origin();
    let Some(mut inp) = parse(data) else { return };
    // No instance is running (the previous input ended with a shutdown):
    // start from an empty cache.
    let _ = std::fs::remove_dir_all(&origin.cache);
    let f = inp.flags;
    // Bit 6: use a known name triple (so reads of real blobs are common),
    // with the name bytes choosing which.
    let names: [CString; 3] = if f & 0x40 != 0 {
        let which = inp.names[0].first().copied().unwrap_or(0) as usize % origin.blobs.len();
        let known = origin.blobs[which].0;
        [known.0, known.1, known.2].map(|s| CString::new(s).unwrap())
    } else {
        inp.names.map(c_name)
    };
    // Bit 7: keep offset and length near the blobs' sizes.
    if f & 0x80 != 0 {
        inp.offset %= 300_000;
        inp.length %= 300_000;
    }
    let first = read_and_check(origin, &inp, &names);
    // Bit 5: shut down and read again (a new instance, the blocks the first
    // read stored already on disk): the same answer.
    if f & 0x20 != 0 {
        shutdown();
        let again = read_and_check(origin, &inp, &names);
        assert_eq!(
            first, again,
            "a read repeated after shutdown returned otherwise"
        );
    }
    // Leave nothing running into the next input (or the leak check).
    shutdown();
});

/// One `blob_read` with the input's arguments, checked; returns its result.
fn read_and_check(origin: &Origin, inp: &Input<'_>, names: &[CString; 3]) -> isize {
    let f = inp.flags;
    let null_buf = f & 0x08 != 0;
    // A real buffer must hold `length` bytes: keep those lengths modest.
    let length = if null_buf {
        inp.length as usize
    } else {
        (inp.length % (1 << 20)) as usize
    };
    let offset = inp.offset as usize;
    let mut buf = vec![CANARY; if null_buf { 0 } else { length + 64 }];
    let mut err = vec![CANARY as c_char; inp.err_size + 64];
    let ptr = |i: usize, s: &CString| {
        if f & (1 << i) != 0 {
            std::ptr::null()
        } else {
            s.as_ptr()
        }
    };
    let err_ptr = if f & 0x10 != 0 {
        std::ptr::null_mut()
    } else {
        err.as_mut_ptr()
    };
    let err_size = if err_ptr.is_null() { 0 } else { inp.err_size };
    // SAFETY: names are NUL-terminated or NULL; `buf` holds `length` bytes
    // unless NULL; `err` holds `err_size` bytes unless NULL.
    let r = unsafe {
        blob_read(
            ptr(0, &names[0]),
            ptr(1, &names[1]),
            ptr(2, &names[2]),
            if null_buf {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            offset,
            length,
            err_ptr,
            err_size,
        )
    };
    if !null_buf {
        assert!(
            buf[length..].iter().all(|b| *b == CANARY),
            "wrote past the buffer"
        );
    }
    assert!(
        err[err_size..].iter().all(|b| *b == CANARY as c_char),
        "wrote past the error buffer"
    );
    if r >= 0 {
        assert_eq!(r as usize, length, "a success returns length");
        if length > 0 {
            assert!(!null_buf && f & 0x07 == 0, "success with a NULL argument");
            let key: Vec<&str> = names.iter().map(|n| n.to_str().unwrap()).collect();
            let (_, truth) = origin
                .blobs
                .iter()
                .find(|((a, c, b), _)| [*a, *c, *b] == key[..])
                .expect("a success for a blob that does not exist");
            assert!(
                offset.checked_add(length).is_some_and(|e| e <= truth.len()),
                "a success past the end"
            );
            assert!(
                buf[..length] == truth[offset..offset + length],
                "wrong bytes"
            );
        }
    } else {
        assert_eq!(r, -1);
        if err_size > 0 {
            let bytes: Vec<u8> = err[..err_size].iter().map(|c| *c as u8).collect();
            let nul = bytes
                .iter()
                .position(|b| *b == 0)
                .expect("message not NUL-terminated");
            let msg = std::str::from_utf8(&bytes[..nul]).expect("message not UTF-8");
            assert!(err_size == 1 || !msg.is_empty(), "empty message");
        }
    }
    r
}
