//! The registry's in-memory indexes over buffered ops: by handle, by comparable, by relation
//! oid, and the buffered resets. Every entry's key ends with the op key that wrote it, so
//! that a reader can pick the latest version visible to it and the flusher can remove
//! exactly the entries of the ops it committed (compare-and-delete by construction).
//!
//! All lookups are O(log n) in the number of buffered ops; none scans the buffer.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::op::{Removal, Shape, ShapeOp, SnapshotState};

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

/// Shards of each hash index: writers and readers of different keys rarely meet.
const SHARDS: usize = 32;

/// Versions of one key, in op-key order: usually one, kept inline without an allocation.
type Versions<V> = SmallVec<[(u64, V); 1]>;

/// One key of a [`VersionIndex`], with its hash: growing a table moves entries by their
/// stored hash and never reads the key again (a key points into a shape elsewhere in
/// memory, so hashing it again was a cache miss or two per entry at every growth).
struct Entry<K, V> {
    hash: u64,
    key: K,
    versions: Versions<V>,
}

/// The shard of a key's hash: bits that the table itself does not use for the bucket (the low
/// bits) or the tag (the top seven).
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

/// The shard of the relations index that holds `oid`.
fn relation_shard_of(oid: u32) -> usize {
    oid as usize % SHARDS
}

/// A sharded hash index from a key to its buffered versions.
struct VersionIndex<K, V> {
    state: foldhash::fast::RandomState,
    shards: [RwLock<HashTable<Entry<K, V>>>; SHARDS],
}

impl<K: Hash + Eq, V> Default for VersionIndex<K, V> {
    fn default() -> Self {
        Self {
            state: foldhash::fast::RandomState::default(),
            shards: std::array::from_fn(|_| RwLock::new(HashTable::new())),
        }
    }
}

impl<K: Hash + Eq, V> VersionIndex<K, V> {
    /// The hash of a key, and the shard it lives in. The shard is picked by bits that the
    /// table itself does not use for the bucket (the low bits) or the tag (the top seven).
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &RwLock<HashTable<Entry<K, V>>>) {
        let hash = self.state.hash_one(key);
        (hash, &self.shards[shard_of(hash)])
    }

    fn insert(&self, key: K, op_key: u64, value: V) {
        let (hash, shard) = self.locate(&key);
        Self::insert_hashed(&mut shard.write(), hash, key, op_key, value);
    }

    /// Inserts many versions, in order, taking each shard's lock once (replay: a lock per
    /// insert is a fence that keeps the processor from overlapping the cache misses of
    /// successive inserts, and cost about as much again as the inserts themselves).
    fn insert_many(&self, versions: impl IntoIterator<Item = (K, u64, V)>) {
        let versions = versions.into_iter();
        // Keys spread evenly over the shards; an eighth more absorbs the unevenness.
        let per_shard = versions.size_hint().0 / SHARDS;
        let mut by_shard: [Vec<(u64, K, u64, V)>; SHARDS] =
            std::array::from_fn(|_| Vec::with_capacity(per_shard + per_shard / 8));
        for (key, op_key, value) in versions {
            let hash = self.state.hash_one(&key);
            by_shard[shard_of(hash)].push((hash, key, op_key, value));
        }
        for (shard, versions) in self.shards.iter().zip(by_shard) {
            if versions.is_empty() {
                continue;
            }
            let mut shard = shard.write();
            for (hash, key, op_key, value) in versions {
                Self::insert_hashed(&mut shard, hash, key, op_key, value);
            }
        }
    }

    fn insert_hashed(shard: &mut HashTable<Entry<K, V>>, hash: u64, key: K, op_key: u64, value: V) {
        match shard.entry(hash, |entry| entry.key == key, |entry| entry.hash) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let versions = &mut occupied.get_mut().versions;
                // Keys are submitted in order, so this is an append except during replay
                // races.
                let position = versions.partition_point(|(existing, _)| *existing < op_key);
                versions.insert(position, (op_key, value));
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let mut versions = Versions::new();
                versions.push((op_key, value));
                vacant.insert(Entry {
                    hash,
                    key,
                    versions,
                });
            }
        }
    }

    /// Removes exactly the version written by `op_key` (compare-and-delete).
    fn remove<Q>(&self, key: &Q, op_key: u64)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.write();
        if let Ok(mut occupied) = shard.find_entry(hash, |entry| entry.key.borrow() == key) {
            let versions = &mut occupied.get_mut().versions;
            versions.retain(|(existing, _)| *existing != op_key);
            if versions.is_empty() {
                occupied.remove();
            }
        }
    }

    /// Calls `visit` with the versions of `key` in `(floor, view]`, newest first, until it
    /// returns `Some`.
    fn find_latest<Q, T>(
        &self,
        key: &Q,
        floor: u64,
        view: u64,
        mut visit: impl FnMut(&V) -> Option<T>,
    ) -> Option<T>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let shard = shard.read();
        let entry = shard.find(hash, |entry| entry.key.borrow() == key)?;
        entry
            .versions
            .iter()
            .rev()
            .filter(|(op_key, _)| *op_key <= view && *op_key > floor)
            .find_map(|(_, value)| visit(value))
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    /// Reserves room for `entries` keys in all, spread evenly over the shards, if the
    /// allocator gives it.
    fn reserve_total(&self, entries: usize) {
        let per_shard = entries.div_ceil(SHARDS);
        for shard in &self.shards {
            let mut shard = shard.write();
            let more = per_shard.saturating_sub(shard.len());
            let _ = shard.try_reserve(more, |entry| entry.hash);
        }
    }
}

