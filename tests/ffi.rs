//! The exported C functions of the built libblobcache.so, loaded as the
//! streamer loads it (`dlopen`, `dlsym`) and called as a C caller would, with
//! configuration from the environment: error buffers, bad input, lifecycle,
//! fork.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

use blobcache_testing::cdylib::lib;
use blobcache_testing::fixture::{bytes, Fixture, ACCOUNT, CONTAINER};
use blobcache_testing::isolate::in_own_process;

/// The library's `blob_read`.
///
/// # Safety
/// As for `blob_read` (include/blobcache.h).
#[allow(clippy::too_many_arguments)]
unsafe fn blob_read(
    account: *const c_char,
    container: *const c_char,
    blob: *const c_char,
    buf: *mut c_void,
    offset: usize,
    length: usize,
    error_buf: *mut c_char,
    error_buf_size: usize,
) -> isize {
    // SAFETY: the caller keeps blob_read's contract.
    unsafe {
        (lib().blob_read)(
            account,
            container,
            blob,
            buf,
            offset,
            length,
            error_buf,
            error_buf_size,
        )
    }
}

/// The library's `shutdown`.
fn shutdown() {
    lib().shutdown();
}

/// The library's `cache_abi_version`, `runai_cache_abi_version` or
/// `blobcache_abi_version`.
fn abi_version(name: &str) -> u32 {
    let l = lib();
    let f = match name {
        "cache_abi_version" => Some(l.cache_abi_version),
        "runai_cache_abi_version" => l.runai_cache_abi_version,
        "blobcache_abi_version" => l.prefixed.map(|p| p.abi_version),
        other => panic!("{other} is not an ABI version function"),
    }
    .unwrap_or_else(|| panic!("{name} is not exported"));
    // SAFETY: `uint32_t (void)` (include/blobcache.h): no arguments.
    unsafe { f() }
}

struct Call {
    ret: isize,
    message: String,
}

