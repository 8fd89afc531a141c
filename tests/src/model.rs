//! A plain in-memory reference model of the shape registry, and the oracle that checks a real
//! [`ShapeRegistry`] against it op by op.
//!
//! [`Model`] is the registry's meaning with nothing clever in it: a `BTreeMap` of live shapes
//! by handle, the same refusal rules ([`Refusal`]), the same reads, and the op key each
//! accepted write is logged under. [`check_step`] applies one [`Op`] to both, compares the
//! outcomes, then compares every read ([`check_reads`]) for every handle, comparable and oid
//! the model has ever seen. [`Harness`] owns a store directory and adds the steps that need
//! ownership of the registry ([`Op::Reopen`]). The property test `shapes_model`, the crash
//! model and the `store_ops` fuzz target share this code: ops come from a proptest strategy
//! ([`op_strategy`]) or from raw bytes ([`decode_ops`]).
//!
//! ```
//! use walbuf_tests::model::{Harness, Op, shape};
//!
//! let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
//! let mut harness = Harness::new(dir.path(), Harness::default_config())?;
//! harness.step(&Op::Add(shape("h1", b"c1", 7, &[1, 2], 0)))?;
//! harness.step(&Op::Add(shape("h2", b"c1", 7, &[], 0)))?; // refused: duplicate comparable
//! harness.step(&Op::Flush)?;
//! harness.step(&Op::Remove("h1".into()))?;
//! harness.step(&Op::Reopen)?;
//! assert_eq!(harness.model().count(), 0);
//! # Ok::<(), String>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use walbuf::shapes::{NewShape, RegistryError, Relation, Shape, ShapeRegistry, SnapshotState};
use walbuf::storage::Storage;
use walbuf::store::StoreConfig;
use walbuf::{SyncPolicy, log};

/// Why the model refuses a write: the registry's typed refusals, compared field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A live shape has the handle.
    DuplicateHandle {
        /// The handle.
        handle: String,
    },
    /// A live shape has the comparable.
    DuplicateComparable {
        /// The live shape holding it.
        existing: String,
    },
    /// No live shape has the handle.
    UnknownHandle {
        /// The handle.
        handle: String,
    },
}

impl Refusal {
    /// The refusal a registry error stands for, or `None` for any other error (a store
    /// failure: never expected by the model).
    #[must_use]
    pub fn of(error: &RegistryError) -> Option<Self> {
        match error {
            RegistryError::DuplicateHandle { handle } => Some(Self::DuplicateHandle {
                handle: handle.clone(),
            }),
            RegistryError::DuplicateComparable { existing } => Some(Self::DuplicateComparable {
                existing: existing.clone(),
            }),
            RegistryError::UnknownHandle { handle } => Some(Self::UnknownHandle {
                handle: handle.clone(),
            }),
            _ => None,
        }
    }
}

/// An accepted write as the log holds it, under the op key it was given: replaying the first
/// `p` of them gives the state after op key `p` (see [`Model::rewind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// An add.
    Add(NewShape),
    /// A remove of a live handle.
    Remove(String),
    /// A snapshot mark of a live handle.
    Mark(String, SnapshotState),
    /// A reset.
    Reset,
}

/// The shape registry's meaning: live shapes by handle, the comparable index, the op keys of
/// accepted writes (and the writes themselves, so that a crash that loses a suffix can rewind
/// the model), and everything ever mentioned (so that reads can be compared for handles,
/// comparables and oids that are no longer live).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    shapes: BTreeMap<String, Shape>,
    comparables: BTreeMap<Vec<u8>, String>,
    last_op_key: u64,
    /// Every accepted write: entry `i` holds op key `i + 1`.
    logged: Vec<Logged>,
    seen_handles: BTreeSet<String>,
    seen_comparables: BTreeSet<Vec<u8>>,
    seen_oids: BTreeSet<u32>,
    seen_hashes: BTreeSet<i64>,
}