/// oid → the buffered adds reading it.
type RelationShard = HashMap<u32, OpKeyOrdered<HandleKey>, foldhash::fast::RandomState>;

/// Values in op-key order. Ops are indexed in op-key order and flushed in op-key order, so
/// entries arrive at the back and leave from the front: both O(1). (A release of a failed
/// append removes from the back; anything else costs a binary search and a shift.) A single
/// value — an oid that one buffered shape reads, the common case — is kept inline, without
/// allocating a queue.
#[derive(Debug, Default)]
enum OpKeyOrdered<T> {
    #[default]
    Empty,
    One((u64, T)),
    Many(VecDeque<(u64, T)>),
}

impl<T> OpKeyOrdered<T> {
    /// Adds `value` under `op_key`, unless `op_key` is already there.
    fn insert(&mut self, op_key: u64, value: T) {
        let entry = (op_key, value);
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(entry),
            Self::One(first) if first.0 == op_key => Self::One(first),
            Self::One(first) => {
                let mut entries = VecDeque::with_capacity(4);
                if first.0 < op_key {
                    entries.extend([first, entry]);
                } else {
                    entries.extend([entry, first]);
                }
                Self::Many(entries)
            }
            Self::Many(mut entries) => {
                match entries.back() {
                    Some((last, _)) if *last < op_key => entries.push_back(entry),
                    None => entries.push_back(entry),
                    Some(_) => {
                        if let Err(position) = entries.binary_search_by_key(&op_key, |(k, _)| *k) {
                            entries.insert(position, entry);
                        }
                    }
                }
                Self::Many(entries)
            }
        };
    }

    /// Removes the entry of `op_key`, if any.
    fn remove(&mut self, op_key: u64) {
        match self {
            Self::Empty => {}
            Self::One((first, _)) => {
                if *first == op_key {
                    *self = Self::Empty;
                }
            }
            Self::Many(entries) => {
                if entries.front().is_some_and(|(first, _)| *first == op_key) {
                    entries.pop_front();
                } else if let Ok(position) = entries.binary_search_by_key(&op_key, |(k, _)| *k) {
                    entries.remove(position);
                }
                if entries.is_empty() {
                    *self = Self::Empty;
                }
            }
        }
    }

    /// The values with op keys in `(floor, view]`.
    fn range(&self, floor: u64, view: u64) -> impl Iterator<Item = &T> {
        let empty: &[(u64, T)] = &[];
        let (front, back) = match self {
            Self::Empty => (empty, empty),
            Self::One(entry) => (std::slice::from_ref(entry), empty),
            Self::Many(entries) => entries.as_slices(),
        };
        // Both halves are in op-key order, the front one below the back one.
        within(front, floor, view)
            .iter()
            .chain(within(back, floor, view))
            .map(|(_, value)| value)
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::One(_) => false,
            Self::Many(entries) => entries.is_empty(),
        }
    }
}

