//! The registry's SQLite tables, the flusher's batch apply, and the reads behind the overlay.
//!
//! Schema, lean for the flusher's throughput (see `docs/architecture.md`): `shapes` is a rowid
//! table with `handle` as primary key and a unique index on `comparable` — no index copies the
//! shape blob; relations are kept twice on purpose: encoded in `shapes.relations` (read with
//! the shape) and as `relations(oid, handle)`, a `WITHOUT ROWID` table that is the oid index.
//! The live count lives in the core's `walbuf_meta`, written once per batch.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::op::{Shape, ShapeOp, SnapshotState, decode_relations, encode_relations};
use crate::schema::BatchOp;

pub(crate) const CREATE_TABLES: &str = "
    CREATE TABLE shapes (
        handle TEXT PRIMARY KEY NOT NULL,
        comparable BLOB NOT NULL UNIQUE,
        hash INTEGER NOT NULL,
        snapshot INTEGER NOT NULL,
        relations BLOB NOT NULL,
        shape BLOB NOT NULL
    );
    CREATE TABLE relations (
        oid INTEGER NOT NULL,
        handle TEXT NOT NULL,
        PRIMARY KEY (oid, handle)
    ) WITHOUT ROWID;
";

const SELECT_SHAPE: &str =
    "SELECT handle, comparable, hash, snapshot, relations, shape FROM shapes";

/// The net effect of a batch's ops on one handle.
#[derive(Default)]
struct Net {
    /// Delete the row (and these relation rows) before anything else: the shape was live in
    /// SQLite and this batch removes it.
    delete: Option<Vec<u32>>,
    /// The row to insert after the deletes, and its snapshot state.
    insert: Option<(Arc<Shape>, SnapshotState)>,
    /// For a shape that stays in SQLite: move its snapshot state forward.
    mark: Option<SnapshotState>,
}

/// Applies a batch: ops that cancel are coalesced (an add and a remove of the same handle in
/// one batch write nothing), ops before the batch's last reset are dropped, and the rest is
/// written deletes first, then inserts sorted by handle, relations sorted by (oid, handle),
/// then snapshot updates — the same end state as applying each op in order.
pub(crate) fn apply(tx: &Transaction<'_>, batch: &[BatchOp<ShapeOp>]) -> rusqlite::Result<()> {
    let mut reset = false;
    let mut nets: BTreeMap<&str, Net> = BTreeMap::new();
    for (_, op) in batch {
        match &**op {
            ShapeOp::Reset => {
                reset = true;
                nets.clear();
            }
            ShapeOp::Add(shape) => {
                let net = nets.entry(&shape.handle).or_default();
                net.insert = Some((Arc::clone(shape), shape.snapshot));
                net.mark = None;
            }
            ShapeOp::Remove { handle, oids, .. } => {
                let net = nets.entry(handle).or_default();
                net.mark = None;
                if net.insert.take().is_none() && net.delete.is_none() {
                    // Live in SQLite (not added in this batch): delete it there.
                    net.delete = Some(oids.clone());
                }
            }
            ShapeOp::Mark { handle, state } => {
                let net = nets.entry(handle).or_default();
                match &mut net.insert {
                    Some((_, snapshot)) => *snapshot = (*snapshot).max(*state),
                    None => net.mark = Some(net.mark.map_or(*state, |mark| mark.max(*state))),
                }
            }
        }
    }
    if reset {
        tx.execute_batch("DELETE FROM shapes; DELETE FROM relations;")?;
    }
    let mut relation_deletes = Vec::new();
    let mut relation_inserts = Vec::new();
    {
        let mut delete = tx.prepare_cached("DELETE FROM shapes WHERE handle = ?1")?;
        for (handle, net) in &nets {
            if let Some(oids) = &net.delete {
                delete.execute([handle])?;
                relation_deletes.extend(oids.iter().map(|oid| (*oid, *handle)));
            }
        }
    }
    relation_deletes.sort_unstable();
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM relations WHERE oid = ?1 AND handle = ?2")?;
        for (oid, handle) in &relation_deletes {
            delete.execute(params![oid, handle])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO shapes (handle, comparable, hash, snapshot, relations, shape)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut relations = Vec::new();
        for (handle, net) in &nets {
            if let Some((shape, snapshot)) = &net.insert {
                relations.clear();
                encode_relations(&shape.relations, &mut relations);
                insert.execute(params![
                    handle,
                    shape.comparable,
                    shape.hash,
                    snapshot.code(),
                    relations,
                    shape.shape
                ])?;
                relation_inserts.extend(shape.relations.iter().map(|r| (r.oid, *handle)));
            }
        }
    }
    relation_inserts.sort_unstable();
    relation_inserts.dedup();
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO relations (oid, handle) VALUES (?1, ?2)")?;
        for (oid, handle) in &relation_inserts {
            insert.execute(params![oid, handle])?;
        }
    }
    {
        let mut update =
            tx.prepare_cached("UPDATE shapes SET snapshot = max(snapshot, ?2) WHERE handle = ?1")?;
        for (handle, net) in &nets {
            if let (Some(mark), None) = (net.mark, &net.insert) {
                update.execute(params![handle, mark.code()])?;
            }
        }
    }
    Ok(())
}

