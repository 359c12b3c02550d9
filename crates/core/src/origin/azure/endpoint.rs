//! Where an account's blobs live, and how names become URLs.
//!
//! The endpoint of an account, first match wins:
//! 1. `BLOBCACHE_AZURE_ENDPOINT`, a URL template in which `{account}` is
//!    replaced by the account (`http://127.0.0.1:10000/{account}` for Azurite);
//! 2. `AZURE_STORAGE_CONNECTION_STRING` (when its `AccountName` is this
//!    account or absent): its `BlobEndpoint`, else
//!    `<DefaultEndpointsProtocol>://<account>.blob.<EndpointSuffix>` when it
//!    names an `EndpointSuffix`; `UseDevelopmentStorage=true` means Azurite's
//!    default `http://127.0.0.1:10000/devstoreaccount1`;
//! 3. `https://<account>.<AZURE_STORAGE_ENDPOINT_SUFFIX>`, the suffix
//!    defaulting to `blob.core.windows.net` (as the streamer does).
//!
//! A blob's URL is the endpoint, then the container, then the blob name, each
//! percent-encoded: every byte outside RFC 3986's unreserved set
//! (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, including space, `%`, `+`, `#`,
//! `?` and every byte of a non-ASCII character; the `/` between the blob
//! name's segments is kept. Every `/` of the name is one `/` of the path,
//! empty segments included: `x/`, `a//b`, `/` and `/x` are legal blob names
//! and reach Azure as they are (neither the `http` nor the `url` crate
//! collapses `//`). `.` and `..` segments never get here (see
//! `names.rs`): the `url` crate would resolve them away.

use crate::error::{Error, Result};

/// Azurite's default blob endpoint, for `UseDevelopmentStorage=true`.
const DEVELOPMENT_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";
/// The emulator's well-known account and key (public, from the Azurite docs).
const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
pub(crate) const DEVELOPMENT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEFAULT_SUFFIX: &str = "blob.core.windows.net";

/// The fields of an `AZURE_STORAGE_CONNECTION_STRING` that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectionString {
    account_name: Option<String>,
    pub(crate) account_key: Option<String>,
    pub(crate) sas: Option<String>,
    blob_endpoint: Option<String>,
    protocol: Option<String>,
    endpoint_suffix: Option<String>,
}

impl ConnectionString {
    /// Parses `Key=Value;Key=Value` (keys case-insensitive; values may hold
    /// `=`, as keys and signatures do).
    pub(crate) fn parse(s: &str) -> ConnectionString {
        let mut c = ConnectionString::default();
        let mut development = false;
        for part in s.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let v = Some(v.to_string());
            match k.trim().to_ascii_lowercase().as_str() {
                "accountname" => c.account_name = v,
                "accountkey" => c.account_key = v,
                "sharedaccesssignature" => c.sas = v,
                "blobendpoint" => c.blob_endpoint = v,
                "defaultendpointsprotocol" => c.protocol = v,
                "endpointsuffix" => c.endpoint_suffix = v,
                "usedevelopmentstorage" => {
                    development = v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
                }
                _ => {}
            }
        }
        if development {
            c.account_name.get_or_insert(DEVELOPMENT_ACCOUNT.into());
            if c.sas.is_none() {
                c.account_key.get_or_insert(DEVELOPMENT_KEY.into());
            }
            c.blob_endpoint.get_or_insert(DEVELOPMENT_ENDPOINT.into());
        }
        c
    }

    /// Whether this connection string is about `account`.
    pub(crate) fn applies_to(&self, account: &str) -> bool {
        self.account_name
            .as_deref()
            .map_or(true, |a| a.eq_ignore_ascii_case(account))
    }

    fn endpoint(&self, account: &str) -> Option<String> {
        if let Some(e) = &self.blob_endpoint {
            return Some(e.clone());
        }
        let suffix = self.endpoint_suffix.as_deref()?;
        let protocol = self.protocol.as_deref().unwrap_or("https");
        Some(format!("{protocol}://{account}.blob.{suffix}"))
    }
}

/// Checks that `account` can go into a host name or URL path unescaped.
fn check_account(account: &str) -> Result<()> {
    let ok = !account.is_empty()
        && account.len() <= 63
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{account:?} is not an Azure storage account name (letters and digits only); check AZURE_STORAGE_ACCOUNT_NAME"
        )))
    }
}

/// The endpoint of `account` (no trailing `/`); see the module docs for the
/// order.
pub(crate) fn resolve(
    account: &str,
    template: Option<&str>,
    connection: Option<&ConnectionString>,
    suffix: Option<&str>,
) -> Result<String> {
    check_account(account)?;
    let url = if let Some(t) = template {
        t.replace("{account}", account)
    } else if let Some(e) = connection
        .filter(|c| c.applies_to(account))
        .and_then(|c| c.endpoint(account))
    {
        e
    } else {
        let suffix = suffix
            .map(|s| s.trim().trim_matches('.'))
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SUFFIX);
        format!("https://{account}.{suffix}")
    };
    let url = url.trim().trim_end_matches('/').to_string();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.contains(['?', '#']) || url.contains(char::is_whitespace) {
        return Err(Error::config(format!(
            "the Azure endpoint {url:?} for account {account} is not valid; use an http:// or https:// URL without query (BLOBCACHE_AZURE_ENDPOINT, AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ENDPOINT_SUFFIX)"
        )));
    }
    Ok(url)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `s` percent-encoded (everything outside RFC 3986 unreserved).
