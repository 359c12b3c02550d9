//! The panic boundary. Every exported function runs its work inside
//! [`guard`], so a panic (a bug) becomes the function's failure value and
//! never unwinds into the C caller.

use std::panic::{catch_unwind, AssertUnwindSafe};

use blobcache_core::error::{panic_message, Error};

/// Runs `f`, turning a panic into an `Internal` error that says it is a bug.
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        Error::internal(format!(
            "internal error (a bug in blobcache, please report it): {}",
            panic_message(&*p)
        ))
    })
}

#[cfg(test)]
mod tests {
    use blobcache_core::ErrorKind;

    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let e = guard(|| -> () { panic!("kaboom") }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("kaboom"));
        assert_eq!(guard(|| 42).unwrap(), 42);
    }
}
