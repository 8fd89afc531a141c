//! The registry's SQLite tables, the flusher's batch apply, and the reads behind the overlay.
//!
//! Schema, lean for the flusher's throughput (see `docs/architecture.md`): `shapes` is a rowid
//! table with `handle` as primary key and a unique index on `comparable` — no index copies the
//! shape blob; relations are kept twice on purpose: encoded in `shapes.relations` (read with
//! the shape) and as `relations(oid, handle)`, a `WITHOUT ROWID` table that is the oid index.
//! The live count lives in the core's `walbuf_meta`, written once per batch.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;

use super::op::{Shape, ShapeOp, SnapshotState, decode_relations, encode_relations};
use crate::schema::BatchOp;
use crate::sqlite::{self, BatchWrites};

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
struct Net<'a> {
    /// Delete the row (and these relation rows) before anything else: the shape was live in
    /// SQLite and this batch removes it.
    delete: Option<&'a [u32]>,
    /// The row to insert after the deletes, and its snapshot state.
    insert: Option<(&'a Shape, SnapshotState)>,
    /// For a shape that stays in SQLite: move its snapshot state forward.
    mark: Option<SnapshotState>,
}

const DELETE_SHAPE: &str = "DELETE FROM shapes WHERE handle = ?1";
const DELETE_RELATION: &str = "DELETE FROM relations WHERE oid = ?1 AND handle = ?2";
const INSERT_SHAPE: &str =
    "INSERT INTO shapes (handle, comparable, hash, snapshot, relations, shape)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_RELATION: &str = "INSERT INTO relations (oid, handle) VALUES (?1, ?2)";
const MARK_SHAPE: &str = "UPDATE shapes SET snapshot = max(snapshot, ?2) WHERE handle = ?1";
const RESET: &str = "DELETE FROM shapes; DELETE FROM relations;";

