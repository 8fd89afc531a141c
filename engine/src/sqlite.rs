//! SQLite: the flusher's write connection, the pool of read-only connections, and the core's
//! `walbuf_meta` table (applied op key, live count, schema name).
//!
//! The database runs in WAL mode, so readers never wait for the writer. The write connection
//! runs with `synchronous=FULL`: a commit is durable when it returns, so the flusher may
//! retire log segments right after it (with `NORMAL`, a WAL commit is durable only after a
//! checkpoint). Automatic checkpoints are off by default; the flusher schedules passive ones
//! ([`SqliteConfig::wal_autocheckpoint_pages`] hands them back to SQLite).

use std::cell::Cell;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Error, Result};
use crate::schema::Schema;

/// The core's own tables; `user_version` holds the schema's version.
const CORE_TABLES: &str = "
    CREATE TABLE walbuf_meta (
        name TEXT PRIMARY KEY NOT NULL,
        value NOT NULL
    ) WITHOUT ROWID;
";

/// Version of the core's tables (kept in `walbuf_meta.core_version`).
pub const CORE_VERSION: i64 = 1;

/// What the core keeps in SQLite beside the schema's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Every op at or below this key is in SQLite.
    pub applied_op_key: u64,
    /// Live entities after the applied op.
    pub live_count: u64,
}

/// Settings of the SQLite side of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Page cache of the write connection, in KiB (default 64 MiB).
    pub write_cache_kib: u32,
    /// Page cache of each read connection, in KiB (default 8 MiB).
    pub read_cache_kib: u32,
    /// How long a connection waits for a lock before `SQLITE_BUSY` (default 5 s).
    pub busy_timeout_ms: u32,
    /// Read connections kept open when idle (default 4).
    pub read_pool_size: usize,
    /// SQLite's automatic checkpoints: 0 (the default) turns them off and the flusher runs a
    /// passive checkpoint every `StoreConfig::checkpoint_every_batches` batches, between
    /// batches; N > 0 lets SQLite checkpoint whenever a commit leaves more than N pages in the
    /// WAL (SQLite's own default is 1 000), inside that commit, and the flusher schedules none.
    pub wal_autocheckpoint_pages: u32,
    /// How the schema writes a batch: a switch for measuring the flusher's levers
    /// (`walbuf bench`), not a setting. Default [`BatchWrites::Coalesced`].
    #[doc(hidden)]
    pub batch_writes: BatchWrites,
}

/// How a schema writes a batch (a bench-only switch: see `walbuf bench`'s `flush` group).
/// The shape registry honours it; a schema may ignore it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchWrites {
    /// Ops that cancel are coalesced and rows are written in key order (the default).
    #[default]
    Coalesced,
    /// Coalesced, but rows are written in op-key order (no sorting for key locality).
    CoalescedUnsorted,
    /// Every op written on its own, in op-key order (no coalescing, no sorting).
    EachOp,
}

thread_local! {
    /// The flusher thread's [`BatchWrites`] (set once when it starts).
    static BATCH_WRITES: Cell<BatchWrites> = const { Cell::new(BatchWrites::Coalesced) };
}

/// The [`BatchWrites`] of the calling flusher thread.
#[doc(hidden)]
#[must_use]
pub fn batch_writes() -> BatchWrites {
    BATCH_WRITES.with(Cell::get)
}

/// Sets the calling thread's [`BatchWrites`] (the flusher does, from its configuration).
pub(crate) fn set_batch_writes(writes: BatchWrites) {
    BATCH_WRITES.with(|cell| cell.set(writes));
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            write_cache_kib: 64 * 1024,
            read_cache_kib: 8 * 1024,
            busy_timeout_ms: 5000,
            read_pool_size: 4,
            wal_autocheckpoint_pages: 0,
            batch_writes: BatchWrites::Coalesced,
        }
    }
}

