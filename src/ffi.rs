//! Pointers in, messages out: turning the C arguments into the values
//! `blobcache_core::provider` takes, and copying messages into the caller's
//! buffers. Every function here has a contract a caller must keep, stated
//! under `# Safety`; the exported functions pass on theirs.

use std::ffi::{c_char, c_void, CStr};

use blobcache_core::provider::Destination;

/// A name argument: the bytes before its NUL, or `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub(crate) unsafe fn name<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated and valid for 'a, per the contract.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// A read's destination: the caller's `length` bytes at `buf`, unless `buf`
/// is NULL or no buffer can be `length` bytes long.
///
/// # Safety
/// `buf` must be NULL or point to `length` writable bytes that nothing else
/// reads or writes for `'a`.
pub(crate) unsafe fn destination<'a>(buf: *mut c_void, length: usize) -> Destination<'a> {
    if buf.is_null() {
        Destination::Null
    } else if length > isize::MAX as usize {
        // A slice cannot be this long (and no caller's buffer is).
        Destination::TooLong
    } else {
        // SAFETY: non-NULL, `length` <= isize::MAX writable bytes, not
        // aliased for 'a, per the contract; u8 has no alignment.
        Destination::Buffer(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), length) })
    }
}

/// Copies `msg` into the caller's buffer as a NUL-terminated string,
/// truncated at a UTF-8 character boundary to fit. Writes nothing when the
/// buffer is NULL or has size 0.
///
/// # Safety
/// `buf` must be NULL or point to `size` writable bytes.
pub(crate) unsafe fn write_message(buf: *mut c_char, size: usize, msg: &str) {
    if buf.is_null() || size == 0 {
        return;
    }
    let mut n = msg.len().min(size - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the caller guarantees `size` writable bytes at `buf`; we write
    // n + 1 <= size bytes, from a source that does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_truncated_on_character_boundaries_and_terminated() {
        let msg = "ab€cd"; // € is 3 bytes
        for size in 1..10 {
            let mut buf = vec![0x55 as c_char; size + 4];
            // SAFETY: `buf` holds more than `size` bytes.
            unsafe { write_message(buf.as_mut_ptr(), size, msg) };
            // SAFETY: NUL-terminated within `size` bytes by write_message.
            let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
            assert!(s.len() < size);
            assert!(msg.starts_with(s));
            assert!(buf[size..].iter().all(|&b| b == 0x55), "wrote past {size}");
        }
    }

    #[test]
    fn a_null_pointer_is_none_or_null_and_an_impossible_length_too_long() {
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { name(std::ptr::null()) }, None);
        // SAFETY: a NUL-terminated literal.
        assert_eq!(unsafe { name(c"a b".as_ptr()) }, Some(&b"a b"[..]));
        // SAFETY: NULL is allowed.
        let d = unsafe { destination(std::ptr::null_mut(), 4) };
        assert!(matches!(d, Destination::Null));
        let mut x = [0u8; 4];
        // SAFETY: never made into a slice: the length is refused first.
        let d = unsafe { destination(x.as_mut_ptr().cast(), usize::MAX) };
        assert!(matches!(d, Destination::TooLong));
        // SAFETY: `x` holds 4 writable bytes.
        let d = unsafe { destination(x.as_mut_ptr().cast(), 4) };
        assert!(matches!(d, Destination::Buffer(b) if b.len() == 4));
    }
}