/// The entries of `entries` (in op-key order) with op keys in `(floor, view]`.
fn within<T>(entries: &[(u64, T)], floor: u64, view: u64) -> &[(u64, T)] {
    let start = entries.partition_point(|(k, _)| *k <= floor);
    let end = entries.partition_point(|(k, _)| *k <= view).max(start);
    entries.get(start..end).unwrap_or_default()
}

/// A handle as an index key: the op's own (an add's shape, a remove's removal, a mark's
/// handle: shared, never copied), or an owned one for lookups. Hashes and compares as the
/// string. A key may keep its op's data alive a little longer than the op's own entry: until
/// the last version of the handle leaves the index.
///
/// Every variant is a thin pointer, so a key is two words (an `Arc<str>` would make it three,
/// in every entry of three indexes and of the ordered list of adds).
#[derive(Debug, Clone)]
enum HandleKey {
    Shape(Arc<Shape>),
    Removal(Arc<Removal>),
    Owned(Arc<String>),
}

const _: () = assert!(std::mem::size_of::<HandleKey>() == 2 * std::mem::size_of::<usize>());

impl HandleKey {
    fn owned(handle: &str) -> Self {
        Self::Owned(Arc::new(handle.to_owned()))
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Shape(shape) => &shape.handle,
            Self::Removal(removal) => &removal.handle,
            Self::Owned(handle) => handle,
        }
    }
}

impl Hash for HandleKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for HandleKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HandleKey {}

impl std::borrow::Borrow<str> for HandleKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// A comparable as an index key, like [`HandleKey`].
#[derive(Debug, Clone)]
enum ComparableKey {
    Shape(Arc<Shape>),
    Removal(Arc<Removal>),
}

const _: () = assert!(std::mem::size_of::<ComparableKey>() == 2 * std::mem::size_of::<usize>());

impl ComparableKey {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Shape(shape) => &shape.comparable,
            Self::Removal(removal) => &removal.comparable,
        }
    }
}

impl Hash for ComparableKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for ComparableKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ComparableKey {}

impl std::borrow::Borrow<[u8]> for ComparableKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// A buffered add in the listing order: by handle, then op key. The handle's first eight
/// bytes, big-endian, are kept beside it, so that most comparisons in the ordered set are
/// one integer comparison instead of a string comparison through a pointer.
#[derive(Debug, Clone)]
struct AddedKey {
    prefix: u64,
    handle: HandleKey,
    op_key: u64,
}

impl AddedKey {
    fn new(handle: HandleKey, op_key: u64) -> Self {
        let mut prefix = [0u8; 8];
        let len = handle.as_str().len().min(8);
        prefix[..len].copy_from_slice(&handle.as_str().as_bytes()[..len]);
        Self {
            prefix: u64::from_be_bytes(prefix),
            handle,
            op_key,
        }
    }
}

impl Ord for AddedKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Zero-padded big-endian prefixes order like the strings they start (a shorter
        // string that is a prefix of a longer one compares less or equal, never greater),
        // so the full comparison only breaks ties.
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.handle.as_str().cmp(other.handle.as_str()))
            .then(self.op_key.cmp(&other.op_key))
    }
}

