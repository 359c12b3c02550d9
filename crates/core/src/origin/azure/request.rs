//! One request to Blob Storage and its attempts: signing and sending each
//! attempt, telling an answer from a failure, retrying what [`retry`] counts
//! as transient (after the service's `Retry-After` when it gives one) within
//! the request's time budget, and the final error, which says what was
//! asked, what happened (status, error code, request id), what to do, and
//! how hard it tried.
//!
//! Messages are built from the request URL *without* its query (where a SAS
//! lives), from status, `x-ms-error-code`, `x-ms-request-id` and the first
//! sentence of the service's `<Message>`; never from a request's URI after
//! signing, and never from `reqwest::Error`'s own text (which holds the URL;
//! see [`http::cause`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::{Method, Response, StatusCode};

use super::auth::Credential;
use super::dragonfly::{self, Dragonfly, Trouble};
use super::http;
use super::proxy::ProxyUrl;
use super::retry::{self, Budget};
use crate::error::{Error, ErrorKind, Result};
use crate::log;

/// One storage account as this origin instance uses it.
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) credential: Credential,
    /// The proxy its requests go through, if any.
    pub(crate) proxy: Option<ProxyUrl>,
    /// Held while a GET asks past a caching proxy for the current version
    /// (`read.rs`), so concurrent readers refresh it once, not each.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    /// How many such refreshes have been made.
    pub(crate) refreshes: AtomicU64,
    /// Set when a call gave up because the endpoint could not be reached;
    /// cleared by any answer. While set, calls do not retry.
    unreachable: AtomicBool,
}

impl Account {
    pub(crate) fn new(
        name: String,
        endpoint: String,
        credential: Credential,
        proxy: Option<ProxyUrl>,
    ) -> Account {
        Account {
            name,
            endpoint,
            credential,
            proxy,
            refresh_lock: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
            unreachable: AtomicBool::new(false),
        }
    }

    /// A fresh budget; without retries while the account is known to be
    /// unreachable.
    fn budget(&self, limit: Duration) -> Budget {
        Budget::new(limit, !self.unreachable.load(Ordering::Relaxed))
    }

    /// The endpoint, and the proxy requests reach it through (for
    /// messages; never the proxy's password).
    fn target(&self) -> String {
        match &self.proxy {
            Some(p) => format!("{} through proxy {}", self.endpoint, p.describe()),
            None => self.endpoint.clone(),
        }
    }
}

/// The HTTP clients of an origin instance: direct (or through the proxy
/// variables), and through dfdaemon in Dragonfly mode.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) direct: reqwest::Client,
    pub(crate) dragonfly: Option<(Arc<Dragonfly>, reqwest::Client)>,
}

/// One call of the origin (a stat, a listing, a read): the account it goes
/// to, the HTTP clients, and the time each of its requests may take.
pub(crate) struct Call {
    pub(crate) account: Arc<Account>,
    clients: Clients,
    fetch_timeout: Duration,
}

impl Call {
    pub(crate) fn new(account: Arc<Account>, clients: Clients, fetch_timeout: Duration) -> Call {
        Call {
            account,
            clients,
            fetch_timeout,
        }
    }

    /// A request to `url` with a budget of its own, named `what` in
    /// messages.
    pub(crate) fn request(&self, url: String, what: String) -> Request<'_> {
        Request {
            call: self,
            url,
            what,
            budget: self.account.budget(self.fetch_timeout),
            tag: None,
        }
    }
}

/// One request: where it goes, how it is named in messages ("HEAD",
/// "GET bytes=0-99"), and its time budget across all its attempts.
pub(crate) struct Request<'a> {
    call: &'a Call,
    url: String,
    pub(crate) what: String,
    pub(crate) budget: Budget,
    /// Set while the request goes through dfdaemon: the version it asks
    /// for, which is its task's tag.
    tag: Option<String>,
}

