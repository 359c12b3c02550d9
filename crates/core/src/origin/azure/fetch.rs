//! The two operations the cache needs: `stat` (HEAD: size and ETag) and
//! `read` (a ranged GET conditional on the ETag, streamed to the sink), each
//! with retries inside one time budget.
//!
//! A read delivers bytes in order as they arrive, in pieces of at most
//! [`COALESCE`] bytes; a body that breaks or stalls mid-way is resumed from
//! the first byte not yet received (still `If-Match` the same ETag), never
//! restarted. A blob replaced at the origin makes the next request fail with
//! 412, reported as [`ErrorKind::Changed`]: the read fails and the caller
//! discards what it got (the cache never publishes a partial block).

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, Response, StatusCode};

use super::auth::Credential;
use super::endpoint;
use super::http::{self, Failure, Refusal};
use super::retry::{self, Budget};
use crate::error::{Error, ErrorKind, Result};
use crate::log;
use crate::names::BlobKey;
use crate::origin::{Listed, ObjectInfo};

/// Bytes gathered before handing them to the sink (fewer, larger writes).
pub const COALESCE: usize = 256 << 10;

/// One storage account as this origin instance uses it.
pub struct Account {
    pub name: String,
    pub endpoint: String,
    pub credential: Credential,
    /// Set when a call gave up because the endpoint could not be reached;
    /// cleared by any answer. While set, calls do not retry.
    unreachable: AtomicBool,
}

impl Account {
    pub fn new(name: String, endpoint: String, credential: Credential) -> Account {
        Account {
            name,
            endpoint,
            credential,
            unreachable: AtomicBool::new(false),
        }
    }

    fn budget(&self, limit: std::time::Duration) -> Budget {
        Budget::new(limit, !self.unreachable.load(Ordering::Relaxed))
    }
}

/// What one operation needs besides the account.
pub struct Ctx<'a> {
    pub client: &'a reqwest::Client,
    pub fetch_timeout: std::time::Duration,
}

/// Which request, for messages: "HEAD" or "GET bytes=0-99".
struct Op<'a> {
    ctx: &'a Ctx<'a>,
    account: &'a Account,
    url: String,
    what: String,
    budget: Budget,
}

