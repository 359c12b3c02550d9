//! Progress of a long operation on stderr: a line redrawn in place on a
//! terminal (bytes, rate, ETA), plain periodic lines otherwise (logs of an
//! init container), nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::output::{rate, size};

pub struct Progress {
    total: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    quiet: bool,
    every: Duration,
    drawn: bool,
}

impl Progress {
    /// `every`: the interval of plain lines (a terminal is redrawn 5 times a second).
    pub fn new(total: u64, quiet: bool, every: Duration) -> Progress {
        Progress {
            total,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            quiet,
            every,
            drawn: false,
        }
    }

    /// `done` bytes of `total` are cached, `fetched` of them came from the
    /// origin in this run; `items` of `items_total` blobs are finished.
    pub fn update(&mut self, done: u64, fetched: u64, items: usize, items_total: usize) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let due = match self.last {
            None => !self.tty || self.drawn || now - self.start >= Duration::from_millis(200),
            Some(t) => {
                now - t
                    >= if self.tty {
                        Duration::from_millis(200)
                    } else {
                        self.every
                    }
            }
        };
        if !due {
            return;
        }
        self.last = Some(now);
        let secs = self.start.elapsed().as_secs_f64();
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let speed = if secs > 0.0 {
            fetched as f64 / secs
        } else {
            0.0
        };
        let eta = if done >= self.total {
            "0s".to_string()
        } else if speed > 0.0 {
            format!("{:.0}s", (self.total - done) as f64 / speed)
        } else {
            "?".to_string()
        };
        let text = format!(
            "{} / {} ({pct:.0}%), {} from the origin, ETA {eta}, {items}/{items_total} blobs",
            size(done),
            size(self.total),
            rate(fetched, secs),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let width = 30;
            let filled = ((pct / 100.0) * width as f64).round() as usize;
            let bar: String =
                "#".repeat(filled.min(width)) + &" ".repeat(width - filled.min(width));
            let _ = write!(err, "\r\x1b[2K[{bar}] {text}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "blobcache: warm: {text}");
        }
        let _ = err.flush();
    }

    /// Draws the final state and ends the redrawn line.
    pub fn finish(&mut self, done: u64, fetched: u64, items: usize, items_total: usize) {
        if self.drawn {
            self.last = None;
            self.update(done, fetched, items, items_total);
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
