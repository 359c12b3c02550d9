//! `blobcache evict`: cached blocks removed by blob or folder, down to a
//! size, or all; unlink only, so readers holding blocks mapped are safe.

use std::io::Write;
use std::time::{Duration, Instant};

use blobcache_core::store::{evict, inventory, Store};

use super::{
    filter, say_nothing_cached_under, selected, store_or_say_empty, tier_config, ClusterArg, Tier,
};
use crate::output::size;
use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// A blob or folder (az:// URI) whose cached blocks to remove
    #[arg(required_unless_present_any = ["to", "all"], conflicts_with_all = ["to", "all"])]
    uri: Option<String>,
    /// Remove least recently used blocks until the cache holds at most SIZE (200G, 512M, 0)
    #[arg(long, value_name = "SIZE", conflicts_with = "all", value_parser = crate::parse_size)]
    to: Option<u64>,
    /// Remove everything
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    tier: ClusterArg,
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

pub fn run(Args { uri, to, all, tier }: Args, account: Option<&str>) -> Outcome {
    let uri = uri.as_deref();
    let only = filter(uri, account)?;
    let tier = Tier::of(tier.cluster);
    let config = tier_config(tier, "--cluster")?;
    let Some(store) = store_or_say_empty(&config, tier)? else {
        return Ok(());
    };
    let _guard = evict_lock(&store)?;
    // Before and after are the store's usage as scanned on disk (what the
    // library's cap applies to and `stats` shows), so the difference is
    // what the command freed (net of any fill by another process meanwhile).
    let (before, blocks) = if let Some(target) = to {
        let r = evict::evict_to(store.root(), store.file_mode(), target, None);
        (r.before, r.blocks_removed)
    } else {
        let items = inventory::inventory(store.root(), store.file_mode());
        let before = items.iter().map(|c| c.bytes).sum::<u64>();
        let chosen: Vec<_> = if all {
            items.iter().collect()
        } else {
            selected(&items, only.as_ref())
        };
        if let (true, Some(uri), Some(loc)) = (chosen.is_empty(), uri, &only) {
            say_nothing_cached_under(uri, loc);
            return Ok(());
        }
        (before, inventory::remove(&chosen).blocks_removed)
    };
    let after = evict::scan(store.root(), store.file_mode()).bytes;
    let change = match after.cmp(&before) {
        std::cmp::Ordering::Less => format!("{} less", size(before - after)),
        std::cmp::Ordering::Equal => "unchanged".into(),
        std::cmp::Ordering::Greater => format!(
            "{} more: another process filled it meanwhile",
            size(after - before)
        ),
    };
    let _ = writeln!(
        std::io::stdout(),
        "removed {blocks} block{} from {}{}: the {} holds {}, was {} ({change})",
        if blocks == 1 { "" } else { "s" },
        if tier == Tier::Cluster {
            "the cluster tier "
        } else {
            ""
        },
        store.root().parent().unwrap_or(store.root()).display(),
        tier.name(),
        size(after),
        size(before),
    );
    Ok(())
}
