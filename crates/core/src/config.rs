//! Configuration: one typed struct, read once per lifecycle from the
//! environment and validated. An invalid value is an error that names the
//! variable and the accepted form; nothing falls back silently.

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
    /// Group-shared cache: directories 0770 and files 0660 instead of 0700/0600.
    pub shared: bool,
    /// fsync each block before publishing it.
    pub fsync: bool,
    /// At most this many cached blocks open (mapped) at once in this process.
    pub mapped_blocks: usize,
    /// At most this many bytes of cached blocks mapped at once in this process.
    pub mapped_bytes: u64,
}

pub const DEFAULT_BLOCK_SIZE: u64 = 16 << 20;
pub const MIN_BLOCK_SIZE: u64 = 64 << 10;
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
pub const DEFAULT_MAX_SIZE_PERCENT: u8 = 50;
/// Default bound on open blocks: a small share of Linux's default
/// `vm.max_map_count` (65,530), which the host's own allocator, threads and
/// libraries need too.
pub const DEFAULT_MAPPED_BLOCKS: usize = 4096;
/// Default bound on mapped bytes (and so on the file-backed RSS the cache
/// adds to the host).
pub const DEFAULT_MAPPED_BYTES: u64 = 1 << 30;

/// Every variable this module reads, for documentation and typo detection.
pub const VARIABLES: &[&str] = &[
    "BLOBCACHE_DIR",
    "BLOBCACHE_MAX_SIZE",
    "BLOBCACHE_BLOCK_SIZE",
    "BLOBCACHE_ORIGIN",
    "BLOBCACHE_LOG",
    "BLOBCACHE_FETCH_CONCURRENCY",
    "BLOBCACHE_READAHEAD",
    "BLOBCACHE_FETCH_TIMEOUT",
    "BLOBCACHE_OFFLINE",
    "BLOBCACHE_AZURE_ENDPOINT",
    "BLOBCACHE_AZURE_AUTH",
    "BLOBCACHE_SHARED",
    "BLOBCACHE_FSYNC",
    "BLOBCACHE_MAPPED_BLOCKS",
    "BLOBCACHE_MAPPED_BYTES",
    "BLOBCACHE_AUTOREGISTER",
];

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: None,
            max_size: MaxSize::PercentOfFilesystem(DEFAULT_MAX_SIZE_PERCENT),
            block_size: DEFAULT_BLOCK_SIZE,
            origin: OriginConfig::Azure,
            log_level: Level::Warn,
            fetch_concurrency: 16,
            readahead_blocks: 4,
            fetch_timeout: Duration::from_secs(30),
            offline: false,
            azure_endpoint: None,
            azure_auth: AzureAuth::Auto,
            shared: false,
            fsync: false,
            mapped_blocks: DEFAULT_MAPPED_BLOCKS,
            mapped_bytes: DEFAULT_MAPPED_BYTES,
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the configuration through `get`, which returns a variable's value.
    /// Empty values count as unset.
    #[allow(clippy::field_reassign_with_default)]
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        c.dir = match get("BLOBCACHE_DIR") {
            Some(d) => {
                let p = PathBuf::from(d);
                if !p.is_absolute() {
                    return Err(Error::config(format!(
                        "BLOBCACHE_DIR={} is not valid; use an absolute directory such as /var/cache/blobcache",
                        p.display()
                    )));
                }
                Some(p)
            }
            None => default_dir(&get),
        };
        if let Some(v) = get("BLOBCACHE_MAX_SIZE") {
            c.max_size = parse_max_size(&v).ok_or_else(|| {
                Error::config(format!(
                    "BLOBCACHE_MAX_SIZE={v} is not valid; use a size such as 200G, 512M, 1T (binary units, optional B/iB), a byte count, or a percentage of the cache filesystem such as 50%"
                ))
            })?;
        }
        if let Some(v) = get("BLOBCACHE_BLOCK_SIZE") {
            c.block_size = parse_size(&v)
                .filter(|b| (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(b) && b % MIN_BLOCK_SIZE == 0)
                .ok_or_else(|| {
                    Error::config(format!(
                        "BLOBCACHE_BLOCK_SIZE={v} is not valid; use a multiple of 64K between 64K and 1G, such as 16M"
                    ))
                })?;
        }
        if let Some(v) = get("BLOBCACHE_ORIGIN") {
            c.origin = parse_origin(&v)?;
        }
        if let Some(v) = get("BLOBCACHE_LOG") {
            c.log_level = Level::parse(&v).ok_or_else(|| {
                Error::config(format!(
                    "BLOBCACHE_LOG={v} is not valid; use error, warn, info or debug"
                ))
            })?;
        }
        if let Some(v) = get("BLOBCACHE_FETCH_CONCURRENCY") {
            c.fetch_concurrency = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    Error::config(format!(
                        "BLOBCACHE_FETCH_CONCURRENCY={v} is not valid; use a whole number from 1 to 256"
                    ))
                })?;
        }
        if let Some(v) = get("BLOBCACHE_READAHEAD") {
            c.readahead_blocks = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 64)
                .ok_or_else(|| {
                    Error::config(format!(
                        "BLOBCACHE_READAHEAD={v} is not valid; use a number of blocks from 0 (off) to 64"
                    ))
                })?;
        }
        if let Some(v) = get("BLOBCACHE_FETCH_TIMEOUT") {
            c.fetch_timeout = parse_duration(&v)
                .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600))
                .ok_or_else(|| {
                    Error::config(format!(
                        "BLOBCACHE_FETCH_TIMEOUT={v} is not valid; use a duration from 100ms to 3600s such as 30s, 500ms or 2m"
                    ))
                })?;
        }
        if let Some(v) = get("BLOBCACHE_MAPPED_BLOCKS") {
            c.mapped_blocks = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=32768).contains(n))
                .ok_or_else(|| {
                    Error::config(format!(
                        "BLOBCACHE_MAPPED_BLOCKS={v} is not valid; use a number of blocks from 1 to 32768"
                    ))
                })?;
        }
        if let Some(v) = get("BLOBCACHE_MAPPED_BYTES") {
            c.mapped_bytes = parse_size(&v).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                Error::config(format!(
                    "BLOBCACHE_MAPPED_BYTES={v} is not valid; use a size of at least 1M such as 1G or 512M"
                ))
            })?;
        }
        c.offline = parse_flag(&get, "BLOBCACHE_OFFLINE")?.unwrap_or(false);
        c.shared = parse_flag(&get, "BLOBCACHE_SHARED")?.unwrap_or(false);
        c.fsync = parse_flag(&get, "BLOBCACHE_FSYNC")?.unwrap_or(false);
        if let Some(v) = get("BLOBCACHE_AZURE_ENDPOINT") {
            let t = v.trim();
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(Error::config(format!(
                    "BLOBCACHE_AZURE_ENDPOINT={v} is not valid; use an http:// or https:// URL template such as http://127.0.0.1:10000/{{account}}"
                )));
            }
            c.azure_endpoint = Some(t.trim_end_matches('/').to_string());
        }
        if let Some(v) = get("BLOBCACHE_AZURE_AUTH") {
            c.azure_auth = match v.trim().to_ascii_lowercase().as_str() {
                "auto" => AzureAuth::Auto,
                "anonymous" => AzureAuth::Anonymous,
                _ => {
                    return Err(Error::config(format!(
                        "BLOBCACHE_AZURE_AUTH={v} is not valid; use auto (credentials from the environment) or anonymous (unsigned requests, for public containers)"
                    )))
                }
            };
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

fn parse_flag(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>> {
    match get(name) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(Error::config(format!(
                "{name}={v} is not valid; use 1 or 0"
            ))),
        },
    }
}

fn parse_origin(v: &str) -> Result<OriginConfig> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("azure") {
        return Ok(OriginConfig::Azure);
    }
    if let Some(path) = t.strip_prefix("file://") {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            return Ok(OriginConfig::Directory(p));
        }
    }
    Err(Error::config(format!(
        "BLOBCACHE_ORIGIN={v} is not valid; use azure, or file:///absolute/path for a directory holding <account>/<container>/<blob>"
    )))
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
            ("BLOBCACHE_MAPPED_BLOCKS", "0"),
            ("BLOBCACHE_MAPPED_BYTES", "12K"),
        ] {
            let e = cfg(&[(var, val)]).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Config);
            assert!(e.message().contains(var), "{e}");
            assert!(e.message().contains("use"), "{e}");
        }
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
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    }
}
