//! A cache directory's counters and size in the Prometheus text exposition
//! format, version 0.0.4: what `blobcache stats --prometheus` prints and
//! `blobcache metrics` serves.
//!
//! Every counter of [`stats::COUNTERS`](crate::stats::COUNTERS) is a
//! `counter` under the metric name declared with it (`blobcache_…_total`,
//! in base units: bytes, and seconds for the counters kept in
//! nanoseconds); what the cache holds now ([`Gauges`]) are `gauge`s. Every
//! family has its `# HELP` and `# TYPE` lines, and every sample the label
//! `cache_dir`, the cache directory, so one Prometheus can tell the caches
//! of a node apart. Nothing here is on the read path: the values come from
//! the file the processes leave in the cache directory
//! (`store::counters`) and from a walk of the store.

use crate::stats::{Snapshot, Unit, COUNTERS};

/// The `Content-Type` of an exposition in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric's type, as its `# TYPE` line says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, type and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The gauges, in the order of [`Gauges::values`].
const GAUGES: [Family; 8] = [
    gauge(
        "blobcache_cache_size_bytes",
        "Bytes the cache's files occupy on disk.",
    ),
    gauge(
        "blobcache_cache_cap_bytes",
        "The cap on the cache's size on disk (BLOBCACHE_MAX_SIZE, a percentage computed for the cache's filesystem).",
    ),
    gauge(
        "blobcache_filesystem_free_bytes",
        "Free bytes on the cache directory's filesystem.",
    ),
    gauge(
        "blobcache_cached_blobs",
        "Blob versions with blocks in the cache.",
    ),
    gauge(
        "blobcache_complete_blobs",
        "Blob versions with every block in the cache.",
    ),
    gauge("blobcache_cached_blocks", "Blocks in the cache."),
    gauge(
        "blobcache_counters_start_time_seconds",
        "When the counters started counting (Unix time; at the first use of the cache, or at `blobcache stats --reset`).",
    ),
    gauge(
        "blobcache_counters_update_time_seconds",
        "When a process last added its counts to the counters (Unix time).",
    ),
];

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

/// What the cache holds now, as `blobcache stats` shows it. `None` (and
/// 0 for the times) leaves a gauge out: not known, or nothing counted yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub size_bytes: u64,
    pub cap_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub blobs: u64,
    pub complete_blobs: u64,
    pub blocks: u64,
    /// Unix seconds; 0 when nothing was counted yet.
    pub counting_since: u64,
    /// Unix seconds; 0 when nothing was counted yet.
    pub updated: u64,
}

impl Gauges {
    /// The values, in the order of `GAUGES` (the arrays' length ties the
    /// two together: a gauge added to one and not the other does not
    /// compile).
    fn values(&self) -> [Option<u64>; GAUGES.len()] {
        let time = |t: u64| (t != 0).then_some(t);
        [
            Some(self.size_bytes),
            self.cap_bytes,
            self.free_bytes,
            Some(self.blobs),
            Some(self.complete_blobs),
            Some(self.blocks),
            time(self.counting_since),
            time(self.updated),
        ]
    }
}

/// Every metric family, counters then gauges, in the order of the
/// exposition (the README's list of metrics is this).
pub fn families() -> Vec<Family> {
    COUNTERS
        .iter()
        .map(|c| Family {
            name: c.metric,
            kind: Kind::Counter,
            help: c.help,
        })
        .chain(GAUGES)
        .collect()
}

/// The exposition of one cache directory: its counters and gauges, each
/// sample labelled `cache_dir="<cache_dir>"`.
pub fn render(cache_dir: &str, counters: &Snapshot, gauges: &Gauges) -> String {
    let label = format!("{{cache_dir=\"{}\"}}", label_value(cache_dir));
    let mut out = String::new();
    let mut family = |f: &Family, value: Option<String>| {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n{}{label} {v}\n",
                f.name,
                help_text(f.help),
                f.name,
                f.kind.as_str(),
                f.name
            ));
        }
    };
    for (c, (_, v)) in COUNTERS.iter().zip(counters.fields()) {
        let f = Family {
            name: c.metric,
            kind: Kind::Counter,
            help: c.help,
        };
        family(&f, Some(value(c.unit, v)));
    }
    for (f, v) in GAUGES.iter().zip(gauges.values()) {
        family(f, v.map(|v| v.to_string()));
    }
    out
}

/// A counter's value in its base unit: nanoseconds as seconds, exactly
/// (`1.500000000`, no rounding through a float).
fn value(unit: Unit, v: u64) -> String {
    match unit {
        Unit::Nanoseconds => format!("{}.{:09}", v / 1_000_000_000, v % 1_000_000_000),
        Unit::Count | Unit::Bytes => v.to_string(),
    }
}

