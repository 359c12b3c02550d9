//! One Azurite (the Azure Storage emulator, from npm) per test: started on a
//! free loopback port with in-memory storage, stopped on drop.
//!
//! Found at `$AZURITE_BIN`, else at `.tools/azurite/node_modules/.bin/azurite-blob`
//! (what `scripts/install-azurite.sh` installs). Blobs are uploaded with
//! `object_store` (its own URL encoding, independent of the code under
//! test), containers created with signed raw requests.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::prelude::{Engine, BASE64_STANDARD};
use blobcache_core::config::{Config, MaxSize, OriginConfig};
use blobcache_core::origin::azure::AzureEnv;
use object_store::azure::{
    AzureAccessKey, AzureAuthorizer, AzureCredential, MicrosoftAzure, MicrosoftAzureBuilder,
};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt;

use crate::{tempdir, TempDir};

/// The emulator's account and its well-known key (public, Azurite docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    rt: tokio::runtime::Runtime,
    /// With [`Azurite::start_tls`]: the PEM of the CA its certificate is
    /// signed by (`SSL_CERT_FILE` for the library).
    pub ca: Option<PathBuf>,
    _workdir: TempDir,
}

/// A CA and a certificate it signs for 127.0.0.1, `blob.localhost` and
/// `*.blob.localhost`, in `dir` (with `openssl`): (ca.pem, leaf.pem, leaf.key).
fn tls_material(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (for the emulator's certificate)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=blobcache test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=blob.localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:*.blob.localhost,DNS:blob.localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AZURITE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // crates/testing → the repository's root.
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "Azurite is not installed: run scripts/install-azurite.sh (or set AZURITE_BIN)"
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Azurite {
    /// Starts Azurite and waits until it accepts connections.
    pub fn start() -> Azurite {
        Azurite::start_with(false, false)
    }

    /// Starts Azurite over HTTPS, with a certificate for 127.0.0.1 signed by
    /// a CA made for it ([`Azurite::ca`]).
    pub fn start_tls() -> Azurite {
        Azurite::start_with(true, false)
    }

    /// Starts Azurite as [`Azurite::start_tls`] does, and with `--oauth
    /// basic`: it then also takes bearer tokens (over HTTPS only), checking
    /// that each is a JWT with `iat`, `nbf` and `exp`, that the time is
    /// between `nbf` and `exp`, that its issuer starts with
    /// `https://sts.windows.net/` (or another cloud's), and that its audience
    /// is `https://storage.azure.com` (or the account's blob endpoint); not
    /// its signature, nor its scope.
    pub fn start_oauth() -> Azurite {
        Azurite::start_with(true, true)
    }

    fn start_with(tls: bool, oauth: bool) -> Azurite {
        let bin = binary();
        let workdir = tempdir("azurite");
        let material = tls.then(|| tls_material(workdir.path()));
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            if let Some((_, cert, key)) = &material {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
                if oauth {
                    cmd.args(["--oauth", "basic"]);
                }
            }
            let mut child = cmd
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args(["--inMemoryPersistence", "--silent", "--disableTelemetry"])
                .arg("--skipApiVersionCheck")
                .current_dir(workdir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("azurite exited early ({status}); port {port} taken? retrying");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Azurite {
                        child: Some(child),
                        port,
                        rt: tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap(),
                        ca: material.as_ref().map(|(ca, _, _)| ca.clone()),
                        _workdir: workdir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Azurite did not start");
    }

    /// The emulator's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the emulator (its data is gone: in-memory).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn scheme(&self) -> &'static str {
        if self.ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (`https` with TLS)
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}/{ACCOUNT}", self.scheme(), self.port)
    }

    /// A `BLOBCACHE_AZURE_ENDPOINT` template for this emulator.
    pub fn template(&self) -> String {
        format!("{}://127.0.0.1:{}/{{account}}", self.scheme(), self.port)
    }

    fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca.as_ref().map(|p| std::fs::read(p).unwrap())
    }

    /// An HTTP client for the harness's own requests (trusting the CA with
    /// TLS), never through a proxy.
    fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder().no_proxy();
        if let Some(pem) = self.ca_pem() {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    fn store(&self, container: &str) -> MicrosoftAzure {
        let mut options = object_store::ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(Duration::from_secs(300));
        if let Some(pem) = self.ca_pem() {
            options =
                options.with_root_certificate(object_store::Certificate::from_pem(&pem).unwrap());
        }
        MicrosoftAzureBuilder::new()
            .with_account(ACCOUNT)
            .with_container_name(container)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key(KEY)
            .with_client_options(options)
            .build()
            .unwrap()
    }

    /// Sends a request signed with the account key; returns status and body.
    pub fn raw(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let url = format!("{}/{path_and_query}", self.endpoint());
        let mut b = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-length", "0");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req: HttpRequest = b.body(HttpRequestBody::empty()).unwrap();
        let cred = AzureCredential::AccessKey(AzureAccessKey::try_new(KEY).unwrap());
        AzureAuthorizer::new(&cred, ACCOUNT).authorize(&mut req);
        self.rt.block_on(async {
            let resp = self
                .client()
                .request(req.method().clone(), req.uri().to_string())
                .headers(req.headers().clone())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    }

    pub fn create_container(&self, name: &str) {
        let (status, body) = self.raw("PUT", &format!("{name}?restype=container"), &[]);
        assert_eq!(status, 201, "create container {name}: {body}");
    }

    /// A container whose blobs anyone may read.
    pub fn create_public_container(&self, name: &str) {
        let (status, body) = self.raw(
            "PUT",
            &format!("{name}?restype=container"),
            &[("x-ms-blob-public-access", "container")],
        );
        assert_eq!(status, 201, "create container {name}: {body}");
    }

    /// Uploads (or replaces) a blob; returns its ETag.
    pub fn put(&self, container: &str, blob: &str, data: &[u8]) -> String {
        let store = self.store(container);
        let path = StorePath::parse(blob).unwrap();
        assert_eq!(path.as_ref(), blob, "object_store would alter this name");
        let payload = object_store::PutPayload::from(data.to_vec());
        self.rt
            .block_on(store.put(&path, payload))
            .unwrap()
            .e_tag
            .unwrap()
    }

    /// Uploads (or replaces) a blob named exactly `blob`, every `/` kept
    /// (`x/`, `a//b`, `/`), with a signed raw Put Blob: `put` goes through
    /// object_store's paths, which refuse empty segments. The name is
    /// percent-encoded segment by segment here, independently of the code
    /// under test. (A `.` or `..` segment cannot be sent this way: the HTTP
    /// client's URL parser would resolve it.)
    pub fn put_raw(&self, container: &str, blob: &str, data: &[u8]) {
        let mut url = format!("{}/{}", self.endpoint(), pct(container));
        for segment in blob.split('/') {
            url.push('/');
            url.push_str(&pct(segment));
        }
        let mut req: HttpRequest = http::Request::builder()
            .method("PUT")
            .uri(&url)
            .header("content-length", data.len().to_string())
            .header("x-ms-blob-type", "BlockBlob")
            .body(HttpRequestBody::empty())
            .unwrap();
        let cred = AzureCredential::AccessKey(AzureAccessKey::try_new(KEY).unwrap());
        AzureAuthorizer::new(&cred, ACCOUNT).authorize(&mut req);
        let (status, body) = self.rt.block_on(async {
            let resp = self
                .client()
                .put(req.uri().to_string())
                .headers(req.headers().clone())
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        });
        assert_eq!(status, 201, "put {container}/{blob:?}: {body}");
    }

    /// The names of a container's blobs, as the service stores them.
    pub fn list(&self, container: &str) -> Vec<String> {
        let (status, body) = self.raw(
            "GET",
            &format!("{container}?restype=container&comp=list"),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        body.split("<Name>")
            .skip(1)
            .map(|s| xml_unescape(s.split("</Name>").next().unwrap()))
            .collect()
    }

    /// An account SAS (read and list on blobs), signed with the account key.
    pub fn account_sas(&self) -> String {
        account_sas(ACCOUNT, KEY)
    }
}

/// The baseline of the cold-load benchmarks: downloads the blob at `url`
/// with `conns` parallel ranged GETs of `chunk` bytes (signed with the
/// emulator's key), each task reading the answers into one reused buffer.
/// Returns seconds. Call inside a tokio runtime.
pub async fn plain_ranged_download(
    client: &reqwest::Client,
    url: &str,
    size: usize,
    conns: usize,
    chunk: usize,
) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(chunk);
                loop {
                    let off = next.fetch_add(chunk, Ordering::Relaxed);
                    if off >= size {
                        return;
                    }
                    let end = (off + chunk).min(size) - 1;
                    ranged_get(&client, &url, off, end, &mut buf).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed().as_secs_f64()
}

/// One GET of bytes `off..=end` of the blob at `url`, signed with the
/// emulator's key, its body read into `buf` (cleared first); panics unless
/// the answer is a 206 of exactly that length.
pub async fn ranged_get(
    client: &reqwest::Client,
    url: &str,
    off: usize,
    end: usize,
    buf: &mut Vec<u8>,
) {
    let cred = AzureCredential::AccessKey(AzureAccessKey::try_new(KEY).unwrap());
    let mut req = http::Request::builder()
        .method("GET")
        .uri(url)
        .header("range", format!("bytes={off}-{end}"))
        .body(HttpRequestBody::empty())
        .unwrap();
    AzureAuthorizer::new(&cred, ACCOUNT).authorize(&mut req);
    let mut resp = client
        .get(req.uri().to_string())
        .headers(req.headers().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206, "GET {url} bytes={off}-{end}");
    buf.clear();
    while let Some(c) = resp.chunk().await.unwrap() {
        buf.extend_from_slice(&c);
    }
    assert_eq!(buf.len(), end + 1 - off);
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An account SAS token (no leading `?`): blob service, all resource types,
/// read and list, valid until 2099.
pub fn account_sas(account: &str, key: &str) -> String {
    let (sv, ss, srt, sp, se) = ("2021-08-06", "b", "sco", "rl", "2099-01-01T00:00:00Z");
    let to_sign = format!("{account}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n\n");
    let sig = BASE64_STANDARD.encode(hmac_sha256(
        &BASE64_STANDARD.decode(key).unwrap(),
        to_sign.as_bytes(),
    ));
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&sig={}",
        pct(se),
        pct(&sig)
    )
}

/// The signature part of a SAS token, decoded (what must never leak).
pub fn sas_signature(sas: &str) -> String {
    let raw = sas
        .trim_start_matches('?')
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap();
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Credentials for tests: always explicit, so nothing ever falls through to
/// managed identity (169.254.169.254).
pub fn key_env() -> AzureEnv {
    AzureEnv::from_pairs([("AZURE_STORAGE_ACCOUNT_KEY", KEY)])
}

pub fn sas_env(sas: &str) -> AzureEnv {
    AzureEnv::from_pairs([("AZURE_STORAGE_SAS_TOKEN", sas)])
}

/// A configuration for the Azure origin at `template`, caching in `dir`.
pub fn config(template: &str, dir: &std::path::Path) -> Config {
    Config {
        dir: Some(dir.to_path_buf()),
        max_size: MaxSize::Bytes(4 << 30),
        block_size: 1 << 20,
        origin: OriginConfig::Azure,
        azure_endpoint: Some(template.to_string()),
        readahead_blocks: 0,
        fetch_timeout: Duration::from_secs(10),
        fetch_concurrency: 4,
        ..Config::default()
    }
}
