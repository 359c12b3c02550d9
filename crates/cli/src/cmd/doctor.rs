//! `blobcache doctor`: is this node set up to use the cache?
//!
//! Checks, in order: the configuration (every `BLOBCACHE_*` variable and its
//! effective value), the Azure credentials present (names only: values never
//! reach the output), whether the origin answers (one cheap request with a
//! short timeout), whether the cache directory is writable and how much room
//! it has, the cluster tier when one is configured (`cluster.rs`: mounted,
//! shared, writable, room, block size, locks; bounded in time, as a hung
//! mount blocks every look at it), Dragonfly's dfdaemon when
//! `BLOBCACHE_DRAGONFLY` is set (does its proxy port take connections, are
//! blocks large enough to go through P2P), and whether an installed Run:ai
//! streamer will load the library.
//! For the last one it runs `python -m blobcache --json` (the wheel's own
//! check, which loads the library as the streamer does) with the Python
//! beside this command, else `python3` on the PATH, and reads its report as
//! typed JSON; without that Python or its `blobcache` package the check is
//! skipped, saying so, and a report it cannot read is a problem.
//!
//! That report's verdict is the source of truth: when it says the library
//! will not load (`will_load` false, or exit status 1), every reason it
//! gives is a problem here, so `doctor` never says "no problems found"
//! where `python -m blobcache` fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blobcache_core::config::{Config, OriginConfig, SETTINGS, VARIABLES};
use blobcache_core::origin::azure::auth::{IDENTITY_VARS, SECRET_VARS};
use blobcache_core::origin::azure::{AzureEnv, AzureOrigin, DRAGONFLY_MIN_P2P_RANGE};
use blobcache_core::origin::Origin;
use blobcache_core::{BlobKey, ErrorKind};
use serde::Deserialize;

mod cluster;

use super::{env_account, location};
use crate::output::size;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Also list this az:// location (checks container and credential)
    uri: Option<String>,
    /// Seconds to wait for the endpoint, and for the cluster tier's directory
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
    /// The child process that checks the cluster tier (see cluster.rs): its findings as JSON lines
    #[arg(long, hide = true)]
    cluster_probe: bool,
}

/// Azure variables whose values are not secret, shown as they are. Every
/// other Azure variable doctor names (auth's `SECRET_VARS`, the one list of
/// secrets, and `IDENTITY_VARS`) is shown as present or absent only.
const SHOWN: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ENDPOINT_SUFFIX",
    "AZURE_SKIP_SIGNATURE",
    "AZURE_USE_AZURE_CLI",
];

