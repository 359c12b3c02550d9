//! The framing of the store's small text files (meta, counters): a header
//! line, `name=value` lines, and a last line `checksum=<SHA-256 of all
//! before it>`, so a torn or edited file is detected and never trusted.

use sha2::{Digest, Sha256};

use crate::names::hex;

/// `body` (which starts with the header line and ends in a newline) with
/// its checksum line appended.
pub(crate) fn seal(body: &str) -> String {
    let sum = hex(&Sha256::digest(body.as_bytes()));
    format!("{body}checksum={sum}\n")
}

/// The lines after `header` of a sealed file; `Err` says why it is not one.
pub(crate) fn open<'a>(text: &'a [u8], header: &str) -> Result<std::str::Lines<'a>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let (body, tail) = text.split_at(text.rfind("checksum=").ok_or("no checksum line")?);
    let sum = tail
        .strip_prefix("checksum=")
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or("malformed checksum line")?;
    if sum != hex(&Sha256::digest(body.as_bytes())) {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(header) {
        return Err("unknown header".into());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_and_any_change_is_caught() {
        let sealed = seal("h 1\na=1\n");
        assert_eq!(
            open(sealed.as_bytes(), "h 1").unwrap().collect::<Vec<_>>(),
            ["a=1"]
        );
        assert_eq!(
            open(sealed.as_bytes(), "h 2").unwrap_err(),
            "unknown header"
        );
        let edited = sealed.replace("a=1", "a=2");
        assert_eq!(
            open(edited.as_bytes(), "h 1").unwrap_err(),
            "checksum mismatch"
        );
        let cut = &sealed.as_bytes()[..sealed.len() - 1];
        assert_eq!(open(cut, "h 1").unwrap_err(), "malformed checksum line");
        assert_eq!(open(b"h 1\na=1\n", "h 1").unwrap_err(), "no checksum line");
        assert_eq!(open(b"\xff", "h 1").unwrap_err(), "not UTF-8");
    }
}
