//! The buffer: every acknowledged op not yet in SQLite, in a lock-free skiplist keyed by op
//! key (the order of the log), with its memory accounted.
//!
//! Readers find the latest buffered op at or below a key without a lock; the flusher takes a
//! gapless run of keys from the bottom and removes them once SQLite has committed them.
//! Writers wait here for room when the buffer is at its bound ([`Buffer::wait_for_room`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipMap;
use parking_lot::{Condvar, Mutex};

/// Fixed per-op overhead counted on top of the encoded size: skiplist node, `Arc`, index
/// entries. An estimate; it keeps many tiny ops from slipping under a byte bound.
pub const OP_OVERHEAD_BYTES: u64 = 160;

/// One buffered op.
#[derive(Debug)]
pub struct PendingOp<Op> {
    /// The op.
    pub op: Arc<Op>,
    /// How many live entities the store holds once this op is applied (maintained by the
    /// core, logged with the op, so that counting is O(1) and survives a crash).
    pub count_after: u64,
    /// Bytes accounted for this op.
    pub bytes: u64,
}

impl<Op> Clone for PendingOp<Op> {
    fn clone(&self) -> Self {
        Self {
            op: Arc::clone(&self.op),
            count_after: self.count_after,
            bytes: self.bytes,
        }
    }
}

/// The ops buffered in op-key order, and their accounting.
pub struct Buffer<Op> {
    ops: SkipMap<u64, PendingOp<Op>>,
    len_ops: AtomicU64,
    len_bytes: AtomicU64,
    peak_bytes: AtomicU64,
    room: Mutex<()>,
    room_freed: Condvar,
}

