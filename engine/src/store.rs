//! The store: a [`Schema`]'s ops, logged, buffered, readable at once, and flushed to SQLite in
//! the background.
//!
//! The write path ([`Store::submit`]): under one short critical section the op is validated
//! against everything submitted before it (buffer and SQLite), given the next op key, indexed
//! in the overlay and copied into the log; outside it, the writer waits for durability (under
//! [`SyncPolicy::Sync`]). Readers see an op once it is *visible*: durable under `Sync`,
//! appended under the other policies ([`Store::visible_op_key`]). The flusher
//! (`engine/src/flusher.rs`) applies visible ops to SQLite in batches, records the applied op key
//! in the same transaction, then drops them from the buffer and retires log segments.
//!
//! Layout of a store directory: `log/` (the segments and the lock file) and `walbuf.db` (the
//! SQLite database, WAL mode).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use walbuf_recovery::replay::{Mode, Options as RecoveryOptions, Report};

use crate::buffer::{Buffer, OP_OVERHEAD_BYTES, PendingOp};
use crate::error::{Error, Result};
use crate::flusher;
use crate::log::{self, Log, SyncPolicy};
use crate::rebuild;
use crate::schema::Schema;
use crate::sqlite::{self, ReadPool, SqliteConfig};
use crate::storage::FsStorage;
use crate::storage::Storage;

/// File name of the SQLite database inside a store directory.
pub const DATABASE_FILE: &str = "walbuf.db";
/// Name of the log directory inside a store directory.
pub const LOG_DIRECTORY: &str = "log";

/// Bytes of core framing before the schema's encoding in each op record: the live count
/// after the op (u64 little-endian).
pub(crate) const OP_PREFIX_LEN: usize = 8;

/// A fault-injection hook called inside every flush transaction before the batch is applied,
/// with the batch's op keys: return an error to make the batch fail (tests of retries and of
/// a failed store), or sleep to make SQLite slow (tests of backpressure).
#[derive(Clone)]
pub struct ApplyHook(pub Arc<ApplyHookFn>);

/// The function behind an [`ApplyHook`]: called with the batch's op keys.
pub type ApplyHookFn = dyn Fn(&[u64]) -> rusqlite::Result<()> + Send + Sync;

impl std::fmt::Debug for ApplyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplyHook(..)")
    }
}

/// Settings of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The log's settings, its sync policy among them.
    pub log: log::Config,
    /// The SQLite side.
    pub sqlite: SqliteConfig,
    /// How recovery treats anomalies on open (default [`Mode::TolerateTornTail`]).
    pub recovery_mode: Mode,
    /// Most ops applied in one SQLite transaction (default 5 000).
    pub batch_ops_max: usize,
    /// About the most bytes of ops applied in one transaction (default 32 MiB).
    pub batch_bytes_max: u64,
    /// The flusher applies whatever is pending at least this often (default 50 ms); it starts
    /// sooner once `batch_ops_max` ops are pending. Each batch's commit syncs SQLite's WAL on
    /// the disk the log syncs on: under `SyncPolicy::Sync`, a longer interval leaves the log
    /// more of the disk (see `docs/benchmarks.md`, "Sync acks and the flusher's commits"),
    /// at the cost of SQLite lagging further behind the buffer.
    pub flush_interval_ms: u64,
    /// Hard bound on buffered ops (default 1 000 000).
    pub buffer_ops_max: u64,
    /// Hard bound on buffered bytes, overhead estimate included (default 256 MiB).
    ///
    /// Each op counts as its record's payload plus [`OP_OVERHEAD_BYTES`]. What an op really
    /// holds in memory depends on the schema: a shape add with a 300-byte definition counts
    /// ~600 bytes but holds ~1 KB with its index entries (measured with a heap profiler, on
    /// the write path and in replay), so a full buffer of such ops takes about twice this
    /// bound.
    pub buffer_bytes_max: u64,
    /// Past this percentage of either bound, writers are slowed (default 75).
    pub buffer_soft_percent: u8,
    /// How long a blocking write waits for room at the hard bound before
    /// [`Error::Backpressure`] (default 10 s).
    pub backpressure_timeout_ms: u64,
    /// A passive WAL checkpoint every this many batches (default 4; 0, none, only with
    /// `sqlite.wal_autocheckpoint_pages` above 0, when SQLite checkpoints on its own).
    pub checkpoint_every_batches: u32,
    /// Cap of the retry backoff of a failing batch (default 2 s).
    pub retry_backoff_max_ms: u64,
    /// A batch failing with an error retrying cannot fix (constraint, corruption, misuse) is
    /// tried this many times before the store is marked failed (default 3). Errors that can
    /// pass (busy, I/O, disk full) are retried for as long as they last, each one logged.
    pub deterministic_failure_attempts: u32,
    /// Fault injection for tests (default none).
    pub apply_hook: Option<ApplyHook>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            log: log::Config::default(),
            sqlite: SqliteConfig::default(),
            recovery_mode: Mode::TolerateTornTail,
            batch_ops_max: 5_000,
            batch_bytes_max: 32 << 20,
            flush_interval_ms: 50,
            buffer_ops_max: 1_000_000,
            buffer_bytes_max: 256 << 20,
            buffer_soft_percent: 75,
            backpressure_timeout_ms: 10_000,
            checkpoint_every_batches: 4,
            retry_backoff_max_ms: 2_000,
            deterministic_failure_attempts: 3,
            apply_hook: None,
        }
    }
}