impl Model {
    /// An empty registry whose next op key is 1 (a fresh store).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&mut self, write: Logged) -> u64 {
        self.logged.push(write);
        self.last_op_key += 1;
        self.last_op_key
    }

    /// Every accepted write so far, in op-key order (entry `i` holds op key `i + 1`).
    #[must_use]
    pub fn logged(&self) -> &[Logged] {
        &self.logged
    }

    /// Rewinds the model to the state after the first `op_keys` accepted writes (what a
    /// crash that lost the later ones leaves), by replaying them onto an empty registry. Every
    /// handle, comparable, oid and hash seen so far stays seen (their reads keep being
    /// compared).
    ///
    /// # Errors
    /// `op_keys` is more than the writes accepted so far.
    pub fn rewind(&mut self, op_keys: u64) -> Result<(), String> {
        let kept = usize::try_from(op_keys).map_err(|_| "op key out of range".to_owned())?;
        if kept > self.logged.len() {
            return Err(format!(
                "cannot rewind to op key {op_keys}: only {} writes were accepted",
                self.logged.len()
            ));
        }
        let mut replayed = Self::new();
        for write in &self.logged[..kept] {
            let outcome = match write {
                Logged::Add(shape) => replayed.add(shape),
                Logged::Remove(handle) => replayed.remove(handle),
                Logged::Mark(handle, state) => replayed.mark(handle, *state),
                Logged::Reset => Ok(replayed.reset()),
            };
            if let Err(refusal) = outcome {
                return Err(format!("replaying {write:?} was refused: {refusal:?}"));
            }
        }
        replayed.seen_handles.append(&mut self.seen_handles);
        replayed.seen_comparables.append(&mut self.seen_comparables);
        replayed.seen_oids.append(&mut self.seen_oids);
        replayed.seen_hashes.append(&mut self.seen_hashes);
        *self = replayed;
        Ok(())
    }

    /// Notes a handle as seen (its reads are compared from now on) without any write.
    pub fn see_handle(&mut self, handle: &str) {
        self.seen_handles.insert(handle.to_owned());
    }

    fn see_shape(&mut self, shape: &NewShape) {
        self.seen_handles.insert(shape.handle.clone());
        self.seen_comparables.insert(shape.comparable.clone());
        self.seen_hashes.insert(shape.hash);
        self.seen_oids
            .extend(shape.relations.iter().map(|relation| relation.oid));
    }

    // ----- writes: each returns the op key it is logged under, or the refusal -----

    /// Adds a shape (snapshot not started).
    ///
    /// # Errors
    /// [`Refusal::DuplicateHandle`] before [`Refusal::DuplicateComparable`].
    pub fn add(&mut self, shape: &NewShape) -> Result<u64, Refusal> {
        self.see_shape(shape);
        if self.shapes.contains_key(&shape.handle) {
            return Err(Refusal::DuplicateHandle {
                handle: shape.handle.clone(),
            });
        }
        if let Some(existing) = self.comparables.get(&shape.comparable) {
            return Err(Refusal::DuplicateComparable {
                existing: existing.clone(),
            });
        }
        self.comparables
            .insert(shape.comparable.clone(), shape.handle.clone());
        self.shapes.insert(
            shape.handle.clone(),
            Shape {
                handle: shape.handle.clone(),
                shape: shape.shape.clone(),
                comparable: shape.comparable.clone(),
                hash: shape.hash,
                relations: shape.relations.clone(),
                snapshot: SnapshotState::NotStarted,
            },
        );
        Ok(self.log(Logged::Add(shape.clone())))
    }

    /// Removes a live shape.
    ///
    /// # Errors
    /// [`Refusal::UnknownHandle`].
    pub fn remove(&mut self, handle: &str) -> Result<u64, Refusal> {
        self.see_handle(handle);
        let Some(shape) = self.shapes.remove(handle) else {
            return Err(Refusal::UnknownHandle {
                handle: handle.to_owned(),
            });
        };
        self.comparables.remove(&shape.comparable);
        Ok(self.log(Logged::Remove(handle.to_owned())))
    }

    /// Moves a live shape's snapshot state forward to `state` (never back).
    ///
    /// # Errors
    /// [`Refusal::UnknownHandle`].
    pub fn mark(&mut self, handle: &str, state: SnapshotState) -> Result<u64, Refusal> {
        self.see_handle(handle);
        let Some(shape) = self.shapes.get_mut(handle) else {
            return Err(Refusal::UnknownHandle {
                handle: handle.to_owned(),
            });
        };
        shape.snapshot = shape.snapshot.max(state);
        Ok(self.log(Logged::Mark(handle.to_owned(), state)))
    }

    /// Removes every shape (always logged, even on an empty registry).
    pub fn reset(&mut self) -> u64 {
        self.shapes.clear();
        self.comparables.clear();
        self.log(Logged::Reset)
    }

    /// The boot sweep: removes every shape whose snapshot is not complete, one logged remove
    /// each in handle order; returns the removed handles and how many remain.
    pub fn remove_incomplete(&mut self) -> (Vec<String>, u64) {
        let incomplete: Vec<String> = self
            .shapes
            .values()
            .filter(|shape| shape.snapshot != SnapshotState::Complete)
            .map(|shape| shape.handle.clone())
            .collect();
        for handle in &incomplete {
            // Cannot be refused: the handle is live.
            let _ = self.remove(handle);
        }
        (incomplete, self.count())
    }

    // ----- reads -----

    /// The live handle holding `comparable`.
    #[must_use]
    pub fn handle_for_shape(&self, comparable: &[u8]) -> Option<String> {
        self.comparables.get(comparable).cloned()
    }

    /// The live shape with `handle`.
    #[must_use]
    pub fn shape_for_handle(&self, handle: &str) -> Option<Shape> {
        self.shapes.get(handle).cloned()
    }

    /// Whether `handle` is live.
    #[must_use]
    pub fn has_handle(&self, handle: &str) -> bool {
        self.shapes.contains_key(handle)
    }

    /// Whether `handle` is live with `hash`.
    #[must_use]
    pub fn validate_handle(&self, handle: &str, hash: i64) -> bool {
        self.shapes
            .get(handle)
            .is_some_and(|shape| shape.hash == hash)
    }

    /// Whether `handle` is live and its snapshot started (or completed).
    #[must_use]
    pub fn snapshot_started(&self, handle: &str) -> bool {
        self.shapes
            .get(handle)
            .is_some_and(|shape| shape.snapshot >= SnapshotState::Started)
    }

    /// Whether `handle` is live and its snapshot completed.
    #[must_use]
    pub fn snapshot_complete(&self, handle: &str) -> bool {
        self.shapes
            .get(handle)
            .is_some_and(|shape| shape.snapshot == SnapshotState::Complete)
    }

    /// Live handles reading any table in `oids`, sorted, each once.
    #[must_use]
    pub fn handles_for_relations(&self, oids: &[u32]) -> Vec<String> {
        self.shapes
            .values()
            .filter(|shape| shape.relations.iter().any(|r| oids.contains(&r.oid)))
            .map(|shape| shape.handle.clone())
            .collect()
    }

    /// Every live shape, ordered by handle.
    #[must_use]
    pub fn list(&self) -> Vec<Shape> {
        self.shapes.values().cloned().collect()
    }

    /// `(handle, hash, snapshot state)` of every live shape, ordered by handle.
    #[must_use]
    pub fn shape_meta(&self) -> Vec<(String, i64, SnapshotState)> {
        self.shapes
            .values()
            .map(|shape| (shape.handle.clone(), shape.hash, shape.snapshot))
            .collect()
    }

    /// How many shapes are live.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.shapes.len() as u64
    }

    /// The op key of the last accepted write (0 before any).
    #[must_use]
    pub fn last_op_key(&self) -> u64 {
        self.last_op_key
    }

    /// Live handles, in order.
    pub fn live_handles(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }

    /// Every handle ever mentioned.
    #[must_use]
    pub fn seen_handles(&self) -> &BTreeSet<String> {
        &self.seen_handles
    }

    /// Every comparable ever mentioned in an add.
    #[must_use]
    pub fn seen_comparables(&self) -> &BTreeSet<Vec<u8>> {
        &self.seen_comparables
    }

    /// Every oid ever mentioned in an add.
    #[must_use]
    pub fn seen_oids(&self) -> &BTreeSet<u32> {
        &self.seen_oids
    }

    /// Every hash ever mentioned in an add.
    #[must_use]
    pub fn seen_hashes(&self) -> &BTreeSet<i64> {
        &self.seen_hashes
    }
}

