//! Forward proxies: which one, if any, a request to Blob Storage goes
//! through, read from the variables curl reads.
//!
//! - an `https://` endpoint goes through `https_proxy` (or `HTTPS_PROXY`),
//!   else `all_proxy` (`ALL_PROXY`); the proxy is asked for a tunnel
//!   (`CONNECT`), so TLS stays end to end;
//! - an `http://` endpoint goes through `http_proxy` (or `HTTP_PROXY`),
//!   else `all_proxy` (`ALL_PROXY`), as plain HTTP in absolute form (what a
//!   caching proxy can cache);
//! - `no_proxy` (`NO_PROXY`) lists hosts that go direct, comma-separated:
//!   a name matches itself and every name under it (`example.com` and
//!   `.example.com` both match `a.example.com`), an IP address itself, an
//!   `addr/bits` network every address in it, and `*` every host;
//! - `BLOBCACHE_PROXY=off` ignores all of them (every request goes direct).
//!
//! The lower-case form wins when both are set, as in curl. A proxy is
//! `http://[user:password@]host:port` (no scheme means `http://`; the port
//! defaults to 80, `https://` proxies to 443); its credentials are sent as
//! `Proxy-Authorization: Basic`. The password is registered with
//! [`crate::redact`] and never written anywhere: a proxy is shown as
//! `http://user@host:port`.
//!
//! One `Proxies` decides for both the HTTP client's routing
//! (`reqwest::Proxy::custom`) and the log line and error messages, so what
//! is said is what is done. The system's proxy settings that reqwest would
//! read by itself are never used: the variables come from [`AzureEnv`], read
//! once per lifecycle like every other setting.

use std::net::IpAddr;

use super::auth::AzureEnv;
use crate::config::ProxyMode;
use crate::error::{Error, Result};