pub(crate) fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// `endpoint/container/blob`, each name percent-encoded, the blob's `/`
/// separators kept.
pub(crate) fn blob_url(endpoint: &str, container: &str, blob: &str) -> String {
    let mut url = String::with_capacity(endpoint.len() + container.len() + blob.len() * 3 + 2);
    url.push_str(endpoint);
    url.push('/');
    encode_into(&mut url, container);
    for segment in blob.split('/') {
        url.push('/');
        encode_into(&mut url, segment);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_outside_unreserved_keeping_slashes() {
        assert_eq!(
            blob_url(
                "https://a.blob.core.windows.net",
                "models",
                "dir/my model ü%+#?.bin"
            ),
            "https://a.blob.core.windows.net/models/dir/my%20model%20%C3%BC%25%2B%23%3F.bin"
        );
        assert_eq!(
            blob_url("http://h/acct", "c", "a-b_c.d~e/&=;,'\"[]{}|^`@!$*()"),
            "http://h/acct/c/a-b_c.d~e/%26%3D%3B%2C%27%22%5B%5D%7B%7D%7C%5E%60%40%21%24%2A%28%29"
        );
        assert_eq!(
            blob_url("http://h", "c", "日本/ファイル"),
            "http://h/c/%E6%97%A5%E6%9C%AC/%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB"
        );
        // An already-encoded-looking name is encoded again: names are raw.
        assert_eq!(blob_url("http://h", "c", "x%2Fy"), "http://h/c/x%252Fy");
        assert_eq!(blob_url("http://h", "c d", "b"), "http://h/c%20d/b");
    }

    #[test]
    fn empty_segments_are_kept_through_the_http_client_and_dot_segments_would_not_be() {
        for (blob, path) in [
            ("x/", "/acct/c/x/"),
            ("a//b", "/acct/c/a//b"),
            ("trail/", "/acct/c/trail/"),
            ("/", "/acct/c//"),
            ("//", "/acct/c///"),
            ("/lead", "/acct/c//lead"),
        ] {
            let url = blob_url("http://h/acct", "c", blob);
            // The two parsers a request goes through (http::Request, then
            // reqwest's Url) leave the path as it is.
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(uri.path(), path, "{blob:?}");
            assert_eq!(
                reqwest::Url::parse(&uri.to_string()).unwrap().path(),
                path,
                "{blob:?}"
            );
        }
        // Why names::BlobKey refuses dot segments: the URL parser removes
        // them, percent-encoded or not, and another blob would be read.
        for raw in ["http://h/acct/c/d/../e", "http://h/acct/c/d/%2E%2e/e"] {
            assert_eq!(reqwest::Url::parse(raw).unwrap().path(), "/acct/c/e");
        }
    }

    #[test]
    fn the_endpoint_template_wins_then_the_connection_string_then_the_suffix() {
        let conn = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://10.0.0.1:10000/acct/;",
        );
        assert_eq!(
            resolve(
                "acct",
                Some("http://127.0.0.1:9/{account}/"),
                Some(&conn),
                None
            )
            .unwrap(),
            "http://127.0.0.1:9/acct"
        );
        assert_eq!(
            resolve("acct", None, Some(&conn), Some("x.y")).unwrap(),
            "http://10.0.0.1:10000/acct"
        );
        // The connection string is for another account: not used.
        assert_eq!(
            resolve("other", None, Some(&conn), None).unwrap(),
            "https://other.blob.core.windows.net"
        );
        assert_eq!(
            resolve("acct", None, None, Some("blob.core.chinacloudapi.cn")).unwrap(),
            "https://acct.blob.core.chinacloudapi.cn"
        );
        let suffix_only =
            ConnectionString::parse("AccountName=acct;EndpointSuffix=core.usgovcloudapi.net");
        assert_eq!(
            resolve("acct", None, Some(&suffix_only), None).unwrap(),
            "https://acct.blob.core.usgovcloudapi.net"
        );
    }

    #[test]
    fn connection_strings_parse_keys_case_insensitively_with_equals_in_values() {
        let c = ConnectionString::parse(
            "accountname=a1;ACCOUNTKEY=abc==;SharedAccessSignature=sv=2022&sig=x%3D;junk",
        );
        assert_eq!(c.account_name.as_deref(), Some("a1"));
        assert_eq!(c.account_key.as_deref(), Some("abc=="));
        assert_eq!(c.sas.as_deref(), Some("sv=2022&sig=x%3D"));
        let dev = ConnectionString::parse("UseDevelopmentStorage=true");
        assert_eq!(dev.blob_endpoint.as_deref(), Some(DEVELOPMENT_ENDPOINT));
        assert_eq!(dev.account_key.as_deref(), Some(DEVELOPMENT_KEY));
        assert!(dev.applies_to("devstoreaccount1"));
        assert!(!dev.applies_to("prod"));
    }

    #[test]
    fn accounts_that_could_change_the_host_are_refused() {
        for bad in ["", "evil.com#", "a/b", "a@b", "a b", "a:1", "ü"] {
            assert!(resolve(bad, None, None, None).is_err(), "{bad:?}");
        }
        assert!(resolve("devstoreaccount1", None, None, None).is_ok());
    }

    #[test]
    fn endpoints_with_a_query_or_bad_scheme_are_refused() {
        assert!(resolve("a", Some("http://h/{account}?x=1"), None, None).is_err());
        assert!(resolve("a", Some("ftp://h/{account}"), None, None).is_err());
    }
}
