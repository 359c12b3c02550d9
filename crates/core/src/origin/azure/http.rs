//! The HTTP client every request of one origin instance goes through: how
//! it connects (HTTP/1.1, bounded connection setup, a pool of idle
//! connections, no redirects, names under `localhost` without DNS), and
//! reading what it returns: headers, and the cause of an error without
//! `reqwest`'s own text (which holds the URL, and with it any SAS).

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::proxy::Proxies;
use super::retry;
use crate::error::{Error, Result};

/// Builds the client shared by every request of one origin instance: HTTP/1.1
/// (what Blob Storage speaks), no redirects, a bounded connection setup,
/// enough idle connections kept for `concurrency` requests in flight, and
/// [`LocalhostResolver`] for host names.
///
/// TLS trusts the Mozilla roots and the system's store; `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` replace the system's store (for a private CA, e.g. a test
/// CA for an emulator started with a certificate).
///
/// Proxies are those of [`Proxies`] and no others: reqwest's own reading of
/// the process's proxy variables is turned off.
pub(crate) fn client(
    concurrency: usize,
    fetch_timeout: Duration,
    proxies: &Proxies,
) -> Result<reqwest::Client> {
    client_via(concurrency, fetch_timeout, proxies.client_proxy())
}

/// The same client as [`client`], its requests going through `proxy`
/// (Dragonfly mode's dfdaemon), or none.
pub(crate) fn client_via(
    concurrency: usize,
    fetch_timeout: Duration,
    proxy: Option<reqwest::Proxy>,
) -> Result<reqwest::Client> {
    let builder = match proxy {
        Some(p) => reqwest::Client::builder().proxy(p),
        None => reqwest::Client::builder().no_proxy(),
    };
    builder
        .dns_resolver(std::sync::Arc::new(LocalhostResolver))
        .http1_only()
        .connect_timeout(retry::MAX_CONNECT.min(fetch_timeout))
        .pool_max_idle_per_host(concurrency.max(1) + 2)
        .pool_idle_timeout(Duration::from_secs(50))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("blobcache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::internal(format!("cannot build the HTTP client: {}", cause(&e))))
}

/// Resolves `localhost` and every name under `.localhost` to the loopback
/// addresses without asking DNS (RFC 6761, section 6.3), as curl does, and
/// so as the streamer's own Azure client does with
/// `AZURE_STORAGE_ENDPOINT_SUFFIX=blob.localhost:<port>` (an emulator on
/// this machine); other names go to the system resolver (getaddrinfo).
pub(crate) struct LocalhostResolver;

/// Whether `host` is `localhost` or a name under it (any case, with or
/// without the root's trailing dot).
fn is_localhost(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

impl reqwest::dns::Resolve for LocalhostResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            if is_localhost(&host) {
                let loopback: Vec<std::net::SocketAddr> = vec![
                    (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                    (std::net::Ipv6Addr::LOCALHOST, 0).into(),
                ];
                return Ok(Box::new(loopback.into_iter()) as reqwest::dns::Addrs);
            }
            // getaddrinfo blocks: it runs on a thread of ours, started with
            // forks held off (not tokio's blocking pool, which starts
            // threads at any moment; see fork.rs).
            let (tx, rx) = tokio::sync::oneshot::channel();
            let builder = std::thread::Builder::new()
                .name("blobcache-dns".into())
                .stack_size(256 << 10);
            crate::fork::spawn(builder, move || {
                use std::net::ToSocketAddrs;
                let _ = tx.send((host.as_str(), 0).to_socket_addrs());
            })?;
            let addrs = rx.await.map_err(|_| {
                std::io::Error::other("the name lookup thread ended without an answer")
            })??;
            Ok(Box::new(addrs) as reqwest::dns::Addrs)
        })
    }
}

/// The `x-ms-request-id` of a response.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-ms-request-id")
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The innermost cause of an error, without `reqwest`'s outer text (which
/// carries the URL, and with it any SAS).
pub(crate) fn cause(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut last: Option<String> = None;
    let mut cur = e.source();
    while let Some(c) = cur {
        last = Some(c.to_string());
        cur = c.source();
    }
    last.unwrap_or_else(|| {
        if e.is_timeout() {
            "timed out".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else if e.is_body() {
            "error reading the response body".into()
        } else {
            "request failed".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_are_recognised_and_nothing_else() {
        for h in [
            "localhost",
            "LocalHost",
            "localhost.",
            "devstoreaccount1.blob.localhost",
            "a.b.LOCALHOST.",
        ] {
            assert!(is_localhost(h), "{h}");
        }
        for h in [
            "localhost.example.com",
            "mylocalhost",
            "blob.core.windows.net",
            "127.0.0.1",
            "",
        ] {
            assert!(!is_localhost(h), "{h}");
        }
    }

    #[test]
    fn names_under_localhost_resolve_to_loopback_without_dns() {
        use reqwest::dns::Resolve;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let name: reqwest::dns::Name = "devstoreaccount1.blob.localhost".parse().unwrap();
        let addrs: Vec<_> = rt
            .block_on(LocalhostResolver.resolve(name))
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(addrs[0].is_ipv4(), "IPv4 loopback first: {addrs:?}");
    }

    #[test]
    fn other_names_go_to_the_system_resolver_on_a_thread_of_ours() {
        use reqwest::dns::Resolve;
        // The lookup runs on a thread the library starts (not tokio's
        // blocking pool) and its answer must come back through the
        // channel. A numeric name is answered by getaddrinfo with no
        // network.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (name, want) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
            let n: reqwest::dns::Name = name.parse().unwrap();
            let addrs: Vec<_> = rt.block_on(LocalhostResolver.resolve(n)).unwrap().collect();
            assert_eq!(addrs.len(), 1, "{addrs:?}");
            assert_eq!(addrs[0].ip().to_string(), want);
        }
    }
}
