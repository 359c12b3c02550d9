//! `blobcache doctor`: is this node set up to use the cache?
//!
//! Checks, in order: the configuration (every `BLOBCACHE_*` variable and its
//! effective value), the Azure credentials present (names only: values never
//! reach the output), whether the origin answers (one cheap request with a
//! short timeout), whether the cache directory is writable and how much room
//! it has, and whether an installed Run:ai streamer will load the library.
//! For the last one it runs `python -m blobcache` (the wheel's own check,
//! which loads the library as the streamer does) with the Python beside this
//! command, else `python3` on the PATH; without one, that check is skipped.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blobcache_core::config::{AzureAuth, Config, MaxSize, OriginConfig, VARIABLES};
use blobcache_core::origin::azure::auth::{IDENTITY_VARS, SECRET_VARS};
use blobcache_core::origin::azure::{AzureEnv, AzureOrigin};
use blobcache_core::origin::Origin;
use blobcache_core::{BlobKey, ErrorKind};

use crate::output::size;
use crate::{env_account, location, Failure, Outcome};

/// Azure variables whose values are not secret.
const SHOWN: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ENDPOINT_SUFFIX",
    "AZURE_SKIP_SIGNATURE",
    "AZURE_USE_AZURE_CLI",
];

struct Report {
    lines: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
    fn problem(&mut self, s: impl Into<String>) {
        let s = s.into();
        self.lines.push(format!("  PROBLEM: {s}"));
        self.problems.push(s);
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var_os(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty())
}

/// The effective value of each setting, as the library reads it.
fn effective(c: &Config, name: &str) -> String {
    match name {
        "BLOBCACHE_DIR" => c
            .dir
            .as_ref()
            .map_or("(none)".into(), |d| d.display().to_string()),
        "BLOBCACHE_MAX_SIZE" => match c.max_size {
            MaxSize::Bytes(b) => size(b),
            MaxSize::PercentOfFilesystem(p) => format!("{p}% of the cache filesystem"),
        },
        "BLOBCACHE_BLOCK_SIZE" => size(c.block_size),
        "BLOBCACHE_ORIGIN" => match &c.origin {
            OriginConfig::Azure => "azure".into(),
            OriginConfig::Directory(p) => format!("file://{}", p.display()),
        },
        "BLOBCACHE_LOG" => c.log_level.as_str().into(),
        "BLOBCACHE_FETCH_CONCURRENCY" => c.fetch_concurrency.to_string(),
        "BLOBCACHE_READAHEAD" => format!("{} blocks", c.readahead_blocks),
        "BLOBCACHE_FETCH_TIMEOUT" => format!("{:?}", c.fetch_timeout),
        "BLOBCACHE_OFFLINE" => (c.offline as u8).to_string(),
        "BLOBCACHE_AZURE_ENDPOINT" => c.azure_endpoint.clone().unwrap_or("(not set)".into()),
        "BLOBCACHE_AZURE_AUTH" => match c.azure_auth {
            AzureAuth::Auto => "auto".into(),
            AzureAuth::Anonymous => "anonymous".into(),
        },
        "BLOBCACHE_SHARED" => (c.shared as u8).to_string(),
        "BLOBCACHE_FSYNC" => (c.fsync as u8).to_string(),
        "BLOBCACHE_MAPPED_BLOCKS" => format!("{} blocks", c.mapped_blocks),
        "BLOBCACHE_MAPPED_BYTES" => size(c.mapped_bytes),
        "BLOBCACHE_AUTOREGISTER" => var(name).unwrap_or("1".into()),
        _ => "?".into(),
    }
}

pub fn doctor(uri: Option<&str>, account: Option<&str>, timeout: Duration) -> Outcome {
    let loc = uri.map(|u| location(u, account)).transpose()?;
    let mut r = Report {
        lines: vec![format!("blobcache {}", env!("CARGO_PKG_VERSION"))],
        problems: vec![],
    };
    r.line("");
    r.line("configuration:");
    let config = Config::from_env();
    let width = VARIABLES.iter().map(|v| v.len()).max().unwrap_or(0);
    match &config {
        Ok(c) => {
            for name in VARIABLES {
                let how = if var(name).is_some() {
                    "set"
                } else {
                    "default"
                };
                r.line(format!("  {name:<width$}  {}  ({how})", effective(c, name)));
            }
        }
        Err(e) => r.problem(format!("the configuration is invalid: {e}")),
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BLOBCACHE_") && !VARIABLES.contains(&name.as_ref()) {
            r.line(format!("  {name}: unknown setting, ignored (misspelt?)"));
        }
    }

    r.line("");
    r.line("azure:");
    let credentials = || SECRET_VARS.iter().chain(IDENTITY_VARS);
    let width = credentials()
        .chain(SHOWN)
        .map(|v| v.len())
        .max()
        .unwrap_or(0);
    for name in SHOWN {
        r.line(format!(
            "  {name:<width$}  {}",
            var(name).unwrap_or("(not set)".into())
        ));
    }
    for name in credentials() {
        let state = if var(name).is_some() {
            "present"
        } else {
            "absent"
        };
        r.line(format!("  {name:<width$}  {state}"));
    }
    let account = loc
        .as_ref()
        .map(|l| l.account.clone())
        .or(account.map(str::to_string))
        .or_else(env_account);

