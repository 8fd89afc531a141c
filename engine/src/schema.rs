//! The seam between the generic engine core and what is stored: a [`Schema`] says how its
//! ops are encoded in the log, how a batch of them is applied to SQLite, and how each one is
//! indexed in (and removed from) the in-memory overlay that answers reads before the flusher
//! has written them.
//!
//! The core (log, buffer, flusher, recovery) knows nothing about shapes: the shape registry
//! ([`crate::shapes`]) is one schema, and `engine/examples/kv/` is another.

/// An op could not be decoded from its log record: the log holds something this schema never
/// wrote (or a newer version of it). Recovery refuses to open rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode op of kind {kind}: {problem}")]
pub struct DecodeError {
    /// The record kind.
    pub kind: u8,
    /// What is wrong.
    pub problem: &'static str,
}

impl DecodeError {
    /// A decode error for `kind`.
    #[must_use]
    pub fn new(kind: u8, problem: &'static str) -> Self {
        Self { kind, problem }
    }
}

/// One op of a batch handed to [`Schema::apply`]: its op key and the op.
pub type BatchOp<Op> = (u64, Op);

/// What a store keeps: its ops, their SQLite tables and their in-memory indexes.
///
/// Every method but [`Schema::apply`] and [`Schema::create_tables`] runs on a writer's or a
/// reader's thread and must be fast; `apply` runs on the flusher thread inside the batch's
/// transaction.
pub trait Schema: Send + Sync + 'static {
    /// One op, decoded. Ops are validated before they are logged, so every logged op can be
    /// applied.
    ///
    /// The buffer keeps each op by value until SQLite has it, and the flusher clones the ops
    /// of each batch it applies: a clone should cost no more than a reference count (put a
    /// large op behind an `Arc`), and a small op keeps the buffer small.
    type Op: Clone + Send + Sync + 'static;
    /// The schema's secondary indexes over buffered ops (lock-free structures: readers use
    /// them without taking any lock).
    type Overlay: Send + Sync + 'static;

    /// A short name for logs and errors (`"shapes"`).
    const NAME: &'static str;
    /// The version of the schema's SQLite tables, kept in `PRAGMA user_version`. A database
    /// written by a newer version is refused, never wiped.
    const VERSION: u32;

    /// Creates the schema's SQLite tables in a fresh database (the core creates its own
    /// `walbuf_meta` table beside them).
    ///
    /// # Errors
    /// Any SQLite error.
    fn create_tables(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

    /// An empty overlay.
    fn new_overlay(&self) -> Self::Overlay;

    /// Called once on open, before recovery replays buffered ops, with the write connection:
    /// a schema may load what its overlay caches about SQLite (e.g. a filter of the keys that
    /// exist there). The default does nothing.
    ///
    /// # Errors
    /// Any SQLite error (the open fails).
    fn load(
        &self,
        overlay: &Self::Overlay,
        connection: &rusqlite::Connection,
    ) -> rusqlite::Result<()> {
        let _ = (overlay, connection);
        Ok(())
    }

    /// The log record kind (1..=127) of `op`.
    fn kind(&self, op: &Self::Op) -> u8;

    /// Appends the encoding of `op` to `out`.
    fn encode(&self, op: &Self::Op, out: &mut Vec<u8>);

    /// Decodes an op written by [`Schema::encode`].
    ///
    /// # Errors
    /// [`DecodeError`] for bytes `encode` cannot have produced.
    fn decode(&self, kind: u8, payload: &[u8]) -> Result<Self::Op, DecodeError>;

    /// Adds `op` (logged under `op_key`) to the overlay's indexes. Index entries carry the op
    /// key, so that [`Schema::unindex`] can remove exactly this op's entries.
    fn index(&self, overlay: &Self::Overlay, op_key: u64, op: &Self::Op);

    /// Removes the entries [`Schema::index`] added for `op_key` — and only those: an entry of
    /// a newer op for the same key stays (compare-and-delete).
    fn unindex(&self, overlay: &Self::Overlay, op_key: u64, op: &Self::Op);

    /// Parts into which [`Schema::index_replayed`] splits the indexing of replayed ops: on
    /// open, recovery runs each part on a thread of its own. The default, 1, indexes every
    /// replayed op with [`Schema::index`] on one thread.
    const REPLAY_INDEX_PARTS: usize = 1;

    /// Recovery expects to replay about `ops` ops in all (see
    /// `walbuf_recovery::replay::Sink::expect_records`; capped at the buffer's op bound and at
    /// 4 M): the overlay may reserve room for that many replayed ops in its indexes, so that
    /// they do not grow step by step (each growth moves every entry and takes fresh memory).
    /// Called before the first replayed op, and again, with a higher `ops`, before a segment
    /// that holds more than was expected — by then [`Schema::index_replayed`] parts may be
    /// running on other threads, so what this touches must be behind the same locks they
    /// take. Only a hint: reserve with `try_reserve`, never fail. The default does nothing.
    fn reserve_replayed(&self, overlay: &Self::Overlay, ops: usize) {
        let _ = (overlay, ops);
    }

    /// Indexes part `part` (in `0..REPLAY_INDEX_PARTS`) of each of `ops`, ops that recovery
    /// replays from the log, in op-key order. Every part is called with every replayed op, in
    /// chunks, and parts run at once on different threads, so they must touch disjoint
    /// structures. A part may defer work to [`Schema::finish_replay`]. Together the parts
    /// and `finish_replay` must leave the overlay as [`Schema::index`] of each op would. No
    /// reader or writer uses the overlay until then. The default indexes each op with
    /// [`Schema::index`] in part 0.
    fn index_replayed<'op>(
        &self,
        overlay: &Self::Overlay,
        part: usize,
        ops: impl Iterator<Item = (u64, &'op Self::Op)>,
    ) {
        if part == 0 {
            for (op_key, op) in ops {
                self.index(overlay, op_key, op);
            }
        }
    }

    /// Called once recovery has indexed every replayed op with [`Schema::index_replayed`],
    /// before the store serves anything: finishes what the parts deferred (e.g. builds an
    /// ordered index in bulk). The default does nothing.
    fn finish_replay(&self, overlay: &Self::Overlay) {
        let _ = overlay;
    }

    /// Applies a batch of ops, in op-key order, inside the flusher's transaction. The schema
    /// may coalesce ops that cancel and reorder writes for locality as long as the result is
    /// the state after applying every op in order.
    ///
    /// # Errors
    /// Any SQLite error: the transaction is rolled back and the batch retried.
    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: &[BatchOp<Self::Op>],
    ) -> rusqlite::Result<()>;
}