/// One step of a generated sequence: a registry write, or a store event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// [`ShapeRegistry::add_shape`].
    Add(NewShape),
    /// [`ShapeRegistry::try_add_shape`] (the same meaning while the buffer has room).
    TryAdd(NewShape),
    /// [`ShapeRegistry::remove_shape`].
    Remove(String),
    /// [`ShapeRegistry::mark_snapshot_started`].
    MarkStarted(String),
    /// [`ShapeRegistry::mark_snapshot_complete`].
    MarkComplete(String),
    /// [`ShapeRegistry::reset`].
    Reset,
    /// [`ShapeRegistry::remove_incomplete_shapes`].
    RemoveIncomplete,
    /// [`ShapeRegistry::flush`], then SQLite itself is compared with the model.
    Flush,
    /// Close the store and open it again (only through [`Harness::step`]).
    Reopen,
}

/// A shape for tests: relations `oids` (schema `public`, table named after the oid) and a
/// definition that differs per `version`.
#[must_use]
pub fn shape(handle: &str, comparable: &[u8], hash: i64, oids: &[u32], version: u8) -> NewShape {
    NewShape {
        handle: handle.to_owned(),
        shape: format!("definition {version} of {handle}").into_bytes(),
        comparable: comparable.to_vec(),
        hash,
        relations: oids
            .iter()
            .map(|oid| Relation {
                oid: *oid,
                schema: if oid % 2 == 0 { "public" } else { "app" }.into(),
                table: format!("tabla_ñ{oid}").into(),
            })
            .collect(),
    }
}

fn mismatch<T: std::fmt::Debug>(what: &str, registry: &T, model: &T) -> String {
    format!("{what}: registry {registry:?}, model {model:?}")
}

