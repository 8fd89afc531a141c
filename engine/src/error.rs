//! The engine's error type.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong in walbuf. Each variant names what and where.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{operation} failed on {path}: {source}", path = path.display())]
    Io {
        /// What was being done (`"sync segment"`, `"create segment"`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The disk has no room for a new segment.
    #[error("disk full: cannot allocate {len_bytes} bytes for {path}", path = path.display())]
    DiskFull {
        /// The file that could not be allocated.
        path: PathBuf,
        /// Bytes requested.
        len_bytes: u64,
    },
    /// Another process (or another open log in this one) owns the directory.
    #[error("{path} is locked by another walbuf instance", path = path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// An earlier durable write failed (a failed sync, allocation or rotation); the log refuses
    /// all further writes because what is on disk is no longer known. Reopen the store: recovery
    /// will find what is really there.
    #[error("the log failed earlier and refuses writes until it is reopened (cause: {cause})")]
    Poisoned {
        /// The failure that poisoned the log.
        cause: Box<Error>,
    },
    /// A record is larger than the configured maximum.
    #[error("record of {len_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    RecordTooLarge {
        /// The record's frame length.
        len_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {field} {problem}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A record kind outside the range available to users.
    #[error("record kind {kind} is reserved (user kinds are 1..=127)")]
    InvalidKind {
        /// The kind requested.
        kind: u8,
    },
    /// The log has been closed.
    #[error("the log is closed")]
    Closed,
    /// Recovery found an anomaly it does not tolerate in this mode, or could not read the log.
    #[error("recovery failed: {0}")]
    Recovery(Arc<walbuf_recovery::Error>),
    /// A SQLite operation failed.
    #[error("SQLite {operation} failed on {path}: {source}", path = path.display())]
    Sqlite {
        /// What was being done (`"open database"`, `"apply batch"`, ...).
        operation: &'static str,
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The database was written by a newer version of the schema (or by another schema): it is
    /// refused rather than wiped or misread.
    #[error("database {path} holds {found}, this build reads {expected}", path = path.display())]
    IncompatibleDatabase {
        /// The database file.
        path: PathBuf,
        /// What the database says it holds (schema name and version).
        found: String,
        /// What this build expects.
        expected: String,
    },
    /// The buffer is full: SQLite is behind and the write waited `waited_ms` (zero for a
    /// non-blocking write) without room being freed. Nothing was written.
    #[error(
        "backpressure: buffer full ({pending_ops} ops, {pending_bytes} bytes pending) after waiting {waited_ms} ms"
    )]
    Backpressure {
        /// Ops buffered but not yet in SQLite.
        pending_ops: u64,
        /// Their bytes.
        pending_bytes: u64,
        /// How long the write waited for room.
        waited_ms: u64,
    },
    /// The store stopped accepting writes because applying ops to SQLite failed in a way
    /// retrying cannot fix (a bug or a damaged database). Reads keep working; every
    /// acknowledged op is in the log and is applied when the store is reopened after repair.
    #[error("the store failed and refuses writes (cause: {cause})")]
    StoreFailed {
        /// The failure.
        cause: Box<Error>,
    },
    /// The log gave an op a different key than the store assigned: something else appended
    /// to the store's log. A bug; the store stops accepting writes.
    #[error("the log assigned op key {logged} where the store expected {expected}")]
    OpKeyMismatch {
        /// The key the store assigned.
        expected: u64,
        /// The key the log used.
        logged: u64,
    },
    /// A logged op could not be decoded by the store's schema (the log was written by another
    /// schema or a newer version).
    #[error("op {op_key} in the log cannot be decoded: {source}")]
    Decode {
        /// The op key.
        op_key: u64,
        /// What is wrong with it.
        #[source]
        source: crate::schema::DecodeError,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path; `ENOSPC` becomes [`Error::DiskFull`]
    /// when `len_bytes` is known.
    pub(crate) fn io(
        operation: &'static str,
        path: impl AsRef<Path>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            operation,
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// Like [`Error::io`], but an out-of-space error becomes [`Error::DiskFull`].
    pub(crate) fn allocation(
        path: impl AsRef<Path>,
        len_bytes: u64,
        source: std::io::Error,
    ) -> Self {
        if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
            || source.kind() == std::io::ErrorKind::StorageFull
        {
            Self::DiskFull {
                path: path.as_ref().to_path_buf(),
                len_bytes,
            }
        } else {
            Self::io("allocate segment", path, source)
        }
    }

    /// Wraps a SQLite error with the operation and database path.
    pub(crate) fn sqlite(
        operation: &'static str,
        path: impl AsRef<Path>,
        source: rusqlite::Error,
    ) -> Self {
        Self::Sqlite {
            operation,
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// Whether this is (or wraps) a poisoned-log error.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        matches!(self, Self::Poisoned { .. })
    }
}

impl From<walbuf_recovery::Error> for Error {
    fn from(error: walbuf_recovery::Error) -> Self {
        Self::Recovery(Arc::new(error))
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
