//! The commands that look at and trim the store on disk without the origin:
//! `ls`, `stats`, `verify`, `evict`. They use the library's store code
//! (inventory, counters, eviction, block checks) directly.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blobcache_core::config::MaxSize;
use blobcache_core::store::{counters, evict, inventory, Store};
use blobcache_core::Config;

use crate::output::{json_str, size, unix_secs, utc};
use crate::uri::{self, Location};
use crate::{config, location, Failure, Outcome};

/// The store of the configured cache directory, or `None` when there is no
/// cache there yet (nothing is created).
/// [`store`], saying "nothing cached" on stdout when there is none.
fn store_or_say_empty(config: &Config) -> Result<Option<Store>, Failure> {
    let store = store(config)?;
    if store.is_none() {
        let _ = writeln!(
            std::io::stdout(),
            "nothing cached in {}",
            cache_dir(config).display()
        );
    }
    Ok(store)
}

fn store(config: &Config) -> Result<Option<Store>, Failure> {
    let dir = config.dir.clone().ok_or_else(|| {
        Failure::Failed(
            "no cache directory: set BLOBCACHE_DIR (HOME and XDG_CACHE_HOME are unset)".into(),
        )
    })?;
    if !dir.join(blobcache_core::store::LAYOUT).is_dir() {
        return Ok(None);
    }
    Ok(Some(Store::open(
        &dir,
        config.block_size,
        config.shared,
        config.fsync,
    )?))
}

fn cache_dir(config: &Config) -> PathBuf {
    config.dir.clone().unwrap_or_default()
}

/// The cap as the library computes it.
pub fn cap(config: &Config, dir: &std::path::Path) -> Option<u64> {
    match config.max_size {
        MaxSize::Bytes(b) => Some(b),
        MaxSize::PercentOfFilesystem(p) => {
            blobcache_core::store::filesystem_size(dir).map(|(total, _)| total / 100 * p as u64)
        }
    }
}

fn filter(uri: Option<&str>, account: Option<&str>) -> Result<Option<Location>, Failure> {
    uri.map(|u| location(u, account)).transpose()
}

fn selected<'a>(
    all: &'a [inventory::Cached],
    only: Option<&Location>,
) -> Vec<&'a inventory::Cached> {
    all.iter()
        .filter(|c| match (only, &c.meta) {
            (None, _) => true,
            (Some(l), Ok(m)) => l.covers(&m.key),
            (Some(_), Err(_)) => false,
        })
        .collect()
}

fn name_of(c: &inventory::Cached) -> String {
    match &c.meta {
        Ok(m) => uri::uri_of(&m.key),
        Err(why) => format!("(unknown blob in {}: {why})", c.dir.path().display()),
    }
}

pub fn ls(uri: Option<&str>, account: Option<&str>, json: bool) -> Outcome {
    let only = filter(uri, account)?;
    let config = config()?;
    let items = match store(&config)? {
        Some(s) => inventory::inventory(s.root(), s.file_mode()),
        None => vec![],
    };
    let mut items = selected(&items, only.as_ref());
    // Most recently used first.
    items.reverse();
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<String> = items
            .iter()
            .map(|c| {
                let last = c.last_use.map(unix_secs);
                let (who, size, version, bs) = match &c.meta {
                    Ok(m) => (
                        format!(
                            "\"uri\":{},\"account\":{},\"container\":{},\"blob\":{}",
                            json_str(&uri::uri_of(&m.key)),
                            json_str(&m.key.account),
                            json_str(&m.key.container),
                            json_str(&m.key.blob)
                        ),
                        m.size.to_string(),
                        json_str(&m.version),
                        m.block_size.to_string(),
                    ),
                    Err(why) => (
                        format!("\"uri\":null,\"damaged\":{}", json_str(why)),
                        "null".into(),
                        "null".into(),
                        "null".into(),
                    ),
                };
                format!(
                    "{{{who},\"size\":{size},\"version\":{version},\"block_size\":{bs},\"blocks_present\":{},\"blocks_total\":{},\"complete\":{},\"bytes_on_disk\":{},\"last_use\":{},\"last_use_utc\":{}}}",
                    c.blocks_present,
                    c.blocks_total,
                    c.meta.is_ok() && c.blocks_present == c.blocks_total,
                    c.bytes,
                    last.map_or("null".into(), |t| t.to_string()),
                    last.map_or("null".into(), |t| json_str(&utc(t))),
                )
            })
            .collect();
        let _ = writeln!(out, "[{}]", rows.join(",\n "));
        return Ok(());
    }
    if items.is_empty() {
        let _ = writeln!(out, "nothing cached in {}", cache_dir(&config).display());
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{:>10}  {:>17}  {:<22}  {:<20}  BLOB",
        "SIZE", "BLOCKS", "VERSION", "LAST USE"
    );
    for c in &items {
        let (sz, version) = match &c.meta {
            Ok(m) => (size(m.size), m.version.clone()),
            Err(_) => ("?".into(), "?".into()),
        };
        let pct = if c.blocks_total == 0 {
            0.0
        } else {
            c.blocks_present as f64 * 100.0 / c.blocks_total as f64
        };
        let blocks = format!("{}/{} {:>3.0}%", c.blocks_present, c.blocks_total, pct);
        let last = c.last_use.map_or("?".into(), |t| utc(unix_secs(t)));
        let _ = writeln!(
            out,
            "{sz:>10}  {blocks:>17}  {version:<22}  {last:<20}  {}",
            name_of(c)
        );
    }
    Ok(())
}

