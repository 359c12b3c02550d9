//! A stand-in for Entra ID's identity endpoints, on loopback: the only
//! stand-in of the credential tests (the storage side is a real Azurite,
//! started with `--oauth basic`).
//!
//! It answers, over plain HTTP:
//! - `POST /<tenant>/oauth2/v2.0/token`: the authority host's token
//!   endpoint (service principal and workload identity), an OAuth
//!   client-credentials answer (`access_token`, `expires_in`);
//! - `GET /metadata/identity/oauth2/token`: a managed identity endpoint
//!   (IMDS or App Service style; `Metadata: true` required), an answer with
//!   `expires_in` and `expires_on` as strings, as IMDS writes them;
//! - `GET /cli`: what `az account get-access-token --output json` prints,
//!   for the `az` script [`TokenService::write_az`] writes.
//!
//! Tokens are unsigned but well-formed JWTs with the claims Azurite's basic
//! OAuth checks: issuer `https://sts.windows.net/<tenant>/`, audience
//! `https://storage.azure.com`, `iat`, `nbf` and `exp`. Each is new (a
//! counter in `uti`), lives [`TokenService::set_lifetime`] seconds, and is
//! recorded. The service counts requests, can answer 429 (with
//! `Retry-After: 1`) for a while, and can issue tokens with an audience
//! Azurite refuses.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};

/// The tenant the tokens are issued for.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// One request the service received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The header block, lower-cased names.
    pub headers: String,
    pub body: String,
}

impl Seen {
    /// A form or query parameter's value (percent-decoded).
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        [query, self.body.as_str()]
            .iter()
            .flat_map(|s| s.split('&'))
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(form_decode)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

#[derive(Default)]
struct State {
    requests: AtomicUsize,
    throttled: AtomicUsize,
    lifetime: AtomicU64,
    throttle_until: Mutex<Option<Instant>>,
    reject: AtomicBool,
    issued: Mutex<Vec<String>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct TokenService {
    pub port: u16,
    state: Arc<State>,
}

impl TokenService {
    /// Starts the service on a free loopback port; tokens live an hour
    /// until [`TokenService::set_lifetime`] says otherwise.
    pub fn start() -> TokenService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        state.lifetime.store(3600, Ordering::SeqCst);
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        TokenService { port, state }
    }

    /// `AZURE_AUTHORITY_HOST` for this service.
    pub fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A managed identity endpoint (`IDENTITY_ENDPOINT`) on this service.
    pub fn msi_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            self.port
        )
    }

    /// Tokens issued from now on live `secs` seconds.
    pub fn set_lifetime(&self, secs: u64) {
        self.state.lifetime.store(secs, Ordering::SeqCst);
    }

    /// Answers 429 with `Retry-After: 1` for the next `d`.
    pub fn throttle_for(&self, d: Duration) {
        *self.state.throttle_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// From now on, issues tokens for another audience (which Azurite
    /// refuses) when `on`.
    pub fn issue_rejected(&self, on: bool) {
        self.state.reject.store(on, Ordering::SeqCst);
    }

    /// Requests received (all of them, throttled ones too).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests answered 429.
    pub fn throttled(&self) -> usize {
        self.state.throttled.load(Ordering::SeqCst)
    }

    /// The tokens issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Writes an `az` script into `dir` that prints what `az account
    /// get-access-token --output json` prints, fetched from this service
    /// (bash only: `/dev/tcp`); returns `dir`, to put first on `PATH`.
    pub fn write_az(&self, dir: &Path) -> PathBuf {
        let script = format!(
            r#"#!/bin/bash
# A stand-in for the Azure CLI (blobcache tests): only get-access-token.
[ "$1 $2" = "account get-access-token" ] || {{ echo "az stand-in: unexpected: $*" >&2; exit 2; }}
exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1
printf 'GET /cli HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r status <&3
while IFS= read -r line <&3; do [ "$line" = $'\r' ] && break; done
case "$status" in
  *" 200 "*) cat <&3 ;;
  *) echo "ERROR: $status" >&2; exit 1 ;;
esac
"#,
            port = self.port
        );
        let path = dir.join("az");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir.to_path_buf()
    }

    fn token(&self) -> (String, u64) {
        issue(&self.state)
    }
}

