//! A fixed set of worker threads running fill jobs, demand jobs before
//! readahead jobs. It bounds how many origin requests are in flight
//! (`BLOBCACHE_FETCH_CONCURRENCY`) and lets one large read fetch its blocks in
//! parallel. Stopping it fails queued demand jobs, drops queued readahead,
//! and joins the threads, waiting a bounded time: a worker stuck in the
//! kernel (a read from a hung filesystem) is abandoned, not waited for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::{Condvar, Mutex};

use crate::sync::{CondvarExt, MutexExt};

use crate::error::{Error, ErrorKind, Result};

pub type Task = Box<dyn FnOnce() -> Result<()> + Send>;

/// The result of one demand job, waited for by the reader that queued it.
#[derive(Default)]
pub struct Ticket {
    result: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

impl Ticket {
    fn finish(&self, r: Result<()>) {
        *self.result.locked() = Some(r);
        self.cv.notify_all();
    }

    pub fn wait(&self) -> Result<()> {
        let mut g = self.result.locked();
        while g.is_none() {
            g = self.cv.wait_on(g);
        }
        g.clone().expect("checked above")
    }
}

struct Queues {
    demand: VecDeque<(Task, Arc<Ticket>)>,
    ahead: VecDeque<Task>,
    stopped: bool,
    ahead_running: usize,
    /// Workers that have not returned yet.
    live: usize,
}

struct Shared {
    q: Mutex<Queues>,
    cv: Condvar,
    max_ahead: usize,
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub fn new(threads: usize, name: &str) -> Result<Pool> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queues {
                demand: VecDeque::new(),
                ahead: VecDeque::new(),
                stopped: false,
                ahead_running: 0,
                live: threads,
            }),
            cv: Condvar::new(),
            // Leave at least half the workers for demand reads.
            max_ahead: (threads / 2).max(1),
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let s = shared.clone();
            let builder = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(256 << 10);
            let h = crate::fork::spawn(builder, move || {
                worker(&s);
                s.q.locked().live -= 1;
                s.cv.notify_all();
            })
            .map_err(|e| Error::internal(format!("cannot start worker thread: {e}")))?;
            handles.push(h);
        }
        Ok(Pool {
            shared,
            threads: Mutex::new(handles),
        })
    }

    /// Queues a demand job; the returned ticket reports its result.
    pub fn demand(&self, task: Task) -> Arc<Ticket> {
        let t = Arc::new(Ticket::default());
        let mut q = self.shared.q.locked();
        if q.stopped {
            drop(q);
            t.finish(Err(stopped()));
            return t;
        }
        q.demand.push_back((task, t.clone()));
        drop(q);
        self.shared.cv.notify_one();
        t
    }

    /// Queues a readahead job (dropped if the pool stops first).
    pub fn ahead(&self, task: Task) {
        let mut q = self.shared.q.locked();
        if q.stopped {
            return;
        }
        q.ahead.push_back(task);
        drop(q);
        self.shared.cv.notify_one();
    }

    /// Number of readahead jobs queued but not started.
    pub fn ahead_queued(&self) -> usize {
        self.shared.q.locked().ahead.len()
    }

    /// Stops accepting work, fails queued demand jobs, and joins the workers
    /// (each finishes the job it is running; jobs honour cancellation).
    /// Workers still busy after `wait` are abandoned (they end on their own
    /// when their job returns).
    pub fn stop(&self, wait: std::time::Duration) {
        let pending: Vec<_> = {
            let mut q = self.shared.q.locked();
            q.stopped = true;
            q.ahead.clear();
            q.demand.drain(..).collect()
        };
        for (_, t) in pending {
            t.finish(Err(stopped()));
        }
        self.shared.cv.notify_all();
        let deadline = std::time::Instant::now() + wait;
        let mut q = self.shared.q.locked();
        while q.live > 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            q = self.shared.cv.wait_on_for(q, deadline - now);
        }
        let stuck = q.live;
        drop(q);
        let handles: Vec<_> = self.threads.locked().drain(..).collect();
        if stuck == 0 {
            for h in handles {
                let _ = h.join();
            }
        } else {
            crate::log::warning!(
                "shutdown: {stuck} fill worker(s) still busy after {wait:?} (stuck in a read from the origin?) are left to finish on their own"
            );
            for h in handles {
                if h.is_finished() {
                    let _ = h.join();
                }
            }
        }
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the library was shut down before this read could be filled",
    )
}

enum Next {
    Demand(Task, Arc<Ticket>),
    Ahead(Task),
}

fn worker(s: &Shared) {
    loop {
        let next = {
            let mut q = s.q.locked();
            loop {
                if let Some((task, ticket)) = q.demand.pop_front() {
                    break Next::Demand(task, ticket);
                }
                if q.stopped {
                    return;
                }
                if q.ahead_running < s.max_ahead {
                    if let Some(task) = q.ahead.pop_front() {
                        q.ahead_running += 1;
                        break Next::Ahead(task);
                    }
                }
                q = s.cv.wait_on(q);
            }
        };
        match next {
            Next::Demand(task, ticket) => {
                let r = run(task);
                ticket.finish(r);
            }
            Next::Ahead(task) => {
                let _ = run(task);
                s.q.locked().ahead_running -= 1;
                s.cv.notify_one();
            }
        }
    }
}

fn run(task: Task) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)) {
        Ok(r) => r,
        Err(p) => Err(Error::internal(format!(
            "a fill job panicked: {}",
            crate::error::panic_message(&*p)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn demand_jobs_run_and_report() {
        let p = Pool::new(3, "t").unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let tickets: Vec<_> = (0..20)
            .map(|i| {
                let n = n.clone();
                p.demand(Box::new(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                    if i == 7 {
                        Err(Error::origin("boom"))
                    } else {
                        Ok(())
                    }
                }))
            })
            .collect();
        let results: Vec<_> = tickets.iter().map(|t| t.wait()).collect();
        assert_eq!(n.load(Ordering::SeqCst), 20);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        p.stop(std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_panicking_job_becomes_an_error() {
        let p = Pool::new(1, "t").unwrap();
        let t = p.demand(Box::new(|| panic!("deliberate")));
        let e = t.wait().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("deliberate"));
        p.stop(std::time::Duration::from_secs(5));
    }

    #[test]
    fn stop_fails_queued_work_and_refuses_new_work() {
        let p = Pool::new(1, "t").unwrap();
        let gate = Arc::new(Mutex::new(()));
        let g = gate.locked();
        let gate2 = gate.clone();
        let first = p.demand(Box::new(move || {
            drop(gate2.locked());
            Ok(())
        }));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let queued = p.demand(Box::new(|| Ok(())));
        let stopper = std::thread::spawn({
            let p = Arc::new(p);
            move || {
                p.stop(std::time::Duration::from_secs(5));
                p
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(g);
        let p = stopper.join().unwrap();
        assert!(first.wait().is_ok());
        assert_eq!(queued.wait().unwrap_err().kind(), ErrorKind::Shutdown);
        assert_eq!(
            p.demand(Box::new(|| Ok(()))).wait().unwrap_err().kind(),
            ErrorKind::Shutdown
        );
    }
}