impl StoreConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.log.validate()?;
        let invalid = |field, problem| Err(Error::InvalidConfig { field, problem });
        if self.batch_ops_max == 0 {
            return invalid("batch_ops_max", "must be at least 1");
        }
        if self.flush_interval_ms == 0 {
            return invalid("flush_interval_ms", "must be at least 1");
        }
        if self.buffer_ops_max < self.batch_ops_max as u64 {
            return invalid("buffer_ops_max", "must be at least batch_ops_max");
        }
        if self.buffer_bytes_max < u64::from(self.log.max_record_bytes) {
            return invalid("buffer_bytes_max", "must hold at least one largest record");
        }
        if self.buffer_soft_percent == 0 || self.buffer_soft_percent > 100 {
            return invalid("buffer_soft_percent", "must be in 1..=100");
        }
        if self.recovery_mode == Mode::Salvage {
            // Salvage keeps records past damage, so op keys may have gaps the flusher can
            // never apply past; it is for reading a damaged log (`walbuf verify`, `dump`).
            return invalid(
                "recovery_mode",
                "Salvage cannot open a store; use PointInTime, or read the log with walbuf verify",
            );
        }
        if self.deterministic_failure_attempts == 0 {
            return invalid("deterministic_failure_attempts", "must be at least 1");
        }
        if self.checkpoint_every_batches == 0 && self.sqlite.wal_autocheckpoint_pages == 0 {
            // Nobody would ever checkpoint: SQLite's WAL would grow without bound.
            return invalid(
                "checkpoint_every_batches",
                "must be at least 1 while sqlite.wal_autocheckpoint_pages is 0 (no checkpoints at all)",
            );
        }
        Ok(())
    }
}

/// What opening a store found and did.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// The applied op key SQLite held: ops at or below it were not replayed.
    pub watermark: u64,
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Op records verified.
    pub records_scanned: u64,
    /// Ops replayed into the buffer (to be applied to SQLite by the flusher).
    pub ops_replayed: u64,
    /// Bytes cut from the log's tail (a torn tail, or a point-in-time cut).
    pub bytes_cut: u64,
    /// The next op key the store assigns.
    pub next_op_key: u64,
    /// Wall time of the whole open (SQLite, scan, replay, indexing).
    pub elapsed: Duration,
    /// The log recovery's full report (every segment and every problem).
    pub log: Report,
}

/// Counters and positions of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Ops buffered (acknowledged, not yet in SQLite).
    pub pending_ops: u64,
    /// Bytes accounted to them.
    pub pending_bytes: u64,
    /// The most bytes buffered at once since open.
    pub peak_pending_bytes: u64,
    /// Every op at or below this key is in SQLite.
    pub applied_op_key: u64,
    /// The last op key assigned.
    pub last_op_key: u64,
    /// Ops at or below this key are visible to readers.
    pub visible_op_key: u64,
    /// Batches committed to SQLite since open.
    pub flush_batches: u64,
    /// Ops applied to SQLite since open.
    pub ops_flushed: u64,
    /// Failed batch attempts since open (each rolled back and retried).
    pub flush_failures: u64,
    /// Writes that waited for room in the buffer.
    pub backpressure_waits: u64,
    /// Writes refused with [`Error::Backpressure`].
    pub backpressure_refusals: u64,
    /// WAL checkpoints run by the flusher.
    pub checkpoints: u64,
    /// The log's counters (syncs, bytes, segments, ...).
    pub log: log::Stats,
}

