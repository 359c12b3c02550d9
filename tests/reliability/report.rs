//! What the tests tried and what came of it, appended as one JSON line per
//! fault or attack to the file named by `BC_RELIABILITY_REPORT`
//! (nothing is written when it is unset). `scripts/reliability` renders
//! those lines as the table in docs/RELIABILITY.md.
//!
//! Outcomes: **correct** (the read returned exactly the blob's bytes, or the
//! attack was refused and the right bytes were served), **clean error**
//! (the read failed with a clear message, within its time bound, and
//! changed nothing), **other** (anything else: wrong bytes, a crash, a hang,
//! a leak, an unexpected error). Tests record before they assert, so a
//! failing run still shows what happened.

use std::io::Write;

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub tried: u64,
    pub correct: u64,
    pub clean_error: u64,
    pub other: u64,
    /// What "other" was, and figures worth printing (bounds, peaks).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn add(&mut self, o: &Outcome) {
        self.tried += o.tried;
        self.correct += o.correct;
        self.clean_error += o.clean_error;
        self.other += o.other;
        self.notes.extend(o.notes.iter().cloned());
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Counts one "other" outcome with what it was.
    pub fn other(&mut self, what: impl Into<String>) {
        self.other += 1;
        let what = what.into();
        if self.notes.len() < 20 {
            self.notes.push(what);
        }
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// Records one row: `area` (network, crash, ...), the fault or attack, the
/// outcome, and the test that reproduces it (`module::test`).
pub fn record(area: &str, fault: &str, o: &Outcome, test: &str) {
    eprintln!(
        "reliability: [{area}] {fault}: tried {}, correct {}, clean error {}, other {}{}",
        o.tried,
        o.correct,
        o.clean_error,
        o.other,
        if o.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", o.notes.join("; "))
        }
    );
    let Some(path) = std::env::var_os("BC_RELIABILITY_REPORT") else {
        return;
    };
    let line = format!(
        "{{\"area\":\"{}\",\"fault\":\"{}\",\"tried\":{},\"correct\":{},\"clean_error\":{},\"other\":{},\"notes\":\"{}\",\"test\":\"{}\"}}\n",
        escape(area),
        escape(fault),
        o.tried,
        o.correct,
        o.clean_error,
        o.other,
        escape(&o.notes.join("; ")),
        escape(test)
    );
    // One write of an O_APPEND file: lines from parallel tests stay whole.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("BC_RELIABILITY_REPORT is writable");
    f.write_all(line.as_bytes()).unwrap();
}

/// Asserts that nothing but correct bytes and clean errors came out.
pub fn assert_clean(fault: &str, o: &Outcome) {
    assert_eq!(
        o.other, 0,
        "{fault}: {} outcomes were neither correct bytes nor a clean error: {:?}",
        o.other, o.notes
    );
    assert_eq!(
        o.tried,
        o.correct + o.clean_error + o.other,
        "{fault}: outcomes do not add up"
    );
    assert!(o.tried > 0, "{fault}: nothing was tried");
}