struct Report {
    lines: Vec<String>,
    problems: Vec<String>,
    /// Things that work, but not as they should (doctor still exits 0).
    warnings: usize,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
    fn warning(&mut self, s: impl Into<String>) {
        self.lines.push(format!("  WARNING: {}", s.into()));
        self.warnings += 1;
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

pub fn run(
    Args {
        uri,
        timeout,
        cluster_probe,
    }: Args,
    account: Option<&str>,
) -> Outcome {
    if cluster_probe {
        cluster::serve(&super::config()?);
        return Ok(());
    }
    let timeout = Duration::from_secs(timeout);
    let loc = uri.as_deref().map(|u| location(u, account)).transpose()?;
    let mut r = Report {
        lines: vec![format!("blobcache {}", env!("CARGO_PKG_VERSION"))],
        problems: vec![],
        warnings: 0,
    };
    r.line("");
    r.line("configuration:");
    let config = Config::from_env();
    let width = VARIABLES.iter().map(|v| v.len()).max().unwrap_or(0);
    match &config {
        Ok(c) => {
            for s in SETTINGS {
                let value = var(s.name);
                let how = if value.is_some() { "set" } else { "default" };
                let name = s.name;
                let shown = s.effective(c, value.as_deref());
                r.line(format!("  {name:<width$}  {shown}  ({how})"));
            }
        }
        Err(e) => r.problem(format!("the configuration is invalid: {e}")),
    }
    // The library's own check (python -m blobcache asks the library for the
    // same list): every invalid setting, and an unset account name.
    for p in blobcache_core::provider::check_config() {
        if !r.problems.iter().any(|q| q.contains(&p)) {
            r.problem(p);
        }
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
    if let (Some(l), Some(u)) = (&loc, &uri) {
        if let Some(said) = l.assumed_account(u) {
            r.line(format!("  {said}"));
        }
    }
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
                Some(acct) => check_azure(
                    &mut r,
                    &quick,
                    acct,
                    &loc.as_ref().map_or(String::new(), |l| l.account_hint()),
                ),
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

    if let Some(c) = config.as_ref().ok().filter(|c| c.cluster_dir.is_some()) {
        r.line("");
        r.line("cluster tier:");
        for said in cluster::check(c, timeout) {
            match said {
                cluster::Said::Line(l) => r.line(l),
                cluster::Said::Warning(w) => r.warning(w),
                cluster::Said::Problem(p) => r.problem(p),
            }
        }
    }

    if let Some(c) = config.as_ref().ok().filter(|c| c.dragonfly.is_some()) {
        r.line("");
        r.line("dragonfly:");
        check_dragonfly(&mut r, c, timeout);
    }

    r.line("");
    r.line("Run:ai streamer:");
    check_streamer(&mut r);

    r.line("");
    let warnings = match r.warnings {
        0 => String::new(),
        1 => ", 1 warning".into(),
        n => format!(", {n} warnings"),
    };
    if r.problems.is_empty() {
        r.line(format!("no problems found{warnings}"));
    } else {
        r.line(format!("{} problem(s) found{warnings}", r.problems.len()));
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

/// `hint`: what to append to a failure when the account was assumed.
fn check_azure(r: &mut Report, config: &Config, account: &str, hint: &str) {
    let origin = match AzureOrigin::with_env(config, AzureEnv::from_process()) {
        Ok(o) => o,
        Err(e) => return r.problem(e.to_string()),
    };
    match (
        origin.endpoint_of(account),
        origin.credential_of(account),
        origin.route_of(account),
    ) {
        (Ok(endpoint), Ok(cred), Ok(route)) => {
            r.line(format!("  account {account} at {endpoint}"));
            r.line(format!("  credential: {cred}"));
            r.line(format!("  requests go {route}"));
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return r.problem(e.to_string()),
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
        Err(e) => r.problem(format!("the endpoint does not answer: {e}{hint}")),
    }
    origin.shutdown();
}

/// Dragonfly mode: whether dfdaemon's proxy port takes connections, and
/// whether the blocks are large enough for it to share them.
fn check_dragonfly(r: &mut Report, c: &Config, timeout: Duration) {
    use std::net::{TcpStream, ToSocketAddrs};
    let Some(url) = c.dragonfly.as_deref() else {
        return;
    };
    let host_port = url.trim_start_matches("http://");
    r.line(format!(
        "  dfdaemon proxy {url}: blob GETs go through it, HEAD and listing go direct"
    ));
    let connected = host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
        .and_then(|a| TcpStream::connect_timeout(&a, timeout).map_err(|e| e.to_string()));
    match connected {
        Ok(_) => r.line("  dfdaemon accepts connections"),
        Err(e) if c.dragonfly_fallback => r.warning(format!(
            "dfdaemon at {host_port} cannot be reached ({e}): blob GETs will go directly to Azure (BLOBCACHE_DRAGONFLY_FALLBACK=1)"
        )),
        Err(e) => r.problem(format!(
            "dfdaemon at {host_port} cannot be reached ({e}), and BLOBCACHE_DRAGONFLY_FALLBACK=0: reads will fail"
        )),
    }
    if c.block_size <= DRAGONFLY_MIN_P2P_RANGE {
        r.warning(format!(
            "BLOBCACHE_BLOCK_SIZE={} is not larger than 4 MiB: dfdaemon fetches ranges that small from Azure itself, without P2P; use 8M or more",
            size(c.block_size)
        ));
    }
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
            "cannot list az://{}/{container}/{}: {e}{}",
            l.account,
            l.path,
            l.account_hint()
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
                let cap = super::cap(c, s.root()).map_or("?".into(), size);
                let used = blobcache_core::store::evict::scan(s.root(), s.file_mode()).bytes;
                r.line(format!(
                    "  filesystem {} with {} free; cache uses {} of a {cap} cap",
                    size(total),
                    size(free),
                    size(used),
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

/// What `python -m blobcache --json` reports (`report()` in
/// python/blobcache/__main__.py): the parts `doctor` shows. Unknown members
/// are ignored, so the wheel may report more.
#[derive(Debug, Deserialize)]
struct PythonReport {
    version: String,
    streamer: Streamer,
    /// The settings as the library checked them.
    #[serde(default)]
    configuration: Configuration,
}

/// The `configuration` member of the report.
#[derive(Debug, Default, Deserialize)]
struct Configuration {
    /// What the library says is wrong with the settings (each fails every
    /// read); `None` when the library could not be asked. Only an empty
    /// list lets `python -m blobcache` say yes.
    #[serde(default = "no_problems")]
    problems: Option<Vec<String>>,
}

fn no_problems() -> Option<Vec<String>> {
    Some(vec![])
}

/// Whether the streamer installed beside that Python will load the library.
#[derive(Debug, Deserialize)]
struct Streamer {
    /// The installed versions (`None`: not installed).
    #[serde(rename = "runai-model-streamer")]
    streamer: Option<String>,
    #[serde(rename = "runai-model-streamer-azure")]
    streamer_azure: Option<String>,
    #[serde(rename = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED")]
    enabled: Option<String>,
    #[serde(rename = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB")]
    lib: Option<String>,
    set_by_startup_hook: bool,
    will_load: bool,
    /// Why it will not load the library.
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    notes: Vec<String>,
}

/// How asking `python -m blobcache --json` went.
#[derive(Debug)]
enum Asked {
    /// No such program.
    NoPython,
    /// That Python has no `blobcache` package.
    NoModule,
    /// Its report, and its exit status (0: will load, 1: will not).
    Report(PythonReport, i32),
    /// It failed, or printed no report: why.
    Failed(String),
}

fn ask_python(py: &Path) -> Asked {
    let out = match Command::new(py)
        .args(["-m", "blobcache", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Asked::NoPython,
        Err(e) => return Asked::Failed(format!("cannot run it: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named blobcache") {
        return Asked::NoModule;
    }
    let last = stderr.lines().last().unwrap_or("").trim();
    match out.status.code() {
        // 0: the streamer will load the library; 1: it will not (the report says why).
        Some(code @ (0 | 1)) => match serde_json::from_slice(&out.stdout) {
            Ok(report) => Asked::Report(report, code),
            Err(e) => Asked::Failed(format!("it printed no report doctor can read ({e})")),
        },
        Some(2) => Asked::Failed(format!(
            "it refused --json, so its blobcache package is older than this command: {last}"
        )),
        Some(code) => Asked::Failed(format!("exit status {code}: {last}")),
        None => Asked::Failed(format!("{}: {last}", out.status)),
    }
}

fn check_streamer(r: &mut Report) {
    let py = python();
    let (report, code) = match ask_python(&py) {
        Asked::NoPython => {
            return r.line(format!(
                "  not checked: no Python ({}) to ask",
                py.display()
            ))
        }
        Asked::NoModule => {
            return r.line(format!(
                "  not checked: the blobcache wheel is not installed for {}",
                py.display()
            ))
        }
        Asked::Failed(why) => {
            return r.problem(format!(
                "{} -m blobcache --json failed: {why}",
                py.display()
            ))
        }
        Asked::Report(report, code) => (report, code),
    };
    r.line(format!(
        "  (from {} -m blobcache, blobcache {})",
        py.display(),
        report.version
    ));
    let s = &report.streamer;
    let installed = |v: &Option<String>| v.clone().unwrap_or("not installed".into());
    r.line(format!(
        "  runai-model-streamer       {}",
        installed(&s.streamer)
    ));
    r.line(format!(
        "  runai-model-streamer-azure {}",
        installed(&s.streamer_azure)
    ));
    r.line(format!(
        "  RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED = {}",
        s.enabled.as_deref().unwrap_or("(not set: auto)")
    ));
    r.line(format!(
        "  RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB = {}{}",
        s.lib
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or("(not set)"),
        if s.set_by_startup_hook {
            " (set by blobcache's start-up hook)"
        } else {
            ""
        }
    ));
    for n in &s.notes {
        r.line(format!("  note: {n}"));
    }
    // The report's verdict decides (the streamer's, and the library's check
    // of the settings); its exit status must agree with it.
    let unchecked = "the library could not be asked to check the settings".to_string();
    let settings: Vec<String> = match &report.configuration.problems {
        Some(list) => list.clone(),
        None => vec![unchecked],
    };
    let mut reasons: Vec<&str> = Vec::new();
    for reason in s.reasons.iter().chain(&settings) {
        if !reasons.contains(&reason.as_str()) {
            reasons.push(reason);
        }
    }
    let will_load = s.will_load && settings.is_empty();
    if will_load && code == 0 {
        return r.line("  will load blobcache: yes, at its first az:// read");
    }
    r.line("  will load blobcache: no");
    for reason in &reasons {
        // A setting the configuration check above reported already.
        if !r.problems.iter().any(|q| q.contains(reason)) {
            r.problem(*reason);
        }
    }
    if will_load {
        r.problem(format!(
            "{} -m blobcache exited with status {code} although its report says the library will load",
            py.display()
        ));
    } else if reasons.is_empty() {
        r.problem(format!(
            "{} -m blobcache says the streamer will not load the library, and gives no reason",
            py.display()
        ));
    }
    // A problem either way, as python -m blobcache's exit status says.
    if s.streamer.is_none() {
        r.line("  (no streamer is installed beside this command: a node that only warms the cache can ignore this)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_variable_is_shown_by_value() {
        for name in SHOWN {
            assert!(!SECRET_VARS.contains(name), "{name} is a secret");
        }
    }
}