/// Whether a write waits for room in a full buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait up to the configured backpressure timeout.
    Block,
    /// Fail at once with [`Error::Backpressure`].
    Never,
}

/// What a submission's validation decided: the op to log and the live count after it.
#[derive(Debug)]
pub struct Accepted<Op> {
    /// The op.
    pub op: Op,
    /// Live entities once the op is applied.
    pub live_count_after: u64,
}

/// What a submission's validation sees: every op submitted before it, buffered or in SQLite.
/// It runs inside the store's submit section, so nothing else is submitted meanwhile.
pub struct Validation<'a, S: Schema, St: Storage> {
    shared: &'a Shared<S, St>,
    live_count: u64,
}

impl<S: Schema, St: Storage> Validation<'_, S, St> {
    /// The schema's overlay; entries up to [`Validation::view_op_key`] are submitted ops.
    #[must_use]
    pub fn overlay(&self) -> &S::Overlay {
        &self.shared.overlay
    }

    /// The op key bounding what validation sees: every submitted op.
    #[must_use]
    pub fn view_op_key(&self) -> u64 {
        u64::MAX
    }

    /// Live entities after every submitted op.
    #[must_use]
    pub fn live_count(&self) -> u64 {
        self.live_count
    }

    /// Reads SQLite (ops not in the overlay are there).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn sqlite<T>(
        &self,
        operation: &'static str,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.shared.reads.read(operation, read)
    }
}

struct SubmitState {
    next_op_key: u64,
    live_count: u64,
    encoded: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct FlushSignal {
    pub(crate) requested: bool,
    pub(crate) stop: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) flush_batches: AtomicU64,
    pub(crate) ops_flushed: AtomicU64,
    pub(crate) flush_failures: AtomicU64,
    pub(crate) backpressure_waits: AtomicU64,
    pub(crate) backpressure_refusals: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
}

/// State shared by the store's handle, its writers, readers and the flusher thread.
pub(crate) struct Shared<S: Schema, St: Storage> {
    pub(crate) schema: S,
    pub(crate) overlay: S::Overlay,
    pub(crate) buffer: Buffer<S::Op>,
    pub(crate) log: Log<St>,
    pub(crate) reads: ReadPool,
    pub(crate) config: StoreConfig,
    pub(crate) database_path: PathBuf,
    submit: Mutex<SubmitState>,
    pub(crate) applied_op_key: AtomicU64,
    pub(crate) applied_changed: Condvar,
    pub(crate) applied_lock: Mutex<()>,
    pub(crate) failed: OnceLock<Error>,
    pub(crate) signal: Mutex<FlushSignal>,
    pub(crate) signal_changed: Condvar,
    /// The overlay gate (see [`Store::hold_overlay`]): held shared by every read that
    /// combines overlay lookups with SQLite (a listing, per step) and by a writer while it
    /// validates and indexes its op, exclusively by the flusher's cleaner while it drops a
    /// chunk of committed ops from the overlay. Fair, and never taken twice by one thread.
    pub(crate) cleanup_gate: RwLock<()>,
    /// Bumped under the write side of `cleanup_gate` each time the flusher drops ops from
    /// the overlay (see [`Store::overlay_epoch`]).
    pub(crate) cleanup_epoch: AtomicU64,
    pub(crate) counters: Counters,
}

impl<S: Schema, St: Storage> Shared<S, St> {
    /// Ops at or below this key are visible to readers and may be flushed.
    pub(crate) fn visible_op_key(&self) -> u64 {
        match self.log.config().sync_policy {
            SyncPolicy::Sync => self.log.durable_op_key().min(self.log.published_op_key()),
            SyncPolicy::Periodic { .. } | SyncPolicy::None => self.log.published_op_key(),
        }
    }

    pub(crate) fn fail(&self, error: Error) {
        if self.failed.set(error.clone()).is_ok() {
            tracing::error!(%error, "store failed: writes refused until reopened; reads keep working");
        }
        let _guard = self.applied_lock.lock();
        self.applied_changed.notify_all();
        self.buffer.notify_room();
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(cause) = self.failed.get() {
            return Err(Error::StoreFailed {
                cause: Box::new(cause.clone()),
            });
        }
        if let Some(cause) = self.log.poisoned() {
            return Err(Error::Poisoned {
                cause: Box::new(cause),
            });
        }
        Ok(())
    }

