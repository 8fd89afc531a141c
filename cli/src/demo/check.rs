//! The demo's final check: after a flush, the registry's reads and a direct read-only query
//! of `walbuf.db` must both show exactly the shapes the acknowledged ops leave (each with the
//! bytes it was added with), and the maintained count must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use walbuf::{ShapeRegistry, SnapshotState};

use super::plan::{self, Expectation};

/// Problems described one by one; past this many they are only counted.
const DESCRIBED_MAX: usize = 8;

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Live shapes, as the registry reads them.
    pub live: u64,
    /// Rows of the `shapes` table.
    pub sqlite_rows: u64,
    /// Shapes whose in-flight step (submitted, not acknowledged) took effect.
    pub in_flight_applied: u64,
    /// Shapes `(writer, index)` found in a state their acknowledged steps do not allow.
    pub failed: BTreeSet<(u32, u32)>,
    /// The first problems, described.
    pub problems: Vec<String>,
    /// Problems in total.
    pub problem_count: u64,
}

impl Verdict {
    /// Whether everything matched.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, shape: Option<(u32, u32)>, description: String) {
        if let Some(shape) = shape {
            self.failed.insert(shape);
        }
        self.problem_count += 1;
        if self.problems.len() < DESCRIBED_MAX {
            self.problems.push(description);
        }
    }
}

fn state_name(state: Option<SnapshotState>) -> String {
    state.map_or_else(|| "absent".to_owned(), |state| format!("{state:?}"))
}

/// A `shapes` row, as SQLite holds it.
struct Row {
    comparable: Vec<u8>,
    hash: i64,
    snapshot: u8,
    shape: Vec<u8>,
}

/// Checks the registry (flushed) and its database against `expected`.
///
/// # Errors
/// A read fails (the registry's or the direct SQLite query's).
pub fn run(
    registry: &ShapeRegistry,
    database: &Path,
    expected: &Expectation,
) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();
    let rows = read_database(database)?;
    verdict.sqlite_rows = rows.shapes.len() as u64;

    // Every shape an op was acknowledged for (or in flight), through the registry and SQLite.
    for (&(writer, index), allowed) in expected {
        let handle = plan::handle(writer, index);
        let wanted = plan::new_shape(writer, index);
        let shape = registry
            .shape_for_handle(&handle)
            .with_context(|| format!("registry read of {handle} failed"))?;
        let state = shape.as_ref().map(|shape| shape.snapshot);
        if let Some(shape) = &shape
            && (shape.shape != wanted.shape
                || shape.comparable != wanted.comparable
                || shape.hash != wanted.hash
                || shape.relations != wanted.relations)
        {
            verdict.problem(
                Some((writer, index)),
                format!("{handle}: the registry returns other bytes than were added"),
            );
        }
        if !allowed.allows(state) {
            verdict.problem(
                Some((writer, index)),
                format!(
                    "{handle}: the registry reads it {}, the acknowledged ops leave it {}",
                    state_name(state),
                    state_name(allowed.acknowledged)
                ),
            );
        } else if allowed.shows_in_flight(state) {
            verdict.in_flight_applied += 1;
        }
        let holder = registry
            .handle_for_shape(&wanted.comparable)
            .with_context(|| format!("registry lookup of {handle}'s comparable failed"))?;
        if holder.is_some() != state.is_some()
            || holder.as_ref().is_some_and(|holder| *holder != handle)
        {
            verdict.problem(
                Some((writer, index)),
                format!("{handle}: handle_for_shape of its comparable returns {holder:?}"),
            );
        }
        let row = rows.shapes.get(&handle);
        let row_state = row.and_then(|row| SnapshotState::from_code(row.snapshot));
        if row.is_some() != state.is_some() || row_state != state {
            verdict.problem(
                Some((writer, index)),
                format!(
                    "{handle}: walbuf.db has it {}, the registry reads it {}",
                    row.map_or_else(|| "absent".to_owned(), |_| state_name(row_state)),
                    state_name(state)
                ),
            );
        }
        if let Some(row) = row
            && (row.shape != wanted.shape
                || row.comparable != wanted.comparable
                || row.hash != wanted.hash)
        {
            verdict.problem(
                Some((writer, index)),
                format!("{handle}: walbuf.db holds other bytes than were added"),
            );
        }
        if state.is_some() {
            verdict.live += 1;
            for relation in &wanted.relations {
                if !rows.relations.contains(&(relation.oid, handle.clone())) {
                    verdict.problem(
                        Some((writer, index)),
                        format!(
                            "{handle}: walbuf.db's relations table lacks oid {}",
                            relation.oid
                        ),
                    );
                }
            }
        }
    }

    // Nothing else: no row or listed shape that no op added, and the counts agree.
    for handle in rows.shapes.keys() {
        if plan::parse_handle(handle).is_none_or(|key| !expected.contains_key(&key)) {
            verdict.problem(
                None,
                format!("walbuf.db holds {handle}, which no submitted op added"),
            );
        }
    }
    let mut listed = 0_u64;
    for shape in registry.list_shapes() {
        let shape = shape.context("listing the registry's shapes failed")?;
        listed += 1;
        if plan::parse_handle(&shape.handle).is_none_or(|key| !expected.contains_key(&key)) {
            verdict.problem(
                None,
                format!(
                    "the registry lists {}, which no submitted op added",
                    shape.handle
                ),
            );
        }
    }
    let count = registry.count_shapes().context("count_shapes failed")?;
    for (what, value) in [
        ("count_shapes()", count),
        ("list_shapes()", listed),
        ("walbuf.db's shapes table", verdict.sqlite_rows),
    ] {
        if value != verdict.live {
            verdict.problem(
                None,
                format!("{what} has {value}, but {} shapes are live", verdict.live),
            );
        }
    }
    let relation_rows = rows.relations.len() as u64;
    let relations_expected = 2 * verdict.live;
    if relation_rows != relations_expected {
        verdict.problem(
            None,
            format!(
                "walbuf.db's relations table has {relation_rows} rows, {relations_expected} expected"
            ),
        );
    }
    let meta = walbuf::sqlite::peek_meta(database).context("cannot read walbuf.db's watermark")?;
    let last = registry.stats().last_op_key;
    match meta {
        Some(meta) if meta.applied_op_key == last && meta.live_count == verdict.live => {}
        other => verdict.problem(
            None,
            format!(
                "walbuf.db's meta is {other:?} after a flush, expected op key {last} and {} live",
                verdict.live
            ),
        ),
    }
    Ok(verdict)
}

/// The `shapes` and `relations` tables, read with a connection of our own (read-only, not the
/// registry's pool).
struct Tables {
    shapes: BTreeMap<String, Row>,
    relations: BTreeSet<(u32, String)>,
}

fn read_database(path: &Path) -> anyhow::Result<Tables> {
    let read = || -> rusqlite::Result<Tables> {
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut shapes = BTreeMap::new();
        let mut statement =
            connection.prepare("SELECT handle, comparable, hash, snapshot, shape FROM shapes")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            shapes.insert(
                row.get::<_, String>(0)?,
                Row {
                    comparable: row.get(1)?,
                    hash: row.get(2)?,
                    snapshot: row.get(3)?,
                    shape: row.get(4)?,
                },
            );
        }
        let mut relations = BTreeSet::new();
        let mut statement = connection.prepare("SELECT oid, handle FROM relations")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            relations.insert((row.get::<_, u32>(0)?, row.get::<_, String>(1)?));
        }
        Ok(Tables { shapes, relations })
    };
    read().with_context(|| format!("cannot read the shapes in {}", path.display()))
}
