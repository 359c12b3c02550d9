//! Configuration: one typed struct, read once per lifecycle from the
//! environment and validated. An invalid value is an error that names the
//! variable and the accepted form; nothing falls back silently.
//!
//! [`SETTINGS`] is the one table of the variables: name, default, accepted
//! form, description, how to read a value and how to show the effective
//! one. [`Config::from_lookup`] parses through it, `blobcache doctor` shows
//! the effective values through it, and tests check the README's table and
//! the Python package's copy (`python/blobcache/_settings.py`) against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::Level;

/// Where cache misses are filled from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginConfig {
    /// Azure Blob Storage (the default).
    Azure,
    /// A local directory holding `<account>/<container>/<blob>`.
    Directory(PathBuf),
}

/// How Azure requests are authenticated (`BLOBCACHE_AZURE_AUTH`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AzureAuth {
    /// The first credential found in the environment (see `origin::azure::auth`).
    #[default]
    Auto,
    /// Unsigned requests, for containers that allow public read access.
    Anonymous,
}

/// Whether Azure requests go through the proxies the environment names
/// (`BLOBCACHE_PROXY`; see `origin::azure::proxy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// `https_proxy`, `http_proxy`, `all_proxy` and `no_proxy` (either
    /// case), as curl reads them.
    #[default]
    Env,
    /// No proxy: every request goes direct.
    Off,
}

/// The cap on the cache's disk usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxSize {
    Bytes(u64),
    /// A percentage of the size of the filesystem holding the cache.
    PercentOfFilesystem(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dir: Option<PathBuf>,
    pub max_size: MaxSize,
    pub block_size: u64,
    pub origin: OriginConfig,
    pub log_level: Level,
    pub fetch_concurrency: usize,
    pub readahead_blocks: u64,
    pub fetch_timeout: Duration,
    pub offline: bool,
    pub azure_endpoint: Option<String>,
    pub azure_auth: AzureAuth,
    /// Whether Azure requests use the proxy variables.
    pub proxy: ProxyMode,
    /// Group-shared cache: directories 0770 and files 0660 instead of 0700/0600.
    pub shared: bool,
    /// fsync each block before publishing it.
    pub fsync: bool,
    /// At most this many cached blocks open (mapped) at once in this process.
    pub mapped_blocks: usize,
    /// At most this many bytes of cached blocks mapped at once in this process.
    pub mapped_bytes: u64,
    /// The cluster tier: a directory on a filesystem every node mounts,
    /// looked at on a local miss before the origin (see `cluster`).
    pub cluster_dir: Option<PathBuf>,
    /// The cap on the cluster tier's disk usage.
    pub cluster_max_size: MaxSize,
    /// Dragonfly mode: blob GETs go through the dfdaemon proxy at this
    /// `http://host:port` (see `origin::azure::dragonfly`).
    pub dragonfly: Option<String>,
    /// Whether a GET whose dfdaemon fails goes on directly to Azure.
    pub dragonfly_fallback: bool,
}

pub const DEFAULT_BLOCK_SIZE: u64 = 16 << 20;
pub const MIN_BLOCK_SIZE: u64 = 64 << 10;
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
pub const DEFAULT_MAX_SIZE_PERCENT: u8 = 50;
/// The cluster tier's default cap: a share of the shared filesystem, which
/// is usually there for the models.
pub const DEFAULT_CLUSTER_MAX_SIZE_PERCENT: u8 = 80;
/// Default bound on open blocks: a small share of Linux's default
/// `vm.max_map_count` (65,530), which the host's own allocator, threads and
/// libraries need too.
pub const DEFAULT_MAPPED_BLOCKS: usize = 4096;
/// Default bound on mapped bytes (and so on the file-backed RSS the cache
/// adds to the host).
pub const DEFAULT_MAPPED_BYTES: u64 = 1 << 30;

/// A setting's default, as documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// A value in the accepted form, the one [`Config::default`] holds (a
    /// test checks).
    Value(&'static str),
    /// Derived from other variables; how, in Markdown.
    Computed(&'static str),
    /// Unset, and nothing in its place.
    Unset,
}

/// One variable of [`SETTINGS`].
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    pub default: DefaultValue,
    /// What a valid value looks like: completes "use ..." in the error for
    /// an invalid one.
    pub form: &'static str,
    /// What it does, in Markdown (the README's "meaning" column).
    pub description: &'static str,
    /// Reads a value (set and not blank) into the configuration; `None`
    /// when it is not valid.
    parse: fn(&mut Config, &str) -> Option<()>,
    /// The effective value as `blobcache doctor` shows it; `None` for a
    /// variable the library does not read (then its value, or the default).
    show: Option<fn(&Config) -> String>,
}

impl Setting {
    /// The error for an invalid `value`: names the variable and the form.
    fn invalid(&self, value: &str) -> Error {
        Error::config(format!(
            "{}={} is not valid; use {}",
            self.name,
            shown_value(value),
            self.form
        ))
    }