/// Opens (creating if needed) the database at `path` for writing, checks its schema and
/// version, and returns the connection and the core's meta.
///
/// # Errors
/// [`Error::Sqlite`]; [`Error::IncompatibleDatabase`] when the file holds another schema or a
/// newer version.
pub fn open_writer<S: Schema>(
    path: &Path,
    schema: &S,
    config: &SqliteConfig,
) -> Result<(Connection, Meta)> {
    let sqlite = |operation| move |source| Error::sqlite(operation, path, source);
    let mut connection = Connection::open(path).map_err(sqlite("open database"))?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = {};
             PRAGMA cache_size = -{};
             PRAGMA busy_timeout = {};",
            config.wal_autocheckpoint_pages, config.write_cache_kib, config.busy_timeout_ms
        ))
        .map_err(sqlite("configure database"))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite("read user_version"))?;
    let expected = format!("{} v{}", S::NAME, S::VERSION);
    if version == 0 {
        let tx = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite("begin schema creation"))?;
        let created: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE name = 'walbuf_meta'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite("inspect database"))?;
        if created.is_some() {
            return Err(Error::IncompatibleDatabase {
                path: path.to_path_buf(),
                found: "walbuf tables without a schema version".into(),
                expected,
            });
        }
        tx.execute_batch(CORE_TABLES)
            .map_err(sqlite("create core tables"))?;
        schema
            .create_tables(&tx)
            .map_err(sqlite("create schema tables"))?;
        tx.execute(
            "INSERT INTO walbuf_meta (name, value) VALUES
                 ('core_version', ?1), ('schema', ?2), ('applied_op_key', 0), ('live_count', 0)",
            rusqlite::params![CORE_VERSION, S::NAME],
        )
        .map_err(sqlite("initialise walbuf_meta"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", S::VERSION))
            .map_err(sqlite("set user_version"))?;
        tx.commit().map_err(sqlite("commit schema creation"))?;
        tracing::info!(path = %path.display(), schema = S::NAME, version = S::VERSION, "created database");
    } else {
        let name: Option<String> = connection
            .query_row(
                "SELECT value FROM walbuf_meta WHERE name = 'schema'",
                [],
                |row| row.get(0),
            )
            .optional()
            .unwrap_or(None);
        if version != i64::from(S::VERSION) || name.as_deref() != Some(S::NAME) {
            return Err(Error::IncompatibleDatabase {
                path: path.to_path_buf(),
                found: format!("{} v{version}", name.as_deref().unwrap_or("unknown schema")),
                expected,
            });
        }
    }
    let meta = read_meta(&connection).map_err(sqlite("read walbuf_meta"))?;
    Ok((connection, meta))
}

/// Reads the core's meta (inside whatever transaction `connection` is in).
///
/// # Errors
/// Any SQLite error (a missing row is `QueryReturnedNoRows`).
pub fn read_meta(connection: &Connection) -> rusqlite::Result<Meta> {
    let get = |name: &str| -> rusqlite::Result<u64> {
        let value: i64 = connection
            .prepare_cached("SELECT value FROM walbuf_meta WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?;
        Ok(value.cast_unsigned())
    };
    Ok(Meta {
        applied_op_key: get("applied_op_key")?,
        live_count: get("live_count")?,
    })
}

/// Records `meta` (inside the batch's transaction).
///
/// # Errors
/// Any SQLite error.
pub fn write_meta(tx: &rusqlite::Transaction<'_>, meta: Meta) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached("UPDATE walbuf_meta SET value = ?2 WHERE name = ?1")?;
    statement.execute(rusqlite::params![
        "applied_op_key",
        meta.applied_op_key.cast_signed()
    ])?;
    statement.execute(rusqlite::params![
        "live_count",
        meta.live_count.cast_signed()
    ])?;
    Ok(())
}

/// Reads the applied op key of the database at `path` without opening a store (read-only;
/// `None` if the file does not exist or holds no walbuf tables). For operator tools.
///
/// # Errors
/// [`Error::Sqlite`] when the file exists but cannot be read.
pub fn peek_meta(path: &Path) -> Result<Option<Meta>> {
    if !path.exists() {
        return Ok(None);
    }
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| Error::sqlite("open database", path, source))?;
    match read_meta(&connection) {
        Ok(meta) => Ok(Some(meta)),
        Err(rusqlite::Error::SqliteFailure(_, Some(message)))
            if message.contains("no such table") =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::sqlite("read walbuf_meta", path, source)),
    }
}

/// A pool of read-only connections: readers never use the flusher's connection, and WAL mode
/// lets them run beside it.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    config: SqliteConfig,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// A pool for the database at `path` (connections open lazily).
    #[must_use]
    pub fn new(path: &Path, config: &SqliteConfig) -> Self {
        Self {
            path: path.to_path_buf(),
            config: config.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA busy_timeout = {};",
            self.config.read_cache_kib, self.config.busy_timeout_ms
        ))?;
        connection.set_prepared_statement_cache_capacity(64);
        Ok(connection)
    }

    /// Runs `read` on a pooled connection (each statement sees the latest commit).
    ///
    /// # Errors
    /// [`Error::Sqlite`] with `operation`.
    pub fn read<T>(
        &self,
        operation: &'static str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let pooled = self.idle.lock().pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => self
                .connect()
                .map_err(|source| Error::sqlite("open read connection", &self.path, source))?,
        };
        let result = read(&connection);
        {
            let mut idle = self.idle.lock();
            if idle.len() < self.config.read_pool_size {
                idle.push(connection);
            }
        }
        result.map_err(|source| Error::sqlite(operation, &self.path, source))
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
