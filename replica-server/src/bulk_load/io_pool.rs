//! The threads that bulk-load file work runs on (writing and hashing downloads, reading them
//! back to verify them): a few of their own, at the lowest CPU priority. A load moves
//! gigabytes through a digest (md5 for bulk loads) on every replica; on tokio's blocking pool that work competes as an
//! equal with the reads and writes the node serves, and their latency went from milliseconds
//! to seconds (BENCHMARKS.md, "Bulk load while serving"). Here it takes the CPU they leave.

use std::sync::mpsc;
use std::sync::Mutex;

use wingkv_common::sync::MutexExt;
use wingkv_common::WingError;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads running submitted jobs in turn. Each job is awaited by
/// whoever submitted it (see [`BulkIoPool::run`]); the threads end once the pool is dropped
/// and the jobs queued before are done.
pub struct BulkIoPool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The nice value of the pool's threads (the lowest priority).
const NICE: libc::c_int = 19;

impl BulkIoPool {
    /// A pool of `threads` threads (at least one); fails only if the OS cannot start one.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("bulk-io-{i}")).spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only to take a job, never while one runs.
                    let job = rx.locked().recv();
                    let Ok(job) = job else { return };
                    // A job that panics fails its own caller (its answer is dropped), not the pool.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs: Mutex::new(tx) })
    }

    /// Runs `f` on one of the pool's threads and answers its result.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, WingError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.locked().send(job).map_err(|_| WingError::Internal("the bulk-load I/O threads are gone".into()))?;
        rx.await.map_err(|_| WingError::Internal("a bulk-load I/O job failed (it panicked)".into()))
    }
}

/// Gives the calling thread (only it, on Linux) the lowest CPU priority: nice 19 and the
/// `SCHED_IDLE` policy; best effort. With nice 19 alone, a serving thread that wakes may wait
/// for a bulk-load thread to finish its time slice (a few ms under the kernel's EEVDF
/// scheduler), and a write crosses several such wakeups; a `SCHED_IDLE` thread is preempted at
/// once (BENCHMARKS.md, round 6). It still gets a sliver of a busy CPU, so a load on a
/// saturated node slows down but never stops.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t, NICE) };
        if rc != 0 {
            tracing::warn!("bulk-load I/O thread keeps its priority: {}", std::io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: the calling thread (pid 0) and a parameter owned by this frame.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!("bulk-load I/O thread keeps its scheduling policy: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_at_the_lowest_priority_and_a_panic_fails_only_its_job() {
        let pool = BulkIoPool::new(2).expect("threads");
        let name = pool.run(|| std::thread::current().name().map(str::to_string)).await.expect("a job");
        assert!(name.is_some_and(|n| n.starts_with("bulk-io-")));
        #[cfg(target_os = "linux")]
        {
            // SAFETY: reads the calling thread's priority.
            let nice = pool.run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t) });
            assert_eq!(nice.await.expect("a job"), NICE);
            // SAFETY: reads the calling thread's policy.
            let policy = pool.run(|| unsafe { libc::sched_getscheduler(0) });
            assert_eq!(policy.await.expect("a job"), libc::SCHED_IDLE);
        }
        let failed = pool.run(|| -> u32 { panic!("a job that panics") }).await;
        assert!(failed.is_err());
        // Both threads still serve.
        for _ in 0..4 {
            assert_eq!(pool.run(|| 7).await.expect("after a panic"), 7);
        }
    }
}