    /// The effective value of this setting in `config`, for people;
    /// `value` is the variable's own value, if set.
    pub fn effective(&self, config: &Config, value: Option<&str>) -> String {
        match (self.show, value, self.default) {
            (Some(show), _, _) => show(config),
            (None, Some(v), _) => v.to_string(),
            (None, None, DefaultValue::Value(d)) => d.to_string(),
            (None, None, _) => "(not set)".to_string(),
        }
    }

    /// The default as the README shows it: a value in code style, a
    /// computed default as written, nothing when unset.
    pub fn default_markdown(&self) -> String {
        match self.default {
            DefaultValue::Value(v) => format!("`{v}`"),
            DefaultValue::Computed(how) => how.to_string(),
            DefaultValue::Unset => String::new(),
        }
    }
}

/// Every variable, in the README's order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "BLOBCACHE_DIR",
        default: DefaultValue::Computed("`$XDG_CACHE_HOME/blobcache`, else `~/.cache/blobcache`"),
        form: "an absolute directory such as /var/cache/blobcache",
        description: "cache directory (absolute path). Created `0700`, files `0600`.",
        parse: |c, v| {
            let p = PathBuf::from(v);
            p.is_absolute().then(|| c.dir = Some(p))
        },
        show: Some(|c| {
            c.dir
                .as_ref()
                .map_or("(none)".into(), |d| d.display().to_string())
        }),
    },
    Setting {
        name: "BLOBCACHE_MAX_SIZE",
        default: DefaultValue::Value("50%"),
        form: "a size such as 200G, 512M, 1T (binary units, optional B/iB), a byte count, or a percentage of the cache filesystem such as 50%",
        description: "cap on disk usage: a size (`200G`, `512M`, binary units) or a percentage of the cache filesystem's size",
        parse: |c, v| {
            c.max_size = parse_max_size(v)?;
            Some(())
        },
        show: Some(|c| match c.max_size {
            MaxSize::Bytes(b) => format_size(b),
            MaxSize::PercentOfFilesystem(p) => format!("{p}% of the cache filesystem"),
        }),
    },
    Setting {
        name: "BLOBCACHE_BLOCK_SIZE",
        default: DefaultValue::Value("16M"),
        form: "a multiple of 64K between 64K and 1G, such as 16M",
        description: "block size, a multiple of 64K from 64K to 1G. Used when a cache directory is first set up; after that the directory's recorded size wins (with a warning if this differs).",
        parse: |c, v| {
            c.block_size = parse_size(v).filter(|b| {
                (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(b) && b % MIN_BLOCK_SIZE == 0
            })?;
            Some(())
        },
        show: Some(|c| format_size(c.block_size)),
    },
    Setting {
        name: "BLOBCACHE_ORIGIN",
        default: DefaultValue::Value("azure"),
        form: "azure, or file:///absolute/path for a directory holding <account>/<container>/<blob>",
        description: "`azure`, or `file:///abs/root` to fill from a directory holding `<account>/<container>/<blob>` (a pre-staged or network-mounted model store)",
        parse: |c, v| {
            c.origin = parse_origin(v)?;
            Some(())
        },
        show: Some(|c| match &c.origin {
            OriginConfig::Azure => "azure".into(),
            OriginConfig::Directory(p) => format!("file://{}", p.display()),
        }),
    },
    Setting {
        name: "BLOBCACHE_LOG",
        default: DefaultValue::Value("warn"),
        form: "error, warn, info or debug",
        description: "`error`, `warn`, `info` or `debug`; lines go to stderr prefixed `blobcache:`, never to stdout",
        parse: |c, v| {
            c.log_level = Level::parse(v)?;
            Some(())
        },
        show: Some(|c| c.log_level.as_str().into()),
    },
    Setting {
        name: "BLOBCACHE_FETCH_CONCURRENCY",
        default: DefaultValue::Value("32"),
        form: "a whole number from 1 to 256",
        description: "blocks fetched from the origin at once (1–256)",
        parse: |c, v| {
            c.fetch_concurrency = v.trim().parse().ok().filter(|n| (1..=256).contains(n))?;
            Some(())
        },
        show: Some(|c| c.fetch_concurrency.to_string()),
    },
    Setting {
        name: "BLOBCACHE_READAHEAD",
        default: DefaultValue::Value("16"),
        form: "a number of blocks from 0 (off) to 64",
        description: "blocks fetched ahead of a front-to-back reader; `0` turns readahead off",
        parse: |c, v| {
            c.readahead_blocks = v.trim().parse().ok().filter(|n| *n <= 64)?;
            Some(())
        },
        show: Some(|c| format!("{} blocks", c.readahead_blocks)),
    },
    Setting {
        name: "BLOBCACHE_FETCH_TIMEOUT",
        default: DefaultValue::Value("30s"),
        form: "a duration from 100ms to 3600s such as 30s, 500ms or 2m",
        description: "bound on one origin request including retries (`500ms`, `30s`, `2m`)",
        parse: |c, v| {
            c.fetch_timeout = parse_duration(v).filter(|d| {
                *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600)
            })?;
            Some(())
        },
        show: Some(|c| format!("{:?}", c.fetch_timeout)),
    },
    Setting {
        name: "BLOBCACHE_OFFLINE",
        default: DefaultValue::Value("0"),
        form: "1 or 0",
        description: "`1`: never contact the origin; serve what is cached, fail the rest at once saying so",
        parse: |c, v| {
            c.offline = parse_flag(v)?;
            Some(())
        },
        show: Some(|c| u8::from(c.offline).to_string()),
    },
    Setting {
        name: "BLOBCACHE_AZURE_ENDPOINT",
        default: DefaultValue::Unset,
        form: "an http:// or https:// URL template such as http://127.0.0.1:10000/{account}",
        description: "blob endpoint template with `{account}`, e.g. `http://127.0.0.1:10000/{account}` for Azurite or a proxy",
        parse: |c, v| {
            let t = v.trim();
            (t.starts_with("http://") || t.starts_with("https://"))
                .then(|| c.azure_endpoint = Some(t.trim_end_matches('/').to_string()))
        },
        show: Some(|c| c.azure_endpoint.clone().unwrap_or("(not set)".into())),
    },
    Setting {
        name: "BLOBCACHE_AZURE_AUTH",
        default: DefaultValue::Value("auto"),
        form: "auto (credentials from the environment) or anonymous (unsigned requests, for public containers)",
        description: "`auto` picks a credential in the order below; `anonymous` sends unsigned requests (public containers)",
        parse: |c, v| {
            c.azure_auth = match v.trim().to_ascii_lowercase().as_str() {
                "auto" => AzureAuth::Auto,
                "anonymous" => AzureAuth::Anonymous,
                _ => return None,
            };
            Some(())
        },
        show: Some(|c| match c.azure_auth {
            AzureAuth::Auto => "auto".into(),
            AzureAuth::Anonymous => "anonymous".into(),
        }),
    },
    Setting {
        name: "BLOBCACHE_PROXY",
        default: DefaultValue::Value("env"),
        form: "env (the proxy variables HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, as curl reads them) or off (no proxy)",
        description: "`env`: Azure requests go through `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` except for hosts in `NO_PROXY`, as curl's do (see [Proxies](#proxies)); `off`: always direct",
        parse: |c, v| {
            c.proxy = match v.trim().to_ascii_lowercase().as_str() {
                "env" => ProxyMode::Env,
                "off" => ProxyMode::Off,
                _ => return None,
            };
            Some(())
        },
        show: Some(|c| match c.proxy {
            ProxyMode::Env => "env".into(),
            ProxyMode::Off => "off".into(),
        }),
    },
    Setting {
        name: "BLOBCACHE_DRAGONFLY",
        default: DefaultValue::Unset,
        form: "the http://host:port of the node's dfdaemon proxy, such as http://127.0.0.1:4001",
        description: "Dragonfly mode: blob GETs go through the node's dfdaemon proxy at this address, which shares pieces between nodes (see [Dragonfly](#dragonfly-p2p)); HEAD and listing go direct. Needs a SAS or Entra ID (a shared key is refused)",
        parse: |c, v| {
            c.dragonfly = Some(parse_dragonfly(v)?);
            Some(())
        },
        show: Some(|c| c.dragonfly.clone().unwrap_or("(not set)".into())),
    },
    Setting {
        name: "BLOBCACHE_DRAGONFLY_FALLBACK",
        default: DefaultValue::Value("1"),
        form: "1 or 0",
        description: "with `BLOBCACHE_DRAGONFLY`: `1` sends a GET on directly to Azure when dfdaemon fails (unreachable, hung, failing), and all GETs for the next 60 s, warning once; `0` retries dfdaemon within the fetch timeout, then fails the read",
        parse: |c, v| {
            c.dragonfly_fallback = parse_flag(v)?;
            Some(())
        },
        show: Some(|c| u8::from(c.dragonfly_fallback).to_string()),
    },
    Setting {
        name: "BLOBCACHE_SHARED",
        default: DefaultValue::Value("0"),
        form: "1 or 0",
        description: "`1`: group-shared cache (directories `0770`, files `0660`)",
        parse: |c, v| {
            c.shared = parse_flag(v)?;
            Some(())
        },
        show: Some(|c| u8::from(c.shared).to_string()),
    },
    Setting {
        name: "BLOBCACHE_CLUSTER_DIR",
        default: DefaultValue::Unset,
        form: "an absolute directory on a filesystem every node mounts, such as /mnt/models/blobcache",
        description: "the cluster tier: a directory on a shared filesystem (NFS, Azure Files, Lustre, CephFS, JuiceFS) that every node mounts. A local miss looks there before the origin, and a block fetched from the origin is published there for the other nodes (see [Many nodes](#many-nodes-a-cluster-tier-on-a-shared-filesystem)). Always group-shared (`0770`/`0660`).",
        parse: |c, v| {
            let p = PathBuf::from(v);
            p.is_absolute().then(|| c.cluster_dir = Some(p))
        },
        show: Some(|c| {
            c.cluster_dir
                .as_ref()
                .map_or("(none)".into(), |d| d.display().to_string())
        }),
    },
    Setting {
        name: "BLOBCACHE_CLUSTER_MAX_SIZE",
        default: DefaultValue::Value("80%"),
        form: "a size such as 2T, 500G (binary units, optional B/iB), a byte count, or a percentage of the cluster filesystem such as 80%",
        description: "cap on the cluster tier's disk usage, as `BLOBCACHE_MAX_SIZE` but of the cluster directory's filesystem; least recently used blobs go first, by unlink",
        parse: |c, v| {
            c.cluster_max_size = parse_max_size(v)?;
            Some(())
        },
        show: Some(|c| match c.cluster_max_size {
            MaxSize::Bytes(b) => format_size(b),
            MaxSize::PercentOfFilesystem(p) => format!("{p}% of the cluster filesystem"),
        }),
    },
    Setting {
        name: "BLOBCACHE_FSYNC",
        default: DefaultValue::Value("0"),
        form: "1 or 0",
        description: "`1`: fsync every block before publishing it (survives power loss, costs fill speed)",
        parse: |c, v| {
            c.fsync = parse_flag(v)?;
            Some(())
        },
        show: Some(|c| u8::from(c.fsync).to_string()),
    },
    Setting {
        name: "BLOBCACHE_MAPPED_BLOCKS",
        default: DefaultValue::Value("4096"),
        form: "a number of blocks from 1 to 32768",
        description: "cached blocks a process keeps mapped at most (1–32768)",
        parse: |c, v| {
            c.mapped_blocks = v.trim().parse().ok().filter(|n| (1..=32768).contains(n))?;
            Some(())
        },
        show: Some(|c| format!("{} blocks", c.mapped_blocks)),
    },
    Setting {
        name: "BLOBCACHE_MAPPED_BYTES",
        default: DefaultValue::Value("1G"),
        form: "a size of at least 1M such as 1G or 512M",
        description: "bytes of cached blocks a process keeps mapped at most (at least 1M)",
        parse: |c, v| {
            c.mapped_bytes = parse_size(v).filter(|b| *b >= 1 << 20)?;
            Some(())
        },
        show: Some(|c| format_size(c.mapped_bytes)),
    },
    Setting {
        name: "BLOBCACHE_AUTOREGISTER",
        default: DefaultValue::Value("1"),
        form: "0 (or false, no, off) to turn the hook off",
        description: "`0`: the Python wheel's start-up hook does not point the streamer at the library",
        // Read by the wheel's start-up hook (python/_blobcache_autoregister.py),
        // not by the library.
        parse: |_, _| Some(()),
        show: None,
    },
];

