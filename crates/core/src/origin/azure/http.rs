//! The HTTP side: the client, sending one signed request, and describing
//! what went wrong in words a user can act on.
//!
//! Messages are built from the request URL *without* its query (where a SAS
//! lives), from status, `x-ms-error-code`, `x-ms-request-id` and the first
//! sentence of the service's `<Message>`; never from a request's URI after
//! signing, and never from `reqwest::Error`'s own text (which holds the URL).

use std::time::Duration;

use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};

use super::auth::Credential;
use super::retry::{self, Budget};
use crate::error::{Error, Result};

/// Builds the client shared by every request of one origin instance: HTTP/1.1
/// (what Blob Storage speaks), no redirects, a bounded connection setup,
/// enough idle connections kept for `concurrency` requests in flight, and
/// [`LocalhostResolver`] for host names.
///
/// TLS trusts the Mozilla roots and the system's store; `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` replace the system's store (for a private CA, e.g. a test
/// CA for an emulator started with a certificate).
pub fn client(concurrency: usize, fetch_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
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
pub struct LocalhostResolver;

/// Whether `host` is `localhost` or a name under it (any case, with or
/// without the root's trailing dot).
pub fn is_localhost(host: &str) -> bool {
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

/// Why an attempt got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// The request never reached the service (DNS, refused, unreachable,
    /// connect timeout).
    Connect(String),
    /// No answer, or no more of the body, within the idle limit.
    Stalled(String),
    /// The connection broke, or the body ended early.
    Broken(String),
    /// The service answered with an error status.
    Refused(Refusal),
}

impl Failure {
    pub fn is_connect(&self) -> bool {
        matches!(self, Failure::Connect(_))
    }

    pub fn retryable(&self) -> bool {
        match self {
            Failure::Refused(r) => retry::retryable_status(r.status),
            _ => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Refused(r) => r.retry_after,
            _ => None,
        }
    }

    pub fn describe(&self, endpoint: &str) -> String {
        match self {
            Failure::Connect(why) => format!("cannot connect to {endpoint} ({why})"),
            Failure::Stalled(why) | Failure::Broken(why) => why.clone(),
            Failure::Refused(r) => r.to_string(),
        }
    }

    fn from_reqwest(e: &reqwest::Error, idle: Duration) -> Failure {
        if e.is_connect() {
            Failure::Connect(cause(e))
        } else if e.is_timeout() {
            Failure::Stalled(format!("no answer within {}", retry::fmt_duration(idle)))
        } else {
            Failure::Broken(format!("the connection failed: {}", cause(e)))
        }
    }
}

/// An error answer from the service.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status.as_u16())?;
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        write!(
            f,
            " (request id {})",
            self.request_id.as_deref().unwrap_or("none")
        )?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// The `x-ms-request-id` of a response.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-ms-request-id")
}

pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reads an error response: status, headers and (for GET) the XML body's
/// `<Code>` and `<Message>`.
pub async fn refusal(response: Response, budget: &Budget) -> Refusal {
    let headers = response.headers().clone();
    let status = response.status();
    let body = read_small_body(response, budget).await;
    let code = header(&headers, "x-ms-error-code").or_else(|| xml_field(&body, "Code"));
    let message = xml_field(&body, "Message").map(|m| first_sentence(&m));
    Refusal {
        status,
        code,
        request_id: request_id(&headers),
        message,
        retry_after: retry::retry_after(&headers),
    }
}

/// Up to 16 KiB of an error body, within the idle limit; empty on trouble.
async fn read_small_body(mut response: Response, budget: &Budget) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > 16 << 10 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(budget.idle_limit(), read).await;
    String::from_utf8_lossy(&body).into_owned()
}

fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&format!("</{name}>"))?;
    let v = body[start..start + len].trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The service's message up to its first line break (Azure puts
/// `RequestId:` and `Time:` on later lines), at most 160 characters.
fn first_sentence(m: &str) -> String {
    let line = m.lines().next().unwrap_or("").trim();
    let mut s: String = line.chars().take(160).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// The innermost cause of an error, without `reqwest`'s outer text (which
/// carries the URL, and with it any SAS).
pub fn cause(e: &reqwest::Error) -> String {
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

/// Signs and sends one request, waiting at most the idle limit for the
/// response headers. The outer error is final (no credential); the inner one
/// is a failure the caller may retry.
pub async fn send(
    client: &reqwest::Client,
    credential: &Credential,
    account: &str,
    method: Method,
    url: &str,
    headers: &[(&'static str, String)],
    budget: &Budget,
) -> Result<Result<Response, Failure>> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let mut request: HttpRequest = builder
        .body(HttpRequestBody::empty())
        .map_err(|e| Error::internal(format!("cannot build a request for {url}: {e}")))?;
    credential
        .authorize(account, &mut request, budget.remaining())
        .await?;
    let (parts, _) = request.into_parts();
    let idle = budget.idle_limit();
    let pending = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .send();
    Ok(match tokio::time::timeout(idle, pending).await {
        Err(_) => Err(Failure::Stalled(format!(
            "no answer within {}",
            retry::fmt_duration(idle)
        ))),
        Ok(Err(e)) => Err(Failure::from_reqwest(&e, idle)),
        Ok(Ok(r)) => Ok(r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_first_line_of_the_message_come_from_the_xml_body() {
        let body = "<?xml version=\"1.0\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed to authenticate the request.\nRequestId:abc\nTime:2026</Message>\n</Error>";
        assert_eq!(
            xml_field(body, "Code").as_deref(),
            Some("AuthorizationFailure")
        );
        assert_eq!(
            first_sentence(&xml_field(body, "Message").unwrap()),
            "Server failed to authenticate the request."
        );
        assert_eq!(xml_field("", "Code"), None);
    }

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

    #[test]
    fn a_refusal_reads_as_status_code_request_id_and_message() {
        let r = Refusal {
            status: StatusCode::FORBIDDEN,
            code: Some("AuthenticationFailed".into()),
            request_id: Some("0f3c-77".into()),
            message: Some("Server failed to authenticate the request.".into()),
            retry_after: None,
        };
        assert_eq!(
            r.to_string(),
            "HTTP 403 AuthenticationFailed (request id 0f3c-77): Server failed to authenticate the request."
        );
    }
}
