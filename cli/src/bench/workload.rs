//! The shape workload every group shares, and the SQLite baselines' schema.
//!
//! An op is `add_shape` of a fresh shape: a 16-hex-digit random handle, a 300-byte definition,
//! a 32-byte comparable and 2 relations. Handles and comparables come from `splitmix64` of a
//! unique key, a bijection, so they are unique within a key space and in random order (the
//! order of SQLite's B-trees is what matters: sequential keys are ~10× faster to insert).
//!
//! The baselines' schema is walbuf's own (`engine/src/shapes/sql.rs`): `shapes` a rowid table
//! keyed by handle with a unique comparable, `relations(oid, handle)` `WITHOUT ROWID`.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, Statement, params};
use walbuf::{NewShape, Relation};

/// Bytes of a shape's definition.
pub const SHAPE_BYTES: usize = 300;

/// `splitmix64`: a bijection of `u64` with good mixing.
pub fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A unique key for op `sequence` of thread `thread` in trial `trial`.
pub fn op_key(trial: u64, thread: usize, sequence: u64) -> u64 {
    (trial << 48) ^ ((thread as u64) << 40) ^ sequence
}

/// The handle of the shape of `key`.
pub fn handle_of(key: u64) -> String {
    format!("{:016x}", mix(key ^ 0x5A5A_0000_0000_0000))
}

/// The comparable of the shape of `key` (32 bytes, unique per key).
pub fn comparable_of(key: u64) -> Vec<u8> {
    format!("{:016x}{:016x}", mix(key), mix(key ^ 0x00C0_FFEE_0000_0000)).into_bytes()
}

/// The relation oid unique to the shape of `key` (modulo 2^30).
pub fn own_oid_of(key: u64) -> u32 {
    1_000_000 + (key as u32 & 0x3FFF_FFFF)
}

/// The shape of `key`: its own relation and one shared by a hundredth of the shapes.
pub fn shape_of(key: u64, body: &[u8]) -> NewShape {
    NewShape {
        handle: handle_of(key),
        shape: body.to_vec(),
        comparable: comparable_of(key),
        hash: mix(key ^ 0x0123_4567) as i64,
        relations: vec![
            Relation {
                oid: own_oid_of(key),
                schema: "public".into(),
                table: "items".into(),
            },
            Relation {
                oid: 16_384 + (key % 100) as u32,
                schema: "public".into(),
                table: "shared".into(),
            },
        ],
    }
}

/// A 300-byte definition.
pub fn shape_body() -> Vec<u8> {
    (0..SHAPE_BYTES)
        .map(|index| b"SELECT * FROM items WHERE "[index % 26])
        .collect()
}

/// walbuf's encoding of a shape's relations (the `relations` column).
fn encode_relations(relations: &[Relation], out: &mut Vec<u8>) {
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(&(relations.len() as u32).to_le_bytes());
    for relation in relations {
        out.extend_from_slice(&relation.oid.to_le_bytes());
        put(out, relation.schema.as_bytes());
        put(out, relation.table.as_bytes());
    }
}

/// `synchronous` of a baseline connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Synchronous {
    Full,
    Normal,
}

/// Opens (creating) a baseline database at `path`: WAL mode, `synchronous`, the lean schema,
/// SQLite's defaults otherwise (automatic checkpoints, 2 MiB cache) — what a user would run.
///
/// # Errors
/// SQLite failed.
pub fn open_baseline(path: &Path, synchronous: Synchronous) -> anyhow::Result<Connection> {
    let connection =
        Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let synchronous = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {synchronous};
             CREATE TABLE IF NOT EXISTS shapes (
                 handle TEXT PRIMARY KEY NOT NULL,
                 comparable BLOB NOT NULL UNIQUE,
                 hash INTEGER NOT NULL,
                 snapshot INTEGER NOT NULL,
                 relations BLOB NOT NULL,
                 shape BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS relations (
                 oid INTEGER NOT NULL,
                 handle TEXT NOT NULL,
                 PRIMARY KEY (oid, handle)
             ) WITHOUT ROWID;"
        ))
        .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(connection)
}

const INSERT_SHAPE: &str =
    "INSERT INTO shapes (handle, comparable, hash, snapshot, relations, shape)
     VALUES (?1, ?2, ?3, 0, ?4, ?5)";
const INSERT_RELATION: &str = "INSERT INTO relations (oid, handle) VALUES (?1, ?2)";