/// The name of every setting, in the order of [`SETTINGS`] (for messages
/// and typo detection).
pub const VARIABLES: [&str; SETTINGS.len()] = {
    let mut names = [""; SETTINGS.len()];
    let mut i = 0;
    while i < SETTINGS.len() {
        names[i] = SETTINGS[i].name;
        i += 1;
    }
    names
};

/// The variable whose value the Run:ai streamer passes as the account of
/// every read (and without which it reads no `az://` path at all).
pub const ACCOUNT_VAR: &str = "AZURE_STORAGE_ACCOUNT_NAME";

/// Why a read whose account name is empty fails, and the fix: the streamer
/// passes [`ACCOUNT_VAR`]'s value, so an empty account means it is not set.
pub fn account_not_set() -> String {
    format!(
        "{ACCOUNT_VAR} is not set: the Run:ai streamer passes its value as \
         the storage account of every az:// read; set it to the name of the \
         storage account that holds the models, e.g. {ACCOUNT_VAR}=mystorageaccount"
    )
}

/// The message of every invalid setting `get` returns, in the order of
/// [`SETTINGS`]: not only the first, where [`Config::from_lookup`] stops.
/// Empty exactly when `from_lookup` succeeds.
pub fn invalid_settings(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    parse_all(&get).1
}