/// Applies a batch: ops that cancel are coalesced (an add and a remove of the same handle in
/// one batch write nothing), ops before the batch's last reset are dropped, and the rest is
/// written deletes first, then inserts sorted by handle, relations sorted by (oid, handle),
/// then snapshot updates — the same end state as applying each op in order.
/// ([`BatchWrites`] switches coalescing and sorting off, for `walbuf bench`.)
pub(crate) fn apply(tx: &Transaction<'_>, batch: &[BatchOp<ShapeOp>]) -> rusqlite::Result<()> {
    let sorted = match sqlite::batch_writes() {
        BatchWrites::EachOp => return apply_each(tx, batch),
        BatchWrites::Coalesced => true,
        BatchWrites::CoalescedUnsorted => false,
    };
    // The nets in first-seen order, and where each handle's is.
    let mut nets: Vec<(&str, Net<'_>)> = Vec::with_capacity(batch.len());
    let mut positions: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(batch.len(), foldhash::fast::RandomState::default());
    let mut reset = false;
    for (_, op) in batch {
        let handle = match op {
            ShapeOp::Reset => {
                reset = true;
                nets.clear();
                positions.clear();
                continue;
            }
            ShapeOp::Add(shape) => shape.handle.as_str(),
            ShapeOp::Remove(removal) => removal.handle.as_str(),
            ShapeOp::Mark { handle, .. } => handle.as_str(),
        };
        let position = *positions.entry(handle).or_insert_with(|| {
            nets.push((handle, Net::default()));
            nets.len() - 1
        });
        let Some((_, net)) = nets.get_mut(position) else {
            continue;
        };
        match op {
            ShapeOp::Reset => {}
            ShapeOp::Add(shape) => {
                net.insert = Some((shape, shape.snapshot));
                net.mark = None;
            }
            ShapeOp::Remove(removal) => {
                net.mark = None;
                if net.insert.take().is_none() && net.delete.is_none() {
                    // Live in SQLite (not added in this batch): delete it there.
                    net.delete = Some(&removal.oids);
                }
            }
            ShapeOp::Mark { state, .. } => match &mut net.insert {
                Some((_, snapshot)) => *snapshot = (*snapshot).max(*state),
                None => net.mark = Some(net.mark.map_or(*state, |mark| mark.max(*state))),
            },
        }
    }
    if sorted {
        nets.sort_unstable_by(|left, right| left.0.cmp(right.0));
    }
    if reset {
        tx.execute_batch(RESET)?;
    }
    let mut relations: Vec<(u32, &str)> = Vec::new();
    {
        let mut delete = tx.prepare_cached(DELETE_SHAPE)?;
        for (handle, net) in &nets {
            if let Some(oids) = net.delete {
                delete.execute([handle])?;
                relations.extend(oids.iter().map(|oid| (*oid, *handle)));
            }
        }
    }
    if sorted {
        relations.sort_unstable();
    }
    {
        let mut delete = tx.prepare_cached(DELETE_RELATION)?;
        for (oid, handle) in &relations {
            delete.execute(params![oid, handle])?;
        }
    }
    relations.clear();
    {
        let mut insert = tx.prepare_cached(INSERT_SHAPE)?;
        let mut encoded = Vec::new();
        for (handle, net) in &nets {
            if let Some((shape, snapshot)) = net.insert {
                insert_shape(&mut insert, shape, snapshot, &mut encoded)?;
                push_oids(&mut relations, shape, handle);
            }
        }
    }
    if sorted {
        relations.sort_unstable();
    }
    {
        let mut insert = tx.prepare_cached(INSERT_RELATION)?;
        for (oid, handle) in &relations {
            insert.execute(params![oid, handle])?;
        }
    }
    {
        let mut update = tx.prepare_cached(MARK_SHAPE)?;
        for (handle, net) in &nets {
            if let (Some(mark), None) = (net.mark, &net.insert) {
                update.execute(params![handle, mark.code()])?;
            }
        }
    }
    Ok(())
}

/// Inserts `shape`'s row with `snapshot` (`encoded`: scratch for its relations).
fn insert_shape(
    insert: &mut rusqlite::CachedStatement<'_>,
    shape: &Shape,
    snapshot: SnapshotState,
    encoded: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    encoded.clear();
    encode_relations(&shape.relations, encoded);
    insert.execute(params![
        shape.handle,
        shape.comparable,
        shape.hash,
        snapshot.code(),
        &**encoded,
        shape.shape
    ])?;
    Ok(())
}

/// Appends `(oid, handle)` for each distinct oid of `shape` to `relations`.
fn push_oids<'a>(relations: &mut Vec<(u32, &'a str)>, shape: &Shape, handle: &'a str) {
    let start = relations.len();
    for relation in &shape.relations {
        let row = (relation.oid, handle);
        if !relations.get(start..).is_some_and(|own| own.contains(&row)) {
            relations.push(row);
        }
    }
}