/// The variables read, in the order of precedence within each pair.
pub const PROXY_VARS: &[&str] = &[
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// One proxy, with the variable it came from.
#[derive(Clone, Debug)]
pub(crate) struct ProxyUrl {
    pub(crate) var: &'static str,
    /// With its credentials: never shown.
    url: reqwest::Url,
}

impl ProxyUrl {
    fn parse(var: &'static str, value: &str) -> Result<ProxyUrl> {
        let v = value.trim();
        let with_scheme = if v.contains("://") {
            v.to_string()
        } else {
            format!("http://{v}")
        };
        let invalid = |why: &str| {
            Error::config(format!(
                "{var}={} is not valid ({why}); use http://host:port or http://user:password@host:port, or set BLOBCACHE_PROXY=off to use no proxy",
                crate::config::shown_value(v)
            ))
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|_| invalid("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// proxies are supported"));
        }
        if url.host_str().map_or(true, str::is_empty) {
            return Err(invalid("no host"));
        }
        if let Some(p) = url.password() {
            crate::redact::register_secret(p);
            let decoded = percent_decode(p);
            if decoded != p {
                crate::redact::register_secret(&decoded);
            }
        }
        Ok(ProxyUrl { var, url })
    }

    /// `http://user@host:port`: never the password.
    pub(crate) fn shown(&self) -> String {
        let user = match self.url.username() {
            "" => String::new(),
            u => format!("{u}@"),
        };
        format!("{}://{user}{}", self.url.scheme(), self.host_port())
    }

    /// `host:port`, the port filled in.
    pub(crate) fn host_port(&self) -> String {
        let host = self.url.host_str().unwrap_or("");
        let port = self.url.port_or_known_default().unwrap_or(80);
        format!("{host}:{port}")
    }

    /// `http://user@host:port (from HTTPS_PROXY)`.
    pub(crate) fn describe(&self) -> String {
        format!("{} (from {})", self.shown(), self.var)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(x) => {
                out.push(x);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The hosts `no_proxy` sends direct.
#[derive(Clone, Debug, Default)]
struct NoProxy {
    var: &'static str,
    all: bool,
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    fn parse(var: &'static str, value: &str) -> NoProxy {
        let mut n = NoProxy {
            var,
            ..NoProxy::default()
        };
        for e in value.split([',', ' ', '\t']).map(str::trim) {
            if e.is_empty() {
                continue;
            }
            if e == "*" {
                n.all = true;
                continue;
            }
            let (addr, bits) = match e.split_once('/') {
                Some((a, b)) => (a, b.parse::<u8>().ok()),
                None => (e, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = addr.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                n.nets.push((ip, bits.unwrap_or(max).min(max)));
                continue;
            }
            let name = e.trim_start_matches('.').trim_end_matches('.');
            n.names.push(name.to_ascii_lowercase());
        }
        n
    }

    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| {
            host == *n
                || host
                    .strip_suffix(n.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The proxies of one origin instance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Proxies {
    off: bool,
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: NoProxy,
}

/// The first of `names` set (and not blank) in `env`.
fn first<'a>(env: &'a AzureEnv, names: [&'static str; 2]) -> Option<(&'static str, &'a str)> {
    names.into_iter().find_map(|n| env.get(n).map(|v| (n, v)))
}

impl Proxies {
    /// The proxies `env` names, or none with [`ProxyMode::Off`]. An invalid
    /// proxy is a configuration error naming the variable (never its
    /// password).
    pub(crate) fn from_env(env: &AzureEnv, mode: ProxyMode) -> Result<Proxies> {
        if mode == ProxyMode::Off {
            return Ok(Proxies {
                off: true,
                ..Proxies::default()
            });
        }
        let parse = |names| {
            first(env, names)
                .map(|(var, v)| ProxyUrl::parse(var, v))
                .transpose()
        };
        let all = parse(["all_proxy", "ALL_PROXY"])?;
        let http = parse(["http_proxy", "HTTP_PROXY"])?.or_else(|| all.clone());
        let https = parse(["https_proxy", "HTTPS_PROXY"])?.or(all);
        let no_proxy = first(env, ["no_proxy", "NO_PROXY"])
            .map(|(var, v)| NoProxy::parse(var, v))
            .unwrap_or_default();
        Ok(Proxies {
            off: false,
            http,
            https,
            no_proxy,
        })
    }

    /// Whether any request may go through a proxy.
    pub(crate) fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// The proxy a request to `url` goes through, if any.
    pub(crate) fn for_url(&self, url: &reqwest::Url) -> Option<&ProxyUrl> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        (!self.no_proxy.matches(url.host_str()?)).then_some(proxy)
    }

    /// The proxy requests to `endpoint` go through, if any.
    pub(crate) fn for_endpoint(&self, endpoint: &str) -> Option<&ProxyUrl> {
        self.for_url(&reqwest::Url::parse(endpoint).ok()?)
    }

    /// How requests to `endpoint` go, for the log: through which proxy, or
    /// direct and why.
    pub(crate) fn route(&self, endpoint: &str) -> String {
        if let Some(p) = self.for_endpoint(endpoint) {
            return format!("through proxy {}", p.describe());
        }
        if self.off {
            return "direct (BLOBCACHE_PROXY=off)".into();
        }
        let url = reqwest::Url::parse(endpoint).ok();
        let scheme_has_proxy = match url.as_ref().map(|u| u.scheme()) {
            Some("https") => self.https.is_some(),
            Some("http") => self.http.is_some(),
            _ => false,
        };
        if scheme_has_proxy {
            format!("direct ({} matches the host)", self.no_proxy.var)
        } else {
            "direct (no proxy set for this scheme)".into()
        }
    }

    /// The HTTP client's proxy: routes each request as [`Proxies::for_url`]
    /// says; `None` when no request goes through one.
    pub(crate) fn client_proxy(&self) -> Option<reqwest::Proxy> {
        if !self.any() {
            return None;
        }
        let me = self.clone();
        Some(reqwest::Proxy::custom(move |url| {
            me.for_url(url).map(|p| p.url.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(pairs: &[(&str, &str)]) -> Proxies {
        Proxies::from_env(&AzureEnv::from_pairs(pairs.iter().copied()), ProxyMode::Env).unwrap()
    }

    fn via(p: &Proxies, url: &str) -> Option<String> {
        p.for_endpoint(url).map(|p| p.shown())
    }

    #[test]
    fn https_endpoints_use_https_proxy_and_http_endpoints_http_proxy() {
        let p = proxies(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("HTTP_PROXY", "plain:8080"),
        ]);
        assert_eq!(
            via(&p, "https://a.blob.core.windows.net").as_deref(),
            Some("http://secure:3128")
        );
        assert_eq!(
            via(&p, "http://127.0.0.1:10000/acct").as_deref(),
            Some("http://plain:8080")
        );
        let only_https = proxies(&[("HTTPS_PROXY", "http://secure:3128")]);
        assert_eq!(via(&only_https, "http://127.0.0.1:10000/acct"), None);
        assert_eq!(
            only_https.route("http://127.0.0.1:10000/acct"),
            "direct (no proxy set for this scheme)"
        );
    }

    #[test]
    fn lower_case_wins_and_all_proxy_fills_in() {
        let p = proxies(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("ALL_PROXY", "http://all:3"),
        ]);
        assert_eq!(
            via(&p, "https://x.example").as_deref(),
            Some("http://lower:1")
        );
        assert_eq!(via(&p, "http://x.example").as_deref(), Some("http://all:3"));
        assert_eq!(
            p.for_endpoint("https://x.example").unwrap().var,
            "https_proxy"
        );
    }

    #[test]
    fn no_proxy_matches_names_suffixes_addresses_networks_and_star() {
        let n = NoProxy::parse(
            "NO_PROXY",
            "example.com, .blob.local,10.0.0.0/8 ,::1, 192.168.1.7",
        );
        for h in [
            "example.com",
            "a.example.com",
            "A.Example.COM.",
            "x.blob.local",
            "blob.local",
            "10.2.3.4",
            "[::1]",
            "192.168.1.7",
        ] {
            assert!(n.matches(h), "{h}");
        }
        for h in [
            "notexample.com",
            "example.com.evil",
            "11.0.0.1",
            "192.168.1.8",
            "::2",
        ] {
            assert!(!n.matches(h), "{h}");
        }
        assert!(NoProxy::parse("NO_PROXY", "*").matches("anything.at.all"));
        assert!(NoProxy::parse("NO_PROXY", "*").matches("127.0.0.1"));
        let p = proxies(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "windows.net")]);
        assert_eq!(via(&p, "https://a.blob.core.windows.net"), None);
        assert_eq!(
            p.route("https://a.blob.core.windows.net"),
            "direct (no_proxy matches the host)"
        );
    }

    #[test]
    fn off_ignores_every_variable() {
        let env =
            AzureEnv::from_pairs([("HTTPS_PROXY", "http://p:1"), ("HTTP_PROXY", "http://p:1")]);
        let p = Proxies::from_env(&env, ProxyMode::Off).unwrap();
        assert!(!p.any());
        assert!(p.client_proxy().is_none());
        assert_eq!(p.route("https://x"), "direct (BLOBCACHE_PROXY=off)");
    }

    #[test]
    fn credentials_are_used_but_never_shown() {
        let p = proxies(&[("HTTPS_PROXY", "http://alice:s3cr%40t-pass@proxy.corp:3128")]);
        let u = p.for_endpoint("https://x.example").unwrap();
        assert_eq!(u.shown(), "http://alice@proxy.corp:3128");
        assert_eq!(u.host_port(), "proxy.corp:3128");
        assert_eq!(u.url.password(), Some("s3cr%40t-pass"));
        assert!(!p.route("https://x.example").contains("s3cr"));
        assert_eq!(
            crate::redact::redact("x s3cr@t-pass y s3cr%40t-pass"),
            "x <redacted> y <redacted>"
        );
    }

    #[test]
    fn an_invalid_proxy_names_the_variable_but_not_the_password() {
        for v in [
            "socks5://u:hunter2hunter2@h:1",
            "http://u:hunter2hunter2@:1",
        ] {
            let env = AzureEnv::from_pairs([("HTTPS_PROXY", v)]);
            let e = Proxies::from_env(&env, ProxyMode::Env).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Config);
            assert!(e.message().starts_with("HTTPS_PROXY="), "{e}");
            assert!(!e.message().contains("hunter2"), "{e}");
            assert!(e.message().contains("BLOBCACHE_PROXY=off"), "{e}");
        }
    }

    #[test]
    fn a_proxy_without_scheme_or_port_gets_the_defaults() {
        let p = proxies(&[("HTTPS_PROXY", "proxy.corp")]);
        assert_eq!(
            p.for_endpoint("https://x").unwrap().host_port(),
            "proxy.corp:80"
        );
    }
}
