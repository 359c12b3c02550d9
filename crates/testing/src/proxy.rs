//! A loopback HTTP/1.1 proxy in front of Azurite that counts requests and
//! injects faults: error statuses (with `Retry-After`), bodies that break,
//! stall or pause mid-way, and answers that never come.
//!
//! Faults are queued per method and each applies to one request, in order.
//!
//! It also stands as a forward proxy ([`Proxy::add_answer_header`] and
//! absolute-form requests): a request whose target is `http://host:port/path`
//! is recorded with its whole head and sent to Azurite in origin form, and
//! the answer may be given extra headers, as Dragonfly's dfdaemon adds
//! `X-Dragonfly-Task-ID` to the answers it serves through P2P.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What to do to one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and an Azure-style error body; not forwarded.
    Status { code: u16, retry_after: Option<u64> },
    /// Forward; pass the answer's head and `after` body bytes, then close.
    CutBody { after: usize },
    /// Forward; pass the head and `after` body bytes, then send nothing for
    /// `stall`, then close.
    StallBody { after: usize, stall: Duration },
    /// Send nothing for `stall`, then close (never forwarded).
    StallHead { stall: Duration },
    /// Forward; pass the head and `after` body bytes, report that through
    /// the gate, wait until the gate opens, then close.
    PauseBody { after: usize, gate: Gate },
    /// Forward; pass the head and `after` body bytes, then reset the
    /// connection (RST, not FIN).
    Reset { after: usize },
    /// Forward, passing the body `chunk` bytes at a time with `every`
    /// between chunks.
    Trickle { chunk: usize, every: Duration },
    /// Answer with this status, echoing the request's head (its target with
    /// any query string, and every header, Authorization included) in the
    /// error body's message and in a header, as a careless or hostile
    /// server might; not forwarded.
    Reflect { code: u16 },
}

/// Lets a test act while the proxy holds a response mid-body.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<(Mutex<u8>, Condvar)>);

impl Gate {
    fn set(&self, v: u8) {
        *self.0 .0.lock().unwrap() = v;
        self.0 .1.notify_all();
    }

    fn wait_for(&self, v: u8, timeout: Duration) -> bool {
        let g = self.0 .0.lock().unwrap();
        let (g, _) = self
            .0
             .1
            .wait_timeout_while(g, timeout, |s| *s < v)
            .unwrap();
        *g >= v
    }

    /// Waits until the proxy holds the response; false on timeout.
    pub fn wait_paused(&self, timeout: Duration) -> bool {
        self.wait_for(1, timeout)
    }

    /// Lets the proxy go on (it then closes the connection).
    pub fn open(&self) {
        self.set(2);
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    pub status: u16,
    pub fault: Option<String>,
    /// The Authorization header's scheme and first 16 characters.
    pub authorization: Option<String>,
    /// The request's head: its line and every header (the test's own
    /// credentials included).
    pub head: String,
}

/// A method, the faults applied in turn, and the next one's index.
type Rule = (String, Vec<Option<Fault>>, usize);

struct State {
    upstream: u16,
    faults: Mutex<VecDeque<(String, Option<String>, Fault)>>,
    /// Per method: faults applied in turn, round and round, to requests
    /// that no queued fault claims (`None`: pass the request untouched).
    rules: Mutex<Vec<Rule>>,
    /// Full Authorization values of the requests a Reflect fault echoed.
    reflected: Mutex<Vec<String>>,
    ranged_gets: AtomicUsize,
    requests: AtomicUsize,
    /// Response body bytes passed from upstream to the client.
    body_bytes: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// Header lines added to every answer passed from upstream.
    answer_headers: Mutex<Vec<String>>,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            faults: Mutex::new(VecDeque::new()),
            rules: Mutex::new(Vec::new()),
            reflected: Mutex::new(Vec::new()),
            ranged_gets: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            answer_headers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Proxy { port, state }
    }

    /// A `BLOBCACHE_AZURE_ENDPOINT` template through this proxy.
    pub fn template(&self) -> String {
        format!("http://127.0.0.1:{}/{{account}}", self.port)
    }

    /// Queues a fault for the next request with this method.
    pub fn inject(&self, method: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .push_back((method.to_string(), None, fault));
    }

    /// Queues a fault for the next request with this method and exactly this
    /// Range header (`bytes=first-last`).
    pub fn inject_for_range(&self, method: &str, range: &str, fault: Fault) {
        self.state.faults.lock().unwrap().push_back((
            method.to_string(),
            Some(range.to_string()),
            fault,
        ));
    }

    /// Applies `cycle` in turn to every later request with this method
    /// that no queued fault claims (replacing an earlier rule).
    pub fn rule(&self, method: &str, cycle: Vec<Option<Fault>>) {
        let mut r = self.state.rules.lock().unwrap();
        r.retain(|(m, _, _)| m != method);
        if !cycle.is_empty() {
            r.push((method.to_string(), cycle, 0));
        }
    }

