//! `blobcache ls`: the cached blobs, most recently used first.

use std::io::Write;

use blobcache_core::store::inventory;
use serde::Serialize;

use super::{filter, name_of, print_json, selected, store, tier_config, ClusterArg, Tier};
use crate::output::{size, unix_secs, utc};
use crate::uri;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Only blobs at or under this az:// URI
    uri: Option<String>,
    /// One JSON array
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tier: ClusterArg,
}

/// One cached version in `ls --json`. A version whose `meta` is damaged has
/// `uri` null and says why in `damaged`, instead of `account`, `container`
/// and `blob`.
#[derive(Serialize)]
struct Row<'a> {
    uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blob: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged: Option<&'a str>,
    size: Option<u64>,
    /// The origin version (Azure: the ETag).
    version: Option<&'a str>,
    block_size: Option<u64>,
    blocks_present: u64,
    blocks_total: u64,
    complete: bool,
    bytes_on_disk: u64,
    /// Unix seconds.
    last_use: Option<u64>,
    last_use_utc: Option<String>,
}

impl<'a> Row<'a> {
    fn of(c: &'a inventory::Cached) -> Row<'a> {
        let meta = c.meta.as_ref().ok();
        let last_use = c.last_use.map(unix_secs);
        Row {
            uri: meta.map(|m| uri::uri_of(&m.key)),
            account: meta.map(|m| m.key.account.as_str()),
            container: meta.map(|m| m.key.container.as_str()),
            blob: meta.map(|m| m.key.blob.as_str()),
            damaged: c.meta.as_ref().err().map(String::as_str),
            size: meta.map(|m| m.size),
            version: meta.map(|m| m.version.as_str()),
            block_size: meta.map(|m| m.block_size),
            blocks_present: c.blocks_present,
            blocks_total: c.blocks_total,
            complete: meta.is_some() && c.blocks_present == c.blocks_total,
            bytes_on_disk: c.bytes,
            last_use,
            last_use_utc: last_use.map(utc),
        }
    }
}

pub fn run(Args { uri, json, tier }: Args, account: Option<&str>) -> Outcome {
    let only = filter(uri.as_deref(), account)?;
    let tier = Tier::of(tier.cluster);
    let config = tier_config(tier, "--cluster")?;
    let items = match store(&config, tier)? {
        Some(s) => inventory::inventory(s.root(), s.file_mode()),
        None => vec![],
    };
    let mut items = selected(&items, only.as_ref());
    // Most recently used first.
    items.reverse();
    if json {
        let rows: Vec<Row> = items.iter().map(|c| Row::of(c)).collect();
        print_json(&rows);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if items.is_empty() {
        match (&uri, &only) {
            (Some(uri), Some(loc)) => super::say_nothing_cached_under(uri, loc),
            _ => super::say_nothing_cached(&config, tier),
        }
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
