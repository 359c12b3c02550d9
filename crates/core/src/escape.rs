//! Keeps every message on one clean line.
//!
//! Messages reach a caller's `error_buf` and the log (one line each, on
//! stderr); names in them come from the caller, settings from the
//! environment, text from the network. [`controls`] rewrites every character
//! that could break a line or hide text into a visible escape, in the
//! notation of Rust's `char::escape_debug`:
//!
//! - `\n`, `\r`, `\t`, `\0` for those four;
//! - `\u{XX}` for any other control character: C0 (`U+0000`–`U+001F`),
//!   DEL (`U+007F`) and C1 (`U+0080`–`U+009F`, which holds NEL, `U+0085`);
//! - `\u{2028}`, `\u{2029}` (line and paragraph separators, which some
//!   viewers break lines at) and the bidirectional formatting characters
//!   (`U+061C`, `U+200E`, `U+200F`, `U+202A`–`U+202E`, `U+2066`–`U+2069`),
//!   which can make a line display other than it reads.
//!
//! Everything else, including non-ASCII text and the backslash, is kept as
//! it is: the result is for reading, not for decoding back (a name holding a
//! literal `\n` reads the same as one holding a newline; the name rules
//! refuse both backslashes and control characters anyway). Escaping text
//! that is already escaped leaves it unchanged.

use std::borrow::Cow;

/// Whether `c` is rewritten by [`controls`].
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character of [`needs_escape`] written as an escape (see
/// the module docs); borrowed when there is none.
pub(crate) fn controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_line_breaking_characters_become_visible_escapes() {
        assert_eq!(
            controls("a\nb\tc\rd\0e\u{1b}[31mf\u{7f}g\u{85}h\u{9f}"),
            "a\\nb\\tc\\rd\\0e\\u{1b}[31mf\\u{7f}g\\u{85}h\\u{9f}"
        );
        assert_eq!(
            controls("x\u{2028}y\u{2029}z\u{202e}w\u{2066}v"),
            "x\\u{2028}y\\u{2029}z\\u{202e}w\\u{2066}v"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let s = char::from_u32(c).unwrap().to_string();
            let e = controls(&s);
            assert!(
                e.starts_with('\\') && !e.chars().any(needs_escape),
                "{c:x}: {e}"
            );
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged_and_escaping_is_idempotent() {
        for s in [
            "",
            "acct/models/dir/model ü 日本 %+#?.safetensors",
            "x\\..\\y",
            "\"quoted\\n\"",
        ] {
            assert!(matches!(controls(s), Cow::Borrowed(t) if t == s), "{s}");
        }
        let once = controls("a\n\u{1b}b").into_owned();
        assert_eq!(controls(&once), once);
    }
}