impl Op<'_> {
    /// A final error: what was asked, what happened, what to do, and how
    /// hard it tried.
    fn fail(&self, kind: ErrorKind, detail: &str, hint: &str, stopped: Option<&str>) -> Error {
        let mut m = format!("Azure {} failed: {detail}", self.what);
        if !hint.is_empty() {
            m.push_str("; ");
            m.push_str(hint);
        }
        m.push_str(&format!(
            " [{}, {}",
            self.account.endpoint,
            self.budget.summary()
        ));
        if let Some(s) = stopped {
            m.push_str("; ");
            m.push_str(s);
        }
        m.push(']');
        Error::new(kind, crate::redact::redact(&m))
    }

    fn refused(&self, r: &Refusal) -> Error {
        let account = &self.account.name;
        let (kind, hint) = match r.status.as_u16() {
            401 | 403 => (
                ErrorKind::Config,
                self.account.credential.source.refused_hint(account),
            ),
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
            _ => (ErrorKind::Origin, String::new()),
        };
        self.fail(kind, &r.to_string(), &hint, None)
    }

    /// Handles a failed attempt: waits and returns `Ok` to try again, or
    /// returns the final error.
    /// Sends the request (no extra headers) until the service answers with
    /// success, retrying failures and refusals within the budget.
    async fn answered(&mut self, method: Method) -> Result<reqwest::Response> {
        loop {
            let response = match self.send(&[], method.clone()).await? {
                Ok(r) => r,
                Err(f) => {
                    self.after_failure(f).await?;
                    continue;
                }
            };
            if !response.status().is_success() {
                let r = http::refusal(response, &self.budget).await;
                self.after_failure(Failure::Refused(r)).await?;
                continue;
            }
            return Ok(response);
        }
    }

    async fn after_failure(&mut self, failure: Failure) -> Result<()> {
        if let Failure::Refused(r) = &failure {
            if !failure.retryable() {
                return Err(self.refused(r));
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
                    failure.describe(&self.account.endpoint),
                    retry::fmt_duration(wait)
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(why) => {
                let hint = if failure.is_connect() {
                    self.account.unreachable.store(true, Ordering::Relaxed);
                    "check the network and the endpoint (BLOBCACHE_AZURE_ENDPOINT, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ENDPOINT_SUFFIX)"
                } else {
                    ""
                };
                let kind = if failure.is_connect() {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Origin
                };
                Err(self.fail(
                    kind,
                    &failure.describe(&self.account.endpoint),
                    hint,
                    Some(&why),
                ))
            }
        }
    }

    async fn send(
        &mut self,
        headers: &[(&'static str, String)],
        method: Method,
    ) -> Result<Result<Response, Failure>> {
        self.budget.attempts += 1;
        let r = http::send(
            self.ctx.client,
            &self.account.credential,
            &self.account.name,
            method,
            &self.url,
            headers,
            &self.budget,
        )
        .await?;
        if let Ok(resp) = &r {
            self.budget.answered();
            self.account.unreachable.store(false, Ordering::Relaxed);
            log::debug!(
                "azure: {} {} -> {} (request id {}, attempt {}, {})",
                self.what,
                self.url,
                resp.status().as_u16(),
                http::request_id(resp.headers())
                    .as_deref()
                    .unwrap_or("none"),
                self.budget.attempts,
                retry::fmt_duration(self.budget.elapsed())
            );
        }
        Ok(r)
    }
}

/// Looks up the blob's size and ETag (HEAD). With `quick`, a connection
/// failure is not retried (the caller has a cached copy to serve).
pub async fn stat(
    ctx: &Ctx<'_>,
    account: &Account,
    key: &BlobKey,
    quick: bool,
) -> Result<ObjectInfo> {
    let budget = account.budget(ctx.fetch_timeout);
    let mut op = Op {
        ctx,
        account,
        url: endpoint::blob_url(&account.endpoint, &key.container, &key.blob),
        what: "HEAD".into(),
        budget: if quick {
            budget.without_connect_retries()
        } else {
            budget
        },
    };
    let response = op.answered(Method::HEAD).await?;
    let h = response.headers();
    // Not `response.content_length()`: for HEAD that is the (empty) body's.
    let size = http::header(h, "content-length").and_then(|v| v.parse::<u64>().ok());
    let etag = http::header(h, "etag");
    match (size, etag) {
        (Some(size), Some(version)) => Ok(ObjectInfo { size, version }),
        _ => Err(op.fail(
            ErrorKind::Origin,
            &format!(
                "the answer (HTTP {}, request id {}) has no Content-Length or ETag",
                response.status().as_u16(),
                http::request_id(h).as_deref().unwrap_or("none")
            ),
            "is the endpoint an Azure Blob Storage endpoint?",
            None,
        )),
    }
}

/// Lists the blobs of `container` whose names start with `prefix` (List
/// Blobs, `page_size` names per request, following `NextMarker`).
pub async fn list(
    ctx: &Ctx<'_>,
    account: &Account,
    container: &str,
    prefix: &str,
    page_size: u32,
) -> Result<Vec<Listed>> {
    let mut base = endpoint::blob_url(&account.endpoint, container, "");
    base.pop(); // the trailing '/' of the empty blob name
    base.push_str("?restype=container&comp=list");
    if !prefix.is_empty() {
        base.push_str("&prefix=");
        endpoint::encode_into(&mut base, prefix);
    }
    base.push_str(&format!("&maxresults={page_size}"));
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut url = base.clone();
        if let Some(m) = &marker {
            url.push_str("&marker=");
            endpoint::encode_into(&mut url, m);
        }
        let mut op = Op {
            ctx,
            account,
            url,
            what: format!("List Blobs of container {container} (prefix {prefix:?})"),
            budget: account.budget(ctx.fetch_timeout),
        };
        let body = loop {
            let response = op.answered(Method::GET).await?;
            let idle = op.budget.idle_limit();
            match tokio::time::timeout(idle, response.text()).await {
                Ok(Ok(text)) => break text,
                Ok(Err(e)) => {
                    op.after_failure(Failure::Broken(format!(
                        "the listing broke off: {}",
                        http::cause(&e)
                    )))
                    .await?
                }
                Err(_) => {
                    op.after_failure(Failure::Stalled(format!(
                        "the listing stalled for {}",
                        retry::fmt_duration(idle)
                    )))
                    .await?
                }
            }
        };
        let (page, next) = parse_listing(&body).map_err(|why| {
            op.fail(
                ErrorKind::Origin,
                &format!("the listing is not valid List Blobs XML: {why}"),
                "is the endpoint an Azure Blob Storage endpoint?",
                None,
            )
        })?;
        out.extend(page);
        match next {
            Some(m) if Some(&m) != marker.as_ref() => marker = Some(m),
            Some(_) => {
                return Err(op.fail(
                    ErrorKind::Origin,
                    "the listing repeated its continuation marker",
                    "",
                    None,
                ))
            }
            None => break,
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Parses one page of a List Blobs answer: the blobs (name and
/// `Content-Length`) and the `NextMarker`, if any.
pub fn parse_listing(xml: &str) -> std::result::Result<(Vec<Listed>, Option<String>), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    // Element names from the root down, and the text of the innermost one.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut blobs = Vec::new();
    let mut name: Option<String> = None;
    let mut size: Option<u64> = None;
    let mut next = None;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    text.push(c);
                } else {
                    let n = r.decode().map_err(|e| e.to_string())?;
                    let v = quick_xml::escape::resolve_predefined_entity(&n)
                        .ok_or_else(|| format!("unknown entity &{n};"))?;
                    text.push_str(v);
                }
            }
            Event::End(_) => {
                let inner: Vec<&str> = path.iter().map(String::as_str).collect();
                match inner.as_slice() {
                    [.., "Blobs", "Blob", "Name"] => name = Some(std::mem::take(&mut text)),
                    [.., "Blob", "Properties", "Content-Length"] => {
                        size =
                            Some(text.trim().parse().map_err(|_| {
                                format!("Content-Length {:?} is not a number", text)
                            })?)
                    }
                    [.., "Blobs", "Blob"] => {
                        let n = name.take().ok_or("a <Blob> without <Name>")?;
                        let s = size.take().ok_or("a <Blob> without <Content-Length>")?;
                        blobs.push(Listed { name: n, size: s });
                    }
                    ["EnumerationResults", "NextMarker"] => {
                        let m = std::mem::take(&mut text);
                        next = (!m.trim().is_empty()).then_some(m);
                    }
                    _ => {}
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((blobs, next))
}

/// Parses `bytes <first>-<last>/<total>`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

/// Checks that a 2xx answer to `bytes=pos-(end-1)` holds exactly those bytes
/// of this version of the blob.
fn check_answer(
    op: &Op<'_>,
    response: &Response,
    info: &ObjectInfo,
    pos: u64,
    end: u64,
) -> Result<()> {
    let h = response.headers();
    let rid = http::request_id(h);
    let rid = rid.as_deref().unwrap_or("none");
    if let Some(etag) = http::header(h, "etag") {
        if etag.trim_matches('"') != info.version.trim_matches('"') {
            return Err(op.fail(
                ErrorKind::Changed,
                &format!("the blob was replaced at the origin during the load (ETag {} became {etag}, request id {rid})", info.version),
                "retry the load to read the new version",
                None,
            ));
        }
    }
    let length = http::header(h, "content-length").and_then(|v| v.parse::<u64>().ok());
    let range = http::header(h, "content-range");
    let ok = match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            range.as_deref().and_then(content_range) == Some((pos, end - 1, info.size))
                && length.map_or(true, |l| l == end - pos)
        }
        // A whole-blob answer is fine when the whole blob was asked for.
        StatusCode::OK => pos == 0 && end == info.size && length == Some(end),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let answered = format!(
        "Azure answered HTTP {} with Content-Range {} and Content-Length {} (request id {rid}) to Range bytes={pos}-{}",
        response.status().as_u16(),
        range.as_deref().unwrap_or("(none)"),
        length.map_or("(none)".to_string(), |l| l.to_string()),
        end - 1
    );
    let total = range.as_deref().and_then(content_range).map(|(_, _, t)| t);
    if end > info.size || total.is_some_and(|t| t < end) {
        let size = total.unwrap_or(info.size);
        return Err(op.fail(
            ErrorKind::OutOfRange,
            &answered,
            &format!("the blob has {size} bytes, so bytes {pos}..{end} do not all exist"),
            None,
        ));
    }
    Err(op.fail(
        ErrorKind::Origin,
        &answered,
        "refusing an answer that does not match the request",
        None,
    ))
}

/// Delivers bytes `[offset, offset + len)` of the blob at version
/// `info.version` to `sink`, in order.
pub async fn read<S>(
    ctx: &Ctx<'_>,
    account: &Account,
    key: &BlobKey,
    info: &ObjectInfo,
    offset: u64,
    len: u64,
    sink: &mut S,
) -> Result<()>
where
    S: FnMut(&[u8]) -> Result<()> + ?Sized,
{
    if len == 0 {
        return Ok(());
    }
    let end = offset.checked_add(len).ok_or_else(|| {
        Error::new(
            ErrorKind::OutOfRange,
            "offset + length overflows a 64-bit byte count",
        )
    })?;
    let mut op = Op {
        ctx,
        account,
        url: endpoint::blob_url(&account.endpoint, &key.container, &key.blob),
        what: format!("GET bytes={offset}-{}", end - 1),
        budget: account.budget(ctx.fetch_timeout),
    };
    // Bytes received: `[offset, pos)`; those not yet given to the sink are
    // the tail of `pending`.
    let mut pos = offset;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let headers = [
            ("range", format!("bytes={pos}-{}", end - 1)),
            ("if-match", info.version.clone()),
        ];
        let mut response = match op.send(&headers, Method::GET).await? {
            Ok(r) => r,
            Err(f) => {
                op.after_failure(f).await?;
                continue;
            }
        };
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED {
            let r = http::refusal(response, &op.budget).await;
            return Err(op.fail(
                ErrorKind::Changed,
                &format!("the blob was replaced at the origin during the load ({r}; it no longer has ETag {})", info.version),
                "the load must be retried to read the new version",
                None,
            ));
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            let r = http::refusal(response, &op.budget).await;
            return Err(op.fail(
                ErrorKind::OutOfRange,
                &r.to_string(),
                &format!(
                    "bytes {pos}..{end} lie past the end of the blob ({} bytes)",
                    info.size
                ),
                None,
            ));
        }
        if !status.is_success() {
            let r = http::refusal(response, &op.budget).await;
            op.after_failure(Failure::Refused(r)).await?;
            continue;
        }
        check_answer(&op, &response, info, pos, end)?;
        // Stream the body.
        let failure = loop {
            let idle = op.budget.idle_limit();
            match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => {
                    break Failure::Stalled(format!(
                        "the response stalled: no bytes for {} at byte {}",
                        retry::fmt_duration(idle),
                        pos
                    ))
                }
                Ok(Err(e)) => {
                    break Failure::Broken(format!(
                        "the response broke off at byte {pos}: {}",
                        http::cause(&e)
                    ))
                }
                Ok(Ok(None)) if pos == end => {
                    if !pending.is_empty() {
                        sink(&pending)?;
                    }
                    return Ok(());
                }
                Ok(Ok(None)) => {
                    break Failure::Broken(format!(
                        "the response ended early at byte {pos} of {offset}..{end}"
                    ))
                }
                Ok(Ok(Some(chunk))) => {
                    if chunk.len() as u64 > end - pos {
                        return Err(op.fail(
                            ErrorKind::Origin,
                            "Azure sent more bytes than the range holds",
                            "",
                            None,
                        ));
                    }
                    pos += chunk.len() as u64;
                    op.budget.progressed();
                    if pending.is_empty() && chunk.len() >= COALESCE {
                        sink(&chunk)?;
                    } else {
                        if pending.capacity() == 0 {
                            pending.reserve_exact(COALESCE.min(len as usize));
                        }
                        pending.extend_from_slice(&chunk);
                        if pending.len() >= COALESCE {
                            sink(&pending)?;
                            pending.clear();
                        }
                    }
                }
            }
        };
        // The bytes so far are good: hand them over, then resume after them.
        if !pending.is_empty() {
            sink(&pending)?;
            pending.clear();
        }
        op.after_failure(failure).await?;
        op.what = format!("GET bytes={offset}-{} (resumed at {pos})", end - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_yields_names_with_entities_resolved_sizes_and_the_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>a</Prefix><MaxResults>2</MaxResults>
<Blobs><Blob><Name>a/b &amp; c&#233;.bin</Name><Properties><Content-Length>12</Content-Length><Etag>"0x1"</Etag></Properties></Blob>
<Blob><Name>a/d&lt;e&gt;</Name><Properties><Content-Length>0</Content-Length></Properties><Metadata><Name>not a blob</Name></Metadata></Blob></Blobs>
<NextMarker>/acct/c/a/z</NextMarker></EnumerationResults>"#;
        let (blobs, next) = parse_listing(xml).unwrap();
        assert_eq!(
            blobs,
            [
                Listed {
                    name: "a/b & cé.bin".into(),
                    size: 12
                },
                Listed {
                    name: "a/d<e>".into(),
                    size: 0
                }
            ]
        );
        assert_eq!(next.as_deref(), Some("/acct/c/a/z"));
        let last = "<EnumerationResults><Blobs/><NextMarker /></EnumerationResults>";
        assert_eq!(parse_listing(last).unwrap(), (vec![], None));
        assert!(parse_listing(
            "<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs></EnumerationResults>"
        )
        .is_err());
    }

    #[test]
    fn content_range_parses_and_rejects_junk() {
        assert_eq!(content_range("bytes 0-99/100"), Some((0, 99, 100)));
        assert_eq!(content_range("bytes 100-99/100"), Some((100, 99, 100)));
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }
}
