//! The key–value schema and store of the `kv` example: someone else's ops (put, delete) with
//! their own SQLite table and overlay, on walbuf's generic core.
//!
//! One file, included by the example (`engine/examples/kv/main.rs`) and by the CLI's
//! `engines` benchmark (`cli/src/bench/engines.rs`, feature `compare`), so the benchmark runs
//! exactly the schema the example shows.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use rusqlite::{OptionalExtension, params};
use walbuf::schema::{BatchOp, DecodeError, Schema};
use walbuf::store::{Accepted, RecoveryReport, Store, StoreConfig, Wait};

/// The ops of the key–value schema. Key and value are shared, so that a clone (the
/// flusher's, and the overlay's copy of the value) costs reference counts, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Arc<[u8]>,
        /// The value.
        value: Arc<[u8]>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Arc<[u8]>,
    },
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// A buffered value, or `None` for a delete.
type Version = Option<Arc<[u8]>>;

/// Buffered versions per key: `(key, op key)` → the value, or `None` for a delete.
#[derive(Default)]
pub struct KvOverlay {
    versions: SkipMap<(Vec<u8>, u64), Version>,
}

/// The key–value [`Schema`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KvSchema;

impl Schema for KvSchema {
    type Op = KvOp;
    type Overlay = KvOverlay;
    const NAME: &'static str = "kv";
    const VERSION: u32 = 1;

    fn create_tables(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;",
        )
    }

    fn new_overlay(&self) -> KvOverlay {
        KvOverlay::default()
    }

    fn kind(&self, op: &KvOp) -> u8 {
        match op {
            KvOp::Put { .. } => PUT,
            KvOp::Delete { .. } => DELETE,
        }
    }

    fn encode(&self, op: &KvOp, out: &mut Vec<u8>) {
        match op {
            KvOp::Put { key, value } => {
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            KvOp::Delete { key } => out.extend_from_slice(key),
        }
    }

    fn decode(&self, kind: u8, payload: &[u8]) -> Result<KvOp, DecodeError> {
        match kind {
            PUT => {
                let (len, rest) = payload
                    .split_first_chunk::<4>()
                    .ok_or(DecodeError::new(kind, "truncated key length"))?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > rest.len() {
                    return Err(DecodeError::new(kind, "key beyond the payload"));
                }
                let (key, value) = rest.split_at(len);
                Ok(KvOp::Put {
                    key: Arc::from(key),
                    value: Arc::from(value),
                })
            }
            DELETE => Ok(KvOp::Delete {
                key: Arc::from(payload),
            }),
            _ => Err(DecodeError::new(kind, "unknown kv op")),
        }
    }

    fn index(&self, overlay: &KvOverlay, op_key: u64, op: &KvOp) {
        match op {
            KvOp::Put { key, value } => {
                overlay
                    .versions
                    .insert((key.to_vec(), op_key), Some(Arc::clone(value)));
            }
            KvOp::Delete { key } => {
                overlay.versions.insert((key.to_vec(), op_key), None);
            }
        }
    }

    fn unindex(&self, overlay: &KvOverlay, op_key: u64, op: &KvOp) {
        let (KvOp::Put { key, .. } | KvOp::Delete { key }) = op;
        overlay.versions.remove(&(key.to_vec(), op_key));
    }

    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: &[BatchOp<KvOp>],
    ) -> rusqlite::Result<()> {
        // Last write per key wins; written in key order.
        let mut last = std::collections::BTreeMap::new();
        for (_, op) in batch {
            match op {
                KvOp::Put { key, value } => last.insert(&**key, Some(&**value)),
                KvOp::Delete { key } => last.insert(&**key, None),
            };
        }
        let mut put =
            tx.prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?;
        let mut delete = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for (key, value) in last {
            match value {
                Some(value) => put.execute(params![key, value])?,
                None => delete.execute([key])?,
            };
        }
        Ok(())
    }
}

/// What the overlay knows about a key as of some op key.
enum Buffered {
    Value(Arc<[u8]>),
    Deleted,
    Unknown,
}

/// A key–value store: `put`, `get`, `delete`, `len`.
pub struct KvStore {
    store: Store<KvSchema>,
}

