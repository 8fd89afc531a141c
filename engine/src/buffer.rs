//! The buffer: every acknowledged op not yet in SQLite, in a lock-free skiplist keyed by op
//! key (the order of the log), with its memory accounted.
//!
//! Readers find the latest buffered op at or below a key without a lock; the flusher takes a
//! gapless run of keys from the bottom and removes them once SQLite has committed them.
//! Writers wait here for room when the buffer is at its bound ([`Buffer::wait_for_room`]).
//!
//! The ops recovery replays on open arrive all at once, in ascending op-key order, below
//! every op a writer will add, and leave from the front as the flusher applies them: they
//! are kept apart, in a queue beside the skiplist ([`Buffer::extend_replayed`]), which costs
//! a push per op instead of a skiplist insert. Once the flusher has drained the queue, reads
//! skip it without taking its lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipMap;
use parking_lot::{Condvar, Mutex, RwLock};

/// Fixed per-op overhead counted on top of the encoded size: skiplist node, the op's shared
/// parts, index entries. An estimate; it keeps many tiny ops from slipping under a byte bound.
pub const OP_OVERHEAD_BYTES: u64 = 160;

/// One buffered op.
#[derive(Debug)]
pub struct PendingOp<Op> {
    /// The op.
    pub op: Op,
    /// How many live entities the store holds once this op is applied (maintained by the
    /// core, logged with the op, so that counting is O(1) and survives a crash).
    pub count_after: u64,
    /// Bytes accounted for this op.
    pub bytes: u64,
}

impl<Op: Clone> Clone for PendingOp<Op> {
    fn clone(&self) -> Self {
        Self {
            op: self.op.clone(),
            count_after: self.count_after,
            bytes: self.bytes,
        }
    }
}

/// The ops buffered in op-key order, and their accounting.
pub struct Buffer<Op> {
    ops: SkipMap<u64, PendingOp<Op>>,
    /// Ops recovery replayed, in ascending op-key order, every one below every key in `ops`.
    replayed: RwLock<VecDeque<(u64, PendingOp<Op>)>>,
    /// How many ops `replayed` holds: readers skip its lock when it is 0 (as it stays once
    /// the flusher has drained it).
    replayed_len: AtomicU64,
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
            replayed: RwLock::new(VecDeque::new()),
            replayed_len: AtomicU64::new(0),
            len_ops: AtomicU64::new(0),
            len_bytes: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
        }
    }
}