/// Every reason reads through the library would fail with the environment
/// `get` returns, each naming the variable and the fix: every invalid
/// setting, and, for the Azure origin, an unset [`ACCOUNT_VAR`]. Empty when
/// reads can start. The one check behind the library's
/// `blobcache_check_config` (which `python -m blobcache` calls) and
/// `blobcache doctor`.
pub fn check(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let (c, mut problems) = parse_all(&get);
    let account = get(ACCOUNT_VAR).filter(|v| !v.trim().is_empty());
    if c.origin == OriginConfig::Azure && account.is_none() {
        problems.push(account_not_set());
    }
    problems
}

/// The configuration from the valid settings, and the messages of the
/// invalid ones.
fn parse_all(get: &impl Fn(&str) -> Option<String>) -> (Config, Vec<String>) {
    let mut problems = Vec::new();
    let mut c = Config::default();
    for s in SETTINGS {
        if let Some(v) = get(s.name).filter(|v| !v.trim().is_empty()) {
            if (s.parse)(&mut c, &v).is_none() {
                problems.push(s.invalid(&v).message().to_string());
            }
        }
    }
    (c, problems)
}

/// [`check`] of the process environment.
pub fn check_env() -> Vec<String> {
    check(env_var)
}

/// [`invalid_settings`] of the process environment.
pub fn invalid_settings_env() -> Vec<String> {
    invalid_settings(env_var)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: None,
            max_size: MaxSize::PercentOfFilesystem(DEFAULT_MAX_SIZE_PERCENT),
            block_size: DEFAULT_BLOCK_SIZE,
            origin: OriginConfig::Azure,
            log_level: Level::Warn,
            fetch_concurrency: 32,
            readahead_blocks: 16,
            fetch_timeout: Duration::from_secs(30),
            offline: false,
            azure_endpoint: None,
            azure_auth: AzureAuth::Auto,
            proxy: ProxyMode::Env,
            dragonfly: None,
            dragonfly_fallback: true,
            shared: false,
            fsync: false,
            mapped_blocks: DEFAULT_MAPPED_BLOCKS,
            mapped_bytes: DEFAULT_MAPPED_BYTES,
            cluster_dir: None,
            cluster_max_size: MaxSize::PercentOfFilesystem(DEFAULT_CLUSTER_MAX_SIZE_PERCENT),
        }
    }
}

