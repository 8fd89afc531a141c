//! Targeted wakeups: threads wait for a progress counter (published or durable op key) to
//! reach their key, and the thread that advances it wakes exactly the waiters it satisfied.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, Thread};

use parking_lot::Mutex;

/// Threads parked until a progress counter reaches their op key.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    queue: Mutex<Vec<(u64, Thread)>>,
    queued: AtomicUsize,
}

impl Waiters {
    /// Blocks until `progress >= key` (returns true) or `give_up()` holds (returns false).
    /// `give_up` is checked after every wakeup; whoever makes it true must call
    /// [`Waiters::wake_all`].
    pub(crate) fn wait(&self, key: u64, progress: &AtomicU64, give_up: impl Fn() -> bool) -> bool {
        if progress.load(Ordering::SeqCst) >= key {
            return true;
        }
        {
            let mut queue = self.queue.lock();
            queue.push((key, thread::current()));
            self.queued.fetch_add(1, Ordering::SeqCst);
        }
        loop {
            if progress.load(Ordering::SeqCst) >= key {
                return true;
            }
            if give_up() {
                return false;
            }
            thread::park();
        }
    }

    /// Wakes every waiter whose key is at most `key`, and returns how many. Call after
    /// storing the new progress.
    pub(crate) fn wake_up_to(&self, key: u64) -> usize {
        if self.queued.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        let mut woken = Vec::new();
        {
            let mut queue = self.queue.lock();
            queue.retain(|(waiting_for, thread)| {
                if *waiting_for <= key {
                    woken.push(thread.clone());
                    false
                } else {
                    true
                }
            });
            self.queued.store(queue.len(), Ordering::SeqCst);
        }
        let count = woken.len();
        for thread in woken {
            thread.unpark();
        }
        count
    }

    /// Wakes every waiter (the log failed or closed).
    pub(crate) fn wake_all(&self) {
        self.wake_up_to(u64::MAX);
    }
}
