//! A persistent pool of worker threads for the matrix products: a decode step runs ~170 of them,
//! and spawning threads for each would cost more than the products themselves on small models.
//!
//! [`run`] calls `f(0)` on the caller's thread and `f(1)..f(n-1)` on workers, and returns once
//! every call has returned. Workers spin briefly for the next job, then sleep on a condition
//! variable. One job runs at a time; a caller that finds the pool busy (another engine run on
//! another thread) runs its job on scoped threads instead, with the same results.
//!
//! The unsafe part: the job closure borrows the caller's stack, and workers reach it through a raw
//! pointer. That is sound because [`run`] does not return before every worker has finished with it
//! (the `pending` count reaches zero, with acquire/release ordering), also when a call panics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

type Job<'a> = dyn Fn(usize) + Sync + 'a;

struct Shared {
    /// The job, as a pointer to the caller's `&Job` (valid while `pending > 0`).
    job: AtomicUsize,
    /// Bumped for each job; a worker runs a job once per epoch.
    epoch: AtomicU64,
    /// Workers taking part in the current job (worker `i` runs `f(i)` when `i < n`).
    n: AtomicUsize,
    /// Calls not yet finished.
    pending: AtomicUsize,
    panicked: AtomicBool,
    /// Workers sleeping on (or about to sleep on) `wake`: a job wakes them only when there are
    /// some, so back-to-back products with every worker spinning make no futex call.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    busy: Mutex<()>,
}

static POOL: OnceLock<Mutex<Option<Arc<Pool>>>> = OnceLock::new();

/// Spins before a worker sleeps (each a `spin_loop` hint, ~tens of microseconds in all).
const SPINS: u32 = 1 << 14;

fn worker(shared: Arc<Shared>, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = shared.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = shared.sleep.lock().unwrap_or_else(|p| p.into_inner());
                // Counted before the epoch is read again (both SeqCst): `run` bumps the epoch
                // before it reads the count, so either this worker sees the new epoch or `run`
                // sees the sleeper and notifies under the lock this worker holds until it waits.
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                let guard = if shared.epoch.load(Ordering::SeqCst) == seen {
                    shared
                        .wake
                        .wait_timeout(guard, Duration::from_millis(50))
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g)
                } else {
                    guard
                };
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            }
        };
        seen = epoch;
        if index < shared.n.load(Ordering::Acquire) {
            let job = shared.job.load(Ordering::Acquire) as *const &Job<'static>;
            // SAFETY: the caller of `run` keeps the job alive until `pending` reaches zero, which
            // cannot happen before this call decrements it below.
            let f: &Job<'static> = unsafe { *job };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
                shared.panicked.store(true, Ordering::Release);
            }
            shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn pool(threads: usize) -> Option<Arc<Pool>> {
    let cell = POOL.get_or_init(|| Mutex::new(None));
    let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_none_or(|p| p.workers + 1 < threads) {
        // Grow by replacing: the old workers stay parked (they are few: the largest thread count
        // asked for so far).
        let shared = Arc::new(Shared {
            job: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            n: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        for i in 1..threads {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("bitnet-kernel-{i}"))
                .spawn(move || worker(s, i))
                .ok()?;
        }
        *slot = Some(Arc::new(Pool {
            shared,
            workers: threads - 1,
            busy: Mutex::new(()),
        }));
    }
    slot.clone()
}

/// Run `f(0..threads)`, `f(0)` on this thread; returns when all have returned. Panics if a call
/// panicked.
pub fn run(threads: usize, f: &Job<'_>) {
    if threads <= 1 {
        f(0);
        return;
    }
    let Some(p) = pool(threads) else {
        return scoped(threads, f);
    };
    let Ok(_busy) = p.busy.try_lock() else {
        return scoped(threads, f);
    };
    let s = &p.shared;
    let job: &&Job<'_> = &f;
    s.job
        .store(job as *const &Job<'_> as usize, Ordering::Release);
    s.n.store(threads, Ordering::Release);
    s.pending.store(threads - 1, Ordering::Release);
    s.panicked.store(false, Ordering::Release);
    s.epoch.fetch_add(1, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = s.sleep.lock().unwrap_or_else(|p| p.into_inner());
        s.wake.notify_all();
    }
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
    while s.pending.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    if mine.is_err() || s.panicked.load(Ordering::Acquire) {
        panic!("a kernel thread panicked");
    }
}

fn scoped(threads: usize, f: &Job<'_>) {
    std::thread::scope(|sc| {
        for i in 1..threads {
            sc.spawn(move || f(i));
        }
        f(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_index_runs_once_per_job() {
        for threads in [1, 2, 3, 5] {
            for _ in 0..200 {
                let hits: Vec<AtomicU32> = (0..threads).map(|_| AtomicU32::new(0)).collect();
                run(threads, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn concurrent_callers_fall_back_and_agree() {
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| {
                    for _ in 0..100 {
                        let total = AtomicU32::new(0);
                        run(2, &|i| {
                            total.fetch_add(i as u32 + 1, Ordering::Relaxed);
                        });
                        assert_eq!(total.load(Ordering::Relaxed), 3);
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_call_is_reported_and_the_pool_survives() {
        let r = std::panic::catch_unwind(|| run(2, &|i| assert!(i != 1, "planted")));
        assert!(r.is_err());
        let total = AtomicU32::new(0);
        run(2, &|_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 2);
    }
}
