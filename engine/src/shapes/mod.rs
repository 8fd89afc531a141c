//! The shape registry: the first [`Schema`], and the API a sync server uses to keep its
//! shapes (handle, definition, comparable, hash, relations, snapshot state).
//!
//! Every write is validated against everything submitted before it — the buffer and SQLite —
//! so a duplicate handle or comparable is refused at once with a typed error, and an op that
//! reaches the log can always be applied. Every read checks the overlay first, then SQLite,
//! and sees every acknowledged write.

mod last_read;
mod op;
pub(crate) mod overlay;
mod sql;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use op::{Relation, Removal, Shape, ShapeOp, SnapshotState, kind};
pub use overlay::ShapeOverlay;

use self::last_read::LastRead;
use self::overlay::Resolved;
use crate::error::Error;
use crate::schema::{BatchOp, DecodeError, Schema};
use crate::storage::FsStorage;
use crate::storage::Storage;
use crate::store::{Accepted, RecoveryReport, Store, StoreConfig, StoreStats, Validation, Wait};

/// Why a registry operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A live shape already has this handle.
    #[error("a shape with handle {handle:?} already exists")]
    DuplicateHandle {
        /// The handle.
        handle: String,
    },
    /// A live shape already has this comparable.
    #[error("shape {existing:?} already has this comparable")]
    DuplicateComparable {
        /// The live shape holding it.
        existing: String,
    },
    /// No live shape has this handle.
    #[error("no shape with handle {handle:?}")]
    UnknownHandle {
        /// The handle.
        handle: String,
    },
    /// The store refused or failed (backpressure, a poisoned log, a failed store, SQLite).
    #[error(transparent)]
    Store(#[from] Error),
}

/// A shape to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShape {
    /// Unique handle.
    pub handle: String,
    /// The serialized definition.
    pub shape: Vec<u8>,
    /// Bytes equal for equal shapes.
    pub comparable: Vec<u8>,
    /// The shape's hash.
    pub hash: i64,
    /// The tables it reads.
    pub relations: Vec<Relation>,
}

/// The registry's [`Schema`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapeSchema;

impl Schema for ShapeSchema {
    type Op = ShapeOp;
    type Overlay = ShapeOverlay;
    const NAME: &'static str = "shapes";
    const VERSION: u32 = 1;

    fn create_tables(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(sql::CREATE_TABLES)
    }

    fn new_overlay(&self) -> ShapeOverlay {
        ShapeOverlay::default()
    }

    fn load(
        &self,
        overlay: &ShapeOverlay,
        connection: &rusqlite::Connection,
    ) -> rusqlite::Result<()> {
        sql::load_presence(connection, overlay)
    }

    fn kind(&self, op: &ShapeOp) -> u8 {
        op.kind()
    }

    fn encode(&self, op: &ShapeOp, out: &mut Vec<u8>) {
        op.encode(out);
    }

    fn decode(&self, kind: u8, payload: &[u8]) -> Result<ShapeOp, DecodeError> {
        ShapeOp::decode(kind, payload)
    }

    fn index(&self, overlay: &ShapeOverlay, op_key: u64, op: &ShapeOp) {
        overlay.index(op_key, op);
    }

    fn unindex(&self, overlay: &ShapeOverlay, op_key: u64, op: &ShapeOp) {
        overlay.unindex(op_key, op);
    }

    /// The handles on one thread, the comparables and relations on another.
    const REPLAY_INDEX_PARTS: usize = 2;

    fn index_replayed<'op>(
        &self,
        overlay: &ShapeOverlay,
        part: usize,
        ops: impl Iterator<Item = (u64, &'op ShapeOp)>,
    ) {
        overlay.index_replayed(part, ops);
    }

    fn finish_replay(&self, overlay: &ShapeOverlay) {
        overlay.finish_replay();
    }

    fn reserve_replayed(&self, overlay: &ShapeOverlay, ops: usize) {
        overlay.reserve_replayed(ops);
    }

    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: &[BatchOp<ShapeOp>],
    ) -> rusqlite::Result<()> {
        sql::apply(tx, batch)
    }
}

