//! Shape records and the registry's ops, with their byte encoding (the payload of each log
//! record, after the core's 8-byte prefix; see `docs/format.md`).
//!
//! All integers little-endian; a string or byte string is a u32 length and the bytes.

use std::sync::Arc;

use crate::schema::DecodeError;

/// A table a shape reads from. Lookups match by `oid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relation {
    /// The table's oid.
    pub oid: u32,
    /// Its schema name (shared: names decoded from the log or SQLite are interned).
    pub schema: Arc<str>,
    /// Its table name (shared likewise).
    pub table: Arc<str>,
}

/// Most distinct names [`intern_name`] keeps (a database has far fewer tables; past this,
/// names are simply allocated).
const INTERNED_NAMES_MAX: usize = 1 << 16;

/// The interned schema and table names.
static INTERNED_NAMES: std::sync::LazyLock<
    parking_lot::RwLock<std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>>,
> = std::sync::LazyLock::new(Default::default);

/// A shared copy of a schema or table name: every shape decoded from the log or SQLite that
/// reads `public.items` points at one `"public"` and one `"items"`, instead of allocating
/// them again for each shape.
#[must_use]
pub fn intern_name(name: &str) -> Arc<str> {
    if let Some(interned) = INTERNED_NAMES.read().get(name) {
        return Arc::clone(interned);
    }
    let mut names = INTERNED_NAMES.write();
    if let Some(interned) = names.get(name) {
        return Arc::clone(interned);
    }
    let interned: Arc<str> = Arc::from(name);
    if names.len() < INTERNED_NAMES_MAX {
        names.insert(Arc::clone(&interned));
    }
    interned
}

/// Names a thread keeps at hand (see [`recent_name`]).
const RECENT_NAMES: usize = 8;

thread_local! {
    /// The names this thread interned last, and where the next one goes: a decoder meets the
    /// same few schema and table names over and over, and finding them here costs a few byte
    /// comparisons instead of a UTF-8 check, a lock and a hash lookup in the shared set.
    static RECENT: std::cell::RefCell<(usize, [Option<Arc<str>>; RECENT_NAMES])> =
        const { std::cell::RefCell::new((0, [const { None }; RECENT_NAMES])) };
}

/// The interned name whose bytes are `bytes`, if this thread interned it recently.
fn recent_name(bytes: &[u8]) -> Option<Arc<str>> {
    RECENT.with_borrow(|(_, names)| {
        names
            .iter()
            .flatten()
            .find(|name| name.as_bytes() == bytes)
            .cloned()
    })
}

/// Keeps `name` among this thread's recent names, in place of the oldest.
fn remember_name(name: &Arc<str>) {
    RECENT.with_borrow_mut(|(next, names)| {
        if let Some(slot) = names.get_mut(*next) {
            *slot = Some(Arc::clone(name));
        }
        *next = (*next + 1) % RECENT_NAMES;
    });
}

/// How far a shape's initial snapshot got. Ordered: marks only move it forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SnapshotState {
    /// Not started.
    #[default]
    NotStarted,
    /// Started, not complete.
    Started,
    /// Complete.
    Complete,
}

impl SnapshotState {
    /// The stored code (0, 1, 2).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::NotStarted => 0,
            Self::Started => 1,
            Self::Complete => 2,
        }
    }

    /// The state of a stored code.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::NotStarted),
            1 => Some(Self::Started),
            2 => Some(Self::Complete),
            _ => None,
        }
    }
}

/// A shape as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Unique handle.
    pub handle: String,
    /// The serialized definition (opaque).
    pub shape: Vec<u8>,
    /// Bytes equal for equal shapes: at most one live handle per comparable.
    pub comparable: Vec<u8>,
    /// The shape's hash.
    pub hash: i64,
    /// The tables it reads.
    pub relations: Vec<Relation>,
    /// Its snapshot state.
    pub snapshot: SnapshotState,
}

/// What a remove carries: what the removed shape's index entries and rows are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The handle.
    pub handle: String,
    /// Its comparable.
    pub comparable: Vec<u8>,
    /// The oids of its relations.
    pub oids: Vec<u32>,
}