/// Compares a write's outcome: the same op key, or the same refusal.
fn compare_write(
    what: &str,
    registry: Result<u64, RegistryError>,
    model: Result<u64, Refusal>,
) -> Result<(), String> {
    let registry = match registry {
        Ok(op_key) => Ok(op_key),
        Err(error) => match Refusal::of(&error) {
            Some(refusal) => Err(refusal),
            None => return Err(format!("{what}: unexpected store error: {error}")),
        },
    };
    if registry == model {
        Ok(())
    } else {
        Err(mismatch(what, &registry, &model))
    }
}

/// Applies `op` to `registry` and `model`, compares the outcomes (op key or refusal), the
/// store's last op key, and then every read ([`check_reads`]). After [`Op::Flush`] it also
/// checks that nothing is pending and compares SQLite's tables ([`check_sqlite`]).
///
/// # Errors
/// The first disagreement, described; [`Op::Reopen`] is refused (it needs ownership of the
/// registry: use [`Harness::step`]).
pub fn check_step<St: Storage>(
    registry: &ShapeRegistry<St>,
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    apply(registry, model, op).map_err(|problem| format!("after {op:?}: {problem}"))?;
    check_reads(registry, model).map_err(|problem| format!("after {op:?}: {problem}"))
}

fn apply<St: Storage>(
    registry: &ShapeRegistry<St>,
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    match op {
        Op::Add(new) => compare_write("add", registry.add_shape(new.clone()), model.add(new))?,
        Op::TryAdd(new) => compare_write(
            "try_add",
            registry.try_add_shape(new.clone()),
            model.add(new),
        )?,
        Op::Remove(handle) => {
            compare_write(
                "remove",
                registry.remove_shape(handle),
                model.remove(handle),
            )?;
        }
        Op::MarkStarted(handle) => compare_write(
            "mark_snapshot_started",
            registry.mark_snapshot_started(handle),
            model.mark(handle, SnapshotState::Started),
        )?,
        Op::MarkComplete(handle) => compare_write(
            "mark_snapshot_complete",
            registry.mark_snapshot_complete(handle),
            model.mark(handle, SnapshotState::Complete),
        )?,
        Op::Reset => compare_write("reset", registry.reset(), Ok(model.reset()))?,
        Op::RemoveIncomplete => {
            let got = registry
                .remove_incomplete_shapes()
                .map_err(|error| format!("remove_incomplete_shapes: {error}"))?;
            let want = model.remove_incomplete();
            if got != want {
                return Err(mismatch("remove_incomplete_shapes", &got, &want));
            }
        }
        Op::Flush => {
            registry
                .flush()
                .map_err(|error| format!("flush: {error}"))?;
            let stats = registry.stats();
            if stats.pending_ops != 0 || stats.pending_bytes != 0 {
                return Err(format!(
                    "flush returned with {} ops ({} bytes) still buffered",
                    stats.pending_ops, stats.pending_bytes
                ));
            }
            if stats.applied_op_key != model.last_op_key() {
                return Err(mismatch(
                    "applied op key after flush",
                    &stats.applied_op_key,
                    &model.last_op_key(),
                ));
            }
            check_sqlite(registry, model)?;
        }
        Op::Reopen => {
            return Err(
                "Op::Reopen needs ownership of the registry: run it through Harness::step".into(),
            );
        }
    }
    let last_op_key = registry.stats().last_op_key;
    if last_op_key != model.last_op_key() {
        return Err(mismatch(
            "last op key (ops logged)",
            &last_op_key,
            &model.last_op_key(),
        ));
    }
    Ok(())
}

