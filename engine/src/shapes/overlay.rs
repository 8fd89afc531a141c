//! The registry's in-memory indexes over buffered ops: by handle, by comparable, by relation
//! oid, and the buffered resets. Every entry's key ends with the op key that wrote it, so
//! that a reader can pick the latest version visible to it and the flusher can remove
//! exactly the entries of the ops it committed (compare-and-delete by construction).
//!
//! All lookups are O(log n) in the number of buffered ops; none scans the buffer.

use std::ops::Bound;
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use super::op::{Shape, ShapeOp, SnapshotState};

/// What an op did to a handle.
#[derive(Debug, Clone)]
pub(crate) enum HandleVersion {
    /// The shape was added.
    Added(Arc<Shape>),
    /// The shape was removed.
    Removed,
    /// Its snapshot state moved forward.
    Marked(SnapshotState),
}

/// The overlay's verdict on a handle, as of some op key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved<T> {
    /// Live, and the overlay knows everything about it.
    Live(T),
    /// Not live (removed, or reset away).
    Gone,
    /// The overlay has no say beyond forward snapshot marks: ask SQLite (and apply `mark`).
    Sqlite {
        /// The furthest snapshot state buffered marks reached.
        mark: Option<SnapshotState>,
    },
}

/// The registry's overlay.
#[derive(Default)]
pub struct ShapeOverlay {
    pub(crate) handles: SkipMap<(String, u64), HandleVersion>,
    comparables: SkipMap<(Vec<u8>, u64), Option<String>>,
    relations: SkipMap<(u32, String, u64), ()>,
    resets: SkipMap<u64, ()>,
}

impl std::fmt::Debug for ShapeOverlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapeOverlay")
            .field("handle_entries", &self.handles.len())
            .field("resets", &self.resets.len())
            .finish_non_exhaustive()
    }
}

impl ShapeOverlay {
    pub(crate) fn index(&self, op_key: u64, op: &ShapeOp) {
        match op {
            ShapeOp::Add(shape) => {
                self.handles.insert(
                    (shape.handle.clone(), op_key),
                    HandleVersion::Added(Arc::clone(shape)),
                );
                self.comparables.insert(
                    (shape.comparable.clone(), op_key),
                    Some(shape.handle.clone()),
                );
                for relation in &shape.relations {
                    self.relations
                        .insert((relation.oid, shape.handle.clone(), op_key), ());
                }
            }
            ShapeOp::Remove {
                handle, comparable, ..
            } => {
                self.handles
                    .insert((handle.clone(), op_key), HandleVersion::Removed);
                self.comparables.insert((comparable.clone(), op_key), None);
            }
            ShapeOp::Mark { handle, state } => {
                self.handles
                    .insert((handle.clone(), op_key), HandleVersion::Marked(*state));
            }
            ShapeOp::Reset => {
                self.resets.insert(op_key, ());
            }
        }
    }

    pub(crate) fn unindex(&self, op_key: u64, op: &ShapeOp) {
        match op {
            ShapeOp::Add(shape) => {
                self.handles.remove(&(shape.handle.clone(), op_key));
                self.comparables
                    .remove(&(shape.comparable.clone(), op_key));
                for relation in &shape.relations {
                    self.relations
                        .remove(&(relation.oid, shape.handle.clone(), op_key));
                }
            }
            ShapeOp::Remove {
                handle, comparable, ..
            } => {
                self.handles.remove(&(handle.clone(), op_key));
                self.comparables.remove(&(comparable.clone(), op_key));
            }
            ShapeOp::Mark { handle, .. } => {
                self.handles.remove(&(handle.clone(), op_key));
            }
            ShapeOp::Reset => {
                self.resets.remove(&op_key);
            }
        }
    }

    /// The latest buffered reset at or below `view`.
    pub(crate) fn reset_at(&self, view: u64) -> Option<u64> {
        self.resets
            .upper_bound(Bound::Included(&view))
            .map(|entry| *entry.key())
    }

    /// What the overlay says about `handle` as of `view`.
    pub(crate) fn resolve(&self, handle: &str, view: u64) -> Resolved<Shape> {
        let reset = self.reset_at(view);
        self.resolve_after(handle, view, reset)
    }

    /// As [`ShapeOverlay::resolve`], with the latest reset already looked up.
    pub(crate) fn resolve_after(
        &self,
        handle: &str,
        view: u64,
        reset: Option<u64>,
    ) -> Resolved<Shape> {
        let floor = reset.unwrap_or(0);
        let mut mark: Option<SnapshotState> = None;
        let low = (handle.to_owned(), floor);
        let high = (handle.to_owned(), view);
        for entry in self.handles.range(low..=high).rev() {
            match entry.value() {
                HandleVersion::Added(shape) => {
                    let mut shape = Shape::clone(shape);
                    if let Some(mark) = mark {
                        shape.snapshot = shape.snapshot.max(mark);
                    }
                    return Resolved::Live(shape);
                }
                HandleVersion::Removed => return Resolved::Gone,
                HandleVersion::Marked(state) => {
                    mark = Some(mark.map_or(*state, |mark| mark.max(*state)));
                }
            }
        }
        if reset.is_some() {
            Resolved::Gone
        } else {
            Resolved::Sqlite { mark }
        }
    }

    /// What the overlay says about the handle holding `comparable` as of `view`.
    pub(crate) fn resolve_comparable(&self, comparable: &[u8], view: u64) -> Resolved<String> {
        let reset = self.reset_at(view);
        let low = (comparable.to_vec(), reset.unwrap_or(0));
        let high = (comparable.to_vec(), view);
        match self.comparables.range(low..=high).next_back() {
            Some(entry) => match entry.value() {
                Some(handle) => Resolved::Live(handle.clone()),
                None => Resolved::Gone,
            },
            None if reset.is_some() => Resolved::Gone,
            None => Resolved::Sqlite { mark: None },
        }
    }

    /// Handles with a buffered add (visible at `view`, after the latest reset) reading a
    /// table with `oid`: candidates, to be confirmed by resolving each.
    pub(crate) fn handles_with_oid(&self, oid: u32, view: u64, out: &mut Vec<String>) {
        let floor = self.reset_at(view).unwrap_or(0);
        let low = (oid, String::new(), 0);
        for entry in self.relations.range(low..) {
            let (entry_oid, handle, op_key) = entry.key();
            if *entry_oid != oid {
                break;
            }
            if *op_key <= view && *op_key >= floor {
                out.push(handle.clone());
            }
        }
    }

    /// The first handle after `after` (or the first at all) with any buffered entry.
    pub(crate) fn next_handle(&self, after: Option<&str>) -> Option<String> {
        let entry = match after {
            Some(after) => self
                .handles
                .lower_bound(Bound::Excluded(&(after.to_owned(), u64::MAX))),
            None => self.handles.front(),
        }?;
        Some(entry.key().0.clone())
    }
}
