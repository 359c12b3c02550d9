//! Blob identities: validation of the names a caller passes, and the key the
//! cache files them under.
//!
//! Names reach the cache directory only through a SHA-256 of the key, so no
//! name can address a path there. They do address paths at a directory
//! origin, and URLs at Azure, so a few things are refused for every origin
//! alike (one rule, one message): anything that could climb out of a
//! directory (a `.` or `..` segment, a backslash, an account or container
//! that is not one segment) and control characters.
//!
//! `.` and `..` segments are legal at Azure (Azurite stores `a/../b` as it is
//! when a client sends it unnormalized), but no URL can carry them: HTTP
//! clients, ours included (the `url` crate, after the WHATWG URL standard),
//! remove dot segments, and their percent-encoded spellings, before the
//! request leaves, so `a/../b` would read blob `b`. Azure's naming rules ask
//! for no path segment ending in a dot. Refusing them is the only way never
//! to serve another blob's bytes.
//!
//! Empty segments are legal blob names (`x/`, `a//b`, `/`, `/x`): Azure and
//! Azurite store them as they are, and the Azure origin's URLs keep every
//! `/` (see `origin::azure::endpoint`). They cannot be file paths, so the
//! directory origin answers them as not found, saying why.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Azure's limits: account names are at most 24 characters, containers 63,
/// blob names 1024. Accounts are validated loosely (the streamer passes any
/// value of `AZURE_STORAGE_ACCOUNT_NAME`), only for safety.
pub(crate) const MAX_ACCOUNT_LEN: usize = 255;
pub(crate) const MAX_CONTAINER_LEN: usize = 255;
pub(crate) const MAX_BLOB_CHARS: usize = 1024;

/// Which blob: account, container and blob name, as given by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey {
    pub account: String,
    pub container: String,
    pub blob: String,
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.container, self.blob)
    }
}

impl BlobKey {
    /// Validates the three names and builds a key.
    pub fn new(account: &str, container: &str, blob: &str) -> Result<BlobKey> {
        check_segment("account", account, MAX_ACCOUNT_LEN)?;
        check_segment("container", container, MAX_CONTAINER_LEN)?;
        check_blob(blob)?;
        Ok(BlobKey {
            account: account.to_string(),
            container: container.to_string(),
            blob: blob.to_string(),
        })
    }

    /// A stable, collision-resistant identity for the key, used to name its
    /// directory in the cache (hex SHA-256 over the length-prefixed names).
    pub fn digest_hex(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"blobcache-key-v1");
        for part in [&self.account, &self.container, &self.blob] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn check_common(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("the {what} name is empty")));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "the {what} name contains the control character U+{:04X}, which is not allowed",
            c as u32
        )));
    }
    if name.contains('\\') {
        return Err(Error::invalid(format!(
            "the {what} name contains a backslash, which is not allowed (use / between path segments)"
        )));
    }
    Ok(())
}

fn check_segment(what: &str, name: &str, max: usize) -> Result<()> {
    check_common(what, name)?;
    if name.len() > max {
        return Err(Error::invalid(format!(
            "the {what} name is longer than {max} bytes"
        )));
    }
    if name.contains('/') {
        return Err(Error::invalid(format!(
            "the {what} name contains '/', which is not allowed"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(format!(
            "the {what} name may not be '.' or '..'"
        )));
    }
    Ok(())
}

fn check_blob(name: &str) -> Result<()> {
    check_common("blob", name)?;
    if name.chars().count() > MAX_BLOB_CHARS {
        return Err(Error::invalid(format!(
            "the blob name is longer than {MAX_BLOB_CHARS} characters"
        )));
    }
    // Empty segments ('//', a leading or trailing '/') are legal: see the
    // module docs.
    for segment in name.split('/') {
        if segment == "." || segment == ".." {
            return Err(Error::invalid(format!(
                "the blob name contains a '{segment}' path segment, which is not allowed: paths and URLs resolve it away, so it would name another file or blob"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_unusual_but_safe_names_are_accepted() {
        for blob in [
            "model.safetensors",
            "dir/sub/model-00001-of-00002.safetensors",
            "my model ü %+#?.safetensors",
            "..hidden/x..y",
            // Legal at Azure, empty segments included (the directory
            // origin refuses these itself).
            "x/",
            "a//b",
            "trail/",
            "/",
            "//",
            "/etc/passwd",
            "x/.../y",
        ] {
            BlobKey::new("acct", "models", blob).unwrap();
        }
    }

    #[test]
    fn names_that_could_leave_a_directory_are_refused() {
        for (a, c, b) in [
            ("", "c", "b"),
            ("a", "", "b"),
            ("a", "c", ""),
            ("..", "c", "b"),
            ("a", "..", "b"),
            ("a", ".", "b"),
            ("a/b", "c", "b"),
            ("a", "c/d", "b"),
            ("a", "c", "../etc/passwd"),
            ("a", "c", "x/../../y"),
            ("a", "c", "/../x"),
            ("a", "c", "x\\..\\y"),
            ("a", "c", "x/./y"),
            ("a", "c", "x/."),
            ("a", "c", ".."),
            ("a", "c", "x\ny"),
            ("a\u{7f}", "c", "b"),
        ] {
            let e = BlobKey::new(a, c, b).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::ErrorKind::InvalidArgument,
                "{a}/{c}/{b}"
            );
        }
    }

    #[test]
    fn overlong_names_are_refused() {
        assert!(BlobKey::new("a", "c", &"x".repeat(1025)).is_err());
        assert!(BlobKey::new("a", "c", &"ü".repeat(1024)).is_ok());
        assert!(BlobKey::new(&"a".repeat(256), "c", "b").is_err());
    }

    #[test]
    fn digest_separates_names_that_concatenate_alike() {
        let a = BlobKey::new("ab", "c", "d").unwrap();
        let b = BlobKey::new("a", "bc", "d").unwrap();
        assert_ne!(a.digest_hex(), b.digest_hex());
        assert_eq!(a.digest_hex().len(), 64);
    }
}