/// Compares every read of `registry` with `model`: per seen handle (and one never seen)
/// `shape_for_handle`, `has_handle`, `validate_handle` with every seen hash, and both
/// snapshot reads; `handle_for_shape` per seen comparable (and one never seen);
/// `handles_for_relations` for no oid, each seen oid, all of them and an unknown one;
/// `list_shapes`, `shape_meta`, `count_shapes`; and that `least_recently_used` names only
/// live handles.
///
/// # Errors
/// The first disagreement, described.
pub fn check_reads<St: Storage>(registry: &ShapeRegistry<St>, model: &Model) -> Result<(), String> {
    let read = |what: &str, error: RegistryError| format!("{what} failed: {error}");
    // First, before the reads below touch every live handle.
    for (handle, _) in registry.least_recently_used(usize::MAX) {
        if !model.has_handle(&handle) {
            return Err(format!(
                "least_recently_used names {handle:?}, which is not live"
            ));
        }
    }
    let unseen = "never-seen-handle".to_owned();
    for handle in model.seen_handles().iter().chain([&unseen]) {
        let got = registry
            .shape_for_handle(handle)
            .map_err(|e| read("shape_for_handle", e))?
            .map(std::sync::Arc::unwrap_or_clone);
        let want = model.shape_for_handle(handle);
        if got != want {
            return Err(mismatch(
                &format!("shape_for_handle({handle:?})"),
                &got,
                &want,
            ));
        }
        let got = registry
            .has_handle(handle)
            .map_err(|e| read("has_handle", e))?;
        if got != model.has_handle(handle) {
            return Err(mismatch(
                &format!("has_handle({handle:?})"),
                &got,
                &model.has_handle(handle),
            ));
        }
        for hash in model.seen_hashes().iter().chain([&i64::MIN]) {
            let got = registry
                .validate_handle(handle, *hash)
                .map_err(|e| read("validate_handle", e))?;
            let want = model.validate_handle(handle, *hash);
            if got != want {
                return Err(mismatch(
                    &format!("validate_handle({handle:?}, {hash})"),
                    &got,
                    &want,
                ));
            }
        }
        let got = registry
            .snapshot_started(handle)
            .map_err(|e| read("snapshot_started", e))?;
        if got != model.snapshot_started(handle) {
            return Err(mismatch(
                &format!("snapshot_started({handle:?})"),
                &got,
                &model.snapshot_started(handle),
            ));
        }
        let got = registry
            .snapshot_complete(handle)
            .map_err(|e| read("snapshot_complete", e))?;
        if got != model.snapshot_complete(handle) {
            return Err(mismatch(
                &format!("snapshot_complete({handle:?})"),
                &got,
                &model.snapshot_complete(handle),
            ));
        }
    }
    let unseen = b"never-seen-comparable".to_vec();
    for comparable in model.seen_comparables().iter().chain([&unseen]) {
        let got = registry
            .handle_for_shape(comparable)
            .map_err(|e| read("handle_for_shape", e))?;
        let want = model.handle_for_shape(comparable);
        if got != want {
            return Err(mismatch(
                &format!("handle_for_shape({comparable:?})"),
                &got,
                &want,
            ));
        }
    }
    let all: Vec<u32> = model.seen_oids().iter().copied().collect();
    let mut queries: Vec<Vec<u32>> = vec![Vec::new(), all.clone(), vec![u32::MAX]];
    queries.extend(all.iter().map(|oid| vec![*oid]));
    if let [first, .., last] = all.as_slice() {
        // Repeated and unsorted.
        queries.push(vec![*last, *first, *last]);
    }
    for oids in &queries {
        let got = registry
            .handles_for_relations(oids)
            .map_err(|e| read("handles_for_relations", e))?;
        let want = model.handles_for_relations(oids);
        if got != want {
            return Err(mismatch(
                &format!("handles_for_relations({oids:?})"),
                &got,
                &want,
            ));
        }
    }
    let got: Vec<Shape> = registry
        .list_shapes()
        .collect::<Result<_, _>>()
        .map_err(|e| read("list_shapes", e))?;
    let want = model.list();
    if got != want {
        return Err(mismatch("list_shapes", &got, &want));
    }
    let got: Vec<(String, i64, SnapshotState)> = registry
        .shape_meta()
        .collect::<Result<_, _>>()
        .map_err(|e| read("shape_meta", e))?;
    let want = model.shape_meta();
    if got != want {
        return Err(mismatch("shape_meta", &got, &want));
    }
    let got = registry
        .count_shapes()
        .map_err(|e| read("count_shapes", e))?;
    if got != model.count() {
        return Err(mismatch("count_shapes", &got, &model.count()));
    }
    Ok(())
}

/// Compares SQLite itself with `model`, for a registry with nothing buffered (after a
/// flush): [`check_sqlite_rows`], and the applied op key is the model's last op key.
///
/// # Errors
/// The first disagreement, described.
pub fn check_sqlite<St: Storage>(
    registry: &ShapeRegistry<St>,
    model: &Model,
) -> Result<(), String> {
    check_sqlite_rows(registry, model)?;
    let (_, applied_op_key) = read_meta(registry)?;
    if applied_op_key != model.last_op_key() {
        return Err(mismatch(
            "SQLite walbuf_meta applied_op_key",
            &applied_op_key,
            &model.last_op_key(),
        ));
    }
    Ok(())
}

