//! Last-read times per handle, in memory only (as in the reference design): sharded maps so
//! that concurrent readers rarely meet, and a bounded heap for the least recently used.

use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// When each handle was last read.
pub(crate) struct LastRead {
    hasher: RandomState,
    shards: [Mutex<HashMap<String, Instant, RandomState>>; SHARDS],
}

impl Default for LastRead {
    fn default() -> Self {
        Self {
            hasher: RandomState::default(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
        }
    }
}

impl LastRead {
    fn shard(&self, handle: &str) -> &Mutex<HashMap<String, Instant, RandomState>> {
        let index = self.hasher.hash_one(handle) as usize % SHARDS;
        &self.shards[index]
    }

    /// Records a read of `handle` now.
    pub(crate) fn touch(&self, handle: &str) {
        let now = Instant::now();
        let mut shard = self.shard(handle).lock();
        match shard.get_mut(handle) {
            Some(time) => *time = now,
            None => {
                shard.insert(handle.to_owned(), now);
            }
        }
    }

    /// Forgets a removed handle.
    pub(crate) fn forget(&self, handle: &str) {
        self.shard(handle).lock().remove(handle);
    }

    /// Forgets every handle.
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            shard.lock().clear();
        }
    }

    /// The `n` handles read least recently, oldest first, with their age: one pass keeping a
    /// heap of at most `n` entries (O(total · log n)), never a full sort.
    pub(crate) fn least_recent(&self, n: usize) -> Vec<(String, Duration)> {
        if n == 0 {
            return Vec::new();
        }
        // A max-heap on time: its top is the most recent of the n oldest kept so far. Its
        // capacity is bounded by what there is, not by `n` (which may be `usize::MAX`).
        let tracked: usize = self.shards.iter().map(|shard| shard.lock().len()).sum();
        let mut heap: BinaryHeap<(Instant, String)> =
            BinaryHeap::with_capacity(n.min(tracked).saturating_add(1));
        for shard in &self.shards {
            let shard = shard.lock();
            for (handle, time) in shard.iter() {
                if heap.len() < n {
                    heap.push((*time, handle.clone()));
                } else if heap.peek().is_some_and(|(newest, _)| time < newest) {
                    heap.pop();
                    heap.push((*time, handle.clone()));
                }
            }
        }
        let now = Instant::now();
        let mut oldest = heap.into_sorted_vec();
        oldest.truncate(n);
        oldest
            .into_iter()
            .map(|(time, handle)| (handle, now.saturating_duration_since(time)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recent_returns_the_oldest_first() {
        let last_read = LastRead::default();
        for handle in ["a", "b", "c", "d"] {
            last_read.touch(handle);
            std::thread::sleep(Duration::from_millis(2));
        }
        last_read.touch("a");
        let handles: Vec<String> = last_read
            .least_recent(2)
            .into_iter()
            .map(|(handle, _)| handle)
            .collect();
        assert_eq!(handles, vec!["b", "c"]);
        assert!(last_read.least_recent(0).is_empty());
        assert_eq!(last_read.least_recent(10).len(), 4);
        assert_eq!(
            last_read.least_recent(usize::MAX).len(),
            4,
            "no overflow, no huge heap"
        );
        last_read.forget("b");
        assert_eq!(last_read.least_recent(1)[0].0, "c");
        last_read.clear();
        assert!(last_read.least_recent(3).is_empty());
    }
}