impl Request<'_> {
    /// Sends this GET of version `etag` through dfdaemon, in Dragonfly
    /// mode, unless the daemon failed recently.
    pub(crate) fn through_dragonfly(&mut self, etag: &str) {
        if let Some((d, _)) = &self.call.clients.dragonfly {
            if d.usable() {
                self.tag = Some(etag.to_string());
            }
        }
    }

    /// The daemon this request goes through now, if any.
    pub(crate) fn dragonfly(&self) -> Option<&Dragonfly> {
        self.tag.as_ref()?;
        self.call.clients.dragonfly.as_ref().map(|(d, _)| &**d)
    }

    /// How long to wait for the next piece of an answer: through a daemon
    /// that has a fallback, at most half the budget, so that going direct
    /// still fits in it.
    pub(crate) fn idle_limit(&self) -> Duration {
        let idle = self.budget.idle_limit();
        match self.dragonfly() {
            Some(d) if d.fallback => idle.min(self.budget.limit() / 2),
            _ => idle,
        }
    }

    /// A failure of the answer's body, said of the daemon when the request
    /// goes through it.
    pub(crate) fn body_failure(&self, f: Failure) -> Failure {
        match self.dragonfly() {
            Some(d) => Failure::Dragonfly(d.unreachable(&f.describe_answer())),
            None => f,
        }
    }

    /// Where the request goes, for messages.
    fn target(&self) -> String {
        match self.dragonfly() {
            Some(d) => format!(
                "{} through dfdaemon at {}",
                self.call.account.endpoint,
                d.host_port()
            ),
            None => self.call.account.target(),
        }
    }

    /// A final error: what was asked, what happened, what to do, and how
    /// hard it tried.
    pub(crate) fn fail(
        &self,
        kind: ErrorKind,
        detail: &str,
        hint: &str,
        stopped: Option<&str>,
    ) -> Error {
        let mut m = format!("Azure {} failed: {detail}", self.what);
        if !hint.is_empty() {
            m.push_str("; ");
            m.push_str(hint);
        }
        m.push_str(&format!(" [{}, {}", self.target(), self.budget.summary()));
        if let Some(s) = stopped {
            m.push_str("; ");
            m.push_str(s);
        }
        m.push(']');
        Error::new(kind, crate::redact::redact(&m))
    }

    /// The final error for a refusal no retry can help, with what to check.
    pub(crate) fn refused(&self, r: &Refusal) -> Error {
        let account = &self.call.account.name;
        let (kind, hint) = match r.status.as_u16() {
            401 | 403 => {
                self.call.account.credential.refused();
                (
                    ErrorKind::Config,
                    self.call.account.credential.source.refused_hint(account),
                )
            }
            404 => (
                ErrorKind::NotFound,
                match r.code.as_deref() {
                    Some("ContainerNotFound") => {
                        format!("the container does not exist in account {account}; check the container name")
                    }
                    _ => format!(
                        "no such blob in account {account}; check the container and blob name"
                    ),
                },
            ),
            407 => (
                ErrorKind::Config,
                match &self.call.account.proxy {
                    Some(p) => format!(
                        "the proxy {} refused its credentials; check the user and password in {}",
                        p.host_port(),
                        p.var
                    ),
                    None => "a proxy refused the request's credentials".into(),
                },
            ),
            _ => (ErrorKind::Origin, String::new()),
        };
        self.fail(kind, &r.to_string(), &hint, None)
    }

    /// Sends the request until it gets an answer no retry can change: a
    /// success, or a refusal whose status is not retried, for the caller to
    /// explain. Failed attempts and refusals with a transient status are
    /// retried within the budget; when it runs out, the last one is the
    /// error.
    pub(crate) async fn answer(
        &mut self,
        method: Method,
        headers: &[(&'static str, String)],
    ) -> Result<std::result::Result<Response, Refusal>> {
        loop {
            let response = match self.attempt(method.clone(), headers).await? {
                Ok(r) => r,
                Err(f) => {
                    self.after_failure(f).await?;
                    continue;
                }
            };
            if response.status().is_success() {
                return Ok(Ok(response));
            }
            let r = refusal(response, &self.budget).await;
            if !retry::retryable_status(r.status) {
                return Ok(Err(r));
            }
            self.after_failure(Failure::Refused(r)).await?;
        }
    }

    /// Sends the request (no extra headers) until the service answers with
    /// success; a refusal no retry can help is explained by
    /// [`Request::refused`].
    pub(crate) async fn answered(&mut self, method: Method) -> Result<Response> {
        match self.answer(method, &[]).await? {
            Ok(response) => Ok(response),
            Err(r) => Err(self.refused(&r)),
        }
    }

    /// After a failure that may be retried: waits as the budget says (the
    /// service's `Retry-After`, or the backoff) and returns `Ok` to try
    /// again, or returns the final error.
    pub(crate) async fn after_failure(&mut self, failure: Failure) -> Result<()> {
        if let Failure::Dragonfly(t) = &failure {
            if let Some(d) = self.dragonfly() {
                if d.fallback {
                    // Go on directly, at once.
                    d.fall_back(t);
                    self.tag = None;
                    return Ok(());
                }
            }
            if t.lasting {
                return Err(self.fail(ErrorKind::Config, &t.why, "", None));
            }
        }
        match self
            .budget
            .next_wait(failure.is_connect(), failure.retry_after())
        {
            Ok(wait) => {
                log::debug!(
                    "azure: {} {}: {}; retrying in {}",
                    self.what,
                    self.url,
                    failure.describe(&self.call.account),
                    retry::fmt_duration(wait)
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(why) => {
                let hint = match (&self.call.account.proxy, failure.is_connect()) {
                    _ if matches!(failure, Failure::Dragonfly(_)) => format!(
                        "check that dfdaemon runs at {} (BLOBCACHE_DRAGONFLY), or set BLOBCACHE_DRAGONFLY_FALLBACK=1 to go directly to Azure when it fails",
                        self.dragonfly().map_or("", |d| d.host_port())
                    ),
                    (None, true) => {
                        "check the network and the endpoint (BLOBCACHE_AZURE_ENDPOINT, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ENDPOINT_SUFFIX)".to_string()
                    }
                    (Some(p), true) => format!(
                        "check that the proxy {} ({}) runs and is reachable, list the endpoint's host in NO_PROXY to go direct, or set BLOBCACHE_PROXY=off",
                        p.host_port(),
                        p.var
                    ),
                    (_, false) => String::new(),
                };
                if failure.is_connect() {
                    self.call.account.unreachable.store(true, Ordering::Relaxed);
                }
                let kind = if failure.is_connect() {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Origin
                };
                Err(self.fail(
                    kind,
                    &failure.describe(&self.call.account),
                    &hint,
                    Some(&why),
                ))
            }
        }
    }

    /// Signs and sends one attempt, waiting at most the idle limit for the
    /// response headers. The outer error is final (no credential); the
    /// inner one is a failure that may be retried.
    async fn attempt(
        &mut self,
        method: Method,
        headers: &[(&'static str, String)],
    ) -> Result<std::result::Result<Response, Failure>> {
        self.budget.attempts += 1;
        let url = &self.url;
        let mut builder = ::http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(tag) = &self.tag {
            for (name, value) in Dragonfly::headers(tag) {
                builder = builder.header(name, value);
            }
        }
        let mut request: HttpRequest = builder
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::internal(format!("cannot build a request for {url}: {e}")))?;
        self.call
            .account
            .credential
            .authorize(
                &self.call.account.name,
                &mut request,
                self.budget.remaining(),
            )
            .await?;
        let (parts, _) = request.into_parts();
        let idle = self.idle_limit();
        let (client, uri) = match (&self.tag, &self.call.clients.dragonfly) {
            (Some(_), Some((_, client))) => (client, dragonfly::absolute(&parts.uri.to_string())),
            _ => (&self.call.clients.direct, parts.uri.to_string()),
        };
        let pending = client
            .request(parts.method, uri)
            .headers(parts.headers)
            .send();
        let response = match tokio::time::timeout(idle, pending).await {
            Err(_) => {
                let f = Failure::Stalled(format!("no answer within {}", retry::fmt_duration(idle)));
                return Ok(Err(self.body_failure(f)));
            }
            Ok(Err(e)) => {
                let failure = Failure::from_reqwest(&e, idle);
                if let Some(d) = self.dragonfly() {
                    return Ok(Err(Failure::Dragonfly(
                        d.unreachable(&failure.describe_answer()),
                    )));
                }
                if let (Some(p), Failure::Connect(why)) = (&self.call.account.proxy, &failure) {
                    // A tunnel the proxy refused for want of credentials:
                    // no retry changes that.
                    if why.contains("proxy authorization required") {
                        let hint = format!(
                            "the proxy {} refused its credentials; check the user and password in {}",
                            p.host_port(),
                            p.var
                        );
                        return Err(self.fail(
                            ErrorKind::Config,
                            &failure.describe(&self.call.account),
                            &hint,
                            None,
                        ));
                    }
                }
                return Ok(Err(failure));
            }
            Ok(Ok(r)) => r,
        };
        if let Some(d) = self.dragonfly() {
            if let Err(t) = d.judge(response.status(), response.headers()) {
                return Ok(Err(Failure::Dragonfly(t)));
            }
        }
        self.budget.answered();
        self.call
            .account
            .unreachable
            .store(false, Ordering::Relaxed);
        log::debug!(
            "azure: {} {} -> {} (request id {}, attempt {}, {})",
            self.what,
            self.url,
            response.status().as_u16(),
            http::request_id(response.headers())
                .as_deref()
                .unwrap_or("none"),
            self.budget.attempts,
            retry::fmt_duration(self.budget.elapsed())
        );
        Ok(Ok(response))
    }
}

/// Why an attempt got no usable answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request never reached the service (DNS, refused, unreachable,
    /// connect timeout).
    Connect(String),
    /// No answer, or no more of the body, within the idle limit.
    Stalled(String),
    /// The connection broke, or the body ended early.
    Broken(String),
    /// The service answered with an error status.
    Refused(Refusal),
    /// dfdaemon failed, or its answer did not come through P2P (Dragonfly
    /// mode).
    Dragonfly(Trouble),
}

impl Failure {
    fn is_connect(&self) -> bool {
        matches!(self, Failure::Connect(_))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Refused(r) => r.retry_after,
            _ => None,
        }
    }

    fn describe(&self, account: &Account) -> String {
        match (self, &account.proxy) {
            (Failure::Connect(why), None) => {
                format!("cannot connect to {} ({why})", account.endpoint)
            }
            (Failure::Connect(why), Some(p)) => format!(
                "cannot reach {} through the proxy {} ({why})",
                account.endpoint,
                p.host_port()
            ),
            (f @ (Failure::Stalled(_) | Failure::Broken(_)), Some(p)) => {
                format!(
                    "{} (through the proxy {})",
                    f.describe_answer(),
                    p.host_port()
                )
            }
            (f, _) => f.describe_answer(),
        }
    }

    fn describe_answer(&self) -> String {
        match self {
            Failure::Connect(why) => why.clone(),
            Failure::Stalled(why) | Failure::Broken(why) => why.clone(),
            Failure::Refused(r) => r.to_string(),
            Failure::Dragonfly(t) => t.why.clone(),
        }
    }

    fn from_reqwest(e: &reqwest::Error, idle: Duration) -> Failure {
        if e.is_connect() {
            Failure::Connect(http::cause(e))
        } else if e.is_timeout() {
            Failure::Stalled(format!("no answer within {}", retry::fmt_duration(idle)))
        } else {
            Failure::Broken(format!("the connection failed: {}", http::cause(e)))
        }
    }
}

/// An error answer from the service.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) retry_after: Option<Duration>,
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

/// Reads an error response: status, headers and (for GET) the XML body's
/// `<Code>` and `<Message>`.
async fn refusal(response: Response, budget: &Budget) -> Refusal {
    let headers = response.headers().clone();
    let status = response.status();
    let body = read_small_body(response, budget).await;
    let code = http::header(&headers, "x-ms-error-code").or_else(|| xml_field(&body, "Code"));
    let message = xml_field(&body, "Message").map(|m| first_sentence(&m));
    Refusal {
        status,
        code,
        request_id: http::request_id(&headers),
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