/// Compares SQLite's rows with `model`'s live shapes, for a registry with nothing buffered:
/// the `shapes` rows, the `relations` rows (one per distinct oid of each live shape), and the
/// live count in `walbuf_meta`. Op keys are not compared (for runs whose writers
/// interleaved, where the model's keys are not the store's).
///
/// # Errors
/// The first disagreement, described.
pub fn check_sqlite_rows<St: Storage>(
    registry: &ShapeRegistry<St>,
    model: &Model,
) -> Result<(), String> {
    type Row = (String, Vec<u8>, i64, u8, Vec<u8>);
    let rows: Vec<Row> =
        registry
            .store()
            .read_sqlite("test: read shapes", |connection| {
                connection
                .prepare(
                    "SELECT handle, comparable, hash, snapshot, shape FROM shapes ORDER BY handle",
                )?
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                })?
                .collect()
            })
            .map_err(|error| format!("reading SQLite shapes: {error}"))?;
    let want: Vec<Row> = model
        .list()
        .into_iter()
        .map(|shape| {
            (
                shape.handle,
                shape.comparable,
                shape.hash,
                shape.snapshot.code(),
                shape.shape,
            )
        })
        .collect();
    if rows != want {
        return Err(mismatch("SQLite shapes rows", &rows, &want));
    }
    let relations: Vec<(u32, String)> = registry
        .store()
        .read_sqlite("test: read relations", |connection| {
            connection
                .prepare("SELECT oid, handle FROM relations ORDER BY oid, handle")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(|error| format!("reading SQLite relations: {error}"))?;
    let want: BTreeSet<(u32, String)> = model
        .list()
        .into_iter()
        .flat_map(|shape| {
            shape
                .relations
                .iter()
                .map(|relation| (relation.oid, shape.handle.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<(u32, String)> = want.into_iter().collect();
    if relations != want {
        return Err(mismatch("SQLite relations rows", &relations, &want));
    }
    let (live_count, _) = read_meta(registry)?;
    if live_count != model.count() {
        return Err(mismatch(
            "SQLite walbuf_meta live_count",
            &live_count,
            &model.count(),
        ));
    }
    Ok(())
}

/// `(live_count, applied_op_key)` as SQLite's `walbuf_meta` holds them.
///
/// # Errors
/// The SQLite read failed.
pub fn read_meta<St: Storage>(registry: &ShapeRegistry<St>) -> Result<(u64, u64), String> {
    registry
        .store()
        .read_sqlite("test: read walbuf_meta", |connection| {
            let get = |name: &str| {
                connection.query_row(
                    "SELECT value FROM walbuf_meta WHERE name = ?1",
                    [name],
                    |row| row.get::<_, i64>(0),
                )
            };
            Ok((get("live_count")?, get("applied_op_key")?))
        })
        .map(|(count, key)| (count.cast_unsigned(), key.cast_unsigned()))
        .map_err(|error| format!("reading walbuf_meta: {error}"))
}

/// A registry in a directory of its own, with its model: runs every [`Op`], including
/// [`Op::Reopen`].
#[derive(Debug)]
pub struct Harness {
    directory: PathBuf,
    config: StoreConfig,
    registry: Option<ShapeRegistry>,
    model: Model,
}

impl Harness {
    /// A configuration for model runs: 4 KiB segments (so the log rotates and retires), no
    /// sync (fast), and flushes only when asked or when `batch_ops_max` ops are pending.
    #[must_use]
    pub fn default_config() -> StoreConfig {
        Self::config(SyncPolicy::None, 5_000)
    }

    /// [`Harness::default_config`] with `policy` and `batch_ops_max`: a small batch makes
    /// the flusher run in the background while ops and reads go on.
    #[must_use]
    pub fn config(policy: SyncPolicy, batch_ops_max: usize) -> StoreConfig {
        StoreConfig {
            log: log::Config {
                // The smallest segments: a few dozen ops each, so that runs rotate, retire
                // segments below the applied key, and replay across segments on reopen.
                segment_size_bytes: 4096,
                max_record_bytes: 2048,
                sync_policy: policy,
                ..log::Config::default()
            },
            batch_ops_max,
            flush_interval_ms: 3_600_000,
            buffer_ops_max: 1 << 20,
            ..StoreConfig::default()
        }
    }

    /// Opens a fresh registry in `directory` (which must hold no store yet).
    ///
    /// # Errors
    /// The open failed, or the fresh store is not empty.
    pub fn new(directory: &Path, config: StoreConfig) -> Result<Self, String> {
        let (registry, report) = ShapeRegistry::open(directory, config.clone())
            .map_err(|error| format!("open: {error}"))?;
        if report.next_op_key != 1 {
            return Err(format!(
                "a fresh store starts at op key {}",
                report.next_op_key
            ));
        }
        let harness = Self {
            directory: directory.to_path_buf(),
            config,
            registry: Some(registry),
            model: Model::new(),
        };
        check_reads(harness.registry(), &harness.model)?;
        Ok(harness)
    }

    /// The open registry.
    ///
    /// # Panics
    /// Never outside [`Harness::reopen`].
    #[must_use]
    pub fn registry(&self) -> &ShapeRegistry {
        self.registry
            .as_ref()
            .expect("the harness holds an open registry")
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs one step ([`check_step`], or [`Harness::reopen`] for [`Op::Reopen`]).
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Reopen => self.reopen(),
            op => {
                let registry = self
                    .registry
                    .as_ref()
                    .ok_or("the harness has no open registry")?;
                check_step(registry, &mut self.model, op)
            }
        }
    }

    /// Closes the registry and opens the directory again: the reopened store continues the
    /// op keys, has every acknowledged op (applied or replayed), and every read agrees with
    /// the model.
    ///
    /// # Errors
    /// The first problem, described.
    pub fn reopen(&mut self) -> Result<(), String> {
        if let Some(registry) = self.registry.take() {
            registry
                .close()
                .map_err(|error| format!("close: {error}"))?;
        }
        let (registry, report) = ShapeRegistry::open(&self.directory, self.config.clone())
            .map_err(|error| format!("reopen: {error}"))?;
        let registry = self.registry.insert(registry);
        let last = self.model.last_op_key();
        if report.next_op_key != last + 1 || report.watermark + report.ops_replayed != last {
            return Err(format!(
                "reopen after op key {last}: watermark {}, {} ops replayed, next op key {}",
                report.watermark, report.ops_replayed, report.next_op_key
            ));
        }
        check_reads(registry, &self.model).map_err(|problem| format!("after reopen: {problem}"))
    }

    /// [`Harness::reopen`] with another configuration (kept for later reopens), e.g. without
    /// a fault-injection hook.
    ///
    /// # Errors
    /// As [`Harness::reopen`].
    pub fn reopen_with(&mut self, config: StoreConfig) -> Result<(), String> {
        self.config = config;
        self.reopen()
    }

    /// Flushes, compares SQLite, reopens and compares once more: the end of a run.
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn finish(mut self) -> Result<(), String> {
        self.step(&Op::Flush)?;
        self.reopen()?;
        let registry = self.registry();
        check_sqlite(registry, &self.model)?;
        registry.close().map_err(|error| format!("close: {error}"))
    }
}

/// Runs `ops` against a fresh registry in a temporary directory, then [`Harness::finish`].
/// The body of the `store_ops` fuzz target and of model tests.
///
/// # Errors
/// The first disagreement, with the step number.
pub fn run_ops(ops: &[Op], config: StoreConfig) -> Result<(), String> {
    let directory = tempfile::tempdir().map_err(|error| format!("tempdir: {error}"))?;
    let mut harness = Harness::new(directory.path(), config)?;
    for (index, op) in ops.iter().enumerate() {
        harness
            .step(op)
            .map_err(|problem| format!("step {index}: {problem}"))?;
    }
    harness
        .finish()
        .map_err(|problem| format!("at the end: {problem}"))
}

// ----- generated ops: small alphabets, so that collisions, re-adds and removes of the same
// handle are common -----

/// Handles ops draw from: the empty string, prefixes of each other, and a non-ASCII one (so
/// that SQLite's order and Rust's must agree).
pub const HANDLES: [&str; 6] = ["", "a", "h1", "h10", "h2", "hé"];
/// Comparables ops draw from (empty, with zero and high bytes).
pub const COMPARABLES: [&[u8]; 5] = [b"", b"c1", b"c2", b"c\x00", b"\xff\xfe"];
/// Oids relations draw from.
pub const OIDS: [u32; 4] = [1, 2, 3, u32::MAX - 1];
/// Hashes adds draw from.
pub const HASHES: [i64; 3] = [0, -1, i64::MAX];

fn add_from(
    handle: usize,
    comparable: usize,
    hash: usize,
    oids: &[usize],
    version: u8,
) -> NewShape {
    let oids: Vec<u32> = oids.iter().map(|index| OIDS[index % OIDS.len()]).collect();
    shape(
        HANDLES[handle % HANDLES.len()],
        COMPARABLES[comparable % COMPARABLES.len()],
        HASHES[hash % HASHES.len()],
        &oids,
        version,
    )
}

/// A proptest strategy of registry writes and flushes (and, if `reopen`, close + reopen:
/// about one step in 26), weighted towards adds.
pub fn op_strategy(reopen: bool) -> BoxedStrategy<Op> {
    let handle = || (0..HANDLES.len()).prop_map(|index| HANDLES[index].to_owned());
    let new = || {
        (
            0..HANDLES.len(),
            0..COMPARABLES.len(),
            0..HASHES.len(),
            proptest::collection::vec(0..OIDS.len(), 0..4),
            0..3u8,
        )
            .prop_map(|(handle, comparable, hash, oids, version)| {
                add_from(handle, comparable, hash, &oids, version)
            })
    };
    let writes = prop_oneof![
        8 => new().prop_map(Op::Add),
        2 => new().prop_map(Op::TryAdd),
        4 => handle().prop_map(Op::Remove),
        3 => handle().prop_map(Op::MarkStarted),
        3 => handle().prop_map(Op::MarkComplete),
        1 => Just(Op::Reset),
        1 => Just(Op::RemoveIncomplete),
        3 => Just(Op::Flush),
    ];
    if reopen {
        prop_oneof![25 => writes, 1 => Just(Op::Reopen)].boxed()
    } else {
        writes.boxed()
    }
}

/// Decodes arbitrary bytes into ops over the same alphabets (for the fuzz target): one tag
/// byte per op, then its fields; a truncated last op is dropped. Every byte string decodes.
#[must_use]
pub fn decode_ops(bytes: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut bytes = bytes.iter().map(|byte| usize::from(*byte));
    while let Some(tag) = bytes.next() {
        let op = match tag % 16 {
            0..=5 => {
                let (Some(fields), Some(oids)) = (bytes.next(), bytes.next()) else {
                    break;
                };
                // fields: handle (low 3 bits), comparable (next 3), hash (top 2);
                // oids: count (low 2 bits), then 2 bits per oid.
                let count = oids % 4;
                let oids: Vec<usize> = (0..count).map(|i| (oids >> (2 + 2 * i)) % 4).collect();
                let new = add_from(
                    fields % 8,
                    (fields >> 3) % 8,
                    fields >> 6,
                    &oids,
                    (tag / 16) as u8 % 3,
                );
                if tag % 16 == 5 {
                    Op::TryAdd(new)
                } else {
                    Op::Add(new)
                }
            }
            6..=12 => {
                let Some(handle) = bytes.next() else { break };
                let handle = HANDLES[handle % HANDLES.len()].to_owned();
                match tag % 16 {
                    6..=8 => Op::Remove(handle),
                    9 | 10 => Op::MarkStarted(handle),
                    _ => Op::MarkComplete(handle),
                }
            }
            13 => {
                if tag >= 128 {
                    Op::Reset
                } else {
                    Op::RemoveIncomplete
                }
            }
            14 => Op::Flush,
            _ => Op::Reopen,
        };
        ops.push(op);
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_refuses_like_the_registry() {
        let mut model = Model::new();
        assert_eq!(model.add(&shape("h1", b"c", 1, &[5], 0)), Ok(1));
        assert_eq!(
            model.add(&shape("h1", b"d", 1, &[], 0)),
            Err(Refusal::DuplicateHandle {
                handle: "h1".into()
            })
        );
        assert_eq!(
            model.add(&shape("h2", b"c", 1, &[], 0)),
            Err(Refusal::DuplicateComparable {
                existing: "h1".into()
            })
        );
        assert_eq!(
            model.remove("h2"),
            Err(Refusal::UnknownHandle {
                handle: "h2".into()
            })
        );
        assert_eq!(model.mark("h1", SnapshotState::Complete), Ok(2));
        assert_eq!(model.mark("h1", SnapshotState::Started), Ok(3));
        assert!(model.snapshot_complete("h1"), "marks never move back");
        assert_eq!(model.handles_for_relations(&[5, 6]), vec!["h1"]);
        assert_eq!(model.add(&shape("h2", b"d", 1, &[], 0)), Ok(4));
        assert_eq!(model.remove_incomplete(), (vec!["h2".into()], 1));
        assert_eq!(model.last_op_key(), 5);
        assert_eq!(model.reset(), 6);
        assert_eq!(model.count(), 0);
        assert!(model.seen_handles().contains("h2"));
        assert_eq!(model.logged().len(), 6);
    }

    #[test]
    fn rewind_replays_a_prefix_and_keeps_what_was_seen() {
        let mut model = Model::new();
        assert_eq!(model.add(&shape("h1", b"c", 1, &[5], 0)), Ok(1));
        assert_eq!(model.mark("h1", SnapshotState::Complete), Ok(2));
        assert_eq!(model.reset(), 3);
        assert_eq!(model.add(&shape("h2", b"c", 2, &[6], 0)), Ok(4));
        let mut at_two = Model::new();
        let _ = at_two.add(&shape("h1", b"c", 1, &[5], 0));
        let _ = at_two.mark("h1", SnapshotState::Complete);
        model.rewind(2).expect("rewind");
        assert_eq!(model.list(), at_two.list());
        assert_eq!(model.last_op_key(), 2);
        assert!(model.seen_handles().contains("h2"), "still seen");
        assert!(model.seen_oids().contains(&6));
        assert_eq!(model.add(&shape("h2", b"d", 2, &[], 0)), Ok(3));
        assert!(model.rewind(4).is_err(), "only 3 writes now");
    }

    #[test]
    fn every_byte_string_decodes() {
        assert!(decode_ops(&[]).is_empty());
        assert_eq!(decode_ops(&[14, 15]), vec![Op::Flush, Op::Reopen]);
        assert_eq!(decode_ops(&[6, 2]), vec![Op::Remove("h1".into())]);
        for seed in 0..=255u8 {
            let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
            let _ = decode_ops(&bytes);
        }
    }
}