impl Config {
    /// The configuration that treats the cluster tier as the cache
    /// directory itself (`None` without `BLOBCACHE_CLUSTER_DIR`): group
    /// shared, capped by `BLOBCACHE_CLUSTER_MAX_SIZE`, with no tier behind
    /// it. The cluster tier keeps the store's layout and fill-once
    /// protocol, so a cache opened with this configuration (`blobcache
    /// warm --cluster-only`, the commands' `--cluster`) reads and fills it
    /// exactly as the nodes do.
    pub fn cluster_as_store(&self) -> Option<Config> {
        let dir = self.cluster_dir.clone()?;
        Some(Config {
            dir: Some(dir),
            max_size: self.cluster_max_size,
            shared: true,
            cluster_dir: None,
            ..self.clone()
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(env_var)
    }

    /// Reads the configuration through `get`, which returns a variable's
    /// value, setting by setting in the order of [`SETTINGS`]. Empty values
    /// count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        for s in SETTINGS {
            if let Some(v) = get(s.name) {
                (s.parse)(&mut c, &v).ok_or_else(|| s.invalid(&v))?;
            }
        }
        if c.dir.is_none() {
            c.dir = default_dir(&get);
        }
        Ok(c)
    }
}

fn default_dir(get: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(x.join("blobcache"));
    }
    get("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p != Path::new("/"))
        .map(|h| h.join(".cache").join("blobcache"))
}

/// `1`, `true`, `yes`, `on`; `0`, `false`, `no`, `off` (any case).
/// A value as it may appear in a message: anything between `://` and `@`
/// (user and password) replaced.
pub(crate) fn shown_value(v: &str) -> String {
    match (v.find("://"), v.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &v[..s + 3], &v[at..]),
        (None, Some(at)) => format!("***{}", &v[at..]),
        _ => v.to_string(),
    }
}

fn parse_flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// dfdaemon's proxy: `http://host[:port]` (no scheme means `http://`; the
/// port defaults to dfdaemon's 4001), as `http://host:port`. No path, query
/// or credentials.
fn parse_dragonfly(v: &str) -> Option<String> {
    let t = v.trim();
    let with_scheme = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    let plain = url.scheme() == "http"
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    let host = url.host_str().filter(|h| !h.is_empty() && plain)?;
    Some(format!("http://{host}:{}", url.port().unwrap_or(4001)))
}

fn parse_origin(v: &str) -> Option<OriginConfig> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("azure") {
        return Some(OriginConfig::Azure);
    }
    let p = PathBuf::from(t.strip_prefix("file://")?);
    p.is_absolute().then_some(OriginConfig::Directory(p))
}

