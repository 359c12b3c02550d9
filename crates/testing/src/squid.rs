//! A real Squid (Debian's `squid` package, `/usr/sbin/squid`) per test: a
//! forward proxy on a free loopback port, with a generated configuration and
//! every file (pid, logs) in a temporary directory of its own, run in the
//! foreground (`-N`) and killed on drop. It never uses the system's Squid or
//! its configuration.
//!
//! Plain by default (forwards and tunnels, caches nothing, lets everyone
//! in); [`Options`] add basic authentication (an htpasswd file checked by
//! Squid's `basic_ncsa_auth` helper) or a memory cache that keeps whole
//! blobs and serves ranges of them (see [`CACHING`]). The access log
//! ([`Squid::access_log`]) has one line per request:
//! `<result>/<status> <bytes> <method> <url> <hierarchy> "<range>"`, e.g.
//! `TCP_MISS/206 1048576 GET http://127.0.0.1:4000/devstoreaccount1/c/b HIER_DIRECT/127.0.0.1 "bytes=0-1048575"`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::azurite::free_port;
use crate::{tempdir, TempDir};

/// The Squid binary: `$SQUID_BIN`, else `/usr/sbin/squid` (Debian's
/// package; `scripts/install-test-deps.sh` installs it).
pub fn binary() -> PathBuf {
    std::env::var_os("SQUID_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/usr/sbin/squid"), PathBuf::from)
}

/// Squid's basic-authentication helper (Debian's path).
const NCSA_AUTH: &str = "/usr/lib/squid/basic_ncsa_auth";

/// The configuration lines that make Squid a caching proxy for blobs read
/// in ranges (the README's Proxies section shows them):
///
/// - `range_offset_limit none`: on a ranged miss Squid fetches the whole
///   object from the start and caches it (by default it forwards the range
///   and caches nothing, for a 206 is not a cacheable whole);
/// - `collapsed_forwarding on`: concurrent misses on one URL wait for the
///   one fetch instead of each fetching the whole object;
/// - `quick_abort_min -1 KB`: a fetch goes on when the client that started
///   it goes away;
/// - `refresh_pattern`: Azure's answers carry an ETag and Last-Modified but
///   no Cache-Control; without a rule Squid holds a just-written blob fresh
///   for a fifth of its age, i.e. hardly at all. This one keeps it fresh
///   for an hour without asking the origin — the worst case for staleness,
///   which the library's ETag check must catch.
pub const CACHING: &[&str] = &[
    "cache_mem 512 MB",
    "maximum_object_size_in_memory 512 MB",
    "maximum_object_size 1 GB",
    "range_offset_limit none",
    "collapsed_forwarding on",
    "quick_abort_min -1 KB",
    "refresh_pattern . 60 100% 60 override-lastmod",
];

/// How to configure a [`Squid`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Require basic authentication with this user and password.
    pub auth: Option<(String, String)>,
    /// Cache ([`CACHING`]); otherwise `cache deny all`.
    pub cache: bool,
    /// [`CACHING`] lines to leave out (by their directive, e.g.
    /// `range_offset_limit`).
    pub omit: Vec<String>,
    /// More configuration lines, after the others.
    pub extra: Vec<String>,
}

pub struct Squid {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Squid {
    /// A plain forward proxy.
    pub fn start() -> Squid {
        Squid::with(Options::default())
    }

    /// Starts Squid as `opts` say and waits (at most 30 s) until it
    /// accepts connections.
    pub fn with(opts: Options) -> Squid {
        let bin = binary();
        assert!(
            bin.exists(),
            "Squid is not installed ({}): run scripts/install-test-deps.sh, or apt-get install squid (or set SQUID_BIN)",
            bin.display()
        );
        let dir = tempdir("squid");
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.path().join("squid.conf");
            std::fs::write(&conf, config(dir.path(), port, &opts)).unwrap();
            let as_root = is_root();
            if as_root {
                // Squid started by root switches to cache_effective_user
                // (proxy), which must be able to write its files.
                chown_to_proxy(dir.path());
            }
            let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            let mut child = Command::new(&bin)
                .args(["-N", "-f"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!(
                        "squid exited early ({status}); port {port} taken? retrying\n{}",
                        read(&dir.path().join("stderr.log")) + &read(&dir.path().join("cache.log"))
                    );
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Squid {
                        port,
                        child: Some(child),
                        dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "Squid did not start; its log:\n{}",
            read(&dir.path().join("cache.log"))
        );
    }

    /// `http://127.0.0.1:PORT`, for `HTTP_PROXY`/`HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The access log so far, one line per finished request (Squid writes
    /// a line when a request ends).
    pub fn access_log(&self) -> Vec<String> {
        read(&self.dir.path().join("access.log"))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Squid's own log (start-up, errors).
    pub fn cache_log(&self) -> String {
        read(&self.dir.path().join("cache.log"))
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `proxy` user (Debian's Squid runs as it).
fn proxy_user() -> (u32, u32) {
    let name = std::ffi::CString::new("proxy").unwrap();
    // SAFETY: `name` is a valid C string; the returned entry (static
    // storage) is read at once, before any other getpw* call of this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no user proxy (Debian's squid package makes it)"
    );
    // SAFETY: checked non-null above; points to libc's static passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown_to_proxy(dir: &Path) {
    let (uid, gid) = proxy_user();
    let mut paths = vec![dir.to_path_buf()];
    crate::fixture::walk(dir, &mut |p| paths.push(p.to_path_buf()));
    for p in paths {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
}

/// An htpasswd line (`user:$apr1$…`) for basic_ncsa_auth, from `openssl passwd`.
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .expect("openssl (for the proxy's password file)");
    assert!(out.status.success(), "openssl passwd failed");
    format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim())
}

fn config(dir: &Path, port: u16, opts: &Options) -> String {
    let d = dir.display();
    let mut c = vec![
        format!("http_port 127.0.0.1:{port}"),
        format!("pid_filename {d}/squid.pid"),
        format!("cache_log {d}/cache.log"),
        "logformat blobcache %Ss/%03>Hs %<st %rm %ru %Sh/%<a \"%{Range}>h\"".into(),
        format!("access_log stdio:{d}/access.log logformat=blobcache"),
        "cache_store_log none".into(),
        format!("coredump_dir {d}"),
        "netdb_filename none".into(),
        "icp_port 0".into(),
        "htcp_port 0".into(),
        "shutdown_lifetime 0 seconds".into(),
        "buffered_logs off".into(),
        // Reach the loopback origin directly, whatever the machine's DNS.
        "dns_nameservers 127.0.0.1".into(),
    ];
    if is_root() {
        c.push("cache_effective_user proxy".into());
    }
    match &opts.auth {
        Some((user, password)) => {
            let file = dir.join("passwd");
            std::fs::write(&file, htpasswd(user, password) + "\n").unwrap();
            c.push(format!(
                "auth_param basic program {NCSA_AUTH} {}",
                file.display()
            ));
            c.push("auth_param basic realm blobcache-test".into());
            c.push("acl authenticated proxy_auth REQUIRED".into());
            c.push("http_access allow authenticated".into());
            c.push("http_access deny all".into());
        }
        None => c.push("http_access allow all".into()),
    }
    if opts.cache {
        c.extend(
            CACHING
                .iter()
                .filter(|l| !opts.omit.iter().any(|o| l.split(' ').next() == Some(o)))
                .map(|s| s.to_string()),
        );
    } else {
        c.push("cache deny all".into());
    }
    c.extend(opts.extra.iter().cloned());
    c.join("\n") + "\n"
}