pub fn stats(json: bool, reset: bool) -> Outcome {
    let config = config()?;
    let dir = cache_dir(&config);
    let store = store(&config)?;
    let (usage, versions) = match &store {
        Some(s) => {
            let items = inventory::inventory(s.root(), s.file_mode());
            (items.iter().map(|c| c.bytes).sum::<u64>(), items)
        }
        None => (0, vec![]),
    };
    let blocks: u64 = versions.iter().map(|c| c.blocks_present).sum();
    let complete = versions
        .iter()
        .filter(|c| c.meta.is_ok() && c.blocks_present == c.blocks_total)
        .count();
    let cap = cap(
        &config,
        if dir.exists() {
            &dir
        } else {
            std::path::Path::new("/")
        },
    );
    let free = blobcache_core::store::filesystem_size(if dir.exists() {
        &dir
    } else {
        std::path::Path::new("/")
    })
    .map(|(_, free)| free);
    let persisted = match &store {
        Some(s) => counters::read(s.root())?,
        None => None,
    }
    .unwrap_or_default();
    let c = persisted.counts;
    let mut out = std::io::stdout().lock();
    if json {
        let counts: Vec<String> = c
            .fields()
            .iter()
            .map(|(n, v)| format!("{}:{v}", json_str(n)))
            .collect();
        let _ = writeln!(
            out,
            "{{\"dir\":{},\"bytes\":{usage},\"cap\":{},\"free\":{},\"blobs\":{},\"complete_blobs\":{complete},\"blocks\":{blocks},\"since\":{},\"updated\":{},\"counters\":{{{}}}}}",
            json_str(&dir.display().to_string()),
            cap.map_or("null".into(), |v| v.to_string()),
            free.map_or("null".into(), |v| v.to_string()),
            versions.len(),
            persisted.since,
            persisted.updated,
            counts.join(",")
        );
    } else {
        let reads = c.hits + c.misses;
        let hit_pct = if reads == 0 {
            0.0
        } else {
            c.hits as f64 * 100.0 / reads as f64
        };
        let cap_s = cap.map_or("?".into(), size);
        let used_pct = cap.filter(|c| *c > 0).map_or(String::new(), |cap| {
            format!(" ({:.0}%)", usage as f64 * 100.0 / cap as f64)
        });
        let _ = writeln!(out, "cache            {}", dir.display());
        let _ = writeln!(
            out,
            "size             {} of {cap_s} cap{used_pct}; {} blobs ({complete} complete), {blocks} blocks",
            size(usage),
            versions.len()
        );
        if let Some(f) = free {
            let _ = writeln!(out, "free space       {}", size(f));
        }
        if persisted.since == 0 {
            let _ = writeln!(
                out,
                "counters         none yet (no process has used this cache)"
            );
        } else {
            let _ = writeln!(
                out,
                "counting since   {} (last update {})",
                utc(persisted.since),
                utc(persisted.updated)
            );
            let _ = writeln!(
                out,
                "reads            {} hits, {} misses ({hit_pct:.1}% hits)",
                c.hits, c.misses
            );
            let _ = writeln!(
                out,
                "bytes            {} served from the cache, {} fetched from the origin",
                size(c.bytes_from_cache),
                size(c.bytes_from_origin)
            );
            let _ = writeln!(
                out,
                "blocks           {} fetched ({} by readahead), {} evicted",
                c.blocks_fetched, c.readahead_blocks, c.blocks_evicted
            );
            let _ = writeln!(
                out,
                "errors           {} fetch errors, {} failed reads, {} reads passed straight through",
                c.origin_errors, c.read_errors, c.passthrough_reads
            );
            let _ = writeln!(
                out,
                "origin wait      {:.1} s (readers waiting for fills and version checks)",
                c.origin_wait_ns as f64 / 1e9
            );
        }
    }
    drop(out);
    if reset {
        if let Some(s) = &store {
            counters::reset(s.root(), s.file_mode())?;
        }
    }
    Ok(())
}