impl PartialOrd for AddedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for AddedKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for AddedKey {}

/// The registry's overlay.
#[derive(Default)]
pub struct ShapeOverlay {
    /// handle → versions (adds, removes, marks).
    handles: VersionIndex<HandleKey, HandleVersion>,
    /// comparable → versions (the handle holding it, or `None` once released).
    comparables: VersionIndex<ComparableKey, Option<HandleKey>>,
    /// oid → the buffered adds reading it.
    relations: [RwLock<RelationShard>; SHARDS],
    /// Buffered adds in handle order, for listings.
    added: RwLock<BTreeSet<AddedKey>>,
    /// Replayed adds awaiting [`ShapeOverlay::finish_replay`], which builds them into `added`
    /// in one go (inserting them one by one, at random places in the ordered set, cost
    /// several times more).
    replayed_adds: Mutex<Vec<AddedKey>>,
    resets: SkipMap<u64, ()>,
    /// Every handle and comparable that may be in SQLite.
    pub(crate) presence: Presence,
}

/// A set of hashes of every handle and comparable that SQLite may hold: loaded from SQLite
/// on open, extended by every add before it can reach SQLite, never shrunk (a removed key
/// only costs a SQLite lookup). A key whose hash is absent is certainly not in SQLite, so
/// the common case — adding a new shape — validates without reading SQLite.
/// Handles and comparables are kept apart, so that replay can extend both at once from two
/// threads.
#[derive(Default)]
pub(crate) struct Presence {
    state: foldhash::fast::RandomState,
    handles: RwLock<HashSet<u64, BuildHasherDefault<IdentityHasher>>>,
    comparables: RwLock<HashSet<u64, BuildHasherDefault<IdentityHasher>>>,
    /// How many handles and comparables each set held (loaded from SQLite) when replay first
    /// reserved room in them.
    loaded_before_replay: Mutex<Option<(usize, usize)>>,
}

/// The hashes are already uniform: hash them as themselves.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl Presence {
    fn hash(&self, tag: u8, key: &[u8]) -> u64 {
        let mut hasher = self.state.build_hasher();
        hasher.write_u8(tag);
        hasher.write(key);
        hasher.finish()
    }

    /// Records that `handle` and `comparable` may be in SQLite.
    pub(crate) fn insert(&self, handle: &str, comparable: &[u8]) {
        self.insert_handle(handle);
        self.insert_comparable(comparable);
    }

    /// Records that `handle` may be in SQLite.
    fn insert_handle(&self, handle: &str) {
        let hash = self.hash(b'h', handle.as_bytes());
        self.handles.write().insert(hash);
    }

    /// Records that `comparable` may be in SQLite.
    fn insert_comparable(&self, comparable: &[u8]) {
        let hash = self.hash(b'c', comparable);
        self.comparables.write().insert(hash);
    }

    /// Records that each of `handles` may be in SQLite, under one hold of the lock.
    fn insert_handles<'a>(&self, handles: impl Iterator<Item = &'a str>) {
        let hashes: Vec<u64> = handles
            .map(|handle| self.hash(b'h', handle.as_bytes()))
            .collect();
        self.handles.write().extend(hashes);
    }

    /// Reserves room for `keys` replayed handles and as many comparables, beside the keys
    /// each set held when the first reservation came (those loaded from SQLite).
    fn reserve_replayed(&self, keys: usize) {
        let (handles, comparables) = *self
            .loaded_before_replay
            .lock()
            .get_or_insert_with(|| (self.handles.read().len(), self.comparables.read().len()));
        for (set, loaded) in [(&self.handles, handles), (&self.comparables, comparables)] {
            let mut set = set.write();
            let more = loaded.saturating_add(keys).saturating_sub(set.len());
            let _ = set.try_reserve(more);
        }
    }

    /// Records that each of `comparables` may be in SQLite, under one hold of the lock.
    fn insert_comparables<'a>(&self, comparables: impl Iterator<Item = &'a [u8]>) {
        let hashes: Vec<u64> = comparables
            .map(|comparable| self.hash(b'c', comparable))
            .collect();
        self.comparables.write().extend(hashes);
    }

    /// Whether SQLite may hold `handle`.
    pub(crate) fn may_hold_handle(&self, handle: &str) -> bool {
        self.handles
            .read()
            .contains(&self.hash(b'h', handle.as_bytes()))
    }

    /// Whether SQLite may hold `comparable`.
    pub(crate) fn may_hold_comparable(&self, comparable: &[u8]) -> bool {
        self.comparables
            .read()
            .contains(&self.hash(b'c', comparable))
    }
}

