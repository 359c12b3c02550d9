//! The `blobcache` command: operator tooling built on the same cache and
//! origin code as the library.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use blobcache::{BlobKey, Cache, Config};

const USAGE: &str = "\
usage: blobcache <command> [options]

commands:
  cat <uri> [--out FILE] [--threads N] [--chunk BYTES]
      Read a blob through the cache (filling it on a miss) and write its
      bytes to FILE (default: discard). Prints the process's counters as
      JSON on stdout when done.
  help
      Show this text.

A <uri> is az://<account>/<container>/<blob>, or az://<container>/<blob>
with --account NAME (or AZURE_STORAGE_ACCOUNT_NAME set), as the streamer
writes them. Configuration comes from the BLOBCACHE_* environment variables
(see the README).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blobcache: {}", blobcache::redact::redact(&e));
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    positional: Vec<String>,
    out: Option<String>,
    threads: usize,
    chunk: u64,
    account: Option<String>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        positional: vec![],
        out: None,
        threads: 8,
        chunk: 8 << 20,
        account: std::env::var("AZURE_STORAGE_ACCOUNT_NAME")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--out" => o.out = Some(val("--out")?),
            "--threads" => {
                o.threads = val("--threads")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or("--threads takes a number from 1 to 1024")?
            }
            "--chunk" => {
                o.chunk = blobcache::config::parse_size(&val("--chunk")?)
                    .filter(|n| *n > 0)
                    .ok_or("--chunk takes a size such as 8M")?
            }
            "--account" => o.account = Some(val("--account")?),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n\n{USAGE}")),
            _ => o.positional.push(a.clone()),
        }
    }
    Ok(o)
}

/// Parses `az://account/container/blob`, or `az://container/blob` with an
/// account given separately.
fn parse_uri(uri: &str, account: Option<&str>) -> Result<BlobKey, String> {
    let rest = uri
        .strip_prefix("az://")
        .ok_or_else(|| format!("{uri} is not an az:// URI"))?;
    let parts: Vec<&str> = rest.splitn(3, '/').collect();
    let (a, c, b) = match (account, parts.as_slice()) {
        (Some(a), [c, b]) => (a.to_string(), *c, b.to_string()),
        (Some(a), [c, b1, b2]) if *c != a => (a.to_string(), *c, format!("{b1}/{b2}")),
        (_, [a, c, b]) => (a.to_string(), *c, b.to_string()),
        _ => return Err(format!("{uri}: expected az://<account>/<container>/<blob>")),
    };
    BlobKey::new(&a, c, &b).map_err(|e| format!("{uri}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let Some(cmd) = args.first() else {
        return Err(format!("no command given\n\n{USAGE}"));
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        "cat" => cat(&parse_opts(&args[1..])?),
        other => Err(format!("unknown command {other}\n\n{USAGE}")),
    }
}

fn cat(o: &Opts) -> Result<(), String> {
    let [uri] = o.positional.as_slice() else {
        return Err("cat takes exactly one URI".into());
    };
    let key = parse_uri(uri, o.account.as_deref())?;
    let config = Config::from_env().map_err(|e| e.to_string())?;
    blobcache::log::set_level(config.log_level);
    let cache = Arc::new(Cache::new(config).map_err(|e| e.to_string())?);
    let size = cache
        .entry(&key)
        .map_err(|e| format!("{key}: {e}"))?
        .info
        .size;
    let out = match &o.out {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?;
            f.set_len(size).map_err(|e| format!("{p}: {e}"))?;
            Some(Arc::new(f))
        }
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..o.threads)
        .map(|_| {
            let (cache, key, next, out, chunk) = (
                cache.clone(),
                key.clone(),
                next.clone(),
                out.clone(),
                o.chunk,
            );
            std::thread::spawn(move || -> Result<(), String> {
                let mut buf = vec![0u8; chunk as usize];
                loop {
                    let off = next.fetch_add(chunk, Ordering::Relaxed);
                    if off >= size {
                        return Ok(());
                    }
                    let n = chunk.min(size - off) as usize;
                    cache
                        .read(&key, off, &mut buf[..n])
                        .map_err(|e| format!("{key} bytes {off}..{}: {e}", off + n as u64))?;
                    if let Some(f) = &out {
                        use std::os::unix::fs::FileExt;
                        f.write_all_at(&buf[..n], off).map_err(|e| e.to_string())?;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "a reader thread panicked".to_string())??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = cache.stats();
    cache.shutdown();
    let json = s.to_json();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{{\"bytes\":{size},\"seconds\":{secs:.6},\"stats\":{json}}}"
    );
    Ok(())
}
