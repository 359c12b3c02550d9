//! `blobcache ls`: the cached blobs, most recently used first.

use std::io::Write;

use blobcache_core::store::inventory;

use super::{cache_dir, config, filter, name_of, selected, store};
use crate::output::{json_str, size, unix_secs, utc};
use crate::uri;
use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Only blobs at or under this az:// URI
    uri: Option<String>,
    /// One JSON array
    #[arg(long)]
    json: bool,
}

pub fn run(Args { uri, json }: Args, account: Option<&str>) -> Outcome {
    let only = filter(uri.as_deref(), account)?;
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