impl<Op: Clone + Send + Sync + 'static> Buffer<Op> {
    /// Buffers `pending` under `op_key`.
    pub fn insert(&self, op_key: u64, pending: PendingOp<Op>) {
        let bytes = pending.bytes;
        self.ops.insert(op_key, pending);
        self.len_ops.fetch_add(1, Ordering::SeqCst);
        let total = self.len_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak_bytes.fetch_max(total, Ordering::Relaxed);
    }

    /// Reserves room for about `ops` replayed ops in all (see [`Buffer::extend_replayed`]).
    /// Only a hint: a reservation the allocator refuses is skipped.
    pub fn reserve_replayed(&self, ops: usize) {
        let mut replayed = self.replayed.write();
        let more = ops.saturating_sub(replayed.len());
        let _ = replayed.try_reserve_exact(more);
    }

    /// Replayed ops the queue has room for without growing (tests of the reservation).
    #[cfg(test)]
    pub(crate) fn replayed_capacity(&self) -> usize {
        self.replayed.read().capacity()
    }

    /// Buffers ops that recovery replayed, in ascending op-key order, before any op is
    /// [inserted](Buffer::insert): they go to the queue beside the skiplist.
    ///
    /// # Panics
    /// If an op key is not above every key buffered so far (replay hands them in ascending
    /// order, before the store takes any write).
    pub fn extend_replayed(&self, ops: impl IntoIterator<Item = (u64, PendingOp<Op>)>) {
        assert!(
            self.ops.is_empty(),
            "replayed ops are buffered before any other"
        );
        let mut replayed = self.replayed.write();
        let mut last = replayed.back().map(|(op_key, _)| *op_key);
        let (mut count, mut bytes) = (0, 0);
        for (op_key, pending) in ops {
            assert!(
                last.is_none_or(|last| last < op_key),
                "replayed ops are buffered in ascending op-key order"
            );
            last = Some(op_key);
            count += 1;
            bytes += pending.bytes;
            replayed.push_back((op_key, pending));
        }
        self.replayed_len
            .store(replayed.len() as u64, Ordering::SeqCst);
        self.len_ops.fetch_add(count, Ordering::SeqCst);
        let total = self.len_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak_bytes.fetch_max(total, Ordering::Relaxed);
    }

    /// Removes `op_key` (after SQLite committed it, or when its append failed); says whether
    /// it was buffered. Writers waiting for room hear of it from [`Buffer::notify_room`].
    pub fn remove(&self, op_key: u64) -> bool {
        if self.replayed_len.load(Ordering::SeqCst) > 0 && self.remove_replayed(op_key) {
            return true;
        }
        let Some(entry) = self.ops.remove(&op_key) else {
            return false;
        };
        let pending = entry.value();
        self.len_ops.fetch_sub(1, Ordering::SeqCst);
        self.len_bytes.fetch_sub(pending.bytes, Ordering::SeqCst);
        true
    }

    /// Removes `op_key` from the replayed ops, if it is there (the flusher removes them from
    /// the front, in order).
    fn remove_replayed(&self, op_key: u64) -> bool {
        let mut replayed = self.replayed.write();
        let removed = if replayed.front().is_some_and(|(first, _)| *first == op_key) {
            replayed.pop_front()
        } else {
            replayed
                .binary_search_by_key(&op_key, |(key, _)| *key)
                .ok()
                .and_then(|position| replayed.remove(position))
        };
        let Some((_, pending)) = removed else {
            return false;
        };
        if replayed.is_empty() {
            // Give the drained queue's memory back.
            *replayed = VecDeque::new();
        }
        self.replayed_len
            .store(replayed.len() as u64, Ordering::SeqCst);
        self.len_ops.fetch_sub(1, Ordering::SeqCst);
        self.len_bytes.fetch_sub(pending.bytes, Ordering::SeqCst);
        true
    }

    /// Wakes every writer waiting for room (after a batch was removed).
    pub fn notify_room(&self) {
        let _guard = self.room.lock();
        self.room_freed.notify_all();
    }

    /// The latest buffered op at or below `op_key`: its key and the live count after it.
    #[must_use]
    pub fn latest_at_or_below(&self, op_key: u64) -> Option<(u64, u64)> {
        if let Some(entry) = self.ops.upper_bound(std::ops::Bound::Included(&op_key)) {
            return Some((*entry.key(), entry.value().count_after));
        }
        // Every replayed op is below every op in the skiplist.
        if self.replayed_len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let replayed = self.replayed.read();
        let above = replayed.partition_point(|(key, _)| *key <= op_key);
        let (key, pending) = replayed.get(above.checked_sub(1)?)?;
        Some((*key, pending.count_after))
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
    ) -> Vec<(u64, Op, u64)> {
        let mut run = GaplessRun {
            ops: Vec::new(),
            bytes: 0,
            expected: first,
            last,
            max_ops,
            max_bytes,
        };
        // The replayed ops come first: they are below every op in the skiplist.
        if self.replayed_len.load(Ordering::SeqCst) > 0 {
            let replayed = self.replayed.read();
            let start = replayed.partition_point(|(key, _)| *key < first);
            for (key, pending) in replayed.range(start..) {
                if !run.take(*key, pending) {
                    return run.ops;
                }
            }
        }
        if run.expected <= last {
            for entry in self.ops.range(run.expected..=last) {
                if !run.take(*entry.key(), entry.value()) {
                    break;
                }
            }
        }
        run.ops
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

/// A gapless run being gathered for the flusher.
struct GaplessRun<Op> {
    ops: Vec<(u64, Op, u64)>,
    bytes: u64,
    /// The key the next op must have.
    expected: u64,
    last: u64,
    max_ops: usize,
    max_bytes: u64,
}

impl<Op: Clone> GaplessRun<Op> {
    /// Takes the op of `key` if it continues the run within its bounds; says whether it did.
    fn take(&mut self, key: u64, pending: &PendingOp<Op>) -> bool {
        if key != self.expected
            || key > self.last
            || self.ops.len() >= self.max_ops
            || self.bytes >= self.max_bytes
        {
            return false;
        }
        self.bytes += pending.bytes;
        self.ops
            .push((key, pending.op.clone(), pending.count_after));
        self.expected = key.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: u64) -> PendingOp<u32> {
        PendingOp {
            op: 0,
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
        assert!(buffer.remove(1));
        assert!(!buffer.remove(1));
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

    #[test]
    fn replayed_ops_are_read_and_drained_before_the_skiplist() {
        let buffer = Buffer::default();
        buffer.extend_replayed((1..=4).map(|key| (key, pending(10))));
        buffer.extend_replayed([(5, pending(10))]);
        assert_eq!((buffer.len_ops(), buffer.len_bytes()), (5, 50));
        buffer.insert(6, pending(10));
        buffer.insert(7, pending(10));
        let keys = |run: Vec<(u64, u32, u64)>| run.iter().map(|op| op.0).collect::<Vec<_>>();
        assert_eq!(
            keys(buffer.gapless_run(1, 10, 100, 1000)),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(keys(buffer.gapless_run(3, 6, 100, 1000)), vec![3, 4, 5, 6]);
        assert_eq!(keys(buffer.gapless_run(2, 10, 3, 1000)), vec![2, 3, 4]);
        assert_eq!(keys(buffer.gapless_run(4, 10, 100, 25)), vec![4, 5, 6]);
        assert_eq!(keys(buffer.gapless_run(6, 10, 100, 1000)), vec![6, 7]);
        assert!(buffer.gapless_run(8, 10, 100, 1000).is_empty());
        assert_eq!(buffer.latest_at_or_below(3).map(|op| op.0), Some(3));
        assert_eq!(buffer.latest_at_or_below(6).map(|op| op.0), Some(6));
        assert_eq!(buffer.latest_at_or_below(0), None);
        // The flusher drains from the front; a key in the middle goes too.
        assert!(buffer.remove(1));
        assert!(!buffer.remove(1));
        assert!(buffer.remove(3));
        assert_eq!(keys(buffer.gapless_run(2, 10, 100, 1000)), vec![2]);
        assert_eq!(keys(buffer.gapless_run(4, 10, 100, 1000)), vec![4, 5, 6, 7]);
        assert_eq!(buffer.latest_at_or_below(3).map(|op| op.0), Some(2));
        assert_eq!(buffer.latest_at_or_below(1), None);
        for key in [2, 4, 5] {
            assert!(buffer.remove(key));
        }
        assert_eq!((buffer.len_ops(), buffer.len_bytes()), (2, 20));
        assert_eq!(buffer.latest_at_or_below(5), None);
        assert_eq!(keys(buffer.gapless_run(6, 10, 100, 1000)), vec![6, 7]);
        assert_eq!(buffer.peak_bytes(), 70);
    }

    #[test]
    fn replayed_ops_with_a_gap_end_the_gapless_run_there() {
        // Salvage may leave gaps in the replayed op keys.
        let buffer = Buffer::default();
        buffer.extend_replayed([(1, pending(1)), (2, pending(1)), (4, pending(1))]);
        assert_eq!(buffer.gapless_run(1, 10, 100, 1000).len(), 2);
        assert_eq!(buffer.gapless_run(4, 10, 100, 1000).len(), 1);
        assert_eq!(buffer.latest_at_or_below(3).map(|op| op.0), Some(2));
    }

    #[test]
    #[should_panic(expected = "ascending")]
    fn replayed_ops_out_of_order_are_refused() {
        let buffer = Buffer::default();
        buffer.extend_replayed([(2, pending(1)), (1, pending(1))]);
    }
}
