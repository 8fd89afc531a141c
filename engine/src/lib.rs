//! # walbuf
//!
//! A crash-safe, append-only write-ahead log in front of SQLite. Every op is appended to a
//! checksummed, memory-mapped, segmented log under a monotonic op key and is durable per the
//! chosen [`SyncPolicy`] before it is acknowledged.
//!
//! The layers, bottom up: the log ([`log::Log`]) and its storage seam ([`storage`]); the
//! buffer of unflushed ops ([`buffer`]); the store ([`Store`]), generic over a [`Schema`],
//! which validates, logs and indexes each op, answers reads from its overlay and SQLite, and
//! flushes to SQLite in the background; and the first schema, the shape registry
//! ([`ShapeRegistry`]). The example below uses the log alone.
//!
//! ```
//! use walbuf::log::{Config, Log};
//! use walbuf::SyncPolicy;
//! use walbuf_recovery::format::Record;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = Config { segment_size_bytes: 1 << 20, max_record_bytes: 64 << 10, ..Config::default() };
//! let mut ignore = |_: &Record<'_>| Ok(());
//! let (log, _report) = Log::open_dir(dir.path(), config.clone(), &mut ignore)?;
//! let key = log.append(1, b"hello")?; // durable when it returns (SyncPolicy::Sync)
//! assert_eq!(key, 1);
//! log.close()?;
//! drop(log);
//!
//! // Reopen: recovery hands back every record.
//! let mut seen = Vec::new();
//! let mut collect = |record: &Record<'_>| { seen.push(record.payload.to_vec()); Ok(()) };
//! let (_log, report) = Log::open_dir(dir.path(), config, &mut collect)?;
//! assert_eq!(report.records_replayed, 1);
//! assert_eq!(seen, vec![b"hello".to_vec()]);
//! # Ok(()) }
//! ```

pub mod buffer;
pub mod error;
mod flusher;
pub mod log;
mod rebuild;
pub mod schema;
pub mod shapes;
pub mod sqlite;
pub mod storage;
pub mod store;

pub use error::{Error, Result};
pub use log::{Log, SyncPolicy};
pub use schema::Schema;
pub use shapes::{NewShape, RegistryError, Relation, Shape, ShapeRegistry, SnapshotState};
pub use store::{RecoveryReport, Store, StoreConfig, StoreStats};
pub use walbuf_recovery as recovery;