impl TokenService {
    /// A token issued now, as the service would (for tests that need one
    /// outside a request, e.g. `AZURE_STORAGE_TOKEN`).
    pub fn new_token(&self) -> String {
        self.token().0
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A new token and its lifetime, recorded as issued.
fn issue(state: &State) -> (String, u64) {
    let n = state.issued.lock().unwrap().len();
    let lifetime = state.lifetime.load(Ordering::SeqCst);
    let aud = if state.reject.load(Ordering::SeqCst) {
        "https://example.invalid"
    } else {
        "https://storage.azure.com"
    };
    let token = jwt(aud, lifetime, n);
    state.issued.lock().unwrap().push(token.clone());
    (token, lifetime)
}

/// An unsigned JWT for `aud`, issued by `https://sts.windows.net/<TENANT>/`,
/// valid from a minute ago for `lifetime` seconds from now.
pub fn jwt(aud: &str, lifetime: u64, serial: usize) -> String {
    let now = unix_now();
    let header = r#"{"typ":"JWT","alg":"none"}"#;
    let claims = format!(
        r#"{{"aud":"{aud}","iss":"https://sts.windows.net/{TENANT}/","iat":{iat},"nbf":{iat},"exp":{exp},"tid":"{TENANT}","oid":"00000000-0000-0000-0000-0000000000aa","uti":"blobcache-test-{serial}","ver":"1.0"}}"#,
        iat = now - 60,
        exp = now + lifetime,
    );
    format!(
        "{}.{}.{}",
        BASE64_URL_SAFE_NO_PAD.encode(header),
        BASE64_URL_SAFE_NO_PAD.encode(claims),
        BASE64_URL_SAFE_NO_PAD.encode(format!("unsigned-{serial}"))
    )
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one connection's requests.
fn serve(conn: TcpStream, state: &State) -> io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        // HTTP/1.0 (the `az` stand-in's): one answer, then the end.
        let close = line.trim_end().ends_with("HTTP/1.0");
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            headers.push_str(&h.to_ascii_lowercase());
        }
        let mut seen = Seen {
            method,
            target,
            headers,
            body: String::new(),
        };
        let len: u64 = seen
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        (&mut r).take(len).read_to_end(&mut body)?;
        seen.body = String::from_utf8_lossy(&body).into_owned();
        state.requests.fetch_add(1, Ordering::SeqCst);
        state.seen.lock().unwrap().push(seen.clone());
        let (status, extra, body) = answer(&seen, state);
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn answer(seen: &Seen, state: &State) -> (&'static str, &'static str, String) {
    let throttled = state
        .throttle_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t);
    if throttled {
        state.throttled.fetch_add(1, Ordering::SeqCst);
        return (
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            r#"{"error":"temporarily_unavailable","error_description":"Too many requests (test throttling)."}"#.into(),
        );
    }
    let path = seen.target.split('?').next().unwrap_or("");
    if seen.method == "POST" && path == format!("/{TENANT}/oauth2/v2.0/token") {
        let (token, lifetime) = issue(state);
        return (
            "200 OK",
            "",
            format!(
                r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{token}"}}"#
            ),
        );
    }
    if seen.method == "GET" && path == "/metadata/identity/oauth2/token" {
        if seen.header("metadata").as_deref() != Some("true") {
            return (
                "400 Bad Request",
                "",
                r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into(),
            );
        }
        let (token, lifetime) = issue(state);
        let on = unix_now() + lifetime;
        return (
            "200 OK",
            "",
            format!(
                r#"{{"access_token":"{token}","client_id":"00000000-0000-0000-0000-0000000000aa","expires_in":"{lifetime}","expires_on":"{on}","ext_expires_in":"{lifetime}","not_before":"{}","resource":"https://storage.azure.com","token_type":"Bearer"}}"#,
                unix_now() - 60
            ),
        );
    }
    if seen.method == "GET" && path == "/cli" {
        let (token, lifetime) = issue(state);
        let on = unix_now() + lifetime;
        return (
            "200 OK",
            "",
            format!(
                r#"{{"accessToken":"{token}","expiresOn":"2099-01-01 00:00:00.000000","expires_on":{on},"subscription":"00000000-0000-0000-0000-0000000000bb","tenant":"{TENANT}","tokenType":"Bearer"}}"#
            ),
        );
    }
    ("404 Not Found", "", r#"{"error":"not_found"}"#.into())
}
