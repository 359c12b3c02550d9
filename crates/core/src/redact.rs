//! Keeps credentials out of every message the library produces.
//!
//! Configuration registers each secret it reads (account key, SAS token,
//! client secret, bearer token); [`redact`] replaces any occurrence of them,
//! and of any `sig=` query value, before a message reaches `error_buf` or a
//! log line. This is a second line of defence: messages are built not to
//! contain secrets in the first place.

use std::sync::{Arc, Mutex};

use crate::fork;
use crate::sync::MutexExt;

// Copy on write, touched only inside fork sections (see `fork.rs`): readers
// clone the `Arc` and scan it outside.
static SECRETS: Mutex<Option<Arc<Vec<String>>>> = Mutex::new(None);

fn secrets() -> Option<Arc<Vec<String>>> {
    fork::section(|| SECRETS.locked().clone())
}

/// Registers a secret value so it never appears in output. Short values
/// (under 8 characters) are ignored: replacing them would garble messages and
/// they are not plausible secrets.
pub fn register_secret(secret: &str) {
    let secret = secret.trim();
    if secret.len() < 8 {
        return;
    }
    let mut secrets = secrets().as_deref().cloned().unwrap_or_default();
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        let old = fork::section(|| {
            let mut current = SECRETS.locked();
            // Keep what another thread registered meanwhile.
            for s in current.as_deref().into_iter().flatten() {
                if !secrets.contains(s) {
                    secrets.push(s.clone());
                }
            }
            // Longest first, so a secret that contains another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            current.replace(Arc::new(std::mem::take(&mut secrets)))
        });
        drop(old);
    }
    // A SAS token's signature is the part that matters; register it alone too
    // in its raw and percent-decoded spellings.
    if let Some(sig) = query_value(secret, "sig") {
        register_secret(sig);
        let decoded = percent_decode(sig);
        if decoded != sig {
            register_secret(&decoded);
        }
    }
}

/// Registers the secret fields of an Azure connection string (its account
/// key and SAS), not the others: the account name and endpoints belong in
/// messages.
pub fn register_connection_string_secrets(connection_string: &str) {
    for part in connection_string.split(';') {
        if let Some((name, val)) = part.split_once('=') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("AccountKey")
                || name.eq_ignore_ascii_case("SharedAccessSignature")
            {
                register_secret(val);
            }
        }
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns `message` with every registered secret and every `sig=` value
/// replaced by `<redacted>`.
pub fn redact(message: &str) -> String {
    // Authorization values first: a registered secret replaced inside one
    // (an account name, say) would hide where its credential starts.
    let out = redact_credential_after(message, "SharedKey ", true);
    let mut out = redact_credential_after(&out, "Bearer ", false);
    for secret in secrets().as_deref().into_iter().flatten() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
    }
    redact_query_param(&out, "sig=")
}

/// Replaces the credential that follows `scheme` (an Authorization header's
/// value echoed back by a server): up to the next whitespace, quote or `<`;
/// for SharedKey only the signature after `account:`.
fn redact_credential_after(message: &str, scheme: &str, after_colon: bool) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(pos) = rest.find(scheme) {
        out.push_str(&rest[..pos + scheme.len()]);
        rest = &rest[pos + scheme.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '&' | ';' | ','))
            .unwrap_or(rest.len());
        let start = if after_colon {
            rest[..end].find(':').map_or(end, |i| i + 1)
        } else {
            0
        };
        out.push_str(&rest[..start]);
        if end > start {
            out.push_str("<redacted>");
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_query_param(message: &str, param: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(pos) = rest.find(param) {
        let boundary_ok = pos == 0 || matches!(rest.as_bytes()[pos - 1], b'?' | b'&' | b' ');
        out.push_str(&rest[..pos + param.len()]);
        rest = &rest[pos + param.len()..];
        if boundary_ok {
            let end = rest
                .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            if end > 0 {
                out.push_str("<redacted>");
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secret_is_replaced() {
        register_secret("c2VjcmV0LWtleS1mb3ItdGVzdHM=");
        let m = redact("auth with c2VjcmV0LWtleS1mb3ItdGVzdHM= failed");
        assert_eq!(m, "auth with <redacted> failed");
    }

    #[test]
    fn sig_query_value_is_replaced_even_unregistered() {
        let m = redact("GET http://h/a?sv=2021&sig=abc%2Bdef&se=1 failed");
        assert_eq!(m, "GET http://h/a?sv=2021&sig=<redacted>&se=1 failed");
        assert!(!redact("x?sig=zz").contains("zz"));
    }

    #[test]
    fn sas_signature_is_registered_in_both_spellings() {
        register_secret("?sv=2022-11-02&ss=b&sig=AbCdEfGh%2BIjKl%3D");
        assert!(!redact("token AbCdEfGh+IjKl= seen").contains("AbCdEfGh+IjKl="));
    }

    #[test]
    fn authorization_values_echoed_by_a_server_are_replaced() {
        let m = redact(
            "refused: Authorization SharedKey devstoreaccount1:6vhmotAbC+/9xyz= for /c/b; Bearer eyJ0.eyJ1.sig_x failed",
        );
        assert_eq!(
            m,
            "refused: Authorization SharedKey devstoreaccount1:<redacted> for /c/b; Bearer <redacted> failed"
        );
    }

    #[test]
    fn only_the_key_and_sas_of_a_connection_string_are_secrets() {
        register_connection_string_secrets(
            "DefaultEndpointsProtocol=https;AccountName=visibleaccount1;AccountKey=S2V5S2V5S2V5S2V5;EndpointSuffix=core.windows.net",
        );
        assert_eq!(
            redact("account visibleaccount1 key S2V5S2V5S2V5S2V5"),
            "account visibleaccount1 key <redacted>"
        );
    }

    #[test]
    fn short_values_are_not_treated_as_secrets() {
        register_secret("abc");
        assert_eq!(redact("abc def"), "abc def");
    }
}
