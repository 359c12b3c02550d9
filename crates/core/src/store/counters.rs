//! Counters that outlive the processes that produced them: `v1/stats` in the
//! cache directory, the sum over every process that used it.
//!
//! A process adds what it counted since its last flush (the janitor thread
//! does so every few seconds, and `shutdown` once more), so a process killed
//! with `kill -9` loses at most one period. Each update takes `stats.lock`
//! (`flock`, so many processes on a node take turns), reads the file, adds,
//! and writes a temporary file that it renames over the old one: a reader
//! sees the old or the new file, never a torn one. The file is text ending
//! in a SHA-256 over the lines before it; one that fails the check (edited
//! by hand, damaged disk) is reported and started again from zero.
//! Nothing here runs on the read path.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{io_error, Error, Result};
use crate::stats::Snapshot;
use crate::sync::MutexExt;

const HEADER: &str = "blobcache-stats 1";
pub const FILE: &str = "stats";
const LOCK: &str = "stats.lock";
/// Longest wait for another process's update.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The counters on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// When counting started (Unix seconds).
    pub since: u64,
    /// The last update (Unix seconds).
    pub updated: u64,
    pub counts: Snapshot,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Persisted {
    pub fn encode(&self) -> String {
        let mut body = format!("{HEADER}\nsince={}\nupdated={}\n", self.since, self.updated);
        for (name, v) in self.counts.fields() {
            body.push_str(&format!("{name}={v}\n"));
        }
        super::checksummed::seal(&body)
    }

    pub fn decode(text: &[u8]) -> std::result::Result<Persisted, String> {
        let lines = super::checksummed::open(text, HEADER)?;
        let mut p = Persisted::default();
        for line in lines {
            let (k, v) = line.split_once('=').ok_or("a line without '='")?;
            let v: u64 = v.parse().map_err(|_| format!("{k} is not a number"))?;
            match k {
                "since" => p.since = v,
                "updated" => p.updated = v,
                // Unknown names (a newer version's counters) are skipped.
                _ => {
                    if let Some(f) = p.counts.field_mut(k) {
                        *f = v;
                    }
                }
            }
        }
        Ok(p)
    }
}

/// Reads the counters of the store at `root` (its `v1` directory). `Ok(None)`
/// when nothing was counted yet.
pub fn read(root: &Path) -> Result<Option<Persisted>> {
    let path = root.join(FILE);
    match crate::store::read_small(&path) {
        Ok(bytes) => Persisted::decode(&bytes)
            .map(Some)
            .map_err(|why| Error::store(format!("{} is damaged: {why}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("cannot read", &path, &e)),
    }
}

/// Holds `stats.lock` while alive.
struct Locked(#[allow(dead_code)] super::lock::LockFile);

fn lock(root: &Path, file_mode: u32) -> Result<Locked> {
    let path = root.join(LOCK);
    let file = super::lock::open_lock_file(&path, file_mode)?;
    let start = Instant::now();
    loop {
        if crate::sys::try_flock(&file) {
            return Ok(Locked(file));
        }
        if start.elapsed() > LOCK_WAIT {
            return Err(Error::store(format!(
                "{} is held by another process for more than {:?}",
                path.display(),
                LOCK_WAIT
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Adds `delta` to the counters on disk.
pub fn add(root: &Path, file_mode: u32, delta: &Snapshot) -> Result<()> {
    let _l = lock(root, file_mode)?;
    let now = now_secs();
    let mut p = match read(root) {
        Ok(Some(p)) => p,
        Ok(None) => Persisted {
            since: now,
            ..Default::default()
        },
        Err(e) => {
            crate::log::warning!("starting the cache's statistics again from zero: {e}");
            Persisted {
                since: now,
                ..Default::default()
            }
        }
    };
    p.counts = p.counts.plus(delta);
    p.updated = now;
    crate::store::write_atomic(root, FILE, p.encode().as_bytes(), file_mode)
}

/// Starts the counters on disk again from zero.
pub fn reset(root: &Path, file_mode: u32) -> Result<()> {
    let _l = lock(root, file_mode)?;
    let now = now_secs();
    let p = Persisted {
        since: now,
        updated: now,
        counts: Snapshot::default(),
    };
    crate::store::write_atomic(root, FILE, p.encode().as_bytes(), file_mode)
}

/// Remembers what one process has already added to the file.
#[derive(Default)]
pub struct Flusher {
    flushed: Mutex<Snapshot>,
}

impl Flusher {
    /// Adds to the file what `now` counted beyond the last flush (nothing
    /// when nothing changed). On failure the counts stay for the next flush.
    pub fn flush(&self, root: &Path, file_mode: u32, now: Snapshot) {
        let mut flushed = self.flushed.locked();
        let delta = now.minus(&flushed);
        if delta.is_zero() {
            return;
        }
        match add(root, file_mode, &delta) {
            Ok(()) => *flushed = now,
            Err(e) => crate::log::log_once(
                crate::log::Level::Warn,
                "stats-flush",
                &format!("cannot update the cache's statistics: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_from_many_threads_add_up_and_the_file_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        assert_eq!(read(&d).unwrap(), None);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let f = Flusher::default();
                    for i in 1..=10u64 {
                        let s = Snapshot {
                            hits: i,
                            bytes_from_origin: 100 * i,
                            ..Default::default()
                        };
                        f.flush(&d, 0o600, s);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        let p = read(&d).unwrap().unwrap();
        assert_eq!(p.counts.hits, 40);
        assert_eq!(p.counts.bytes_from_origin, 4000);
        assert_eq!(Persisted::decode(p.encode().as_bytes()).unwrap(), p);
    }

    #[test]
    fn a_damaged_file_is_detected_and_started_again() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        add(
            &d,
            0o600,
            &Snapshot {
                hits: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let path = d.join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("hits=3", "hits=9")).unwrap();
        assert!(read(&d).is_err());
        add(
            &d,
            0o600,
            &Snapshot {
                hits: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&d).unwrap().unwrap().counts.hits, 1);
    }
}
