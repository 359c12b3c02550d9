//! List Blobs: the names and sizes of a container's blobs under a prefix,
//! page by page, and parsing the service's XML.

use reqwest::Method;

use super::endpoint;
use super::http;
use super::request::{Call, Failure};
use super::retry;
use crate::error::{ErrorKind, Result};
use crate::origin::Listed;

/// Lists the blobs of `container` whose names start with `prefix` (List
/// Blobs, `page_size` names per request, following `NextMarker`).
pub(crate) async fn list(
    call: Call,
    container: &str,
    prefix: &str,
    page_size: u32,
) -> Result<Vec<Listed>> {
    let mut base = endpoint::blob_url(&call.account.endpoint, container, "");
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
        let what = format!("List Blobs of container {container} (prefix {prefix:?})");
        let mut req = call.request(url, what);
        let body = loop {
            let response = req.answered(Method::GET).await?;
            let idle = req.budget.idle_limit();
            match tokio::time::timeout(idle, response.text()).await {
                Ok(Ok(text)) => break text,
                Ok(Err(e)) => {
                    req.after_failure(Failure::Broken(format!(
                        "the listing broke off: {}",
                        http::cause(&e)
                    )))
                    .await?
                }
                Err(_) => {
                    req.after_failure(Failure::Stalled(format!(
                        "the listing stalled for {}",
                        retry::fmt_duration(idle)
                    )))
                    .await?
                }
            }
        };
        let (page, next) = parse_listing(&body).map_err(|why| {
            req.fail(
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
                return Err(req.fail(
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
fn parse_listing(xml: &str) -> std::result::Result<(Vec<Listed>, Option<String>), String> {
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
}