    pub(crate) fn request_flush(&self) {
        let mut signal = self.signal.lock();
        signal.requested = true;
        self.signal_changed.notify_one();
    }
}

/// A store of `S`'s ops over log storage `St` (real files by default).
pub struct Store<S: Schema, St: Storage = FsStorage> {
    shared: Arc<Shared<S, St>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Schema, St: Storage> std::fmt::Debug for Store<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("schema", &S::NAME)
            .field("database", &self.shared.database_path)
            .finish_non_exhaustive()
    }
}

impl<S: Schema> Store<S> {
    /// Opens (or creates) the store in `directory`: takes the log's lock, opens SQLite, runs
    /// recovery and starts the flusher.
    ///
    /// # Errors
    /// As [`Store::open_with`], and [`Error::Locked`] when another instance owns the
    /// directory.
    pub fn open(
        directory: impl AsRef<Path>,
        schema: S,
        config: StoreConfig,
    ) -> Result<(Self, RecoveryReport)> {
        let directory = directory.as_ref();
        let log_directory = directory.join(LOG_DIRECTORY);
        std::fs::create_dir_all(&log_directory)
            .map_err(|source| Error::io("create store directory", &log_directory, source))?;
        let storage = FsStorage::open(&log_directory)?;
        Self::open_with(storage, &directory.join(DATABASE_FILE), schema, config)
    }
}