/// The shape registry over a [`Store`].
pub struct ShapeRegistry<St: Storage = FsStorage> {
    store: Store<ShapeSchema, St>,
    last_read: LastRead,
}

impl<St: Storage> std::fmt::Debug for ShapeRegistry<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapeRegistry")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl ShapeRegistry {
    /// Opens (or creates) the registry in `directory` (see [`Store::open`]).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open(
        directory: impl AsRef<Path>,
        config: StoreConfig,
    ) -> crate::Result<(Self, RecoveryReport)> {
        let (store, report) = Store::open(directory, ShapeSchema, config)?;
        Ok((Self::new(store), report))
    }
}

impl<St: Storage> ShapeRegistry<St> {
    /// The registry over an open store.
    #[must_use]
    pub fn new(store: Store<ShapeSchema, St>) -> Self {
        Self {
            store,
            last_read: LastRead::default(),
        }
    }

    /// The store underneath.
    #[must_use]
    pub fn store(&self) -> &Store<ShapeSchema, St> {
        &self.store
    }

    // ----- validation (inside the submit section: sees every submitted op) -----

    fn live_in(
        validation: &Validation<'_, ShapeSchema, St>,
        handle: &str,
    ) -> crate::Result<Option<Arc<Shape>>> {
        shape_as_of(
            validation.overlay(),
            handle,
            validation.view_op_key(),
            || validation.sqlite("read shape", |c| sql::shape(c, handle)),
        )
    }

    fn is_live_in(
        validation: &Validation<'_, ShapeSchema, St>,
        handle: &str,
    ) -> crate::Result<bool> {
        match validation
            .overlay()
            .resolve(handle, validation.view_op_key())
        {
            Resolved::Live(_) => Ok(true),
            Resolved::Gone => Ok(false),
            Resolved::Sqlite { .. } => {
                if !validation.overlay().presence.may_hold_handle(handle) {
                    return Ok(false);
                }
                validation.sqlite("read shape", |c| sql::has_handle(c, handle))
            }
        }
    }

    // ----- writes -----

