//! Fuzzes the arguments of `blob_read`, the streamer's read: names (any
//! bytes, NULL), offsets, lengths, destination buffers (NULL, every size),
//! with `shutdown` between two reads. Reads go to a directory origin holding
//! two blobs.
//!
//! What is fuzzed is `blobcache_core::provider::ReadRequest::read`, the
//! safe function the exported C `blob_read` calls after turning its
//! pointers into values: a NULL name is `None`, a name is the bytes before
//! its NUL (cut there, as C sees it), a NULL destination is
//! `Destination::Null`. The C function itself lives in the root package, a
//! `cdylib` that no Rust program can link (so that none inherits its
//! exported `shutdown`); what it adds (turning pointers into those values,
//! copying the message into `error_buf` truncated on a character boundary,
//! the panic boundary) is covered by its unit tests (`src/lib.rs`,
//! `src/ffi.rs`, `src/panic.rs`) and, through the built library, by
//! tests/ffi.rs. The input format is unchanged, error-buffer size included
//! (unused now), so the committed corpus replays as before.
//!
//! Checked on every call: a success only for a blob that exists, for a
//! range inside it, with exactly the blob's bytes; a failure has a message
//! that is one line (no control character), starts `blobcache: ` and names
//! the range. A read repeated after `shutdown` (flag bit 5) gives the same
//! result.
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
//! Readahead is off: it runs on the pool after a read returns, so whether
//! it got to a block before the shutdown would depend on scheduling and the
//! same input would take different paths. tests/reliability covers
//! readahead.
#![no_main]

use std::sync::OnceLock;

use blobcache_core::provider::{shutdown, Destination, ReadRequest};
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
    /// The size of the C function's error buffer: parsed so the corpus
    /// keeps its meaning, unused here (see the top of this file).
    _err_size: usize,
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
        _err_size: u16::from_le_bytes(head[17..19].try_into().unwrap()) as usize % 700,
        names,
    })
}

/// A name from fuzz bytes: cut at the first NUL, as C would see it.
fn c_name(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    b[..end].to_vec()
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
    let names: [Vec<u8>; 3] = if f & 0x40 != 0 {
        let which = inp.names[0].first().copied().unwrap_or(0) as usize % origin.blobs.len();
        let known = origin.blobs[which].0;
        [known.0, known.1, known.2].map(|s| s.as_bytes().to_vec())
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

/// One read with the input's arguments, checked; returns its result as the
/// C function would (`length` or -1).
fn read_and_check(origin: &Origin, inp: &Input<'_>, names: &[Vec<u8>; 3]) -> isize {
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
    // Bits 0-2: a NULL account, container or blob name.
    let name = |i: usize| (f & (1 << i) == 0).then_some(names[i].as_slice());
    let request = ReadRequest {
        account: name(0),
        container: name(1),
        blob: name(2),
        offset,
        length,
    };
    // As the C function makes it of its `buf` and `length` (a non-NULL
    // buffer here is never longer than 1 MiB).
    let dst = if null_buf {
        Destination::Null
    } else {
        Destination::Buffer(&mut buf[..length])
    };
    let r = request.read(dst);
    if !null_buf {
        assert!(
            buf[length..].iter().all(|b| *b == CANARY),
            "wrote past the buffer"
        );
    }
    match r {
        Ok(()) => {
            if length > 0 {
                assert!(!null_buf && f & 0x07 == 0, "success with a NULL argument");
                let key: Vec<&str> = names
                    .iter()
                    .map(|n| std::str::from_utf8(n).unwrap())
                    .collect();
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
            length as isize
        }
        Err(failure) => {
            let msg = failure.message();
            assert!(msg.starts_with("blobcache: "), "{msg:?}");
            assert!(!msg.chars().any(char::is_control), "not one line: {msg:?}");
            let range = format!(
                " bytes {offset}..{}]",
                offset as u128 + length as u128
            );
            assert!(msg.ends_with(&range), "does not name the range: {msg:?}");
            -1
        }
    }
}