impl<S: Schema, St: Storage> Store<S, St> {
    /// Opens the store whose log is in `storage` and whose database is `database_path`.
    /// Reads the applied op key from SQLite, replays every logged op above it into the buffer
    /// (the flusher then applies them), and starts the flusher.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Sqlite`], [`Error::IncompatibleDatabase`],
    /// [`Error::Recovery`] (an anomaly the recovery mode refuses, e.g. missing ops),
    /// [`Error::Decode`], [`Error::Io`].
    pub fn open_with(
        storage: St,
        database_path: &Path,
        schema: S,
        config: StoreConfig,
    ) -> Result<(Self, RecoveryReport)> {
        let started = Instant::now();
        config.validate()?;
        let (connection, meta) = sqlite::open_writer(database_path, &schema, &config.sqlite)?;
        let overlay = schema.new_overlay();
        schema
            .load(&overlay, &connection)
            .map_err(|source| Error::sqlite("load overlay", database_path, source))?;
        let buffer = Buffer::default();
        let recovery = RecoveryOptions {
            mode: config.recovery_mode,
            watermark: meta.applied_op_key,
            max_record_bytes: config.log.max_record_bytes,
        };
        let log_config = config.log.clone();
        let reserve_ops_max = usize::try_from(config.buffer_ops_max).unwrap_or(usize::MAX);
        let (log, report) =
            rebuild::rebuild(&schema, &overlay, &buffer, reserve_ops_max, |sink| {
                Log::open_with(storage, log_config, recovery, sink)
            })??;
        let next_op_key = report.next_op_key;
        let live_count = buffer
            .latest_at_or_below(u64::MAX)
            .map_or(meta.live_count, |(_, count)| count);
        let reads = ReadPool::new(database_path, &config.sqlite);
        let shared = Arc::new(Shared {
            schema,
            overlay,
            buffer,
            log,
            reads,
            config,
            database_path: database_path.to_path_buf(),
            submit: Mutex::new(SubmitState {
                next_op_key,
                live_count,
                encoded: Vec::new(),
            }),
            applied_op_key: AtomicU64::new(meta.applied_op_key),
            applied_changed: Condvar::new(),
            applied_lock: Mutex::new(()),
            failed: OnceLock::new(),
            signal: Mutex::new(FlushSignal::default()),
            signal_changed: Condvar::new(),
            cleanup_gate: RwLock::new(()),
            cleanup_epoch: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let flusher_shared = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("walbuf-flusher".into())
            .spawn(move || flusher::run(&flusher_shared, connection))
            .map_err(|source| Error::io("spawn flusher thread", database_path, source))?;
        let recovery_report = RecoveryReport {
            watermark: meta.applied_op_key,
            segments_scanned: report.segments.len(),
            records_scanned: report.records_scanned,
            ops_replayed: report.records_replayed,
            bytes_cut: report.bytes_cut(),
            next_op_key,
            elapsed: started.elapsed(),
            log: report,
        };
        tracing::info!(
            schema = S::NAME,
            watermark = recovery_report.watermark,
            segments = recovery_report.segments_scanned,
            replayed = recovery_report.ops_replayed,
            bytes_cut = recovery_report.bytes_cut,
            next_op_key,
            elapsed_ms = recovery_report.elapsed.as_millis() as u64,
            "store opened"
        );
        if recovery_report.ops_replayed > 0 {
            shared.request_flush();
        }
        Ok((
            Self {
                shared,
                flusher: Mutex::new(Some(flusher)),
            },
            recovery_report,
        ))
    }

    /// Validates and logs one op. `validate` runs inside the submit section, seeing every op
    /// submitted before it (and nothing submitted after it until it returns): it decides the
    /// op — or refuses with its own error. The op is then indexed, logged, and (under `Sync`)
    /// made durable before this returns its op key. `validate` runs holding the overlay gate
    /// ([`Store::hold_overlay`]): it must read through the [`Validation`] it is given, never
    /// through the store's or a registry's reads, which take the gate again.
    ///
    /// # Errors
    /// `validate`'s error; [`Error::Backpressure`] when the buffer stays full; the log's
    /// errors; [`Error::StoreFailed`].
    pub fn submit<T, E: From<Error>>(
        &self,
        wait: Wait,
        validate: impl FnOnce(&Validation<'_, S, St>) -> std::result::Result<(Accepted<S::Op>, T), E>,
    ) -> std::result::Result<(u64, T), E> {
        let shared = &*self.shared;
        shared.check_writable()?;
        self.wait_for_room(wait)?;
        let (op_key, value) = {
            let mut state = shared.submit.lock();
            shared.check_writable()?;
            // Validation may combine several overlay lookups with SQLite reads: keep the
            // flusher from dropping committed ops in between (a buffered reset seen first,
            // then the add after it gone, would read as "absent").
            let gate = shared.cleanup_gate.read();
            let validation = Validation {
                shared,
                live_count: state.live_count,
            };
            let (accepted, value) = validate(&validation)?;
            let op_key = state.next_op_key;
            let mut encoded = std::mem::take(&mut state.encoded);
            encoded.clear();
            encoded.extend_from_slice(&accepted.live_count_after.to_le_bytes());
            shared.schema.encode(&accepted.op, &mut encoded);
            let kind = shared.schema.kind(&accepted.op);
            let op = accepted.op;
            // Index first: the op becomes visible to readers only once the log publishes its
            // key, and by then every index entry is in place.
            shared.schema.index(&shared.overlay, op_key, &op);
            shared.buffer.insert(
                op_key,
                PendingOp {
                    op: op.clone(),
                    count_after: accepted.live_count_after,
                    bytes: encoded.len() as u64 + OP_OVERHEAD_BYTES,
                },
            );
            // The append may rotate the log (syncs, a rename): readers, and the cleaner
            // queued before them, need not wait for that.
            drop(gate);
            let appended = shared.log.append_published(kind, &encoded);
            state.encoded = encoded;
            match appended {
                Ok(logged) if logged == op_key => {}
                outcome => {
                    let _gate = shared.cleanup_gate.read();
                    shared.schema.unindex(&shared.overlay, op_key, &op);
                    shared.buffer.remove(op_key);
                    return Err(match outcome {
                        Err(error) => error.into(),
                        Ok(logged) => {
                            let error = Error::OpKeyMismatch {
                                expected: op_key,
                                logged,
                            };
                            tracing::error!("{error}");
                            shared.fail(error.clone());
                            error.into()
                        }
                    });
                }
            }
            state.next_op_key = op_key + 1;
            state.live_count = accepted.live_count_after;
            (op_key, value)
        };
        if shared.log.config().sync_policy == SyncPolicy::Sync {
            shared.log.wait_durable(op_key)?;
        }
        if shared.buffer.len_ops() >= shared.config.batch_ops_max as u64 {
            shared.request_flush();
        }
        Ok((op_key, value))
    }

    fn wait_for_room(&self, wait: Wait) -> Result<()> {
        let shared = &*self.shared;
        let config = &shared.config;
        let estimate = OP_OVERHEAD_BYTES;
        if !shared
            .buffer
            .has_room(estimate, config.buffer_ops_max, config.buffer_bytes_max)
        {
            let refuse = |waited: Duration| {
                shared
                    .counters
                    .backpressure_refusals
                    .fetch_add(1, Ordering::Relaxed);
                Error::Backpressure {
                    pending_ops: shared.buffer.len_ops(),
                    pending_bytes: shared.buffer.len_bytes(),
                    waited_ms: waited.as_millis() as u64,
                }
            };
            if wait == Wait::Never {
                return Err(refuse(Duration::ZERO));
            }
            shared
                .counters
                .backpressure_waits
                .fetch_add(1, Ordering::Relaxed);
            shared.request_flush();
            let started = Instant::now();
            let deadline = started + Duration::from_millis(config.backpressure_timeout_ms);
            let give_up = || shared.failed.get().is_some() || shared.log.poisoned().is_some();
            if !shared.buffer.wait_for_room(
                estimate,
                config.buffer_ops_max,
                config.buffer_bytes_max,
                deadline,
                give_up,
            ) {
                shared.check_writable()?;
                return Err(refuse(started.elapsed()));
            }
            return Ok(());
        }
        // Soft limit: past it, a writer yields for a time growing with the overshoot, so the
        // flusher catches up before the hard limit stalls everyone.
        let percent = |used: u64, max: u64| used.saturating_mul(100) / max.max(1);
        let used = percent(shared.buffer.len_ops(), config.buffer_ops_max)
            .max(percent(shared.buffer.len_bytes(), config.buffer_bytes_max));
        let soft = u64::from(config.buffer_soft_percent);
        if wait == Wait::Block && used >= soft && soft < 100 {
            shared.request_flush();
            let over = (used - soft).min(100 - soft);
            std::thread::sleep(Duration::from_micros(20 * over * over / (100 - soft)));
        }
        Ok(())
    }

    /// Ops at or below this key are visible to readers: durable under `Sync`, appended
    /// otherwise.
    #[must_use]
    pub fn visible_op_key(&self) -> u64 {
        self.shared.visible_op_key()
    }

    /// The schema.
    #[must_use]
    pub fn schema(&self) -> &S {
        &self.shared.schema
    }

    /// The schema's overlay (filter its entries by [`Store::visible_op_key`]).
    #[must_use]
    pub fn overlay(&self) -> &S::Overlay {
        &self.shared.overlay
    }

    /// Reads SQLite on a pooled read-only connection.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn read_sqlite<T>(
        &self,
        operation: &'static str,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.shared.reads.read(operation, read)
    }

    /// Keeps the flusher from dropping committed ops from the overlay while the guard lives:
    /// a reader that merges the overlay with SQLite over several statements holds it, so that
    /// no op is in neither. Hold it briefly, and never across code you do not control: the
    /// flusher's cleaner waits for every holder before it drops each chunk of a committed
    /// batch. The gate is fair — once the cleaner waits, new holders queue behind it, so that
    /// a stream of overlapping reads can never starve it — and so a thread must not take it
    /// while it already holds it (writes and the registry's reads that consult SQLite take
    /// it): the second hold would wait for the cleaner, which waits for the first. A reader
    /// that works in steps (a listing) holds it per step and checks [`Store::overlay_epoch`]
    /// when it comes back.
    pub fn hold_overlay(&self) -> RwLockReadGuard<'_, ()> {
        self.shared.cleanup_gate.read()
    }

    /// Changes each time the flusher drops committed ops from the overlay. A reader that
    /// released [`Store::hold_overlay`] between two steps compares the epoch read under each
    /// hold: if it moved, ops that were in the overlay may now be only in SQLite, and rows it
    /// read from SQLite before may miss them, so it reads SQLite again from where it was.
    #[must_use]
    pub fn overlay_epoch(&self) -> u64 {
        self.shared.cleanup_epoch.load(Ordering::Acquire)
    }

    /// Live entities as of the visible ops: the live count after the latest visible buffered
    /// op, or SQLite's count when none is buffered. O(log n).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn live_count(&self) -> Result<u64> {
        let visible = self.visible_op_key();
        if let Some((_, count)) = self.shared.buffer.latest_at_or_below(visible) {
            return Ok(count);
        }
        self.read_sqlite("read live count", |connection| {
            sqlite::read_meta(connection).map(|meta| meta.live_count)
        })
    }