/// A label value, escaped as the format asks: `\` as `\\`, `"` as `\"`,
/// a line feed as `\n`.
fn label_value(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A `# HELP` text, escaped as the format asks: `\` as `\\`, a line feed
/// as `\n`.
fn help_text(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter a distinct value.
    fn distinct() -> Snapshot {
        let mut s = Snapshot::default();
        for (i, c) in COUNTERS.iter().enumerate() {
            *s.field_mut(c.name).unwrap() = (i as u64 + 1) * 1_000_000_007;
        }
        s
    }

    fn full_gauges() -> Gauges {
        Gauges {
            size_bytes: 11,
            cap_bytes: Some(12),
            free_bytes: Some(13),
            blobs: 14,
            complete_blobs: 15,
            blocks: 16,
            counting_since: 17,
            updated: 18,
        }
    }

    /// `name{labels} value` lines: (name, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, rest) = l.split_once('{').unwrap();
                let value = rest.rsplit_once("} ").unwrap().1;
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn every_counter_and_gauge_is_in_the_output_with_help_type_and_its_value() {
        let text = render("/var/cache/blobcache", &distinct(), &full_gauges());
        let got = samples(&text);
        assert_eq!(got.len(), COUNTERS.len() + GAUGES.len(), "{text}");
        for (c, (name, v)) in COUNTERS.iter().zip(distinct().fields()) {
            assert_eq!(c.name, name);
            let line = format!("{}{{cache_dir=\"/var/cache/blobcache\"}} ", c.metric);
            assert!(
                text.contains(&format!("\n{line}")),
                "{} missing:\n{text}",
                c.name
            );
            assert!(
                text.contains(&format!("# HELP {} {}\n", c.metric, c.help)),
                "{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {} counter\n", c.metric)),
                "{text}"
            );
            let shown = &got.iter().find(|(n, _)| n == c.metric).unwrap().1;
            let want = match c.unit {
                Unit::Nanoseconds => v as f64 / 1e9,
                _ => v as f64,
            };
            assert_eq!(shown.parse::<f64>().unwrap(), want, "{}", c.metric);
        }
        for (f, v) in GAUGES.iter().zip(full_gauges().values()) {
            assert!(
                text.contains(&format!("# TYPE {} gauge\n", f.name)),
                "{text}"
            );
            let shown = &got.iter().find(|(n, _)| n == f.name).unwrap().1;
            assert_eq!(shown, &v.unwrap().to_string());
        }
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        let listed: Vec<_> = families().iter().map(|f| f.name).collect();
        assert_eq!(names, listed);
    }

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for c in COUNTERS {
            let stem = c.metric.strip_suffix("_total").expect(c.metric);
            match c.unit {
                Unit::Bytes => assert!(stem.ends_with("_bytes"), "{c:?}"),
                Unit::Nanoseconds => assert!(stem.ends_with("_seconds"), "{c:?}"),
                Unit::Count => {
                    assert!(
                        !stem.ends_with("_bytes") && !stem.ends_with("_seconds"),
                        "{c:?}"
                    )
                }
            }
        }
        for f in families() {
            assert!(f.name.starts_with("blobcache_"), "{f:?}");
            assert!(
                f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{f:?}"
            );
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{f:?}");
            assert!(f.help.ends_with('.') && !f.help.contains('\n'), "{f:?}");
            assert!(seen.insert(f.name), "{} twice", f.name);
        }
    }

    #[test]
    fn nanoseconds_are_shown_as_exact_seconds() {
        assert_eq!(value(Unit::Nanoseconds, 0), "0.000000000");
        assert_eq!(value(Unit::Nanoseconds, 1_500_000_001), "1.500000001");
        assert_eq!(value(Unit::Nanoseconds, u64::MAX), "18446744073.709551615");
        assert_eq!(value(Unit::Bytes, 42), "42");
    }

    #[test]
    fn the_cache_dir_label_escapes_backslash_quote_and_line_feed() {
        let text = render("/a\\b\"c\nd", &Snapshot::default(), &Gauges::default());
        assert!(
            text.contains("blobcache_hits_total{cache_dir=\"/a\\\\b\\\"c\\nd\"} 0\n"),
            "{text}"
        );
        assert_eq!(help_text("a\\b\nc"), "a\\\\b\\nc");
    }

    /// The README's list of metrics, as [`families`] gives it.
    fn readme_table() -> String {
        let mut t = String::from(README_HEADER);
        t.push_str("\n|---|---|---|\n");
        for f in families() {
            t.push_str(&format!(
                "| `{}` | {} | {} |\n",
                f.name,
                f.kind.as_str(),
                f.help.replace('|', "\\|")
            ));
        }
        t
    }

    const README_HEADER: &str = "| metric | type | meaning |";

    #[test]
    fn the_readme_lists_every_metric_with_its_type_and_help() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let want = readme_table();
        let at = readme
            .find(README_HEADER)
            .expect("the README has a table of metrics");
        let len = readme[at..]
            .find("\n\n")
            .map_or(readme.len() - at, |n| n + 1);
        if readme[at..at + len] == want {
            return;
        }
        if std::env::var_os("BLOBCACHE_BLESS").is_some_and(|v| v == "1") {
            let fixed = format!("{}{want}{}", &readme[..at], &readme[at + len..]);
            std::fs::write(&path, fixed).unwrap();
            return;
        }
        panic!(
            "the README's table of metrics differs from stats::COUNTERS and prometheus::GAUGES; \
             edit both, or run this test with BLOBCACHE_BLESS=1 to write this table into the \
             README:\n\n{want}"
        );
    }

    #[test]
    fn unknown_gauges_and_times_never_counted_are_left_out() {
        let text = render("/c", &Snapshot::default(), &Gauges::default());
        for absent in [
            "blobcache_cache_cap_bytes",
            "blobcache_filesystem_free_bytes",
            "blobcache_counters_start_time_seconds",
            "blobcache_counters_update_time_seconds",
        ] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        assert!(text.contains("blobcache_cached_blocks{cache_dir=\"/c\"} 0\n"));
    }
}
