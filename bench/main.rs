//! The benchmark harness's measuring program. `bench/run` drives it (with
//! the streamer measurements of `bench/streamer.py`) and writes the table to
//! docs/BENCHMARKS.md; each subcommand prints one JSON object on stdout.
//!
//!   bench hits --lib L --pread P [--mib N] [--reps R]        items 1, 2, 3
//!   bench cold --lib L [--mib N] [--rss-mib N] [--reps R]    items 5, 7, 8 (Azurite)
//!       [--first-reps R] [--far-reps R] [--far-rtt-ms N] [--far-window-kib K]
//!   bench footprint --lib L --pread P [--reps R]             item 9
//!   bench load --lib L --blob ACCOUNT/CONTAINER/BLOB --size BYTES [--threads N]
//!       one host process loading one blob (spawned by `cold`)
//!   bench first --lib L --warm A/C/SMALL --blob A/C/BLOB
//!   bench first-get --warm-url URL --url URL
//!       the first 8 MiB read of a cold blob, and its baseline (spawned by `cold`)
//!   bench dlopen-once L                                       (spawned by `footprint`)
//!   bench plain --url URL [--ca PEM] --size BYTES [--concurrency 4,8,16]
//!       plain parallel ranged GETs of one blob (used by bench/streamer.py)
//!   bench farlink --upstream PORT [--rtt-ms N] [--max-window-kib K]
//!       a far link in front of a loopback port: prints {"port":P}, runs until
//!       stdin closes (used by bench/streamer.py)
//!
//! Every figure is measured against its baseline in the same run, the two
//! interleaved (baseline, subject, baseline, subject, ...) so that load on
//! the machine falls on both.

mod cold;
mod first;
mod footprint;
mod hits;
mod load;

use std::fmt::Write as _;

/// Command-line options: `--name value` pairs after the subcommand.
pub struct Args(Vec<String>);

impl Args {
    pub fn str(&self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|a| a == name)?;
        Some(
            self.0
                .get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .clone(),
        )
    }

    pub fn req(&self, name: &str) -> String {
        self.str(name)
            .unwrap_or_else(|| panic!("{name} is required"))
    }

    pub fn num(&self, name: &str, default: usize) -> usize {
        self.str(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v}"))
        })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

/// Median, minimum and maximum of a set of repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(v: &[f64]) -> Summary {
        assert!(!v.is_empty(), "no repetitions");
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Summary {
            median,
            min: s[0],
            max: s[s.len() - 1],
            n: s.len(),
        }
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"median\":{},\"min\":{},\"max\":{},\"n\":{}}}",
            num(self.median),
            num(self.min),
            num(self.max),
            self.n
        )
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

/// A JSON object built field by field (the values are numbers, summaries,
/// nested objects or plain strings without quotes or backslashes).
#[derive(Default)]
pub struct Json(String);

impl Json {
    pub fn raw(mut self, key: &str, value: impl AsRef<str>) -> Json {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":{}", value.as_ref());
        self
    }

    pub fn num(self, key: &str, x: f64) -> Json {
        self.raw(key, num(x))
    }

    pub fn sum(self, key: &str, s: Summary) -> Json {
        self.raw(key, s.json())
    }

    pub fn str(self, key: &str, s: &str) -> Json {
        assert!(!s.contains(['"', '\\']), "unescaped JSON string {s}");
        self.raw(key, format!("\"{s}\""))
    }

    pub fn done(self) -> String {
        format!("{{{}}}", self.0)
    }
}

/// This program, for the subcommands that run in fresh processes.
pub fn self_exe() -> std::path::PathBuf {
    std::env::current_exe().expect("the path of the bench program")
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("usage: bench hits|cold|footprint|load|first|first-get|plain|farlink|dlopen-once ... (see bench/main.rs)");
        std::process::exit(2);
    };
    let args = Args(argv[1..].to_vec());
    let out = match cmd.as_str() {
        "hits" => hits::run(&args),
        "cold" => cold::run(&args),
        "footprint" => footprint::run(&args),
        "load" => load::run(&args),
        "plain" => cold::plain(&args),
        "farlink" => cold::farlink(&args),
        "first" => first::library(&args),
        "first-get" => first::get(&args),
        "dlopen-once" => footprint::dlopen_once(&argv[1]),
        other => {
            eprintln!("unknown subcommand {other}");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