/// Writes every op on its own, in op-key order: [`BatchWrites::EachOp`].
fn apply_each(tx: &Transaction<'_>, batch: &[BatchOp<ShapeOp>]) -> rusqlite::Result<()> {
    let mut encoded = Vec::new();
    let mut relations = Vec::new();
    for (_, op) in batch {
        match op {
            ShapeOp::Reset => tx.execute_batch(RESET)?,
            ShapeOp::Add(shape) => {
                insert_shape(
                    &mut tx.prepare_cached(INSERT_SHAPE)?,
                    shape,
                    shape.snapshot,
                    &mut encoded,
                )?;
                relations.clear();
                push_oids(&mut relations, shape, &shape.handle);
                let mut insert = tx.prepare_cached(INSERT_RELATION)?;
                for (oid, handle) in &relations {
                    insert.execute(params![oid, handle])?;
                }
            }
            ShapeOp::Remove(removal) => {
                let handle = &removal.handle;
                tx.prepare_cached(DELETE_SHAPE)?.execute([handle])?;
                let mut delete = tx.prepare_cached(DELETE_RELATION)?;
                for oid in &removal.oids {
                    delete.execute(params![oid, handle])?;
                }
            }
            ShapeOp::Mark { handle, state } => {
                tx.prepare_cached(MARK_SHAPE)?
                    .execute(params![handle, state.code()])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{Relation, Removal};
    use std::sync::Arc;

    fn shape(handle: &str, comparable: &str, oids: &[u32]) -> Arc<Shape> {
        Arc::new(Shape {
            handle: handle.into(),
            shape: handle.as_bytes().to_vec(),
            comparable: comparable.as_bytes().to_vec(),
            hash: 7,
            relations: oids
                .iter()
                .map(|oid| Relation {
                    oid: *oid,
                    schema: "public".into(),
                    table: "t".into(),
                })
                .collect(),
            snapshot: SnapshotState::NotStarted,
        })
    }

    fn remove(handle: &str, comparable: &str, oids: &[u32]) -> ShapeOp {
        ShapeOp::Remove(Arc::new(Removal {
            handle: handle.into(),
            comparable: comparable.as_bytes().to_vec(),
            oids: oids.to_vec(),
        }))
    }

    fn mark(handle: &str, state: SnapshotState) -> ShapeOp {
        ShapeOp::Mark {
            handle: Arc::new(handle.to_owned()),
            state,
        }
    }

    /// Both tables, in key order.
    type Rows = (Vec<(String, Vec<u8>, u8)>, Vec<(u32, String)>);

    fn apply_all(writes: BatchWrites, batches: &[Vec<ShapeOp>]) -> Rows {
        sqlite::set_batch_writes(writes);
        let mut connection = Connection::open_in_memory().expect("open");
        connection.execute_batch(CREATE_TABLES).expect("create");
        let mut op_key = 0;
        for ops in batches {
            let batch: Vec<BatchOp<ShapeOp>> = ops
                .iter()
                .map(|op| {
                    op_key += 1;
                    (op_key, op.clone())
                })
                .collect();
            let tx = connection.transaction().expect("begin");
            apply(&tx, &batch).expect("apply");
            tx.commit().expect("commit");
        }
        sqlite::set_batch_writes(BatchWrites::default());
        let shapes = connection
            .prepare("SELECT handle, comparable, snapshot FROM shapes ORDER BY handle")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("read shapes");
        let relations = connection
            .prepare("SELECT oid, handle FROM relations ORDER BY oid, handle")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .expect("read relations");
        (shapes, relations)
    }

    #[test]
    fn every_way_of_writing_a_batch_reaches_the_same_tables() {
        use SnapshotState::{Complete, Started};
        let batches = vec![
            vec![
                ShapeOp::Add(shape("b", "cb", &[2, 1])),
                ShapeOp::Add(shape("a", "ca", &[1, 1])),
                ShapeOp::Add(shape("gone", "cg", &[3])),
                mark("a", Started),
            ],
            vec![
                // Removed and re-added with another comparable in one batch.
                remove("b", "cb", &[1, 2]),
                ShapeOp::Add(shape("b", "cb2", &[4])),
                mark("b", Complete),
                // Added and removed in one batch: cancels.
                ShapeOp::Add(shape("c", "cc", &[5])),
                remove("c", "cc", &[5]),
                remove("gone", "cg", &[3]),
                mark("a", Complete),
                mark("a", Started),
                // The removed comparable is taken by a new shape.
                ShapeOp::Add(shape("d", "cb", &[1])),
            ],
            vec![
                ShapeOp::Add(shape("e", "ce", &[6])),
                ShapeOp::Reset,
                ShapeOp::Add(shape("f", "cf", &[7, 1])),
                mark("f", Started),
            ],
        ];
        let expected = apply_all(BatchWrites::EachOp, &batches);
        assert_eq!(
            expected,
            (
                vec![("f".into(), b"cf".to_vec(), Started.code())],
                vec![(1, "f".into()), (7, "f".into())]
            )
        );
        assert_eq!(apply_all(BatchWrites::Coalesced, &batches), expected);
        assert_eq!(
            apply_all(BatchWrites::CoalescedUnsorted, &batches),
            expected
        );
        let before_reset = &batches[..2];
        let expected = apply_all(BatchWrites::EachOp, before_reset);
        assert_eq!(
            expected.0,
            vec![
                ("a".into(), b"ca".to_vec(), Complete.code()),
                ("b".into(), b"cb2".to_vec(), Complete.code()),
                ("d".into(), b"cb".to_vec(), SnapshotState::NotStarted.code()),
            ]
        );
        assert_eq!(apply_all(BatchWrites::Coalesced, before_reset), expected);
        assert_eq!(
            apply_all(BatchWrites::CoalescedUnsorted, before_reset),
            expected
        );
    }
}