/// Inserts the shape row of `shape` (not its relation rows) with `insert` (prepared from
/// `INSERT_SHAPE`); `encoded` is scratch space for the relations column.
fn insert_shape_row(
    insert: &mut Statement<'_>,
    shape: &NewShape,
    encoded: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    encoded.clear();
    encode_relations(&shape.relations, encoded);
    insert.execute(params![
        shape.handle,
        shape.comparable,
        shape.hash,
        &**encoded,
        shape.shape
    ])?;
    Ok(())
}

/// Inserts `shapes` in one transaction, shape rows in `shapes`' order followed by (or with
/// `interleave`, each followed by its own) relation rows in `relations`' order. Each
/// statement is prepared once per transaction, as a careful hand-written loop does.
fn insert_batch<'a>(
    connection: &mut Connection,
    shapes: impl IntoIterator<Item = &'a NewShape>,
    relations: &[(u32, &str)],
    interleave: bool,
) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut insert_shape = tx.prepare_cached(INSERT_SHAPE)?;
        let mut insert_relation = tx.prepare_cached(INSERT_RELATION)?;
        let mut encoded = Vec::with_capacity(64);
        for shape in shapes {
            insert_shape_row(&mut insert_shape, shape, &mut encoded)?;
            if interleave {
                for relation in &shape.relations {
                    insert_relation.execute(params![relation.oid, shape.handle])?;
                }
            }
        }
        for (oid, handle) in relations {
            insert_relation.execute(params![oid, handle])?;
        }
    }
    tx.commit()
}

/// An op of a baseline that also removes shapes.
#[derive(Debug, Clone)]
pub enum BaselineOp {
    /// Insert the shape and its relation rows.
    Add(NewShape),
    /// Delete the shape with this handle and its relation rows (these oids).
    Remove { handle: String, oids: Vec<u32> },
}

/// Applies `ops` in one transaction, each on its own and in order (no coalescing, no
/// sorting), each statement prepared once per transaction.
///
/// # Errors
/// SQLite failed.
pub fn apply_in_order(connection: &mut Connection, ops: &[BaselineOp]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut insert_shape = tx.prepare_cached(INSERT_SHAPE)?;
        let mut insert_relation = tx.prepare_cached(INSERT_RELATION)?;
        let mut delete_shape = tx.prepare_cached("DELETE FROM shapes WHERE handle = ?1")?;
        let mut delete_relation =
            tx.prepare_cached("DELETE FROM relations WHERE oid = ?1 AND handle = ?2")?;
        let mut encoded = Vec::with_capacity(64);
        for op in ops {
            match op {
                BaselineOp::Add(shape) => {
                    insert_shape_row(&mut insert_shape, shape, &mut encoded)?;
                    for relation in &shape.relations {
                        insert_relation.execute(params![relation.oid, shape.handle])?;
                    }
                }
                BaselineOp::Remove { handle, oids } => {
                    delete_shape.execute([handle])?;
                    for oid in oids {
                        delete_relation.execute(params![oid, handle])?;
                    }
                }
            }
        }
    }
    tx.commit()
}

/// Inserts `shapes` in one transaction, in the given order (shape rows, then each shape's
/// relation rows).
///
/// # Errors
/// SQLite failed.
pub fn insert_unsorted(connection: &mut Connection, shapes: &[NewShape]) -> rusqlite::Result<()> {
    insert_batch(connection, shapes, &[], true)
}

/// Inserts `shapes` in one transaction the way walbuf's flusher orders a batch: shape rows
/// sorted by handle, then relation rows sorted by (oid, handle).
///
/// # Errors
/// SQLite failed.
pub fn insert_sorted(connection: &mut Connection, shapes: &[NewShape]) -> rusqlite::Result<()> {
    let mut order: Vec<&NewShape> = shapes.iter().collect();
    order.sort_unstable_by(|left, right| left.handle.cmp(&right.handle));
    let mut relations: Vec<(u32, &str)> = shapes
        .iter()
        .flat_map(|shape| {
            shape
                .relations
                .iter()
                .map(|relation| (relation.oid, shape.handle.as_str()))
        })
        .collect();
    relations.sort_unstable();
    insert_batch(connection, order, &relations, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_workload_sizes_and_unique_keys() {
        let body = shape_body();
        let shape = shape_of(op_key(3, 7, 11), &body);
        assert_eq!(shape.shape.len(), SHAPE_BYTES);
        assert_eq!(shape.comparable.len(), 32);
        assert_eq!(shape.handle.len(), 16);
        assert_eq!(shape.relations.len(), 2);
        let mut handles: Vec<String> = (0..10_000).map(handle_of).collect();
        handles.sort_unstable();
        handles.dedup();
        assert_eq!(handles.len(), 10_000);
    }
}