impl std::fmt::Debug for ShapeOverlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapeOverlay")
            .field("handles", &self.handles.len())
            .field("resets", &self.resets.len())
            .finish_non_exhaustive()
    }
}

impl ShapeOverlay {
    fn relation_shard(&self, oid: u32) -> &RwLock<RelationShard> {
        &self.relations[relation_shard_of(oid)]
    }

    pub(crate) fn index(&self, op_key: u64, op: &ShapeOp) {
        match op {
            ShapeOp::Add(shape) => {
                self.presence.insert(&shape.handle, &shape.comparable);
                // Every index's key points into the shape itself: no copies.
                let handle = HandleKey::Shape(Arc::clone(shape));
                self.handles.insert(
                    handle.clone(),
                    op_key,
                    HandleVersion::Added(Arc::clone(shape)),
                );
                self.comparables.insert(
                    ComparableKey::Shape(Arc::clone(shape)),
                    op_key,
                    Some(handle.clone()),
                );
                for relation in &shape.relations {
                    self.relation_shard(relation.oid)
                        .write()
                        .entry(relation.oid)
                        .or_default()
                        .insert(op_key, handle.clone());
                }
                self.added.write().insert(AddedKey::new(handle, op_key));
            }
            ShapeOp::Remove(removal) => {
                self.handles.insert(
                    HandleKey::Removal(Arc::clone(removal)),
                    op_key,
                    HandleVersion::Removed,
                );
                self.comparables
                    .insert(ComparableKey::Removal(Arc::clone(removal)), op_key, None);
            }
            ShapeOp::Mark { handle, state } => {
                self.handles.insert(
                    HandleKey::Owned(Arc::clone(handle)),
                    op_key,
                    HandleVersion::Marked(*state),
                );
            }
            ShapeOp::Reset => {
                self.resets.insert(op_key, ());
            }
        }
    }

