//! The two operations reads need: `stat` (HEAD: size and ETag) and `read`
//! (a ranged GET conditional on the ETag, streamed to the sink), each with
//! retries inside one time budget.
//!
//! A read delivers bytes in order as they arrive, in pieces of at most
//! [`COALESCE`] bytes; a body that breaks or stalls mid-way is resumed from
//! the first byte not yet received (still `If-Match` the same ETag), never
//! restarted. A blob replaced at the origin makes the next request fail with
//! 412, reported as [`ErrorKind::Changed`]: the read fails and the caller
//! discards what it got (the cache never publishes a partial block).
//!
//! Through a proxy, which may be a shared cache: `stat` asks with
//! `Cache-Control: no-cache`, so the version always comes from the origin
//! (a cache revalidates); a GET whose answer is a 412 or carries another
//! ETag (a cache holding an older version) is sent once more with
//! `Cache-Control: no-cache`, which makes the cache fetch the current
//! version from the origin. Only if that answer is still not this version
//! does the read fail as changed. Either way the ETag of every answer is
//! checked, so a cache can cost a retry but never deliver another
//! version's bytes.

use std::sync::atomic::Ordering;

use reqwest::{Method, Response, StatusCode};

use super::endpoint;
use super::http;
use super::request::{Call, Failure, Request};
use super::retry;
use crate::error::{Error, ErrorKind, Result};
use crate::names::BlobKey;
use crate::origin::ObjectInfo;

/// Bytes gathered before handing them to the sink (fewer, larger writes).
const COALESCE: usize = 256 << 10;