fn call(
    account: &[u8],
    container: &[u8],
    blob: &[u8],
    buf: &mut [u8],
    offset: usize,
    err_size: usize,
) -> Call {
    let a = CString::new(account).unwrap();
    let c = CString::new(container).unwrap();
    let b = CString::new(blob).unwrap();
    let mut err = vec![0x7f as c_char; 600];
    // SAFETY: the names are NUL-terminated CStrings or NULL (which
    // blob_read accepts); `buf` and `err` live, of the lengths passed.
    let ret = unsafe {
        blob_read(
            a.as_ptr(),
            c.as_ptr(),
            b.as_ptr(),
            buf.as_mut_ptr().cast(),
            offset,
            buf.len(),
            err.as_mut_ptr(),
            err_size,
        )
    };
    let message = if err_size > 0 && ret < 0 {
        // SAFETY: blob_read wrote a NUL-terminated message into `err`,
        // which is still alive.
        unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    Call { ret, message }
}

fn read_ok(blob: &str, offset: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let r = call(
        ACCOUNT.as_bytes(),
        CONTAINER.as_bytes(),
        blob.as_bytes(),
        &mut buf,
        offset,
        512,
    );
    assert_eq!(
        r.ret, len as isize,
        "read {blob} {offset}+{len} failed: {}",
        r.message
    );
    buf
}

fn read_err(account: &[u8], container: &[u8], blob: &[u8], offset: usize, len: usize) -> String {
    let mut buf = vec![0u8; len];
    let r = call(account, container, blob, &mut buf, offset, 512);
    assert_eq!(
        r.ret,
        -1,
        "expected a failure for {:?}",
        String::from_utf8_lossy(blob)
    );
    assert!(!r.message.is_empty());
    r.message
}

#[test]
fn both_abi_version_functions_return_1() {
    assert_eq!(abi_version("cache_abi_version"), 1);
    assert_eq!(abi_version("runai_cache_abi_version"), 1);
    assert_eq!(abi_version("blobcache_abi_version"), 1);
}

#[test]
fn the_prefixed_functions_read_and_shut_down_as_the_streamers_names_do() {
    let fx = Fixture::new("ffi-prefixed");
    let data = bytes(10, 100_000);
    fx.put("m", &data);
    in_own_process(
        "the_prefixed_functions_read_and_shut_down_as_the_streamers_names_do",
        &fx.env("64K"),
        || {
            let p = lib().prefixed.expect(
                "blobcache_read, blobcache_shutdown and blobcache_abi_version are exported",
            );
            let (read, shut) = (p.read, p.shutdown);
            let (a, c, b) = (
                CString::new(ACCOUNT).unwrap(),
                CString::new(CONTAINER).unwrap(),
                CString::new("m").unwrap(),
            );
            let mut buf = vec![0u8; 70_000];
            let mut err = [0 as c_char; 512];
            for _ in 0..2 {
                // SAFETY: valid strings, a buffer of 70,000 bytes, a
                // 512-byte error buffer.
                let r = unsafe {
                    read(
                        a.as_ptr(),
                        c.as_ptr(),
                        b.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        1000,
                        buf.len(),
                        err.as_mut_ptr(),
                        err.len(),
                    )
                };
                assert_eq!(r, 70_000);
                assert!(buf == data[1000..71_000]);
                // The next read starts the cache again.
                // SAFETY: no arguments; callable at any time.
                unsafe { shut() };
            }
            assert_eq!(read_ok("m", 0, 10), &data[..10]);
        },
    );
}

/// The value of `#define name` in include/blobcache.h, as a C caller
/// compiled against the header sees it.
fn header_define(name: &str) -> isize {
    let header = include_str!("../include/blobcache.h");
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("include/blobcache.h defines no {name}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn blobcache_read_returns_the_header_code_of_each_failure_and_blob_read_minus_1() {
    let fx = Fixture::new("ffi-codes");
    fx.put("m", &bytes(11, 1000));
    in_own_process(
        "blobcache_read_returns_the_header_code_of_each_failure_and_blob_read_minus_1",
        &fx.env("64K"),
        || {
            let h = lib().handle;
            let f = h
                .symbol("blobcache_read")
                .expect("blobcache_read is exported");
            // SAFETY: the type of include/blobcache.h.
            let read = unsafe {
                std::mem::transmute::<*mut c_void, blobcache_testing::cdylib::BlobRead>(f.as_ptr())
            };
            let acct = CString::new(ACCOUNT).unwrap();
            let cont = CString::new(CONTAINER).unwrap();
            for (blob, offset, code) in [
                ("m", 900, "BLOBCACHE_ERR_OUT_OF_RANGE"),
                ("absent", 0, "BLOBCACHE_ERR_NOT_FOUND"),
            ] {
                let b = CString::new(blob).unwrap();
                let mut buf = vec![0u8; 200];
                let mut err = [0 as c_char; 512];
                // SAFETY: valid strings, a 200-byte buffer, a 512-byte
                // error buffer.
                let r = unsafe {
                    read(
                        acct.as_ptr(),
                        cont.as_ptr(),
                        b.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        offset,
                        buf.len(),
                        err.as_mut_ptr(),
                        err.len(),
                    )
                };
                assert_eq!(r, header_define(code), "{blob}: {code}");
                // SAFETY: NUL-terminated by the failed call.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
                assert!(msg.starts_with("blobcache: "), "{msg}");
                // The streamer's name keeps its contract: -1, same message.
                let mut same = vec![0u8; 200];
                let c = call(
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    blob.as_bytes(),
                    &mut same,
                    offset,
                    512,
                );
                assert_eq!((c.ret, c.message.as_str()), (-1, msg.as_ref()));
            }
            // SAFETY: a NULL name is allowed; no error buffer.
            let r = unsafe {
                read(
                    std::ptr::null(),
                    cont.as_ptr(),
                    cont.as_ptr(),
                    std::ptr::null_mut(),
                    0,
                    4,
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!(r, header_define("BLOBCACHE_ERR_INVALID_ARGUMENT"));
        },
    );
}

#[test]
fn reads_return_the_blob_bytes_through_the_c_function() {
    let fx = Fixture::new("ffi-read");
    let data = bytes(1, 300_000);
    fx.put("dir/model one.safetensors", &data);
    in_own_process(
        "reads_return_the_blob_bytes_through_the_c_function",
        &fx.env("64K"),
        || {
            assert_eq!(read_ok("dir/model one.safetensors", 0, 8), &data[..8]);
            assert_eq!(
                read_ok("dir/model one.safetensors", 65530, 100_000),
                &data[65530..165_530]
            );
            let mut empty = [];
            let r = call(
                ACCOUNT.as_bytes(),
                CONTAINER.as_bytes(),
                b"dir/model one.safetensors",
                &mut empty,
                5,
                512,
            );
            assert_eq!(r.ret, 0);
        },
    );
}

#[test]
fn error_messages_fit_every_buffer_size_and_never_overrun_it() {
    let fx = Fixture::new("ffi-errbuf");
    fx.put("m", &bytes(2, 1000));
    in_own_process(
        "error_messages_fit_every_buffer_size_and_never_overrun_it",
        &fx.env("64K"),
        || {
            let a = CString::new(ACCOUNT).unwrap();
            let c = CString::new(CONTAINER).unwrap();
            let b = CString::new("m").unwrap();
            let mut buf = vec![0u8; 100];
            // NULL with size 0.
            // SAFETY: the names are NUL-terminated CStrings or NULL (which
            // blob_read accepts); `buf` and `err` live, of the lengths passed.
            let ret = unsafe {
                blob_read(
                    a.as_ptr(),
                    c.as_ptr(),
                    b.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    950,
                    100,
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!(ret, -1);
            let mut full = String::new();
            for size in [1usize, 2, 7, 512] {
                let mut err = vec![0x55 as c_char; size + 16];
                // SAFETY: the names are NUL-terminated CStrings or NULL (which
                // blob_read accepts); `buf` and `err` live, of the lengths passed.
                let ret = unsafe {
                    blob_read(
                        a.as_ptr(),
                        c.as_ptr(),
                        b.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        950,
                        100,
                        err.as_mut_ptr(),
                        size,
                    )
                };
                assert_eq!(ret, -1);
                assert!(
                    err[size..].iter().all(|&x| x == 0x55),
                    "wrote past {size} bytes"
                );
                let nul = err[..size]
                    .iter()
                    .position(|&x| x == 0)
                    .expect("NUL-terminated");
                // SAFETY: blob_read wrote a NUL-terminated message into `err`,
                // which is still alive.
                let s = unsafe { CStr::from_ptr(err.as_ptr()) }
                    .to_str()
                    .expect("valid UTF-8");
                assert_eq!(s.len(), nul);
                if size == 512 {
                    full = s.to_string();
                }
            }
            assert!(full.contains("acct/models/m"), "names the blob: {full}");
            assert!(full.contains("950..1050"), "names the range: {full}");
            assert!(full.contains("1000 bytes"), "says why: {full}");
        },
    );
}

#[test]
fn truncation_keeps_multibyte_characters_whole() {
    let fx = Fixture::new("ffi-utf8");
    in_own_process(
        "truncation_keeps_multibyte_characters_whole",
        &fx.env("64K"),
        || {
            let blob = "ééééééééé";
            for size in 1..80 {
                let a = CString::new(ACCOUNT).unwrap();
                let c = CString::new(CONTAINER).unwrap();
                let b = CString::new(blob).unwrap();
                let mut err = vec![0x55 as c_char; size + 4];
                let mut buf = [0u8; 4];
                // SAFETY: the names are NUL-terminated CStrings or NULL (which
                // blob_read accepts); `buf` and `err` live, of the lengths passed.
                let ret = unsafe {
                    blob_read(
                        a.as_ptr(),
                        c.as_ptr(),
                        b.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        0,
                        4,
                        err.as_mut_ptr(),
                        size,
                    )
                };
                assert_eq!(ret, -1);
                assert!(
                    // SAFETY: blob_read wrote a NUL-terminated message into `err`,
                    // which is still alive.
                    unsafe { CStr::from_ptr(err.as_ptr()) }.to_str().is_ok(),
                    "size {size} split a character"
                );
                assert!(err[size..].iter().all(|&x| x == 0x55));
            }
        },
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_message_and_touch_nothing() {
    let fx = Fixture::new("ffi-bad");
    fx.put("m", &bytes(3, 1000));
    // A file next to the cache that a path escape would reach.
    in_own_process(
        "bad_arguments_fail_with_a_clear_message_and_touch_nothing",
        &fx.env("64K"),
        || {
            type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a str);
            let cases: Vec<Case> = vec![
                (
                    b"",
                    CONTAINER.as_bytes(),
                    b"m",
                    "AZURE_STORAGE_ACCOUNT_NAME is not set",
                ),
                (ACCOUNT.as_bytes(), b"", b"m", "container name is empty"),
                (
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    b"",
                    "blob name is empty",
                ),
                (b"..", CONTAINER.as_bytes(), b"m", "'.' or '..'"),
                (ACCOUNT.as_bytes(), b"..", b"m", "'.' or '..'"),
                (
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    b"../../etc/passwd",
                    "'..' path segment",
                ),
                // A legal Azure name, but not a path under the origin.
                (
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    b"/etc/passwd",
                    "not a file path",
                ),
                (
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    b"a\\..\\b",
                    "backslash",
                ),
                (
                    ACCOUNT.as_bytes(),
                    CONTAINER.as_bytes(),
                    b"\xff\xfe",
                    "not valid UTF-8",
                ),
                (ACCOUNT.as_bytes(), b"a/b", b"m", "contains '/'"),
            ];
            for (a, c, b, want) in cases {
                let m = read_err(a, c, b, 0, 4);
                assert!(m.contains(want), "{:?}: {m}", String::from_utf8_lossy(b));
            }
            let m = read_err(
                ACCOUNT.as_bytes(),
                CONTAINER.as_bytes(),
                b"m",
                usize::MAX - 1,
                16,
            );
            assert!(m.contains("overflow"), "{m}");
            let m = read_err(ACCOUNT.as_bytes(), CONTAINER.as_bytes(), b"m", 999, 2);
            assert!(m.contains("past the end"), "{m}");

            // NULL pointers.
            let c = CString::new(CONTAINER).unwrap();
            let b = CString::new("m").unwrap();
            let mut err = vec![0 as c_char; 512];
            let mut buf = [0u8; 4];
            // SAFETY: the names are NUL-terminated CStrings or NULL (which
            // blob_read accepts); `buf` and `err` live, of the lengths passed.
            let ret = unsafe {
                blob_read(
                    std::ptr::null(),
                    c.as_ptr(),
                    b.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    0,
                    4,
                    err.as_mut_ptr(),
                    512,
                )
            };
            assert_eq!(ret, -1);
            // SAFETY: blob_read wrote a NUL-terminated message into `err`,
            // which is still alive.
            assert!(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .contains("account name is NULL"));
            let a = CString::new(ACCOUNT).unwrap();
            // SAFETY: the names are NUL-terminated CStrings or NULL (which
            // blob_read accepts); `buf` and `err` live, of the lengths passed.
            let ret = unsafe {
                blob_read(
                    a.as_ptr(),
                    c.as_ptr(),
                    b.as_ptr(),
                    std::ptr::null_mut(),
                    0,
                    4,
                    err.as_mut_ptr(),
                    512,
                )
            };
            assert_eq!(ret, -1);
            // SAFETY: blob_read wrote a NUL-terminated message into `err`,
            // which is still alive.
            assert!(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .contains("buffer is NULL"));
        },
    );
    // Nothing but the cache's own layout was created.
    for p in fx.cache_files() {
        assert!(
            p.starts_with(fx.cache.path().join("v1")),
            "unexpected {}",
            p.display()
        );
    }
}

#[test]
fn an_invalid_setting_fails_reads_naming_the_variable() {
    let fx = Fixture::new("ffi-config");
    fx.put("m", &bytes(4, 10));
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_MAX_SIZE".into(), "a lot".into()));
    in_own_process(
        "an_invalid_setting_fails_reads_naming_the_variable",
        &env,
        || {
            let m = read_err(ACCOUNT.as_bytes(), CONTAINER.as_bytes(), b"m", 0, 4);
            assert!(
                m.contains("BLOBCACHE_MAX_SIZE=a lot") && m.contains("use"),
                "{m}"
            );
            // Fixing the variable and starting over works: settings are read
            // once per lifecycle.
            std::env::set_var("BLOBCACHE_MAX_SIZE", "1G");
            shutdown();
            assert_eq!(read_ok("m", 0, 10), bytes(4, 10));
        },
    );
}

#[test]
fn shutdown_is_idempotent_and_the_next_read_starts_the_cache_again() {
    let fx = Fixture::new("ffi-cycle");
    let data = bytes(5, 500_000);
    fx.put("m", &data);
    in_own_process(
        "shutdown_is_idempotent_and_the_next_read_starts_the_cache_again",
        &fx.env("64K"),
        || {
            shutdown(); // before any read
            for i in 0..20 {
                let off = i * 20_000;
                assert_eq!(read_ok("m", off, 10_000), &data[off..off + 10_000]);
                shutdown();
                shutdown();
            }
        },
    );
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn shutdown_joins_the_library_threads() {
    let fx = Fixture::new("ffi-threads");
    fx.put("m", &bytes(6, 200_000));
    in_own_process("shutdown_joins_the_library_threads", &fx.env("64K"), || {
        let before = thread_count();
        read_ok("m", 0, 200_000);
        assert!(thread_count() > before, "the cache runs worker threads");
        let t0 = std::time::Instant::now();
        shutdown();
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "shutdown took {:?}",
            t0.elapsed()
        );
        assert_eq!(thread_count(), before);
    });
}

#[test]
fn shutdown_racing_reads_on_other_threads_never_breaks_a_read() {
    let fx = Fixture::new("ffi-race");
    let data = Arc::new(bytes(7, 2 << 20));
    fx.put("m", &data);
    in_own_process(
        "shutdown_racing_reads_on_other_threads_never_breaks_a_read",
        &fx.env("64K"),
        || {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let readers: Vec<_> = (0..6u64)
                .map(|t| {
                    let (data, stop) = (data.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let (mut ok, mut failed) = (0, 0);
                        let mut i = t as usize;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            i = i
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let off = (i >> 33) % (data.len() - 70_000);
                            let mut buf = vec![0u8; 70_000];
                            let r = call(
                                ACCOUNT.as_bytes(),
                                CONTAINER.as_bytes(),
                                b"m",
                                &mut buf,
                                off,
                                512,
                            );
                            if r.ret == 70_000 {
                                assert!(buf == data[off..off + 70_000], "wrong bytes at {off}");
                                ok += 1;
                            } else {
                                assert_eq!(r.ret, -1);
                                assert!(r.message.contains("shut down"), "{}", r.message);
                                failed += 1;
                            }
                        }
                        (ok, failed)
                    })
                })
                .collect();
            for _ in 0..100 {
                std::thread::sleep(std::time::Duration::from_millis(2));
                shutdown();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (ok, failed) = readers
                .into_iter()
                .map(|r| r.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            assert!(ok > 0, "no read succeeded ({failed} failed)");
            eprintln!("{ok} reads succeeded, {failed} failed cleanly during 100 shutdowns");
        },
    );
}

#[test]
fn a_forked_child_reads_at_once() {
    let fx = Fixture::new("ffi-fork");
    let data = bytes(8, 1 << 20);
    fx.put("m", &data);
    in_own_process("a_forked_child_reads_at_once", &fx.env("64K"), || {
        assert_eq!(read_ok("m", 0, 4096), &data[..4096]);
        // SAFETY: the child only calls blob_read (the subject of the test)
        // and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut buf = vec![0u8; 300_000];
            let r = call(
                ACCOUNT.as_bytes(),
                CONTAINER.as_bytes(),
                b"m",
                &mut buf,
                500_000,
                512,
            );
            let good = r.ret == 300_000 && buf == data[500_000..800_000];
            // SAFETY: ends this forked child at once, as a child of a threaded process must.
            unsafe { libc::_exit(if good { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: system calls on our own child, with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status}"
        );
        assert_eq!(read_ok("m", 0, 4096), &data[..4096]);
    });
}

/// One call of the built shared library's `blob_read`, with the streamer's
/// 512-byte error buffer: the return value and the message.
fn call_cdylib(account: &str, container: &str, blob: &str, len: usize) -> (isize, Vec<u8>) {
    let lib = lib();
    let (a, c, b) = (
        CString::new(account).unwrap(),
        CString::new(container).unwrap(),
        CString::new(blob).unwrap(),
    );
    let mut buf = vec![0u8; len];
    let mut err = [0x55 as c_char; 512];
    // SAFETY: valid C strings, a buffer of `len` bytes, a 512-byte error
    // buffer.
    let ret = unsafe {
        (lib.blob_read)(
            a.as_ptr(),
            c.as_ptr(),
            b.as_ptr(),
            buf.as_mut_ptr().cast(),
            0,
            len,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if ret >= 0 {
        return (ret, vec![]);
    }
    let nul = err.iter().position(|&x| x == 0).expect("NUL-terminated");
    (ret, err[..nul].iter().map(|&x| x as u8).collect())
}

#[test]
fn control_characters_in_names_come_back_escaped_in_a_one_line_message() {
    let fx = Fixture::new("ffi-controls");
    let data = bytes(9, 1000);
    fx.put("m", &data);
    in_own_process(
        "control_characters_in_names_come_back_escaped_in_a_one_line_message",
        &fx.env("64K"),
        || {
            // Each name position, each character, through the real library.
            let cases: [(&str, &str); 7] = [
                ("\n", "\\n"),
                ("\t", "\\t"),
                ("\r", "\\r"),
                ("\u{1b}", "\\u{1b}"),
                ("\u{7f}", "\\u{7f}"),
                ("\u{85}", "\\u{85}"),
                ("\u{2028}", "\\u{2028}"),
            ];
            for (c, escaped) in cases {
                let bad = format!("m{c}blobcache: forged line{c}");
                for (a, cont, b) in [
                    (bad.as_str(), CONTAINER, "m"),
                    (ACCOUNT, bad.as_str(), "m"),
                    (ACCOUNT, CONTAINER, bad.as_str()),
                ] {
                    let (ret, msg) = call_cdylib(a, cont, b, 100);
                    assert_eq!(ret, -1, "{a:?}/{cont:?}/{b:?} was read");
                    let msg = String::from_utf8(msg).expect("UTF-8 message");
                    assert!(
                        !msg.chars()
                            .any(|ch| ch.is_control() || ch == '\u{2028}' || ch == '\u{2029}'),
                        "not one clean line: {msg:?}"
                    );
                    assert!(msg.starts_with("blobcache: "), "{msg:?}");
                    // Control characters are refused; U+2028 is a legal
                    // (if odd) name, and no such file exists.
                    let why = if c.chars().all(char::is_control) {
                        "control character"
                    } else {
                        "no such blob"
                    };
                    assert!(msg.contains(why), "says why: {msg:?}");
                    assert!(
                        msg.contains(&format!("m{escaped}blobcache: forged line{escaped}")),
                        "names the blob, escaped: {msg:?}"
                    );
                }
            }
            // The library still reads good names.
            let (ret, msg) = call_cdylib(ACCOUNT, CONTAINER, "m", 1000);
            assert_eq!(ret, 1000, "{}", String::from_utf8_lossy(&msg));
        },
    );
}

/// Runs test `name` of this binary in a child process of its own, with
/// `env` and `BC_STDERR_CHILD=1` set, and returns what the child wrote on
/// stderr; panics if the child's test failed.
fn stderr_of_child_test(name: &str, env: &[(String, String)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env_remove("BLOBCACHE_LOG")
        .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
        .env("BC_STDERR_CHILD", "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}{stderr}"
    );
    stderr
}

/// The lines of `stderr` that the library printed at error level and that
/// contain `what`.
fn error_lines<'a>(stderr: &'a str, what: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("blobcache: error: ") && l.contains(what))
        .collect()
}

#[test]
fn a_misconfiguration_is_printed_on_stderr_once_per_process_whatever_fails_on_it() {
    const NAME: &str =
        "a_misconfiguration_is_printed_on_stderr_once_per_process_whatever_fails_on_it";
    let data = bytes(12, 1000);
    if std::env::var_os("BC_STDERR_CHILD").is_some() {
        // Many reads, on many threads, over three lifecycles (the streamer
        // calls shutdown after each session and reads again).
        for _ in 0..3 {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..10 {
                            let m = read_err(ACCOUNT.as_bytes(), CONTAINER.as_bytes(), b"m", 0, 8);
                            assert!(m.contains("BLOBCACHE_MAX_SIZE=lots is not valid"), "{m}");
                        }
                    });
                }
            });
            shutdown();
        }
        // A child forked after the line was printed shares it: no repeat.
        // SAFETY: the child only calls blob_read and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut buf = [0u8; 8];
            let r = call(
                ACCOUNT.as_bytes(),
                CONTAINER.as_bytes(),
                b"m",
                &mut buf,
                0,
                512,
            );
            // SAFETY: ends this forked child at once.
            unsafe { libc::_exit(if r.ret == -1 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child, a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // The streamer passes an empty account when AZURE_STORAGE_ACCOUNT_NAME is unset.
        for _ in 0..20 {
            let m = read_err(b"", CONTAINER.as_bytes(), b"m", 0, 8);
            assert!(m.contains("AZURE_STORAGE_ACCOUNT_NAME is not set"), "{m}");
        }
        // Another bad value (the environment changed, the next lifecycle
        // reads it): news, printed once too.
        std::env::set_var("BLOBCACHE_MAX_SIZE", "heaps");
        shutdown();
        for _ in 0..5 {
            read_err(ACCOUNT.as_bytes(), CONTAINER.as_bytes(), b"m", 0, 8);
        }
        // Fixed: reads work, and nothing more is printed.
        std::env::set_var("BLOBCACHE_MAX_SIZE", "1G");
        std::env::remove_var("BLOBCACHE_AZURE_AUTH");
        shutdown();
        assert_eq!(read_ok("m", 0, 1000), data);
        return;
    }
    let fx = Fixture::new("ffi-loud");
    fx.put("m", &data);
    let key = "U3VwZXJTZWNyZXRBY2NvdW50S2V5VmFsdWU=";
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_MAX_SIZE".into(), "lots".into()));
    // A key pasted into the wrong variable is still a secret.
    env.push(("AZURE_STORAGE_ACCOUNT_KEY".into(), key.into()));
    env.push(("BLOBCACHE_AZURE_AUTH".into(), key.into()));
    let stderr = stderr_of_child_test(NAME, &env);
    let lots = error_lines(
        &stderr,
        "BLOBCACHE_MAX_SIZE=lots is not valid; use a size such as",
    );
    assert_eq!(lots.len(), 1, "{stderr}");
    assert!(
        lots[0].ends_with("(every read through blobcache fails until this is fixed; the Run:ai streamer shows such a failure as \"File access error\")"),
        "{}",
        lots[0]
    );
    let auth = error_lines(
        &stderr,
        "BLOBCACHE_AZURE_AUTH=<redacted> is not valid; use auto",
    );
    assert_eq!(auth.len(), 1, "{stderr}");
    let account = error_lines(&stderr, "AZURE_STORAGE_ACCOUNT_NAME is not set: ");
    assert_eq!(account.len(), 1, "{stderr}");
    assert_eq!(
        error_lines(&stderr, "BLOBCACHE_MAX_SIZE=heaps").len(),
        1,
        "{stderr}"
    );
    assert_eq!(error_lines(&stderr, "").len(), 4, "{stderr}");
    assert!(!stderr.contains(key), "the key was printed:\n{stderr}");
}

#[test]
fn blobcache_check_config_counts_and_names_every_problem_without_starting_anything() {
    let fx = Fixture::new("ffi-check");
    let key = "Q2hlY2tDb25maWdTZWNyZXRLZXlWYWx1ZQ==";
    let mut env = fx.env("64K");
    env.push(("BLOBCACHE_ORIGIN".into(), "azure".into()));
    env.push(("BLOBCACHE_MAX_SIZE".into(), "lots".into()));
    env.push(("BLOBCACHE_FETCH_TIMEOUT".into(), key.into()));
    env.push(("AZURE_STORAGE_ACCOUNT_KEY".into(), key.into()));
    in_own_process(
        "blobcache_check_config_counts_and_names_every_problem_without_starting_anything",
        &env,
        || {
            std::env::remove_var("AZURE_STORAGE_ACCOUNT_NAME");
            let f = lib()
                .handle
                .symbol("blobcache_check_config")
                .expect("blobcache_check_config is exported");
            // SAFETY: `ssize_t (char *, size_t)`, include/blobcache.h.
            let check = unsafe {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_char, usize) -> isize>(
                    f.as_ptr(),
                )
            };
            let run = |size: usize| {
                let mut buf = vec![0x55 as c_char; size + 8];
                // SAFETY: `buf` holds more than `size` bytes.
                let n = unsafe { check(buf.as_mut_ptr(), size) };
                assert!(buf[size..].iter().all(|&b| b == 0x55), "wrote past {size}");
                let text = if size == 0 {
                    String::new()
                } else {
                    // SAFETY: NUL-terminated within `size` bytes by the call.
                    unsafe { CStr::from_ptr(buf.as_ptr()) }
                        .to_str()
                        .unwrap()
                        .to_owned()
                };
                (n, text)
            };
            let (n, text) = run(4096);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(n, 3, "{text}");
            assert!(
                lines[0].starts_with("BLOBCACHE_MAX_SIZE=lots is not valid; use "),
                "{text}"
            );
            assert!(
                lines[1].starts_with("BLOBCACHE_FETCH_TIMEOUT=<redacted> is not valid; use "),
                "{text}"
            );
            assert!(
                lines[2].starts_with("AZURE_STORAGE_ACCOUNT_NAME is not set: "),
                "{text}"
            );
            assert!(!text.contains(key), "{text}");
            for size in [0, 1, 10, 100] {
                assert_eq!(run(size).0, 3);
            }
            // SAFETY: NULL with size 0 is allowed.
            assert_eq!(unsafe { check(std::ptr::null_mut(), 0) }, 3);
            // Fixed: nothing to report.
            std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT);
            std::env::set_var("BLOBCACHE_MAX_SIZE", "1G");
            std::env::set_var("BLOBCACHE_FETCH_TIMEOUT", "5s");
            assert_eq!(run(64), (0, String::new()));
            // Nothing was started: no cache directory made.
            assert!(fx.cache_files().is_empty());
        },
    );
}