impl KvStore {
    /// Opens (or creates) the store in `directory`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open(directory: &Path, config: StoreConfig) -> walbuf::Result<(Self, RecoveryReport)> {
        let (store, report) = Store::open(directory, KvSchema, config)?;
        Ok((Self { store }, report))
    }

    fn buffered(&self, key: &[u8], view: u64) -> Buffered {
        let low = (key.to_vec(), 0);
        let high = (key.to_vec(), view);
        match self
            .store
            .overlay()
            .versions
            .range((Bound::Included(low), Bound::Included(high)))
            .next_back()
        {
            Some(entry) => match entry.value() {
                Some(value) => Buffered::Value(Arc::clone(value)),
                None => Buffered::Deleted,
            },
            None => Buffered::Unknown,
        }
    }

    fn exists_for<St: walbuf::storage::Storage>(
        validation: &walbuf::store::Validation<'_, KvSchema, St>,
        overlay: &KvOverlay,
        key: &[u8],
    ) -> walbuf::Result<bool> {
        let entry = overlay
            .versions
            .range((
                Bound::Included((key.to_vec(), 0)),
                Bound::Included((key.to_vec(), u64::MAX)),
            ))
            .next_back()
            .map(|entry| entry.value().is_some());
        match entry {
            Some(exists) => Ok(exists),
            None => validation.sqlite("read key", |c| {
                c.prepare_cached("SELECT 1 FROM kv WHERE key = ?1")?
                    .query_row([key], |_| Ok(()))
                    .optional()
                    .map(|row| row.is_some())
            }),
        }
    }

    /// Sets `key` to `value`; durable per the sync policy when it returns.
    ///
    /// # Errors
    /// The store's errors (backpressure, a poisoned log, ...).
    pub fn put(&self, key: &[u8], value: &[u8]) -> walbuf::Result<u64> {
        let (op_key, ()) = self.store.submit(Wait::Block, |validation| {
            let existed = Self::exists_for(validation, validation.overlay(), key)?;
            let live_count_after = validation.live_count() + u64::from(!existed);
            Ok::<_, walbuf::Error>((
                Accepted {
                    op: KvOp::Put {
                        key: Arc::from(key),
                        value: Arc::from(value),
                    },
                    live_count_after,
                },
                (),
            ))
        })?;
        Ok(op_key)
    }

    /// Removes `key` (whether or not it exists); returns whether it existed.
    ///
    /// # Errors
    /// The store's errors.
    pub fn delete(&self, key: &[u8]) -> walbuf::Result<bool> {
        let (_, existed) = self.store.submit(Wait::Block, |validation| {
            let existed = Self::exists_for(validation, validation.overlay(), key)?;
            let live_count_after = validation.live_count() - u64::from(existed);
            Ok::<_, walbuf::Error>((
                Accepted {
                    op: KvOp::Delete {
                        key: Arc::from(key),
                    },
                    live_count_after,
                },
                existed,
            ))
        })?;
        Ok(existed)
    }

    /// The value of `key`: the buffer first, then SQLite.
    ///
    /// # Errors
    /// A SQLite read failed.
    pub fn get(&self, key: &[u8]) -> walbuf::Result<Option<Vec<u8>>> {
        match self.buffered(key, self.store.visible_op_key()) {
            Buffered::Value(value) => Ok(Some(value.to_vec())),
            Buffered::Deleted => Ok(None),
            Buffered::Unknown => self.store.read_sqlite("read key", |c| {
                c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                    .query_row([key], |row| row.get(0))
                    .optional()
            }),
        }
    }

    /// How many keys exist. O(log n).
    ///
    /// # Errors
    /// A SQLite read failed.
    pub fn key_count(&self) -> walbuf::Result<u64> {
        self.store.live_count()
    }

    /// Makes every write so far durable, whatever the sync policy (one log sync for all the
    /// writes since the last one: how a batch of puts under `Periodic` or `None` is
    /// committed).
    ///
    /// # Errors
    /// As [`walbuf::log::Log::sync`].
    pub fn sync(&self) -> walbuf::Result<()> {
        self.store.log().sync()
    }

    /// The store's counters.
    #[must_use]
    pub fn stats(&self) -> walbuf::store::StoreStats {
        self.store.stats()
    }

    /// Stops the flusher and closes the log (see [`Store::close`]).
    ///
    /// # Errors
    /// As [`Store::close`].
    pub fn close(&self) -> walbuf::Result<()> {
        self.store.close()
    }

    /// Waits until every write so far is in SQLite.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub fn flush(&self) -> walbuf::Result<()> {
        self.store.flush()
    }
}