    r.line("");
    r.line("origin:");
    if let Ok(c) = &config {
        let quick = Config {
            fetch_timeout: timeout.min(c.fetch_timeout),
            ..c.clone()
        };
        match &c.origin {
            OriginConfig::Directory(root) => {
                r.line(format!("  directory {}", root.display()));
                if std::fs::read_dir(root).is_err() {
                    r.problem(format!("{} cannot be read", root.display()));
                }
            }
            OriginConfig::Azure => match &account {
                None => r.line("  no account given (--account, an az:// URI, or AZURE_STORAGE_ACCOUNT_NAME): endpoint not checked"),
                Some(acct) => check_azure(&mut r, &quick, acct),
            },
        }
        if let (Some(l), Ok(origin)) = (&loc, blobcache_core::origin::from_config(&quick)) {
            check_listing(&mut r, &*origin, l);
        }
    }

    r.line("");
    r.line("cache directory:");
    if let Ok(c) = &config {
        check_dir(&mut r, c);
    }

    r.line("");
    r.line("Run:ai streamer:");
    check_streamer(&mut r);

    r.line("");
    if r.problems.is_empty() {
        r.line("no problems found");
    } else {
        r.line(format!("{} problem(s) found", r.problems.len()));
    }
    let mut out = std::io::stdout().lock();
    for l in &r.lines {
        let _ = writeln!(out, "{}", blobcache_core::redact::redact(l));
    }
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Quiet)
    }
}

fn check_azure(r: &mut Report, config: &Config, account: &str) {
    let origin = match AzureOrigin::with_env(config, AzureEnv::from_process()) {
        Ok(o) => o,
        Err(e) => return r.problem(e.to_string()),
    };
    match (origin.endpoint_of(account), origin.credential_of(account)) {
        (Ok(endpoint), Ok(cred)) => {
            r.line(format!("  account {account} at {endpoint}"));
            r.line(format!("  credential: {cred}"));
        }
        (Err(e), _) | (_, Err(e)) => return r.problem(e.to_string()),
    }
    // A HEAD of a blob that does not exist: any answer (404, 403) shows the
    // endpoint is there; only no answer at all is a problem.
    let probe = BlobKey::new(account, "blobcache-doctor", "probe").expect("valid names");
    let t0 = Instant::now();
    match origin.stat(&probe) {
        Ok(_) => r.line("  endpoint answers"),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Config) => r.line(format!(
            "  endpoint answers ({} ms{})",
            t0.elapsed().as_millis(),
            if e.kind() == ErrorKind::Config {
                "; it refused the probe's credential for a container that may not exist: list a real location with `blobcache doctor az://...` to check access"
            } else {
                ""
            }
        )),
        Err(e) => r.problem(format!("the endpoint does not answer: {e}")),
    }
    origin.shutdown();
}

fn check_listing(r: &mut Report, origin: &dyn Origin, l: &crate::uri::Location) {
    let Some(container) = &l.container else {
        return;
    };
    match origin.list(&l.account, container, &l.path) {
        Ok(blobs) => {
            let n = blobs
                .iter()
                .filter(|b| crate::uri::covers_name(&l.path, &b.name))
                .count();
            r.line(format!(
                "  az://{}/{container}/{}: listing works, {n} blobs",
                l.account, l.path
            ));
        }
        Err(e) => r.problem(format!(
            "cannot list az://{}/{container}/{}: {e}",
            l.account, l.path
        )),
    }
    origin.shutdown();
}

fn check_dir(r: &mut Report, c: &Config) {
    let Some(dir) = &c.dir else {
        return r
            .problem("no cache directory: set BLOBCACHE_DIR (HOME and XDG_CACHE_HOME are unset)");
    };
    r.line(format!("  {}", dir.display()));
    match blobcache_core::store::Store::open(dir, c.block_size, c.shared, c.fsync) {
        Err(e) => r.problem(format!("cannot use the cache directory: {e}")),
        Ok(s) => {
            let probe = s.root().join(format!(".doctor.{}", std::process::id()));
            match std::fs::write(&probe, b"blobcache doctor") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&probe);
                    r.line("  writable: yes");
                }
                Err(e) => r.problem(format!("{} is not writable: {e}", dir.display())),
            }
            if let Some((total, free)) = blobcache_core::store::filesystem_size(s.root()) {
                let cap = crate::inspect::cap(c, s.root()).unwrap_or(0);
                let used = blobcache_core::store::evict::scan(s.root(), s.file_mode()).bytes;
                r.line(format!(
                    "  filesystem {} with {} free; cache uses {} of a {} cap",
                    size(total),
                    size(free),
                    size(used),
                    size(cap)
                ));
                if free < c.block_size {
                    r.problem("the cache filesystem has less room than one block");
                }
            }
        }
    }
}

/// The Python to ask: the one beside this command (a venv's bin), else
/// `python3` on the PATH.
fn python() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        for name in ["python3", "python"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("python3")
}

fn check_streamer(r: &mut Report) {
    let py = python();
    let child = Command::new(&py)
        .args(["-m", "blobcache"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(_) => {
            return r.line(format!(
                "  not checked: no Python ({}) to ask",
                py.display()
            ))
        }
    };
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return r.line(format!("  not checked: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named blobcache") {
        return r.line(format!(
            "  not checked: the blobcache wheel is not installed for {}",
            py.display()
        ));
    }
    // The streamer section of `python -m blobcache`.
    let section: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Run:ai streamer:"))
        .skip(1)
        .collect();
    r.line(format!("  (from {} -m blobcache)", py.display()));
    for l in &section {
        r.line(l.to_string());
    }
    match out.status.code() {
        Some(0) => {}
        Some(1)
            if section
                .iter()
                .any(|l| l.contains("runai-model-streamer") && l.contains("not installed")) =>
        {
            r.line("  (no streamer installed here: nothing to load the library)")
        }
        Some(1) => r.problem("the installed streamer will not load the library (reasons above)"),
        _ => r.problem(format!(
            "{} -m blobcache failed: {}",
            py.display(),
            stderr.lines().last().unwrap_or("")
        )),
    }
}