fn shape_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Shape> {
    let bad = |column: usize, problem: &'static str| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            problem.into(),
        )
    };
    let snapshot: u8 = row.get(3)?;
    let relations: Vec<u8> = row.get(4)?;
    Ok(Shape {
        handle: row.get(0)?,
        comparable: row.get(1)?,
        hash: row.get(2)?,
        snapshot: SnapshotState::from_code(snapshot).ok_or_else(|| bad(3, "bad snapshot state"))?,
        relations: decode_relations(&relations).map_err(|_| bad(4, "bad relations encoding"))?,
        shape: row.get(5)?,
    })
}

/// Loads every handle and comparable of SQLite into the overlay's presence filter.
pub(crate) fn load_presence(
    connection: &Connection,
    overlay: &super::ShapeOverlay,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare("SELECT handle, comparable FROM shapes")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let handle = row.get_ref(0)?.as_str()?;
        let comparable = row.get_ref(1)?.as_blob()?;
        overlay.presence.insert(handle, comparable);
    }
    Ok(())
}

/// The shape with `handle`, if SQLite has it.
pub(crate) fn shape(connection: &Connection, handle: &str) -> rusqlite::Result<Option<Shape>> {
    connection
        .prepare_cached(&format!("{SELECT_SHAPE} WHERE handle = ?1"))?
        .query_row([handle], shape_from_row)
        .optional()
}

/// Whether SQLite has `handle`.
pub(crate) fn has_handle(connection: &Connection, handle: &str) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM shapes WHERE handle = ?1")?
        .query_row([handle], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The snapshot state and hash of `handle`, if SQLite has it.
pub(crate) fn meta(
    connection: &Connection,
    handle: &str,
) -> rusqlite::Result<Option<(i64, SnapshotState)>> {
    connection
        .prepare_cached("SELECT hash, snapshot FROM shapes WHERE handle = ?1")?
        .query_row([handle], |row| {
            let code: u8 = row.get(1)?;
            Ok((
                row.get(0)?,
                SnapshotState::from_code(code).unwrap_or_default(),
            ))
        })
        .optional()
}

/// The handle SQLite holds for `comparable`.
pub(crate) fn handle_for_comparable(
    connection: &Connection,
    comparable: &[u8],
) -> rusqlite::Result<Option<String>> {
    connection
        .prepare_cached("SELECT handle FROM shapes WHERE comparable = ?1")?
        .query_row([comparable], |row| row.get(0))
        .optional()
}

/// Handles SQLite lists under `oid`.
pub(crate) fn handles_with_oid(
    connection: &Connection,
    oid: u32,
    out: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached("SELECT handle FROM relations WHERE oid = ?1")?;
    for handle in statement.query_map([oid], |row| row.get(0))? {
        out.push(handle?);
    }
    Ok(())
}

/// Up to `limit` shapes with handles after `after`, in handle order.
pub(crate) fn page(
    connection: &Connection,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<Shape>> {
    let limit = limit as i64;
    match after {
        Some(after) => connection
            .prepare_cached(&format!(
                "{SELECT_SHAPE} WHERE handle > ?1 ORDER BY handle LIMIT ?2"
            ))?
            .query_map(params![after, limit], shape_from_row)?
            .collect(),
        None => connection
            .prepare_cached(&format!("{SELECT_SHAPE} ORDER BY handle LIMIT ?1"))?
            .query_map(params![limit], shape_from_row)?
            .collect(),
    }
}