/// `1.5 GiB`, `312 B` (binary units, one decimal).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Parses `123`, `16K`, `16M`, `1.5G`, `2T`, `16MiB`, `16MB` (all binary units).
pub fn parse_size(v: &str) -> Option<u64> {
    let t = v.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if num.contains('.') {
        let f: f64 = num.parse().ok()?;
        let bytes = f * mult as f64;
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            return None;
        }
        return Some(bytes as u64);
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_max_size(v: &str) -> Option<MaxSize> {
    let t = v.trim();
    if let Some(p) = t.strip_suffix('%') {
        let p: u8 = p.trim().parse().ok()?;
        return (1..=100)
            .contains(&p)
            .then_some(MaxSize::PercentOfFilesystem(p));
    }
    parse_size(t).map(MaxSize::Bytes)
}

/// Parses `30`, `30s`, `500ms`, `2m`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let t = v.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => return None,
    };
    // try_: a huge value ("1e30") is out of range, not a panic.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_huge_or_odd_timeout_is_refused_not_a_panic() {
        for v in [
            "111111111111111111111111111111",
            "1e400",
            "9999999999999999999999m",
        ] {
            let e = cfg(&[("BLOBCACHE_FETCH_TIMEOUT", v)]).unwrap_err();
            assert!(e.message().contains("BLOBCACHE_FETCH_TIMEOUT"), "{e}");
        }
    }

    fn cfg(vars: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = cfg(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.dir, Some(PathBuf::from("/home/u/.cache/blobcache")));
        assert_eq!(c.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(c.origin, OriginConfig::Azure);
        assert_eq!(c.max_size, MaxSize::PercentOfFilesystem(50));
    }

    #[test]
    fn xdg_cache_home_wins_over_home() {
        let c = cfg(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]).unwrap();
        assert_eq!(c.dir, Some(PathBuf::from("/x/blobcache")));
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("200G"), Some(200 << 30));
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_form() {
        for (var, val) in [
            ("BLOBCACHE_MAX_SIZE", "lots"),
            ("BLOBCACHE_BLOCK_SIZE", "1000"),
            ("BLOBCACHE_ORIGIN", "s3://x"),
            ("BLOBCACHE_LOG", "loud"),
            ("BLOBCACHE_FETCH_CONCURRENCY", "0"),
            ("BLOBCACHE_READAHEAD", "-1"),
            ("BLOBCACHE_FETCH_TIMEOUT", "forever"),
            ("BLOBCACHE_OFFLINE", "maybe"),
            ("BLOBCACHE_DIR", "relative/dir"),
            ("BLOBCACHE_AZURE_ENDPOINT", "ftp://x"),
            ("BLOBCACHE_AZURE_AUTH", "password"),
            ("BLOBCACHE_PROXY", "http://proxy:3128"),
            ("BLOBCACHE_MAPPED_BLOCKS", "0"),
            ("BLOBCACHE_MAPPED_BYTES", "12K"),
        ] {
            let e = cfg(&[(var, val)]).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Config);
            assert!(e.message().contains(var), "{e}");
            assert!(e.message().contains("use"), "{e}");
        }
    }

    fn check_of(vars: &[(&str, &str)]) -> Vec<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check(|k| m.get(k).cloned())
    }

    #[test]
    fn check_names_every_invalid_setting_as_from_lookup_names_the_first() {
        let vars = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("BLOBCACHE_MAX_SIZE", "lots"),
            ("BLOBCACHE_LOG", "loud"),
        ];
        let problems = check_of(&vars);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], cfg(&vars).unwrap_err().message());
        let m: HashMap<&str, &str> = vars.iter().copied().collect();
        assert_eq!(
            invalid_settings(|k| m.get(k).map(|v| v.to_string())),
            problems
        );
        assert!(problems[1].starts_with("BLOBCACHE_LOG=loud is not valid; use "));
        // Valid settings and an account: nothing to report, and from_lookup agrees.
        let good = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("BLOBCACHE_MAX_SIZE", "10G"),
            ("BLOBCACHE_LOG", " "),
        ];
        assert_eq!(check_of(&good), Vec::<String>::new());
        assert!(cfg(&good).is_ok());
    }

    #[test]
    fn check_reports_an_unset_account_name_for_the_azure_origin_only() {
        for account in [None, Some(""), Some("  ")] {
            let mut vars = vec![];
            if let Some(a) = account {
                vars.push(("AZURE_STORAGE_ACCOUNT_NAME", a));
            }
            assert_eq!(check_of(&vars), [account_not_set()], "{account:?}");
        }
        assert!(account_not_set().starts_with("AZURE_STORAGE_ACCOUNT_NAME is not set"));
        assert!(account_not_set().contains("set it to the name of the storage account"));
        assert_eq!(
            check_of(&[("BLOBCACHE_ORIGIN", "file:///srv/models")]),
            Vec::<String>::new()
        );
        // An invalid origin is reported, and Azure (the default) still needs the name.
        assert_eq!(check_of(&[("BLOBCACHE_ORIGIN", "s3://x")]).len(), 2);
    }

    #[test]
    fn origin_accepts_azure_and_absolute_file_urls() {
        assert_eq!(
            cfg(&[("BLOBCACHE_ORIGIN", "AZURE")]).unwrap().origin,
            OriginConfig::Azure
        );
        assert_eq!(
            cfg(&[("BLOBCACHE_ORIGIN", "file:///srv/models")])
                .unwrap()
                .origin,
            OriginConfig::Directory(PathBuf::from("/srv/models"))
        );
        assert!(cfg(&[("BLOBCACHE_ORIGIN", "file://relative")]).is_err());
    }

    #[test]
    fn max_size_accepts_percentages() {
        assert_eq!(
            cfg(&[("BLOBCACHE_MAX_SIZE", "25%")]).unwrap().max_size,
            MaxSize::PercentOfFilesystem(25)
        );
        assert!(cfg(&[("BLOBCACHE_MAX_SIZE", "0%")]).is_err());
        assert!(cfg(&[("BLOBCACHE_MAX_SIZE", "101%")]).is_err());
    }

    #[test]
    fn every_default_in_the_table_is_the_value_config_default_holds() {
        let d = Config::default();
        for s in SETTINGS {
            if let DefaultValue::Value(v) = s.default {
                let mut c = Config::default();
                assert!(
                    (s.parse)(&mut c, v).is_some(),
                    "{}: {v} does not parse",
                    s.name
                );
                assert_eq!(
                    c, d,
                    "{}: the table says {v}, Config::default() differs",
                    s.name
                );
            }
        }
        let c = cfg(&[]).unwrap();
        assert_eq!((c.dir, c.azure_endpoint), (None, None));
    }

    #[test]
    fn every_setting_is_read_from_its_variable_and_shown_as_set() {
        for (var, val, shown) in [
            ("BLOBCACHE_DIR", "/srv/cache", "/srv/cache"),
            ("BLOBCACHE_MAX_SIZE", "200G", "200.0 GiB"),
            ("BLOBCACHE_BLOCK_SIZE", "256K", "256.0 KiB"),
            ("BLOBCACHE_ORIGIN", "file:///srv/m", "file:///srv/m"),
            ("BLOBCACHE_LOG", "DEBUG", "debug"),
            ("BLOBCACHE_FETCH_CONCURRENCY", "3", "3"),
            ("BLOBCACHE_READAHEAD", "0", "0 blocks"),
            ("BLOBCACHE_FETCH_TIMEOUT", "500ms", "500ms"),
            ("BLOBCACHE_OFFLINE", "yes", "1"),
            (
                "BLOBCACHE_AZURE_ENDPOINT",
                "http://h:1/{account}/",
                "http://h:1/{account}",
            ),
            ("BLOBCACHE_AZURE_AUTH", "Anonymous", "anonymous"),
            ("BLOBCACHE_PROXY", "OFF", "off"),
            ("BLOBCACHE_DRAGONFLY", "127.0.0.1", "http://127.0.0.1:4001"),
            ("BLOBCACHE_DRAGONFLY_FALLBACK", "off", "0"),
            ("BLOBCACHE_SHARED", "on", "1"),
            ("BLOBCACHE_CLUSTER_DIR", "/mnt/shared", "/mnt/shared"),
            ("BLOBCACHE_CLUSTER_MAX_SIZE", "2T", "2.0 TiB"),
            ("BLOBCACHE_FSYNC", "true", "1"),
            ("BLOBCACHE_MAPPED_BLOCKS", "7", "7 blocks"),
            ("BLOBCACHE_MAPPED_BYTES", "2M", "2.0 MiB"),
            ("BLOBCACHE_AUTOREGISTER", "0", "0"),
        ] {
            let s = SETTINGS.iter().find(|s| s.name == var).unwrap();
            let c = cfg(&[(var, val)]).unwrap();
            assert_eq!(s.effective(&c, Some(val)), shown, "{var}");
            if s.show.is_some() {
                assert_ne!(c, cfg(&[]).unwrap(), "{var} changed nothing");
            }
        }
        assert_eq!(VARIABLES.len(), 21);
    }

    #[test]
    fn dragonfly_is_a_plain_http_address_and_nothing_more() {
        for (v, want) in [
            ("http://127.0.0.1:4001", "http://127.0.0.1:4001"),
            ("http://127.0.0.1:4001/", "http://127.0.0.1:4001"),
            ("10.0.0.7:65001", "http://10.0.0.7:65001"),
            ("dfdaemon.local", "http://dfdaemon.local:4001"),
            ("http://[::1]:4001", "http://[::1]:4001"),
        ] {
            assert_eq!(parse_dragonfly(v).as_deref(), Some(want), "{v}");
        }
        for v in [
            "https://127.0.0.1:4001",
            "http://u:p@127.0.0.1:4001",
            "http://127.0.0.1:4001/proxy",
            "http://127.0.0.1:4001/?x=1",
            "socks5://127.0.0.1:1080",
            "http://",
        ] {
            assert_eq!(parse_dragonfly(v), None, "{v}");
            let e = cfg(&[("BLOBCACHE_DRAGONFLY", v)]).unwrap_err();
            assert!(e.message().contains("BLOBCACHE_DRAGONFLY="), "{e}");
            assert!(!e.message().contains("u:p"), "credentials shown: {e}");
        }
    }

    /// The README's settings table as it should read.
    fn readme_table() -> String {
        let mut t = String::from("| variable | default | meaning |\n|---|---|---|\n");
        for s in SETTINGS {
            let d = s.default_markdown();
            let d = if d.is_empty() { d } else { format!(" {d}") };
            t.push_str(&format!("| `{}` |{d} | {} |\n", s.name, s.description));
        }
        t
    }

    /// The rows of the first table in `text` whose header is `header`, as
    /// trimmed cells.
    fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
        text.lines()
            .skip_while(|l| l.trim() != header)
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let l = l.trim().trim_start_matches('|').trim_end_matches('|');
                l.split('|').map(|c| c.trim().to_string()).collect()
            })
            .collect()
    }

    fn repository_file(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    /// With `BLOBCACHE_BLESS=1`, writes `want` to `path` instead of failing.
    fn bless(path: &Path, want: &str) -> bool {
        let on = std::env::var_os("BLOBCACHE_BLESS").is_some_and(|v| v == "1");
        if on {
            std::fs::write(path, want).unwrap();
        }
        on
    }

    #[test]
    fn the_readme_settings_table_lists_every_setting_with_its_default_and_description() {
        let path = repository_file("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let header = "| variable | default | meaning |";
        let want = readme_table();
        let ours = table_rows(&want, header);
        let theirs = table_rows(&readme, header);
        if ours == theirs {
            return;
        }
        let at = readme
            .find(header)
            .expect("the README has a settings table");
        let len = readme[at..]
            .find("\n\n")
            .map_or(readme.len() - at, |n| n + 1);
        let fixed = format!("{}{want}{}", &readme[..at], &readme[at + len..]);
        if !bless(&path, &fixed) {
            panic!(
                "the README's settings table differs from config::SETTINGS; \
                 edit both, or run this test with BLOBCACHE_BLESS=1 to write this table \
                 into the README:\n\n{want}"
            );
        }
    }

    /// `python/blobcache/_settings.py` as it should read.
    fn python_tables() -> String {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("    \"{n}\",\n"))
                .collect::<String>()
        };
        let settings: String = SETTINGS
            .iter()
            .map(|s| match s.default {
                DefaultValue::Value(v) => format!("    (\"{}\", \"{v}\"),\n", s.name),
                DefaultValue::Unset => format!("    (\"{}\", \"\"),\n", s.name),
                DefaultValue::Computed(_) => format!("    (\"{}\", None),\n", s.name),
            })
            .collect();
        format!(
            r#""""The library's settings and secret variables, for `python -m blobcache`.

Generated from crates/core/src/config.rs (SETTINGS) and
crates/core/src/origin/azure/auth.rs (SECRET_VARS, IDENTITY_VARS, KEY_VARS,
SAS_VARS) by the
test config::tests::the_python_copy_of_the_settings_and_secret_variables_is_generated
(crates/core), which fails when this file differs from them; run it with
BLOBCACHE_BLESS=1 to write it again. Do not edit.
"""

# (variable, default): the default as the README shows it; None when it is
# computed (BLOBCACHE_DIR), "" when unset.
SETTINGS = [
{settings}]

# Variables whose values are secrets: shown only as present or absent.
SECRET_VARS = [
{secrets}]

# Variables that name an identity or where a credential is: not secrets,
# shown as present or absent too.
IDENTITY_VARS = [
{identities}]

# The credential order: the first shared-key variable set wins, then the first
# SAS variable (each also in SECRET_VARS).
KEY_VARS = [
{keys}]
SAS_VARS = [
{sas}]
"#,
            secrets = list(crate::origin::azure::auth::SECRET_VARS),
            identities = list(crate::origin::azure::auth::IDENTITY_VARS),
            keys = list(crate::origin::azure::auth::KEY_VARS),
            sas = list(crate::origin::azure::auth::SAS_VARS),
        )
    }

    #[test]
    fn the_python_copy_of_the_settings_and_secret_variables_is_generated() {
        let path = repository_file("python/blobcache/_settings.py");
        let want = python_tables();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want && !bless(&path, &want) {
            panic!(
                "{} differs from config::SETTINGS and auth's lists of variables; \
                 run this test with BLOBCACHE_BLESS=1 to write it again",
                path.display()
            );
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    }
}
