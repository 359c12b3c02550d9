//! A fixed set of worker threads running fill jobs, demand jobs before
//! readahead jobs. It bounds how many origin requests are in flight
//! (`BLOBCACHE_FETCH_CONCURRENCY`) and lets one large read fetch its blocks in
//! parallel. A job reports its outcome itself (the cache's jobs through
//! their flight); a job that panics is caught and its worker goes on.
//! Stopping the pool drops the jobs queued (unrun: a job's `Drop` is how it
//! learns), and joins the threads, waiting a bounded time: a worker stuck in
//! the kernel (a read from a hung filesystem) is abandoned, not waited for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::{Condvar, Mutex};

use crate::sync::{CondvarExt, MutexExt};

use crate::error::{Error, Result};

pub(crate) type Task = Box<dyn FnOnce() + Send>;

struct Queues {
    demand: VecDeque<Task>,
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

pub(crate) struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn new(threads: usize, name: &str) -> Result<Pool> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queues {
                demand: VecDeque::new(),
                ahead: VecDeque::new(),
                stopped: false,
                ahead_running: 0,
                live: threads,
            }),
            cv: Condvar::new(),
            // Leave a quarter of the workers for demand reads, and at least
            // one when there are two or more.
            max_ahead: (threads - (threads / 4).max(1)).max(1),
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

    /// Queues a demand job (dropped unrun if the pool stopped).
    pub(crate) fn demand(&self, task: Task) {
        let mut q = self.shared.q.locked();
        if q.stopped {
            drop(q);
            drop(task);
            return;
        }
        q.demand.push_back(task);
        drop(q);
        self.shared.cv.notify_one();
    }

    /// Queues a readahead job (dropped if the pool stops first).
    pub(crate) fn ahead(&self, task: Task) {
        let mut q = self.shared.q.locked();
        if q.stopped {
            return;
        }
        q.ahead.push_back(task);
        drop(q);
        self.shared.cv.notify_one();
    }

    /// Stops accepting work, drops queued jobs unrun, and joins the workers
    /// (each finishes the job it is running; jobs honour cancellation).
    /// Workers still busy after `wait` are abandoned (they end on their own
    /// when their job returns).
    pub(crate) fn stop(&self, wait: std::time::Duration) {
        // Dropped outside the lock: a job's Drop may take locks of its own.
        let pending: (Vec<_>, Vec<_>) = {
            let mut q = self.shared.q.locked();
            q.stopped = true;
            (q.demand.drain(..).collect(), q.ahead.drain(..).collect())
        };
        drop(pending);
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

enum Next {
    Demand(Task),
    Ahead(Task),
}

fn worker(s: &Shared) {
    loop {
        let next = {
            let mut q = s.q.locked();
            loop {
                if let Some(task) = q.demand.pop_front() {
                    break Next::Demand(task);
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
            Next::Demand(task) => run(task),
            Next::Ahead(task) => {
                run(task);
                s.q.locked().ahead_running -= 1;
                s.cv.notify_one();
            }
        }
    }
}

/// Runs a job; a panic ends the job, not the worker. (The cache's jobs
/// turn their own panics into their readers' errors.)
fn run(task: Task) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)) {
        crate::log::debug!("a fill job panicked: {}", crate::error::panic_message(&*p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// Sends `true` when run, `false` when dropped unrun.
    struct Probe(Option<mpsc::Sender<bool>>);

    impl Probe {
        fn task(tx: &mpsc::Sender<bool>) -> Task {
            let mut p = Probe(Some(tx.clone()));
            Box::new(move || {
                let _ = p.0.take().unwrap().send(true);
            })
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(false);
            }
        }
    }

    #[test]
    fn demand_and_readahead_jobs_all_run() {
        let p = Pool::new(3, "t").unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for i in 0..20 {
            let (n, tx) = (n.clone(), tx.clone());
            let job: Task = Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            });
            if i % 2 == 0 {
                p.demand(job)
            } else {
                p.ahead(job)
            }
        }
        for _ in 0..20 {
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 20);
        p.stop(std::time::Duration::from_secs(5));
    }

    #[test]
    fn readahead_takes_three_quarters_of_the_workers_and_demand_the_rest() {
        // 8 workers: at most 6 readahead jobs run at once, and a demand job
        // queued behind 20 blocked readahead jobs still runs at once.
        let p = Pool::new(8, "t").unwrap();
        let gate = Arc::new(Mutex::new(()));
        let g = gate.locked();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        for _ in 0..20 {
            let (gate, running, peak, tx) =
                (gate.clone(), running.clone(), peak.clone(), tx.clone());
            p.ahead(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tx.send(()).unwrap();
                drop(gate.locked());
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for _ in 0..6 {
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        }
        let (dtx, drx) = mpsc::channel();
        p.demand(Probe::task(&dtx));
        assert_eq!(
            drx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(true)
        );
        // No seventh readahead job started meanwhile.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        assert_eq!(peak.load(Ordering::SeqCst), 6);
        drop(g);
        for _ in 6..20 {
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 6);
        p.stop(std::time::Duration::from_secs(5));
        for (threads, ahead) in [(1, 1), (2, 1), (3, 2), (4, 3), (32, 24)] {
            let p = Pool::new(threads, "t").unwrap();
            assert_eq!(p.shared.max_ahead, ahead, "{threads} workers");
            p.stop(std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn a_panicking_job_does_not_take_its_worker_down() {
        let p = Pool::new(1, "t").unwrap();
        let (tx, rx) = mpsc::channel();
        p.demand(Box::new(|| panic!("deliberate")));
        p.demand(Probe::task(&tx));
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(true));
        p.stop(std::time::Duration::from_secs(5));
    }

    #[test]
    fn stop_drops_queued_work_unrun_and_refuses_new_work() {
        let p = Pool::new(1, "t").unwrap();
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        let g = gate.locked();
        let gate2 = gate.clone();
        let tx2 = tx.clone();
        p.demand(Box::new(move || {
            drop(gate2.locked());
            tx2.send(true).unwrap();
        }));
        std::thread::sleep(std::time::Duration::from_millis(50));
        p.demand(Probe::task(&tx));
        let stopper = std::thread::spawn({
            let p = Arc::new(p);
            move || {
                p.stop(std::time::Duration::from_secs(5));
                p
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The queued job was dropped unrun at stop.
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(false)
        );
        drop(g);
        let p = stopper.join().unwrap();
        // The running one finished.
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(true));
        p.demand(Probe::task(&tx));
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(false)
        );
    }
}
