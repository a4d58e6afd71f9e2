//! Reads shared by concurrent callers without ever serving one a stale answer.
//!
//! Where several instances share a database, a request must see every change committed before
//! it arrived (a revoked key, a paused agent), so each request's answer must come from a read
//! that *began after it arrived*. That does not need one read per request: a read serves every
//! caller that arrived before it began. [`SharedReads`] runs one read at a time per lane; a
//! caller that arrives while a read is running waits for the lane, and is served by the next
//! read (or by one that began after it arrived). Under load the database sees about one read
//! per read's length per lane instead of one per request.
//!
//! Lanes bound the memory: a key picks its lane by a hash, keeps the lane's last answer only,
//! and keys that share a lane take turns (each still reading for itself).

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared reads of `V` by key `K`, in a fixed number of lanes.
#[derive(Debug)]
pub struct SharedReads<K, V> {
    lanes: Vec<Lane<K, V>>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Debug)]
struct Lane<K, V> {
    /// Callers of this lane, counted as they arrive.
    arrivals: AtomicU64,
    last: tokio::sync::Mutex<Last<K, V>>,
}

/// The lane's last read: how many callers had arrived when it began, and its answer (`None`
/// while it runs and after an error).
#[derive(Debug)]
struct Last<K, V> {
    began_after: u64,
    found: Option<(K, V)>,
}

impl<K: Eq + Hash + Clone, V: Clone> SharedReads<K, V> {
    pub fn new(lanes: usize) -> SharedReads<K, V> {
        let lanes = (0..lanes.max(1))
            .map(|_| Lane {
                arrivals: AtomicU64::new(0),
                last: tokio::sync::Mutex::new(Last { began_after: 0, found: None }),
            })
            .collect();
        SharedReads { lanes, hasher: std::collections::hash_map::RandomState::new() }
    }

    /// `read()`'s answer for `key`, from a read that began after this call arrived: this
    /// call's own, or one it shares with callers that arrived before it began.
    pub async fn get<E>(&self, key: &K, read: impl AsyncFnOnce() -> Result<V, E>) -> Result<V, E> {
        let index = (self.hasher.hash_one(key) % self.lanes.len() as u64) as usize;
        let lane = &self.lanes[index];
        let arrival = lane.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = lane.last.lock().await;
        if last.began_after >= arrival
            && let Some((found_key, value)) = &last.found
            && found_key == key
        {
            return Ok(value.clone());
        }
        last.began_after = lane.arrivals.load(Ordering::SeqCst);
        // Cleared first: a read cut off (its caller dropped) must not leave an older answer
        // labelled with this read's start.
        last.found = None;
        let value = read().await?;
        last.found = Some((key.clone(), value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::SharedReads;

    /// A "database" whose value changes: a caller that arrives after a change always sees it,
    /// and concurrent callers share reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_share_reads_and_never_see_a_value_older_than_their_arrival() {
        let reads = Arc::new(SharedReads::<u8, u64>::new(1));
        let value = Arc::new(AtomicU64::new(0));
        let performed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (reads, current, performed) =
                (Arc::clone(&reads), Arc::clone(&value), Arc::clone(&performed));
            tasks.push(tokio::spawn(async move {
                let value = current;
                let floor = value.load(Ordering::SeqCst);
                let seen = reads
                    .get(&7, async || {
                        performed.fetch_add(1, Ordering::SeqCst);
                        let now = value.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<u64, ()>(now)
                    })
                    .await
                    .unwrap();
                assert!(seen >= floor, "saw {seen}, but {floor} was committed before the call");
            }));
            value.fetch_add(1, Ordering::SeqCst);
        }
        for task in tasks {
            task.await.unwrap();
        }
        let performed = performed.load(Ordering::SeqCst);
        assert!(performed < 200, "reads were shared: {performed} for 200 callers");
    }
}