pub fn verify(uri: Option<&str>, account: Option<&str>, dry_run: bool, json: bool) -> Outcome {
    let only = filter(uri, account)?;
    let config = config()?;
    let Some(store) = store_or_say_empty(&config)? else {
        return Ok(());
    };
    let items = inventory::inventory(store.root(), store.file_mode());
    let items = selected(&items, only.as_ref());
    let t0 = Instant::now();
    let (mut checked, mut bytes, mut busy) = (0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for c in &items {
        let r = inventory::verify(c, !dry_run);
        checked += r.blocks_checked;
        bytes += r.bytes_checked;
        busy += r.busy;
        for b in r.bad {
            bad.push((name_of(c), b));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<String> = bad
            .iter()
            .map(|(n, b)| {
                format!(
                    "{{\"blob\":{},\"block\":{},\"why\":{},\"removed\":{}}}",
                    json_str(n),
                    b.index,
                    json_str(&b.why),
                    b.removed
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{{\"blobs\":{},\"blocks_checked\":{checked},\"bytes_checked\":{bytes},\"busy\":{busy},\"bad\":[{}]}}",
            items.len(),
            rows.join(",")
        );
    } else {
        for (n, b) in &bad {
            let _ = writeln!(
                out,
                "bad block {} of {n}: {}{}",
                b.index,
                b.why,
                if b.removed { " (removed)" } else { "" }
            );
        }
        let _ = writeln!(
            out,
            "checked {checked} blocks ({}) of {} blobs in {secs:.1} s: {} bad{}",
            size(bytes),
            items.len(),
            bad.len(),
            if busy > 0 {
                format!(", {busy} skipped (being filled)")
            } else {
                String::new()
            }
        );
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "{} bad blocks{}",
            bad.len(),
            if dry_run {
                " (not removed: --dry-run)"
            } else {
                " removed; the next read fetches them again"
            }
        )))
    }
}

/// Waits for the store-wide eviction lock (held by a library evicting now).
fn evict_lock(store: &Store) -> Result<evict::EvictGuard, Failure> {
    let t0 = Instant::now();
    loop {
        if let Some(g) = evict::try_evict_lock(store.root(), store.file_mode()) {
            return Ok(g);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(Failure::Failed(
                "another process has been evicting for over 60 s; try again".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn evict(uri: Option<&str>, account: Option<&str>, to: Option<u64>, all: bool) -> Outcome {
    let only = filter(uri, account)?;
    let config = config()?;
    let Some(store) = store_or_say_empty(&config)? else {
        return Ok(());
    };
    let _guard = evict_lock(&store)?;
    let report = if let Some(target) = to {
        evict::evict_to(store.root(), store.file_mode(), target, None)
    } else {
        let items = inventory::inventory(store.root(), store.file_mode());
        let chosen: Vec<_> = if all {
            items.iter().collect()
        } else {
            selected(&items, only.as_ref())
        };
        if chosen.is_empty() && !all {
            let _ = writeln!(
                std::io::stdout(),
                "nothing cached at or under {}",
                uri.unwrap_or("")
            );
            return Ok(());
        }
        let r = inventory::remove(&chosen);
        let total = evict::scan(store.root(), store.file_mode()).bytes;
        evict::EvictReport {
            before: total + (r.before - r.after),
            after: total,
            blocks_removed: r.blocks_removed,
        }
    };
    let _ = writeln!(
        std::io::stdout(),
        "removed {} blocks: {} -> {} in {}",
        report.blocks_removed,
        size(report.before),
        size(report.after),
        store.root().parent().unwrap_or(store.root()).display()
    );
    Ok(())
}