    /// The Authorization values of requests answered by a Reflect fault.
    pub fn reflected_authorizations(&self) -> Vec<String> {
        self.state.reflected.lock().unwrap().clone()
    }

    /// GET requests that carried a Range header.
    pub fn ranged_gets(&self) -> usize {
        self.state.ranged_gets.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Response body bytes passed from upstream (Azurite) to the client so
    /// far, counted as they pass (a body cut short counts what passed).
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Adds `line` (`Name: value`) to every later answer passed from
    /// upstream.
    pub fn add_answer_header(&self, line: &str) {
        self.state
            .answer_headers
            .lock()
            .unwrap()
            .push(line.to_string());
    }

    /// `http://127.0.0.1:<port>`: this proxy's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads a message head (through the blank line); None at a clean EOF.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn error_answer(code: u16, retry_after: Option<u64>, id: usize, with_body: bool) -> Vec<u8> {
    let (reason, azure) = match code {
        429 => ("Too Many Requests", "TooManyRequests"),
        500 => ("Internal Server Error", "InternalError"),
        503 => ("Service Unavailable", "ServerBusy"),
        _ => ("Error", "InjectedError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{azure}</Code><Message>Injected by the test proxy.\nRequestId:proxy-{id}</Message></Error>"
    );
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-ms-request-id: proxy-{id}\r\nx-ms-error-code: {azure}\r\n",
        body.len()
    );
    if let Some(s) = retry_after {
        head.push_str(&format!("Retry-After: {s}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn serve(client: TcpStream, st: &State) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        let Some(head) = read_head(&mut from_client)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut first = text.split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let range = header(&text, "range").map(str::to_string);
        let mut body = vec![
            0u8;
            header(&text, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        ];
        from_client.read_exact(&mut body)?;
        let id = st.requests.fetch_add(1, Ordering::SeqCst);
        if method == "GET" && range.is_some() {
            st.ranged_gets.fetch_add(1, Ordering::SeqCst);
        }
        let fault = {
            let mut q = st.faults.lock().unwrap();
            let i = q
                .iter()
                .position(|(m, r, _)| *m == method && (r.is_none() || *r == range));
            i.and_then(|i| q.remove(i)).map(|(_, _, f)| f).or_else(|| {
                let mut rules = st.rules.lock().unwrap();
                let (_, cycle, next) = rules.iter_mut().find(|(m, _, _)| *m == method)?;
                let f = cycle[*next % cycle.len()].clone();
                *next += 1;
                f
            })
        };
        let mut seen = Seen {
            method: method.clone(),
            target,
            range,
            status: 0,
            fault: fault.as_ref().map(|f| format!("{f:?}")),
            authorization: header(&text, "authorization").map(|v| v.chars().take(16).collect()),
            head: text.clone(),
        };
        // Absolute form (a forward proxy's request): origin form upstream.
        let head = match origin_form(&text) {
            Some(h) => h.into_bytes(),
            None => head,
        };
        match &fault {
            Some(Fault::Status { code, retry_after }) => {
                seen.status = *code;
                st.seen.lock().unwrap().push(seen);
                to_client.write_all(&error_answer(*code, *retry_after, id, method != "HEAD"))?;
                continue;
            }
            Some(Fault::Reflect { code }) => {
                seen.status = *code;
                st.seen.lock().unwrap().push(seen);
                if let Some(a) = header(&text, "authorization") {
                    st.reflected.lock().unwrap().push(a.to_string());
                }
                to_client.write_all(&reflect_answer(*code, &text, method != "HEAD"))?;
                continue;
            }
            Some(Fault::StallHead { stall }) => {
                st.seen.lock().unwrap().push(seen);
                std::thread::sleep(*stall);
                return Ok(());
            }
            _ => {}
        }
        if upstream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", st.upstream))?;
            upstream = Some((BufReader::new(s.try_clone()?), s));
        }
        let (from_up, to_up) = upstream.as_mut().unwrap();
        to_up.write_all(&head)?;
        to_up.write_all(&body)?;
        let rhead = read_head(from_up)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let rtext = String::from_utf8_lossy(&rhead).into_owned();
        seen.status = rtext
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        st.seen.lock().unwrap().push(seen.clone());
        let extra = st.answer_headers.lock().unwrap().clone();
        if extra.is_empty() {
            to_client.write_all(&rhead)?;
        } else {
            let mut h = rtext.trim_end_matches("\r\n").to_string();
            for line in extra {
                h.push_str("\r\n");
                h.push_str(&line);
            }
            h.push_str("\r\n\r\n");
            to_client.write_all(h.as_bytes())?;
        }
        if method == "HEAD" || seen.status == 204 || seen.status == 304 {
            continue;
        }
        if let Some(len) = header(&rtext, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            let after = match &fault {
                Some(Fault::CutBody { after })
                | Some(Fault::StallBody { after, .. })
                | Some(Fault::PauseBody { after, .. })
                | Some(Fault::Reset { after }) => (*after).min(len),
                _ => len,
            };
            if let Some(Fault::Trickle { chunk, every }) = &fault {
                let mut left = len;
                while left > 0 {
                    let n = left.min((*chunk).max(1));
                    copy_exact(from_up, &mut to_client, n)?;
                    to_client.flush()?;
                    left -= n;
                    if left > 0 {
                        std::thread::sleep(*every);
                    }
                }
                continue;
            }
            copy_counted(from_up, &mut to_client, after, &st.body_bytes)?;
            to_client.flush()?;
            match fault {
                Some(Fault::CutBody { .. }) => return Ok(()),
                Some(Fault::Reset { .. }) => {
                    reset_on_close(&to_client);
                    return Ok(());
                }
                Some(Fault::StallBody { stall, .. }) => {
                    std::thread::sleep(stall);
                    return Ok(());
                }
                Some(Fault::PauseBody { gate, .. }) => {
                    gate.set(1);
                    gate.wait_for(2, Duration::from_secs(60));
                    return Ok(());
                }
                _ => {}
            }
        } else if header(&rtext, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut line = Vec::new();
                from_up.read_until(b'\n', &mut line)?;
                to_client.write_all(&line)?;
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&line)
                        .trim()
                        .split(';')
                        .next()
                        .unwrap_or(""),
                    16,
                )
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                copy_exact(from_up, &mut to_client, size + 2)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            io::copy(from_up, &mut to_client)?;
            return Ok(());
        }
    }
}

/// A request head whose target is in absolute form (`GET http://h:p/x
/// HTTP/1.1`), in origin form (`GET /x HTTP/1.1`); `None` when it already
/// is.
fn origin_form(head: &str) -> Option<String> {
    let (line, rest) = head.split_once("\r\n")?;
    let mut parts = line.splitn(3, ' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let after = target.strip_prefix("http://")?;
    let path = after.find('/').map_or("/", |i| &after[i..]);
    Some(format!("{method} {path} {version}\r\n{rest}"))
}

/// Makes the coming close send RST instead of FIN (SO_LINGER of 0); for
/// test servers that reset their connections too.
pub fn reset_on_close(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger struct for the socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// An Azure-style error whose message, error detail and a header echo the
/// request: its Authorization value and target (with any SAS query) first,
/// then the whole head.
fn reflect_answer(code: u16, request_head: &str, with_body: bool) -> Vec<u8> {
    let target = request_head.split_whitespace().nth(1).unwrap_or("");
    let auth = header(request_head, "authorization").unwrap_or("none");
    let echoed = request_head.trim_end().replace("\r\n", " | ");
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Authorization {} for {} refused; request was {}\nRequestId:reflect</Message><AuthenticationErrorDetail>{}</AuthenticationErrorDetail></Error>",
        esc(auth),
        esc(target),
        esc(&echoed),
        esc(&echoed)
    );
    let mut out = format!(
        "HTTP/1.1 {code} Reflected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-ms-request-id: reflect {auth}\r\nx-ms-error-code: AuthenticationFailed {auth}\r\nx-echo: {}\r\n\r\n",
        body.len(),
        echoed.replace(['\r', '\n'], " ")
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// [`copy_exact`] in pieces, adding each piece to `count` once written.
fn copy_counted(
    from: &mut impl Read,
    to: &mut impl Write,
    n: usize,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let piece = left.min(256 << 10);
        copy_exact(from, to, piece)?;
        count.fetch_add(piece as u64, Ordering::SeqCst);
        left -= piece;
    }
    Ok(())
}

fn copy_exact(from: &mut impl Read, to: &mut impl Write, n: usize) -> io::Result<()> {
    let copied = io::copy(&mut from.take(n as u64), to)?;
    if copied as usize != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A stand-in for the Entra ID token endpoint (`AZURE_AUTHORITY_HOST`):
/// answers every request with the same bearer token and counts them.
pub struct TokenServer {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
}

pub const TOKEN: &str = "test-access-token-1234";

impl TokenServer {
    pub fn start() -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let n = n.clone();
                std::thread::spawn(move || -> io::Result<()> {
                    let mut r = BufReader::new(conn.try_clone()?);
                    let mut w = conn;
                    while let Some(head) = read_head(&mut r)? {
                        let text = String::from_utf8_lossy(&head).into_owned();
                        let len = header(&text, "content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        io::copy(&mut (&mut r).take(len), &mut io::sink())?;
                        n.fetch_add(1, Ordering::SeqCst);
                        let body = format!(
                            "{{\"access_token\":\"{TOKEN}\",\"expires_in\":3600,\"token_type\":\"Bearer\"}}"
                        );
                        write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )?;
                    }
                    Ok(())
                });
            }
        });
        TokenServer { port, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