/// One op of the shape registry, as logged.
///
/// Two words, and cheap to clone (a reference count at most): the buffer keeps each op by
/// value, and the flusher clones the ops of each batch it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeOp {
    /// Add a shape (snapshot not started).
    Add(Arc<Shape>),
    /// Remove a live shape.
    Remove(Arc<Removal>),
    /// Move a live shape's snapshot state forward.
    Mark {
        /// The handle (shared with the overlay's index entry: a thin pointer).
        handle: Arc<String>,
        /// `Started` or `Complete`.
        state: SnapshotState,
    },
    /// Remove every shape.
    Reset,
}

const _: () = assert!(std::mem::size_of::<ShapeOp>() == 2 * std::mem::size_of::<usize>());

/// Record kinds of the registry's ops.
pub mod kind {
    /// [`super::ShapeOp::Add`].
    pub const ADD: u8 = 1;
    /// [`super::ShapeOp::Remove`].
    pub const REMOVE: u8 = 2;
    /// [`super::ShapeOp::Mark`].
    pub const MARK: u8 = 3;
    /// [`super::ShapeOp::Reset`].
    pub const RESET: u8 = 4;
}

impl ShapeOp {
    /// The record kind.
    #[must_use]
    pub fn kind(&self) -> u8 {
        match self {
            Self::Add(_) => kind::ADD,
            Self::Remove(_) => kind::REMOVE,
            Self::Mark { .. } => kind::MARK,
            Self::Reset => kind::RESET,
        }
    }

    /// The handle the op is about (none for a reset).
    #[must_use]
    pub fn handle(&self) -> Option<&str> {
        match self {
            Self::Add(shape) => Some(&shape.handle),
            Self::Remove(removal) => Some(&removal.handle),
            Self::Mark { handle, .. } => Some(handle),
            Self::Reset => None,
        }
    }

    /// Appends the op's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Add(shape) => {
                put_bytes(out, shape.handle.as_bytes());
                put_bytes(out, &shape.comparable);
                out.extend_from_slice(&shape.hash.to_le_bytes());
                encode_relations(&shape.relations, out);
                put_bytes(out, &shape.shape);
            }
            Self::Remove(removal) => {
                put_bytes(out, removal.handle.as_bytes());
                put_bytes(out, &removal.comparable);
                out.extend_from_slice(&(removal.oids.len() as u32).to_le_bytes());
                for oid in &removal.oids {
                    out.extend_from_slice(&oid.to_le_bytes());
                }
            }
            Self::Mark { handle, state } => {
                put_bytes(out, handle.as_bytes());
                out.push(state.code());
            }
            Self::Reset => {}
        }
    }

    /// Decodes an op of `kind` from `payload`.
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown kind, a truncated or over-long payload, a bad string or
    /// a bad state code.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader {
            kind,
            bytes: payload,
        };
        let op = match kind {
            kind::ADD => {
                let handle = reader.string()?;
                let comparable = reader.bytes()?.to_vec();
                let hash = i64::from_le_bytes(reader.array()?);
                let relations = reader.relations()?;
                let shape = reader.bytes()?.to_vec();
                Self::Add(Arc::new(Shape {
                    handle,
                    shape,
                    comparable,
                    hash,
                    relations,
                    snapshot: SnapshotState::NotStarted,
                }))
            }
            kind::REMOVE => {
                let handle = reader.string()?;
                let comparable = reader.bytes()?.to_vec();
                let count = reader.len(4)?;
                let mut oids = Vec::with_capacity(count);
                for _ in 0..count {
                    oids.push(u32::from_le_bytes(reader.array()?));
                }
                Self::Remove(Arc::new(Removal {
                    handle,
                    comparable,
                    oids,
                }))
            }
            kind::MARK => {
                let handle = Arc::new(reader.string()?);
                let [code] = reader.array()?;
                let state = SnapshotState::from_code(code)
                    .filter(|state| *state != SnapshotState::NotStarted)
                    .ok_or(DecodeError::new(kind, "bad snapshot state"))?;
                Self::Mark { handle, state }
            }
            kind::RESET => Self::Reset,
            _ => return Err(DecodeError::new(kind, "unknown shape op kind")),
        };
        if !reader.bytes.is_empty() {
            return Err(DecodeError::new(kind, "trailing bytes after the op"));
        }
        Ok(op)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the encoding of `relations` (also the `relations` column of the `shapes` table).