    /// Waits until every op submitted before the call is in SQLite.
    ///
    /// # Errors
    /// [`Error::StoreFailed`] or [`Error::Poisoned`] if that can no longer happen;
    /// [`Error::Closed`] after close.
    pub fn flush(&self) -> Result<()> {
        let shared = &*self.shared;
        let target = shared.submit.lock().next_op_key - 1;
        loop {
            if shared.applied_op_key.load(Ordering::SeqCst) >= target {
                return Ok(());
            }
            shared.check_writable()?;
            if shared.signal.lock().stop {
                return Err(Error::Closed);
            }
            shared.request_flush();
            let mut guard = shared.applied_lock.lock();
            if shared.applied_op_key.load(Ordering::SeqCst) < target {
                let _ = shared
                    .applied_changed
                    .wait_for(&mut guard, Duration::from_millis(20));
            }
        }
    }

    /// Counters and positions.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        let shared = &*self.shared;
        let counters = &shared.counters;
        let log = shared.log.stats();
        StoreStats {
            pending_ops: shared.buffer.len_ops(),
            pending_bytes: shared.buffer.len_bytes(),
            peak_pending_bytes: shared.buffer.peak_bytes(),
            applied_op_key: shared.applied_op_key.load(Ordering::SeqCst),
            last_op_key: log.last_op_key,
            visible_op_key: shared.visible_op_key(),
            flush_batches: counters.flush_batches.load(Ordering::Relaxed),
            ops_flushed: counters.ops_flushed.load(Ordering::Relaxed),
            flush_failures: counters.flush_failures.load(Ordering::Relaxed),
            backpressure_waits: counters.backpressure_waits.load(Ordering::Relaxed),
            backpressure_refusals: counters.backpressure_refusals.load(Ordering::Relaxed),
            checkpoints: counters.checkpoints.load(Ordering::Relaxed),
            log,
        }
    }

    /// The failure that stopped the store's writes, if any.
    #[must_use]
    pub fn failure(&self) -> Option<Error> {
        self.shared.failed.get().cloned()
    }

    /// The log (for its counters and for tests).
    #[must_use]
    pub fn log(&self) -> &Log<St> {
        &self.shared.log
    }

    /// The SQLite database file.
    #[must_use]
    pub fn database_path(&self) -> &Path {
        &self.shared.database_path
    }

    /// Stops the flusher (after it applies what is visible, unless SQLite is failing) and
    /// closes the log. Correctness never depends on it: unflushed ops are in the log and
    /// recovery applies them on the next open.
    ///
    /// # Errors
    /// The log's close error.
    pub fn close(&self) -> Result<()> {
        {
            let mut signal = self.shared.signal.lock();
            signal.stop = true;
            self.shared.signal_changed.notify_all();
        }
        if let Some(flusher) = self.flusher.lock().take()
            && flusher.join().is_err()
        {
            tracing::error!("flusher thread panicked");
        }
        self.shared.log.close()
    }
}