    fn write(
        &self,
        wait: Wait,
        op: impl FnOnce(&Validation<'_, ShapeSchema, St>) -> Result<Accepted<ShapeOp>>,
    ) -> Result<u64> {
        let (op_key, ()) = self.store.submit(wait, |validation| {
            op(validation).map(|accepted| (accepted, ()))
        })?;
        Ok(op_key)
    }

    /// Adds a shape (snapshot not started). Durable per the store's sync policy when it
    /// returns; visible to every read from then on. Returns its op key.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateHandle`] / [`RegistryError::DuplicateComparable`] if a live
    /// shape (buffered or in SQLite) has the handle or comparable; [`RegistryError::Store`].
    pub fn add_shape(&self, shape: NewShape) -> Result<u64> {
        self.add_shape_with(shape, Wait::Block)
    }

    /// As [`ShapeRegistry::add_shape`], but fails at once with `Backpressure` when the buffer
    /// is full instead of waiting for room.
    ///
    /// # Errors
    /// As [`ShapeRegistry::add_shape`].
    pub fn try_add_shape(&self, shape: NewShape) -> Result<u64> {
        self.add_shape_with(shape, Wait::Never)
    }

    fn add_shape_with(&self, shape: NewShape, wait: Wait) -> Result<u64> {
        let handle = shape.handle.clone();
        let op_key = self.write(wait, |validation| {
            if Self::is_live_in(validation, &shape.handle)? {
                return Err(RegistryError::DuplicateHandle {
                    handle: shape.handle,
                });
            }
            let holder = match validation
                .overlay()
                .resolve_comparable(&shape.comparable, validation.view_op_key())
            {
                Resolved::Live(handle) => Some(handle),
                Resolved::Gone => None,
                Resolved::Sqlite { .. }
                    if !validation
                        .overlay()
                        .presence
                        .may_hold_comparable(&shape.comparable) =>
                {
                    None
                }
                Resolved::Sqlite { .. } => {
                    let holder = validation.sqlite("read comparable", |c| {
                        sql::handle_for_comparable(c, &shape.comparable)
                    })?;
                    // SQLite's holder may have been removed by a buffered op.
                    match holder {
                        Some(holder) if Self::is_live_in(validation, &holder)? => Some(holder),
                        _ => None,
                    }
                }
            };
            if let Some(existing) = holder {
                return Err(RegistryError::DuplicateComparable { existing });
            }
            Ok(Accepted {
                op: ShapeOp::Add(Arc::new(Shape {
                    handle: shape.handle,
                    shape: shape.shape,
                    comparable: shape.comparable,
                    hash: shape.hash,
                    relations: shape.relations,
                    snapshot: SnapshotState::NotStarted,
                })),
                live_count_after: validation.live_count() + 1,
            })
        })?;
        self.last_read.touch(&handle);
        Ok(op_key)
    }

    /// Removes a live shape; it disappears from every read at once.
    ///
    /// # Errors
    /// [`RegistryError::UnknownHandle`]; [`RegistryError::Store`].
    pub fn remove_shape(&self, handle: &str) -> Result<u64> {
        let op_key = self.write(Wait::Block, |validation| {
            let Some(shape) = Self::live_in(validation, handle)? else {
                return Err(RegistryError::UnknownHandle {
                    handle: handle.to_owned(),
                });
            };
            let mut oids: Vec<u32> = shape.relations.iter().map(|r| r.oid).collect();
            oids.sort_unstable();
            oids.dedup();
            Ok(Accepted {
                op: ShapeOp::Remove(Arc::new(Removal {
                    handle: shape.handle.clone(),
                    comparable: shape.comparable.clone(),
                    oids,
                })),
                live_count_after: validation.live_count().saturating_sub(1),
            })
        })?;
        self.last_read.forget(handle);
        Ok(op_key)
    }

    fn mark(&self, handle: &str, state: SnapshotState) -> Result<u64> {
        self.write(Wait::Block, |validation| {
            if !Self::is_live_in(validation, handle)? {
                return Err(RegistryError::UnknownHandle {
                    handle: handle.to_owned(),
                });
            }
            Ok(Accepted {
                op: ShapeOp::Mark {
                    handle: Arc::new(handle.to_owned()),
                    state,
                },
                live_count_after: validation.live_count(),
            })
        })
    }

    /// Records that the shape's snapshot started.
    ///
    /// # Errors
    /// [`RegistryError::UnknownHandle`]; [`RegistryError::Store`].
    pub fn mark_snapshot_started(&self, handle: &str) -> Result<u64> {
        self.mark(handle, SnapshotState::Started)
    }

    /// Records that the shape's snapshot completed.
    ///
    /// # Errors
    /// [`RegistryError::UnknownHandle`]; [`RegistryError::Store`].
    pub fn mark_snapshot_complete(&self, handle: &str) -> Result<u64> {
        self.mark(handle, SnapshotState::Complete)
    }

    /// Removes every shape (logged like every op: a crash never resurrects them).
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn reset(&self) -> Result<u64> {
        let op_key = self.write(Wait::Block, |_| {
            Ok(Accepted {
                op: ShapeOp::Reset,
                live_count_after: 0,
            })
        })?;
        self.last_read.clear();
        Ok(op_key)
    }

    /// The boot-time sweep: removes every shape whose snapshot never completed; returns their
    /// handles (in handle order) and how many shapes remain.
    ///
    /// # Errors
    /// [`RegistryError::Store`]. A shape removed concurrently by another writer is skipped.
    pub fn remove_incomplete_shapes(&self) -> Result<(Vec<String>, u64)> {
        let mut incomplete = Vec::new();
        for meta in self.shape_meta() {
            let (handle, _, state) = meta?;
            if state != SnapshotState::Complete {
                incomplete.push(handle);
            }
        }
        let mut removed = Vec::with_capacity(incomplete.len());
        for handle in incomplete {
            match self.remove_shape(&handle) {
                Ok(_) => removed.push(handle),
                Err(RegistryError::UnknownHandle { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok((removed, self.count_shapes()?))
    }

    // ----- reads (as of the visible op key) -----

    fn resolve(&self, handle: &str) -> Result<Option<Arc<Shape>>> {
        // Several overlay lookups, then SQLite: no op may leave the overlay in between.
        let _gate = self.store.hold_overlay();
        let view = self.store.visible_op_key();
        Ok(shape_as_of(self.store.overlay(), handle, view, || {
            self.store
                .read_sqlite("read shape", |c| sql::shape(c, handle))
        })?)
    }

    /// Hash and snapshot state of a live handle, without copying the shape from SQLite.
    fn resolve_meta(&self, handle: &str) -> Result<Option<(i64, SnapshotState)>> {
        // Several overlay lookups, then SQLite: no op may leave the overlay in between.
        let _gate = self.store.hold_overlay();
        let view = self.store.visible_op_key();
        match self.store.overlay().resolve(handle, view) {
            Resolved::Live(shape) => Ok(Some((shape.hash, shape.snapshot))),
            Resolved::Gone => Ok(None),
            Resolved::Sqlite { mark } => {
                let meta = self
                    .store
                    .read_sqlite("read shape", |c| sql::meta(c, handle))?;
                Ok(meta.map(|(hash, state)| (hash, mark.map_or(state, |mark| state.max(mark)))))
            }
        }
    }

    /// The live handle holding `comparable`.
    ///
    /// # Errors
    /// [`RegistryError::Store`] (a SQLite read failed).
    pub fn handle_for_shape(&self, comparable: &[u8]) -> Result<Option<String>> {
        // Several overlay lookups, then SQLite: no op may leave the overlay in between.
        let _gate = self.store.hold_overlay();
        let view = self.store.visible_op_key();
        let handle = match self.store.overlay().resolve_comparable(comparable, view) {
            Resolved::Live(handle) => Some(handle),
            Resolved::Gone => None,
            Resolved::Sqlite { .. } => {
                let holder = self.store.read_sqlite("read comparable", |c| {
                    sql::handle_for_comparable(c, comparable)
                })?;
                // No buffered op touches this comparable: a buffered remove or reset of
                // SQLite's holder would have left a version of it, so the holder is live.
                holder
            }
        };
        if let Some(handle) = &handle {
            self.last_read.touch(handle);
        }
        Ok(handle)
    }

    /// The live shape with `handle`: shared with the overlay while it is buffered (no copy).
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn shape_for_handle(&self, handle: &str) -> Result<Option<Arc<Shape>>> {
        let shape = self.resolve(handle)?;
        if shape.is_some() {
            self.last_read.touch(handle);
        }
        Ok(shape)
    }

    /// Whether `handle` is live.
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn has_handle(&self, handle: &str) -> Result<bool> {
        Ok(self.resolve_meta(handle)?.is_some())
    }

    /// Whether `handle` is live with this `hash`.
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn validate_handle(&self, handle: &str, hash: i64) -> Result<bool> {
        let valid = self
            .resolve_meta(handle)?
            .is_some_and(|(live_hash, _)| live_hash == hash);
        if valid {
            self.last_read.touch(handle);
        }
        Ok(valid)
    }

    /// Whether `handle` is live and its snapshot started (or completed).
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn snapshot_started(&self, handle: &str) -> Result<bool> {
        Ok(self
            .resolve_meta(handle)?
            .is_some_and(|(_, state)| state >= SnapshotState::Started))
    }

    /// Whether `handle` is live and its snapshot completed.
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn snapshot_complete(&self, handle: &str) -> Result<bool> {
        Ok(self
            .resolve_meta(handle)?
            .is_some_and(|(_, state)| state == SnapshotState::Complete))
    }

    /// Live handles reading any table in `oids`, sorted, each once — through the oid index
    /// of the overlay and of SQLite, never a scan.
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn handles_for_relations(&self, oids: &[u32]) -> Result<Vec<String>> {
        // The overlay is consulted again after SQLite: hold it, so that no op leaves it in
        // between (its SQLite row may predate the commit of a buffered removal).
        let _gate = self.store.hold_overlay();
        let view = self.store.visible_op_key();
        let mut candidates = Vec::new();
        for oid in oids {
            self.store
                .overlay()
                .handles_with_oid(*oid, view, &mut candidates);
        }
        if self.store.overlay().reset_at(view).is_none() {
            self.store.read_sqlite("read relations", |c| {
                for oid in oids {
                    sql::handles_with_oid(c, *oid, &mut candidates)?;
                }
                Ok(())
            })?;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let overlay = self.store.overlay();
        let reset = overlay.reset_at(view);
        let mut handles = Vec::with_capacity(candidates.len());
        for handle in candidates {
            let reads_one = match overlay.resolve_after(&handle, view, reset) {
                Resolved::Live(shape) => shape.relations.iter().any(|r| oids.contains(&r.oid)),
                Resolved::Gone => false,
                // Only SQLite knows the shape, and its oid index named it: its row there
                // reads one of the tables.
                Resolved::Sqlite { .. } => true,
            };
            if reads_one {
                handles.push(handle);
            }
        }
        Ok(handles)
    }

    /// Every live shape, ordered by handle, each once: the overlay merged with SQLite page by
    /// page, buffered removals and resets honoured. It is not a snapshot: every shape live
    /// when it started (its first `next`) and not touched since is listed, but an op that
    /// becomes visible while it runs may or may not show. The iterator holds the overlay
    /// only inside each `next` (see [`Store::hold_overlay`]), so it may be kept while the
    /// same thread writes or flushes.
    pub fn list_shapes(&self) -> ShapeIter<'_, St> {
        ShapeIter {
            registry: self,
            epoch: None,
            view: 0,
            reset: None,
            overlay_next: None,
            cursor: None,
            overlay_done: false,
            page: std::collections::VecDeque::new(),
            page_after: None,
            sqlite_done: false,
            finished: false,
        }
    }

    /// `(handle, hash, snapshot state)` of every live shape, ordered by handle.
    pub fn shape_meta(&self) -> impl Iterator<Item = Result<(String, i64, SnapshotState)>> + '_ {
        self.list_shapes()
            .map(|shape| shape.map(|shape| (shape.handle, shape.hash, shape.snapshot)))
    }

    /// How many shapes are live. O(log n): a maintained count, not a scan.
    ///
    /// # Errors
    /// [`RegistryError::Store`].
    pub fn count_shapes(&self) -> Result<u64> {
        Ok(self.store.live_count()?)
    }

    /// The `n` live handles read least recently (oldest first) and how long ago, among the
    /// handles added or read by this process (last-read times are kept in memory only).
    #[must_use]
    pub fn least_recently_used(&self, n: usize) -> Vec<(String, Duration)> {
        self.last_read.least_recent(n)
    }

    /// Waits until every op submitted before the call is in SQLite.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub fn flush(&self) -> Result<()> {
        Ok(self.store.flush()?)
    }

    /// The store's counters.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Closes the store (see [`Store::close`]).
    ///
    /// # Errors
    /// As [`Store::close`].
    pub fn close(&self) -> Result<()> {
        Ok(self.store.close()?)
    }
}

/// The live shape `handle` as of `view`: the overlay's verdict, else SQLite through
/// `read_sqlite` — skipped when the presence filter proves SQLite never held the handle —
/// with buffered snapshot marks applied. Shared by validation and reads.
fn shape_as_of(
    overlay: &ShapeOverlay,
    handle: &str,
    view: u64,
    read_sqlite: impl FnOnce() -> crate::Result<Option<Shape>>,
) -> crate::Result<Option<Arc<Shape>>> {
    match overlay.resolve(handle, view) {
        Resolved::Live(shape) => Ok(Some(shape)),
        Resolved::Gone => Ok(None),
        Resolved::Sqlite { .. } if !overlay.presence.may_hold_handle(handle) => Ok(None),
        Resolved::Sqlite { mark } => Ok(read_sqlite()?.map(|mut shape| {
            if let Some(mark) = mark {
                shape.snapshot = shape.snapshot.max(mark);
            }
            Arc::new(shape)
        })),
    }
}

/// The iterator of [`ShapeRegistry::list_shapes`].
pub struct ShapeIter<'a, St: Storage> {
    registry: &'a ShapeRegistry<St>,
    /// The overlay epoch the merge state below was read under; `None` before the first step.
    epoch: Option<u64>,
    view: u64,
    reset: Option<u64>,
    /// The next handle with a buffered add.
    overlay_next: Option<String>,
    /// The last handle the merge passed.
    cursor: Option<String>,
    overlay_done: bool,
    page: std::collections::VecDeque<Shape>,
    page_after: Option<String>,
    sqlite_done: bool,
    /// Ended (listed everything, or a SQLite read failed): every later step returns `None`.
    finished: bool,
}

/// Rows fetched from SQLite per page.
const PAGE_ROWS: usize = 256;

impl<St: Storage> ShapeIter<'_, St> {
    /// Starts the merge again just past the cursor, as of the ops visible now: called (under
    /// the overlay gate) on the first step and whenever the flusher dropped ops from the
    /// overlay since the last step, which may have moved shapes from the overlay into SQLite
    /// rows past the page read before.
    fn restart(&mut self, epoch: u64) {
        let store = &self.registry.store;
        self.epoch = Some(epoch);
        self.view = store.visible_op_key();
        self.reset = store.overlay().reset_at(self.view);
        self.overlay_next = None;
        self.overlay_done = false;
        self.page.clear();
        self.page_after.clone_from(&self.cursor);
        self.sqlite_done = self.reset.is_some();
    }

    fn fill_overlay(&mut self) {
        if self.overlay_next.is_some() || self.overlay_done {
            return;
        }
        self.overlay_next = self
            .registry
            .store
            .overlay()
            .next_added_handle(self.cursor.as_deref());
        self.overlay_done = self.overlay_next.is_none();
    }

    fn fill_page(&mut self) -> Result<()> {
        if !self.page.is_empty() || self.sqlite_done {
            return Ok(());
        }
        let after = self.page_after.clone();
        let rows = self
            .registry
            .store
            .read_sqlite("list shapes", |c| sql::page(c, after.as_deref(), PAGE_ROWS))?;
        if rows.len() < PAGE_ROWS {
            self.sqlite_done = true;
        }
        if let Some(last) = rows.last() {
            self.page_after = Some(last.handle.clone());
        }
        self.page.extend(rows);
        Ok(())
    }
}

impl<St: Storage> Iterator for ShapeIter<'_, St> {
    type Item = Result<Shape>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        // Several overlay lookups and SQLite pages: no op may leave the overlay in between.
        let _gate = self.registry.store.hold_overlay();
        let epoch = self.registry.store.overlay_epoch();
        if self.epoch != Some(epoch) {
            self.restart(epoch);
        }
        while !self.finished {
            self.fill_overlay();
            if let Err(error) = self.fill_page() {
                self.finished = true;
                return Some(Err(error));
            }
            // The smallest handle at the head of either stream; both advance past it.
            let handle = match (&self.overlay_next, self.page.front()) {
                (None, None) => {
                    self.finished = true;
                    return None;
                }
                (Some(handle), None) => handle.clone(),
                (None, Some(row)) => row.handle.clone(),
                (Some(handle), Some(row)) => handle.min(&row.handle).clone(),
            };
            let row = match self.page.front() {
                Some(row) if row.handle == handle => self.page.pop_front(),
                _ => None,
            };
            if self.overlay_next.as_deref() == Some(handle.as_str()) {
                self.overlay_next = None;
            }
            let resolved = self
                .registry
                .store
                .overlay()
                .resolve_after(&handle, self.view, self.reset);
            self.cursor = Some(handle);
            match (resolved, row) {
                (Resolved::Live(shape), _) => return Some(Ok(Arc::unwrap_or_clone(shape))),
                (Resolved::Gone, _) | (Resolved::Sqlite { .. }, None) => {}
                (Resolved::Sqlite { mark }, Some(mut shape)) => {
                    if let Some(mark) = mark {
                        shape.snapshot = shape.snapshot.max(mark);
                    }
                    return Some(Ok(shape));
                }
            }
        }
        None
    }
}