    /// Indexes part `part` of replayed `ops` (see [`crate::Schema::index_replayed`]): part 0
    /// the handles (their presence, their versions, resets, and the adds to list, which
    /// [`ShapeOverlay::finish_replay`] builds into the ordered set), part 1 the comparables
    /// (their presence and versions) and the relations. Each index's entries of the chunk are
    /// gathered first and inserted shard by shard, under one hold of each shard's lock.
    pub(crate) fn index_replayed<'op>(
        &self,
        part: usize,
        ops: impl Iterator<Item = (u64, &'op ShapeOp)>,
    ) {
        // The chunk's entries are gathered into vectors sized for it up front: grown step by
        // step, each growth copies them to fresh memory.
        let chunk_ops = ops.size_hint().0;
        if part == 0 {
            let mut versions = Vec::with_capacity(chunk_ops);
            let mut replayed_adds = Vec::with_capacity(chunk_ops);
            for (op_key, op) in ops {
                match op {
                    ShapeOp::Add(shape) => {
                        let handle = HandleKey::Shape(Arc::clone(shape));
                        versions.push((
                            handle.clone(),
                            op_key,
                            HandleVersion::Added(Arc::clone(shape)),
                        ));
                        replayed_adds.push(AddedKey::new(handle, op_key));
                    }
                    ShapeOp::Remove(removal) => {
                        versions.push((
                            HandleKey::Removal(Arc::clone(removal)),
                            op_key,
                            HandleVersion::Removed,
                        ));
                    }
                    ShapeOp::Mark { handle, state } => {
                        versions.push((
                            HandleKey::Owned(Arc::clone(handle)),
                            op_key,
                            HandleVersion::Marked(*state),
                        ));
                    }
                    ShapeOp::Reset => {
                        self.resets.insert(op_key, ());
                    }
                }
            }
            self.presence
                .insert_handles(replayed_adds.iter().map(|added| added.handle.as_str()));
            self.handles.insert_many(versions);
            self.stage_replayed_adds(replayed_adds);
        } else {
            let mut versions = Vec::with_capacity(chunk_ops);
            // Two relations per add is typical; a shard's vector grows past that if need be.
            let mut relations: [Vec<(u32, u64, HandleKey)>; SHARDS] =
                std::array::from_fn(|_| Vec::with_capacity(2 * chunk_ops / SHARDS));
            for (op_key, op) in ops {
                match op {
                    ShapeOp::Add(shape) => {
                        let handle = HandleKey::Shape(Arc::clone(shape));
                        for relation in &shape.relations {
                            relations[relation_shard_of(relation.oid)].push((
                                relation.oid,
                                op_key,
                                handle.clone(),
                            ));
                        }
                        versions.push((
                            ComparableKey::Shape(Arc::clone(shape)),
                            op_key,
                            Some(handle),
                        ));
                    }
                    ShapeOp::Remove(removal) => {
                        versions.push((ComparableKey::Removal(Arc::clone(removal)), op_key, None));
                    }
                    ShapeOp::Mark { .. } | ShapeOp::Reset => {}
                }
            }
            self.presence.insert_comparables(
                versions
                    .iter()
                    .filter(|(_, _, holder)| holder.is_some())
                    .map(|(comparable, _, _)| comparable.as_bytes()),
            );
            self.comparables.insert_many(versions);
            for (shard, entries) in self.relations.iter().zip(relations) {
                if entries.is_empty() {
                    continue;
                }
                let mut shard = shard.write();
                for (oid, op_key, handle) in entries {
                    shard.entry(oid).or_default().insert(op_key, handle);
                }
            }
        }
    }

    /// Keeps a chunk's replayed adds for [`ShapeOverlay::finish_replay`], sorted: the final
    /// sort then merges sorted runs, and the sorting of each chunk is done on an indexing
    /// thread while the replay goes on.
    fn stage_replayed_adds(&self, mut adds: Vec<AddedKey>) {
        adds.sort_unstable();
        self.replayed_adds.lock().append(&mut adds);
    }

    /// Reserves room for about `ops` replayed adds in all, in the indexes with an entry per
    /// add (see [`crate::Schema::reserve_replayed`]): handles, comparables, their presence
    /// filters and the staged adds. Not the relations index: it has an entry per distinct
    /// oid, and shapes usually share a few tables. Only a hint: a reservation the allocator
    /// refuses is skipped, and the indexes grow as they go.
    pub(crate) fn reserve_replayed(&self, ops: usize) {
        self.handles.reserve_total(ops);
        self.comparables.reserve_total(ops);
        self.presence.reserve_replayed(ops);
        let mut staged = self.replayed_adds.lock();
        let more = ops.saturating_sub(staged.len());
        let _ = staged.try_reserve_exact(more);
    }

    /// Replayed adds the staging vector has room for (tests of the reservation).
    #[cfg(test)]
    pub(crate) fn staged_adds_capacity(&self) -> usize {
        self.replayed_adds.lock().capacity()
    }