impl<S: Schema, St: Storage> Drop for Store<S, St> {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(%error, "closing store on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(config: &StoreConfig) -> Option<&'static str> {
        match config.validate() {
            Err(Error::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_the_field() {
        assert_eq!(refused_field(&StoreConfig::default()), None);
        let cases: [(StoreConfig, &str); 4] = [
            (
                StoreConfig {
                    batch_ops_max: 0,
                    ..StoreConfig::default()
                },
                "batch_ops_max",
            ),
            (
                StoreConfig {
                    recovery_mode: Mode::Salvage,
                    ..StoreConfig::default()
                },
                "recovery_mode",
            ),
            (
                StoreConfig {
                    buffer_soft_percent: 101,
                    ..StoreConfig::default()
                },
                "buffer_soft_percent",
            ),
            (
                StoreConfig {
                    checkpoint_every_batches: 0,
                    ..StoreConfig::default()
                },
                "checkpoint_every_batches",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(refused_field(&config), Some(field));
        }
        // With SQLite's automatic checkpoints, the flusher need not schedule any.
        let automatic = StoreConfig {
            checkpoint_every_batches: 0,
            sqlite: SqliteConfig {
                wal_autocheckpoint_pages: 1_000,
                ..SqliteConfig::default()
            },
            ..StoreConfig::default()
        };
        assert_eq!(refused_field(&automatic), None);
    }
}
