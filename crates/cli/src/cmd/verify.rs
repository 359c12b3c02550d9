//! `blobcache verify`: every cached block checked against the checksum in
//! its trailer; bad ones removed unless `--dry-run`.

use std::io::Write;
use std::time::Instant;

use blobcache_core::store::inventory;
use serde::Serialize;

use super::{
    filter, name_of, print_json, say_nothing_cached_under, selected, store_or_say_empty,
    tier_config, ClusterArg, Tier,
};
use crate::output::size;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Only blobs at or under this az:// URI
    uri: Option<String>,
    /// Report bad blocks without removing them
    #[arg(long)]
    dry_run: bool,
    /// One JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tier: ClusterArg,
}

/// `verify --json`.
#[derive(Serialize)]
struct VerifyJson<'a> {
    blobs: usize,
    blocks_checked: u64,
    bytes_checked: u64,
    /// Blocks skipped because they were being filled.
    busy: u64,
    bad: Vec<BadBlock<'a>>,
}

#[derive(Serialize)]
struct BadBlock<'a> {
    blob: &'a str,
    block: u64,
    why: &'a str,
    removed: bool,
}

pub fn run(
    Args {
        uri,
        dry_run,
        json,
        tier,
    }: Args,
    account: Option<&str>,
) -> Outcome {
    let only = filter(uri.as_deref(), account)?;
    let tier = Tier::of(tier.cluster);
    let config = tier_config(tier, "--cluster")?;
    let Some(store) = store_or_say_empty(&config, tier)? else {
        return Ok(());
    };
    let items = inventory::inventory(store.root(), store.file_mode());
    let items = selected(&items, only.as_ref());
    if let (true, false, Some(uri), Some(loc)) = (items.is_empty(), json, &uri, &only) {
        say_nothing_cached_under(uri, loc);
        return Ok(());
    }
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
    if json {
        print_json(&VerifyJson {
            blobs: items.len(),
            blocks_checked: checked,
            bytes_checked: bytes,
            busy,
            bad: bad
                .iter()
                .map(|(blob, b)| BadBlock {
                    blob,
                    block: b.index,
                    why: &b.why,
                    removed: b.removed,
                })
                .collect(),
        });
    } else {
        let mut out = std::io::stdout().lock();
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