/// Looks up the blob's size and ETag (HEAD). With `quick`, a connection
/// failure is not retried (the caller has a cached copy to serve).
pub(crate) async fn stat(call: Call, key: &BlobKey, quick: bool) -> Result<ObjectInfo> {
    let url = endpoint::blob_url(&call.account.endpoint, &key.container, &key.blob);
    let mut req = call.request(url, "HEAD".into());
    if quick {
        req.budget = req.budget.without_connect_retries();
    }
    // Through a shared cache the version must come from the origin.
    let mut headers = Vec::new();
    if call.account.proxy.is_some() {
        headers.push(("cache-control", "no-cache".to_string()));
    }
    let response = match req.answer(Method::HEAD, &headers).await? {
        Ok(r) => r,
        Err(r) => return Err(req.refused(&r)),
    };
    let h = response.headers();
    // Not `response.content_length()`: for HEAD that is the (empty) body's.
    let size = http::header(h, "content-length").and_then(|v| v.parse::<u64>().ok());
    let etag = http::header(h, "etag");
    match (size, etag) {
        (Some(size), Some(version)) => Ok(ObjectInfo { size, version }),
        _ => Err(req.fail(
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

/// What a GET through a proxy did about an answer of another version (a
/// 412, or another ETag): nothing yet, asking past the cache next (unless
/// another request refreshed it since `seen`), asked again plainly after
/// another's refresh, or refreshed. Without a proxy such an answer is
/// final at once.
#[derive(Clone, Copy, Debug)]
enum Stale {
    Direct,
    Fresh,
    Refresh { seen: u64 },
    AskedAgain,
    Refreshed,
}

impl Stale {
    fn new(call: &Call, req: &Request<'_>) -> Stale {
        // dfdaemon's task is the version itself: nothing to refresh.
        if call.account.proxy.is_some() && req.dragonfly().is_none() {
            Stale::Fresh
        } else {
            Stale::Direct
        }
    }

    /// Whether another answer of another version may be asked again.
    fn may_refresh(self) -> bool {
        matches!(self, Stale::Fresh | Stale::AskedAgain)
    }
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
    req: &Request<'_>,
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
            return Err(req.fail(
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
        return Err(req.fail(
            ErrorKind::OutOfRange,
            &answered,
            &format!("the blob has {size} bytes, so bytes {pos}..{end} do not all exist"),
            None,
        ));
    }
    Err(req.fail(
        ErrorKind::Origin,
        &answered,
        "refusing an answer that does not match the request",
        None,
    ))
}

/// Delivers bytes `[offset, offset + len)` of the blob at version
/// `info.version` to `sink`, in order.
pub(crate) async fn read<S>(
    call: Call,
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
    let url = endpoint::blob_url(&call.account.endpoint, &key.container, &key.blob);
    let mut req = call.request(url, format!("GET bytes={offset}-{}", end - 1));
    req.through_dragonfly(&info.version);
    // Bytes received: `[offset, pos)`; those not yet given to the sink are
    // the tail of `pending`.
    let mut pos = offset;
    let mut pending: Vec<u8> = Vec::new();
    // Through a proxy (maybe a shared cache holding an older version):
    // what this GET did about an answer of another version.
    let mut stale = Stale::new(&call, &req);
    loop {
        let mut headers = vec![
            ("range", format!("bytes={pos}-{}", end - 1)),
            ("if-match", info.version.clone()),
        ];
        // One refresh at a time per account: the others then find the
        // cache refreshed and ask it again plainly.
        // The wait for another's refresh is bounded by this request's
        // budget; past it, this one refreshes without waiting.
        let refreshing = match stale {
            Stale::Refresh { seen } => {
                let lock = call.account.refresh_lock.lock();
                let guard = tokio::time::timeout(req.budget.remaining(), lock)
                    .await
                    .ok();
                if call.account.refreshes.load(Ordering::SeqCst) != seen {
                    stale = Stale::AskedAgain;
                    None
                } else {
                    headers.push(("cache-control", "no-cache".to_string()));
                    Some(guard)
                }
            }
            _ => None,
        };
        let seen = call.account.refreshes.load(Ordering::SeqCst);
        let answer = req.answer(Method::GET, &headers).await;
        if let Some(guard) = refreshing {
            call.account.refreshes.fetch_add(1, Ordering::SeqCst);
            drop(guard);
            stale = Stale::Refreshed;
        }
        let mut response = match answer? {
            Ok(r) => r,
            Err(r) if r.status == StatusCode::PRECONDITION_FAILED && stale.may_refresh() => {
                crate::log::debug!(
                    "azure: {} {key}: {r} through the proxy; asking again past its cache",
                    req.what
                );
                stale = Stale::Refresh { seen };
                continue;
            }
            Err(r) if r.status == StatusCode::PRECONDITION_FAILED => {
                return Err(req.fail(
                    ErrorKind::Changed,
                    &format!("the blob was replaced at the origin during the load ({r}; it no longer has ETag {})", info.version),
                    "the load must be retried to read the new version",
                    None,
                ));
            }
            Err(r) if r.status == StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(req.fail(
                    ErrorKind::OutOfRange,
                    &r.to_string(),
                    &format!(
                        "bytes {pos}..{end} lie past the end of the blob ({} bytes)",
                        info.size
                    ),
                    None,
                ));
            }
            Err(r) => return Err(req.refused(&r)),
        };
        match check_answer(&req, &response, info, pos, end) {
            Err(e) if e.kind() == ErrorKind::Changed && stale.may_refresh() => {
                crate::log::debug!(
                    "azure: {} {key}: an answer of another version through the proxy; asking again past its cache",
                    req.what
                );
                stale = Stale::Refresh { seen };
                continue;
            }
            r => r?,
        }
        // Stream the body.
        let failure = loop {
            let idle = req.idle_limit();
            match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => {
                    break req.body_failure(Failure::Stalled(format!(
                        "the response stalled: no bytes for {} at byte {}",
                        retry::fmt_duration(idle),
                        pos
                    )))
                }
                Ok(Err(e)) => {
                    break req.body_failure(Failure::Broken(format!(
                        "the response broke off at byte {pos}: {}",
                        http::cause(&e)
                    )))
                }
                Ok(Ok(None)) if pos == end => {
                    if !pending.is_empty() {
                        sink(&pending)?;
                    }
                    return Ok(());
                }
                Ok(Ok(None)) => {
                    break req.body_failure(Failure::Broken(format!(
                        "the response ended early at byte {pos} of {offset}..{end}"
                    )))
                }
                Ok(Ok(Some(chunk))) => {
                    if chunk.len() as u64 > end - pos {
                        return Err(req.fail(
                            ErrorKind::Origin,
                            "Azure sent more bytes than the range holds",
                            "",
                            None,
                        ));
                    }
                    pos += chunk.len() as u64;
                    req.budget.progressed();
                    if let Some(d) = req.dragonfly() {
                        d.received(chunk.len() as u64);
                    }
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
        req.after_failure(failure).await?;
        req.what = format!("GET bytes={offset}-{} (resumed at {pos})", end - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_and_rejects_junk() {
        assert_eq!(content_range("bytes 0-99/100"), Some((0, 99, 100)));
        assert_eq!(content_range("bytes 100-99/100"), Some((100, 99, 100)));
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }
}