    /// Adds the replayed adds to the ordered set of adds, in one bulk build.
    pub(crate) fn finish_replay(&self) {
        let mut replayed_adds = std::mem::take(&mut *self.replayed_adds.lock());
        if replayed_adds.is_empty() {
            return;
        }
        // A stable sort merges the sorted runs of the chunks. Collecting a sorted vector
        // builds the tree in linear time; appending it to an empty set (the usual case) only
        // swaps the two.
        replayed_adds.sort();
        let mut built: BTreeSet<AddedKey> = replayed_adds.into_iter().collect();
        self.added.write().append(&mut built);
    }

    pub(crate) fn unindex(&self, op_key: u64, op: &ShapeOp) {
        match op {
            ShapeOp::Add(shape) => {
                self.handles.remove(shape.handle.as_str(), op_key);
                self.comparables.remove(shape.comparable.as_slice(), op_key);
                for relation in &shape.relations {
                    let mut shard = self.relation_shard(relation.oid).write();
                    if let Some(handles) = shard.get_mut(&relation.oid) {
                        handles.remove(op_key);
                        if handles.is_empty() {
                            shard.remove(&relation.oid);
                        }
                    }
                }
                self.added
                    .write()
                    .remove(&AddedKey::new(HandleKey::Shape(Arc::clone(shape)), op_key));
            }
            ShapeOp::Remove(removal) => {
                self.handles.remove(removal.handle.as_str(), op_key);
                self.comparables
                    .remove(removal.comparable.as_slice(), op_key);
            }
            ShapeOp::Mark { handle, .. } => {
                self.handles.remove(handle.as_str(), op_key);
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
    pub(crate) fn resolve(&self, handle: &str, view: u64) -> Resolved<Arc<Shape>> {
        let reset = self.reset_at(view);
        self.resolve_after(handle, view, reset)
    }

    /// As [`ShapeOverlay::resolve`], with the latest reset already looked up.
    pub(crate) fn resolve_after(
        &self,
        handle: &str,
        view: u64,
        reset: Option<u64>,
    ) -> Resolved<Arc<Shape>> {
        // Versions strictly after the reset count (a reset's own key holds no version).
        let floor = reset.unwrap_or(0);
        let mut mark: Option<SnapshotState> = None;
        let found = self
            .handles
            .find_latest(handle, floor, view, |version| match version {
                HandleVersion::Added(shape) => Some(Resolved::Live(match mark {
                    // A later mark moved the snapshot state on: a copy carries it.
                    Some(mark) if mark > shape.snapshot => Arc::new(Shape {
                        snapshot: mark,
                        ..Shape::clone(shape)
                    }),
                    _ => Arc::clone(shape),
                })),
                HandleVersion::Removed => Some(Resolved::Gone),
                HandleVersion::Marked(state) => {
                    mark = Some(mark.map_or(*state, |mark| mark.max(*state)));
                    None
                }
            });
        match found {
            Some(resolved) => resolved,
            None if reset.is_some() => Resolved::Gone,
            None => Resolved::Sqlite { mark },
        }
    }

    /// What the overlay says about the handle holding `comparable` as of `view`.
    pub(crate) fn resolve_comparable(&self, comparable: &[u8], view: u64) -> Resolved<String> {
        let reset = self.reset_at(view);
        let found = self
            .comparables
            .find_latest(comparable, reset.unwrap_or(0), view, |holder| {
                Some(holder.as_ref().map(|holder| holder.as_str().to_owned()))
            });
        match found {
            Some(Some(handle)) => Resolved::Live(handle),
            Some(None) => Resolved::Gone,
            None if reset.is_some() => Resolved::Gone,
            None => Resolved::Sqlite { mark: None },
        }
    }

    /// Handles with a buffered add (visible at `view`, after the latest reset) reading a
    /// table with `oid`: candidates, to be confirmed by resolving each.
    pub(crate) fn handles_with_oid(&self, oid: u32, view: u64, out: &mut Vec<String>) {
        let floor = self.reset_at(view).unwrap_or(0);
        let shard = self.relation_shard(oid).read();
        if let Some(handles) = shard.get(&oid) {
            out.extend(
                handles
                    .range(floor, view)
                    .map(|handle| handle.as_str().to_owned()),
            );
        }
    }

    /// The first handle after `after` (or the first at all) with a buffered add.
    pub(crate) fn next_added_handle(&self, after: Option<&str>) -> Option<String> {
        let added = self.added.read();
        let next = match after {
            Some(after) => added
                .range((
                    Bound::Excluded(AddedKey::new(HandleKey::owned(after), u64::MAX)),
                    Bound::Unbounded,
                ))
                .next(),
            None => added.iter().next(),
        };
        next.map(|key| key.handle.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(ordered: &OpKeyOrdered<u32>, floor: u64, view: u64) -> Vec<u32> {
        ordered.range(floor, view).copied().collect()
    }

    #[test]
    fn op_key_ordered_keeps_op_key_order_from_one_entry_to_many() {
        let mut ordered = OpKeyOrdered::default();
        assert!(ordered.is_empty());
        ordered.insert(5, 50);
        ordered.insert(5, 51);
        assert_eq!(values(&ordered, 0, u64::MAX), vec![50]);
        assert_eq!(values(&ordered, 5, u64::MAX), Vec::<u32>::new());
        assert_eq!(values(&ordered, 0, 4), Vec::<u32>::new());
        // Below the one entry, then at the back, then in the middle.
        ordered.insert(3, 30);
        ordered.insert(9, 90);
        ordered.insert(7, 70);
        ordered.insert(7, 71);
        assert_eq!(values(&ordered, 0, u64::MAX), vec![30, 50, 70, 90]);
        assert_eq!(values(&ordered, 3, 7), vec![50, 70]);
        ordered.remove(3);
        ordered.remove(7);
        ordered.remove(8);
        assert_eq!(values(&ordered, 0, u64::MAX), vec![50, 90]);
        ordered.remove(5);
        ordered.remove(9);
        assert!(ordered.is_empty());
        ordered.insert(1, 10);
        ordered.remove(2);
        assert_eq!(values(&ordered, 0, 1), vec![10]);
        ordered.remove(1);
        assert!(ordered.is_empty());
    }

    #[test]
    fn op_key_ordered_ranges_across_a_wrapped_queue() {
        let mut ordered = OpKeyOrdered::default();
        for op_key in 1..=6 {
            ordered.insert(op_key, op_key as u32);
        }
        // Leave from the front and arrive at the back until the queue wraps around.
        for op_key in 1..=4 {
            ordered.remove(op_key);
            ordered.insert(op_key + 6, (op_key + 6) as u32);
        }
        assert_eq!(values(&ordered, 0, u64::MAX), vec![5, 6, 7, 8, 9, 10]);
        assert_eq!(values(&ordered, 6, 9), vec![7, 8, 9]);
        assert_eq!(values(&ordered, 4, 5), vec![5]);
        assert_eq!(values(&ordered, 10, 20), Vec::<u32>::new());
    }

    #[test]
    fn version_index_finds_and_removes_exact_versions() {
        let index: VersionIndex<String, u32> = VersionIndex::default();
        for key in 0..1000u32 {
            index.insert(format!("k{key}"), u64::from(key) + 1, key);
        }
        index.insert("k7".to_owned(), 2000, 7000);
        assert_eq!(index.len(), 1000);
        let latest = |key: &str, view: u64| index.find_latest(key, 0, view, |v| Some(*v));
        assert_eq!(latest("k7", u64::MAX), Some(7000));
        assert_eq!(latest("k7", 1999), Some(7));
        assert_eq!(latest("k999", u64::MAX), Some(999));
        assert_eq!(latest("k1000", u64::MAX), None);
        index.remove("k7", 8);
        assert_eq!(latest("k7", 1999), None);
        index.remove("k7", 2000);
        assert_eq!(latest("k7", u64::MAX), None);
        assert_eq!(index.len(), 999);
    }
}