impl<Op> std::fmt::Debug for Buffer<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len_ops", &self.len_ops.load(Ordering::Relaxed))
            .field("len_bytes", &self.len_bytes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<Op> Default for Buffer<Op> {
    fn default() -> Self {
        Self {
            ops: SkipMap::new(),
            len_ops: AtomicU64::new(0),
            len_bytes: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
        }
    }
}

impl<Op: Send + Sync + 'static> Buffer<Op> {
    /// Buffers `pending` under `op_key`.
    pub fn insert(&self, op_key: u64, pending: PendingOp<Op>) {
        let bytes = pending.bytes;
        self.ops.insert(op_key, pending);
        self.len_ops.fetch_add(1, Ordering::SeqCst);
        let total = self.len_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak_bytes.fetch_max(total, Ordering::Relaxed);
    }

    /// Removes `op_key` (after SQLite committed it, or when its append failed) and wakes
    /// writers waiting for room.
    pub fn remove(&self, op_key: u64) -> Option<Arc<Op>> {
        let entry = self.ops.remove(&op_key)?;
        let pending = entry.value();
        self.len_ops.fetch_sub(1, Ordering::SeqCst);
        self.len_bytes.fetch_sub(pending.bytes, Ordering::SeqCst);
        Some(Arc::clone(&pending.op))
    }

    /// Wakes every writer waiting for room (after a batch was removed).
    pub fn notify_room(&self) {
        let _guard = self.room.lock();
        self.room_freed.notify_all();
    }

    /// The latest buffered op at or below `op_key`: its key and the live count after it.
    #[must_use]
    pub fn latest_at_or_below(&self, op_key: u64) -> Option<(u64, u64)> {
        self.ops
            .upper_bound(std::ops::Bound::Included(&op_key))
            .map(|entry| (*entry.key(), entry.value().count_after))
    }

    /// Up to `max_ops` ops (and about `max_bytes`) with consecutive keys starting at `first`
    /// and ending at or below `last`: the gapless prefix the flusher may apply.
    #[must_use]
    pub fn gapless_run(
        &self,
        first: u64,
        last: u64,
        max_ops: usize,
        max_bytes: u64,
    ) -> Vec<(u64, Arc<Op>, u64)> {
        let mut run = Vec::new();
        let mut bytes = 0;
        for (expected, entry) in (first..).zip(self.ops.range(first..=last)) {
            if *entry.key() != expected || run.len() >= max_ops || (bytes >= max_bytes) {
                break;
            }
            let pending = entry.value();
            bytes += pending.bytes;
            run.push((expected, Arc::clone(&pending.op), pending.count_after));
        }
        run
    }

    /// Ops buffered.
    #[must_use]
    pub fn len_ops(&self) -> u64 {
        self.len_ops.load(Ordering::SeqCst)
    }

    /// Bytes accounted to buffered ops.
    #[must_use]
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes.load(Ordering::SeqCst)
    }

    /// The most bytes ever buffered at once.
    #[must_use]
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Whether adding an op of `bytes` stays within the bounds.
    #[must_use]
    pub fn has_room(&self, bytes: u64, max_ops: u64, max_bytes: u64) -> bool {
        self.len_ops() < max_ops && self.len_bytes() + bytes <= max_bytes.max(bytes)
    }

    /// Waits until [`Buffer::has_room`] for `bytes`, or `deadline` passes, or `give_up` says
    /// so. Returns whether there is room.
    pub fn wait_for_room(
        &self,
        bytes: u64,
        max_ops: u64,
        max_bytes: u64,
        deadline: Instant,
        give_up: impl Fn() -> bool,
    ) -> bool {
        let mut guard = self.room.lock();
        loop {
            if self.has_room(bytes, max_ops, max_bytes) {
                return true;
            }
            if give_up() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // A bounded wait: a wake-up lost between the check and the wait costs at most
            // this long.
            let step = (deadline - now).min(Duration::from_millis(10));
            let _ = self.room_freed.wait_for(&mut guard, step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: u64) -> PendingOp<u32> {
        PendingOp {
            op: Arc::new(0),
            count_after: 0,
            bytes,
        }
    }

    #[test]
    fn gapless_run_stops_at_the_first_missing_key() {
        let buffer = Buffer::default();
        for key in [1, 2, 3, 5, 6] {
            buffer.insert(key, pending(10));
        }
        let run: Vec<u64> = buffer
            .gapless_run(1, 10, 100, 1000)
            .iter()
            .map(|op| op.0)
            .collect();
        assert_eq!(run, vec![1, 2, 3]);
        assert!(buffer.gapless_run(4, 10, 100, 1000).is_empty());
        assert_eq!(buffer.gapless_run(5, 5, 100, 1000).len(), 1);
        assert_eq!(buffer.gapless_run(1, 10, 2, 1000).len(), 2);
        assert_eq!(buffer.gapless_run(1, 10, 100, 15).len(), 2);
    }

    #[test]
    fn accounting_follows_inserts_and_removes() {
        let buffer = Buffer::default();
        buffer.insert(1, pending(100));
        buffer.insert(2, pending(50));
        assert_eq!((buffer.len_ops(), buffer.len_bytes()), (2, 150));
        assert!(buffer.remove(1).is_some());
        assert!(buffer.remove(1).is_none());
        assert_eq!((buffer.len_ops(), buffer.len_bytes()), (1, 50));
        assert_eq!(buffer.peak_bytes(), 150);
        assert_eq!(buffer.latest_at_or_below(10), Some((2, 0)));
        assert_eq!(buffer.latest_at_or_below(1), None);
    }

    #[test]
    fn room_is_bounded_by_ops_and_bytes() {
        let buffer = Buffer::default();
        buffer.insert(1, pending(100));
        assert!(buffer.has_room(10, 2, 200));
        assert!(!buffer.has_room(10, 1, 200));
        assert!(!buffer.has_room(150, 2, 200));
        // An op larger than the whole bound still fits into an empty buffer.
        let empty: Buffer<u32> = Buffer::default();
        assert!(empty.has_room(500, 2, 200));
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(!buffer.wait_for_room(10, 1, 200, deadline, || false));
    }
}
