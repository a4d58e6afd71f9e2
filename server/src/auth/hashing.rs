//! `HashingPool`: password hashes (argon2id, 19 MiB and tens of milliseconds each) run on a
//! few threads of their own, one per core.
//!
//! Why not the shared blocking pool: it grows to hundreds of threads under load, each malloc
//! arena keeps the 19 MiB it last touched, and 64 concurrent wrong-password logins left the
//! server at 5 GB. Here at most one hash per core runs, on threads that stay the same, so
//! memory is bounded by the core count; a request that cannot start one within two seconds is
//! shed with a 503 rather than queued without end.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// How long a request waits for a free hashing thread before it is shed.
const WAIT: Duration = Duration::from_secs(2);

/// A hashing thread idle this long frees its 19 MiB of argon2 memory: a server that signed
/// users up an hour ago need not hold it (two cores' worth was 38 of the ~115 MiB a loaded
/// server kept). The threads wait for work in turn, so all have freed theirs within this times
/// the thread count. A log-in after that pays one 19 MiB allocation (milliseconds, against a
/// hash's tens of them).
const KEEP_MEMORY_WHILE_IDLE: Duration = Duration::from_secs(10);

pub struct HashingPool {
    jobs: SyncSender<Job>,
    /// One per thread: a request holds one from before its job is queued until its result is
    /// back, so the queue never holds more jobs than there are threads.
    permits: Arc<Semaphore>,
    threads: usize,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<HashingPool> {
        let threads = threads.max(1);
        let (jobs, receiver) = sync_channel::<Job>(threads);
        let receiver = Arc::new(Mutex::new(receiver));
        for idx in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("gavel-hash-{idx}"))
                .spawn(move || serve(&receiver))?;
        }
        Ok(HashingPool { jobs, permits: Arc::new(Semaphore::new(threads)), threads })
    }

    /// Hashing threads, and so the most hashes that ever run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Hashes not running now (for tests and metrics).
    pub fn idle(&self) -> usize {
        self.permits.available_permits()
    }

    /// Runs `work` on a hashing thread; 503 when none frees up in time.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || ApiError::Unavailable("password hashing is busy; retry in a moment".into());
        let permit = tokio::time::timeout(WAIT, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(ApiError::internal)?;
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(busy()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::internal(anyhow::anyhow!("the hashing threads stopped")));
            }
        }
        let result = receiver.await.map_err(ApiError::internal);
        drop(permit);
        result
    }
}

fn serve(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv_timeout(KEEP_MEMORY_WHILE_IDLE),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(RecvTimeoutError::Timeout) => registry::release_hash_memory(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