pub fn encode_relations(relations: &[Relation], out: &mut Vec<u8>) {
    out.extend_from_slice(&(relations.len() as u32).to_le_bytes());
    for relation in relations {
        out.extend_from_slice(&relation.oid.to_le_bytes());
        put_bytes(out, relation.schema.as_bytes());
        put_bytes(out, relation.table.as_bytes());
    }
}

/// Decodes what [`encode_relations`] wrote.
///
/// # Errors
/// [`DecodeError`] (kind 0) for bytes it cannot have written.
pub fn decode_relations(bytes: &[u8]) -> Result<Vec<Relation>, DecodeError> {
    let mut reader = Reader { kind: 0, bytes };
    let relations = reader.relations()?;
    if !reader.bytes.is_empty() {
        return Err(DecodeError::new(0, "trailing bytes after the relations"));
    }
    Ok(relations)
}

struct Reader<'a> {
    kind: u8,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn error(&self, problem: &'static str) -> DecodeError {
        DecodeError::new(self.kind, problem)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(self.error("payload truncated"));
        };
        self.bytes = rest;
        Ok(*head)
    }

    /// A count of items at least `item_len` bytes each, checked against what is left (so a
    /// corrupt count cannot make the decoder allocate beyond the payload).
    fn len(&mut self, item_len: usize) -> Result<usize, DecodeError> {
        let count = u32::from_le_bytes(self.array()?) as usize;
        if count.saturating_mul(item_len) > self.bytes.len() {
            return Err(self.error("length beyond the payload"));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len(1)?;
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    fn name(&mut self) -> Result<Arc<str>, DecodeError> {
        let bytes = self.bytes()?;
        if let Some(name) = recent_name(bytes) {
            return Ok(name);
        }
        let name = std::str::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))?;
        let name = intern_name(name);
        remember_name(&name);
        Ok(name)
    }

    fn relations(&mut self) -> Result<Vec<Relation>, DecodeError> {
        let count = self.len(12)?;
        let mut relations = Vec::with_capacity(count);
        for _ in 0..count {
            let oid = u32::from_le_bytes(self.array()?);
            let schema = self.name()?;
            let table = self.name()?;
            relations.push(Relation { oid, schema, table });
        }
        Ok(relations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ShapeOp> {
        vec![
            ShapeOp::Add(Arc::new(Shape {
                handle: "h-1".into(),
                shape: vec![7; 300],
                comparable: vec![1; 32],
                hash: -42,
                relations: vec![
                    Relation {
                        oid: 16384,
                        schema: "public".into(),
                        table: "items".into(),
                    },
                    Relation {
                        oid: 16390,
                        schema: "public".into(),
                        table: "users".into(),
                    },
                ],
                snapshot: SnapshotState::NotStarted,
            })),
            ShapeOp::Remove(Arc::new(Removal {
                handle: "h-1".into(),
                comparable: vec![1; 32],
                oids: vec![16384, 16390],
            })),
            ShapeOp::Mark {
                handle: Arc::new("h-2".to_owned()),
                state: SnapshotState::Complete,
            },
            ShapeOp::Reset,
        ]
    }

    #[test]
    fn every_op_round_trips() {
        for op in sample() {
            let mut bytes = Vec::new();
            op.encode(&mut bytes);
            assert_eq!(ShapeOp::decode(op.kind(), &bytes), Ok(op));
        }
    }

    /// The log format, pinned: every kind's encoding, byte for byte (a change to the op
    /// types must not change what is on disk), and the bytes decode back to the op.
    #[test]
    fn every_kind_encodes_to_the_pinned_bytes() {
        let le = |n: u32| n.to_le_bytes();
        let cat = |parts: &[&[u8]]| parts.concat();
        let add = ShapeOp::Add(Arc::new(Shape {
            handle: "h-1".into(),
            shape: vec![7, 8],
            comparable: vec![0xab, 0xcd],
            hash: -42,
            relations: vec![Relation {
                oid: 16384,
                schema: "public".into(),
                table: "items".into(),
            }],
            snapshot: SnapshotState::NotStarted,
        }));
        let cases = [
            (
                add,
                kind::ADD,
                cat(&[
                    &le(3),
                    b"h-1",
                    &le(2),
                    &[0xab, 0xcd],
                    &(-42i64).to_le_bytes(),
                    &le(1),
                    &le(16384),
                    &le(6),
                    b"public",
                    &le(5),
                    b"items",
                    &le(2),
                    &[7, 8],
                ]),
            ),
            (
                ShapeOp::Remove(Arc::new(Removal {
                    handle: "h-1".into(),
                    comparable: vec![0xab, 0xcd],
                    oids: vec![16384, 16390],
                })),
                kind::REMOVE,
                cat(&[
                    &le(3),
                    b"h-1",
                    &le(2),
                    &[0xab, 0xcd],
                    &le(2),
                    &le(16384),
                    &le(16390),
                ]),
            ),
            (
                ShapeOp::Mark {
                    handle: Arc::new("h-2".to_owned()),
                    state: SnapshotState::Complete,
                },
                kind::MARK,
                cat(&[&le(3), b"h-2", &[2]]),
            ),
            (
                ShapeOp::Mark {
                    handle: Arc::new("h-3".to_owned()),
                    state: SnapshotState::Started,
                },
                kind::MARK,
                cat(&[&le(3), b"h-3", &[1]]),
            ),
            (ShapeOp::Reset, kind::RESET, Vec::new()),
        ];
        for (op, kind, pinned) in cases {
            assert_eq!(op.kind(), kind, "{op:?}");
            let mut bytes = Vec::new();
            op.encode(&mut bytes);
            assert_eq!(bytes, pinned, "{op:?}");
            assert_eq!(ShapeOp::decode(kind, &pinned), Ok(op));
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for op in sample() {
            let mut bytes = Vec::new();
            op.encode(&mut bytes);
            for len in 0..bytes.len() {
                assert!(
                    ShapeOp::decode(op.kind(), &bytes[..len]).is_err(),
                    "{op:?} at {len}"
                );
            }
            bytes.push(0);
            assert!(ShapeOp::decode(op.kind(), &bytes).is_err());
        }
        assert!(ShapeOp::decode(99, &[]).is_err());
    }

    #[test]
    fn a_huge_count_does_not_allocate() {
        let bytes = [0xff, 0xff, 0xff, 0xff];
        assert!(decode_relations(&bytes).is_err());
    }

    #[test]
    fn decoded_names_are_shared_and_still_checked() {
        let relations = |schema: &[u8], table: &[u8]| {
            let mut bytes = 1u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(&7u32.to_le_bytes());
            for name in [schema, table] {
                put_bytes(&mut bytes, name);
            }
            decode_relations(&bytes)
        };
        let first = relations(b"public", b"items").expect("decodes");
        let again = relations(b"public", b"items").expect("decodes");
        assert!(Arc::ptr_eq(&first[0].schema, &again[0].schema));
        assert!(Arc::ptr_eq(&first[0].table, &again[0].table));
        assert_eq!(&*again[0].table, "items");
        // Not a recent name: checked as UTF-8 (same length as one, to be sure).
        assert!(relations(b"public", b"ite\xffs").is_err());
        // More distinct names than a thread keeps at hand: still right.
        for round in 0..3 {
            for table in 0..(RECENT_NAMES + 3) {
                let name = format!("t{table}");
                let decoded = relations(b"public", name.as_bytes()).expect("decodes");
                assert_eq!(&*decoded[0].table, name, "round {round}");
            }
        }
    }
}
